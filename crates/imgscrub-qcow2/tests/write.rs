#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Random writes, zeroing and discards through our writer and into a raw twin; afterwards
//! `qemu-img check` must be clean (no corruption, no leaks) and `qemu-img compare` must say
//! the twin and the image are identical.

mod common;

use common::*;
use imgscrub_disk::BlockDev;
use imgscrub_qcow2::{CompressionType, CreateOptions, OpenOptions, Qcow2};
use std::path::Path;

const SIZE: usize = (6 << 20) + 3 * 512;

/// Apply `n` random operations to `img` and to `twin`.
fn random_ops(img: &Qcow2, twin: &mut [u8], seed: u64, n: usize) {
    let mut rng = Rng::new(seed);
    let size = img.len();
    let cs = img.cluster_size();
    for _ in 0..n {
        let aligned = rng.below(3) == 0;
        let mut off = rng.below(size);
        if aligned {
            off -= off % cs;
        }
        let max_len = (3 * cs).max(9000);
        let mut len = 1 + rng.below(max_len);
        if aligned && rng.below(2) == 0 {
            len = cs * (1 + rng.below(3));
        }
        let len = len.min(size - off);
        let (o, l) = (off as usize, len as usize);
        match rng.below(6) {
            0..=2 => {
                let mut b = vec![0u8; l];
                if rng.below(5) == 0 {
                    b.fill(0); // all-zero data written as data
                } else {
                    rng.fill(&mut b);
                }
                img.write_at(&b, off).unwrap();
                twin[o..o + l].copy_from_slice(&b);
            }
            3 | 4 => {
                img.write_zeroes(off, len).unwrap();
                twin[o..o + l].fill(0);
            }
            _ => {
                img.discard(off, len).unwrap();
                twin[o..o + l].fill(0);
            }
        }
        // Spot-check a read right after the operation.
        let mut b = vec![0u8; l];
        img.read_at(&mut b, off).unwrap();
        assert!(
            b[..] == twin[o..o + l],
            "read-back after op at {off:#x}+{len:#x}"
        );
    }
}

/// Open `image` read-write, apply random ops, flush, then check with the oracles.
fn exercise(dir: &Path, image: &Path, seed: u64, n: usize) {
    let mut twin = qemu_raw(image, dir);
    {
        let img = Qcow2::open(image, &OpenOptions::read_write()).unwrap();
        assert_eq!(img.len() as usize, twin.len());
        random_ops(&img, &mut twin, seed, n);
        img.flush().unwrap();
        let ours = read_all(&img);
        assert_same(&ours, &twin, "our read after writes");
        if img.backing().is_none() {
            check_allocation(&img, &ours);
        }
    }
    let twin_path = dir.join("twin.raw");
    std::fs::write(&twin_path, &twin).unwrap();
    assert_check_clean(image);
    assert_compare_identical(&twin_path, image);
    // Reopen: what was written is what we read.
    let img = Qcow2::open(image, &OpenOptions::read_only()).unwrap();
    assert_same(&read_all(&img), &twin, "our read after reopen");
}

fn converted(opts: &[&str], seed: u64, n: usize) {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    write_raw(&p(d, "src.raw"), &source_data(SIZE, seed));
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["src.raw", "img.qcow2"]);
    qemu_img(&args, d);
    exercise(d, &p(d, "img.qcow2"), seed + 1000, n);
}

#[test]
fn write_v3() {
    converted(&[], 1, 200);
}

#[test]
fn write_v2() {
    converted(&["-o", "compat=0.10"], 2, 200);
}

#[test]
fn write_small_clusters_narrow_and_wide_refcounts() {
    converted(&["-o", "cluster_size=512,refcount_bits=1"], 3, 150);
    converted(&["-o", "cluster_size=512,refcount_bits=64"], 4, 150);
    converted(&["-o", "cluster_size=2M,refcount_bits=2"], 5, 30);
}

#[test]
fn write_into_compressed_clusters() {
    converted(&["-c", "-o", "cluster_size=4096"], 6, 200);
    converted(&["-c", "-o", "compression_type=zstd"], 7, 150);
}

#[test]
fn write_extended_l2_and_lazy_refcounts() {
    converted(&["-o", "extended_l2=on"], 8, 150);
    converted(&["-o", "lazy_refcounts=on"], 9, 100);
}

fn backed(base_fmt: &str, ov_opts: &str, seed: u64) {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    write_raw(&p(d, "src.raw"), &source_data(SIZE, seed));
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
    qemu_img(
        &[
            "create", "-f", "qcow2", "-o", ov_opts, "-b", base, "-F", base_fmt, "ov.qcow2", "7M",
        ],
        d,
    );
    let ov = p(d, "ov.qcow2");
    qemu_io(
        &ov,
        "qcow2",
        &[
            "write -P 0x5a 4k 4k",
            "write -z 300k 64k",
            "write -P 0x11 5M 600k",
        ],
    );
    let base_before = std::fs::read(p(d, base)).unwrap();
    exercise(d, &ov, seed + 2000, 200);
    assert!(
        std::fs::read(p(d, base)).unwrap() == base_before,
        "the backing file must never be written"
    );
}

