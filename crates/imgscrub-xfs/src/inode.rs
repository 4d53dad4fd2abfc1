//! On-disk inodes (`xfs_dinode`): the core fields, the data and attribute forks.
//!
//! An inode number is (AG, block in AG, index in block) packed by the superblock's
//! `agblklog` and `inopblog`. v3 inodes (v5 filesystems) carry a CRC over the whole inode,
//! their own number and the filesystem UUID; all three are checked.

use crate::be::{bytes, u8_at, u16_at, u32_at, u64_at};
use crate::csum;
use crate::error::{Result, XfsError, corrupt};
use crate::reader::Reader;
use imgscrub_vocab::{FileType, Timestamp};

pub const MAGIC: u16 = 0x494e; // "IN"
const CRC_OFF: usize = 100;

/// `di_format` / `di_aformat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Dev,
    Local,
    Extents,
    Btree,
}

/// `di_flags2` bits we interpret.
pub mod flags2 {
    pub const REFLINK: u64 = 0x2;
    pub const BIGTIME: u64 = 0x8;
    pub const NREXT64: u64 = 0x10;
}

/// `di_flags` bits.
pub mod flags {
    pub const REALTIME: u16 = 0x1;
}

/// One parsed inode. `raw` keeps the whole on-disk inode so the forks can be read.
#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub version: u8,
    pub format: Format,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub projid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub size: u64,
    pub nblocks: u64,
    pub nextents: u64,
    pub anextents: u32,
    pub forkoff: u8,
    pub aformat: Option<Format>,
    pub flags: u16,
    pub flags2: u64,
    pub generation: u32,
    raw: Vec<u8>,
    lit_off: usize,
}

fn format(v: u8) -> Option<Format> {
    Some(match v {
        0 => Format::Dev,
        1 => Format::Local,
        2 => Format::Extents,
        3 => Format::Btree,
        _ => return None,
    })
}

fn timestamp(b: &[u8], o: usize, bigtime: bool) -> Timestamp {
    if bigtime {
        // Nanoseconds since 1901-12-13 20:45:52 UTC (the smallest 32-bit time).
        let ns = u64_at(b, o);
        let secs = (ns / 1_000_000_000) as i64 - (1i64 << 31);
        Timestamp::new(secs, (ns % 1_000_000_000) as u32)
    } else {
        Timestamp::new(i64::from(u32_at(b, o) as i32), u32_at(b, o + 4))
    }
}

impl Inode {
    /// Byte offset of inode `ino`, after checking that the number is inside the filesystem.
    pub fn location(r: &Reader<'_>, ino: u64) -> Result<u64> {
        let sb = r.sb;
        let agshift = u32::from(sb.agblklog) + u32::from(sb.inopblog);
        let ag = ino >> agshift;
        let agino = ino & ((1u64 << agshift) - 1);
        let bno = agino >> sb.inopblog;
        let idx = agino & ((1u64 << sb.inopblog) - 1);
        if ag >= u64::from(sb.agcount) || bno >= u64::from(sb.ag_len(ag as u32)) || bno == 0 {
            return Err(XfsError::NotFound(format!(
                "inode {ino} (outside the filesystem)"
            )));
        }
        Ok(sb.agb_to_byte(ag as u32, bno as u32) + (idx << sb.inodelog))
    }

