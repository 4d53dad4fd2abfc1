//! Crash-safe in-place changes: a staged image file and its redo log.
//!
//! [`StagedFile`] is an image file opened for writing whose writes never reach the file
//! directly: they are kept in an [`Overlay`] (the file may grow, as a qcow2 file does when
//! clusters are appended). [`StagedFile::commit`] (also [`BlockDev::flush`]) applies them
//! atomically:
//!
//! 1. write `<image>.imgscrub-redo`: a header naming the target (device and inode numbers,
//!    the length before and after), one record per change (data, or a range that must read
//!    as zeros), and a commit record holding a CRC-32 of every byte before it;
//! 2. fsync the log and its directory;
//! 3. apply the records to the image (resize, writes, hole punches) and fsync the image;
//! 4. delete the log and fsync the directory.
//!
//! A crash before the commit record is durable leaves the image untouched and an incomplete
//! log; a crash after it leaves a complete log. [`recover`] (run by the facade before any
//! other use of an image) deletes an incomplete log and re-applies a complete one: every
//! record is idempotent (absolute writes, punches, a resize), so re-applying a log that was
//! already partly or fully applied is harmless.
//!
//! Every log write and image write counts as one step of [`crate::failpoint`].

use crate::blockdev::{AllocKind, AllocRange, BlockDev, check_range};
use crate::error::{DiskError, Result};
use crate::failpoint;
use crate::overlay::{Change, Overlay};
use crate::raw::RawFile;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of the redo log next to the image: `disk.qcow2` → `disk.qcow2.imgscrub-redo`.
pub const REDO_SUFFIX: &str = ".imgscrub-redo";
const MAGIC: &[u8; 16] = b"IMGSCRUB-REDOLOG";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 64;
const REC_LEN: u64 = 32;
/// Largest data record; bigger changes are split.
const MAX_REC_DATA: u64 = 1 << 20;
const KIND_DATA: u32 = 1;
const KIND_ZERO: u32 = 2;
const KIND_COMMIT: u32 = 0x434f_4d54;
/// Size the staging overlay pretends the file has (it may grow up to this).
const VIRTUAL_LEN: u64 = 1 << 56;

/// Errors of the redo log.
#[derive(Debug, thiserror::Error)]
pub enum RedoError {
    /// An I/O call failed.
    #[error("{what}: {source}")]
    Io {
        /// Which call, on which file.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A complete log that names another file (the image was replaced or copied).
    #[error(
        "{}: the redo log {} belongs to another file (device/inode {}/{} instead of {}/{}); \
         it was left in place: if the image was copied or replaced on purpose, delete the log",
        image.display(), log.display(), want.0, want.1, got.0, got.1
    )]
    Foreign {
        /// The image.
        image: PathBuf,
        /// The log.
        log: PathBuf,
        /// Identity in the log.
        want: (u64, u64),
        /// Identity of the image.
        got: (u64, u64),
    },
    /// Applying the log failed part-way: the log stays, the next open finishes the change.
    #[error(
        "{}: writing the change failed ({source}); the change is kept in {} and is finished \
         by the next imgscrub command that opens the image",
        image.display(), log.display()
    )]
    Interrupted {
        /// The image.
        image: PathBuf,
        /// The log.
        log: PathBuf,
        /// The error.
        #[source]
        source: Box<RedoError>,
    },
    /// The staging layer failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> RedoError {
    let what = what.into();
    move |source| RedoError::Io { what, source }
}

/// The redo log path of `image`.
pub fn log_path(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(REDO_SUFFIX);
    image.with_file_name(name)
}

/// The directory holding `path` (for fsync).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(path: &Path) -> Result<(), RedoError> {
    let dir = parent_dir(path);
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(ioe(format!("fsync directory {}", dir.display())))
}

/// What [`recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No log: nothing to do.
    Clean,
    /// A complete log was (re-)applied and removed: the interrupted change is finished.
    Finished {
        /// Records applied.
        records: u64,
        /// Bytes of data written.
        bytes: u64,
    },
    /// An incomplete or damaged log was removed: the image was never touched by it.
    Discarded {
        /// Why the log was not complete.
        reason: String,
    },
}

impl Recovery {
    /// A one-line description for users, `None` for [`Recovery::Clean`].
    pub fn message(&self, image: &Path) -> Option<String> {
        match self {
            Recovery::Clean => None,
            Recovery::Finished { records, bytes } => Some(format!(
                "{}: finished an interrupted change from its redo log ({records} records, {bytes} bytes)",
                image.display()
            )),
            Recovery::Discarded { reason } => Some(format!(
                "{}: removed an incomplete redo log ({reason}); the image was not changed by it",
                image.display()
            )),
        }
    }
}

