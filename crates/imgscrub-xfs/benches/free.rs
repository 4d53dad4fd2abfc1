//! Read benchmarks of the XFS engine on the 2 GiB image of `benches/xfs.sh` (issue 11):
//!
//! - `open_free_ranges`: `XfsFs::open` (superblock, log check, every AG header, root inode)
//!   and `free_ranges()` (both free-space btrees of every AG, the AG free lists): what
//!   `sparsify` and `convert --sparsify` do before they touch any data.
//! - `open`: `XfsFs::open` alone, to tell the two apart.
//! - `walk`: a full tree walk on an open filesystem: `read_dir` of every directory and `stat`
//!   of every entry (~20,000 files).
//!
//! ```sh
//! benches/xfs.sh /tmp/imgscrub-xfs-bench          # builds the image once (and times the CLI)
//! IMGSCRUB_XFS_BENCH_IMAGE=/tmp/imgscrub-xfs-bench/xfs-root.img \
//!     cargo bench -p imgscrub-xfs --bench free
//! ```
//!
//! The image is the bare dirty filesystem (no partition table). Without the variable, or
//! when the file is missing, the benchmarks are skipped with a message. The image is read
//! through the page cache (it is warm after the first iteration), as in `benches/xfs.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgscrub_disk::{BlockDev, RawFile};
use imgscrub_xfs::{FileType, OpenOptions, XfsFs};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

const VAR: &str = "IMGSCRUB_XFS_BENCH_IMAGE";

fn image() -> Option<PathBuf> {
    let Some(path) = std::env::var_os(VAR).map(PathBuf::from) else {
        eprintln!(
            "skipping the XFS benchmarks: set {VAR} to the bare XFS image that benches/xfs.sh \
             builds (WORKDIR/xfs-root.img)"
        );
        return None;
    };
    if !path.is_file() {
        eprintln!(
            "skipping the XFS benchmarks: {} (from {VAR}) does not exist; run benches/xfs.sh",
            path.display()
        );
        return None;
    }
    Some(path)
}

fn open(path: &Path) -> XfsFs<RawFile> {
    XfsFs::open(
        RawFile::open(path).expect("open the image"),
        OpenOptions { writable: false },
    )
    .expect("open the XFS")
}

/// `read_dir` of every directory and `stat` of every entry; returns (entries, bytes).
fn walk<D: BlockDev>(fs: &XfsFs<D>) -> (u64, u64) {
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut stack = vec![fs.root()];
    while let Some(dir) = stack.pop() {
        for e in fs.read_dir(dir).expect("read_dir") {
            let st = fs.stat(e.ino).expect("stat");
            n += 1;
            bytes += st.size;
            if st.file_type == FileType::Directory {
                stack.push(e.ino);
            }
        }
    }
    (n, bytes)
}

fn bench(c: &mut Criterion) {
    let Some(path) = image() else { return };
    let fs = open(&path);
    let free: u64 = fs
        .free_ranges()
        .expect("free_ranges")
        .iter()
        .map(|r| r.len)
        .sum();
    let (entries, bytes) = walk(&fs);
    eprintln!(
        "{}: {} AGs, {} MiB free, {entries} entries, {} MiB in files",
        path.display(),
        fs.superblock().agcount,
        free >> 20,
        bytes >> 20
    );

    let mut g = c.benchmark_group("xfs_2g");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("open_free_ranges", |b| {
        b.iter(|| {
            let fs = open(&path);
            black_box(fs.free_ranges().expect("free_ranges").len())
        })
    });
    g.bench_function("open", |b| b.iter(|| black_box(open(&path).root())));
    g.throughput(Throughput::Elements(entries));
    g.measurement_time(Duration::from_secs(12));
    g.bench_function("walk", |b| b.iter(|| black_box(walk(&fs))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
