//! Writes: cluster allocation, L2/L1 updates, refcounts, zeroing and discards.
//!
//! # Metadata write ordering
//!
//! The metadata caches are write-through: every change is written to the file as soon as it
//! is made, in an order that keeps the image consistent at every step, so that an interrupted
//! write can at worst leak clusters (which `qemu-img check -r leaks` reclaims) and never leaves
//! a cluster referenced while its refcount is 0:
//!
//! 1. **refcount first**: a new cluster's refcount is raised (allocating a refcount block,
//!    self-covering when it lands in the range it describes, or growing the refcount table)
//!    before anything points at it;
//! 2. **then data**: the guest data is written into the new cluster;
//! 3. **then L2**: the L2 entry is switched to the new cluster (a new L2 table is itself
//!    allocated with steps 1–3 and filled with zeros before the L1 points at it);
//! 4. **then L1**: only a new L2 table needs an L1 update.
//!
//! Freeing runs the other way round: the L2 entry stops referencing a cluster first, and only
//! then is its refcount lowered. New clusters are always appended at the end of the file
//! (cluster aligned); freed clusters are not reused, their storage is punched out instead.
//! [`BlockDev::flush`] fsyncs the file.

use crate::error::{Qcow2Error, Result};
use crate::header::{self, MAX_HOST_OFFSET, MAX_REFTABLE_BYTES};
use crate::image::{Meta, Qcow2, lock};
use crate::l2::{self, COPIED, Mapping};
use crate::refcount;

/// Refcount table entries: bits 9..64 hold the refcount block offset.
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// A refcount change.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RcOp {
    Inc,
    Dec,
    Set(u64),
}

/// Bound on nested refcount-block/table allocations for one cluster.
const MAX_ALLOC_DEPTH: u32 = 8;

