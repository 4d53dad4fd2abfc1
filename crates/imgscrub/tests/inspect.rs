#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Filesystem probing and `Image::inspect` against the real tools: filesystems made with
//! mkfs.ext2/3/4, mkfs.vfat and mkswap, compared with `blkid -p -o export` and `dumpe2fs -h`.

use imgscrub::fs::probe::{FsType, probe};
use imgscrub::{Format, Image, OpenOptions};
use imgscrub_testkit::{require_tools, run_ok, tool};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn mkfile(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn blkid(img: &Path) -> BTreeMap<String, String> {
    run_ok(tool("blkid").args(["-p", "-o", "export"]).arg(img))
        .lines()
        .filter_map(|l| l.split_once('='))
        // `-o export` escapes spaces and other shell characters with a backslash.
        .map(|(k, v)| (k.to_string(), v.replace('\\', "")))
        .collect()
}

fn probe_file(img: &Path) -> imgscrub::fs::probe::FsProbe {
    probe(&imgscrub::disk::RawFile::open(img).unwrap()).unwrap()
}

#[test]
fn ext_variants_match_blkid_and_dumpe2fs() {
    require_tools!("mkfs.ext4", "mkfs.ext3", "mkfs.ext2", "blkid", "dumpe2fs");
    let dir = tempfile::tempdir().unwrap();
    let variants: &[(&str, &[&str])] = &[
        ("mkfs.ext2", &[]),
        ("mkfs.ext3", &[]),
        ("mkfs.ext4", &[]),
        ("mkfs.ext4", &["-b", "4096", "-O", "^has_journal"]),
        ("mkfs.ext4", &["-O", "^metadata_csum,^64bit", "-b", "2048"]),
        ("mkfs.ext3", &["-O", "^dir_index"]),
        ("mkfs.ext2", &["-O", "extent"]),
        (
            "mkfs.ext4",
            &["-O", "inline_data,quota,project", "-I", "256"],
        ),
    ];
    for (i, (mkfs, args)) in variants.iter().enumerate() {
        let img = mkfile(dir.path(), &format!("fs{i}.img"), 16 << 20);
        run_ok(
            tool(mkfs)
                .args(["-q", "-F", "-L", &format!("lbl{i}")])
                .args(*args)
                .arg(&img),
        );
        let b = blkid(&img);
        let p = probe_file(&img);
        let what = format!("{mkfs} {args:?}");
        assert_eq!(p.fstype.blkid_name(), b["TYPE"], "{what}");
        assert_eq!(
            p.label.as_deref(),
            b.get("LABEL").map(String::as_str),
            "{what}"
        );
        assert_eq!(
            p.uuid.as_deref(),
            b.get("UUID").map(String::as_str),
            "{what}"
        );
        assert_eq!(
            p.version.as_deref(),
            b.get("VERSION").map(String::as_str),
            "{what}"
        );
        if let Some(bs) = b.get("BLOCK_SIZE") {
            assert_eq!(p.block_size.unwrap().to_string(), *bs, "{what}");
        }
        // dumpe2fs: "Filesystem features:      has_journal ext_attr ..."
        let d = run_ok(tool("dumpe2fs").arg("-h").arg(&img));
        let want: BTreeSet<&str> = d
            .lines()
            .find_map(|l| l.strip_prefix("Filesystem features:"))
            .unwrap()
            .split_whitespace()
            .collect();
        let f = p.ext_features.unwrap();
        let got: BTreeSet<&str> = f
            .compat
            .iter()
            .chain(&f.incompat)
            .chain(&f.ro_compat)
            .map(String::as_str)
            .collect();
        assert_eq!(got, want, "{what}");
        let blocks: u64 = d
            .lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(p.size, Some(blocks * u64::from(p.block_size.unwrap())));
    }
}

#[test]
fn fat_variants_match_blkid() {
    require_tools!("mkfs.vfat", "blkid");
    let dir = tempfile::tempdir().unwrap();
    for (bits, size, label) in [
        ("12", 4u64 << 20, Some("SMALL")),
        ("16", 32 << 20, Some("MIDDLE")),
        ("32", 64 << 20, Some("BIG FAT")),
        ("32", 40 << 20, None),
    ] {
        let img = mkfile(dir.path(), &format!("fat{bits}.img"), size);
        let mut cmd = tool("mkfs.vfat");
        cmd.args(["-F", bits, "-i", "1234ABCD"]);
        if let Some(l) = label {
            cmd.args(["-n", l]);
        }
        run_ok(cmd.arg(&img));
        let b = blkid(&img);
        let p = probe_file(&img);
        assert_eq!(p.fstype, FsType::Vfat);
        assert_eq!(p.fstype.blkid_name(), b["TYPE"]);
        assert_eq!(
            p.version.as_deref(),
            Some(b["VERSION"].as_str()),
            "FAT{bits}"
        );
        assert_eq!(p.version.as_deref(), Some(format!("FAT{bits}").as_str()));
        assert_eq!(p.label.as_deref(), b.get("LABEL").map(String::as_str));
        assert_eq!(p.uuid.as_deref(), Some("1234-ABCD"));
        assert_eq!(p.uuid.as_deref(), b.get("UUID").map(String::as_str));
    }
}

#[test]
fn swap_matches_blkid() {
    require_tools!("mkswap", "blkid");
    let dir = tempfile::tempdir().unwrap();
    let img = mkfile(dir.path(), "swap.img", 8 << 20);
    run_ok(
        tool("mkswap")
            .args(["-L", "swappy", "-U", "11111111-2222-3333-4444-555555555555"])
            .arg(&img),
    );
    let b = blkid(&img);
    let p = probe_file(&img);
    assert_eq!(p.fstype.blkid_name(), b["TYPE"]);
    assert_eq!(p.label.as_deref(), Some("swappy"));
    assert_eq!(p.label.as_deref(), b.get("LABEL").map(String::as_str));
    assert_eq!(p.uuid.as_deref(), b.get("UUID").map(String::as_str));
    assert_eq!(p.version.as_deref(), b.get("VERSION").map(String::as_str));
    assert_eq!(p.size, Some(8 << 20));
}

/// A GPT disk with ext4, vfat and swap partitions, made with the real tools.
fn gpt_with_filesystems(dir: &Path) -> PathBuf {
    let disk = mkfile(dir, "disk.img", 48 << 20);
    run_ok(
        tool("sgdisk")
            .args(["-n", "1:2048:+4M", "-t", "1:ef00", "-c", "1:ESP"])
            .args(["-n", "2:0:+24M", "-t", "2:8300", "-c", "2:root"])
            .args(["-n", "3:0:0", "-t", "3:8200", "-c", "3:swap"])
            .arg(&disk),
    );
    let parts = [
        ("esp.img", 4u64 << 20, 2048u64),
        ("root.img", 24 << 20, 2048 + 8192),
    ];
    let esp = mkfile(dir, parts[0].0, parts[0].1);
    run_ok(tool("mkfs.vfat").args(["-n", "ESP"]).arg(&esp));
    let root = mkfile(dir, parts[1].0, parts[1].1);
    run_ok(tool("mkfs.ext4").args(["-q", "-L", "root"]).arg(&root));
    let end: u64 = run_ok(tool("sgdisk").args(["-i", "3"]).arg(&disk))
        .lines()
        .find_map(|l| l.strip_prefix("Last sector: "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let swap_start = 2048 + 8192 + 49152;
    let swap = mkfile(dir, "swap.img", (end + 1 - swap_start) * 512);
    run_ok(tool("mkswap").args(["-L", "sw"]).arg(&swap));
    for (img, start) in [(esp, 2048), (root, 2048 + 8192), (swap, swap_start)] {
        run_ok(
            Command::new("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", disk.display()))
                .args([
                    "bs=512",
                    &format!("seek={start}"),
                    "conv=notrunc",
                    "status=none",
                ]),
        );
    }
    disk
}

#[test]
fn inspect_gpt_image_finds_each_filesystem() {
    require_tools!("sgdisk", "mkfs.vfat", "mkfs.ext4", "mkswap", "blkid");
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_with_filesystems(dir.path());
    let img = Image::open(&disk, OpenOptions::default()).unwrap();
    assert_eq!(img.format(), Format::Raw);
    let r = img.inspect().unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert_eq!(r.partition_table.kind, "gpt");
    let got: Vec<(u32, &str, Option<&str>)> = r
        .partitions
        .iter()
        .map(|p| {
            let f = p.filesystem.as_ref().unwrap();
            (p.index, f.fs_type.as_str(), f.label.as_deref())
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "vfat", Some("ESP")),
            (2, "ext4", Some("root")),
            (3, "swap", Some("sw"))
        ]
    );
    // blkid on each partition (by offset) agrees on TYPE and UUID.
    for p in &r.partitions {
        let out = run_ok(
            tool("blkid")
                .args(["-p", "-o", "export", "-O", &p.start.to_string()])
                .args(["-S", &p.size.to_string()])
                .arg(&disk),
        );
        let b: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        let f = p.filesystem.as_ref().unwrap();
        assert_eq!(f.fs_type, b["TYPE"]);
        assert_eq!(f.uuid.as_deref(), b.get("UUID").copied());
    }
    // The JSON form has the same partitions.
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["partitions"][1]["filesystem"]["type"], "ext4");
    assert_eq!(j["format"], "raw");
}

