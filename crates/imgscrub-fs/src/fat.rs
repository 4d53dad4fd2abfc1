//! FAT12/16/32 behind the [`Filesystem`] trait, through the `fatfs` crate, plus our own
//! free-cluster map (fatfs only counts free clusters; zeroing needs where they are).
//!
//! FAT has no owners, permission bits, symlinks or xattrs: `stat` reports root-owned
//! 0755 directories and 0644 files (0444 when read-only), and edits that would need those
//! fields are refused as unsupported rather than silently dropped.
//!
//! fatfs marks the volume dirty while mounted and writes FSInfo and clears the flag when it
//! unmounts, so [`Filesystem::flush`] unmounts and mounts again.

use crate::filesystem::{
    Entry, FileType, Filesystem, FreeRange, FsError, FsKind, Meta, NewAttr, NodeId, Result,
    SetAttr, Timestamp,
};
use imgscrub_disk::BlockDev;
use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Mutex;

/// `std::io` adapter over a [`BlockDev`] for fatfs.
struct DevIo<D> {
    dev: D,
    pos: u64,
}

fn to_io(e: imgscrub_disk::DiskError) -> io::Error {
    io::Error::other(e)
}

impl<D: BlockDev> Read for DevIo<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.dev.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.dev.read_at(&mut buf[..n], self.pos).map_err(to_io)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: BlockDev> Write for DevIo<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.dev.len().saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the FAT volume",
            ));
        }
        self.dev.write_at(&buf[..n], self.pos).map_err(to_io)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: BlockDev> Seek for DevIo<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.dev.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the FAT volume",
            )),
        }
    }
}

/// The geometry of a FAT volume, from its boot sector (BPB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatGeometry {
    pub bits: u8,
    pub bytes_per_sector: u32,
    pub cluster_size: u32,
    pub fat_offset: u64,
    pub fat_bytes: u64,
    pub data_offset: u64,
    pub clusters: u32,
}