impl Qcow2 {
    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Qcow2Error::ReadOnly)
        }
    }

    /// Before the first write: we do not maintain persistent dirty bitmaps, so every bitmap
    /// is marked "in use" (QEMU then treats it as inconsistent, as after a crash, instead of
    /// trusting stale contents), and autoclear bits we do not understand are cleared, as the
    /// specification requires of writers.
    fn prepare_header(&self, m: &mut Meta) -> Result<()> {
        if m.header_prepared {
            return Ok(());
        }
        let mut set = std::collections::HashSet::new();
        for (i, &e) in m.l1.iter().enumerate() {
            let at = self.hdr.l1_table_offset + i as u64 * 8;
            let off = l2::l1_offset(e, self.cluster_bits, at)?;
            if off != 0 {
                set.insert(off);
            }
        }
        for &e in &m.reftable {
            let off = e & REFT_OFFSET_MASK;
            if off != 0 {
                set.insert(off);
            }
        }
        m.meta_clusters = set;
        if self.hdr.version >= 3 && self.hdr.autoclear_features != 0 {
            let mut keep = 0;
            if self.hdr.autoclear_features & 1 != 0 {
                if let Some(bm) = self.hdr.bitmaps {
                    self.mark_bitmaps_in_use(bm)?;
                    keep = 1;
                }
            }
            if keep != self.hdr.autoclear_features {
                self.storage
                    .write_at(&keep.to_be_bytes(), header::field::AUTOCLEAR)?;
            }
        }
        m.header_prepared = true;
        Ok(())
    }

    /// Set the in-use flag of every entry of the bitmap directory.
    fn mark_bitmaps_in_use(&self, bm: header::BitmapsExt) -> Result<()> {
        const ENTRY: usize = 24;
        let off = bm.directory_offset;
        let size = bm.directory_size;
        let file_len = self.storage.len()?;
        if size > 64 << 20
            || off % self.cluster_size != 0
            || off.checked_add(size).is_none_or(|e| e > file_len)
        {
            return Err(Qcow2Error::corrupt(
                "bitmap directory",
                off,
                format!("directory of {size} bytes is misplaced or absurd"),
            ));
        }
        let mut dir = vec![0u8; size as usize];
        self.storage.read_at(&mut dir, off)?;
        let mut pos = 0usize;
        for _ in 0..bm.nb_bitmaps {
            let e = dir.get(pos..pos + ENTRY).ok_or_else(|| {
                Qcow2Error::corrupt("bitmap directory", off + pos as u64, "entry is truncated")
            })?;
            let be = |r: std::ops::Range<usize>| {
                e.get(r)
                    .map(|b| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
                    .unwrap_or(0)
            };
            let flags = be(12..16) as u32 | 1;
            let name_size = be(18..20) as usize;
            let extra = be(20..24) as usize;
            self.storage
                .write_at(&flags.to_be_bytes(), off + pos as u64 + 12)?;
            pos = (pos + ENTRY + extra + name_size).div_ceil(8) * 8;
        }
        Ok(())
    }

    /// Write guest bytes (the `BlockDev::write_at` body, range already checked).
    pub(crate) fn write_guest(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        let _g = self.io.write().unwrap_or_else(|p| p.into_inner());
        *lock(&self.zcache) = None;
        let mut m = lock(&self.meta);
        self.prepare_header(&mut m)?;
        let cs = self.cluster_size;
        let mut pos = 0usize;
        while pos < buf.len() {
            let goff = offset + pos as u64;
            let in_cl = goff & (cs - 1);
            let n = ((cs - in_cl) as usize).min(buf.len() - pos);
            let chunk = buf
                .get(pos..pos + n)
                .ok_or_else(|| Qcow2Error::corrupt("data cluster", goff, "bad chunk"))?;
            self.write_cluster(&mut m, goff >> self.cluster_bits, in_cl as usize, chunk)?;
            pos += n;
        }
        Ok(())
    }

    /// Refuse to write guest data over a host cluster that cannot be a data cluster: the
    /// header, the L1 or refcount table, or beyond the end of the file (a damaged L2 entry
    /// must never make us overwrite metadata or grow the file).
    fn check_data_host(&self, m: &Meta, host: u64) -> Result<()> {
        let cs = self.cluster_size;
        let end = host.saturating_add(cs);
        let overlaps = |start: u64, len: u64| host < start.saturating_add(len) && start < end;
        let l1_len = u64::from(self.hdr.l1_size) * 8;
        let rt_len = m.reftable.len() as u64 * 8;
        let why = if host < cs {
            Some("overlaps the header")
        } else if end > m.end {
            Some("lies past the end of the file")
        } else if overlaps(self.hdr.l1_table_offset, l1_len) {
            Some("overlaps the L1 table")
        } else if overlaps(m.reftable_offset, rt_len) {
            Some("overlaps the refcount table")
        } else if m.meta_clusters.contains(&host) {
            Some("is an L2 table or a refcount block")
        } else {
            None
        };
        match why {
            Some(w) => Err(Qcow2Error::corrupt(
                "L2 entry",
                host,
                format!("data cluster {host:#x} {w}; refusing to write"),
            )),
            None => Ok(()),
        }
    }

    /// Write `data` at byte `in_cl` of guest cluster `gc`.
    fn write_cluster(&self, m: &mut Meta, gc: u64, in_cl: usize, data: &[u8]) -> Result<()> {
        let cs = self.cluster_size as usize;
        let (map, _) = self.map_run(m, gc, 1)?;
        if let Mapping::Data { host, copied } = map {
            // Allocated with refcount 1 (no snapshots: we refuse to write those): in place.
            self.check_data_host(m, host)?;
            self.storage.write_at(data, host + in_cl as u64)?;
            if !copied {
                self.set_l2(m, gc, host | COPIED, l2::SUB_ALL_ALLOC)?;
            }
            return Ok(());
        }
        let full = in_cl == 0 && data.len() == cs;
        // Merge with the old contents first (backing file, zeros, compressed data): a read
        // error then leaves the image untouched.
        let merged = if full {
            None
        } else {
            let mut cl = vec![0u8; cs];
            self.fill(map, gc << self.cluster_bits, &mut cl)?;
            cl.get_mut(in_cl..in_cl + data.len())
                .ok_or_else(|| Qcow2Error::corrupt("data cluster", gc, "bad range"))?
                .copy_from_slice(data);
            Some(cl)
        };
        // Reuse the host cluster of a partly allocated extended-L2 cluster; anything else
        // (unallocated, zero, compressed) gets a fresh cluster.
        let reuse = match map {
            Mapping::Sub { host, .. } if host != 0 => {
                self.check_data_host(m, host)?;
                Some(host)
            }
            _ => None,
        };
        let host = match reuse {
            Some(h) => h,
            None => self.alloc_cluster(m)?, // step 1: refcount
        };
        // Step 2: data.
        self.storage
            .write_at(merged.as_deref().unwrap_or(data), host)?;
        // Step 3 (and 4 when the L2 table is new): map it.
        self.set_l2(m, gc, host | COPIED, l2::SUB_ALL_ALLOC)?;
        // Then free what the entry referenced before.
        if reuse.is_none() {
            self.free_mapping(m, map)?;
        }
        Ok(())
    }

    /// Lower the refcounts of what `map` referenced (after the L2 entry stopped doing so).
    fn free_mapping(&self, m: &mut Meta, map: Mapping) -> Result<()> {
        match map {
            Mapping::Unallocated | Mapping::Zero { host: None } => Ok(()),
            Mapping::Data { host, .. } | Mapping::Zero { host: Some(host) } => {
                self.update_refcount(m, host, -1, 0)
            }
            Mapping::Sub { host, .. } => {
                if host != 0 {
                    self.update_refcount(m, host, -1, 0)
                } else {
                    Ok(())
                }
            }
            Mapping::Compressed { offset, end } => {
                // Every host cluster the compressed data touches holds one reference.
                let cs = self.cluster_size;
                let first = (offset & !511) / cs;
                let last = end.saturating_sub(1) / cs;
                for c in first..=last {
                    self.update_refcount(m, c * cs, -1, 0)?;
                }
                Ok(())
            }
        }
    }

    /// Make guest bytes `offset..offset+len` read as zeros, deallocating whole clusters.
    pub(crate) fn zero_guest(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        let _g = self.io.write().unwrap_or_else(|p| p.into_inner());
        *lock(&self.zcache) = None;
        let mut m = lock(&self.meta);
        self.prepare_header(&mut m)?;
        let cs = self.cluster_size;
        let v3 = self.hdr.version >= 3;
        let ext = self.hdr.extended_l2();
        let has_backing = self.backing.is_some();
        let mut zeros: Vec<u8> = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let goff = offset + pos;
            let gc = goff >> self.cluster_bits;
            let in_cl = goff & (cs - 1);
            let n = (cs - in_cl).min(len - pos);
            let (map, _) = self.map_run(&mut m, gc, 1)?;
            let already_zero = match map {
                Mapping::Zero { host: None } => true,
                Mapping::Unallocated => !has_backing,
                _ => false,
            };
            if already_zero {
                pos += n;
                continue;
            }
            if n == cs && (v3 || !has_backing) {
                // Whole cluster: switch the entry first, then free the old storage.
                let (raw, bitmap) = if has_backing {
                    if ext {
                        (0, l2::SUB_ALL_ZERO)
                    } else {
                        (l2::ZERO, 0)
                    }
                } else {
                    (0, 0)
                };
                self.set_l2(&mut m, gc, raw, bitmap)?;
                self.free_mapping(&mut m, map)?;
            } else {
                if matches!(map, Mapping::Zero { .. }) {
                    pos += n;
                    continue;
                }
                zeros.resize(n as usize, 0);
                self.write_cluster(&mut m, gc, in_cl as usize, &zeros)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// fsync the host file (metadata is written through, so nothing else is pending).
    pub(crate) fn flush_inner(&self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let _g = self.io.write().unwrap_or_else(|p| p.into_inner());
        self.storage.sync()
    }

    /// Set the L2 entry of guest cluster `gc`, allocating the L2 table when needed. `bitmap`
    /// is used with extended L2 only.
    pub(crate) fn set_l2(&self, m: &mut Meta, gc: u64, raw: u64, bitmap: u64) -> Result<()> {
        let l1_idx = gc / self.l2_entries;
        let l2_idx = gc % self.l2_entries;
        let l2_off = self.ensure_l2(m, l1_idx)?;
        let ext = self.hdr.extended_l2();
        let esz = self.hdr.l2_entry_size();
        let table = self.l2_table(m, l2_off)?;
        let w = if ext { l2_idx * 2 } else { l2_idx } as usize;
        let mut bytes = raw.to_be_bytes().to_vec();
        match table.get_mut(w) {
            Some(e) => *e = raw,
            None => {
                return Err(Qcow2Error::corrupt(
                    "L2 table",
                    l2_off,
                    "index out of range",
                ));
            }
        }
        if ext {
            match table.get_mut(w + 1) {
                Some(e) => *e = bitmap,
                None => {
                    return Err(Qcow2Error::corrupt(
                        "L2 table",
                        l2_off,
                        "index out of range",
                    ));
                }
            }
            bytes.extend_from_slice(&bitmap.to_be_bytes());
        }
        self.storage.write_at(&bytes, l2_off + l2_idx * esz)
    }

    /// The L2 table offset for L1 index `l1_idx`, allocating a zeroed table when there is
    /// none (refcount, then the zeroed table, then the L1 entry).
    fn ensure_l2(&self, m: &mut Meta, l1_idx: u64) -> Result<u64> {
        let at = self.hdr.l1_table_offset + l1_idx * 8;
        let l1e = *m.l1.get(l1_idx as usize).ok_or_else(|| {
            Qcow2Error::corrupt("L1 table", at, "guest offset beyond the L1 table")
        })?;
        let off = l2::l1_offset(l1e, self.cluster_bits, at)?;
        if off != 0 {
            if l1e & COPIED == 0 {
                // Without snapshots every table has refcount 1: set the flag QEMU expects.
                let v = off | COPIED;
                self.storage.write_at(&v.to_be_bytes(), at)?;
                if let Some(e) = m.l1.get_mut(l1_idx as usize) {
                    *e = v;
                }
            }
            return Ok(off);
        }
        let new = self.alloc_cluster(m)?;
        let words = (self.cluster_size / 8) as usize;
        self.storage
            .write_at(&vec![0u8; self.cluster_size as usize], new)?;
        m.l2_cache.insert(new, vec![0u64; words]);
        m.meta_clusters.insert(new);
        let v = new | COPIED;
        self.storage.write_at(&v.to_be_bytes(), at)?;
        if let Some(e) = m.l1.get_mut(l1_idx as usize) {
            *e = v;
        }
        Ok(new)
    }

    /// Append one cluster at the end of the file and give it refcount 1.
    pub(crate) fn alloc_cluster(&self, m: &mut Meta) -> Result<u64> {
        let host = self.take_end(m, 1)?;
        self.update_refcount(m, host, 1, 0)?;
        Ok(host)
    }

    /// Reserve `n` clusters at the end of the file (no refcount yet).
    ///
    /// Clusters past the end of the file must have refcount 0. A non-zero count there means
    /// damaged refcount blocks (`qemu-img check` only notices once the cluster is used), and
    /// adding 1 to it would leave a wrong count: refuse instead.
    fn take_end(&self, m: &mut Meta, n: u64) -> Result<u64> {
        let host = m.end;
        let new_end = n
            .checked_mul(self.cluster_size)
            .and_then(|b| host.checked_add(b))
            .filter(|&e| e <= MAX_HOST_OFFSET)
            .ok_or_else(|| Qcow2Error::Unsupported("image file would exceed 2^56 bytes".into()))?;
        for i in 0..n {
            let c = host + i * self.cluster_size;
            let rc = self.refcount_locked(m, c)?;
            if rc != 0 {
                return Err(Qcow2Error::corrupt(
                    "refcount block",
                    c,
                    format!(
                        "the free cluster at {c:#x} past the end of the file has refcount {rc}; \
                         the refcounts are damaged (repair with `qemu-img check -r all`)"
                    ),
                ));
            }
        }
        m.end = new_end;
        Ok(host)
    }

    /// The refcount block at `off` (through the cache).
    fn refblock<'m>(&self, m: &'m mut Meta, off: u64) -> Result<&'m mut Vec<u8>> {
        if !m.rc_cache.contains(off) {
            let b = self.read_meta_cluster("refcount block", off)?;
            m.rc_cache.insert(off, b);
        }
        m.rc_cache
            .get_mut(off)
            .ok_or_else(|| Qcow2Error::corrupt("refcount block", off, "cache lookup failed"))
    }

    /// Read the refcount of the cluster holding host offset `host`.
    pub fn refcount(&self, host: u64) -> Result<u64> {
        let mut m = lock(&self.meta);
        self.refcount_locked(&mut m, host)
    }

    /// Add `delta` (+1 or -1) to the refcount of the cluster at `host`, writing the change
    /// through. Creates refcount blocks (and grows the table) for increments.
    pub(crate) fn update_refcount(
        &self,
        m: &mut Meta,
        host: u64,
        delta: i64,
        depth: u32,
    ) -> Result<()> {
        let op = if delta > 0 { RcOp::Inc } else { RcOp::Dec };
        self.change_refcount(m, host, op, depth)
    }

    /// The refcount of the cluster at `host` (0 when no block covers it).
    pub(crate) fn refcount_locked(&self, m: &mut Meta, host: u64) -> Result<u64> {
        let order = self.hdr.refcount_order;
        let per = refcount::entries_per_block(self.cluster_bits, order);
        let c = host >> self.cluster_bits;
        let Some(&rte) = m.reftable.get((c / per) as usize) else {
            return Ok(0);
        };
        let off = rte & REFT_OFFSET_MASK;
        if off == 0 {
            return Ok(0);
        }
        let b = self.refblock(m, off)?;
        refcount::get(b, c % per, order)
            .ok_or_else(|| Qcow2Error::corrupt("refcount block", off, "index out of range"))
    }

    /// Increment, decrement or set the refcount of the cluster at `host`, writing the change
    /// through; creates refcount blocks (and grows the table) when a non-zero count needs one.
    pub(crate) fn change_refcount(
        &self,
        m: &mut Meta,
        host: u64,
        op: RcOp,
        depth: u32,
    ) -> Result<()> {
        let delta: i64 = match op {
            RcOp::Inc => 1,
            RcOp::Dec => -1,
            RcOp::Set(0) => {
                if self.refcount_locked(m, host)? == 0 {
                    return Ok(());
                }
                -1
            }
            RcOp::Set(_) => 1,
        };
        if depth > MAX_ALLOC_DEPTH {
            return Err(Qcow2Error::corrupt(
                "refcount table",
                m.reftable_offset,
                "refcount block allocation does not converge",
            ));
        }
        let order = self.hdr.refcount_order;
        let per = refcount::entries_per_block(self.cluster_bits, order);
        let c = host >> self.cluster_bits;
        let rt_idx = c / per;
        let rb_idx = c % per;
        if rt_idx >= m.reftable.len() as u64 {
            if delta < 0 {
                return Err(Qcow2Error::corrupt(
                    "refcount table",
                    m.reftable_offset,
                    format!("freeing cluster {host:#x} that has no refcount"),
                ));
            }
            self.grow_reftable(m, rt_idx + 1, depth + 1)?;
        }
        let rte = m.reftable.get(rt_idx as usize).copied().unwrap_or(0);
        let mut rb_off = rte & REFT_OFFSET_MASK;
        if rb_off == 0 {
            if delta < 0 {
                return Err(Qcow2Error::corrupt(
                    "refcount table",
                    m.reftable_offset + rt_idx * 8,
                    format!("freeing cluster {host:#x} that has no refcount block"),
                ));
            }
            rb_off = self.new_refblock(m, rt_idx, depth + 1)?;
        }
        let max = refcount::max_refcount(order);
        let block = self.refblock(m, rb_off)?;
        let old = refcount::get(block, rb_idx, order)
            .ok_or_else(|| Qcow2Error::corrupt("refcount block", rb_off, "index out of range"))?;
        let new = if let RcOp::Set(v) = op {
            if v > max {
                return Err(Qcow2Error::Unsupported(format!(
                    "refcount {v} of cluster {host:#x} does not fit in {}-bit refcounts",
                    1u32 << order
                )));
            }
            v
        } else if delta > 0 {
            old.checked_add(1).filter(|&v| v <= max).ok_or_else(|| {
                Qcow2Error::Unsupported(format!("refcount of cluster {host:#x} would overflow"))
            })?
        } else {
            old.checked_sub(1).ok_or_else(|| {
                Qcow2Error::corrupt(
                    "refcount block",
                    rb_off,
                    format!("freeing cluster {host:#x} whose refcount is already 0"),
                )
            })?
        };
        let (bo, bl) = refcount::set(block, rb_idx, order, new)
            .ok_or_else(|| Qcow2Error::corrupt("refcount block", rb_off, "index out of range"))?;
        let bytes = block
            .get(bo..bo + bl)
            .ok_or_else(|| Qcow2Error::corrupt("refcount block", rb_off, "index out of range"))?
            .to_vec();
        self.storage.write_at(&bytes, rb_off + bo as u64)?;
        if new == 0 {
            let cs = self.cluster_size;
            self.storage.punch_hole(c * cs, cs)?;
        }
        Ok(())
    }

    /// Create the refcount block for refcount table index `rt_idx` at the end of the file.
    /// The block counts itself when it lands in the range it covers; otherwise its own
    /// refcount is recorded (recursively) in the block covering it. Only then does the
    /// refcount table point at it.
    fn new_refblock(&self, m: &mut Meta, rt_idx: u64, depth: u32) -> Result<u64> {
        let order = self.hdr.refcount_order;
        let per = refcount::entries_per_block(self.cluster_bits, order);
        let blk = self.take_end(m, 1)?;
        let blk_c = blk >> self.cluster_bits;
        let mut data = vec![0u8; self.cluster_size as usize];
        let self_covering = blk_c / per == rt_idx;
        if self_covering {
            refcount::set(&mut data, blk_c % per, order, 1)
                .ok_or_else(|| Qcow2Error::corrupt("refcount block", blk, "index out of range"))?;
        }
        self.storage.write_at(&data, blk)?;
        m.rc_cache.insert(blk, data);
        m.meta_clusters.insert(blk);
        if !self_covering {
            self.update_refcount(m, blk, 1, depth + 1)?;
        }
        let e = m.reftable.get_mut(rt_idx as usize).ok_or_else(|| {
            Qcow2Error::corrupt("refcount table", m.reftable_offset, "index out of range")
        })?;
        *e = blk;
        self.storage
            .write_at(&blk.to_be_bytes(), m.reftable_offset + rt_idx * 8)?;
        Ok(blk)
    }

    /// Move the refcount table to a larger one at the end of the file: write the new table,
    /// give its clusters refcounts (creating blocks as needed, recorded in the new table),
    /// fsync, switch the header, then free the old table.
    fn grow_reftable(&self, m: &mut Meta, min_len: u64, depth: u32) -> Result<()> {
        let cs = self.cluster_size;
        let per = refcount::entries_per_block(self.cluster_bits, self.hdr.refcount_order);
        let old_len = m.reftable.len() as u64;
        let old_off = m.reftable_offset;
        let old_clusters = (old_len * 8).div_ceil(cs);
        let span = per * cs; // bytes covered by one refcount block
        let mut new_len = min_len.max(old_len.saturating_mul(2)).max(1);
        // Make sure the table covers the file after the table and a few blocks are appended.
        for _ in 0..64 {
            let table_clusters = (new_len * 8).div_ceil(cs);
            let need_end = m.end + (table_clusters + table_clusters.div_ceil(per) + 8) * cs;
            if new_len * span >= need_end {
                break;
            }
            new_len = need_end.div_ceil(span) + 1;
        }
        let clusters = (new_len * 8).div_ceil(cs);
        let new_len = clusters * cs / 8;
        if clusters * cs > MAX_REFTABLE_BYTES {
            return Err(Qcow2Error::Unsupported(
                "refcount table would exceed 32 MiB".to_owned(),
            ));
        }
        let new_off = self.take_end(m, clusters)?;
        m.reftable.resize(new_len as usize, 0);
        m.reftable_offset = new_off;
        self.storage
            .write_at(&l2::words_to_bytes(&m.reftable), new_off)?;
        for i in 0..clusters {
            self.update_refcount(m, new_off + i * cs, 1, depth + 1)?;
        }
        self.storage.sync()?;
        let mut hdr = new_off.to_be_bytes().to_vec();
        hdr.extend_from_slice(&(clusters as u32).to_be_bytes());
        self.storage
            .write_at(&hdr, header::field::REFCOUNT_TABLE_OFFSET)?;
        self.storage.sync()?;
        for i in 0..old_clusters {
            self.update_refcount(m, old_off + i * cs, -1, depth + 1)?;
        }
        Ok(())
    }
}
