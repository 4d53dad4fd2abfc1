//! Extent trees: lookup, insert, remove ranges, split, grow depth, checksum. Owner: mapping.
