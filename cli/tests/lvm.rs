#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Guests whose root is in an LVM2 logical volume, on disks made by `fixtures/mklvm.sh` with
//! the real lvm2 tools: inspect finds the root in the LV and lists the VGs; fstab's
//! `/dev/mapper/VG-LV` (dashes doubled) and `/dev/VG/LV` name LVs; prepare edits the root
//! inside the LV and `e2fsck -fn` of the LV, read back at lvm2's mapping, is clean; thin
//! pools are refused by name.

use imgscrub_testkit::{
    LvmFixture, assert_e2fsck_clean, debugfs, make_ext4, make_lvm, require_tools,
};
use std::path::Path;

mod common;
use common::{imgscrub, ok};

/// An ext4 root of `size_mb` MiB whose fstab is `fstab`.
fn root_fs(d: &Path, fstab: &str, size_mb: u32) -> Option<std::path::PathBuf> {
    let root = d.join("root");
    for p in ["etc/ssh", "var/log", "srv"] {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    std::fs::write(
        root.join("etc/os-release"),
        "ID=rhel\nVERSION_ID=9.4\nNAME=\"Red Hat Enterprise Linux\"\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/fstab"), fstab).unwrap();
    std::fs::write(root.join("etc/ssh/ssh_host_rsa_key"), "KEY").unwrap();
    std::fs::write(
        root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let img = d.join("root.ext4");
    make_ext4("default", &root, &img, size_mb).then_some(img)
}

fn fixture(layout: &str, d: &Path, fstab: &str, size_mb: u32) -> Option<LvmFixture> {
    let rootfs = root_fs(d, fstab, size_mb)?;
    make_lvm(layout, &d.join("lvm"), Some(&rootfs))
}

#[test]
fn root_in_an_lv_is_found_inspected_and_prepared() {
    require_tools!("mke2fs", "e2fsck", "debugfs", "pvcreate");
    let t = tempfile::tempdir().unwrap();
    let fstab = "/dev/mapper/vg0-root / ext4 defaults 0 1\n/dev/vg0/swap none swap defaults 0 0\n";
    let Some(f) = fixture("linear-mbr", t.path(), fstab, 40) else {
        return;
    };
    let s = f.image.to_str().unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", s])).unwrap();
    assert_eq!(j["os"]["root_lv"], "vg0/root", "{j}");
    assert_eq!(j["os"]["root_partition"], 2, "{j}");
    let vg = &j["volume_groups"][0];
    assert_eq!(vg["name"], "vg0");
    assert_eq!(vg["uuid"], f.vgs[0].1.as_str());
    assert_eq!(vg["pvs"][0]["uuid"], f.pvs[0].2.as_str());
    assert_eq!(vg["pvs"][0]["partition"], 2);
    for (_, lv, size, uuid) in &f.lvs {
        let l = vg["lvs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == lv.as_str())
            .unwrap();
        assert_eq!(
            (l["uuid"].as_str().unwrap(), l["size"].as_u64().unwrap()),
            (uuid.as_str(), *size)
        );
    }
    let lvs = vg["lvs"].as_array().unwrap();
    assert_eq!(lvs[0]["segments"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(lvs[0]["filesystem"]["type"], "ext4");
    assert_eq!(lvs[1]["filesystem"]["type"], "swap");
    assert_eq!(lvs[1]["filesystem"]["label"], "swap0");
    let text = ok(&["inspect", s]);
    assert!(
        text.contains("lvm VG vg0") && text.contains("LV root") && text.contains("on LV vg0/root"),
        "{text}"
    );

    // File verbs and prepare reach into the LV.
    assert_eq!(ok(&["cat", s, "/etc/ssh/ssh_host_rsa_key"]), "KEY");
    ok(&["prepare", s, "--profile", "linux"]);
    let r = t.path().join("r.ext4");
    f.extract("vg0", "root", &r);
    assert_e2fsck_clean(&r);
    assert!(!debugfs(&r, "ls /etc/ssh").contains("ssh_host_rsa_key"));
    // The swap LV and the bytes outside the LVs are unchanged by prepare.
    let sw = t.path().join("sw");
    f.extract("vg0", "swap", &sw);
    assert!(std::fs::read(&sw).unwrap() == f.content("vg0", "swap"));
}

#[test]
fn mapper_names_double_the_dashes_and_stripes_span_two_pvs() {
    require_tools!("mke2fs", "e2fsck", "debugfs", "pvcreate");
    let t = tempfile::tempdir().unwrap();
    let fstab = "/dev/mapper/data--vg-root / ext4 defaults 0 1\n";
    let Some(f) = fixture("striped-gpt", t.path(), fstab, 32) else {
        return;
    };
    let s = f.image.to_str().unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", s])).unwrap();
    assert_eq!(j["os"]["root_lv"], "data-vg/root", "{j}");
    let stripes = &j["volume_groups"][0]["lvs"][0];
    assert_eq!(
        stripes["segments"][0]["stripes"].as_array().unwrap().len(),
        2,
        "{j}"
    );
    assert_eq!(stripes["segments"][0]["stripe_size"], 65536);
    ok(&["prepare", s, "--profile", "linux"]);
    let r = t.path().join("r.ext4");
    f.extract("data-vg", "root", &r);
    assert_e2fsck_clean(&r);
    let st = t.path().join("st");
    f.extract("data-vg", "stripes", &st);
    assert!(
        std::fs::read(&st).unwrap() == f.content("data-vg", "stripes"),
        "prepare touched the striped LV"
    );
    assert!(!debugfs(&r, "ls /etc/ssh").contains("ssh_host_rsa_key"));
}

#[test]
fn thin_pools_are_refused_by_name_and_nothing_is_written() {
    require_tools!("pvcreate");
    let t = tempfile::tempdir().unwrap();
    let Some(f) = make_lvm("thin-mbr", t.path(), None) else {
        return;
    };
    let s = f.image.to_str().unwrap();
    let text = ok(&["inspect", s]);
    assert!(
        text.contains("LV pool0") && text.contains("is a thin pool (segment type thin-pool)"),
        "{text}"
    );
    assert!(
        text.contains("LV thin1") && text.contains("is a thin volume (segment type thin)"),
        "{text}"
    );
    let before = std::fs::read(&f.image).unwrap();
    let o = imgscrub(&["prepare", s, "--profile", "linux"]);
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read(&f.image).unwrap(),
        before,
        "a refused prepare wrote"
    );
}

/// `sparsify` zeroes the PV extents no LV uses and the swap LV behind its header (filled
/// with garbage here, at the places `pvs --segments` reports), leaves the root LV clean and
/// its files there; `convert --sparsify` gives the same bytes.
#[test]
fn sparsify_zeroes_free_extents_and_swap_lvs() {
    require_tools!("mke2fs", "e2fsck", "debugfs", "pvcreate");
    let t = tempfile::tempdir().unwrap();
    let fstab = "/dev/mapper/vg0-root / ext4 defaults 0 1\n";
    let Some(f) = fixture("linear-mbr", t.path(), fstab, 40) else {
        return;
    };
    let pvs: Vec<(u64, u64)> = f.pvs.iter().map(|p| (p.0, p.1)).collect();
    let (ok_, out, err) = imgscrub_testkit::lvm_on_image(
        &f.image,
        &pvs,
        "pvs",
        &[
            "--segments",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start,pvseg_start,pvseg_size,lv_name",
        ],
    );
    assert!(ok_, "{err}");
    let mut img = std::fs::read(&f.image).unwrap();
    let mib = 1usize << 20;
    let mut free = Vec::new();
    let mut swap = None;
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (pe_start, start, n): (usize, usize, usize) = (
            w[0].parse().unwrap(),
            w[1].parse().unwrap(),
            w[2].parse().unwrap(),
        );
        let at = f.pvs[0].0 as usize + pe_start + start * mib;
        match w.get(3) {
            None => free.push((at, n * mib)),
            Some(&"swap") => swap = Some((at, n * mib)),
            Some(_) => {}
        }
    }
    assert!(!free.is_empty(), "{out}");
    let (sw, swn) = swap.expect("the swap LV's segment");
    for &(at, n) in &free {
        img[at..at + n].fill(0xaa);
    }
    img[sw + 4096..sw + swn].fill(0xbb);
    std::fs::write(&f.image, &img).unwrap();

    // convert --sparsify skips the same ranges: its raw output equals the sparsified disk.
    let conv = t.path().join("conv.raw");
    ok(&[
        "convert",
        "-q",
        "--sparsify",
        "-O",
        "raw",
        "--compress",
        "none",
        f.image.to_str().unwrap(),
        conv.to_str().unwrap(),
    ]);
    ok(&["sparsify", f.image.to_str().unwrap()]);
    let after = std::fs::read(&f.image).unwrap();
    assert!(
        std::fs::read(&conv).unwrap() == after,
        "convert --sparsify differs from sparsify"
    );
    for &(at, n) in &free {
        assert!(
            after[at..at + n].iter().all(|&b| b == 0),
            "free extents at {at} not zeroed"
        );
    }
    assert!(
        after[sw..sw + 4096] == img[sw..sw + 4096],
        "the swap header changed"
    );
    assert!(
        after[sw + 4096..sw + swn].iter().all(|&b| b == 0),
        "swap pages not zeroed"
    );
    let r = t.path().join("r.ext4");
    f.extract("vg0", "root", &r);
    assert_e2fsck_clean(&r);
    assert!(debugfs(&r, "ls /etc/ssh").contains("ssh_host_rsa_key"));
}
