//! The primary superblock (sector 0 of AG 0): geometry, version and feature flags.
//!
//! Validation follows what the kernel and `xfs_repair` require of a mountable filesystem:
//! powers of two in range, sizes that agree with their logs, an AG geometry that covers the
//! data device exactly, and on v5 the CRC-32C over the superblock sector.

use crate::be::{bytes, u8_at, u16_at, u32_at, u64_at};
use crate::csum;
use crate::error::{Result, XfsError, corrupt};

pub const MAGIC: &[u8; 4] = b"XFSB";
/// Offset of `sb_crc`.
pub const CRC_OFF: usize = 224;

/// `sb_versionnum` bits (v4 feature flags; the low nibble is the version).
pub mod version {
    pub const NUMBITS: u16 = 0x000f;
    pub const ATTR: u16 = 0x0010;
    pub const NLINK: u16 = 0x0020;
    pub const QUOTA: u16 = 0x0040;
    pub const ALIGN: u16 = 0x0080;
    pub const DALIGN: u16 = 0x0100;
    pub const SHARED: u16 = 0x0200;
    pub const LOGV2: u16 = 0x0400;
    pub const SECTOR: u16 = 0x0800;
    pub const EXTFLG: u16 = 0x1000;
    pub const DIRV2: u16 = 0x2000;
    pub const BORG: u16 = 0x4000;
    pub const MOREBITS: u16 = 0x8000;
}

/// `sb_features2` bits.
pub mod features2 {
    pub const RESERVED1: u32 = 0x0001;
    pub const LAZYSBCOUNT: u32 = 0x0002;
    pub const RESERVED4: u32 = 0x0004;
    pub const ATTR2: u32 = 0x0008;
    pub const PARENT: u32 = 0x0010;
    pub const PROJID32: u32 = 0x0080;
    pub const CRC: u32 = 0x0100;
    pub const FTYPE: u32 = 0x0200;
}

/// v5 `sb_features_ro_compat` bits.
pub mod ro_compat {
    pub const FINOBT: u32 = 0x1;
    pub const RMAPBT: u32 = 0x2;
    pub const REFLINK: u32 = 0x4;
    pub const INOBTCNT: u32 = 0x8;
}

/// v5 `sb_features_incompat` bits.
pub mod incompat {
    pub const FTYPE: u32 = 0x1;
    pub const SPINODES: u32 = 0x2;
    pub const META_UUID: u32 = 0x4;
    pub const BIGTIME: u32 = 0x8;
    pub const NEEDSREPAIR: u32 = 0x10;
    pub const NREXT64: u32 = 0x20;
    pub const EXCHRANGE: u32 = 0x40;
    pub const PARENT: u32 = 0x80;
    pub const METADIR: u32 = 0x100;
}

/// Names of the feature bits, as `xfs_info`/`mkfs.xfs` call them.
pub const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (ro_compat::FINOBT, "finobt"),
    (ro_compat::RMAPBT, "rmapbt"),
    (ro_compat::REFLINK, "reflink"),
    (ro_compat::INOBTCNT, "inobtcount"),
];
pub const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (incompat::FTYPE, "ftype"),
    (incompat::SPINODES, "sparse"),
    (incompat::META_UUID, "meta_uuid"),
    (incompat::BIGTIME, "bigtime"),
    (incompat::NEEDSREPAIR, "needsrepair"),
    (incompat::NREXT64, "nrext64"),
    (incompat::EXCHRANGE, "exchange"),
    (incompat::PARENT, "parent"),
    (incompat::METADIR, "metadir"),
];
/// Incompatible features this engine reads.
const INCOMPAT_READ: u32 = incompat::FTYPE
    | incompat::SPINODES
    | incompat::META_UUID
    | incompat::BIGTIME
    | incompat::NREXT64
    | incompat::EXCHRANGE
    | incompat::PARENT;

/// The parsed primary superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub blocksize: u32,
    pub dblocks: u64,
    pub rblocks: u64,
    pub uuid: [u8; 16],
    pub logstart: u64,
    pub rootino: u64,
    pub agblocks: u32,
    pub agcount: u32,
    pub logblocks: u32,
    pub versionnum: u16,
    pub sectsize: u16,
    pub inodesize: u16,
    pub inopblock: u16,
    pub fname: [u8; 12],
    pub blocklog: u8,
    pub sectlog: u8,
    pub inodelog: u8,
    pub inopblog: u8,
    pub agblklog: u8,
    pub inprogress: u8,
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
    pub uquotino: u64,
    pub gquotino: u64,
    pub qflags: u16,
    pub inoalignmt: u32,
    pub dirblklog: u8,
    pub logsectsize: u16,
    pub features2: u32,
    pub features_compat: u32,
    pub features_ro_compat: u32,
    pub features_incompat: u32,
    pub features_log_incompat: u32,
    pub spino_align: u32,
    pub pquotino: u64,
    pub meta_uuid: [u8; 16],
}

