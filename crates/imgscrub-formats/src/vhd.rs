//! Microsoft VHD (Virtual PC / Hyper-V "vpc"): fixed and dynamic disks read as a
//! [`BlockDev`]; the footer and dynamic header the VHD writer needs.
//!
//! A fixed disk is the raw disk followed by a 512-byte big-endian footer (`conectix`). A
//! dynamic disk starts with a copy of the footer, then the dynamic header (`cxsparse`), the
//! block allocation table (BAT: one 32-bit sector number per block, `0xffffffff` = not
//! allocated) and blocks, each a sector bitmap (one bit per sector, set = stored) followed by
//! the block's data; the footer again at the end. Differencing disks (data in a parent) are
//! refused.
//!
//! The virtual size is the footer's `current_size`, except for disks made by Virtual PC or old
//! qemu (creator `vpc ` / `qemu`), which are sized by their CHS geometry unless it is the
//! largest one, exactly as qemu decides.

use crate::bounded::ImageFile;
use crate::le::{be16, be32, be64, put};
use imgscrub_disk::RawFile;
use imgscrub_disk::{AllocKind, AllocRange, BlockDev, DiskError, Result, check_range};
use std::path::Path;

/// Size of the footer.
pub const FOOTER_SIZE: u64 = 512;
/// Size of the dynamic header.
pub const DYN_HEADER_SIZE: usize = 1024;
/// Disk types.
pub const TYPE_FIXED: u32 = 2;
/// A dynamic (sparse) disk.
pub const TYPE_DYNAMIC: u32 = 3;
/// A differencing disk (refused).
pub const TYPE_DIFFERENCING: u32 = 4;
/// The largest CHS geometry, 65535 × 16 × 255 sectors.
pub const MAX_CHS_SECTORS: u64 = 65535 * 16 * 255;
/// The largest VHD (2040 GiB, qemu's and Azure's limit).
pub const MAX_SIZE: u64 = 2040 << 30;
/// The block size writers use (2 MiB, as qemu and Hyper-V).
pub const DEFAULT_BLOCK_SIZE: u32 = 2 << 20;

/// `vpc_checksum()`: the ones' complement of the byte sum (checksum field zeroed).
pub fn checksum(b: &[u8]) -> u32 {
    !b.iter().fold(0u32, |a, &x| a.wrapping_add(u32::from(x)))
}

