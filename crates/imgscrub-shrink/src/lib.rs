//! Shrinking disk images: zero the free space of every filesystem and partition gap
//! ([`sparsify`]), and convert an image to compressed qcow2 or sparse raw on every core,
//! in guest order, byte-identical for the same input ([`convert`]).
//!
//! The two meet in `prepare --output`: [`free_ranges_of_disk`] gives the byte ranges that
//! are free, and [`convert`] with [`ConvertOptions::skip`] never reads them.
//!
//! ```no_run
//! use imgscrub_disk::RawFile;
//! use imgscrub_shrink::{
//!     Compression, ConvertOptions, NoProgress, SparsifyOptions, convert, free_ranges_of_disk,
//!     sparsify,
//! };
//! // `imgscrub convert IN OUT --sparsify --compress zstd`: one read-only pass.
//! let input = RawFile::open("disk.raw")?;
//! let free = free_ranges_of_disk(&input)?;
//! let opts = ConvertOptions {
//!     compression: Compression::Zstd,
//!     skip: Some(&free),
//!     ..ConvertOptions::default()
//! };
//! let report = convert(&input, "disk.qcow2".as_ref(), &opts, &NoProgress)?;
//! println!("read {} of {} bytes", report.bytes_read, report.virtual_size);
//!
//! // `imgscrub sparsify IMAGE`: in place.
//! let image = RawFile::open_rw("disk.raw")?;
//! let r = sparsify(&image, &SparsifyOptions::default(), &NoProgress)?;
//! println!("zeroed {} bytes, {} were zero already", r.zeroed, r.already_zero);
//! # Ok::<(), imgscrub_shrink::ShrinkError>(())
//! ```

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod compress;
pub mod convert;
pub mod disk_out;
mod error;
pub mod output;
pub mod progress;
pub mod qcow2_out;
mod rangeset;
pub mod sparsify;

pub use compress::Compression;
pub use convert::{ConvertOptions, ConvertReport, OutputFormat, convert};
pub use disk_out::{VhdStream, VmdkStream};
pub use error::{Result, ShrinkError};
pub use output::{OutputFile, same_file};
pub use progress::{NoProgress, Progress};
pub use qcow2_out::{ClusterData, Qcow2Params, Qcow2Stream, Qcow2Summary};
pub use rangeset::RangeSet;
pub use sparsify::{
    Action, AreaReport, ExtFreeRanges, SparsifyOptions, SparsifyReport, free_ranges_of_disk,
    free_ranges_of_disk_with, sparsify,
};
