//! A write-once, sequential qcow2 v3 producer.
//!
//! Clusters arrive in guest order ([`Qcow2Stream::push`]); the file is laid out as
//!
//! ```text
//! cluster 0            header (written last, at finish)
//! clusters 1..=L       L1 table (kept in memory, written at finish)
//! ...                  data clusters, compressed runs and L2 tables, in guest order;
//!                      each L2 table right after the data it maps; each refcount block as
//!                      soon as the clusters it counts can no longer change
//! tail                 the last refcount block(s) and the refcount table
//! ```
//!
//! Compressed clusters are packed exactly as qemu's `qcow2_alloc_bytes` packs them: back to
//! back at byte granularity inside a host cluster; a run that does not fit in what is left of
//! the current host cluster continues into the next host cluster when that is the next one
//! allocated, otherwise starts a fresh one. Every host cluster a compressed run touches gets
//! one reference for that run (so a shared cluster has a refcount above one and no
//! `COPIED` flag anywhere). The L2 descriptor holds the byte offset and the number of
//! additional 512-byte sectors up to the run's last byte (`docs/interop/qcow2.rst`).
//!
//! Memory: the L1 table, one L2 table, and the refcount blocks not yet final (normally one);
//! nothing grows with the amount of data written. The layout depends only on the clusters
//! pushed, so the same input gives a byte-identical file.

use crate::compress::Compression;
use crate::error::{Result, ShrinkError};
use crate::output::OutputFile;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

const QCOW_MAGIC: u32 = 0x5146_49fb;
/// L1/L2 entry flag: refcount is exactly one.
const OFLAG_COPIED: u64 = 1 << 63;
/// L2 entry flag: compressed cluster descriptor.
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Incompatible feature bit 3: the compression type field is in use.
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// The header length we write (v3 with the compression type byte, padded to 8).
const HEADER_LENGTH: u32 = 112;
/// refcount_order 4: 16-bit refcounts, the qemu default.
const REFCOUNT_ORDER: u32 = 4;
const REFCOUNT_MAX: u16 = u16::MAX;
/// Contiguous writes are combined up to this many bytes.
const WRITE_BUFFER: usize = 4 << 20;
/// Standard cluster host offsets: bits 9..=55.
const MAX_HOST_OFFSET: u64 = (1 << 56) - 1;

/// Geometry and codec of a qcow2 file to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qcow2Params {
    /// Guest-visible size in bytes (need not be a multiple of the cluster size).
    pub virtual_size: u64,
    /// Cluster size: a power of two from 512 B to 2 MiB (default 64 KiB).
    pub cluster_size: u32,
    /// The `compression_type` recorded in the header (zlib for [`Compression::None`]).
    pub compression: Compression,
}

impl Qcow2Params {
    /// Check the parameters.
    pub fn validate(&self) -> Result<()> {
        let cs = self.cluster_size;
        if !cs.is_power_of_two() || !(512..=(2 << 20)).contains(&cs) {
            return Err(ShrinkError::InvalidOption(format!(
                "cluster size {cs} is not a power of two between 512 and 2 MiB"
            )));
        }
        // qemu's limit on the L1 table (32 MiB of entries).
        let l2_span = u64::from(cs) * (u64::from(cs) / 8);
        let l1_size = self.virtual_size.div_ceil(l2_span);
        if l1_size > (32 << 20) / 8 {
            return Err(ShrinkError::TooLarge(format!(
                "a virtual size of {} bytes needs more than 4 Mi L1 entries with {cs}-byte clusters",
                self.virtual_size
            )));
        }
        Ok(())
    }
}

