//! Compression throughput of one 64 KiB cluster: zlib (raw deflate, 4 KiB window) and zstd
//! at their default levels, on text-like and on incompressible data.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use imgscrub_shrink::Compression;
use imgscrub_shrink::compress::ClusterCompressor;
use std::hint::black_box;

fn text(len: usize) -> Vec<u8> {
    let words: [&[u8]; 8] = [
        b"kernel ",
        b"ext4 ",
        b"usr/lib/",
        b"0x7f3a ",
        b"\n",
        b"libc.so.6 ",
        b"#include ",
        b"qcow2 ",
    ];
    let mut seed = 0x2545f4914f6cdd1du64;
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(words[(seed % 8) as usize]);
    }
    v.truncate(len);
    v
}

fn random(len: usize) -> Vec<u8> {
    let mut seed = 1u64;
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cs = 64 << 10;
    let mut g = c.benchmark_group("cluster_64k");
    g.throughput(Throughput::Bytes(cs as u64));
    for (name, data) in [("text", text(cs)), ("random", random(cs))] {
        for kind in [Compression::Zlib, Compression::Zstd] {
            let Ok(mut comp) = ClusterCompressor::new(kind, kind.default_level()) else {
                continue;
            };
            g.bench_function(format!("{kind:?}/{name}"), |b| {
                b.iter(|| {
                    let r = comp.compress(black_box(&data));
                    black_box(r.map(|o| o.map(<[u8]>::len)).ok());
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
