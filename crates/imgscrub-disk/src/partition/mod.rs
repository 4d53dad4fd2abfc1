//! Partition discovery: GPT (512- and 4096-byte logical sectors, primary and backup headers),
//! MBR (primary, extended and logical partitions), and "no table" (a whole-disk filesystem).
//!
//! Everything is read through [`BlockDev`], so a qcow2 image is read the same way as a raw
//! file. Nothing on disk is trusted: every number is range-checked with checked arithmetic,
//! every loop over on-disk data is bounded, and a damaged table gives either a clean
//! [`DiskError`] or a result with [`PartitionTable::warnings`].
//!
//! ```
//! use imgscrub_disk::{MemDev, partition::{discover, TableKind}};
//! let disk = MemDev::zeroed(1 << 20);
//! let table = discover(&disk).unwrap();
//! assert_eq!(table.kind, TableKind::None); // no table: the whole disk is one "partition"
//! assert_eq!(table.partitions.len(), 1);
//! ```

mod gpt;
mod mbr;

use crate::blockdev::BlockDev;
use crate::error::{DiskError, Result};
use crate::slice::Slice;
use std::fmt;

pub use gpt::gpt_type_name;
pub use mbr::mbr_type_name;

/// A GUID as stored on disk (the first three fields little-endian, as GPT and UEFI store them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID (an unused GPT entry has this type).
    pub const ZERO: Guid = Guid([0; 16]);

    /// True for the all-zero GUID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parse the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (any case).
    pub fn parse(s: &str) -> Option<Guid> {
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
        if hex.len() != 32 || s.len() != 36 {
            return None;
        }
        let mut be = [0u8; 16];
        for (i, b) in be.iter_mut().enumerate() {
            let hi = (*hex.get(2 * i)? as char).to_digit(16)?;
            let lo = (*hex.get(2 * i + 1)? as char).to_digit(16)?;
            *b = u8::try_from(hi * 16 + lo).ok()?;
        }
        // Text is big-endian; the first three fields are stored little-endian.
        let mut d = be;
        d[0..4].reverse();
        d[4..6].reverse();
        d[6..8].reverse();
        Some(Guid(d))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            d[3],
            d[2],
            d[1],
            d[0],
            d[5],
            d[4],
            d[7],
            d[6],
            d[8],
            d[9],
            d[10],
            d[11],
            d[12],
            d[13],
            d[14],
            d[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Which kind of partition table a disk has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableKind {
    /// A GUID partition table.
    Gpt {
        /// The disk GUID from the header in use.
        disk_guid: Guid,
        /// The logical sector size the table was found with (512 or 4096).
        sector_size: u32,
    },
    /// A DOS/MBR partition table.
    Mbr {
        /// The 32-bit disk signature at byte 440 (Linux shows it as the `PTUUID`).
        disk_signature: u32,
    },
    /// No partition table: the whole disk is one pseudo-partition (index 0).
    None,
}

/// The type of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionType {
    /// A GPT partition type GUID.
    Gpt(Guid),
    /// An MBR system id byte.
    Mbr(u8),
    /// The whole-disk pseudo-partition of a disk without a table.
    WholeDisk,
}

impl PartitionType {
    /// A short human name for well-known types (`"Linux filesystem"`, `"EFI System"`…).
    pub fn name(&self) -> Option<&'static str> {
        match self {
            PartitionType::Gpt(g) => gpt_type_name(g),
            PartitionType::Mbr(t) => mbr_type_name(*t),
            PartitionType::WholeDisk => Some("whole disk"),
        }
    }
}

impl fmt::Display for PartitionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionType::Gpt(g) => write!(f, "{g}"),
            PartitionType::Mbr(t) => write!(f, "0x{t:02x}"),
            PartitionType::WholeDisk => f.write_str("whole-disk"),
        }
    }
}

/// One partition, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The number Linux gives it (`sda<index>`): the GPT entry slot + 1; MBR primaries 1–4,
    /// logical partitions from 5. 0 for the whole-disk pseudo-partition.
    pub index: u32,
    /// Byte offset of the first byte.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// The type GUID or MBR system id.
    pub ptype: PartitionType,
    /// GPT partition name (UTF-16 on disk); empty for MBR.
    pub name: String,
    /// GPT unique partition GUID in text form; for MBR the Linux-style `SIGNATURE-NN`
    /// (`PARTUUID=` in fstab); empty for the whole-disk pseudo-partition.
    pub part_uuid: String,
    /// GPT attribute bits (0 for MBR).
    pub attributes: u64,
    /// MBR boot flag (0x80), or GPT attribute bit 2 "legacy BIOS bootable".
    pub bootable: bool,
}

impl Partition {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// True for an MBR extended partition (a container of logical partitions, not a
    /// filesystem).
    pub fn is_extended(&self) -> bool {
        matches!(self.ptype, PartitionType::Mbr(t) if mbr::is_extended_type(t))
    }

