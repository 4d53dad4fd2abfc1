use std::path::PathBuf;

/// Errors of the facade. `Display` is one complete line (`imgscrub: <error>` in the CLI).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The block layer failed (I/O, corrupt partition table…).
    #[error(transparent)]
    Disk(#[from] imgscrub_disk::DiskError),
    /// The qcow2 layer refused or failed to open the image.
    #[error("{}: {source}", path.display())]
    Qcow2 {
        /// The image.
        path: PathBuf,
        /// What the qcow2 reader said.
        #[source]
        source: imgscrub_qcow2::Qcow2Error,
    },
    /// The image could not be opened or is not an image file.
    #[error("{}: {message}", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The format given with `--format` does not match the file.
    #[error("{}: not a {expected} image ({detail})", path.display())]
    WrongFormat {
        /// The image.
        path: PathBuf,
        /// The format asked for.
        expected: &'static str,
        /// What is there instead.
        detail: String,
    },
    /// A filesystem inside the image could not be opened, read or edited.
    #[error(transparent)]
    Filesystem(#[from] imgscrub_fs::FsError),
    /// The prepare engine refused the profile or failed.
    #[error(transparent)]
    Prepare(#[from] imgscrub_prepare::PrepareError),
    /// Zeroing free space or converting failed.
    #[error(transparent)]
    Shrink(#[from] imgscrub_shrink::ShrinkError),
    /// The image is in use by another process (QEMU image locks), or cannot be locked.
    #[error(transparent)]
    Lock(#[from] imgscrub_disk::LockError),
    /// Finishing or rolling back an interrupted change (the redo log) failed.
    #[error("{0}")]
    Redo(#[from] imgscrub_disk::RedoError),
    /// The output of a conversion names the input image or one of its backing files
    /// (through another path, a hard link or a symbolic link): writing it would destroy
    /// what is being read.
    #[error("{}: the output is the same file as {} (choose another output path)", output.display(), input.display())]
    OutputIsInput {
        /// The output path given.
        output: PathBuf,
        /// The input (or backing file) it names.
        input: PathBuf,
    },
    /// Writing was asked of an image opened read-only.
    #[error("{}: opened read-only; open it for writing to change it", path.display())]
    ReadOnly {
        /// The image.
        path: PathBuf,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
