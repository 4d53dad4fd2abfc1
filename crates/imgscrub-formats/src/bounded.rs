//! The container file of an image, read with every range checked against its length: a
//! header, table or grain that points past the end is an error naming the structure, the
//! offset and the file — never a short read, never a panic.

use imgscrub_disk::{BlockDev, DiskError, Result};

pub(crate) struct ImageFile {
    dev: Box<dyn BlockDev>,
    len: u64,
    name: String,
    /// The format's name, used as the structure of "past the end" errors (`VMDK`, `VHD`).
    format: &'static str,
}

impl ImageFile {
    pub(crate) fn new(dev: Box<dyn BlockDev>, name: &str, format: &'static str) -> Self {
        ImageFile {
            len: dev.len(),
            dev,
            name: name.to_string(),
            format,
        }
    }

    /// The file's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The name used in messages (the path, or what the caller called it).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `len` bytes at `off` lie inside the file; else an error naming `what`.
    pub(crate) fn fits(&self, off: u64, len: u64, what: &str) -> Result<()> {
        if off.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(DiskError::corrupt(
                self.format,
                format!("{what} at byte {off:#x} is past the end of {}", self.name),
            ));
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `off`, which must lie inside the file.
    pub(crate) fn read(&self, buf: &mut [u8], off: u64, what: &str) -> Result<()> {
        self.fits(off, buf.len() as u64, what)?;
        self.dev.read_at(buf, off)
    }
}
