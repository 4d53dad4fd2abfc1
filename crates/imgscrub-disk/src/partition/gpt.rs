//! GUID partition tables (UEFI spec, chapter 5).
//!
//! Layout: LBA 0 protective MBR, LBA 1 the primary header, then the entry array; the backup
//! entry array and header sit at the end of the disk (the backup header in the last LBA).
//! Both headers carry a CRC32 of themselves and of their entry array.

use super::{
    Guid, MAX_GPT_ENTRY_ARRAY, Partition, PartitionTable, PartitionType, TableKind, check_overlaps,
    le32, le64,
};
use crate::blockdev::BlockDev;
use crate::error::{DiskError, Result};

const SIGNATURE: &[u8; 8] = b"EFI PART";
const MIN_HEADER_SIZE: u32 = 92;
const MIN_ENTRY_SIZE: u32 = 128;
const MAX_ENTRY_SIZE: u32 = 4096;
/// The logical sector sizes we try, in order.
const SECTOR_SIZES: [u32; 2] = [512, 4096];

/// A parsed, CRC-checked GPT header.
#[derive(Debug, Clone)]
struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// True when `EFI PART` appears at LBA 1 for any supported sector size.
pub(super) fn looks_like_gpt(dev: &dyn BlockDev) -> Result<bool> {
    for ss in SECTOR_SIZES {
        let ss = u64::from(ss);
        if dev.len() >= ss + 8 {
            let mut sig = [0u8; 8];
            dev.read_at(&mut sig, ss)?;
            if &sig == SIGNATURE {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Read a header at `lba` for sector size `ss`; `Ok(Err(reason))` when it is not valid.
fn read_header(dev: &dyn BlockDev, ss: u32, lba: u64) -> Result<Result<Header, String>> {
    let ssz = u64::from(ss);
    let Some(off) = lba.checked_mul(ssz) else {
        return Ok(Err(format!("LBA {lba} is out of range")));
    };
    if off.checked_add(ssz).is_none_or(|end| end > dev.len()) {
        return Ok(Err(format!("LBA {lba} is past the end of the disk")));
    }
    let mut buf = vec![0u8; ss as usize];
    dev.read_at(&mut buf, off)?;
    Ok(parse_header(&mut buf, ss, lba))
}

fn parse_header(buf: &mut [u8], ss: u32, lba: u64) -> Result<Header, String> {
    if buf.get(0..8) != Some(SIGNATURE.as_slice()) {
        return Err(format!("no \"EFI PART\" signature at LBA {lba}"));
    }
    let header_size = le32(buf, 12);
    if header_size < MIN_HEADER_SIZE || header_size > ss {
        return Err(format!(
            "header size {header_size} is not in {MIN_HEADER_SIZE}..={ss}"
        ));
    }
    let stored_crc = le32(buf, 16);
    let Some(hdr) = buf.get_mut(0..header_size as usize) else {
        return Err("header size exceeds the sector".to_string());
    };
    if let Some(f) = hdr.get_mut(16..20) {
        f.fill(0);
    }
    let crc = crc32fast::hash(hdr);
    if crc != stored_crc {
        return Err(format!(
            "header CRC32 mismatch at LBA {lba} (stored {stored_crc:#010x}, computed {crc:#010x})"
        ));
    }
    let mut g = [0u8; 16];
    if let Some(s) = buf.get(56..72) {
        g.copy_from_slice(s);
    }
    let h = Header {
        my_lba: le64(buf, 24),
        alternate_lba: le64(buf, 32),
        first_usable: le64(buf, 40),
        last_usable: le64(buf, 48),
        disk_guid: Guid(g),
        entries_lba: le64(buf, 72),
        num_entries: le32(buf, 80),
        entry_size: le32(buf, 84),
        entries_crc: le32(buf, 88),
    };
    if h.my_lba != lba {
        return Err(format!(
            "header at LBA {lba} says it is at LBA {} (wrong sector size?)",
            h.my_lba
        ));
    }
    if h.entry_size < MIN_ENTRY_SIZE || h.entry_size > MAX_ENTRY_SIZE || h.entry_size & 7 != 0 {
        return Err(format!(
            "partition entry size {} is not supported",
            h.entry_size
        ));
    }
    let array = u64::from(h.num_entries) * u64::from(h.entry_size);
    if array > MAX_GPT_ENTRY_ARRAY {
        return Err(format!(
            "partition entry array of {} entries x {} bytes exceeds {MAX_GPT_ENTRY_ARRAY} bytes",
            h.num_entries, h.entry_size
        ));
    }
    if h.first_usable > h.last_usable {
        return Err(format!(
            "first usable LBA {} is after last usable LBA {}",
            h.first_usable, h.last_usable
        ));
    }
    if h.entries_lba == 0 || h.entries_lba == lba {
        return Err(format!(
            "entry array at LBA {} overlaps a header",
            h.entries_lba
        ));
    }
    Ok(h)
}

/// Read and CRC-check the entry array of `h`.
fn read_entries(dev: &dyn BlockDev, ss: u32, h: &Header) -> Result<Result<Vec<u8>, String>> {
    let bytes = u64::from(h.num_entries) * u64::from(h.entry_size); // bounded by parse_header
    let Some(off) = h.entries_lba.checked_mul(u64::from(ss)) else {
        return Ok(Err("entry array LBA is out of range".to_string()));
    };
    if off.checked_add(bytes).is_none_or(|end| end > dev.len()) {
        return Ok(Err(format!(
            "entry array at LBA {} ({bytes} bytes) is past the end of the disk",
            h.entries_lba
        )));
    }
    let Ok(n) = usize::try_from(bytes) else {
        return Ok(Err("entry array too large".to_string()));
    };
    let mut buf = vec![0u8; n];
    dev.read_at(&mut buf, off)?;
    let crc = crc32fast::hash(&buf);
    if crc != h.entries_crc {
        return Ok(Err(format!(
            "entry array CRC32 mismatch (stored {:#010x}, computed {crc:#010x})",
            h.entries_crc
        )));
    }
    Ok(Ok(buf))
}

/// A header with its verified entries.
type Found = (Header, Vec<u8>);

fn try_table(dev: &dyn BlockDev, ss: u32, lba: u64) -> Result<Result<Found, String>> {
    let h = match read_header(dev, ss, lba)? {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    Ok(read_entries(dev, ss, &h)?.map(|e| (h, e)))
}

/// Read the GPT of `dev` (the caller has seen a protective MBR or an `EFI PART` signature).
pub(super) fn read_gpt(dev: &dyn BlockDev, mut warnings: Vec<String>) -> Result<PartitionTable> {
    let mut problems = Vec::new();
    // 1. A valid primary with any sector size.
    for ss in SECTOR_SIZES {
        let total = dev.len() / u64::from(ss);
        if total < 3 {
            continue;
        }
        match try_table(dev, ss, 1)? {
            Ok((h, entries)) => {
                check_backup(dev, ss, &h, &entries, &mut warnings)?;
                return build(dev, ss, &h, &entries, warnings, false);
            }
            Err(e) => problems.push(format!("{ss}-byte sectors: primary: {e}")),
        }
    }
    // 2. The backup at the last LBA.
    for ss in SECTOR_SIZES {
        let total = dev.len() / u64::from(ss);
        if total < 3 {
            continue;
        }
        let last = total - 1;
        match try_table(dev, ss, last)? {
            Ok((h, entries)) => {
                let primary = problems
                    .iter()
                    .find(|p| p.starts_with(&format!("{ss}-byte")))
                    .cloned()
                    .unwrap_or_else(|| "primary GPT unreadable".to_string());
                warnings.push(format!(
                    "primary GPT is damaged ({primary}); using the backup header at LBA {last} \
                     (table is read-only)"
                ));
                return build(dev, ss, &h, &entries, warnings, true);
            }
            Err(e) => problems.push(format!("{ss}-byte sectors: backup: {e}")),
        }
    }
    Err(DiskError::corrupt(
        "GPT",
        format!(
            "protective MBR present but no valid GPT header: {}",
            problems.join("; ")
        ),
    ))
}

/// Check the backup of a valid primary; only warns.
fn check_backup(
    dev: &dyn BlockDev,
    ss: u32,
    primary: &Header,
    entries: &[u8],
    warnings: &mut Vec<String>,
) -> Result<()> {
    let last = dev.len() / u64::from(ss) - 1;
    if primary.alternate_lba != last {
        warnings.push(format!(
            "the primary GPT header puts the backup at LBA {} but the last LBA is {last} \
             (image resized?)",
            primary.alternate_lba
        ));
    }
    let mut problem = None;
    for lba in [primary.alternate_lba, last] {
        match try_table(dev, ss, lba)? {
            Ok((b, bentries)) => {
                if bentries != entries {
                    problem = Some(format!(
                        "the backup GPT at LBA {lba} lists different entries than the primary"
                    ));
                } else if b.disk_guid != primary.disk_guid {
                    problem = Some(format!(
                        "the backup GPT at LBA {lba} has a different disk GUID"
                    ));
                } else {
                    return Ok(());
                }
                break;
            }
            Err(e) => problem = Some(format!("the backup GPT is damaged or missing: {e}")),
        }
        if primary.alternate_lba == last {
            break;
        }
    }
    if let Some(p) = problem {
        warnings.push(p);
    }
    Ok(())
}

fn build(
    dev: &dyn BlockDev,
    ss: u32,
    h: &Header,
    entries: &[u8],
    mut warnings: Vec<String>,
    read_only: bool,
) -> Result<PartitionTable> {
    let ssz = u64::from(ss);
    let total = dev.len() / ssz;
    if h.last_usable >= total {
        warnings.push(format!(
            "last usable LBA {} is past the end of the disk ({total} sectors): image truncated?",
            h.last_usable
        ));
    }
    let mut partitions = Vec::new();
    for (slot, e) in entries.chunks_exact(h.entry_size as usize).enumerate() {
        let index = u32::try_from(slot).unwrap_or(u32::MAX).saturating_add(1);
        let mut t = [0u8; 16];
        let mut u = [0u8; 16];
        if let (Some(ts), Some(us)) = (e.get(0..16), e.get(16..32)) {
            t.copy_from_slice(ts);
            u.copy_from_slice(us);
        }
        let type_guid = Guid(t);
        if type_guid.is_zero() {
            continue;
        }
        let first = le64(e, 32);
        let last = le64(e, 40);
        let attributes = le64(e, 48);
        if first > last {
            warnings.push(format!(
                "partition {index}: first LBA {first} is after last LBA {last}; ignored"
            ));
            continue;
        }
        let (Some(start), Some(end)) = (
            first.checked_mul(ssz),
            last.checked_add(1).and_then(|l| l.checked_mul(ssz)),
        ) else {
            warnings.push(format!("partition {index}: LBAs out of range; ignored"));
            continue;
        };
        if end > dev.len() {
            warnings.push(format!(
                "partition {index} ({first}..={last}) extends past the end of the disk; ignored"
            ));
            continue;
        }
        if first < h.first_usable || last > h.last_usable {
            warnings.push(format!(
                "partition {index} ({first}..={last}) is outside the usable area {}..={}",
                h.first_usable, h.last_usable
            ));
        }
        let name_units: Vec<u16> = e
            .get(56..128)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        let name = char::decode_utf16(name_units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        partitions.push(Partition {
            index,
            start,
            size: end - start,
            ptype: PartitionType::Gpt(type_guid),
            name,
            part_uuid: Guid(u).to_string(),
            attributes,
            bootable: attributes & (1 << 2) != 0,
        });
    }
    check_overlaps(&partitions, &mut warnings);
    Ok(PartitionTable {
        kind: TableKind::Gpt {
            disk_guid: h.disk_guid,
            sector_size: ss,
        },
        partitions,
        warnings,
        read_only,
    })
}

/// Human names of well-known GPT partition type GUIDs.
pub fn gpt_type_name(g: &Guid) -> Option<&'static str> {
    const KNOWN: &[(&str, &str)] = &[
        ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System"),
        ("21686148-6449-6e6f-744e-656564454649", "BIOS boot"),
        ("0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem"),
        ("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap"),
        ("e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM"),
        ("a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID"),
        ("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home"),
        (
            "bc13c2ff-59e6-4262-a352-b275fd6f7172",
            "Linux extended boot",
        ),
        (
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
            "Linux root (x86-64)",
        ),
        ("44479540-f297-41b2-9af7-d131d5f0458a", "Linux root (x86)"),
        ("b921b045-1df0-41c3-af44-4c6f280d3fae", "Linux root (ARM64)"),
        ("69dad710-2ce4-4e3c-b16c-21a1d49abed3", "Linux root (ARM)"),
        ("ca7d7ccb-63ed-4c53-861c-1742536059cc", "Linux LUKS"),
        (
            "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
            "Microsoft basic data",
        ),
        ("e3c9e316-0b5c-4db8-817d-f92df00215ae", "Microsoft reserved"),
        (
            "6a898cc3-1dd2-11b2-99a6-080020736631",
            "Solaris /usr & Apple ZFS",
        ),
        ("6a85cf4d-1dd2-11b2-99a6-080020736631", "Solaris root"),
        ("516e7cba-6ecf-11d6-8ff8-00022d09712b", "FreeBSD ZFS"),
        ("824cc7a0-36a8-11e3-890a-952519ad3f61", "OpenBSD data"),
        ("48465300-0000-11aa-aa11-00306543ecac", "Apple HFS/HFS+"),
        ("9e1a2d38-c612-4316-aa26-8b49521e5a8b", "PowerPC PReP boot"),
    ];
    let s = g.to_string();
    KNOWN.iter().find(|(k, _)| *k == s).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rejects_small_size() {
        let mut b = vec![0u8; 512];
        b[0..8].copy_from_slice(SIGNATURE);
        b[12..16].copy_from_slice(&40u32.to_le_bytes());
        assert!(parse_header(&mut b, 512, 1).is_err());
    }
}
