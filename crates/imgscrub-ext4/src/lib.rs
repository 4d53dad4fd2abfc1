//! The ext2/3/4 engine of imgscrub: read, offline edits that `e2fsck -fn` accepts, the
//! free-space map, and jbd2 journal replay. No kernel, no libext2fs.
//!
//! Layout: one module per on-disk structure, each with its parser and its writer side by
//! side (superblock, group descriptors, bitmaps, inodes, extents, block maps, directory
//! blocks, htree, xattrs, journal), and the filesystem-level operations on top.

pub mod csum;
mod error;

pub use error::{Ext4Error, Result};
