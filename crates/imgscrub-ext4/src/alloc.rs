//! Block and inode allocation (goal-directed, flex_bg aware), free counts. Owner: core.
//!
//! [`Groups`] keeps every group descriptor and the bitmaps loaded so far in memory, with
//! dirty flags; `Ext4Fs::flush` writes them back once. The bitmaps are the truth: we never
//! hand out a block whose bit is set, and the superblock's backups, descriptor tables,
//! bitmaps, inode tables and journal all have their bits set on disk (or, for a
//! BLOCK_UNINIT group, in the bitmap we synthesize for it).

use crate::bitmap::Bitmap;
use crate::group_desc::{
    BG_BLOCK_UNINIT, BG_INODE_UNINIT, GroupDesc, desc_block_location, group_base_metadata,
};
use crate::superblock::Superblock;
use crate::{Ext4Error, Result};

/// Reads one filesystem block (core's cache or the device).
pub type ReadBlock<'a> = dyn FnMut(u64) -> Result<Vec<u8>> + 'a;

/// The group descriptors and the loaded bitmaps.
#[derive(Debug)]
pub struct Groups {
    descs: Vec<GroupDesc>,
    desc_dirty: Vec<bool>,
    block_bitmaps: Vec<Option<Bitmap>>,
    inode_bitmaps: Vec<Option<Bitmap>>,
}

impl Groups {
    /// Read and verify every group descriptor.
    pub fn load(sb: &Superblock, read: &mut ReadBlock<'_>) -> Result<Self> {
        let n = sb.group_count as usize;
        let ds = usize::from(sb.desc_size.max(32));
        let dpb = sb.descs_per_block().max(1);
        let wide = sb.wide_desc();
        let mut descs = Vec::with_capacity(n);
        for i in 0..sb.desc_blocks() {
            let loc = desc_block_location(sb, i);
            if loc >= sb.blocks_count {
                return Err(Ext4Error::corrupt(
                    format!("group descriptor block {i}"),
                    format!("located at block {loc}, beyond the end of the filesystem"),
                ));
            }
            let block = read(loc)?;
            for j in 0..dpb {
                if descs.len() >= n {
                    break;
                }
                let off = (j as usize) * ds;
                let raw = block
                    .get(off..off + ds)
                    .ok_or_else(|| Ext4Error::corrupt("group descriptor table", "short block"))?;
                descs.push(GroupDesc::from_bytes(raw, wide));
            }
        }
        let itable_blocks = itable_blocks(sb);
        for (g, d) in descs.iter().enumerate() {
            let g = g as u32;
            d.verify(sb, g)?;
            let first = u64::from(sb.first_data_block);
            for (what, b, len) in [
                ("block bitmap", d.block_bitmap(), 1),
                ("inode bitmap", d.inode_bitmap(), 1),
                ("inode table", d.inode_table(), itable_blocks),
            ] {
                if b < first || b.saturating_add(len) > sb.blocks_count {
                    return Err(Ext4Error::corrupt(
                        format!("group descriptor {g}"),
                        format!("{what} at block {b} lies outside the filesystem"),
                    ));
                }
            }
            if d.free_blocks() > sb.blocks_in_group(g) || d.free_inodes() > sb.inodes_per_group {
                return Err(Ext4Error::corrupt(
                    format!("group descriptor {g}"),
                    format!(
                        "free counts {} blocks / {} inodes exceed the group size",
                        d.free_blocks(),
                        d.free_inodes()
                    ),
                ));
            }
        }
        Ok(Groups {
            desc_dirty: vec![false; descs.len()],
            block_bitmaps: vec![None; descs.len()],
            inode_bitmaps: vec![None; descs.len()],
            descs,
        })
    }

    /// Number of groups.
    pub fn len(&self) -> u32 {
        self.descs.len() as u32
    }

    /// True when there are no groups.
    pub fn is_empty(&self) -> bool {
        self.descs.is_empty()
    }

    /// Descriptor of group `g`.
    pub fn desc(&self, g: u32) -> Result<&GroupDesc> {
        self.descs
            .get(g as usize)
            .ok_or_else(|| Ext4Error::corrupt(format!("group {g}"), "no such block group"))
    }

    fn desc_mut(&mut self, g: u32) -> Result<&mut GroupDesc> {
        if let Some(d) = self.desc_dirty.get_mut(g as usize) {
            *d = true;
        }
        self.descs
            .get_mut(g as usize)
            .ok_or_else(|| Ext4Error::corrupt(format!("group {g}"), "no such block group"))
    }

