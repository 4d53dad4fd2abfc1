#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Sequential reads of uncompressed qcow2 clusters through `BlockDev`, from the page cache.
//!
//! The image (256 MiB of non-zero data, 64 KiB clusters) is written once with our own writer
//! into a temporary directory, read once to warm the page cache, then read sequentially in
//! 1 MiB requests, then in 4 KiB requests.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgscrub_disk::BlockDev;
use imgscrub_qcow2::{CreateOptions, OpenOptions, Qcow2};
use std::hint::black_box;

const SIZE: u64 = 256 << 20;
const REQ: usize = 1 << 20;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.qcow2");
    {
        let img = Qcow2::create(&path, SIZE, &CreateOptions::default()).unwrap();
        let mut buf = vec![0u8; REQ];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        let mut off = 0;
        while off < SIZE {
            img.write_at(&buf, off).unwrap();
            off += REQ as u64;
        }
        img.flush().unwrap();
    }
    let img = Qcow2::open(&path, &OpenOptions::read_only()).unwrap();
    let mut buf = vec![0u8; REQ];
    let read_all = |buf: &mut [u8]| {
        let step = buf.len() as u64;
        let mut off = 0;
        while off < SIZE {
            img.read_at(buf, off).unwrap();
            off += step;
        }
        black_box(&buf[..]);
    };
    read_all(&mut buf); // warm the page cache
    let mut g = c.benchmark_group("qcow2");
    g.throughput(Throughput::Bytes(SIZE));
    g.sample_size(10);
    g.bench_function("sequential_read_1MiB_requests_64KiB_clusters", |b| {
        b.iter(|| read_all(&mut buf))
    });
    // Small requests: the per-call cost (lock, L2 lookup, one pread each).
    let mut small = vec![0u8; 4096];
    g.bench_function("sequential_read_4KiB_requests_64KiB_clusters", |b| {
        b.iter(|| read_all(&mut small))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
