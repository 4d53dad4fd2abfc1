#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Writing XFS guests through the CLI (issue 12). The disk: GPT, partition 1 an XFS `/boot`
//! (mkxfs.sh `centos7`, its own UUID, found through the guest's fstab), partition 2 the XFS
//! root (mkxfs.sh `el9`) made from the prepare tests' `centos7` distro tree.
//!
//! - `prepare --dry-run` leaves the disk byte-identical;
//! - with SOURCE_DATE_EPOCH two runs from the same input give byte-identical disks, a second
//!   run changes nothing, both filesystems stay `xfs_repair -n` clean;
//! - the one-pass `prepare --output --compress zstd` gives clean filesystems;
//! - crash safety as for ext4 (safety.rs): a crash at every failpoint of `prepare`,
//!   `rm -r /etc/ssh` and `sparsify` (after a prepare), on raw and qcow2, leaves after the
//!   next open (redo log replayed) the original or the finished disk, with both XFS
//!   filesystems `xfs_repair -n` clean;
//! - an XFS `/boot` next to an ext4 root is edited (`rm`, `mkdir` under /boot) and stays
//!   clean, the ext4 root too.

use imgscrub_testkit::{self as tk, XfsOptions, require_tools, run_ok, tool};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
#[path = "../../crates/imgscrub-prepare/tests/common/distros.rs"]
mod distros;
use common::crash::{self, Job, PREPARE, RM, SPARSIFY, faketime_lib};

const BIN: &str = env!("CARGO_BIN_EXE_imgscrub");
const MIB: u64 = 1 << 20;
const BOOT_UUID: &str = "0b0e0b0e-1111-4222-8333-444455556666";
/// Partition 1: /boot at 1 MiB (64 MiB); 2: / at 65 MiB (64 MiB).
const PARTS: [(u64, u64); 2] = [(MIB, 64 * MIB), (65 * MIB, 64 * MIB)];
const EPOCH: &str = "1700000000";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `imgscrub ARGS` with a fixed SOURCE_DATE_EPOCH and no failpoint.
fn imgscrub(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("IMGSCRUB_FAILPOINT")
        .env_remove("IMGSCRUB_FAILPOINT_TRACE")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = imgscrub(args);
    assert!(
        o.status.success(),
        "imgscrub {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Build a GPT disk of `(image, type code)` partitions at [`PARTS`].
fn gpt_disk(path: &Path, parts: &[(&Path, &str)]) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(130 * MIB)
        .unwrap();
    let mut sg = tool("sgdisk");
    for (i, (_, code)) in parts.iter().enumerate() {
        sg.arg(format!("-n{}:{}:+64M", i + 1, PARTS[i].0 / 512))
            .arg(format!("-t{}:{code}", i + 1));
    }
    run_ok(sg.arg(path));
    for (i, (img, _)) in parts.iter().enumerate() {
        run_ok(
            tool("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", path.display()))
                .args([
                    "bs=1M",
                    &format!("seek={}", PARTS[i].0 / MIB),
                    "conv=notrunc",
                    "status=none",
                ]),
        );
    }
}

/// The root tree: the distro tree with an fstab naming the XFS root by label and /boot by UUID.
fn root_tree(dir: &Path, root_fs: &str) -> PathBuf {
    let root = dir.join("root-src");
    std::fs::create_dir_all(&root).unwrap();
    distros::build("centos7", &root);
    let fstab = root.join("etc/fstab");
    let old = std::fs::read_to_string(&fstab).unwrap_or_default();
    let rest: String = old
        .lines()
        .filter(|l| !l.contains(" / "))
        .map(|l| format!("{l}\n"))
        .collect();
    let root_line = if root_fs == "xfs" {
        "LABEL=imgscrub / xfs defaults 0 0\n".to_string()
    } else {
        "LABEL=root / ext4 defaults 1 1\n".to_string()
    };
    std::fs::write(
        &fstab,
        format!("{root_line}UUID={BOOT_UUID} /boot xfs defaults 0 0\n{rest}"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("boot")).unwrap();
    root
}

fn boot_image(dir: &Path) -> Option<PathBuf> {
    let boot = dir.join("boot-src");
    std::fs::create_dir_all(boot.join("grub2")).unwrap();
    std::fs::write(
        boot.join("vmlinuz-3.10.0-1160.el7.x86_64"),
        vec![7u8; 300_000],
    )
    .unwrap();
    std::fs::write(boot.join("grub2/grub.cfg"), "set default=0\n").unwrap();
    std::fs::write(boot.join("initramfs.img"), vec![9u8; 500_000]).unwrap();
    let img = xfs_image(dir, "boot", "centos7", &boot)?;
    run_ok(
        tool("xfs_admin")
            .args(["-U", BOOT_UUID, "-L", "boot"])
            .arg(&img),
    );
    Some(img)
}

fn xfs_image(dir: &Path, name: &str, variant: &str, src: &Path) -> Option<PathBuf> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    tk::make_xfs_with(
        variant,
        &d,
        &XfsOptions {
            dirty: true,
            size_mb: Some(64),
            src: Some(src.to_path_buf()),
        },
    )
    .map(|f| f.image)
}