    /// Sum of the free block counts of all groups.
    pub fn total_free_blocks(&self) -> u64 {
        self.descs.iter().map(|d| u64::from(d.free_blocks())).sum()
    }

    /// Sum of the free inode counts of all groups.
    pub fn total_free_inodes(&self) -> u32 {
        self.descs
            .iter()
            .fold(0u32, |a, d| a.saturating_add(d.free_inodes()))
    }

    /// The block bitmap of group `g`, loaded (and verified) on first use. For a BLOCK_UNINIT
    /// group it is computed: every block free except the group's own metadata.
    pub fn block_bitmap(
        &mut self,
        sb: &Superblock,
        g: u32,
        read: &mut ReadBlock<'_>,
    ) -> Result<&mut Bitmap> {
        let loaded = match self.block_bitmaps.get(g as usize) {
            None => return Err(no_group(g)),
            Some(Some(_)) => None,
            Some(None) => Some(self.read_block_bitmap(sb, g, read)?),
        };
        fill_slot(&mut self.block_bitmaps, g, loaded)
    }

    /// Load the block bitmap of group `g` without caching it (for read-only scans).
    pub fn read_block_bitmap(
        &self,
        sb: &Superblock,
        g: u32,
        read: &mut ReadBlock<'_>,
    ) -> Result<Bitmap> {
        if let Some(Some(b)) = self.block_bitmaps.get(g as usize) {
            return Ok(b.clone());
        }
        let d = self.desc(g)?;
        let len = sb.blocks_in_group(g);
        if sb.has_group_desc_csum() && d.flags() & BG_BLOCK_UNINIT != 0 {
            return Ok(self.synth_block_bitmap(sb, g));
        }
        let raw = read(d.block_bitmap())?;
        if sb.metadata_csum() {
            let nbytes = (sb.clusters_per_group / 8) as usize;
            let bm = Bitmap::from_block(raw.clone(), len);
            let computed = bm.checksum(sb.csum_seed, nbytes) & d.bitmap_csum_mask();
            let stored = d.block_bitmap_csum();
            if computed != stored {
                return Err(Ext4Error::Checksum {
                    structure: format!("block bitmap of group {g}"),
                    stored,
                    computed,
                });
            }
        }
        let mut bm = Bitmap::from_block(raw, len);
        // The last group's padding must read as used even if the disk copy lacks it.
        bm.set_padding();
        bm.dirty = false;
        Ok(bm)
    }

    /// The bitmap of a BLOCK_UNINIT group: the superblock backup and descriptor copies of
    /// the group, plus any group's bitmaps and inode table that flex_bg placed inside it.
    fn synth_block_bitmap(&self, sb: &Superblock, g: u32) -> Bitmap {
        let len = sb.blocks_in_group(g);
        let mut bm = Bitmap::new_uninit(sb.block_size as usize, len);
        let start = sb.group_first_block(g);
        let end = start + u64::from(len);
        let mut mark = |b: u64, n: u64| {
            let mut k = 0;
            while k < n {
                let blk = b.saturating_add(k);
                if blk >= start && blk < end {
                    bm.set((blk - start) as u32, true);
                }
                k += 1;
            }
        };
        for (b, n) in group_base_metadata(sb, g) {
            mark(b, n);
        }
        let it = itable_blocks(sb);
        for d in &self.descs {
            // Only descriptors whose metadata can fall inside this group matter.
            for (b, n) in [
                (d.block_bitmap(), 1),
                (d.inode_bitmap(), 1),
                (d.inode_table(), it),
            ] {
                if b < end && b.saturating_add(n) > start {
                    mark(b, n);
                }
            }
        }
        bm.dirty = false;
        bm
    }

    /// The inode bitmap of group `g` (INODE_UNINIT: all free).
    pub fn inode_bitmap(
        &mut self,
        sb: &Superblock,
        g: u32,
        read: &mut ReadBlock<'_>,
    ) -> Result<&mut Bitmap> {
        let loaded = match self.inode_bitmaps.get(g as usize) {
            None => return Err(no_group(g)),
            Some(Some(_)) => None,
            Some(None) => Some(self.read_inode_bitmap(sb, g, read)?),
        };
        fill_slot(&mut self.inode_bitmaps, g, loaded)
    }

