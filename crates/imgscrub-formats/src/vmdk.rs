//! VMware VMDK hosted sparse extents: monolithicSparse and streamOptimized, read as a
//! [`BlockDev`]; the header, markers and descriptor the streamOptimized writer needs.
//!
//! Layout (VMware "Virtual Disk Format 5.0"): a 512-byte little-endian header (`KDMV`), an
//! embedded text descriptor, a grain directory (GD) of 32-bit sector numbers of grain tables
//! (GT), each GT 512 (`num_gtes_per_gt`) 32-bit sector numbers of grains. A GT entry of 0 is
//! an unallocated grain (reads as zeros; there is never a parent here), 1 a zero grain when the
//! header has the zeroed-grain flag. streamOptimized files compress every grain (deflate in
//! zlib framing) behind a 12-byte marker (LBA, size) and may put the GD at the end of the file,
//! found through a footer (a second header) in the file's last 1536 bytes:
//! footer marker, footer, end-of-stream marker.

use crate::bounded::ImageFile;
use crate::le::{le16, le32, le64, put};
use imgscrub_disk::RawFile;
use imgscrub_disk::{AllocKind, AllocRange, BlockDev, DiskError, Result, check_range};
use std::path::Path;
use std::sync::Mutex;

/// `KDMV` read as a little-endian u32.
pub const MAGIC: u32 = 0x564d_444b;
/// Header flag: the newline test bytes are valid.
pub const FLAG_NL_DETECT: u32 = 1 << 0;
/// Header flag: a redundant grain directory exists.
pub const FLAG_RGD: u32 = 1 << 1;
/// Header flag: GT entry 1 means a zero grain.
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
/// Header flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Header flag: grains and metadata are preceded by markers.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// `gd_offset` meaning "the grain directory is at the end: read the footer".
pub const GD_AT_END: u64 = u64::MAX;
/// `compress_algorithm` deflate.
pub const COMPRESSION_DEFLATE: u16 = 1;
/// Metadata marker types.
pub const MARKER_EOS: u32 = 0;
/// A grain table follows.
pub const MARKER_GT: u32 = 1;
/// The grain directory follows.
pub const MARKER_GD: u32 = 2;
/// The footer follows.
pub const MARKER_FOOTER: u32 = 3;
/// Sector size of every VMDK offset.
pub const SECTOR: u64 = 512;
/// Most GT entries we load (256 MiB of tables; 2 TiB of 64 KiB grains is 32 Mi entries).
const MAX_GT_ENTRIES: u64 = 64 << 20;

