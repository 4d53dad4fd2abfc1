//! The parallel converter: read a [`BlockDev`] once, in guest order, and write qcow2
//! (compressed on every core), sparse raw, streamOptimized VMDK (compressed on every core)
//! or VHD (fixed or dynamic).
//!
//! The input is cut into groups of clusters (1 MiB). One worker per core (rayon's thread
//! count, so `RAYON_NUM_THREADS` applies) takes the next group, asks `allocation()` and the
//! caller's `skip` set (byte ranges known to be free) which bytes need reading at all —
//! clusters with nothing to read are zero without any I/O — reads the rest, tests each
//! cluster for zero and compresses it. The writer (the calling thread) writes the groups in
//! guest order as they become ready. There is no barrier between batches: a worker never
//! waits for another, only for the writer when it is [`WINDOW_BYTES`] ahead, so memory stays
//! bounded (about [`WINDOW_BYTES`] plus one cluster per worker) whatever the image size, and
//! every core stays busy to the end. The output depends only on the input and the options.

use crate::compress::{ClusterCompressor, Compression, is_zero};
use crate::disk_out::{VhdStream, VmdkStream};
use crate::error::{Result, ShrinkError};
use crate::output::OutputFile;
use crate::progress::Progress;
use crate::qcow2_out::{ClusterData, Qcow2Params, Qcow2Stream};
use crate::rangeset::RangeSet;
use imgscrub_disk::{AllocKind, BlockDev};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Condvar, Mutex};

/// Guest bytes in flight at most: taken by a worker, or compressed and waiting for the
/// writer (rounded to whole groups, at least two).
pub const WINDOW_BYTES: u64 = 64 << 20;
/// Guest bytes per group, the unit of work of a worker (rounded to whole clusters, at least
/// one cluster).
const READ_GROUP: u64 = 1 << 20;
/// Granularity of zero detection for raw output (what stays a hole).
const RAW_ZERO_GRANULE: usize = 4096;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// qcow2 v3 (compat 1.1).
    #[default]
    Qcow2,
    /// A sparse raw file: zero runs stay holes.
    Raw,
    /// streamOptimized VMDK (vSphere, OVA, AWS import): every grain deflate-compressed
    /// ([`Compression::Deflate`] whatever [`ConvertOptions::compression`] says; the level
    /// applies), grain = cluster size.
    Vmdk,
    /// Fixed VHD (Azure, AWS): virtual size rounded up to a whole MiB, then the footer.
    VhdFixed,
    /// Dynamic VHD: 2 MiB blocks for the data only.
    VhdDynamic,
}

impl OutputFormat {
    /// The name used on the command line: `qcow2`, `raw`, `vmdk`, `vhd`, `vhd-dynamic`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Raw => "raw",
            OutputFormat::Vmdk => "vmdk",
            OutputFormat::VhdFixed => "vhd",
            OutputFormat::VhdDynamic => "vhd-dynamic",
        }
    }
}

/// Options of [`convert`].
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions<'a> {
    /// qcow2 or raw.
    pub format: OutputFormat,
    /// Compression of qcow2 clusters ([`Compression::None`] for raw).
    pub compression: Compression,
    /// Compression level; `None` = the codec's default (zstd 3 as qemu; zlib 9, see
    /// [`Compression::default_level`]).
    pub level: Option<i32>,
    /// qcow2 cluster size (power of two, 512 B..2 MiB); also the unit of reading.
    pub cluster_size: u32,
    /// Byte ranges of the input known to be free: they read as zeros in the output and are
    /// never read.
    pub skip: Option<&'a RangeSet>,
    /// fsync the output (and its directory) before returning. Off by default, as in
    /// `qemu-img convert`: the output is complete and renamed into place either way.
    pub sync: bool,
}

impl Default for ConvertOptions<'_> {
    fn default() -> Self {
        ConvertOptions {
            format: OutputFormat::Qcow2,
            compression: Compression::Zstd,
            level: None,
            cluster_size: 64 << 10,
            skip: None,
            sync: false,
        }
    }
}