/// CHS geometry (cylinders, heads, sectors per track) for `total_sectors`, by the algorithm of
/// the VHD specification (appendix "CHS calculation").
pub fn geometry(total_sectors: u64) -> (u16, u8, u8) {
    let ts = total_sectors.min(MAX_CHS_SECTORS);
    let (spt, heads, cth);
    if ts >= 65535 * 16 * 63 {
        spt = 255u64;
        heads = 16u64;
        cth = ts / spt;
    } else {
        let mut s = 17u64;
        let mut c = ts / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = ts / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = ts / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// The VHD footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Offset of the dynamic header (`u64::MAX` for fixed disks).
    pub data_offset: u64,
    /// Seconds since 2000-01-01 UTC.
    pub timestamp: u32,
    /// Creator application (`qem2` means "sized by `current_size`" to every qemu).
    pub creator_app: [u8; 4],
    /// Creator version.
    pub creator_version: u32,
    /// Creator host OS (`Wi2k`).
    pub creator_os: [u8; 4],
    /// Size at creation.
    pub original_size: u64,
    /// Virtual size.
    pub current_size: u64,
    /// Cylinders, heads, sectors per track.
    pub geometry: (u16, u8, u8),
    /// [`TYPE_FIXED`], [`TYPE_DYNAMIC`] or [`TYPE_DIFFERENCING`].
    pub disk_type: u32,
    /// The checksum stored (ignored by [`Footer::to_bytes`], which computes it).
    pub checksum: u32,
    /// Unique id.
    pub uuid: [u8; 16],
}

impl Footer {
    /// A footer for a new disk of `size` bytes (a multiple of 512) made by imgscrub.
    pub fn new(disk_type: u32, size: u64, uuid: [u8; 16]) -> Self {
        Footer {
            data_offset: if disk_type == TYPE_FIXED {
                u64::MAX
            } else {
                512
            },
            timestamp: 0,
            creator_app: *b"qem2",
            creator_version: 0x000a_0000,
            creator_os: *b"Wi2k",
            original_size: size,
            current_size: size,
            geometry: geometry(size / 512),
            disk_type,
            checksum: 0,
            uuid,
        }
    }

    /// Decode and check the cookie and checksum.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < 512 || !b.starts_with(b"conectix") {
            return Err(DiskError::corrupt("VHD footer", "no conectix cookie"));
        }
        let four = |off: usize| {
            let mut a = [0u8; 4];
            put(&mut a, 0, b.get(off..off + 4).unwrap_or(&[0; 4]));
            a
        };
        let f = Footer {
            data_offset: be64(b, 16),
            timestamp: be32(b, 24),
            creator_app: four(28),
            creator_version: be32(b, 32),
            creator_os: four(36),
            original_size: be64(b, 40),
            current_size: be64(b, 48),
            geometry: (
                be16(b, 56),
                b.get(58).copied().unwrap_or(0),
                b.get(59).copied().unwrap_or(0),
            ),
            disk_type: be32(b, 60),
            checksum: be32(b, 64),
            uuid: {
                let mut u = [0u8; 16];
                put(&mut u, 0, b.get(68..84).unwrap_or(&[0; 16]));
                u
            },
        };
        let mut copy = [0u8; 512];
        put(&mut copy, 0, b.get(..512).unwrap_or_default());
        put(&mut copy, 64, &[0; 4]);
        let want = checksum(&copy);
        if want != f.checksum {
            return Err(DiskError::corrupt(
                "VHD footer",
                format!("checksum {:#010x}, computed {want:#010x}", f.checksum),
            ));
        }
        Ok(f)
    }

    /// Encode, with the checksum computed.
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        put(&mut b, 0, b"conectix");
        put(&mut b, 8, &2u32.to_be_bytes());
        put(&mut b, 12, &0x0001_0000u32.to_be_bytes());
        put(&mut b, 16, &self.data_offset.to_be_bytes());
        put(&mut b, 24, &self.timestamp.to_be_bytes());
        put(&mut b, 28, &self.creator_app);
        put(&mut b, 32, &self.creator_version.to_be_bytes());
        put(&mut b, 36, &self.creator_os);
        put(&mut b, 40, &self.original_size.to_be_bytes());
        put(&mut b, 48, &self.current_size.to_be_bytes());
        put(&mut b, 56, &self.geometry.0.to_be_bytes());
        b[58] = self.geometry.1;
        b[59] = self.geometry.2;
        put(&mut b, 60, &self.disk_type.to_be_bytes());
        put(&mut b, 68, &self.uuid);
        let c = checksum(&b);
        put(&mut b, 64, &c.to_be_bytes());
        b
    }

    /// The virtual size as qemu computes it (see the module documentation).
    pub fn virtual_size(&self) -> u64 {
        let (c, h, s) = self.geometry;
        let chs = u64::from(c) * u64::from(h) * u64::from(s);
        let by_chs = matches!(&self.creator_app, b"vpc " | b"qemu");
        if by_chs && chs != MAX_CHS_SECTORS {
            chs * 512
        } else {
            self.current_size / 512 * 512
        }
    }
}

/// The dynamic disk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicHeader {
    /// Byte offset of the BAT.
    pub table_offset: u64,
    /// Entries of the BAT.
    pub max_table_entries: u32,
    /// Bytes per block (a power of two, 2 MiB by default).
    pub block_size: u32,
}

impl DynamicHeader {
    /// Decode and check the cookie and checksum.
    pub fn parse(b: &[u8]) -> Result<Self> {
        if b.len() < DYN_HEADER_SIZE || !b.starts_with(b"cxsparse") {
            return Err(DiskError::corrupt(
                "VHD dynamic header",
                "no cxsparse cookie",
            ));
        }
        let mut copy = [0u8; DYN_HEADER_SIZE];
        put(&mut copy, 0, b.get(..DYN_HEADER_SIZE).unwrap_or_default());
        put(&mut copy, 36, &[0; 4]);
        let (stored, want) = (be32(b, 36), checksum(&copy));
        if stored != want {
            return Err(DiskError::corrupt(
                "VHD dynamic header",
                format!("checksum {stored:#010x}, computed {want:#010x}"),
            ));
        }
        Ok(DynamicHeader {
            table_offset: be64(b, 16),
            max_table_entries: be32(b, 28),
            block_size: be32(b, 32),
        })
    }

