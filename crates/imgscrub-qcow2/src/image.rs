//! The qcow2 image: open, map guest clusters, read, and the [`BlockDev`] implementation.
//!
//! Locking: `io` is a read/write lock over guest I/O (reads share it, writes, zeroing and
//! discards take it exclusively), and `meta` is a mutex over the in-memory metadata (L1
//! table, refcount table, the L2 and refcount-block caches, the end of the file). Readers
//! take `meta` only to look up a run of clusters, then read the data without it, so several
//! threads read in parallel.

use crate::backing;
use crate::cache::Lru;
use crate::compress;
use crate::error::{Qcow2Error, Result};
use crate::header::{self, Header};
use crate::l2::{self, Mapping};
use crate::storage::{FileStorage, Storage};
use imgscrub_disk::{AllocKind, AllocRange, BlockDev, DiskError};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};

/// How to open an image.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Open for writing (backing files are always read-only).
    pub writable: bool,
    /// Maximum number of images below this one in the backing chain.
    pub max_backing_depth: usize,
    /// Memory budget for the L2 table cache, in bytes (at least 4 tables are cached).
    pub l2_cache_bytes: u64,
    /// Memory budget for the refcount block cache, in bytes (at least 4 blocks).
    pub refcount_cache_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            writable: false,
            max_backing_depth: 32,
            l2_cache_bytes: 8 << 20,
            refcount_cache_bytes: 2 << 20,
        }
    }
}

impl OpenOptions {
    /// Read-only defaults.
    pub fn read_only() -> Self {
        Self::default()
    }
    /// Read-write defaults.
    pub fn read_write() -> Self {
        OpenOptions {
            writable: true,
            ..Self::default()
        }
    }
}

/// Mutable metadata, behind `Qcow2::meta`.
pub(crate) struct Meta {
    pub(crate) l1: Vec<u64>,
    pub(crate) l2_cache: Lru<Vec<u64>>,
    pub(crate) rc_cache: Lru<Vec<u8>>,
    pub(crate) reftable: Vec<u64>,
    pub(crate) reftable_offset: u64,
    /// Next free host offset: new clusters are appended here (cluster aligned).
    pub(crate) end: u64,
    /// Header fixed up for writing (autoclear bits cleared).
    pub(crate) header_prepared: bool,
    /// Host offsets of every L2 table and refcount block, built before the first write so
    /// that a damaged L2 entry can never make us write guest data over metadata.
    pub(crate) meta_clusters: std::collections::HashSet<u64>,
}

/// A qcow2 image (version 2 or 3), readable and writable through [`BlockDev`].
pub struct Qcow2 {
    pub(crate) storage: Box<dyn Storage>,
    pub(crate) hdr: Header,
    pub(crate) cluster_bits: u32,
    pub(crate) cluster_size: u64,
    pub(crate) l2_entries: u64,
    pub(crate) backing: Option<Box<dyn BlockDev>>,
    pub(crate) backing_path: Option<PathBuf>,
    pub(crate) writable: bool,
    pub(crate) io: RwLock<()>,
    pub(crate) meta: Mutex<Meta>,
    /// The last decompressed cluster, keyed by its host offset.
    pub(crate) zcache: Mutex<Option<(u64, Vec<u8>)>>,
}