fn le16(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 2)
        .map_or(0, |s| u32::from(u16::from_le_bytes([s[0], s[1]])))
}
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl FatGeometry {
    /// Parse and validate the BPB. The FAT type follows from the cluster count, as the
    /// specification says (not from the type string).
    pub fn read(dev: &dyn BlockDev) -> Result<Self> {
        let bad = |d: &str| FsError::Unsupported(format!("not a usable FAT volume: {d}"));
        if dev.len() < 512 {
            return Err(bad("smaller than one sector"));
        }
        let mut bs = [0u8; 512];
        dev.read_at(&mut bs, 0)?;
        if bs[510] != 0x55 || bs[511] != 0xAA {
            return Err(bad("boot sector signature 55 AA missing"));
        }
        let bps = le16(&bs, 11);
        let spc = u32::from(bs[13]);
        let reserved = le16(&bs, 14);
        let nfats = u32::from(bs[16]);
        let root_entries = le16(&bs, 17);
        let total16 = le16(&bs, 19);
        let fatsz16 = le16(&bs, 22);
        let total32 = le32(&bs, 32);
        let fatsz32 = le32(&bs, 36);
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return Err(bad("bytes per sector is not 512..4096"));
        }
        if spc == 0 || !spc.is_power_of_two() || reserved == 0 || nfats == 0 {
            return Err(bad(
                "sectors per cluster, reserved sectors or FAT count invalid",
            ));
        }
        let fat_sectors = if fatsz16 != 0 { fatsz16 } else { fatsz32 };
        let total = if total16 != 0 { total16 } else { total32 };
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let meta = u64::from(reserved)
            + u64::from(nfats) * u64::from(fat_sectors)
            + u64::from(root_sectors);
        let data_sectors = u64::from(total)
            .checked_sub(meta)
            .ok_or_else(|| bad("metadata larger than the volume"))?;
        let clusters =
            u32::try_from(data_sectors / u64::from(spc)).map_err(|_| bad("too many clusters"))?;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        let g = FatGeometry {
            bits,
            bytes_per_sector: bps,
            cluster_size: bps * spc,
            fat_offset: u64::from(reserved) * u64::from(bps),
            fat_bytes: u64::from(fat_sectors) * u64::from(bps),
            data_offset: meta * u64::from(bps),
            clusters,
        };
        // The FAT must hold an entry for every cluster, and the volume must fit the device.
        let needed = (u64::from(clusters) + 2) * u64::from(bits) / 8;
        if g.fat_bytes < needed {
            return Err(bad("FAT too small for the cluster count"));
        }
        if u64::from(total) * u64::from(bps) > dev.len() {
            return Err(bad("volume larger than its partition"));
        }
        Ok(g)
    }

    /// The first FAT, as stored.
    fn read_fat(&self, dev: &dyn BlockDev) -> Result<Vec<u8>> {
        let mut fat = vec![0u8; self.fat_bytes as usize];
        dev.read_at(&mut fat, self.fat_offset)?;
        Ok(fat)
    }

    /// The FAT entry of cluster `c` (the next cluster, 0 = free, or an end/bad marker).
    fn entry(&self, fat: &[u8], c: u32) -> u32 {
        match self.bits {
            12 => {
                let at = (c as usize * 3) / 2;
                let v = le16(fat, at);
                if c.is_multiple_of(2) {
                    v & 0xFFF
                } else {
                    v >> 4
                }
            }
            16 => le16(fat, c as usize * 2),
            _ => le32(fat, c as usize * 4) & 0x0FFF_FFFF,
        }
    }

    /// Free clusters as byte ranges from the start of the volume, sorted and coalesced.
    pub fn free_ranges(&self, dev: &dyn BlockDev) -> Result<Vec<FreeRange>> {
        let fat = self.read_fat(dev)?;
        let cs = u64::from(self.cluster_size);
        let mut out: Vec<FreeRange> = Vec::new();
        for c in 2..self.clusters.saturating_add(2) {
            if self.entry(&fat, c) != 0 {
                continue;
            }
            let offset = self.data_offset + u64::from(c - 2) * cs;
            match out.last_mut() {
                Some(last) if last.offset + last.len == offset => last.len += cs,
                _ => out.push(FreeRange { offset, len: cs }),
            }
        }
        Ok(out)
    }

    /// Refuse a FAT in which a cluster chain loops back on itself: fatfs follows chains until
    /// their end marker, so a loop would make reading a directory, or freeing a file, run for
    /// ever. One pass over the FAT (each cluster visited once), as `fsck.vfat` checks it.
    pub fn check_chains(&self, dev: &dyn BlockDev) -> Result<()> {
        let fat = self.read_fat(dev)?;
        let end = self.clusters.saturating_add(2);
        // 0: not seen, 1: on the chain being followed, 2: known to reach an end.
        let mut state = vec![0u8; end as usize];
        let mut path = Vec::new();
        for start in 2..end {
            let mut c = start;
            path.clear();
            loop {
                match state[c as usize] {
                    2 => break,
                    1 => {
                        return Err(FsError::Unsupported(format!(
                            "not a usable FAT volume: the cluster chain through cluster {c} \
                             loops (damaged FAT; run fsck.vfat)"
                        )));
                    }
                    _ => {}
                }
                state[c as usize] = 1;
                path.push(c);
                let next = self.entry(&fat, c);
                // Free, end of chain, bad cluster or a pointer outside the data area: the
                // chain stops here (fatfs reports the last two as errors).
                if next < 2 || next >= end {
                    break;
                }
                c = next;
            }
            for &p in &path {
                state[p as usize] = 2;
            }
        }
        Ok(())
    }
}

type Fat<D> = fatfs::FileSystem<DevIo<D>>;

/// Deepest directory path we follow. Real ESPs are a handful of levels deep; anything near
/// this is a loop in a damaged directory tree.
const MAX_DEPTH: usize = 64;

/// A FAT volume on a block device (`D` is cloned once: fatfs owns one handle, and the
/// free-space map reads the FAT through the other).
pub struct FatFs<D: BlockDev + Clone> {
    fs: Option<Fat<D>>,
    dev: D,
    geometry: FatGeometry,
    // Node ids are paths ("" = root, "EFI/BOOT/x.efi" with the names as stored).
    nodes: Mutex<(Vec<String>, HashMap<String, NodeId>)>,
    /// A fixed clock for fatfs (`set_clock`), or `None` for the current time.
    clock: Option<&'static FixedClock>,
}

/// A fatfs `TimeProvider` that always answers the same time (UTC, clamped to FAT's
/// 1980..2107 range).
#[derive(Debug)]
struct FixedClock(fatfs::DateTime);

