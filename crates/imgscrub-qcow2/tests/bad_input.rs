#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Damaged and refused images: every case must give a clean `Err` with a one-line message,
//! never a panic, and never change the file.

mod common;

use common::*;
use imgscrub_disk::{BlockDev, MemDev};
use imgscrub_qcow2::{DevStorage, OpenOptions, Qcow2, Qcow2Error};
use std::path::Path;

fn small_image(d: &Path, opts: &str) -> Vec<u8> {
    write_raw(&p(d, "src.raw"), &source_data(1 << 20, 5));
    qemu_img(
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            opts,
            "src.raw",
            "img.qcow2",
        ],
        d,
    );
    std::fs::read(p(d, "img.qcow2")).unwrap()
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Open `bytes` from a file both read-only and read-write, and in memory; all must fail with
/// a message containing `needle`, and the file must be unchanged.
fn expect_err(d: &Path, bytes: &[u8], needle: &str) {
    let path = p(d, "bad.qcow2");
    std::fs::write(&path, bytes).unwrap();
    for opts in [OpenOptions::read_only(), OpenOptions::read_write()] {
        let msg = match Qcow2::open(&path, &opts) {
            Ok(_) => panic!("expected an error containing {needle:?}"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
        assert!(!msg.contains('\n'), "one-line message: {msg:?}");
    }
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "file must be untouched"
    );
    let mem = DevStorage(MemDev::from_vec(bytes.to_vec()).read_only());
    assert!(Qcow2::from_storage(Box::new(mem), &OpenOptions::read_only()).is_err());
}

/// Opening succeeds but reading everything fails cleanly (bad table entries).
fn expect_read_err(d: &Path, bytes: &[u8], needle: &str) {
    let path = p(d, "bad.qcow2");
    std::fs::write(&path, bytes).unwrap();
    let img = Qcow2::open(&path, &OpenOptions::read_only()).unwrap();
    let mut buf = vec![0u8; img.len() as usize];
    let e = img.read_at(&mut buf, 0).unwrap_err();
    assert!(e.to_string().contains(needle), "expected {needle:?} in {e}");
    // Writing into the first cluster that cannot be read must fail too.
    let cs = img.cluster_size();
    let mut cl = vec![0u8; cs as usize];
    let bad = (0..img.len() / cs)
        .map(|c| c * cs)
        .find(|&o| img.read_at(&mut cl, o).is_err())
        .unwrap();
    drop(img);
    let rw = open_rw_once_released(&path);
    assert!(rw.write_at(&[1u8; 100], bad + 7).is_err());
    drop(rw);
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "file must be untouched"
    );
}

#[test]
fn garbage_and_truncated() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let good = small_image(d, "cluster_size=4096");
    let mut rng = Rng::new(9);
    let mut garbage = vec![0u8; 8192];
    rng.fill(&mut garbage);
    expect_err(d, &garbage, "bad magic");
    expect_err(d, &[], "shorter than a qcow2 header");
    expect_err(d, &good[..100], "truncated");
    // Cut inside the tables.
    expect_err(d, &good[..4096 + 100], "past the end of the file");
    // Cut inside the data: opening works, reading fails.
    let cut = &good[..(good.len() / 4096 / 2) * 4096];
    expect_read_err(d, cut, "past the end of the file");
    // A short last cluster reads as zeros past the end of the file, as in QEMU.
    let short = &good[..good.len() - 100];
    std::fs::write(p(d, "short.qcow2"), short).unwrap();
    let img = Qcow2::open(p(d, "short.qcow2"), &OpenOptions::read_only()).unwrap();
    read_all(&img);
}

