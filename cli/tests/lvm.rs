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

/// (VG UUID, seqno, sorted PV UUIDs) as `vgs` and `pvs` read them from `image`, which must
/// raise no complaint; `lvs` and `pvck` on every PV must read it without one too.
fn lvm2_ids(f: &LvmFixture, image: &Path) -> (String, String, Vec<String>) {
    let pvs: Vec<(u64, u64)> = f.pvs.iter().map(|p| (p.0, p.1)).collect();
    let (ok_, out, err) = imgscrub_testkit::lvm_on_image(
        image,
        &pvs,
        "vgs",
        &["--noheadings", "-o", "vg_uuid,seqno"],
    );
    assert!(ok_ && err.trim().is_empty(), "vgs: {err}");
    let w: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(w.len(), 2, "{out}");
    let (ok_, pv_out, err) =
        imgscrub_testkit::lvm_on_image(image, &pvs, "pvs", &["--noheadings", "-o", "pv_uuid"]);
    assert!(ok_ && err.trim().is_empty(), "pvs: {err}");
    let mut pv_uuids: Vec<String> = pv_out.split_whitespace().map(str::to_owned).collect();
    pv_uuids.sort();
    assert_eq!(pv_uuids.len(), pvs.len(), "{pv_out}");
    let (ok_, lv_out, err) = imgscrub_testkit::lvm_on_image(
        image,
        &pvs,
        "lvs",
        &["--noheadings", "-o", "lv_name,lv_uuid"],
    );
    assert!(ok_ && err.trim().is_empty(), "lvs: {err}");
    for (_, lv, _, uuid) in &f.lvs {
        assert!(lv_out.contains(lv) && lv_out.contains(uuid), "{lv_out}");
    }
    for i in 0..pvs.len() {
        let (ok_, out, err) =
            imgscrub_testkit::lvm_on_image(image, &pvs, "pvck", &[&format!("{{PV{i}}}")]);
        assert!(ok_ && err.trim().is_empty(), "pvck: {out}{err}");
    }
    (w[0].to_owned(), w[1].to_owned(), pv_uuids)
}

/// The bytes of each PV before its first extent: label, PV header and metadata areas.
fn pv_heads(f: &LvmFixture, image: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(image).unwrap();
    let pvs: Vec<(u64, u64)> = f.pvs.iter().map(|p| (p.0, p.1)).collect();
    let (ok_, out, err) = imgscrub_testkit::lvm_on_image(
        image,
        &pvs,
        "pvs",
        &[
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pv_uuid,pe_start",
        ],
    );
    assert!(ok_, "{err}");
    f.pvs
        .iter()
        .map(|(off, _, uuid)| {
            let line = out
                .lines()
                .find(|l| l.contains(uuid.as_str()))
                .unwrap_or_else(|| panic!("PV {uuid} not in {out}"));
            let pe_start: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            let off = *off as usize;
            assert!(pe_start >= 1 << 20, "{line}");
            data[off..off + pe_start].to_vec()
        })
        .collect()
}

