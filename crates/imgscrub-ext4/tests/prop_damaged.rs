#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Damaged metadata: flip bytes in the superblock, a group descriptor, an inode, an extent
//! block, a directory block, an htree node and the journal superblock. `Ext4Fs::open` (always
//! writable here) or the first access must fail with a clear `Corrupt`/`Checksum` error, and
//! the image file must be byte-identical afterwards.

use imgscrub_disk::RawFile;
use imgscrub_ext4::Ext4Error;
use imgscrub_ext4::fs::{Ext4Fs, OpenOptions};
use imgscrub_testkit::{debugfs, make_ext4, require_tools, run, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Img {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bs: u64,
}

fn build(variant: &str) -> Option<Img> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..600 {
        std::fs::write(
            src.join("big")
                .join(format!("entry-{i:04}-padding-padding")),
            b"",
        )
        .unwrap();
    }
    std::fs::create_dir_all(src.join("small")).unwrap();
    std::fs::write(src.join("small/a"), b"aaa").unwrap();
    std::fs::create_dir_all(src.join("frag")).unwrap();
    for i in 0..40 {
        std::fs::write(src.join("frag").join(format!("f{i}")), vec![1u8; 4096]).unwrap();
    }
    let path = dir.path().join("fs.img");
    if !make_ext4(variant, &src, &path, 32) {
        return None;
    }
    let _ = run(Command::new("e2fsck").arg("-fyD").arg(&path));
    // A file with an extent tree of depth 1: write it into the holes of deleted files.
    let mut cmds = String::new();
    for i in (0..40).step_by(2) {
        cmds.push_str(&format!("rm /frag/f{i}\n"));
    }
    let host = dir.path().join("host");
    std::fs::write(&host, vec![7u8; 80 * 1024]).unwrap();
    cmds.push_str(&format!("write {} /frag/tree\n", host.display()));
    let cf = dir.path().join("cmds");
    std::fs::write(&cf, cmds).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cf)
            .arg(&path),
    );
    imgscrub_testkit::assert_e2fsck_clean(&path);
    let bs = dumpe2fs_field(&path, "Block size:").parse().unwrap();
    Some(Img {
        path,
        bs,
        _dir: dir,
    })
}

fn dumpe2fs_field(image: &Path, field: &str) -> String {
    let o = run(Command::new("dumpe2fs").arg("-h").arg(image));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {field} in dumpe2fs -h"))
}

fn flip(image: &Path, off: u64) {
    let mut data = std::fs::read(image).unwrap();
    data[off as usize] ^= 0x5A;
    std::fs::write(image, data).unwrap();
}

fn is_clear(e: &Ext4Error) -> bool {
    matches!(e, Ext4Error::Corrupt { .. } | Ext4Error::Checksum { .. })
}

/// Open writable and run `access`; one of them must fail with Corrupt/Checksum; the image
/// must not change.
fn expect_failure(
    image: &Path,
    what: &str,
    access: impl FnOnce(&Ext4Fs<RawFile>) -> Result<(), Ext4Error>,
) {
    let before = std::fs::read(image).unwrap();
    let res = match Ext4Fs::open(
        RawFile::open_rw(image).unwrap(),
        OpenOptions { writable: true },
    ) {
        Err(e) => Err(e),
        Ok(fs) => {
            let r = access(&fs);
            drop(fs);
            r
        }
    };
    match res {
        Err(e) if is_clear(&e) => eprintln!("{what}: refused as expected: {e}"),
        Err(e) => panic!("{what}: unclear error: {e:?}"),
        Ok(()) => panic!("{what}: damage not detected"),
    }
    assert!(
        std::fs::read(image).unwrap() == before,
        "{what}: the image was modified"
    );
}

