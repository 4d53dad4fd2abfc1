//! Shared helpers for the qcow2 integration tests: a seeded RNG, source images with random,
//! zero and pattern regions, and wrappers around `qemu-img` / `qemu-io`.
#![allow(dead_code)]

use imgscrub_disk::BlockDev;
use imgscrub_testkit::{require_tool, run, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// True when qemu-img and qemu-io are available (else the test is skipped, or fails in CI).
pub fn have_qemu() -> bool {
    require_tool("qemu-img").is_some() && require_tool("qemu-io").is_some()
}

/// Contents of a source disk: a mix of random, zero and repeating-pattern regions of
/// assorted sizes (some shorter than a sector, some spanning many clusters).
pub fn source_data(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = vec![0u8; size];
    let mut pos = 0;
    while pos < size {
        let len = match rng.below(4) {
            0 => 1 + rng.below(700) as usize,
            1 => 1 + rng.below(70_000) as usize,
            _ => 1 + rng.below(400_000) as usize,
        }
        .min(size - pos);
        let region = &mut data[pos..pos + len];
        match rng.below(3) {
            0 => rng.fill(region),
            1 => {}
            _ => {
                let pat = (rng.next() as u8) | 1;
                for (i, b) in region.iter_mut().enumerate() {
                    *b = pat.wrapping_add((i % 13) as u8);
                }
            }
        }
        pos += len;
    }
    data
}

/// Write a raw source image.
pub fn write_raw(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

pub fn qemu_img(args: &[&str], dir: &Path) -> String {
    run_ok(Command::new("qemu-img").args(args).current_dir(dir))
}

pub fn qemu_io(image: &Path, fmt: &str, cmds: &[&str]) {
    let mut c = Command::new("qemu-io");
    c.arg("-f").arg(fmt);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(image);
    run_ok(&mut c);
}

/// `qemu-img convert -O raw` of `image` into a new file, returned as bytes.
pub fn qemu_raw(image: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "{}.oracle.raw",
        image.file_name().unwrap().to_string_lossy()
    ));
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(image)
            .arg(&out),
    );
    let d = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    d
}

/// Read the whole device through `BlockDev::read_at` in uneven chunks.
pub fn read_all(dev: &dyn BlockDev) -> Vec<u8> {
    let len = dev.len() as usize;
    let mut out = vec![0u8; len];
    let mut pos = 0;
    let mut step = 1usize << 20;
    while pos < len {
        let n = step.min(len - pos);
        dev.read_at(&mut out[pos..pos + n], pos as u64).unwrap();
        pos += n;
        step = if step == 1 << 20 { 777_777 } else { 1 << 20 };
    }
    out
}

/// Assert two buffers are equal, reporting the first difference.
pub fn assert_same(ours: &[u8], oracle: &[u8], what: &str) {
    assert_eq!(ours.len(), oracle.len(), "{what}: length differs");
    if let Some(i) = ours.iter().zip(oracle).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i:#x} (cluster-64K {}): ours {:#04x}, qemu {:#04x}",
            i >> 16,
            ours[i],
            oracle[i]
        );
    }
}

/// Every range `allocation()` calls zero must read as zeros; ranges cover the device.
pub fn check_allocation(dev: &dyn BlockDev, data: &[u8]) {
    let ranges = dev.allocation(0, dev.len()).unwrap();
    let mut pos = 0;
    for r in &ranges {
        assert_eq!(r.offset, pos, "allocation ranges must be contiguous");
        if r.kind.reads_as_zero() {
            let s = &data[r.offset as usize..(r.offset + r.len) as usize];
            assert!(
                s.iter().all(|&b| b == 0),
                "range {r:?} is reported zero but holds data"
            );
        }
        pos += r.len;
    }
    assert_eq!(pos, dev.len());
}

/// `qemu-img check` must exit 0: no corruption, no leaks.
pub fn assert_check_clean(image: &Path) {
    let o = run(Command::new("qemu-img").arg("check").arg(image));
    assert!(
        o.status.success(),
        "qemu-img check {} failed ({}):\n{}{}",
        image.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `qemu-img compare` says identical.
pub fn assert_compare_identical(raw: &Path, image: &Path) {
    let o = run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(raw)
        .arg(image));
    assert!(
        o.status.success(),
        "qemu-img compare {} {} ({}):\n{}{}",
        raw.display(),
        image.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Open `path` read-write once an earlier handle's lock is gone. The image lock is an OFD
/// lock, alive as long as any copy of its descriptor: a parallel test thread that forks a
/// child (qemu-img, qemu-io) at the moment of the drop holds a copy until the child's exec
/// closes it, which under load can take a while. Poll generously instead of expecting the
/// release to be instantaneous; a lock that never goes away still fails.
pub fn open_rw_once_released(path: &Path) -> imgscrub_qcow2::Qcow2 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match imgscrub_qcow2::Qcow2::open(path, &imgscrub_qcow2::OpenOptions::read_write()) {
            Ok(q) => return q,
            Err(imgscrub_qcow2::Qcow2Error::InUse(e)) if std::time::Instant::now() < deadline => {
                eprintln!("still locked, retrying: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}