fn uuid16(b: &[u8], o: usize) -> [u8; 16] {
    let mut u = [0u8; 16];
    if let Some(s) = b.get(o..o + 16) {
        u.copy_from_slice(s);
    }
    u
}

fn pow2_log(v: u64, log: u8) -> bool {
    v.is_power_of_two() && u32::from(log) < 64 && v == 1u64 << log
}

impl Superblock {
    /// Parse and validate a superblock sector. `buf` must hold at least `sb_sectsize` bytes
    /// for the CRC check of v5 filesystems; 512 are enough to learn the sector size.
    pub fn parse(buf: &[u8]) -> Result<Superblock> {
        if bytes(buf, 0, 4) != MAGIC {
            return Err(corrupt("superblock", "bad magic number (not XFS)"));
        }
        let sb = Superblock {
            blocksize: u32_at(buf, 4),
            dblocks: u64_at(buf, 8),
            rblocks: u64_at(buf, 16),
            uuid: uuid16(buf, 32),
            logstart: u64_at(buf, 48),
            rootino: u64_at(buf, 56),
            agblocks: u32_at(buf, 84),
            agcount: u32_at(buf, 88),
            logblocks: u32_at(buf, 96),
            versionnum: u16_at(buf, 100),
            sectsize: u16_at(buf, 102),
            inodesize: u16_at(buf, 104),
            inopblock: u16_at(buf, 106),
            fname: {
                let mut f = [0u8; 12];
                f.copy_from_slice(bytes(buf, 108, 12).get(..12).unwrap_or(&[0; 12]));
                f
            },
            blocklog: u8_at(buf, 120),
            sectlog: u8_at(buf, 121),
            inodelog: u8_at(buf, 122),
            inopblog: u8_at(buf, 123),
            agblklog: u8_at(buf, 124),
            inprogress: u8_at(buf, 126),
            icount: u64_at(buf, 128),
            ifree: u64_at(buf, 136),
            fdblocks: u64_at(buf, 144),
            uquotino: u64_at(buf, 160),
            gquotino: u64_at(buf, 168),
            qflags: u16_at(buf, 176),
            inoalignmt: u32_at(buf, 180),
            dirblklog: u8_at(buf, 192),
            logsectsize: u16_at(buf, 194),
            features2: u32_at(buf, 200),
            features_compat: u32_at(buf, 208),
            features_ro_compat: u32_at(buf, 212),
            features_incompat: u32_at(buf, 216),
            features_log_incompat: u32_at(buf, 220),
            spino_align: u32_at(buf, 228),
            pquotino: u64_at(buf, 232),
            meta_uuid: uuid16(buf, 248),
        };
        sb.validate(buf)?;
        Ok(sb)
    }

