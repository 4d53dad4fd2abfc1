//! `Ext4Fs`: open, lookup, read, and every edit; metadata cache and flush. Owner: core.
//!
//! Write strategy: group descriptors and bitmaps live in [`Groups`] with dirty flags; inode
//! table blocks, directory blocks, extent and xattr blocks go through one block cache whose
//! dirty entries are written by [`Ext4Fs::flush`]. File data blocks are written straight to
//! the device (dropping any cached copy), so a large write does not pin memory. Every
//! checksum is computed when its structure is written: inodes at `write_inode`, directory and
//! extent blocks by their owners before they hand us the block, bitmaps, descriptors and the
//! superblock at flush (their checksums depend on the final state of the whole group).

use std::collections::HashMap;
use std::sync::Mutex;

use imgscrub_disk::BlockDev;

use crate::alloc::Groups;
use crate::dir::{self, DirBlocks, HashParams};
use crate::inode::{Inode, TimeField, flags as iflags, inode_seed};
use crate::mapping::{self, AllocMode, FileMap, MapCtx, MapKind};
use crate::superblock::{
    SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock, compat, incompat, ro_compat,
};
use crate::types::{DirEntry, FileType, FreeRange, NewAttr, SetAttr, Stat, Timestamp};
use crate::xattr;
use crate::{Ext4Error, Result};

/// Root directory inode.
pub const ROOT_INO: u32 = 2;
/// Largest link count; directories beyond it keep 1 with dir_nlink (`EXT4_LINK_MAX`).
pub const LINK_MAX: u16 = 65000;
/// Clean blocks kept in the cache before it is emptied.
const CACHE_CLEAN_LIMIT: usize = 16384;
/// Deepest directory nesting `remove_tree` and `rename`'s loop check walk.
const MAX_DEPTH: usize = 4096;

/// How to open a filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Allow edits. Opening for writing refuses filesystems whose invariants we do not keep.
    pub writable: bool,
}

#[derive(Debug)]
struct Cached {
    data: Vec<u8>,
    dirty: bool,
}

#[derive(Debug, Default)]
struct BlockCache {
    map: HashMap<u64, Cached>,
    clean: usize,
}

impl BlockCache {
    fn trim(&mut self) {
        if self.clean > CACHE_CLEAN_LIMIT {
            self.map.retain(|_, c| c.dirty);
            self.clean = 0;
        }
    }
}

/// An ext2/3/4 filesystem on a block device.
pub struct Ext4Fs<D: BlockDev> {
    dev: D,
    sb: Superblock,
    groups: Groups,
    writable: bool,
    cache: Mutex<BlockCache>,
    /// Something changed since the last flush (superblock counters must be rewritten).
    dirty: bool,
    /// The time stamped on everything we change ([`Ext4Fs::set_clock`]); `None` = now.
    clock: Option<Timestamp>,
    /// What the open did to recover from an unclean shutdown ([`Ext4Fs::recovery_notes`]).
    notes: Vec<String>,
}

impl<D: BlockDev> std::fmt::Debug for Ext4Fs<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Fs")
            .field("sb", &self.sb)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

fn read_cached<D: BlockDev>(
    dev: &D,
    cache: &Mutex<BlockCache>,
    sb: &Superblock,
    b: u64,
) -> Result<Vec<u8>> {
    if b >= sb.blocks_count {
        return Err(Ext4Error::corrupt(
            "block reference",
            format!(
                "block {b} is beyond the end of the filesystem ({})",
                sb.blocks_count
            ),
        ));
    }
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = c.map.get(&b) {
        return Ok(e.data.clone());
    }
    let bs = u64::from(sb.block_size);
    let mut buf = vec![0u8; sb.block_size as usize];
    dev.read_at(&mut buf, b * bs)?;
    c.trim();
    c.map.insert(
        b,
        Cached {
            data: buf.clone(),
            dirty: false,
        },
    );
    c.clean += 1;
    Ok(buf)
}

fn system_now() -> Timestamp {
    Timestamp::now()
}

fn name_str(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Validate a new entry name before allocating anything for it.
fn check_name(name: &[u8]) -> Result<()> {
    imgscrub_vocab::check_entry_name(name).map_err(|e| match e {
        imgscrub_vocab::BadName::TooLong(n) => Ext4Error::NameTooLong(n),
        imgscrub_vocab::BadName::Invalid => {
            Ext4Error::InvalidArgument(format!("invalid file name {:?}", name_str(name)))
        }
    })
}

// ---- MapCtx implementations -------------------------------------------------------------

struct RwCtx<'a, D: BlockDev> {
    fs: &'a mut Ext4Fs<D>,
    seed: Option<u32>,
}

impl<D: BlockDev> MapCtx for RwCtx<'_, D> {
    fn block_size(&self) -> u32 {
        self.fs.sb.block_size
    }
    fn blocks_count(&self) -> u64 {
        self.fs.sb.blocks_count
    }
    fn first_data_block(&self) -> u64 {
        u64::from(self.fs.sb.first_data_block)
    }
    fn read_block(&mut self, pblk: u64, buf: &mut [u8]) -> Result<()> {
        let b = self.fs.read_block(pblk)?;
        copy_block(&b, buf)
    }
    fn write_block(&mut self, pblk: u64, buf: &[u8]) -> Result<()> {
        self.fs.cache_write(pblk, buf)
    }
    fn alloc_blocks(&mut self, goal: u64, max: u32) -> Result<(u64, u32)> {
        self.fs.alloc_blocks(goal, max)
    }
    fn free_blocks(&mut self, start: u64, count: u64) -> Result<()> {
        self.fs.free_blocks(start, count)
    }
    fn csum_seed(&self) -> Option<u32> {
        self.seed
    }
}

struct RoCtx<'a, D: BlockDev> {
    fs: &'a Ext4Fs<D>,
    seed: Option<u32>,
}

fn ro_violation() -> Ext4Error {
    Ext4Error::ReadOnly("internal error: a read path tried to modify the filesystem".into())
}

impl<D: BlockDev> MapCtx for RoCtx<'_, D> {
    fn block_size(&self) -> u32 {
        self.fs.sb.block_size
    }
    fn blocks_count(&self) -> u64 {
        self.fs.sb.blocks_count
    }
    fn first_data_block(&self) -> u64 {
        u64::from(self.fs.sb.first_data_block)
    }
    fn read_block(&mut self, pblk: u64, buf: &mut [u8]) -> Result<()> {
        let b = self.fs.read_block(pblk)?;
        copy_block(&b, buf)
    }
    fn write_block(&mut self, _: u64, _: &[u8]) -> Result<()> {
        Err(ro_violation())
    }
    fn alloc_blocks(&mut self, _: u64, _: u32) -> Result<(u64, u32)> {
        Err(ro_violation())
    }
    fn free_blocks(&mut self, _: u64, _: u64) -> Result<()> {
        Err(ro_violation())
    }
    fn csum_seed(&self) -> Option<u32> {
        self.seed
    }
}

fn copy_block(src: &[u8], dst: &mut [u8]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Ext4Error::InvalidArgument(format!(
            "block buffer of {} bytes, block size {}",
            dst.len(),
            src.len()
        )));
    }
    dst.copy_from_slice(src);
    Ok(())
}

// ---- DirBlocks implementations ------------------------------------------------------------

/// A filesystem handle a directory works through: shared (reads only) or exclusive.
trait FsHandle {
    type Dev: BlockDev;
    fn fs(&self) -> &Ext4Fs<Self::Dev>;
    /// `None` for a shared handle: every write is then an internal error.
    fn fs_mut(&mut self) -> Option<&mut Ext4Fs<Self::Dev>>;
}

impl<D: BlockDev> FsHandle for &Ext4Fs<D> {
    type Dev = D;
    fn fs(&self) -> &Ext4Fs<D> {
        self
    }
    fn fs_mut(&mut self) -> Option<&mut Ext4Fs<D>> {
        None
    }
}

impl<D: BlockDev> FsHandle for &mut Ext4Fs<D> {
    type Dev = D;
    fn fs(&self) -> &Ext4Fs<D> {
        self
    }
    fn fs_mut(&mut self) -> Option<&mut Ext4Fs<D>> {
        Some(self)
    }
}

/// One block-based directory, as the `dir`/`htree` code sees it.
struct FsDir<F: FsHandle> {
    fs: F,
    ino: u32,
    inode: Inode,
    inode_dirty: bool,
}

/// Read access (the `dir` code never writes through it).
type RoDir<'a, D> = FsDir<&'a Ext4Fs<D>>;
/// Write access; [`FsDir::finish`] writes the inode back.
type RwDir<'a, D> = FsDir<&'a mut Ext4Fs<D>>;

impl<F: FsHandle> FsDir<F> {
    fn writable(&mut self) -> Result<&mut Ext4Fs<F::Dev>> {
        self.fs.fs_mut().ok_or_else(ro_violation)
    }
}

impl<D: BlockDev> RwDir<'_, D> {
    /// Write the directory inode back if a call changed it.
    fn finish(self) -> Result<Inode> {
        let FsDir {
            fs,
            ino,
            mut inode,
            inode_dirty,
        } = self;
        if inode_dirty {
            fs.write_inode(ino, &mut inode)?;
        }
        Ok(inode)
    }
}

