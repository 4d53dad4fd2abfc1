#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Probing XFS, Btrfs, LUKS and ISO 9660 (xfsprogs, btrfs-progs, cryptsetup, xorriso, which
//! `scripts/test` installs): compared with `blkid -p`. Like every oracle, a missing tool
//! skips locally and fails in CI.

use imgscrub::fs::probe::{FsType, probe};
use imgscrub_testkit::{require_tool, run_ok, tool};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn have(tools: &[&str]) -> bool {
    tools.iter().all(|t| require_tool(t).is_some())
}

fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn blkid(img: &Path) -> BTreeMap<String, String> {
    run_ok(tool("blkid").args(["-p", "-o", "export"]).arg(img))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace('\\', "")))
        .collect()
}

fn check(img: &Path, want: FsType, label: Option<&str>) {
    let p = probe(&imgscrub::disk::RawFile::open(img).unwrap()).unwrap();
    let b = blkid(img);
    assert_eq!(p.fstype, want, "{}", img.display());
    assert_eq!(p.fstype.blkid_name(), b["TYPE"]);
    assert_eq!(p.label.as_deref(), label);
    assert_eq!(p.label.as_deref(), b.get("LABEL").map(String::as_str));
    assert_eq!(p.uuid.as_deref(), b.get("UUID").map(String::as_str));
    if want == FsType::Luks {
        assert_eq!(p.version.as_deref(), b.get("VERSION").map(String::as_str));
    }
}

#[test]
fn xfs_and_btrfs_match_blkid() {
    if !have(&["blkid", "mkfs.xfs", "mkfs.btrfs"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let x = sparse(dir.path(), "x.img", 320 << 20);
    run_ok(tool("mkfs.xfs").args(["-q", "-L", "xlab"]).arg(&x));
    check(&x, FsType::Xfs, Some("xlab"));
    let b = sparse(dir.path(), "b.img", 128 << 20);
    run_ok(tool("mkfs.btrfs").args(["-q", "-L", "blab"]).arg(&b));
    check(&b, FsType::Btrfs, Some("blab"));
}

#[test]
fn luks1_and_luks2_match_blkid() {
    if !have(&["blkid", "cryptsetup"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (ty, label) in [("luks1", None), ("luks2", Some("clab"))] {
        let img = sparse(dir.path(), &format!("{ty}.img"), 32 << 20);
        let key = dir.path().join("key");
        std::fs::write(&key, b"pw").unwrap();
        let mut cmd = tool("cryptsetup");
        cmd.args(["luksFormat", "-q", "--type", ty, "--key-file"])
            .arg(&key)
            .args(["--pbkdf-force-iterations", "1000"]);
        if let Some(l) = label {
            cmd.args(["--label", l, "--pbkdf", "pbkdf2"]);
        }
        run_ok(cmd.arg(&img));
        check(&img, FsType::Luks, label);
    }
}

#[test]
fn iso9660_matches_blkid() {
    if !have(&["blkid", "xorriso"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello.txt"), b"hi").unwrap();
    let iso = dir.path().join("c.iso");
    run_ok(
        tool("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-V", "MYISO", "-o"])
            .arg(&iso)
            .arg(&src),
    );
    check(&iso, FsType::Iso9660, Some("MYISO"));
}
