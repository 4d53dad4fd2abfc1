#![allow(clippy::unwrap_used, clippy::expect_used)]
//! sparsify() on every variant of the XFS fixture matrix, dirty (every free extent full of
//! random bytes): afterwards every free extent `xfs_db freesp -d` lists reads as zeros, every
//! other byte of the filesystem is unchanged (so every file, directory and attribute is),
//! `xfs_repair -n` is clean, and a second run finds nothing to do.

use imgscrub_disk::RawFile;
use imgscrub_shrink::{NoProgress, SparsifyOptions, sparsify};
use imgscrub_testkit as tk;

fn check(variant: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs_dirty(variant, dir.path()) else {
        return;
    };
    let free = tk::xfs_free_ranges_with_agfl(&fx.image);
    let before = std::fs::read(&fx.image).unwrap();
    assert!(
        free.iter()
            .any(|&(o, l)| before[o as usize..(o + l) as usize].iter().any(|&b| b != 0)),
        "{variant}: the fixture is not dirty"
    );
    let dev = RawFile::open_rw(&fx.image).unwrap();
    let rep = sparsify(&dev, &SparsifyOptions::default(), &NoProgress).unwrap();
    drop(dev);
    let after = std::fs::read(&fx.image).unwrap();
    let mut pos = 0usize;
    for &(o, l) in &free {
        let (o, l) = (o as usize, l as usize);
        assert!(
            before[pos..o] == after[pos..o],
            "{variant}: used bytes changed before {o:#x}"
        );
        assert!(
            after[o..o + l].iter().all(|&b| b == 0),
            "{variant}: free run at {o:#x}"
        );
        pos = o + l;
    }
    assert!(
        before[pos..] == after[pos..],
        "{variant}: used bytes changed at the end"
    );
    tk::assert_xfs_repair_clean(&fx.image);
    let dev = RawFile::open_rw(&fx.image).unwrap();
    sparsify(&dev, &SparsifyOptions::default(), &NoProgress).unwrap();
    drop(dev);
    assert!(
        std::fs::read(&fx.image).unwrap() == after,
        "{variant}: second run changed bytes"
    );
    eprintln!(
        "{variant}: {:?}",
        rep.areas.iter().map(|a| &a.action).collect::<Vec<_>>()
    );
}

/// Every variant of `fixtures/mkxfs.sh --list`, and the kernel-made one when we can mount.
#[test]
fn sparsify_zeroes_exactly_the_free_space_of_every_xfs_variant() {
    for v in tk::xfs_variants_all() {
        if v != "dirtylog" {
            check(&v);
        }
    }
}

/// A dirty log makes sparsify skip the filesystem with the reason, writing nothing.
#[test]
fn sparsify_skips_an_xfs_whose_log_is_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs("dirtylog", dir.path()) else {
        return;
    };
    let before = std::fs::read(&fx.image).unwrap();
    let dev = RawFile::open_rw(&fx.image).unwrap();
    let rep = sparsify(&dev, &SparsifyOptions::default(), &NoProgress).unwrap();
    drop(dev);
    let why = format!("{:?}", rep.areas);
    assert!(why.contains("log is not clean"), "{why}");
    assert!(std::fs::read(&fx.image).unwrap() == before);
}
