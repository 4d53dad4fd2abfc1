//! Inode table entries: parse/serialize every field, extra_isize, checksum. Owner: core.
