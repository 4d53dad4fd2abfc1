#![allow(clippy::unwrap_used, clippy::expect_used)]
//! XFS guests through the CLI: a CentOS-7-shaped GPT disk (XFS `/boot` found by UUID= in the
//! guest's fstab, XFS root by LABEL=) is inspected and read through the guest tree, prepared
//! in place and in one pass to a new image (`xfs_repair -n` clean on both filesystems, the
//! profile's changes read back by `xfs_db`, a second run changes nothing, `--dry-run`
//! nothing at all); `sparsify` zeroes exactly the free
//! space `xfs_db` lists (every other byte unchanged, `xfs_repair -n` clean); and the one-pass
//! `convert --sparsify` of the dirty disk equals the sparsified disk and is as small as
//! `qemu-img convert -c` of it. Damaged XFS metadata gives a one-line error and no write.

use imgscrub_testkit::{self as tk, XfsOptions, require_tools, run_ok, tool};
use std::path::{Path, PathBuf};

mod common;
use common::{imgscrub, ok};

const MIB: u64 = 1 << 20;
const BOOT_UUID: &str = "0b0e0b0e-1111-4222-8333-444455556666";
/// Partition 1: /boot at 1 MiB (64 MiB); 2: / at 65 MiB (64 MiB).
const PARTS: [(u64, u64); 2] = [(MIB, 64 * MIB), (65 * MIB, 64 * MIB)];

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Build the disk; `dirty` fills both filesystems' free space with random bytes.
/// Returns (disk, boot image, root image) or `None` when the tools are missing.
fn centos7_disk(d: &Path, dirty: bool) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let root = d.join("root-src");
    write(
        &root,
        "etc/os-release",
        "NAME=\"CentOS Linux\"\nID=\"centos\"\nVERSION_ID=\"7\"\n",
    );
    write(
        &root,
        "etc/centos-release",
        "CentOS Linux release 7.9.2009 (Core)\n",
    );
    write(
        &root,
        "etc/redhat-release",
        "CentOS Linux release 7.9.2009 (Core)\n",
    );
    write(
        &root,
        "etc/fstab",
        &format!("LABEL=imgscrub / xfs defaults 0 0\nUUID={BOOT_UUID} /boot xfs defaults 0 0\n"),
    );
    write(
        &root,
        "etc/machine-id",
        "0123456789abcdef0123456789abcdef\n",
    );
    write(&root, "etc/ssh/ssh_host_rsa_key", "-----BEGIN KEY-----\n");
    write(&root, "etc/selinux/config", "SELINUX=enforcing\n");
    write(&root, "var/log/messages", "boot log\n");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    let boot = d.join("boot-src");
    write(&boot, "vmlinuz-3.10.0-1160.el7.x86_64", "kernel image\n");
    write(&boot, "grub2/grub.cfg", "set default=0\n");
    let build = |name: &str, src: &Path| {
        let dir = d.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let opts = XfsOptions {
            dirty,
            size_mb: Some(64),
            src: Some(src.to_path_buf()),
        };
        tk::make_xfs_with("centos7", &dir, &opts).map(|f| f.image)
    };
    let boot_img = build("boot", &boot)?;
    let root_img = build("root", &root)?;
    // Give /boot its own identity (mkxfs.sh stamps a fixed UUID and label): this also turns
    // on meta_uuid, as on any image whose UUID was changed after mkfs.
    run_ok(
        tool("xfs_admin")
            .args(["-U", BOOT_UUID, "-L", "boot"])
            .arg(&boot_img),
    );
    let disk = d.join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(130 * MIB)
        .unwrap();
    run_ok(
        tool("sgdisk")
            .args(["-n1:2048:+64M", "-n2:0:+64M", "-t2:8300"])
            .arg(&disk),
    );
    for (i, img) in [&boot_img, &root_img].iter().enumerate() {
        run_ok(
            tool("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", disk.display()))
                .args([
                    "bs=1M",
                    &format!("seek={}", PARTS[i].0 / MIB),
                    "conv=notrunc",
                    "status=none",
                ]),
        );
    }
    Some((disk, boot_img, root_img))
}