/// XFS /boot + XFS root (el9).
fn xfs_disk(dir: &Path) -> Option<PathBuf> {
    let boot = boot_image(dir)?;
    let src = root_tree(dir, "xfs");
    let root = xfs_image(dir, "root", "el9", &src)?;
    let disk = dir.join("disk.raw");
    gpt_disk(&disk, &[(&boot, "8300"), (&root, "8300")]);
    Some(disk)
}

/// The partitions of a disk (raw or qcow2) as files of their own, for xfs_repair/e2fsck.
fn partitions(dir: &Path, disk: &Path) -> Vec<PathBuf> {
    let raw = dir.join("check.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(disk)
            .arg(&raw),
    );
    let data = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    PARTS
        .iter()
        .enumerate()
        .map(|(i, &(start, len))| {
            let p = dir.join(format!("check-part{}.img", i + 1));
            std::fs::write(&p, &data[start as usize..(start + len) as usize]).unwrap();
            p
        })
        .collect()
}

fn assert_xfs_parts_clean(dir: &Path, disk: &Path, what: &str) {
    for p in partitions(dir, disk) {
        if let Err(out) = tk::xfs_repair_check(&p) {
            panic!("{what}: {} is not clean:\n{out}", p.display());
        }
        std::fs::remove_file(&p).unwrap();
    }
}

#[test]
fn prepare_xfs_guest_dry_run_reproducible_idempotent_and_one_pass() {
    require_tools!(
        "sgdisk",
        "xfs_admin",
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
        "qemu-img"
    );
    let t = tempfile::tempdir().unwrap();
    let Some(disk) = xfs_disk(t.path()) else {
        return;
    };
    let orig = std::fs::read(&disk).unwrap();
    // --dry-run: a plan, no write.
    let plan = ok(&["prepare", s(&disk), "--profile", "linux", "--dry-run"]);
    assert!(!plan.trim().is_empty(), "the dry run planned nothing");
    assert!(
        std::fs::read(&disk).unwrap() == orig,
        "prepare --dry-run changed the disk"
    );
    // Two runs from the same input.
    let a = t.path().join("a.raw");
    let b = t.path().join("b.raw");
    std::fs::write(&a, &orig).unwrap();
    std::fs::write(&b, &orig).unwrap();
    ok(&["prepare", s(&a), "--profile", "linux"]);
    ok(&["prepare", s(&b), "--profile", "linux"]);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two runs with SOURCE_DATE_EPOCH={EPOCH} gave different disks"
    );
    assert!(
        std::fs::read(&a).unwrap() != orig,
        "prepare changed nothing"
    );
    assert_xfs_parts_clean(t.path(), &a, "after prepare");
    // What the guest sees.
    assert_eq!(ok(&["cat", s(&a), "/etc/hostname"]), "");
    assert!(!ok(&["ls", s(&a), "/etc/ssh"]).contains("ssh_host_rsa_key"));
    assert!(ok(&["ls", s(&a), "/boot"]).contains("vmlinuz"));
    // A second run changes nothing.
    let prepared = std::fs::read(&a).unwrap();
    ok(&["prepare", s(&a), "--profile", "linux"]);
    assert!(
        std::fs::read(&a).unwrap() == prepared,
        "the second prepare changed the disk"
    );
    // One pass to a compressed qcow2.
    let out = t.path().join("out.qcow2");
    ok(&[
        "prepare",
        s(&disk),
        "--profile",
        "linux",
        "--output",
        s(&out),
        "--compress",
        "zstd",
    ]);
    assert!(
        std::fs::read(&disk).unwrap() == orig,
        "prepare --output changed its input"
    );
    run_ok(tool("qemu-img").arg("check").arg(&out));
    assert_xfs_parts_clean(t.path(), &out, "after prepare --output");
    assert_eq!(ok(&["cat", s(&out), "/etc/hostname"]), "");
}

