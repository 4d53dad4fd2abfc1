//! Raw image files: positional reads and writes, holes found with SEEK_DATA/SEEK_HOLE and made
//! with hole punching.

use crate::blockdev::{AllocKind, AllocRange, BlockDev, check_range};
use crate::error::{DiskError, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A raw disk image (or any regular file) used as a block device.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    path: PathBuf,
    len: u64,
    writable: bool,
}

impl RawFile {
    /// Open read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// Open for reading and writing.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, true)
    }

    fn open_with(path: impl AsRef<Path>, writable: bool) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| DiskError::io(format!("open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| DiskError::io(format!("stat {}", path.display()), e))?
            .len();
        Ok(RawFile {
            file,
            path,
            len,
            writable,
        })
    }

    /// Create (or truncate) a file of `len` bytes, all a hole, opened read-write.
    pub fn create(path: impl AsRef<Path>, len: u64) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| DiskError::io(format!("create {}", path.display()), e))?;
        file.set_len(len)
            .map_err(|e| DiskError::io(format!("resize {}", path.display()), e))?;
        Ok(RawFile {
            file,
            path,
            len,
            writable: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file (for locking).
    pub fn file(&self) -> &File {
        &self.file
    }

    fn seek_data_hole(&self, pos: u64, data: bool) -> std::io::Result<Option<u64>> {
        use rustix::fs::{SeekFrom, seek};
        let how = if data {
            SeekFrom::Data(pos)
        } else {
            SeekFrom::Hole(pos)
        };
        match seek(&self.file, how) {
            Ok(p) => Ok(Some(p)),
            Err(rustix::io::Errno::NXIO) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl BlockDev for RawFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, self.len)?;
        self.file.read_exact_at(buf, offset).map_err(|e| {
            DiskError::io(
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
        if !self.writable {
            return Err(DiskError::ReadOnly);
        }
        check_range("write", offset, buf.len() as u64, self.len)?;
        self.file.write_all_at(buf, offset).map_err(|e| {
            DiskError::io(
                format!(
                    "write {} bytes at {offset:#x} of {}",
                    buf.len(),
                    self.path.display()
                ),
                e,
            )
        })
    }

    fn flush(&self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        self.file
            .sync_all()
            .map_err(|e| DiskError::io(format!("fsync {}", self.path.display()), e))
    }

    fn is_read_only(&self) -> bool {
        !self.writable
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        if !self.writable {
            return Err(DiskError::ReadOnly);
        }
        check_range("discard", offset, len, self.len)?;
        if len == 0 {
            return Ok(());
        }
        use rustix::fs::{FallocateFlags, fallocate};
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match fallocate(&self.file, flags, offset, len) {
            Ok(()) => Ok(()),
            // Filesystems without hole punching: fall back to writing zeros.
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => {
                self.write_zeroes_plain(offset, len)
            }
            Err(e) => Err(DiskError::io(
                format!("punch hole {offset:#x}+{len:#x} in {}", self.path.display()),
                e.into(),
            )),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        // A hole reads as zeros and costs nothing: punching is the cheapest way to zero.
        self.discard(offset, len)
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> {
        check_range("allocation", offset, len, self.len)?;
        let end = offset + len;
        let mut out: Vec<AllocRange> = Vec::new();
        let push = |out: &mut Vec<AllocRange>, start: u64, stop: u64, kind| {
            if stop > start {
                out.push(AllocRange {
                    offset: start,
                    len: stop - start,
                    kind,
                });
            }
        };
        let mut pos = offset;
        while pos < end {
            let data = self
                .seek_data_hole(pos, true)
                .map_err(|e| DiskError::io(format!("SEEK_DATA in {}", self.path.display()), e))?;
            let data_start = match data {
                // Some filesystems do not support SEEK_DATA: everything is data.
                None => end,
                Some(d) => d.min(end),
            };
            push(&mut out, pos, data_start, AllocKind::Unallocated);
            if data_start >= end {
                break;
            }
            let hole = self
                .seek_data_hole(data_start, false)
                .map_err(|e| DiskError::io(format!("SEEK_HOLE in {}", self.path.display()), e))?
                .unwrap_or(end)
                .min(end);
            // A hole offset not past data_start would loop forever; treat the rest as data.
            let hole = if hole <= data_start { end } else { hole };
            push(&mut out, data_start, hole, AllocKind::Data);
            pos = hole;
        }
        Ok(out)
    }
}

impl RawFile {
    fn write_zeroes_plain(&self, offset: u64, len: u64) -> Result<()> {
        let zeros = vec![0u8; (1u64 << 20).min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}
