//! File block mapping: the [`MapCtx`] trait and dispatch to extents / block maps / inline data.
//! Owner: mapping.
//!
//! A file's 60-byte `i_block` area holds one of three things, chosen by the inode flags:
//!
//! * `EXT4_EXTENTS_FL` (0x80000): the root of an extent tree ([`crate::extent`]);
//! * `EXT4_INLINE_DATA_FL` (0x10000000): the first 60 bytes of the file itself, the rest in
//!   the `system.data` extended attribute ([`crate::inline`]);
//! * neither: the classic ext2/ext3 block map — 12 direct pointers, then single, double and
//!   triple indirect ([`crate::blockmap`]). Fast symlinks (no flag, target < 60 bytes stored
//!   in `i_block`, `i_blocks == 0`) are *not* block maps: core recognises them and never calls
//!   this module for them.
//!
//! Core owns the inode and the allocator; this module owns the mapping structures. Core builds
//! a [`FileMap`] around the inode's `i_block`, calls the functions below with an implementation
//! of [`MapCtx`], then writes the inode back when [`FileMap::i_block_dirty`] is set and adds
//! [`FileMap::blocks_delta`] (filesystem blocks, data + mapping metadata) to `i_blocks` in its
//! own units.
//!
//! Logical block numbers are `u64` in this interface; extent-mapped files address
//! `0..2^32` and block-mapped files `0..12 + p + p² + p³` (`p = block_size / 4`), see
//! [`max_lblk`]. Requests beyond that are `InvalidArgument`.

use crate::{Ext4Error, Result};

/// `i_flags` bit: `i_block` holds an extent tree root.
pub const EXT4_EXTENTS_FL: u32 = 0x0008_0000;
/// `i_flags` bit: the file's contents are stored inline (`i_block` + `system.data` xattr).
pub const EXT4_INLINE_DATA_FL: u32 = 0x1000_0000;

/// What core gives the mapping code: block I/O, the allocator and the checksum seed.
///
/// Every block number passed in or out is an absolute filesystem block number.
pub trait MapCtx {
    /// Filesystem block size in bytes (1024..=65536).
    fn block_size(&self) -> u32;
    /// `s_blocks_count`: every block pointer must be `< blocks_count`.
    fn blocks_count(&self) -> u64;
    /// `s_first_data_block` (1 on 1 KiB-block filesystems, else 0): every block pointer must
    /// be `>= first_data_block`.
    fn first_data_block(&self) -> u64;
    /// Read one whole block (`buf.len() == block_size`).
    fn read_block(&mut self, pblk: u64, buf: &mut [u8]) -> Result<()>;
    /// Write one whole block (`buf.len() == block_size`).
    fn write_block(&mut self, pblk: u64, buf: &[u8]) -> Result<()>;
    /// Allocate at least 1 and at most `max` (≥ 1) physically contiguous free blocks, as close
    /// to `goal` as possible, and mark them in use (bitmaps, group and superblock counters).
    /// Returns `(first_block, count)`. `Err(Ext4Error::NoSpace(..))` when nothing is free.
    /// The contents of the returned blocks are undefined.
    fn alloc_blocks(&mut self, goal: u64, max: u32) -> Result<(u64, u32)>;
    /// Mark `count` blocks starting at `start` free again.
    fn free_blocks(&mut self, start: u64, count: u64) -> Result<()>;
    /// The per-inode metadata_csum seed (`crc32c(crc32c(fs_seed, le32 ino), le32
    /// i_generation)`), or `None` when the filesystem has no metadata_csum. Used for the
    /// extent block tail checksums.
    fn csum_seed(&self) -> Option<u32>;
}

/// Which structure `i_block` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// Extent tree root (`EXT4_EXTENTS_FL`).
    Extents,
    /// ext2/ext3 direct/indirect block map (no flag).
    BlockMap,
    /// Inline data (`EXT4_INLINE_DATA_FL`); see [`crate::inline`]. The block-mapping
    /// functions refuse it with `InvalidArgument`.
    Inline,
}

impl MapKind {
    /// From the inode's `i_flags`. `INLINE_DATA` wins over `EXTENTS` (e2fsck treats both set
    /// as corruption; we never create that).
    pub fn from_flags(i_flags: u32) -> MapKind {
        if i_flags & EXT4_INLINE_DATA_FL != 0 {
            MapKind::Inline
        } else if i_flags & EXT4_EXTENTS_FL != 0 {
            MapKind::Extents
        } else {
            MapKind::BlockMap
        }
    }
}