#[test]
fn absurd_header_fields() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let good = small_image(d, "cluster_size=65536");
    let mut b = good.clone();
    put32(&mut b, 36, u32::MAX);
    expect_err(d, &b, "l1_size");
    let mut b = good.clone();
    put32(&mut b, 36, 0);
    expect_err(d, &b, "too small");
    let mut b = good.clone();
    put64(&mut b, 40, 1 << 50);
    expect_err(d, &b, "past the end of the file");
    let mut b = good.clone();
    put64(&mut b, 40, 0x10008);
    expect_err(d, &b, "not cluster aligned");
    let mut b = good.clone();
    put32(&mut b, 20, 30);
    expect_err(d, &b, "cluster_bits");
    let mut b = good.clone();
    put32(&mut b, 20, 8);
    expect_err(d, &b, "cluster_bits");
    let mut b = good.clone();
    put32(&mut b, 56, 0x00ff_ffff);
    expect_err(d, &b, "refcount_table_clusters");
    let mut b = good.clone();
    put64(&mut b, 24, u64::MAX);
    expect_err(d, &b, "virtual size");
    let mut b = good.clone();
    put32(&mut b, 4, 4);
    expect_err(d, &b, "version 4");
    let mut b = good.clone();
    put32(&mut b, 96, 7);
    expect_err(d, &b, "refcount_order");
    let mut b = good.clone();
    put32(&mut b, 100, 100);
    expect_err(d, &b, "header_length");
    // Backing name outside the first cluster.
    let mut b = good.clone();
    put64(&mut b, 8, 65530);
    put32(&mut b, 16, 100);
    expect_err(d, &b, "backing file name");
}

#[test]
fn bad_table_entries() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let good = small_image(d, "cluster_size=65536");
    let l1 = u64::from_be_bytes(good[40..48].try_into().unwrap()) as usize;
    let l2 =
        (u64::from_be_bytes(good[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00) as usize;
    // L1 entry pointing past the end of the file.
    let mut b = good.clone();
    put64(&mut b, l1, (1u64 << 63) | (1 << 40));
    expect_read_err(d, &b, "past the end of the file");
    // Unaligned L2 table.
    let mut b = good.clone();
    put64(&mut b, l1, (1u64 << 63) | 0x10200);
    expect_read_err(d, &b, "not cluster aligned");
    // Data cluster past the end of the file.
    let mut b = good.clone();
    put64(&mut b, l2, (1u64 << 63) | (1 << 45));
    expect_read_err(d, &b, "past the end of the file");
    // Data cluster pointing at the L2 table itself: readable (it is just bytes), but a write
    // there would destroy metadata and must be refused.
    let mut b = good.clone();
    put64(&mut b, l2, (1u64 << 63) | l2 as u64);
    let path = p(d, "self.qcow2");
    std::fs::write(&path, &b).unwrap();
    let rw = Qcow2::open(&path, &OpenOptions::read_write()).unwrap();
    let e = rw.write_at(&[1u8; 100], 10).unwrap_err();
    assert!(
        e.to_string().contains("L2 table or a refcount block"),
        "{e}"
    );
    drop(rw);
    assert!(std::fs::read(&path).unwrap() == b, "file must be untouched");
    // Compressed cluster with garbage data.
    let mut b = good.clone();
    put64(&mut b, l2, (1u64 << 62) | 0x100);
    expect_read_err(d, &b, "compressed cluster");
}

#[test]
fn refused_features() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let good = small_image(d, "compat=1.1");
    let mut b = good.clone();
    put32(&mut b, 32, 1);
    expect_err(d, &b, "encrypted");
    let mut b = good.clone();
    put64(&mut b, 72, 1 << 1);
    expect_err(d, &b, "marked corrupt");
    let mut b = good.clone();
    put64(&mut b, 72, 1 << 7);
    expect_err(d, &b, "unknown incompatible feature bit 7");
    // A named unknown bit: rename "extended l2" in the feature table to bit 9.
    let mut b = good.clone();
    let pos = b.windows(11).position(|w| w == b"extended L2").unwrap();
    b[pos - 1] = 9;
    put64(&mut b, 72, 1 << 9);
    expect_err(d, &b, "bit 9 (extended L2 entries)");

    // Dirty: read-only is fine, read-write refused with the repair hint.
    let mut b = good.clone();
    put64(&mut b, 72, 1);
    let path = p(d, "dirty.qcow2");
    std::fs::write(&path, &b).unwrap();
    let ro = Qcow2::open(&path, &OpenOptions::read_only()).unwrap();
    assert!(read_all(&ro) == source_data(1 << 20, 5));
    let e = Qcow2::open(&path, &OpenOptions::read_write()).unwrap_err();
    assert!(matches!(e, Qcow2Error::Dirty));
    assert!(e.to_string().contains("qemu-img check -r all"), "{e}");
    assert!(std::fs::read(&path).unwrap() == b, "file must be untouched");

    // Internal snapshots: readable, not writable.
    std::fs::write(p(d, "snap.qcow2"), &good).unwrap();
    qemu_img(&["snapshot", "-c", "s1", "snap.qcow2"], d);
    let ro = Qcow2::open(p(d, "snap.qcow2"), &OpenOptions::read_only()).unwrap();
    assert!(read_all(&ro) == source_data(1 << 20, 5));
    let e = Qcow2::open(p(d, "snap.qcow2"), &OpenOptions::read_write()).unwrap_err();
    assert!(e.to_string().contains("snapshots"), "{e}");

    // External data file.
    qemu_img(
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "data_file=data.raw",
            "ext.qcow2",
            "1M",
        ],
        d,
    );
    let e = Qcow2::open(p(d, "ext.qcow2"), &OpenOptions::read_only()).unwrap_err();
    assert!(e.to_string().contains("external data file"), "{e}");
}

