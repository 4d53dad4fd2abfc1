//! jbd2 journal: parse and replay (descriptor, commit, revoke; v2/v3 checksums; 64-bit). Owner: journal.
