//! ext4 targets on whole filesystems: arbitrary bytes, a damaged template, damaged journals.

use crate::templates::{ext4_clean, ext4_dirty, overlay};
use crate::walk::walk;
use imgscrub_disk::{BlockDev, MemDev};
use imgscrub_ext4::fs::Ext4Fs;
use imgscrub_ext4::{Ext4Error, NewAttr, journal};
use imgscrub_fs::Ext4;

/// A few edits on a writable filesystem; errors are fine, panics are not.
fn edit(fs: &mut Ext4Fs<MemDev>) {
    let root = fs.root();
    let attr = NewAttr::default();
    if let Ok(f) = fs.create(root, b"fuzz-file", &attr) {
        let _ = fs.write(f, 0, &[0x5a; 5000]);
        let _ = fs.truncate(f, 100);
    }
    let _ = fs.mkdir(root, b"fuzz-dir", &attr);
    if let Ok(Some(d)) = fs.lookup(root, b"dir") {
        let _ = fs.create(d, b"another-entry", &attr);
        let _ = fs.unlink(d, b"entry-7");
    }
    let _ = fs.remove_tree(root, b"frag");
    let _ = fs.rename(root, b"etc", root, b"etc2");
    let _ = fs.flush();
}

/// Open arbitrary bytes as an ext4 filesystem (superblock, group descriptors, root inode)
/// and read through it. Short inputs are padded with zeros to 64 KiB, so that the first
/// 16 KiB of a small real filesystem (all its metadata) is a whole filesystem.
pub fn ext4_open(data: &[u8]) {
    let mut bytes = data.to_vec();
    if bytes.len() < 64 << 10 {
        bytes.resize(64 << 10, 0);
    }
    if let Ok(fs) = Ext4::open(MemDev::from_vec(bytes).read_only(), false) {
        walk(&fs, 200, 1 << 20);
    }
}

/// Flip bytes of a valid template image (superblock, group descriptors, bitmaps, inodes,
/// extent blocks, directory and htree blocks, xattrs) and read it all, then edit it.
pub fn ext4_image(data: &[u8]) {
    let Some((&mode, records)) = data.split_first() else {
        return;
    };
    let img = overlay(ext4_clean(), mode, records, 1 << 20);
    if let Ok(fs) = Ext4::open(MemDev::from_vec(img.clone()), false) {
        walk(&fs, 500, 1 << 20);
    }
    if let Ok(mut fs) = Ext4::open(MemDev::from_vec(img), true) {
        edit(fs.engine_mut());
        walk(&fs, 500, 1 << 20);
    }
}

const BS: usize = 1024;
const FS_BLOCKS: usize = 64;

/// A minimal ext4 superblock (1 KiB blocks, has_journal, journal inode 8, RECOVER set) with
/// `journal` as its journal: only the fields `journal::replay` reads.
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

/// jbd2 replay on damaged journals: (1) flip bytes of a template whose journal holds
/// committed transactions and open it writable (which replays); (2) replay the input used as
/// the whole journal of a synthetic filesystem. A refused replay must write nothing.
pub fn ext4_journal(data: &[u8]) {
    if let Some((&mode, records)) = data.split_first() {
        let img = overlay(ext4_dirty(), mode, records, 1 << 20);
        if let Ok(fs) = Ext4::open(MemDev::from_vec(img), true) {
            walk(&fs, 200, 1 << 20);
        }
    }
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
        assert!(dev.to_vec() == before, "failed replay modified the device");
    }
    let _ = dev.len();
}