/// What [`convert`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertReport {
    /// Guest size in bytes.
    pub virtual_size: u64,
    /// Bytes read from the input.
    pub bytes_read: u64,
    /// Bytes never read: unallocated/zero in the input, or in `skip`.
    pub bytes_skipped: u64,
    /// Bytes written to the output file (data and metadata).
    pub bytes_written: u64,
    /// Size of the output file (its apparent length).
    pub output_size: u64,
    /// Guest clusters in all.
    pub clusters: u64,
    /// Clusters that read as zero (not stored).
    pub clusters_zero: u64,
    /// Clusters stored compressed.
    pub clusters_compressed: u64,
    /// Clusters stored uncompressed.
    pub clusters_raw: u64,
}

/// One cluster of a group; the bytes are `Group::data[range]`.
enum Out {
    Zero,
    Raw(std::ops::Range<usize>),
    Compressed(std::ops::Range<usize>),
}

/// One group of clusters, read, tested and compressed by a worker.
struct Group {
    first: u64,
    clusters: Vec<Result<Out>>,
    /// The stored bytes of every non-zero cluster, one after the other. The buffer goes back
    /// to [`Pipeline::pool`] once written, so that steady state allocates nothing.
    data: Vec<u8>,
    read: u64,
    skipped: u64,
    bytes: u64,
}

/// Shared between the workers and the writer.
struct Pipeline {
    /// Next group a worker may take.
    next: u64,
    /// Groups written so far (the writer waits for group `written`).
    written: u64,
    /// Finished groups not yet written, by group number.
    done: BTreeMap<u64, Group>,
    /// Set by the writer on an error: workers stop taking groups.
    stop: bool,
    /// Written groups' data buffers, for reuse.
    pool: Vec<Vec<u8>>,
}

