//! imgscrub facade library: the API orchestrators link.
//!
//! ```no_run
//! use imgscrub::{Image, OpenOptions};
//! let img = Image::open("disk.qcow2", OpenOptions::default())?;
//! let report = img.inspect()?;
//! for p in &report.partitions {
//!     println!("{} {:?}", p.index, p.filesystem.as_ref().map(|f| &f.fs_type));
//! }
//! # Ok::<(), imgscrub::Error>(())
//! ```
//!
//! [`Image::open`] detects raw vs qcow2 by magic, [`Image::inspect`] reports the format,
//! the backing chain, the partition table and the filesystem in each partition as an
//! [`Inspection`] (serde-serializable; `imgscrub inspect --json` prints it, schema in
//! `docs/inspect-json.md`).

mod error;
mod image;
mod inspect;
mod tarball;
mod work;

pub use error::{Error, ErrorCategory, Result, error_category};
pub use image::{Format, Image, OpenOptions};
pub use inspect::{
    BackingFile, ExtFeaturesInfo, FilesystemInfo, Inspection, LvInfo, OsSection, PartitionInfo,
    PvInfo, SegmentInfo, TableInfo, VgInfo,
};

pub use work::{Guest, PrepareOutcome};

/// The block layer, for callers that need the raw device ([`Image::device`]).
pub use imgscrub_disk as disk;
/// The guest tree as a tarball.
pub use imgscrub_export as export;
/// Filesystem detection and the filesystem layer.
pub use imgscrub_fs as fs;
/// The prepare engine: profiles, options, reports.
pub use imgscrub_prepare as prepare;
/// Free-space zeroing and conversion.
pub use imgscrub_shrink as shrink;
