//! Write-once, sequential producers of the cloud import formats: streamOptimized VMDK
//! ([`VmdkStream`]) and VHD, fixed or dynamic ([`VhdStream`]). Clusters arrive in guest order
//! from the parallel converter, as for [`crate::Qcow2Stream`].
//!
//! streamOptimized VMDK, as VMware's "Virtual Disk Format 5.0" lays a stream out (what
//! vSphere, OVF tools and AWS import read):
//!
//! ```text
//! sector 0          header: version 3, compressed + markers, gd_offset = GD_AT_END (written last)
//! sectors 1..=20    embedded descriptor (createType="streamOptimized", qemu's DDB fields)
//! sector 128...     grains in guest order: marker (LBA, size) + deflate stream, sector-padded;
//!                   after the grains of each grain table (32 MiB of guest): GT marker + GT
//! then              GD marker + grain directory, footer marker + footer (the header with
//!                   the real gd_offset), end-of-stream marker
//! ```
//!
//! Every grain table is written, empty ones too. Zero grains are not stored (GT entry 0).
//!
//! VHD fixed: the guest (virtual size rounded up to a whole MiB, as Azure requires) then the
//! footer; the file is virtual size + 512 bytes, zero runs stay holes. VHD dynamic: footer
//! copy, dynamic header, BAT, then 2 MiB blocks (a sector bitmap of ones + data) for every
//! block holding data, in guest order, and the footer. The footers say creator `qem2`, the
//! creator qemu itself uses for "sized by `current_size`"; the unique id and the VMDK CID are
//! derived from the content, so the same input gives the same bytes.

use crate::error::{Result, ShrinkError};
use crate::output::OutputFile;
use crate::qcow2_out::ClusterData;
use imgscrub_formats::vhd::{self, DynamicHeader, Footer};
use imgscrub_formats::vmdk::{self, SparseHeader};
use std::os::unix::fs::FileExt;
use std::path::Path;

const WRITE_BUFFER: usize = 4 << 20;
/// Sectors reserved for the embedded descriptor.
const DESC_SECTORS: u64 = 20;
/// Sectors before the first grain (64 KiB, as VMware's writers).
const OVERHEAD_SECTORS: u64 = 128;
const GTES_PER_GT: u64 = 512;

/// A file written front to back through a buffer.
#[derive(Debug)]
struct Appender {
    out: OutputFile,
    buf: Vec<u8>,
    buf_off: u64,
    written: u64,
    hash: crc32fast::Hasher,
}

impl Appender {
    fn new(out: OutputFile, start: u64) -> Self {
        Appender {
            out,
            buf: Vec::with_capacity(WRITE_BUFFER),
            buf_off: start,
            written: 0,
            hash: crc32fast::Hasher::new(),
        }
    }

    fn pos(&self) -> u64 {
        self.buf_off + self.buf.len() as u64
    }

    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.hash.update(data);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUFFER {
            self.drain()?;
        }
        Ok(())
    }

    /// Pad with zeros to a whole sector.
    fn pad(&mut self) -> Result<()> {
        let n = (512 - (self.pos() % 512)) % 512;
        if n > 0 {
            self.append(&[0u8; 512][..n as usize])?;
        }
        Ok(())
    }

    /// Skip `n` bytes (they stay a hole).
    fn skip(&mut self, n: u64) -> Result<()> {
        self.drain()?;
        self.buf_off += n;
        Ok(())
    }

    fn drain(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.write_at(&self.buf, self.buf_off)?;
            self.written += self.buf.len() as u64;
            self.buf_off += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], at: u64) -> Result<()> {
        self.out.file().write_all_at(data, at).map_err(|e| {
            ShrinkError::io(
                format!(
                    "write {} bytes at {at:#x} of {}",
                    data.len(),
                    self.out.dest().display()
                ),
                e,
            )
        })
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.out
            .file()
            .set_len(len)
            .map_err(|e| ShrinkError::io(format!("resize {}", self.out.dest().display()), e))
    }
}

/// A streamOptimized VMDK being written.
#[derive(Debug)]
pub struct VmdkStream {
    w: Appender,
    name: String,
    capacity: u64,
    grain_sectors: u64,
    gd: Vec<u32>,
    gt: Vec<u32>,
    /// Index of the grain table being filled.
    gt_index: u64,
}

