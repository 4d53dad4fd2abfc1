#![allow(clippy::unwrap_used, clippy::expect_used)]
//! LVM2 logical volumes against the real lvm2 tools: disks built by `fixtures/mklvm.sh`
//! (pvcreate/vgcreate on loop devices, LVs by vgcfgrestore, contents written with dd at the
//! offsets lvm2 reports) read and written through our mapping.

use imgscrub_disk::lvm::{self, Lvm, derived_uuid, format_uuid};
use imgscrub_disk::{BlockDev, DiskError, MemDev, Slice, discover};
use imgscrub_testkit::{LvmFixture, lvm_on_image, make_lvm};
use std::sync::Arc;

type Dev = Arc<dyn BlockDev>;

fn open(bytes: Vec<u8>) -> (Dev, Vec<Slice<Dev>>) {
    let disk: Dev = Arc::new(MemDev::from_vec(bytes));
    let table = discover(disk.as_ref()).unwrap();
    let parts = table
        .partitions
        .iter()
        .map(|p| Slice::new(disk.clone(), p.start, p.size).unwrap())
        .collect();
    (disk, parts)
}

fn fixture(layout: &str, dir: &tempfile::TempDir) -> Option<LvmFixture> {
    make_lvm(layout, dir.path(), None)
}

/// Every LV of the manifest reads as the bytes the script wrote with dd at lvm2's mapping;
/// names, UUIDs and sizes are lvm2's.
fn check_reads(f: &LvmFixture, lvm: &Lvm<Slice<Dev>>) {
    for (vg, lv, size, uuid) in &f.lvs {
        let g = lvm.vg(vg).unwrap_or_else(|| panic!("no VG {vg}"));
        let l = g.lv(lv).unwrap();
        assert_eq!((&l.uuid, l.size), (uuid, *size), "{vg}/{lv}");
        let dev = lvm.open_lv(vg, lv).unwrap();
        assert_eq!(dev.len(), *size);
        let mut got = vec![0u8; *size as usize];
        dev.read_at(&mut got, 0).unwrap();
        assert!(
            got == f.content(vg, lv),
            "{vg}/{lv} differs from lvm2's mapping"
        );
        // Odd-sized reads across segment and stripe boundaries agree with the whole read.
        let mut at = 0u64;
        let mut n = 1usize;
        while at < *size {
            let len = (n * 40_961).min((*size - at) as usize);
            let mut b = vec![0u8; len];
            dev.read_at(&mut b, at).unwrap();
            assert!(
                b[..] == got[at as usize..at as usize + len],
                "{vg}/{lv} at {at}"
            );
            at += len as u64;
            n += 7;
        }
    }
    for (vg, uuid) in &f.vgs {
        assert_eq!(&lvm.vg(vg).unwrap().uuid, uuid);
    }
    for (_, _, uuid) in &f.pvs {
        assert!(lvm.pv(uuid).is_some(), "PV {uuid} not found");
    }
}

#[test]
fn linear_and_striped_lvs_read_as_lvm2_maps_them() {
    for layout in ["linear-mbr", "striped-gpt", "thin-mbr"] {
        let dir = tempfile::tempdir().unwrap();
        let Some(f) = fixture(layout, &dir) else {
            return;
        };
        let (_disk, parts) = open(std::fs::read(&f.image).unwrap());
        let lvm = lvm::scan(parts).unwrap();
        check_reads(&f, &lvm);
        if layout == "linear-mbr" {
            let root = lvm.vg("vg0").unwrap().lv("root").unwrap();
            assert_eq!(
                root.segments.len(),
                2,
                "root is in two segments around swap"
            );
        }
    }
}