#[test]
fn inspect_whole_disk_filesystem_and_mbr() {
    require_tools!("mkfs.ext4", "sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = mkfile(dir.path(), "whole.img", 8 << 20);
    run_ok(tool("mkfs.ext4").args(["-q", "-L", "whole"]).arg(&img));
    let r = Image::open(&img, OpenOptions::default())
        .unwrap()
        .inspect()
        .unwrap();
    assert_eq!(r.partition_table.kind, "none");
    assert_eq!(r.partitions.len(), 1);
    assert_eq!(r.partitions[0].index, 0);
    let fs = r.partitions[0].filesystem.as_ref().unwrap();
    assert_eq!(
        (fs.fs_type.as_str(), fs.label.as_deref()),
        ("ext4", Some("whole"))
    );

    // MBR with an extended partition: the container is not probed.
    let mbr = mkfile(dir.path(), "mbr.img", 16 << 20);
    let mut child = tool("sfdisk")
        .arg(&mbr)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=4096, type=83\nstart=8192, size=8192, type=5\nstart=10240, size=4096, type=82\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let r = Image::open(&mbr, OpenOptions::default())
        .unwrap()
        .inspect()
        .unwrap();
    assert_eq!(r.partition_table.kind, "mbr");
    let idx: Vec<u32> = r.partitions.iter().map(|p| p.index).collect();
    assert_eq!(idx, [1, 2, 5]);
    assert!(r.partitions[1].extended && r.partitions[1].filesystem.is_none());
    assert_eq!(
        r.partitions[2].filesystem.as_ref().unwrap().fs_type,
        "unknown"
    );
}

#[test]
fn open_refuses_bad_inputs_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let e = Image::open(dir.path().join("missing.img"), OpenOptions::default()).unwrap_err();
    assert!(e.to_string().contains("missing.img"), "{e}");
    let e = Image::open(dir.path(), OpenOptions::default()).unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");
    let e = Image::open("/dev/null", OpenOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let raw = mkfile(dir.path(), "raw.img", 1 << 20);
    let e = Image::open(
        &raw,
        OpenOptions {
            write: false,
            format: Some(Format::Qcow2),
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a qcow2 image"), "{e}");
    // A tiny file is a raw disk with no table and an unknown filesystem.
    let tiny = mkfile(dir.path(), "tiny.img", 3);
    let r = Image::open(&tiny, OpenOptions::default())
        .unwrap()
        .inspect()
        .unwrap();
    assert_eq!(
        r.partitions[0].filesystem.as_ref().unwrap().fs_type,
        "unknown"
    );
    // Image::from_device works on memory.
    let dev = Arc::new(imgscrub::disk::MemDev::zeroed(1 << 20));
    let r = Image::from_device("mem", Format::Raw, dev)
        .inspect()
        .unwrap();
    assert_eq!(r.virtual_size, 1 << 20);
}

fn strip_identity(mut j: serde_json::Value) -> serde_json::Value {
    j["path"] = serde_json::Value::Null;
    j["format"] = serde_json::Value::Null;
    j["backing_chain"] = serde_json::Value::Null;
    j
}

#[test]
fn qcow2_sample_inspects_like_its_raw_conversion() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let sample = imgscrub_testkit::fixture("sample.qcow2");
    let raw = dir.path().join("sample.img");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&sample)
            .arg(&raw),
    );
    let q = Image::open(&sample, OpenOptions::default()).unwrap();
    assert_eq!(q.format(), Format::Qcow2);
    let qi = q.inspect().unwrap();
    let ri = Image::open(&raw, OpenOptions::default())
        .unwrap()
        .inspect()
        .unwrap();
    assert_eq!(qi.virtual_size, 16 << 20);
    let types: Vec<&str> = qi
        .partitions
        .iter()
        .map(|p| p.filesystem.as_ref().unwrap().fs_type.as_str())
        .collect();
    assert_eq!(types, ["vfat", "ext4"]);
    assert_eq!(
        strip_identity(serde_json::to_value(&qi).unwrap()),
        strip_identity(serde_json::to_value(&ri).unwrap())
    );
}

