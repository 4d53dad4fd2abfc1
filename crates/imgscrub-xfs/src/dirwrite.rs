//! Directory encoder: turns a directory's complete entry list into its on-disk form, in the
//! form XFS itself would use for that many entries — shortform in the inode, block (one
//! directory block holding data and hash index), leaf (data blocks + one leaf block with the
//! best-free table) or node (data blocks + a da-btree of leaf blocks + free-index blocks).
//!
//! This is the "rebuild at flush" half of directory editing: the caller keeps the entry list,
//! calls [`encode`] once, maps the returned logical blocks onto physical blocks, [`stamp`]s
//! each v5 block with its address and writes it. Nothing here touches a device.
//!
//! Layout choices (all of them states the kernel itself produces or accepts):
//! - entries are packed into data blocks in the order given, "." and ".." first in data
//!   block 0; each data block ends in at most one free region; data blocks are contiguous
//!   from directory block 0;
//! - shortform offsets are the offsets block form would give the same entries;
//! - leaf entries are sorted by hash (ties by address), none stale;
//! - node form: leaf blocks and da-btree nodes are filled evenly (every block of a level
//!   holds the same number of entries, ±1), the root at the first leaf-space block, then the
//!   interior levels top-down, then the leaves, each level chained left to right through
//!   `forw`/`back`; a single leaf block is its own root (as after the kernel's leaf→node
//!   conversion); free-index blocks cover every data block.
//!
//! The form is chosen by size the way the kernel's thresholds decide it, so a directory
//! grown or shrunk one entry at a time passes through every form:
//! - shortform iff the shortform bytes fit `fork_space` *and* block form would hold the
//!   entries (the kernel's `xfs_dir2_sf_addname_pick` refuses offsets past a block);
//! - block iff data entries + hash entries + tail fit one directory block;
//! - leaf iff the leaf block (hash entries + one best-free slot per data block + tail) fits;
//! - node otherwise.

use std::collections::HashSet;

use crate::csum;
use crate::dir::{DirForm, LEAF_OFFSET};
use crate::error::{Result, XfsError};
use crate::hash::dir_hashname;
use crate::meta::Stamp;
use crate::superblock::{Superblock, version};
use imgscrub_vocab::FileType;

/// The first byte of the free-index part of a directory's address space (64 GiB).
pub const FREE_OFFSET: u64 = 2 * LEAF_OFFSET;

/// Largest inode number a directory entry can hold (`XFS_MAXINUMBER`, 56 bits).
pub const MAX_INO: u64 = (1 << 56) - 1;
/// Largest inode number a 4-byte shortform slot holds (`XFS_DIR2_MAX_SHORT_INUM`).
const MAX_SHORT_INO: u64 = u32::MAX as u64;
/// da-btree depth limit (`XFS_DA_NODE_MAXDEPTH`): levels including the leaves.
const MAX_DEPTH: usize = 5;

const BLOCK_MAGIC_V4: &[u8; 4] = b"XD2B";
const BLOCK_MAGIC_V5: &[u8; 4] = b"XDB3";
const DATA_MAGIC_V4: &[u8; 4] = b"XD2D";
const DATA_MAGIC_V5: &[u8; 4] = b"XDD3";
const FREE_MAGIC_V4: &[u8; 4] = b"XD2F";
const FREE_MAGIC_V5: &[u8; 4] = b"XDF3";
const LEAF1_MAGIC_V4: u16 = 0xd2f1;
const LEAF1_MAGIC_V5: u16 = 0x3df1;
const LEAFN_MAGIC_V4: u16 = 0xd2ff;
const LEAFN_MAGIC_V5: u16 = 0x3dff;
const NODE_MAGIC_V4: u16 = 0xfebe;
const NODE_MAGIC_V5: u16 = 0x3ebe;
const FREE_TAG: u16 = 0xffff;
/// `XFS_DIR3_FT_DIR`.
const FT_DIR: u8 = 2;