impl fatfs::TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// Seconds since the epoch → FAT date and time (UTC, civil calendar), clamped to FAT's range.
fn fat_datetime(t: Timestamp) -> fatfs::DateTime {
    // 1980-01-01 .. 2107-12-31 23:59:58.
    let secs = t.secs.clamp(315_532_800, 4_354_819_198);
    let (year, month, day, hour, min, sec) = Timestamp::new(secs, 0).utc();
    let n = |v: u32| u16::try_from(v).unwrap_or(0);
    fatfs::DateTime {
        date: fatfs::Date {
            year: u16::try_from(year).unwrap_or(1980),
            month: n(month),
            day: n(day),
        },
        time: fatfs::Time {
            hour: n(hour),
            min: n(min),
            sec: n(sec),
            millis: n(t.nsecs / 1_000_000),
        },
    }
}

fn fat_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> FsError {
    let what = what.to_string();
    move |source| FsError::Io { what, source }
}

fn name_str(name: &[u8]) -> Result<&str> {
    let s = std::str::from_utf8(name)
        .map_err(|_| FsError::InvalidPath("FAT names must be UTF-8".into()))?;
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\\') {
        return Err(FsError::InvalidPath(s.to_owned()));
    }
    Ok(s)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn fat_time(dt: fatfs::DateTime) -> Timestamp {
    // Days from civil date (proleptic Gregorian), enough for FAT's 1980..2107 range.
    let (y, m, d) = (
        i64::from(dt.date.year),
        i64::from(dt.date.month),
        i64::from(dt.date.day),
    );
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400
        + i64::from(dt.time.hour) * 3600
        + i64::from(dt.time.min) * 60
        + i64::from(dt.time.sec);
    Timestamp::new(secs, u32::from(dt.time.millis) * 1_000_000)
}

impl<D: BlockDev + Clone> FatFs<D> {
    /// Mount the FAT volume on `dev`.
    pub fn open(dev: D) -> Result<Self> {
        let geometry = FatGeometry::read(&dev)?;
        geometry.check_chains(&dev)?;
        let fs = Self::mount(dev.clone(), None)?;
        let mut by_path = HashMap::new();
        by_path.insert(String::new(), 0);
        Ok(FatFs {
            fs: Some(fs),
            dev,
            geometry,
            nodes: Mutex::new((vec![String::new()], by_path)),
            clock: None,
        })
    }

    fn mount(dev: D, clock: Option<&'static FixedClock>) -> Result<Fat<D>> {
        let mut opts = fatfs::FsOptions::new();
        if let Some(c) = clock {
            opts = opts.time_provider(c);
        }
        fatfs::FileSystem::new(DevIo { dev, pos: 0 }, opts).map_err(fat_err("mount FAT volume"))
    }

    pub fn geometry(&self) -> FatGeometry {
        self.geometry
    }

    fn fs(&self) -> Result<&Fat<D>> {
        self.fs
            .as_ref()
            .ok_or_else(|| FsError::Unsupported("FAT volume failed to remount".into()))
    }

