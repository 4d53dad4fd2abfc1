//! Directories in all five forms. Listing needs only the data: the shortform entries in the
//! inode, or the data blocks below the 32 GiB leaf offset (block form keeps its hash index in
//! the same block; leaf, node and btree forms keep theirs above that offset). Every data block
//! is checked (magic, and on v5 CRC, block number, owner, UUID) and every entry's tag.

use crate::be::{bytes, round_up, u8_at, u16_at, u32_at, u64_at};
use crate::bmap::{self, Extent, Fork};
use crate::csum;
use crate::error::{Result, corrupt};
use crate::inode::{Format, Inode};
use crate::reader::Reader;
use imgscrub_vocab::FileType;

/// The first byte of the leaf (hash index) part of a directory's address space.
pub const LEAF_OFFSET: u64 = 32 << 30;

const BLOCK_MAGIC_V4: &[u8; 4] = b"XD2B";
const BLOCK_MAGIC_V5: &[u8; 4] = b"XDB3";
const DATA_MAGIC_V4: &[u8; 4] = b"XD2D";
const DATA_MAGIC_V5: &[u8; 4] = b"XDD3";

/// One directory entry, including "." and ".." when the form stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// From the entry's ftype byte when the filesystem has one.
    pub file_type: Option<FileType>,
}

/// Which of the five forms a directory is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirForm {
    Shortform,
    Block,
    Leaf,
    Node,
    Btree,
}

fn ftype(v: u8) -> Option<FileType> {
    FileType::from_dirent_type(v)
}

/// Every entry of directory `dir` (shortform: with a synthesised ".." for the parent).
pub fn entries(r: &Reader<'_>, dir: &Inode) -> Result<Vec<RawEntry>> {
    match dir.format {
        Format::Local => shortform(r, dir),
        Format::Extents | Format::Btree => {
            let exts = bmap::extents(r, dir, Fork::Data)?;
            let mut out = Vec::new();
            for_each_data_block(r, dir, &exts, &mut |b, is_block| {
                parse_data_block(r, dir, b, is_block, &mut out)
            })?;
            Ok(out)
        }
        Format::Dev => Err(corrupt(
            format!("directory inode {}", dir.ino),
            "device format",
        )),
    }
}

/// A name the layers above can trust: no `/`, no NUL (a damaged block could hold either,
/// and a path built from it would point somewhere else).
fn check_name(name: &[u8], what: &dyn Fn() -> String) -> Result<()> {
    if name.iter().any(|&c| c == b'/' || c == 0) {
        return Err(corrupt(
            what(),
            format!(
                "entry name {:?} contains '/' or NUL",
                String::from_utf8_lossy(name)
            ),
        ));
    }
    Ok(())
}

/// Which form `dir` is in (for inspection and tests).
pub fn form(r: &Reader<'_>, dir: &Inode) -> Result<DirForm> {
    match dir.format {
        Format::Local => return Ok(DirForm::Shortform),
        Format::Btree => return Ok(DirForm::Btree),
        _ => {}
    }
    let exts = bmap::extents(r, dir, Fork::Data)?;
    let dirblk = u64::from(1u32 << r.sb.dirblklog);
    let leaf_fb = LEAF_OFFSET >> r.sb.blocklog;
    let has_leaf = exts.iter().any(|e| e.end() > leaf_fb);
    if !has_leaf {
        return Ok(DirForm::Block);
    }
    // Leaf form has exactly one leaf block (dirblk blocks) at LEAF_OFFSET; node form has a
    // da-btree there and more blocks.
    let leaf_blocks: u64 = exts
        .iter()
        .filter(|e| e.offset >= leaf_fb)
        .map(|e| e.len)
        .sum();
    let free_fb = leaf_fb * 2;
    let has_free = exts.iter().any(|e| e.end() > free_fb);
    if leaf_blocks <= dirblk && !has_free {
        Ok(DirForm::Leaf)
    } else {
        Ok(DirForm::Node)
    }
}

fn shortform(r: &Reader<'_>, dir: &Inode) -> Result<Vec<RawEntry>> {
    let d = dir.data_fork();
    let name = || format!("shortform directory in inode {}", dir.ino);
    let size = usize::try_from(dir.size).unwrap_or(usize::MAX);
    if size > d.len() || size < 6 {
        return Err(corrupt(name(), format!("size {}", dir.size)));
    }
    let d = &d[..size];
    let count = usize::from(u8_at(d, 0));
    let i8count = usize::from(u8_at(d, 1));
    let wide = i8count > 0;
    let isz = if wide { 8 } else { 4 };
    let read_ino = |o: usize| -> u64 {
        if wide {
            u64_at(d, o) & ((1u64 << 56) - 1)
        } else {
            u64::from(u32_at(d, o))
        }
    };
    let parent = read_ino(2);
    let mut out = vec![RawEntry {
        name: b"..".to_vec(),
        ino: parent,
        file_type: Some(FileType::Directory),
    }];
    let ft = r.sb.has_ftype();
    let mut pos = 2 + isz;
    let mut last_off = 0u16;
    for i in 0..count {
        let namelen = usize::from(u8_at(d, pos));
        let off = u16_at(d, pos + 1);
        let esz = 3 + namelen + usize::from(ft) + isz;
        if namelen == 0 || pos + esz > d.len() {
            return Err(corrupt(
                name(),
                format!("entry {i} runs past the end of the directory"),
            ));
        }
        if i > 0 && off <= last_off {
            return Err(corrupt(name(), format!("entry {i}: offsets out of order")));
        }
        last_off = off;
        let nm = bytes(d, pos + 3, namelen).to_vec();
        check_name(&nm, &name)?;
        let file_type = if ft {
            ftype(u8_at(d, pos + 3 + namelen))
        } else {
            None
        };
        let ino = read_ino(pos + 3 + namelen + usize::from(ft));
        out.push(RawEntry {
            name: nm,
            ino,
            file_type,
        });
        pos += esz;
    }
    if pos != d.len() {
        return Err(corrupt(
            name(),
            format!("{count} entries end at byte {pos}, the size is {}", d.len()),
        ));
    }
    if out
        .iter()
        .skip(1)
        .filter(|e| e.ino > u64::from(u32::MAX))
        .count()
        != i8count
    {
        return Err(corrupt(name(), "count of 64-bit inode numbers is wrong"));
    }
    Ok(out)
}