    /// Load the inode bitmap of group `g` without caching it.
    pub fn read_inode_bitmap(
        &self,
        sb: &Superblock,
        g: u32,
        read: &mut ReadBlock<'_>,
    ) -> Result<Bitmap> {
        if let Some(Some(b)) = self.inode_bitmaps.get(g as usize) {
            return Ok(b.clone());
        }
        let d = self.desc(g)?;
        if sb.has_group_desc_csum() && d.flags() & BG_INODE_UNINIT != 0 {
            let mut bm = Bitmap::new_uninit(sb.block_size as usize, sb.inodes_per_group);
            bm.dirty = false;
            return Ok(bm);
        }
        let raw = read(d.inode_bitmap())?;
        let bm = Bitmap::from_block(raw, sb.inodes_per_group);
        if sb.metadata_csum() {
            let nbytes = (sb.inodes_per_group / 8) as usize;
            let computed = bm.checksum(sb.csum_seed, nbytes) & d.bitmap_csum_mask();
            let stored = d.inode_bitmap_csum();
            if computed != stored {
                return Err(Ext4Error::Checksum {
                    structure: format!("inode bitmap of group {g}"),
                    stored,
                    computed,
                });
            }
        }
        let mut bm = bm;
        bm.set_padding();
        bm.dirty = false;
        Ok(bm)
    }

    /// Allocate up to `max` contiguous blocks as close to `goal` as possible: first from the
    /// goal onwards in its group, then the following groups (wrapping), then the start of the
    /// goal's group. Returns `(first, count)`.
    pub fn alloc_blocks(
        &mut self,
        sb: &Superblock,
        goal: u64,
        max: u32,
        read: &mut ReadBlock<'_>,
    ) -> Result<(u64, u32)> {
        let max = max.max(1);
        let first = u64::from(sb.first_data_block);
        let goal = if goal < first || goal >= sb.blocks_count {
            first
        } else {
            goal
        };
        let n = self.len();
        let g0 = sb.group_of_block(goal).min(n.saturating_sub(1));
        // k == n revisits the goal's group from its start.
        for k in 0..=n {
            let g = if k == n { g0 } else { (g0 + k) % n.max(1) };
            if self.desc(g)?.free_blocks() == 0 {
                continue;
            }
            let gstart = sb.group_first_block(g);
            let from = if k == 0 { (goal - gstart) as u32 } else { 0 };
            let bm = self.block_bitmap(sb, g, read)?;
            let Some(i) = bm.find_free(from, bm.len()) else {
                continue;
            };
            let run = bm.free_run(i, max);
            for j in i..i + run {
                bm.set(j, true);
            }
            let d = self.desc_mut(g)?;
            d.set_free_blocks(d.free_blocks().saturating_sub(run));
            d.set_flags(d.flags() & !BG_BLOCK_UNINIT);
            return Ok((gstart + u64::from(i), run));
        }
        Err(Ext4Error::NoSpace("no free blocks"))
    }

    /// Mark `count` blocks from `start` free. Freeing a block that is already free, or a
    /// block outside the filesystem, is corruption (a double free would make two files share
    /// a block later).
    pub fn free_blocks(
        &mut self,
        sb: &Superblock,
        start: u64,
        count: u64,
        read: &mut ReadBlock<'_>,
    ) -> Result<()> {
        let end = start.checked_add(count).filter(|&e| e <= sb.blocks_count);
        let Some(end) = end.filter(|_| start >= u64::from(sb.first_data_block)) else {
            return Err(Ext4Error::corrupt(
                "block allocation",
                format!("freeing blocks {start}+{count} outside the filesystem"),
            ));
        };
        let mut b = start;
        while b < end {
            let g = sb.group_of_block(b);
            let gstart = sb.group_first_block(g);
            let gend = (gstart + u64::from(sb.blocks_in_group(g))).min(end);
            let bm = self.block_bitmap(sb, g, read)?;
            let mut freed = 0u32;
            for blk in b..gend {
                if !bm.set((blk - gstart) as u32, false) {
                    return Err(Ext4Error::corrupt(
                        format!("block bitmap of group {g}"),
                        format!("block {blk} freed but already free"),
                    ));
                }
                freed += 1;
            }
            let d = self.desc_mut(g)?;
            d.set_free_blocks(d.free_blocks().saturating_add(freed));
            b = gend.max(b + 1);
        }
        Ok(())
    }