/// One guest cluster handed to [`Qcow2Stream::push`].
#[derive(Debug, Clone, Copy)]
pub enum ClusterData<'a> {
    /// Reads as zeros: nothing is written (the L2 entry stays unallocated).
    Zero,
    /// Uncompressed data, exactly one cluster long (the caller zero-pads the last cluster).
    Raw(&'a [u8]),
    /// A compressed stream (at most cluster size − 1 bytes) of the zero-padded cluster.
    Compressed(&'a [u8]),
}

/// What [`Qcow2Stream::finish`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Qcow2Summary {
    /// Final file size in bytes.
    pub file_size: u64,
    /// Guest clusters stored uncompressed.
    pub raw_clusters: u64,
    /// Guest clusters stored compressed.
    pub compressed_clusters: u64,
    /// Bytes of compressed streams.
    pub compressed_bytes: u64,
    /// Guest clusters left unallocated (all zero).
    pub zero_clusters: u64,
    /// L2 tables written.
    pub l2_tables: u64,
    /// Refcount blocks written.
    pub refcount_blocks: u64,
}

/// A streaming qcow2 v3 writer: create, [`push`](Self::push) clusters in guest order,
/// [`finish`](Self::finish).
#[derive(Debug)]
pub struct Qcow2Stream {
    out: OutputFile,
    p: Qcow2Params,
    cluster_bits: u32,
    cs: u64,
    guest_clusters: u64,
    next_guest: u64,
    l1: Vec<u64>,
    l2_entries: u64,
    l2: Vec<u64>,
    l2_index: u64,
    l2_used: bool,
    /// Next host cluster to allocate.
    next_free: u64,
    /// Byte offset where the next compressed run may start; 0 = none open.
    comp_off: u64,
    refs: Refcounts,
    sum: Qcow2Summary,
    /// Pending contiguous writes starting at `wbuf_off`.
    wbuf: Vec<u8>,
    wbuf_off: u64,
}

#[derive(Debug)]
struct Refcounts {
    per_block: u64,
    /// Refcount blocks not written yet, by index.
    open: BTreeMap<u64, Vec<u16>>,
    /// Host offsets of written refcount blocks.
    table: Vec<u64>,
    /// Blocks below this index are written.
    written: u64,
}

impl Refcounts {
    fn get(&self, cluster: u64) -> u16 {
        self.open
            .get(&(cluster / self.per_block))
            .and_then(|v| v.get((cluster % self.per_block) as usize))
            .copied()
            .unwrap_or(0)
    }
}

impl Qcow2Stream {
    /// Start a qcow2 file that becomes `path` when [`finish`](Self::finish) succeeds (it is
    /// written under a temporary name next to it until then: see [`OutputFile`]).
    pub fn create(path: impl AsRef<Path>, p: Qcow2Params) -> Result<Self> {
        p.validate()?;
        let out = OutputFile::create(path.as_ref())?;
        let cs = u64::from(p.cluster_size);
        let cluster_bits = p.cluster_size.trailing_zeros();
        let l2_entries = cs / 8;
        let guest_clusters = p.virtual_size.div_ceil(cs);
        let l1_size = guest_clusters.div_ceil(l2_entries);
        let l1_clusters = (l1_size * 8).div_ceil(cs);
        // refcount_bits = 16: cs / 2 entries per refcount block.
        let per_block = cs * 8 / (1 << REFCOUNT_ORDER);
        let mut s = Qcow2Stream {
            out,
            p,
            cluster_bits,
            cs,
            guest_clusters,
            next_guest: 0,
            l1: vec![0; l1_size as usize],
            l2_entries,
            l2: vec![0; l2_entries as usize],
            l2_index: 0,
            l2_used: false,
            next_free: 0,
            comp_off: 0,
            refs: Refcounts {
                per_block,
                open: BTreeMap::new(),
                table: Vec::new(),
                written: 0,
            },
            sum: Qcow2Summary::default(),
            wbuf: Vec::new(),
            wbuf_off: 0,
        };
        // Header cluster and L1 table.
        for _ in 0..1 + l1_clusters {
            s.alloc_cluster()?;
        }
        Ok(s)
    }

    /// The parameters the file is written with.
    pub fn params(&self) -> Qcow2Params {
        self.p
    }

    /// Number of guest clusters (the last one may be partial).
    pub fn guest_clusters(&self) -> u64 {
        self.guest_clusters
    }

