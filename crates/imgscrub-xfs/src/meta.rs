//! What every v5 metadata block we write is stamped with, beside its own address and owner:
//! the metadata UUID and a log sequence number. The LSN is the current log head (taken from
//! the clean log at open), so no block we write is "ahead of the log" for `xfs_repair` or
//! for log recovery after the next mount.

/// UUID and LSN for v5 block headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// `sb.meta_uuid()`: the UUID v5 block headers carry.
    pub uuid: [u8; 16],
    /// Log sequence number: cycle in the high 32 bits, block in the low 32 bits.
    pub lsn: u64,
}
