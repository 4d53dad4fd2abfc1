#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every edit of `Ext4Fs` on every mkfs variant, each followed by flush + `e2fsck -fn` and a
//! read-back through debugfs, our reader and ext4-view.

mod core_common;

use core_common::*;
use imgscrub_ext4::{Ext4Error, FileType, NewAttr, SetAttr, Timestamp};
use std::path::Path;

fn attr(perm: u16) -> NewAttr {
    NewAttr {
        perm,
        uid: 1000,
        gid: 100,
        time: Some(Timestamp::new(1_700_000_123, 456_000_000)),
    }
}

/// flush, close, e2fsck; returns nothing (panics with e2fsck's output).
fn checkpoint<D: imgscrub_disk::BlockDev>(
    fs: &mut imgscrub_ext4::Ext4Fs<D>,
    img: &Path,
    what: &str,
) {
    fs.flush().unwrap_or_else(|e| panic!("{what}: flush: {e}"));
    strict_fsck(img, what);
}

#[test]
fn edits_stay_e2fsck_clean_on_every_variant() {
    imgscrub_testkit::require_tools!("mke2fs", "e2fsck", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    for variant in imgscrub_testkit::ext4_variants() {
        let Some(img) = image(&variant, &src, tmp.path(), 32) else {
            return;
        };
        edit_sequence(&variant, &img);
    }
}

fn edit_sequence(variant: &str, img: &Path) {
    let v = variant;
    let mut fs = open_rw(img);
    let root = fs.root();

    // create + write (small, multi-block, sparse), mkdir, symlinks, nodes.
    let etc = fs.lookup_path(b"/etc").unwrap();
    let f = fs.create(etc, b"machine-id", &attr(0o444)).unwrap();
    fs.write(f, 0, b"0123456789abcdef0123456789abcdef\n")
        .unwrap();
    let big = fs.create(root, b"bigfile", &attr(0o644)).unwrap();
    let data = pattern(300_000, 5);
    fs.write(big, 0, &data).unwrap();
    let sparse = fs.create(root, b"sparse", &attr(0o600)).unwrap();
    fs.write(sparse, 5 << 20, b"tail").unwrap();
    fs.write(sparse, 10, b"head").unwrap();
    let d = fs.mkdir(root, b"newdir", &attr(0o755)).unwrap();
    let dd = fs.mkdir(d, b"sub", &attr(0o700)).unwrap();
    fs.symlink(d, b"fast", b"../etc/hostname", &attr(0))
        .unwrap();
    let long = vec![b'x'; 200];
    fs.symlink(d, b"slow", &long, &attr(0)).unwrap();
    fs.mknod(dd, b"fifo", FileType::Fifo, (0, 0), &attr(0o644))
        .unwrap();
    fs.mknod(dd, b"null", FileType::CharDevice, (1, 3), &attr(0o666))
        .unwrap();
    fs.mknod(
        dd,
        b"bigdev",
        FileType::BlockDevice,
        (259, 70000),
        &attr(0o660),
    )
    .unwrap();
    fs.mknod(dd, b"sock", FileType::Socket, (0, 0), &attr(0o755))
        .unwrap();
    assert!(matches!(
        fs.create(root, b"bigfile", &attr(0o644)),
        Err(Ext4Error::Exists(_))
    ));
    assert!(matches!(
        fs.create(root, b"a/b", &attr(0o644)),
        Err(Ext4Error::InvalidArgument(_))
    ));
    checkpoint(&mut fs, img, &format!("{v}: create"));

    assert_eq!(fs.read_to_vec(big).unwrap(), data, "{v}");
    let mut want_sparse = vec![0u8; (5 << 20) + 4];
    want_sparse[10..14].copy_from_slice(b"head");
    want_sparse[5 << 20..].copy_from_slice(b"tail");
    assert_eq!(fs.read_to_vec(sparse).unwrap(), want_sparse, "{v}");
    assert!(
        fs.stat(sparse).unwrap().blocks_512 <= 8 * u64::from(fs.block_size() / 512),
        "{v}: sparse file not sparse"
    );
    assert_eq!(
        fs.readlink(fs.lookup(d, b"slow").unwrap().unwrap())
            .unwrap(),
        long
    );
    assert_eq!(fs.stat(d).unwrap().nlink, 3);
    let nul = fs.lookup(dd, b"bigdev").unwrap().unwrap();
    assert_eq!(fs.stat(nul).unwrap().rdev, Some((259, 70000)));
    let cat = imgscrub_testkit::debugfs(img, "cat /etc/machine-id");
    assert_eq!(cat, "0123456789abcdef0123456789abcdef\n", "{v}");
    let st = fs.stat(f).unwrap();
    assert_eq!((st.perm, st.uid, st.gid), (0o444, 1000, 100));
    assert_eq!(st.atime.secs, 1_700_000_123);

    // overwrite in the middle, append, truncate shrink and grow.
    fs.write(big, 4000, b"MIDDLE").unwrap();
    fs.write(big, 300_000, b"APPEND").unwrap();
    let mut want = data.clone();
    want[4000..4006].copy_from_slice(b"MIDDLE");
    want.extend_from_slice(b"APPEND");
    assert_eq!(fs.read_to_vec(big).unwrap(), want);
    fs.truncate(big, 5000).unwrap();
    fs.truncate(big, 9000).unwrap();
    want.truncate(5000);
    want.resize(9000, 0);
    assert_eq!(fs.read_to_vec(big).unwrap(), want, "{v}");
    checkpoint(&mut fs, img, &format!("{v}: write/truncate"));

    // link, rename (file across dirs, replace a file, directory across dirs), set_attr.
    fs.link(f, d, b"mid-link").unwrap();
    assert_eq!(fs.stat(f).unwrap().nlink, 2);
    fs.rename(etc, b"hostname", d, b"hostname2").unwrap();
    fs.rename(d, b"hostname2", root, b"one").unwrap(); // replaces /one (2 links → 1)
    let one_again = fs.lookup_path(b"/one-again").unwrap();
    assert_eq!(fs.stat(one_again).unwrap().nlink, 1);
    fs.rename(d, b"sub", etc, b"sub-moved").unwrap();
    assert_eq!(fs.stat(d).unwrap().nlink, 2);
    let sub = fs.lookup_path(b"/etc/sub-moved").unwrap();
    assert_eq!(fs.lookup(sub, b"..").unwrap(), Some(etc));
    assert!(fs.rename(root, b"newdir", d, b"loop").is_err());
    fs.set_attr(
        f,
        &SetAttr {
            perm: Some(0o640),
            uid: Some(0),
            gid: Some(0),
            mtime: Some(Timestamp::new(1_600_000_000, 0)),
            ..SetAttr::default()
        },
    )
    .unwrap();
    checkpoint(&mut fs, img, &format!("{v}: link/rename/attr"));
    // (debugfs prints all 60 bytes of i_block for small inline-data files: trim the NULs)
    assert_eq!(
        imgscrub_testkit::debugfs(img, "cat /one").trim_end_matches('\0'),
        "testhost\n",
        "{v}"
    );

    // unlink, rmdir, remove_tree.
    fs.unlink(etc, b"machine-id").unwrap();
    assert_eq!(fs.stat(f).unwrap().nlink, 1);
    fs.unlink(d, b"mid-link").unwrap();
    assert!(fs.stat(f).is_err());
    assert!(matches!(
        fs.rmdir(root, b"etc"),
        Err(Ext4Error::NotEmpty(_))
    ));
    assert!(matches!(
        fs.unlink(root, b"etc"),
        Err(Ext4Error::IsADirectory(_))
    ));
    fs.rmdir(root, b"emptydir").unwrap();
    fs.remove_tree(root, b"var").unwrap();
    fs.remove_tree(etc, b"sub-moved").unwrap();
    fs.unlink(root, b"sparse").unwrap();
    assert_eq!(fs.lookup(root, b"var").unwrap(), None);
    checkpoint(&mut fs, img, &format!("{v}: remove"));

    // The free space map agrees with the superblock after all that.
    let bs = u64::from(fs.block_size());
    let total: u64 = fs.free_ranges().unwrap().iter().map(|r| r.len).sum();
    assert_eq!(total / bs, fs.superblock().free_blocks_count(), "{v}");
    drop(fs);

    // Independent readers agree with ours.
    let fs = open_ro(img);
    let ours = our_tree(&fs);
    assert!(ours.contains_key("/newdir/slow"));
    assert!(!ours.contains_key("/var"));
    if let Ok(view) = std::panic::catch_unwind(|| view_tree(img)) {
        let ours_no_special: std::collections::BTreeMap<_, _> = ours
            .into_iter()
            .filter(|(_, n)| !matches!(n, Node::Other(_)))
            .collect();
        assert_eq!(view, ours_no_special, "{v}: ext4-view disagrees");
    }
}

#[test]
fn flush_without_changes_writes_nothing() {
    imgscrub_testkit::require_tools!("mke2fs");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let Some(img) = image("default", &src, tmp.path(), 32) else {
        return;
    };
    let before = std::fs::read(&img).unwrap();
    let mut fs = open_rw(&img);
    let _ = our_tree(&fs);
    fs.flush().unwrap();
    drop(fs);
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn many_files_in_one_directory() {
    imgscrub_testkit::require_tools!("mke2fs", "e2fsck");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for variant in ["default", "ext2", "b1024"] {
        let Some(img) = image(variant, &src, tmp.path(), 32) else {
            return;
        };
        let mut fs = open_rw(&img);
        let d = fs.mkdir(fs.root(), b"many", &attr(0o755)).unwrap();
        for i in 0..1500 {
            let f = fs
                .create(
                    d,
                    format!("file-with-a-longish-name-{i:05}").as_bytes(),
                    &attr(0o644),
                )
                .unwrap();
            if i % 100 == 0 {
                fs.write(f, 0, b"x").unwrap();
            }
        }
        for i in 0..20 {
            fs.mkdir(d, format!("subdir{i}").as_bytes(), &attr(0o755))
                .unwrap();
        }
        checkpoint(&mut fs, &img, &format!("{variant}: 1500 files"));
        assert_eq!(fs.read_dir(d).unwrap().len(), 1520);
        for i in (0..1500).step_by(3) {
            fs.unlink(d, format!("file-with-a-longish-name-{i:05}").as_bytes())
                .unwrap();
        }
        checkpoint(&mut fs, &img, &format!("{variant}: unlink a third"));
        fs.remove_tree(fs.root(), b"many").unwrap();
        checkpoint(&mut fs, &img, &format!("{variant}: remove_tree"));
        let sb = fs.superblock();
        assert_eq!(
            sb.free_inodes_count(),
            sb.inodes_count - 11,
            "{variant}: inodes leaked"
        );
    }
}

#[test]
fn dir_nlink_beyond_65000_subdirectories() {
    imgscrub_testkit::require_tools!("mke2fs", "e2fsck");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let opts = ["-t", "ext4", "-b", "1024", "-N", "70000", "-I", "128"];
    let Some(img) = image_with(&opts, &src, &tmp.path().join("nlink.img"), 160) else {
        return;
    };
    let mut fs = open_rw(&img);
    let top = fs.mkdir(fs.root(), b"top", &attr(0o755)).unwrap();
    for i in 0..64_998u32 {
        fs.mkdir(top, format!("{i}").as_bytes(), &attr(0o755))
            .unwrap();
    }
    assert_eq!(fs.stat(top).unwrap().nlink, 65_000);
    checkpoint(&mut fs, &img, "65000 links");
    fs.mkdir(top, b"one-more", &attr(0o755)).unwrap();
    assert_eq!(fs.stat(top).unwrap().nlink, 1);
    fs.mkdir(top, b"two-more", &attr(0o755)).unwrap();
    assert_eq!(fs.stat(top).unwrap().nlink, 1);
    checkpoint(&mut fs, &img, "beyond LINK_MAX");
}

#[test]
fn edits_on_unusual_geometries() {
    imgscrub_testkit::require_tools!("mke2fs", "e2fsck", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let layouts: &[(&str, &[&str])] = &[
        ("b64k", &["-t", "ext4", "-b", "65536"]),
        ("b8k", &["-t", "ext4", "-b", "8192"]),
        ("inode1k", &["-t", "ext4", "-b", "4096", "-I", "1024"]),
        (
            "desc128",
            &["-t", "ext4", "-b", "4096", "-E", "desc_size=128"],
        ),
        ("ext3-1k", &["-t", "ext3", "-b", "1024"]),
        (
            "nohuge",
            &["-t", "ext4", "-b", "4096", "-O", "^huge_file,^dir_nlink"],
        ),
    ];
    for &(name, opts) in layouts {
        let out = tmp.path().join(format!("{name}.img"));
        let Some(img) = image_with(opts, &src, &out, 64) else {
            return;
        };
        strict_fsck(&img, &format!("{name}: fresh"));
        edit_sequence(name, &img);
    }
}