fn part(disk: &[u8], i: usize) -> &[u8] {
    let (s, l) = PARTS[i];
    &disk[s as usize..(s + l) as usize]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run `imgscrub ARGS` with a fixed clock (SOURCE_DATE_EPOCH), which must succeed.
fn ok_sde(args: &[&str]) -> String {
    let o = std::process::Command::new(common::BIN)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "imgscrub {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Write partition `i` of `disk` to its own file (for xfs_repair and xfs_db).
fn extract(disk: &Path, i: usize, out: &Path) -> PathBuf {
    let d = std::fs::read(disk).unwrap();
    std::fs::write(out, part(&d, i)).unwrap();
    out.to_path_buf()
}

fn repair_both(disk: &Path, dir: &Path, what: &str) -> (PathBuf, PathBuf) {
    let boot = extract(disk, 0, &dir.join(format!("{what}-boot.img")));
    let root = extract(disk, 1, &dir.join(format!("{what}-root.img")));
    for img in [&boot, &root] {
        if let Err(out) = tk::xfs_repair_check(img) {
            panic!("{what}: xfs_repair -n {}: {out}", img.display());
        }
    }
    (boot, root)
}

#[test]
fn centos7_xfs_guest_reads_and_prepares() {
    require_tools!(
        "sgdisk",
        "xfs_admin",
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
        "qemu-img"
    );
    let t = tempfile::tempdir().unwrap();
    let Some((disk, _, _)) = centos7_disk(t.path(), false) else {
        return;
    };
    let d = s(&disk);
    // inspect: the OS on the XFS root, XFS details for both partitions.
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", d])).unwrap();
    assert_eq!(v["os"]["root_partition"], 2, "{v}");
    let os = v["os"].to_string();
    assert!(os.contains("centos"), "{os}");
    for p in v["partitions"].as_array().unwrap() {
        let x = &p["filesystem"]["xfs"];
        assert_eq!(x["version"], 5, "{p}");
        assert_eq!(x["log"], "clean", "{p}");
        assert_eq!(x["writable"], true, "{p}");
        assert!(x["read_only_reason"].is_null(), "{p}");
    }
    let boot_features = v["partitions"][0]["filesystem"]["xfs"]["features"].to_string();
    assert!(boot_features.contains("meta_uuid"), "{boot_features}");
    assert!(ok(&["inspect", d]).contains("xfs on partition 2: v5"));
    // The guest tree: /boot comes from partition 1 through fstab's UUID=.
    assert_eq!(
        ok(&["cat", d, "/boot/vmlinuz-3.10.0-1160.el7.x86_64"]),
        "kernel image\n"
    );
    assert_eq!(ok(&["cat", d, "/boot/grub2/grub.cfg"]), "set default=0\n");
    assert!(ok(&["ls", d, "/etc/ssh"]).contains("ssh_host_rsa_key"));
    assert!(ok(&["stat", d, "/etc/machine-id"]).contains("Size: 33"));
    let pristine = std::fs::read(&disk).unwrap();

    // --dry-run writes nothing.
    ok_sde(&["prepare", d, "--profile", "lx-centos", "--dry-run"]);
    assert!(std::fs::read(&disk).unwrap() == pristine, "--dry-run wrote");

    // One pass to a new image: the input is untouched, the output is the prepared guest.
    let out = t.path().join("out.qcow2");
    ok_sde(&[
        "prepare",
        d,
        "--profile",
        "lx-centos",
        "--output",
        s(&out),
        "--compress",
        "zstd",
    ]);
    assert!(
        std::fs::read(&disk).unwrap() == pristine,
        "--output wrote to the input"
    );
    run_ok(tool("qemu-img").args(["check"]).arg(&out));
    let out_raw = t.path().join("out.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&out)
            .arg(&out_raw),
    );

    // In place.
    ok_sde(&["prepare", d, "--profile", "lx-centos"]);
    let (_, root) = repair_both(&disk, t.path(), "in-place");
    // The one-pass output skips free space: it equals the in-place result once that is
    // sparsified.
    ok(&["sparsify", d]);
    let prepared = std::fs::read(&disk).unwrap();
    assert!(
        std::fs::read(&out_raw).unwrap() == prepared,
        "prepare --output differs from prepare in place + sparsify"
    );
    // What the profile did, read by xfs_db.
    assert!(tk::xfs_stat(&root, "/etc/ssh/ssh_host_rsa_key").is_none());
    assert!(
        tk::xfs_stat(&root, "/var/log/messages").is_none() || {
            tk::xfs_stat(&root, "/var/log/messages").unwrap().size == 0
        }
    );
    assert_eq!(tk::xfs_stat(&root, "/etc/machine-id").unwrap().size, 0);
    assert!(tk::xfs_stat(&root, "/etc/imgscrub-prepared").is_some());
    assert_eq!(
        tk::xfs_cat(&root, "/etc/selinux/config").unwrap(),
        b"SELINUX=disabled\n"
    );
    // A second run changes nothing.
    ok_sde(&["prepare", d, "--profile", "lx-centos"]);
    assert!(
        std::fs::read(&disk).unwrap() == prepared,
        "a second run changed the image"
    );

    // File verbs (the profile commented /boot out of fstab: these land on the root).
    ok(&["mkdir", d, "/newdir"]);
    ok(&["rm", d, "/etc/redhat-release"]);
    let (_, root) = repair_both(&disk, t.path(), "verbs");
    assert!(tk::xfs_stat(&root, "/newdir").is_some());
    assert!(tk::xfs_stat(&root, "/etc/redhat-release").is_none());
}

/// Free byte ranges of an XFS image as xfs_db lists them.
fn free_of(img: &Path) -> Vec<(u64, u64)> {
    tk::xfs_free_ranges_with_agfl(img)
}

#[test]
fn sparsify_and_convert_zero_exactly_the_xfs_free_space() {
    require_tools!(
        "sgdisk",
        "xfs_admin",
        "mkfs.xfs",
        "xfs_db",
        "xfs_repair",
        "qemu-img"
    );
    let t = tempfile::tempdir().unwrap();
    let Some((disk, boot_img, root_img)) = centos7_disk(t.path(), true) else {
        return;
    };
    let dirty = std::fs::read(&disk).unwrap();
    let free = [free_of(&boot_img), free_of(&root_img)];
    for (i, f) in free.iter().enumerate() {
        let p = part(&dirty, i);
        let nonzero = f
            .iter()
            .any(|&(o, l)| p[o as usize..(o + l) as usize].iter().any(|&b| b != 0));
        assert!(nonzero, "partition {}: the fixture is not dirty", i + 1);
    }
    // One pass from the dirty disk, before it is sparsified in place.
    let conv = t.path().join("conv.qcow2");
    ok(&[
        "convert",
        "-q",
        "--sparsify",
        "--compress",
        "zstd",
        s(&disk),
        s(&conv),
    ]);
    ok(&["sparsify", s(&disk)]);
    let clean = std::fs::read(&disk).unwrap();
    for (i, f) in free.iter().enumerate() {
        let (a, b) = (part(&dirty, i), part(&clean, i));
        let mut pos = 0usize;
        for &(o, l) in f {
            let (o, l) = (o as usize, l as usize);
            assert!(
                a[pos..o] == b[pos..o],
                "partition {}: used bytes changed",
                i + 1
            );
            assert!(
                b[o..o + l].iter().all(|&x| x == 0),
                "partition {}: free space",
                i + 1
            );
            pos = o + l;
        }
        assert!(
            a[pos..] == b[pos..],
            "partition {}: used bytes changed",
            i + 1
        );
        let img = t.path().join(format!("part{i}.img"));
        std::fs::write(&img, b).unwrap();
        tk::assert_xfs_repair_clean(&img);
    }
    // The convert output is the sparsified disk, and no bigger than qemu-img's compression
    // of it.
    run_ok(tool("qemu-img").args(["check"]).arg(&conv));
    run_ok(
        tool("qemu-img")
            .args(["compare", "-f", "qcow2", "-F", "raw"])
            .arg(&conv)
            .arg(&disk),
    );
    let reference = t.path().join("ref.qcow2");
    run_ok(
        tool("qemu-img")
            .args([
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                "compression_type=zstd",
                "-f",
                "raw",
            ])
            .arg(&disk)
            .arg(&reference),
    );
    let (ours, theirs) = (
        std::fs::metadata(&conv).unwrap().len(),
        std::fs::metadata(&reference).unwrap().len(),
    );
    // qemu-img ends its file inside the last cluster, our writer pads it to a whole cluster
    // (64 KiB): on a disk this small that one cluster is most of the difference.
    assert!(
        ours * 100 <= theirs * 102 + 64 * 1024 * 100,
        "convert --sparsify: {ours} bytes, qemu-img {theirs}"
    );
    // Sparsifying again finds nothing left to zero.
    let again = ok(&["sparsify", s(&disk)]);
    assert!(std::fs::read(&disk).unwrap() == clean, "{again}");
}

/// Byte offset of what `xfs_db` commands select (its `daddr` is in 512-byte sectors).
fn daddr(img: &Path, cmds: &[&str]) -> u64 {
    let mut all: Vec<&str> = cmds.to_vec();
    all.push("daddr");
    let out = tk::xfs_db(img, &all);
    let n: u64 = out
        .split_whitespace()
        .last()
        .and_then(|w| w.trim_end_matches('.').parse().ok())
        .unwrap_or_else(|| panic!("xfs_db {cmds:?}: {out}"));
    n * 512
}

#[test]
fn damaged_xfs_metadata_is_a_one_line_error_and_no_write() {
    require_tools!("mkfs.xfs", "xfs_db");
    let t = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs("v5", t.path()) else {
        return;
    };
    let img = &fx.image;
    let sb = tk::xfs_sb(img);
    let bs = sb.blocksize;
    let ag1 = sb.agblocks * bs;
    let fields = tk::xfs_db_fields(&tk::xfs_db(img, &["agf 0", "print bnoroot"]));
    let bnoroot: u64 = fields["bnoroot"].parse().unwrap();
    // (what, byte offset to flip, a command that must meet it)
    let cases: Vec<(&str, u64, Vec<&str>)> = vec![
        ("superblock", 104, vec!["ls", "/"]),
        ("AGF of AG 1", ag1 + sb.sectsize + 52, vec!["ls", "/"]),
        (
            "AGF of AG 1, sparsify",
            ag1 + sb.sectsize + 52,
            vec!["sparsify"],
        ),
        ("by-block btree root", bnoroot * bs + 60, vec!["sparsify"]),
        (
            "an inode",
            daddr(img, &["path /dirs/sf"]) + 8,
            vec!["ls", "/dirs/sf"],
        ),
        (
            "a bmbt block of a btree-form directory",
            daddr(img, &["path /huge", "addr u3.bmbt.ptrs[1]"]) + 100,
            vec!["ls", "/huge"],
        ),
        (
            "a directory block",
            daddr(img, &["path /dirs/block", "dblock 0"]) + 200,
            vec!["ls", "/dirs/block"],
        ),
    ];
    let pristine = std::fs::read(img).unwrap();
    for (what, off, cmd) in cases {
        let mut bytes = pristine.clone();
        bytes[off as usize] ^= 0x5a;
        std::fs::write(img, &bytes).unwrap();
        let args: Vec<&str> = match cmd[0] {
            "sparsify" => vec!["sparsify", s(img)],
            verb => vec![verb, s(img), cmd[1]],
        };
        let o = imgscrub(&args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let outs = String::from_utf8_lossy(&o.stdout).into_owned();
        if args[0] == "sparsify" {
            // A filesystem whose free-space map is doubted is skipped, with the reason.
            assert!(o.status.success(), "{what}: {err}");
            assert!(
                outs.contains("skipped") || err.contains("XFS"),
                "{what}: {outs}{err}"
            );
        } else {
            assert!(!o.status.success(), "{what}: {args:?} succeeded: {outs}");
            assert_eq!(
                o.status.code(),
                Some(4),
                "{what}: exit status of a damaged input: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
            assert!(err.contains("XFS"), "{what}: {err}");
        }
        assert!(
            std::fs::read(img).unwrap() == bytes,
            "{what}: the image was written"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}
