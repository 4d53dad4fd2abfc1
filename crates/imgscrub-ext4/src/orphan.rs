//! Orphan list and orphan_file processing. Owner: journal.
