//! Shrinking disk images: zero the free space of every filesystem and partition gap
//! ([`sparsify`]), and convert an image to compressed qcow2 or sparse raw on every core,
//! in guest order, byte-identical for the same input ([`convert`]).
//!
//! The two meet in `prepare --output`: [`free_ranges_of_disk`] gives the byte ranges that
//! are free, and [`convert`] with [`ConvertOptions::skip`] never reads them.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod compress;
pub mod convert;
mod error;
pub mod progress;
pub mod qcow2_out;
mod rangeset;
pub mod sparsify;

pub use compress::Compression;
pub use convert::{ConvertOptions, ConvertReport, OutputFormat, convert};
pub use error::{Result, ShrinkError};
pub use progress::{NoProgress, Progress};
pub use qcow2_out::{ClusterData, Qcow2Params, Qcow2Stream, Qcow2Summary};
pub use rangeset::RangeSet;
pub use sparsify::{
    Action, AreaReport, ExtFreeRanges, SparsifyOptions, SparsifyReport, free_ranges_of_disk,
    free_ranges_of_disk_with, sparsify,
};
