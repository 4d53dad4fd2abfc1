//! Opening an image: format detection by magic (every format `qemu-img info` knows, see
//! `imgscrub-formats`) and the device behind it: raw, qcow2, VMDK (monolithicSparse,
//! streamOptimized; read-only) or VHD (fixed, dynamic; read-only). Other formats are refused
//! by name with the `qemu-img convert` line that makes them readable, never read as raw.

use crate::error::{Error, Result};
use crate::inspect::BackingFile;
use imgscrub_disk::lock::{ImageLock, LockError, LockMode};
use imgscrub_disk::partition::{Partition, PartitionTable, discover};
use imgscrub_disk::redo::{self, StagedFile};
use imgscrub_disk::{AllocRange, BlockDev, DiskError, RawFile, Slice};
use imgscrub_formats::{Detected, Kind};
use serde::Serialize;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Longest backing chain [`Image::open`] lists.
const MAX_BACKING_DEPTH: usize = 32;

/// An image file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A raw disk image: byte N of the file is byte N of the disk.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware VMDK, monolithicSparse or streamOptimized (read-only).
    Vmdk,
    /// Microsoft VHD, fixed or dynamic (read-only).
    Vhd,
}

impl Format {
    /// `"raw"`, `"qcow2"`, `"vmdk"` or `"vhd"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" => Ok(Format::Vmdk),
            "vhd" | "vpc" => Ok(Format::Vhd),
            _ => Err(format!(
                "unknown image format `{s}` (expected raw, qcow2, vmdk or vhd)"
            )),
        }
    }
}

/// How to open an image.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Open for writing. Without it every write fails with "read-only".
    pub write: bool,
    /// Force a format instead of detecting it by magic.
    pub format: Option<Format>,
}

/// An open disk image.
///
/// Opened for writing, the image file is staged: every write (guest data, and for qcow2 the
/// tables and clusters it allocates in the file) stays in memory until the device is
/// flushed, and the flush applies all of it atomically through a redo log (see
/// `docs/safety.md`). The image holds a QEMU-compatible lock for as long as it is open.
pub struct Image {
    path: PathBuf,
    format: Format,
    dev: Arc<dyn BlockDev>,
    backing: Vec<BackingFile>,
    warnings: Vec<String>,
    _lock: Option<ImageLock>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("virtual_size", &self.dev.len())
            .finish()
    }
}

/// Detect the format of the file at `path` by its magic. A format imgscrub does not read
/// (VHDX, VDI, QED, qcow v1, a split VMDK, a differencing VHD…) is an error that names it and
/// says how to convert it: it is never taken for raw.
pub fn detect_format(path: &Path) -> Result<Format> {
    let d = detect(path)?;
    format_of(path, &d)
}

fn detect(path: &Path) -> Result<Detected> {
    let f = File::open(path).map_err(|e| open_err(path, e.to_string()))?;
    Ok(imgscrub_formats::detect_file(&f, path)?)
}

fn format_of(path: &Path, d: &Detected) -> Result<Format> {
    if let Some(why) = d.refusal(path) {
        return Err(open_unsupported(path, why));
    }
    Ok(match d.kind {
        Kind::Qcow2 => Format::Qcow2,
        Kind::Vmdk => Format::Vmdk,
        Kind::Vhd => Format::Vhd,
        _ => Format::Raw,
    })
}

fn open_unsupported(path: &Path, why: String) -> Error {
    Error::Disk(DiskError::Unsupported(format!("{}: {why}", path.display())))
}

