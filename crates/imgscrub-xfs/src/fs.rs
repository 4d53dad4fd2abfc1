//! The filesystem: open (superblock, log, AG headers), path-level reads, free space.

use crate::ag::{Agf, Agi, agfl_blocks};
use crate::attr;
use crate::bmap::{self, Extent, Fork};
use crate::btree::{self, InodeChunk};
use crate::dir::{self, DirForm, RawEntry};
use crate::error::{Result, XfsError, corrupt};
use crate::inode::{Format, Inode};
use crate::log::{self, LogState};
use crate::reader::Reader;
use crate::superblock::{Superblock, incompat, ro_compat};
use imgscrub_disk::BlockDev;
use imgscrub_vocab::{FileType, FreeRange, Timestamp};
use std::sync::{Arc, Mutex};

/// How to open.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Open for writing. Not implemented yet: every XFS is refused for writing, with a
    /// message saying so.
    pub writable: bool,
}

/// What `stat` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub file_type: FileType,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub rdev: Option<(u32, u32)>,
    /// 512-byte sectors allocated (data and block-map blocks), as `stat(2)` counts them.
    pub blocks_512: u64,
    pub generation: u32,
    pub projid: u32,
}

/// One directory entry as `read_dir` returns it ("." and ".." left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub file_type: FileType,
}

/// Per-AG numbers for `inspect` and the consistency checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgSummary {
    pub ag: u32,
    pub blocks: u32,
    pub free_blocks: u32,
    pub free_extents: u64,
    pub longest_free: u32,
    pub inodes: u32,
    pub free_inodes: u32,
}

/// An open XFS filesystem (read-only for now).
pub struct XfsFs<D: BlockDev> {
    pub(crate) dev: D,
    pub(crate) sb: Superblock,
    log: LogState,
    /// The last file's extent map: reads of one file in many calls parse it once.
    pub(crate) cache: Mutex<Option<(u64, Arc<Vec<Extent>>)>>,
    /// Name indexes of the directories looked up last (the filesystem is never written
    /// while open, so they cannot go stale): a path walk or a scan of one big directory
    /// parses each directory once, not once per name.
    pub(crate) dirs: Mutex<Vec<(u64, Arc<DirIndex>)>>,
    /// Everything changed since the last flush (writable opens only).
    pub(crate) wstate: Option<Box<crate::write::WriteState>>,
}

/// A directory's entries by name.
type DirIndex = std::collections::HashMap<Vec<u8>, u64>;
/// How many directory indexes are kept.
const DIR_CACHE: usize = 16;