#[test]
fn write_backed_qcow2_v3() {
    backed("qcow2", "compat=1.1", 10);
}

#[test]
fn write_backed_raw_v2() {
    backed("raw", "compat=0.10", 11);
}

#[test]
fn write_backed_extended_l2() {
    backed("qcow2", "extended_l2=on,cluster_size=32k", 12);
}

fn created(opts: CreateOptions, size: u64, seed: u64, n: usize) {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let path = p(d, "new.qcow2");
    {
        let img = Qcow2::create(&path, size, &opts).unwrap();
        img.flush().unwrap();
    }
    assert_check_clean(&path);
    exercise(d, &path, seed, n);
}

#[test]
fn create_default_and_options() {
    created(CreateOptions::default(), 5 << 20, 20, 120);
    created(
        CreateOptions {
            compression: CompressionType::Zstd,
            extended_l2: true,
            lazy_refcounts: true,
            ..Default::default()
        },
        3 << 20,
        21,
        80,
    );
    created(
        CreateOptions {
            cluster_bits: 9,
            refcount_order: 0,
            ..Default::default()
        },
        (2 << 20) + 4096 + 7,
        22,
        120,
    );
}

/// Sequential fill of a fresh image with 512-byte clusters and 64-bit refcounts: the
/// refcount table (one cluster covers 2 MiB) must grow several times.
#[test]
fn create_and_grow_refcount_table() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let path = p(d, "grow.qcow2");
    let size = 12u64 << 20;
    let data = source_data(size as usize, 30);
    {
        let img = Qcow2::create(
            &path,
            size,
            &CreateOptions {
                cluster_bits: 9,
                refcount_order: 6,
                ..Default::default()
            },
        )
        .unwrap();
        for (i, chunk) in data.chunks(256 << 10).enumerate() {
            img.write_at(chunk, (i as u64) << 18).unwrap();
        }
        img.flush().unwrap();
    }
    assert_check_clean(&path);
    let twin = p(d, "twin.raw");
    std::fs::write(&twin, &data).unwrap();
    assert_compare_identical(&twin, &path);
    let info = qemu_img(&["info", "--output=json", "grow.qcow2"], d);
    assert!(info.contains("\"refcount-bits\": 64"), "{info}");
    // The refcount table started with one cluster (2 MiB of coverage) and must have grown.
    let hdr = std::fs::read(&path).unwrap();
    let clusters = u32::from_be_bytes(hdr[56..60].try_into().unwrap());
    assert!(
        clusters > 1,
        "refcount table did not grow ({clusters} clusters)"
    );
}

/// A read-only image refuses writes, and a failed write leaves the file untouched.
#[test]
fn read_only_refuses_writes() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    qemu_img(&["create", "-f", "qcow2", "ro.qcow2", "1M"], d);
    let before = std::fs::read(p(d, "ro.qcow2")).unwrap();
    let img = Qcow2::open(p(d, "ro.qcow2"), &OpenOptions::read_only()).unwrap();
    assert!(img.is_read_only());
    let e = img.write_at(&[1, 2, 3], 0).unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(img.write_zeroes(0, 4096).is_err());
    assert!(img.discard(0, 4096).is_err());
    assert!(img.write_at(&[1], 1 << 20).is_err());
    drop(img);
    assert!(std::fs::read(p(d, "ro.qcow2")).unwrap() == before);
}

/// Persistent bitmaps: we do not maintain them, so the first write marks them in use
/// (inconsistent for QEMU) and the image stays clean.
#[test]
fn write_clears_autoclear_bits() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    qemu_img(&["create", "-f", "qcow2", "bm.qcow2", "4M"], d);
    qemu_img(&["bitmap", "--add", "bm.qcow2", "b0"], d);
    let path = p(d, "bm.qcow2");
    let autoclear = |b: &[u8]| u64::from_be_bytes(b[88..96].try_into().unwrap());
    assert_eq!(autoclear(&std::fs::read(&path).unwrap()), 1);
    {
        let img = Qcow2::open(&path, &OpenOptions::read_write()).unwrap();
        img.write_at(&[7u8; 5000], 12345).unwrap();
        img.flush().unwrap();
    }
    assert_eq!(autoclear(&std::fs::read(&path).unwrap()), 1);
    assert_check_clean(&path);
    let info = qemu_img(&["info", "bm.qcow2"], d);
    assert!(info.contains("in-use"), "{info}");
    let mut twin = vec![0u8; 4 << 20];
    twin[12345..12345 + 5000].fill(7);
    std::fs::write(p(d, "twin.raw"), &twin).unwrap();
    assert_compare_identical(&p(d, "twin.raw"), &path);
}

