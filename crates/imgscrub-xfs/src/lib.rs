//! The XFS engine of imgscrub: reads v4 and v5 (CRC) filesystems from the on-disk format
//! itself — superblock, AG headers, free-space and inode btrees, inodes in every fork format,
//! directories in all five forms, symlinks, extended attributes — and reports free space from
//! the by-block free-space btrees. No kernel, no libxfs.
//!
//! Every v5 metadata block has its CRC-32C, magic number, owner and UUID checked on read.
//! Writing is not implemented yet: the engine opens read-only.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod error;

pub use error::{Result, XfsError};
pub use imgscrub_vocab::{FileType, FreeRange, NewAttr, SetAttr, Timestamp};