/// Convert `input` to `out_path`. The output is written under a temporary name in the same
/// directory and renamed to `out_path` only when complete ([`OutputFile`]): on error nothing
/// is left behind and an existing file at `out_path` is untouched.
pub fn convert(
    input: &dyn BlockDev,
    out_path: &Path,
    opts: &ConvertOptions<'_>,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    let cs = u64::from(opts.cluster_size);
    let compression = match opts.format {
        OutputFormat::Raw if opts.compression != Compression::None => {
            return Err(ShrinkError::InvalidOption(
                "raw output cannot be compressed (use --compress none or qcow2)".into(),
            ));
        }
        OutputFormat::Raw => Compression::None,
        OutputFormat::Qcow2 => opts.compression,
        OutputFormat::Vmdk => Compression::Deflate,
        OutputFormat::VhdFixed | OutputFormat::VhdDynamic => Compression::None,
    };
    let level = opts.level.unwrap_or(compression.default_level());
    compression.check_level(level)?;
    // Fail on a bad level before creating anything.
    ClusterCompressor::new(compression, level)?;
    let len = input.len();
    let virtual_size = match opts.format {
        // qemu sizes images in 512-byte sectors.
        OutputFormat::Qcow2 | OutputFormat::Vmdk => len.next_multiple_of(512),
        OutputFormat::Raw => len,
        // Azure's rule: a whole number of MiB.
        OutputFormat::VhdFixed | OutputFormat::VhdDynamic => len.max(1).next_multiple_of(1 << 20),
    };
    let mut sink = match opts.format {
        OutputFormat::Qcow2 => Sink::Qcow2(Box::new(Qcow2Stream::create(
            out_path,
            Qcow2Params {
                virtual_size,
                cluster_size: opts.cluster_size,
                compression,
            },
        )?)),
        OutputFormat::Raw => {
            Qcow2Params {
                virtual_size: 0,
                cluster_size: opts.cluster_size,
                compression,
            }
            .validate()?;
            Sink::Raw(RawSink::create(out_path, len, cs)?)
        }
        OutputFormat::Vmdk => Sink::Vmdk(Box::new(VmdkStream::create(out_path, virtual_size, cs)?)),
        OutputFormat::VhdFixed | OutputFormat::VhdDynamic => Sink::Vhd(Box::new(
            VhdStream::create(out_path, len, cs, opts.format == OutputFormat::VhdDynamic)?,
        )),
    };
    let clusters = len.div_ceil(cs);
    let per_group = (READ_GROUP / cs).max(1);
    let groups = clusters.div_ceil(per_group);
    // Groups in flight (taken by a worker, or finished and waiting for the writer).
    let window = (WINDOW_BYTES / (per_group * cs)).max(2);
    let workers = rayon::current_num_threads().clamp(1, 256);
    let mut report = ConvertReport {
        virtual_size,
        clusters,
        ..ConvertReport::default()
    };
    progress.begin("convert", len);

    let ctx = Ctx {
        input,
        cs,
        len,
        per_group,
        clusters,
        skip: opts.skip,
    };
    let shared = Mutex::new(Pipeline {
        next: 0,
        written: 0,
        done: BTreeMap::new(),
        stop: false,
        pool: Vec::new(),
    });
    let cond = Condvar::new();
    let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
    let written: Result<()> = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut w = Worker {
                    comp: ClusterCompressor::new(compression, level),
                    buf: Vec::new(),
                    data: Vec::new(),
                };
                loop {
                    let g = {
                        let mut st = lock();
                        while !st.stop && st.next < groups && st.next >= st.written + window {
                            st = cond.wait(st).unwrap_or_else(|p| p.into_inner());
                        }
                        if st.stop || st.next >= groups {
                            return;
                        }
                        w.data = st.pool.pop().unwrap_or_default();
                        st.next += 1;
                        st.next - 1
                    };
                    // A panic here would leave the writer waiting for group `g` forever:
                    // turn it into that group's error.
                    let out = panic::catch_unwind(AssertUnwindSafe(|| ctx.group(&mut w, g)))
                        .unwrap_or_else(|p| Group {
                            first: g * per_group,
                            clusters: vec![Err(ShrinkError::Worker(panic_message(&*p)))],
                            data: Vec::new(),
                            read: 0,
                            skipped: 0,
                            bytes: 0,
                        });
                    lock().done.insert(g, out);
                    cond.notify_all();
                }
            });
        }
        // The writer: groups in guest order, as they become ready.
        let result = (|| {
            for g in 0..groups {
                let group = {
                    let mut st = lock();
                    loop {
                        if let Some(group) = st.done.remove(&g) {
                            break group;
                        }
                        st = cond.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                };
                if progress.cancelled() {
                    return Err(ShrinkError::Cancelled);
                }
                let (done, mut data) = sink.write_group(group, &mut report)?;
                data.clear();
                let mut st = lock();
                st.written = g + 1;
                st.pool.push(data);
                drop(st);
                cond.notify_all();
                progress.advance(done);
            }
            Ok(())
        })();
        lock().stop = true;
        cond.notify_all();
        result
    });
    written?;
    let summary = sink.finish(opts.sync)?;
    report.output_size = summary.0;
    report.bytes_written += summary.1;
    progress.end();
    Ok(report)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// What a worker keeps from group to group.
struct Worker {
    comp: Result<ClusterCompressor>,
    /// The group's input bytes.
    buf: Vec<u8>,
    /// The output buffer for the group being worked on (taken from the pool).
    data: Vec<u8>,
}

struct Ctx<'a> {
    input: &'a dyn BlockDev,
    cs: u64,
    len: u64,
    per_group: u64,
    clusters: u64,
    skip: Option<&'a RangeSet>,
}