impl<F: FsHandle> DirBlocks for FsDir<F> {
    fn ino(&self) -> u32 {
        self.ino
    }
    fn block_size(&self) -> u32 {
        self.fs.fs().sb.block_size
    }
    fn num_blocks(&self) -> u32 {
        u32::try_from(self.inode.size() / u64::from(self.block_size())).unwrap_or(u32::MAX)
    }
    fn read(&mut self, lblk: u32) -> Result<Vec<u8>> {
        let fs = self.fs.fs();
        let p = fs.dir_pblk(self.ino, &self.inode, lblk)?;
        fs.read_block(p)
    }
    fn write(&mut self, lblk: u32, data: &[u8]) -> Result<()> {
        let p = self.fs.fs().dir_pblk(self.ino, &self.inode, lblk)?;
        self.writable()?.cache_write(p, data)
    }
    fn append_block(&mut self) -> Result<u32> {
        let lblk = self.num_blocks();
        let ino = self.ino;
        let bs = self.block_size();
        let FsDir {
            fs,
            inode,
            inode_dirty,
            ..
        } = self;
        let fs = fs.fs_mut().ok_or_else(ro_violation)?;
        let goal = fs.goal_for(ino);
        *inode_dirty = true;
        let runs = fs.with_map_rw(ino, inode, |ctx, fm| {
            mapping::allocate(ctx, fm, u64::from(lblk), 1, goal, AllocMode::Write)
        })?;
        let p = runs
            .iter()
            .find(|r| r.lblk <= u64::from(lblk) && u64::from(lblk) < r.lblk.saturating_add(r.len))
            .map(|r| r.pblk + (u64::from(lblk) - r.lblk));
        let p = match p {
            Some(p) => p,
            None => fs.dir_pblk(ino, inode, lblk)?,
        };
        fs.cache_write(p, &vec![0u8; bs as usize])?;
        inode.set_size((u64::from(lblk) + 1).saturating_mul(u64::from(bs)));
        Ok(lblk)
    }
    fn csum_seed(&self) -> Option<u32> {
        self.fs.fs().inode_csum_seed(self.ino, &self.inode)
    }
    fn hash(&self) -> HashParams {
        let sb = &self.fs.fs().sb;
        HashParams {
            default_version: sb.def_hash_version(),
            seed: sb.hash_seed(),
            unsigned: sb.unsigned_hash(),
        }
    }
    fn has_filetype(&self) -> bool {
        self.fs.fs().sb.has_incompat(incompat::FILETYPE)
    }
    fn dir_index(&self) -> bool {
        self.fs.fs().sb.has_compat(compat::DIR_INDEX)
    }
    fn large_dir(&self) -> bool {
        self.fs.fs().sb.has_incompat(incompat::LARGEDIR)
    }
    fn is_indexed(&self) -> bool {
        self.inode.has_flag(iflags::INDEX)
    }
    fn set_indexed(&mut self, on: bool) -> Result<()> {
        self.writable()?;
        let f = self.inode.flags();
        self.inode.set_flags(if on {
            f | iflags::INDEX
        } else {
            f & !iflags::INDEX
        });
        self.inode_dirty = true;
        Ok(())
    }
    fn inodes_count(&self) -> u32 {
        self.fs.fs().sb.inodes_count
    }
}

/// Read access to one directory: through its blocks, or its inline data.
enum DirView<'a, D: BlockDev> {
    Blocks(RoDir<'a, D>),
    Inline {
        il: dir::InlineDir,
        ib: [u8; 60],
        data: Vec<u8>,
    },
}

impl<D: BlockDev> DirView<'_, D> {
    fn lookup(&mut self, name: &[u8]) -> Result<Option<(u32, u8)>> {
        match self {
            DirView::Blocks(d) => dir::lookup(d, name),
            DirView::Inline { il, ib, data } => {
                if name == b".." {
                    return Ok(Some((il.list(ib, data)?.0, 2)));
                }
                il.lookup(ib, data, name)
            }
        }
    }
    fn list(&mut self) -> Result<Vec<dir::RawEntry>> {
        match self {
            DirView::Blocks(d) => dir::list(d),
            DirView::Inline { il, ib, data } => Ok(il.list(ib, data)?.1),
        }
    }
    fn is_empty(&mut self) -> Result<bool> {
        match self {
            DirView::Blocks(d) => dir::is_empty(d),
            DirView::Inline { il, ib, data } => Ok(il.list(ib, data)?.1.is_empty()),
        }
    }
    fn parent(&mut self) -> Result<u32> {
        match self {
            DirView::Blocks(d) => dir::parent(d),
            DirView::Inline { il, ib, data } => Ok(il.list(ib, data)?.0),
        }
    }
}

// ---- the filesystem -----------------------------------------------------------------------

impl<D: BlockDev> Ext4Fs<D> {
    /// Open the filesystem on `dev`: parse and verify the superblock and every group
    /// descriptor. With `writable`, refuse (`ReadOnly`) anything whose invariants we do not
    /// maintain. A journal that needs recovery is refused (`NeedsRecovery`).
    pub fn open(dev: D, opts: OpenOptions) -> Result<Self> {
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        dev.read_at(&mut raw, SUPERBLOCK_OFFSET)?;
        let sb = Superblock::parse(&raw)?;
        if !sb.has_incompat(incompat::RECOVER) {
            return Self::open_parsed(dev, sb, opts);
        }
        if !opts.writable {
            return Err(Ext4Error::NeedsRecovery(
                "the journal holds transactions that were never replayed; open the filesystem \
                 writable to replay them (reading it as it is would show stale metadata)"
                    .into(),
            ));
        }
        // Refuse before replaying: a filesystem we will not write must stay untouched.
        if let Some(why) = sb.write_refusal() {
            return Err(Ext4Error::ReadOnly(why));
        }
        if dev.is_read_only() {
            return Err(Ext4Error::ReadOnly("the device is read-only".into()));
        }
        let jino = sb.journal_inum();
        if jino == 0 {
            return Err(Ext4Error::NeedsRecovery(
                "the journal is on an external device, which imgscrub cannot replay".into(),
            ));
        }
        // Read the journal inode's mapping with a read-only view, then replay.
        let view = Self::open_parsed(dev, sb, OpenOptions { writable: false })?;
        let jinode = view.read_inode(jino)?;
        let extents = view.with_map_ro(jino, &jinode, |ctx, fm| mapping::extents(ctx, fm))?;
        let bs = u64::from(view.sb.block_size);
        let len_blocks = jinode.size() / bs;
        let map = |l: u64| -> Result<u64> {
            extents
                .iter()
                .find(|e| e.lblk <= l && l < e.lblk.saturating_add(e.len) && !e.uninit)
                .map(|e| e.pblk + (l - e.lblk))
                .ok_or_else(|| {
                    Ext4Error::corrupt(
                        format!("journal inode {jino}"),
                        format!("block {l} unmapped"),
                    )
                })
        };
        let replayed = crate::journal::replay(&view.dev, view.sb.block_size, &map, len_blocks)?;
        let dev = view.into_inner();
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        dev.read_at(&mut raw, SUPERBLOCK_OFFSET)?;
        let sb = Superblock::parse(&raw)?;
        if sb.has_incompat(incompat::RECOVER) {
            return Err(Ext4Error::NeedsRecovery(
                "the journal replay did not complete".into(),
            ));
        }
        let mut fs = Self::open_parsed(dev, sb, opts)?;
        fs.notes.insert(
            0,
            if replayed.log_was_dirty {
                format!(
                    "replayed the journal left by an unclean shutdown (transactions {}..{})",
                    replayed.start_sequence, replayed.end_sequence
                )
            } else {
                "cleared needs_recovery (the journal was already empty)".to_owned()
            },
        );
        Ok(fs)
    }

    /// What opening the filesystem writable did to recover from an unclean shutdown
    /// (journal replayed, orphan inodes freed or truncated), one sentence each; empty for a
    /// clean filesystem. Callers show them: the image changes beyond what was asked.
    pub fn recovery_notes(&self) -> &[String] {
        &self.notes
    }

    fn open_parsed(dev: D, sb: Superblock, opts: OpenOptions) -> Result<Self> {
        if sb.blocks_count.saturating_mul(u64::from(sb.block_size)) > dev.len() {
            return Err(Ext4Error::corrupt(
                "superblock",
                format!(
                    "filesystem of {} blocks of {} bytes is larger than the device ({} bytes)",
                    sb.blocks_count,
                    sb.block_size,
                    dev.len()
                ),
            ));
        }
        if opts.writable {
            if let Some(why) = sb.write_refusal() {
                return Err(Ext4Error::ReadOnly(why));
            }
            if dev.is_read_only() {
                return Err(Ext4Error::ReadOnly("the device is read-only".into()));
            }
        }
        let cache = Mutex::new(BlockCache::default());
        let groups = {
            let mut rd = |b: u64| read_cached(&dev, &cache, &sb, b);
            Groups::load(&sb, &mut rd)?
        };
        let mut fs = Ext4Fs {
            dev,
            sb,
            groups,
            writable: opts.writable,
            cache,
            dirty: false,
            clock: None,
            notes: Vec::new(),
        };
        // The root must be a readable directory: catches a wrong inode table early.
        let root = fs.read_inode(ROOT_INO)?;
        if !root.is_dir() {
            return Err(Ext4Error::corrupt(
                "inode 2",
                "the root inode is not a directory",
            ));
        }
        if opts.writable {
            fs.process_orphans()?;
        }
        Ok(fs)
    }

    /// Finish what an unclean shutdown left in the orphan list (`s_last_orphan`, chained
    /// through `i_dtime`) and the orphan file, as the kernel does at mount and e2fsck in
    /// `release_orphan_inodes`: an orphan with no links left is freed with everything it
    /// owns; one that still has links was being truncated, and loses its blocks past
    /// `i_size`. Then the list head is cleared, the orphan-file blocks are emptied and
    /// `orphan_present` is cleared. Everything stays in the block cache until `flush`, so a
    /// damaged list (an inode number out of range, a loop, an inode that is not in use, a bad
    /// orphan-file block) fails the open without writing anything: that is e2fsck's job.
    fn process_orphans(&mut self) -> Result<()> {
        let head = self.sb.last_orphan();
        let present = self.sb.has_ro_compat(ro_compat::ORPHAN_PRESENT);
        if head == 0 && !present {
            return Ok(());
        }
        let mut seen = std::collections::HashSet::new();
        let mut ino = head;
        while ino != 0 {
            self.check_orphan(ino, "the orphan list (s_last_orphan)", &mut seen)?;
            ino = self.release_orphan(ino)?;
        }
        let from_list = seen.len();
        self.sb.set_last_orphan(0);
        self.dirty = true;
        if present {
            if !self.sb.has_compat(compat::ORPHAN_FILE) {
                return Err(Ext4Error::corrupt(
                    "superblock",
                    "orphan_present is set but there is no orphan file",
                ));
            }
            self.process_orphan_file(&mut seen)?;
            let ro = self.sb.feature_ro_compat & !ro_compat::ORPHAN_PRESENT;
            self.sb.set_feature_ro_compat(ro);
        }
        self.notes.push(format!(
            "finished {} orphan inode(s) left by an unclean shutdown ({} from the orphan list, \
             {} from the orphan file): deleted-while-open files freed, interrupted truncations \
             completed",
            seen.len(),
            from_list,
            seen.len() - from_list
        ));
        Ok(())
    }

    /// An orphan must be an ordinary inode number, appear once, and be marked in use.
    fn check_orphan(
        &mut self,
        ino: u32,
        whence: &str,
        seen: &mut std::collections::HashSet<u32>,
    ) -> Result<()> {
        let what = || format!("{whence}: inode {ino}");
        if ino < self.sb.first_ino || ino > self.sb.inodes_count {
            return Err(Ext4Error::corrupt(what(), "not an ordinary inode number"));
        }
        if !seen.insert(ino) {
            return Err(Ext4Error::corrupt(what(), "listed twice (a loop)"));
        }
        let in_use = {
            let sb = &self.sb;
            let mut rd = |b: u64| read_cached(&self.dev, &self.cache, sb, b);
            self.groups.inode_in_use(sb, ino, &mut rd)?
        };
        if !in_use {
            return Err(Ext4Error::corrupt(
                what(),
                "not marked in use in the inode bitmap",
            ));
        }
        Ok(())
    }