/// True when `image` has a leftover redo log.
pub fn has_log(image: &Path) -> bool {
    log_path(image).symlink_metadata().is_ok()
}

/// Finish or roll back an interrupted change of `image` (see the module documentation).
/// The caller must hold the image's write lock.
pub fn recover(image: &Path) -> Result<Recovery, RedoError> {
    let log = log_path(image);
    let lf = match File::open(&log) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovery::Clean),
        Err(e) => return Err(ioe(format!("open {}", log.display()))(e)),
    };
    let parsed = match parse_log(&lf, &log)? {
        Ok(p) => p,
        Err(reason) => {
            drop(lf);
            std::fs::remove_file(&log).map_err(ioe(format!("remove {}", log.display())))?;
            sync_dir(&log)?;
            return Ok(Recovery::Discarded { reason });
        }
    };
    let target = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(ioe(format!("open {} for writing", image.display())))?;
    let meta = target
        .metadata()
        .map_err(ioe(format!("stat {}", image.display())))?;
    let got = (meta.dev(), meta.ino());
    if got != parsed.identity {
        return Err(RedoError::Foreign {
            image: image.to_path_buf(),
            log,
            want: parsed.identity,
            got,
        });
    }
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    apply_start(&target, image, parsed.final_len)?;
    for r in &parsed.records {
        match r.kind {
            KIND_DATA => {
                buf.resize(r.len as usize, 0);
                lf.read_exact_at(&mut buf, r.data_pos)
                    .map_err(ioe(format!("read {}", log.display())))?;
                apply_write(&target, image, &buf, r.offset)?;
                bytes += r.len;
            }
            _ => apply_zero(&target, image, r.offset, r.len)?,
        }
    }
    finish(&target, image, &log)?;
    Ok(Recovery::Finished {
        records: parsed.records.len() as u64,
        bytes,
    })
}

struct ParsedRecord {
    kind: u32,
    offset: u64,
    len: u64,
    /// Where the data of a data record starts in the log.
    data_pos: u64,
}