/// Writes land exactly where lvm2 maps the LV: zero every LV through our device, write the
/// contents back in odd pieces, and the image is again byte-identical to the one lvm2 and
/// dd made; zeroing really changed it in between.
#[test]
fn writes_stay_inside_the_extents() {
    for layout in ["linear-mbr", "striped-gpt"] {
        let dir = tempfile::tempdir().unwrap();
        let Some(f) = fixture(layout, &dir) else {
            return;
        };
        let original = std::fs::read(&f.image).unwrap();
        let disk = Arc::new(MemDev::from_vec(original.clone()));
        let dyn_disk: Dev = disk.clone();
        let table = discover(dyn_disk.as_ref()).unwrap();
        let parts: Vec<Slice<Dev>> = table
            .partitions
            .iter()
            .map(|p| Slice::new(dyn_disk.clone(), p.start, p.size).unwrap())
            .collect();
        let lvm = lvm::scan(parts).unwrap();
        for (vg, lv, size, _) in &f.lvs {
            let dev = lvm.open_lv(vg, lv).unwrap();
            dev.write_zeroes(0, *size).unwrap();
        }
        assert!(disk.to_vec() != original);
        for (vg, lv, size, _) in &f.lvs {
            let dev = lvm.open_lv(vg, lv).unwrap();
            let content = f.content(vg, lv);
            let mut at = 0usize;
            let mut n = 3usize;
            while (at as u64) < *size {
                let len = (n * 12_289).min(*size as usize - at);
                dev.write_at(&content[at..at + len], at as u64).unwrap();
                at += len;
                n += 5;
            }
            assert!(
                dev.write_at(&[0], *size).is_err(),
                "a write past the LV end"
            );
        }
        assert!(
            disk.to_vec() == original,
            "{layout}: writes went elsewhere than lvm2's mapping"
        );
    }
}

#[test]
fn thin_pools_and_thin_volumes_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let Some(f) = fixture("thin-mbr", &dir) else {
        return;
    };
    let (_disk, parts) = open(std::fs::read(&f.image).unwrap());
    let lvm = lvm::scan(parts).unwrap();
    for (lv, what) in [
        ("pool0", "a thin pool (segment type thin-pool)"),
        ("thin1", "a thin volume (segment type thin)"),
    ] {
        let e = lvm.open_lv("tvg", lv).unwrap_err();
        assert!(matches!(e, DiskError::Unsupported(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("unsupported: LV tvg/{lv} is {what}, which imgscrub does not map")
        );
    }
    // The pool's hidden data LV is plain extents; the free extents leave all of them out.
    let g = lvm.vg("tvg").unwrap();
    let free = g.free_extents("pv0").unwrap();
    assert_eq!(free, vec![(24, g.pvs[0].pe_count - 24)]);
}

#[test]
fn an_lv_on_a_pv_not_in_the_image_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(f) = fixture("striped-gpt", &dir) else {
        return;
    };
    let (_disk, mut parts) = open(std::fs::read(&f.image).unwrap());
    let second = parts.pop().unwrap();
    let lvm = lvm::scan(parts).unwrap();
    let missing = lvm::read_label(&second).unwrap().unwrap().uuid;
    for lv in ["stripes", "root"] {
        let m = lvm.open_lv("data-vg", lv).unwrap_err().to_string();
        assert!(
            m.contains(&missing) && m.contains("not in this image"),
            "{m}"
        );
    }
}