    /// Queue a write: contiguous writes are combined into one `pwrite` of up to
    /// [`WRITE_BUFFER`] bytes.
    fn pwrite(&mut self, buf: &[u8], off: u64) -> Result<()> {
        let end = self.wbuf_off + self.wbuf.len() as u64;
        if off != end || self.wbuf.len() + buf.len() > WRITE_BUFFER {
            self.flush_writes()?;
            self.wbuf_off = off;
        }
        if buf.len() >= WRITE_BUFFER {
            self.write_now(buf, off)
        } else {
            self.wbuf.extend_from_slice(buf);
            Ok(())
        }
    }

    fn flush_writes(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let r = self.write_now(&buf, self.wbuf_off);
        self.wbuf = buf;
        self.wbuf.clear();
        r
    }

    fn write_now(&self, buf: &[u8], off: u64) -> Result<()> {
        self.out.file().write_all_at(buf, off).map_err(|e| {
            ShrinkError::io(
                format!(
                    "write {} bytes at {off:#x} of {}",
                    buf.len(),
                    self.out.dest().display()
                ),
                e,
            )
        })
    }

    fn inc(&mut self, cluster: u64) -> Result<()> {
        if cluster / self.refs.per_block < self.refs.written {
            // Only possible through a logic error; refuse rather than write a bad count.
            return Err(ShrinkError::TooLarge(format!(
                "refcount of host cluster {cluster} changed after its block was written"
            )));
        }
        let per = self.refs.per_block;
        let block = self
            .refs
            .open
            .entry(cluster / per)
            .or_insert_with(|| vec![0u16; per as usize]);
        let s = block.get_mut((cluster % per) as usize).ok_or_else(|| {
            ShrinkError::TooLarge(format!("refcount slot of host cluster {cluster}"))
        })?;
        *s = s.checked_add(1).ok_or_else(|| {
            ShrinkError::TooLarge(format!("refcount of host cluster {cluster} overflows"))
        })?;
        Ok(())
    }

    /// Allocate one whole host cluster with refcount 1; returns its byte offset.
    fn alloc_cluster(&mut self) -> Result<u64> {
        let c = self.next_free;
        let off = c
            .checked_mul(self.cs)
            .filter(|&o| o <= MAX_HOST_OFFSET)
            .ok_or_else(|| ShrinkError::TooLarge("host offset past 2^56".into()))?;
        self.next_free += 1;
        self.inc(c)?;
        Ok(off)
    }

    /// Room for `size` bytes of compressed data, packed as qemu's `qcow2_alloc_bytes` does.
    fn alloc_bytes(&mut self, size: u64) -> Result<u64> {
        let cs = self.cs;
        let mut off = self.comp_off;
        if off != 0 && self.refs.get(off / cs) == REFCOUNT_MAX {
            off = 0;
        }
        let free_in_cluster = if off == 0 { 0 } else { cs - off % cs };
        if off == 0 || free_in_cluster < size {
            let new = self.next_free;
            self.next_free += 1;
            let new_off = new
                .checked_mul(cs)
                .filter(|&o| o <= MAX_HOST_OFFSET)
                .ok_or_else(|| ShrinkError::TooLarge("host offset past 2^56".into()))?;
            if off == 0 || off.next_multiple_of(cs) != new_off {
                off = new_off;
            }
        }
        let first = off / cs;
        let last = (off + size - 1) / cs;
        for c in first..=last {
            self.inc(c)?;
        }
        self.comp_off = off + size;
        if self.comp_off.is_multiple_of(cs) {
            self.comp_off = 0;
        }
        Ok(off)
    }