impl std::fmt::Debug for Qcow2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2")
            .field("file", &self.storage.name())
            .field("version", &self.hdr.version)
            .field("size", &self.hdr.size)
            .field("cluster_size", &self.cluster_size)
            .field("backing", &self.backing_path)
            .field("writable", &self.writable)
            .finish()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Qcow2 {
    /// Open the image at `path`, following its backing chain (read-only).
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Qcow2> {
        let mut chain = Vec::new();
        Self::open_in_chain(path.as_ref(), opts, &mut chain)
    }

    pub(crate) fn open_in_chain(
        path: &Path,
        opts: &OpenOptions,
        chain: &mut Vec<PathBuf>,
    ) -> Result<Qcow2> {
        let canon = backing::canonical(path)?;
        if chain.contains(&canon) {
            return Err(Qcow2Error::BackingLoop(canon));
        }
        if chain.len() > opts.max_backing_depth {
            return Err(Qcow2Error::BackingTooDeep(opts.max_backing_depth));
        }
        chain.push(canon);
        let storage = FileStorage::open(path, opts.writable)?;
        let mut img = Self::from_storage_inner(Box::new(storage), opts)?;
        if let Some(name) = img.hdr.backing_file.clone() {
            let bpath = backing::resolve(path, &name);
            let dev = backing::open(&bpath, img.hdr.backing_format.as_deref(), opts, chain)?;
            img.backing = Some(dev);
            img.backing_path = Some(bpath);
        }
        Ok(img)
    }

    /// Open an image held in any [`Storage`] (for example a [`crate::DevStorage`] around a
    /// [`imgscrub_disk::MemDev`]). Images with a backing file are refused: their backing name
    /// can only be resolved for images opened by path.
    pub fn from_storage(storage: Box<dyn Storage>, opts: &OpenOptions) -> Result<Qcow2> {
        let img = Self::from_storage_inner(storage, opts)?;
        if img.hdr.backing_file.is_some() {
            return Err(Qcow2Error::Unsupported(
                "backing files of an image not opened by path".to_owned(),
            ));
        }
        Ok(img)
    }

    /// Open an image held in any [`Storage`] that stands for the file at `path` (for example
    /// a staging layer over it): the backing chain is resolved relative to `path` and opened
    /// read-only, as with [`Qcow2::open`].
    pub fn from_storage_at(
        storage: Box<dyn Storage>,
        path: &Path,
        opts: &OpenOptions,
    ) -> Result<Qcow2> {
        let mut chain = vec![backing::canonical(path)?];
        let mut img = Self::from_storage_inner(storage, opts)?;
        if let Some(name) = img.hdr.backing_file.clone() {
            let bpath = backing::resolve(path, &name);
            let dev = backing::open(&bpath, img.hdr.backing_format.as_deref(), opts, &mut chain)?;
            img.backing = Some(dev);
            img.backing_path = Some(bpath);
        }
        Ok(img)
    }

    fn from_storage_inner(storage: Box<dyn Storage>, opts: &OpenOptions) -> Result<Qcow2> {
        let file_len = storage.len()?;
        let first_len = file_len.min(2 << 20) as usize;
        let mut first = vec![0u8; first_len];
        storage.read_at(&mut first, 0)?;
        let hdr = Header::parse(&first, file_len)?;
        drop(first);
        hdr.check_features(opts.writable)?;
        if opts.writable && hdr.nb_snapshots > 0 {
            return Err(Qcow2Error::Unsupported(format!(
                "writing to an image with internal snapshots ({} snapshots)",
                hdr.nb_snapshots
            )));
        }
        let cluster_bits = hdr.cluster_bits;
        let cluster_size = hdr.cluster_size();
        let l2_entries = hdr.l2_entries();

        // L1 table (size bounded by the header checks).
        let mut l1b = vec![0u8; hdr.l1_size as usize * 8];
        storage.read_at(&mut l1b, hdr.l1_table_offset)?;
        let l1 = l2::words_from_bytes(&l1b);
        // Refcount table (bounded too).
        let mut rtb = vec![0u8; (u64::from(hdr.refcount_table_clusters) * cluster_size) as usize];
        storage.read_at(&mut rtb, hdr.refcount_table_offset)?;
        let reftable = l2::words_from_bytes(&rtb);

        let l2_cap = (opts.l2_cache_bytes / cluster_size).clamp(4, 1024) as usize;
        let rc_cap = (opts.refcount_cache_bytes / cluster_size).clamp(4, 1024) as usize;
        let end = file_len.div_ceil(cluster_size).saturating_mul(cluster_size);
        let meta = Meta {
            l1,
            l2_cache: Lru::new(l2_cap),
            rc_cache: Lru::new(rc_cap),
            reftable,
            reftable_offset: hdr.refcount_table_offset,
            end,
            header_prepared: false,
            meta_clusters: std::collections::HashSet::new(),
        };
        let img = Qcow2 {
            storage,
            cluster_bits,
            cluster_size,
            l2_entries,
            backing: None,
            backing_path: None,
            writable: opts.writable,
            io: RwLock::new(()),
            meta: Mutex::new(meta),
            zcache: Mutex::new(None),
            hdr,
        };
        if opts.writable && img.hdr.incompatible_features & header::INCOMPAT_DIRTY != 0 {
            img.repair_refcounts()?;
        }
        Ok(img)
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.hdr
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.cluster_size
    }

    /// Virtual disk size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.hdr.size
    }

    /// The resolved path of the backing file, if any.
    pub fn backing_path(&self) -> Option<&Path> {
        self.backing_path.as_deref()
    }

    /// The backing device, if any.
    pub fn backing(&self) -> Option<&dyn BlockDev> {
        self.backing.as_deref()
    }

    /// Read a whole metadata cluster (L2 table or refcount block), checking it lies in the
    /// file.
    pub(crate) fn read_meta_cluster(&self, structure: &'static str, off: u64) -> Result<Vec<u8>> {
        let cs = self.cluster_size;
        if off % cs != 0 {
            return Err(Qcow2Error::corrupt(
                structure,
                off,
                "offset is not cluster aligned",
            ));
        }
        let len = self.storage.len()?;
        match off.checked_add(cs) {
            Some(e) if e <= len => {}
            _ => {
                return Err(Qcow2Error::corrupt(
                    structure,
                    off,
                    format!("table reaches past the end of the file ({len} bytes)"),
                ));
            }
        }
        let mut b = vec![0u8; cs as usize];
        self.storage.read_at(&mut b, off)?;
        Ok(b)
    }

    /// The L2 table at `off` (through the cache).
    pub(crate) fn l2_table<'m>(&self, m: &'m mut Meta, off: u64) -> Result<&'m mut Vec<u64>> {
        if !m.l2_cache.contains(off) {
            if off < self.cluster_size {
                return Err(Qcow2Error::corrupt(
                    "L2 table",
                    off,
                    "L2 table overlaps the header",
                ));
            }
            let b = self.read_meta_cluster("L2 table", off)?;
            m.l2_cache.insert(off, l2::words_from_bytes(&b));
        }
        m.l2_cache
            .get_mut(off)
            .ok_or_else(|| Qcow2Error::corrupt("L2 table", off, "cache lookup failed"))
    }

    /// Map guest cluster `gc` and up to `max - 1` following clusters that continue it
    /// (within one L2 table). Returns the mapping of `gc` and the run length (≥ 1).
    pub(crate) fn map_run(&self, m: &mut Meta, gc: u64, max: u64) -> Result<(Mapping, u64)> {
        let l1_idx = gc / self.l2_entries;
        let l2_idx = gc % self.l2_entries;
        let in_table = (self.l2_entries - l2_idx).min(max.max(1));
        let Some(&l1e) = m.l1.get(l1_idx as usize) else {
            return Ok((Mapping::Unallocated, 1));
        };
        let l2_off = l2::l1_offset(
            l1e,
            self.cluster_bits,
            self.hdr.l1_table_offset + l1_idx * 8,
        )?;
        if l2_off == 0 {
            return Ok((Mapping::Unallocated, in_table));
        }
        let ext = self.hdr.extended_l2();
        let v3 = self.hdr.version >= 3;
        let bits = self.cluster_bits;
        let cs = self.cluster_size;
        let esz = self.hdr.l2_entry_size();
        let table = self.l2_table(m, l2_off)?;
        let decode = |i: u64| -> Result<Mapping> {
            let w = if ext { i * 2 } else { i };
            let raw = table.get(w as usize).copied().unwrap_or(0);
            let bm = if ext {
                table.get(w as usize + 1).copied().unwrap_or(0)
            } else {
                0
            };
            Mapping::decode(raw, bm, ext, v3, bits, l2_off + i * esz)
        };
        let first = decode(l2_idx)?;
        let mut run = 1;
        if matches!(
            first,
            Mapping::Unallocated | Mapping::Zero { .. } | Mapping::Data { .. }
        ) {
            let mut prev = first;
            while run < in_table {
                let next = decode(l2_idx + run)?;
                if !next.continues(&prev, cs) {
                    break;
                }
                prev = next;
                run += 1;
            }
        }
        Ok((first, run))
    }

    /// Fill `out` with guest bytes `goff..goff+out.len()` that lie in one cluster mapped by
    /// `map` (for runs, `Data`/`Zero`/`Unallocated` may span several clusters).
    pub(crate) fn fill(&self, map: Mapping, goff: u64, out: &mut [u8]) -> Result<()> {
        let in_cl = goff & (self.cluster_size - 1);
        match map {
            Mapping::Data { host, .. } => self.read_data(out, host + in_cl),
            Mapping::Zero { .. } => {
                out.fill(0);
                Ok(())
            }
            Mapping::Unallocated => self.read_backing(out, goff),
            Mapping::Compressed { offset, end } => {
                let range = in_cl as usize..in_cl as usize + out.len();
                {
                    let z = lock(&self.zcache);
                    if let Some((k, c)) = &*z {
                        if *k == offset {
                            if let Some(s) = c.get(range.clone()) {
                                out.copy_from_slice(s);
                                return Ok(());
                            }
                        }
                    }
                }
                // Decompress without holding the cache lock, so parallel readers of
                // different compressed clusters do not wait for each other.
                let mut cl = vec![0u8; self.cluster_size as usize];
                self.read_compressed(offset, end, &mut cl)?;
                match cl.get(range) {
                    Some(s) => out.copy_from_slice(s),
                    None => {
                        return Err(Qcow2Error::corrupt(
                            "compressed cluster",
                            offset,
                            "read crosses a cluster boundary",
                        ));
                    }
                }
                *lock(&self.zcache) = Some((offset, cl));
                Ok(())
            }
            Mapping::Sub { host, alloc, zero } => {
                let sc = self.cluster_size / l2::SUBCLUSTERS;
                let mut pos = 0usize;
                // Bounded by the 32 subclusters of one cluster.
                while pos < out.len() {
                    let o = in_cl + pos as u64;
                    let i = (o / sc) as u32;
                    let n = ((sc - o % sc) as usize).min(out.len() - pos);
                    let dst = out
                        .get_mut(pos..pos + n)
                        .ok_or_else(|| Qcow2Error::corrupt("L2 entry", goff, "subcluster range"))?;
                    if alloc & (1 << i) != 0 {
                        self.read_data(dst, host + o)?;
                    } else if zero & (1 << i) != 0 {
                        dst.fill(0);
                    } else {
                        self.read_backing(dst, goff + pos as u64)?;
                    }
                    pos += n;
                }
                Ok(())
            }
        }
    }

    /// Read data at `host`. A cluster that starts inside the file but ends past it (QEMU
    /// leaves the last cluster short, e.g. with subclusters) reads as zeros past the end, as
    /// QEMU does; data that starts past the end is corruption.
    fn read_data(&self, out: &mut [u8], host: u64) -> Result<()> {
        // Fast path: one positional read. Only when it fails do we look at the file size.
        if self.storage.read_at(out, host).is_ok() {
            return Ok(());
        }
        let file_len = self.storage.len()?;
        if host >= file_len && !out.is_empty() {
            return Err(Qcow2Error::corrupt(
                "data cluster",
                host,
                format!("data lies past the end of the file ({file_len} bytes)"),
            ));
        }
        let avail = (file_len - host).min(out.len() as u64) as usize;
        let (head, tail) = out.split_at_mut(avail);
        self.storage.read_at(head, host)?;
        tail.fill(0);
        Ok(())
    }

    fn read_backing(&self, out: &mut [u8], goff: u64) -> Result<()> {
        let Some(b) = &self.backing else {
            out.fill(0);
            return Ok(());
        };
        let blen = b.len();
        let avail = blen.saturating_sub(goff).min(out.len() as u64) as usize;
        let (head, tail) = out.split_at_mut(avail);
        if !head.is_empty() {
            b.read_at(head, goff)?;
        }
        tail.fill(0);
        Ok(())
    }

    pub(crate) fn read_compressed(&self, offset: u64, end: u64, out: &mut [u8]) -> Result<()> {
        let file_len = self.storage.len()?;
        if offset >= file_len {
            return Err(Qcow2Error::corrupt(
                "compressed cluster",
                offset,
                format!("starts past the end of the file ({file_len} bytes)"),
            ));
        }
        let end = end.min(file_len);
        let mut input = vec![0u8; end.saturating_sub(offset) as usize];
        self.storage.read_at(&mut input, offset)?;
        compress::decompress(self.hdr.compression_type, &input, out, offset)
    }

    /// Read guest bytes (the `BlockDev::read_at` body, without the range check).
    fn read_guest(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let _g = self.io.read().unwrap_or_else(|p| p.into_inner());
        let cs = self.cluster_size;
        let mut pos = 0usize;
        // Bounded: each round consumes at least one byte (one cluster run).
        while pos < buf.len() {
            let goff = offset + pos as u64;
            let gc = goff >> self.cluster_bits;
            let in_cl = goff & (cs - 1);
            let want = (buf.len() - pos) as u64;
            let clusters = (in_cl + want).div_ceil(cs);
            let (map, run) = {
                let mut m = lock(&self.meta);
                self.map_run(&mut m, gc, clusters)?
            };
            let n = (run * cs - in_cl).min(want) as usize;
            let chunk = buf
                .get_mut(pos..pos + n)
                .ok_or_else(|| Qcow2Error::corrupt("L2 table", goff, "bad run"))?;
            self.fill(map, goff, chunk)?;
            pos += n;
        }
        Ok(())
    }

    /// Allocation map of `offset..offset+len` (see [`BlockDev::allocation`]).
    fn allocation_inner(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> {
        let _g = self.io.read().unwrap_or_else(|p| p.into_inner());
        let cs = self.cluster_size;
        let mut out: Vec<AllocRange> = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let goff = offset + pos;
            let gc = goff >> self.cluster_bits;
            let in_cl = goff & (cs - 1);
            let want = len - pos;
            let clusters = (in_cl + want).div_ceil(cs);
            let (map, run) = {
                let mut m = lock(&self.meta);
                self.map_run(&mut m, gc, clusters)?
            };
            let n = (run * cs - in_cl).min(want);
            match map {
                Mapping::Data { .. } | Mapping::Compressed { .. } => {
                    push(&mut out, goff, n, AllocKind::Data)
                }
                Mapping::Zero { .. } => push(&mut out, goff, n, AllocKind::Zero),
                Mapping::Unallocated => self.backing_alloc(&mut out, goff, n)?,
                Mapping::Sub { alloc, zero, .. } => {
                    let sc = cs / l2::SUBCLUSTERS;
                    let mut p = 0u64;
                    while p < n {
                        let o = in_cl + p;
                        let i = (o / sc) as u32;
                        let k = (sc - o % sc).min(n - p);
                        if alloc & (1 << i) != 0 {
                            push(&mut out, goff + p, k, AllocKind::Data);
                        } else if zero & (1 << i) != 0 {
                            push(&mut out, goff + p, k, AllocKind::Zero);
                        } else {
                            self.backing_alloc(&mut out, goff + p, k)?;
                        }
                        p += k;
                    }
                }
            }
            pos += n;
        }
        Ok(out)
    }

    fn backing_alloc(&self, out: &mut Vec<AllocRange>, goff: u64, n: u64) -> Result<()> {
        match &self.backing {
            None => push(out, goff, n, AllocKind::Unallocated),
            Some(b) => {
                let avail = b.len().saturating_sub(goff).min(n);
                if avail > 0 {
                    for r in b.allocation(goff, avail)? {
                        push(out, r.offset, r.len, r.kind);
                    }
                }
                if avail < n {
                    push(out, goff + avail, n - avail, AllocKind::Unallocated);
                }
            }
        }
        Ok(())
    }
}