/// What the encoder needs of the filesystem geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirGeom {
    /// v5 (CRC) headers; v4 headers otherwise.
    pub v5: bool,
    /// Entries carry a file type byte (`ftype`; always on v5).
    pub ftype: bool,
    /// ASCII case-insensitive name hashes (`-n version=ci`).
    pub ci: bool,
    /// Filesystem block size.
    pub blocksize: u32,
    /// Directory block size (`blocksize << dirblklog`).
    pub dirblksize: u32,
}

impl DirGeom {
    /// The directory geometry of a filesystem.
    pub fn from_sb(sb: &Superblock) -> DirGeom {
        DirGeom {
            v5: sb.is_v5(),
            ftype: sb.has_ftype(),
            ci: sb.versionnum & version::BORG != 0,
            blocksize: sb.blocksize,
            dirblksize: sb.dirblksize(),
        }
    }

    /// Filesystem blocks per directory block.
    pub fn fsb_per_dirblk(&self) -> u64 {
        u64::from(self.dirblksize / self.blocksize)
    }

    /// File block (in filesystem blocks) of the first leaf-space block.
    pub fn leaf_lblk(&self) -> u64 {
        LEAF_OFFSET / u64::from(self.blocksize)
    }

    /// File block (in filesystem blocks) of the first free-index block.
    pub fn free_lblk(&self) -> u64 {
        FREE_OFFSET / u64::from(self.blocksize)
    }

    fn hdr(&self) -> usize {
        if self.v5 { 64 } else { 16 }
    }

    fn dirblk(&self) -> usize {
        self.dirblksize as usize
    }

    /// Bytes of a data entry with a name of `namelen` bytes (8-byte aligned).
    pub fn data_entsize(&self, namelen: usize) -> usize {
        (8 + 1 + namelen + usize::from(self.ftype) + 2 + 7) & !7
    }

    /// Offset of the first entry after "." and ".." in data block 0.
    pub fn data_first_offset(&self) -> usize {
        self.hdr() + self.data_entsize(1) + self.data_entsize(2)
    }

    /// Hash entries a leaf1/leafn block holds.
    pub fn leaf_max_ents(&self) -> usize {
        (self.dirblk() - self.hdr()) / 8
    }

    /// Child pointers a da-btree node holds.
    pub fn node_max_ents(&self) -> usize {
        (self.dirblk() - self.hdr()) / 8
    }

    /// Best-free slots a free-index block holds.
    pub fn free_max_bests(&self) -> usize {
        (self.dirblk() - self.hdr()) / 2
    }

    fn check(&self) -> Result<()> {
        let ok = self.blocksize.is_power_of_two()
            && (512..=65536).contains(&self.blocksize)
            && self.dirblksize.is_power_of_two()
            && self.dirblksize >= self.blocksize
            && self.dirblksize <= 65536
            && (self.ftype || !self.v5);
        if !ok {
            return Err(XfsError::Invalid(format!(
                "directory geometry: block size {}, directory block size {}, v5 {}, ftype {}",
                self.blocksize, self.dirblksize, self.v5, self.ftype
            )));
        }
        Ok(())
    }
}

/// One entry to store ("." and ".." are implied: never pass them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEntry<'a> {
    pub name: &'a [u8],
    pub ino: u64,
    /// Stored in the entry's ftype byte when the filesystem has one; ignored otherwise.
    pub file_type: FileType,
}

/// One directory block of the encoded directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirBlockImage {
    /// Logical offset in the directory's data fork, in filesystem blocks.
    pub lblk: u64,
    /// `dirblksize` bytes. When the directory block size is larger than the filesystem block
    /// size (`-n size=8k` on 4 KiB blocks, …), this one image covers the
    /// `dirblksize / blocksize` filesystem blocks from `lblk` on; v5 headers hold the
    /// address of the first of them.
    pub data: Vec<u8>,
}