    /// Store guest cluster `index` (indices strictly increasing; skipped indices read as
    /// zeros).
    pub fn push(&mut self, index: u64, data: ClusterData<'_>) -> Result<()> {
        if index < self.next_guest || index >= self.guest_clusters {
            return Err(ShrinkError::InvalidOption(format!(
                "guest cluster {index} pushed out of order or past the end ({} clusters, next {})",
                self.guest_clusters, self.next_guest
            )));
        }
        self.next_guest = index + 1;
        let table = index / self.l2_entries;
        if table != self.l2_index {
            self.flush_l2()?;
            self.l2_index = table;
        }
        let entry = match data {
            ClusterData::Zero => {
                self.sum.zero_clusters += 1;
                return Ok(());
            }
            ClusterData::Raw(buf) => {
                if buf.len() as u64 != self.cs {
                    return Err(ShrinkError::InvalidOption(format!(
                        "raw cluster of {} bytes, cluster size is {}",
                        buf.len(),
                        self.cs
                    )));
                }
                let off = self.alloc_cluster()?;
                self.pwrite(buf, off)?;
                self.sum.raw_clusters += 1;
                off | OFLAG_COPIED
            }
            ClusterData::Compressed(buf) => {
                let len = buf.len() as u64;
                if len == 0 || len >= self.cs {
                    return Err(ShrinkError::InvalidOption(format!(
                        "compressed cluster of {len} bytes (cluster size {})",
                        self.cs
                    )));
                }
                let off = self.alloc_bytes(len)?;
                self.pwrite(buf, off)?;
                let csize_shift = 62 - (self.cluster_bits - 8);
                if off >= 1 << csize_shift {
                    return Err(ShrinkError::TooLarge(format!(
                        "compressed data at {off:#x} is past what a descriptor can address"
                    )));
                }
                let extra_sectors = ((off + len - 1) >> 9) - (off >> 9);
                self.sum.compressed_clusters += 1;
                self.sum.compressed_bytes += len;
                OFLAG_COMPRESSED | (extra_sectors << csize_shift) | off
            }
        };
        let slot = (index % self.l2_entries) as usize;
        if let Some(e) = self.l2.get_mut(slot) {
            *e = entry;
        }
        self.l2_used = true;
        self.flush_final_refblocks()
    }

    /// Write the current L2 table if it maps anything.
    fn flush_l2(&mut self) -> Result<()> {
        if !self.l2_used {
            return Ok(());
        }
        let off = self.alloc_cluster()?;
        let mut buf = Vec::with_capacity(self.cs as usize);
        for e in &self.l2 {
            buf.extend_from_slice(&e.to_be_bytes());
        }
        self.pwrite(&buf, off)?;
        if let Some(e) = self.l1.get_mut(self.l2_index as usize) {
            *e = off | OFLAG_COPIED;
        }
        self.l2.iter_mut().for_each(|e| *e = 0);
        self.l2_used = false;
        self.sum.l2_tables += 1;
        Ok(())
    }

    /// Write every refcount block whose clusters can no longer change: all clusters below
    /// the allocation frontier, except the open compressed cluster.
    fn flush_final_refblocks(&mut self) -> Result<()> {
        let per = self.refs.per_block;
        // A back-fill cursor far behind the frontier would pin refcount blocks in memory:
        // give it up once the frontier has moved to another block.
        if self.comp_off != 0 && self.comp_off / self.cs / per < self.next_free / per {
            self.comp_off = 0;
        }
        loop {
            let frontier = if self.comp_off != 0 {
                self.comp_off / self.cs
            } else {
                self.next_free
            };
            let b = self.refs.written;
            if (b + 1) * per > frontier {
                return Ok(());
            }
            self.write_refblock(b)?;
        }
    }

    fn write_refblock(&mut self, b: u64) -> Result<()> {
        let off = self.alloc_cluster()?;
        self.write_refblock_at(b, off)
    }

    /// Write refcount block `b` (its counts final) into the allocated cluster at `off`.
    fn write_refblock_at(&mut self, b: u64, off: u64) -> Result<()> {
        let counts = self
            .refs
            .open
            .remove(&b)
            .unwrap_or_else(|| vec![0; self.refs.per_block as usize]);
        let mut buf = Vec::with_capacity(self.cs as usize);
        for c in counts {
            buf.extend_from_slice(&c.to_be_bytes());
        }
        self.pwrite(&buf, off)?;
        if self.refs.table.len() as u64 != b {
            return Err(ShrinkError::TooLarge(format!(
                "refcount block {b} written out of order"
            )));
        }
        self.refs.table.push(off);
        self.refs.written = b + 1;
        self.sum.refcount_blocks += 1;
        Ok(())
    }

