//! qcow2 v2/v3 read and write for imgscrub.
//!
//! [`Qcow2`] opens an image made by `qemu-img` (or by [`Qcow2::create`]) and implements
//! [`imgscrub_disk::BlockDev`] on its guest view: reads follow L1/L2 tables, zero clusters,
//! compressed clusters (deflate and zstd), extended L2 subclusters and backing chains (qcow2
//! or raw); writes allocate clusters at the end of the file, keep refcounts exact (any width
//! from 1 to 64 bits) and turn whole-cluster zeroing into zero flags or deallocation.
//!
//! Images that cannot be handled safely are refused at open with a one-line error:
//! encryption, the corrupt bit, unknown incompatible features, external data files, and (for
//! writing) the dirty bit without lazy refcounts, internal snapshots, or a lock held by QEMU.
//! A dirty image with lazy refcounts has its refcounts rebuilt when opened for writing.
//!
//! ```no_run
//! use imgscrub_disk::BlockDev;
//! use imgscrub_qcow2::{OpenOptions, Qcow2};
//! let img = Qcow2::open("disk.qcow2", &OpenOptions::read_write())?;
//! let mut sector = [0u8; 512];
//! img.read_at(&mut sector, 0)?;
//! img.write_zeroes(1 << 20, 1 << 20)?;
//! img.flush()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod backing;
mod cache;
pub mod compress;
mod create;
mod error;
pub mod header;
mod image;
pub mod l2;
pub mod refcount;
mod repair;
mod storage;
mod write;

pub use create::CreateOptions;
pub use error::{Qcow2Error, Result};
pub use header::{CompressionType, Header};
pub use image::{OpenOptions, Qcow2};
pub use storage::{DevStorage, FileStorage, MemStorage, Storage};
