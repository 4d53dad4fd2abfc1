//! Hashed (htree / dir_index) directories: hashes, index nodes, lookup, insert, split, delete. Owner: dirs.
