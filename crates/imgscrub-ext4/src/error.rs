use imgscrub_disk::DiskError;

/// Everything that can go wrong in the ext engine.
///
/// `Corrupt` says which on-disk structure is wrong and where, so that a one-line message is
/// enough to find it with `debugfs`. Errors about the *request* (not found, exists…) are
/// separate variants, so that callers can tell damaged images from user mistakes.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error(transparent)]
    Disk(#[from] DiskError),

    /// On-disk metadata is inconsistent. `structure` names it ("superblock", "group
    /// descriptor 12", "inode 4711", "extent block 0x1234 of inode 12", "directory block 3 of
    /// inode 2", "htree root of inode 2", "journal block 17"...).
    #[error("corrupt ext4 {structure}: {detail}")]
    Corrupt { structure: String, detail: String },

    /// A checksum does not match. Kept apart from `Corrupt` because users ask about it.
    #[error(
        "ext4 {structure}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        structure: String,
        stored: u32,
        computed: u32,
    },

    /// The filesystem uses a feature we cannot read (incompat) — refuse to open.
    #[error(
        "ext4 feature `{name}` ({kind} bit {bit:#x}) is not supported: refusing to open the filesystem"
    )]
    UnsupportedFeature {
        name: String,
        kind: &'static str,
        bit: u32,
    },

    /// The filesystem can be read but we refuse to modify it; the text says why
    /// (a ro_compat feature we do not maintain, bigalloc, errors flag set, …).
    #[error("refusing to modify this filesystem: {0}")]
    ReadOnly(String),

    /// The journal needs recovery and it could not be replayed.
    #[error("the ext4 journal needs recovery: {0}")]
    NeedsRecovery(String),

    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("file exists: {0}")]
    Exists(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("is a directory: {0}")]
    IsADirectory(String),
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    #[error("file name too long ({0} bytes, at most 255)")]
    NameTooLong(usize),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("no space left on the filesystem ({0})")]
    NoSpace(&'static str),
    #[error("too many links: {0}")]
    TooManyLinks(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Ext4Error {
    pub fn corrupt(structure: impl Into<String>, detail: impl Into<String>) -> Self {
        Ext4Error::Corrupt {
            structure: structure.into(),
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = Ext4Error> = std::result::Result<T, E>;