    /// Encode, with the checksum computed.
    pub fn to_bytes(&self) -> [u8; DYN_HEADER_SIZE] {
        let mut b = [0u8; DYN_HEADER_SIZE];
        put(&mut b, 0, b"cxsparse");
        put(&mut b, 8, &u64::MAX.to_be_bytes());
        put(&mut b, 16, &self.table_offset.to_be_bytes());
        put(&mut b, 24, &0x0001_0000u32.to_be_bytes());
        put(&mut b, 28, &self.max_table_entries.to_be_bytes());
        put(&mut b, 32, &self.block_size.to_be_bytes());
        let c = checksum(&b);
        put(&mut b, 36, &c.to_be_bytes());
        b
    }

    /// Bytes of a block's sector bitmap (whole sectors).
    pub fn bitmap_size(&self) -> u64 {
        (u64::from(self.block_size) / 512)
            .div_ceil(8)
            .next_multiple_of(512)
    }
}

/// A fixed or dynamic VHD, read-only.
pub struct Vhd {
    file: ImageFile,
    len: u64,
    /// `None` for a fixed disk.
    dynamic: Option<Dynamic>,
}

#[derive(Debug)]
struct Dynamic {
    block: u64,
    bitmap: u64,
    bat: Vec<u32>,
}

impl std::fmt::Debug for Vhd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vhd")
            .field("name", &self.file.name())
            .field("len", &self.len)
            .field("dynamic", &self.dynamic.is_some())
            .finish_non_exhaustive()
    }
}

impl Vhd {
    /// Open the file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = RawFile::open(path)?;
        Self::from_dev(Box::new(file), &path.display().to_string())
    }

    /// Read the structures of a VHD file held by `file` (a raw file, or memory; `name` is
    /// used in messages). Memory used is bounded by the tables present in the file.
    pub fn from_dev(file: Box<dyn BlockDev>, name: &str) -> Result<Self> {
        let file = ImageFile::new(file, name, "VHD");
        let file_len = file.len();
        if file_len < FOOTER_SIZE {
            return Err(DiskError::corrupt(
                "VHD footer",
                "file shorter than a footer",
            ));
        }
        // The copy at the start (dynamic disks) first, as qemu does; else the end.
        let mut b = [0u8; 512];
        file.read(&mut b, 0, "the footer copy")?;
        if !b.starts_with(b"conectix") {
            file.read(&mut b, file_len - FOOTER_SIZE, "the footer")?;
        }
        let footer = Footer::parse(&b)?;
        let len = footer.virtual_size();
        if len > MAX_SIZE {
            return Err(DiskError::corrupt(
                "VHD footer",
                format!("virtual size of {len} bytes (more than 2040 GiB)"),
            ));
        }
        let dynamic = match footer.disk_type {
            TYPE_FIXED => {
                if len > file_len - FOOTER_SIZE {
                    return Err(DiskError::corrupt(
                        "VHD",
                        format!(
                            "fixed disk of {len} bytes in a file of {file_len} bytes (truncated?)"
                        ),
                    ));
                }
                None
            }
            TYPE_DYNAMIC => {
                let mut hb = [0u8; DYN_HEADER_SIZE];
                file.read(&mut hb, footer.data_offset, "the dynamic header")?;
                let h = DynamicHeader::parse(&hb)?;
                if !h.block_size.is_power_of_two()
                    || h.block_size < 512
                    || h.block_size > (256 << 20)
                {
                    return Err(DiskError::corrupt(
                        "VHD dynamic header",
                        format!("block size {}", h.block_size),
                    ));
                }
                let block = u64::from(h.block_size);
                if u64::from(h.max_table_entries) * block < len
                    || u64::from(h.max_table_entries) > MAX_SIZE / block + 1
                {
                    return Err(DiskError::corrupt(
                        "VHD dynamic header",
                        format!(
                            "{} BAT entries of {block} bytes for a disk of {len} bytes",
                            h.max_table_entries
                        ),
                    ));
                }
                file.fits(
                    h.table_offset,
                    u64::from(h.max_table_entries) * 4,
                    "the block allocation table",
                )?;
                let mut bat = vec![0u8; h.max_table_entries as usize * 4];
                file.read(&mut bat, h.table_offset, "the block allocation table")?;
                let bat = bat
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Some(Dynamic {
                    block,
                    bitmap: h.bitmap_size(),
                    bat,
                })
            }
            TYPE_DIFFERENCING => {
                return Err(DiskError::Unsupported(format!(
                    "{name}: a differencing VHD (its data is in a parent disk): convert it with \
                     `qemu-img convert -f vpc -O qcow2`"
                )));
            }
            t => {
                return Err(DiskError::corrupt("VHD footer", format!("disk type {t}")));
            }
        };
        Ok(Vhd { file, len, dynamic })
    }

    /// True for a dynamic disk.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic.is_some()
    }
}

