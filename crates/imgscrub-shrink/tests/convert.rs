#![allow(clippy::unwrap_used, clippy::expect_used)]
//! convert() against qemu-img: `check` clean, `compare` equal, readable back, deterministic.

use imgscrub_disk::{BlockDev, RawFile};
use imgscrub_shrink::{Compression, ConvertOptions, NoProgress, OutputFormat, RangeSet, convert};
use imgscrub_testkit::{require_tools, run, run_ok};
use std::path::Path;
use std::process::Command;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A raw image of `len` bytes mixing text, random, zero and hole regions (in 32 KiB pieces,
/// so every cluster size sees mixed clusters).
fn make_input(path: &Path, len: u64, seed: u64) {
    let f = RawFile::create(path, len).unwrap();
    let mut rng = Rng(seed);
    let piece = 32 * 1024u64;
    let mut off = 0;
    while off < len {
        let n = piece.min(len - off) as usize;
        let kind = rng.next() % 5;
        let buf: Vec<u8> = match kind {
            0 => vec![],       // hole
            1 => vec![0u8; n], // written zeros
            2 => (0..n).map(|_| rng.next() as u8).collect(),
            _ => {
                let words = [
                    &b"kernel "[..],
                    b"ext4 ",
                    b"qcow2 ",
                    b"zero ",
                    b"\n",
                    b"imgscrub ",
                ];
                let mut v = Vec::with_capacity(n);
                while v.len() < n {
                    v.extend_from_slice(words[(rng.next() % 6) as usize]);
                }
                v.truncate(n);
                v
            }
        };
        if !buf.is_empty() {
            f.write_at(&buf, off).unwrap();
        }
        off += n as u64;
    }
}

fn qemu_check(img: &Path) {
    let o = run(Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(img));
    assert!(
        o.status.success(),
        "qemu-img check {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn qemu_compare(raw: &Path, fmt: &str, img: &Path) {
    let o = run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", fmt])
        .arg(raw)
        .arg(img));
    assert!(
        o.status.success(),
        "qemu-img compare {} {}: {}{}",
        raw.display(),
        img.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn compression_type(img: &Path) -> Option<String> {
    let json = run_ok(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(img),
    );
    json.split("\"compression-type\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(str::to_owned)
}

#[test]
fn qcow2_matrix_is_clean_equal_and_deterministic() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.raw");
    // Not a multiple of any cluster size (but of 512, as qemu sizes images in sectors).
    let len = (5 << 20) + 3 * 512;
    make_input(&input, len, 0x1234_5678);
    let dev = RawFile::open(&input).unwrap();
    for comp in [Compression::Zlib, Compression::Zstd, Compression::None] {
        for cs in [4096u32, 65536, 2 << 20] {
            let out = dir.path().join(format!("out-{comp:?}-{cs}.qcow2"));
            let opts = ConvertOptions {
                compression: comp,
                cluster_size: cs,
                ..ConvertOptions::default()
            };
            let rep = convert(&dev, &out, &opts, &NoProgress).unwrap();
            qemu_check(&out);
            qemu_compare(&input, "qcow2", &out);
            assert_eq!(rep.virtual_size, len);
            assert!(cs > 65536 || rep.clusters_zero > 0, "{rep:?}");
            if comp == Compression::None {
                assert_eq!(rep.clusters_compressed, 0);
            } else {
                assert!(rep.clusters_compressed > 0, "{comp:?} {cs}: {rep:?}");
            }
            if comp == Compression::Zstd {
                assert_eq!(compression_type(&out).as_deref(), Some("zstd"));
            } else {
                assert_eq!(compression_type(&out).as_deref(), Some("zlib"));
            }
            // Determinism: a second run gives the same bytes.
            let again = dir.path().join("again.qcow2");
            convert(&dev, &again, &opts, &NoProgress).unwrap();
            assert!(
                std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
                "{comp:?} {cs}: two runs differ"
            );
        }
    }
}

#[test]
fn qemu_reads_our_output_back_to_the_input() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.raw");
    let len = 3 << 20;
    make_input(&input, len, 99);
    let dev = RawFile::open(&input).unwrap();
    let out = dir.path().join("out.qcow2");
    convert(&dev, &out, &ConvertOptions::default(), &NoProgress).unwrap();
    let back = dir.path().join("back.raw");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&out)
            .arg(&back),
    );
    assert!(std::fs::read(&input).unwrap() == std::fs::read(&back).unwrap());
}

