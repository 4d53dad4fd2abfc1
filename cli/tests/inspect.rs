#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `imgscrub inspect` as a user runs it: the built binary on images made with sgdisk.

use imgscrub_testkit::{require_tools, run_ok, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn imgscrub(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgscrub"))
        .args(args)
        .output()
        .unwrap()
}

fn gpt_image(dir: &Path) -> PathBuf {
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run_ok(
        tool("sgdisk")
            .args(["-n", "1:2048:+2M", "-t", "1:ef00", "-c", "1:ESP"])
            .args(["-n", "2:0:0", "-t", "2:8300", "-c", "2:root"])
            .arg(&img),
    );
    let esp = dir.join("esp.img");
    std::fs::File::create(&esp)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    run_ok(tool("mkfs.vfat").args(["-n", "ESP"]).arg(&esp));
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", esp.display()))
            .arg(format!("of={}", img.display()))
            .args(["bs=512", "seek=2048", "conv=notrunc", "status=none"]),
    );
    img
}

#[test]
fn inspect_json_lists_the_partitions() {
    require_tools!("sgdisk", "mkfs.vfat", "sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = gpt_image(dir.path());
    let o = imgscrub(&["inspect".as_ref(), "--json".as_ref(), img.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["format"], "raw");
    assert_eq!(j["virtual_size"], 32u64 << 20);
    assert_eq!(j["partition_table"]["kind"], "gpt");
    let parts = j["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    // Same as sfdisk.
    let s: serde_json::Value =
        serde_json::from_str(&run_ok(tool("sfdisk").arg("--json").arg(&img))).unwrap();
    for (ours, theirs) in parts
        .iter()
        .zip(s["partitiontable"]["partitions"].as_array().unwrap())
    {
        assert_eq!(ours["start"], theirs["start"].as_u64().unwrap() * 512);
        assert_eq!(ours["size"], theirs["size"].as_u64().unwrap() * 512);
        assert_eq!(
            ours["part_uuid"].as_str().unwrap(),
            theirs["uuid"].as_str().unwrap().to_lowercase()
        );
        assert_eq!(ours["name"], theirs["name"]);
    }
    assert_eq!(parts[0]["filesystem"]["type"], "vfat");
    assert_eq!(parts[0]["filesystem"]["label"], "ESP");
    assert_eq!(parts[1]["filesystem"]["type"], "unknown");
}

#[test]
fn inspect_prints_a_table() {
    require_tools!("sgdisk", "mkfs.vfat");
    let dir = tempfile::tempdir().unwrap();
    let img = gpt_image(dir.path());
    let o = imgscrub(&["inspect".as_ref(), img.as_os_str()]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("GPT"), "{out}");
    let row = out.lines().find(|l| l.starts_with("1 ")).unwrap();
    for want in ["1.0 MiB", "2.0 MiB", "EFI System", "ESP", "vfat"] {
        assert!(row.contains(want), "{want} missing in {row:?}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("2 ") && l.contains("root"))
    );
}

#[test]
fn bad_input_gives_one_line_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.img");
    for arg in [missing.as_os_str(), dir.path().as_os_str()] {
        let o = imgscrub(&["inspect".as_ref(), arg]);
        assert!(!o.status.success());
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("imgscrub: "), "{err}");
        assert!(o.stdout.is_empty());
    }
    // A GPT whose both headers are damaged: a clean error, not a panic.
    let bad = dir.path().join("bad.img");
    let mut d = vec![0u8; 1 << 20];
    d[446 + 4] = 0xee;
    d[446 + 8] = 1;
    d[510] = 0x55;
    d[511] = 0xaa;
    d[512..520].copy_from_slice(b"EFI PART");
    std::fs::write(&bad, d).unwrap();
    let o = imgscrub(&["inspect".as_ref(), bad.as_os_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("GPT"), "{err}");
}

#[test]
fn help_teaches_by_example() {
    for args in [&["--help"][..], &["inspect", "--help"][..]] {
        let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_ref()).collect();
        let o = imgscrub(&a);
        assert!(o.status.success());
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(out.contains("Examples:"), "{out}");
        assert!(out.contains("imgscrub inspect"), "{out}");
    }
}

#[test]
fn inspect_sample_qcow2() {
    let sample = imgscrub_testkit::fixture("sample.qcow2");
    let o = imgscrub(&["inspect".as_ref(), sample.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("qcow2, 16.0 MiB virtual"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("2 ") && l.contains("ext4") && l.contains("root")),
        "{out}"
    );
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), b"QFI\xfb\0\0\0\x03garbage").unwrap();
    let o = imgscrub(&["inspect".as_ref(), bad.path().as_os_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("imgscrub: "), "{err}");
}

/// A disk whose only filesystem is of a kind imgscrub cannot open (Btrfs here; an LVM
/// physical volume or LUKS alike): `prepare`, `ls` and `inspect` all say what was found and
/// what imgscrub opens, as an unsupported input (exit status 3, not the 1 of a missing
/// file); the image is left byte-identical.
#[test]
fn a_root_of_a_kind_we_cannot_open_is_named() {
    require_tools!("mkfs.btrfs");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("btrfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    run_ok(tool("mkfs.btrfs").args(["-q", "-f"]).arg(&img));
    let before = std::fs::read(&img).unwrap();
    let s = img.as_os_str();

    let mut messages = Vec::new();
    for args in [
        &["prepare".as_ref(), s][..],
        &["prepare".as_ref(), s, "--dry-run".as_ref()],
        &["ls".as_ref(), s, "/".as_ref()],
    ] {
        let o = imgscrub(args);
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        // `imgscrub: message`; the file verbs put the image's name in front.
        let msg = err
            .trim_end()
            .strip_prefix("imgscrub: ")
            .unwrap_or_else(|| panic!("{err}"));
        let msg = msg
            .strip_prefix(&format!("{}: ", img.display()))
            .unwrap_or(msg)
            .to_owned();
        assert!(!msg.contains("no such file"), "{msg}");
        assert!(
            msg.starts_with("no root filesystem imgscrub can open: the disk has btrfs (the whole disk); imgscrub can open "),
            "{msg}"
        );
        for kind in ["ext2", "ext3", "ext4", "xfs", "vfat"] {
            assert!(msg.contains(kind), "{msg} does not name {kind}");
        }
        messages.push(msg);
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:#?}");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "a refused input was written"
    );

    // The same refusal when the volume is named, in the same category.
    let o = imgscrub(&["prepare".as_ref(), s, "--partition".as_ref(), "0".as_ref()]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        err.contains("the whole disk holds btrfs, which imgscrub cannot open (it can open ext2"),
        "{err}"
    );

    // inspect succeeds (it reads only) and carries the same text as a warning.
    let o = imgscrub(&["inspect".as_ref(), s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains(&format!("warning: {}\n", messages[0])),
        "{out}"
    );
    let o = imgscrub(&["inspect".as_ref(), "--json".as_ref(), s]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["os"], serde_json::Value::Null, "{v}");
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert_eq!(warnings, [messages[0].as_str()], "{v}");
}
