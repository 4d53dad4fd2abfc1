//! An in-memory block device, for tests and small staging buffers.

use crate::blockdev::{BlockDev, check_range};
use crate::error::{DiskError, Result};
use std::sync::RwLock;

/// A device held in a `Vec<u8>`.
#[derive(Debug, Default)]
pub struct MemDev {
    data: RwLock<Vec<u8>>,
    read_only: bool,
}

impl MemDev {
    /// A zero-filled device of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        Self::from_vec(vec![0; len])
    }

    pub fn from_vec(data: Vec<u8>) -> Self {
        MemDev {
            data: RwLock::new(data),
            read_only: false,
        }
    }

    /// The same device, refusing writes.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// A copy of the contents.
    pub fn to_vec(&self) -> Vec<u8> {
        match self.data.read() {
            Ok(d) => d.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

impl BlockDev for MemDev {
    fn len(&self) -> u64 {
        match self.data.read() {
            Ok(d) => d.len() as u64,
            Err(p) => p.into_inner().len() as u64,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let data = self.data.read().unwrap_or_else(|p| p.into_inner());
        check_range("read", offset, buf.len() as u64, data.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        let mut data = self.data.write().unwrap_or_else(|p| p.into_inner());
        check_range("write", offset, buf.len() as u64, data.len() as u64)?;
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }
}