/// An encoded directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirImage {
    /// Shortform: the bytes of the inode's data fork (header with parent, i8/i4 inode
    /// numbers chosen as XFS does, offsets as block form would place entries). `di_size` is
    /// their length; the inode format is "local".
    Short(Vec<u8>),
    /// Directory blocks, each `dirblksize` bytes, at logical offset `lblk` in filesystem
    /// blocks (data blocks from 0, the leaf block(s) at [`LEAF_OFFSET`] (32 GiB), free index
    /// blocks at [`FREE_OFFSET`] (64 GiB)), sorted by `lblk`; v5 headers (block number, LSN,
    /// UUID, owner, CRC) are left to [`stamp`].
    Blocks(Vec<DirBlockImage>),
}

impl DirImage {
    /// The directory form of this image.
    pub fn form(&self) -> DirForm {
        match self {
            DirImage::Short(_) => DirForm::Shortform,
            DirImage::Blocks(b) => {
                let has = |m: u16| {
                    b.iter()
                        .any(|x| x.data.get(8..10) == Some(&m.to_be_bytes()))
                };
                let free = |m: &[u8; 4]| b.iter().any(|x| x.data.get(..4) == Some(&m[..]));
                if free(FREE_MAGIC_V4) || free(FREE_MAGIC_V5) {
                    DirForm::Node
                } else if has(LEAF1_MAGIC_V4) || has(LEAF1_MAGIC_V5) {
                    DirForm::Leaf
                } else {
                    DirForm::Block
                }
            }
        }
    }

    /// The inode's `di_size`: the shortform length, or the end of the last data block.
    pub fn di_size(&self, g: &DirGeom) -> u64 {
        match self {
            DirImage::Short(b) => b.len() as u64,
            DirImage::Blocks(b) => {
                let leaf = g.leaf_lblk();
                let data = b.iter().filter(|x| x.lblk < leaf).count() as u64;
                data * u64::from(g.dirblksize)
            }
        }
    }

    /// Filesystem blocks the image occupies (the directory's `di_nblocks` without bmbt
    /// blocks; 0 for shortform).
    pub fn fs_blocks(&self, g: &DirGeom) -> u64 {
        match self {
            DirImage::Short(_) => 0,
            DirImage::Blocks(b) => b.len() as u64 * g.fsb_per_dirblk(),
        }
    }
}

fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_be_bytes());
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}
fn get16(b: &[u8], o: usize) -> u16 {
    match b.get(o..o + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

/// An entry as the encoder stores it (".", ".." included).
struct Ent<'a> {
    name: &'a [u8],
    ino: u64,
    ftype: u8,
}

fn check_input(self_ino: u64, parent_ino: u64, entries: &[NewEntry<'_>]) -> Result<()> {
    for (what, ino) in [("directory", self_ino), ("parent", parent_ino)] {
        if ino == 0 || ino > MAX_INO {
            return Err(XfsError::Invalid(format!(
                "directory encoder: {what} inode number {ino}"
            )));
        }
    }
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(entries.len());
    for e in entries {
        let shown = || String::from_utf8_lossy(e.name).into_owned();
        if e.name.is_empty() || e.name.len() > 255 {
            return Err(XfsError::Invalid(format!(
                "directory entry name of {} bytes (1 to 255 allowed)",
                e.name.len()
            )));
        }
        if e.name.iter().any(|&c| c == b'/' || c == 0) {
            return Err(XfsError::Invalid(format!(
                "directory entry name {:?} contains '/' or NUL",
                shown()
            )));
        }
        if e.name == b"." || e.name == b".." {
            return Err(XfsError::Invalid(format!(
                "directory entry {:?}: \".\" and \"..\" are implied",
                shown()
            )));
        }
        if e.ino == 0 || e.ino > MAX_INO {
            return Err(XfsError::Invalid(format!(
                "directory entry {:?}: inode number {}",
                shown(),
                e.ino
            )));
        }
        if !seen.insert(e.name) {
            return Err(XfsError::Invalid(format!(
                "directory entry {:?} appears twice",
                shown()
            )));
        }
    }
    Ok(())
}

/// Encode directory `self_ino` (parent `parent_ino`) holding `entries` (without "." and
/// ".."), in the form XFS uses for that size. `fork_space`: bytes available for a shortform
/// directory in the inode's data fork (the literal area — inode size minus 176 on v5, 100 on
/// v4 — or `forkoff * 8` when the inode has an attribute fork).
///
/// Refused with [`XfsError::Invalid`]: empty names, names over 255 bytes, names with '/' or
/// NUL, "." or ".." among `entries`, duplicate names, inode number 0 or over 2^56 − 1, a
/// directory whose data would pass the 32 GiB data space or need a da-btree deeper than
/// XFS allows, and a geometry that cannot exist.
pub fn encode(
    g: &DirGeom,
    self_ino: u64,
    parent_ino: u64,
    entries: &[NewEntry<'_>],
    fork_space: usize,
) -> Result<DirImage> {
    g.check()?;
    check_input(self_ino, parent_ino, entries)?;
    if let Some(sf) = shortform(g, parent_ino, entries, fork_space) {
        return Ok(DirImage::Short(sf));
    }
    let mut all = Vec::with_capacity(entries.len() + 2);
    all.push(Ent {
        name: b".",
        ino: self_ino,
        ftype: FT_DIR,
    });
    all.push(Ent {
        name: b"..",
        ino: parent_ino,
        ftype: FT_DIR,
    });
    all.extend(entries.iter().map(|e| Ent {
        name: e.name,
        ino: e.ino,
        ftype: e.file_type.dirent_type(),
    }));
    let dirblk = g.dirblk();
    let hdr = g.hdr();
    let data_bytes: usize = all.iter().map(|e| g.data_entsize(e.name.len())).sum();
    let nleaf = all.len();
    if hdr + data_bytes + nleaf * 8 + 8 <= dirblk {
        return Ok(DirImage::Blocks(vec![block_form(g, &all)]));
    }
    // Pack the data blocks.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    let mut pos = hdr;
    for (i, e) in all.iter().enumerate() {
        let sz = g.data_entsize(e.name.len());
        if pos + sz > dirblk {
            groups.push(start..i);
            start = i;
            pos = hdr;
        }
        pos += sz;
    }
    groups.push(start..all.len());
    let ndata = groups.len();
    if (ndata as u64) * u64::from(g.dirblksize) > LEAF_OFFSET {
        return Err(XfsError::Invalid(format!(
            "directory of {} entries needs more than the 32 GiB of directory data space",
            entries.len()
        )));
    }
    let fsbc = g.fsb_per_dirblk();
    let mut out = Vec::new();
    let mut leaf = Vec::with_capacity(nleaf);
    let mut bests = Vec::with_capacity(ndata);
    for (db, r) in groups.into_iter().enumerate() {
        let mut b = vec![0u8; dirblk];
        let best = fill_data(g, &mut b, &all[r], dirblk, db, &mut leaf, false);
        bests.push(best);
        out.push(DirBlockImage {
            lblk: db as u64 * fsbc,
            data: b,
        });
    }
    leaf.sort_unstable();
    if g.hdr() + nleaf * 8 + ndata * 2 + 4 <= dirblk {
        out.push(leaf1_block(g, &leaf, &bests));
    } else {
        node_blocks(g, &leaf, &bests, &mut out)?;
    }
    out.sort_by_key(|b| b.lblk);
    Ok(DirImage::Blocks(out))
}

/// The shortform bytes, if the directory fits the inode and a block.
fn shortform(
    g: &DirGeom,
    parent: u64,
    entries: &[NewEntry<'_>],
    fork_space: usize,
) -> Option<Vec<u8>> {
    let count = entries.len();
    if count > 255 {
        return None;
    }
    let i8count = usize::from(parent > MAX_SHORT_INO)
        + entries.iter().filter(|e| e.ino > MAX_SHORT_INO).count();
    if i8count > 255 {
        return None;
    }
    let isz = if i8count > 0 { 8 } else { 4 };
    let ft = usize::from(g.ftype);
    let size = 2
        + isz
        + entries
            .iter()
            .map(|e| 3 + e.name.len() + ft + isz)
            .sum::<usize>();
    let block_end = g.data_first_offset()
        + entries
            .iter()
            .map(|e| g.data_entsize(e.name.len()))
            .sum::<usize>();
    if size > fork_space || block_end + (count + 2) * 8 + 8 > g.dirblk() {
        return None;
    }
    let mut b = vec![0u8; size];
    b[0] = count as u8;
    b[1] = i8count as u8;
    let put_ino = |b: &mut [u8], o: usize, ino: u64| {
        if isz == 8 {
            put64(b, o, ino);
        } else {
            put32(b, o, ino as u32);
        }
    };
    put_ino(&mut b, 2, parent);
    let mut pos = 2 + isz;
    let mut off = g.data_first_offset();
    for e in entries {
        let n = e.name.len();
        b[pos] = n as u8;
        put16(&mut b, pos + 1, off as u16);
        b[pos + 3..pos + 3 + n].copy_from_slice(e.name);
        if g.ftype {
            b[pos + 3 + n] = e.file_type.dirent_type();
        }
        put_ino(&mut b, pos + 3 + n + ft, e.ino);
        pos += 3 + n + ft + isz;
        off += g.data_entsize(n);
    }
    Some(b)
}

/// Write `ents` into data block `db` (`b` is the whole directory block; entries go up to
/// `end`, the rest of `[hdr, end)` becomes one free region). Pushes one (hash, address)
/// per entry onto `leaf`; returns the longest free region (the block's best-free value).
fn fill_data(
    g: &DirGeom,
    b: &mut [u8],
    ents: &[Ent<'_>],
    end: usize,
    db: usize,
    leaf: &mut Vec<(u32, u32)>,
    is_block: bool,
) -> u16 {
    let magic = match (is_block, g.v5) {
        (true, true) => BLOCK_MAGIC_V5,
        (true, false) => BLOCK_MAGIC_V4,
        (false, true) => DATA_MAGIC_V5,
        (false, false) => DATA_MAGIC_V4,
    };
    b[..4].copy_from_slice(magic);
    let mut pos = g.hdr();
    let base = db as u64 * u64::from(g.dirblksize);
    for e in ents {
        let n = e.name.len();
        let sz = g.data_entsize(n);
        put64(b, pos, e.ino);
        b[pos + 8] = n as u8;
        b[pos + 9..pos + 9 + n].copy_from_slice(e.name);
        if g.ftype {
            b[pos + 9 + n] = e.ftype;
        }
        put16(b, pos + sz - 2, pos as u16);
        let addr = ((base + pos as u64) >> 3) as u32;
        leaf.push((dir_hashname(e.name, g.ci), addr));
        pos += sz;
    }
    let free = end - pos;
    // Best-free table: offset of the bestfree array is 4 (v4) or 48 (v5).
    let bf = if g.v5 { 48 } else { 4 };
    if free > 0 {
        put16(b, pos, FREE_TAG);
        put16(b, pos + 2, free as u16);
        put16(b, end - 2, pos as u16);
        put16(b, bf, pos as u16);
        put16(b, bf + 2, free as u16);
    }
    free as u16
}

fn block_form(g: &DirGeom, all: &[Ent<'_>]) -> DirBlockImage {
    let dirblk = g.dirblk();
    let mut b = vec![0u8; dirblk];
    let n = all.len();
    let leaf_start = dirblk - 8 - n * 8;
    let mut leaf = Vec::with_capacity(n);
    fill_data(g, &mut b, all, leaf_start, 0, &mut leaf, true);
    leaf.sort_unstable();
    for (i, (h, a)) in leaf.iter().enumerate() {
        put32(&mut b, leaf_start + i * 8, *h);
        put32(&mut b, leaf_start + i * 8 + 4, *a);
    }
    put32(&mut b, dirblk - 8, n as u32);
    DirBlockImage { lblk: 0, data: b }
}

/// Header of a leaf1/leafn/node block (da blkinfo + count + stale/level).
fn da_header(g: &DirGeom, b: &mut [u8], magic: u16, forw: u64, back: u64, count: usize, w: u16) {
    put32(b, 0, forw as u32);
    put32(b, 4, back as u32);
    put16(b, 8, magic);
    let o = if g.v5 { 56 } else { 12 };
    put16(b, o, count as u16);
    put16(b, o + 2, w);
}

fn leaf1_block(g: &DirGeom, leaf: &[(u32, u32)], bests: &[u16]) -> DirBlockImage {
    let dirblk = g.dirblk();
    let mut b = vec![0u8; dirblk];
    let magic = if g.v5 { LEAF1_MAGIC_V5 } else { LEAF1_MAGIC_V4 };
    da_header(g, &mut b, magic, 0, 0, leaf.len(), 0);
    write_leaf_ents(g, &mut b, leaf);
    put32(&mut b, dirblk - 4, bests.len() as u32);
    let bstart = dirblk - 4 - bests.len() * 2;
    for (i, v) in bests.iter().enumerate() {
        put16(&mut b, bstart + i * 2, *v);
    }
    DirBlockImage {
        lblk: g.leaf_lblk(),
        data: b,
    }
}

fn write_leaf_ents(g: &DirGeom, b: &mut [u8], leaf: &[(u32, u32)]) {
    let h = g.hdr();
    for (i, (hash, addr)) in leaf.iter().enumerate() {
        put32(b, h + i * 8, *hash);
        put32(b, h + i * 8 + 4, *addr);
    }
}

/// Split `n` items into `ceil(n / cap)` runs of nearly equal length.
fn even_runs(n: usize, cap: usize) -> Vec<std::ops::Range<usize>> {
    let k = n.div_ceil(cap).max(1);
    let (q, r) = (n / k, n % k);
    let mut out = Vec::with_capacity(k);
    let mut s = 0;
    for i in 0..k {
        let len = q + usize::from(i < r);
        out.push(s..s + len);
        s += len;
    }
    out
}

fn node_blocks(
    g: &DirGeom,
    leaf: &[(u32, u32)],
    bests: &[u16],
    out: &mut Vec<DirBlockImage>,
) -> Result<()> {
    let dirblk = g.dirblk();
    let fsbc = g.fsb_per_dirblk();
    // Levels bottom-up: level 0 = leaf runs (over `leaf`), level k = runs over level k-1.
    let mut levels: Vec<Vec<std::ops::Range<usize>>> =
        vec![even_runs(leaf.len(), g.leaf_max_ents())];
    while levels.last().map_or(0, Vec::len) > 1 {
        let below = levels.last().map_or(0, Vec::len);
        levels.push(even_runs(below, g.node_max_ents()));
    }
    if levels.len() > MAX_DEPTH {
        return Err(XfsError::Invalid(format!(
            "directory of {} entries needs a da-btree of {} levels (at most {MAX_DEPTH})",
            leaf.len().saturating_sub(2),
            levels.len()
        )));
    }
    // Block numbers: root first, then the levels below top-down, each left to right.
    let mut lblks: Vec<Vec<u64>> = vec![Vec::new(); levels.len()];
    let mut next = g.leaf_lblk();
    for (lvl, runs) in levels.iter().enumerate().rev() {
        for _ in runs {
            lblks[lvl].push(next);
            next += fsbc;
        }
    }
    // Greatest hash under each block, per level.
    let mut maxhash: Vec<Vec<u32>> = Vec::with_capacity(levels.len());
    for (lvl, runs) in levels.iter().enumerate() {
        let mut mh = Vec::with_capacity(runs.len());
        for (i, r) in runs.iter().enumerate() {
            let mut b = vec![0u8; dirblk];
            let forw = if i + 1 < runs.len() {
                lblks[lvl][i + 1]
            } else {
                0
            };
            let back = if i > 0 { lblks[lvl][i - 1] } else { 0 };
            if lvl == 0 {
                let ents = &leaf[r.clone()];
                let magic = if g.v5 { LEAFN_MAGIC_V5 } else { LEAFN_MAGIC_V4 };
                da_header(g, &mut b, magic, forw, back, ents.len(), 0);
                write_leaf_ents(g, &mut b, ents);
                mh.push(ents.last().map_or(0, |e| e.0));
            } else {
                let magic = if g.v5 { NODE_MAGIC_V5 } else { NODE_MAGIC_V4 };
                da_header(g, &mut b, magic, forw, back, r.len(), lvl as u16);
                let h = g.hdr();
                for (j, c) in r.clone().enumerate() {
                    put32(&mut b, h + j * 8, maxhash[lvl - 1][c]);
                    put32(&mut b, h + j * 8 + 4, lblks[lvl - 1][c] as u32);
                }
                mh.push(r.clone().last().map_or(0, |c| maxhash[lvl - 1][c]));
            }
            out.push(DirBlockImage {
                lblk: lblks[lvl][i],
                data: b,
            });
        }
        maxhash.push(mh);
    }
    // Free-index blocks.
    let maxb = g.free_max_bests();
    for (j, chunk) in bests.chunks(maxb).enumerate() {
        let mut b = vec![0u8; dirblk];
        b[..4].copy_from_slice(if g.v5 { FREE_MAGIC_V5 } else { FREE_MAGIC_V4 });
        let h = if g.v5 { 48 } else { 4 };
        put32(&mut b, h, (j * maxb) as u32);
        put32(&mut b, h + 4, chunk.len() as u32);
        put32(&mut b, h + 8, chunk.len() as u32);
        for (i, v) in chunk.iter().enumerate() {
            put16(&mut b, g.hdr() + i * 2, *v);
        }
        out.push(DirBlockImage {
            lblk: g.free_lblk() + j as u64 * fsbc,
            data: b,
        });
    }
    Ok(())
}

/// Fill a v5 block's header (blkno = `daddr` in 512-byte units of the block's first
/// filesystem block, owner = directory inode, uuid, lsn) and its CRC. No-op on v4 blocks
/// (and on anything that is not a directory block this module makes).
pub fn stamp(data: &mut [u8], daddr: u64, owner: u64, stamp: &Stamp) {
    if data.len() < 64 {
        return;
    }
    let m4 = &data[..4];
    let base = if m4 == BLOCK_MAGIC_V5 || m4 == DATA_MAGIC_V5 || m4 == FREE_MAGIC_V5 {
        // xfs_dir3_blk_hdr: magic, crc, blkno, lsn, uuid, owner.
        4
    } else if matches!(
        get16(data, 8),
        LEAF1_MAGIC_V5 | LEAFN_MAGIC_V5 | NODE_MAGIC_V5
    ) {
        // xfs_da3_blkinfo: forw, back, magic, pad, crc, blkno, lsn, uuid, owner.
        12
    } else {
        return;
    };
    put64(data, base + 4, daddr);
    put64(data, base + 12, stamp.lsn);
    data[base + 20..base + 36].copy_from_slice(&stamp.uuid);
    put64(data, base + 36, owner);
    let c = csum::compute(data, base);
    data[base..base + 4].copy_from_slice(&c.to_le_bytes());
}