#[test]
fn backing_loop_and_missing() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    qemu_img(&["create", "-f", "qcow2", "b.qcow2", "1M"], d);
    qemu_img(
        &[
            "create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2", "1M",
        ],
        d,
    );
    qemu_img(
        &["rebase", "-u", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2"],
        d,
    );
    let before = std::fs::read(p(d, "a.qcow2")).unwrap();
    for opts in [OpenOptions::read_only(), OpenOptions::read_write()] {
        let e = Qcow2::open(p(d, "a.qcow2"), &opts).unwrap_err();
        assert!(matches!(e, Qcow2Error::BackingLoop(_)), "{e}");
        assert!(e.to_string().contains("loops"), "{e}");
    }
    assert!(std::fs::read(p(d, "a.qcow2")).unwrap() == before);
    // Self loop.
    qemu_img(&["create", "-f", "qcow2", "s.qcow2", "1M"], d);
    qemu_img(
        &["rebase", "-u", "-b", "s.qcow2", "-F", "qcow2", "s.qcow2"],
        d,
    );
    assert!(matches!(
        Qcow2::open(p(d, "s.qcow2"), &OpenOptions::read_only()),
        Err(Qcow2Error::BackingLoop(_))
    ));
    // Missing backing file.
    qemu_img(
        &["rebase", "-u", "-b", "gone.qcow2", "-F", "qcow2", "b.qcow2"],
        d,
    );
    let e = Qcow2::open(p(d, "b.qcow2"), &OpenOptions::read_only()).unwrap_err();
    assert!(e.to_string().contains("gone.qcow2"), "{e}");
    // Depth limit.
    qemu_img(&["create", "-f", "qcow2", "c0.qcow2", "1M"], d);
    for i in 1..6 {
        let prev = format!("c{}.qcow2", i - 1);
        let cur = format!("c{i}.qcow2");
        qemu_img(
            &[
                "create", "-f", "qcow2", "-b", &prev, "-F", "qcow2", &cur, "1M",
            ],
            d,
        );
    }
    let shallow = OpenOptions {
        max_backing_depth: 3,
        ..OpenOptions::read_only()
    };
    assert!(matches!(
        Qcow2::open(p(d, "c5.qcow2"), &shallow),
        Err(Qcow2Error::BackingTooDeep(3))
    ));
    assert!(Qcow2::open(p(d, "c5.qcow2"), &OpenOptions::read_only()).is_ok());
}