    fn validate(&self, buf: &[u8]) -> Result<()> {
        let bad = |d: String| Err(corrupt("superblock", d));
        let v = self.version();
        if v != 4 && v != 5 {
            return bad(format!(
                "version {v} (only v4 and v5 exist; v1–v3 are not supported)"
            ));
        }
        if !pow2_log(u64::from(self.sectsize), self.sectlog)
            || !(512..=32768).contains(&self.sectsize)
        {
            return bad(format!(
                "sector size {} (log {})",
                self.sectsize, self.sectlog
            ));
        }
        if v == 5 {
            if buf.len() < usize::from(self.sectsize) {
                return bad("superblock sector is truncated".into());
            }
            let sector = buf.get(..usize::from(self.sectsize)).unwrap_or(buf);
            csum::verify(sector, CRC_OFF, || "superblock".into())?;
        }
        if !pow2_log(u64::from(self.blocksize), self.blocklog)
            || !(512..=65536).contains(&self.blocksize)
            || self.blocksize < u32::from(self.sectsize)
        {
            return bad(format!(
                "block size {} (log {})",
                self.blocksize, self.blocklog
            ));
        }
        let min_inode = if v == 5 { 512 } else { 256 };
        if !pow2_log(u64::from(self.inodesize), self.inodelog)
            || !(min_inode..=2048).contains(&self.inodesize)
            || u32::from(self.inodesize) > self.blocksize
        {
            return bad(format!(
                "inode size {} (log {})",
                self.inodesize, self.inodelog
            ));
        }
        if u32::from(self.inopblock) != self.blocksize / u32::from(self.inodesize)
            || !pow2_log(u64::from(self.inopblock), self.inopblog)
            || u32::from(self.inopblog) + u32::from(self.inodelog) != u32::from(self.blocklog)
        {
            return bad(format!("inodes per block {}", self.inopblock));
        }
        if self.agblocks < 64 || self.agcount == 0 {
            return bad(format!(
                "AG geometry: {} AGs of {} blocks",
                self.agcount, self.agblocks
            ));
        }
        // sb_agblklog is log2 of agblocks rounded up.
        let want_log = 32 - (self.agblocks - 1).leading_zeros();
        if u32::from(self.agblklog) != want_log {
            return bad(format!(
                "agblklog {} for {} blocks per AG (expected {want_log})",
                self.agblklog, self.agblocks
            ));
        }
        if u32::from(self.agblklog) + u32::from(self.inopblog) > 32 {
            return bad("inode numbers wider than 32 bits within an AG".into());
        }
        let full = u64::from(self.agcount) * u64::from(self.agblocks);
        let lower = u64::from(self.agcount - 1) * u64::from(self.agblocks);
        if self.dblocks > full || self.dblocks <= lower {
            return bad(format!(
                "{} data blocks do not fit {} AGs of {} blocks",
                self.dblocks, self.agcount, self.agblocks
            ));
        }
        if u32::from(self.dirblklog) + u32::from(self.blocklog) > 16 {
            return bad(format!("directory block log {}", self.dirblklog));
        }
        if self.logstart != 0 && !self.fsb_valid(self.logstart, u64::from(self.logblocks)) {
            return bad(format!(
                "internal log at block {:#x} ({} blocks) is outside the filesystem",
                self.logstart, self.logblocks
            ));
        }
        Ok(())
    }

    /// The filesystem version: 4 or 5 (CRC-enabled).
    pub fn version(&self) -> u16 {
        self.versionnum & version::NUMBITS
    }

    pub fn is_v5(&self) -> bool {
        self.version() == 5
    }

    /// Directory entries carry a file type byte.
    pub fn has_ftype(&self) -> bool {
        if self.is_v5() {
            self.features_incompat & incompat::FTYPE != 0
        } else {
            self.versionnum & version::MOREBITS != 0 && self.features2 & features2::FTYPE != 0
        }
    }

