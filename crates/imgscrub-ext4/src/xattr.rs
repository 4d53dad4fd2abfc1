//! Extended attributes: in-inode and block, hashes, checksums, sharing. Owner: dirs.
