//! The host side of a qcow2 image: the file that holds header, tables and clusters.
//!
//! Unlike a [`BlockDev`], the host file grows when clusters are appended, so the qcow2 code
//! talks to it through [`Storage`]. [`FileStorage`] is a regular file, [`DevStorage`] wraps
//! any fixed-size [`BlockDev`] (for example a [`imgscrub_disk::MemDev`] in fuzz targets) and
//! [`MemStorage`] is a growable in-memory file for tests.

use crate::error::{Qcow2Error, Result};
use imgscrub_disk::{BlockDev, ImageLock, LockError, LockMode};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// A growable, positional host file.
pub trait Storage: Send + Sync {
    /// Current size in bytes.
    fn len(&self) -> Result<u64>;
    /// True for an empty file.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fill `buf` from `offset`; reading past the end is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Write `buf` at `offset`, growing the file when needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Make every completed write durable.
    fn sync(&self) -> Result<()>;
    /// Give back the storage of a range that is no longer referenced (best effort).
    fn punch_hole(&self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }
    /// A name for messages.
    fn name(&self) -> String;
    /// The path when the storage is a file, used to resolve relative backing file names.
    fn path(&self) -> Option<&Path> {
        None
    }
}

/// A regular host file.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    path: PathBuf,
    /// Held while the file is open for writing; dropped with it.
    _lock: Option<ImageLock>,
}

impl FileStorage {
    /// Open `path`, read-only or read-write.
    ///
    /// A read-write open takes imgscrub's QEMU-compatible write lock
    /// ([`imgscrub_disk::ImageLock`]): an image that QEMU (a VM, `qemu-nbd`, `qemu-io`,
    /// `qemu-img`) has open is refused ([`Qcow2Error::InUse`]), and QEMU cannot open it while
    /// we write. The lock is released when the storage is dropped. Callers that already hold
    /// the image lock themselves should open through [`crate::Qcow2::from_storage_at`]
    /// instead, since a second write lock on the same image conflicts with the first.
    pub fn open(path: impl AsRef<Path>, writable: bool) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| Qcow2Error::io(format!("open {}", path.display()), e))?;
        let lock = if writable { lock_write(&path)? } else { None };
        Ok(FileStorage {
            file,
            path,
            _lock: lock,
        })
    }

    /// Create (or truncate) `path` for writing, with the same lock as [`FileStorage::open`]:
    /// an existing image that QEMU has open is refused, not truncated.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Qcow2Error::io(format!("create {}", path.display()), e))?;
        // Lock first, so that an image in use is refused before it is truncated.
        let lock = lock_write(&path)?;
        file.set_len(0)
            .map_err(|e| Qcow2Error::io(format!("truncate {}", path.display()), e))?;
        Ok(FileStorage {
            file,
            path,
            _lock: lock,
        })
    }
}

/// Take imgscrub's QEMU-compatible write lock ([`ImageLock`], OFD byte-range locks on its
/// own descriptor). A conflicting holder (a VM, `qemu-nbd`, `qemu-io`, another imgscrub) is
/// [`Qcow2Error::InUse`]; file systems without OFD locks proceed unlocked, as QEMU does.
fn lock_write(path: &Path) -> Result<Option<ImageLock>> {
    use imgscrub_disk::lock::Errno;
    match ImageLock::acquire(path, LockMode::Write) {
        Ok(l) => Ok(Some(l)),
        Err(e @ LockError::InUse { .. }) => Err(Qcow2Error::InUse(e.to_string())),
        Err(LockError::Io {
            errno: Errno::ENOLCK | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS,
            ..
        }) => Ok(None),
        Err(e) => Err(Qcow2Error::io(
            format!("lock {}", path.display()),
            std::io::Error::other(e.to_string()),
        )),
    }
}

impl Storage for FileStorage {
    fn len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Qcow2Error::io(format!("stat {}", self.path.display()), e))?
            .len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            Qcow2Error::io(
                format!(
                    "read {} bytes at {offset:#x} of {}",
                    buf.len(),
                    self.path.display()
                ),
                e,
            )
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| {
            Qcow2Error::io(
                format!(
                    "write {} bytes at {offset:#x} of {}",
                    buf.len(),
                    self.path.display()
                ),
                e,
            )
        })
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Qcow2Error::io(format!("fsync {}", self.path.display()), e))
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        // Best effort: file systems without hole punching just keep the bytes.
        let _ = fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        );
        Ok(())
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

/// A fixed-size [`BlockDev`] used as host storage (it cannot grow: appending fails).
#[derive(Debug)]
pub struct DevStorage<D>(pub D);

impl<D: BlockDev> Storage for DevStorage<D> {
    fn len(&self) -> Result<u64> {
        Ok(self.0.len())
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        Ok(self.0.read_at(buf, offset)?)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        Ok(self.0.write_at(buf, offset)?)
    }
    fn sync(&self) -> Result<()> {
        Ok(self.0.flush()?)
    }
    fn name(&self) -> String {
        "block device".to_owned()
    }
}

/// A growable in-memory host file.
#[derive(Debug, Default)]
pub struct MemStorage {
    data: RwLock<Vec<u8>>,
}

impl MemStorage {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }
    /// A file holding `data`.
    pub fn from_vec(data: Vec<u8>) -> Self {
        MemStorage {
            data: RwLock::new(data),
        }
    }
    /// A copy of the contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Storage for MemStorage {
    fn len(&self) -> Result<u64> {
        Ok(self.data.read().unwrap_or_else(|p| p.into_inner()).len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        let src = usize::try_from(offset)
            .ok()
            .and_then(|s| Some(s..s.checked_add(buf.len())?))
            .and_then(|r| data.get(r));
        match src {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(Qcow2Error::io(
                format!("read {} bytes at {offset:#x} of memory", buf.len()),
                std::io::ErrorKind::UnexpectedEof.into(),
            )),
        }
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        let end = usize::try_from(offset)
            .ok()
            .and_then(|s| s.checked_add(buf.len()).map(|e| (s, e)));
        let Some((start, end)) = end else {
            return Err(Qcow2Error::io(
                "write to memory",
                std::io::ErrorKind::InvalidInput.into(),
            ));
        };
        if data.len() < end {
            data.resize(end, 0);
        }
        if let Some(dst) = data.get_mut(start..end) {
            dst.copy_from_slice(buf);
        }
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn name(&self) -> String {
        "memory".to_owned()
    }
}
