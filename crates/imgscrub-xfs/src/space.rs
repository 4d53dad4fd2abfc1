//! AG-level space management for the write side: free extents, the AG free list (AGFL),
//! inode chunks, and the AGF/AGI headers, kept exact so that `xfs_repair -n` stays silent.
//!
//! "Edit in memory, rebuild at flush": [`Space::load`] reads every AG once (free extents from
//! the by-block btree, the AGFL, the inode btree records, the blocks each btree occupies);
//! [`Space::alloc`]/[`Space::free`]/[`Space::alloc_inode`]/[`Space::free_inode`] edit the
//! in-memory state only; [`Space::flush`] rebuilds, for every AG that changed, the inode and
//! free-inode btrees, then the by-block and by-size free-space btrees (bulk-loaded with
//! [`crate::btree_build`], blocks taken from the AG's own free space — the old btree blocks
//! and AGFL blocks first, so an AG whose free space ends up as it was is rewritten into the
//! same blocks), refills the AGFL to at least what the kernel requires
//! (`xfs_alloc_min_freelist`), and rewrites the AGF, AGFL and AGI.
//!
//! Freed blocks are *busy* until the end of the next flush: they are written as free by that
//! flush but never handed out (nor used for the rebuilt btrees) before it.
//!
//! Accounting, as the kernel and `xfs_repair` count it (checked on every AG at load):
//! `agf_freeblks` = blocks in the by-block records; `agf_btreeblks` = blocks of the two
//! free-space btrees minus their two roots; `sb_fdblocks` = Σ over AGs of
//! `freeblks + flcount + btreeblks`; `sb_icount`/`sb_ifree` = Σ of the AGI
//! `count`/`freecount`; with inobtcount, `agi_iblocks`/`agi_fblocks` = blocks of the inode
//! and free-inode btrees.
//!
//! Refused at load (`XfsError::ReadOnly`): v4 filesystems, the reverse-mapping btree
//! (rmapbt: its records are not maintained yet), CoW staging records in the refcount btree,
//! inodes on the AGI unlinked lists, and inode chunks larger than a block's worth of
//! inodes (more than 64 inodes per block). A damaged AG (counters that disagree with the
//! btrees, overlapping blocks) is `XfsError::Corrupt`.
//!
//! Only v5 blocks are written; each carries its daddr, the owning AG, the metadata UUID and
//! LSN of the [`Stamp`], and its CRC-32C.

use crate::ag::{Agf, Agi, agfl_blocks};
use crate::be::{bytes, u16_at, u32_at, u64_at};
use crate::btree::InodeChunk;
use crate::btree_build::{self, Header, Shape, put};
use crate::csum;
use crate::error::{Result, XfsError, corrupt};
use crate::reader::Reader;
use crate::superblock::{Superblock, incompat, ro_compat};
use imgscrub_disk::BlockDev;
use std::collections::{BTreeMap, BTreeSet};

pub use crate::meta::Stamp;

/// Who a block range belongs to (the reverse-mapping owner of an allocation or free).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Blocks mapped by an inode's data (attr == false) or attr fork at file block `offset`.
    File { ino: u64, attr: bool, offset: u64 },
    /// A bmbt block of an inode's data or attr fork.
    Bmbt { ino: u64, attr: bool },
}

const NULL_AGINO: u32 = u32::MAX;
const NULL_AGBLOCK: u32 = u32::MAX;
const AGF_LSN: usize = 208;
const AGF_CRC: usize = 216;
const AGI_CRC: usize = 312;
const AGI_LSN: usize = 320;
const AGFL_LSN: usize = 24;
const AGFL_CRC: usize = 32;
const AGFL_HDR: usize = 36;
/// The refcount btree's CoW staging flag in `rc_startblock`.
const REFC_COWFLAG: u32 = 1 << 31;

/// Free extents of one AG: start → length, never overlapping, never adjacent.
type Extents = BTreeMap<u32, u32>;

fn ext_insert(m: &mut Extents, mut s: u32, mut l: u32) {
    if l == 0 {
        return;
    }
    if let Some((&ps, &pl)) = m.range(..s).next_back()
        && ps + pl == s
    {
        m.remove(&ps);
        s = ps;
        l += pl;
    }
    if let Some(&nl) = m.get(&(s + l)) {
        m.remove(&(s + l));
        l += nl;
    }
    m.insert(s, l);
}

/// Does any extent of `m` overlap `[s, s+l)`?
fn ext_overlaps(m: &Extents, s: u32, l: u32) -> bool {
    let end = u64::from(s) + u64::from(l);
    if let Some((&ps, &pl)) = m.range(..=s).next_back()
        && u64::from(ps) + u64::from(pl) > u64::from(s)
    {
        return true;
    }
    m.range(s..)
        .next()
        .is_some_and(|(&ns, _)| u64::from(ns) < end)
}

/// Is `[s, s+l)` inside one extent of `m`?
fn ext_contains(m: &Extents, s: u32, l: u32) -> bool {
    m.range(..=s)
        .next_back()
        .is_some_and(|(&ps, &pl)| u64::from(ps) + u64::from(pl) >= u64::from(s) + u64::from(l))
}

/// Remove `[s, s+l)`, which must lie inside one extent. Returns false (and changes nothing)
/// otherwise.
fn ext_remove(m: &mut Extents, s: u32, l: u32) -> bool {
    let Some((&ps, &pl)) = m.range(..=s).next_back() else {
        return false;
    };
    if u64::from(ps) + u64::from(pl) < u64::from(s) + u64::from(l) {
        return false;
    }
    m.remove(&ps);
    if s > ps {
        m.insert(ps, s - ps);
    }
    let (e, pe) = (s + l, ps + pl);
    if pe > e {
        m.insert(e, pe - e);
    }
    true
}

fn ext_total(m: &Extents) -> u64 {
    m.values().map(|&l| u64::from(l)).sum()
}

/// One inode btree record, as kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    holemask: u16,
    count: u32,
    freecount: u32,
    free: u64,
}

impl Chunk {
    fn present(&self, i: u32) -> bool {
        i < 64 && self.holemask & (1 << (i / 4)) == 0
    }
}

/// rmap `rm_offset` flag bits.
const RM_ATTR: u64 = 1 << 63;
const RM_BMBT: u64 = 1 << 62;
const RM_UNWRITTEN: u64 = 1 << 61;
const RM_OFF_MASK: u64 = (1 << 54) - 1;
/// Special rmap owners (negative numbers stored as u64).
const OWN_AG: u64 = -5i64 as u64;
const OWN_INOBT: u64 = -6i64 as u64;
const OWN_INODES: u64 = -7i64 as u64;

/// One reverse mapping: `len` blocks from the key block belong to `owner` (`offset` holds
/// the file offset and the attr/bmbt/unwritten flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rmap {
    len: u32,
    owner: u64,
    offset: u64,
}

/// Reverse mappings of one AG by start block; never overlapping (no shared extents).
type Rmaps = BTreeMap<u32, Rmap>;

fn is_inode_owner(owner: u64) -> bool {
    owner < (1 << 63)
}

/// Does the offset advance with the block (file data and attr fork mappings)?
fn has_offset(r: &Rmap) -> bool {
    is_inode_owner(r.owner) && r.offset & RM_BMBT == 0
}

/// Can `b` (starting at `bs`) be appended to `a` (starting at `as_`), as the kernel and
/// xfs_repair merge reverse mappings?
fn rmap_mergeable(as_: u32, a: &Rmap, bs: u32, b: &Rmap) -> bool {
    u64::from(as_) + u64::from(a.len) == u64::from(bs)
        && a.owner == b.owner
        && a.offset & !RM_OFF_MASK == b.offset & !RM_OFF_MASK
        && (!has_offset(a) || (a.offset & RM_OFF_MASK) + u64::from(a.len) == b.offset & RM_OFF_MASK)
        && u64::from(a.len) + u64::from(b.len) <= u64::from(u32::MAX)
}

fn rmap_add(m: &mut Rmaps, mut s: u32, mut r: Rmap) {
    if let Some((&ps, &p)) = m.range(..s).next_back()
        && rmap_mergeable(ps, &p, s, &r)
    {
        m.remove(&ps);
        r = Rmap {
            len: p.len + r.len,
            ..p
        };
        s = ps;
    }
    if let Some(&n) = m.get(&(s + r.len))
        && rmap_mergeable(s, &r, s + r.len, &n)
    {
        m.remove(&(s + r.len));
        r.len += n.len;
    }
    m.insert(s, r);
}

