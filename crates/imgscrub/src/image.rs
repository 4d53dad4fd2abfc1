//! Opening an image: format detection (raw vs qcow2) and the device behind it.

use crate::error::{Error, Result};
use crate::inspect::BackingFile;
use imgscrub_disk::partition::{Partition, PartitionTable, discover};
use imgscrub_disk::{BlockDev, RawFile, Slice};
use serde::Serialize;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// The qcow2 magic, `QFI\xfb`.
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
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
}

impl Format {
    /// `"raw"` or `"qcow2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
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
            _ => Err(format!(
                "unknown image format `{s}` (expected raw or qcow2)"
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
pub struct Image {
    path: PathBuf,
    format: Format,
    dev: Arc<dyn BlockDev>,
    backing: Vec<BackingFile>,
    warnings: Vec<String>,
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

/// Detect the format of the file at `path` by its first bytes.
pub fn detect_format(path: &Path) -> Result<Format> {
    let mut f = File::open(path).map_err(|e| open_err(path, e.to_string()))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    // A file shorter than the magic is raw.
    while got < 4 {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(open_err(path, e.to_string())),
        }
    }
    Ok(if got == 4 && magic == QCOW2_MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
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
        let detected = detect_format(path)?;
        let format = match opts.format {
            Some(Format::Qcow2) if detected != Format::Qcow2 => {
                return Err(Error::WrongFormat {
                    path: path.to_path_buf(),
                    expected: "qcow2",
                    detail: "no QFI\\xfb magic at the start".to_string(),
                });
            }
            Some(f) => f,
            None => detected,
        };
        let mut warnings = Vec::new();
        let (dev, backing): (Arc<dyn BlockDev>, _) = match format {
            Format::Raw => {
                if detected == Format::Qcow2 {
                    warnings.push(
                        "the file has a qcow2 header but is read as raw (--format raw)".to_string(),
                    );
                }
                let f = if opts.write {
                    RawFile::open_rw(path)?
                } else {
                    RawFile::open(path)?
                };
                (Arc::new(f), Vec::new())
            }
            Format::Qcow2 => {
                let (chain, w) = backing_chain(path);
                warnings.extend(w);
                (open_qcow2(path, opts.write)?, chain)
            }
        };
        Ok(Image {
            path: path.to_path_buf(),
            format,
            dev,
            backing,
            warnings,
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

/// Open a qcow2 image (and its backing chain, read-only) as a block device.
fn open_qcow2(path: &Path, write: bool) -> Result<Arc<dyn BlockDev>> {
    let opts = if write {
        imgscrub_qcow2::OpenOptions::read_write()
    } else {
        imgscrub_qcow2::OpenOptions::read_only()
    };
    let img = imgscrub_qcow2::Qcow2::open(path, &opts).map_err(|source| Error::Qcow2 {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(img))
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
