//! Extent trees: lookup, insert, remove ranges, split, grow depth, checksum. Owner: mapping.
//!
//! On-disk format (all little-endian), see the kernel's `Documentation/filesystems/ext4/ifork.rst`:
//!
//! * every node starts with a 12-byte `ext4_extent_header`: `eh_magic` (0xF30A), `eh_entries`,
//!   `eh_max` (capacity), `eh_depth` (0 = leaf), `eh_generation`;
//! * the root lives in the inode's 60-byte `i_block` (capacity 4); other nodes fill one block
//!   (capacity `(block_size - 12) / 12`); e2fsck accepts `eh_max` in `capacity-2..=capacity`;
//! * index entries (`depth > 0`, 12 bytes): `ei_block` (first logical block covered),
//!   `ei_leaf_lo` (u32) + `ei_leaf_hi` (u16) = child block; e2fsck requires `ei_block` to equal
//!   the first logical block of the child and every child to have `depth = parent - 1`;
//! * leaf entries (12 bytes): `ee_block` (u32), `ee_len` (u16), `ee_start_hi` (u16),
//!   `ee_start_lo` (u32). `ee_len <= 32768` is an initialized extent of that length;
//!   `ee_len > 32768` is an *uninitialized* extent of length `ee_len - 32768` (so at most 32767),
//!   which reads as zeros;
//! * with metadata_csum, a non-root node carries `ext4_extent_tail` (`et_checksum`, u32) at
//!   offset `12 + 12 * eh_max`: crc32c over the block up to the tail, seeded with the
//!   per-inode seed;
//! * depth is at most 5; entries are sorted by logical block and do not overlap.
//!
//! Modifications load the path root → leaf, edit it in memory, then `commit` repairs it
//! bottom-up (merge neighbours, drop empty nodes, split overfull ones, fix parents'
//! `ei_block`, grow the root) — allocating every new tree block *before* anything is written,
//! so a failed allocation leaves the on-disk tree untouched — and writes children before
//! parents. Blocks of removed nodes are freed last.

use std::collections::HashSet;

use crate::csum::crc32c_raw;
use crate::le::{put_u16, put_u32, u16_at, u32_at};
use crate::mapping::{self, AllocMode, Extent, FileMap, MapCtx, Mapping, NewRun};
use crate::{Ext4Error, Result};

/// Exclusive upper bound of extent logical block numbers (`ee_block` is 32-bit).
pub const MAX_LBLK: u64 = 1 << 32;
/// `eh_magic`.
pub const MAGIC: u16 = 0xF30A;
/// Deepest tree the kernel and e2fsck accept.
pub const MAX_DEPTH: u16 = 5;
/// Longest initialized extent.
pub const MAX_INIT_LEN: u64 = 32768;
/// Longest uninitialized extent.
pub const MAX_UNINIT_LEN: u64 = 32767;
/// Capacity of the root node in `i_block`.
pub const ROOT_MAX: u16 = 4;

const HDR: usize = 12;
const ENTRY: usize = 12;

/// Write an empty depth-0 root header into `i_block`.
pub fn init_root(i_block: &mut [u8; 60]) {
    i_block.fill(0);
    put_u16(i_block, 0, MAGIC);
    put_u16(i_block, 2, 0);
    put_u16(i_block, 4, ROOT_MAX);
    put_u16(i_block, 6, 0);
}

/// Capacity of a non-root node for `block_size`.
pub fn block_capacity(block_size: u32) -> u16 {
    let c = (block_size as usize).saturating_sub(HDR) / ENTRY;
    u16::try_from(c).unwrap_or(u16::MAX)
}

// ---- in-memory nodes ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leaf {
    lblk: u64,
    len: u64,
    pblk: u64,
    uninit: bool,
}