/// A block number from `debugfs stat` output for a tag such as "(ETB0):".
fn stat_block(image: &Path, path: &str, tag: &str) -> u64 {
    let out = debugfs(image, &format!("stat {path}"));
    let i = out
        .find(tag)
        .unwrap_or_else(|| panic!("no {tag} in stat {path}:\n{out}"));
    out[i + tag.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn bmap(image: &Path, path: &str, lblk: u64) -> u64 {
    debugfs(image, &format!("bmap {path} {lblk}"))
        .trim()
        .parse()
        .unwrap()
}

fn inode_offset(image: &Path, bs: u64, ino: u64) -> u64 {
    let out = debugfs(image, &format!("imap <{ino}>"));
    // "Inode 2 is part of block group 0\n\tlocated at block 1234, offset 0x0100"
    let blk: u64 = out
        .split("located at block ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let off = out.split("offset 0x").nth(1).unwrap().trim();
    blk * bs + u64::from_str_radix(off, 16).unwrap()
}

const VARIANTS: &[&str] = &["default", "nocsum"];

#[test]
fn damaged_superblock() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    for v in VARIANTS {
        let Some(img) = build(v) else { return };
        // s_log_block_size: an impossible block size, caught with or without checksums.
        flip(&img.path, 1024 + 0x18);
        expect_failure(
            &img.path,
            &format!("{v}: superblock s_log_block_size"),
            |_| Ok(()),
        );
    }
    let Some(img) = build("default") else { return };
    // s_wtime: only the checksum catches it.
    flip(&img.path, 1024 + 0x30);
    expect_failure(&img.path, "default: superblock checksum", |_| Ok(()));
}

#[test]
fn damaged_group_descriptor() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    for v in VARIANTS {
        let Some(img) = build(v) else { return };
        let gdt = if img.bs == 1024 { 2048 } else { img.bs };
        // bg_inode_table_lo of group 0 (checksummed with gdt_csum and metadata_csum).
        flip(&img.path, gdt + 8 + 1);
        expect_failure(&img.path, &format!("{v}: group descriptor 0"), |fs| {
            fs.read_dir(fs.root()).map(|_| ())
        });
    }
}

#[test]
fn damaged_inode() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(img) = build("default") else { return };
    let ino: u64 = debugfs(&img.path, "stat /small/a")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // i_size of /small/a: the inode checksum catches it.
    flip(&img.path, inode_offset(&img.path, img.bs, ino) + 4);
    expect_failure(&img.path, "inode checksum", |fs| {
        let ino = fs.lookup_path(b"/small/a")?;
        fs.stat(ino).map(|_| ())
    });
    // The root inode's mode: open itself fails.
    let Some(img) = build("nocsum") else { return };
    flip(&img.path, inode_offset(&img.path, img.bs, 2) + 1);
    expect_failure(&img.path, "root inode mode", |fs| {
        fs.read_dir(fs.root()).map(|_| ())
    });
}

#[test]
fn damaged_extent_block() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    for v in VARIANTS {
        let Some(img) = build(v) else { return };
        let etb = stat_block(&img.path, "/frag/tree", "(ETB0):");
        // With checksums: a byte of the first extent; without: the header magic.
        let off = if *v == "default" { 12 + 4 } else { 0 };
        flip(&img.path, etb * img.bs + off);
        expect_failure(&img.path, &format!("{v}: extent block"), |fs| {
            let ino = fs.lookup_path(b"/frag/tree")?;
            fs.read_to_vec(ino).map(|_| ())
        });
    }
}

#[test]
fn damaged_directory_block() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    for v in VARIANTS {
        let Some(img) = build(v) else { return };
        let b = bmap(&img.path, "/small", 0);
        // The rec_len of "." (checksum or rec_len validation catches it).
        flip(&img.path, b * img.bs + 5);
        expect_failure(&img.path, &format!("{v}: directory block"), |fs| {
            let d = fs.lookup_path(b"/small")?;
            fs.read_dir(d).map(|_| ())
        });
    }
}

#[test]
fn damaged_htree_node() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    for v in VARIANTS {
        let Some(img) = build(v) else { return };
        assert!(
            debugfs(&img.path, "stat /big").contains("Flags: 0x1000")
                || debugfs(&img.path, "htree /big").contains("Root node")
        );
        let root = bmap(&img.path, "/big", 0);
        // dx_root_info: indirect_levels (offset 0x1E) beyond what is allowed.
        flip(&img.path, root * img.bs + 0x1E);
        expect_failure(&img.path, &format!("{v}: htree root"), |fs| {
            let d = fs.lookup_path(b"/big")?;
            fs.lookup(d, b"entry-0100-padding-padding").map(|_| ())
        });
    }
}

#[test]
fn damaged_journal_superblock() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(img) = build("default") else { return };
    let j = bmap(&img.path, "<8>", 0);
    let cf = img.path.with_extension("cmds");
    std::fs::write(&cf, "feature needs_recovery\n").unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cf)
            .arg(&img.path),
    );
    // s_blocksize of the journal superblock (checksummed with csum v3 journals; the block
    // size check catches it either way).
    flip(&img.path, j * img.bs + 0x0E);
    expect_failure(&img.path, "journal superblock", |_| Ok(()));
}