/// Random single-byte corruptions of a real image: never a panic.
#[test]
fn random_corruption_never_panics() {
    if !have_qemu() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    let good = small_image(d, "cluster_size=4096,extended_l2=off");
    let mut rng = Rng::new(77);
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            // Aim at the metadata (first clusters) most of the time.
            let lim = if rng.below(4) == 0 { b.len() } else { 5 * 4096 };
            let i = rng.below(lim as u64) as usize;
            b[i] = rng.next() as u8;
        }
        let mem = DevStorage(MemDev::from_vec(b.clone()));
        if let Ok(img) = Qcow2::from_storage(Box::new(mem), &OpenOptions::read_only()) {
            let mut buf = vec![0u8; 64 << 10];
            let mut off = 0;
            while off < img.len() {
                let n = (img.len() - off).min(buf.len() as u64) as usize;
                let _ = img.read_at(&mut buf[..n], off);
                off += n as u64;
            }
            let _ = img.allocation(0, img.len());
        }
        // The write paths (and the refcount repair of dirty lazy images) on the same input.
        let mem = imgscrub_qcow2::MemStorage::from_vec(b);
        if let Ok(img) = Qcow2::from_storage(Box::new(mem), &OpenOptions::read_write()) {
            let len = img.len();
            let off = rng.below(len.max(1));
            let n = (len - off.min(len)).min(1 + rng.below(20_000));
            let _ = img.write_at(&vec![0x5a; n as usize], off);
            let _ = img.write_zeroes(off / 2, n);
            let _ = img.discard(0, len.min(70_000));
            let _ = img.flush();
        }
    }
}

/// An image served by `qemu-nbd` (which locks it) cannot be opened for writing.
#[test]
fn image_in_use_by_qemu_is_refused() {
    if !have_qemu() || imgscrub_testkit::require_tool("qemu-nbd").is_none() {
        return;
    }
    let dir = tmp();
    let d = dir.path();
    qemu_img(&["create", "-f", "qcow2", "busy.qcow2", "1M"], d);
    let sock = p(d, "nbd.sock");
    let mut child = std::process::Command::new("qemu-nbd")
        .args(["-f", "qcow2", "-t", "-k"])
        .arg(&sock)
        .arg(p(d, "busy.qcow2"))
        .spawn()
        .unwrap();
    // Wait for the signs that qemu-nbd holds the image: its socket exists and `qemu-img info`
    // (which does not share "write") is refused. Polled with a limit of minutes, not
    // seconds: on a loaded machine qemu-nbd can take long to start.
    imgscrub_testkit::wait_until("qemu-nbd serves and locks busy.qcow2", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("qemu-nbd exited: {status}");
        }
        sock.exists()
            && !imgscrub_testkit::run(
                imgscrub_testkit::tool("qemu-img")
                    .arg("info")
                    .arg(p(d, "busy.qcow2")),
            )
            .status
            .success()
    });
    let before = std::fs::read(p(d, "busy.qcow2")).unwrap();
    let res = Qcow2::open(p(d, "busy.qcow2"), &OpenOptions::read_write());
    let ro = Qcow2::open(p(d, "busy.qcow2"), &OpenOptions::read_only());
    let created = Qcow2::create(p(d, "busy.qcow2"), 1 << 20, &Default::default());
    let after = std::fs::read(p(d, "busy.qcow2")).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(sock.exists(), "qemu-nbd did not start");
    let e = res.unwrap_err();
    assert!(matches!(e, Qcow2Error::InUse(_)), "{e}");
    assert!(ro.is_ok());
    assert!(matches!(created, Err(Qcow2Error::InUse(_))));
    assert!(after == before, "create must not truncate an image in use");
    // Once qemu-nbd is gone, writing works.
    assert!(Qcow2::open(p(d, "busy.qcow2"), &OpenOptions::read_write()).is_ok());
}