fn open_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Open {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Image {
    /// Open the image at `path`: detect raw vs qcow2 (or use `opts.format`), open it
    /// read-only unless `opts.write`, and list the backing chain of a qcow2 image.
    ///
    /// Before anything else, the image is locked the way QEMU locks images (writing: nobody
    /// else may write or read it consistently; reading: nobody may write it), and a redo log
    /// left by an interrupted imgscrub is dealt with: a complete one is applied, an
    /// incomplete one removed (either way [`Image::warnings`] says so). This needs write
    /// access even for a read-only open; without it the open fails and says how to finish.
    pub fn open(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Image> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| open_err(path, e.to_string()))?;
        if meta.is_dir() {
            return Err(open_err(path, "is a directory, not a disk image"));
        }
        if !meta.is_file() {
            return Err(open_err(
                path,
                "is not a regular file (block devices and pipes are not supported: use an image file)",
            ));
        }
        let mut warnings = Vec::new();
        let mode = if opts.write {
            LockMode::Write
        } else {
            LockMode::Read
        };
        let mut lock = take_lock(path, mode, &mut warnings)?;
        if redo::has_log(path) {
            if !opts.write {
                // Recovery writes: hold the write lock while it runs.
                drop(lock.take());
                let wlock = take_lock(path, LockMode::Write, &mut warnings)?;
                recover_log(path, &mut warnings)?;
                drop(wlock);
                lock = take_lock(path, mode, &mut warnings)?;
            } else {
                recover_log(path, &mut warnings)?;
            }
        }
        let found = detect(path)?;
        let format = match opts.format {
            // The explicit override: whatever the magic says, byte N is byte N.
            Some(Format::Raw) => Format::Raw,
            Some(f) => {
                let detected = format_of(path, &found).ok();
                if detected != Some(f) {
                    return Err(Error::WrongFormat {
                        path: path.to_path_buf(),
                        expected: f.as_str(),
                        detail: format!("the file is {found}"),
                    });
                }
                f
            }
            None => format_of(path, &found)?,
        };
        let (dev, backing): (Arc<dyn BlockDev>, _) = match format {
            Format::Raw => {
                if found.kind != Kind::Raw && found.kind != Kind::Luks {
                    warnings.push(format!(
                        "the file is {found} but is read as raw (--format raw)"
                    ));
                }
                let dev: Arc<dyn BlockDev> = if opts.write {
                    Arc::new(StagedFile::open(path)?)
                } else {
                    Arc::new(RawFile::open(path)?)
                };
                (dev, Vec::new())
            }
            Format::Qcow2 => {
                let (chain, w) = backing_chain(path);
                // The qcow2 layer follows qcow2 and raw backing files, and takes a file
                // without qcow2 magic for raw: never let it read a VMDK, VHD… that way.
                for b in &chain {
                    if let Ok(d) = detect(Path::new(&b.path))
                        && !matches!(d.kind, Kind::Raw | Kind::Qcow2 | Kind::Luks)
                    {
                        return Err(open_unsupported(
                            path,
                            format!(
                                "its backing file {} is {d}; imgscrub follows qcow2 and raw \
                                 backing files only: flatten it first with `qemu-img convert \
                                 -O qcow2 {} flat.qcow2`",
                                b.path,
                                path.display()
                            ),
                        ));
                    }
                }
                warnings.extend(w);
                (open_qcow2(path, opts.write)?, chain)
            }
            Format::Vmdk | Format::Vhd => {
                if opts.write {
                    return Err(open_unsupported(
                        path,
                        format!(
                            "{} images are read-only in imgscrub: write the result to a new \
                             image (`prepare --output OUT`, `convert`), or convert it first \
                             with `qemu-img convert -O qcow2`",
                            found
                        ),
                    ));
                }
                let dev: Arc<dyn BlockDev> = if format == Format::Vmdk {
                    Arc::new(imgscrub_formats::Vmdk::open(path)?)
                } else {
                    Arc::new(imgscrub_formats::Vhd::open(path)?)
                };
                (dev, Vec::new())
            }
        };
        Ok(Image {
            path: path.to_path_buf(),
            format,
            dev,
            backing,
            warnings,
            _lock: lock,
        })
    }

    /// Wrap a device that is already open (tests, fuzzing, library users with their own
    /// storage). `name` is only used in reports.
    pub fn from_device(name: impl Into<PathBuf>, format: Format, dev: Arc<dyn BlockDev>) -> Image {
        Image {
            path: name.into(),
            format,
            dev,
            backing: Vec::new(),
            warnings: Vec::new(),
            _lock: None,
        }
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Size of the virtual disk in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.dev.len()
    }

    /// The virtual disk as a block device (guest view: qcow2 decoded, backing merged).
    pub fn device(&self) -> &Arc<dyn BlockDev> {
        &self.dev
    }

    /// The backing files below a qcow2 image, nearest first (empty for raw).
    pub fn backing_chain(&self) -> &[BackingFile] {
        &self.backing
    }

    /// Problems noticed while opening (e.g. a backing file that cannot be read).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Find the partition table.
    pub fn partitions(&self) -> Result<PartitionTable> {
        Ok(discover(&*self.dev)?)
    }

    /// One partition (from [`Image::partitions`]) as a device of its own.
    pub fn partition_device(&self, p: &Partition) -> Result<Slice<Arc<dyn BlockDev>>> {
        Ok(p.slice(Arc::clone(&self.dev))?)
    }
}

