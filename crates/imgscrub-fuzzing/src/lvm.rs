//! `lvm`: the LVM2 label, PV header, metadata area and metadata text parser, and the LV
//! mapping on top.
//!
//! Byte 0 of the input picks the mode:
//! - even: the rest is the start of a PV (label in sectors 0-3, PV header, metadata area
//!   header and ring), zero-padded to 4 MiB;
//! - odd: the rest is a metadata text, placed in a synthetic PV with correct checksums
//!   (label at sector 1, one metadata area at 4 KiB, extents from 1 MiB, 4 MiB in all), so
//!   that mutations reach the text parser and the VG checks instead of the CRC check.
//!
//! Then: scan, every LV opened, its first and last bytes and a cross-segment read, the free
//! extents, and a UUID change on a copy which must read back with seqno + 1. Asserted: an
//! LV device never reads outside the PV, the free extents lie inside the PV, a UUID change
//! that succeeded reads back.

use imgscrub_disk::lvm::{self, checksum, derived_uuid};
use imgscrub_disk::{BlockDev, MemDev};
use std::sync::Arc;

const PV_SIZE: usize = 4 << 20;

/// A PV of `PV_SIZE` bytes holding `text` as its committed metadata.
pub fn synthetic_pv(text: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; PV_SIZE];
    let text = &text[..text.len().min(PV_SIZE / 4 - 1024)];
    // Label in sector 1.
    let l = 512;
    d[l..l + 8].copy_from_slice(b"LABELONE");
    d[l + 8..l + 16].copy_from_slice(&1u64.to_le_bytes());
    d[l + 20..l + 24].copy_from_slice(&32u32.to_le_bytes());
    d[l + 24..l + 32].copy_from_slice(b"LVM2 001");
    let h = l + 32;
    d[h..h + 32].copy_from_slice(b"FuzzPVaaaabbbbccccddddeeeeffffgg");
    d[h + 32..h + 40].copy_from_slice(&(PV_SIZE as u64).to_le_bytes());
    // Data area from 1 MiB; metadata area at 4 KiB up to 1 MiB.
    let mut at = h + 40;
    for (off, size) in [(1u64 << 20, 0u64), (0, 0), (4096, (1 << 20) - 4096), (0, 0)] {
        d[at..at + 8].copy_from_slice(&off.to_le_bytes());
        d[at + 8..at + 16].copy_from_slice(&size.to_le_bytes());
        at += 16;
    }
    let c = checksum(&d[l + 20..l + 512]);
    d[l + 16..l + 20].copy_from_slice(&c.to_le_bytes());
    // Metadata area header and the text right after it.
    let m = 4096;
    d[m + 4..m + 20].copy_from_slice(b" LVM2 x[5A%r0N*>");
    d[m + 20..m + 24].copy_from_slice(&1u32.to_le_bytes());
    d[m + 24..m + 32].copy_from_slice(&4096u64.to_le_bytes());
    d[m + 32..m + 40].copy_from_slice(&((1u64 << 20) - 4096).to_le_bytes());
    if !text.is_empty() {
        d[m + 40..m + 48].copy_from_slice(&512u64.to_le_bytes());
        d[m + 48..m + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        d[m + 56..m + 60].copy_from_slice(&checksum(text).to_le_bytes());
        d[m + 512..m + 512 + text.len()].copy_from_slice(text);
    }
    let c = checksum(&d[m + 4..m + 512]);
    d[m..m + 4].copy_from_slice(&c.to_le_bytes());
    d
}

pub fn lvm(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let _ = lvm::text::parse(rest);
    let bytes = if mode & 1 == 1 {
        let _ = lvm::VolumeGroup::parse(rest);
        synthetic_pv(rest)
    } else {
        let mut v = rest[..rest.len().min(PV_SIZE)].to_vec();
        v.resize(PV_SIZE, 0);
        v
    };
    let dev: Arc<dyn BlockDev> = Arc::new(MemDev::from_vec(bytes.clone()).read_only());
    let Ok(found) = lvm::scan([dev.clone()]) else {
        return;
    };
    for pv in &found.pvs {
        for a in &pv.label.data_areas {
            let _ = a.offset.checked_add(a.size);
        }
    }
    for (_, off, len) in found.unallocated() {
        assert!(
            off.checked_add(len).is_some_and(|e| e <= PV_SIZE as u64),
            "free extents past the PV"
        );
    }
    for vg in &found.vgs {
        for lv in &vg.lvs {
            let Ok(d) = found.open_lv(&vg.name, &lv.name) else {
                continue;
            };
            assert_eq!(d.len(), lv.size);
            for &(_, at, n) in &d.extents() {
                assert!(
                    at.checked_add(n).is_some_and(|e| e <= PV_SIZE as u64),
                    "an extent past the PV"
                );
            }
            let mut buf = vec![0u8; 4096.min(d.len() as usize)];
            let n = buf.len() as u64;
            let _ = d.read_at(&mut buf, 0);
            let _ = d.read_at(&mut buf, d.len() - n);
            let _ = d.read_at(&mut buf, d.len() / 2 - (n / 2).min(d.len() / 2));
            let _ = d.allocation(0, d.len().min(1 << 30));
        }
    }
    // A UUID change on a writable copy reads back.
    let rw: Arc<dyn BlockDev> = Arc::new(MemDev::from_vec(bytes));
    let Ok(again) = lvm::scan([rw.clone()]) else {
        return;
    };
    if let Some(vg) = again.vgs.first()
        && again
            .change_uuids(&vg.name, |old| derived_uuid(b"fuzz", old))
            .is_ok()
    {
        let after = lvm::scan([rw]).map(|l| l.vgs.into_iter().find(|v| v.name == vg.name));
        match after {
            Ok(Some(v)) => assert_eq!(v.seqno, vg.seqno + 1, "the seqno after a UUID change"),
            other => panic!("a UUID change does not read back: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-made seed reaches the mapping: both LVs open and read, one striped.
    #[test]
    fn the_small_seed_opens_its_lvs() {
        let seed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/seeds/lvm/text-small"
        ))
        .unwrap();
        let dev: Arc<dyn BlockDev> = Arc::new(MemDev::from_vec(synthetic_pv(&seed[1..])));
        let found = lvm::scan([dev]).unwrap();
        for lv in ["root", "data"] {
            let d = found.open_lv("vg", lv).unwrap();
            let mut b = vec![0u8; d.len() as usize];
            d.read_at(&mut b, 0).unwrap();
        }
        lvm(&seed);
    }
}