/// The sparse extent header (and the streamOptimized footer, which has the same form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SparseHeader {
    /// 1, 2 (zeroed-grain GTEs) or 3 (streamOptimized).
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub granularity: u64,
    /// Embedded descriptor: first sector (0: none) and length in sectors.
    pub desc_offset: u64,
    /// Length of the embedded descriptor in sectors.
    pub desc_size: u64,
    /// Entries per grain table (512).
    pub num_gtes_per_gt: u32,
    /// Redundant grain directory sector.
    pub rgd_offset: u64,
    /// Grain directory sector, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// Set while a writer has the file open.
    pub unclean_shutdown: bool,
    /// [`COMPRESSION_DEFLATE`] or 0.
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Decode (no validation beyond the magic; see [`SparseHeader::validate`]).
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < 79 || le32(b, 0) != MAGIC {
            return Err(DiskError::corrupt("VMDK header", "no KDMV magic"));
        }
        Ok(SparseHeader {
            version: le32(b, 4),
            flags: le32(b, 8),
            capacity: le64(b, 12),
            granularity: le64(b, 20),
            desc_offset: le64(b, 28),
            desc_size: le64(b, 36),
            num_gtes_per_gt: le32(b, 44),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            overhead: le64(b, 64),
            unclean_shutdown: b.get(72).is_some_and(|&x| x != 0),
            compress_algorithm: le16(b, 77),
        })
    }

    /// Encode as one 512-byte sector.
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        put(&mut b, 0, &MAGIC.to_le_bytes());
        put(&mut b, 4, &self.version.to_le_bytes());
        put(&mut b, 8, &self.flags.to_le_bytes());
        put(&mut b, 12, &self.capacity.to_le_bytes());
        put(&mut b, 20, &self.granularity.to_le_bytes());
        put(&mut b, 28, &self.desc_offset.to_le_bytes());
        put(&mut b, 36, &self.desc_size.to_le_bytes());
        put(&mut b, 44, &self.num_gtes_per_gt.to_le_bytes());
        put(&mut b, 48, &self.rgd_offset.to_le_bytes());
        put(&mut b, 56, &self.gd_offset.to_le_bytes());
        put(&mut b, 64, &self.overhead.to_le_bytes());
        b[72] = u8::from(self.unclean_shutdown);
        put(&mut b, 73, b"\n \r\n");
        put(&mut b, 77, &self.compress_algorithm.to_le_bytes());
        b
    }

    /// Check what a reader relies on: version, grain size, GT size, compression.
    pub fn validate(&self) -> Result<()> {
        let bad = |d: String| Err(DiskError::corrupt("VMDK header", d));
        if !(1..=3).contains(&self.version) {
            return Err(DiskError::Unsupported(format!(
                "VMDK sparse extent version {}",
                self.version
            )));
        }
        if !self.granularity.is_power_of_two() || !(8..=2048).contains(&self.granularity) {
            return bad(format!("grain size of {} sectors", self.granularity));
        }
        // qemu's limit too.
        if self.num_gtes_per_gt == 0 || self.num_gtes_per_gt > 512 {
            return bad(format!("{} entries per grain table", self.num_gtes_per_gt));
        }
        if self.capacity > (1 << 40) {
            return bad(format!("capacity of {} sectors", self.capacity));
        }
        if self.flags & FLAG_COMPRESSED != 0 && self.compress_algorithm != COMPRESSION_DEFLATE {
            return Err(DiskError::Unsupported(format!(
                "VMDK compression algorithm {}",
                self.compress_algorithm
            )));
        }
        Ok(())
    }

    /// Grains covered by one grain table.
    pub fn gt_coverage(&self) -> u64 {
        self.granularity * u64::from(self.num_gtes_per_gt)
    }

    /// Entries of the grain directory.
    pub fn gd_entries(&self) -> u64 {
        self.capacity.div_ceil(self.gt_coverage().max(1))
    }
}

/// A metadata marker sector: `num_sectors` of metadata of `kind` follow.
pub fn metadata_marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    put(&mut b, 0, &num_sectors.to_le_bytes());
    put(&mut b, 12, &kind.to_le_bytes());
    b
}

/// The descriptor of a streamOptimized disk of `sectors` sectors stored in `file_name`, with
/// the fields qemu writes (and vSphere/AWS import read): hardware version 4, IDE geometry.
pub fn stream_descriptor(cid: u32, sectors: u64, file_name: &str) -> String {
    let cylinders = (sectors / (16 * 63)).min(16383);
    // Quotes and newlines cannot be in a descriptor string.
    let name: String = file_name
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\n# Extent description\nRW {sectors} SPARSE \"{name}\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\nddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n\
         ddb.toolsVersion = \"2147483647\"\n"
    )
}

/// The `createType` of a descriptor text, if `text` is one.
fn create_type(text: &[u8]) -> Option<String> {
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    let text = std::str::from_utf8(text.get(..end)?).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "createType").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The extent lines of a descriptor: (access, sectors, type, file).
fn extents(text: &str) -> Vec<(String, u64, String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let mut it = l.splitn(4, ' ');
            let access = it.next()?;
            if !matches!(access, "RW" | "RDONLY" | "NOACCESS") {
                return None;
            }
            let sectors = it.next()?.parse().ok()?;
            let kind = it.next()?.to_string();
            let file = it.next().unwrap_or("").trim().trim_matches('"').to_string();
            Some((access.to_string(), sectors, kind, file))
        })
        .collect()
}