    /// Free or truncate one orphan; returns its `i_dtime`, the next inode of the orphan list.
    fn release_orphan(&mut self, ino: u32) -> Result<u32> {
        let mut inode = self.read_inode(ino)?;
        let next = inode.dtime();
        if inode.links_count() == 0 {
            let is_dir = inode.is_dir();
            self.free_inode(ino, inode, is_dir)?;
            return Ok(next);
        }
        match inode.file_type() {
            Some(FileType::Regular) => {}
            _ => {
                return Err(Ext4Error::corrupt(
                    format!("orphan inode {ino}"),
                    "still linked but not a regular file (nothing to truncate)",
                ));
            }
        }
        if !inode.has_flag(iflags::INLINE_DATA) {
            let keep = inode.size().div_ceil(u64::from(self.sb.block_size));
            self.with_map_rw(ino, &mut inode, |ctx, fm| {
                mapping::punch(ctx, fm, keep, u64::MAX)
            })?;
        }
        inode.set_dtime(0);
        self.write_inode(ino, &mut inode)?;
        Ok(next)
    }

    /// Release every inode recorded in the orphan file, then empty its blocks.
    fn process_orphan_file(&mut self, seen: &mut std::collections::HashSet<u32>) -> Result<()> {
        let inum = self.sb.orphan_file_inum();
        if inum == 0 || inum > self.sb.inodes_count {
            return Err(Ext4Error::corrupt(
                "superblock",
                format!("orphan file inode {inum} out of range"),
            ));
        }
        let inode = self.read_inode(inum)?;
        let bs = u64::from(self.sb.block_size);
        if !inode.size().is_multiple_of(bs) {
            return Err(Ext4Error::corrupt(
                format!("orphan file (inode {inum})"),
                "size is not a whole number of blocks",
            ));
        }
        let extents = self.with_map_ro(inum, &inode, |ctx, fm| mapping::extents(ctx, fm))?;
        let seed = self.inode_csum_seed(inum, &inode);
        for lblk in 0..inode.size() / bs {
            let pblk = extents
                .iter()
                .find(|e| e.lblk <= lblk && lblk < e.lblk.saturating_add(e.len) && !e.uninit)
                .map(|e| e.pblk + (lblk - e.lblk))
                .ok_or_else(|| {
                    Ext4Error::corrupt(
                        format!("orphan file (inode {inum})"),
                        format!("block {lblk} is a hole"),
                    )
                })?;
            let mut block = self.read_block(pblk)?;
            let entries = crate::orphan::orphan_file_block_entries(&block, pblk, seed)?;
            if entries.is_empty() {
                continue;
            }
            for ino in entries {
                self.check_orphan(ino, "the orphan file", seen)?;
                self.release_orphan(ino)?;
            }
            crate::orphan::clear_block(&mut block, pblk, seed);
            self.cache_write(pblk, &block)?;
        }
        Ok(())
    }

    /// Stamp every change from now on (inode times, deletion times, directory times) with
    /// `t` instead of the current time: the same input and edits then give the same bytes
    /// (reproducible images, `SOURCE_DATE_EPOCH`). `None` goes back to the current time.
    pub fn set_clock(&mut self, t: Option<Timestamp>) {
        self.clock = t;
    }

    /// The time stamped on changes: the fixed clock, or now.
    fn now(&self) -> Timestamp {
        self.clock.unwrap_or_else(system_now)
    }

    /// The superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// The root directory's inode number (2).
    pub fn root(&self) -> u32 {
        ROOT_INO
    }

    /// Give the device back (without flushing: call [`Ext4Fs::flush`] first).
    pub fn into_inner(self) -> D {
        self.dev
    }

    /// The underlying device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    // ---- blocks ----