impl Leaf {
    fn end(&self) -> u64 {
        self.lblk.saturating_add(self.len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Idx {
    lblk: u64,
    child: u64,
}

#[derive(Debug, Clone)]
enum Entries {
    Leaf(Vec<Leaf>),
    Index(Vec<Idx>),
}

#[derive(Debug, Clone)]
struct Node {
    /// `None` for the root in `i_block`.
    pblk: Option<u64>,
    depth: u16,
    max: u16,
    generation: u32,
    entries: Entries,
    dirty: bool,
}

impl Node {
    fn len(&self) -> usize {
        match &self.entries {
            Entries::Leaf(v) => v.len(),
            Entries::Index(v) => v.len(),
        }
    }

    fn first_lblk(&self) -> Option<u64> {
        match &self.entries {
            Entries::Leaf(v) => v.first().map(|e| e.lblk),
            Entries::Index(v) => v.first().map(|e| e.lblk),
        }
    }

    fn what(&self, ino: u32) -> String {
        match self.pblk {
            None => format!("extent tree root of inode {ino}"),
            Some(b) => format!("extent block {b} of inode {ino}"),
        }
    }

    /// Serialise into `buf` (60 bytes for the root, a block otherwise); `buf` is zeroed first.
    fn serialize(&self, buf: &mut [u8]) {
        buf.fill(0);
        put_u16(buf, 0, MAGIC);
        put_u16(buf, 2, u16::try_from(self.len()).unwrap_or(u16::MAX));
        put_u16(buf, 4, self.max);
        put_u16(buf, 6, self.depth);
        put_u32(buf, 8, self.generation);
        match &self.entries {
            Entries::Leaf(v) => {
                for (i, e) in v.iter().enumerate() {
                    let o = HDR + i * ENTRY;
                    put_u32(buf, o, e.lblk as u32);
                    let raw = if e.uninit {
                        e.len + MAX_INIT_LEN
                    } else {
                        e.len
                    };
                    put_u16(buf, o + 4, raw as u16);
                    put_u16(buf, o + 6, (e.pblk >> 32) as u16);
                    put_u32(buf, o + 8, e.pblk as u32);
                }
            }
            Entries::Index(v) => {
                for (i, e) in v.iter().enumerate() {
                    let o = HDR + i * ENTRY;
                    put_u32(buf, o, e.lblk as u32);
                    put_u32(buf, o + 4, e.child as u32);
                    put_u16(buf, o + 8, (e.child >> 32) as u16);
                }
            }
        }
    }
}

/// Where a node sits: the logical range its parent gives it.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lo: u64,
    hi: u64,
}

const ROOT_BOUNDS: Bounds = Bounds {
    lo: 0,
    hi: MAX_LBLK,
};

fn corrupt(what: String, detail: impl Into<String>) -> Ext4Error {
    Ext4Error::corrupt(what, detail)
}

/// Parse and validate a node. `cap` is the capacity for its location; `expect_depth` is
/// `parent depth - 1` for children.
fn parse_node(
    ctx: &dyn MapCtx,
    ino: u32,
    buf: &[u8],
    pblk: Option<u64>,
    expect_depth: Option<u16>,
    bounds: Bounds,
) -> Result<Node> {
    let what = match pblk {
        None => format!("extent tree root of inode {ino}"),
        Some(b) => format!("extent block {b} of inode {ino}"),
    };
    let cap = match pblk {
        None => ROOT_MAX,
        Some(_) => block_capacity(ctx.block_size()),
    };
    let magic = u16_at(buf, 0);
    if magic != MAGIC {
        return Err(corrupt(what, format!("bad magic {magic:#06x}")));
    }
    let entries = u16_at(buf, 2);
    let max = u16_at(buf, 4);
    let depth = u16_at(buf, 6);
    let generation = u32_at(buf, 8);
    if max > cap || max < cap.saturating_sub(2) || max == 0 {
        return Err(corrupt(
            what,
            format!("eh_max {max} (capacity here is {cap})"),
        ));
    }
    if entries > max {
        return Err(corrupt(
            what,
            format!("eh_entries {entries} > eh_max {max}"),
        ));
    }
    if depth > MAX_DEPTH {
        return Err(corrupt(what, format!("depth {depth} > {MAX_DEPTH}")));
    }
    if let Some(d) = expect_depth
        && depth != d
    {
        return Err(corrupt(what, format!("depth {depth}, parent expects {d}")));
    }
    if let Some(b) = pblk
        && let Some(seed) = ctx.csum_seed()
    {
        let off = HDR + ENTRY * usize::from(max);
        let stored = u32_at(buf, off);
        let computed = crc32c_raw(seed, buf.get(..off).unwrap_or(&[]));
        if off + 4 > buf.len() {
            return Err(corrupt(what, "no room for the checksum tail"));
        }
        if stored != computed {
            return Err(Ext4Error::Checksum {
                structure: format!("extent block {b} of inode {ino}"),
                stored,
                computed,
            });
        }
    }
    let n = usize::from(entries);
    let mut prev_end = bounds.lo;
    let entries = if depth == 0 {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let o = HDR + i * ENTRY;
            let lblk = u64::from(u32_at(buf, o));
            let raw = u64::from(u16_at(buf, o + 4));
            let pb = (u64::from(u16_at(buf, o + 6)) << 32) | u64::from(u32_at(buf, o + 8));
            let (len, uninit) = if raw > MAX_INIT_LEN {
                (raw - MAX_INIT_LEN, true)
            } else {
                (raw, false)
            };
            if len == 0 {
                return Err(corrupt(what, format!("extent {i} has length 0")));
            }
            if lblk < prev_end {
                return Err(corrupt(
                    what,
                    format!(
                        "extent {i} (logical {lblk}) overlaps or is out of order (expected ≥ {prev_end})"
                    ),
                ));
            }
            let end = lblk + len;
            if end > bounds.hi {
                return Err(corrupt(
                    what,
                    format!("extent {i} (logical {lblk}+{len}) goes past {}", bounds.hi),
                ));
            }
            if !mapping::blocks_in_fs(ctx, pb, len) {
                return Err(corrupt(
                    what,
                    format!("extent {i} points to blocks {pb}+{len} outside the filesystem"),
                ));
            }
            prev_end = end;
            v.push(Leaf {
                lblk,
                len,
                pblk: pb,
                uninit,
            });
        }
        Entries::Leaf(v)
    } else {
        let mut v: Vec<Idx> = Vec::with_capacity(n);
        for i in 0..n {
            let o = HDR + i * ENTRY;
            let lblk = u64::from(u32_at(buf, o));
            let child = (u64::from(u16_at(buf, o + 8)) << 32) | u64::from(u32_at(buf, o + 4));
            let ordered = match v.last() {
                Some(p) => lblk > p.lblk,
                None => lblk >= bounds.lo,
            };
            if !ordered || lblk >= bounds.hi {
                return Err(corrupt(
                    what,
                    format!(
                        "index {i} (logical {lblk}) out of order or outside {}..{}",
                        bounds.lo, bounds.hi
                    ),
                ));
            }
            if !mapping::blocks_in_fs(ctx, child, 1) {
                return Err(corrupt(
                    what,
                    format!("index {i} points to block {child} outside the filesystem"),
                ));
            }
            v.push(Idx { lblk, child });
        }
        Entries::Index(v)
    };
    Ok(Node {
        pblk,
        depth,
        max,
        generation,
        entries,
        dirty: false,
    })
}

fn read_root(ctx: &dyn MapCtx, fm: &FileMap<'_>) -> Result<Node> {
    parse_node(ctx, fm.ino, &fm.i_block[..], None, None, ROOT_BOUNDS)
}

fn read_child(
    ctx: &mut dyn MapCtx,
    ino: u32,
    pblk: u64,
    depth: u16,
    bounds: Bounds,
    buf: &mut [u8],
) -> Result<Node> {
    ctx.read_block(pblk, buf)?;
    parse_node(ctx, ino, buf, Some(pblk), Some(depth), bounds)
}

/// Child `i` of index node entries `ix` within `bounds`: its logical range.
fn child_bounds(ix: &[Idx], i: usize, bounds: Bounds) -> Bounds {
    let lo = ix.get(i).map_or(bounds.lo, |e| e.lblk);
    let hi = ix.get(i + 1).map_or(bounds.hi, |e| e.lblk);
    Bounds { lo, hi }
}

/// Index of the entry to follow for `lblk`: the last with `lblk <= target`, else 0.
fn route(ix: &[Idx], lblk: u64) -> usize {
    ix.iter().rposition(|e| e.lblk <= lblk).unwrap_or(0)
}

struct Level {
    node: Node,
    /// Entry followed to the next level (index nodes); for the leaf, unused.
    idx: usize,
}

/// Load the path from the root to the leaf responsible for `lblk`. An index root without
/// entries (left by a kernel that emptied the tree) becomes an empty leaf root in memory.
fn find_path(ctx: &mut dyn MapCtx, fm: &FileMap<'_>, lblk: u64) -> Result<Vec<Level>> {
    let mut node = read_root(ctx, fm)?;
    if node.depth > 0 && node.len() == 0 {
        node.depth = 0;
        node.max = ROOT_MAX;
        node.entries = Entries::Leaf(Vec::new());
        node.dirty = true;
    }
    let mut bounds = ROOT_BOUNDS;
    let mut path = Vec::new();
    let mut buf = vec![0u8; ctx.block_size() as usize];
    for _ in 0..=MAX_DEPTH {
        let next = match &node.entries {
            Entries::Leaf(_) => None,
            Entries::Index(ix) => {
                let i = route(ix, lblk);
                let cb = child_bounds(ix, i, bounds);
                let child = ix.get(i).map(|e| e.child);
                child.map(|c| (i, c, cb))
            }
        };
        match next {
            None => {
                path.push(Level { node, idx: 0 });
                return Ok(path);
            }
            Some((i, c, cb)) => {
                let depth = node.depth.saturating_sub(1);
                let child = read_child(ctx, fm.ino, c, depth, cb, &mut buf)?;
                path.push(Level { node, idx: i });
                node = child;
                bounds = cb;
            }
        }
    }
    Err(corrupt(
        format!("extent tree of inode {}", fm.ino),
        "deeper than 5 levels",
    ))
}

/// The logical block where the next leaf after the path's leaf starts (or `MAX_LBLK`).
fn next_leaf_start(path: &[Level]) -> u64 {
    let n = path.len();
    for level in path.iter().take(n.saturating_sub(1)).rev() {
        if let Entries::Index(ix) = &level.node.entries
            && let Some(e) = ix.get(level.idx + 1)
        {
            return e.lblk;
        }
    }
    MAX_LBLK
}

fn leaf_entries(path: &mut [Level]) -> Result<&mut Vec<Leaf>> {
    match path.last_mut().map(|l| &mut l.node.entries) {
        Some(Entries::Leaf(v)) => Ok(v),
        _ => Err(Ext4Error::InvalidArgument(
            "extent path does not end in a leaf".into(),
        )),
    }
}

fn max_len(uninit: bool) -> u64 {
    if uninit { MAX_UNINIT_LEN } else { MAX_INIT_LEN }
}

/// Merge neighbours that are contiguous logically and physically, of the same state, when
/// the result still fits in one extent.
fn merge_leaf(v: &mut Vec<Leaf>) {
    let mut out: Vec<Leaf> = Vec::with_capacity(v.len());
    for e in v.drain(..) {
        if let Some(p) = out.last_mut()
            && p.uninit == e.uninit
            && p.end() == e.lblk
            && p.pblk.checked_add(p.len) == Some(e.pblk)
            && p.len + e.len <= max_len(e.uninit)
        {
            p.len += e.len;
            continue;
        }
        out.push(e);
    }
    *v = out;
}

fn write_node(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>, node: &Node) -> Result<()> {
    match node.pblk {
        None => {
            let mut ib = [0u8; 60];
            node.serialize(&mut ib);
            if ib != *fm.i_block {
                *fm.i_block = ib;
                fm.i_block_dirty = true;
            }
            Ok(())
        }
        Some(b) => {
            let mut buf = vec![0u8; ctx.block_size() as usize];
            node.serialize(&mut buf);
            if let Some(seed) = ctx.csum_seed() {
                let off = HDR + ENTRY * usize::from(node.max);
                let c = crc32c_raw(seed, buf.get(..off).unwrap_or(&[]));
                put_u32(&mut buf, off, c);
            }
            ctx.write_block(b, &buf)
        }
    }
}

/// Repair the edited path bottom-up and write it (see the module comment). `pos` is the
/// position in the leaf where the edit happened (drives the split point for appends).
fn commit(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    mut path: Vec<Level>,
    pos: usize,
) -> Result<()> {
    let cap = block_capacity(ctx.block_size());
    let mut allocated: Vec<u64> = Vec::new();
    let r = commit_inner(ctx, fm, &mut path, pos, cap, &mut allocated);
    match r {
        Ok((new_nodes, to_free)) => {
            // Children before parents: new siblings, then the path from the leaf up.
            for n in &new_nodes {
                write_node(ctx, fm, n)?;
            }
            for level in path.iter().rev() {
                if level.node.dirty {
                    write_node(ctx, fm, &level.node)?;
                }
            }
            for b in to_free {
                mapping::free_counted(ctx, fm, b, 1)?;
            }
            Ok(())
        }
        Err(e) => {
            for b in allocated {
                let _ = mapping::free_counted(ctx, fm, b, 1);
            }
            Err(e)
        }
    }
}

type CommitOut = (Vec<Node>, Vec<u64>);

fn commit_inner(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    path: &mut [Level],
    pos: usize,
    cap: u16,
    allocated: &mut Vec<u64>,
) -> Result<CommitOut> {
    let ino = fm.ino;
    let mut new_nodes: Vec<Node> = Vec::new();
    let mut to_free: Vec<u64> = Vec::new();
    if let Some(leaf) = path.last_mut() {
        if let Entries::Leaf(v) = &mut leaf.node.entries {
            merge_leaf(v);
        }
        leaf.node.dirty = true;
    }
    // Position of the edit at the current level (for the split point).
    let mut edit_pos = pos;
    let mut l = path.len().saturating_sub(1);
    while l > 0 {
        let (upper, lower) = path.split_at_mut(l);
        let (Some(parent), Some(cur)) = (upper.last_mut(), lower.first_mut()) else {
            break;
        };
        let Entries::Index(pix) = &mut parent.node.entries else {
            return Err(corrupt(parent.node.what(ino), "index level holds extents"));
        };
        let pi = parent.idx;
        if cur.node.len() == 0 {
            // Drop the empty node and its index entry.
            if let Some(b) = cur.node.pblk {
                to_free.push(b);
            }
            cur.node.dirty = false;
            if pi < pix.len() {
                pix.remove(pi);
            }
            parent.node.dirty = true;
            edit_pos = pi;
            l -= 1;
            continue;
        }
        if let (Some(first), Some(e)) = (cur.node.first_lblk(), pix.get_mut(pi))
            && e.lblk != first
        {
            e.lblk = first;
            parent.node.dirty = true;
        }
        let n = cur.node.len();
        if n > usize::from(cur.node.max) {
            let max = usize::from(cur.node.max);
            if n > 2 * max {
                return Err(Ext4Error::InvalidArgument(format!(
                    "extent node of inode {ino} overfull beyond one split"
                )));
            }
            let at = if edit_pos + 1 >= n && n - 1 <= max {
                n - 1
            } else {
                n / 2
            };
            let goal = cur.node.pblk.unwrap_or(0).saturating_add(1);
            let (b, _) = mapping::alloc_counted(ctx, fm, goal, 1)?;
            allocated.push(b);
            let right_entries = match &mut cur.node.entries {
                Entries::Leaf(v) => Entries::Leaf(v.split_off(at)),
                Entries::Index(v) => Entries::Index(v.split_off(at)),
            };
            let right = Node {
                pblk: Some(b),
                depth: cur.node.depth,
                max: cap,
                generation: 0,
                entries: right_entries,
                dirty: true,
            };
            cur.node.dirty = true;
            let Some(rfirst) = right.first_lblk() else {
                return Err(Ext4Error::InvalidArgument("empty split half".into()));
            };
            pix.insert(
                pi + 1,
                Idx {
                    lblk: rfirst,
                    child: b,
                },
            );
            parent.node.dirty = true;
            edit_pos = pi + 1;
            new_nodes.push(right);
        } else {
            edit_pos = pi;
        }
        l -= 1;
    }
    // The root.
    let (head, tail) = path.split_at_mut(1.min(path.len()));
    let Some(root) = head.first_mut() else {
        return Ok((new_nodes, to_free));
    };
    root.node.dirty = true;
    // A root written by someone else may say eh_max 2 or 3; ours always holds 4.
    root.node.max = ROOT_MAX;
    if root.node.len() == 0 && root.node.depth > 0 {
        root.node.depth = 0;
        root.node.max = ROOT_MAX;
        root.node.entries = Entries::Leaf(Vec::new());
    }
    if root.node.len() > usize::from(ROOT_MAX) {
        // Grow: move the root's entries into a new block, the root indexes it.
        if root.node.depth >= MAX_DEPTH {
            return Err(Ext4Error::Unsupported(format!(
                "extent tree of inode {ino} would exceed depth {MAX_DEPTH}"
            )));
        }
        // The root's entries go to ceil(n / cap) new blocks: one for every real block size
        // (capacity ≥ 84, the root holds at most 6 here), more only for tiny test blocks.
        let n = root.node.len();
        let capn = usize::from(cap).max(1);
        let pieces = n.div_ceil(capn);
        if pieces == 0 || pieces > usize::from(ROOT_MAX) {
            return Err(Ext4Error::InvalidArgument("root overfull".into()));
        }
        let goal = fm_goal_from(&root.node);
        let mut entries = std::mem::replace(&mut root.node.entries, Entries::Index(Vec::new()));
        let mut index = Vec::with_capacity(pieces);
        let mut children = Vec::with_capacity(pieces);
        for k in (0..pieces).rev() {
            // Balanced: piece k starts at k * n / pieces.
            let at = k * n / pieces;
            let part = match &mut entries {
                Entries::Leaf(v) => Entries::Leaf(v.split_off(at)),
                Entries::Index(v) => Entries::Index(v.split_off(at)),
            };
            let (b, _) = mapping::alloc_counted(ctx, fm, goal, 1)?;
            allocated.push(b);
            let child = Node {
                pblk: Some(b),
                depth: root.node.depth,
                max: cap,
                generation: 0,
                entries: part,
                dirty: true,
            };
            index.push(Idx {
                lblk: child.first_lblk().unwrap_or(0),
                child: b,
            });
            children.push(child);
        }
        index.reverse();
        root.node.entries = Entries::Index(index);
        root.node.depth += 1;
        root.node.max = ROOT_MAX;
        new_nodes.extend(children);
    } else {
        // Shrink: while the root has a lone child whose entries fit in the root, move them
        // up (e2fsck would otherwise say the tree "could be shorter").
        for child in tail.iter_mut() {
            if root.node.depth == 0 || root.node.len() != 1 {
                break;
            }
            let Some(b) = child.node.pblk else { break };
            if !(1..=usize::from(ROOT_MAX)).contains(&child.node.len()) {
                break;
            }
            let entries = std::mem::replace(&mut child.node.entries, Entries::Leaf(Vec::new()));
            root.node.entries = entries;
            root.node.depth = child.node.depth;
            root.node.max = ROOT_MAX;
            child.node.dirty = false;
            to_free.push(b);
        }
    }
    Ok((new_nodes, to_free))
}

/// A goal for a new tree block: next to the first data block the node references.
fn fm_goal_from(node: &Node) -> u64 {
    match &node.entries {
        Entries::Leaf(v) => v.first().map_or(0, |e| e.pblk.saturating_sub(1)),
        Entries::Index(v) => v.first().map_or(0, |e| e.child.saturating_add(1)),
    }
}

// ---- public operations (through crate::mapping) ---------------------------------------------

struct Found {
    /// The extent containing the block, if any.
    ext: Option<Leaf>,
    /// Hole length from the block (when `ext` is None).
    hole: u64,
    /// Physical block a new block at the asked position would ideally take.
    goal: Option<u64>,
}

fn find(ctx: &mut dyn MapCtx, fm: &FileMap<'_>, lblk: u64) -> Result<Found> {
    let path = find_path(ctx, fm, lblk)?;
    find_in(&path, lblk)
}

/// [`Found`] for `lblk` from a path loaded for it.
fn find_in(path: &[Level], lblk: u64) -> Result<Found> {
    let next_leaf = next_leaf_start(path);
    let v = match path.last().map(|l| &l.node.entries) {
        Some(Entries::Leaf(v)) => v,
        _ => {
            return Err(Ext4Error::InvalidArgument(
                "extent path does not end in a leaf".into(),
            ));
        }
    };
    let mut goal = None;
    for e in v.iter() {
        if e.lblk > lblk {
            return Ok(Found {
                ext: None,
                hole: e.lblk - lblk,
                goal,
            });
        }
        if lblk < e.end() {
            return Ok(Found {
                ext: Some(*e),
                hole: 0,
                goal: None,
            });
        }
        goal = e.pblk.checked_add(lblk - e.lblk);
    }
    Ok(Found {
        ext: None,
        hole: next_leaf.saturating_sub(lblk).max(1),
        goal,
    })
}

pub(crate) fn map(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>, lblk: u64) -> Result<Mapping> {
    if lblk >= MAX_LBLK {
        return Ok(Mapping {
            lblk,
            len: 1,
            pblk: None,
            uninit: false,
        });
    }
    let f = find(ctx, fm, lblk)?;
    Ok(match f.ext {
        Some(e) => Mapping {
            lblk,
            len: e.end() - lblk,
            pblk: Some(e.pblk + (lblk - e.lblk)),
            uninit: e.uninit,
        },
        None => Mapping {
            lblk,
            len: f.hole,
            pblk: None,
            uninit: false,
        },
    })
}

/// Depth-first walk of the whole tree, validating every node; calls `leaf` for each extent and
/// `meta` for each non-root node block.
fn walk(
    ctx: &mut dyn MapCtx,
    fm: &FileMap<'_>,
    leaf: &mut dyn FnMut(&Leaf),
    meta: &mut dyn FnMut(u64, &Node),
) -> Result<()> {
    let root = read_root(ctx, fm)?;
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; ctx.block_size() as usize];
    walk_node(
        ctx,
        fm.ino,
        &root,
        ROOT_BOUNDS,
        &mut seen,
        &mut buf,
        leaf,
        meta,
    )
}

