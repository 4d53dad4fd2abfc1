//! DOS/MBR partition tables: four primary entries in sector 0, logical partitions in a chain
//! of extended boot records (EBRs) inside the extended partition. MBR sectors are always
//! 512 bytes here.

use super::{
    MAX_LOGICAL_PARTITIONS, Partition, PartitionTable, PartitionType, TableKind, check_overlaps,
    le16, le32,
};
use crate::blockdev::BlockDev;
use crate::error::Result;
use std::collections::HashSet;

const SECTOR: u64 = 512;
const TABLE_OFFSET: usize = 446;
const PROTECTIVE: u8 = 0xee;

/// One raw 16-byte entry.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    boot: u8,
    ptype: u8,
    start_lba: u32,
    sectors: u32,
}

impl Entry {
    fn used(&self) -> bool {
        self.ptype != 0 && self.sectors != 0
    }
}

fn entry(sector: &[u8], i: usize) -> Entry {
    let o = TABLE_OFFSET + 16 * i;
    Entry {
        boot: sector.get(o).copied().unwrap_or(0),
        ptype: sector.get(o + 4).copied().unwrap_or(0),
        start_lba: le32(sector, o + 8),
        sectors: le32(sector, o + 12),
    }
}

/// What sector 0 says, when it is an MBR at all.
#[derive(Debug, Clone)]
pub(super) struct MbrSector {
    /// Has a 0xEE entry: the disk is GPT.
    pub protective: bool,
    /// Has a 0xEE entry and other entries.
    pub hybrid: bool,
}