    /// Read one filesystem block (through the cache).
    pub fn read_block(&self, b: u64) -> Result<Vec<u8>> {
        read_cached(&self.dev, &self.cache, &self.sb, b)
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Ext4Error::ReadOnly(
                "the filesystem was opened read-only".into(),
            ))
        }
    }

    fn cache_mut(&mut self) -> &mut BlockCache {
        self.cache.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// Store a metadata block in the cache; written at flush.
    fn cache_write(&mut self, b: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        if b >= self.sb.blocks_count || b < u64::from(self.sb.first_data_block) {
            return Err(Ext4Error::corrupt(
                "block reference",
                format!("write to block {b} outside the filesystem"),
            ));
        }
        if data.len() != self.sb.block_size as usize {
            return Err(Ext4Error::InvalidArgument(format!(
                "block write of {} bytes",
                data.len()
            )));
        }
        self.dirty = true;
        let c = self.cache_mut();
        match c.map.get_mut(&b) {
            Some(e) => {
                if !e.dirty {
                    c.clean = c.clean.saturating_sub(1);
                }
                e.data.clear();
                e.data.extend_from_slice(data);
                e.dirty = true;
            }
            None => {
                c.map.insert(
                    b,
                    Cached {
                        data: data.to_vec(),
                        dirty: true,
                    },
                );
            }
        }
        Ok(())
    }

    /// Write a file data block straight to the device (dropping any cached copy).
    fn write_data_block(&mut self, b: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        if b >= self.sb.blocks_count || b < u64::from(self.sb.first_data_block) {
            return Err(Ext4Error::corrupt(
                "block reference",
                format!("data write to block {b} outside the filesystem"),
            ));
        }
        let c = self.cache_mut();
        if let Some(e) = c.map.remove(&b)
            && !e.dirty
        {
            c.clean = c.clean.saturating_sub(1);
        }
        let bs = u64::from(self.sb.block_size);
        self.dev.write_at(data, b * bs)?;
        Ok(())
    }

    /// Read file data blocks `pblk..pblk+n` into `out` (cache first for coherence).
    fn read_data(&self, pblk: u64, out: &mut [u8]) -> Result<()> {
        let bs = self.sb.block_size as usize;
        let n = out.len().div_ceil(bs) as u64;
        let end = pblk.checked_add(n).filter(|&e| e <= self.sb.blocks_count);
        if end.is_none() {
            return Err(Ext4Error::corrupt(
                "block reference",
                format!("data blocks {pblk}+{n} beyond the end of the filesystem"),
            ));
        }
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let any_cached = (0..n).any(|k| c.map.contains_key(&(pblk + k)));
        if !any_cached {
            drop(c);
            self.dev.read_at(out, pblk * bs as u64)?;
            return Ok(());
        }
        for (k, chunk) in out.chunks_mut(bs).enumerate() {
            let b = pblk + k as u64;
            match c.map.get(&b) {
                Some(e) => {
                    let l = chunk.len();
                    chunk.copy_from_slice(e.data.get(..l).unwrap_or(&[]));
                }
                None => self.dev.read_at(chunk, b * bs as u64)?,
            }
        }
        Ok(())
    }

    fn alloc_blocks(&mut self, goal: u64, max: u32) -> Result<(u64, u32)> {
        self.check_writable()?;
        self.dirty = true;
        let sb = &self.sb;
        let mut rd = |b: u64| read_cached(&self.dev, &self.cache, sb, b);
        self.groups.alloc_blocks(sb, goal, max, &mut rd)
    }

    fn free_blocks(&mut self, start: u64, count: u64) -> Result<()> {
        self.check_writable()?;
        self.dirty = true;
        {
            let sb = &self.sb;
            let mut rd = |b: u64| read_cached(&self.dev, &self.cache, sb, b);
            self.groups.free_blocks(sb, start, count, &mut rd)?;
        }
        // Freed blocks must not be written back later over someone else's data.
        let c = self.cache_mut();
        let mut k = 0u64;
        while k < count {
            if let Some(e) = c.map.remove(&(start + k))
                && !e.dirty
            {
                c.clean = c.clean.saturating_sub(1);
            }
            k += 1;
        }
        Ok(())
    }

    /// A block near the start of the inode's group: where new data for it should go.
    fn goal_for(&self, ino: u32) -> u64 {
        let g = ino.saturating_sub(1) / self.sb.inodes_per_group;
        self.sb.group_first_block(g)
    }

    // ---- inodes ----

    fn inode_loc(&self, ino: u32) -> Result<(u64, usize)> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Ext4Error::NotFound(format!("inode {ino} (out of range)")));
        }
        let ipg = self.sb.inodes_per_group;
        let g = (ino - 1) / ipg;
        let idx = u64::from((ino - 1) % ipg);
        let isz = u64::from(self.sb.inode_size);
        let bs = u64::from(self.sb.block_size);
        let table = self.groups.desc(g)?.inode_table();
        let byte = idx * isz;
        Ok((table + byte / bs, (byte % bs) as usize))
    }

    fn read_inode_raw(&self, ino: u32) -> Result<Inode> {
        let (b, off) = self.inode_loc(ino)?;
        let block = self.read_block(b)?;
        let isz = usize::from(self.sb.inode_size);
        let raw = block
            .get(off..off + isz)
            .ok_or_else(|| Ext4Error::corrupt(format!("inode {ino}"), "outside its table block"))?;
        Ok(Inode::from_bytes(raw))
    }

    /// Read inode `ino`, verifying its checksum (metadata_csum) and its `i_extra_isize`.
    pub fn read_inode(&self, ino: u32) -> Result<Inode> {
        let inode = self.read_inode_raw(ino)?;
        if self.sb.metadata_csum() {
            inode.verify(self.sb.csum_seed, ino)?;
        }
        let isz = usize::from(self.sb.inode_size);
        if isz > 128 {
            let ex = usize::from(inode.extra_isize());
            if ex > isz - 128 || ex % 4 != 0 {
                return Err(Ext4Error::corrupt(
                    format!("inode {ino}"),
                    format!("i_extra_isize {ex} (inode size {isz})"),
                ));
            }
        }
        Ok(inode)
    }

    /// Read an inode that must be in use (links > 0 and a valid type).
    fn read_live_inode(&self, ino: u32) -> Result<(Inode, FileType)> {
        let inode = self.read_inode(ino)?;
        if inode.links_count() == 0 {
            return Err(Ext4Error::NotFound(format!("inode {ino} is not in use")));
        }
        let ft = inode.file_type().ok_or_else(|| {
            Ext4Error::corrupt(
                format!("inode {ino}"),
                format!("invalid mode {:#o}", inode.mode()),
            )
        })?;
        Ok((inode, ft))
    }

    /// Write inode `ino` (checksum recomputed) into its cached table block.
    pub fn write_inode(&mut self, ino: u32, inode: &mut Inode) -> Result<()> {
        self.check_writable()?;
        if inode.record_size() != usize::from(self.sb.inode_size) {
            return Err(Ext4Error::InvalidArgument(format!(
                "inode record of {} bytes",
                inode.record_size()
            )));
        }
        if self.sb.metadata_csum() {
            inode.update_checksum(self.sb.csum_seed, ino);
        }
        let (b, off) = self.inode_loc(ino)?;
        let mut block = self.read_block(b)?;
        let isz = inode.record_size();
        let dst = block
            .get_mut(off..off + isz)
            .ok_or_else(|| Ext4Error::corrupt(format!("inode {ino}"), "outside its table block"))?;
        dst.copy_from_slice(inode.as_bytes());
        self.cache_write(b, &block)
    }

    fn inode_csum_seed(&self, ino: u32, inode: &Inode) -> Option<u32> {
        self.sb
            .metadata_csum()
            .then(|| inode_seed(self.sb.csum_seed, ino, inode.generation()))
    }

    fn huge_file(&self) -> bool {
        self.sb.has_ro_compat(ro_compat::HUGE_FILE)
    }

    /// Run mapping code read-only over `inode`'s `i_block`.
    fn with_map_ro<T>(
        &self,
        ino: u32,
        inode: &Inode,
        f: impl FnOnce(&mut dyn MapCtx, &mut FileMap<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut ib = inode.i_block();
        let mut fm = FileMap::new(ino, &mut ib, MapKind::from_flags(inode.flags()));
        let mut ctx = RoCtx {
            fs: self,
            seed: self.inode_csum_seed(ino, inode),
        };
        f(&mut ctx, &mut fm)
    }

    /// Run mapping code that may allocate/free over `inode`'s `i_block`; applies the new
    /// `i_block` and the change in allocated blocks to `inode` (not written back here), even
    /// when `f` fails part-way (blocks mapped so far stay mapped).
    fn with_map_rw<T>(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        f: impl FnOnce(&mut dyn MapCtx, &mut FileMap<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut ib = inode.i_block();
        let seed = self.inode_csum_seed(ino, inode);
        let kind = MapKind::from_flags(inode.flags());
        let (res, delta, dirty) = {
            let mut fm = FileMap::new(ino, &mut ib, kind);
            let mut ctx = RwCtx { fs: self, seed };
            let r = f(&mut ctx, &mut fm);
            // Repack sparsely filled extent nodes, which e2fsck -fn would report as
            // "could be narrower/shorter" (a no-op for depth-0 trees and block maps).
            let r = r.and_then(|v| mapping::optimize(&mut ctx, &mut fm).map(|_| v));
            (r, fm.blocks_delta, fm.i_block_dirty)
        };
        if dirty {
            inode.set_i_block(&ib);
        }
        if delta != 0 {
            self.add_blocks(inode, delta)?;
        }
        res
    }

    /// Add `delta` filesystem blocks to `i_blocks`.
    fn add_blocks(&self, inode: &mut Inode, delta: i64) -> Result<()> {
        let bs = self.sb.block_size;
        let per = i128::from(bs / 512);
        let cur = i128::from(inode.blocks_512(self.huge_file(), bs));
        let new = (cur + i128::from(delta) * per).max(0);
        inode.set_blocks_512(u64::try_from(new).unwrap_or(u64::MAX), self.huge_file(), bs)
    }

    /// Physical block of directory block `lblk`.
    fn dir_pblk(&self, ino: u32, inode: &Inode, lblk: u32) -> Result<u64> {
        let m = self.with_map_ro(ino, inode, |ctx, fm| mapping::map(ctx, fm, u64::from(lblk)))?;
        match m.pblk {
            Some(p) if !m.uninit => Ok(p),
            _ => Err(Ext4Error::corrupt(
                format!("directory inode {ino}"),
                format!("block {lblk} is a hole"),
            )),
        }
    }

    fn check_dir_supported(&self, ino: u32, inode: &Inode) -> Result<()> {
        if inode.has_flag(iflags::ENCRYPT) || inode.has_flag(iflags::CASEFOLD) {
            return Err(Ext4Error::Unsupported(format!(
                "encrypted or casefolded directory (inode {ino})"
            )));
        }
        Ok(())
    }

    fn inline_dir(&self, ino: u32) -> dir::InlineDir {
        dir::InlineDir {
            dir_ino: ino,
            inodes_count: self.sb.inodes_count,
            filetype: self.sb.has_incompat(incompat::FILETYPE),
        }
    }

    /// Read access to a directory, block-based or inline.
    fn ro_dir(&self, ino: u32) -> Result<DirView<'_, D>> {
        let (inode, ft) = self.read_live_inode(ino)?;
        if ft != FileType::Directory {
            return Err(Ext4Error::NotADirectory(format!("inode {ino}")));
        }
        self.check_dir_supported(ino, &inode)?;
        if inode.has_flag(iflags::INLINE_DATA) {
            let attrs = self.load_xattrs(ino, &inode)?;
            let data = xattr::get(&attrs, b"system.data")
                .map(|a| a.value.clone())
                .unwrap_or_default();
            return Ok(DirView::Inline {
                il: self.inline_dir(ino),
                ib: inode.i_block(),
                data,
            });
        }
        Ok(DirView::Blocks(FsDir {
            fs: self,
            ino,
            inode,
            inode_dirty: false,
        }))
    }

    /// Write access to a block-based directory; an inline directory is converted to blocks
    /// first (the kernel does the same once an inline directory is full).
    fn rw_dir(&mut self, ino: u32) -> Result<RwDir<'_, D>> {
        self.check_writable()?;
        let (mut inode, ft) = self.read_live_inode(ino)?;
        if ft != FileType::Directory {
            return Err(Ext4Error::NotADirectory(format!("inode {ino}")));
        }
        self.check_dir_supported(ino, &inode)?;
        if inode.has_flag(iflags::INLINE_DATA) {
            self.convert_inline_dir(ino, inode)?;
            inode = self.read_inode(ino)?;
        }
        Ok(FsDir {
            fs: self,
            ino,
            inode,
            inode_dirty: false,
        })
    }

    /// Rewrite an inline directory as an ordinary one-block (or more) directory.
    fn convert_inline_dir(&mut self, ino: u32, mut inode: Inode) -> Result<()> {
        let mut attrs = self.load_xattrs(ino, &inode)?;
        let data = xattr::get(&attrs, b"system.data")
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let (parent, entries) = self.inline_dir(ino).list(&inode.i_block(), &data)?;
        let _ = xattr::remove(&mut attrs, b"system.data");
        inode.set_flags(inode.flags() & !iflags::INLINE_DATA);
        self.init_mapped(&mut inode);
        inode.set_size(0);
        self.store_xattrs(ino, &mut inode, &attrs)?;
        let mut d = FsDir {
            fs: self,
            ino,
            inode,
            inode_dirty: true,
        };
        let mut r = dir::init(&mut d, ino, parent);
        for e in &entries {
            if r.is_err() {
                break;
            }
            r = dir::add(&mut d, &e.name, e.ino, e.file_type);
        }
        d.finish()?;
        r
    }

    // ---- read API ----

    /// Look `name` up in directory `dir`.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        if name == b"." {
            self.ro_dir(dir)?;
            return Ok(Some(dir));
        }
        let mut d = self.ro_dir(dir)?;
        Ok(d.lookup(name)?.map(|(i, _)| i))
    }

    /// Resolve an absolute path (no symlink following). `NotFound` / `NotADirectory`.
    pub fn lookup_path(&self, path: &[u8]) -> Result<u32> {
        let mut cur = ROOT_INO;
        for comp in path.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            match self.lookup(cur, comp) {
                Ok(Some(i)) => cur = i,
                Ok(None) => return Err(Ext4Error::NotFound(name_str(path))),
                Err(Ext4Error::NotADirectory(_)) => {
                    return Err(Ext4Error::NotADirectory(name_str(path)));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }

    /// Attributes of inode `ino`.
    pub fn stat(&self, ino: u32) -> Result<Stat> {
        let (inode, ft) = self.read_live_inode(ino)?;
        let t = |f| inode.time(f).unwrap_or_default();
        Ok(Stat {
            ino,
            file_type: ft,
            perm: inode.mode() & 0o7777,
            uid: inode.uid(),
            gid: inode.gid(),
            size: inode.size(),
            nlink: u32::from(inode.links_count()),
            atime: t(TimeField::Atime),
            mtime: t(TimeField::Mtime),
            ctime: t(TimeField::Ctime),
            crtime: inode.time(TimeField::Crtime),
            rdev: matches!(ft, FileType::CharDevice | FileType::BlockDevice).then(|| inode.rdev()),
            blocks_512: inode.blocks_512(self.huge_file(), self.sb.block_size),
            flags: inode.flags(),
            generation: inode.generation(),
        })
    }

    /// Entries of directory `dir`, without "." and "..".
    pub fn read_dir(&self, dir: u32) -> Result<Vec<DirEntry>> {
        let mut d = self.ro_dir(dir)?;
        let raw = d.list()?;
        let filetype = self.sb.has_incompat(incompat::FILETYPE);
        let mut out = Vec::with_capacity(raw.len());
        for e in raw {
            let ft = match FileType::from_dirent_type(e.file_type).filter(|_| filetype) {
                Some(ft) => ft,
                None => self.read_live_inode(e.ino)?.1,
            };
            out.push(DirEntry {
                name: e.name,
                ino: e.ino,
                file_type: ft,
            });
        }
        Ok(out)
    }

    /// Read up to `buf.len()` bytes at `offset`; returns the number read (0 at EOF).
    pub fn read(&self, ino: u32, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (inode, ft) = self.read_live_inode(ino)?;
        if ft == FileType::Directory {
            return Err(Ext4Error::IsADirectory(format!("inode {ino}")));
        }
        self.read_inode_data(ino, &inode, offset, buf)
    }

    fn read_inode_data(
        &self,
        ino: u32,
        inode: &Inode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let size = inode.size();
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from((size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        let out = buf
            .get_mut(..n)
            .ok_or_else(|| Ext4Error::InvalidArgument("read buffer".into()))?;
        if inode.has_flag(iflags::INLINE_DATA) {
            let content = self.inline_content(ino, inode)?;
            let from = usize::try_from(offset).unwrap_or(usize::MAX);
            let src = content.get(from..from.saturating_add(n)).unwrap_or(&[]);
            let k = src.len().min(out.len());
            out.get_mut(..k)
                .unwrap_or(&mut [])
                .copy_from_slice(src.get(..k).unwrap_or(&[]));
            return Ok(k);
        }
        if matches!(
            inode.file_type(),
            Some(FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket)
        ) {
            return Err(Ext4Error::InvalidArgument(format!(
                "inode {ino} is a special file"
            )));
        }
        let bs = u64::from(self.sb.block_size);
        let mut pos = offset;
        let end = offset + n as u64;
        // Bounded: every iteration advances `pos` by at least one byte.
        while pos < end {
            let lblk = pos / bs;
            let m = self.with_map_ro(ino, inode, |ctx, fm| mapping::map(ctx, fm, lblk))?;
            let run_end_byte = m
                .lblk
                .saturating_add(m.len.max(1))
                .saturating_mul(bs)
                .min(end)
                .max(pos + 1);
            let dst_from = (pos - offset) as usize;
            let dst_to = (run_end_byte - offset) as usize;
            let dst = out
                .get_mut(dst_from..dst_to)
                .ok_or_else(|| Ext4Error::InvalidArgument("read range".into()))?;
            match m.pblk {
                Some(p) if !m.uninit => {
                    // Read whole blocks covering the span, then copy the wanted bytes.
                    let first_b = p.saturating_add(lblk - m.lblk);
                    let in_off = (pos % bs) as usize;
                    let nblocks = (in_off + dst.len()).div_ceil(bs as usize);
                    let mut tmp = vec![0u8; nblocks * bs as usize];
                    self.read_data(first_b, &mut tmp)?;
                    let src = tmp
                        .get(in_off..in_off + dst.len())
                        .ok_or_else(|| Ext4Error::InvalidArgument("read span".into()))?;
                    dst.copy_from_slice(src);
                }
                _ => dst.fill(0),
            }
            pos = run_end_byte;
        }
        Ok(n)
    }

    /// The whole contents of a file.
    pub fn read_to_vec(&self, ino: u32) -> Result<Vec<u8>> {
        let (inode, ft) = self.read_live_inode(ino)?;
        if ft == FileType::Directory {
            return Err(Ext4Error::IsADirectory(format!("inode {ino}")));
        }
        let size = usize::try_from(inode.size())
            .map_err(|_| Ext4Error::InvalidArgument(format!("inode {ino} too large to read")))?;
        let mut v = Vec::new();
        v.try_reserve_exact(size)
            .map_err(|_| Ext4Error::InvalidArgument(format!("inode {ino} too large to read")))?;
        v.resize(size, 0);
        let n = self.read_inode_data(ino, &inode, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u32) -> Result<Vec<u8>> {
        let (inode, ft) = self.read_live_inode(ino)?;
        if ft != FileType::Symlink {
            return Err(Ext4Error::InvalidArgument(format!(
                "inode {ino} is not a symlink"
            )));
        }
        let size = inode.size();
        if size >= u64::from(self.sb.block_size).max(60) {
            return Err(Ext4Error::corrupt(
                format!("symlink inode {ino}"),
                format!("target length {size}"),
            ));
        }
        if is_fast_symlink(&inode) {
            let ib = inode.i_block();
            return Ok(ib.get(..size as usize).unwrap_or(&[]).to_vec());
        }
        let mut v = vec![0u8; size as usize];
        let n = self.read_inode_data(ino, &inode, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Every free block run, in bytes, sorted and coalesced (BLOCK_UNINIT groups included).
    pub fn free_ranges(&self) -> Result<Vec<FreeRange>> {
        crate::free::free_ranges(&self.sb, &self.groups, &mut |b| self.read_block(b))
    }

    // ---- creating ----

    fn new_inode_bytes(
        &self,
        ino: u32,
        mode: u16,
        attr_uid: u32,
        attr_gid: u32,
        t: Timestamp,
    ) -> Result<Inode> {
        // Keep the slot's generation moving forward so stale handles never match.
        let old_gen = self
            .read_inode_raw(ino)
            .map(|i| i.generation())
            .unwrap_or(0);
        let isz = usize::from(self.sb.inode_size);
        let mut inode = Inode::zeroed(isz);
        if isz > 128 {
            let want = match self.sb.want_extra_isize() {
                0 => 32,
                w => w,
            };
            let max = u16::try_from(isz - 128).unwrap_or(u16::MAX);
            inode.set_extra_isize(want.min(max).max(4) & !3);
        }
        inode.set_mode(mode);
        inode.set_uid(attr_uid);
        inode.set_gid(attr_gid);
        inode.set_generation(old_gen.wrapping_add(1));
        for f in [
            TimeField::Atime,
            TimeField::Ctime,
            TimeField::Mtime,
            TimeField::Crtime,
        ] {
            inode.set_time(f, t);
        }
        Ok(inode)
    }

    /// Whether new regular files, directories and slow symlinks use extents.
    fn use_extents(&self) -> bool {
        self.sb.has_incompat(incompat::EXTENTS)
    }

    fn init_mapped(&self, inode: &mut Inode) {
        let mut ib = [0u8; 60];
        if self.use_extents() {
            mapping::init_extents(&mut ib);
            inode.set_flags(inode.flags() | iflags::EXTENTS);
        } else {
            mapping::init_blockmap(&mut ib);
        }
        inode.set_i_block(&ib);
    }

    fn alloc_inode(&mut self, parent: u32, is_dir: bool) -> Result<u32> {
        self.check_writable()?;
        self.dirty = true;
        let pg = parent.saturating_sub(1) / self.sb.inodes_per_group;
        let sb = &self.sb;
        let mut rd = |b: u64| read_cached(&self.dev, &self.cache, sb, b);
        self.groups.alloc_inode(sb, pg, is_dir, &mut rd)
    }

    fn free_inode_bit(&mut self, ino: u32, is_dir: bool) -> Result<()> {
        self.dirty = true;
        let sb = &self.sb;
        let mut rd = |b: u64| read_cached(&self.dev, &self.cache, sb, b);
        self.groups.free_inode(sb, ino, is_dir, &mut rd)
    }

    /// Touch a directory's mtime and ctime after an entry change.
    fn touch_dir(&mut self, dir: u32, inode: &mut Inode, t: Timestamp) -> Result<()> {
        inode.set_time(TimeField::Mtime, t);
        inode.set_time(TimeField::Ctime, t);
        self.write_inode(dir, inode)
    }

    /// Add an entry; returns the directory inode as it is afterwards (written).
    fn dir_add(
        &mut self,
        dir: u32,
        name: &[u8],
        ino: u32,
        ft: FileType,
        t: Timestamp,
    ) -> Result<Inode> {
        let mut d = self.rw_dir(dir)?;
        let r = dir::add(&mut d, name, ino, ft.dirent_type());
        let mut inode = d.finish()?;
        r?;
        self.touch_dir(dir, &mut inode, t)?;
        Ok(inode)
    }

    fn dir_remove(&mut self, dir: u32, name: &[u8], t: Timestamp) -> Result<(u32, Inode)> {
        let mut d = self.rw_dir(dir)?;
        let r = dir::remove(&mut d, name);
        let mut inode = d.finish()?;
        let ino = r?;
        self.touch_dir(dir, &mut inode, t)?;
        Ok((ino, inode))
    }

    fn prepare_create(&self, dir: u32, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        check_name(name)?;
        let d = self.ro_dir(dir)?;
        drop(d);
        Ok(())
    }

    /// Allocate an inode, link it into `dir` under `name`, then write it as `build` makes
    /// it. On failure to add the entry the inode is released again.
    fn create_common(
        &mut self,
        dir: u32,
        name: &[u8],
        ft: FileType,
        attr: &NewAttr,
        build: impl FnOnce(&mut Self, u32, &mut Inode) -> Result<()>,
    ) -> Result<u32> {
        self.prepare_create(dir, name)?;
        let is_dir = ft == FileType::Directory;
        let t = attr.time.unwrap_or_else(|| self.now());
        let ino = self.alloc_inode(dir, is_dir)?;
        if let Err(e) = self.dir_add(dir, name, ino, ft, t) {
            self.free_inode_bit(ino, is_dir)?;
            return Err(e);
        }
        let mode = ft.mode_bits() | (attr.perm & 0o7777);
        let mut inode = self.new_inode_bytes(ino, mode, attr.uid, attr.gid, t)?;
        inode.set_links_count(1);
        if let Err(e) = build(self, ino, &mut inode) {
            // Undo: drop the entry, give back whatever the builder allocated, free the inode.
            let _ = self.dir_remove(dir, name, t);
            let _ = self.release_blocks(ino, &mut inode);
            self.free_inode_bit(ino, is_dir)?;
            return Err(e);
        }
        self.write_inode(ino, &mut inode)?;
        Ok(ino)
    }

    /// Create an empty regular file.
    pub fn create(&mut self, dir: u32, name: &[u8], attr: &NewAttr) -> Result<u32> {
        self.create_common(dir, name, FileType::Regular, attr, |fs, _, inode| {
            fs.init_mapped(inode);
            Ok(())
        })
    }

    /// Create a device node, FIFO or socket (or a regular file for `FileType::Regular`).
    pub fn mknod(
        &mut self,
        dir: u32,
        name: &[u8],
        kind: FileType,
        rdev: (u32, u32),
        attr: &NewAttr,
    ) -> Result<u32> {
        match kind {
            FileType::Regular => self.create(dir, name, attr),
            FileType::Directory | FileType::Symlink => Err(Ext4Error::InvalidArgument(
                "mknod cannot make directories or symlinks".into(),
            )),
            FileType::CharDevice | FileType::BlockDevice => {
                if rdev.0 > 0xfff || rdev.1 > 0xfffff {
                    return Err(Ext4Error::InvalidArgument(format!(
                        "device number {}:{} does not fit",
                        rdev.0, rdev.1
                    )));
                }
                // Device inodes keep the number in i_block and never carry EXTENTS_FL
                // (e2fsck treats that as corruption).
                self.create_common(dir, name, kind, attr, |_, _, inode| {
                    inode.set_rdev(rdev.0, rdev.1);
                    Ok(())
                })
            }
            FileType::Fifo | FileType::Socket => {
                self.create_common(dir, name, kind, attr, |_, _, _| Ok(()))
            }
        }
    }

    /// Create a directory (with "." and "..").
    pub fn mkdir(&mut self, dir: u32, name: &[u8], attr: &NewAttr) -> Result<u32> {
        self.prepare_create(dir, name)?;
        // The parent gains a link through the new "..": check before changing anything.
        let parent = self.read_inode(dir)?;
        let new_links = self.inc_dir_links(parent.links_count())?;
        let ino = self.create_common(dir, name, FileType::Directory, attr, |fs, ino, inode| {
            fs.init_mapped(inode);
            inode.set_links_count(2);
            let mut d = FsDir {
                fs,
                ino,
                inode: inode.clone(),
                inode_dirty: true,
            };
            let r = dir::init(&mut d, ino, dir);
            *inode = d.inode;
            r
        })?;
        let mut parent = self.read_inode(dir)?;
        parent.set_links_count(new_links);
        self.write_inode(dir, &mut parent)?;
        Ok(ino)
    }

    /// The link count of a directory after gaining a subdirectory: past `LINK_MAX` it
    /// becomes 1 ("many", dir_nlink), and stays 1.
    fn inc_dir_links(&self, links: u16) -> Result<u16> {
        if links == 1 && self.sb.has_ro_compat(ro_compat::DIR_NLINK) {
            return Ok(1);
        }
        let n = links.saturating_add(1);
        // e2fsck counts up to LINK_MAX exactly and expects 1 only beyond it.
        if n > LINK_MAX {
            if self.sb.has_ro_compat(ro_compat::DIR_NLINK) {
                return Ok(1);
            }
            return Err(Ext4Error::TooManyLinks(
                "directory has too many subdirectories".into(),
            ));
        }
        Ok(n)
    }

    /// The link count of a directory after losing a subdirectory (1 stays 1: the real
    /// count is unknown).
    fn dec_dir_links(links: u16) -> u16 {
        if links <= 2 { links } else { links - 1 }
    }

    /// Create a symbolic link: fast (target in `i_block`) below 60 bytes, else one block.
    pub fn symlink(&mut self, dir: u32, name: &[u8], target: &[u8], attr: &NewAttr) -> Result<u32> {
        if target.is_empty() || target.len() >= self.sb.block_size as usize || target.len() > 4095 {
            return Err(Ext4Error::InvalidArgument(format!(
                "symlink target of {} bytes",
                target.len()
            )));
        }
        let mut a = attr.clone();
        a.perm = 0o777;
        let target = target.to_vec();
        self.create_common(dir, name, FileType::Symlink, &a, move |fs, ino, inode| {
            inode.set_size(target.len() as u64);
            if target.len() < 60 {
                let mut ib = [0u8; 60];
                ib.get_mut(..target.len())
                    .ok_or_else(|| Ext4Error::InvalidArgument("symlink".into()))?
                    .copy_from_slice(&target);
                inode.set_i_block(&ib);
                Ok(())
            } else {
                fs.init_mapped(inode);
                fs.write_file_data(ino, inode, 0, &target)
            }
        })
    }

    /// Add a hard link to a non-directory.
    pub fn link(&mut self, ino: u32, dir: u32, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        check_name(name)?;
        let (mut inode, ft) = self.read_live_inode(ino)?;
        if ft == FileType::Directory {
            return Err(Ext4Error::IsADirectory(format!(
                "cannot hard-link directory inode {ino}"
            )));
        }
        let n = inode.links_count();
        if n >= LINK_MAX {
            return Err(Ext4Error::TooManyLinks(format!("inode {ino}")));
        }
        let t = self.now();
        self.dir_add(dir, name, ino, ft, t)?;
        inode.set_links_count(n + 1);
        inode.set_time(TimeField::Ctime, t);
        self.write_inode(ino, &mut inode)
    }

    // ---- removing ----

    /// Free everything an inode owns (data, mapping metadata, xattr block); `inode` is
    /// updated (i_block, i_blocks) but not written.
    fn release_blocks(&mut self, ino: u32, inode: &mut Inode) -> Result<()> {
        let ft = inode.file_type();
        let mapped = match ft {
            Some(FileType::Regular | FileType::Directory) => true,
            Some(FileType::Symlink) => !is_fast_symlink(inode),
            _ => false,
        };
        if mapped && !inode.has_flag(iflags::INLINE_DATA) {
            self.with_map_rw(ino, inode, |ctx, fm| mapping::punch(ctx, fm, 0, u64::MAX))?;
        }
        let acl = inode.file_acl();
        if acl != 0 {
            self.release_xattr_block(acl)?;
            inode.set_file_acl(0);
            self.add_blocks(inode, -1)?;
        }
        Ok(())
    }

    /// Drop one reference to an xattr block: free it when it was the last one.
    fn release_xattr_block(&mut self, b: u64) -> Result<()> {
        let mut block = self.read_block(b)?;
        if crate::le::u32_at(&block, 0) != xattr::XATTR_MAGIC {
            return Err(Ext4Error::corrupt(format!("xattr block {b}"), "bad magic"));
        }
        let refs = xattr::block_refcount(&block);
        if refs > 1 {
            xattr::set_block_refcount(&mut block, refs - 1);
            let seed = self.sb.metadata_csum().then_some(self.sb.csum_seed);
            xattr::finish_block(&mut block, b, seed);
            self.cache_write(b, &block)
        } else {
            self.free_blocks(b, 1)
        }
    }

    /// Drop one link of a non-directory inode; frees it at zero.
    fn drop_link(&mut self, ino: u32, t: Timestamp) -> Result<()> {
        let (mut inode, _) = self.read_live_inode(ino)?;
        let n = inode.links_count().saturating_sub(1);
        if n == 0 {
            return self.free_inode(ino, inode, false);
        }
        inode.set_links_count(n);
        inode.set_time(TimeField::Ctime, t);
        self.write_inode(ino, &mut inode)
    }

    /// Free an inode and everything it owns. The slot keeps a dtime and zero links, which is
    /// what e2fsck expects of a deleted inode.
    fn free_inode(&mut self, ino: u32, mut inode: Inode, is_dir: bool) -> Result<()> {
        self.release_blocks(ino, &mut inode)?;
        // dtime below s_inodes_count would look like an orphan-list link to e2fsck.
        let dt = self
            .now()
            .secs
            .clamp(i64::from(self.sb.inodes_count) + 1, i64::from(u32::MAX));
        inode.set_dtime(dt as u32);
        inode.set_links_count(0);
        inode.set_size(0);
        inode.set_i_block(&[0u8; 60]);
        inode.set_flags(0);
        inode.set_blocks_512(0, self.huge_file(), self.sb.block_size)?;
        // Clear the in-inode xattr area (after i_extra_isize).
        let start = 128 + usize::from(inode.extra_isize());
        if let Some(rest) = inode.as_bytes_mut().get_mut(start..) {
            rest.fill(0);
        }
        self.write_inode(ino, &mut inode)?;
        self.free_inode_bit(ino, is_dir)
    }

    /// Remove a non-directory entry; the inode is freed when its last link goes.
    pub fn unlink(&mut self, dir: u32, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        let ino = self
            .lookup(dir, name)?
            .ok_or_else(|| Ext4Error::NotFound(name_str(name)))?;
        let (_, ft) = self.read_live_inode(ino)?;
        if ft == FileType::Directory {
            return Err(Ext4Error::IsADirectory(name_str(name)));
        }
        let t = self.now();
        self.dir_remove(dir, name, t)?;
        self.drop_link(ino, t)
    }

    /// Remove an empty directory.
    pub fn rmdir(&mut self, dir: u32, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        if name == b"." || name == b".." {
            return Err(Ext4Error::InvalidArgument("cannot remove . or ..".into()));
        }
        let ino = self
            .lookup(dir, name)?
            .ok_or_else(|| Ext4Error::NotFound(name_str(name)))?;
        let (inode, ft) = self.read_live_inode(ino)?;
        if ft != FileType::Directory {
            return Err(Ext4Error::NotADirectory(name_str(name)));
        }
        {
            let mut d = self.ro_dir(ino)?;
            if !d.is_empty()? {
                return Err(Ext4Error::NotEmpty(name_str(name)));
            }
        }
        let t = self.now();
        let (_, mut parent) = self.dir_remove(dir, name, t)?;
        parent.set_links_count(Self::dec_dir_links(parent.links_count()));
        self.write_inode(dir, &mut parent)?;
        self.free_inode(ino, inode, true)
    }

    /// Remove `name` from `dir` with everything below it.
    pub fn remove_tree(&mut self, dir: u32, name: &[u8]) -> Result<()> {
        self.check_writable()?;
        let ino = self
            .lookup(dir, name)?
            .ok_or_else(|| Ext4Error::NotFound(name_str(name)))?;
        let (_, ft) = self.read_live_inode(ino)?;
        if ft != FileType::Directory {
            return self.unlink(dir, name);
        }
        // Walk (and check) the whole subtree before changing anything.
        let (dirs, links) = self.collect_subtree(ino)?;
        let t = self.now();
        // Unlink the top entry first; the subtree is then unreachable and is freed without
        // editing its directories entry by entry (they are freed whole).
        let (_, mut parent) = self.dir_remove(dir, name, t)?;
        parent.set_links_count(Self::dec_dir_links(parent.links_count()));
        self.write_inode(dir, &mut parent)?;
        self.free_subtree(&dirs, &links, t)
    }

    /// Walk the tree below directory `top` without changing anything: the directories in
    /// post-order (children before parents) and one inode number per non-directory entry.
    /// Damage (a subdirectory whose ".." is not its parent, a directory reached twice, a
    /// tree deeper than `MAX_DEPTH`) is reported before anything is freed.
    fn collect_subtree(&self, top: u32) -> Result<(Vec<u32>, Vec<u32>)> {
        let mut dirs = Vec::new();
        let mut links = Vec::new();
        let mut seen = std::collections::HashSet::new();
        seen.insert(top);
        let mut stack: Vec<(u32, bool)> = vec![(top, false)];
        while let Some((d, expanded)) = stack.pop() {
            if expanded {
                dirs.push(d);
                continue;
            }
            if stack.len() > MAX_DEPTH {
                return Err(Ext4Error::corrupt(
                    format!("directory inode {d}"),
                    "directory tree deeper than 4096 levels",
                ));
            }
            stack.push((d, true));
            let entries = self.ro_dir(d)?.list()?;
            for e in entries {
                let (_, ft) = self.read_live_inode(e.ino)?;
                if ft != FileType::Directory {
                    links.push(e.ino);
                    continue;
                }
                // A subdirectory must name us as its parent and be reached once: anything
                // else is damage, and following it would free directories still linked
                // elsewhere (the root, another part of the tree).
                let parent = self.ro_dir(e.ino)?.parent()?;
                if parent != d || e.ino == ROOT_INO || !seen.insert(e.ino) {
                    return Err(Ext4Error::corrupt(
                        format!("directory inode {d}"),
                        format!(
                            "entry {} leads to directory {} whose parent is {parent}",
                            name_str(&e.name),
                            e.ino
                        ),
                    ));
                }
                stack.push((e.ino, false));
            }
        }
        Ok((dirs, links))
    }

    /// Free what [`Ext4Fs::collect_subtree`] found: drop every file link, then free the
    /// directories (their blocks go whole; their entries need no editing).
    fn free_subtree(&mut self, dirs: &[u32], links: &[u32], t: Timestamp) -> Result<()> {
        for &ino in links {
            self.drop_link(ino, t)?;
        }
        for &d in dirs {
            let (inode, _) = self.read_live_inode(d)?;
            self.free_inode(d, inode, true)?;
        }
        Ok(())
    }

    /// Rename `from` in `from_dir` to `to` in `to_dir`, replacing a non-directory or an empty
    /// directory target; fixes ".." and the link counts.
    pub fn rename(&mut self, from_dir: u32, from: &[u8], to_dir: u32, to: &[u8]) -> Result<()> {
        self.check_writable()?;
        check_name(to)?;
        if from == b"." || from == b".." {
            return Err(Ext4Error::InvalidArgument("cannot rename . or ..".into()));
        }
        let src = self
            .lookup(from_dir, from)?
            .ok_or_else(|| Ext4Error::NotFound(name_str(from)))?;
        let (_, src_ft) = self.read_live_inode(src)?;
        let src_is_dir = src_ft == FileType::Directory;
        if from_dir == to_dir && from == to {
            return Ok(());
        }
        self.ro_dir(to_dir)?;
        if src_is_dir && from_dir != to_dir {
            // Moving a directory below itself would detach a loop.
            let mut cur = to_dir;
            for _ in 0..MAX_DEPTH {
                if cur == src {
                    return Err(Ext4Error::InvalidArgument(
                        "cannot move a directory into itself".into(),
                    ));
                }
                if cur == ROOT_INO {
                    break;
                }
                let mut d = self.ro_dir(cur)?;
                cur = d.parent()?;
            }
        }
        let target = self.lookup(to_dir, to)?;
        let t = self.now();
        if let Some(tino) = target {
            if tino == src {
                return Ok(());
            }
            let (_, tft) = self.read_live_inode(tino)?;
            let t_is_dir = tft == FileType::Directory;
            if src_is_dir && !t_is_dir {
                return Err(Ext4Error::NotADirectory(name_str(to)));
            }
            if !src_is_dir && t_is_dir {
                return Err(Ext4Error::IsADirectory(name_str(to)));
            }
            if t_is_dir {
                let mut d = self.ro_dir(tino)?;
                if !d.is_empty()? {
                    return Err(Ext4Error::NotEmpty(name_str(to)));
                }
            }
            // Point the existing entry at the source in place (the kernel's ext4_setent):
            // no new record, so it cannot fail for lack of space.
            {
                let mut d = self.rw_dir(to_dir)?;
                let r = dir::replace(&mut d, to, src, src_ft.dirent_type());
                let mut dinode = d.finish()?;
                r?;
                if t_is_dir {
                    dinode.set_links_count(Self::dec_dir_links(dinode.links_count()));
                }
                self.touch_dir(to_dir, &mut dinode, t)?;
            }
            if t_is_dir {
                let (ti, _) = self.read_live_inode(tino)?;
                self.free_inode(tino, ti, true)?;
            } else {
                self.drop_link(tino, t)?;
            }
        } else {
            self.dir_add(to_dir, to, src, src_ft, t)?;
        }
        self.dir_remove(from_dir, from, t)?;
        let (mut sinode, _) = self.read_live_inode(src)?;
        sinode.set_time(TimeField::Ctime, t);
        self.write_inode(src, &mut sinode)?;
        if src_is_dir && from_dir != to_dir {
            {
                let mut d = self.rw_dir(src)?;
                let r = dir::set_parent(&mut d, to_dir);
                d.finish()?;
                r?;
            }
            let mut fp = self.read_inode(from_dir)?;
            fp.set_links_count(Self::dec_dir_links(fp.links_count()));
            self.write_inode(from_dir, &mut fp)?;
            let mut tp = self.read_inode(to_dir)?;
            let n = self.inc_dir_links(tp.links_count())?;
            tp.set_links_count(n);
            self.write_inode(to_dir, &mut tp)?;
        }
        Ok(())
    }

    // ---- file contents ----

    /// Write `data` at `offset` into the blocks of `inode` (allocating as needed), growing
    /// `i_size`. The inode is updated, not written.
    fn write_file_data(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if inode.has_flag(iflags::INLINE_DATA) {
            self.uninline(ino, inode)?;
        }
        let bs = u64::from(self.sb.block_size);
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Ext4Error::InvalidArgument("write beyond 2^64".into()))?;
        let first = offset / bs;
        let last = (end - 1) / bs;
        let goal = self.goal_for(ino);
        let runs = self.with_map_rw(ino, inode, |ctx, fm| {
            mapping::allocate(ctx, fm, first, last - first + 1, goal, AllocMode::Write)
        })?;
        let is_new = |l: u64| {
            runs.iter()
                .any(|r| r.must_write && r.lblk <= l && l < r.lblk.saturating_add(r.len))
        };
        let mut lblk = first;
        let mut buf = vec![0u8; bs as usize];
        // Bounded: lblk advances every iteration until it passes `last`.
        while lblk <= last {
            let m = self.with_map_ro(ino, inode, |ctx, fm| mapping::map(ctx, fm, lblk))?;
            let Some(p0) = m.pblk else {
                return Err(Ext4Error::corrupt(
                    format!("inode {ino}"),
                    format!("block {lblk} unmapped after allocation"),
                ));
            };
            let run_end = m.lblk.saturating_add(m.len).min(last + 1).max(lblk + 1);
            while lblk < run_end {
                let p = p0.saturating_add(lblk - m.lblk);
                let bstart = lblk * bs;
                let from = offset.max(bstart);
                let to = end.min(bstart + bs);
                let src = data
                    .get((from - offset) as usize..(to - offset) as usize)
                    .ok_or_else(|| Ext4Error::InvalidArgument("write span".into()))?;
                if to - from == bs {
                    self.write_data_block(p, src)?;
                } else {
                    if is_new(lblk) || m.uninit {
                        buf.fill(0);
                    } else {
                        self.read_data(p, &mut buf)?;
                    }
                    let o = (from - bstart) as usize;
                    buf.get_mut(o..o + src.len())
                        .ok_or_else(|| Ext4Error::InvalidArgument("write span".into()))?
                        .copy_from_slice(src);
                    let b = buf.clone();
                    self.write_data_block(p, &b)?;
                }
                lblk += 1;
            }
        }
        if end > inode.size() {
            inode.set_size(end);
        }
        Ok(())
    }

    /// Write `data` at `offset` into a regular file, extending it; holes stay holes.
    pub fn write(&mut self, ino: u32, offset: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        let (mut inode, ft) = self.read_live_inode(ino)?;
        match ft {
            FileType::Regular => {}
            FileType::Directory => return Err(Ext4Error::IsADirectory(format!("inode {ino}"))),
            _ => {
                return Err(Ext4Error::InvalidArgument(format!(
                    "inode {ino} is not a regular file"
                )));
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        let r = self.write_file_data(ino, &mut inode, offset, data);
        let t = self.now();
        inode.set_time(TimeField::Mtime, t);
        inode.set_time(TimeField::Ctime, t);
        // Write the inode even on failure: blocks mapped so far are accounted in it.
        self.write_inode(ino, &mut inode)?;
        r
    }

    /// Set the size of a regular file: shrinking frees the blocks past the end (and zeroes the
    /// tail of the last block), growing leaves a hole.
    pub fn truncate(&mut self, ino: u32, size: u64) -> Result<()> {
        self.check_writable()?;
        let (mut inode, ft) = self.read_live_inode(ino)?;
        match ft {
            FileType::Regular => {}
            FileType::Directory => return Err(Ext4Error::IsADirectory(format!("inode {ino}"))),
            _ => {
                return Err(Ext4Error::InvalidArgument(format!(
                    "inode {ino} is not a regular file"
                )));
            }
        }
        if inode.has_flag(iflags::INLINE_DATA) {
            self.uninline(ino, &mut inode)?;
        }
        let bs = u64::from(self.sb.block_size);
        let max = mapping::max_lblk(MapKind::from_flags(inode.flags()), self.sb.block_size)
            .saturating_mul(bs);
        if size > max {
            return Err(Ext4Error::InvalidArgument(format!(
                "size {size} beyond the largest file"
            )));
        }
        let old = inode.size();
        if size < old {
            let keep = size.div_ceil(bs);
            let r = self.with_map_rw(ino, &mut inode, |ctx, fm| {
                mapping::punch(ctx, fm, keep, u64::MAX)
            });
            if let Err(e) = r {
                self.write_inode(ino, &mut inode)?;
                return Err(e);
            }
            // Bytes past the new end of the last block must read as zero if the file grows
            // again later.
            if !size.is_multiple_of(bs) {
                let lblk = size / bs;
                let m = self.with_map_ro(ino, &inode, |ctx, fm| mapping::map(ctx, fm, lblk))?;
                if let (Some(p), false) = (m.pblk, m.uninit) {
                    let mut buf = vec![0u8; bs as usize];
                    self.read_data(p, &mut buf)?;
                    if let Some(tail) = buf.get_mut((size % bs) as usize..) {
                        tail.fill(0);
                    }
                    self.write_data_block(p, &buf)?;
                }
            }
        }
        inode.set_size(size);
        let t = self.now();
        inode.set_time(TimeField::Mtime, t);
        inode.set_time(TimeField::Ctime, t);
        self.write_inode(ino, &mut inode)
    }

    /// Change permissions, owner and times; ctime becomes `attr.ctime` or now.
    pub fn set_attr(&mut self, ino: u32, attr: &SetAttr) -> Result<()> {
        self.check_writable()?;
        let (mut inode, _) = self.read_live_inode(ino)?;
        if let Some(p) = attr.perm {
            inode.set_mode((inode.mode() & 0o170000) | (p & 0o7777));
        }
        if let Some(u) = attr.uid {
            inode.set_uid(u);
        }
        if let Some(g) = attr.gid {
            inode.set_gid(g);
        }
        if let Some(a) = attr.atime {
            inode.set_time(TimeField::Atime, a);
        }
        if let Some(m) = attr.mtime {
            inode.set_time(TimeField::Mtime, m);
        }
        inode.set_time(TimeField::Ctime, attr.ctime.unwrap_or_else(|| self.now()));
        self.write_inode(ino, &mut inode)
    }

    // ---- extended attributes ----

    /// Capacity of the in-inode xattr area of `inode` (0 for 128-byte inodes).
    fn ibody_capacity(&self, inode: &Inode) -> usize {
        let isz = usize::from(self.sb.inode_size);
        if isz <= 128 {
            return 0;
        }
        isz.saturating_sub(128 + usize::from(inode.extra_isize()))
    }

    /// The attributes of an inode: in-inode ones first, then the block's.
    fn load_xattrs(&self, ino: u32, inode: &Inode) -> Result<Vec<xattr::Xattr>> {
        let mut all = Vec::new();
        if self.ibody_capacity(inode) > 0 {
            let start = 128 + usize::from(inode.extra_isize());
            let area = inode.as_bytes().get(start..).unwrap_or(&[]);
            all = xattr::parse_ibody(area, ino)?;
        }
        let b = inode.file_acl();
        if b != 0 {
            let block = self.read_block(b)?;
            let seed = self.sb.metadata_csum().then_some(self.sb.csum_seed);
            all.extend(xattr::parse_block(&block, b, seed)?);
        }
        Ok(all)
    }

    /// Lay `attrs` out in the inode and (if needed) one xattr block, keeping `i_file_acl`,
    /// `i_blocks` and the block's reference count right. A block shared with other inodes
    /// (h_refcount > 1) is never modified in place: we drop our reference and write a copy.
    /// `inode` is updated, not written.
    fn store_xattrs(&mut self, ino: u32, inode: &mut Inode, attrs: &[xattr::Xattr]) -> Result<()> {
        let cap = self.ibody_capacity(inode);
        let bs = self.sb.block_size as usize;
        let (ibody, block) = xattr::layout(attrs, cap, bs)?;
        if cap > 0 {
            let start = 128 + usize::from(inode.extra_isize());
            if let Some(dst) = inode.as_bytes_mut().get_mut(start..start + cap) {
                dst.copy_from_slice(&ibody);
            }
        }
        let seed = self.sb.metadata_csum().then_some(self.sb.csum_seed);
        let old = inode.file_acl();
        match block {
            None => {
                if old != 0 {
                    self.release_xattr_block(old)?;
                    inode.set_file_acl(0);
                    self.add_blocks(inode, -1)?;
                }
            }
            Some(mut b) => {
                let reuse = old != 0 && xattr::block_refcount(&self.read_block(old)?) == 1;
                if reuse {
                    xattr::finish_block(&mut b, old, seed);
                    self.cache_write(old, &b)?;
                } else {
                    let goal = self.goal_for(ino);
                    let (nb, _) = self.alloc_blocks(goal, 1)?;
                    xattr::finish_block(&mut b, nb, seed);
                    self.cache_write(nb, &b)?;
                    if old != 0 {
                        self.release_xattr_block(old)?;
                    } else {
                        self.add_blocks(inode, 1)?;
                    }
                    inode.set_file_acl(nb);
                }
            }
        }
        Ok(())
    }

    fn check_xattr_supported(&self) -> Result<()> {
        if !self.sb.has_compat(compat::EXT_ATTR) {
            return Err(Ext4Error::Unsupported(
                "the filesystem has no ext_attr feature".into(),
            ));
        }
        Ok(())
    }

    /// The value of attribute `name` ("user.x", "security.selinux", "trusted.x",
    /// "system.posix_acl_access"…). POSIX ACLs are returned in the VFS format.
    pub fn get_xattr(&self, ino: u32, name: &str) -> Result<Option<Vec<u8>>> {
        let (inode, _) = self.read_live_inode(ino)?;
        let attrs = self.load_xattrs(ino, &inode)?;
        match xattr::get(&attrs, name.as_bytes()) {
            None => Ok(None),
            Some(a) if a.value_inum != 0 => Err(Ext4Error::Unsupported(format!(
                "xattr {name} of inode {ino} is stored in inode {} (ea_inode)",
                a.value_inum
            ))),
            Some(a) if matches!(a.index, 2 | 3) => Ok(Some(xattr::acl_from_disk(&a.value)?)),
            Some(a) => Ok(Some(a.value.clone())),
        }
    }

    /// Every attribute with its value (system.data, the inline-data store, is not listed).
    pub fn list_xattrs(&self, ino: u32) -> Result<Vec<(String, Vec<u8>)>> {
        let (inode, _) = self.read_live_inode(ino)?;
        let attrs = self.load_xattrs(ino, &inode)?;
        let mut out = Vec::with_capacity(attrs.len());
        for a in attrs {
            if a.index == 7 && a.name == b"data" {
                continue;
            }
            let name = String::from_utf8_lossy(&a.full_name()).into_owned();
            let value = if a.value_inum != 0 {
                return Err(Ext4Error::Unsupported(format!(
                    "xattr {name} of inode {ino} is stored in inode {} (ea_inode)",
                    a.value_inum
                )));
            } else if matches!(a.index, 2 | 3) {
                xattr::acl_from_disk(&a.value)?
            } else {
                a.value
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// Set (create or replace) an attribute.
    pub fn set_xattr(&mut self, ino: u32, name: &str, value: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.check_xattr_supported()?;
        if name == "system.data" {
            return Err(Ext4Error::InvalidArgument(
                "system.data is reserved for inline data".into(),
            ));
        }
        let (mut inode, _) = self.read_live_inode(ino)?;
        let mut attrs = self.load_xattrs(ino, &inode)?;
        let (index, _) = xattr::split_name(name.as_bytes())?;
        let disk = if matches!(index, 2 | 3) {
            xattr::acl_to_disk(value)?
        } else {
            value.to_vec()
        };
        xattr::set(&mut attrs, name.as_bytes(), &disk)?;
        self.store_xattrs(ino, &mut inode, &attrs)?;
        inode.set_time(TimeField::Ctime, self.now());
        self.write_inode(ino, &mut inode)
    }

    /// Remove an attribute (`NotFound` when absent).
    pub fn remove_xattr(&mut self, ino: u32, name: &str) -> Result<()> {
        self.check_writable()?;
        if name == "system.data" {
            return Err(Ext4Error::InvalidArgument(
                "system.data is reserved for inline data".into(),
            ));
        }
        let (mut inode, _) = self.read_live_inode(ino)?;
        let mut attrs = self.load_xattrs(ino, &inode)?;
        xattr::remove(&mut attrs, name.as_bytes())?;
        self.store_xattrs(ino, &mut inode, &attrs)?;
        inode.set_time(TimeField::Ctime, self.now());
        self.write_inode(ino, &mut inode)
    }

    // ---- inline data ----

    /// The contents of an inline-data inode: `i_block` then the `system.data` value.
    fn inline_content(&self, ino: u32, inode: &Inode) -> Result<Vec<u8>> {
        let attrs = self.load_xattrs(ino, inode)?;
        let sd = xattr::get(&attrs, b"system.data")
            .map(|a| a.value.clone())
            .unwrap_or_default();
        crate::inline::read(ino, &inode.i_block(), &sd, inode.size())
    }

    /// Turn an inline-data regular file into a block-mapped one (extents when the filesystem
    /// has them), so that ordinary writes and truncates apply. `inode` is updated.
    fn uninline(&mut self, ino: u32, inode: &mut Inode) -> Result<()> {
        let data = self.inline_content(ino, inode)?;
        let to = if self.use_extents() {
            MapKind::Extents
        } else {
            MapKind::BlockMap
        };
        let goal = self.goal_for(ino);
        self.with_map_rw(ino, inode, |ctx, fm| {
            crate::inline::convert_to_blocks(ctx, fm, &data, to, goal).map(|_| ())
        })?;
        let mut f = inode.flags() & !iflags::INLINE_DATA;
        if to == MapKind::Extents {
            f |= iflags::EXTENTS;
        }
        inode.set_flags(f);
        let mut attrs = self.load_xattrs(ino, inode)?;
        let _ = xattr::remove(&mut attrs, b"system.data");
        self.store_xattrs(ino, inode, &attrs)
    }

    // ---- flush ----

    /// Write every dirty structure (bitmaps with their checksums, group descriptors,
    /// superblock counters, cached metadata blocks), then flush the device. Does nothing
    /// when nothing changed.
    pub fn flush(&mut self) -> Result<()> {
        if !self.dirty && !self.groups.is_dirty() {
            return Ok(());
        }
        self.check_writable()?;
        let bitmaps = self.groups.take_dirty_bitmaps(&self.sb);
        for (b, data) in bitmaps {
            self.cache_write(b, &data)?;
        }
        let descs = {
            let sb = &self.sb;
            let mut rd = |b: u64| read_cached(&self.dev, &self.cache, sb, b);
            self.groups.take_dirty_desc_blocks(sb, &mut rd)?
        };
        for (b, data) in descs {
            self.cache_write(b, &data)?;
        }
        // Write the cached blocks in disk order.
        let bs = u64::from(self.sb.block_size);
        let mut dirty: Vec<u64> = {
            let c = self.cache_mut();
            c.map
                .iter()
                .filter(|(_, e)| e.dirty)
                .map(|(&b, _)| b)
                .collect()
        };
        dirty.sort_unstable();
        for b in dirty {
            let c = self.cache.get_mut().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = c.map.get_mut(&b) {
                self.dev.write_at(&e.data, b * bs)?;
                e.dirty = false;
                c.clean += 1;
            }
        }
        // The superblock last: its counters are the sums of the descriptors.
        let free_b = self.groups.total_free_blocks();
        let free_i = self.groups.total_free_inodes();
        self.sb.set_free_counts(free_b, free_i);
        let bytes = self.sb.to_bytes();
        self.dev.write_at(&bytes, SUPERBLOCK_OFFSET)?;
        // Drop any cached copy of the block holding the superblock.
        let sb_block = SUPERBLOCK_OFFSET / bs;
        let c = self.cache_mut();
        c.map.remove(&sb_block);
        c.trim();
        self.dev.flush()?;
        self.dirty = false;
        Ok(())
    }
}

/// A symlink whose target lives in `i_block`: e2fsprogs' rule (size below 60 bytes, not
/// inline data).
fn is_fast_symlink(inode: &Inode) -> bool {
    inode.file_type() == Some(FileType::Symlink)
        && !inode.has_flag(iflags::INLINE_DATA)
        && inode.size() > 0
        && inode.size() < 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4fs_is_send_and_sync() {
        // Readers share one Ext4Fs across rayon threads (reads take &self).
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ext4Fs<imgscrub_disk::MemDev>>();
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name(b"ok").is_ok());
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(matches!(
                check_name(bad),
                Err(Ext4Error::InvalidArgument(_))
            ));
        }
        assert!(matches!(
            check_name(&[b'a'; 256]),
            Err(Ext4Error::NameTooLong(256))
        ));
    }

    #[test]
    fn garbage_devices_are_refused_without_panicking() {
        for len in [0usize, 1024, 2048, 64 * 1024] {
            let dev = imgscrub_disk::MemDev::zeroed(len);
            assert!(Ext4Fs::open(dev, OpenOptions::default()).is_err());
        }
    }
}
