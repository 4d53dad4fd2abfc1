#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Orphans: a filesystem with pending orphan inodes (the s_last_orphan list, or an orphan
//! file flagged orphan_present) opens read-only, but a writable open refuses with a clear
//! `ReadOnly` error and leaves the image byte-identical. Also the journal replay through
//! `Ext4Fs::open`.

use imgscrub_disk::RawFile;
use imgscrub_ext4::Ext4Error;
use imgscrub_ext4::fs::{Ext4Fs, OpenOptions};
use imgscrub_ext4::orphan::{self, PendingOrphans};
use imgscrub_testkit::{debugfs, make_ext4, require_tools, run, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

fn image(variant: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("victim"), vec![3u8; 50_000]).unwrap();
    std::fs::write(src.join("keep"), b"keep\n").unwrap();
    let img = dir.path().join("fs.img");
    if !make_ext4(variant, &src, &img, 32) {
        return None;
    }
    Some((dir, img))
}

fn debugfs_w(image: &Path, cmds: &str) {
    let f = image.with_extension("cmds");
    std::fs::write(&f, cmds).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&f)
            .arg(image),
    );
}

fn sb(image: &Path) -> Vec<u8> {
    std::fs::read(image).unwrap()[1024..2048].to_vec()
}

fn assert_refused_untouched(image: &Path) {
    let before = std::fs::read(image).unwrap();
    let err = Ext4Fs::open(
        RawFile::open_rw(image).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap_err();
    assert!(matches!(err, Ext4Error::ReadOnly(_)), "{err:?}");
    eprintln!("refused: {err}");
    assert!(err.to_string().contains("orphan"), "{err}");
    assert!(std::fs::read(image).unwrap() == before, "image modified");
    // Reading is fine.
    let fs = Ext4Fs::open(
        RawFile::open(image).unwrap(),
        OpenOptions { writable: false },
    )
    .unwrap();
    let ino = fs.lookup_path(b"/keep").unwrap();
    assert_eq!(fs.read_to_vec(ino).unwrap(), b"keep\n");
}

/// An unlinked-while-open file: links 0, on the s_last_orphan list.
#[test]
fn orphan_list_refused_for_writing() {
    require_tools!("mke2fs", "debugfs");
    let Some((_d, img)) = image("default") else {
        return;
    };
    let ino: u32 = debugfs(&img, "stat /victim")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    debugfs_w(
        &img,
        &format!("unlink /victim\nsif <{ino}> links_count 0\nssv last_orphan {ino}\n"),
    );
    assert_eq!(
        orphan::pending(&sb(&img)),
        PendingOrphans::List { head: ino }
    );
    assert_refused_untouched(&img);
}

/// orphan_file with the orphan_present flag.
#[test]
fn orphan_file_present_refused_for_writing() {
    require_tools!("mke2fs", "debugfs");
    let Some((_d, img)) = image("orphanfile") else {
        return;
    };
    assert_eq!(orphan::pending(&sb(&img)), PendingOrphans::None);
    debugfs_w(&img, "feature orphan_present\n");
    assert!(matches!(orphan::pending(&sb(&img)), PendingOrphans::OrphanFile { inum } if inum != 0));
    assert_refused_untouched(&img);
}

/// A clean orphan file (mkfs -O orphan_file) is writable.
#[test]
fn orphan_file_empty_is_writable() {
    require_tools!("mke2fs", "debugfs");
    let Some((_d, img)) = image("orphanfile") else {
        return;
    };
    assert!(
        Ext4Fs::open(
            RawFile::open_rw(&img).unwrap(),
            OpenOptions { writable: true }
        )
        .is_ok()
    );
}

/// `Ext4Fs::open` replays a dirty journal when writable (same bytes as e2fsck), refuses to
/// read a dirty journal read-only without touching the image.
#[test]
fn journal_replayed_by_ext4fs_open() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some((dir, img)) = image("default") else {
        return;
    };
    let blk: u64 = debugfs(&img, "bmap /keep 0").trim().parse().unwrap();
    let mut data = vec![0u8; 4096];
    data[..8].copy_from_slice(b"changed\n");
    let host = dir.path().join("data");
    std::fs::write(&host, &data).unwrap();
    debugfs_w(
        &img,
        &format!("jo -c\njw -b {blk} {}\njc\n", host.display()),
    );
    let before = std::fs::read(&img).unwrap();
    let err = Ext4Fs::open(
        RawFile::open(&img).unwrap(),
        OpenOptions { writable: false },
    )
    .unwrap_err();
    assert!(matches!(err, Ext4Error::NeedsRecovery(_)), "{err:?}");
    assert!(std::fs::read(&img).unwrap() == before);

    let b = dir.path().join("b.img");
    std::fs::copy(&img, &b).unwrap();
    let o = run(Command::new("e2fsck").arg("-fy").arg(&b));
    assert!(o.status.code().is_some_and(|c| c <= 1));

    let fs = Ext4Fs::open(
        RawFile::open_rw(&img).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap();
    let ino = fs.lookup_path(b"/keep").unwrap();
    // i_size is still 5: the file reads the first 5 bytes of the replayed block.
    assert_eq!(fs.read_to_vec(ino).unwrap(), b"chang");
    drop(fs);
    imgscrub_testkit::assert_e2fsck_clean(&img);
    let a = std::fs::read(&img).unwrap();
    let bb = std::fs::read(&b).unwrap();
    let off = blk as usize * 4096;
    assert!(a[off..off + 4096] == bb[off..off + 4096]);
    assert!(
        !String::from_utf8_lossy(&run(Command::new("dumpe2fs").arg("-h").arg(&img)).stdout)
            .contains("needs_recovery")
    );
}