struct Parsed {
    identity: (u64, u64),
    final_len: u64,
    records: Vec<ParsedRecord>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// Read and check a log. `Ok(Err(reason))`: incomplete or damaged.
fn parse_log(lf: &File, log: &Path) -> Result<Result<Parsed, String>, RedoError> {
    let len = lf
        .metadata()
        .map_err(ioe(format!("stat {}", log.display())))?
        .len();
    let rd = |buf: &mut [u8], at: u64| -> Result<(), RedoError> {
        lf.read_exact_at(buf, at)
            .map_err(ioe(format!("read {}", log.display())))
    };
    if len < HEADER_LEN {
        return Ok(Err(format!("{len} bytes, shorter than its header")));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    rd(&mut h, 0)?;
    if &h[..16] != MAGIC {
        return Ok(Err("bad magic".to_owned()));
    }
    if u32_at(&h, 16) != VERSION {
        return Ok(Err(format!("unknown version {}", u32_at(&h, 16))));
    }
    let identity = (u64_at(&h, 24), u64_at(&h, 32));
    let final_len = u64_at(&h, 48);
    let mut total = crc32fast::Hasher::new();
    total.update(&h);
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    let mut data = Vec::new();
    // Each iteration consumes at least REC_LEN bytes: bounded by the log's length.
    let max_iter = len / REC_LEN + 1;
    for _ in 0..max_iter {
        if pos + REC_LEN > len {
            return Ok(Err(format!(
                "no commit record ({} records, cut at byte {pos})",
                records.len()
            )));
        }
        let mut r = [0u8; REC_LEN as usize];
        rd(&mut r, pos)?;
        let kind = u32_at(&r, 0);
        let crc = u32_at(&r, 4);
        let (offset, rlen) = (u64_at(&r, 8), u64_at(&r, 16));
        let mut zeroed = r;
        zeroed[4..8].fill(0);
        let mut rc = crc32fast::Hasher::new();
        rc.update(&zeroed);
        match kind {
            KIND_COMMIT => {
                if crc != rc.finalize() {
                    return Ok(Err("commit record checksum mismatch".to_owned()));
                }
                let want = total.finalize();
                if offset != records.len() as u64 || rlen != u64::from(want) {
                    return Ok(Err("log checksum mismatch".to_owned()));
                }
                return Ok(Ok(Parsed {
                    identity,
                    final_len,
                    records,
                }));
            }
            KIND_DATA | KIND_ZERO => {
                let in_target = offset.checked_add(rlen).is_some_and(|e| e <= final_len);
                if !in_target {
                    return Ok(Err(format!(
                        "record at byte {pos} reaches past the target length"
                    )));
                }
                let data_len = if kind == KIND_DATA { rlen } else { 0 };
                if data_len > MAX_REC_DATA || pos + REC_LEN + data_len > len {
                    return Ok(Err(format!("record at byte {pos} is cut or too long")));
                }
                data.resize(data_len as usize, 0);
                rd(&mut data, pos + REC_LEN)?;
                rc.update(&data);
                if crc != rc.finalize() {
                    return Ok(Err(format!("record at byte {pos}: checksum mismatch")));
                }
                total.update(&r);
                total.update(&data);
                records.push(ParsedRecord {
                    kind,
                    offset,
                    len: rlen,
                    data_pos: pos + REC_LEN,
                });
                pos += REC_LEN + data_len;
            }
            _ => return Ok(Err(format!("unknown record kind {kind:#x} at byte {pos}"))),
        }
    }
    Ok(Err("too many records".to_owned()))
}

/// Grow the image to `final_len` first (a qcow2 file grows; records may lie past its end).
fn apply_start(target: &File, image: &Path, final_len: u64) -> Result<(), RedoError> {
    let cur = target
        .metadata()
        .map_err(ioe(format!("stat {}", image.display())))?
        .len();
    if cur < final_len {
        failpoint::step("image resize");
        target
            .set_len(final_len)
            .map_err(ioe(format!("resize {}", image.display())))?;
    }
    Ok(())
}

fn apply_write(target: &File, image: &Path, data: &[u8], offset: u64) -> Result<(), RedoError> {
    failpoint::step("image write");
    target.write_all_at(data, offset).map_err(ioe(format!(
        "write {} bytes at {offset:#x} of {}",
        data.len(),
        image.display()
    )))
}

fn apply_zero(target: &File, image: &Path, offset: u64, len: u64) -> Result<(), RedoError> {
    use rustix::fs::{FallocateFlags, fallocate};
    if len == 0 {
        return Ok(());
    }
    failpoint::step("image zero");
    match fallocate(
        target,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
            let zeros = vec![0u8; MAX_REC_DATA.min(len) as usize];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                target
                    .write_all_at(&zeros[..n], offset + done)
                    .map_err(ioe(format!(
                        "zero {offset:#x}+{len:#x} of {}",
                        image.display()
                    )))?;
                done += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(ioe(format!(
            "punch hole {offset:#x}+{len:#x} in {}",
            image.display()
        ))(e.into())),
    }
}

/// fsync the image, delete the log, fsync the directory.
fn finish(target: &File, image: &Path, log: &Path) -> Result<(), RedoError> {
    target
        .sync_all()
        .map_err(ioe(format!("fsync {}", image.display())))?;
    failpoint::step("remove redo log");
    std::fs::remove_file(log).map_err(ioe(format!("remove {}", log.display())))?;
    sync_dir(log)
}

/// Writes a redo log, counting a failpoint step per write.
struct LogWriter {
    file: File,
    path: PathBuf,
    pos: u64,
    total: crc32fast::Hasher,
    records: u64,
}

impl LogWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), RedoError> {
        failpoint::step("redo log write");
        self.file
            .write_all_at(bytes, self.pos)
            .map_err(ioe(format!("write {}", self.path.display())))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn record(&mut self, kind: u32, offset: u64, len: u64, data: &[u8]) -> Result<(), RedoError> {
        let mut r = [0u8; REC_LEN as usize];
        r[0..4].copy_from_slice(&kind.to_le_bytes());
        r[8..16].copy_from_slice(&offset.to_le_bytes());
        r[16..24].copy_from_slice(&len.to_le_bytes());
        let mut rc = crc32fast::Hasher::new();
        rc.update(&r);
        rc.update(data);
        r[4..8].copy_from_slice(&rc.finalize().to_le_bytes());
        self.total.update(&r);
        self.total.update(data);
        let mut buf = Vec::with_capacity(r.len() + data.len());
        buf.extend_from_slice(&r);
        buf.extend_from_slice(data);
        self.write(&buf)?;
        self.records += 1;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), RedoError> {
        let mut r = [0u8; REC_LEN as usize];
        r[0..4].copy_from_slice(&KIND_COMMIT.to_le_bytes());
        r[8..16].copy_from_slice(&self.records.to_le_bytes());
        let total = std::mem::take(&mut self.total).finalize();
        r[16..24].copy_from_slice(&u64::from(total).to_le_bytes());
        let mut rc = crc32fast::Hasher::new();
        rc.update(&r);
        r[4..8].copy_from_slice(&rc.finalize().to_le_bytes());
        self.write(&r)?;
        self.file
            .sync_all()
            .map_err(ioe(format!("fsync {}", self.path.display())))?;
        sync_dir(&self.path)
    }
}

/// The image file as the staging overlay sees it: its bytes, then zeros up to
/// [`VIRTUAL_LEN`]. Never written.
#[derive(Debug)]
struct FileView {
    raw: RawFile,
    /// Current length of the file (it grows when a commit extends it).
    size: AtomicU64,
}

impl BlockDev for FileView {
    fn len(&self) -> u64 {
        VIRTUAL_LEN
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, VIRTUAL_LEN)?;
        let size = self.size.load(Ordering::SeqCst);
        let end = offset + buf.len() as u64;
        let in_file = size.clamp(offset, end) - offset;
        let (head, tail) = buf.split_at_mut(in_file as usize);
        if !head.is_empty() {
            self.raw.file().read_exact_at(head, offset).map_err(|e| {
                DiskError::io(
                    format!(
                        "read {} bytes at {offset:#x} of {}",
                        head.len(),
                        self.raw.path().display()
                    ),
                    e,
                )
            })?;
        }
        tail.fill(0);
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
        check_range("allocation", offset, len, VIRTUAL_LEN)?;
        let end = offset + len;
        // The RawFile knows holes up to the length it was opened with; past it, say data.
        let known = self.raw.len().clamp(offset, end);
        let mut out = if known > offset {
            self.raw.allocation(offset, known - offset)?
        } else {
            Vec::new()
        };
        if end > known {
            out.push(AllocRange {
                offset: known,
                len: end - known,
                kind: AllocKind::Data,
            });
        }
        Ok(out)
    }
}