impl Ctx<'_> {
    /// Group `g`: what must be read (allocated data minus what the caller knows is free),
    /// one positional read per contiguous data run, then zero test and compression per
    /// cluster. Errors are returned in the group, in place of its clusters.
    fn group(&self, w: &mut Worker, g: u64) -> Group {
        let first = g * self.per_group;
        let n = self.per_group.min(self.clusters - first);
        let start = first * self.cs;
        let end = ((first + n) * self.cs).min(self.len);
        let failed = |e: ShrinkError| Group {
            first,
            clusters: vec![Err(e)],
            data: Vec::new(),
            read: 0,
            skipped: 0,
            bytes: 0,
        };
        let mut data = RangeSet::new();
        match self.input.allocation(start, end - start) {
            Ok(ranges) => {
                for r in ranges.into_iter().filter(|r| r.kind == AllocKind::Data) {
                    data.insert(r.offset, r.len);
                }
            }
            Err(e) => return failed(e.into()),
        }
        if let Some(skip) = self.skip {
            let mut keep = RangeSet::new();
            for (s, e) in data.ranges().to_vec() {
                for (a, b) in skip.complement_within(s, e - s) {
                    keep.insert(a, b - a);
                }
            }
            data = keep;
        }
        let read = data.total();
        let clusters = self.read_and_compress(w, &data, first, n);
        Group {
            first,
            clusters,
            data: std::mem::take(&mut w.data),
            read,
            skipped: (end - start) - read,
            bytes: end - start,
        }
    }

    /// Read clusters `g0..g0+gn` (only the bytes in `data`), then test and compress each.
    fn read_and_compress(
        &self,
        w: &mut Worker,
        data: &RangeSet,
        g0: u64,
        gn: u64,
    ) -> Vec<Result<Out>> {
        let cs = self.cs;
        let off = g0 * cs;
        let span = (gn * cs).min(self.len - off);
        let ranges = data.intersect(off, span);
        if ranges.is_empty() {
            return (0..gn).map(|_| Ok(Out::Zero)).collect();
        }
        // Whole clusters: the tail cluster is zero-padded. The buffer is the worker's, reused
        // from group to group (a fresh 1 MiB allocation is an mmap and 256 page faults). Only
        // clusters that hold data are filled: their bytes outside `ranges` are zeroed, the
        // other clusters are zero without being touched, tested or compressed.
        let Worker { comp, buf, data } = w;
        let csz = cs as usize;
        buf.resize((gn * cs) as usize, 0);
        let mut touched = vec![false; gn as usize];
        for &(s, e) in &ranges {
            let (a, b) = ((s - off) / cs, (e - 1 - off) / cs);
            for t in touched.iter_mut().take(b as usize + 1).skip(a as usize) {
                *t = true;
            }
        }
        // Zero the bytes of `a..b` that lie in clusters holding data.
        let zero_gap = |buf: &mut Vec<u8>, a: usize, b: usize| {
            if a >= b {
                return;
            }
            for i in a / csz..=(b - 1) / csz {
                if touched.get(i) == Some(&true) {
                    let (z0, z1) = (a.max(i * csz), b.min((i + 1) * csz));
                    if let Some(z) = buf.get_mut(z0..z1) {
                        z.fill(0);
                    }
                }
            }
        };
        let mut pos = 0usize;
        for &(s, e) in &ranges {
            let at = (s - off) as usize;
            zero_gap(buf, pos, at);
            let Some(dst) = buf.get_mut(at..at + (e - s) as usize) else {
                let err = ShrinkError::InvalidOption("allocation range outside the group".into());
                return vec![Err(err)];
            };
            if let Err(e) = self.input.read_at(dst, s) {
                return vec![Err(e.into())];
            }
            pos = at + (e - s) as usize;
        }
        zero_gap(buf, pos, buf.len());
        buf.chunks(csz)
            .zip(&touched)
            .map(|(cluster, &touched)| {
                if !touched || is_zero(cluster) {
                    return Ok(Out::Zero);
                }
                let comp = comp.as_mut().map_err(|e| ShrinkError::Compress {
                    codec: "init",
                    detail: e.to_string(),
                })?;
                let at = data.len();
                Ok(if comp.compress_append(cluster, data)? {
                    Out::Compressed(at..data.len())
                } else {
                    data.extend_from_slice(cluster);
                    Out::Raw(at..data.len())
                })
            })
            .collect()
    }
}

enum Sink {
    Qcow2(Box<Qcow2Stream>),
    Raw(RawSink),
    Vmdk(Box<VmdkStream>),
    Vhd(Box<VhdStream>),
}

