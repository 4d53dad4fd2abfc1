//! What kind of failure an error is, across the layers: an input imgscrub does not handle, a
//! damaged input, an image in use, or anything else. The CLI turns it into its exit status
//! (docs/decisions.md, "Exit statuses"); orchestrators can use it to decide whether retrying,
//! repairing or routing the image elsewhere makes sense.
//!
//! Each layer classifies the errors it knows, looking inside the variants that wrap a lower
//! layer's error (thiserror's `transparent` variants hide the inner error from `source()`, so
//! walking the chain alone would not find it). This layer knows [`FsError`], the engines'
//! errors and the block layer's [`DiskError`]; the facade adds the image-level ones.

use crate::filesystem::FsError;
use imgscrub_disk::DiskError;
use imgscrub_ext4::Ext4Error;
use imgscrub_xfs::XfsError;

/// The category of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// The input is valid but uses something imgscrub does not handle: a qcow2 feature bit,
    /// encryption, a root filesystem of a kind it cannot open (Btrfs, LVM, LUKS…), an ext4 or
    /// XFS feature it refuses to read or to modify (XFS is read-only for now).
    Unsupported,
    /// The input is damaged: inconsistent metadata, a checksum mismatch, a journal or log
    /// that needs recovery imgscrub cannot do, an image marked corrupt or dirty.
    Damaged,
    /// Another process (QEMU, another imgscrub) holds the image.
    InUse,
    /// The job was cancelled (Ctrl-C, SIGTERM).
    Interrupted,
    /// Anything else: I/O errors, missing files, a request that cannot be done (no such
    /// guest file, file exists, bad profile…).
    Other,
}

impl FsError {
    /// The category of this error (see [`ErrorCategory`]).
    pub fn category(&self) -> ErrorCategory {
        use ErrorCategory::*;
        match self {
            FsError::UnsupportedFilesystem { .. }
            | FsError::UnsupportedRoot { .. }
            | FsError::Unsupported(_) => Unsupported,
            FsError::Ext4(e) => ext4(e),
            FsError::Xfs(e) => xfs(e),
            FsError::Disk(e) => disk(e),
            FsError::NotFound(_)
            | FsError::Exists(_)
            | FsError::NotADirectory(_)
            | FsError::IsADirectory(_)
            | FsError::NotEmpty(_)
            | FsError::SymlinkLoop(_)
            | FsError::InvalidPath(_)
            | FsError::Io { .. } => Other,
        }
    }
}

/// The category of one error of this layer or below — [`FsError`], the ext4 and XFS engines'
/// errors, [`DiskError`] — including the errors they wrap; `None` for any other type. Only
/// `err` itself is looked at, not its `source()`: a caller walking a chain calls it on each
/// link.
pub fn category_of(err: &(dyn std::error::Error + 'static)) -> Option<ErrorCategory> {
    if let Some(e) = err.downcast_ref::<FsError>() {
        Some(e.category())
    } else if let Some(e) = err.downcast_ref::<DiskError>() {
        Some(disk(e))
    } else if let Some(e) = err.downcast_ref::<Ext4Error>() {
        Some(ext4(e))
    } else {
        err.downcast_ref::<XfsError>().map(xfs)
    }
}

fn disk(e: &DiskError) -> ErrorCategory {
    use ErrorCategory::*;
    match e {
        DiskError::Corrupt { .. } => Damaged,
        // Metadata pointing past the end of the device: a damaged or truncated image.
        DiskError::OutOfRange { .. } => Damaged,
        DiskError::Unsupported(_) => Unsupported,
        DiskError::Io { .. } | DiskError::ReadOnly => Other,
    }
}

fn ext4(e: &Ext4Error) -> ErrorCategory {
    use ErrorCategory::*;
    match e {
        Ext4Error::Disk(d) => disk(d),
        Ext4Error::Corrupt { .. } | Ext4Error::Checksum { .. } | Ext4Error::NeedsRecovery(_) => {
            Damaged
        }
        Ext4Error::UnsupportedFeature { .. }
        | Ext4Error::ReadOnly(_)
        | Ext4Error::Unsupported(_) => Unsupported,
        Ext4Error::NotFound(_)
        | Ext4Error::Exists(_)
        | Ext4Error::NotADirectory(_)
        | Ext4Error::IsADirectory(_)
        | Ext4Error::NotEmpty(_)
        | Ext4Error::NameTooLong(_)
        | Ext4Error::InvalidArgument(_)
        | Ext4Error::NoSpace(_)
        | Ext4Error::TooManyLinks(_) => Other,
    }
}

fn xfs(e: &XfsError) -> ErrorCategory {
    use ErrorCategory::*;
    match e {
        XfsError::Disk(d) => disk(d),
        XfsError::Corrupt { .. } | XfsError::Checksum { .. } | XfsError::NeedsRepair(_) => Damaged,
        XfsError::UnsupportedFeature { .. } | XfsError::ReadOnly(_) => Unsupported,
        XfsError::NotFound(_)
        | XfsError::NotADirectory(_)
        | XfsError::IsADirectory(_)
        | XfsError::Invalid(_)
        | XfsError::NoSpace(_)
        | XfsError::NameTooLong(_)
        | XfsError::Exists(_)
        | XfsError::NotEmpty(_) => Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorCategory::*;

    #[test]
    fn wrapped_engine_errors_keep_their_category() {
        let cases: Vec<(FsError, ErrorCategory)> = vec![
            (
                FsError::Ext4(Ext4Error::Checksum {
                    structure: "inode 2".into(),
                    stored: 1,
                    computed: 2,
                }),
                Damaged,
            ),
            (FsError::Ext4(Ext4Error::NeedsRecovery("x".into())), Damaged),
            (
                FsError::Ext4(Ext4Error::UnsupportedFeature {
                    name: "x".into(),
                    kind: "incompat",
                    bit: 1,
                }),
                Unsupported,
            ),
            (FsError::Ext4(Ext4Error::ReadOnly("x".into())), Unsupported),
            (FsError::Ext4(Ext4Error::NoSpace("blocks")), Other),
            (FsError::Xfs(XfsError::ReadOnly("x".into())), Unsupported),
            (FsError::Xfs(XfsError::NeedsRepair("x".into())), Damaged),
            (
                FsError::Xfs(XfsError::Corrupt {
                    structure: "AGF of AG 0".into(),
                    detail: "x".into(),
                }),
                Damaged,
            ),
            (
                FsError::Xfs(XfsError::Disk(DiskError::corrupt("GPT header", "x"))),
                Damaged,
            ),
            (
                FsError::Ext4(Ext4Error::Disk(DiskError::io(
                    "read",
                    std::io::Error::other("x"),
                ))),
                Other,
            ),
            (
                FsError::Disk(DiskError::Unsupported("x".into())),
                Unsupported,
            ),
            (FsError::NotFound("/x".into()), Other),
            (FsError::UnsupportedRoot { found: Vec::new() }, Unsupported),
        ];
        for (e, want) in cases {
            assert_eq!(e.category(), want, "{e:?}");
            assert_eq!(category_of(&e), Some(want), "{e:?}");
        }
        let e = Ext4Error::corrupt("superblock", "x");
        assert_eq!(category_of(&e), Some(Damaged));
        assert_eq!(category_of(&std::io::Error::other("x")), None);
    }
}