#[test]
fn xfs_boot_beside_an_ext4_root_is_edited() {
    require_tools!(
        "sgdisk",
        "xfs_admin",
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
        "qemu-img",
        "mke2fs",
        "e2fsck"
    );
    let t = tempfile::tempdir().unwrap();
    let Some(boot) = boot_image(t.path()) else {
        return;
    };
    let src = root_tree(t.path(), "ext4");
    let root = t.path().join("root.ext4");
    if !tk::make_ext4("default", &src, &root, 64) {
        return;
    }
    run_ok(tool("e2label").arg(&root).arg("root"));
    let disk = t.path().join("disk.raw");
    gpt_disk(&disk, &[(&boot, "8300"), (&root, "8300")]);
    let listing = ok(&["ls", s(&disk), "/boot/grub2"]);
    assert!(
        listing.contains("grub.cfg"),
        "/boot is not the XFS partition: {listing}"
    );
    ok(&["prepare", s(&disk), "--profile", "linux"]);
    let listing = ok(&["ls", s(&disk), "/boot/grub2"]);
    assert!(
        listing.contains("grub.cfg"),
        "/boot after prepare: {listing}"
    );
    ok(&["rm", s(&disk), "/boot/grub2/grub.cfg"]);
    ok(&["mkdir", s(&disk), "/boot/loader"]);
    let parts = partitions(t.path(), &disk);
    if let Err(out) = tk::xfs_repair_check(&parts[0]) {
        panic!("/boot is not clean:\n{out}");
    }
    tk::assert_e2fsck_clean(&parts[1]);
    let names: Vec<Vec<u8>> = tk::xfs_ls(&parts[0], "/")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        names.contains(&b"loader".to_vec()),
        "xfs_db: no /boot/loader"
    );
    let grub: Vec<Vec<u8>> = tk::xfs_ls(&parts[0], "/grub2")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        !grub.contains(&b"grub.cfg".to_vec()),
        "xfs_db: grub.cfg still there"
    );
}

// ---------------------------------------------------------------------------------------
// Crash safety (as safety.rs for ext4).

/// `job` with a frozen clock and this file's SOURCE_DATE_EPOCH.
fn job_cmd(job: Job, lib: &Path, img: &Path, failpoint: Option<&str>) -> Command {
    let mut c = crash::job_cmd(job, lib, img, failpoint);
    c.env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

/// Interrupt `job` at every step (or the first 20, every k-th and the last when there are
/// many); `setup` runs first, uninterrupted, to make the original.
fn every_failpoint(format: &str, job: Job, setup: Option<Job>) {
    require_tools!(
        "sgdisk",
        "xfs_admin",
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
        "qemu-img"
    );
    let Some(lib) = faketime_lib() else { return };
    let t = tempfile::tempdir().unwrap();
    let Some(raw) = xfs_disk(t.path()) else {
        return;
    };
    let orig = if format == "qcow2" {
        let q = t.path().join("orig.qcow2");
        run_ok(
            tool("qemu-img")
                .args(["convert", "-O", "qcow2"])
                .arg(&raw)
                .arg(&q),
        );
        q
    } else {
        raw
    };
    if let Some(setup) = setup {
        let o = job_cmd(setup, &lib, &orig, None).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    crash::every_failpoint(
        &format!("XFS {format} {job:?}"),
        &orig,
        &t.path().join(format!("done.{format}")),
        &t.path().join(format!("work.{format}")),
        |img, fp| job_cmd(job, &lib, img, fp),
        |img, what| assert_xfs_parts_clean(t.path(), img, what),
    );
}

#[test]
fn xfs_prepare_interrupted_at_every_failpoint() {
    every_failpoint("raw", PREPARE, None);
    every_failpoint("qcow2", PREPARE, None);
}

#[test]
fn xfs_rm_and_sparsify_interrupted_at_every_failpoint() {
    every_failpoint("raw", RM, None);
    // Sparsify after a prepare, which leaves deleted data in free blocks.
    every_failpoint("qcow2", SPARSIFY, Some(PREPARE));
}