/// `allocation()` on an overlay: its own clusters are data or zero, the rest is what the
/// backing file says, and past the backing file's end the overlay is unallocated.
#[test]
fn allocation_through_backing() {
    if !have_qemu() {
        return;
    }
    use imgscrub_disk::AllocKind;
    let dir = tmp();
    let d = dir.path();
    let mut base = vec![0u8; 2 << 20];
    base[..65536].fill(1);
    write_raw(&p(d, "base.raw"), &base);
    qemu_img(
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "base.raw",
            "base.qcow2",
        ],
        d,
    );
    qemu_img(
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "ov.qcow2",
            "4M",
        ],
        d,
    );
    qemu_io(
        &p(d, "ov.qcow2"),
        "qcow2",
        &["write -P 2 1M 64k", "write -z 1536k 64k"],
    );
    let img = Qcow2::open(p(d, "ov.qcow2"), &OpenOptions::read_only()).unwrap();
    let kind_at = |off: u64| img.allocation(off, 1).unwrap()[0].kind;
    assert_eq!(kind_at(0), AllocKind::Data); // from the backing file
    assert_eq!(kind_at(1 << 20), AllocKind::Data); // our own cluster
    assert_eq!(kind_at(1536 << 10), AllocKind::Zero); // zero flag
    assert!(kind_at(700 << 10).reads_as_zero()); // hole in the backing file
    assert_eq!(kind_at(3 << 20), AllocKind::Unallocated); // past the backing file
    let all = img.allocation(0, img.len()).unwrap();
    assert_eq!(all.iter().map(|r| r.len).sum::<u64>(), img.len());
}

/// Several threads write, zero and read disjoint regions of one image at once (`&self`
/// `BlockDev`); the result is clean and equals the twin.
#[test]
fn concurrent_writers_and_readers() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    write_raw(&p(d, "src.raw"), &source_data(SIZE, 40));
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
    let path = p(d, "img.qcow2");
    let twin = std::sync::Mutex::new(qemu_raw(&path, d));
    {
        let img = Qcow2::open(&path, &OpenOptions::read_write()).unwrap();
        let region = (SIZE as u64 / 4) & !4095;
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (img, twin) = (&img, &twin);
                s.spawn(move || {
                    let mut rng = Rng::new(100 + t);
                    for _ in 0..80 {
                        let off = t * region + rng.below(region - 20_000);
                        let len = 1 + rng.below(20_000);
                        let (o, l) = (off as usize, len as usize);
                        if rng.below(3) == 0 {
                            img.write_zeroes(off, len).unwrap();
                            twin.lock().unwrap()[o..o + l].fill(0);
                        } else {
                            let mut b = vec![0u8; l];
                            rng.fill(&mut b);
                            img.write_at(&b, off).unwrap();
                            twin.lock().unwrap()[o..o + l].copy_from_slice(&b);
                        }
                        let mut r = vec![0u8; l];
                        img.read_at(&mut r, off).unwrap();
                        assert!(r[..] == twin.lock().unwrap()[o..o + l]);
                    }
                });
            }
        });
        img.flush().unwrap();
    }
    let twin = twin.into_inner().unwrap();
    std::fs::write(p(d, "twin.raw"), &twin).unwrap();
    assert_check_clean(&path);
    assert_compare_identical(&p(d, "twin.raw"), &path);
}

/// A lazy-refcounts image left dirty by a crash (`qemu-io … abort`): reading works as is;
/// opening for writing rebuilds the refcounts and clears the dirty bit, and the result is
/// clean for `qemu-img check`.
#[test]
fn dirty_lazy_refcounts_image_is_repaired() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    qemu_img(
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "lazy_refcounts=on,cluster_size=4096",
            "lz.qcow2",
            "4M",
        ],
        d,
    );
    let path = p(d, "lz.qcow2");
    // qemu-io aborts on purpose: its exit status is a signal, so do not require success.
    imgscrub_testkit::run(
        std::process::Command::new("qemu-io")
            .args([
                "-f",
                "qcow2",
                "-c",
                "write -P 0x61 0 1M",
                "-c",
                "write -P 0x62 2M 300k",
            ])
            .args(["-c", "write -z 512k 64k", "-c", "abort"])
            .arg(&path),
    );
    let dirty =
        |p: &Path| u64::from_be_bytes(std::fs::read(p).unwrap()[72..80].try_into().unwrap()) & 1;
    assert_eq!(
        dirty(&path),
        1,
        "qemu-io abort should leave the image dirty"
    );
    let mut twin = vec![0u8; 4 << 20];
    twin[..1 << 20].fill(0x61);
    twin[512 << 10..576 << 10].fill(0);
    twin[2 << 20..(2 << 20) + (300 << 10)].fill(0x62);
    {
        let ro = Qcow2::open(&path, &OpenOptions::read_only()).unwrap();
        assert!(read_all(&ro) == twin, "read of the dirty image");
    }
    assert_eq!(dirty(&path), 1, "a read-only open must not touch the image");
    {
        let img = Qcow2::open(&path, &OpenOptions::read_write()).unwrap();
        img.write_at(&[0x63; 10_000], 3 << 20).unwrap();
        twin[3 << 20..(3 << 20) + 10_000].fill(0x63);
        img.flush().unwrap();
    }
    assert_eq!(dirty(&path), 0);
    assert_check_clean(&path);
    std::fs::write(p(d, "twin.raw"), &twin).unwrap();
    assert_compare_identical(&p(d, "twin.raw"), &path);
}
