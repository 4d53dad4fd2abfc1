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

#[cfg(test)]
mod tests {
    use super::*;

    const V5: DirGeom = DirGeom {
        v5: true,
        ftype: true,
        ci: false,
        blocksize: 4096,
        dirblksize: 4096,
    };

    fn names(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut s = format!("{i:0len$}").into_bytes();
                s.truncate(len);
                s
            })
            .collect()
    }

    fn ents(ns: &[Vec<u8>]) -> Vec<NewEntry<'_>> {
        ns.iter()
            .enumerate()
            .map(|(i, n)| NewEntry {
                name: n,
                ino: 200 + i as u64,
                file_type: FileType::Regular,
            })
            .collect()
    }

    fn enc(g: &DirGeom, n: usize, len: usize, space: usize) -> DirImage {
        let ns = names(n, len);
        encode(g, 128, 64, &ents(&ns), space).unwrap()
    }

    fn blocks(img: &DirImage) -> &[DirBlockImage] {
        match img {
            DirImage::Blocks(b) => b,
            DirImage::Short(_) => panic!("shortform"),
        }
    }

    fn be16(b: &[u8], o: usize) -> u16 {
        u16::from_be_bytes([b[o], b[o + 1]])
    }
    fn be32(b: &[u8], o: usize) -> u32 {
        u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
    }

    /// The switch points, from the kernel's rules worked by hand for 10-byte names on 4 KiB
    /// v5 blocks with ftype: a data entry is 24 bytes ("." and ".." 16 each, header 64).
    /// Shortform (512-byte inode: 336 bytes): 6 + 18 n <= 336, so 18 entries.
    /// Block: 64 + 32 + 24 n + 8 (n + 2) + 8 <= 4096, so 124 entries.
    /// Leaf: data blocks hold 166, then 168 each; the leaf block 64 + 8 (n + 2) + 2 ndata + 4
    /// <= 4096: 500 entries (3 data blocks) fit, 501 do not.
    #[test]
    fn form_boundaries_4k() {
        assert_eq!(enc(&V5, 18, 10, 336).form(), DirForm::Shortform);
        assert_eq!(enc(&V5, 19, 10, 336).form(), DirForm::Block);
        assert_eq!(enc(&V5, 124, 10, 336).form(), DirForm::Block);
        assert_eq!(enc(&V5, 125, 10, 336).form(), DirForm::Leaf);
        let leaf = enc(&V5, 500, 10, 336);
        assert_eq!(leaf.form(), DirForm::Leaf);
        assert_eq!(blocks(&leaf).len(), 4);
        assert_eq!(leaf.di_size(&V5), 3 * 4096);
        let node = enc(&V5, 501, 10, 336);
        assert_eq!(node.form(), DirForm::Node);
        // 3 data blocks, one leafn (503 hashes fit in 504) as the root, one free block.
        let b = blocks(&node);
        assert_eq!(b.len(), 5);
        assert_eq!(b[3].lblk, V5.leaf_lblk());
        assert_eq!(be16(&b[3].data, 8), LEAFN_MAGIC_V5);
        assert_eq!(b[4].lblk, V5.free_lblk());
        assert_eq!(&b[4].data[..4], FREE_MAGIC_V5);
        assert_eq!(be32(&b[4].data, 52), 3); // nvalid
        assert_eq!(be32(&b[4].data, 56), 3); // nused
    }

    /// A bigger fork keeps the shortform until the block form would not hold the entries.
    #[test]
    fn shortform_also_needs_to_fit_a_block() {
        let g = DirGeom {
            blocksize: 1024,
            dirblksize: 1024,
            ..V5
        };
        // Block form on 1 KiB: 64 + 32 + 32 n + 8 <= 1024 -> incl. leaf: 24 n + 8 n.
        // 10-byte names: 120 + 32 n <= 1024 -> 28 entries; shortform would be 6 + 18 * 29.
        assert_eq!(enc(&g, 28, 10, 1800).form(), DirForm::Shortform);
        assert_eq!(enc(&g, 29, 10, 1800).form(), DirForm::Leaf);
    }

    #[test]
    fn shortform_bytes() {
        let ns = vec![b"ab".to_vec(), b"c".to_vec()];
        let mut e = ents(&ns);
        e[1].file_type = FileType::Directory;
        let DirImage::Short(b) = encode(&V5, 128, 64, &e, 336).unwrap() else {
            panic!()
        };
        #[rustfmt::skip]
        let want = [
            2, 0, 0, 0, 0, 64,                 // count, i8count, parent
            2, 0, 96, b'a', b'b', 1, 0, 0, 0, 200, // namelen, offset 96, name, ftype, ino
            1, 0, 112, b'c', 2, 0, 0, 0, 201,  // offset 96 + 16
        ];
        assert_eq!(b, want);
        // One 64-bit inode number (here the parent) makes every number 8 bytes.
        let DirImage::Short(b) = encode(&V5, 128, 1 << 33, &e, 336).unwrap() else {
            panic!()
        };
        assert_eq!(&b[..10], &[2, 1, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(b.len(), 10 + (3 + 2 + 1 + 8) + (3 + 1 + 1 + 8));
        e[0].ino = 1 << 40;
        let DirImage::Short(b) = encode(&V5, 128, 1 << 33, &e, 336).unwrap() else {
            panic!()
        };
        assert_eq!(b[1], 2);
        // No ftype byte without the feature (v4).
        let v4 = DirGeom {
            v5: false,
            ftype: false,
            ..V5
        };
        let DirImage::Short(b) = encode(&v4, 128, 64, &ents(&ns), 156).unwrap() else {
            panic!()
        };
        // v4 data header 16 + "." 16 + ".." 16: first offset 48; entries 16 bytes.
        assert_eq!(
            b,
            [
                2, 0, 0, 0, 0, 64, 2, 0, 48, b'a', b'b', 0, 0, 0, 200, 1, 0, 64, b'c', 0, 0, 0, 201
            ]
        );
    }

    #[test]
    fn block_form_layout() {
        let img = enc(&V5, 3, 10, 0);
        assert_eq!(img.form(), DirForm::Block);
        let b = &blocks(&img)[0].data;
        assert_eq!(&b[..4], BLOCK_MAGIC_V5);
        // ".", "..", then three entries of 24 bytes, free from 168 to the leaf.
        assert_eq!(&b[64..72], &128u64.to_be_bytes());
        assert_eq!((b[72], b[73], b[74]), (1, b'.', FT_DIR));
        assert_eq!(be16(b, 78), 64);
        assert_eq!(&b[80..88], &64u64.to_be_bytes());
        assert_eq!(be16(b, 94), 80);
        let leaf_start = 4096 - 8 - 5 * 8;
        assert_eq!(be16(b, 168), FREE_TAG);
        assert_eq!(usize::from(be16(b, 170)), leaf_start - 168);
        assert_eq!(usize::from(be16(b, leaf_start - 2)), 168);
        // bestfree[0] = that region, the other two empty.
        assert_eq!((be16(b, 48), be16(b, 50)), (168, (leaf_start - 168) as u16));
        assert_eq!(&b[52..60], &[0; 8]);
        assert_eq!(be32(b, 4088), 5);
        assert_eq!(be32(b, 4092), 0);
        let hashes: Vec<u32> = (0..5).map(|i| be32(b, leaf_start + i * 8)).collect();
        assert!(hashes.windows(2).all(|w| w[0] <= w[1]));
        let dot = (0..5).find(|&i| be32(b, leaf_start + i * 8 + 4) == 64 / 8);
        assert_eq!(
            dot.map(|i| be32(b, leaf_start + i * 8)),
            Some(crate::hash::da_hashname(b"."))
        );
    }

    /// 1 KiB directory blocks: 120 hashes a leaf, 120 pointers a node. Every level is
    /// chained, sorted, and each node entry holds its child's greatest hash.
    #[test]
    fn node_levels() {
        let g = DirGeom {
            blocksize: 1024,
            dirblksize: 1024,
            ..V5
        };
        assert_eq!((g.leaf_max_ents(), g.node_max_ents()), (120, 120));
        for (n, depth) in [
            (500, 1),
            (120 * 120 - 2, 1),
            (120 * 120 - 1, 2),
            (20_000, 2),
        ] {
            let img = enc(&g, n, 12, 336);
            assert_eq!(img.form(), DirForm::Node);
            let b = blocks(&img);
            let by: std::collections::BTreeMap<u64, &[u8]> =
                b.iter().map(|x| (x.lblk, x.data.as_slice())).collect();
            let root = by[&g.leaf_lblk()];
            assert_eq!(be16(root, 8), NODE_MAGIC_V5);
            assert_eq!(usize::from(be16(root, 58)), depth, "{n} entries");
            // Walk the leftmost path down, then each level along forw.
            let mut first = g.leaf_lblk();
            let mut leaf_hashes = Vec::new();
            loop {
                let blk = by[&first];
                let is_leaf = be16(blk, 8) == LEAFN_MAGIC_V5;
                let mut cur = first;
                let mut prev = 0u64;
                let mut next_first = None;
                while cur != 0 {
                    let blk = by[&cur];
                    assert_eq!(u64::from(be32(blk, 4)), prev, "back pointer");
                    let count = usize::from(be16(blk, 56));
                    assert!(count > 0);
                    for i in 0..count {
                        let (h, p) = (be32(blk, 64 + i * 8), be32(blk, 68 + i * 8));
                        if is_leaf {
                            leaf_hashes.push(h);
                        } else {
                            let child = by[&u64::from(p)];
                            let cc = usize::from(be16(child, 56));
                            assert_eq!(h, be32(child, 64 + (cc - 1) * 8), "node hash");
                            next_first.get_or_insert(u64::from(p));
                        }
                    }
                    prev = cur;
                    cur = u64::from(be32(blk, 0));
                }
                match next_first {
                    Some(f) => first = f,
                    None => break,
                }
            }
            assert_eq!(leaf_hashes.len(), n + 2);
            assert!(leaf_hashes.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn free_index_blocks() {
        // 1 KiB: 480 bests a free block; 60-byte names: 16 entries a data block.
        let g = DirGeom {
            blocksize: 1024,
            dirblksize: 1024,
            ..V5
        };
        let img = enc(&g, 16 * 600, 60, 336);
        let b = blocks(&img);
        let data = b.iter().filter(|x| x.lblk < g.leaf_lblk()).count();
        let free: Vec<_> = b.iter().filter(|x| x.lblk >= g.free_lblk()).collect();
        assert_eq!(free.len(), data.div_ceil(480));
        for (j, f) in free.iter().enumerate() {
            assert_eq!(f.lblk, g.free_lblk() + j as u64);
            assert_eq!(be32(&f.data, 48) as usize, j * 480);
            let nvalid = be32(&f.data, 52) as usize;
            assert_eq!(nvalid, (data - j * 480).min(480));
            // Each best is the data block's bestfree[0] length.
            for i in 0..nvalid {
                let d = &b[j * 480 + i].data;
                assert_eq!(be16(&f.data, 64 + i * 2), be16(d, 50));
            }
        }
    }

    /// n64k: one 64 KiB directory block spans 16 filesystem blocks; free lengths up to
    /// 65472 still fit their 16-bit fields.
    #[test]
    fn big_directory_blocks() {
        let g = DirGeom {
            dirblksize: 65536,
            ..V5
        };
        let img = enc(&g, 3000, 30, 336);
        assert_eq!(img.form(), DirForm::Leaf);
        let b = blocks(&img);
        assert!(b.iter().all(|x| x.data.len() == 65536));
        assert_eq!(b[1].lblk, 16);
        assert_eq!(b.last().map(|x| x.lblk), Some(g.leaf_lblk()));
        assert_eq!(img.fs_blocks(&g), b.len() as u64 * 16);
    }

    #[test]
    fn ci_hashes_fold_case() {
        let g = DirGeom { ci: true, ..V5 };
        let ns = vec![b"README".to_vec()];
        let DirImage::Blocks(b) = encode(&g, 128, 64, &ents(&ns), 0).unwrap() else {
            panic!()
        };
        let d = &b[0].data;
        let leaf_start = 4096 - 8 - 3 * 8;
        let hs: Vec<u32> = (0..3).map(|i| be32(d, leaf_start + i * 8)).collect();
        assert!(hs.contains(&crate::hash::da_hashname(b"readme")));
    }

    #[test]
    fn refuses_impossible_input() {
        let long = vec![b'a'; 256];
        let ok = vec![b'a'; 255];
        for bad in [&b""[..], &long, b"a/b", b"a\0b", b".", b".."] {
            let e = [NewEntry {
                name: bad,
                ino: 200,
                file_type: FileType::Regular,
            }];
            assert!(matches!(
                encode(&V5, 128, 64, &e, 336),
                Err(XfsError::Invalid(_))
            ));
        }
        let e = |name: &'static [u8], ino| NewEntry {
            name,
            ino,
            file_type: FileType::Regular,
        };
        assert!(encode(&V5, 128, 64, &[e(b"x", 0)], 336).is_err());
        assert!(encode(&V5, 128, 64, &[e(b"x", 1 << 56)], 336).is_err());
        assert!(encode(&V5, 128, 64, &[e(b"x", 5), e(b"x", 6)], 336).is_err());
        assert!(encode(&V5, 0, 64, &[], 336).is_err());
        let bad_geom = DirGeom {
            dirblksize: 2048,
            ..V5
        };
        assert!(encode(&bad_geom, 128, 64, &[], 336).is_err());
        let ok_e = [NewEntry {
            name: &ok,
            ino: 200,
            file_type: FileType::Regular,
        }];
        assert!(encode(&V5, 128, 64, &ok_e, 336).is_ok());
        // Empty directory: shortform with the parent only.
        assert_eq!(
            encode(&V5, 128, 64, &[], 336).unwrap(),
            DirImage::Short(vec![0, 0, 0, 0, 0, 64])
        );
    }

    #[test]
    fn stamp_fills_v5_headers() {
        let st = Stamp {
            uuid: [7; 16],
            lsn: 0x1_0000_0002,
        };
        let img = enc(&V5, 501, 10, 336);
        for mut b in blocks(&img).iter().map(|x| x.data.clone()) {
            stamp(&mut b, 0x1234, 128, &st);
            let da = be16(&b, 8) == LEAFN_MAGIC_V5;
            let (crc, blkno) = if da { (12, 16) } else { (4, 8) };
            assert!(csum::verify(&b, crc, String::new).is_ok());
            assert_eq!(&b[blkno..blkno + 8], &0x1234u64.to_be_bytes());
            assert_eq!(&b[blkno + 8..blkno + 16], &st.lsn.to_be_bytes());
            assert_eq!(&b[blkno + 16..blkno + 32], &[7; 16]);
            assert_eq!(&b[blkno + 32..blkno + 40], &128u64.to_be_bytes());
        }
        // v4 blocks are left alone.
        let v4 = DirGeom {
            v5: false,
            ftype: false,
            ..V5
        };
        let img = enc(&v4, 3, 10, 0);
        let mut b = blocks(&img)[0].data.clone();
        let before = b.clone();
        stamp(&mut b, 0x1234, 128, &st);
        assert_eq!(b, before);
    }
}