impl Sink {
    /// Write one group; returns the guest bytes it covered.
    /// Write one group; returns the guest bytes it covered and the group's data buffer.
    fn write_group(&mut self, b: Group, report: &mut ConvertReport) -> Result<(u64, Vec<u8>)> {
        let Group {
            first,
            clusters,
            data,
            read,
            skipped,
            bytes: covered,
        } = b;
        report.bytes_read += read;
        report.bytes_skipped += skipped;
        let bytes = |r: &std::ops::Range<usize>| data.get(r.clone()).unwrap_or_default();
        for (i, out) in clusters.into_iter().enumerate() {
            let index = first + i as u64;
            let out = out?;
            match &out {
                Out::Zero => report.clusters_zero += 1,
                Out::Raw(_) => report.clusters_raw += 1,
                Out::Compressed(_) => report.clusters_compressed += 1,
            }
            match self {
                Sink::Qcow2(q) => {
                    let cluster = match &out {
                        Out::Zero => ClusterData::Zero,
                        Out::Raw(r) => ClusterData::Raw(bytes(r)),
                        Out::Compressed(r) => ClusterData::Compressed(bytes(r)),
                    };
                    q.push(index, cluster)?;
                }
                Sink::Raw(r) => {
                    if let Out::Raw(v) | Out::Compressed(v) = &out {
                        report.bytes_written += r.write_cluster(index, bytes(v))?;
                    }
                }
                Sink::Vmdk(v) => {
                    let cluster = match &out {
                        Out::Zero => ClusterData::Zero,
                        Out::Raw(r) => ClusterData::Raw(bytes(r)),
                        Out::Compressed(r) => ClusterData::Compressed(bytes(r)),
                    };
                    v.push(index, cluster)?;
                }
                Sink::Vhd(v) => {
                    if let Out::Raw(r) | Out::Compressed(r) = &out {
                        report.bytes_written += v.push(index, ClusterData::Raw(bytes(r)))?;
                    }
                }
            }
        }
        Ok((covered, data))
    }

    /// Returns the output file size and, for qcow2, the bytes of the whole file.
    fn finish(self, sync: bool) -> Result<(u64, u64)> {
        match self {
            Sink::Qcow2(q) => {
                let s = q.finish(sync)?;
                Ok((s.file_size, s.file_size))
            }
            Sink::Raw(r) => r.finish(sync),
            Sink::Vmdk(v) => {
                let size = v.finish(sync)?;
                Ok((size, size))
            }
            Sink::Vhd(v) => v.finish(sync),
        }
    }
}

struct RawSink {
    out: OutputFile,
    cs: u64,
    len: u64,
}

impl RawSink {
    fn create(path: &Path, len: u64, cs: u64) -> Result<Self> {
        let out = OutputFile::create(path)?;
        out.file()
            .set_len(len)
            .map_err(|e| ShrinkError::io(format!("resize {}", out.dest().display()), e))?;
        Ok(RawSink { out, cs, len })
    }

    /// Write the non-zero 4 KiB runs of one cluster; returns bytes written.
    fn write_cluster(&self, index: u64, buf: &[u8]) -> Result<u64> {
        let off = index * self.cs;
        let valid = (self.len.saturating_sub(off)).min(buf.len() as u64) as usize;
        let buf = buf.get(..valid).unwrap_or_default();
        let mut written = 0u64;
        let mut run: Option<usize> = None;
        let granules: Vec<&[u8]> = buf.chunks(RAW_ZERO_GRANULE).collect();
        for (g, chunk) in granules.iter().enumerate() {
            let pos = g * RAW_ZERO_GRANULE;
            match (is_zero(chunk), run) {
                (false, None) => run = Some(pos),
                (true, Some(s)) => {
                    written += self.put(buf.get(s..pos).unwrap_or_default(), off + s as u64)?;
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(s) = run {
            written += self.put(buf.get(s..).unwrap_or_default(), off + s as u64)?;
        }
        Ok(written)
    }

    fn put(&self, data: &[u8], at: u64) -> Result<u64> {
        self.out.file().write_all_at(data, at).map_err(|e| {
            ShrinkError::io(
                format!(
                    "write {} bytes at {at:#x} of {}",
                    data.len(),
                    self.out.dest().display()
                ),
                e,
            )
        })?;
        Ok(data.len() as u64)
    }

    fn finish(self, sync: bool) -> Result<(u64, u64)> {
        self.out.commit(sync)?;
        Ok((self.len, 0))
    }
}
