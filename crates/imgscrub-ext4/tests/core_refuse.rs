#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Refusals and damage detection: a flipped byte in the superblock, a group descriptor or an
//! inode is reported (`Checksum`/`Corrupt`) before anything is written; unknown features and
//! states we do not maintain are refused by name; the image stays byte-identical.

mod core_common;

use core_common::*;
use imgscrub_disk::RawFile;
use imgscrub_ext4::{Ext4Error, Ext4Fs, NewAttr, OpenOptions};
use std::path::{Path, PathBuf};

fn small_image(variant: &str, dir: &Path) -> Option<PathBuf> {
    let src = dir.join("src");
    if !src.exists() {
        build_tree(&src);
    }
    image(variant, &src, dir, 16)
}

fn open(img: &Path, writable: bool) -> imgscrub_ext4::Result<Ext4Fs<RawFile>> {
    let dev = if writable {
        RawFile::open_rw(img)
    } else {
        RawFile::open(img)
    }
    .unwrap();
    Ext4Fs::open(dev, OpenOptions { writable })
}

fn flip(img: &Path, offset: u64) {
    let mut b = std::fs::read(img).unwrap();
    b[offset as usize] ^= 0x5a;
    std::fs::write(img, b).unwrap();
}

/// Edit the primary superblock with `f`, keeping its checksum valid (metadata_csum).
fn edit_sb(img: &Path, f: impl FnOnce(&mut [u8])) {
    let mut b = std::fs::read(img).unwrap();
    let sb = &mut b[1024..2048];
    f(sb);
    let c = imgscrub_ext4::csum::crc32c_raw(!0, &sb[..1020]);
    sb[1020..].copy_from_slice(&c.to_le_bytes());
    std::fs::write(img, b).unwrap();
}

