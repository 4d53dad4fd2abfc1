//! Block and inode bitmaps: load, BLOCK_UNINIT / INODE_UNINIT, checksums, write back. Owner: core.