/// Check that `[s, s+len)` is mapped entirely to `owner` with these flags (ignoring the
/// unwritten flag). Returns false if not.
fn rmap_covers(m: &Rmaps, s: u32, len: u32, owner: u64, flags: u64) -> bool {
    let end = u64::from(s) + u64::from(len);
    let mut at = u64::from(s);
    while at < end {
        let Some((&rs, r)) = m.range(..=at as u32).next_back() else {
            return false;
        };
        let re = u64::from(rs) + u64::from(r.len);
        if re <= at || r.owner != owner || r.offset & (RM_ATTR | RM_BMBT) != flags {
            return false;
        }
        at = re;
    }
    true
}

/// Remove `[s, s+len)` from the mappings (call `rmap_covers` first).
fn rmap_remove(m: &mut Rmaps, s: u32, len: u32) {
    let end = s + len;
    let mut at = s;
    while at < end {
        let Some((&rs, &r)) = m.range(..=at).next_back() else {
            return;
        };
        let re = rs + r.len;
        if re <= at {
            return;
        }
        m.remove(&rs);
        if rs < at {
            m.insert(rs, Rmap { len: at - rs, ..r });
        }
        if re > end {
            let adv = u64::from(end - rs);
            let offset = if has_offset(&r) {
                r.offset + adv
            } else {
                r.offset
            };
            m.insert(
                end,
                Rmap {
                    len: re - end,
                    owner: r.owner,
                    offset,
                },
            );
        }
        at = re.min(end);
    }
}

/// Replace every mapping of the special `owner` by runs of `blocks`.
fn rmap_set_owner(m: &mut Rmaps, owner: u64, blocks: &[u32]) {
    m.retain(|_, r| r.owner != owner);
    let mut runs = Extents::new();
    for &b in blocks {
        ext_insert(&mut runs, b, 1);
    }
    for (s, l) in runs {
        rmap_add(
            m,
            s,
            Rmap {
                len: l,
                owner,
                offset: 0,
            },
        );
    }
}

fn rmap_rec(s: u32, r: &Rmap) -> [u8; 24] {
    let mut b = [0u8; 24];
    put(&mut b, 0, &s.to_be_bytes());
    put(&mut b, 4, &r.len.to_be_bytes());
    put(&mut b, 8, &r.owner.to_be_bytes());
    put(&mut b, 16, &r.offset.to_be_bytes());
    b
}

/// Low and high keys of an rmap record: (start, owner, offset without the unwritten flag),
/// and the same for its last block.
fn rmap_keys(rec: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let s = u32_at(rec, 0);
    let len = u32_at(rec, 4);
    let owner = u64_at(rec, 8);
    let off = u64_at(rec, 16) & !RM_UNWRITTEN;
    let r = Rmap {
        len,
        owner,
        offset: off,
    };
    let mut low = Vec::with_capacity(20);
    low.extend_from_slice(&s.to_be_bytes());
    low.extend_from_slice(&owner.to_be_bytes());
    low.extend_from_slice(&off.to_be_bytes());
    let mut high = Vec::with_capacity(20);
    high.extend_from_slice(&(s + len.saturating_sub(1)).to_be_bytes());
    high.extend_from_slice(&owner.to_be_bytes());
    let hoff = if has_offset(&r) {
        off + u64::from(len.saturating_sub(1))
    } else {
        off
    };
    high.extend_from_slice(&hoff.to_be_bytes());
    (low, high)
}

/// The reverse-mapping owner and offset of an allocation.
fn owner_rmap(o: Owner) -> (u64, u64) {
    match o {
        Owner::File { ino, attr, offset } => {
            (ino, (offset & RM_OFF_MASK) | if attr { RM_ATTR } else { 0 })
        }
        Owner::Bmbt { ino, attr } => (ino, RM_BMBT | if attr { RM_ATTR } else { 0 }),
    }
}

/// The in-memory state of one AG.
#[derive(Debug, Clone)]
struct Ag {
    agno: u32,
    len: u32,
    /// Allocatable free extents.
    free: Extents,
    /// Freed this session: written as free by the next flush, not allocatable before it.
    busy: Extents,
    /// Blocks of the by-block and by-size btrees (leaves first, root last) and the AGFL, as
    /// on disk since the last flush.
    bno_blocks: Vec<u32>,
    cnt_blocks: Vec<u32>,
    agfl: Vec<u32>,
    flfirst: u32,
    /// Blocks of the inode and free-inode btrees (leaves first, root last).
    ino_blocks: Vec<u32>,
    fino_blocks: Vec<u32>,
    /// Inode chunks by first AG inode number.
    chunks: BTreeMap<u32, Chunk>,
    /// Chunks `free_inode` left without used inodes: freed at flush if still so.
    emptied: BTreeSet<u32>,
    newino: u32,
    /// Reverse mappings (rmapbt filesystems) and the rmapbt's blocks (leaves first).
    rmap: Option<Rmaps>,
    rmap_blocks: Vec<u32>,
    space_dirty: bool,
    ino_dirty: bool,
}

/// Free space, inode chunks and AG headers of a whole filesystem. See the module docs.
#[derive(Debug, Clone)]
pub struct Space {
    sb: Superblock,
    ags: Vec<Ag>,
}

/// A walked btree: its records (concatenated) and blocks (leaves first, root last).
struct Walked {
    recs: Vec<u8>,
    blocks: Vec<u32>,
}

/// A btree as `walk` reads it: name for errors, v5 magic, record and key sizes.
#[derive(Debug, Clone, Copy)]
struct Tree {
    name: &'static str,
    magic: &'static [u8; 4],
    rec_size: usize,
    key_size: usize,
}

const T_BNO: Tree = Tree {
    name: "by-block free-space btree",
    magic: b"AB3B",
    rec_size: 8,
    key_size: 8,
};
const T_CNT: Tree = Tree {
    name: "by-size free-space btree",
    magic: b"AB3C",
    rec_size: 8,
    key_size: 8,
};
const T_INO: Tree = Tree {
    name: "inode btree",
    magic: b"IAB3",
    rec_size: 16,
    key_size: 4,
};
const T_FINO: Tree = Tree {
    name: "free-inode btree",
    magic: b"FIB3",
    rec_size: 16,
    key_size: 4,
};
const T_RMAP: Tree = Tree {
    name: "reverse-mapping btree",
    magic: b"RMB3",
    rec_size: 24,
    // node entries: low key + high key (20 bytes each)
    key_size: 40,
};
const T_REFC: Tree = Tree {
    name: "refcount btree",
    magic: b"R3FC",
    rec_size: 12,
    key_size: 4,
};

fn walk(r: &Reader<'_>, ag: u32, t: Tree, root: u32, levels: u32) -> Result<Walked> {
    let Tree {
        name,
        magic,
        rec_size,
        key_size,
    } = t;
    let len = r.sb.ag_len(ag);
    let bs = r.sb.blocksize as usize;
    let hdr = btree_build::HDR_V5;
    let mut recs = Vec::new();
    let mut by_level: Vec<Vec<u32>> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut cur = vec![root];
    for level in (0..levels).rev() {
        let mut next = Vec::new();
        for &bno in &cur {
            let what = || format!("{name} block {bno:#x} of AG {ag}");
            if bno == 0 || bno >= len || !seen.insert(bno) {
                return Err(corrupt(what(), "pointer out of range or a loop"));
            }
            let b = r.agb(ag, bno, 1, &what)?;
            if bytes(&b, 0, 4) != magic {
                return Err(corrupt(what(), "bad magic number"));
            }
            csum::verify(&b, btree_build::CRC_OFF, what)?;
            if u64_at(&b, 16) != r.agb_daddr(ag, bno)
                || bytes(&b, 32, 16) != r.sb.meta_uuid()
                || u32_at(&b, 48) != ag
            {
                return Err(corrupt(what(), "block number, UUID or owner is wrong"));
            }
            if u32::from(u16_at(&b, 4)) != level {
                return Err(corrupt(what(), format!("level {}", u16_at(&b, 4))));
            }
            let n = usize::from(u16_at(&b, 6));
            if level == 0 {
                if n > (bs - hdr) / rec_size {
                    return Err(corrupt(what(), format!("{n} records")));
                }
                recs.extend_from_slice(bytes(&b, hdr, n * rec_size));
            } else {
                let max = (bs - hdr) / (key_size + 4);
                if n == 0 || n > max {
                    return Err(corrupt(what(), format!("{n} records")));
                }
                let p = hdr + max * key_size;
                next.extend((0..n).map(|i| u32_at(&b, p + 4 * i)));
            }
        }
        by_level.push(cur);
        cur = next;
    }
    let blocks = by_level.into_iter().rev().flatten().collect();
    Ok(Walked { recs, blocks })
}

