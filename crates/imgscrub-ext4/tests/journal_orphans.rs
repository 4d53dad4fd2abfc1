#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Orphans: a filesystem with pending orphan inodes (the s_last_orphan list, or an orphan
//! file flagged orphan_present) opens read-only as it is; a writable open processes them as
//! e2fsck does (same free counts, e2fsck -fn clean afterwards), and refuses a damaged list
//! without writing. Also the journal replay through `Ext4Fs::open`.

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
    std::fs::write(src.join("trunc"), vec![4u8; 200_000]).unwrap();
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

fn assert_refused_untouched(image: &Path, why: &str) {
    let before = std::fs::read(image).unwrap();
    let err = Ext4Fs::open(
        RawFile::open_rw(image).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap_err();
    eprintln!("refused: {err}");
    assert!(err.to_string().contains(why), "{err}");
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

fn ino_of(img: &Path, path: &str) -> u32 {
    debugfs(img, &format!("stat {path}"))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// "Free blocks:" and "Free inodes:" of dumpe2fs -h.
fn free_counts(img: &Path) -> (String, String) {
    let o = run_ok(Command::new("dumpe2fs").arg("-h").arg(img));
    let get = |k: &str| {
        o.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .to_string()
    };
    (get("Free blocks:"), get("Free inodes:"))
}

/// Open writable (which processes the orphans), flush; then the image must be e2fsck-clean,
/// agree with e2fsck -fy's own processing on the free counts, and `check` must hold.
fn assert_processed_like_e2fsck(dir: &Path, img: &Path, check: impl Fn(&Ext4Fs<RawFile>)) {
    let twin = dir.join("twin.img");
    std::fs::copy(img, &twin).unwrap();
    let o = run(Command::new("e2fsck").arg("-fy").arg(&twin));
    assert!(o.status.code().is_some_and(|c| c <= 1), "{o:?}");
    let mut fs = Ext4Fs::open(
        RawFile::open_rw(img).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap();
    let notes = fs.recovery_notes().join("\n");
    assert!(notes.contains("orphan inode(s)"), "{notes}");
    fs.flush().unwrap();
    drop(fs);
    imgscrub_testkit::assert_e2fsck_clean(img);
    assert_eq!(free_counts(img), free_counts(&twin));
    assert_eq!(orphan::pending(&sb(img)), PendingOrphans::None);
    let fs = Ext4Fs::open(RawFile::open(img).unwrap(), OpenOptions { writable: false }).unwrap();
    check(&fs);
}

/// Two orphans on the s_last_orphan list, as an unclean shutdown leaves them: a file unlinked
/// while open (links 0: freed) and a file being truncated (links 1, i_size already small:
/// its blocks past i_size are freed).
#[test]
fn orphan_list_processed_like_e2fsck() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    for variant in ["default", "ext3", "b1024"] {
        let Some((d, img)) = image(variant) else {
            continue;
        };
        let victim = ino_of(&img, "/victim");
        let trunc = ino_of(&img, "/trunc");
        debugfs_w(
            &img,
            &format!(
                "unlink /victim\nsif <{victim}> links_count 0\nsif <{victim}> dtime {trunc}\n\
                 sif /trunc size 1000\nssv last_orphan {victim}\n"
            ),
        );
        assert_eq!(
            orphan::pending(&sb(&img)),
            PendingOrphans::List { head: victim }
        );
        assert_processed_like_e2fsck(d.path(), &img, |fs| {
            let t = fs.lookup_path(b"/trunc").unwrap();
            assert_eq!(fs.read_to_vec(t).unwrap(), vec![4u8; 1000]);
            assert!(fs.lookup_path(b"/victim").is_err());
        });
        assert!(debugfs(&img, &format!("testi <{victim}>")).contains("is not in use"));
    }
}

/// Damaged orphan lists are e2fsck's job: refused before anything is written.
#[test]
fn damaged_orphan_lists_refused() {
    require_tools!("mke2fs", "debugfs");
    // debugfs commands ({v}: the victim's inode, {d}: a directory's) and the expected error.
    let cases = [
        ("ssv last_orphan 5\n", "not an ordinary inode"),
        (
            "unlink /victim\nsif <{v}> links_count 0\nsif <{v}> dtime {v}\nssv last_orphan {v}\n",
            "listed twice",
        ),
        ("ssv last_orphan 40\n", "not marked in use"),
        ("ssv last_orphan {d}\n", "not a regular file"),
    ];
    for (cmds, why) in cases {
        let Some((_d, img)) = image("default") else {
            return;
        };
        debugfs_w(&img, "mkdir /d\n");
        let cmds = cmds
            .replace("{v}", &ino_of(&img, "/victim").to_string())
            .replace("{d}", &ino_of(&img, "/d").to_string());
        debugfs_w(&img, &cmds);
        assert_refused_untouched(&img, why);
    }
}

/// The orphan file (mke2fs -O orphan_file, metadata_csum): an entry naming a file unlinked
/// while open, orphan_present set. We free the inode, empty the block with a correct
/// checksum (e2fsck -fn checks it) and clear orphan_present.
#[test]
fn orphan_file_processed_like_e2fsck() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some((d, img)) = image("orphanfile") else {
        return;
    };
    let victim = ino_of(&img, "/victim");
    let trunc = ino_of(&img, "/trunc");
    debugfs_w(
        &img,
        &format!("unlink /victim\nsif <{victim}> links_count 0\nsif /trunc size 5000\n"),
    );
    // Write both inode numbers into the orphan file's second block, with its checksum.
    let (inum, pblk, seed, bs) = {
        let fs = Ext4Fs::open(
            RawFile::open(&img).unwrap(),
            OpenOptions { writable: false },
        )
        .unwrap();
        let sbk = fs.superblock();
        let inum = sbk.orphan_file_inum();
        let inode = fs.read_inode(inum).unwrap();
        let seed = sbk
            .metadata_csum()
            .then(|| imgscrub_ext4::inode::inode_seed(sbk.csum_seed, inum, inode.generation()));
        let pblk: u64 = debugfs(&img, &format!("bmap <{inum}> 1"))
            .trim()
            .parse()
            .unwrap();
        (inum, pblk, seed, fs.block_size() as usize)
    };
    assert!(inum != 0);
    let mut raw = std::fs::read(&img).unwrap();
    let block = &mut raw[pblk as usize * bs..(pblk as usize + 1) * bs];
    // mke2fs's own (empty) block verifies with the on-disk block number.
    assert!(
        orphan::orphan_file_block_entries(block, pblk, seed)
            .unwrap()
            .is_empty()
    );
    block[4..8].copy_from_slice(&victim.to_le_bytes());
    block[12..16].copy_from_slice(&trunc.to_le_bytes());
    orphan::finish_block(block, pblk, seed);
    std::fs::write(&img, &raw).unwrap();
    debugfs_w(&img, "feature orphan_present\n");
    assert!(
        matches!(orphan::pending(&sb(&img)), PendingOrphans::OrphanFile { inum: i } if i == inum)
    );
    // e2fsck agrees that the block is well-formed (no checksum complaint).
    let twin = d.path().join("probe.img");
    std::fs::copy(&img, &twin).unwrap();
    let o = run(Command::new("e2fsck").arg("-fn").arg(&twin));
    let text = String::from_utf8_lossy(&o.stdout).to_lowercase();
    assert!(!text.contains("checksum"), "{text}");
    assert_processed_like_e2fsck(d.path(), &img, |fs| {
        let t = fs.lookup_path(b"/trunc").unwrap();
        assert_eq!(fs.read_to_vec(t).unwrap(), vec![4u8; 5000]);
    });
    assert!(debugfs(&img, &format!("testi <{victim}>")).contains("is not in use"));
    let o = run_ok(Command::new("dumpe2fs").arg("-h").arg(&img));
    assert!(!o.contains("orphan_present"), "{o}");
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
    assert!(
        fs.recovery_notes()[0].contains("replayed the journal"),
        "{:?}",
        fs.recovery_notes()
    );
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
