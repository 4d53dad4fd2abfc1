//! Block group descriptors (32/64 byte, meta_bg), gdt_csum / metadata_csum. Owner: core.
