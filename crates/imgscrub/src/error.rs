use std::path::PathBuf;

/// Errors of the facade. `Display` is one complete line (`imgscrub: <error>` in the CLI).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The block layer failed (I/O, corrupt partition table…).
    #[error(transparent)]
    Disk(#[from] imgscrub_disk::DiskError),
    /// The qcow2 layer failed.
    #[error("{path}: {message}")]
    Qcow2 {
        /// The image.
        path: PathBuf,
        /// What the qcow2 reader said.
        message: String,
    },
    /// The image could not be opened or is not an image file.
    #[error("{path}: {message}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A qcow2 image, but this build cannot read qcow2 yet.
    #[error("{0}: qcow2 support not built yet (convert with `qemu-img convert -O raw`)")]
    Qcow2NotBuilt(PathBuf),
    /// The format given with `--format` does not match the file.
    #[error("{path}: not a {expected} image ({detail})")]
    WrongFormat {
        /// The image.
        path: PathBuf,
        /// The format asked for.
        expected: &'static str,
        /// What is there instead.
        detail: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