#[test]
fn raw_output_is_sparse_and_equal() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.raw");
    let len = (4 << 20) + 1000; // raw keeps the exact length
    make_input(&input, len, 7);
    let dev = RawFile::open(&input).unwrap();
    let out = dir.path().join("out.raw");
    let opts = ConvertOptions {
        format: OutputFormat::Raw,
        compression: Compression::None,
        ..ConvertOptions::default()
    };
    let rep = convert(&dev, &out, &opts, &NoProgress).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), len);
    assert!(std::fs::read(&input).unwrap() == std::fs::read(&out).unwrap());
    assert!(rep.bytes_written < len);
    // Holes where the input was zero.
    let got = RawFile::open(&out).unwrap();
    let holes: u64 = got
        .allocation(0, len)
        .unwrap()
        .iter()
        .filter(|r| r.kind.reads_as_zero())
        .map(|r| r.len)
        .sum();
    assert!(holes > 0);
    // Compressed raw is refused.
    let bad = ConvertOptions {
        format: OutputFormat::Raw,
        ..ConvertOptions::default()
    };
    assert!(convert(&dev, &out, &bad, &NoProgress).is_err());
}

#[test]
fn skipped_ranges_read_as_zero_and_are_not_read() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.raw");
    let len = 4 << 20;
    make_input(&input, len, 3);
    // Make sure the skipped ranges hold data.
    let dev = RawFile::open_rw(&input).unwrap();
    dev.write_at(&vec![0xAB; 300_000], 100_000).unwrap();
    dev.write_at(&vec![0xCD; 70_000], 2_000_000).unwrap();
    drop(dev);
    let mut skip = RangeSet::new();
    skip.insert(100_000, 300_000);
    skip.insert(2_000_000, 70_000);
    let twin = dir.path().join("twin.raw");
    std::fs::copy(&input, &twin).unwrap();
    let t = RawFile::open_rw(&twin).unwrap();
    for &(s, e) in skip.ranges() {
        t.write_at(&vec![0; (e - s) as usize], s).unwrap();
    }
    drop(t);
    let dev = RawFile::open(&input).unwrap();
    let out = dir.path().join("out.qcow2");
    let opts = ConvertOptions {
        skip: Some(&skip),
        ..ConvertOptions::default()
    };
    let rep = convert(&dev, &out, &opts, &NoProgress).unwrap();
    qemu_check(&out);
    qemu_compare(&twin, "qcow2", &out);
    assert!(rep.bytes_skipped >= skip.total());
    assert_eq!(rep.bytes_read + rep.bytes_skipped, len);
}

#[test]
fn tiny_clusters_span_many_refcount_blocks() {
    // 512-byte clusters: a refcount block covers 256 host clusters (128 KiB), compressed
    // runs often straddle host clusters, and uncompressed clusters interleave with them.
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.raw");
    let len = (3 << 20) + 512;
    make_input(&input, len, 0xfeed);
    let dev = RawFile::open(&input).unwrap();
    for (cs, comp) in [(512u32, Compression::Zlib), (1024, Compression::Zstd)] {
        let out = dir.path().join(format!("tiny-{cs}.qcow2"));
        let opts = ConvertOptions {
            compression: comp,
            cluster_size: cs,
            ..ConvertOptions::default()
        };
        let rep = convert(&dev, &out, &opts, &NoProgress).unwrap();
        assert!(
            rep.clusters_compressed > 0 && rep.clusters_raw > 0,
            "{rep:?}"
        );
        qemu_check(&out);
        qemu_compare(&input, "qcow2", &out);
    }
}

#[test]
fn empty_and_all_zero_inputs() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    for len in [0usize, 512, 3 << 20] {
        let dev = imgscrub_disk::MemDev::zeroed(len);
        let out = dir.path().join(format!("z-{len}.qcow2"));
        let rep = convert(&dev, &out, &ConvertOptions::default(), &NoProgress).unwrap();
        assert_eq!(rep.bytes_written, rep.output_size);
        assert_eq!(rep.clusters_compressed + rep.clusters_raw, 0);
        qemu_check(&out);
        let raw = dir.path().join(format!("z-{len}.raw"));
        std::fs::write(&raw, vec![0u8; len]).unwrap();
        qemu_compare(&raw, "qcow2", &out);
    }
}