/// One file's mapping, as core hands it to this module.
#[derive(Debug)]
pub struct FileMap<'a> {
    /// Inode number (for error messages).
    pub ino: u32,
    /// The inode's `i_block` (60 bytes, little-endian on-disk layout).
    pub i_block: &'a mut [u8; 60],
    /// Which structure `i_block` holds. [`crate::inline::convert_to_blocks`] changes it.
    pub kind: MapKind,
    /// Net change in allocated filesystem blocks (data + extent/indirect metadata) caused by
    /// the calls made through this `FileMap` — also when a call fails part-way. Core adds it
    /// to `i_blocks` (converting to 512-byte sectors unless huge_file + `HUGE_FILE_FL`).
    pub blocks_delta: i64,
    /// Set when `i_block` (or `kind`) was modified: core must write the inode back.
    pub i_block_dirty: bool,
}

impl<'a> FileMap<'a> {
    /// Wrap an inode's `i_block`; `kind` is usually `MapKind::from_flags(i_flags)`.
    pub fn new(ino: u32, i_block: &'a mut [u8; 60], kind: MapKind) -> Self {
        FileMap {
            ino,
            i_block,
            kind,
            blocks_delta: 0,
            i_block_dirty: false,
        }
    }
}

/// The answer of [`map`]: a run of logical blocks starting at `lblk` that is either mapped
/// to consecutive physical blocks or a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// First logical block of the run (the block asked for).
    pub lblk: u64,
    /// Number of blocks in the run (≥ 1). For a hole, up to the next mapped block or the end
    /// of the addressable range.
    pub len: u64,
    /// First physical block, `None` for a hole.
    pub pblk: Option<u64>,
    /// Uninitialized (preallocated) extent: allocated, but reads as zeros.
    pub uninit: bool,
}

/// One mapped run of a file, as [`extents`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extent {
    /// First logical block.
    pub lblk: u64,
    /// First physical block.
    pub pblk: u64,
    /// Number of blocks (≤ 32768 initialized / 32767 uninitialized for extent trees).
    pub len: u64,
    /// Uninitialized (reads as zeros). Always false for block maps.
    pub uninit: bool,
}

/// How [`allocate`] fills holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocMode {
    /// For a write: holes get initialized blocks and uninitialized extents inside the range
    /// are converted to initialized. Every returned run must be written entirely by the
    /// caller (zeros where it has no data).
    Write,
    /// For fallocate: holes get uninitialized extents (no write needed), existing blocks are
    /// left alone. On block-mapped files, which cannot express "uninitialized", the new
    /// blocks are returned with `must_write` set: the caller must zero them.
    Prealloc,
}

/// A run changed by [`allocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRun {
    /// First logical block of the run.
    pub lblk: u64,
    /// First physical block of the run.
    pub pblk: u64,
    /// Number of blocks.
    pub len: u64,
    /// The caller must write every block of the run (new blocks hold garbage; blocks of a
    /// converted uninitialized extent read as zeros only until now).
    pub must_write: bool,
}

/// Exclusive upper bound of the logical block numbers `kind` can address with `block_size`.
pub fn max_lblk(kind: MapKind, block_size: u32) -> u64 {
    match kind {
        MapKind::Extents => crate::extent::MAX_LBLK,
        MapKind::BlockMap => crate::blockmap::max_lblk(block_size),
        MapKind::Inline => 1,
    }
}

/// Make `i_block` an empty extent tree root (depth 0, no entries, room for 4). Core also sets
/// `EXT4_EXTENTS_FL`.
pub fn init_extents(i_block: &mut [u8; 60]) {
    crate::extent::init_root(i_block);
}

/// Make `i_block` an empty block map (all pointers zero).
pub fn init_blockmap(i_block: &mut [u8; 60]) {
    i_block.fill(0);
}

fn not_inline(fm: &FileMap<'_>) -> Result<()> {
    if fm.kind == MapKind::Inline {
        return Err(Ext4Error::InvalidArgument(format!(
            "inode {} stores its data inline: use imgscrub_ext4::inline",
            fm.ino
        )));
    }
    Ok(())
}

/// The run of blocks starting at logical block `lblk`: mapped (`pblk` set) or a hole.
pub fn map(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>, lblk: u64) -> Result<Mapping> {
    not_inline(fm)?;
    match fm.kind {
        MapKind::Extents => crate::extent::map(ctx, fm, lblk),
        _ => crate::blockmap::map(ctx, fm, lblk),
    }
}