/// An image file opened for writing whose changes are staged in memory and applied with a
/// redo log by [`StagedFile::commit`]. As a [`BlockDev`] it has the file's length; the
/// `*_grow` methods let a format layer (qcow2) append past it.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    target: File,
    identity: (u64, u64),
    overlay: Overlay<FileView>,
    /// Logical length: the file's, or more once something was written past it.
    len: AtomicU64,
    commit_lock: Mutex<()>,
}

impl StagedFile {
    /// Open the image at `path` for staged writing. Call [`recover`] first when a log is
    /// left over (the facade does).
    pub fn open(path: impl AsRef<Path>) -> Result<StagedFile> {
        let path = path.as_ref().to_path_buf();
        let target = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| DiskError::io(format!("open {} for writing", path.display()), e))?;
        let meta = target
            .metadata()
            .map_err(|e| DiskError::io(format!("stat {}", path.display()), e))?;
        let raw = RawFile::open(&path)?;
        let size = meta.len();
        Ok(StagedFile {
            identity: (meta.dev(), meta.ino()),
            target,
            overlay: Overlay::new(FileView {
                raw,
                size: AtomicU64::new(size),
            }),
            len: AtomicU64::new(size),
            path,
            commit_lock: Mutex::new(()),
        })
    }

    /// The image path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes staged (page granularity) and not yet committed.
    pub fn staged_bytes(&self) -> u64 {
        self.overlay.dirty_ranges().iter().map(|r| r.1).sum()
    }

    fn grow_to(&self, end: u64) -> Result<()> {
        check_range("grow", 0, end, VIRTUAL_LEN)?;
        self.len.fetch_max(end, Ordering::SeqCst);
        Ok(())
    }

    /// Write `buf` at `offset`, growing the logical length when it reaches past it.
    pub fn write_at_grow(&self, buf: &[u8], offset: u64) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| DiskError::corrupt("write", "offset overflow"))?;
        self.grow_to(end)?;
        self.overlay.write_at(buf, offset)
    }

    /// Make a range read as zeros (inside the logical length; a hole in the file after the
    /// commit).
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        check_range("zero", offset, len, self.len())?;
        self.overlay.write_zeroes(offset, len)
    }

    /// Apply every staged change to the file atomically (see the module documentation).
    /// Returns the bytes of the changed ranges. With nothing staged, writes nothing.
    ///
    /// Must not run while other threads write to this file.
    pub fn commit(&self) -> Result<u64, RedoError> {
        let _g = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        let final_len = self.len.load(Ordering::SeqCst);
        let orig_len = self.overlay.base().size.load(Ordering::SeqCst);
        let dirty = self.overlay.dirty_ranges();
        if dirty.is_empty() && final_len == orig_len {
            return Ok(0);
        }
        let changed = dirty.iter().map(|r| r.1).sum();
        let log = log_path(&self.path);
        if let Err(e) = self.write_log(&log, orig_len, final_len) {
            // Nothing was applied: an incomplete log would only be removed by the next
            // open, so remove it now (best effort; the image is untouched either way).
            let _ = std::fs::remove_file(&log);
            return Err(e);
        }
        // From here on, the log is durable: a failure leaves it for the next open.
        self.apply(final_len)
            .and_then(|()| finish(&self.target, &self.path, &log))
            .map_err(|e| RedoError::Interrupted {
                image: self.path.clone(),
                log: log.clone(),
                source: Box::new(e),
            })?;
        self.overlay
            .base()
            .size
            .fetch_max(final_len, Ordering::SeqCst);
        self.overlay.discard_changes();
        Ok(changed)
    }

    /// The changes clipped to the logical length, split into records of at most
    /// [`MAX_REC_DATA`] bytes.
    fn for_each_record(
        &self,
        final_len: u64,
        mut f: impl FnMut(u32, u64, u64, &[u8]) -> Result<(), RedoError>,
    ) -> Result<(), RedoError> {
        let mut err = None;
        let r = self.overlay.for_each_change(|c| {
            let res = match c {
                Change::Data { offset, data } => {
                    let keep = final_len.saturating_sub(offset).min(data.len() as u64) as usize;
                    let mut res = Ok(());
                    for (i, chunk) in data[..keep].chunks(MAX_REC_DATA as usize).enumerate() {
                        let off = offset + i as u64 * MAX_REC_DATA;
                        res = f(KIND_DATA, off, chunk.len() as u64, chunk);
                        if res.is_err() {
                            break;
                        }
                    }
                    res
                }
                Change::Zero { offset, len } => {
                    let len = len.min(final_len.saturating_sub(offset));
                    if len > 0 {
                        f(KIND_ZERO, offset, len, &[])
                    } else {
                        Ok(())
                    }
                }
            };
            match res {
                Ok(()) => Ok(()),
                Err(e) => {
                    err = Some(e);
                    Err(DiskError::Unsupported("stopped".to_owned()))
                }
            }
        });
        match (err, r) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(())) => Ok(()),
        }
    }

    fn write_log(&self, log: &Path, orig_len: u64, final_len: u64) -> Result<(), RedoError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(log)
            .map_err(ioe(format!("create {}", log.display())))?;
        let mut w = LogWriter {
            file,
            path: log.to_path_buf(),
            pos: 0,
            total: crc32fast::Hasher::new(),
            records: 0,
        };
        let mut h = [0u8; HEADER_LEN as usize];
        h[..16].copy_from_slice(MAGIC);
        h[16..20].copy_from_slice(&VERSION.to_le_bytes());
        h[24..32].copy_from_slice(&self.identity.0.to_le_bytes());
        h[32..40].copy_from_slice(&self.identity.1.to_le_bytes());
        h[40..48].copy_from_slice(&orig_len.to_le_bytes());
        h[48..56].copy_from_slice(&final_len.to_le_bytes());
        w.total.update(&h);
        w.write(&h)?;
        self.for_each_record(final_len, |kind, off, len, data| {
            w.record(kind, off, len, data)
        })?;
        w.commit()
    }

    fn apply(&self, final_len: u64) -> Result<(), RedoError> {
        apply_start(&self.target, &self.path, final_len)?;
        self.for_each_record(final_len, |kind, off, len, data| {
            if kind == KIND_DATA {
                apply_write(&self.target, &self.path, data, off)
            } else {
                apply_zero(&self.target, &self.path, off, len)
            }
        })
    }
}

