//! Offline edits: the in-memory state of everything changed since the last flush, the edit
//! operations on it, and `flush`, which re-encodes each changed structure.
//!
//! The design ("edit in memory, rebuild at flush"):
//! - an inode that changed lives in [`MemInode`]: its core fields, and — once its data or
//!   attributes are touched — its whole data fork (file extents, a directory's entry list,
//!   a symlink target) and attribute list, authoritative until flush;
//! - file data is written at once to newly allocated blocks (or over blocks the file owns);
//!   nothing on disk references new blocks before flush writes the inode;
//! - blocks freed are "busy" in [`Space`] until the end of flush, so nothing the old
//!   on-disk metadata still references is overwritten before that metadata is;
//! - at flush every changed directory is encoded in the form that fits (`dirwrite`),
//!   attributes likewise (`attrwrite`), extent lists go in the inode or in a new bmbt
//!   (`bmapwrite`), inodes are written, then [`Space`] rebuilds the AG btrees and headers,
//!   and the superblock counters come last.
//!
//! The device is, in imgscrub, an `Overlay` committed through a redo log, so a crash in the
//! middle of a flush leaves the image as it was before (or as it is after) the flush.

use crate::attr::{self, RawAttr};
use crate::attrwrite::{self, AttrGeom, AttrImage};
use crate::bmap::{self, Extent, Fork};
use crate::bmapwrite::{self, encode_extents, normalize};
use crate::dir;
use crate::dirwrite::{self, DirGeom, DirImage, NewEntry};
use crate::error::{Result, XfsError, corrupt};
use crate::fs::XfsFs;
use crate::inode::{Format, Inode};
use crate::meta::Stamp;
use crate::space::{Owner, Space};
use imgscrub_disk::BlockDev;
use imgscrub_vocab::{FileType, NewAttr, SetAttr, Timestamp};
use std::collections::{BTreeMap, HashMap};

/// Longest symlink target (`XFS_SYMLINK_MAXLEN`).
const SYMLINK_MAX: usize = 1024;
/// Directory link count limit.
const LINK_MAX: u32 = u32::MAX - 1;
/// Header of a v5 remote symlink block.
const SYMLINK_HDR: usize = 56;
/// Smallest data fork the kernel leaves beside an attribute fork (room for a bmbt root of
/// three pointers: `xfs_bmdr_space_calc(MINDBTPTRS)` rounded up).
const MIN_DATA_FORK: usize = 56;
/// Deepest directory nesting rename's loop check walks.
const MAX_DEPTH: usize = 4096;

/// Everything changed since the last flush.
pub(crate) struct WriteState {
    pub space: Space,
    pub stamp: Stamp,
    pub clock: Option<Timestamp>,
    pub inodes: BTreeMap<u64, MemInode>,
}

/// A changed inode.
pub(crate) struct MemInode {
    pub core: Inode,
    pub data: Data,
    /// The whole attribute list once it was loaded for a change (then authoritative).
    pub attrs: Option<Vec<RawAttr>>,
    /// The attribute fork's block map on disk when `attrs` was loaded (blocks to reuse or
    /// free), and the btree blocks of it.
    pub attr_map: Vec<Extent>,
    pub attr_bmbt: Vec<u64>,
    /// The data fork's bmbt blocks on disk when `data` was loaded (freed at flush: the map
    /// is rebuilt).
    pub data_bmbt: Vec<u64>,
    /// Unlinked with no links left: freed at flush.
    pub freed: bool,
}

/// A changed inode's data fork.
pub(crate) enum Data {
    /// As on disk (only core fields changed).
    Disk,
    /// A regular file's (or remote symlink's) extents.
    Extents(Vec<Extent>),
    Dir(DirMem),
    /// A short symlink target stored in the inode.
    Local(Vec<u8>),
    /// A device number (XFS's 14:18 encoding) or nothing for FIFOs and sockets.
    Dev(u32),
}

/// A directory's entries.
pub(crate) struct DirMem {
    pub parent: u64,
    pub entries: Vec<(Vec<u8>, u64, FileType)>,
    pub index: HashMap<Vec<u8>, usize>,
    /// The directory's block map on disk (reused at flush).
    pub map: Vec<Extent>,
    /// An `ascii-ci` filesystem: names match without regard to ASCII case, as the kernel
    /// looks them up (and two names differing only in case cannot both exist).
    pub ci: bool,
}

impl DirMem {
    fn new(parent: u64, map: Vec<Extent>, ci: bool, capacity: usize) -> DirMem {
        DirMem {
            parent,
            entries: Vec::with_capacity(capacity),
            index: HashMap::with_capacity(capacity),
            map,
            ci,
        }
    }

    fn key(&self, name: &[u8]) -> Vec<u8> {
        if self.ci {
            name.to_ascii_lowercase()
        } else {
            name.to_vec()
        }
    }

    pub fn get(&self, name: &[u8]) -> Option<(u64, FileType)> {
        self.index
            .get(&self.key(name))
            .and_then(|&i| self.entries.get(i))
            .map(|(_, ino, t)| (*ino, *t))
    }

    fn insert(&mut self, name: &[u8], ino: u64, t: FileType) {
        self.index.insert(self.key(name), self.entries.len());
        self.entries.push((name.to_vec(), ino, t));
    }

    fn remove(&mut self, name: &[u8]) -> Option<(u64, FileType)> {
        let i = self.index.remove(&self.key(name))?;
        let (_, ino, t) = self.entries.swap_remove(i);
        if let Some((moved, _, _)) = self.entries.get(i) {
            let k = self.key(moved);
            self.index.insert(k, i);
        }
        Some((ino, t))
    }
}

