#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The whole-tree xfs_db oracles of the write-side tests (`xfs_walk`, `xfs_stat_inos`,
//! `xfs_contents`, `xfs_attrs_full`, `xfs_dir_form`, `xfs_counters`) read back what the
//! kernel wrote: a loop mount (root) of a 1 KiB-block XFS makes a B+tree (bmbt) file, a
//! remote symlink over one block, remote and leaf attributes, a POSIX ACL, and a node-form
//! directory with a B+tree data fork; after the unmount every oracle must report exactly
//! that. Skipped (with a message) where mounting is impossible, outside CI.

use imgscrub_testkit::{self as tk, XfsDirForm};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn sh(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn oracles_read_back_what_the_kernel_wrote() {
    tk::require_tools!("mkfs.xfs", "xfs_db", "xfs_repair", "setfattr");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/seed"), b"seed").unwrap();
    let Some(fx) = tk::make_xfs_with(
        "b1k",
        &t.path().join("img"),
        &tk::XfsOptions {
            dirty: false,
            size_mb: Some(64),
            src: Some(src),
        },
    ) else {
        return;
    };
    let img = &fx.image;
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        assert!(!tk::in_ci(), "this test needs root (mount -o loop) in CI");
        eprintln!("skipping: mounting needs root");
        return;
    }
    sh(Command::new("mount")
        .args(["-o", "loop,nouuid"])
        .arg(img)
        .arg(&mnt));
    // What the kernel writes, and what the oracles must find.
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let result = std::panic::catch_unwind(|| {
        let mut frag = Vec::new();
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(mnt.join("frag")).unwrap();
            for k in 0..300u64 {
                let off = k * 2048 + (k % 7);
                let data = vec![(k % 251) as u8 + 1; 100 + (k % 400) as usize];
                f.seek(SeekFrom::Start(off)).unwrap();
                f.write_all(&data).unwrap();
                let end = off as usize + data.len();
                if frag.len() < end {
                    frag.resize(end, 0);
                }
                frag[off as usize..end].copy_from_slice(&data);
            }
            f.sync_all().unwrap();
        }
        let target: String = "abcdefghij/".repeat(93); // 1023 bytes: two 1 KiB blocks
        std::os::unix::fs::symlink(&target, mnt.join("longlink")).unwrap();
        std::fs::write(mnt.join("attrs"), b"x").unwrap();
        let big: String = "v".repeat(3000);
        sh(Command::new("setfattr")
            .args(["-n", "user.big", "-v", &big])
            .arg(mnt.join("attrs")));
        for i in 0..30 {
            sh(Command::new("setfattr")
                .args(["-n", &format!("user.small{i}"), "-v", &format!("value{i}")])
                .arg(mnt.join("attrs")));
        }
        sh(Command::new("setfattr")
            .args(["-n", "security.selinux", "-v", "system_u:object_r:etc_t:s0"])
            .arg(mnt.join("attrs")));
        // A directory with scattered blocks: entries interleaved with file data, each data
        // file synced at once (no delayed allocation), so the next directory block cannot
        // follow the previous one.
        for i in 0..1500 {
            use std::io::Write;
            let name = format!("{i:05}-{}", "n".repeat(120));
            let mut f = std::fs::File::create(mnt.join("d").join(&name)).unwrap();
            if i % 4 == 0 {
                f.write_all(&[b'z'; 1024]).unwrap();
                f.sync_all().unwrap();
            }
        }
        (frag, target)
    });
    let synced = Command::new("umount").arg(&mnt).status().unwrap();
    let (frag, target) = result.unwrap();
    assert!(synced.success());
    files.insert("/frag".into(), frag);
    tk::assert_xfs_repair_clean(img);

    let walk = tk::xfs_walk(img);
    let ino = |p: &str| walk.iter().find(|e| e.path == p.as_bytes()).unwrap().ino;
    assert_eq!(
        walk.iter().filter(|e| e.path.starts_with(b"/d/")).count(),
        1501
    );
    let (frag_ino, link_ino, attrs_ino) = (ino("/frag"), ino("/longlink"), ino("/attrs"));
    let stats = tk::xfs_stat_inos(img, &[frag_ino, link_ino, attrs_ino]);
    assert_eq!(stats[&frag_ino].format, 3, "/frag is not in B+tree form");
    assert_eq!(stats[&link_ino].format, 2, "/longlink is not remote");
    let c = tk::xfs_contents(img, &[frag_ino, link_ino]);
    assert!(
        c[&frag_ino] == files["/frag"],
        "xfs_contents of the bmbt file"
    );
    assert_eq!(
        c[&link_ino],
        target.as_bytes(),
        "xfs_contents of the remote symlink"
    );
    let attrs = tk::xfs_attrs_full(img, &format!("#{attrs_ino}"));
    assert_eq!(attrs.len(), 32, "{attrs:?}");
    let big = attrs.iter().find(|a| a.name == b"big").unwrap();
    assert!(big.value_block.is_some(), "user.big is not remote");
    assert_eq!(big.value.as_deref(), Some(&[b'v'; 3000][..]));
    let se = attrs.iter().find(|a| a.ns == "secure").unwrap();
    assert_eq!(
        se.value.as_deref(),
        Some(&b"system_u:object_r:etc_t:s0"[..])
    );
    assert_eq!(tk::xfs_dir_form(img, "/d"), Some((XfsDirForm::Node, true)));
    // Counters: the superblock agrees with the AGs, freesp with the AGFs.
    let cnt = tk::xfs_counters(img);
    let fd: u64 = cnt.ags.iter().map(|a| a.0 + a.1 + a.2).sum();
    assert_eq!(cnt.sb_fdblocks, fd);
    let free: u64 = tk::xfs_freesp(img).iter().map(|r| r.2).sum();
    assert_eq!(free, cnt.ags.iter().map(|a| a.0 + a.1).sum::<u64>());
    // And the kernel sees the same once more, through xfs_mount_ro.
    if let Some(m) = tk::xfs_mount_ro(img) {
        let md = std::fs::symlink_metadata(m.path().join("frag")).unwrap();
        assert_eq!(md.ino(), frag_ino);
        assert_eq!(
            std::fs::read(m.path().join("frag")).unwrap(),
            files["/frag"]
        );
        assert!(Path::new(&m.path().join("d")).is_dir());
    }
}
