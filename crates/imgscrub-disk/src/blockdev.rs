//! The one block vocabulary every layer speaks.

use crate::error::{DiskError, Result};
use std::sync::Arc;

/// How a byte range of a device is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocKind {
    /// Stored data (may still happen to be zero).
    Data,
    /// Known to read as zeros, but storage is (or may be) allocated, e.g. a qcow2 zero cluster
    /// with a host offset.
    Zero,
    /// Not allocated at all: reads as zeros (raw hole, qcow2 unallocated cluster without a
    /// backing file).
    Unallocated,
}

impl AllocKind {
    /// True when the range reads as zeros without looking at the data.
    pub fn reads_as_zero(self) -> bool {
        !matches!(self, AllocKind::Data)
    }
}

/// A run of bytes with one [`AllocKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocRange {
    pub offset: u64,
    pub len: u64,
    pub kind: AllocKind,
}

/// A random-access block device.
///
/// All methods take `&self` and implementations are `Send + Sync`, so several threads (rayon)
/// can read one device at once. Offsets and lengths are in bytes and need not be aligned.
pub trait BlockDev: Send + Sync {
    /// Size in bytes.
    fn len(&self) -> u64;

    /// True for a zero-length device.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fill `buf` from `offset`. Reading past the end is an error
    /// ([`DiskError::OutOfRange`]), never a short read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Write all of `buf` at `offset`. Writing past the end is an error.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;

    /// Make every completed write durable.
    fn flush(&self) -> Result<()>;

    /// True when writes are refused.
    fn is_read_only(&self) -> bool {
        false
    }

    /// Make `len` bytes at `offset` read as zeros. Implementations should avoid writing data
    /// where they can (holes, zero clusters); the default writes zero buffers.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_range("write_zeroes", offset, len, self.len())?;
        let zeros = vec![0u8; ZERO_CHUNK.min(len) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Give the storage of a range back. Afterwards the range reads as zeros: imgscrub only
    /// ever discards ranges whose content must be zero, so there is no "undefined content"
    /// mode. The default is [`BlockDev::write_zeroes`].
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    /// Describe how `offset..offset+len` is backed, as sorted, non-overlapping, contiguous
    /// ranges covering exactly the request. The default says "all data".
    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> {
        check_range("allocation", offset, len, self.len())?;
        Ok(if len == 0 {
            Vec::new()
        } else {
            vec![AllocRange {
                offset,
                len,
                kind: AllocKind::Data,
            }]
        })
    }
}

const ZERO_CHUNK: u64 = 1 << 20;

/// Check that `offset..offset+len` lies within a device of `size` bytes.
pub fn check_range(what: &'static str, offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfRange {
            what,
            offset,
            len,
            size,
        }),
    }
}

macro_rules! forward_blockdev {
    ($($t:tt)*) => {
        impl<T: BlockDev + ?Sized> BlockDev for $($t)* {
            fn len(&self) -> u64 { (**self).len() }
            fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> { (**self).read_at(buf, offset) }
            fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> { (**self).write_at(buf, offset) }
            fn flush(&self) -> Result<()> { (**self).flush() }
            fn is_read_only(&self) -> bool { (**self).is_read_only() }
            fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> { (**self).write_zeroes(offset, len) }
            fn discard(&self, offset: u64, len: u64) -> Result<()> { (**self).discard(offset, len) }
            fn allocation(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> { (**self).allocation(offset, len) }
        }
    };
}
forward_blockdev!(&T);
forward_blockdev!(Box<T>);
forward_blockdev!(Arc<T>);
