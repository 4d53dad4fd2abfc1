#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Reads of images made by `qemu-img`, compared byte for byte with `qemu-img convert -O raw`.

mod common;

use common::*;
use imgscrub_disk::BlockDev;
use imgscrub_qcow2::{OpenOptions, Qcow2};
use std::path::Path;

const SIZE: usize = (6 << 20) + 3 * 512;

/// Convert a fresh random source with `opts` and compare our full read with qemu's.
fn convert_and_compare(opts: &[&str], seed: u64) {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let data = source_data(SIZE, seed);
    write_raw(&p(d, "src.raw"), &data);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["src.raw", "img.qcow2"]);
    qemu_img(&args, d);
    compare_image(&p(d, "img.qcow2"), d, &format!("{opts:?}"));
}

fn compare_image(img: &Path, dir: &Path, what: &str) -> Vec<u8> {
    let q = Qcow2::open(img, &OpenOptions::read_only()).unwrap();
    let ours = read_all(&q);
    let oracle = qemu_raw(img, dir);
    assert_same(&ours, &oracle, what);
    if q.backing().is_none() {
        check_allocation(&q, &ours);
    }
    ours
}

#[test]
fn v2_compat_0_10() {
    convert_and_compare(&["-o", "compat=0.10"], 1);
}

#[test]
fn v3_default() {
    convert_and_compare(&["-o", "compat=1.1"], 2);
}

#[test]
fn cluster_sizes() {
    for (i, cs) in ["512", "4096", "32768", "2M"].iter().enumerate() {
        let o = format!("cluster_size={cs}");
        convert_and_compare(&["-o", &o], 10 + i as u64);
    }
    convert_and_compare(&["-o", "compat=0.10,cluster_size=1024"], 19);
}

#[test]
fn refcount_widths() {
    for (i, bits) in ["1", "2", "4", "8", "16", "32", "64"].iter().enumerate() {
        let o = format!("refcount_bits={bits},cluster_size=4096");
        convert_and_compare(&["-o", &o], 20 + i as u64);
    }
}

#[test]
fn compressed_zlib() {
    convert_and_compare(&["-c"], 30);
    convert_and_compare(&["-c", "-o", "cluster_size=4096"], 31);
    convert_and_compare(&["-c", "-o", "compat=0.10,cluster_size=512"], 32);
}

#[test]
fn compressed_zstd() {
    convert_and_compare(&["-c", "-o", "compression_type=zstd"], 40);
    convert_and_compare(&["-c", "-o", "compression_type=zstd,cluster_size=2M"], 41);
    convert_and_compare(&["-c", "-o", "compression_type=zstd,cluster_size=1024"], 42);
}

#[test]
fn extended_l2_and_lazy_refcounts() {
    convert_and_compare(&["-o", "extended_l2=on"], 50);
    convert_and_compare(&["-o", "extended_l2=on,cluster_size=16384"], 51);
    convert_and_compare(&["-c", "-o", "extended_l2=on,compression_type=zstd"], 52);
    convert_and_compare(&["-o", "lazy_refcounts=on"], 53);
}

/// An overlay of `fmt` backing with sub-cluster writes, zero writes and discards by qemu-io,
/// bigger than its backing file.
fn overlay(base_fmt: &str, overlay_opts: &str, seed: u64) {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let data = source_data(SIZE, seed);
    write_raw(&p(d, "src.raw"), &data);
    let base = if base_fmt == "qcow2" {
        qemu_img(
            &[
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-c",
                "src.raw",
                "base.qcow2",
            ],
            d,
        );
        "base.qcow2"
    } else {
        "src.raw"
    };
    // Relative backing name, resolved against the overlay's directory.
    std::fs::create_dir(p(d, "sub")).unwrap();
    let rel = format!("../{base}");
    qemu_img(
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            overlay_opts,
            "-b",
            &rel,
            "-F",
            base_fmt,
            "sub/ov.qcow2",
            "8M",
        ],
        d,
    );
    let ov = p(d, "sub/ov.qcow2");
    qemu_io(
        &ov,
        "qcow2",
        &[
            "write -P 0x5a 4k 4k",
            "write -P 0x33 70k 130k",
            "write -z 300k 64k",
            "write -z 1M 200k",
            "write -P 0x11 5M 1537k",
            "discard 2M 128k",
            "write -z 7M 64k",
            "write -P 0x77 7300k 20k",
        ],
    );
    let q = Qcow2::open(&ov, &OpenOptions::read_only()).unwrap();
    assert!(q.backing_path().unwrap().ends_with(base));
    drop(q);
    compare_image(&ov, d, &format!("overlay on {base_fmt} ({overlay_opts})"));
}

#[test]
fn backing_qcow2_v3() {
    overlay("qcow2", "compat=1.1", 60);
}

#[test]
fn backing_raw_v2() {
    overlay("raw", "compat=0.10", 61);
}

#[test]
fn backing_extended_l2_subclusters() {
    overlay("qcow2", "extended_l2=on,cluster_size=128k", 62);
    overlay("raw", "extended_l2=on", 63);
}

#[test]
fn parallel_reads() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let data = source_data(SIZE, 70);
    write_raw(&p(d, "src.raw"), &data);
    qemu_img(
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-c",
            "-o",
            "cluster_size=4096",
            "src.raw",
            "img.qcow2",
        ],
        d,
    );
    let q = Qcow2::open(p(d, "img.qcow2"), &OpenOptions::read_only()).unwrap();
    let q = &q;
    let data = &data;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut rng = Rng::new(t);
                for _ in 0..300 {
                    let off = rng.below(SIZE as u64 - 1) as usize;
                    let len = (1 + rng.below(100_000) as usize).min(SIZE - off);
                    let mut b = vec![0u8; len];
                    q.read_at(&mut b, off as u64).unwrap();
                    assert!(b[..] == data[off..off + len], "parallel read at {off:#x}");
                }
            });
        }
    });
}
