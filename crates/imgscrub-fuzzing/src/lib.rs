//! The bodies of imgscrub's fuzz targets.
//!
//! Each `pub fn` here takes the raw fuzz input and drives one parser (and, where it makes
//! sense, the write paths on top of it): any input must end in `Ok` or a clean `Err` —
//! never a panic, a hang or a huge allocation. The functions `assert!` the invariants a
//! caller relies on (a partition lies inside its device, a refused journal replay wrote
//! nothing, a block map only points inside the filesystem…).
//!
//! Two callers share them, so that what was fuzzed is exactly what CI replays:
//! - `fuzz/fuzz_targets/*.rs`: one-line cargo-fuzz targets (nightly + libFuzzer);
//! - `tests/corpus.rs`: replays the committed, minimised corpora in `fuzz/corpus/<target>/`
//!   and every past crash in `fuzz/regressions/<target>/` on stable, in `cargo test`.
//!
//! [`TARGETS`] lists them by the name their cargo-fuzz target has.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod ext4;
mod fat;
mod formats;
mod lvm;
mod patchdev;
mod structures;
mod templates;
mod walk;
mod xfs;

pub use ext4::{ext4_image, ext4_journal, ext4_open};
pub use fat::{fat_image, fat_open};
pub use formats::formats_open;
pub use lvm::{lvm, synthetic_pv};
pub use structures::ext4_structures;
pub use xfs::{xfs_image, xfs_open, xfs_structures};

use imgscrub_disk::partition::discover;
use imgscrub_disk::{BlockDev, MemDev};
use imgscrub_qcow2::{DevStorage, MemStorage, OpenOptions, Qcow2};

/// A target's body: takes the raw fuzz input.
pub type Body = fn(&[u8]);

/// Every target: (cargo-fuzz name, body).
pub const TARGETS: &[(&str, Body)] = &[
    ("qcow2_open", qcow2_open),
    ("partitions", partitions),
    ("ext4_open", ext4_open),
    ("ext4_image", ext4_image),
    ("ext4_journal", ext4_journal),
    ("ext4_structures", ext4_structures),
    ("fat_open", fat_open),
    ("fat_image", fat_image),
    ("xfs_open", xfs_open),
    ("xfs_image", xfs_image),
    ("xfs_structures", xfs_structures),
    ("formats_open", formats_open),
    ("lvm", lvm),
];

/// Open the input as a qcow2 image held in memory, read through it, then open it read-write
/// and write, zero and discard.
pub fn qcow2_open(data: &[u8]) {
    let dev = MemDev::from_vec(data.to_vec()).read_only();
    let opts = OpenOptions {
        // Keep memory small whatever the cluster size.
        l2_cache_bytes: 1 << 20,
        refcount_cache_bytes: 1 << 20,
        ..OpenOptions::read_only()
    };
    let Ok(img) = Qcow2::from_storage(Box::new(DevStorage(dev)), &opts) else {
        return;
    };
    let len = img.len();
    let _ = img.allocation(0, len.min(1 << 30));
    // Read the start, a few spots and the end; bounded work per input.
    let mut buf = vec![0u8; 64 << 10];
    let spots = [0, len / 3, len / 2, len.saturating_sub(buf.len() as u64)];
    for off in spots {
        let n = (len - off.min(len)).min(buf.len() as u64) as usize;
        let _ = img.read_at(&mut buf[..n], off);
    }
    drop(img);
    // The write paths on the same bytes, in a growable in-memory file.
    let rw = OpenOptions {
        writable: true,
        ..opts
    };
    let Ok(img) = Qcow2::from_storage(Box::new(MemStorage::from_vec(data.to_vec())), &rw) else {
        return;
    };
    let len = img.len();
    let n = len.min(70_000) as usize;
    let _ = img.write_at(&vec![0x5a; n], len.saturating_sub(n as u64) / 2);
    let _ = img.write_zeroes(0, len.min(300_000));
    let _ = img.discard(len / 4, len.min(200_000));
    let _ = img.flush();
}

/// Partition discovery (GPT primary and backup, MBR, EBR chains): every partition it
/// returns lies inside the device, so slicing it and reading its last byte work.
pub fn partitions(data: &[u8]) {
    // Inputs are small; pad to at least 64 KiB so that GPT entry arrays and EBR chains have
    // room, with the input both at the start and at the end (backup GPT).
    let len = data.len().max(64 << 10);
    let mut front = vec![0u8; len];
    front[..data.len()].copy_from_slice(data);
    let mut back = vec![0u8; len];
    back[len - data.len()..].copy_from_slice(data);
    let head = data.len().min(8192);
    back[..head].copy_from_slice(&data[..head]);
    for dev in [MemDev::from_vec(front), MemDev::from_vec(back)] {
        let Ok(table) = discover(&dev) else { continue };
        for p in &table.partitions {
            assert!(p.end() <= dev.len(), "partition {} past the end", p.index);
            let slice = p.slice(&dev);
            assert!(slice.is_ok(), "partition {} cannot be sliced", p.index);
            if let Ok(s) = slice
                && s.len() > 0
            {
                let mut b = [0u8; 1];
                assert!(s.read_at(&mut b, s.len() - 1).is_ok(), "read last byte");
            }
        }
    }
}
