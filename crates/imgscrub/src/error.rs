use imgscrub_disk::{DiskError, LockError, RedoError};
pub use imgscrub_fs::ErrorCategory;
use imgscrub_prepare::PrepareError;
use imgscrub_qcow2::Qcow2Error;
use imgscrub_shrink::ShrinkError;
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
    /// Writing the guest tree as a tarball failed.
    #[error(transparent)]
    Export(#[from] imgscrub_export::ExportError),
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

impl Error {
    /// What kind of failure this is: an unsupported input, a damaged one, an image in use, a
    /// cancelled job, or anything else (see [`ErrorCategory`]). The `imgscrub` command maps
    /// it to its exit status.
    pub fn category(&self) -> ErrorCategory {
        use ErrorCategory::*;
        match self {
            Error::Disk(e) => disk(e),
            Error::Qcow2 { source, .. } => qcow2(source),
            Error::Filesystem(e) => e.category(),
            Error::Prepare(e) => prepare(e),
            Error::Shrink(e) => shrink(e),
            Error::Export(e) => export(e),
            Error::Lock(e) => lock(e),
            Error::Redo(e) => redo(e),
            Error::Open { .. }
            | Error::WrongFormat { .. }
            | Error::OutputIsInput { .. }
            | Error::ReadOnly { .. } => Other,
        }
    }
}

/// The category of `err` and its causes: the first error of the chain (`err`, then each
/// `source()`, which is what `anyhow::Error::chain` walks) that an imgscrub layer classifies
/// as something other than [`ErrorCategory::Other`]; `Other` when none does. Context added
/// on top (anyhow's `context`, an orchestrator's own error type with a `source`) does not
/// hide the category.
///
/// ```
/// use imgscrub::{ErrorCategory, error_category};
/// let e = imgscrub::Image::open("/nonexistent.img", Default::default()).unwrap_err();
/// assert_eq!(error_category(&e), ErrorCategory::Other);
/// ```
pub fn error_category(err: &(dyn std::error::Error + 'static)) -> ErrorCategory {
    std::iter::successors(Some(err), |e| e.source())
        .filter_map(category_of)
        .find(|c| *c != ErrorCategory::Other)
        .unwrap_or(ErrorCategory::Other)
}

/// The category of one error of any imgscrub layer; `None` for a type imgscrub does not own.
fn category_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorCategory> {
    if let Some(e) = e.downcast_ref::<Error>() {
        Some(e.category())
    } else if let Some(e) = e.downcast_ref::<Qcow2Error>() {
        Some(qcow2(e))
    } else if let Some(e) = e.downcast_ref::<PrepareError>() {
        Some(prepare(e))
    } else if let Some(e) = e.downcast_ref::<ShrinkError>() {
        Some(shrink(e))
    } else if let Some(e) = e.downcast_ref::<imgscrub_export::ExportError>() {
        Some(export(e))
    } else if let Some(e) = e.downcast_ref::<LockError>() {
        Some(lock(e))
    } else if let Some(e) = e.downcast_ref::<RedoError>() {
        Some(redo(e))
    } else {
        imgscrub_fs::category_of(e)
    }
}

fn disk(e: &DiskError) -> ErrorCategory {
    imgscrub_fs::category_of(e).unwrap_or(ErrorCategory::Other)
}

fn qcow2(e: &Qcow2Error) -> ErrorCategory {
    use ErrorCategory::*;
    match e {
        Qcow2Error::Disk(d) => disk(d),
        Qcow2Error::Corrupt { .. }
        | Qcow2Error::MarkedCorrupt
        | Qcow2Error::Dirty
        | Qcow2Error::BackingLoop(_)
        | Qcow2Error::OutOfRange { .. } => Damaged,
        Qcow2Error::Unsupported(_)
        | Qcow2Error::Encrypted(_)
        | Qcow2Error::UnknownIncompatible { .. }
        | Qcow2Error::ExternalDataFile(_)
        | Qcow2Error::BackingTooDeep(_) => Unsupported,
        Qcow2Error::InUse(_) => InUse,
        Qcow2Error::Io { .. } | Qcow2Error::ReadOnly => Other,
    }
}

fn prepare(e: &PrepareError) -> ErrorCategory {
    match e {
        PrepareError::Fs(e) => e.category(),
        _ => ErrorCategory::Other,
    }
}

fn shrink(e: &ShrinkError) -> ErrorCategory {
    use ErrorCategory::*;
    match e {
        ShrinkError::Disk(d) => disk(d),
        ShrinkError::Fs(e) => e.category(),
        ShrinkError::Cancelled => Interrupted,
        _ => Other,
    }
}

fn export(e: &imgscrub_export::ExportError) -> ErrorCategory {
    use imgscrub_export::ExportError;
    match e {
        ExportError::Fs(e) => e.category(),
        ExportError::Shrink(e) => shrink(e),
        ExportError::Io { .. } | ExportError::Entry { .. } => ErrorCategory::Other,
    }
}

fn lock(e: &LockError) -> ErrorCategory {
    match e {
        LockError::InUse { .. } => ErrorCategory::InUse,
        LockError::Io { .. } => ErrorCategory::Other,
    }
}

fn redo(e: &RedoError) -> ErrorCategory {
    match e {
        RedoError::Disk(d) => disk(d),
        RedoError::Interrupted { source, .. } => redo(source),
        RedoError::Io { .. } | RedoError::Foreign { .. } => ErrorCategory::Other,
    }
}
