//! jbd2 replay on damaged journals: (1) flip bytes of a template whose journal holds
//! committed transactions and open it writable (which replays); (2) replay an arbitrary byte
//! string used as the whole journal of a synthetic filesystem.
#![no_main]

#[path = "ext4_common/mod.rs"]
mod common;

use imgscrub_disk::{BlockDev, MemDev};
use imgscrub_ext4::fs::{Ext4Fs, OpenOptions};
use imgscrub_ext4::{Ext4Error, journal};
use libfuzzer_sys::fuzz_target;

const BS: usize = 1024;
const FS_BLOCKS: usize = 64;

/// A minimal ext4 superblock (1 KiB blocks, has_journal, journal inode 8, RECOVER set):
/// only the fields `journal::replay` reads.
fn synthetic(journal: &[u8]) -> (MemDev, u64) {
    let jblocks = journal.len().div_ceil(BS).clamp(1, 512);
    let mut img = vec![0u8; (FS_BLOCKS + jblocks) * BS];
    let sb = &mut img[1024..2048];
    sb[0x04..0x08].copy_from_slice(&((FS_BLOCKS + jblocks) as u32).to_le_bytes());
    sb[0x18..0x1C].copy_from_slice(&0u32.to_le_bytes());
    sb[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
    sb[0x5C..0x60].copy_from_slice(&0x4u32.to_le_bytes());
    sb[0x60..0x64].copy_from_slice(&0x4u32.to_le_bytes());
    sb[0xE0..0xE4].copy_from_slice(&8u32.to_le_bytes());
    let n = journal.len().min(jblocks * BS);
    img[FS_BLOCKS * BS..FS_BLOCKS * BS + n].copy_from_slice(&journal[..n]);
    (MemDev::from_vec(img), jblocks as u64)
}

fuzz_target!(|data: &[u8]| {
    // (1) A real image, damaged.
    let img = common::overlay(common::dirty(), data);
    if let Ok(fs) = Ext4Fs::open(MemDev::from_vec(img), OpenOptions { writable: true }) {
        common::walk(&fs, 200);
    }
    // (2) The input is the journal.
    let (dev, jblocks) = synthetic(data);
    let map = |l: u64| -> Result<u64, Ext4Error> {
        if l < jblocks {
            Ok(FS_BLOCKS as u64 + l)
        } else {
            Err(Ext4Error::corrupt("journal", "unmapped"))
        }
    };
    let _ = journal::plan_replay(&dev, BS as u32, &map, jblocks);
    let before = dev.to_vec();
    if journal::replay(&dev, BS as u32, &map, jblocks).is_err() {
        // A refused replay writes nothing.
        assert!(dev.to_vec() == before, "failed replay modified the device");
    }
    let _ = dev.len();
});