    /// The partition as a device of its own.
    pub fn slice<D: BlockDev>(&self, dev: D) -> Result<Slice<D>> {
        Slice::new(dev, self.start, self.size)
    }
}

/// What [`discover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// GPT, MBR or none.
    pub kind: TableKind,
    /// Partitions sorted by index.
    pub partitions: Vec<Partition>,
    /// Problems that did not stop discovery (damaged primary GPT, overlaps, entries outside
    /// the disk…), one sentence each.
    pub warnings: Vec<String>,
    /// True when the table must not be rewritten as found (e.g. read from the backup GPT
    /// because the primary is damaged). Editing filesystems inside is still fine.
    pub read_only: bool,
}

/// Largest GPT entry array we accept (bytes). The UEFI minimum is 16 KiB; 4 MiB is generous.
pub const MAX_GPT_ENTRY_ARRAY: u64 = 4 << 20;
/// Most logical partitions followed in an EBR chain.
pub const MAX_LOGICAL_PARTITIONS: usize = 256;

/// Find the partition table of `dev` and its partitions.
///
/// * A protective MBR (type 0xEE) → GPT, found with 512- or 4096-byte sectors. When the
///   primary header or its entry array fails its CRC32, the backup at the last LBA is used,
///   with a warning and [`PartitionTable::read_only`] set. Both damaged → an error.
/// * A valid MBR → primary partitions and the logical partitions of the EBR chain.
/// * Neither → [`TableKind::None`] with one whole-disk pseudo-partition.
///
/// Errors only for I/O failures and for a disk that says it is GPT but has no valid header.
pub fn discover(dev: &dyn BlockDev) -> Result<PartitionTable> {
    let len = dev.len();
    let mut warnings = Vec::new();
    let sector0 = if len >= 512 {
        let mut b = [0u8; 512];
        dev.read_at(&mut b, 0)?;
        Some(b)
    } else {
        None
    };

    let mbr = sector0.as_ref().and_then(mbr::parse_mbr_sector);
    match &mbr {
        Some(m) if m.protective => {
            if m.hybrid {
                warnings.push(
                    "hybrid MBR: the MBR lists partitions besides the GPT protective entry; \
                     using the GPT"
                        .to_string(),
                );
            }
            return gpt::read_gpt(dev, warnings);
        }
        Some(_) => {
            if gpt::looks_like_gpt(dev)? {
                warnings.push(
                    "a GPT header exists but the MBR is not protective; using the MBR as Linux does"
                        .to_string(),
                );
            }
            return mbr::read_mbr(dev, sector0.as_ref(), warnings);
        }
        None => {}
    }
    // No MBR signature (or a FAT boot sector): a GPT without protective MBR is still honoured
    // when its header is valid, since the disk would otherwise look empty.
    if gpt::looks_like_gpt(dev)? {
        match gpt::read_gpt(dev, Vec::new()) {
            Ok(mut t) => {
                t.warnings.insert(
                    0,
                    "GPT without a protective MBR (Linux ignores it unless booted with gpt)"
                        .to_string(),
                );
                return Ok(t);
            }
            Err(DiskError::Io { what, source }) => return Err(DiskError::Io { what, source }),
            Err(e) => warnings.push(format!("ignored a GPT signature: {e}")),
        }
    }
    let partitions = if len > 0 {
        vec![Partition {
            index: 0,
            start: 0,
            size: len,
            ptype: PartitionType::WholeDisk,
            name: String::new(),
            part_uuid: String::new(),
            attributes: 0,
            bootable: false,
        }]
    } else {
        Vec::new()
    };
    Ok(PartitionTable {
        kind: TableKind::None,
        partitions,
        warnings,
        read_only: false,
    })
}

/// Warn about partitions that overlap each other (sorted copy; O(n log n)).
fn check_overlaps(parts: &[Partition], warnings: &mut Vec<String>) {
    let mut v: Vec<&Partition> = parts.iter().filter(|p| !p.is_extended()).collect();
    v.sort_by_key(|p| (p.start, p.index));
    let mut prev: Option<&Partition> = None;
    for p in v {
        if let Some(q) = prev {
            if p.start < q.end() {
                warnings.push(format!(
                    "partitions {} and {} overlap ({:#x}..{:#x} and {:#x}..{:#x})",
                    q.index,
                    p.index,
                    q.start,
                    q.end(),
                    p.start,
                    p.end()
                ));
            }
            if p.end() > q.end() {
                prev = Some(p);
            }
        } else {
            prev = Some(p);
        }
    }
}

fn le16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_roundtrip() {
        let s = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
        let g = Guid::parse(s).unwrap();
        assert_eq!(g.0[0], 0x28);
        assert_eq!(g.to_string(), s);
        assert!(Guid::parse("nope").is_none());
    }
}