fn imap(img: &Path, ino: u32) -> u64 {
    // "Inode 12 is part of block group 0\n\tlocated at block 1234, offset 0x0b00"
    let out = imgscrub_testkit::debugfs(img, &format!("imap <{ino}>"));
    let line = out
        .lines()
        .find(|l| l.contains("located at block"))
        .unwrap();
    let block: u64 = line
        .split("block ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let off = u64::from_str_radix(line.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    let bs: u64 = imgscrub_testkit::debugfs(img, "stats")
        .lines()
        .find(|l| l.starts_with("Block size:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    block * bs + off
}

#[test]
fn superblock_checksum_mismatch_is_reported() {
    imgscrub_testkit::require_tools!("mke2fs");
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = small_image("default", tmp.path()) else {
        return;
    };
    flip(&img, 1024 + 0x78); // s_volume_name
    let before = std::fs::read(&img).unwrap();
    for w in [false, true] {
        match open(&img, w) {
            Err(Ext4Error::Checksum { structure, .. }) => assert_eq!(structure, "superblock"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn group_descriptor_damage_is_reported() {
    imgscrub_testkit::require_tools!("mke2fs");
    for (variant, gdt) in [("default", 4096u64), ("uninit_bg", 4096), ("b1024", 2048)] {
        let tmp = tempfile::tempdir().unwrap();
        let img = if variant == "uninit_bg" {
            // crc16 descriptor checksums (gdt_csum) without metadata_csum.
            let src = tmp.path().join("src");
            build_tree(&src);
            let opts = ["-t", "ext4", "-b", "4096", "-O", "^metadata_csum,uninit_bg"];
            image_with(&opts, &src, &tmp.path().join("u.img"), 16)
        } else {
            small_image(variant, tmp.path())
        };
        let Some(img) = img else { return };
        flip(&img, gdt + 0xE); // bg_free_inodes_count of group 0
        let before = std::fs::read(&img).unwrap();
        match open(&img, true) {
            Err(Ext4Error::Checksum { structure, .. }) => {
                assert_eq!(structure, "group descriptor 0", "{variant}")
            }
            other => panic!("{variant}: {other:?}"),
        }
        assert_eq!(std::fs::read(&img).unwrap(), before, "{variant}");
    }
}

#[test]
fn inode_damage_is_reported_before_any_write() {
    imgscrub_testkit::require_tools!("mke2fs", "debugfs");
    for variant in ["default", "i128", "csumseed"] {
        let tmp = tempfile::tempdir().unwrap();
        let Some(img) = small_image(variant, tmp.path()) else {
            return;
        };
        let ino = open(&img, false)
            .unwrap()
            .lookup_path(b"/etc/hostname")
            .unwrap();
        flip(&img, imap(&img, ino) + 0x10); // i_mtime
        let before = std::fs::read(&img).unwrap();
        {
            let mut fs = open(&img, true).unwrap();
            let expect = |r: imgscrub_ext4::Result<()>| match r {
                Err(Ext4Error::Checksum { structure, .. }) => {
                    assert_eq!(structure, format!("inode {ino}"), "{variant}")
                }
                other => panic!("{variant}: {other:?}"),
            };
            expect(fs.stat(ino).map(|_| ()));
            let etc = fs.lookup_path(b"/etc").unwrap();
            expect(fs.unlink(etc, b"hostname"));
            expect(fs.write(ino, 0, b"x"));
            expect(fs.set_xattr(ino, "user.a", b"b"));
            fs.flush().unwrap();
        }
        assert_eq!(std::fs::read(&img).unwrap(), before, "{variant}");
        // Damage to the root inode stops the open itself.
        flip(&img, imap(&img, 2) + 0x10);
        assert!(
            matches!(open(&img, false), Err(Ext4Error::Checksum { .. })),
            "{variant}"
        );
    }
}

#[test]
fn features_and_states_we_do_not_maintain_are_refused() {
    imgscrub_testkit::require_tools!("mke2fs");
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = small_image("default", tmp.path()) else {
        return;
    };
    let pristine = std::fs::read(&img).unwrap();

    // An unknown incompat feature: refused by name even for reading.
    edit_sb(&img, |sb| sb[0x62] |= 0x10); // incompat bit 0x100000
    match open(&img, false) {
        Err(Ext4Error::UnsupportedFeature { name, kind, bit }) => {
            assert_eq!((kind, bit), ("incompat", 0x10_0000));
            assert!(name.contains("0x100000"), "{name}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&img, &pristine).unwrap();
    edit_sb(&img, |sb| sb[0x61] |= 0x10); // dirdata (0x1000)
    assert!(matches!(open(&img, false),
        Err(Ext4Error::UnsupportedFeature { ref name, .. }) if name == "dirdata"));

    // Unknown ro_compat bit, quota, errors state: readable, not writable. (Pending orphans
    // are processed by a writable open: tests/journal_orphans.rs.)
    for (what, edit) in [
        (
            "ro_compat",
            Box::new(|sb: &mut [u8]| sb[0x67] |= 0x40) as Box<dyn Fn(&mut [u8])>,
        ),
        ("quota", Box::new(|sb: &mut [u8]| sb[0x65] |= 0x01)),
        ("errors", Box::new(|sb: &mut [u8]| sb[0x3A] |= 0x02)),
    ] {
        std::fs::write(&img, &pristine).unwrap();
        edit_sb(&img, |sb| edit(sb));
        let before = std::fs::read(&img).unwrap();
        assert!(open(&img, false).is_ok(), "{what}");
        match open(&img, true) {
            Err(Ext4Error::ReadOnly(why)) => assert!(why.contains(what), "{what}: {why}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(std::fs::read(&img).unwrap(), before, "{what}");
    }

    // A read-only open refuses edits.
    std::fs::write(&img, &pristine).unwrap();
    let mut fs = open(&img, false).unwrap();
    let root = fs.root();
    assert!(matches!(
        fs.create(root, b"x", &NewAttr::default()),
        Err(Ext4Error::ReadOnly(_))
    ));
    assert!(matches!(
        fs.unlink(root, b"one"),
        Err(Ext4Error::ReadOnly(_))
    ));
    fs.flush().unwrap();
    drop(fs);
    assert_eq!(std::fs::read(&img).unwrap(), pristine);

    // A device shorter than the filesystem.
    let short = tmp.path().join("short.img");
    std::fs::write(&short, &pristine[..pristine.len() / 2]).unwrap();
    assert!(matches!(
        open(&short, false),
        Err(Ext4Error::Corrupt { .. })
    ));
}

#[test]
fn mmp_casefold_encrypt_are_read_only() {
    imgscrub_testkit::require_tools!("mke2fs");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    for (feature, word) in [
        ("mmp", "mmp"),
        ("casefold", "casefold"),
        ("encrypt", "encrypt"),
    ] {
        let out = tmp.path().join(format!("{feature}.img"));
        let opts = ["-t", "ext4", "-b", "4096", "-O", feature];
        let Some(img) = image_with(&opts, &src, &out, 16) else {
            return;
        };
        let before = std::fs::read(&img).unwrap();
        match open(&img, true) {
            Err(Ext4Error::ReadOnly(why)) => assert!(why.contains(word), "{feature}: {why}"),
            other => panic!("{feature}: {other:?}"),
        }
        assert_eq!(std::fs::read(&img).unwrap(), before, "{feature}");
        let fs = open(&img, false).unwrap();
        assert_eq!(
            fs.read_to_vec(fs.lookup_path(b"/one").unwrap()).unwrap(),
            b"1"
        );
    }
}

#[test]
fn remove_tree_refuses_a_damaged_tree_before_changing_anything() {
    imgscrub_testkit::require_tools!("mke2fs", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = small_image("default", tmp.path()) else {
        return;
    };
    // A second entry for /etc inside /var: following it would free /etc too.
    let cmds = tmp.path().join("cmds");
    std::fs::write(&cmds, "ln /etc /var/log/deep/etc-again\n").unwrap();
    imgscrub_testkit::run_ok(
        std::process::Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(&img),
    );
    let before = std::fs::read(&img).unwrap();
    let mut fs = open(&img, true).unwrap();
    let root = fs.root();
    assert!(matches!(
        fs.remove_tree(root, b"var"),
        Err(Ext4Error::Corrupt { .. })
    ));
    fs.flush().unwrap();
    drop(fs);
    assert_eq!(std::fs::read(&img).unwrap(), before);
}
