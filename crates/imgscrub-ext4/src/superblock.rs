//! Superblock: every field, feature flags (refuse unknown incompat), checksum. Owner: core.