/// Every mapped run of the file, sorted by logical block, validating the whole structure.
/// Adjacent runs that are contiguous both logically and physically (and of the same
/// initialized state) are reported as one for block maps; extent trees report their extents
/// as stored.
pub fn extents(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<Vec<Extent>> {
    not_inline(fm)?;
    match fm.kind {
        MapKind::Extents => crate::extent::extents(ctx, fm),
        _ => crate::blockmap::extents(ctx, fm),
    }
}

/// Make every block of `lblk..lblk + count` allocated: fill holes (and, in
/// [`AllocMode::Write`], convert uninitialized extents), allocating mapping metadata (extent
/// tree blocks, indirect blocks) as needed. Returns the runs whose blocks the caller must
/// write or that are new, in logical order.
///
/// `goal` is the physical block to allocate near when the file has no block before `lblk`
/// (core passes a block in the inode's group); otherwise new blocks follow the preceding
/// mapped block.
///
/// On error (e.g. `NoSpace`) the mapping stays valid; blocks already mapped by this call stay
/// mapped and are counted in `blocks_delta`.
pub fn allocate(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    lblk: u64,
    count: u64,
    goal: u64,
    mode: AllocMode,
) -> Result<Vec<NewRun>> {
    not_inline(fm)?;
    let end = lblk
        .checked_add(count)
        .filter(|&e| e <= max_lblk(fm.kind, ctx.block_size()))
        .ok_or_else(|| {
            Ext4Error::InvalidArgument(format!(
                "inode {}: logical blocks {lblk}+{count} are beyond the largest file size",
                fm.ino
            ))
        })?;
    if count == 0 {
        return Ok(Vec::new());
    }
    match fm.kind {
        MapKind::Extents => crate::extent::allocate(ctx, fm, lblk, end, goal, mode),
        _ => crate::blockmap::allocate(ctx, fm, lblk, end, goal, mode),
    }
}

/// Unmap logical blocks `from..to` (`to` exclusive; `u64::MAX` means "to the end"), freeing
/// the data blocks and any mapping metadata block that becomes empty. Truncate is
/// `punch(ctx, fm, ceil(new_size / block_size), u64::MAX)`; unlink is `punch(.., 0, u64::MAX)`.
pub fn punch(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>, from: u64, to: u64) -> Result<()> {
    not_inline(fm)?;
    let to = to.min(max_lblk(fm.kind, ctx.block_size()));
    if from >= to {
        return Ok(());
    }
    match fm.kind {
        MapKind::Extents => crate::extent::punch(ctx, fm, from, to),
        _ => crate::blockmap::punch(ctx, fm, from, to),
    }
}

/// The mapping metadata blocks of the file (extent index/leaf blocks, indirect blocks), in
/// tree order. Data blocks are in [`extents`]. An inline-data file has none.
pub fn metadata_blocks(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<Vec<u64>> {
    match fm.kind {
        MapKind::Inline => Ok(Vec::new()),
        MapKind::Extents => crate::extent::metadata_blocks(ctx, fm),
        MapKind::BlockMap => crate::blockmap::metadata_blocks(ctx, fm),
    }
}

/// Repack an extent tree when e2fsck would print "extent tree could be narrower / shorter"
/// (not errors, but `e2fsck -fn` mentions them): after edits that left nodes sparsely
/// filled. Returns whether the tree was rebuilt; a no-op (`false`) for depth-0 trees, block
/// maps and inline files. Cost: one walk of the tree, plus the rebuild when needed. Core calls
/// it once per touched extent-mapped inode after an operation (write, truncate) or at flush.
/// A full filesystem is not an error here (`Ok(false)`, the tree stays as it was); errors
/// are I/O and corruption only.
pub fn optimize(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<bool> {
    match fm.kind {
        MapKind::Extents => crate::extent::optimize(ctx, fm),
        _ => Ok(false),
    }
}

// ---- helpers shared by extent.rs and blockmap.rs -------------------------------------------

/// Allocate through `ctx`, counting the blocks in `fm.blocks_delta`.
pub(crate) fn alloc_counted(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    goal: u64,
    max: u32,
) -> Result<(u64, u32)> {
    let (start, n) = ctx.alloc_blocks(goal, max.max(1))?;
    if n == 0 || n > max.max(1) {
        return Err(Ext4Error::InvalidArgument(format!(
            "allocator returned {n} blocks for a request of at most {max}"
        )));
    }
    fm.blocks_delta = fm.blocks_delta.saturating_add(i64::from(n));
    Ok((start, n))
}

/// Free through `ctx`, counting the blocks in `fm.blocks_delta`.
pub(crate) fn free_counted(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    start: u64,
    count: u64,
) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    ctx.free_blocks(start, count)?;
    let c = i64::try_from(count).unwrap_or(i64::MAX);
    fm.blocks_delta = fm.blocks_delta.saturating_sub(c);
    Ok(())
}

/// Is `[pblk, pblk + len)` inside the filesystem's data area?
pub(crate) fn blocks_in_fs(ctx: &dyn MapCtx, pblk: u64, len: u64) -> bool {
    pblk >= ctx.first_data_block()
        && pblk
            .checked_add(len)
            .is_some_and(|end| end <= ctx.blocks_count())
}