fn redo_to_disk(e: RedoError) -> DiskError {
    match e {
        RedoError::Disk(d) => d,
        other => DiskError::io("commit", io::Error::other(other.to_string())),
    }
}

impl BlockDev for StagedFile {
    fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, self.len())?;
        self.overlay.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range("write", offset, buf.len() as u64, self.len())?;
        self.overlay.write_at(buf, offset)
    }

    /// Commits: the staged changes reach the file through the redo log.
    fn flush(&self) -> Result<()> {
        self.commit().map(|_| ()).map_err(redo_to_disk)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len)
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> {
        check_range("allocation", offset, len, self.len())?;
        self.overlay.allocation(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8 + 1).collect();
        std::fs::write(&p, &data).unwrap();
        (dir, p, data)
    }

    #[test]
    fn commit_applies_and_removes_the_log() {
        let (_d, p, mut want) = setup(64 << 10);
        let s = StagedFile::open(&p).unwrap();
        s.write_at(b"hello", 5000).unwrap();
        s.write_zeroes(16384, 8192).unwrap();
        // Nothing reaches the file before the commit.
        assert_eq!(std::fs::read(&p).unwrap(), want);
        s.write_at_grow(b"tail", (64 << 10) + 10).unwrap();
        assert_eq!(s.len(), (64 << 10) + 14);
        s.commit().unwrap();
        want[5000..5005].copy_from_slice(b"hello");
        want[16384..24576].fill(0);
        want.extend_from_slice(&[0; 10]);
        want.extend_from_slice(b"tail");
        assert_eq!(std::fs::read(&p).unwrap(), want);
        assert!(!has_log(&p));
        assert_eq!(s.commit().unwrap(), 0);
        // Reads after the commit come from the file.
        let mut b = [0u8; 4];
        s.read_at(&mut b, (64 << 10) + 10).unwrap();
        assert_eq!(&b, b"tail");
    }

    #[test]
    fn recover_finishes_a_complete_log_and_drops_an_incomplete_one() {
        let (_d, p, orig) = setup(64 << 10);
        let s = StagedFile::open(&p).unwrap();
        s.write_at(&[9u8; 10000], 3).unwrap();
        s.write_zeroes(40000, 5000).unwrap();
        let log = log_path(&p);
        s.write_log(&log, orig.len() as u64, orig.len() as u64)
            .unwrap();
        let mut want = vec![0u8; orig.len()];
        s.read_at(&mut want, 0).unwrap();
        let full_log = std::fs::read(&log).unwrap();
        // Complete log, image untouched or half-applied: recovery gives the new content.
        for half in [false, true] {
            std::fs::write(&p, &orig).unwrap();
            std::fs::write(&log, &full_log).unwrap();
            if half {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .write_all_at(&[9u8; 100], 3)
                    .unwrap();
            }
            let r = recover(&p).unwrap();
            assert!(matches!(r, Recovery::Finished { records: 2, .. }), "{r:?}");
            assert_eq!(std::fs::read(&p).unwrap(), want);
            assert!(!has_log(&p));
        }
        // Every cut and a flipped byte: discarded, image untouched.
        for cut in [0, 10, 64, 100, full_log.len() - 1] {
            std::fs::write(&p, &orig).unwrap();
            std::fs::write(&log, &full_log[..cut]).unwrap();
            let r = recover(&p).unwrap();
            assert!(matches!(r, Recovery::Discarded { .. }), "{cut}: {r:?}");
            assert!(r.message(&p).unwrap().contains("incomplete"));
            assert_eq!(std::fs::read(&p).unwrap(), orig);
            assert!(!has_log(&p));
        }
        let mut bad = full_log.clone();
        bad[200] ^= 1;
        std::fs::write(&log, &bad).unwrap();
        assert!(matches!(recover(&p).unwrap(), Recovery::Discarded { .. }));
        assert_eq!(std::fs::read(&p).unwrap(), orig);
        assert_eq!(recover(&p).unwrap(), Recovery::Clean);
    }

    #[test]
    fn a_log_for_another_file_is_refused() {
        let (d, p, orig) = setup(8192);
        let s = StagedFile::open(&p).unwrap();
        s.write_at(b"x", 0).unwrap();
        let log = log_path(&p);
        s.write_log(&log, 8192, 8192).unwrap();
        drop(s);
        // Replace the image by a copy (new inode).
        let other = d.path().join("copy");
        std::fs::write(&other, &orig).unwrap();
        std::fs::rename(&other, &p).unwrap();
        let e = recover(&p).unwrap_err();
        assert!(matches!(e, RedoError::Foreign { .. }), "{e}");
        assert!(has_log(&p));
        assert_eq!(std::fs::read(&p).unwrap(), orig);
    }
}