fn name_str(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Validate a new entry name before allocating anything for it.
fn check_name(name: &[u8]) -> Result<()> {
    imgscrub_vocab::check_entry_name(name).map_err(|e| match e {
        imgscrub_vocab::BadName::TooLong(n) => XfsError::NameTooLong(n),
        imgscrub_vocab::BadName::Invalid => {
            XfsError::Invalid(format!("invalid file name {:?}", name_str(name)))
        }
    })
}

fn round8(v: usize) -> usize {
    (v + 7) & !7
}

/// The generation number of a new inode: the kernel picks a random one; we derive it from
/// the filesystem UUID and the inode number so that the same edits give the same bytes.
fn generation(uuid: &[u8; 16], ino: u64) -> u32 {
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(uuid);
    b[16..].copy_from_slice(&ino.to_le_bytes());
    crc32c::crc32c(&b)
}

/// Linux's (major, minor) in XFS's on-disk device encoding (SysV 14:18).
fn encode_rdev(major: u32, minor: u32) -> u32 {
    ((major & 0x3fff) << 18) | (minor & 0x3ffff)
}

/// The on-disk key (namespace flags, name) of a Linux xattr name.
fn attr_key(name: &str) -> Result<(u8, Vec<u8>)> {
    attrwrite::linux_key(name)
}

/// The data fork as it will be written: its bytes, format, and what it maps.
struct DataImage {
    format: Format,
    /// The fork bytes; for btree form built once the fork size is known.
    bytes: Vec<u8>,
    /// Extents when the fork maps blocks (extents or btree form).
    exts: Option<Vec<Extent>>,
    size: Option<u64>,
}

impl<D: BlockDev> XfsFs<D> {
    pub(crate) fn w(&self) -> Result<&WriteState> {
        self.wstate
            .as_deref()
            .ok_or_else(|| XfsError::ReadOnly("the filesystem was opened read-only".into()))
    }

    fn wm(&mut self) -> Result<&mut WriteState> {
        self.wstate
            .as_deref_mut()
            .ok_or_else(|| XfsError::ReadOnly("the filesystem was opened read-only".into()))
    }

    /// Directory names are case-insensitive (ASCII) on this filesystem.
    pub(crate) fn ci(&self) -> bool {
        self.sb.versionnum & crate::superblock::version::BORG != 0
    }

    /// The changed state of `ino`, if it changed since the last flush.
    pub(crate) fn mem(&self, ino: u64) -> Option<&MemInode> {
        self.wstate.as_deref().and_then(|w| w.inodes.get(&ino))
    }

    fn now(&self) -> Timestamp {
        self.wstate
            .as_deref()
            .and_then(|w| w.clock)
            .unwrap_or_else(Timestamp::now)
    }

    /// Stamp every later change with `t` instead of the current time (`None`: now).
    pub fn set_clock(&mut self, t: Option<Timestamp>) {
        if let Some(w) = self.wstate.as_deref_mut() {
            w.clock = t;
        }
    }

    /// Bring `ino` into memory (core only).
    fn load(&mut self, ino: u64) -> Result<&mut MemInode> {
        self.w()?;
        if self.mem(ino).is_none() {
            let core = self.inode(ino)?;
            if core.version != 3 {
                return Err(XfsError::ReadOnly(format!("inode {ino} is not a v3 inode")));
            }
            let m = MemInode {
                core,
                data: Data::Disk,
                attrs: None,
                attr_map: Vec::new(),
                attr_bmbt: Vec::new(),
                data_bmbt: Vec::new(),
                freed: false,
            };
            self.wm()?.inodes.insert(ino, m);
        }
        self.wm()?
            .inodes
            .get_mut(&ino)
            .ok_or_else(|| XfsError::NotFound(format!("inode {ino}")))
    }

    /// Bring `ino` and its whole data fork into memory.
    fn load_data(&mut self, ino: u64) -> Result<&mut MemInode> {
        let needs = matches!(self.load(ino)?.data, Data::Disk);
        if needs {
            let core = self.load(ino)?.core.clone();
            let r = self.reader();
            let ft = core
                .file_type()
                .ok_or_else(|| corrupt(format!("inode {ino}"), "mode"))?;
            let (data, bmbt) = match ft {
                FileType::Directory => {
                    let raw = dir::entries(&r, &core)?;
                    let (map, bmbt) = if core.format == Format::Local {
                        (Vec::new(), Vec::new())
                    } else {
                        bmap::extents_and_btree_blocks(&r, &core, Fork::Data)?
                    };
                    let mut d = DirMem::new(ino, map, self.ci(), raw.len());
                    for e in raw {
                        if e.name == b"." {
                            continue;
                        }
                        if e.name == b".." {
                            d.parent = e.ino;
                            continue;
                        }
                        let t = match e.file_type {
                            Some(t) => t,
                            None => self
                                .inode(e.ino)?
                                .file_type()
                                .ok_or_else(|| corrupt(format!("inode {}", e.ino), "mode"))?,
                        };
                        if d.get(&e.name).is_some() {
                            return Err(corrupt(
                                format!("directory inode {ino}"),
                                format!("entry {:?} appears twice", name_str(&e.name)),
                            ));
                        }
                        d.insert(&e.name, e.ino, t);
                    }
                    (Data::Dir(d), bmbt)
                }
                FileType::Symlink if core.format == Format::Local => {
                    let t = self.readlink(ino)?;
                    (Data::Local(t), Vec::new())
                }
                FileType::Regular | FileType::Symlink => {
                    let (e, b) = bmap::extents_and_btree_blocks(&r, &core, Fork::Data)?;
                    (Data::Extents(e), b)
                }
                _ => {
                    let d = crate::be::u32_at(core.data_fork(), 0);
                    (Data::Dev(d), Vec::new())
                }
            };
            let m = self.load(ino)?;
            m.data = data;
            m.data_bmbt = bmbt;
        }
        self.load(ino)
    }

    /// Bring `ino`'s attribute list (and its data fork: the fork boundary may move) into
    /// memory.
    fn load_attrs(&mut self, ino: u64) -> Result<&mut MemInode> {
        self.load_data(ino)?;
        if self.load(ino)?.attrs.is_none() {
            let core = self.load(ino)?.core.clone();
            let r = self.reader();
            let list = attr::raw(&r, &core)?;
            let (map, bmbt) = match core.aformat {
                Some(Format::Extents | Format::Btree) => {
                    bmap::extents_and_btree_blocks(&r, &core, Fork::Attr)?
                }
                _ => (Vec::new(), Vec::new()),
            };
            let m = self.load(ino)?;
            m.attrs = Some(list);
            m.attr_map = map;
            m.attr_bmbt = bmbt;
        }
        self.load(ino)
    }

    fn dir_mut(&mut self, dir: u64) -> Result<&mut DirMem> {
        match &mut self.load_data(dir)?.data {
            Data::Dir(d) => Ok(d),
            _ => Err(XfsError::NotADirectory(format!("inode {dir}"))),
        }
    }

    fn touch_dir(&mut self, dir: u64) -> Result<()> {
        let now = self.now();
        let m = self.load(dir)?;
        m.core.mtime = now;
        m.core.ctime = now;
        Ok(())
    }

    /// Refuse edits to a file whose blocks may be shared with other files (reflink).
    fn check_unshared(&mut self, ino: u64) -> Result<()> {
        if self.load(ino)?.core.is_reflinked() {
            return Err(XfsError::ReadOnly(format!(
                "inode {ino} shares blocks with other files (reflink): changing or freeing \
                 its blocks needs the refcount btree, which imgscrub does not update"
            )));
        }
        Ok(())
    }

    // ---- creating ----

    fn new_inode(&mut self, dir: u64, name: &[u8], mode: u16, attr: &NewAttr) -> Result<u64> {
        check_name(name)?;
        if self.dir_mut(dir)?.get(name).is_some() {
            return Err(XfsError::Exists(name_str(name)));
        }
        let now = attr.time.unwrap_or_else(|| self.now());
        let sb = self.sb.clone();
        let ino = {
            let w = self
                .wstate
                .as_deref_mut()
                .ok_or_else(|| XfsError::ReadOnly("the filesystem was opened read-only".into()))?;
            let stamp = w.stamp;
            w.space.alloc_inode(&self.dev, &sb, &stamp, dir)?
        };
        let uuid = sb.meta_uuid();
        let core = Inode::new_v3(
            &sb,
            ino,
            mode,
            attr.uid,
            attr.gid,
            generation(&uuid, ino),
            now,
        );
        let ft = core
            .file_type()
            .ok_or_else(|| XfsError::Invalid(format!("mode {mode:#o}")))?;
        let data = match ft {
            FileType::Directory => Data::Dir(DirMem::new(dir, Vec::new(), self.ci(), 0)),
            FileType::Regular | FileType::Symlink => Data::Extents(Vec::new()),
            _ => Data::Dev(0),
        };
        let m = MemInode {
            core,
            data,
            attrs: Some(Vec::new()),
            attr_map: Vec::new(),
            attr_bmbt: Vec::new(),
            data_bmbt: Vec::new(),
            freed: false,
        };
        self.wm()?.inodes.insert(ino, m);
        self.dir_mut(dir)?.insert(name, ino, ft);
        if ft == FileType::Directory {
            let m = self.load(dir)?;
            if m.core.nlink >= LINK_MAX {
                return Err(XfsError::Invalid("too many links".into()));
            }
            m.core.nlink += 1;
            self.load(ino)?.core.nlink = 2;
        }
        let m = self.load(dir)?;
        m.core.mtime = now;
        m.core.ctime = now;
        Ok(ino)
    }

    pub fn create(&mut self, dir: u64, name: &[u8], attr: &NewAttr) -> Result<u64> {
        self.new_inode(dir, name, 0o100000 | (attr.perm & 0o7777), attr)
    }

    pub fn mkdir(&mut self, dir: u64, name: &[u8], attr: &NewAttr) -> Result<u64> {
        self.new_inode(dir, name, 0o040000 | (attr.perm & 0o7777), attr)
    }

    /// A device node, FIFO or socket (`file_type`), with `rdev` for devices.
    pub fn mknod(
        &mut self,
        dir: u64,
        name: &[u8],
        file_type: FileType,
        rdev: (u32, u32),
        attr: &NewAttr,
    ) -> Result<u64> {
        if !matches!(
            file_type,
            FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket
        ) {
            return Err(XfsError::Invalid(format!("mknod of a {file_type:?}")));
        }
        let ino = self.new_inode(
            dir,
            name,
            file_type.mode_bits() | (attr.perm & 0o7777),
            attr,
        )?;
        if matches!(file_type, FileType::CharDevice | FileType::BlockDevice) {
            self.load(ino)?.data = Data::Dev(encode_rdev(rdev.0, rdev.1));
        }
        Ok(ino)
    }

    pub fn symlink(&mut self, dir: u64, name: &[u8], target: &[u8], attr: &NewAttr) -> Result<u64> {
        if target.is_empty() || target.len() > SYMLINK_MAX || target.contains(&0) {
            return Err(XfsError::Invalid(format!(
                "symbolic link target of {} bytes",
                target.len()
            )));
        }
        let ino = self.new_inode(dir, name, 0o120000 | 0o777, attr)?;
        let lit = self.load(ino)?.core.literal_size();
        // Local when it leaves room for a shortform attribute fork (a security label).
        if target.len() + 64 <= lit {
            let m = self.load(ino)?;
            m.data = Data::Local(target.to_vec());
            m.core.size = target.len() as u64;
            return Ok(ino);
        }
        // Remote: one extent, one header (v5) for the whole buffer, as the kernel writes.
        let bs = self.sb.blocksize as usize;
        let per = bs - SYMLINK_HDR;
        let n = target.len().div_ceil(per) as u64;
        let near = self.ino_fsb(ino);
        let owner = Owner::File {
            ino,
            attr: false,
            offset: 0,
        };
        let (fsb, got) = self.wm()?.space.alloc(near, n, n, owner)?;
        let mut buf = vec![0u8; n as usize * bs];
        buf[0..4].copy_from_slice(b"XSLM");
        buf[4..8].copy_from_slice(&0u32.to_be_bytes());
        buf[8..12].copy_from_slice(&(target.len() as u32).to_be_bytes());
        let stamp = self.w()?.stamp;
        buf[16..32].copy_from_slice(&stamp.uuid);
        buf[32..40].copy_from_slice(&ino.to_be_bytes());
        buf[40..48].copy_from_slice(&(self.sb.fsb_to_byte(fsb) >> 9).to_be_bytes());
        buf[48..56].copy_from_slice(&stamp.lsn.to_be_bytes());
        buf[SYMLINK_HDR..SYMLINK_HDR + target.len()].copy_from_slice(target);
        let crc = crate::csum::compute(&buf, 12);
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        self.dev.write_at(&buf, self.sb.fsb_to_byte(fsb))?;
        let m = self.load(ino)?;
        m.data = Data::Extents(vec![Extent {
            offset: 0,
            block: fsb,
            len: got,
            unwritten: false,
        }]);
        m.core.size = target.len() as u64;
        Ok(ino)
    }

    /// The filesystem block of inode `ino` (allocation goal for its data).
    fn ino_fsb(&self, ino: u64) -> u64 {
        let sb = &self.sb;
        let agshift = u32::from(sb.agblklog) + u32::from(sb.inopblog);
        let ag = ino >> agshift;
        let bno = (ino & ((1u64 << agshift) - 1)) >> sb.inopblog;
        (ag << sb.agblklog) | bno
    }

    // ---- file data ----

    /// Write `data` at `offset` of a regular file, allocating blocks as needed (near the
    /// file's last extent, contiguous where possible).
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.check_unshared(ino)?;
        let ft = self.load(ino)?.core.file_type();
        if ft != Some(FileType::Regular) {
            return Err(if ft == Some(FileType::Directory) {
                XfsError::IsADirectory(format!("inode {ino}"))
            } else {
                XfsError::Invalid(format!("inode {ino} is not a regular file"))
            });
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| XfsError::Invalid("write past the largest file size".into()))?;
        let bs = u64::from(self.sb.blocksize);
        let first = offset / bs;
        let last = (end - 1) / bs;
        let mut exts = match &mut self.load_data(ino)?.data {
            Data::Extents(e) => std::mem::take(e),
            _ => return Err(XfsError::Invalid(format!("inode {ino} has no extent map"))),
        };
        let res = self.write_blocks(ino, &mut exts, first, last, offset, data);
        normalize(&mut exts);
        let now = self.now();
        let m = self.load(ino)?;
        m.data = Data::Extents(exts);
        res?;
        m.core.size = m.core.size.max(end);
        m.core.mtime = now;
        m.core.ctime = now;
        Ok(())
    }

    fn write_blocks(
        &mut self,
        ino: u64,
        exts: &mut Vec<Extent>,
        first: u64,
        last: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let bs = u64::from(self.sb.blocksize);
        let mut fb = first;
        while fb <= last {
            let idx = exts.partition_point(|e| e.end() <= fb);
            let (block, run, fresh) = match exts.get(idx) {
                Some(e) if e.offset <= fb => {
                    let run = (e.end() - fb).min(last + 1 - fb);
                    let block = e.block + (fb - e.offset);
                    if e.unwritten {
                        split_written(exts, idx, fb, run);
                        (block, run, true)
                    } else {
                        (block, run, false)
                    }
                }
                next => {
                    let hole_end = next.map_or(last + 1, |e| e.offset.min(last + 1));
                    let want = hole_end - fb;
                    let near = match idx.checked_sub(1).and_then(|i| exts.get(i)) {
                        Some(p) => p.block + p.len + (fb - p.end()),
                        None => self.ino_fsb(ino),
                    };
                    let owner = Owner::File {
                        ino,
                        attr: false,
                        offset: fb,
                    };
                    let (block, got) = self.wm()?.space.alloc(near, want, 1, owner)?;
                    let got = got.min(want);
                    exts.insert(
                        idx,
                        Extent {
                            offset: fb,
                            block,
                            len: got,
                            unwritten: false,
                        },
                    );
                    self.load(ino)?.core.nblocks += got;
                    (block, got, true)
                }
            };
            // Bytes of `data` for blocks [fb, fb + run).
            let run_start = fb * bs;
            let run_end = (fb + run) * bs;
            let lo = offset.max(run_start);
            let hi = (offset + data.len() as u64).min(run_end);
            let disk = self.sb.fsb_to_byte(block);
            // Whole blocks are written as they are; a partial first or last block is merged
            // with what it holds (zeros when new).
            let mut pos = lo;
            while pos < hi {
                let bstart = pos - pos % bs;
                let bend = (bstart + bs).min(run_end);
                let chunk_end = if pos == bstart && hi >= bend {
                    // Whole blocks up to the last full one.
                    hi - (hi - bstart) % bs
                } else {
                    hi.min(bstart + bs)
                };
                let src = &data[(pos - offset) as usize..(chunk_end - offset) as usize];
                let at = disk + (pos - run_start);
                if pos == bstart && (chunk_end - bstart).is_multiple_of(bs) {
                    self.dev.write_at(src, at)?;
                } else {
                    let mut buf = vec![0u8; bs as usize];
                    let bdisk = disk + (bstart - run_start);
                    if !fresh {
                        self.dev.read_at(&mut buf, bdisk)?;
                    }
                    let o = (pos - bstart) as usize;
                    buf[o..o + src.len()].copy_from_slice(src);
                    self.dev.write_at(&buf, bdisk)?;
                }
                pos = chunk_end;
            }
            // Blocks of a fresh run that the data does not reach (a hole filled by a write
            // that starts or ends inside it cannot leave any: the run is clipped to the
            // write), so nothing else to zero.
            fb += run;
        }
        Ok(())
    }

    /// Set a regular file's size: blocks past the new end are freed (the tail of the last
    /// block zeroed), growing leaves a hole.
    pub fn truncate(&mut self, ino: u64, size: u64) -> Result<()> {
        let ft = self.load(ino)?.core.file_type();
        if ft != Some(FileType::Regular) {
            return Err(XfsError::Invalid(format!(
                "inode {ino} is not a regular file"
            )));
        }
        if size > i64::MAX as u64 {
            return Err(XfsError::Invalid(format!("size {size}")));
        }
        let now = self.now();
        let old = self.load(ino)?.core.size;
        if size < old {
            self.check_unshared(ino)?;
            let bs = u64::from(self.sb.blocksize);
            let keep = size.div_ceil(bs);
            let mut exts = match &mut self.load_data(ino)?.data {
                Data::Extents(e) => std::mem::take(e),
                _ => return Err(XfsError::Invalid(format!("inode {ino} has no extent map"))),
            };
            let mut freed = 0u64;
            let mut frees = Vec::new();
            let mut kept = Vec::with_capacity(exts.len());
            for e in exts.drain(..) {
                if e.end() <= keep {
                    kept.push(e);
                } else if e.offset >= keep {
                    frees.push((e.block, e.len, e.offset));
                } else {
                    let k = keep - e.offset;
                    kept.push(Extent { len: k, ..e });
                    frees.push((e.block + k, e.len - k, keep));
                }
            }
            // Zero the tail of the last kept block, so that growing again reads zeros.
            if !size.is_multiple_of(bs)
                && let Some(e) = bmap::lookup(&kept, size / bs)
                && !e.unwritten
            {
                let disk = self.sb.fsb_to_byte(e.block + (size / bs - e.offset)) + size % bs;
                let zeros = vec![0u8; (bs - size % bs) as usize];
                self.dev.write_at(&zeros, disk)?;
            }
            for (b, l, off) in frees {
                freed += l;
                let owner = Owner::File {
                    ino,
                    attr: false,
                    offset: off,
                };
                self.wm()?.space.free(b, l, owner)?;
            }
            let m = self.load(ino)?;
            m.data = Data::Extents(kept);
            m.core.nblocks = m.core.nblocks.saturating_sub(freed);
        }
        let m = self.load(ino)?;
        m.core.size = size;
        m.core.mtime = now;
        m.core.ctime = now;
        Ok(())
    }

    // ---- removing ----

    /// Drop one link of `ino`; at zero links it is freed at flush (with its blocks).
    fn drop_link(&mut self, ino: u64) -> Result<()> {
        let now = self.now();
        let m = self.load(ino)?;
        m.core.nlink = m.core.nlink.saturating_sub(1);
        m.core.ctime = now;
        if m.core.nlink == 0 {
            if m.core.is_reflinked() {
                return Err(XfsError::ReadOnly(format!(
                    "inode {ino} shares blocks with other files (reflink): freeing them needs \
                     the refcount btree, which imgscrub does not update"
                )));
            }
            self.load_attrs(ino)?.freed = true;
        }
        Ok(())
    }

    pub fn unlink(&mut self, dir: u64, name: &[u8]) -> Result<()> {
        let Some((ino, t)) = self.dir_mut(dir)?.get(name) else {
            return Err(XfsError::NotFound(name_str(name)));
        };
        if t == FileType::Directory {
            return Err(XfsError::IsADirectory(name_str(name)));
        }
        if self.load(ino)?.core.is_reflinked() && self.load(ino)?.core.nlink <= 1 {
            self.check_unshared(ino)?;
        }
        self.dir_mut(dir)?.remove(name);
        self.touch_dir(dir)?;
        self.drop_link(ino)
    }

    pub fn rmdir(&mut self, dir: u64, name: &[u8]) -> Result<()> {
        let Some((ino, t)) = self.dir_mut(dir)?.get(name) else {
            return Err(XfsError::NotFound(name_str(name)));
        };
        if t != FileType::Directory {
            return Err(XfsError::NotADirectory(name_str(name)));
        }
        if !self.dir_mut(ino)?.entries.is_empty() {
            return Err(XfsError::NotEmpty(name_str(name)));
        }
        self.dir_mut(dir)?.remove(name);
        self.touch_dir(dir)?;
        let p = self.load(dir)?;
        p.core.nlink = p.core.nlink.saturating_sub(1);
        let m = self.load_attrs(ino)?;
        m.core.nlink = 0;
        m.freed = true;
        Ok(())
    }

    /// The parent of directory `dir`.
    fn parent_of(&mut self, dir: u64) -> Result<u64> {
        Ok(self.dir_mut(dir)?.parent)
    }

    pub fn rename(&mut self, from_dir: u64, from: &[u8], to_dir: u64, to: &[u8]) -> Result<()> {
        check_name(to)?;
        let Some((ino, t)) = self.dir_mut(from_dir)?.get(from) else {
            return Err(XfsError::NotFound(name_str(from)));
        };
        self.dir_mut(to_dir)?;
        if from_dir == to_dir && from == to {
            return Ok(());
        }
        let is_dir = t == FileType::Directory;
        if is_dir && from_dir != to_dir {
            // The target directory must not be inside the one moved.
            let mut cur = to_dir;
            for _ in 0..MAX_DEPTH {
                if cur == ino {
                    return Err(XfsError::Invalid(format!(
                        "cannot move {:?} into itself",
                        name_str(from)
                    )));
                }
                if cur == self.sb.rootino {
                    break;
                }
                cur = self.parent_of(cur)?;
            }
        }
        if let Some((old, ot)) = self.dir_mut(to_dir)?.get(to) {
            if old == ino {
                // Both names are links to the same inode: drop the source name.
                self.dir_mut(from_dir)?.remove(from);
                self.touch_dir(from_dir)?;
                return self.drop_link(ino);
            }
            match (is_dir, ot == FileType::Directory) {
                (true, true) => self.rmdir(to_dir, to)?,
                (false, false) => self.unlink(to_dir, to)?,
                (true, false) => return Err(XfsError::NotADirectory(name_str(to))),
                (false, true) => return Err(XfsError::IsADirectory(name_str(to))),
            }
        }
        self.dir_mut(from_dir)?.remove(from);
        self.dir_mut(to_dir)?.insert(to, ino, t);
        self.touch_dir(from_dir)?;
        self.touch_dir(to_dir)?;
        let now = self.now();
        self.load(ino)?.core.ctime = now;
        if is_dir && from_dir != to_dir {
            self.dir_mut(ino)?.parent = to_dir;
            let f = self.load(from_dir)?;
            f.core.nlink = f.core.nlink.saturating_sub(1);
            self.load(to_dir)?.core.nlink += 1;
        }
        Ok(())
    }

    /// A new name for an existing non-directory inode.
    pub fn link(&mut self, ino: u64, dir: u64, name: &[u8]) -> Result<()> {
        check_name(name)?;
        let t = self
            .load(ino)?
            .core
            .file_type()
            .ok_or_else(|| corrupt(format!("inode {ino}"), "mode"))?;
        if t == FileType::Directory {
            return Err(XfsError::IsADirectory(format!("inode {ino}")));
        }
        if self.dir_mut(dir)?.get(name).is_some() {
            return Err(XfsError::Exists(name_str(name)));
        }
        self.dir_mut(dir)?.insert(name, ino, t);
        self.touch_dir(dir)?;
        let now = self.now();
        let m = self.load(ino)?;
        m.core.nlink += 1;
        m.core.ctime = now;
        Ok(())
    }

    // ---- attributes ----

    pub fn set_attr(&mut self, ino: u64, attr: &SetAttr) -> Result<()> {
        let now = self.now();
        let m = self.load(ino)?;
        if let Some(p) = attr.perm {
            m.core.mode = (m.core.mode & !0o7777) | (p & 0o7777);
        }
        if let Some(u) = attr.uid {
            m.core.uid = u;
        }
        if let Some(g) = attr.gid {
            m.core.gid = g;
        }
        if let Some(t) = attr.atime {
            m.core.atime = t;
        }
        if let Some(t) = attr.mtime {
            m.core.mtime = t;
        }
        m.core.ctime = attr.ctime.unwrap_or(now);
        Ok(())
    }

    pub fn set_xattr(&mut self, ino: u64, name: &str, value: &[u8]) -> Result<()> {
        let a = attrwrite::from_linux(name, value)?;
        let now = self.now();
        let m = self.load_attrs(ino)?;
        let list = m.attrs.get_or_insert_with(Vec::new);
        match list
            .iter_mut()
            .find(|x| x.flags & !0x1 == a.flags & !0x1 && x.name == a.name)
        {
            Some(x) => *x = a,
            None => list.push(a),
        }
        m.core.ctime = now;
        Ok(())
    }

    pub fn remove_xattr(&mut self, ino: u64, name: &str) -> Result<()> {
        let (flags, key) = attr_key(name)?;
        let now = self.now();
        let m = self.load_attrs(ino)?;
        let list = m.attrs.get_or_insert_with(Vec::new);
        let before = list.len();
        list.retain(|x| !(x.flags & !0x1 == flags & !0x1 && x.name == key));
        if list.len() == before {
            return Err(XfsError::NotFound(format!("attribute {name}")));
        }
        m.core.ctime = now;
        Ok(())
    }

    // ---- flush ----

    /// Write every change: directories, attributes, block maps and inodes, then the AG
    /// btrees and headers, then the superblock counters. Does nothing when nothing changed.
    pub fn flush(&mut self) -> Result<()> {
        let Some(w) = self.wstate.as_deref_mut() else {
            return Ok(());
        };
        if w.inodes.is_empty() {
            return Ok(());
        }
        let inodes = std::mem::take(&mut w.inodes);
        let res = self.flush_inodes(inodes);
        if let Ok(mut c) = self.dirs.lock() {
            c.clear();
        }
        if let Ok(mut c) = self.cache.lock() {
            *c = None;
        }
        res?;
        let sb = self.sb.clone();
        let Some(w) = self.wstate.as_deref_mut() else {
            return Ok(());
        };
        let stamp = w.stamp;
        w.space.flush(&self.dev, &sb, &stamp)?;
        let (icount, ifree, fdblocks) = (w.space.icount(), w.space.ifree(), w.space.fdblocks());
        self.write_sb_counters(icount, ifree, fdblocks)?;
        self.dev.flush()?;
        Ok(())
    }

    fn write_sb_counters(&mut self, icount: u64, ifree: u64, fdblocks: u64) -> Result<()> {
        let ss = usize::from(self.sb.sectsize);
        let mut b = vec![0u8; ss];
        self.dev.read_at(&mut b, 0)?;
        b[128..136].copy_from_slice(&icount.to_be_bytes());
        b[136..144].copy_from_slice(&ifree.to_be_bytes());
        b[144..152].copy_from_slice(&fdblocks.to_be_bytes());
        if self.sb.is_v5() {
            let crc = crate::csum::compute(&b, crate::superblock::CRC_OFF);
            b[crate::superblock::CRC_OFF..crate::superblock::CRC_OFF + 4]
                .copy_from_slice(&crc.to_le_bytes());
        }
        self.dev.write_at(&b, 0)?;
        self.sb.icount = icount;
        self.sb.ifree = ifree;
        self.sb.fdblocks = fdblocks;
        Ok(())
    }

    fn flush_inodes(&mut self, inodes: BTreeMap<u64, MemInode>) -> Result<()> {
        for (ino, m) in inodes {
            if m.freed {
                self.free_inode_now(ino, m)?;
            } else {
                self.write_inode(ino, m)?;
            }
        }
        Ok(())
    }

    fn free_blocks(&mut self, ino: u64, attr: bool, exts: &[Extent], bmbt: &[u64]) -> Result<()> {
        let w = self.wm()?;
        for e in exts {
            w.space.free(
                e.block,
                e.len,
                Owner::File {
                    ino,
                    attr,
                    offset: e.offset,
                },
            )?;
        }
        for &b in bmbt {
            w.space.free(b, 1, Owner::Bmbt { ino, attr })?;
        }
        Ok(())
    }

    fn free_inode_now(&mut self, ino: u64, m: MemInode) -> Result<()> {
        if let Data::Extents(e) = &m.data {
            self.free_blocks(ino, false, e, &m.data_bmbt)?;
        }
        if let Data::Dir(d) = &m.data {
            self.free_blocks(ino, false, &d.map, &m.data_bmbt)?;
        }
        self.free_blocks(ino, true, &m.attr_map, &m.attr_bmbt)?;
        let stamp = self.w()?.stamp;
        let bytes = m.core.encode_free(&stamp.uuid, stamp.lsn);
        let off = Inode::location(&self.reader(), ino)?;
        self.dev.write_at(&bytes, off)?;
        self.wm()?.space.free_inode(ino)
    }

    /// Give a fork's logical blocks [lblk, lblk + n) physical blocks: the ones `map` already
    /// has for them when all are mapped contiguously, else new ones near `near`.
    fn place(
        &mut self,
        ino: u64,
        attr: bool,
        map: &[Extent],
        lblk: u64,
        n: u64,
        near: u64,
    ) -> Result<(u64, bool)> {
        if let Some(e) = bmap::lookup(map, lblk)
            && e.end() >= lblk + n
            && !e.unwritten
        {
            return Ok((e.block + (lblk - e.offset), true));
        }
        let owner = Owner::File {
            ino,
            attr,
            offset: lblk,
        };
        let (b, _) = self.wm()?.space.alloc(near, n, n, owner)?;
        Ok((b, false))
    }

    /// Write fork blocks (each `data` spanning `data.len() / blocksize` blocks at logical
    /// `lblk`), reusing the old map where possible; returns the new extents. Old mapped
    /// blocks not reused are freed.
    fn write_fork_blocks(
        &mut self,
        ino: u64,
        attr: bool,
        old: &[Extent],
        blocks: Vec<(u64, Vec<u8>)>,
        stamp_block: &dyn Fn(u64, &mut [u8], u64),
    ) -> Result<Vec<Extent>> {
        let bs = u64::from(self.sb.blocksize);
        let mut new: Vec<Extent> = Vec::with_capacity(blocks.len());
        let mut reused: Vec<(u64, u64)> = Vec::new();
        let mut near = old.first().map_or_else(|| self.ino_fsb(ino), |e| e.block);
        for (lblk, mut data) in blocks {
            let n = (data.len() as u64).div_ceil(bs);
            let (fsb, was_mapped) = self.place(ino, attr, old, lblk, n, near)?;
            if was_mapped {
                reused.push((lblk, n));
            }
            stamp_block(lblk, &mut data, self.sb.fsb_to_byte(fsb) >> 9);
            self.dev.write_at(&data, self.sb.fsb_to_byte(fsb))?;
            new.push(Extent {
                offset: lblk,
                block: fsb,
                len: n,
                unwritten: false,
            });
            near = fsb + n;
        }
        // Free what the old map had and the new one does not reuse.
        reused.sort_unstable();
        let w = self.wm()?;
        for e in old {
            let mut cur = e.offset;
            while cur < e.end() {
                let i = reused.partition_point(|&(l, n)| l + n <= cur);
                match reused.get(i) {
                    Some(&(l, n)) if l <= cur => cur = (l + n).min(e.end()),
                    next => {
                        let stop = next.map_or(e.end(), |&(l, _)| l.min(e.end()));
                        w.space.free(
                            e.block + (cur - e.offset),
                            stop - cur,
                            Owner::File {
                                ino,
                                attr,
                                offset: cur,
                            },
                        )?;
                        cur = stop;
                    }
                }
            }
        }
        normalize(&mut new);
        Ok(new)
    }

    fn write_inode(&mut self, ino: u64, mut m: MemInode) -> Result<()> {
        let stamp = self.w()?.stamp;
        let lit = m.core.literal_size();
        if matches!(m.data, Data::Disk) && m.attrs.is_none() {
            // Only core fields changed: the forks stay as they are.
            let data = m.core.data_fork().to_vec();
            let attrf = m.core.attr_fork().to_vec();
            return self.put_inode(&m.core, &stamp, &data, &attrf);
        }
        if matches!(m.data, Data::Disk) {
            // Attributes changed: the data fork must be in memory (load_attrs does that).
            return Err(XfsError::Invalid(format!(
                "inode {ino}: data fork not loaded"
            )));
        }
        let attrs: Vec<RawAttr> = match m.attrs.take() {
            Some(a) => a,
            None => {
                // Data changed, attributes did not: keep them, re-encoded (the fork boundary
                // may move).
                let r = self.reader();
                let list = attr::raw(&r, &m.core)?;
                let (map, bmbt) = match m.core.aformat {
                    Some(Format::Extents | Format::Btree) => {
                        bmap::extents_and_btree_blocks(&r, &m.core, Fork::Attr)?
                    }
                    _ => (Vec::new(), Vec::new()),
                };
                m.attr_map = map;
                m.attr_bmbt = bmbt;
                list
            }
        };
        // The attribute fork first: its form and size decide where the data fork ends.
        // Shortform when it fits beside the smallest data fork this file can have (the
        // kernel's minimum beside an attribute fork, or what a local/device fork needs);
        // else blocks, whose extent list is then what the attribute fork holds.
        let is_dev = matches!(m.data, Data::Dev(_));
        let data_min = match &m.data {
            Data::Dev(_) => 8,
            Data::Local(t) => round8(t.len()),
            _ => MIN_DATA_FORK,
        };
        let mut attr_bytes = Vec::new();
        let mut attr_exts: Vec<Extent> = Vec::new();
        let mut aformat = None;
        let old_attr_map = std::mem::take(&mut m.attr_map);
        let old_attr_bmbt = std::mem::take(&mut m.attr_bmbt);
        // Bytes of the literal area the attribute fork takes.
        let mut a_size = 0usize;
        if attrs.is_empty() {
            self.free_blocks(ino, true, &old_attr_map, &old_attr_bmbt)?;
        } else {
            let space = lit.saturating_sub(data_min);
            let img = attrwrite::encode(&AttrGeom::from_sb(&self.sb), ino, &attrs, space)?;
            match img {
                AttrImage::Short(b) => {
                    self.free_blocks(ino, true, &old_attr_map, &old_attr_bmbt)?;
                    a_size = round8(b.len());
                    attr_bytes = b;
                    aformat = Some(Format::Local);
                }
                AttrImage::Blocks(blocks) => {
                    let kinds: HashMap<u64, (crate::attrwrite::AttrBlockKind, bool)> =
                        blocks.iter().map(|b| (b.lblk, (b.kind, b.v5))).collect();
                    let list: Vec<(u64, Vec<u8>)> =
                        blocks.into_iter().map(|b| (b.lblk, b.data)).collect();
                    let stamp_fn = |lblk: u64, data: &mut [u8], daddr: u64| {
                        let Some((kind, v5)) = kinds.get(&lblk).copied() else {
                            return;
                        };
                        let mut img = crate::attrwrite::AttrBlockImage {
                            lblk,
                            data: data.to_vec(),
                            kind,
                            v5,
                        };
                        attrwrite::stamp(&mut img, daddr, ino, &stamp);
                        data.copy_from_slice(&img.data);
                    };
                    if !old_attr_bmbt.is_empty() {
                        self.free_blocks(ino, true, &[], &old_attr_bmbt)?;
                    }
                    attr_exts =
                        self.write_fork_blocks(ino, true, &old_attr_map, list, &stamp_fn)?;
                    a_size = attr_exts.len() * 16;
                    if a_size > space {
                        return Err(XfsError::Invalid(format!(
                            "inode {ino}: the attributes need {} extents, more than fit in \
                             the inode (an attribute block-map btree is not written)",
                            attr_exts.len()
                        )));
                    }
                    attr_bytes = encode_extents(&attr_exts);
                    aformat = Some(Format::Extents);
                }
            }
        }
        // The data fork gets the rest of the literal area (a device number exactly its
        // 8 bytes, as xfs_repair requires when there is an attribute fork).
        let df = if attrs.is_empty() {
            lit
        } else if is_dev {
            8
        } else {
            lit - a_size
        };
        let data_img = self.encode_data(ino, &mut m, df)?;
        // Data fork bytes (btree form is built now that the fork size is known).
        let data_bytes;
        let mut data_blocks = 0u64;
        let mut bmbt_blocks = 0u64;
        match data_img.format {
            Format::Btree => {
                let exts = data_img.exts.clone().unwrap_or_default();
                let root_max = df.saturating_sub(4) / 16;
                let shape = bmapwrite::shape(&self.sb, exts.len(), root_max);
                let need: u64 = shape.iter().sum::<usize>() as u64;
                let near = exts.first().map_or_else(|| self.ino_fsb(ino), |e| e.block);
                let mut blocks = Vec::with_capacity(need as usize);
                for _ in 0..need {
                    let (b, _) =
                        self.wm()?
                            .space
                            .alloc(near, 1, 1, Owner::Bmbt { ino, attr: false })?;
                    blocks.push(b);
                }
                let img = bmapwrite::build_btree(&self.sb, &stamp, ino, &exts, df, &blocks)?;
                for (b, bytes) in &img.blocks {
                    self.dev.write_at(bytes, self.sb.fsb_to_byte(*b))?;
                }
                data_bytes = img.root;
                bmbt_blocks = need;
                data_blocks = exts.iter().map(|e| e.len).sum();
            }
            _ => {
                data_bytes = data_img.bytes.clone();
                if let Some(e) = &data_img.exts {
                    data_blocks = e.iter().map(|e| e.len).sum();
                }
            }
        }
        if data_bytes.len() > df && data_img.format != Format::Btree {
            return Err(XfsError::Invalid(format!(
                "inode {ino}: data fork of {} bytes does not fit in {df}",
                data_bytes.len()
            )));
        }
        let attr_blocks: u64 = attr_exts.iter().map(|e| e.len).sum();
        m.core.format = data_img.format;
        m.core.nextents = data_img.exts.as_ref().map_or(0, |e| e.len() as u64);
        if let Some(s) = data_img.size {
            m.core.size = s;
        }
        m.core.nblocks = data_blocks + bmbt_blocks + attr_blocks;
        m.core.anextents = attr_exts.len() as u32;
        m.core.aformat = aformat;
        m.core.forkoff = if attrs.is_empty() { 0 } else { (df / 8) as u8 };
        if m.core.nextents > u64::from(u32::MAX) {
            return Err(XfsError::Invalid(format!("inode {ino}: too many extents")));
        }
        self.put_inode(&m.core, &stamp, &data_bytes, &attr_bytes)
    }

    fn put_inode(&mut self, core: &Inode, stamp: &Stamp, data: &[u8], attr: &[u8]) -> Result<()> {
        let bytes = core.encode(&stamp.uuid, stamp.lsn, data, attr);
        let off = Inode::location(&self.reader(), core.ino)?;
        self.dev.write_at(&bytes, off)?;
        Ok(())
    }

    /// Encode the data fork for a fork of at most `space` bytes.
    fn encode_data(&mut self, ino: u64, m: &mut MemInode, space: usize) -> Result<DataImage> {
        let stamp = self.w()?.stamp;
        let data = std::mem::replace(&mut m.data, Data::Disk);
        let old_bmbt = std::mem::take(&mut m.data_bmbt);
        if !old_bmbt.is_empty() {
            self.free_blocks(ino, false, &[], &old_bmbt)?;
        }
        match data {
            Data::Disk => Err(XfsError::Invalid(format!(
                "inode {ino}: data fork not loaded"
            ))),
            Data::Local(t) => Ok(DataImage {
                format: Format::Local,
                bytes: t,
                exts: None,
                size: None,
            }),
            Data::Dev(d) => Ok(DataImage {
                format: Format::Dev,
                bytes: d.to_be_bytes().to_vec(),
                exts: None,
                size: None,
            }),
            Data::Extents(mut e) => {
                normalize(&mut e);
                Ok(extent_image(e, space, None))
            }
            Data::Dir(d) => {
                let g = DirGeom::from_sb(&self.sb);
                let ents: Vec<NewEntry<'_>> = d
                    .entries
                    .iter()
                    .map(|(n, i, t)| NewEntry {
                        name: n,
                        ino: *i,
                        file_type: *t,
                    })
                    .collect();
                let img = dirwrite::encode(&g, ino, d.parent, &ents, space)?;
                match img {
                    DirImage::Short(b) => {
                        self.free_blocks(ino, false, &d.map, &[])?;
                        Ok(DataImage {
                            format: Format::Local,
                            size: Some(b.len() as u64),
                            bytes: b,
                            exts: None,
                        })
                    }
                    DirImage::Blocks(blocks) => {
                        let bs = u64::from(self.sb.blocksize);
                        let leaf = dir::LEAF_OFFSET / bs;
                        let dbs = u64::from(self.sb.dirblksize());
                        let size = blocks
                            .iter()
                            .filter(|b| b.lblk < leaf)
                            .map(|b| b.lblk * bs + dbs)
                            .max()
                            .unwrap_or(dbs);
                        let list = blocks.into_iter().map(|b| (b.lblk, b.data)).collect();
                        let stamp_fn = |_lblk: u64, data: &mut [u8], daddr: u64| {
                            dirwrite::stamp(data, daddr, ino, &stamp);
                        };
                        let exts = self.write_fork_blocks(ino, false, &d.map, list, &stamp_fn)?;
                        Ok(extent_image(exts, space, Some(size)))
                    }
                }
            }
        }
    }
}