    fn path(&self, node: NodeId) -> Result<String> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .0
            .get(node as usize)
            .cloned()
            .ok_or_else(|| FsError::NotFound(format!("node {node}")))
    }

    fn id_for(&self, path: String) -> NodeId {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&id) = nodes.1.get(&path) {
            return id;
        }
        let id = nodes.0.len() as NodeId;
        nodes.0.push(path.clone());
        nodes.1.insert(path, id);
        id
    }

    fn forget(&self, prefix: &str) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let sub = format!("{prefix}/");
        nodes.1.retain(|p, _| p != prefix && !p.starts_with(&sub));
    }

    fn dir(&self, path: &str) -> Result<fatfs::Dir<'_, DevIo<D>>> {
        // A damaged FAT can make a directory its own descendant (a subdirectory entry
        // pointing back at an ancestor's cluster). Node ids are paths, so every lap round
        // such a loop is a new, longer path: bound the depth, or a tree walk never ends.
        if path.split('/').count() > MAX_DEPTH {
            return Err(FsError::Unsupported(format!(
                "directory nesting deeper than {MAX_DEPTH} levels at /{}…: a directory loop in \
                 a damaged FAT (run fsck.vfat)",
                path.chars().take(80).collect::<String>()
            )));
        }
        let root = self.fs()?.root_dir();
        if path.is_empty() {
            Ok(root)
        } else {
            root.open_dir(path)
                .map_err(fat_err(format!("open directory /{path}")))
        }
    }

    /// The entry `name` in directory `dir`, matched case-insensitively like FAT does.
    fn find(&self, dir: &str, name: &str) -> Result<Option<fatfs::DirEntry<'_, DevIo<D>>>> {
        let lower = name.to_lowercase();
        for e in self.dir(dir)?.iter() {
            let e = e.map_err(fat_err(format!("read directory /{dir}")))?;
            let n = e.file_name();
            if n == "." || n == ".." {
                continue;
            }
            if n.to_lowercase() == lower || e.short_file_name().to_lowercase() == lower {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    fn split(path: &str) -> (&str, &str) {
        match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        }
    }

    fn entry_of(&self, node: NodeId) -> Result<Option<fatfs::DirEntry<'_, DevIo<D>>>> {
        let path = self.path(node)?;
        if path.is_empty() {
            return Ok(None);
        }
        let (dir, name) = Self::split(&path);
        self.find(dir, name)?
            .map(Some)
            .ok_or_else(|| FsError::NotFound(format!("/{path}")))
    }

    /// Free cluster numbers.
    fn free_clusters(&self) -> Result<std::collections::HashSet<u64>> {
        let g = self.geometry;
        let cs = u64::from(g.cluster_size);
        let mut set = std::collections::HashSet::new();
        for r in g.free_ranges(&self.dev)? {
            let first = (r.offset - g.data_offset) / cs + 2;
            set.extend(first..first + r.len / cs);
        }
        Ok(set)
    }

    /// fatfs 0.3.6 (the newest release) writes a long-name entry before "." and ".." in a new
    /// directory, which fsck.vfat rejects ("Expected a valid '.' entry in this slot"). Find
    /// the clusters the mkdir allocated and, where one starts with exactly that pattern, move
    /// the two short entries to slots 0 and 1 and clear the rest.
    fn fix_dot_entries(&self, free_before: &std::collections::HashSet<u64>) -> Result<()> {
        let g = self.geometry;
        let now_free = self.free_clusters()?;
        for &c in free_before.difference(&now_free) {
            let at = g.data_offset + (c - 2) * u64::from(g.cluster_size);
            let mut b = [0u8; 128];
            self.dev.read_at(&mut b, at)?;
            let lfn = |i: usize| b[i * 32 + 11] == 0x0F;
            let short = |i: usize, name: &[u8; 11]| {
                &b[i * 32..i * 32 + 11] == name && b[i * 32 + 11] & 0x10 != 0
            };
            if lfn(0) && short(1, b".          ") && lfn(2) && short(3, b"..         ") {
                let mut fixed = [0u8; 128];
                fixed[..32].copy_from_slice(&b[32..64]);
                fixed[32..64].copy_from_slice(&b[96..128]);
                self.dev.write_at(&fixed, at)?;
            }
        }
        Ok(())
    }

    fn unsupported(&self, what: &str) -> FsError {
        FsError::Unsupported(format!("{what} on a FAT filesystem"))
    }
}

impl<D: BlockDev + Clone> Filesystem for FatFs<D> {
    fn kind(&self) -> FsKind {
        FsKind::Fat
    }

