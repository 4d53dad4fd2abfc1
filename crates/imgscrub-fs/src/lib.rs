//! The filesystem layer of imgscrub: the [`Filesystem`] trait every backend implements
//! (ext2/3/4, FAT, a host directory), detection by magic, the free space of any probed
//! filesystem ([`free_space`]), and path resolution confined to a guest root.
//!
//! This is the only layer that names filesystem engines (`imgscrub-ext4`, `imgscrub-xfs`):
//! everything above speaks the [`Filesystem`] trait and the shared vocabulary re-exported
//! from [`filesystem`].

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod category;
pub mod ext4;
pub mod fat;
pub mod filesystem;
pub mod free;
pub mod guest;
pub mod hostdir;
pub mod probe;
pub mod resolve;
pub mod tree;
pub mod xfs;

pub use category::{ErrorCategory, category_of};
pub use ext4::Ext4;
pub use fat::FatFs;
pub use filesystem::{Entry, Filesystem, FsError, FsKind, Meta, NodeId, Result};
pub use free::{FreeSpace, free_space};
pub use hostdir::HostDir;
pub use resolve::{Resolved, resolve, resolve_entry};
pub use tree::GuestTree;
pub use xfs::Xfs;
