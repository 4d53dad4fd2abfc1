use std::io;

/// Errors of the block layer. Every variant says what was being done, so that a message
/// printed on its own (`imgscrub: …`) names the problem.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O call failed; `what` says which (e.g. "read 4096 bytes at 0x1000 of disk.img").
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A request reached past the end of the device.
    #[error("{what}: range {offset:#x}+{len:#x} is past the end of the device ({size:#x} bytes)")]
    OutOfRange {
        what: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// A write was attempted on a device opened read-only.
    #[error("the device is read-only")]
    ReadOnly,
    /// On-disk data is inconsistent (partition table, image header…); the text says where.
    #[error("corrupt {structure}: {detail}")]
    Corrupt {
        structure: &'static str,
        detail: String,
    },
    /// A valid layout we do not handle (yet); the text says which feature.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl DiskError {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        DiskError::Io {
            what: what.into(),
            source,
        }
    }
    pub fn corrupt(structure: &'static str, detail: impl Into<String>) -> Self {
        DiskError::Corrupt {
            structure,
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = DiskError> = std::result::Result<T, E>;