    fn root(&self) -> NodeId {
        0
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<Option<NodeId>> {
        let dpath = self.path(dir)?;
        let name = name_str(name)?;
        Ok(self
            .find(&dpath, name)?
            .map(|e| self.id_for(join(&dpath, &e.file_name()))))
    }

    fn stat(&self, node: NodeId) -> Result<Meta> {
        let Some(e) = self.entry_of(node)? else {
            return Ok(Meta {
                node,
                file_type: FileType::Directory,
                perm: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                nlink: 2,
                atime: Timestamp::default(),
                mtime: Timestamp::default(),
                ctime: Timestamp::default(),
                rdev: None,
            });
        };
        let dir = e.is_dir();
        let ro = e.attributes().contains(fatfs::FileAttributes::READ_ONLY);
        let mtime = fat_time(e.modified());
        Ok(Meta {
            node,
            file_type: if dir {
                FileType::Directory
            } else {
                FileType::Regular
            },
            perm: match (dir, ro) {
                (true, _) => 0o755,
                (false, true) => 0o444,
                (false, false) => 0o644,
            },
            uid: 0,
            gid: 0,
            size: if dir { 0 } else { e.len() },
            nlink: 1,
            atime: mtime,
            mtime,
            ctime: fat_time(e.created()),
            rdev: None,
        })
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<Entry>> {
        let dpath = self.path(dir)?;
        let mut out = Vec::new();
        for e in self.dir(&dpath)?.iter() {
            let e = e.map_err(fat_err(format!("read directory /{dpath}")))?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let file_type = if e.is_dir() {
                FileType::Directory
            } else {
                FileType::Regular
            };
            let node = self.id_for(join(&dpath, &name));
            out.push(Entry {
                name: name.into_bytes(),
                node,
                file_type,
            });
        }
        Ok(out)
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let Some(e) = self.entry_of(node)? else {
            return Err(FsError::IsADirectory("/".into()));
        };
        if e.is_dir() {
            return Err(FsError::IsADirectory(e.file_name()));
        }
        let what = format!("read {}", e.file_name());
        let mut f = e.to_file();
        f.seek(SeekFrom::Start(offset.min(e.len())))
            .map_err(fat_err(&what))?;
        let mut done = 0;
        while done < buf.len() {
            let n = f.read(&mut buf[done..]).map_err(fat_err(&what))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn readlink(&self, _node: NodeId) -> Result<Vec<u8>> {
        Err(self.unsupported("symlinks"))
    }

    fn create(&mut self, dir: NodeId, name: &[u8], _attr: &NewAttr) -> Result<NodeId> {
        let dpath = self.path(dir)?;
        let name = name_str(name)?;
        if self.find(&dpath, name)?.is_some() {
            return Err(FsError::Exists(format!("/{}", join(&dpath, name))));
        }
        self.dir(&dpath)?
            .create_file(name)
            .map_err(fat_err(format!("create /{}", join(&dpath, name))))?;
        Ok(self.id_for(join(&dpath, name)))
    }

    fn mkdir(&mut self, dir: NodeId, name: &[u8], _attr: &NewAttr) -> Result<NodeId> {
        let dpath = self.path(dir)?;
        let name = name_str(name)?;
        if self.find(&dpath, name)?.is_some() {
            return Err(FsError::Exists(format!("/{}", join(&dpath, name))));
        }
        let before = self.free_clusters()?;
        self.dir(&dpath)?
            .create_dir(name)
            .map_err(fat_err(format!("mkdir /{}", join(&dpath, name))))?;
        self.fix_dot_entries(&before)?;
        Ok(self.id_for(join(&dpath, name)))
    }

    fn symlink(&mut self, _: NodeId, _: &[u8], _: &[u8], _: &NewAttr) -> Result<NodeId> {
        Err(self.unsupported("symlinks"))
    }

    fn write(&mut self, node: NodeId, offset: u64, data: &[u8]) -> Result<()> {
        let Some(e) = self.entry_of(node)? else {
            return Err(FsError::IsADirectory("/".into()));
        };
        if e.is_dir() {
            return Err(FsError::IsADirectory(e.file_name()));
        }
        let what = format!("write {}", e.file_name());
        let len = e.len();
        let mut f = e.to_file();
        if offset > len {
            // FAT has no holes: fill the gap with zeros.
            f.seek(SeekFrom::Start(len)).map_err(fat_err(&what))?;
            let zeros = vec![0u8; 1 << 16];
            let mut left = offset - len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n]).map_err(fat_err(&what))?;
                left -= n as u64;
            }
        } else {
            f.seek(SeekFrom::Start(offset)).map_err(fat_err(&what))?;
        }
        f.write_all(data).map_err(fat_err(&what))?;
        f.flush().map_err(fat_err(&what))
    }

    fn truncate(&mut self, node: NodeId, size: u64) -> Result<()> {
        let Some(e) = self.entry_of(node)? else {
            return Err(FsError::IsADirectory("/".into()));
        };
        if e.is_dir() {
            return Err(FsError::IsADirectory(e.file_name()));
        }
        let len = e.len();
        if size > len {
            return self.write(node, size, &[]);
        }
        let what = format!("truncate {}", e.file_name());
        let mut f = e.to_file();
        f.seek(SeekFrom::Start(size)).map_err(fat_err(&what))?;
        f.truncate().map_err(fat_err(&what))?;
        f.flush().map_err(fat_err(&what))
    }

    fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        let dpath = self.path(dir)?;
        let name = name_str(name)?;
        let e = self
            .find(&dpath, name)?
            .ok_or_else(|| FsError::NotFound(format!("/{}", join(&dpath, name))))?;
        if e.is_dir() {
            return Err(FsError::IsADirectory(format!("/{}", join(&dpath, name))));
        }
        let real = e.file_name();
        self.dir(&dpath)?
            .remove(&real)
            .map_err(fat_err(format!("remove /{}", join(&dpath, &real))))?;
        self.forget(&join(&dpath, &real));
        Ok(())
    }

