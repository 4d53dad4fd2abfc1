//! The block layer of imgscrub.
//!
//! Everything above talks to storage through [`BlockDev`]: a `&self`, `Send + Sync` device
//! with positional reads and writes, so that rayon can read one image from several threads.
//! [`RawFile`] is a raw image, [`Slice`] a partition, [`MemDev`] a buffer for tests.

mod blockdev;
mod error;
mod mem;
pub mod overlay;
pub mod partition;
mod raw;
mod slice;

pub use blockdev::{AllocKind, AllocRange, BlockDev, check_range};
pub use error::{DiskError, Result};
pub use mem::MemDev;
pub use overlay::{Change, Overlay};
pub use partition::{Guid, Partition, PartitionTable, PartitionType, TableKind, discover};
pub use raw::RawFile;
pub use slice::Slice;