impl VmdkStream {
    /// Start a VMDK of `virtual_size` bytes (a multiple of 512) with grains of `grain` bytes
    /// (a power of two, 4 KiB to 1 MiB).
    pub fn create(path: &Path, virtual_size: u64, grain: u64) -> Result<Self> {
        if !grain.is_power_of_two() || !(4096..=(1 << 20)).contains(&grain) {
            return Err(ShrinkError::InvalidOption(format!(
                "VMDK grain size {grain} is not a power of two between 4 KiB and 1 MiB"
            )));
        }
        let capacity = virtual_size.div_ceil(512);
        let grain_sectors = grain / 512;
        let gts = capacity.div_ceil(grain_sectors * GTES_PER_GT);
        if capacity > (1 << 40) / 512 * 2 {
            return Err(ShrinkError::TooLarge(format!(
                "{virtual_size} bytes is more than a VMDK holds"
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "disk.vmdk".into());
        let out = OutputFile::create(path)?;
        Ok(VmdkStream {
            w: Appender::new(out, OVERHEAD_SECTORS * 512),
            name,
            capacity,
            grain_sectors,
            gd: vec![0; gts as usize],
            gt: vec![0; GTES_PER_GT as usize],
            gt_index: 0,
        })
    }

    fn sector_now(&self) -> Result<u32> {
        u32::try_from(self.w.pos() / 512).map_err(|_| {
            ShrinkError::TooLarge("a VMDK file beyond 2 TiB (32-bit sector numbers)".into())
        })
    }

    /// Write grain tables up to (not including) `upto`.
    fn close_gts(&mut self, upto: u64) -> Result<()> {
        while self.gt_index < upto && (self.gt_index as usize) < self.gd.len() {
            self.w.append(&vmdk::metadata_marker(4, vmdk::MARKER_GT))?;
            let at = self.sector_now()?;
            let mut b = Vec::with_capacity(2048);
            for e in &self.gt {
                b.extend_from_slice(&e.to_le_bytes());
            }
            self.w.append(&b)?;
            if let Some(g) = self.gd.get_mut(self.gt_index as usize) {
                *g = at;
            }
            self.gt.iter_mut().for_each(|e| *e = 0);
            self.gt_index += 1;
        }
        Ok(())
    }

    /// Add guest grain `index` (grains arrive in increasing order). Every stored grain is a
    /// deflate stream in zlib framing ([`crate::Compression::Deflate`]).
    pub fn push(&mut self, index: u64, data: ClusterData<'_>) -> Result<()> {
        let bytes = match data {
            ClusterData::Zero => return Ok(()),
            ClusterData::Compressed(b) => b,
            ClusterData::Raw(_) => {
                return Err(ShrinkError::InvalidOption(
                    "a streamOptimized VMDK stores only compressed grains".into(),
                ));
            }
        };
        let t = index / GTES_PER_GT;
        if t < self.gt_index {
            return Err(ShrinkError::InvalidOption("grains out of order".into()));
        }
        self.close_gts(t)?;
        let at = self.sector_now()?;
        let mut marker = [0u8; 12];
        marker[..8].copy_from_slice(&(index * self.grain_sectors).to_le_bytes());
        let size = u32::try_from(bytes.len())
            .map_err(|_| ShrinkError::InvalidOption("grain too large".into()))?;
        marker[8..].copy_from_slice(&size.to_le_bytes());
        self.w.append(&marker)?;
        self.w.append(bytes)?;
        self.w.pad()?;
        if let Some(e) = self.gt.get_mut((index % GTES_PER_GT) as usize) {
            *e = at;
        }
        Ok(())
    }

    /// Write the remaining tables, the directory, footer, header and descriptor, and give the
    /// file its name. Returns the file size.
    pub fn finish(mut self, sync: bool) -> Result<u64> {
        self.close_gts(self.gd.len() as u64)?;
        let gd_bytes = (self.gd.len() * 4).next_multiple_of(512);
        self.w.append(&vmdk::metadata_marker(
            gd_bytes as u64 / 512,
            vmdk::MARKER_GD,
        ))?;
        let gd_sector = self.sector_now()?;
        let mut b = vec![0u8; gd_bytes];
        for (i, e) in self.gd.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&e.to_le_bytes());
        }
        self.w.append(&b)?;
        let mut h = SparseHeader {
            version: 3,
            flags: vmdk::FLAG_NL_DETECT | vmdk::FLAG_COMPRESSED | vmdk::FLAG_MARKERS,
            capacity: self.capacity,
            granularity: self.grain_sectors,
            desc_offset: 1,
            desc_size: DESC_SECTORS,
            num_gtes_per_gt: GTES_PER_GT as u32,
            rgd_offset: 0,
            gd_offset: u64::from(gd_sector),
            overhead: OVERHEAD_SECTORS,
            unclean_shutdown: false,
            compress_algorithm: vmdk::COMPRESSION_DEFLATE,
        };
        self.w
            .append(&vmdk::metadata_marker(1, vmdk::MARKER_FOOTER))?;
        self.w.append(&h.to_bytes())?;
        self.w.append(&vmdk::metadata_marker(0, vmdk::MARKER_EOS))?;
        self.w.drain()?;
        let size = self.w.pos();
        // The content id: a hash of everything after the descriptor.
        let cid = self.w.hash.clone().finalize();
        h.gd_offset = vmdk::GD_AT_END;
        let desc = vmdk::stream_descriptor(cid, self.capacity, &self.name);
        if desc.len() as u64 > DESC_SECTORS * 512 {
            return Err(ShrinkError::InvalidOption(format!(
                "the VMDK descriptor does not fit in {DESC_SECTORS} sectors (file name too long)"
            )));
        }
        let mut head = vec![0u8; ((1 + DESC_SECTORS) * 512) as usize];
        head[..512].copy_from_slice(&h.to_bytes());
        head[512..512 + desc.len()].copy_from_slice(desc.as_bytes());
        self.w.write_at(&head, 0)?;
        self.w.set_len(size)?;
        self.w.out.commit(sync)?;
        Ok(size)
    }
}

/// A VHD being written (fixed or dynamic).
#[derive(Debug)]
pub struct VhdStream {
    w: Appender,
    dynamic: bool,
    virtual_size: u64,
    cs: u64,
    /// Dynamic: the BAT, and where the block being filled lives in the file.
    bat: Vec<u32>,
    block: u64,
    cur_block: Option<(u64, u64)>,
    hash: crc32fast::Hasher,
}

impl VhdStream {
    /// Start a VHD whose virtual size is `guest_len` rounded up to a whole MiB, fed clusters
    /// of `cluster_size` bytes (a power of two up to 2 MiB).
    pub fn create(path: &Path, guest_len: u64, cluster_size: u64, dynamic: bool) -> Result<Self> {
        let virtual_size = guest_len.max(1).next_multiple_of(1 << 20);
        if virtual_size > vhd::MAX_SIZE {
            return Err(ShrinkError::TooLarge(format!(
                "a VHD holds at most 2040 GiB; this disk is {guest_len} bytes"
            )));
        }
        let block = u64::from(vhd::DEFAULT_BLOCK_SIZE);
        if !cluster_size.is_power_of_two() || cluster_size > block || cluster_size < 512 {
            return Err(ShrinkError::InvalidOption(format!(
                "cluster size {cluster_size} does not divide the 2 MiB VHD block"
            )));
        }
        let out = OutputFile::create(path)?;
        let entries = virtual_size.div_ceil(block);
        let start = if dynamic {
            1536 + (entries * 4).next_multiple_of(512)
        } else {
            0
        };
        let w = Appender::new(out, start);
        if !dynamic {
            w.set_len(virtual_size + vhd::FOOTER_SIZE)?;
        }
        Ok(VhdStream {
            w,
            dynamic,
            virtual_size,
            cs: cluster_size,
            bat: vec![u32::MAX; entries as usize],
            block,
            cur_block: None,
            hash: crc32fast::Hasher::new(),
        })
    }

