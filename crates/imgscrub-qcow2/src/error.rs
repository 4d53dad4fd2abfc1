//! The error type of the qcow2 layer and its mapping onto [`DiskError`].

use imgscrub_disk::DiskError;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while opening, reading or writing a qcow2 image.
///
/// Every message is one line and names the structure, the offset and what is wrong, so that
/// `imgscrub: {err}` is enough for a user to understand the problem.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2Error {
    /// An I/O call on the image (or a backing file) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. "read 65536 bytes at 0x30000 of disk.qcow2".
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The block layer below failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// An on-disk structure is inconsistent; nothing was written.
    #[error("corrupt qcow2 {structure} at {offset:#x}: {detail}")]
    Corrupt {
        /// Which structure: "header", "L1 table", "L2 table", "refcount block"…
        structure: &'static str,
        /// Host (file) offset of the structure or entry, or the guest offset for mappings.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A valid qcow2 feature this implementation does not handle.
    #[error("unsupported qcow2 feature: {0}")]
    Unsupported(String),
    /// The image is encrypted (`crypt_method` != 0).
    #[error("qcow2 image is encrypted (crypt_method {0}): encrypted images are not supported")]
    Encrypted(u32),
    /// The image has the "corrupt" incompatible bit set.
    #[error(
        "qcow2 image is marked corrupt (incompatible bit 1): repair it with `qemu-img check -r all` first"
    )]
    MarkedCorrupt,
    /// The image has the "dirty" bit set and would be opened for writing.
    #[error(
        "qcow2 image is dirty (refcounts may be stale after an unclean shutdown): run `qemu-img check -r all` before writing to it"
    )]
    Dirty,
    /// An incompatible feature bit this implementation does not know.
    #[error("qcow2 image uses unknown incompatible feature bit {bit} ({name})")]
    UnknownIncompatible {
        /// The bit number.
        bit: u32,
        /// Its name from the feature name table, or "unnamed".
        name: String,
    },
    /// The data lives in an external data file.
    #[error("qcow2 image uses an external data file{0}: external data files are not supported")]
    ExternalDataFile(String),
    /// A backing chain refers back to an image already in the chain.
    #[error("qcow2 backing chain loops: {} is already in the chain", .0.display())]
    BackingLoop(PathBuf),
    /// The backing chain is longer than the limit.
    #[error("qcow2 backing chain is deeper than {0} images")]
    BackingTooDeep(usize),
    /// Another process (QEMU, another imgscrub) holds a conflicting image lock; the text
    /// names the image and the conflicting permission.
    #[error("{0}")]
    InUse(String),
    /// A write to an image opened read-only.
    #[error("the qcow2 image is opened read-only")]
    ReadOnly,
    /// A request past the end of the virtual disk.
    #[error(
        "{what}: range {offset:#x}+{len:#x} is past the end of the virtual disk ({size:#x} bytes)"
    )]
    OutOfRange {
        /// The operation.
        what: &'static str,
        /// Guest offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Virtual size.
        size: u64,
    },
}

/// Result with [`Qcow2Error`].
pub type Result<T, E = Qcow2Error> = std::result::Result<T, E>;

impl Qcow2Error {
    /// A [`Qcow2Error::Corrupt`].
    pub fn corrupt(structure: &'static str, offset: u64, detail: impl Into<String>) -> Self {
        Qcow2Error::Corrupt {
            structure,
            offset,
            detail: detail.into(),
        }
    }

    /// A [`Qcow2Error::Io`].
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Qcow2Error::Io {
            what: what.into(),
            source,
        }
    }
}

impl From<Qcow2Error> for DiskError {
    fn from(e: Qcow2Error) -> Self {
        match e {
            Qcow2Error::Io { what, source } => DiskError::Io { what, source },
            Qcow2Error::Disk(d) => d,
            Qcow2Error::Corrupt {
                structure,
                offset,
                detail,
            } => DiskError::Corrupt {
                structure: corrupt_structure_name(structure),
                detail: format!("at {offset:#x}: {detail}"),
            },
            Qcow2Error::ReadOnly => DiskError::ReadOnly,
            Qcow2Error::OutOfRange {
                what,
                offset,
                len,
                size,
            } => DiskError::OutOfRange {
                what,
                offset,
                len,
                size,
            },
            other => DiskError::Unsupported(other.to_string()),
        }
    }
}

/// `DiskError::Corrupt` wants a `&'static str`: prefix the known names with "qcow2".
fn corrupt_structure_name(s: &'static str) -> &'static str {
    match s {
        "header" => "qcow2 header",
        "header extension" => "qcow2 header extension",
        "backing file name" => "qcow2 backing file name",
        "L1 table" => "qcow2 L1 table",
        "L1 entry" => "qcow2 L1 entry",
        "L2 table" => "qcow2 L2 table",
        "L2 entry" => "qcow2 L2 entry",
        "refcount table" => "qcow2 refcount table",
        "refcount block" => "qcow2 refcount block",
        "compressed cluster" => "qcow2 compressed cluster",
        "data cluster" => "qcow2 data cluster",
        other => other,
    }
}
