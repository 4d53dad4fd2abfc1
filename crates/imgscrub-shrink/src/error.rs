//! The error type of the shrink layer.

use std::io;

/// Errors of free-space zeroing and conversion. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ShrinkError {
    /// The block layer failed (reading the input, zeroing a range…).
    #[error(transparent)]
    Disk(#[from] imgscrub_disk::DiskError),
    /// A filesystem could not be read (its free-space map, its superblock…).
    #[error(transparent)]
    Fs(#[from] imgscrub_fs::FsError),
    /// Writing or creating the output file failed; `what` says which call.
    #[error("{what}: {source}")]
    Io {
        /// The operation, e.g. "write 65536 bytes at 0x30000 of out.qcow2".
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The compressor failed (not "did not compress": that stores the cluster raw).
    #[error("{codec} compression failed: {detail}")]
    Compress {
        /// `zlib` or `zstd`.
        codec: &'static str,
        /// The library's message.
        detail: String,
    },
    /// The output path cannot be written as an image file (a directory, a device…).
    #[error("{}: {reason}", path.display())]
    Output {
        /// The output path given.
        path: std::path::PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An option is out of range (cluster size, level, format/compression combination).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A worker thread failed unexpectedly (a bug): the conversion stopped cleanly instead of
    /// hanging or aborting.
    #[error("internal error in a conversion worker: {0}")]
    Worker(String),
    /// [`Progress::cancelled`](crate::Progress::cancelled) asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// The output would exceed what the format can describe.
    #[error("output too large: {0}")]
    TooLarge(String),
}

impl ShrinkError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        ShrinkError::Io {
            what: what.into(),
            source,
        }
    }
}

/// `Result` with [`ShrinkError`].
pub type Result<T, E = ShrinkError> = std::result::Result<T, E>;
