#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The file verbs (`ls cat stat rm write mkdir symlink chmod`) on real images: a GPT disk
//! with an ESP and an ext4 root, a whole-disk ext4, and the same as qcow2. After every edit
//! the ext4 filesystem is extracted and checked with `e2fsck -fn`, and `debugfs` reads back
//! what we wrote; `--dry-run` and failing commands must leave the image byte-identical.

use imgscrub_testkit::{assert_e2fsck_clean, debugfs, make_ext4, require_tools, run_ok};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PART_START_SECTOR: u64 = 2048 + 16384; // after an 8 MiB ESP at sector 2048

fn imgscrub(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgscrub"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            si.write_all(data).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = imgscrub(args, None);
    assert!(
        o.status.success(),
        "imgscrub {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = imgscrub(args, None);
    assert!(!o.status.success(), "imgscrub {args:?} should fail");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    assert!(err.starts_with("imgscrub: "), "{err}");
    err
}

fn source_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    for d in [
        "etc/ssh",
        "var/log",
        "var/lib/cloud/instances/i-1",
        "root",
        "usr/lib",
    ] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("etc/hostname"), "golden\n").unwrap();
    std::fs::write(src.join("usr/lib/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", src.join("etc/os-release")).unwrap();
    std::fs::write(src.join("etc/fstab"), "UUID=x / ext4 defaults 0 1\n").unwrap();
    std::fs::write(src.join("etc/ssh/ssh_host_rsa_key"), "KEY").unwrap();
    std::fs::write(src.join("var/log/syslog"), vec![b'x'; 100_000]).unwrap();
    std::fs::write(src.join("var/lib/cloud/instances/i-1/obj.pkl"), "state").unwrap();
    src
}

/// A GPT disk: partition 1 = 8 MiB FAT ESP, partition 2 = ext4 root. Returns the disk.
fn gpt_disk(dir: &Path, src: &Path) -> Option<PathBuf> {
    let fs = dir.join("root.ext4");
    if !make_ext4("default", src, &fs, 48) {
        return None;
    }
    let disk = dir.join("disk.img");
    run_ok(Command::new("truncate").arg("-s").arg("64M").arg(&disk));
    run_ok(
        Command::new("sgdisk")
            .args(["-n1:2048:+8M", "-t1:ef00", "-n2:0:0", "-t2:8300"])
            .arg(&disk),
    );
    let esp = dir.join("esp.fat");
    run_ok(Command::new("truncate").arg("-s").arg("8M").arg(&esp));
    run_ok(imgscrub_testkit::tool("mkfs.vfat").arg(&esp));
    for (f, sector) in [(&esp, 2048u64), (&fs, PART_START_SECTOR)] {
        run_ok(
            Command::new("dd")
                .arg(format!("if={}", f.display()))
                .arg(format!("of={}", disk.display()))
                .arg("bs=512")
                .arg(format!("seek={sector}"))
                .arg("conv=notrunc")
                .arg("status=none"),
        );
    }
    Some(disk)
}

/// Extract the ext4 partition of the disk (raw or qcow2) into a file for e2fsck/debugfs.
fn extract_root(dir: &Path, disk: &Path, whole: bool) -> PathBuf {
    let raw = dir.join("check.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(disk)
            .arg(&raw),
    );
    if whole {
        return raw;
    }
    let out = dir.join("check.ext4");
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", out.display()))
            .arg("bs=512")
            .arg(format!("skip={PART_START_SECTOR}"))
            .arg("status=none"),
    );
    out
}

fn sha(p: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(p))
}

