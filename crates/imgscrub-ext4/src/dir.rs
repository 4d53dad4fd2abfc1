//! Linear directory blocks and the `DirBlocks` directory operations. Owner: dirs.