    /// Write the remaining metadata, the L1 table and the header. The file is complete and
    /// consistent only after this returns.
    ///
    /// Then the file gets its final name; with `sync`, it is fsynced first (and its directory
    /// after the rename). Dropping the stream before this removes the unfinished file.
    pub fn finish(mut self, sync: bool) -> Result<Qcow2Summary> {
        self.flush_l2()?;
        self.comp_off = 0;
        self.flush_final_refblocks()?;
        let per = self.refs.per_block;
        let start = self.next_free;
        let written = self.refs.written;
        // Find the refcount table size t and block count rb that cover themselves.
        let mut t = 1u64;
        let rb = loop {
            let mut rb = 0u64;
            loop {
                let end = start + t + rb;
                let need = end.div_ceil(per) - written;
                if need == rb {
                    break;
                }
                rb = need;
            }
            let t2 = ((written + rb) * 8).div_ceil(self.cs);
            if t2 <= t {
                break rb;
            }
            t = t2;
        };
        let table_off = self.next_free * self.cs;
        for _ in 0..t {
            self.alloc_cluster()?;
        }
        // Allocate every remaining block first: their own counts land in them.
        let mut offs = Vec::with_capacity(rb as usize);
        for _ in 0..rb {
            offs.push(self.alloc_cluster()?);
        }
        for (i, off) in offs.into_iter().enumerate() {
            self.write_refblock_at(written + i as u64, off)?;
        }
        if !self.refs.open.is_empty() {
            return Err(ShrinkError::TooLarge(
                "refcount blocks left unwritten (layout error)".into(),
            ));
        }
        let mut tbuf = vec![0u8; (t * self.cs) as usize];
        for (i, off) in self.refs.table.iter().enumerate() {
            if let Some(d) = tbuf.get_mut(i * 8..i * 8 + 8) {
                d.copy_from_slice(&off.to_be_bytes());
            }
        }
        self.pwrite(&tbuf, table_off)?;

        let l1_clusters = ((self.l1.len() as u64) * 8).div_ceil(self.cs);
        let mut l1buf = vec![0u8; (l1_clusters * self.cs) as usize];
        for (i, e) in self.l1.iter().enumerate() {
            if let Some(d) = l1buf.get_mut(i * 8..i * 8 + 8) {
                d.copy_from_slice(&e.to_be_bytes());
            }
        }
        // An empty image has no L1 table (offset 0), as qemu-img writes it.
        let l1_off = if l1_clusters == 0 { 0 } else { self.cs };
        if l1_clusters > 0 {
            self.pwrite(&l1buf, l1_off)?;
        }

        let mut h = vec![0u8; self.cs as usize];
        let put32 = |h: &mut [u8], at: usize, v: u32| {
            if let Some(d) = h.get_mut(at..at + 4) {
                d.copy_from_slice(&v.to_be_bytes());
            }
        };
        let put64 = |h: &mut [u8], at: usize, v: u64| {
            if let Some(d) = h.get_mut(at..at + 8) {
                d.copy_from_slice(&v.to_be_bytes());
            }
        };
        put32(&mut h, 0, QCOW_MAGIC);
        put32(&mut h, 4, 3);
        put32(&mut h, 20, self.cluster_bits);
        put64(&mut h, 24, self.p.virtual_size);
        put32(&mut h, 36, self.l1.len() as u32);
        put64(&mut h, 40, l1_off);
        put64(&mut h, 48, table_off);
        put32(&mut h, 56, t as u32);
        let zstd = self.p.compression == Compression::Zstd;
        put64(&mut h, 72, if zstd { INCOMPAT_COMPRESSION } else { 0 });
        put32(&mut h, 96, REFCOUNT_ORDER);
        put32(&mut h, 100, HEADER_LENGTH);
        if let Some(b) = h.get_mut(104) {
            *b = u8::from(zstd);
        }
        // Bytes 112.. are zero: the header extension end marker.
        self.pwrite(&h, 0)?;
        self.flush_writes()?;
        let size = self.next_free * self.cs;
        self.out
            .file()
            .set_len(size)
            .map_err(|e| ShrinkError::io(format!("resize {}", self.out.dest().display()), e))?;
        self.sum.file_size = size;
        self.out.commit(sync)?;
        Ok(self.sum)
    }
}
