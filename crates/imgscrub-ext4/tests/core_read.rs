#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Read side of `Ext4Fs` on every mkfs variant: our tree equals the source tree, ext4-view's
//! view and what debugfs says.

mod core_common;

use core_common::*;
use imgscrub_ext4::{Ext4Error, FileType};

#[test]
fn read_tree_matches_source_on_every_variant() {
    imgscrub_testkit::require_tools!("mke2fs", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let want = host_tree(&src);
    for variant in imgscrub_testkit::ext4_variants() {
        let Some(img) = image(&variant, &src, tmp.path(), 32) else {
            return;
        };
        let fs = open_ro(&img);
        let got = our_tree(&fs);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{variant}"
        );
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "{variant}: {k}");
        }
        if !matches!(variant.as_str(), "orphanfile" | "largedir") {
            // ext4-view may not know every newer feature; it must agree where it loads.
            let view = std::panic::catch_unwind(|| view_tree(&img));
            if let Ok(view) = view {
                assert_eq!(view, got, "{variant}: ext4-view disagrees");
            }
        }

        // Path lookup, stat against debugfs.
        let ino = fs.lookup_path(b"/etc/ssh/ssh_host_rsa_key").unwrap();
        let st = fs.stat(ino).unwrap();
        assert_eq!(st.perm, 0o600, "{variant}");
        assert_eq!(st.file_type, FileType::Regular);
        assert_eq!(st.size, 3000);
        let dbg = imgscrub_testkit::debugfs(&img, "stat /etc/ssh/ssh_host_rsa_key");
        assert!(dbg.contains(&format!("Inode: {ino} ")), "{variant}: {dbg}");
        let one = fs.lookup_path(b"/one").unwrap();
        assert_eq!(fs.lookup_path(b"/one-again").unwrap(), one);
        assert_eq!(fs.stat(one).unwrap().nlink, 2);
        assert_eq!(fs.stat(fs.root()).unwrap().file_type, FileType::Directory);
        assert!(matches!(
            fs.lookup_path(b"/nope/x"),
            Err(Ext4Error::NotFound(_))
        ));
        assert!(matches!(
            fs.lookup_path(b"/one/x"),
            Err(Ext4Error::NotADirectory(_))
        ));
        assert_eq!(fs.lookup(fs.root(), b"nope").unwrap(), None);

        // Partial reads.
        let big = fs.lookup_path(b"/var/log/big.log").unwrap();
        let mut buf = vec![0u8; 10_000];
        let n = fs.read(big, 195_000, &mut buf).unwrap();
        assert_eq!(n, 5000);
        assert_eq!(&buf[..n], &pattern(200_000, 7)[195_000..]);
        assert_eq!(fs.read(big, 300_000, &mut buf).unwrap(), 0);

        // debugfs ls of the root agrees on names and inode numbers.
        let ls = imgscrub_testkit::debugfs(&img, "ls -l /etc");
        for e in fs.read_dir(fs.lookup_path(b"/etc").unwrap()).unwrap() {
            let name = String::from_utf8(e.name).unwrap();
            assert!(
                ls.lines()
                    .any(|l| l.split_whitespace().next() == Some(&e.ino.to_string())
                        && l.trim_end().ends_with(&name)),
                "{variant}: {name} ({}) not in debugfs ls:\n{ls}",
                e.ino
            );
        }

        // free_ranges is sorted, coalesced, inside the fs, and sums to the free count.
        let free = fs.free_ranges().unwrap();
        let bs = u64::from(fs.block_size());
        let total: u64 = free.iter().map(|r| r.len).sum();
        assert_eq!(total / bs, fs.superblock().free_blocks_count(), "{variant}");
        for w in free.windows(2) {
            assert!(
                w[0].offset + w[0].len < w[1].offset,
                "{variant}: not coalesced/sorted"
            );
        }
        let end = fs.superblock().blocks_count * bs;
        assert!(free.iter().all(|r| r.offset + r.len <= end && r.len > 0));
    }
}

#[test]
fn bigalloc_is_readable_but_refused_for_writing() {
    imgscrub_testkit::require_tools!("mke2fs");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"hello").unwrap();
    let Some(img) = image("bigalloc", &src, tmp.path(), 64) else {
        return;
    };
    let before = std::fs::read(&img).unwrap();
    let dev = imgscrub_disk::RawFile::open_rw(&img).unwrap();
    match imgscrub_ext4::Ext4Fs::open(dev, imgscrub_ext4::OpenOptions { writable: true }) {
        Err(Ext4Error::ReadOnly(why)) => assert!(why.contains("bigalloc"), "{why}"),
        other => panic!("bigalloc opened for writing: {other:?}"),
    }
    assert_eq!(std::fs::read(&img).unwrap(), before);
    // Read-only open works.
    let fs = open_ro(&img);
    assert!(fs.lookup(fs.root(), b"a").unwrap().is_some());
}