    pub fn has_incompat(&self, bit: u32) -> bool {
        self.is_v5() && self.features_incompat & bit != 0
    }

    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.is_v5() && self.features_ro_compat & bit != 0
    }

    /// The UUID stamped into metadata blocks (`sb_meta_uuid` with the meta_uuid feature).
    pub fn meta_uuid(&self) -> [u8; 16] {
        if self.has_incompat(incompat::META_UUID) {
            self.meta_uuid
        } else {
            self.uuid
        }
    }

    /// Directory block size in bytes.
    pub fn dirblksize(&self) -> u32 {
        self.blocksize << self.dirblklog
    }

    /// Split a filesystem block number into (AG, block in AG).
    pub fn fsb_split(&self, fsb: u64) -> (u64, u64) {
        (fsb >> self.agblklog, fsb & ((1u64 << self.agblklog) - 1))
    }

    /// Is the run of `len` blocks starting at filesystem block `fsb` inside one AG and the
    /// data device?
    pub fn fsb_valid(&self, fsb: u64, len: u64) -> bool {
        let (ag, bno) = self.fsb_split(fsb);
        ag < u64::from(self.agcount)
            && bno
                .checked_add(len)
                .is_some_and(|e| e <= self.ag_len(ag as u32) as u64)
    }

    /// Blocks in AG `ag` (the last one may be shorter).
    pub fn ag_len(&self, ag: u32) -> u32 {
        let start = u64::from(ag) * u64::from(self.agblocks);
        self.dblocks
            .saturating_sub(start)
            .min(u64::from(self.agblocks)) as u32
    }

    /// Byte offset of filesystem block `fsb` (callers check it with [`fsb_valid`]).
    pub fn fsb_to_byte(&self, fsb: u64) -> u64 {
        let (ag, bno) = self.fsb_split(fsb);
        (ag * u64::from(self.agblocks) + bno) << self.blocklog
    }

    /// Byte offset of AG block `bno` in AG `ag`.
    pub fn agb_to_byte(&self, ag: u32, bno: u32) -> u64 {
        (u64::from(ag) * u64::from(self.agblocks) + u64::from(bno)) << self.blocklog
    }

    /// The volume label, if any.
    pub fn label(&self) -> Option<String> {
        let end = self.fname.iter().position(|&c| c == 0).unwrap_or(12);
        let s = String::from_utf8_lossy(self.fname.get(..end).unwrap_or(&[])).into_owned();
        (!s.is_empty()).then_some(s)
    }

    /// The names of the features in use, `mkfs.xfs -m`/`-n`/`-i` style.
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.is_v5() {
            out.push("crc".to_string());
            for &(bit, name) in RO_COMPAT_NAMES.iter().chain(INCOMPAT_NAMES) {
                let set = if RO_COMPAT_NAMES.iter().any(|&(b, n)| b == bit && n == name) {
                    self.features_ro_compat & bit != 0
                } else {
                    self.features_incompat & bit != 0
                };
                if set {
                    out.push(name.to_string());
                }
            }
            for bit in (0..32).map(|i| 1u32 << i) {
                if self.features_ro_compat & bit != 0
                    && !RO_COMPAT_NAMES.iter().any(|&(b, _)| b == bit)
                {
                    out.push(format!("ro_compat_{bit:#x}"));
                }
            }
        } else {
            if self.has_ftype() {
                out.push("ftype".to_string());
            }
            if self.versionnum & version::MOREBITS != 0 && self.features2 & features2::ATTR2 != 0 {
                out.push("attr2".to_string());
            }
        }
        if self.versionnum & version::BORG != 0 {
            out.push("ascii-ci".to_string());
        }
        if self.lazy_counters() {
            out.push("lazy-count".to_string());
        }
        if self.rblocks > 0 {
            out.push("realtime".to_string());
        }
        if self.logstart == 0 {
            out.push("external-log".to_string());
        }
        out
    }

    /// Superblock free/inode counters are lazy (recomputed from the AG headers at mount).
    pub fn lazy_counters(&self) -> bool {
        self.is_v5()
            || (self.versionnum & version::MOREBITS != 0
                && self.features2 & features2::LAZYSBCOUNT != 0)
    }

    /// Refuse features this engine cannot read, and filesystems that need `xfs_repair`.
    pub fn check_readable(&self) -> Result<()> {
        if self.inprogress != 0 {
            return Err(XfsError::NeedsRepair(
                "the XFS filesystem was never completely created (sb_inprogress is set): \
                 recreate it or run xfs_repair"
                    .into(),
            ));
        }
        if self.is_v5() {
            if self.features_incompat & incompat::NEEDSREPAIR != 0 {
                return Err(XfsError::NeedsRepair(
                    "the XFS filesystem is marked as needing repair (needsrepair): \
                     run `xfs_repair` on it first"
                        .into(),
                ));
            }
            let unknown = self.features_incompat & !INCOMPAT_READ;
            if unknown != 0 {
                let bit = 1u32 << unknown.trailing_zeros();
                let name = INCOMPAT_NAMES
                    .iter()
                    .find(|&&(b, _)| b == bit)
                    .map_or_else(|| format!("unknown {bit:#x}"), |&(_, n)| n.to_string());
                return Err(XfsError::UnsupportedFeature {
                    name,
                    kind: "incompat",
                    bit,
                });
            }
        } else {
            if self.versionnum & version::DIRV2 == 0 {
                return Err(XfsError::UnsupportedFeature {
                    name: "version 1 directories".into(),
                    kind: "versionnum",
                    bit: u32::from(version::DIRV2),
                });
            }
            if self.versionnum & version::MOREBITS != 0 {
                let known = features2::LAZYSBCOUNT
                    | features2::ATTR2
                    | features2::PROJID32
                    | features2::FTYPE
                    | features2::RESERVED1
                    | features2::RESERVED4;
                let unknown = self.features2 & !known;
                if unknown != 0 {
                    let bit = 1u32 << unknown.trailing_zeros();
                    let name = if bit == features2::PARENT {
                        "parent (old v4 parent pointers)".to_string()
                    } else if bit == features2::CRC {
                        "crc on a v4 superblock".to_string()
                    } else {
                        format!("unknown {bit:#x}")
                    };
                    return Err(XfsError::UnsupportedFeature {
                        name,
                        kind: "features2",
                        bit,
                    });
                }
            }
        }
        if self.logstart == 0 {
            return Err(XfsError::UnsupportedFeature {
                name: "external log (its device is not part of this image, so we cannot \
                       tell whether it is clean)"
                    .into(),
                kind: "log",
                bit: 0,
            });
        }
        Ok(())
    }
}