fn alloc_shape(sb: &Superblock) -> Shape {
    Shape {
        block_size: sb.blocksize as usize,
        rec_size: 8,
        key_size: 8,
        overlapping: false,
    }
}

fn ino_shape(sb: &Superblock) -> Shape {
    Shape {
        block_size: sb.blocksize as usize,
        rec_size: 16,
        key_size: 4,
        overlapping: false,
    }
}

/// `xfs_btree_compute_maxlevels` for the free-space btrees of this geometry.
fn alloc_maxlevels(sb: &Superblock) -> u32 {
    let s = alloc_shape(sb);
    let (lmin, nmin) = (
        (s.leaf_max() / 2).max(1) as u64,
        (s.node_max() / 2).max(2) as u64,
    );
    let mut n = u64::from(sb.agblocks).div_ceil(2).div_ceil(lmin);
    let mut levels = 1;
    while n > 1 {
        n = n.div_ceil(nmin);
        levels += 1;
    }
    levels
}

/// `xfs_alloc_min_freelist`: AGFL blocks the kernel wants for free-space btrees of these
/// heights (the newer, larger formula: two blocks per level a split can add, each btree).
/// `rmap_level` is 0 without an rmapbt.
fn agfl_min(sb: &Superblock, bno_level: u32, cnt_level: u32, rmap_level: u32) -> usize {
    let max = alloc_maxlevels(sb);
    let one = |l: u32| ((l + 1).min(max) * 2 - 2) as usize;
    let old = |l: u32| (l + 1).min(max) as usize;
    let (r_new, r_old) = if rmap_level > 0 {
        ((rmap_level as usize + 1) * 2 - 2, rmap_level as usize + 1)
    } else {
        (0, 0)
    };
    (one(bno_level) + one(cnt_level) + r_new).max(old(bno_level) + old(cnt_level) + r_old)
}

fn rmap_shape(sb: &Superblock) -> Shape {
    Shape {
        block_size: sb.blocksize as usize,
        rec_size: 24,
        key_size: 20,
        overlapping: true,
    }
}

/// Slots of the AGFL.
fn agfl_size(sb: &Superblock) -> usize {
    (usize::from(sb.sectsize) - AGFL_HDR) / 4
}

/// Deterministic inode generation number from (UUID, inode number).
fn generation(uuid: &[u8; 16], ino: u64) -> u32 {
    let mut b = uuid.to_vec();
    b.extend_from_slice(&ino.to_be_bytes());
    crc32c::crc32c(&b)
}

impl Space {
    /// Read every AG: free extents from the by-block btree (+ AGFL list), inode chunk records
    /// from the inobt, AGF/AGI fields. Refuses with `XfsError::ReadOnly` (naming the feature)
    /// what cannot be kept exact: v4, rmapbt, CoW staging extents in the refcount btree,
    /// unlinked inodes pending, more than 64 inodes per block.
    pub fn load(r: &Reader<'_>) -> Result<Space> {
        let sb = r.sb;
        if !sb.is_v5() {
            return Err(XfsError::ReadOnly(
                "v4 (non-CRC) XFS filesystems are read-only".into(),
            ));
        }
        if sb.inopblog > 6 {
            return Err(XfsError::ReadOnly(format!(
                "{} inodes per block (inode chunks smaller than a block)",
                sb.inopblock
            )));
        }
        let sparse = sb.has_incompat(incompat::SPINODES);
        let mut ags = Vec::with_capacity(sb.agcount as usize);
        for ag in 0..sb.agcount {
            ags.push(Self::load_ag(r, ag, sparse)?);
        }
        Ok(Space {
            sb: sb.clone(),
            ags,
        })
    }

    fn load_ag(r: &Reader<'_>, ag: u32, sparse: bool) -> Result<Ag> {
        let sb = r.sb;
        let agf = Agf::read(r, ag)?;
        let agfl = agfl_blocks(r, ag, &agf)?;
        let bno = walk(r, ag, T_BNO, agf.bno_root, agf.bno_level)?;
        let cnt = walk(r, ag, T_CNT, agf.cnt_root, agf.cnt_level)?;
        let name = || format!("AG {ag}");
        let len = agf.length;
        let mut free = Extents::new();
        let mut recs: Vec<(u32, u32)> = Vec::new();
        let mut last_end = 0u64;
        for rec in bno.recs.chunks_exact(8) {
            let (s, l) = (u32_at(rec, 0), u32_at(rec, 4));
            if l == 0 || u64::from(s) < last_end || u64::from(s) + u64::from(l) > u64::from(len) {
                return Err(corrupt(
                    name(),
                    format!("by-block free-space record ({s:#x}, {l}) out of order or range"),
                ));
            }
            last_end = u64::from(s) + u64::from(l);
            free.insert(s, l);
            recs.push((s, l));
        }
        let mut by_size: Vec<(u32, u32)> = cnt
            .recs
            .chunks_exact(8)
            .map(|c| (u32_at(c, 0), u32_at(c, 4)))
            .collect();
        by_size.sort_unstable();
        if by_size != recs {
            return Err(corrupt(
                name(),
                "the by-size free-space btree does not hold the by-block records",
            ));
        }
        let total: u64 = recs.iter().map(|&(_, l)| u64::from(l)).sum();
        let longest = recs.iter().map(|&(_, l)| l).max().unwrap_or(0);
        let rmapbt = if sb.has_ro_compat(ro_compat::RMAPBT) {
            Some(walk(r, ag, T_RMAP, agf.rmap_root, agf.rmap_level)?)
        } else {
            None
        };
        let rmap_nblocks = rmapbt.as_ref().map_or(0, |w| w.blocks.len());
        if rmapbt.is_some() && rmap_nblocks != agf.rmap_blocks as usize {
            return Err(corrupt(
                format!("AGF of AG {ag}"),
                format!(
                    "rmap_blocks {} but the rmapbt has {rmap_nblocks}",
                    agf.rmap_blocks
                ),
            ));
        }
        let btreeblks = (bno.blocks.len() + cnt.blocks.len() + rmap_nblocks
            - 2
            - usize::from(rmapbt.is_some())) as u32;
        if total != u64::from(agf.freeblks) || longest != agf.longest || btreeblks != agf.btreeblks
        {
            return Err(corrupt(
                format!("AGF of AG {ag}"),
                format!(
                    "freeblks {} longest {} btreeblks {}, but the btrees hold {total}, {longest}, {btreeblks}",
                    agf.freeblks, agf.longest, agf.btreeblks
                ),
            ));
        }
        // Re-merge adjacent records (the kernel never leaves them, but be safe).
        let mut merged = Extents::new();
        for (&s, &l) in &free {
            ext_insert(&mut merged, s, l);
        }
        let free = merged;
        if sb.has_ro_compat(ro_compat::REFLINK) {
            let rc = walk(r, ag, T_REFC, agf.refcount_root, agf.refcount_level)?;
            if rc
                .recs
                .chunks_exact(12)
                .any(|c| u32_at(c, 0) & REFC_COWFLAG != 0)
            {
                return Err(XfsError::ReadOnly(format!(
                    "reflink: the refcount btree of AG {ag} holds copy-on-write staging extents \
                     (mount and unmount the filesystem cleanly first)"
                )));
            }
        }
        let agi = Agi::read(r, ag)?;
        if agi.has_unlinked() {
            return Err(XfsError::ReadOnly(format!(
                "AG {ag} has inodes on its unlinked lists (mount and unmount it, or xfs_repair)"
            )));
        }
        let ino = walk(r, ag, T_INO, agi.root, agi.level)?;
        let mut chunks = BTreeMap::new();
        let (mut count, mut freecount) = (0u64, 0u64);
        for rec in ino.recs.chunks_exact(16) {
            let c = InodeChunk::parse(rec, sparse);
            let ch = Chunk {
                holemask: c.holemask,
                count: u32::from(c.count),
                freecount: c.freecount,
                free: c.free,
            };
            count += u64::from(ch.count);
            freecount += u64::from(ch.freecount);
            if chunks.insert(c.startino, ch).is_some() {
                return Err(corrupt(name(), format!("inode chunk {} twice", c.startino)));
            }
        }
        if count != u64::from(agi.count) || freecount != u64::from(agi.freecount) {
            return Err(corrupt(
                format!("AGI of AG {ag}"),
                format!(
                    "count {} freecount {}, but the inode btree holds {count}, {freecount}",
                    agi.count, agi.freecount
                ),
            ));
        }
        let fino_blocks = if sb.has_ro_compat(ro_compat::FINOBT) {
            let f = walk(r, ag, T_FINO, agi.free_root, agi.free_level)?;
            let want: Vec<u32> = chunks
                .iter()
                .filter(|(_, c)| c.freecount > 0)
                .map(|(&s, _)| s)
                .collect();
            let got: Vec<u32> = f.recs.chunks_exact(16).map(|c| u32_at(c, 0)).collect();
            if want != got {
                return Err(corrupt(
                    name(),
                    "the free-inode btree does not list the chunks with free inodes",
                ));
            }
            f.blocks
        } else {
            Vec::new()
        };
        if sb.has_ro_compat(ro_compat::INOBTCNT)
            && (agi.iblocks as usize != ino.blocks.len()
                || agi.fblocks as usize != fino_blocks.len())
        {
            return Err(corrupt(
                format!("AGI of AG {ag}"),
                "inode btree block counts (inobtcount) disagree with the btrees",
            ));
        }
        let mut a = Ag {
            agno: ag,
            len,
            free,
            busy: Extents::new(),
            bno_blocks: bno.blocks,
            cnt_blocks: cnt.blocks,
            agfl,
            flfirst: agf.flfirst,
            ino_blocks: ino.blocks,
            fino_blocks,
            chunks,
            emptied: BTreeSet::new(),
            newino: agi.newino,
            rmap: None,
            rmap_blocks: Vec::new(),
            space_dirty: false,
            ino_dirty: false,
        };
        // No block may be both free and in a free-space/inode btree or on the AGFL.
        let mut used = Extents::new();
        for &b in a
            .bno_blocks
            .iter()
            .chain(&a.cnt_blocks)
            .chain(&a.agfl)
            .chain(&a.ino_blocks)
            .chain(&a.fino_blocks)
            .chain(rmapbt.iter().flat_map(|w| &w.blocks))
        {
            if ext_overlaps(&a.free, b, 1) || ext_overlaps(&used, b, 1) {
                return Err(corrupt(
                    name(),
                    format!("block {b:#x} is used twice (btree, free list, free space)"),
                ));
            }
            ext_insert(&mut used, b, 1);
        }
        if let Some(w) = rmapbt {
            Self::load_rmap(&mut a, w, sb.has_ro_compat(ro_compat::REFLINK))?;
        }
        Ok(a)
    }

