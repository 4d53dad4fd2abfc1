//! FAT targets: the boot sector parser and free-space map of our own, and the `fatfs`-backed
//! [`FatFs`] behind the `Filesystem` trait (reads, then ESP-style edits).

use crate::templates::{fat12, fat16, overlay};
use crate::walk::walk;
use imgscrub_disk::MemDev;
use imgscrub_fs::Filesystem;
use imgscrub_fs::fat::{FatFs, FatGeometry};
use imgscrub_fs::filesystem::NewAttr;
use std::sync::Arc;

/// What the ESP edits of a prepare do: replace a small file, create, write, truncate,
/// mkdir, rename, unlink, remove a tree, flush.
fn edit(fs: &mut dyn Filesystem) {
    let root = fs.root();
    let attr = NewAttr::default();
    if let Ok(Some(loader)) = fs.lookup(root, b"loader") {
        if let Ok(Some(seed)) = fs.lookup(loader, b"random-seed") {
            let _ = fs.set_content(seed, &[0x11; 32]);
        }
        if let Ok(f) = fs.create(loader, b"new entry.conf", &attr) {
            let _ = fs.write(f, 0, &[0x5a; 3000]);
            let _ = fs.truncate(f, 100);
        }
    }
    let _ = fs.mkdir(root, b"fuzzdir", &attr);
    let _ = fs.rename(root, b"frag1", root, b"renamed");
    let _ = fs.unlink(root, b"fragmented");
    let _ = fs.remove_tree(root, b"EFI");
    if let Ok(Some(many)) = fs.lookup(root, b"many") {
        let _ = fs.unlink(many, b"entry number 3.txt");
    }
    let _ = fs.flush();
}

fn exercise(img: Vec<u8>) {
    let dev = Arc::new(MemDev::from_vec(img));
    if let Ok(g) = FatGeometry::read(&*dev) {
        let _ = g.free_ranges(&*dev);
    }
    if let Ok(mut fs) = FatFs::open(Arc::clone(&dev)) {
        walk(&fs, 300, 256 << 10);
        edit(&mut fs);
        walk(&fs, 300, 256 << 10);
    }
}

/// The input as a whole FAT volume, zero-padded to 1 MiB so that a short input (a boot
/// sector, FATs and a root directory) is a volume of the size its BPB claims.
pub fn fat_open(data: &[u8]) {
    let mut img = data.to_vec();
    if img.len() < 1 << 20 {
        img.resize(1 << 20, 0);
    }
    exercise(img);
}

/// Flip bytes of a valid FAT12 or FAT16 template (boot sector, FATs, root directory,
/// subdirectories with long names, a fragmented file), read it all, then edit it.
pub fn fat_image(data: &[u8]) {
    let Some((&mode, records)) = data.split_first() else {
        return;
    };
    let template = if mode & 2 == 0 { fat12() } else { fat16() };
    exercise(overlay(template, mode, records, 64 << 10));
}