impl<D: BlockDev> XfsFs<D> {
    /// Open the filesystem on `dev`: the primary superblock is checked (geometry, CRC,
    /// features), the log must be clean, and every AG header must be sound.
    pub fn open(dev: D, opts: OpenOptions) -> Result<Self> {
        let mut head = vec![0u8; 512];
        if dev.len() < 512 {
            return Err(corrupt(
                "superblock",
                "the device is smaller than one sector",
            ));
        }
        dev.read_at(&mut head, 0)?;
        // The sector size is in the first 512 bytes; v5 checks the CRC over the whole sector.
        let ss = usize::from(crate::be::u16_at(&head, 102));
        if (512..=32768).contains(&ss) && ss.is_power_of_two() && ss > 512 && dev.len() >= ss as u64
        {
            head = vec![0u8; ss];
            dev.read_at(&mut head, 0)?;
        }
        let sb = Superblock::parse(&head)?;
        sb.check_readable()?;
        // dblocks is at most agcount * agblocks (checked), which can still overflow in bytes.
        let end = sb.dblocks.checked_mul(u64::from(sb.blocksize));
        if end.is_none_or(|e| e > dev.len()) {
            let end = end.map_or_else(|| "more than 16 EiB".to_string(), |e| format!("{e} bytes"));
            return Err(corrupt(
                "superblock",
                format!(
                    "the filesystem is {end} but the device only {} bytes (truncated image?)",
                    dev.len()
                ),
            ));
        }
        let log = log::check(&Reader::new(&dev, &sb))?;
        let mut fs = XfsFs {
            dev,
            sb,
            log,
            cache: Mutex::new(None),
            dirs: Mutex::new(Vec::new()),
            wstate: None,
        };
        {
            let r = fs.reader();
            for ag in 0..fs.sb.agcount {
                let agf = Agf::read(&r, ag)?;
                agfl_blocks(&r, ag, &agf)?;
                let agi = Agi::read(&r, ag)?;
                if agi.has_unlinked() {
                    return Err(XfsError::NeedsRepair(format!(
                        "AG {ag} has inodes that were unlinked while open and never freed \
                         (an unclean shutdown): mount the filesystem once or run `xfs_repair`"
                    )));
                }
            }
            let root = Inode::read(&r, fs.sb.rootino)?;
            if root.file_type() != Some(FileType::Directory) {
                return Err(corrupt("root inode", "not a directory"));
            }
        }
        if opts.writable {
            fs.check_writable()?;
            let space = crate::space::Space::load(&fs.reader())?;
            fs.wstate = Some(Box::new(crate::write::WriteState {
                space,
                // LSN 0, as mkfs.xfs and xfs_repair write: "no log item", never ahead of
                // the log (xfs_repair flags a metadata LSN equal to the log head as ahead of
                // it and would reformat the log), and always replayed over by log recovery.
                stamp: crate::meta::Stamp {
                    uuid: fs.sb.meta_uuid(),
                    lsn: 0,
                },
                clock: None,
                inodes: std::collections::BTreeMap::new(),
            }));
        }
        Ok(fs)
    }

    /// Could this filesystem be opened for writing? `Err` says why not (v4, a realtime
    /// volume, quota accounting, a structure the allocator cannot keep exact…).
    pub fn writable_check(&self) -> Result<()> {
        self.check_writable()?;
        crate::space::Space::load(&self.reader()).map(|_| ())
    }

    /// Refuse to write what the write side cannot keep exact, naming why.
    fn check_writable(&self) -> Result<()> {
        let sb = &self.sb;
        if !sb.is_v5() {
            return Err(XfsError::ReadOnly(
                "v4 XFS (no metadata checksums) is read-only in imgscrub".into(),
            ));
        }
        if sb.rblocks != 0 {
            return Err(XfsError::ReadOnly(
                "the filesystem has a realtime volume".into(),
            ));
        }
        // Quota accounting on: usage counters in the quota inodes would need updating.
        const QUOTA_ACCT: u16 = 0x0001 | 0x0008 | 0x0040;
        if sb.qflags & QUOTA_ACCT != 0 {
            return Err(XfsError::ReadOnly(format!(
                "quota accounting is on (qflags {:#x}): the quota usage counters would need \
                 updating",
                sb.qflags
            )));
        }
        if sb.features_log_incompat != 0 {
            return Err(XfsError::ReadOnly(format!(
                "log-incompatible features {:#x} are set",
                sb.features_log_incompat
            )));
        }
        Ok(())
    }

    pub(crate) fn reader(&self) -> Reader<'_> {
        Reader::new(&self.dev, &self.sb)
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn log_state(&self) -> LogState {
        self.log
    }

    pub fn root(&self) -> u64 {
        self.sb.rootino
    }

