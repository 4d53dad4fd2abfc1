//! Helpers shared by the CLI tests: run the binary, and find the ext4 root of a disk image.
#![allow(dead_code)]

pub mod crash;

use imgscrub_testkit::{run_ok, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `imgscrub` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_imgscrub");

/// Run `imgscrub ARGS`.
pub fn imgscrub(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("IMGSCRUB_FAILPOINT")
        .env_remove("IMGSCRUB_FAILPOINT_TRACE")
        .output()
        .unwrap()
}

/// Run `imgscrub ARGS`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = imgscrub(args);
    assert!(
        o.status.success(),
        "imgscrub {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// (start, size) in bytes of the ext4 partition of `disk`, from `imgscrub inspect --json`.
pub fn ext4_partition(disk: &Path) -> (u64, u64) {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", "--json", disk.to_str().unwrap()])).unwrap();
    let part = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["filesystem"]["type"] == "ext4")
        .unwrap()
        .clone();
    (
        part["start"].as_u64().unwrap(),
        part["size"].as_u64().unwrap(),
    )
}

/// The ext4 root partition of a disk image (raw or qcow2) copied to a file of its own.
pub fn root_fs(dir: &Path, disk: &Path) -> PathBuf {
    let (start, size) = ext4_partition(disk);
    let raw = dir.join("root-of-disk.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(disk)
            .arg(&raw),
    );
    let data = std::fs::read(&raw).unwrap();
    let out = dir.join("root-of-disk.ext4");
    std::fs::write(&out, &data[start as usize..(start + size) as usize]).unwrap();
    std::fs::remove_file(&raw).unwrap();
    out
}
