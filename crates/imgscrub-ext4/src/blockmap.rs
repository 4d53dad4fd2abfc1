//! ext2/3 block maps: direct, indirect, double and triple indirect. Owner: mapping.