/// The data fork image of an extent list: in the inode when it fits in `space`, else btree
/// form (built by the caller once the fork size is fixed).
fn extent_image(e: Vec<Extent>, space: usize, size: Option<u64>) -> DataImage {
    if e.len() * 16 <= space {
        DataImage {
            format: Format::Extents,
            bytes: encode_extents(&e),
            exts: Some(e),
            size,
        }
    } else {
        DataImage {
            format: Format::Btree,
            bytes: Vec::new(),
            exts: Some(e),
            size,
        }
    }
}

/// Mark file blocks [fb, fb + n) of the unwritten extent `exts[idx]` as written, splitting it.
fn split_written(exts: &mut Vec<Extent>, idx: usize, fb: u64, n: u64) {
    let Some(&e) = exts.get(idx) else { return };
    let mut parts = Vec::with_capacity(3);
    if fb > e.offset {
        parts.push(Extent {
            len: fb - e.offset,
            ..e
        });
    }
    parts.push(Extent {
        offset: fb,
        block: e.block + (fb - e.offset),
        len: n,
        unwritten: false,
    });
    if fb + n < e.end() {
        parts.push(Extent {
            offset: fb + n,
            block: e.block + (fb + n - e.offset),
            len: e.end() - (fb + n),
            unwritten: true,
        });
    }
    exts.splice(idx..=idx, parts);
}