/// Call `f` with every directory data block below the leaf offset (`true` = block form).
pub fn for_each_data_block(
    r: &Reader<'_>,
    dir: &Inode,
    exts: &[Extent],
    f: &mut dyn FnMut(&[u8], bool) -> Result<()>,
) -> Result<()> {
    let dirblk = u64::from(1u32 << r.sb.dirblklog);
    let leaf_fb = LEAF_OFFSET >> r.sb.blocklog;
    // Directory block indexes that have any mapped block below the leaf offset, in order.
    let mut indexes: Vec<u64> = Vec::new();
    for e in exts.iter().filter(|e| e.offset < leaf_fb) {
        let last = (e.end().min(leaf_fb) - 1) / dirblk;
        for i in e.offset / dirblk..=last {
            if indexes.last() != Some(&i) {
                indexes.push(i);
            }
        }
    }
    if indexes.is_empty() {
        return Err(corrupt(
            format!("directory inode {}", dir.ino),
            "no data blocks",
        ));
    }
    for &i in &indexes {
        let what = || format!("directory block {i} of inode {}", dir.ino);
        let buf = bmap::read_mapped(r, exts, i * dirblk, dirblk as u32, &what)?;
        let is_block = check_data_block(r, dir, exts, &buf, i * dirblk, &what)?;
        if is_block && indexes.len() != 1 {
            return Err(corrupt(
                what(),
                "a single-block header in a multi-block directory",
            ));
        }
        f(&buf, is_block)?;
    }
    Ok(())
}

/// Check a data block's header; returns whether it is a single-block directory's block.
fn check_data_block(
    r: &Reader<'_>,
    dir: &Inode,
    exts: &[Extent],
    b: &[u8],
    fb: u64,
    what: &dyn Fn() -> String,
) -> Result<bool> {
    let v5 = r.sb.is_v5();
    let m = bytes(b, 0, 4);
    let is_block = if v5 {
        m == BLOCK_MAGIC_V5
    } else {
        m == BLOCK_MAGIC_V4
    };
    let is_data = if v5 {
        m == DATA_MAGIC_V5
    } else {
        m == DATA_MAGIC_V4
    };
    if !is_block && !is_data {
        return Err(corrupt(what(), "bad magic number"));
    }
    if v5 {
        csum::verify(b, 4, what)?;
        // The header's block number is that of the first filesystem block.
        let first = bmap::lookup(exts, fb).map(|e| r.fsb_daddr(e.block + (fb - e.offset)));
        if Some(u64_at(b, 8)) != first {
            return Err(corrupt(what(), "block number in the header is wrong"));
        }
        if bytes(b, 24, 16) != r.sb.meta_uuid() {
            return Err(corrupt(what(), "UUID does not match the superblock"));
        }
        if u64_at(b, 40) != dir.ino {
            return Err(corrupt(what(), format!("owner {}", u64_at(b, 40))));
        }
    }
    Ok(is_block)
}

/// Parse the entries of one data block.
fn parse_data_block(
    r: &Reader<'_>,
    dir: &Inode,
    b: &[u8],
    is_block: bool,
    out: &mut Vec<RawEntry>,
) -> Result<()> {
    let name = || format!("directory data block of inode {}", dir.ino);
    let hdr = if r.sb.is_v5() { 64 } else { 16 };
    let end = if is_block {
        // Block tail: count, stale; the leaf entries (8 bytes each) precede it.
        let count = u32_at(b, b.len() - 8) as usize;
        let leaf = count
            .checked_mul(8)
            .and_then(|l| b.len().checked_sub(8 + l));
        match leaf {
            Some(l) if l >= hdr => l,
            _ => return Err(corrupt(name(), format!("block tail count {count}"))),
        }
    } else {
        b.len()
    };
    let ft = r.sb.has_ftype();
    let mut pos = hdr;
    while pos < end {
        if u16_at(b, pos) == 0xffff {
            let len = usize::from(u16_at(b, pos + 2));
            if len < 8
                || len % 8 != 0
                || pos + len > end
                || usize::from(u16_at(b, pos + len - 2)) != pos
            {
                return Err(corrupt(name(), format!("free space entry at byte {pos}")));
            }
            pos += len;
            continue;
        }
        let ino = u64_at(b, pos);
        let namelen = usize::from(u8_at(b, pos + 8));
        let esz = round_up(8 + 1 + namelen + usize::from(ft) + 2, 8);
        if namelen == 0 || pos + esz > end || usize::from(u16_at(b, pos + esz - 2)) != pos {
            return Err(corrupt(name(), format!("entry at byte {pos}")));
        }
        let nm = bytes(b, pos + 9, namelen).to_vec();
        check_name(&nm, &name)?;
        out.push(RawEntry {
            name: nm,
            ino,
            file_type: if ft {
                ftype(u8_at(b, pos + 9 + namelen))
            } else {
                None
            },
        });
        pos += esz;
    }
    Ok(())
}
