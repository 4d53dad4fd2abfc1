//! Edit benchmarks of the ext4 engine (release build: `cargo bench -p imgscrub-ext4`).
//!
//! - `create_10k_files_flush`: create 10,000 empty files in one directory, then flush.
//! - `remove_tree_10k_flush`: remove a directory of 10,000 files, then flush.
//! - `htree_lookup_1000_of_10k`: look up 1,000 names in an indexed 10,000-entry directory.
//!
//! Each iteration of the first two works on a fresh copy of a template image (the copy is
//! not measured). Target: ≤ 2 s each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use imgscrub_disk::RawFile;
use imgscrub_ext4::NewAttr;
use imgscrub_ext4::fs::{Ext4Fs, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const N: usize = 10_000;

fn name(i: usize) -> String {
    format!("file-{i:06}.conf")
}

struct Templates {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    empty: PathBuf,
    big: PathBuf,
}

fn templates() -> Option<Templates> {
    let dir = tempfile::tempdir().unwrap();
    let empty_src = dir.path().join("empty-src");
    std::fs::create_dir_all(&empty_src).unwrap();
    let big_src = dir.path().join("big-src");
    std::fs::create_dir_all(big_src.join("tree")).unwrap();
    for i in 0..N {
        std::fs::write(big_src.join("tree").join(name(i)), b"").unwrap();
    }
    let empty = dir.path().join("empty.img");
    let big = dir.path().join("big.img");
    if !imgscrub_testkit::make_ext4("default", &empty_src, &empty, 512)
        || !imgscrub_testkit::make_ext4("default", &big_src, &big, 512)
    {
        return None;
    }
    // Index the big directory (htree), as a long-lived system would have it.
    let _ = Command::new("e2fsck").arg("-fyD").arg(&big).output();
    Some(Templates {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        empty,
        big,
    })
}

fn copy_of(t: &Templates, src: &Path) -> PathBuf {
    let dst = t.dir.join("work.img");
    // Sparse copy: the templates are mostly holes.
    let _ = std::fs::remove_file(&dst);
    let ok = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(ok.success());
    dst
}

fn benches(c: &mut Criterion) {
    let Some(t) = templates() else {
        eprintln!("SKIP: mke2fs not installed");
        return;
    };
    let mut g = c.benchmark_group("ext4");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));

    g.bench_function("create_10k_files_flush", |b| {
        b.iter_batched(
            || copy_of(&t, &t.empty),
            |img| {
                let dev = RawFile::open_rw(&img).unwrap();
                let mut fs = Ext4Fs::open(dev, OpenOptions { writable: true }).unwrap();
                let root = fs.root();
                let d = fs.mkdir(root, b"many", &NewAttr::default()).unwrap();
                for i in 0..N {
                    fs.create(d, name(i).as_bytes(), &NewAttr::default())
                        .unwrap();
                }
                fs.flush().unwrap();
            },
            BatchSize::PerIteration,
        );
    });

    g.bench_function("remove_tree_10k_flush", |b| {
        b.iter_batched(
            || copy_of(&t, &t.big),
            |img| {
                let dev = RawFile::open_rw(&img).unwrap();
                let mut fs = Ext4Fs::open(dev, OpenOptions { writable: true }).unwrap();
                let root = fs.root();
                fs.remove_tree(root, b"tree").unwrap();
                fs.flush().unwrap();
            },
            BatchSize::PerIteration,
        );
    });

    let fs = Ext4Fs::open(
        RawFile::open(&t.big).unwrap(),
        OpenOptions { writable: false },
    )
    .unwrap();
    let tree = fs.lookup_path(b"/tree").unwrap();
    let names: Vec<String> = (0..1000).map(|i| name(i * 7 % N)).collect();
    g.bench_function("htree_lookup_1000_of_10k", |b| {
        b.iter(|| {
            for n in &names {
                assert!(fs.lookup(tree, n.as_bytes()).unwrap().is_some());
            }
        });
    });
    g.finish();
}

criterion_group!(ext4_benches, benches);
criterion_main!(ext4_benches);