    pub fn into_inner(self) -> D {
        self.dev
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Read and check inode `ino`.
    pub fn inode(&self, ino: u64) -> Result<Inode> {
        if let Some(m) = self.mem(ino) {
            if m.freed {
                return Err(XfsError::NotFound(format!("inode {ino} (deleted)")));
            }
            return Ok(m.core.clone());
        }
        Inode::read(&self.reader(), ino)
    }

    fn dir_inode(&self, ino: u64) -> Result<Inode> {
        let i = self.inode(ino)?;
        if i.file_type() != Some(FileType::Directory) {
            return Err(XfsError::NotADirectory(format!("inode {ino}")));
        }
        Ok(i)
    }

    pub fn stat(&self, ino: u64) -> Result<Stat> {
        let i = self.inode(ino)?;
        let file_type = i
            .file_type()
            .ok_or_else(|| corrupt(format!("inode {ino}"), "mode"))?;
        Ok(Stat {
            ino,
            file_type,
            perm: i.perm(),
            uid: i.uid,
            gid: i.gid,
            size: i.size,
            nlink: i.nlink,
            atime: i.atime,
            mtime: i.mtime,
            ctime: i.ctime,
            crtime: i.crtime,
            rdev: i.rdev(),
            blocks_512: i.nblocks << (self.sb.blocklog - 9),
            generation: i.generation,
            projid: i.projid,
        })
    }

    /// Entries of directory `ino` as stored, with "." / ".." where the form stores them.
    pub fn raw_entries(&self, ino: u64) -> Result<Vec<RawEntry>> {
        if let Some(crate::write::Data::Dir(d)) = self.mem(ino).map(|m| &m.data) {
            let mut out = Vec::with_capacity(d.entries.len() + 2);
            out.push(RawEntry {
                name: b".".to_vec(),
                ino,
                file_type: Some(FileType::Directory),
            });
            out.push(RawEntry {
                name: b"..".to_vec(),
                ino: d.parent,
                file_type: Some(FileType::Directory),
            });
            out.extend(d.entries.iter().map(|(n, i, t)| RawEntry {
                name: n.clone(),
                ino: *i,
                file_type: Some(*t),
            }));
            return Ok(out);
        }
        let d = self.dir_inode(ino)?;
        dir::entries(&self.reader(), &d)
    }

    /// The entries of a directory, without "." and "..". Entries of filesystems without the
    /// ftype feature get their type from the inode.
    pub fn read_dir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for e in self.raw_entries(ino)? {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let file_type = match e.file_type {
                Some(t) => t,
                None => self
                    .inode(e.ino)?
                    .file_type()
                    .ok_or_else(|| corrupt(format!("inode {}", e.ino), "mode"))?,
            };
            out.push(DirEntry {
                name: e.name,
                ino: e.ino,
                file_type,
            });
        }
        Ok(out)
    }

    /// Look `name` up in directory `dir` ("." and ".." included).
    pub fn lookup(&self, dir: u64, name: &[u8]) -> Result<Option<u64>> {
        if name == b"." {
            self.dir_inode(dir)?;
            return Ok(Some(dir));
        }
        if let Some(m) = self.mem(dir) {
            match &m.data {
                crate::write::Data::Dir(d) => {
                    if name == b".." {
                        return Ok(Some(d.parent));
                    }
                    return Ok(d.get(name).map(|(i, _)| i));
                }
                crate::write::Data::Disk => {}
                _ => return Err(XfsError::NotADirectory(format!("inode {dir}"))),
            }
        }
        let idx = self.dir_index(dir)?;
        if self.ci() {
            return Ok(idx.get(&name.to_ascii_lowercase()).copied());
        }
        Ok(idx.get(name).copied())
    }

    /// The name index of directory `dir`, from the cache or parsed now.
    fn dir_index(&self, dir: u64) -> Result<Arc<DirIndex>> {
        if let Ok(c) = self.dirs.lock()
            && let Some((_, idx)) = c.iter().find(|(d, _)| *d == dir)
        {
            return Ok(idx.clone());
        }
        let ci = self.ci();
        let idx: Arc<DirIndex> = Arc::new(
            self.raw_entries(dir)?
                .into_iter()
                .map(|e| {
                    // An ascii-ci filesystem matches names without regard to ASCII case (the
                    // kernel's lookup does): the index keys are folded.
                    let key = if ci {
                        e.name.to_ascii_lowercase()
                    } else {
                        e.name
                    };
                    (key, e.ino)
                })
                .collect(),
        );
        if let Ok(mut c) = self.dirs.lock() {
            if c.len() >= DIR_CACHE {
                c.remove(0);
            }
            c.push((dir, idx.clone()));
        }
        Ok(idx)
    }

    /// Which of the five forms directory `ino` is in.
    pub fn dir_form(&self, ino: u64) -> Result<DirForm> {
        let d = self.dir_inode(ino)?;
        dir::form(&self.reader(), &d)
    }

