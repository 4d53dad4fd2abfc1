//! What every v5 metadata block we write is stamped with, beside its own address and owner:
//! the metadata UUID and a log sequence number. The engine stamps LSN 0, as mkfs.xfs and
//! xfs_repair do for blocks written outside a log transaction: never "ahead of the log" for
//! `xfs_repair`, and log recovery after a later crash always replays over it.

/// UUID and LSN for v5 block headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// `sb.meta_uuid()`: the UUID v5 block headers carry.
    pub uuid: [u8; 16],
    /// Log sequence number: cycle in the high 32 bits, block in the low 32 bits.
    pub lsn: u64,
}