    fn rmdir(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        let dpath = self.path(dir)?;
        let name = name_str(name)?;
        let e = self
            .find(&dpath, name)?
            .ok_or_else(|| FsError::NotFound(format!("/{}", join(&dpath, name))))?;
        let full = join(&dpath, &e.file_name());
        if !e.is_dir() {
            return Err(FsError::NotADirectory(format!("/{full}")));
        }
        let child = self.id_for(full.clone());
        if !self.read_dir(child)?.is_empty() {
            return Err(FsError::NotEmpty(format!("/{full}")));
        }
        let real = e.file_name();
        self.dir(&dpath)?
            .remove(&real)
            .map_err(fat_err(format!("rmdir /{full}")))?;
        self.forget(&full);
        Ok(())
    }

    fn rename(&mut self, from_dir: NodeId, from: &[u8], to_dir: NodeId, to: &[u8]) -> Result<()> {
        let fpath = self.path(from_dir)?;
        let tpath = self.path(to_dir)?;
        let (from, to) = (name_str(from)?, name_str(to)?);
        let src = self
            .find(&fpath, from)?
            .ok_or_else(|| FsError::NotFound(format!("/{}", join(&fpath, from))))?;
        let src_name = src.file_name();
        let src_dir = src.is_dir();
        // fatfs refuses an existing destination: replace it the way rename(2) does.
        if let Some(dst) = self.find(&tpath, to)? {
            if join(&tpath, &dst.file_name()) == join(&fpath, &src_name) {
                return Ok(());
            }
            match (src_dir, dst.is_dir()) {
                (false, false) => self.unlink(to_dir, to.as_bytes())?,
                (true, true) => self.rmdir(to_dir, to.as_bytes())?,
                (false, true) => return Err(FsError::IsADirectory(format!("/{tpath}/{to}"))),
                (true, false) => return Err(FsError::NotADirectory(format!("/{tpath}/{to}"))),
            }
        }
        let what = format!(
            "rename /{} to /{}",
            join(&fpath, &src_name),
            join(&tpath, to)
        );
        let sdir = self.dir(&fpath)?;
        let ddir = self.dir(&tpath)?;
        sdir.rename(&src_name, &ddir, to).map_err(fat_err(what))?;
        self.forget(&join(&fpath, &src_name));
        Ok(())
    }

    fn set_attr(&mut self, node: NodeId, attr: &SetAttr) -> Result<()> {
        if attr.uid.is_some() || attr.gid.is_some() {
            return Err(self.unsupported("owners"));
        }
        if attr.perm.is_some() {
            return Err(self.unsupported("permission bits"));
        }
        // Times: fatfs only sets them while writing; accept and ignore, as mtools does.
        let _ = node;
        Ok(())
    }

    fn get_xattr(&self, _node: NodeId, _name: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn list_xattrs(&self, _node: NodeId) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }

    fn set_xattr(&mut self, _node: NodeId, _name: &str, _value: &[u8]) -> Result<()> {
        Err(self.unsupported("extended attributes"))
    }

    fn remove_xattr(&mut self, _node: NodeId, _name: &str) -> Result<()> {
        Ok(())
    }

    fn free_ranges(&self) -> Result<Vec<FreeRange>> {
        self.geometry.free_ranges(&self.dev)
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(fs) = self.fs.take() {
            fs.unmount().map_err(fat_err("unmount FAT volume"))?;
        }
        self.dev.flush()?;
        self.fs = Some(Self::mount(self.dev.clone(), self.clock)?);
        Ok(())
    }
    fn set_clock(&mut self, t: Option<Timestamp>) -> Result<()> {
        // fatfs wants a `&'static` provider: one small allocation per call, made once per
        // prepare in practice.
        self.clock = t.map(|t| &*Box::leak(Box::new(FixedClock(fat_datetime(t)))));
        // The provider is chosen at mount time: remount (after writing what is pending).
        self.flush()
    }
}