/// True for extended (container) partition types.
pub(super) fn is_extended_type(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// A FAT, NTFS or exFAT boot sector also ends in 55 AA; it is a filesystem, not an MBR.
fn is_fs_boot_sector(s: &[u8]) -> bool {
    let oem = s.get(3..11).unwrap_or(&[]);
    if oem == b"NTFS    " || oem == b"EXFAT   " {
        return true;
    }
    let jump = s.first().copied().unwrap_or(0);
    if jump != 0xeb && jump != 0xe9 {
        return false;
    }
    let bps = le16(s, 11);
    let spc = s.get(13).copied().unwrap_or(0);
    let reserved = le16(s, 14);
    let fats = s.get(16).copied().unwrap_or(0);
    let bpb_ok = matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc != 0
        && spc.is_power_of_two()
        && reserved != 0
        && (1..=2).contains(&fats);
    let marker = s.get(0x36..0x39) == Some(b"FAT".as_slice())
        || s.get(0x52..0x55) == Some(b"FAT".as_slice());
    bpb_ok && marker
}

/// Classify sector 0; `None` when it is not an MBR (no 55 AA, a filesystem boot sector, or
/// boot indicators other than 0x00/0x80 as libblkid requires).
pub(super) fn parse_mbr_sector(s: &[u8; 512]) -> Option<MbrSector> {
    if s[510] != 0x55 || s[511] != 0xaa {
        return None;
    }
    if is_fs_boot_sector(s) {
        return None;
    }
    let entries: Vec<Entry> = (0..4).map(|i| entry(s, i)).collect();
    if entries.iter().any(|e| e.boot != 0 && e.boot != 0x80) {
        return None;
    }
    let protective = entries.iter().any(|e| e.ptype == PROTECTIVE);
    let others = entries
        .iter()
        .any(|e| e.ptype != PROTECTIVE && e.ptype != 0);
    Some(MbrSector {
        protective,
        hybrid: protective && others,
    })
}

/// Read the MBR and the EBR chain.
pub(super) fn read_mbr(
    dev: &dyn BlockDev,
    sector0: Option<&[u8; 512]>,
    mut warnings: Vec<String>,
) -> Result<PartitionTable> {
    let Some(s) = sector0 else {
        return Ok(PartitionTable {
            kind: TableKind::None,
            partitions: Vec::new(),
            warnings,
            read_only: false,
        });
    };
    let sig = le32(s, 440);
    let len = dev.len();
    let mut parts = Vec::new();
    let mut extended_seen = false;
    let mut logicals = Vec::new();
    for i in 0..4u32 {
        let e = entry(s, i as usize);
        if !e.used() {
            continue;
        }
        let index = i + 1;
        let start = u64::from(e.start_lba) * SECTOR;
        let size = u64::from(e.sectors) * SECTOR;
        if e.start_lba == 0 {
            warnings.push(format!("partition {index} starts at sector 0; ignored"));
            continue;
        }
        if start + size > len {
            warnings.push(format!(
                "partition {index} (sectors {}+{}) extends past the end of the disk; ignored",
                e.start_lba, e.sectors
            ));
            continue;
        }
        parts.push(mk_part(index, start, size, e, sig));
        if is_extended_type(e.ptype) {
            if extended_seen {
                warnings.push(format!(
                    "partition {index} is a second extended partition; its logical partitions are ignored"
                ));
                continue;
            }
            extended_seen = true;
            read_ebr_chain(dev, e, sig, &mut logicals, &mut warnings)?;
        }
    }
    parts.append(&mut logicals);
    check_overlaps(&parts, &mut warnings);
    Ok(PartitionTable {
        kind: TableKind::Mbr {
            disk_signature: sig,
        },
        partitions: parts,
        warnings,
        read_only: false,
    })
}

fn mk_part(index: u32, start: u64, size: u64, e: Entry, sig: u32) -> Partition {
    Partition {
        index,
        start,
        size,
        ptype: PartitionType::Mbr(e.ptype),
        name: String::new(),
        part_uuid: format!("{sig:08x}-{index:02x}"),
        attributes: 0,
        bootable: e.boot == 0x80,
    }
}

/// Follow the EBR chain of the extended partition `ext`. Each EBR holds one logical partition
/// (relative to the EBR) and a link to the next EBR (relative to the extended partition).
/// Bounded by [`MAX_LOGICAL_PARTITIONS`] and protected against loops.
fn read_ebr_chain(
    dev: &dyn BlockDev,
    ext: Entry,
    sig: u32,
    out: &mut Vec<Partition>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let ext_start = u64::from(ext.start_lba);
    let ext_end = ext_start + u64::from(ext.sectors);
    let disk_sectors = dev.len() / SECTOR;
    let mut seen = HashSet::new();
    let mut ebr = ext_start;
    let mut next_index = 5u32;
    for _ in 0..=MAX_LOGICAL_PARTITIONS + 1 {
        if !seen.insert(ebr) {
            warnings.push(format!(
                "the EBR chain loops back to sector {ebr}; stopped following it"
            ));
            return Ok(());
        }
        if ebr < ext_start || ebr >= ext_end || ebr >= disk_sectors {
            warnings.push(format!(
                "an EBR at sector {ebr} is outside the extended partition or the disk; chain stopped"
            ));
            return Ok(());
        }
        let mut s = [0u8; 512];
        dev.read_at(&mut s, ebr * SECTOR)?;
        if s[510] != 0x55 || s[511] != 0xaa {
            if ebr != ext_start {
                warnings.push(format!(
                    "the EBR at sector {ebr} has no 55 AA signature; chain stopped"
                ));
            }
            return Ok(());
        }
        let data = entry(&s, 0);
        let link = entry(&s, 1);
        if data.used() && !is_extended_type(data.ptype) {
            if out.len() >= MAX_LOGICAL_PARTITIONS {
                warnings.push(format!(
                    "more than {MAX_LOGICAL_PARTITIONS} logical partitions; the rest are ignored"
                ));
                return Ok(());
            }
            let first = ebr + u64::from(data.start_lba);
            let end = first + u64::from(data.sectors);
            let index = next_index;
            if data.start_lba == 0 {
                warnings.push(format!(
                    "logical partition {index} starts on its own EBR; ignored"
                ));
            } else if end > disk_sectors {
                warnings.push(format!(
                    "logical partition {index} (sectors {first}..{end}) extends past the end of \
                     the disk; ignored"
                ));
            } else {
                if end > ext_end {
                    warnings.push(format!(
                        "logical partition {index} extends past its extended partition"
                    ));
                }
                out.push(mk_part(
                    index,
                    first * SECTOR,
                    u64::from(data.sectors) * SECTOR,
                    data,
                    sig,
                ));
                next_index += 1;
            }
        }
        if link.used() && is_extended_type(link.ptype) {
            ebr = ext_start + u64::from(link.start_lba);
        } else {
            return Ok(());
        }
    }
    warnings.push("the EBR chain is too long; stopped following it".to_string());
    Ok(())
}

/// Human names of common MBR system ids.
pub fn mbr_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 Ext'd (LBA)",
        0x82 => "Linux swap / Solaris",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xbf => "Solaris",
        0xda => "Non-FS data",
        0xee => "GPT",
        0xef => "EFI (FAT-12/16/32)",
        0xfd => "Linux raid autodetect",
        _ => return None,
    })
}