/// Open a qcow2 image (and its backing chain, read-only) as a block device. For writing,
/// the qcow2 layer runs over a [`StagedFile`]: cluster allocations and table updates are
/// staged with the data and reach the file only through the redo log, when the device is
/// flushed.
fn open_qcow2(path: &Path, write: bool) -> Result<Arc<dyn BlockDev>> {
    let qerr = |source| Error::Qcow2 {
        path: path.to_path_buf(),
        source,
    };
    if !write {
        let opts = imgscrub_qcow2::OpenOptions::read_only();
        let img = imgscrub_qcow2::Qcow2::open(path, &opts).map_err(qerr)?;
        return Ok(Arc::new(img));
    }
    let staged = Arc::new(StagedFile::open(path)?);
    let storage = Box::new(StagedStorage(Arc::clone(&staged)));
    let opts = imgscrub_qcow2::OpenOptions::read_write();
    let img = imgscrub_qcow2::Qcow2::from_storage_at(storage, path, &opts).map_err(qerr)?;
    Ok(Arc::new(CommitOnFlush { inner: img, staged }))
}

/// Take the image lock. Filesystems without OFD locks (some network filesystems) get a
/// warning instead, as QEMU does; a conflicting holder is an error.
fn take_lock(path: &Path, mode: LockMode, warnings: &mut Vec<String>) -> Result<Option<ImageLock>> {
    match ImageLock::acquire(path, mode) {
        Ok(l) => Ok(Some(l)),
        Err(e @ LockError::InUse { .. }) => Err(Error::Lock(e)),
        Err(LockError::Io { errno, .. })
            if matches!(
                errno,
                nix_errno::ENOLCK | nix_errno::EINVAL | nix_errno::EOPNOTSUPP | nix_errno::ENOSYS
            ) =>
        {
            warnings.push(format!(
                "{}: the filesystem does not support image locks ({errno}); not locked",
                path.display()
            ));
            Ok(None)
        }
        Err(e) => Err(Error::Lock(e)),
    }
}

use imgscrub_disk::lock::Errno as nix_errno;

/// Finish or roll back the change a redo log describes.
fn recover_log(path: &Path, warnings: &mut Vec<String>) -> Result<()> {
    let writable = std::fs::OpenOptions::new().write(true).open(path);
    if let Err(e) = writable {
        return Err(open_err(
            path,
            format!(
                "an interrupted imgscrub change is pending in {} but the image cannot be opened \
                 for writing to finish it ({e}); run any imgscrub command on it with write access",
                redo::log_path(path).display()
            ),
        ));
    }
    let r = redo::recover(path)?;
    if let Some(m) = r.message(path) {
        warnings.push(m);
    }
    Ok(())
}

/// A qcow2 image over a staged file: flushing it commits the staged file.
struct CommitOnFlush {
    inner: imgscrub_qcow2::Qcow2,
    staged: Arc<StagedFile>,
}

