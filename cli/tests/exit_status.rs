#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The exit status tells the category of a failure (`imgscrub --help`, docs/decisions.md):
//! 1 any other failure (a missing file…), 2 a command-line mistake, 3 an unsupported input,
//! 4 a damaged input, 5 an image in use (`safety.rs`), 130 interrupted (`jobs.rs`). Every
//! failure prints one line on standard error and leaves the image as it was.

use imgscrub_testkit::{fixture, require_tools, run_ok, tool};
use std::path::Path;

mod common;
use common::imgscrub;

/// Run `imgscrub ARGS`, which must fail with `status` and one line `imgscrub: …` on standard
/// error, printing nothing on standard output; that line.
fn fails_with(status: i32, args: &[&str]) -> String {
    let o = imgscrub(args);
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(o.status.code(), Some(status), "imgscrub {args:?}: {err}");
    assert!(o.stdout.is_empty(), "imgscrub {args:?} printed on stdout");
    assert_eq!(err.lines().count(), 1, "imgscrub {args:?}: {err}");
    assert!(err.starts_with("imgscrub: "), "imgscrub {args:?}: {err}");
    err
}

fn sparse_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

#[test]
fn a_missing_image_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.img");
    let m = missing.to_str().unwrap();
    for args in [
        &["inspect", m][..],
        &["prepare", m],
        &["ls", m, "/"],
        &["rm", m, "/etc/hostname"],
        &["sparsify", m],
    ] {
        fails_with(1, args);
    }
    // A directory is not an image: the same category.
    fails_with(1, &["inspect", dir.path().to_str().unwrap()]);
    // A guest file that is not there is a failed request, not a damaged image.
    let img = dir.path().join("sample.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &img).unwrap();
    fails_with(1, &["cat", img.to_str().unwrap(), "/no/such/file"]);
}

#[test]
fn command_line_mistakes_exit_2() {
    // clap's own usage errors.
    for args in [
        &["--no-such-option"][..],
        &["no-such-command"],
        &["inspect"],
        &["chmod", "disk.img", "0999", "/etc"],
    ] {
        let o = imgscrub(args);
        assert_eq!(o.status.code(), Some(2), "imgscrub {args:?}");
    }
    // Mistakes found after parsing exit the same way, before the image is touched.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sample.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &img).unwrap();
    let before = std::fs::read(&img).unwrap();
    let p = img.to_str().unwrap();
    let out = dir.path().join("out.qcow2");
    let err = fails_with(
        2,
        &["prepare", "--dry-run", "--output", out.to_str().unwrap(), p],
    );
    assert!(err.contains("do not go together"), "{err}");
    assert!(!out.exists());
    fails_with(2, &["ls", p, "etc"]);
    fails_with(2, &["rm", p, "etc/hostname"]);
    fails_with(2, &["symlink", p, "/etc/x", ""]);
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

/// The whole-disk Btrfs of `inspect.rs::a_root_of_a_kind_we_cannot_open_is_named`, from the
/// exit status's side: refused as an unsupported input, not as a missing file.
#[test]
fn a_btrfs_only_disk_exits_3() {
    require_tools!("mkfs.btrfs");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("btrfs.img");
    sparse_file(&img, 128 << 20);
    run_ok(tool("mkfs.btrfs").args(["-q", "-f"]).arg(&img));
    let before = std::fs::read(&img).unwrap();
    let p = img.to_str().unwrap();
    for args in [
        &["prepare", p][..],
        &["prepare", "--dry-run", p],
        &["prepare", "--partition", "0", p],
        &["ls", p, "/"],
        &["rm", p, "/etc/hostname"],
    ] {
        fails_with(3, args);
    }
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

/// v4 XFS (no metadata checksums) opens for reading only: every edit is refused as
/// unsupported, whether or not the path exists, and reading still works.
#[test]
fn edits_of_a_v4_xfs_image_exit_3() {
    require_tools!("mkfs.xfs");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("xfs.img");
    sparse_file(&img, 300 << 20);
    run_ok(
        tool("mkfs.xfs")
            .args(["-q", "-f", "-m", "crc=0", "-n", "ftype=1"])
            .arg(&img),
    );
    let before = std::fs::read(&img).unwrap();
    let p = img.to_str().unwrap();
    for args in [
        &["rm", p, "/x"][..],
        &["mkdir", p, "/d"],
        &["chmod", p, "0700", "/"],
        &["prepare", p],
    ] {
        let err = fails_with(3, args);
        assert!(err.contains("v4 XFS"), "{args:?}: {err}");
    }
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a refused edit wrote"
    );
    let o = imgscrub(&["ls", p, "/"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_damaged_image_exits_4() {
    require_tools!("mkfs.ext4");
    let dir = tempfile::tempdir().unwrap();

    // An ext4 whose superblock checksum no longer matches (a byte of the volume name).
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    std::fs::write(src.join("etc/hostname"), "golden\n").unwrap();
    let img = dir.path().join("ext4.img");
    sparse_file(&img, 32 << 20);
    run_ok(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-O", "metadata_csum", "-d"])
            .arg(&src)
            .arg(&img),
    );
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[1024 + 0x78] ^= 0x20;
    std::fs::write(&img, &bytes).unwrap();
    let p = img.to_str().unwrap();
    for args in [
        &["ls", p, "/"][..],
        &["rm", p, "/etc/hostname"],
        &["prepare", p],
    ] {
        let err = fails_with(4, args);
        assert!(err.contains("checksum mismatch"), "{args:?}: {err}");
    }
    assert!(
        std::fs::read(&img).unwrap() == bytes,
        "a refused edit wrote"
    );

    // A qcow2 header cut short.
    let q = dir.path().join("short.qcow2");
    std::fs::write(&q, b"QFI\xfb\0\0\0\x03garbage").unwrap();
    fails_with(4, &["inspect", q.to_str().unwrap()]);

    // A GPT whose primary and backup headers are both damaged.
    let gpt = dir.path().join("gpt.img");
    let mut d = vec![0u8; 1 << 20];
    d[446 + 4] = 0xee;
    d[446 + 8] = 1;
    d[510] = 0x55;
    d[511] = 0xaa;
    d[512..520].copy_from_slice(b"EFI PART");
    std::fs::write(&gpt, d).unwrap();
    fails_with(4, &["inspect", gpt.to_str().unwrap()]);
}

#[test]
fn the_help_lists_the_exit_statuses() {
    let o = imgscrub(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8(o.stdout).unwrap();
    let section = out
        .split_once("Exit status:\n")
        .unwrap_or_else(|| panic!("no exit status section:\n{out}"))
        .1;
    for (code, word) in [
        ("0", "success"),
        ("1", "failure"),
        ("2", "usage"),
        ("3", "unsupported"),
        ("4", "damaged"),
        ("5", "in use"),
        ("130", "interrupted"),
    ] {
        assert!(
            section
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{code} ")) && l.contains(word)),
            "exit status {code} ({word}) missing:\n{section}"
        );
    }
}