/// `lvm-uuids`: new PV and VG UUIDs in every label and metadata copy; lvm2's own tools read
/// the result without a complaint and report the new UUIDs; the LVs still read the same.
#[test]
fn new_uuids_are_read_back_by_lvm2() {
    for layout in ["linear-mbr", "striped-gpt"] {
        let dir = tempfile::tempdir().unwrap();
        let Some(f) = fixture(layout, &dir) else {
            return;
        };
        let (disk, parts) = open(std::fs::read(&f.image).unwrap());
        let lvm = lvm::scan(parts.clone()).unwrap();
        let (vg, old_vg) = f.vgs[0].clone();
        let seqno = lvm.vg(&vg).unwrap().seqno;
        lvm.change_uuids(&vg, |old| derived_uuid(b"test-seed", old))
            .unwrap();
        let mut img = vec![0u8; disk.len() as usize];
        disk.read_at(&mut img, 0).unwrap();
        std::fs::write(&f.image, &img).unwrap();

        let again = lvm::scan(parts).unwrap();
        let g = again.vg(&vg).unwrap();
        let new_vg = format_uuid(&derived_uuid(b"test-seed", &old_vg));
        assert_eq!((g.uuid.as_str(), g.seqno), (new_vg.as_str(), seqno + 1));
        check_reads(
            &LvmFixture {
                vgs: vec![(vg.clone(), new_vg.clone())],
                pvs: vec![],
                ..f.clone()
            },
            &again,
        );

        let pvs: Vec<(u64, u64)> = f.pvs.iter().map(|p| (p.0, p.1)).collect();
        let (ok, out, err) = lvm_on_image(
            &f.image,
            &pvs,
            "vgs",
            &["--noheadings", "-o", "vg_name,vg_uuid,seqno"],
        );
        assert!(ok && err.trim().is_empty(), "vgs: {err}");
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            [vg.as_str(), new_vg.as_str(), &(seqno + 1).to_string()]
        );
        let (ok, out, err) =
            lvm_on_image(&f.image, &pvs, "pvs", &["--noheadings", "-o", "pv_uuid"]);
        assert!(ok && err.trim().is_empty(), "pvs: {err}");
        let mut got: Vec<&str> = out.split_whitespace().collect();
        let mut want: Vec<String> = f
            .pvs
            .iter()
            .map(|p| format_uuid(&derived_uuid(b"test-seed", &p.2)))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let (ok, out, err) = lvm_on_image(
            &f.image,
            &pvs,
            "lvs",
            &["--noheadings", "-o", "lv_name,lv_uuid"],
        );
        assert!(ok && err.trim().is_empty(), "lvs: {err}");
        for (_, lv, _, uuid) in &f.lvs {
            assert!(out.contains(lv) && out.contains(uuid), "{out}");
        }
        for i in 0..pvs.len() {
            let (ok, out, err) = lvm_on_image(&f.image, &pvs, "pvck", &[&format!("{{PV{i}}}")]);
            assert!(ok && err.trim().is_empty(), "pvck: {out}{err}");
        }
    }
}

// ---- damaged metadata ----------------------------------------------------------------------

/// The committed metadata text of the first metadata area of the PV at `pv_off`: (absolute
/// offset of the text, its size, absolute offset of the area header).
fn text_location(img: &[u8], pv_off: usize) -> (usize, usize, usize) {
    let h = pv_off + 4096;
    let rel = u64::from_le_bytes(img[h + 40..h + 48].try_into().unwrap()) as usize;
    let size = u64::from_le_bytes(img[h + 48..h + 56].try_into().unwrap()) as usize;
    (h + rel, size, h)
}

/// Replace the metadata text with `edit(text)` (same place) and fix every checksum.
fn rewrite_text(img: &mut [u8], pv_off: usize, edit: impl Fn(&str) -> String) {
    let (at, size, h) = text_location(img, pv_off);
    let text = String::from_utf8(img[at..at + size].to_vec()).unwrap();
    let new = edit(&text);
    assert_ne!(new, text, "the edit changed nothing");
    img[at..at + new.len()].copy_from_slice(new.as_bytes());
    img[h + 48..h + 56].copy_from_slice(&(new.len() as u64).to_le_bytes());
    img[h + 56..h + 60].copy_from_slice(&lvm::checksum(new.as_bytes()).to_le_bytes());
    let c = lvm::checksum(&img[h + 4..h + 512]);
    img[h..h + 4].copy_from_slice(&c.to_le_bytes());
}

type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;