fn push(out: &mut Vec<AllocRange>, offset: u64, len: u64, kind: AllocKind) {
    if len == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last.kind == kind && last.offset + last.len == offset {
            last.len += len;
            return;
        }
    }
    out.push(AllocRange { offset, len, kind });
}

fn check(what: &'static str, offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(e) if e <= size => Ok(()),
        _ => Err(Qcow2Error::OutOfRange {
            what,
            offset,
            len,
            size,
        }),
    }
}

impl BlockDev for Qcow2 {
    fn len(&self) -> u64 {
        self.hdr.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> imgscrub_disk::Result<()> {
        check("read", offset, buf.len() as u64, self.hdr.size)?;
        Ok(self.read_guest(buf, offset)?)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> imgscrub_disk::Result<()> {
        check("write", offset, buf.len() as u64, self.hdr.size)?;
        Ok(self.write_guest(buf, offset)?)
    }

    fn flush(&self) -> imgscrub_disk::Result<()> {
        Ok(self.flush_inner()?)
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> imgscrub_disk::Result<()> {
        check("write_zeroes", offset, len, self.hdr.size)?;
        Ok(self.zero_guest(offset, len)?)
    }

    fn discard(&self, offset: u64, len: u64) -> imgscrub_disk::Result<()> {
        check("discard", offset, len, self.hdr.size)?;
        Ok(self.zero_guest(offset, len)?)
    }

    fn allocation(&self, offset: u64, len: u64) -> imgscrub_disk::Result<Vec<AllocRange>> {
        check("allocation", offset, len, self.hdr.size)?;
        self.allocation_inner(offset, len).map_err(DiskError::from)
    }
}