    /// The data extents of a file (empty for inline data).
    pub fn extents(&self, ino: u64) -> Result<Vec<Extent>> {
        if let Some(crate::write::Data::Extents(e)) = self.mem(ino).map(|m| &m.data) {
            return Ok(e.clone());
        }
        let i = self.inode(ino)?;
        bmap::extents(&self.reader(), &i, Fork::Data)
    }

    fn cached_extents(&self, i: &Inode) -> Result<Arc<Vec<Extent>>> {
        if let Some(crate::write::Data::Extents(e)) = self.mem(i.ino).map(|m| &m.data) {
            return Ok(Arc::new(e.clone()));
        }
        if let Ok(c) = self.cache.lock()
            && let Some((ino, exts)) = c.as_ref()
            && *ino == i.ino
        {
            return Ok(exts.clone());
        }
        let exts = Arc::new(bmap::extents(&self.reader(), i, Fork::Data)?);
        if let Ok(mut c) = self.cache.lock() {
            *c = Some((i.ino, exts.clone()));
        }
        Ok(exts)
    }

    /// Read file data at `offset`; holes and unwritten extents read as zeros. Returns the
    /// byte count (0 at end of file).
    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let i = self.inode(ino)?;
        match i.file_type() {
            Some(FileType::Regular) => {}
            Some(FileType::Directory) => {
                return Err(XfsError::IsADirectory(format!("inode {ino}")));
            }
            _ => {
                return Err(XfsError::Invalid(format!(
                    "inode {ino} is not a regular file"
                )));
            }
        }
        if offset >= i.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (i.size - offset).min(buf.len() as u64) as usize;
        let exts = self.cached_extents(&i)?;
        let buf = &mut buf[..n];
        let bs = u64::from(self.sb.blocksize);
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let fb = pos / bs;
            let in_block = pos % bs;
            let idx = exts.partition_point(|e| e.end() <= fb);
            let chunk;
            match exts.get(idx) {
                Some(e) if e.offset <= fb => {
                    // Contiguous on disk up to the extent's end.
                    let avail = (e.end() - fb) * bs - in_block;
                    chunk = avail.min((n - done) as u64) as usize;
                    let dst = &mut buf[done..done + chunk];
                    if e.unwritten {
                        dst.fill(0);
                    } else {
                        let byte = self.sb.fsb_to_byte(e.block + (fb - e.offset)) + in_block;
                        self.dev.read_at(dst, byte)?;
                    }
                }
                next => {
                    // A hole up to the next extent (or the end of the file).
                    let hole_end = next.map_or(u64::MAX, |e| e.offset.saturating_mul(bs));
                    chunk = (hole_end - pos).min((n - done) as u64) as usize;
                    buf[done..done + chunk].fill(0);
                }
            }
            done += chunk;
        }
        Ok(n)
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        if i.file_type() != Some(FileType::Symlink) {
            return Err(XfsError::Invalid(format!(
                "inode {ino} is not a symbolic link"
            )));
        }
        let name = || format!("symbolic link inode {ino}");
        let size = i.size as usize;
        match self.mem(ino).map(|m| &m.data) {
            Some(crate::write::Data::Local(t)) => return Ok(t.clone()),
            Some(crate::write::Data::Extents(e)) => {
                let e = e.clone();
                return self.remote_symlink(ino, size, &e);
            }
            _ => {}
        }
        if size == 0 || size > 1024 {
            return Err(corrupt(name(), format!("target length {}", i.size)));
        }
        match i.format {
            Format::Local => {
                let d = i.data_fork();
                d.get(..size)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| corrupt(name(), "target longer than the inode"))
            }
            Format::Extents | Format::Btree => {
                let exts = bmap::extents(&self.reader(), &i, Fork::Data)?;
                self.remote_symlink(ino, size, &exts)
            }
            Format::Dev => Err(corrupt(name(), "device format")),
        }
    }

    /// A symlink target stored in blocks: one buffer per extent, as the kernel writes them;
    /// on v5 each buffer starts with one header and its CRC covers the whole buffer.
    fn remote_symlink(&self, ino: u64, size: usize, exts: &[Extent]) -> Result<Vec<u8>> {
        let name = || format!("symbolic link inode {ino}");
        {
            {
                let r = self.reader();
                let v5 = self.sb.is_v5();
                let mut out = Vec::with_capacity(size);
                for e in exts.iter() {
                    if out.len() >= size {
                        break;
                    }
                    if e.len > 2 {
                        return Err(corrupt(name(), format!("extent of {} blocks", e.len)));
                    }
                    let b = r.fsb(e.block, e.len as u32, &name)?;
                    let hdr = if v5 { 56 } else { 0 };
                    let want = (size - out.len()).min(b.len() - hdr);
                    if v5 {
                        use crate::be::{bytes, u32_at, u64_at};
                        if bytes(&b, 0, 4) != b"XSLM" {
                            return Err(corrupt(name(), "remote block: bad magic number"));
                        }
                        crate::csum::verify(&b, 12, name)?;
                        if u32_at(&b, 4) as usize != out.len()
                            || u32_at(&b, 8) as usize != want
                            || u64_at(&b, 32) != ino
                            || u64_at(&b, 40) != r.fsb_daddr(e.block)
                            || bytes(&b, 16, 16) != self.sb.meta_uuid()
                        {
                            return Err(corrupt(name(), "remote block header"));
                        }
                    }
                    out.extend_from_slice(crate::be::bytes(&b, hdr, want));
                }
                if out.len() != size {
                    return Err(corrupt(name(), "the target's blocks are missing"));
                }
                Ok(out)
            }
        }
    }

    /// Every user-visible extended attribute as (Linux name, value).
    pub fn list_xattrs(&self, ino: u64) -> Result<Vec<(String, Vec<u8>)>> {
        if let Some(list) = self.mem(ino).and_then(|m| m.attrs.as_ref()) {
            return Ok(attr::list_raw(list));
        }
        let i = self.inode(ino)?;
        attr::list(&self.reader(), &i)
    }

    pub fn get_xattr(&self, ino: u64, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .list_xattrs(ino)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v))
    }

    /// Free extents of AG `ag` from the by-block btree, as (AG block, length), checked
    /// against the by-size btree and the AGF counters: a disagreement is corruption, and
    /// nothing is zeroed on a wrong map.
    pub fn ag_free_extents(&self, ag: u32) -> Result<Vec<(u32, u32)>> {
        let r = self.reader();
        let agf = Agf::read(&r, ag)?;
        let mut by_block = Vec::new();
        let mut prev_end = 0u64;
        let bad = |d: String| corrupt(format!("by-block free-space btree of AG {ag}"), d);
        btree::walk(
            &r,
            ag,
            &btree::BNO,
            agf.bno_root,
            agf.bno_level,
            &mut |rec| {
                let start = crate::be::u32_at(rec, 0);
                let len = crate::be::u32_at(rec, 4);
                let end = u64::from(start) + u64::from(len);
                if len == 0 || u64::from(start) < prev_end || end > u64::from(agf.length) {
                    return Err(bad(format!("record ({start:#x}, {len})")));
                }
                prev_end = end;
                by_block.push((start, len));
                Ok(())
            },
        )?;
        let (mut cnt_n, mut cnt_sum, mut prev) = (0u64, 0u64, (0u32, 0u32));
        btree::walk(
            &r,
            ag,
            &btree::CNT,
            agf.cnt_root,
            agf.cnt_level,
            &mut |rec| {
                let key = (crate::be::u32_at(rec, 4), crate::be::u32_at(rec, 0));
                if cnt_n > 0 && key <= prev {
                    return Err(corrupt(
                        format!("by-size free-space btree of AG {ag}"),
                        "records out of order",
                    ));
                }
                prev = key;
                cnt_n += 1;
                cnt_sum += u64::from(key.0);
                Ok(())
            },
        )?;
        let sum: u64 = by_block.iter().map(|&(_, l)| u64::from(l)).sum();
        let longest = by_block.iter().map(|&(_, l)| l).max().unwrap_or(0);
        if sum != u64::from(agf.freeblks)
            || cnt_sum != sum
            || cnt_n != by_block.len() as u64
            || longest != agf.longest
        {
            return Err(corrupt(
                format!("free space of AG {ag}"),
                format!(
                    "the AGF says {} free blocks (longest {}), the by-block btree has {sum} \
                     in {} extents (longest {longest}), the by-size btree {cnt_sum} in {cnt_n}",
                    agf.freeblks,
                    agf.longest,
                    by_block.len()
                ),
            ));
        }
        Ok(by_block)
    }

    /// Free blocks of AG `ag` as sorted, merged (AG block, length) runs: the free-space
    /// btree extents and the blocks on the AG free list (free too: they are reserved for
    /// btree growth and initialised when taken). This is what `xfs_db freesp -d` lists.
    pub fn ag_free_blocks(&self, ag: u32) -> Result<Vec<(u32, u32)>> {
        let r = self.reader();
        let mut runs = self.ag_free_extents(ag)?;
        let agf = Agf::read(&r, ag)?;
        runs.extend(agfl_blocks(&r, ag, &agf)?.into_iter().map(|b| (b, 1)));
        runs.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(runs.len());
        for (start, len) in runs {
            match out.last_mut() {
                Some((s, l)) if *s + *l > start => {
                    return Err(corrupt(
                        format!("AG {ag}"),
                        format!(
                            "block {start:#x} is both on the free list and in the free-space btrees"
                        ),
                    ));
                }
                Some((s, l)) if *s + *l == start => *l += len,
                _ => out.push((start, len)),
            }
        }
        // Blocks known to be in use must not be on the map: btrees and counters that agree
        // with each other can still be wrong together, and zeroing from such a map would
        // destroy metadata.
        let used = self.ag_known_used(ag, &agf)?;
        for &(start, len) in &out {
            let end = u64::from(start) + u64::from(len);
            let i =
                used.partition_point(|&(b, l, _)| u64::from(b) + u64::from(l) <= u64::from(start));
            if let Some(&(b, _, what)) = used.get(i)
                && u64::from(b) < end
            {
                return Err(corrupt(
                    format!("free space of AG {ag}"),
                    format!("block {:#x} ({what}) is listed as free", b.max(start)),
                ));
            }
        }
        Ok(out)
    }

    /// Runs (start, length, what) of blocks of AG `ag` that are certainly in use — the AG
    /// headers, the internal log, the btree roots, every block holding allocated inodes —
    /// sorted and merged into disjoint runs.
    fn ag_known_used(&self, ag: u32, agf: &Agf) -> Result<Vec<(u32, u32, &'static str)>> {
        let r = self.reader();
        let sb = &self.sb;
        let mut used: Vec<(u32, u32, &'static str)> = Vec::new();
        let hdr_blocks = (4 * u32::from(sb.sectsize)).div_ceil(sb.blocksize);
        used.push((0, hdr_blocks, "AG header"));
        let (log_ag, log_bno) = sb.fsb_split(sb.logstart);
        if sb.logstart != 0 && log_ag == u64::from(ag) {
            used.push((log_bno as u32, sb.logblocks, "log"));
        }
        used.push((agf.bno_root, 1, "free-space btree root"));
        used.push((agf.cnt_root, 1, "free-space btree root"));
        if sb.has_ro_compat(ro_compat::RMAPBT) {
            used.push((agf.rmap_root, 1, "reverse-mapping btree root"));
        }
        if sb.has_ro_compat(ro_compat::REFLINK) {
            used.push((agf.refcount_root, 1, "refcount btree root"));
        }
        let agi = Agi::read(&r, ag)?;
        used.push((agi.root, 1, "inode btree root"));
        if sb.has_ro_compat(ro_compat::FINOBT) {
            used.push((agi.free_root, 1, "free-inode btree root"));
        }
        // Inode chunks, by groups of 4 inodes (the sparse-chunk granularity).
        let ipb = u32::from(sb.inopblock);
        for c in self.inode_chunks(ag)? {
            for g in (0..16u32).filter(|&g| c.present(4 * g)) {
                let first = c.startino.saturating_add(4 * g);
                let blocks = 4u32.div_ceil(ipb);
                used.push((first >> sb.inopblog, blocks, "inode chunk"));
            }
        }
        used.sort_unstable_by_key(|&(b, _, _)| b);
        let mut merged: Vec<(u32, u32, &'static str)> = Vec::with_capacity(used.len());
        for (b, l, what) in used {
            let end = b.saturating_add(l);
            match merged.last_mut() {
                Some((mb, ml, _)) if b <= mb.saturating_add(*ml) => {
                    *ml = (*ml).max(end - *mb);
                }
                _ => merged.push((b, l, what)),
            }
        }
        Ok(merged)
    }

    /// Free space of the whole data device in bytes from the start of the filesystem: the
    /// by-block free-space btrees and the AG free lists ([`Self::ag_free_blocks`]), adjacent
    /// runs merged.
    pub fn free_ranges(&self) -> Result<Vec<FreeRange>> {
        if self.wstate.as_deref().is_some_and(|w| !w.inodes.is_empty()) {
            return Err(XfsError::Invalid(
                "the free-space map is read from disk: flush the changes first".into(),
            ));
        }
        let mut out = Vec::new();
        let bs = u64::from(self.sb.blocksize);
        for ag in 0..self.sb.agcount {
            for (start, len) in self.ag_free_blocks(ag)? {
                let offset = self.sb.agb_to_byte(ag, start);
                let len = u64::from(len) * bs;
                match out.last_mut() {
                    Some(FreeRange { offset: o, len: l }) if *o + *l == offset => *l += len,
                    _ => out.push(FreeRange { offset, len }),
                }
            }
        }
        Ok(out)
    }

    /// The inode chunks of AG `ag` from the inode btree, checked against the AGI counters.
    pub fn inode_chunks(&self, ag: u32) -> Result<Vec<InodeChunk>> {
        let r = self.reader();
        let agi = Agi::read(&r, ag)?;
        let sparse = self.sb.has_incompat(incompat::SPINODES);
        let mut out: Vec<InodeChunk> = Vec::new();
        btree::walk(&r, ag, &btree::INO, agi.root, agi.level, &mut |rec| {
            let c = InodeChunk::parse(rec, sparse);
            if let Some(p) = out.last()
                && u64::from(c.startino) < u64::from(p.startino) + 64
            {
                return Err(corrupt(
                    format!("inode btree of AG {ag}"),
                    "records out of order",
                ));
            }
            out.push(c);
            Ok(())
        })?;
        let count: u64 = out.iter().map(|c| u64::from(c.count)).sum();
        let free: u64 = out.iter().map(|c| u64::from(c.freecount)).sum();
        if count != u64::from(agi.count) || free != u64::from(agi.freecount) {
            return Err(corrupt(
                format!("AGI of AG {ag}"),
                format!(
                    "{} inodes ({} free) but the inode btree has {count} ({free} free)",
                    agi.count, agi.freecount
                ),
            ));
        }
        Ok(out)
    }

    /// A summary of every AG (free space and inodes, from the btrees).
    pub fn ag_summaries(&self) -> Result<Vec<AgSummary>> {
        (0..self.sb.agcount)
            .map(|ag| {
                let free = self.ag_free_extents(ag)?;
                let chunks = self.inode_chunks(ag)?;
                Ok(AgSummary {
                    ag,
                    blocks: self.sb.ag_len(ag),
                    free_blocks: free.iter().map(|&(_, l)| l).sum(),
                    free_extents: free.len() as u64,
                    longest_free: free.iter().map(|&(_, l)| l).max().unwrap_or(0),
                    inodes: chunks.iter().map(|c| u32::from(c.count)).sum(),
                    free_inodes: chunks.iter().map(|c| c.freecount).sum(),
                })
            })
            .collect()
    }
}
