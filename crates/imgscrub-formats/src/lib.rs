//! Image container formats besides qcow2 (which has its own crate, `imgscrub-qcow2`).
//!
//! - [`detect`]: what kind of image a file is, by the magic of every format `qemu-img info`
//!   knows (VMDK sparse, streamOptimized and descriptor files, VHD fixed/dynamic/differencing,
//!   VHDX, VDI, QED, qcow v1, Parallels, DMG, cloop, Bochs…). A file that matches none is raw.
//! - [`Vmdk`]: hosted sparse VMDK (monolithicSparse, streamOptimized) read as a [`BlockDev`].
//! - [`Vhd`]: VHD fixed and dynamic read as a [`BlockDev`]; differencing disks are refused.
//! - [`vmdk::SparseHeader`], [`vhd::Footer`], [`vhd::DynamicHeader`]: the on-disk structures,
//!   decoded and encoded, for the writers in `imgscrub-shrink`.
//!
//! Every reader is read-only and never panics on what a file holds: damaged structures are
//! [`DiskError::Corrupt`] naming the structure, valid but unhandled layouts
//! [`DiskError::Unsupported`] naming the format and the `qemu-img convert` line that turns it
//! into something imgscrub opens.
//!
//! [`BlockDev`]: imgscrub_disk::BlockDev
//! [`DiskError::Corrupt`]: imgscrub_disk::DiskError::Corrupt
//! [`DiskError::Unsupported`]: imgscrub_disk::DiskError::Unsupported

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod bounded;
pub mod detect;
mod le;
pub mod vhd;
pub mod vmdk;

pub use detect::{Detected, Kind, detect, detect_file};
pub use vhd::Vhd;
pub use vmdk::Vmdk;