    /// Read and check inode `ino`. An inode with mode 0 (free) is an error: callers reach
    /// inodes through directory entries, which must not point at free inodes.
    pub fn read(r: &Reader<'_>, ino: u64) -> Result<Inode> {
        let off = Self::location(r, ino)?;
        let raw = r.bytes(off, usize::from(r.sb.inodesize))?;
        let ino_name = || format!("inode {ino}");
        if u16_at(&raw, 0) != MAGIC {
            return Err(corrupt(ino_name(), "bad magic number"));
        }
        let version = u8_at(&raw, 4);
        let v5 = r.sb.is_v5();
        if (v5 && version != 3) || (!v5 && !(1..=2).contains(&version)) {
            return Err(corrupt(ino_name(), format!("inode version {version}")));
        }
        if version == 3 {
            csum::verify(&raw, CRC_OFF, ino_name)?;
            if u64_at(&raw, 152) != ino {
                return Err(corrupt(
                    ino_name(),
                    format!("the inode says it is number {}", u64_at(&raw, 152)),
                ));
            }
            if bytes(&raw, 160, 16) != r.sb.meta_uuid() {
                return Err(corrupt(ino_name(), "UUID does not match the superblock"));
            }
        }
        let mode = u16_at(&raw, 2);
        if mode == 0 {
            return Err(corrupt(ino_name(), "the inode is free (mode 0)"));
        }
        let Some(fmt) = format(u8_at(&raw, 5)) else {
            return Err(corrupt(
                ino_name(),
                format!("data fork format {}", u8_at(&raw, 5)),
            ));
        };
        let flags2 = if version == 3 { u64_at(&raw, 120) } else { 0 };
        let nrext64 = flags2 & flags2::NREXT64 != 0;
        let bigtime = flags2 & flags2::BIGTIME != 0;
        let lit_off = if version == 3 { 176 } else { 100 };
        let forkoff = u8_at(&raw, 82);
        let aformat_raw = u8_at(&raw, 83);
        let ino_out = Inode {
            ino,
            mode,
            version,
            format: fmt,
            uid: u32_at(&raw, 8),
            gid: u32_at(&raw, 12),
            nlink: if version == 1 {
                u32::from(u16_at(&raw, 6))
            } else {
                u32_at(&raw, 16)
            },
            projid: u32::from(u16_at(&raw, 20)) | (u32::from(u16_at(&raw, 22)) << 16),
            atime: timestamp(&raw, 32, bigtime),
            mtime: timestamp(&raw, 40, bigtime),
            ctime: timestamp(&raw, 48, bigtime),
            crtime: (version == 3).then(|| timestamp(&raw, 144, bigtime)),
            size: u64_at(&raw, 56),
            nblocks: u64_at(&raw, 64),
            nextents: if nrext64 {
                u64_at(&raw, 24)
            } else {
                u64::from(u32_at(&raw, 76))
            },
            anextents: if nrext64 {
                u32_at(&raw, 76)
            } else {
                u32::from(u16_at(&raw, 80))
            },
            forkoff,
            aformat: if forkoff == 0 {
                None
            } else {
                format(aformat_raw)
            },
            flags: u16_at(&raw, 90),
            flags2,
            generation: u32_at(&raw, 92),
            raw,
            lit_off,
        };
        ino_out.validate(r)?;
        Ok(ino_out)
    }

    fn validate(&self, r: &Reader<'_>) -> Result<()> {
        let name = || format!("inode {}", self.ino);
        let Some(ft) = self.file_type() else {
            return Err(corrupt(name(), format!("mode {:#o}", self.mode)));
        };
        if self.size > i64::MAX as u64 {
            return Err(corrupt(name(), format!("size {}", self.size)));
        }
        let lit = self.raw.len() - self.lit_off;
        if usize::from(self.forkoff) * 8 >= lit {
            return Err(corrupt(
                name(),
                format!("attribute fork offset {}", self.forkoff),
            ));
        }
        if self.forkoff != 0 && self.aformat.is_none() {
            return Err(corrupt(name(), "attribute fork format"));
        }
        if self.flags2 & flags2::NREXT64 != 0
            && !r.sb.has_incompat(crate::superblock::incompat::NREXT64)
        {
            return Err(corrupt(
                name(),
                "large extent counters on a filesystem without nrext64",
            ));
        }
        if self.flags2 & flags2::BIGTIME != 0
            && !r.sb.has_incompat(crate::superblock::incompat::BIGTIME)
        {
            return Err(corrupt(
                name(),
                "bigtime timestamps without the bigtime feature",
            ));
        }
        if self.flags & flags::REALTIME != 0 {
            return Err(XfsError::UnsupportedFeature {
                name: format!("realtime file (inode {})", self.ino),
                kind: "inode",
                bit: u32::from(flags::REALTIME),
            });
        }
        // Which data fork formats each file type may use.
        let dev = matches!(
            ft,
            FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket
        );
        let ok = match self.format {
            Format::Dev => dev,
            Format::Local => matches!(ft, FileType::Directory | FileType::Symlink),
            Format::Extents | Format::Btree => !dev,
        };
        if !ok {
            return Err(corrupt(
                name(),
                format!("data fork format {:?} for a {ft:?}", self.format),
            ));
        }
        Ok(())
    }

    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_mode(self.mode)
    }

    /// Permission bits including setuid/setgid/sticky.
    pub fn perm(&self) -> u16 {
        self.mode & 0o7777
    }

    /// The data fork's bytes (the literal area up to the attribute fork).
    pub fn data_fork(&self) -> &[u8] {
        let lit = self.raw.len() - self.lit_off;
        let size = if self.forkoff == 0 {
            lit
        } else {
            usize::from(self.forkoff) * 8
        };
        bytes(&self.raw, self.lit_off, size)
    }

    /// The attribute fork's bytes (empty without one).
    pub fn attr_fork(&self) -> &[u8] {
        if self.forkoff == 0 {
            return &[];
        }
        let start = self.lit_off + usize::from(self.forkoff) * 8;
        self.raw.get(start..).unwrap_or(&[])
    }

    /// Device number (major, minor) of a device inode (Linux's 12:20 bit split of the old
    /// SysV 14:18 encoding XFS stores).
    pub fn rdev(&self) -> Option<(u32, u32)> {
        match self.file_type()? {
            FileType::CharDevice | FileType::BlockDevice => {
                let d = u32_at(self.data_fork(), 0);
                Some(((d >> 18) & 0x3fff, d & 0x3ffff))
            }
            _ => None,
        }
    }

    /// Is this inode's data shared with others (reflink)?
    pub fn is_reflinked(&self) -> bool {
        self.flags2 & flags2::REFLINK != 0
    }
}