impl BlockDev for CommitOnFlush {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> imgscrub_disk::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> imgscrub_disk::Result<()> {
        self.inner.write_at(buf, offset)
    }
    /// Writes the qcow2 metadata into the staged file, then commits it atomically.
    fn flush(&self) -> imgscrub_disk::Result<()> {
        self.inner.flush()?;
        self.staged.flush()
    }
    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> imgscrub_disk::Result<()> {
        self.inner.write_zeroes(offset, len)
    }
    fn discard(&self, offset: u64, len: u64) -> imgscrub_disk::Result<()> {
        self.inner.discard(offset, len)
    }
    fn allocation(&self, offset: u64, len: u64) -> imgscrub_disk::Result<Vec<AllocRange>> {
        self.inner.allocation(offset, len)
    }
}

/// The staged file as qcow2 host storage (it grows when clusters are appended; syncs are
/// no-ops because the commit is what makes changes durable).
struct StagedStorage(Arc<StagedFile>);

impl imgscrub_qcow2::Storage for StagedStorage {
    fn len(&self) -> imgscrub_qcow2::Result<u64> {
        Ok(self.0.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> imgscrub_qcow2::Result<()> {
        Ok(self.0.read_at(buf, offset)?)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> imgscrub_qcow2::Result<()> {
        Ok(self.0.write_at_grow(buf, offset)?)
    }
    fn sync(&self) -> imgscrub_qcow2::Result<()> {
        Ok(())
    }
    fn punch_hole(&self, offset: u64, len: u64) -> imgscrub_qcow2::Result<()> {
        let end = offset.saturating_add(len).min(self.0.len());
        if end > offset {
            self.0.zero_range(offset, end - offset)?;
        }
        Ok(())
    }
    fn name(&self) -> String {
        self.0.path().display().to_string()
    }
    fn path(&self) -> Option<&Path> {
        Some(self.0.path())
    }
}

/// Read the backing chain from the qcow2 headers (backing name at the offset the header
/// gives, resolved relative to the image's directory), bounded and loop-protected.
/// Problems become warnings: the qcow2 reader decides whether the image can be opened.
fn backing_chain(path: &Path) -> (Vec<BackingFile>, Vec<String>) {
    let mut chain = Vec::new();
    let mut warnings = Vec::new();
    let mut seen = vec![std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())];
    let mut cur = path.to_path_buf();
    for _ in 0..=MAX_BACKING_DEPTH {
        let name = match backing_name(&cur) {
            Ok(Some(n)) => n,
            Ok(None) => return (chain, warnings),
            Err(e) => {
                warnings.push(format!(
                    "{}: cannot read the qcow2 header: {e}",
                    cur.display()
                ));
                return (chain, warnings);
            }
        };
        let next = resolve_backing(&cur, &name);
        let format = detect_format(&next).ok();
        chain.push(BackingFile {
            path: next.display().to_string(),
            format,
        });
        if format.is_none() {
            warnings.push(format!("backing file {} cannot be opened", next.display()));
            return (chain, warnings);
        }
        if format != Some(Format::Qcow2) {
            return (chain, warnings);
        }
        let canon = std::fs::canonicalize(&next).unwrap_or_else(|_| next.clone());
        if seen.contains(&canon) {
            warnings.push(format!("the backing chain loops at {}", next.display()));
            return (chain, warnings);
        }
        seen.push(canon);
        cur = next;
    }
    warnings.push(format!(
        "the backing chain is longer than {MAX_BACKING_DEPTH} images"
    ));
    (chain, warnings)
}

/// The backing file name in a qcow2 header, if any.
fn backing_name(path: &Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let mut h = [0u8; 24];
    f.read_exact_at(&mut h, 0)?;
    let mut off = [0u8; 8];
    off.copy_from_slice(&h[8..16]);
    let off = u64::from_be_bytes(off);
    let len = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    if off == 0 || len == 0 {
        return Ok(None);
    }
    if len > 1023 {
        return Err(std::io::Error::other(format!(
            "backing file name of {len} bytes is too long"
        )));
    }
    let mut name = vec![0u8; len as usize];
    f.read_exact_at(&mut name, off)?;
    Ok(Some(String::from_utf8_lossy(&name).into_owned()))
}

fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        image.parent().unwrap_or(Path::new(".")).join(p)
    }
}