    /// Whether block `b` is in use according to the bitmap.
    pub fn block_in_use(
        &mut self,
        sb: &Superblock,
        b: u64,
        read: &mut ReadBlock<'_>,
    ) -> Result<bool> {
        if b < u64::from(sb.first_data_block) || b >= sb.blocks_count {
            return Ok(true);
        }
        let g = sb.group_of_block(b);
        let gstart = sb.group_first_block(g);
        Ok(self.block_bitmap(sb, g, read)?.get((b - gstart) as u32))
    }

    /// Allocate an inode: in the parent's group when it has a free inode, otherwise in the
    /// group with the most free inodes (ties: lowest number). Updates the free and directory
    /// counts, clears INODE_UNINIT / BLOCK_UNINIT (materialising the bitmaps as the kernel
    /// does) and lowers `bg_itable_unused` past the new inode.
    pub fn alloc_inode(
        &mut self,
        sb: &Superblock,
        parent_group: u32,
        is_dir: bool,
        read: &mut ReadBlock<'_>,
    ) -> Result<u32> {
        let n = self.len();
        let mut order = Vec::with_capacity(2);
        if parent_group < n {
            order.push(parent_group);
        }
        let best = (0..n)
            .filter_map(|g| self.descs.get(g as usize).map(|d| (g, d.free_inodes())))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        if let Some((g, _)) = best {
            order.push(g);
        }
        // Fallback: every group in order (counts may be stale on damaged images).
        order.extend(0..n);
        let ipg = sb.inodes_per_group;
        for g in order {
            if self.desc(g)?.free_inodes() == 0 {
                continue;
            }
            let base = u64::from(g) * u64::from(ipg);
            // Inodes below s_first_ino are reserved (root, journal, resize…).
            let from = u64::from(sb.first_ino).saturating_sub(base + 1);
            let from = u32::try_from(from.min(u64::from(ipg))).unwrap_or(ipg);
            let bm = self.inode_bitmap(sb, g, read)?;
            let Some(i) = bm.find_free(from, ipg) else {
                continue;
            };
            bm.set(i, true);
            bm.dirty = true;
            let csum = sb.has_group_desc_csum();
            if csum && self.desc(g)?.flags() & BG_BLOCK_UNINIT != 0 {
                self.block_bitmap(sb, g, read)?.dirty = true;
            }
            let d = self.desc_mut(g)?;
            d.set_free_inodes(d.free_inodes().saturating_sub(1));
            if is_dir {
                d.set_used_dirs(d.used_dirs().saturating_add(1));
            }
            if csum {
                d.set_flags(d.flags() & !(BG_INODE_UNINIT | BG_BLOCK_UNINIT));
                let used_end = ipg.saturating_sub(d.itable_unused());
                if i >= used_end {
                    d.set_itable_unused(ipg - i - 1);
                }
            }
            let ino = base + u64::from(i) + 1;
            return u32::try_from(ino).map_err(|_| Ext4Error::NoSpace("inode number overflow"));
        }
        Err(Ext4Error::NoSpace("no free inodes"))
    }

    /// Mark inode `ino` free (and one directory fewer when `is_dir`).
    pub fn free_inode(
        &mut self,
        sb: &Superblock,
        ino: u32,
        is_dir: bool,
        read: &mut ReadBlock<'_>,
    ) -> Result<()> {
        if ino == 0 || ino > sb.inodes_count {
            return Err(Ext4Error::corrupt(
                "inode allocation",
                format!("freeing inode {ino}"),
            ));
        }
        let g = (ino - 1) / sb.inodes_per_group;
        let i = (ino - 1) % sb.inodes_per_group;
        let bm = self.inode_bitmap(sb, g, read)?;
        if !bm.set(i, false) {
            return Err(Ext4Error::corrupt(
                format!("inode bitmap of group {g}"),
                format!("inode {ino} freed but already free"),
            ));
        }
        let d = self.desc_mut(g)?;
        d.set_free_inodes(d.free_inodes().saturating_add(1));
        if is_dir {
            d.set_used_dirs(d.used_dirs().saturating_sub(1));
        }
        Ok(())
    }

    /// Whether inode `ino` is marked in use.
    pub fn inode_in_use(
        &mut self,
        sb: &Superblock,
        ino: u32,
        read: &mut ReadBlock<'_>,
    ) -> Result<bool> {
        if ino == 0 || ino > sb.inodes_count {
            return Ok(false);
        }
        let g = (ino - 1) / sb.inodes_per_group;
        Ok(self
            .inode_bitmap(sb, g, read)?
            .get((ino - 1) % sb.inodes_per_group))
    }