/// A descriptor text file (not an extent): its `createType`.
pub fn descriptor_create_type(head: &[u8]) -> Option<String> {
    let start = head.get(..head.len().min(1024))?;
    let text_end = start.iter().position(|&b| b == 0).unwrap_or(start.len());
    let text = start.get(..text_end)?;
    if text.iter().any(|&b| b < 9 || (b > 13 && b < 32 && b != 27)) {
        return None;
    }
    let s = String::from_utf8_lossy(text);
    if !s.trim_start().starts_with("# Disk DescriptorFile") && !s.contains("createType") {
        return None;
    }
    Some(create_type(head).unwrap_or_else(|| "descriptor".into()))
}

/// The subformat of a `KDMV` extent from its first bytes: the embedded descriptor's
/// `createType`, `streamOptimized` from the flags, or `extent` without a descriptor.
pub fn sparse_subformat(head: &[u8]) -> String {
    let Ok(h) = SparseHeader::parse(head) else {
        return "monolithicSparse".into();
    };
    if h.desc_offset == 0 || h.desc_size == 0 {
        return if h.flags & FLAG_COMPRESSED != 0 && h.flags & FLAG_MARKERS != 0 {
            "streamOptimized".into()
        } else {
            "extent".into()
        };
    }
    let at = h.desc_offset.saturating_mul(SECTOR);
    let len = h.desc_size.saturating_mul(SECTOR).min(1 << 20);
    let text = usize::try_from(at)
        .ok()
        .and_then(|a| head.get(a..a.saturating_add(len as usize).min(head.len())));
    match text.and_then(create_type) {
        Some(t) => t,
        None if h.flags & FLAG_COMPRESSED != 0 => "streamOptimized".into(),
        // An empty descriptor area: an extent of a split disk (qemu leaves it blank there).
        None => "extent".into(),
    }
}

/// A monolithicSparse or streamOptimized VMDK, read-only.
pub struct Vmdk {
    file: ImageFile,
    len: u64,
    grain: u64,
    compressed: bool,
    markers: bool,
    zero_grain: bool,
    /// Entries per grain table.
    per_gt: u64,
    /// The grain tables by grain directory index (`None`: not allocated, all zero); each
    /// entry the sector of a grain (0 = unallocated, 1 with `zero_grain` = zero).
    gts: Vec<Option<Vec<u32>>>,
    /// The last grain decompressed.
    cache: Mutex<Option<(u64, Vec<u8>)>>,
}

impl std::fmt::Debug for Vmdk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmdk")
            .field("name", &self.file.name())
            .field("len", &self.len)
            .field("grain", &self.grain)
            .field("compressed", &self.compressed)
            .finish_non_exhaustive()
    }
}