#[test]
fn backing_chain_is_listed_and_read_through() {
    require_tools!("qemu-img", "sgdisk", "mkfs.vfat", "mkfs.ext4", "mkswap");
    let dir = tempfile::tempdir().unwrap();
    let disk = gpt_with_filesystems(dir.path());
    let mid = dir.path().join("mid.qcow2");
    let top = dir.path().join("top.qcow2");
    run_ok(
        tool("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg("disk.img")
            .arg(&mid),
    );
    run_ok(
        tool("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&mid)
            .arg(&top),
    );
    let img = Image::open(&top, OpenOptions::default()).unwrap();
    let r = img.inspect().unwrap();
    let chain: Vec<(String, Option<Format>)> = r
        .backing_chain
        .iter()
        .map(|b| (b.path.clone(), b.format))
        .collect();
    assert_eq!(
        chain,
        [
            (mid.display().to_string(), Some(Format::Qcow2)),
            (disk.display().to_string(), Some(Format::Raw)),
        ]
    );
    assert_eq!(r.partitions.len(), 3);
    assert_eq!(
        r.partitions[1]
            .filesystem
            .as_ref()
            .unwrap()
            .label
            .as_deref(),
        Some("root")
    );
}

#[test]
fn damaged_qcow2_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.qcow2");
    let mut d = b"QFI\xfb".to_vec();
    d.extend_from_slice(&[0xff; 200]);
    std::fs::write(&bad, d).unwrap();
    let e = Image::open(&bad, OpenOptions::default()).unwrap_err();
    assert!(e.to_string().contains("bad.qcow2"), "{e}");
    assert_eq!(e.to_string().lines().count(), 1);
}

#[test]
fn make_sample_script_rebuilds_the_committed_sample() {
    require_tools!("sgdisk", "mkfs.vfat", "mkfs.ext4", "qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sample.qcow2");
    run_ok(
        Command::new("bash")
            .arg(imgscrub_testkit::fixture("make-sample.sh"))
            .arg(&out),
    );
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(size < 2 << 20, "sample grew to {size} bytes");
    let fresh = Image::open(&out, OpenOptions::default())
        .unwrap()
        .inspect()
        .unwrap();
    let committed = Image::open(
        imgscrub_testkit::fixture("sample.qcow2"),
        OpenOptions::default(),
    )
    .unwrap()
    .inspect()
    .unwrap();
    assert_eq!(
        strip_identity(serde_json::to_value(&fresh).unwrap()),
        strip_identity(serde_json::to_value(&committed).unwrap())
    );
    let root = fresh.partitions[1].filesystem.as_ref().unwrap();
    assert_eq!(
        root.uuid.as_deref(),
        Some("3f0c6a52-9d3e-4b7a-a1c2-5e8f0d6b7a91")
    );
    // The root filesystem has the files the README demo scrubs.
    let raw = dir.path().join("sample.img");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&out)
            .arg(&raw),
    );
    let part = dir.path().join("root.img");
    let p = &fresh.partitions[1];
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", part.display()))
            .args([
                "bs=512",
                &format!("skip={}", p.start / 512),
                &format!("count={}", p.size / 512),
                "status=none",
            ]),
    );
    imgscrub_testkit::assert_e2fsck_clean(&part);
    for path in [
        "/etc/machine-id",
        "/etc/ssh/ssh_host_ed25519_key",
        "/root/.bash_history",
        "/var/lib/dhcp/dhclient.leases",
        "/var/lib/cloud/instance",
        "/var/log/syslog",
    ] {
        let s = imgscrub_testkit::debugfs(&part, &format!("stat {path}"));
        assert!(s.contains("Inode:"), "{path} missing: {s}");
    }
}

#[test]
fn partition_device_reads_inside_the_partition() {
    let img = Image::open(
        imgscrub_testkit::fixture("sample.qcow2"),
        OpenOptions::default(),
    )
    .unwrap();
    let table = img.partitions().unwrap();
    let root = img.partition_device(&table.partitions[1]).unwrap();
    use imgscrub::disk::BlockDev;
    let mut magic = [0u8; 2];
    root.read_at(&mut magic, 1024 + 56).unwrap();
    assert_eq!(magic, [0x53, 0xef]);
    assert!(root.is_read_only());
}