    /// Add `delta` to the directory count of the group of `ino` (rename does not need it;
    /// kept for callers changing an inode's type).
    pub fn adjust_dirs(&mut self, sb: &Superblock, ino: u32, delta: i32) -> Result<()> {
        let g = ino.saturating_sub(1) / sb.inodes_per_group;
        let d = self.desc_mut(g)?;
        let v = i64::from(d.used_dirs()) + i64::from(delta);
        d.set_used_dirs(u32::try_from(v.max(0)).unwrap_or(0));
        Ok(())
    }

    /// The dirty bitmaps to write: `(block, bytes)`, and set their checksums into the
    /// descriptors. Clears the dirty flags.
    pub fn take_dirty_bitmaps(&mut self, sb: &Superblock) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let csum = sb.metadata_csum();
        for g in 0..self.descs.len() {
            if let Some(Some(bm)) = self.block_bitmaps.get_mut(g)
                && bm.dirty
            {
                bm.dirty = false;
                let c = bm.checksum(sb.csum_seed, (sb.clusters_per_group / 8) as usize);
                let bytes = bm.as_bytes().to_vec();
                if let (Some(d), Some(dd)) = (self.descs.get_mut(g), self.desc_dirty.get_mut(g)) {
                    if csum {
                        d.set_block_bitmap_csum(c);
                    }
                    *dd = true;
                    out.push((d.block_bitmap(), bytes));
                }
            }
            if let Some(Some(bm)) = self.inode_bitmaps.get_mut(g)
                && bm.dirty
            {
                bm.dirty = false;
                let c = bm.checksum(sb.csum_seed, (sb.inodes_per_group / 8) as usize);
                let bytes = bm.as_bytes().to_vec();
                if let (Some(d), Some(dd)) = (self.descs.get_mut(g), self.desc_dirty.get_mut(g)) {
                    if csum {
                        d.set_inode_bitmap_csum(c);
                    }
                    *dd = true;
                    out.push((d.inode_bitmap(), bytes));
                }
            }
        }
        out
    }

    /// The descriptor-table blocks holding dirty descriptors, with checksums updated:
    /// `(block, bytes)` of the primary copies. `read` supplies the current block (to keep
    /// the bytes of descriptors past the last group). Clears the dirty flags.
    pub fn take_dirty_desc_blocks(
        &mut self,
        sb: &Superblock,
        read: &mut ReadBlock<'_>,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let dpb = sb.descs_per_block().max(1) as usize;
        let ds = usize::from(sb.desc_size.max(32));
        let mut out = Vec::new();
        for i in 0..sb.desc_blocks() as usize {
            let lo = i * dpb;
            let hi = (lo + dpb).min(self.descs.len());
            if !self
                .desc_dirty
                .get(lo..hi)
                .is_some_and(|s| s.iter().any(|&x| x))
            {
                continue;
            }
            let loc = desc_block_location(sb, i as u32);
            let mut block = read(loc)?;
            for g in lo..hi {
                if let Some(d) = self.descs.get_mut(g) {
                    d.update_checksum(sb, g as u32);
                    if let Some(dst) = block.get_mut((g - lo) * ds..(g - lo + 1) * ds) {
                        dst.copy_from_slice(d.as_bytes());
                    }
                }
                if let Some(dd) = self.desc_dirty.get_mut(g) {
                    *dd = false;
                }
            }
            out.push((loc, block));
        }
        Ok(out)
    }

    /// Whether anything is dirty.
    pub fn is_dirty(&self) -> bool {
        self.desc_dirty.iter().any(|&d| d)
            || self.block_bitmaps.iter().flatten().any(|b| b.dirty)
            || self.inode_bitmaps.iter().flatten().any(|b| b.dirty)
    }
}

/// Number of blocks of one group's inode table.
pub fn itable_blocks(sb: &Superblock) -> u64 {
    (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(u64::from(sb.block_size))
}

/// The error for a group number past the last group.
fn no_group(g: u32) -> Ext4Error {
    Ext4Error::corrupt(format!("group {g}"), "no such block group")
}

/// The cached bitmap of group `g` in `slots`, storing `loaded` first when it was just read.
fn fill_slot(slots: &mut [Option<Bitmap>], g: u32, loaded: Option<Bitmap>) -> Result<&mut Bitmap> {
    let slot = slots.get_mut(g as usize).ok_or_else(|| no_group(g))?;
    if let Some(bm) = loaded {
        *slot = Some(bm);
    }
    slot.as_mut().ok_or_else(|| no_group(g))
}
