//! Open arbitrary bytes as an ext4 filesystem (superblock, group descriptors, root inode)
//! and read through it: `Ok` or a clean `Err`, never a panic, a hang or a huge allocation.
#![no_main]

#[path = "ext4_common/mod.rs"]
mod common;

use imgscrub_disk::MemDev;
use imgscrub_ext4::fs::{Ext4Fs, OpenOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dev = MemDev::from_vec(data.to_vec()).read_only();
    if let Ok(fs) = Ext4Fs::open(dev, OpenOptions { writable: false }) {
        common::walk(&fs, 200);
    }
});
