//! Flip bytes of a valid template image (superblock, group descriptors, bitmaps, inodes,
//! extent blocks, directory and htree blocks, xattrs) and read it all, then edit it.
#![no_main]

#[path = "ext4_common/mod.rs"]
mod common;

use imgscrub_disk::MemDev;
use imgscrub_ext4::fs::{Ext4Fs, OpenOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let img = common::overlay(common::clean(), data);
    if let Ok(fs) = Ext4Fs::open(MemDev::from_vec(img.clone()), OpenOptions { writable: false }) {
        common::walk(&fs, 500);
    }
    if let Ok(mut fs) = Ext4Fs::open(MemDev::from_vec(img), OpenOptions { writable: true }) {
        common::edit(&mut fs);
        common::walk(&fs, 500);
    }
});