/// `--operations lvm-uuids` (off by default): without it nothing in the LVM2 metadata
/// changes; `--dry-run` shows it (text and JSON) and writes nothing; with SOURCE_DATE_EPOCH
/// two `--output` runs give the same bytes and leave the input untouched; in place, without
/// it, the VG and every PV get random new UUIDs. Each time vgs, pvs, lvs and pvck read the
/// result without a complaint, and the root LV stays e2fsck-clean.
#[test]
fn lvm_uuids_is_opt_in_shown_reproducible_and_read_back_by_lvm2() {
    require_tools!("mke2fs", "e2fsck", "debugfs", "pvcreate", "pvck");
    for layout in ["linear-mbr", "striped-gpt"] {
        let t = tempfile::tempdir().unwrap();
        let (fstab, vg) = if layout == "linear-mbr" {
            ("/dev/mapper/vg0-root / ext4 defaults 0 1\n", "vg0")
        } else {
            ("/dev/mapper/data--vg-root / ext4 defaults 0 1\n", "data-vg")
        };
        let Some(f) = fixture(layout, t.path(), fstab, 32) else {
            return;
        };
        let s = f.image.to_str().unwrap();
        let (vg0, seq0, pvs0) = lvm2_ids(&f, &f.image);
        assert_eq!(vg0, f.vgs[0].1);
        let heads0 = pv_heads(&f, &f.image);

        // Not selected by the linear profile: the metadata stays as it was.
        let o = imgscrub(&["prepare", s, "--profile", "linux"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            pv_heads(&f, &f.image) == heads0,
            "{layout}: prepare without lvm-uuids changed LVM2 metadata"
        );
        assert!(!ok(&["list-operations"]).contains("lvm-uuids                *"));
        let listed = ok(&["list-operations"]);
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with("lvm-uuids ") && l.contains("new UUIDs")),
            "{listed}"
        );

        // Dry run: shown, nothing written.
        let before = std::fs::read(&f.image).unwrap();
        let text = ok(&["prepare", s, "--operations", "lvm-uuids", "--dry-run"]);
        assert!(
            text.contains("lvm-uuids") && text.contains(&format!("LVM2 VG {vg}")),
            "{text}"
        );
        assert!(text.contains(&vg0), "{text}");
        let j: serde_json::Value = serde_json::from_str(&ok(&[
            "prepare",
            s,
            "--operations",
            "lvm-uuids",
            "--dry-run",
            "--json",
        ]))
        .unwrap();
        let ds = &j["report"]["disk_steps"];
        assert_eq!(ds.as_array().map(Vec::len), Some(1), "{j}");
        assert_eq!(ds[0]["source"], "lvm-uuids");
        let changes = ds[0]["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1 + f.pvs.len(), "{j}");
        assert_eq!(changes[0]["old"], vg0.as_str());
        assert!(j["bytes_changed"].as_u64().unwrap() > 0, "{j}");
        assert!(
            std::fs::read(&f.image).unwrap() == before,
            "{layout}: --dry-run wrote"
        );

        // SOURCE_DATE_EPOCH: two --output runs give the same bytes; the input is untouched.
        let outs: Vec<std::path::PathBuf> = (0..2)
            .map(|i| {
                let out = t.path().join(format!("out{i}.raw"));
                let o = std::process::Command::new(common::BIN)
                    .env("SOURCE_DATE_EPOCH", "1700000000")
                    .args(["prepare", s, "--operations", "lvm-uuids", "-q", "--output"])
                    .arg(&out)
                    .args(["--output-format", "raw", "--compress", "none"])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                out
            })
            .collect();
        assert!(
            std::fs::read(&outs[0]).unwrap() == std::fs::read(&outs[1]).unwrap(),
            "{layout}: two runs with SOURCE_DATE_EPOCH differ"
        );
        assert!(
            std::fs::read(&f.image).unwrap() == before,
            "{layout}: --output wrote the input"
        );
        let (vg1, seq1, pvs1) = lvm2_ids(&f, &outs[0]);
        assert_ne!(vg1, vg0);
        assert_eq!(
            seq1.parse::<u64>().unwrap(),
            seq0.parse::<u64>().unwrap() + 1
        );
        assert!(
            pvs1.iter().all(|p| !pvs0.contains(p)),
            "{pvs0:?} -> {pvs1:?}"
        );

        // In place, random UUIDs: new, and not the reproducible ones.
        let o = std::process::Command::new(common::BIN)
            .env_remove("SOURCE_DATE_EPOCH")
            .args(["prepare", s, "--operations", "lvm-uuids"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("lvm-uuids"), "{text}");
        let (vg2, seq2, pvs2) = lvm2_ids(&f, &f.image);
        assert!(vg2 != vg0 && vg2 != vg1, "{vg0} {vg1} {vg2}");
        assert_eq!(seq2, seq1);
        assert!(
            pvs2.iter().all(|p| !pvs0.contains(p) && !pvs1.contains(p)),
            "{pvs0:?} {pvs1:?} {pvs2:?}"
        );
        let r = t.path().join("r.ext4");
        f.extract(vg, "root", &r);
        assert_e2fsck_clean(&r);
    }
}

/// An XFS (v5, mkxfs.sh `el9`) root inside the two-segment root LV: inspect finds the root
/// in the LV, `prepare --profile linux` edits it there, and `xfs_repair -n` of the LV read
/// back with dd at lvm2's mapping is clean (the edits are in it, the swap LV is untouched).
#[test]
fn xfs_root_in_an_lv_is_found_prepared_and_xfs_repair_clean() {
    require_tools!("mkfs.xfs", "xfs_repair", "xfs_db", "pvcreate");
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    for p in ["etc/ssh", "var/log", "srv"] {
        std::fs::create_dir_all(tree.join(p)).unwrap();
    }
    std::fs::write(
        tree.join("etc/os-release"),
        "ID=rhel\nVERSION_ID=9.4\nNAME=\"Red Hat Enterprise Linux\"\n",
    )
    .unwrap();
    std::fs::write(
        tree.join("etc/fstab"),
        "/dev/mapper/vg0-root / xfs defaults 0 0\n/dev/vg0/swap none swap defaults 0 0\n",
    )
    .unwrap();
    std::fs::write(tree.join("etc/ssh/ssh_host_rsa_key"), "KEY").unwrap();
    std::fs::write(tree.join("var/log/messages"), vec![b'm'; 100_000]).unwrap();
    std::fs::write(
        tree.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let Some(xfs) = imgscrub_testkit::make_xfs_with(
        "el9",
        &t.path().join("xfs"),
        &imgscrub_testkit::XfsOptions {
            size_mb: Some(40),
            src: Some(tree),
            ..Default::default()
        },
    ) else {
        return;
    };
    let Some(f) = make_lvm("linear-mbr", &t.path().join("lvm"), Some(&xfs.image)) else {
        return;
    };
    let s = f.image.to_str().unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", s])).unwrap();
    assert_eq!(j["os"]["root_lv"], "vg0/root", "{j}");
    let root = j["volume_groups"][0]["lvs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "root")
        .unwrap();
    assert_eq!(root["filesystem"]["type"], "xfs", "{j}");
    assert_eq!(root["segments"].as_array().unwrap().len(), 2, "{j}");

    let r0 = t.path().join("r0.xfs");
    f.extract("vg0", "root", &r0);
    assert!(imgscrub_testkit::xfs_ino(&r0, "/etc/ssh/ssh_host_rsa_key").is_some());

    let text = ok(&["prepare", s, "--profile", "linux"]);
    assert!(text.contains("ssh_host_rsa_key"), "{text}");
    let r = t.path().join("r.xfs");
    f.extract("vg0", "root", &r);
    imgscrub_testkit::assert_xfs_repair_clean(&r);
    assert!(
        imgscrub_testkit::xfs_ino(&r, "/etc/ssh/ssh_host_rsa_key").is_none(),
        "the host key is still in the LV"
    );
    assert_eq!(
        imgscrub_testkit::xfs_cat(&r, "/etc/machine-id").as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        imgscrub_testkit::xfs_stat(&r, "/var/log/messages").map(|s| s.size),
        Some(0)
    );
    let sw = t.path().join("sw");
    f.extract("vg0", "swap", &sw);
    assert!(
        std::fs::read(&sw).unwrap() == f.content("vg0", "swap"),
        "prepare touched the swap LV"
    );
}
