//! A block device that is a borrowed image with changed sectors on top, and zeros past the
//! image up to a length of its own. The XFS targets use it instead of a copy of a 32 MiB
//! template (a copy per input would cost more than the whole walk), and to zero-pad an input to
//! the size its superblock claims without allocating it.
//!
//! It also watches what the engine does with it: every write is counted (the targets assert
//! that the read-only engine never writes), and the bytes read are capped, so that an input
//! making the engine read without end fails at once instead of looking like a slow input.

use imgscrub_disk::{BlockDev, DiskError, Result, check_range};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

const SECTOR: u64 = 512;

/// Far more than a bounded walk of any input reads (a few MiB for the templates).
pub(crate) const READ_CAP: u64 = 256 << 20;

pub(crate) struct PatchDev<'a> {
    base: &'a [u8],
    len: u64,
    /// Changed sectors, whole (sector index -> contents).
    patches: BTreeMap<u64, Box<[u8; SECTOR as usize]>>,
    read_bytes: AtomicU64,
    writes: AtomicU64,
}

impl<'a> PatchDev<'a> {
    /// `base` followed by zeros up to `len` bytes (at least `base.len()`).
    pub(crate) fn new(base: &'a [u8], len: u64) -> Self {
        PatchDev {
            base,
            len: len.max(base.len() as u64),
            patches: BTreeMap::new(),
            read_bytes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    fn sector_mut(&mut self, s: u64) -> &mut [u8; SECTOR as usize] {
        let base = self.base;
        self.patches.entry(s).or_insert_with(|| {
            let mut b = Box::new([0u8; SECTOR as usize]);
            let start = (s * SECTOR) as usize;
            if let Some(src) = base.get(start..) {
                let n = src.len().min(SECTOR as usize);
                b[..n].copy_from_slice(&src[..n]);
            }
            b
        })
    }

    /// XOR `v` into the byte at `off` (ignored past the end).
    pub(crate) fn xor(&mut self, off: u64, v: u8) {
        if off < self.len && v != 0 {
            self.sector_mut(off / SECTOR)[(off % SECTOR) as usize] ^= v;
        }
    }

    /// Overwrite bytes from `off` (clipped at the end).
    pub(crate) fn put(&mut self, off: u64, bytes: &[u8]) {
        for (i, &v) in bytes.iter().enumerate() {
            let o = off + i as u64;
            if o >= self.len {
                break;
            }
            self.sector_mut(o / SECTOR)[(o % SECTOR) as usize] = v;
        }
    }

    /// Indexes of the changed sectors.
    pub(crate) fn patched_sectors(&self) -> Vec<u64> {
        self.patches.keys().copied().collect()
    }

    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Forget how much was read (between two opens of the same bytes).
    pub(crate) fn reset_read_count(&self) {
        self.read_bytes.store(0, Ordering::Relaxed);
    }
}

impl BlockDev for PatchDev<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, self.len)?;
        let total = self
            .read_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed)
            + buf.len() as u64;
        assert!(
            total <= READ_CAP,
            "the engine read more than {} MiB for one input (unbounded work)",
            READ_CAP >> 20
        );
        if buf.is_empty() {
            return Ok(());
        }
        // The part inside `base`, then zeros.
        let src = usize::try_from(offset)
            .ok()
            .and_then(|s| self.base.get(s..))
            .unwrap_or(&[]);
        let from_base = src.len().min(buf.len());
        buf[..from_base].copy_from_slice(&src[..from_base]);
        buf[from_base..].fill(0);
        let end = offset + buf.len() as u64;
        for (&s, data) in self.patches.range(offset / SECTOR..end.div_ceil(SECTOR)) {
            let s_start = s * SECTOR;
            let lo = s_start.max(offset);
            let hi = (s_start + SECTOR).min(end);
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&data[(lo - s_start) as usize..(hi - s_start) as usize]);
        }
        Ok(())
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Err(DiskError::ReadOnly)
    }

    fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Err(DiskError::ReadOnly)
    }

    fn discard(&self, _offset: u64, _len: u64) -> Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Err(DiskError::ReadOnly)
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_and_padding_read_back() {
        let base: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        let mut d = PatchDev::new(&base, 4096);
        d.xor(10, 0xff);
        d.put(1020, &[1, 2, 3, 4, 5, 6, 7, 8]);
        d.put(2500, &[9]);
        d.put(5000, &[9]); // past the end: ignored
        let mut all = vec![0u8; 4096];
        d.read_at(&mut all, 0).unwrap();
        let mut want = base.clone();
        want.resize(4096, 0);
        want[10] ^= 0xff;
        want[1020..1028].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want[2500] = 9;
        assert_eq!(all, want);
        let mut part = vec![0u8; 7];
        d.read_at(&mut part, 1019).unwrap();
        assert_eq!(part, want[1019..1026]);
        assert!(d.read_at(&mut part, 4090).is_err());
        d.read_at(&mut part, 3000).unwrap();
        assert_eq!(part, [0; 7]);
        assert!(d.write_at(&[0], 0).is_err());
        assert_eq!(d.writes(), 1);
        assert_eq!(d.patched_sectors(), vec![0, 1, 2, 4]);
    }
}