#[test]
fn damaged_metadata_is_one_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let Some(f) = fixture("linear-mbr", &dir) else {
        return;
    };
    let original = std::fs::read(&f.image).unwrap();
    let pv = f.pvs[0].0 as usize;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "text checksum",
            Box::new(|img| {
                let (at, _, _) = text_location(img, pv);
                img[at + 10] ^= 1;
            }),
            "checksum",
        ),
        (
            "header checksum",
            Box::new(|img| img[pv + 4096 + 100] ^= 1),
            "checksum",
        ),
        (
            "label checksum",
            Box::new(|img| img[pv + 512 + 40] ^= 1),
            "LVM2 label",
        ),
        (
            "truncated area",
            Box::new(|img| {
                let h = pv + 4096;
                img[h + 48..h + 56].copy_from_slice(&(1u64 << 40).to_le_bytes());
                let c = lvm::checksum(&img[h + 4..h + 512]);
                img[h..h + 4].copy_from_slice(&c.to_le_bytes());
            }),
            "does not fit",
        ),
        (
            "absurd extents",
            Box::new(|img| {
                rewrite_text(img, pv, |t| {
                    t.replacen("extent_count = 16", "extent_count = 99999999999", 1)
                })
            }),
            "extents past",
        ),
        (
            "absurd pe_count",
            Box::new(|img| {
                rewrite_text(img, pv, |t| {
                    t.replacen("pe_count = ", "pe_count = 9999999", 1)
                })
            }),
            "past",
        ),
        (
            "a loop of segments",
            Box::new(|img| rewrite_text(img, pv, |t| t.replacen("\"pv0\", 16", "\"root\", 0", 1))),
            "not a PV of the VG",
        ),
        (
            "overlapping segments",
            Box::new(|img| {
                rewrite_text(img, pv, |t| {
                    t.replacen("start_extent = 16", "start_extent = 8", 1)
                })
            }),
            "overlap",
        ),
        (
            "syntax",
            Box::new(|img| rewrite_text(img, pv, |t| t.replacen("seqno =", "seqno ", 1))),
            "line 3",
        ),
    ];
    for (what, damage, expect) in cases {
        let mut img = original.clone();
        damage(&mut img);
        let disk: Dev = Arc::new(MemDev::from_vec(img.clone()).read_only());
        let table = discover(disk.as_ref()).unwrap();
        let parts: Vec<Slice<Dev>> = table
            .partitions
            .iter()
            .map(|p| Slice::new(disk.clone(), p.start, p.size).unwrap())
            .collect();
        let e = match lvm::scan(parts) {
            Err(e) => e,
            Ok(l) => match l.open_lv("vg0", "root") {
                Err(e) => e,
                Ok(_) => panic!("{what}: accepted"),
            },
        };
        let m = e.to_string();
        assert!(!m.contains('\n') && m.contains(expect), "{what}: {m}");
        assert!(!matches!(e, DiskError::ReadOnly), "{what}: tried to write");
    }
}

/// Two PVs whose metadata copies differ at the same seqno (a VG edited behind lvm2's back):
/// refused with one line naming both PVs and the seqno, as lvm2 calls the VG inconsistent;
/// nothing is written.
#[test]
fn copies_that_disagree_at_one_seqno_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(f) = fixture("striped-gpt", &dir) else {
        return;
    };
    let mut img = std::fs::read(&f.image).unwrap();
    // Untouched, both copies agree and the VG reads.
    {
        let (_, parts) = open(img.clone());
        lvm::scan(parts).unwrap();
    }
    let pv = f.pvs[0].0 as usize;
    rewrite_text(&mut img, pv, |t| {
        t.replacen("stripe_size = 128", "stripe_size = 64", 1)
    });
    let disk: Dev = Arc::new(MemDev::from_vec(img).read_only());
    let table = discover(disk.as_ref()).unwrap();
    let parts: Vec<Slice<Dev>> = table
        .partitions
        .iter()
        .map(|p| Slice::new(disk.clone(), p.start, p.size).unwrap())
        .collect();
    let Err(e) = lvm::scan(parts) else {
        panic!("disagreeing copies accepted");
    };
    let m = e.to_string();
    assert!(!m.contains('\n'), "{m}");
    assert!(m.contains("data-vg") && m.contains("same seqno"), "{m}");
    for (_, _, uuid) in &f.pvs {
        assert!(m.contains(uuid.as_str()), "{m} names {uuid}");
    }
    assert!(!matches!(e, DiskError::ReadOnly), "tried to write");
}
