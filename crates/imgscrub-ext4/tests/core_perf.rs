#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The benchmark shapes at small scale: 10,000 files created in one directory, then the tree
//! removed, each followed by flush and e2fsck. Timings are printed; the hard limits (≤ 2 s
//! each in release) are checked by the benches, here only a generous bound for opt-level 1.

mod core_common;

use core_common::*;
use imgscrub_ext4::{NewAttr, Timestamp};
use std::time::Instant;

#[test]
fn ten_thousand_files_create_and_remove_tree() {
    imgscrub_testkit::require_tools!("mke2fs", "e2fsck");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let Some(img) = image("default", &src, tmp.path(), 256) else {
        return;
    };
    let attr = NewAttr {
        time: Some(Timestamp::new(1_700_000_000, 0)),
        ..NewAttr::default()
    };
    let mut fs = open_rw(&img);
    let t = Instant::now();
    let top = fs.mkdir(fs.root(), b"tree", &attr).unwrap();
    let mut dirs = vec![top];
    for i in 0..10 {
        dirs.push(fs.mkdir(top, format!("d{i}").as_bytes(), &attr).unwrap());
    }
    for i in 0..10_000u32 {
        let d = dirs[(i % 11) as usize];
        let f = fs
            .create(d, format!("file-{i:06}.conf").as_bytes(), &attr)
            .unwrap();
        if i % 10 == 0 {
            fs.write(f, 0, b"some content\n").unwrap();
        }
    }
    fs.flush().unwrap();
    let create = t.elapsed();
    strict_fsck(&img, "");
    let t = Instant::now();
    fs.remove_tree(fs.root(), b"tree").unwrap();
    fs.flush().unwrap();
    let remove = t.elapsed();
    strict_fsck(&img, "");
    eprintln!("10k create: {create:?}, remove_tree: {remove:?}");
    assert!(create.as_secs() < 30 && remove.as_secs() < 30);
}