/// The output does not depend on how many workers ran or in which order they finished.
#[test]
fn output_is_the_same_for_any_number_of_workers() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.raw");
    let len = 9 << 20;
    make_input(&input, len, 0x5eed);
    let dev = RawFile::open(&input).unwrap();
    // Small clusters: many groups, many chances for workers to finish out of order.
    let opts = ConvertOptions {
        cluster_size: 4096,
        ..ConvertOptions::default()
    };
    let mut outputs = Vec::new();
    for threads in [1, 2, 3, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = dir.path().join(format!("out-{threads}.qcow2"));
        pool.install(|| convert(&dev, &out, &opts, &NoProgress))
            .unwrap();
        qemu_check(&out);
        outputs.push(std::fs::read(&out).unwrap());
    }
    qemu_compare(&input, "qcow2", &dir.path().join("out-8.qcow2"));
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "outputs differ");
}

/// An input that fails to read part-way (a dying disk, a truncated backing file) ends the
/// conversion with that error, whichever worker hit it: no hang, no panic.
#[test]
fn a_read_error_stops_every_worker() {
    struct Failing(imgscrub_disk::MemDev);
    impl BlockDev for Failing {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> imgscrub_disk::Result<()> {
            if offset + buf.len() as u64 > 5 << 20 {
                return Err(imgscrub_disk::DiskError::OutOfRange {
                    what: "test: unreadable sector",
                    offset,
                    len: buf.len() as u64,
                    size: self.0.len(),
                });
            }
            self.0.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> imgscrub_disk::Result<()> {
            self.0.write_at(buf, offset)
        }
        fn flush(&self) -> imgscrub_disk::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let dev = Failing(imgscrub_disk::MemDev::from_vec(data));
    // An existing output is untouched by a failed conversion, and nothing else is left.
    let out = dir.path().join("out.qcow2");
    std::fs::write(&out, b"previous output").unwrap();
    for threads in [1, 2, 4] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = dir.path().join("out.qcow2");
        let err = pool
            .install(|| convert(&dev, &out, &ConvertOptions::default(), &NoProgress))
            .unwrap_err();
        assert!(err.to_string().contains("unreadable sector"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"previous output");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

/// `Progress::cancelled` stops a conversion part-way: `Cancelled`, and neither the output nor
/// a temporary file is left.
#[test]
fn a_cancelled_conversion_leaves_nothing() {
    struct CancelAfter(std::sync::atomic::AtomicU64);
    impl imgscrub_shrink::Progress for CancelAfter {
        fn advance(&self, _n: u64) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn cancelled(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::Relaxed) >= 3
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..32u32 << 20).map(|i| (i / 3 % 251) as u8).collect();
    let dev = imgscrub_disk::MemDev::from_vec(data);
    let out = dir.path().join("out.qcow2");
    let progress = CancelAfter(0.into());
    let err = convert(&dev, &out, &ConvertOptions::default(), &progress).unwrap_err();
    assert!(
        matches!(err, imgscrub_shrink::ShrinkError::Cancelled),
        "{err}"
    );
    assert_eq!(progress.0.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// VMDK and VHD outputs: the same bytes whatever the number of workers (and the names stay
/// the same: a VMDK descriptor names its file), equal to the input for qemu-img.
#[test]
fn vmdk_and_vhd_are_the_same_for_any_number_of_workers() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.raw");
    // Past one grain table (32 MiB) and one VHD block, not a whole MiB.
    let len = (35 << 20) + 4096;
    make_input(&input, len, 0x7ee7);
    let dev = RawFile::open(&input).unwrap();
    for (format, qfmt, name) in [
        (OutputFormat::Vmdk, "vmdk", "out.vmdk"),
        (OutputFormat::VhdFixed, "vpc", "out.vhd"),
        (OutputFormat::VhdDynamic, "vpc", "dyn.vhd"),
    ] {
        let opts = ConvertOptions {
            format,
            cluster_size: 16384,
            ..ConvertOptions::default()
        };
        let mut outputs = Vec::new();
        for threads in [1, 3] {
            let sub = dir.path().join(format!("t{threads}"));
            std::fs::create_dir_all(&sub).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let out = sub.join(name);
            let r = pool
                .install(|| convert(&dev, &out, &opts, &NoProgress))
                .unwrap();
            assert_eq!(r.output_size, std::fs::metadata(&out).unwrap().len());
            qemu_compare(&input, qfmt, &out);
            outputs.push(std::fs::read(&out).unwrap());
        }
        assert!(outputs[0] == outputs[1], "{name}: outputs differ");
        if format == OutputFormat::Vmdk {
            let o = run_ok(
                Command::new("qemu-img")
                    .args(["check", "-f", "vmdk"])
                    .arg(dir.path().join("t1").join(name)),
            );
            assert!(o.contains("No errors"), "{o}");
        }
        if format == OutputFormat::VhdFixed {
            assert_eq!(outputs[0].len() as u64, (36 << 20) + 512);
        }
    }
}
