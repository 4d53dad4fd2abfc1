//! The block layer of imgscrub.
//!
//! Everything above talks to storage through [`BlockDev`]: a `&self`, `Send + Sync` device
//! with positional reads and writes, so that rayon can read one image from several threads.
//! [`RawFile`] is a raw image, [`Slice`] a partition, [`MemDev`] a buffer for tests.

mod blockdev;
mod error;
pub mod failpoint;
pub mod lock;
pub mod lvm;
mod mem;
pub mod overlay;
pub mod partition;
mod raw;
pub mod redo;
mod slice;

pub use blockdev::{AllocKind, AllocRange, BlockDev, check_range};
pub use error::{DiskError, Result};
pub use lock::{ImageLock, LockError, LockMode};
pub use mem::MemDev;
pub use overlay::{Change, Overlay};
pub use partition::{Guid, Partition, PartitionTable, PartitionType, TableKind, discover};
pub use raw::RawFile;
pub use redo::{Recovery, RedoError, StagedFile};
pub use slice::Slice;
