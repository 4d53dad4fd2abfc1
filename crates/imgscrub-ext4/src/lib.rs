//! The ext2/3/4 engine of imgscrub: read, offline edits that `e2fsck -fn` accepts, the
//! free-space map, and jbd2 journal replay. No kernel, no libext2fs.
//!
//! Layout: one module per on-disk structure, each with its parser and its writer side by
//! side, and the filesystem-level operations (`fs`) on top. Module owners while the engine is
//! built in parallel: core (superblock, group_desc, bitmap, inode, alloc, fs, free),
//! mapping (mapping, extent, blockmap, inline), dirs (dir, htree, xattr), journal (journal,
//! orphan). Each owner adds its `pub use` lines below its own module only.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod csum;
mod error;
pub mod types;

// core
pub mod alloc;
pub mod bitmap;
pub mod free;
pub mod fs;
pub mod group_desc;
pub mod inode;
pub mod le;
pub mod superblock;
pub use fs::{Ext4Fs, OpenOptions};
pub use superblock::Superblock;

// mapping
pub mod blockmap;
pub mod extent;
pub mod inline;
pub mod mapping;

// dirs
pub mod dir;
pub mod htree;
pub mod xattr;

// journal
pub mod journal;
pub mod orphan;

pub use error::{Ext4Error, Result};
pub use types::{DirEntry, FileType, FreeRange, NewAttr, SetAttr, Stat, Timestamp};