fn edit_cycle(disk: &Path, dir: &Path, whole: bool) {
    let d = disk.to_str().unwrap();
    let check = |what: &str| {
        let fs = extract_root(dir, disk, whole);
        assert_e2fsck_clean(&fs);
        eprintln!("e2fsck clean after {what}");
        fs
    };

    // Reads.
    assert_eq!(ok(&["cat", d, "/etc/hostname"]), "golden\n");
    assert_eq!(
        ok(&["cat", d, "/etc/os-release"]),
        "ID=debian\nVERSION_ID=12\n"
    );
    let ls = ok(&["ls", d, "/etc"]);
    assert!(ls.contains("hostname") && ls.contains("ssh"), "{ls}");
    let long = ok(&["ls", "-l", d, "/etc"]);
    assert!(
        long.contains("os-release -> ../usr/lib/os-release"),
        "{long}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&ok(&["stat", "--json", d, "/var/log/syslog"])).unwrap();
    assert_eq!(st["size"], 100_000);
    assert_eq!(st["type"], "regular");

    // Dry run and refused commands leave the image byte-identical.
    let before = sha(disk);
    ok(&["rm", "--dry-run", d, "/etc/hostname"]);
    fails(&["rm", d, "/var/lib/cloud"]); // a directory without -r
    fails(&["rm", d, "/no/such/file"]);
    fails(&["cat", d, "relative/path"]);
    assert_eq!(
        sha(disk),
        before,
        "dry run or failed command wrote to the image"
    );
    ok(&["rm", "-f", d, "/no/such/file"]);

    // Edits, each checked by e2fsck and read back by debugfs.
    ok(&["rm", d, "/etc/ssh/ssh_host_rsa_key"]);
    let fs = check("rm");
    assert!(!debugfs(&fs, "ls -l /etc/ssh").contains("ssh_host_rsa_key"));

    ok(&["rm", "-r", d, "/var/lib/cloud"]);
    let fs = check("rm -r");
    assert!(!debugfs(&fs, "ls /var/lib").contains("cloud"));

    let o = imgscrub(
        &[
            "write",
            "--mode",
            "0600",
            "--owner",
            "0:4",
            d,
            "/etc/machine-id",
        ],
        Some(b"0123456789abcdef0123456789abcdef\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fs = check("write");
    assert_eq!(
        debugfs(&fs, "cat /etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n"
    );
    let stat = debugfs(&fs, "stat /etc/machine-id");
    assert!(stat.contains("Mode:  0600"), "{stat}");
    assert!(stat.contains("Group:     4"), "{stat}");

    ok(&["mkdir", "-p", d, "/etc/cloud/cloud.cfg.d"]);
    ok(&["symlink", d, "/etc/localtime", "/usr/share/zoneinfo/UTC"]);
    ok(&["chmod", d, "0640", "/etc/hostname"]);
    let fs = check("mkdir -p, symlink, chmod");
    assert!(debugfs(&fs, "ls /etc/cloud").contains("cloud.cfg.d"));
    assert!(
        debugfs(&fs, "stat /etc/localtime").contains("Fast link dest: \"/usr/share/zoneinfo/UTC\"")
    );
    assert!(debugfs(&fs, "stat /etc/hostname").contains("Mode:  0640"));
    assert_eq!(ok(&["cat", d, "/etc/machine-id"]).len(), 33);
}

#[test]
fn file_verbs_on_gpt_raw_and_qcow2() {
    require_tools!(
        "sgdisk",
        "mkfs.vfat",
        "qemu-img",
        "e2fsck",
        "debugfs",
        "mke2fs"
    );
    let t = tempfile::tempdir().unwrap();
    let src = source_tree(t.path());
    let Some(disk) = gpt_disk(t.path(), &src) else {
        return;
    };
    // The ESP is reachable with --partition.
    let esp = ok(&["ls", "--partition", "1", disk.to_str().unwrap(), "/"]);
    assert_eq!(esp, "");
    let qcow = t.path().join("disk.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&disk)
            .arg(&qcow),
    );
    edit_cycle(&disk, t.path(), false);
    edit_cycle(&qcow, t.path(), false);
    let check = run_ok(Command::new("qemu-img").arg("check").arg(&qcow));
    assert!(check.contains("No errors"), "{check}");
}

#[test]
fn file_verbs_on_whole_disk_ext4() {
    require_tools!("e2fsck", "debugfs", "mke2fs", "qemu-img");
    let t = tempfile::tempdir().unwrap();
    let src = source_tree(t.path());
    let img = t.path().join("whole.ext4");
    if !make_ext4("default", &src, &img, 32) {
        return;
    }
    edit_cycle(&img, t.path(), true);
}
