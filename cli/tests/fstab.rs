#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The guest tree follows `/etc/fstab`: a GPT disk with the ESP (FAT, by LABEL=) at
//! /boot/efi, /boot on its own ext4 partition (by /dev/vda2) and the root. The file verbs and
//! `prepare` reach files on every partition; each filesystem stays clean.

use imgscrub_testkit::{assert_e2fsck_clean, debugfs, make_ext4, require_tools, run, run_ok, tool};
use std::path::Path;

mod common;
use common::{imgscrub, ok};

const MIB: u64 = 1 << 20;
// Partition 1: ESP at 1 MiB (16 MiB), 2: /boot at 17 MiB (24 MiB), 3: root at 41 MiB (48 MiB).
const PARTS: [(u64, u64); 3] = [(MIB, 16 * MIB), (17 * MIB, 24 * MIB), (41 * MIB, 48 * MIB)];

fn extract(disk: &Path, part: usize, out: &Path) {
    let (start, size) = PARTS[part];
    let data = std::fs::read(disk).unwrap();
    std::fs::write(out, &data[start as usize..(start + size) as usize]).unwrap();
}

fn place(disk: &Path, part: usize, fs: &Path) {
    let (start, _) = PARTS[part];
    run_ok(
        tool("dd")
            .arg(format!("if={}", fs.display()))
            .arg(format!("of={}", disk.display()))
            .args([
                "bs=1M",
                &format!("seek={}", start / MIB),
                "conv=notrunc",
                "status=none",
            ]),
    );
}

#[test]
fn fstab_mounts_are_followed() {
    require_tools!(
        "sgdisk",
        "mkfs.vfat",
        "mcopy",
        "mtype",
        "fsck.vfat",
        "mke2fs",
        "e2fsck",
        "debugfs"
    );
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // Root tree.
    let root = d.join("root");
    for p in ["etc/ssh", "boot", "var/log"] {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    std::fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    std::fs::write(root.join("etc/debian_version"), "12.5\n").unwrap();
    std::fs::write(
        root.join("etc/fstab"),
        "# <fs> <mount> <type> <opts> <dump> <pass>\n\
         UUID=5c3a2b1e-0d0f-4c1a-9e7b-6a5d4c3b2a10 / ext4 errors=remount-ro 0 1\n\
         /dev/vda2 /boot ext4 defaults 0 2\n\
         LABEL=ESP /boot/efi vfat umask=0077 0 1\n\
         tmpfs /tmp tmpfs defaults 0 0\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/ssh/ssh_host_rsa_key"), "KEY").unwrap();
    // /boot tree, with the ESP's mount point inside it.
    let boot = d.join("boot");
    std::fs::create_dir_all(boot.join("grub")).unwrap();
    std::fs::create_dir_all(boot.join("efi")).unwrap();
    std::fs::write(boot.join("grub/grub.cfg"), "set timeout=1\n").unwrap();
    // Filesystems.
    let (root_img, boot_img, esp_img) =
        (d.join("root.ext4"), d.join("boot.ext4"), d.join("esp.fat"));
    if !make_ext4("default", &root, &root_img, 48) || !make_ext4("ext2", &boot, &boot_img, 24) {
        return;
    }
    run_ok(tool("truncate").arg("-s16M").arg(&esp_img));
    run_ok(tool("mkfs.vfat").args(["-n", "ESP"]).arg(&esp_img));
    let seed = d.join("seed");
    std::fs::write(&seed, [7u8; 32]).unwrap();
    let esp = esp_img.to_str().unwrap();
    run_ok(tool("mmd").args(["-i", esp, "::/loader"]));
    run_ok(
        tool("mcopy")
            .args(["-i", esp])
            .arg(&seed)
            .arg("::/loader/random-seed"),
    );
    // The disk.
    let disk = d.join("disk.img");
    run_ok(tool("truncate").arg("-s90M").arg(&disk));
    run_ok(
        tool("sgdisk")
            .args([
                "-n1:2048:+16M",
                "-t1:ef00",
                "-n2:0:+24M",
                "-t2:8300",
                "-n3:0:+48M",
                "-t3:8300",
            ])
            .arg(&disk),
    );
    place(&disk, 0, &esp_img);
    place(&disk, 1, &boot_img);
    place(&disk, 2, &root_img);
    let s = disk.to_str().unwrap();

    // Reads cross both mount points.
    assert_eq!(ok(&["cat", s, "/boot/grub/grub.cfg"]), "set timeout=1\n");
    assert!(ok(&["ls", s, "/boot"]).contains("efi"));
    assert_eq!(ok(&["ls", s, "/boot/efi/loader"]), "random-seed\n");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", s])).unwrap();
    assert_eq!(inspect["os"]["root_partition"], 3, "{inspect}");

    // Removing a mount point is refused, and the refused command writes nothing.
    let before = std::fs::read(&disk).unwrap();
    let o = imgscrub(&["rm", "-r", s, "/boot"]);
    assert!(!o.status.success(), "rm -r /boot must fail (mount point)");
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        before,
        "refused rm wrote to the image"
    );

    // prepare reaches the ESP (loader/random-seed) and the root, leaves /boot's files.
    let report = ok(&["prepare", s, "--profile", "linux"]);
    assert!(report.contains("/boot/efi/loader/random-seed"), "{report}");
    let (r, b, e) = (d.join("r.ext4"), d.join("b.ext4"), d.join("e.fat"));
    extract(&disk, 2, &r);
    extract(&disk, 1, &b);
    extract(&disk, 0, &e);
    assert_e2fsck_clean(&r);
    assert_e2fsck_clean(&b);
    let fsck = run(tool("fsck.vfat").arg("-n").arg(&e));
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let listing = run_ok(tool("mdir").args(["-i", e.to_str().unwrap(), "-b", "::/loader"]));
    assert!(!listing.contains("random-seed"), "{listing}");
    assert!(!debugfs(&r, "ls /etc/ssh").contains("ssh_host_rsa_key"));
    assert_eq!(debugfs(&b, "cat /grub/grub.cfg"), "set timeout=1\n");
}
