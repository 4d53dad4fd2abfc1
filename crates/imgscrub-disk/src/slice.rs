//! A window onto part of another device: partitions are slices.

use crate::blockdev::{AllocRange, BlockDev, check_range};
use crate::error::Result;

/// `len` bytes of `inner` starting at `offset`, seen as a device of its own.
#[derive(Debug, Clone)]
pub struct Slice<D> {
    inner: D,
    offset: u64,
    len: u64,
}

impl<D: BlockDev> Slice<D> {
    /// Fails when the window does not lie inside `inner`.
    pub fn new(inner: D, offset: u64, len: u64) -> Result<Self> {
        check_range("slice", offset, len, inner.len())?;
        Ok(Slice { inner, offset, len })
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }
}

impl<D: BlockDev> BlockDev for Slice<D> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, self.len)?;
        self.inner.read_at(buf, self.offset + offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range("write", offset, buf.len() as u64, self.len)?;
        self.inner.write_at(buf, self.offset + offset)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn is_read_only(&self) -> bool {
        self.inner.is_read_only()
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_range("write_zeroes", offset, len, self.len)?;
        self.inner.write_zeroes(self.offset + offset, len)
    }
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range("discard", offset, len, self.len)?;
        self.inner.discard(self.offset + offset, len)
    }
    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> {
        check_range("allocation", offset, len, self.len)?;
        let mut v = self.inner.allocation(self.offset + offset, len)?;
        for r in &mut v {
            r.offset -= self.offset;
        }
        Ok(v)
    }
}