    /// Take the reverse mappings of an AG, checking that they are what this writer will
    /// regenerate: no shared extents, the free space and the mappings partition the AG,
    /// OWN_AG is exactly the free-space/rmap btree and AGFL blocks, OWN_INOBT the inode
    /// btree blocks.
    fn load_rmap(a: &mut Ag, w: Walked, reflink: bool) -> Result<()> {
        let ag = a.agno;
        let refuse = |d: &str| XfsError::ReadOnly(format!("rmapbt of AG {ag}: {d}"));
        let mut m = Rmaps::new();
        let mut last_end = 0u64;
        let mut mapped = 0u64;
        for rec in w.recs.chunks_exact(24) {
            let (s, len) = (u32_at(rec, 0), u32_at(rec, 4));
            let r = Rmap {
                len,
                owner: u64_at(rec, 8),
                offset: u64_at(rec, 16),
            };
            if len == 0 || u64::from(s) + u64::from(len) > u64::from(a.len) {
                return Err(corrupt(
                    format!("rmapbt of AG {ag}"),
                    format!("record ({s:#x}, {len})"),
                ));
            }
            if u64::from(s) < last_end {
                return Err(refuse(if reflink {
                    "shared extents (reflinked files): overlapping reverse mappings are not maintained"
                } else {
                    "overlapping records"
                }));
            }
            if ext_overlaps(&a.free, s, len) {
                return Err(corrupt(
                    format!("rmapbt of AG {ag}"),
                    format!("free block {s:#x} is mapped"),
                ));
            }
            last_end = u64::from(s) + u64::from(len);
            mapped += u64::from(len);
            m.insert(s, r);
        }
        if mapped + ext_total(&a.free) != u64::from(a.len) {
            return Err(corrupt(
                format!("rmapbt of AG {ag}"),
                "the mappings and the free space do not cover the AG",
            ));
        }
        let blocks_of = |owner: u64| -> Extents {
            let mut e = Extents::new();
            for (&s, r) in m.iter().filter(|(_, r)| r.owner == owner) {
                ext_insert(&mut e, s, r.len);
            }
            e
        };
        let runs = |v: &mut dyn Iterator<Item = &u32>| -> Extents {
            let mut e = Extents::new();
            for &b in v {
                ext_insert(&mut e, b, 1);
            }
            e
        };
        let own_ag = runs(
            &mut a
                .bno_blocks
                .iter()
                .chain(&a.cnt_blocks)
                .chain(&w.blocks)
                .chain(&a.agfl),
        );
        if blocks_of(OWN_AG) != own_ag {
            return Err(refuse(
                "OWN_AG mappings are not the free-space btrees, rmapbt and AGFL",
            ));
        }
        let own_inobt = runs(&mut a.ino_blocks.iter().chain(&a.fino_blocks));
        if blocks_of(OWN_INOBT) != own_inobt {
            return Err(refuse("OWN_INOBT mappings are not the inode btree blocks"));
        }
        // Normalise: merge what the kernel left unmerged.
        let mut merged = Rmaps::new();
        for (s, r) in m {
            rmap_add(&mut merged, s, r);
        }
        a.rmap = Some(merged);
        a.rmap_blocks = w.blocks;
        Ok(())
    }