impl Vmdk {
    /// Open the file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = RawFile::open(path)?;
        Self::from_dev(Box::new(file), &path.display().to_string())
    }

    /// Read the structures of a VMDK file held by `file` (a raw file, or memory; `name` is
    /// used in messages). Memory used is bounded by the tables present in the file.
    pub fn from_dev(file: Box<dyn BlockDev>, name: &str) -> Result<Self> {
        let file = ImageFile::new(file, name, "VMDK");
        let file_len = file.len();
        let mut hb = [0u8; 512];
        file.read(&mut hb, 0, "the header")?;
        let mut h = SparseHeader::parse(&hb)?;
        // The embedded descriptor must describe one sparse extent: this file.
        if h.desc_offset == 0 || h.desc_size == 0 {
            return Err(DiskError::Unsupported(format!(
                "{name}: a VMDK extent without descriptor (part of a split disk): convert its \
                 descriptor file with `qemu-img convert -O qcow2`"
            )));
        }
        file.fits(
            h.desc_offset.saturating_mul(SECTOR),
            h.desc_size.saturating_mul(SECTOR),
            "the descriptor",
        )?;
        if h.desc_size > 2048 {
            return Err(DiskError::corrupt(
                "VMDK descriptor",
                format!("{} sectors long", h.desc_size),
            ));
        }
        let mut desc = vec![0u8; (h.desc_size * SECTOR) as usize];
        file.read(
            &mut desc,
            h.desc_offset.saturating_mul(SECTOR),
            "the descriptor",
        )?;
        let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
        let text = String::from_utf8_lossy(desc.get(..end).unwrap_or_default()).into_owned();
        let ext = extents(&text);
        if ext.is_empty() {
            return Err(DiskError::Unsupported(format!(
                "{name}: a VMDK extent without descriptor (part of a split disk): convert its \
                 descriptor file with `qemu-img convert -O qcow2`"
            )));
        }
        if ext.len() != 1 || ext.first().is_some_and(|e| e.2 != "SPARSE") {
            return Err(DiskError::Unsupported(format!(
                "{name}: a VMDK whose descriptor lists {} extents ({}): convert it with \
                 `qemu-img convert -O qcow2`",
                ext.len(),
                ext.iter()
                    .map(|e| e.2.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if h.gd_offset == GD_AT_END {
            // streamOptimized with the GD at the end: footer marker, footer, EOS marker.
            if file_len < 1536 + 512 {
                return Err(DiskError::corrupt(
                    "VMDK footer",
                    "file too short for a footer",
                ));
            }
            let mut tail = [0u8; 1536];
            file.read(&mut tail, file_len - 1536, "the footer")?;
            if le32(&tail, 12) != MARKER_FOOTER || le32(&tail, 512 + 1024 + 12) != MARKER_EOS {
                return Err(DiskError::corrupt(
                    "VMDK footer",
                    "no footer and end-of-stream markers at the end of the file",
                ));
            }
            let f = SparseHeader::parse(tail.get(512..1024).unwrap_or_default())?;
            if f.gd_offset == GD_AT_END {
                return Err(DiskError::corrupt(
                    "VMDK footer",
                    "no grain directory offset",
                ));
            }
            h = f;
        }
        h.validate()?;
        let compressed = h.flags & FLAG_COMPRESSED != 0;
        let markers = h.flags & FLAG_MARKERS != 0;
        if compressed && !markers {
            return Err(DiskError::Unsupported(format!(
                "{name}: compressed VMDK grains without markers"
            )));
        }
        let gd_n = h.gd_entries();
        let per_gt = u64::from(h.num_gtes_per_gt);
        let grains = h.capacity.div_ceil(h.granularity);
        if gd_n.saturating_mul(per_gt) > MAX_GT_ENTRIES {
            return Err(DiskError::Unsupported(format!(
                "{name}: a VMDK of {} grains (more than {MAX_GT_ENTRIES})",
                grains
            )));
        }
        // Allocate only for what the file holds.
        file.fits(
            h.gd_offset.saturating_mul(SECTOR),
            gd_n * 4,
            "the grain directory",
        )?;
        let mut gd = vec![0u8; (gd_n * 4) as usize];
        file.read(
            &mut gd,
            h.gd_offset.saturating_mul(SECTOR),
            "the grain directory",
        )?;
        let mut gts = Vec::with_capacity(gd_n as usize);
        let mut gt = vec![0u8; (per_gt * 4) as usize];
        for i in 0..gd_n as usize {
            let sector = le32(&gd, i * 4);
            if sector == 0 {
                gts.push(None);
                continue;
            }
            file.read(&mut gt, u64::from(sector) * SECTOR, "a grain table")?;
            gts.push(Some(
                (0..per_gt as usize).map(|j| le32(&gt, j * 4)).collect(),
            ));
        }
        Ok(Vmdk {
            file,
            len: h.capacity * SECTOR,
            grain: h.granularity * SECTOR,
            compressed,
            markers,
            zero_grain: h.flags & FLAG_ZERO_GRAIN != 0,
            per_gt,
            gts,
            cache: Mutex::new(None),
        })
    }

    /// Sector of grain `g`, `None` when it reads as zeros.
    fn grain_sector(&self, g: u64) -> Option<u64> {
        let e = self
            .gts
            .get((g / self.per_gt) as usize)
            .and_then(|t| t.as_ref())
            .and_then(|t| t.get((g % self.per_gt) as usize))
            .copied();
        match e {
            None | Some(0) => None,
            Some(1) if self.zero_grain => None,
            Some(s) => Some(u64::from(s)),
        }
    }

    /// Decompress grain `g` stored at `sector` into `out` (one grain long).
    fn inflate_grain(&self, g: u64, sector: u64, out: &mut [u8]) -> Result<()> {
        let at = sector * SECTOR;
        let mut m = [0u8; 12];
        self.file.read(&mut m, at, "a grain marker")?;
        let size = u64::from(le32(&m, 8));
        if size == 0 || size > 2 * self.grain + 4096 {
            return Err(DiskError::corrupt(
                "VMDK grain marker",
                format!("grain {g}: compressed size {size}"),
            ));
        }
        let mut data = vec![0u8; size as usize];
        self.file.read(&mut data, at + 12, "a compressed grain")?;
        let mut z = flate2::Decompress::new(true);
        let st = z
            .decompress(&data, out, flate2::FlushDecompress::Finish)
            .map_err(|e| DiskError::corrupt("VMDK grain", format!("grain {g}: {e}")))?;
        if st != flate2::Status::StreamEnd {
            return Err(DiskError::corrupt(
                "VMDK grain",
                format!("grain {g}: the deflate stream does not end within one grain"),
            ));
        }
        let n = z.total_out() as usize;
        if let Some(rest) = out.get_mut(n..) {
            rest.fill(0);
        }
        Ok(())
    }

    /// Whether the grains are compressed (streamOptimized).
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Whether grains carry markers.
    pub fn has_markers(&self) -> bool {
        self.markers
    }
}

impl BlockDev for Vmdk {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, self.len)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let g = pos / self.grain;
            let in_grain = (pos % self.grain) as usize;
            let n = (self.grain as usize - in_grain).min(buf.len() - done);
            let dst = buf.get_mut(done..done + n).unwrap_or_default();
            match self.grain_sector(g) {
                None => dst.fill(0),
                Some(s) if self.compressed => {
                    let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    let hit = matches!(&*cache, Some((cg, _)) if *cg == g);
                    if !hit {
                        let mut grain = vec![0u8; self.grain as usize];
                        self.inflate_grain(g, s, &mut grain)?;
                        *cache = Some((g, grain));
                    }
                    if let Some((_, data)) = cache.as_ref() {
                        dst.copy_from_slice(data.get(in_grain..in_grain + n).unwrap_or_default());
                    }
                }
                Some(s) => self
                    .file
                    .read(dst, s * SECTOR + in_grain as u64, "a grain")?,
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<()> {
        Err(DiskError::ReadOnly)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        true
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> {
        check_range("allocation", offset, len, self.len)?;
        let mut out: Vec<AllocRange> = Vec::new();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let g = pos / self.grain;
            let next = ((g + 1) * self.grain).min(end);
            let kind = if self.grain_sector(g).is_some() {
                AllocKind::Data
            } else {
                AllocKind::Unallocated
            };
            match out.last_mut() {
                Some(r) if r.kind == kind => r.len += next - pos,
                _ => out.push(AllocRange {
                    offset: pos,
                    len: next - pos,
                    kind,
                }),
            }
            pos = next;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = SparseHeader {
            version: 3,
            flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity: 20480,
            granularity: 128,
            desc_offset: 1,
            desc_size: 20,
            num_gtes_per_gt: 512,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 128,
            unclean_shutdown: false,
            compress_algorithm: COMPRESSION_DEFLATE,
        };
        assert_eq!(SparseHeader::parse(&h.to_bytes()).unwrap(), h);
        h.validate().unwrap();
        assert_eq!(h.gd_entries(), 1);
    }

    #[test]
    fn descriptor_is_found() {
        let d = stream_descriptor(7, 20480, "a.vmdk");
        assert_eq!(
            descriptor_create_type(d.as_bytes()).as_deref(),
            Some("streamOptimized")
        );
        assert_eq!(
            extents(&d),
            vec![("RW".into(), 20480, "SPARSE".into(), "a.vmdk".into())]
        );
        assert!(descriptor_create_type(b"\x7fELF\x02\x01").is_none());
    }
}
