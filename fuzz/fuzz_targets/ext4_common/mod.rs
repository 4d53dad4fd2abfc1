//! Shared by the ext4 fuzz targets: the embedded template images, the overlay of fuzz input
//! on them, and a bounded walk through a filesystem.

#![allow(dead_code)]

use imgscrub_disk::MemDev;
use imgscrub_ext4::fs::Ext4Fs;
use imgscrub_ext4::{FileType, NewAttr};
use std::io::Read;
use std::sync::OnceLock;

static CLEAN_GZ: &[u8] = include_bytes!("../../fixtures/ext4-clean.img.gz");
static DIRTY_GZ: &[u8] = include_bytes!("../../fixtures/ext4-dirty-journal.img.gz");

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .expect("embedded template decompresses");
    out
}

/// A clean 4 MiB ext4 image (1 KiB blocks, metadata_csum, journal, htree, extent tree…).
pub fn clean() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| gunzip(CLEAN_GZ))
}

/// The same image with committed transactions in its journal (needs_recovery).
pub fn dirty() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| gunzip(DIRTY_GZ))
}

/// Apply the fuzz input to a copy of `template`: records of 4 bytes, a little-endian 24-bit
/// offset (scaled to the first 1 MiB, where the metadata lives, when `low` is set) and a byte
/// XORed in there. The first byte of the input selects how offsets are interpreted.
pub fn overlay(template: &[u8], data: &[u8]) -> Vec<u8> {
    let mut img = template.to_vec();
    let Some((&mode, rest)) = data.split_first() else {
        return img;
    };
    let len = img.len();
    for rec in rest.chunks_exact(4).take(256) {
        let off = usize::from(rec[0]) | usize::from(rec[1]) << 8 | usize::from(rec[2]) << 16;
        let off = if mode & 1 == 0 { off % (1 << 20).min(len) } else { off % len };
        img[off] ^= rec[3];
    }
    img
}

/// Read everything reachable, bounded: at most `budget` inodes and 1 MiB of data each.
pub fn walk(fs: &Ext4Fs<MemDev>, budget: usize) {
    let mut stack = vec![fs.root()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs.read_dir(dir) else { continue };
        for e in entries {
            seen += 1;
            if seen > budget {
                return;
            }
            let _ = fs.lookup(dir, &e.name);
            let Ok(st) = fs.stat(e.ino) else { continue };
            match st.file_type {
                FileType::Directory if stack.len() < 64 => stack.push(e.ino),
                FileType::Regular => {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut off = 0u64;
                    while off < st.size.min(1 << 20) {
                        match fs.read(e.ino, off, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => off += n as u64,
                        }
                    }
                }
                FileType::Symlink => {
                    let _ = fs.readlink(e.ino);
                }
                _ => {}
            }
        }
    }
    let _ = fs.free_ranges();
}

/// A few edits on a writable filesystem; errors are fine, panics are not.
pub fn edit(fs: &mut Ext4Fs<MemDev>) {
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
