use imgscrub_disk::DiskError;

/// Everything that can go wrong in the XFS engine.
///
/// `Corrupt` names the on-disk structure and where it is (AG number, block, inode), so that a
/// one-line message is enough to look at it with `xfs_db`. Errors about the *request* (not
/// found, not a directory…) are separate variants, so callers can tell a damaged image from a
/// user mistake.
#[derive(Debug, thiserror::Error)]
pub enum XfsError {
    #[error(transparent)]
    Disk(#[from] DiskError),

    /// On-disk metadata is inconsistent. `structure` names it ("superblock", "AGF of AG 2",
    /// "inode 131", "bmbt block 0x1234 of inode 131", "directory block 3 of inode 128"…).
    #[error("corrupt XFS {structure}: {detail}")]
    Corrupt { structure: String, detail: String },

    /// A v5 metadata checksum (CRC-32C) does not match.
    #[error(
        "XFS {structure}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        structure: String,
        stored: u32,
        computed: u32,
    },

    /// The filesystem uses a feature we cannot read: refuse to open it.
    #[error(
        "XFS feature `{name}` ({kind} bit {bit:#x}) is not supported: refusing to open the filesystem"
    )]
    UnsupportedFeature {
        name: String,
        kind: &'static str,
        bit: u32,
    },

    /// The filesystem must be repaired or its log replayed first; the text says what to do.
    #[error("{0}")]
    NeedsRepair(String),

    /// The filesystem can be read but not modified (all of XFS, until edits land; v4 always).
    #[error("refusing to modify this XFS filesystem: {0}")]
    ReadOnly(String),

    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("is a directory: {0}")]
    IsADirectory(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Not enough free space (or free inodes) for the change; the text says what was asked.
    #[error("no space left on the XFS filesystem: {0}")]
    NoSpace(String),
    /// The name is longer than 255 bytes.
    #[error("file name too long ({0} bytes, at most 255)")]
    NameTooLong(usize),
    #[error("file exists: {0}")]
    Exists(String),
    #[error("directory not empty: {0}")]
    NotEmpty(String),
}

pub type Result<T, E = XfsError> = std::result::Result<T, E>;

/// A `Corrupt` error.
pub(crate) fn corrupt(structure: impl Into<String>, detail: impl Into<String>) -> XfsError {
    XfsError::Corrupt {
        structure: structure.into(),
        detail: detail.into(),
    }
}