    /// The virtual size (whole MiB).
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Add guest cluster `index` (increasing order); returns bytes written.
    pub fn push(&mut self, index: u64, data: ClusterData<'_>) -> Result<u64> {
        let bytes = match data {
            ClusterData::Zero => return Ok(0),
            ClusterData::Raw(b) => b,
            ClusterData::Compressed(_) => {
                return Err(ShrinkError::InvalidOption(
                    "VHD clusters are not compressed".into(),
                ));
            }
        };
        let guest = index * self.cs;
        let valid = (self.virtual_size.saturating_sub(guest)).min(bytes.len() as u64) as usize;
        let bytes = bytes.get(..valid).unwrap_or_default();
        self.hash.update(&guest.to_le_bytes());
        self.hash.update(bytes);
        if !self.dynamic {
            // Zero 4 KiB runs stay holes.
            let mut written = 0;
            let mut run: Option<usize> = None;
            let chunks: Vec<&[u8]> = bytes.chunks(4096).collect();
            for (i, c) in chunks.iter().enumerate() {
                let zero = crate::compress::is_zero(c);
                match (zero, run) {
                    (false, None) => run = Some(i * 4096),
                    (true, Some(s)) => {
                        let part = bytes.get(s..i * 4096).unwrap_or_default();
                        self.w.write_at(part, guest + s as u64)?;
                        written += part.len() as u64;
                        run = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = run {
                let part = bytes.get(s..).unwrap_or_default();
                self.w.write_at(part, guest + s as u64)?;
                written += part.len() as u64;
            }
            return Ok(written);
        }
        let b = guest / self.block;
        let base = match self.cur_block {
            Some((cb, base)) if cb == b => base,
            _ => {
                // A new block: its bitmap (every sector present), then room for its data.
                self.w.drain()?;
                let at = self.w.pos();
                let sector = u32::try_from(at / 512)
                    .map_err(|_| ShrinkError::TooLarge("VHD beyond 2 TiB".into()))?;
                if let Some(e) = self.bat.get_mut(b as usize) {
                    *e = sector;
                }
                self.w.append(&[0xff; 512])?;
                self.w.drain()?;
                self.w.skip(self.block)?;
                self.cur_block = Some((b, at + 512));
                at + 512
            }
        };
        self.w.write_at(bytes, base + guest % self.block)?;
        Ok(bytes.len() as u64)
    }

    /// Write the footer (and for a dynamic disk the header, BAT and footer copy) and give the
    /// file its name. Returns (file size, metadata bytes written).
    pub fn finish(mut self, sync: bool) -> Result<(u64, u64)> {
        let digest = self.hash.clone().finalize();
        let mut uuid = [0u8; 16];
        uuid[..4].copy_from_slice(&digest.to_be_bytes());
        uuid[4..12].copy_from_slice(&self.virtual_size.to_be_bytes());
        uuid[12..].copy_from_slice(&(digest ^ 0x5ca1_ab1e).to_le_bytes());
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let kind = if self.dynamic {
            vhd::TYPE_DYNAMIC
        } else {
            vhd::TYPE_FIXED
        };
        let footer = Footer::new(kind, self.virtual_size, uuid).to_bytes();
        if !self.dynamic {
            self.w.write_at(&footer, self.virtual_size)?;
            self.w.out.commit(sync)?;
            return Ok((self.virtual_size + vhd::FOOTER_SIZE, vhd::FOOTER_SIZE));
        }
        self.w.drain()?;
        let end = self.w.pos();
        let entries = self.bat.len();
        let mut bat = vec![0xffu8; (entries * 4).next_multiple_of(512)];
        for (i, e) in self.bat.iter().enumerate() {
            bat[i * 4..i * 4 + 4].copy_from_slice(&e.to_be_bytes());
        }
        let header = DynamicHeader {
            table_offset: 1536,
            max_table_entries: entries as u32,
            block_size: self.block as u32,
        }
        .to_bytes();
        let mut head = Vec::with_capacity(1536 + bat.len());
        head.extend_from_slice(&footer);
        head.extend_from_slice(&header);
        head.extend_from_slice(&bat);
        self.w.write_at(&head, 0)?;
        self.w.write_at(&footer, end)?;
        self.w.set_len(end + vhd::FOOTER_SIZE)?;
        self.w.out.commit(sync)?;
        let blocks = self.bat.iter().filter(|&&e| e != u32::MAX).count() as u64;
        Ok((
            end + vhd::FOOTER_SIZE,
            head.len() as u64 + vhd::FOOTER_SIZE + blocks * 512,
        ))
    }
}