#[allow(clippy::too_many_arguments)]
fn walk_node(
    ctx: &mut dyn MapCtx,
    ino: u32,
    node: &Node,
    bounds: Bounds,
    seen: &mut HashSet<u64>,
    buf: &mut Vec<u8>,
    leaf: &mut dyn FnMut(&Leaf),
    meta: &mut dyn FnMut(u64, &Node),
) -> Result<()> {
    match &node.entries {
        Entries::Leaf(v) => {
            for e in v {
                leaf(e);
            }
        }
        Entries::Index(ix) => {
            for (i, e) in ix.iter().enumerate() {
                if !seen.insert(e.child) {
                    return Err(corrupt(
                        node.what(ino),
                        format!("extent block {} is referenced twice", e.child),
                    ));
                }
                let cb = child_bounds(ix, i, bounds);
                let child = read_child(ctx, ino, e.child, node.depth - 1, cb, buf)?;
                meta(e.child, &child);
                walk_node(ctx, ino, &child, cb, seen, buf, leaf, meta)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn extents(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    walk(
        ctx,
        fm,
        &mut |e| {
            out.push(Extent {
                lblk: e.lblk,
                pblk: e.pblk,
                len: e.len,
                uninit: e.uninit,
            })
        },
        &mut |_, _| {},
    )?;
    Ok(out)
}

pub(crate) fn metadata_blocks(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    walk(ctx, fm, &mut |_| {}, &mut |b, _| out.push(b))?;
    Ok(out)
}

/// What a full walk gathers for [`optimize`]: per-level `(entries, capacity)` as e2fsck counts
/// them, the extents and the tree blocks.
struct Survey {
    levels: Vec<(u64, u64)>,
    exts: Vec<Leaf>,
    metas: Vec<u64>,
}

fn survey(ctx: &mut dyn MapCtx, fm: &FileMap<'_>) -> Result<Survey> {
    let root = read_root(ctx, fm)?;
    let mut levels = vec![(0u64, 0u64); usize::from(root.depth) + 1];
    if let Some(l0) = levels.first_mut() {
        *l0 = (root.len() as u64, u64::from(root.max));
    }
    let top = root.depth;
    let mut exts = Vec::new();
    let mut metas = Vec::new();
    walk(ctx, fm, &mut |e| exts.push(*e), &mut |b, node| {
        metas.push(b);
        let n = node.len() as u64;
        let max = u64::from(node.max);
        // e2fsck's "implementation wart": a non-full non-root node counts one slot less, so
        // that the one free slot appends leave behind does not ask for a rebuild.
        let max = if n < max { max - 1 } else { max };
        if let Some(l) = levels.get_mut(usize::from(top - node.depth)) {
            l.0 += n;
            l.1 += max;
        }
    })?;
    Ok(Survey {
        levels,
        exts,
        metas,
    })
}

/// e2fsck's pass-1E heuristics: a level whose free slots exceed one block's worth "could be
/// narrower"; a level with fewer entries than an upper level can hold "could be shorter".
fn wants_rebuild(levels: &[(u64, u64)], per_block: u64) -> bool {
    for (i, &(num, max)) in levels.iter().enumerate() {
        if max.saturating_sub(num) > per_block {
            return true;
        }
        if levels.iter().take(i).any(|&(_, maxj)| num < maxj) {
            return true;
        }
    }
    false
}

/// Would e2fsck suggest rebuilding this tree ("could be narrower / shorter")?
pub fn needs_optimize(ctx: &mut dyn MapCtx, fm: &FileMap<'_>) -> Result<bool> {
    let s = survey(ctx, fm)?;
    Ok(wants_rebuild(
        &s.levels,
        u64::from(block_capacity(ctx.block_size())),
    ))
}

/// Repack the tree when e2fsck would suggest it: the extents are inserted in order into a
/// new tree (full nodes), built in fresh blocks while the old tree is still intact; only
/// then `i_block` switches over and the old tree blocks are freed. Returns whether it
/// rebuilt. Without room for the new tree it returns `Ok(false)` and the old tree stays.
pub(crate) fn optimize(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<bool> {
    let root = read_root(ctx, fm)?;
    if root.depth == 0 {
        return Ok(false);
    }
    let s = survey(ctx, fm)?;
    if !wants_rebuild(&s.levels, u64::from(block_capacity(ctx.block_size()))) {
        return Ok(false);
    }
    let mut tmp = [0u8; 60];
    init_root(&mut tmp);
    let mut nfm = FileMap::new(fm.ino, &mut tmp, fm.kind);
    let mut built = Ok(());
    for e in &s.exts {
        built = insert(ctx, &mut nfm, *e);
        if built.is_err() {
            break;
        }
    }
    if let Err(e) = built {
        // Give back the new tree's blocks; the old tree was never touched.
        if let Ok(blocks) = metadata_blocks(ctx, &mut nfm) {
            for b in blocks {
                let _ = mapping::free_counted(ctx, &mut nfm, b, 1);
            }
        }
        fm.blocks_delta = fm.blocks_delta.saturating_add(nfm.blocks_delta);
        // Repacking is optional: no room for the new tree just means "not now".
        return match e {
            Ext4Error::NoSpace(_) => Ok(false),
            e => Err(e),
        };
    }
    let delta = nfm.blocks_delta;
    let mut ib = *nfm.i_block;
    // Keep the root's eh_generation.
    put_u32(&mut ib, 8, root.generation);
    *fm.i_block = ib;
    fm.i_block_dirty = true;
    fm.blocks_delta = fm.blocks_delta.saturating_add(delta);
    for b in s.metas {
        mapping::free_counted(ctx, fm, b, 1)?;
    }
    Ok(true)
}

/// Check the invariants e2fsck enforces and our writer maintains, on top of what reading
/// validates: every index entry's `ei_block` equals its child's first logical block, no
/// non-root node is empty, `eh_max` of block nodes is the full capacity, and an empty tree has
/// depth 0. For tests and debug checks.
pub fn verify_strict(ctx: &mut dyn MapCtx, fm: &FileMap<'_>) -> Result<()> {
    let root = read_root(ctx, fm)?;
    if root.len() == 0 && root.depth > 0 {
        return Err(corrupt(root.what(fm.ino), "empty root with depth > 0"));
    }
    let mut buf = vec![0u8; ctx.block_size() as usize];
    let cap = block_capacity(ctx.block_size());
    strict_node(ctx, fm.ino, &root, ROOT_BOUNDS, cap, &mut buf)
}

fn strict_node(
    ctx: &mut dyn MapCtx,
    ino: u32,
    node: &Node,
    bounds: Bounds,
    cap: u16,
    buf: &mut Vec<u8>,
) -> Result<()> {
    if let Entries::Index(ix) = &node.entries {
        for (i, e) in ix.iter().enumerate() {
            let cb = child_bounds(ix, i, bounds);
            let child = read_child(ctx, ino, e.child, node.depth - 1, cb, buf)?;
            if child.len() == 0 {
                return Err(corrupt(child.what(ino), "empty non-root node"));
            }
            if child.max != cap {
                return Err(corrupt(
                    child.what(ino),
                    format!("eh_max {} != {cap}", child.max),
                ));
            }
            if child.first_lblk() != Some(e.lblk) {
                return Err(corrupt(
                    node.what(ino),
                    format!(
                        "index {i}: ei_block {} != child's first block {:?}",
                        e.lblk,
                        child.first_lblk()
                    ),
                ));
            }
            strict_node(ctx, ino, &child, cb, cap, buf)?;
        }
    }
    Ok(())
}

/// Insert `e` (which lies in a hole) into the tree.
fn insert(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>, e: Leaf) -> Result<()> {
    let path = find_path(ctx, fm, e.lblk)?;
    insert_at(ctx, fm, path, e)
}

/// Insert `e` through `path`, loaded for `e.lblk`.
fn insert_at(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    mut path: Vec<Level>,
    e: Leaf,
) -> Result<()> {
    let v = leaf_entries(&mut path)?;
    let pos = v.iter().position(|x| x.lblk > e.lblk).unwrap_or(v.len());
    if let Some(p) = pos.checked_sub(1).and_then(|p| v.get(p))
        && p.end() > e.lblk
    {
        return Err(Ext4Error::InvalidArgument("extent insert overlaps".into()));
    }
    if v.get(pos).is_some_and(|n| n.lblk < e.end()) {
        return Err(Ext4Error::InvalidArgument("extent insert overlaps".into()));
    }
    v.insert(pos, e);
    commit(ctx, fm, path, pos)
}

/// Replace the extent containing `at` by `pieces` (already sorted, covering a subset of it),
/// through `path`, loaded for `at`.
fn replace_at(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    mut path: Vec<Level>,
    at: u64,
    pieces: &[Leaf],
) -> Result<()> {
    let v = leaf_entries(&mut path)?;
    let Some(pos) = v.iter().position(|x| x.lblk <= at && at < x.end()) else {
        return Err(Ext4Error::InvalidArgument("no extent to replace".into()));
    };
    v.splice(pos..=pos, pieces.iter().copied());
    commit(ctx, fm, path, pos + pieces.len().saturating_sub(1))
}

pub(crate) fn allocate(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    lblk: u64,
    end: u64,
    goal: u64,
    mode: AllocMode,
) -> Result<Vec<NewRun>> {
    let mut runs: Vec<NewRun> = Vec::new();
    let mut cur = lblk;
    let mut next_goal = goal;
    while cur < end {
        // One path load per step: it answers the lookup and then takes the edit.
        let path = find_path(ctx, fm, cur)?;
        let f = find_in(&path, cur)?;
        if let Some(e) = f.ext {
            let n = (e.end() - cur).min(end - cur);
            if e.uninit && mode == AllocMode::Write {
                let off = cur - e.lblk;
                let mut pieces = Vec::with_capacity(3);
                if off > 0 {
                    pieces.push(Leaf { len: off, ..e });
                }
                pieces.push(Leaf {
                    lblk: cur,
                    len: n,
                    pblk: e.pblk + off,
                    uninit: false,
                });
                if off + n < e.len {
                    pieces.push(Leaf {
                        lblk: cur + n,
                        len: e.len - off - n,
                        pblk: e.pblk + off + n,
                        uninit: true,
                    });
                }
                replace_at(ctx, fm, path, cur, &pieces)?;
                runs.push(NewRun {
                    lblk: cur,
                    pblk: e.pblk + off,
                    len: n,
                    must_write: true,
                });
            }
            next_goal = e.pblk + (cur - e.lblk) + n;
            cur += n;
            continue;
        }
        let uninit = mode == AllocMode::Prealloc;
        let want = f.hole.min(end - cur).min(max_len(uninit));
        let g = f.goal.unwrap_or(next_goal);
        let (p, got) = mapping::alloc_counted(ctx, fm, g, want as u32)?;
        let got = u64::from(got);
        let e = Leaf {
            lblk: cur,
            len: got,
            pblk: p,
            uninit,
        };
        if !mapping::blocks_in_fs(ctx, p, got) {
            let _ = mapping::free_counted(ctx, fm, p, got);
            return Err(Ext4Error::InvalidArgument(format!(
                "allocator returned blocks {p}+{got} outside the filesystem"
            )));
        }
        if let Err(err) = insert_at(ctx, fm, path, e) {
            let _ = mapping::free_counted(ctx, fm, p, got);
            return Err(err);
        }
        match runs.last_mut() {
            Some(r) if r.lblk + r.len == cur && r.pblk + r.len == p && r.must_write != uninit => {
                r.len += got;
            }
            _ => runs.push(NewRun {
                lblk: cur,
                pblk: p,
                len: got,
                must_write: !uninit,
            }),
        }
        next_goal = p + got;
        cur += got;
    }
    Ok(runs)
}

/// Move the lone child of the root into the root while its entries fit (after a punch
/// emptied all but one subtree), freeing the child's block.
fn collapse_root(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<()> {
    let mut buf = vec![0u8; ctx.block_size() as usize];
    for _ in 0..MAX_DEPTH {
        let mut root = read_root(ctx, fm)?;
        let child_blk = match &root.entries {
            Entries::Index(ix) if ix.len() == 1 => ix.first().map(|e| e.child),
            _ => None,
        };
        let Some(cb) = child_blk else {
            return Ok(());
        };
        let child = read_child(
            ctx,
            fm.ino,
            cb,
            root.depth.saturating_sub(1),
            ROOT_BOUNDS,
            &mut buf,
        )?;
        if !(1..=usize::from(ROOT_MAX)).contains(&child.len()) {
            return Ok(());
        }
        root.entries = child.entries;
        root.depth = child.depth;
        root.max = ROOT_MAX;
        write_node(ctx, fm, &root)?;
        mapping::free_counted(ctx, fm, cb, 1)?;
    }
    Ok(())
}

pub(crate) fn punch(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>, from: u64, to: u64) -> Result<()> {
    let mut cur = from;
    while cur < to {
        let mut path = find_path(ctx, fm, cur)?;
        let leaf_hi = next_leaf_start(&path);
        let v = leaf_entries(&mut path)?;
        let mut kept: Vec<Leaf> = Vec::with_capacity(v.len() + 1);
        let mut freed: Vec<(u64, u64)> = Vec::new();
        let mut pos = 0;
        for (i, e) in v.iter().enumerate() {
            if e.end() <= cur || e.lblk >= to {
                kept.push(*e);
                continue;
            }
            pos = i;
            let s = e.lblk.max(cur);
            let t = e.end().min(to);
            if e.lblk < s {
                kept.push(Leaf {
                    len: s - e.lblk,
                    ..*e
                });
            }
            freed.push((e.pblk + (s - e.lblk), t - s));
            if t < e.end() {
                kept.push(Leaf {
                    lblk: t,
                    len: e.end() - t,
                    pblk: e.pblk + (t - e.lblk),
                    uninit: e.uninit,
                });
            }
        }
        if !freed.is_empty() {
            *v = kept;
            commit(ctx, fm, path, pos)?;
            for (b, n) in freed {
                mapping::free_counted(ctx, fm, b, n)?;
            }
        } else if path.first().is_some_and(|r| r.node.dirty) {
            // An index root without entries: normalise it.
            commit(ctx, fm, path, 0)?;
        }
        if leaf_hi <= cur {
            break;
        }
        cur = leaf_hi;
    }
    collapse_root(ctx, fm)
}