impl BlockDev for Vhd {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, self.len)?;
        let Some(d) = &self.dynamic else {
            return self.file.read(buf, offset, "data");
        };
        let mut done = 0usize;
        let mut bitmap = vec![0u8; d.bitmap as usize];
        while done < buf.len() {
            let pos = offset + done as u64;
            let b = pos / d.block;
            let in_block = pos % d.block;
            let n = ((d.block - in_block) as usize).min(buf.len() - done);
            let dst = buf.get_mut(done..done + n).unwrap_or_default();
            match d.bat.get(b as usize).copied() {
                None | Some(u32::MAX) => dst.fill(0),
                Some(sector) => {
                    let start = u64::from(sector) * 512;
                    self.file.read(&mut bitmap, start, "a sector bitmap")?;
                    self.file
                        .read(dst, start + d.bitmap + in_block, "a block")?;
                    // Sectors whose bit is clear are not stored: they read as zeros.
                    let first = in_block / 512;
                    let last = (in_block + n as u64 - 1) / 512;
                    for s in first..=last {
                        let set = bitmap
                            .get((s / 8) as usize)
                            .is_some_and(|&x| x & (0x80 >> (s % 8)) != 0);
                        if !set {
                            let a = (s * 512).max(in_block) - in_block;
                            let e = ((s + 1) * 512).min(in_block + n as u64) - in_block;
                            if let Some(z) = dst.get_mut(a as usize..e as usize) {
                                z.fill(0);
                            }
                        }
                    }
                }
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
        let Some(d) = &self.dynamic else {
            return Ok(if len == 0 {
                Vec::new()
            } else {
                vec![AllocRange {
                    offset,
                    len,
                    kind: AllocKind::Data,
                }]
            });
        };
        let mut out: Vec<AllocRange> = Vec::new();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let b = pos / d.block;
            let next = ((b + 1) * d.block).min(end);
            let kind = match d.bat.get(b as usize) {
                None | Some(&u32::MAX) => AllocKind::Unallocated,
                Some(_) => AllocKind::Data,
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
    fn footer_round_trips_with_its_checksum() {
        let f = Footer::new(TYPE_FIXED, 10 << 20, [7; 16]);
        let b = f.to_bytes();
        let g = Footer::parse(&b).unwrap();
        assert_eq!(g.current_size, 10 << 20);
        assert_eq!(g.virtual_size(), 10 << 20);
        let mut bad = b;
        bad[100] ^= 1;
        assert!(Footer::parse(&bad).is_err());
        let h = DynamicHeader {
            table_offset: 1536,
            max_table_entries: 5,
            block_size: DEFAULT_BLOCK_SIZE,
        };
        assert_eq!(DynamicHeader::parse(&h.to_bytes()).unwrap(), h);
        assert_eq!(h.bitmap_size(), 512);
    }

    #[test]
    fn geometry_follows_the_spec() {
        // 10 MiB: the qemu-made footer says 302/4/17.
        assert_eq!(geometry(20480), (301, 4, 17));
        assert_eq!(geometry(MAX_CHS_SECTORS * 2), (65535, 16, 255));
    }
}