/// `di_next_unlinked` of an inode on no unlinked list.
pub const NULL_AGINO: u32 = u32::MAX;

fn put16(b: &mut [u8], o: usize, v: u16) {
    if let Some(s) = b.get_mut(o..o + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    if let Some(s) = b.get_mut(o..o + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    if let Some(s) = b.get_mut(o..o + 8) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn put_time(b: &mut [u8], o: usize, t: Timestamp, bigtime: bool) {
    if bigtime {
        let secs = t.secs.saturating_add(1i64 << 31).max(0) as u64;
        put64(
            b,
            o,
            secs * 1_000_000_000 + u64::from(t.nsecs.min(999_999_999)),
        );
    } else {
        let secs = t.secs.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        put32(b, o, secs as u32);
        put32(b, o + 4, t.nsecs.min(999_999_999));
    }
}

fn format_code(f: Format) -> u8 {
    match f {
        Format::Dev => 0,
        Format::Local => 1,
        Format::Extents => 2,
        Format::Btree => 3,
    }
}

impl Inode {
    /// A new v3 inode (v5 filesystems only) of `mode`, owned by `uid:gid`, stamped `now`.
    /// Bigtime and large extent counters are switched on where the filesystem has them, as
    /// the kernel does for new inodes.
    pub fn new_v3(
        sb: &crate::superblock::Superblock,
        ino: u64,
        mode: u16,
        uid: u32,
        gid: u32,
        generation: u32,
        now: Timestamp,
    ) -> Inode {
        use crate::superblock::incompat;
        let mut flags2 = 0;
        if sb.has_incompat(incompat::BIGTIME) {
            flags2 |= flags2::BIGTIME;
        }
        if sb.has_incompat(incompat::NREXT64) {
            flags2 |= flags2::NREXT64;
        }
        let dev = matches!(
            FileType::from_mode(mode),
            Some(FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket)
        );
        let mut raw = vec![0u8; usize::from(sb.inodesize)];
        put16(&mut raw, 0, MAGIC);
        raw[4] = 3;
        put32(&mut raw, 96, NULL_AGINO);
        Inode {
            ino,
            mode,
            version: 3,
            format: if dev { Format::Dev } else { Format::Extents },
            uid,
            gid,
            nlink: 1,
            projid: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: Some(now),
            size: 0,
            nblocks: 0,
            nextents: 0,
            anextents: 0,
            forkoff: 0,
            aformat: None,
            flags: 0,
            flags2,
            generation,
            raw,
            lit_off: 176,
        }
    }

    /// Bytes available to the two forks together (the literal area).
    pub fn literal_size(&self) -> usize {
        self.raw.len() - self.lit_off
    }

    /// The on-disk inode with the given fork contents (`attr` empty: no attribute fork;
    /// the caller has set `forkoff`/`aformat`/counts). v3: CRC, own number, UUID and LSN
    /// filled in; the change counter bumped.
    pub fn encode(&self, meta_uuid: &[u8; 16], lsn: u64, data: &[u8], attr: &[u8]) -> Vec<u8> {
        let mut b = self.raw.clone();
        let v3 = self.version == 3;
        let bigtime = self.flags2 & flags2::BIGTIME != 0;
        let nrext64 = self.flags2 & flags2::NREXT64 != 0;
        put16(&mut b, 0, MAGIC);
        put16(&mut b, 2, self.mode);
        b[4] = self.version;
        b[5] = format_code(self.format);
        if self.version == 1 {
            put16(&mut b, 6, self.nlink.min(u32::from(u16::MAX)) as u16);
        } else {
            put16(&mut b, 6, 0);
            put32(&mut b, 16, self.nlink);
        }
        put32(&mut b, 8, self.uid);
        put32(&mut b, 12, self.gid);
        put16(&mut b, 20, self.projid as u16);
        put16(&mut b, 22, (self.projid >> 16) as u16);
        put_time(&mut b, 32, self.atime, bigtime);
        put_time(&mut b, 40, self.mtime, bigtime);
        put_time(&mut b, 48, self.ctime, bigtime);
        put64(&mut b, 56, self.size);
        put64(&mut b, 64, self.nblocks);
        if nrext64 {
            put64(&mut b, 24, self.nextents);
            put32(&mut b, 76, self.anextents);
            put16(&mut b, 80, 0);
        } else {
            if v3 {
                put64(&mut b, 24, 0);
            }
            put32(&mut b, 76, self.nextents.min(u64::from(u32::MAX)) as u32);
            put16(&mut b, 80, self.anextents.min(u32::from(u16::MAX)) as u16);
        }
        b[82] = self.forkoff;
        b[83] = self.aformat.map_or(2, format_code);
        put16(&mut b, 90, self.flags);
        put32(&mut b, 92, self.generation);
        // The literal area: data fork, then the attribute fork at forkoff * 8.
        let lit = self.lit_off;
        let total = b.len();
        if let Some(area) = b.get_mut(lit..total) {
            area.fill(0);
            let dlen = data.len().min(area.len());
            area[..dlen].copy_from_slice(&data[..dlen]);
            if self.forkoff != 0 {
                let ao = usize::from(self.forkoff) * 8;
                if let Some(dst) = area.get_mut(ao..) {
                    let alen = attr.len().min(dst.len());
                    dst[..alen].copy_from_slice(&attr[..alen]);
                }
            }
        }
        if v3 {
            let cc = u64_at(&b, 104).wrapping_add(1);
            put64(&mut b, 104, cc);
            put64(&mut b, 112, lsn);
            put64(&mut b, 120, self.flags2);
            if let Some(t) = self.crtime {
                put_time(&mut b, 144, t, bigtime);
            }
            put64(&mut b, 152, self.ino);
            if let Some(s) = b.get_mut(160..176) {
                s.copy_from_slice(meta_uuid);
            }
            let crc = csum::compute(&b, CRC_OFF);
            if let Some(s) = b.get_mut(CRC_OFF..CRC_OFF + 4) {
                s.copy_from_slice(&crc.to_le_bytes());
            }
        }
        b
    }

    /// The on-disk form of a freed inode, as the kernel leaves it: mode 0, no forks, the
    /// generation bumped so that old handles to it go stale.
    pub fn encode_free(&self, meta_uuid: &[u8; 16], lsn: u64) -> Vec<u8> {
        let mut f = self.clone();
        f.raw.fill(0);
        put32(&mut f.raw, 96, NULL_AGINO);
        if self.version == 3 {
            put64(&mut f.raw, 104, u64_at(&self.raw, 104));
        }
        f.mode = 0;
        f.format = Format::Extents;
        f.uid = 0;
        f.gid = 0;
        f.nlink = 0;
        f.projid = 0;
        f.atime = Timestamp::default();
        f.mtime = Timestamp::default();
        f.ctime = Timestamp::default();
        f.crtime = self.crtime.map(|_| Timestamp::default());
        f.size = 0;
        f.nblocks = 0;
        f.nextents = 0;
        f.anextents = 0;
        f.forkoff = 0;
        f.aformat = None;
        f.flags = 0;
        f.flags2 = self.flags2 & (flags2::BIGTIME | flags2::NREXT64);
        f.generation = self.generation.wrapping_add(1);
        f.encode(meta_uuid, lsn, &[], &[])
    }
}