    /// The superblock this state was loaded with.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn split(&self, fsb: u64) -> (u32, u32) {
        let (ag, bno) = self.sb.fsb_split(fsb);
        (ag as u32, bno as u32)
    }

    fn fsb(&self, ag: u32, bno: u32) -> u64 {
        (u64::from(ag) << self.sb.agblklog) | u64::from(bno)
    }

    /// Blocks an AG must keep free so that its next flush can always rebuild its btrees and
    /// refill its AGFL (beyond the blocks those structures already hold).
    fn reserve(&self, a: &Ag) -> u64 {
        let sb = &self.sb;
        let nrec = a.free.len() + a.busy.len() + 2;
        let s = alloc_shape(sb);
        let lv = s.levels(nrec);
        let (rmap_need, rlv) = match &a.rmap {
            Some(m) => {
                let rs = rmap_shape(sb);
                let n = m.len() + 8;
                (rs.total_blocks(n), rs.levels(n))
            }
            None => (0, 0),
        };
        let space = 2 * s.total_blocks(nrec) + rmap_need + agfl_min(sb, lv, lv, rlv);
        let i = ino_shape(sb);
        let ino = i.total_blocks(a.chunks.len() + 1) * 2;
        let have = a.bno_blocks.len() + a.cnt_blocks.len() + a.rmap_blocks.len() + a.agfl.len();
        let have_i = a.ino_blocks.len() + a.fino_blocks.len();
        (space.saturating_sub(have) + ino.saturating_sub(have_i) + 2) as u64
    }

    /// Up to `len` contiguous blocks (at least `min_len`), as near fsb `near` as possible:
    /// same AG first (the nearest free extent at/after `near` that holds `len`, else the
    /// smallest extent that holds `len`, else the largest that holds `min_len`), then the
    /// other AGs in order. Returns (fsb, len). `XfsError::NoSpace` when impossible.
    ///
    /// Each AG keeps back what its next flush needs to rebuild its btrees and AGFL.
    pub fn alloc(&mut self, near: u64, len: u64, min_len: u64, owner: Owner) -> Result<(u64, u64)> {
        if len == 0 || min_len == 0 || min_len > len {
            return Err(XfsError::Invalid(format!(
                "allocation of {len} blocks (at least {min_len})"
            )));
        }
        let (ag0, bno0) = if self.sb.fsb_valid(near, 1) {
            self.split(near)
        } else {
            (0, 0)
        };
        let n = self.sb.agcount;
        for k in 0..n {
            let ag = (ag0 + k) % n;
            let a = &self.ags[ag as usize];
            let avail = ext_total(&a.free).saturating_sub(self.reserve(a));
            if avail < min_len {
                continue;
            }
            let want = len.min(avail).min(u64::from(u32::MAX)) as u32;
            let minl = min_len as u32;
            let mut pick: Option<(u32, u32)> = None;
            if ag == ag0 {
                // nearest at/after `near` holding `want`
                let from = a.free.range(..=bno0).next_back().map_or(bno0, |(&s, _)| s);
                for (&s, &l) in a.free.range(from..) {
                    let st = s.max(bno0);
                    if s + l > st && s + l - st >= want {
                        pick = Some((st, want));
                        break;
                    }
                }
            }
            if pick.is_none() {
                // best fit
                pick = a
                    .free
                    .iter()
                    .filter(|&(_, &l)| l >= want)
                    .min_by_key(|&(&s, &l)| (l, s))
                    .map(|(&s, _)| (s, want));
            }
            if pick.is_none() {
                pick = a
                    .free
                    .iter()
                    .max_by_key(|&(&s, &l)| (l, std::cmp::Reverse(s)))
                    .filter(|&(_, &l)| l >= minl)
                    .map(|(&s, &l)| (s, l.min(want)));
            }
            if let Some((s, l)) = pick {
                let a = &mut self.ags[ag as usize];
                if !ext_remove(&mut a.free, s, l) {
                    return Err(corrupt(format!("AG {ag}"), "free extent map"));
                }
                if let Some(m) = &mut a.rmap {
                    let (owner, offset) = owner_rmap(owner);
                    rmap_add(
                        m,
                        s,
                        Rmap {
                            len: l,
                            owner,
                            offset,
                        },
                    );
                }
                a.space_dirty = true;
                return Ok((self.fsb(ag, s), u64::from(l)));
            }
        }
        Err(XfsError::NoSpace(format!(
            "{len} blocks (at least {min_len}) near block {near}"
        )))
    }

    /// Give back `len` blocks at `fsb`. They become free at the end of the next flush (busy
    /// until then). Freeing blocks that are free, busy or AG metadata is refused
    /// (`XfsError::Invalid`), nothing changed.
    pub fn free(&mut self, fsb: u64, len: u64, owner: Owner) -> Result<()> {
        if len == 0 || len > u64::from(u32::MAX) || !self.sb.fsb_valid(fsb, len) {
            return Err(XfsError::Invalid(format!(
                "free of {len} blocks at {fsb:#x}: outside the filesystem"
            )));
        }
        let (ag, bno) = self.split(fsb);
        let l = len as u32;
        let a = &mut self.ags[ag as usize];
        let meta = a
            .bno_blocks
            .iter()
            .chain(&a.cnt_blocks)
            .chain(&a.agfl)
            .chain(&a.ino_blocks)
            .chain(&a.fino_blocks)
            .chain(&a.rmap_blocks)
            .any(|&b| b >= bno && u64::from(b) < u64::from(bno) + len);
        let inopblog = u32::from(self.sb.inopblog);
        let full = (64u32 >> inopblog).max(1);
        let lo = bno.saturating_sub(full) << inopblog;
        let hi = (u64::from(bno) + len) << inopblog;
        let in_chunk = a
            .chunks
            .range(lo..)
            .take_while(|(s, _)| u64::from(**s) < hi)
            .any(|(&s, c)| {
                (0..64u32).filter(|&i| c.present(i)).any(|i| {
                    let b = (s + i) >> inopblog;
                    b >= bno && u64::from(b) < u64::from(bno) + len
                })
            });
        if bno == 0
            || meta
            || in_chunk
            || ext_overlaps(&a.free, bno, l)
            || ext_overlaps(&a.busy, bno, l)
        {
            return Err(XfsError::Invalid(format!(
                "free of {len} blocks at AG {ag} block {bno:#x}: already free, AG metadata or inodes"
            )));
        }
        if let Some(m) = &mut a.rmap {
            let (o, off) = owner_rmap(owner);
            if !rmap_covers(m, bno, l, o, off & (RM_ATTR | RM_BMBT)) {
                return Err(XfsError::Invalid(format!(
                    "free of {len} blocks at AG {ag} block {bno:#x}: the reverse mapping does \
                     not give them to {owner:?}"
                )));
            }
            rmap_remove(m, bno, l);
        }
        ext_insert(&mut a.busy, bno, l);
        a.space_dirty = true;
        Ok(())
    }

    /// Inodes per chunk record geometry: (blocks of a full chunk, inode alignment in blocks,
    /// sparse cluster blocks or 0).
    fn chunk_geom(&self) -> (u32, u32, u32) {
        let sb = &self.sb;
        let full = 64u32 >> sb.inopblog;
        let align = sb.inoalignmt.max(1);
        let sparse = if sb.has_incompat(incompat::SPINODES) {
            sb.spino_align.max(1)
        } else {
            0
        };
        (full, align, sparse)
    }

    fn agino_to_bno(&self, agino: u32) -> u32 {
        agino >> self.sb.inopblog
    }

    fn ino(&self, ag: u32, agino: u32) -> u64 {
        (u64::from(ag) << (u32::from(self.sb.agblklog) + u32::from(self.sb.inopblog)))
            | u64::from(agino)
    }

    /// A free inode near `near_ino`: same AG, nearest chunk with a free inode first; else a
    /// new chunk in that AG (aligned to `sb_inoalignmt`; a sparse chunk where the filesystem
    /// has sparse inodes and no full chunk fits); then the other AGs. A new chunk's inodes
    /// are initialised on `dev` at once (v3: magic, version, number, UUID, next_unlinked =
    /// NULLAGINO, a generation derived from (UUID, number), CRC): those blocks were free.
    pub fn alloc_inode(
        &mut self,
        dev: &dyn BlockDev,
        sb: &Superblock,
        stamp: &Stamp,
        near_ino: u64,
    ) -> Result<u64> {
        let agshift = u32::from(self.sb.agblklog) + u32::from(self.sb.inopblog);
        let n = self.sb.agcount;
        let ag0 = ((near_ino >> agshift) as u32).min(n - 1);
        let near = (near_ino & ((1u64 << agshift) - 1)) as u32;
        let order: Vec<u32> = (0..n).map(|k| (ag0 + k) % n).collect();
        // 1. existing free inode in the near AG, 2. new chunk there, 3. other AGs likewise.
        for &ag in &order {
            if let Some(ino) = self.take_free_inode(ag, near) {
                return Ok(ino);
            }
            if self.new_chunk(dev, sb, stamp, ag, near)?
                && let Some(ino) = self.take_free_inode(ag, near)
            {
                return Ok(ino);
            }
        }
        Err(XfsError::NoSpace(
            "no free inode and no room for a new inode chunk".into(),
        ))
    }

    fn take_free_inode(&mut self, ag: u32, near: u32) -> Option<u64> {
        let a = &mut self.ags[ag as usize];
        let (&start, _) = a
            .chunks
            .iter()
            .filter(|(_, c)| c.freecount > 0)
            .min_by_key(|&(&s, _)| (i64::from(s) - i64::from(near)).unsigned_abs())?;
        let c = a.chunks.get_mut(&start)?;
        let i = (0..64).find(|&i| c.present(i) && c.free & (1u64 << i) != 0)?;
        c.free &= !(1u64 << i);
        c.freecount -= 1;
        a.emptied.remove(&start);
        a.ino_dirty = true;
        Some(self.ino(ag, start + i))
    }

    /// Allocate a new (full, else sparse) chunk in `ag`, near AG inode `near`. Ok(false) when
    /// the AG has no room.
    fn new_chunk(
        &mut self,
        dev: &dyn BlockDev,
        sb: &Superblock,
        stamp: &Stamp,
        ag: u32,
        near: u32,
    ) -> Result<bool> {
        let (full, align, cluster) = self.chunk_geom();
        let near_bno = self.agino_to_bno(near);
        let a = &self.ags[ag as usize];
        let avail = ext_total(&a.free).saturating_sub(self.reserve(a));
        let inopblog = u32::from(self.sb.inopblog);
        // chunk windows already used by records, as block ranges
        let windows: Extents = a.chunks.keys().map(|&s| (s >> inopblog, full)).collect();
        let window_free = |ws: u32| -> bool {
            ws > 0
                && u64::from(ws) + u64::from(full) <= u64::from(a.len)
                && !windows.iter().any(|(&s, &l)| s < ws + full && ws < s + l)
        };
        // full chunk: first aligned free window at/after near, else the first one at all
        let mut found: Option<u32> = None;
        if avail >= u64::from(full) {
            for pass in 0..2 {
                for (&s, &l) in &a.free {
                    let mut ws = s.div_ceil(align) * align;
                    if pass == 0 && ws < near_bno {
                        if s + l <= near_bno {
                            continue;
                        }
                        ws = near_bno.div_ceil(align) * align;
                    }
                    while u64::from(ws) + u64::from(full) <= u64::from(s) + u64::from(l) {
                        if window_free(ws) {
                            found = Some(ws);
                            break;
                        }
                        ws += align;
                    }
                    if found.is_some() {
                        break;
                    }
                }
                if found.is_some() {
                    break;
                }
            }
        }
        if let Some(ws) = found {
            let startino = ws << inopblog;
            let a = &mut self.ags[ag as usize];
            if !ext_remove(&mut a.free, ws, full) {
                return Err(corrupt(format!("AG {ag}"), "free extent map"));
            }
            a.chunks.insert(
                startino,
                Chunk {
                    holemask: 0,
                    count: 64,
                    freecount: 64,
                    free: u64::MAX,
                },
            );
            a.newino = startino;
            a.ino_dirty = true;
            a.space_dirty = true;
            if let Some(m) = &mut a.rmap {
                rmap_add(
                    m,
                    ws,
                    Rmap {
                        len: full,
                        owner: OWN_INODES,
                        offset: 0,
                    },
                );
            }
            self.init_inodes(dev, sb, stamp, ag, ws, full)?;
            return Ok(true);
        }
        if cluster == 0 || cluster >= full || avail < u64::from(cluster) {
            return Ok(false);
        }
        // sparse: one aligned cluster whose chunk window is unused, or is a sparse record
        // whose hole covers the cluster.
        let inos_per_cluster = cluster << inopblog;
        let bits = inos_per_cluster / 4;
        let mut pick: Option<(u32, u32, bool)> = None; // (cluster start, window start, existing)
        'outer: for (&s, &l) in &a.free {
            let mut cs = s.div_ceil(cluster) * cluster;
            while u64::from(cs) + u64::from(cluster) <= u64::from(s) + u64::from(l) {
                let ws = cs / align * align;
                if ws > 0 && u64::from(ws) + u64::from(full) <= u64::from(a.len) {
                    let startino = ws << inopblog;
                    if let Some(c) = a.chunks.get(&startino) {
                        let first = ((cs - ws) << inopblog) / 4;
                        let mask = (((1u32 << bits) - 1) << first) as u16;
                        if c.holemask & mask == mask {
                            pick = Some((cs, ws, true));
                            break 'outer;
                        }
                    } else if window_free(ws) {
                        pick = Some((cs, ws, false));
                        break 'outer;
                    }
                }
                cs += cluster;
            }
        }
        let Some((cs, ws, existing)) = pick else {
            return Ok(false);
        };
        let startino = ws << inopblog;
        let first = ((cs - ws) << inopblog) / 4;
        let mask = (((1u32 << bits) - 1) << first) as u16;
        let a = &mut self.ags[ag as usize];
        if !ext_remove(&mut a.free, cs, cluster) {
            return Err(corrupt(format!("AG {ag}"), "free extent map"));
        }
        let c = a.chunks.entry(startino).or_insert(Chunk {
            holemask: u16::MAX,
            count: 0,
            freecount: 0,
            free: u64::MAX,
        });
        c.holemask &= !mask;
        c.count += inos_per_cluster;
        c.freecount += inos_per_cluster;
        let _ = existing;
        // the kernel points agi_newino at the first inode of the new cluster
        a.newino = cs << inopblog;
        a.ino_dirty = true;
        a.space_dirty = true;
        if let Some(m) = &mut a.rmap {
            rmap_add(
                m,
                cs,
                Rmap {
                    len: cluster,
                    owner: OWN_INODES,
                    offset: 0,
                },
            );
        }
        self.init_inodes(dev, sb, stamp, ag, cs, cluster)?;
        Ok(true)
    }

    /// Write fresh free v3 inodes into `nblocks` blocks at AG block `bno`.
    fn init_inodes(
        &self,
        dev: &dyn BlockDev,
        sb: &Superblock,
        stamp: &Stamp,
        ag: u32,
        bno: u32,
        nblocks: u32,
    ) -> Result<()> {
        let isz = usize::from(sb.inodesize);
        let per = 1u32 << sb.inopblog;
        let mut buf = vec![0u8; (nblocks as usize) << sb.blocklog];
        for k in 0..nblocks * per {
            let agino = (bno << sb.inopblog) + k;
            let ino = self.ino(ag, agino);
            let d = &mut buf[k as usize * isz..(k as usize + 1) * isz];
            put(d, 0, &0x494eu16.to_be_bytes());
            put(d, 4, &[3]);
            put(d, 92, &generation(&stamp.uuid, ino).to_be_bytes());
            put(d, 96, &NULL_AGINO.to_be_bytes());
            put(d, 152, &ino.to_be_bytes());
            put(d, 160, &stamp.uuid);
            let c = csum::compute(d, 100);
            put(d, 100, &c.to_le_bytes());
        }
        dev.write_at(&buf, sb.agb_to_byte(ag, bno))?;
        Ok(())
    }

    /// Mark the inode free in the inobt/finobt records (the caller zeroes the inode itself).
    /// A chunk left with no used inodes is freed at flush, as the kernel does.
    pub fn free_inode(&mut self, ino: u64) -> Result<()> {
        let agshift = u32::from(self.sb.agblklog) + u32::from(self.sb.inopblog);
        let ag = (ino >> agshift) as u32;
        let agino = (ino & ((1u64 << agshift) - 1)) as u32;
        let bad = || XfsError::Invalid(format!("free of inode {ino}: not an allocated inode"));
        let a = self.ags.get_mut(ag as usize).ok_or_else(bad)?;
        let (&start, c) = a.chunks.range_mut(..=agino).next_back().ok_or_else(bad)?;
        let i = agino - start;
        if !c.present(i) || c.free & (1u64 << i) != 0 {
            return Err(bad());
        }
        c.free |= 1u64 << i;
        c.freecount += 1;
        if c.freecount == c.count {
            a.emptied.insert(start);
        }
        a.ino_dirty = true;
        Ok(())
    }

    /// `sb_icount` as it must be after the next flush (exact once flushed).
    pub fn icount(&self) -> u64 {
        self.ags
            .iter()
            .flat_map(|a| a.chunks.values())
            .map(|c| u64::from(c.count))
            .sum::<u64>()
            - self.emptied_counts().0
    }

    /// `sb_ifree` as it must be after the next flush.
    pub fn ifree(&self) -> u64 {
        self.ags
            .iter()
            .flat_map(|a| a.chunks.values())
            .map(|c| u64::from(c.freecount))
            .sum::<u64>()
            - self.emptied_counts().1
    }

    fn emptied_counts(&self) -> (u64, u64) {
        let mut out = (0, 0);
        for a in &self.ags {
            for s in &a.emptied {
                if let Some(c) = a.chunks.get(s)
                    && c.freecount == c.count
                {
                    out.0 += u64::from(c.count);
                    out.1 += u64::from(c.freecount);
                }
            }
        }
        out
    }

    /// `sb_fdblocks`: Σ over AGs of free blocks + AGFL blocks + free-space btree (and rmapbt)
    /// blocks beyond the roots (`agf_btreeblks`). Exact after a flush (before it, blocks the flush will move between
    /// the free space and the inode btrees or free with emptied chunks are not yet counted).
    pub fn fdblocks(&self) -> u64 {
        self.ags
            .iter()
            .map(|a| {
                ext_total(&a.free)
                    + ext_total(&a.busy)
                    + (a.agfl.len() + a.bno_blocks.len() + a.cnt_blocks.len() + a.rmap_blocks.len())
                        as u64
                    - 2
                    - u64::from(a.rmap.is_some())
            })
            .sum()
    }

    /// Free blocks per AG (allocatable + busy), for tests and `inspect`.
    pub fn free_extents(&self, ag: u32) -> Vec<(u32, u32)> {
        self.ags
            .get(ag as usize)
            .map(|a| {
                let mut m = a.free.clone();
                for (&s, &l) in &a.busy {
                    ext_insert(&mut m, s, l);
                }
                m.into_iter().collect()
            })
            .unwrap_or_default()
    }

    /// Rebuild, in every AG that changed, the inode and free-inode btrees (AGI), then the
    /// by-block and by-size btrees, the AGFL and the AGF; then release busy extents.
    pub fn flush(&mut self, dev: &dyn BlockDev, sb: &Superblock, stamp: &Stamp) -> Result<()> {
        // Work on a copy: on error nothing in memory changes (the device may hold partial
        // writes, which the caller's overlay discards).
        let mut ags = self.ags.clone();
        for a in &mut ags {
            if a.ino_dirty {
                self.flush_inodes(a, dev, sb, stamp)?;
            }
            if a.space_dirty {
                self.flush_space(a, dev, sb, stamp)?;
            }
            a.ino_dirty = false;
            a.space_dirty = false;
        }
        self.ags = ags;
        Ok(())
    }

    fn flush_inodes(
        &self,
        a: &mut Ag,
        dev: &dyn BlockDev,
        sb: &Superblock,
        st: &Stamp,
    ) -> Result<()> {
        let inopblog = u32::from(sb.inopblog);
        let sparse = sb.has_incompat(incompat::SPINODES);
        // Chunks left without used inodes are freed.
        for s in std::mem::take(&mut a.emptied) {
            let Some(c) = a.chunks.get(&s).copied() else {
                continue;
            };
            if c.freecount != c.count {
                continue;
            }
            a.chunks.remove(&s);
            let ws = s >> inopblog;
            // free the blocks of the present inodes
            let mut runs = Extents::new();
            for i in (0..64u32).filter(|&i| c.present(i)) {
                let b = ws + (i >> inopblog);
                if !ext_contains(&runs, b, 1) {
                    ext_insert(&mut runs, b, 1);
                }
            }
            for (s, l) in runs {
                if ext_overlaps(&a.free, s, l) || ext_overlaps(&a.busy, s, l) {
                    return Err(corrupt(
                        format!("AG {}", a.agno),
                        "inode chunk blocks are free",
                    ));
                }
                if let Some(m) = &mut a.rmap {
                    if !rmap_covers(m, s, l, OWN_INODES, 0) {
                        return Err(corrupt(
                            format!("rmapbt of AG {}", a.agno),
                            format!("inode chunk blocks {s:#x}+{l} are not mapped as inodes"),
                        ));
                    }
                    rmap_remove(m, s, l);
                }
                ext_insert(&mut a.busy, s, l);
            }
            a.space_dirty = true;
        }
        let mut irecs = Vec::with_capacity(a.chunks.len() * 16);
        let mut frecs = Vec::new();
        let (mut count, mut freecount) = (0u32, 0u32);
        for (&s, c) in &a.chunks {
            let mut r = [0u8; 16];
            put(&mut r, 0, &s.to_be_bytes());
            if sparse {
                put(&mut r, 4, &c.holemask.to_be_bytes());
                put(&mut r, 6, &[c.count as u8, c.freecount as u8]);
            } else {
                put(&mut r, 4, &c.freecount.to_be_bytes());
            }
            put(&mut r, 8, &c.free.to_be_bytes());
            irecs.extend_from_slice(&r);
            if c.freecount > 0 {
                frecs.extend_from_slice(&r);
            }
            count += c.count;
            freecount += c.freecount;
        }
        let finobt = sb.has_ro_compat(ro_compat::FINOBT);
        let shape = ino_shape(sb);
        let ni = shape.total_blocks(a.chunks.len());
        let nf = if finobt {
            shape.total_blocks(frecs.len() / 16)
        } else {
            0
        };
        let mut pool: Vec<u32> = a.ino_blocks.iter().chain(&a.fino_blocks).copied().collect();
        let mut blocks: Vec<u32> = Vec::with_capacity(ni + nf);
        let keep = pool.len().min(ni + nf);
        blocks.extend(pool.drain(..keep));
        for b in pool {
            ext_insert(&mut a.busy, b, 1);
            a.space_dirty = true;
        }
        while blocks.len() < ni + nf {
            let k = (ni + nf - blocks.len()) as u32;
            let Some((&s, &l)) = a.free.iter().next() else {
                return Err(XfsError::NoSpace(format!(
                    "AG {}: no block left for the inode btrees",
                    a.agno
                )));
            };
            let take = l.min(k);
            ext_remove(&mut a.free, s, take);
            blocks.extend(s..s + take);
            a.space_dirty = true;
        }
        let daddr = |b: u32| sb.agb_to_byte(a.agno, b) >> 9;
        let hdr = |m: &'static [u8; 4]| Header {
            magic: m,
            agno: a.agno,
            uuid: st.uuid,
            lsn: st.lsn,
        };
        let bad = || corrupt(format!("AG {}", a.agno), "inode btree build");
        let ib = btree_build::build(&shape, &hdr(b"IAB3"), &irecs, &blocks[..ni], &daddr)
            .ok_or_else(bad)?;
        for (b, data) in &ib.blocks {
            dev.write_at(data, sb.agb_to_byte(a.agno, *b))?;
        }
        let fb = if finobt {
            let fb = btree_build::build(&shape, &hdr(b"FIB3"), &frecs, &blocks[ni..], &daddr)
                .ok_or_else(bad)?;
            for (b, data) in &fb.blocks {
                dev.write_at(data, sb.agb_to_byte(a.agno, *b))?;
            }
            Some(fb)
        } else {
            None
        };
        a.ino_blocks = blocks[..ni].to_vec();
        a.fino_blocks = blocks[ni..].to_vec();
        if let Some(m) = &mut a.rmap {
            rmap_set_owner(m, OWN_INOBT, &blocks);
        }
        // AGI
        let ss = usize::from(sb.sectsize);
        let off = sb.agb_to_byte(a.agno, 0) + 2 * ss as u64;
        let mut agi = vec![0u8; ss];
        dev.read_at(&mut agi, off)?;
        put(&mut agi, 16, &count.to_be_bytes());
        put(&mut agi, 20, &ib.root.to_be_bytes());
        put(&mut agi, 24, &ib.levels.to_be_bytes());
        put(&mut agi, 28, &freecount.to_be_bytes());
        put(&mut agi, 32, &a.newino.to_be_bytes());
        if let Some(fb) = &fb {
            put(&mut agi, 328, &fb.root.to_be_bytes());
            put(&mut agi, 332, &fb.levels.to_be_bytes());
        }
        if sb.has_ro_compat(ro_compat::INOBTCNT) {
            put(&mut agi, 336, &(ni as u32).to_be_bytes());
            put(&mut agi, 340, &(nf as u32).to_be_bytes());
        }
        put(&mut agi, AGI_LSN, &st.lsn.to_be_bytes());
        let c = csum::compute(&agi, AGI_CRC);
        put(&mut agi, AGI_CRC, &c.to_le_bytes());
        dev.write_at(&agi, off)?;
        Ok(())
    }

    fn flush_space(
        &self,
        a: &mut Ag,
        dev: &dyn BlockDev,
        sb: &Superblock,
        st: &Stamp,
    ) -> Result<()> {
        let shape = alloc_shape(sb);
        let agfl_cap = agfl_size(sb);
        // Everything free after this flush, before the btrees and AGFL take their blocks.
        let mut cur = a.free.clone();
        for (&s, &l) in &a.busy {
            ext_insert(&mut cur, s, l);
        }
        let pool: Vec<u32> = a
            .bno_blocks
            .iter()
            .chain(&a.cnt_blocks)
            .chain(&a.rmap_blocks)
            .chain(&a.agfl)
            .copied()
            .collect();
        // Reverse mappings other than OWN_AG (which the taken blocks make up).
        let rshape = rmap_shape(sb);
        let base_rmaps: Option<Rmaps> = a.rmap.as_ref().map(|m| {
            let mut b = m.clone();
            b.retain(|_, r| r.owner != OWN_AG);
            b
        });
        let rmap_need = |taken: &[u32]| -> (usize, u32) {
            let Some(b) = &base_rmaps else {
                return (0, 0);
            };
            let mut t = taken.to_vec();
            t.sort_unstable();
            let runs =
                t.windows(2).filter(|w| w[0] + 1 != w[1]).count() + usize::from(!t.is_empty());
            let n = b.len() + runs;
            (rshape.total_blocks(n), rshape.levels(n))
        };
        for &b in &pool {
            ext_insert(&mut cur, b, 1);
        }
        // Blocks the new btrees/AGFL may take beyond the pool: allocatable (not busy).
        let mut takeable = a.free.clone();
        let mut taken: Vec<u32> = Vec::new();
        let mut from_pool = 0usize;
        let mut done = false;
        for _ in 0..64 {
            let n = cur.len();
            let lv = shape.levels(n);
            let bt = shape.total_blocks(n);
            let (rt, rl) = rmap_need(&taken);
            let need = 2 * bt + rt + agfl_min(sb, lv, lv, rl);
            if taken.len() >= need && taken.len() - 2 * bt - rt < agfl_cap {
                done = true;
                break;
            }
            if taken.len() > need {
                // too many for the AGFL: give the last ones back
                while taken.len() > need {
                    let Some(b) = taken.pop() else { break };
                    ext_insert(&mut cur, b, 1);
                    if from_pool > taken.len() {
                        from_pool = taken.len();
                    } else {
                        ext_insert(&mut takeable, b, 1);
                    }
                }
                continue;
            }
            let mut k = need - taken.len();
            while k > 0 && from_pool < pool.len() {
                let b = pool[from_pool];
                from_pool += 1;
                if ext_remove(&mut cur, b, 1) {
                    taken.push(b);
                    k -= 1;
                }
            }
            while k > 0 {
                let kk = k as u32;
                let pick = takeable
                    .iter()
                    .find(|&(_, &l)| l > kk)
                    .or_else(|| takeable.iter().next())
                    .map(|(&s, &l)| (s, l.min(kk)));
                let Some((s, l)) = pick else {
                    return Err(XfsError::NoSpace(format!(
                        "AG {}: no room for the free-space btrees",
                        a.agno
                    )));
                };
                ext_remove(&mut takeable, s, l);
                ext_remove(&mut cur, s, l);
                taken.extend(s..s + l);
                k -= l as usize;
            }
            // pool blocks not taken are free again (already in `cur`)
        }
        // pool blocks never considered stay free (in `cur`); done must hold
        if !done {
            return Err(XfsError::NoSpace(format!(
                "AG {}: the free-space btree rebuild does not converge",
                a.agno
            )));
        }
        let recs: Vec<(u32, u32)> = cur.iter().map(|(&s, &l)| (s, l)).collect();
        let bt = shape.total_blocks(recs.len());
        let (rt, _) = rmap_need(&taken);
        let mut bno_recs = Vec::with_capacity(recs.len() * 8);
        for &(s, l) in &recs {
            bno_recs.extend_from_slice(&s.to_be_bytes());
            bno_recs.extend_from_slice(&l.to_be_bytes());
        }
        let mut by_size = recs.clone();
        by_size.sort_unstable_by_key(|&(s, l)| (l, s));
        let mut cnt_recs = Vec::with_capacity(recs.len() * 8);
        for &(s, l) in &by_size {
            cnt_recs.extend_from_slice(&s.to_be_bytes());
            cnt_recs.extend_from_slice(&l.to_be_bytes());
        }
        let daddr = |b: u32| sb.agb_to_byte(a.agno, b) >> 9;
        let hdr = |m: &'static [u8; 4]| Header {
            magic: m,
            agno: a.agno,
            uuid: st.uuid,
            lsn: st.lsn,
        };
        let bad = || corrupt(format!("AG {}", a.agno), "free-space btree build");
        let bb = btree_build::build(&shape, &hdr(b"AB3B"), &bno_recs, &taken[..bt], &daddr)
            .ok_or_else(bad)?;
        let cb = btree_build::build(&shape, &hdr(b"AB3C"), &cnt_recs, &taken[bt..2 * bt], &daddr)
            .ok_or_else(bad)?;
        for (b, data) in bb.blocks.iter().chain(&cb.blocks) {
            dev.write_at(data, sb.agb_to_byte(a.agno, *b))?;
        }
        let rb = match &mut a.rmap {
            Some(m) => {
                rmap_set_owner(m, OWN_AG, &taken);
                let mut recs = Vec::with_capacity(m.len() * 24);
                for (&s, r) in m.iter() {
                    recs.extend_from_slice(&rmap_rec(s, r));
                }
                let rb = btree_build::build_keys(
                    &rshape,
                    &hdr(b"RMB3"),
                    &recs,
                    &taken[2 * bt..2 * bt + rt],
                    &daddr,
                    &rmap_keys,
                )
                .ok_or_else(|| corrupt(format!("AG {}", a.agno), "rmapbt build"))?;
                for (b, data) in &rb.blocks {
                    dev.write_at(data, sb.agb_to_byte(a.agno, *b))?;
                }
                Some(rb)
            }
            None => None,
        };
        let agfl: Vec<u32> = taken[2 * bt + rt..].to_vec();
        // AGFL: keep the list where it started when it fits without wrapping and without
        // using the last slot (kernels before 4.16 counted one slot more on 64-bit hosts and
        // reset an AGFL whose list reaches the last slot, leaking its blocks); else slot 0.
        let ss = usize::from(sb.sectsize);
        let base = sb.agb_to_byte(a.agno, 0);
        let first = if (a.flfirst as usize) + agfl.len() < agfl_cap {
            a.flfirst
        } else {
            0
        };
        let mut fl = vec![0u8; ss];
        dev.read_at(&mut fl, base + 3 * ss as u64)?;
        put(&mut fl, 0, b"XAFL");
        put(&mut fl, 4, &a.agno.to_be_bytes());
        put(&mut fl, 8, &st.uuid);
        put(&mut fl, AGFL_LSN, &st.lsn.to_be_bytes());
        for slot in 0..agfl_cap {
            let v = slot
                .checked_sub(first as usize)
                .and_then(|i| agfl.get(i))
                .copied()
                .unwrap_or(NULL_AGBLOCK);
            put(&mut fl, AGFL_HDR + 4 * slot, &v.to_be_bytes());
        }
        let c = csum::compute(&fl, AGFL_CRC);
        put(&mut fl, AGFL_CRC, &c.to_le_bytes());
        dev.write_at(&fl, base + 3 * ss as u64)?;
        // AGF
        let mut agf = vec![0u8; ss];
        dev.read_at(&mut agf, base + ss as u64)?;
        let freeblks: u32 = recs.iter().map(|&(_, l)| l).sum();
        let longest = recs.iter().map(|&(_, l)| l).max().unwrap_or(0);
        let fllast = if agfl.is_empty() {
            first.checked_sub(1).unwrap_or(agfl_cap as u32 - 1)
        } else {
            first + agfl.len() as u32 - 1
        };
        put(&mut agf, 16, &bb.root.to_be_bytes());
        put(&mut agf, 20, &cb.root.to_be_bytes());
        put(&mut agf, 28, &bb.levels.to_be_bytes());
        put(&mut agf, 32, &cb.levels.to_be_bytes());
        put(&mut agf, 40, &first.to_be_bytes());
        put(&mut agf, 44, &fllast.to_be_bytes());
        put(&mut agf, 48, &(agfl.len() as u32).to_be_bytes());
        put(&mut agf, 52, &freeblks.to_be_bytes());
        put(&mut agf, 56, &longest.to_be_bytes());
        let btreeblks = 2 * bt + rt - 2 - usize::from(rb.is_some());
        put(&mut agf, 60, &(btreeblks as u32).to_be_bytes());
        if let Some(rb) = &rb {
            put(&mut agf, 24, &rb.root.to_be_bytes());
            put(&mut agf, 36, &rb.levels.to_be_bytes());
            put(&mut agf, 80, &(rt as u32).to_be_bytes());
        }
        put(&mut agf, AGF_LSN, &st.lsn.to_be_bytes());
        let c = csum::compute(&agf, AGF_CRC);
        put(&mut agf, AGF_CRC, &c.to_le_bytes());
        dev.write_at(&agf, base + ss as u64)?;
        // new in-memory state: everything in `cur` is allocatable, nothing busy
        a.free = cur;
        a.busy.clear();
        a.bno_blocks = taken[..bt].to_vec();
        a.cnt_blocks = taken[bt..2 * bt].to_vec();
        a.rmap_blocks = taken[2 * bt..2 * bt + rt].to_vec();
        a.agfl = agfl;
        a.flfirst = first;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_merge_split() {
        let mut m = Extents::new();
        ext_insert(&mut m, 10, 5);
        ext_insert(&mut m, 20, 5);
        ext_insert(&mut m, 15, 5);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(&10, &15)]);
        assert!(ext_remove(&mut m, 12, 3));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(&10, &2), (&15, &10)]);
        assert!(!ext_remove(&mut m, 11, 3));
        assert!(ext_overlaps(&m, 11, 1));
        assert!(!ext_overlaps(&m, 12, 3));
        assert!(ext_overlaps(&m, 14, 2));
        assert!(ext_contains(&m, 15, 10));
        assert!(!ext_contains(&m, 14, 2));
    }
}
