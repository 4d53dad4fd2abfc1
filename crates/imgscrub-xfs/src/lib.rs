//! The XFS engine of imgscrub: reads v4 and v5 (CRC) filesystems from the on-disk format
//! itself — superblock, AG headers, free-space and inode btrees, inodes in every fork format,
//! directories in all five forms, symlinks, extended attributes — and reports free space from
//! the by-block free-space btrees. No kernel, no libxfs.
//!
//! Every v5 metadata block has its CRC-32C, magic number, owner and UUID checked on read.
//! Writing is not implemented yet: the engine opens read-only and refuses a writable open.
//!
//! Layout: one module per on-disk structure (`superblock`, `ag`, `btree`, `inode`, `bmap`,
//! `dir`, `attr`, `log`), `reader` for address arithmetic, and `fs` on top.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod ag;
pub mod attr;
pub mod attrwrite;
mod be;
pub mod bmap;
pub mod bmapwrite;
pub mod btree;
pub mod btree_build;
pub mod csum;
pub mod dir;
pub mod dirwrite;
mod error;
pub mod fs;
pub mod hash;
pub mod inode;
pub mod log;
pub mod meta;
pub mod reader;
pub mod space;
pub mod superblock;
mod write;

pub use error::{Result, XfsError};
pub use fs::{DirEntry, OpenOptions, Stat, XfsFs};
pub use imgscrub_vocab::{FileType, FreeRange, NewAttr, SetAttr, Timestamp};
pub use superblock::Superblock;
