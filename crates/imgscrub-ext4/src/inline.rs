//! inline_data file contents (i_block + system.data xattr). Owner: mapping.
