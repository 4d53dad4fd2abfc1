//! Block and inode bitmaps: load, BLOCK_UNINIT / INODE_UNINIT, checksums, write back. Owner: core.
//!
//! A bitmap occupies one block; bit `i` (LSB first within each byte) stands for block
//! `group_first_block + i` or inode `group * inodes_per_group + i + 1`. Bits past the end of
//! the group (the "padding") are set to 1, as the kernel and mke2fs do, so that no allocator
//! ever picks them. Checksums cover only the meaningful part: `clusters_per_group / 8` bytes
//! for block bitmaps, `inodes_per_group / 8` for inode bitmaps.

use crate::csum::crc32c_raw;

/// One in-memory bitmap block with a dirty flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    bits: Vec<u8>,
    /// Number of meaningful bits (blocks in the group, or inodes per group).
    len: u32,
    /// Modified since loaded (must be written back at flush).
    pub dirty: bool,
}

impl Bitmap {
    /// Wrap a bitmap block read from disk; `len` meaningful bits.
    pub fn from_block(block: Vec<u8>, len: u32) -> Self {
        let len = len.min(u32::try_from(block.len().saturating_mul(8)).unwrap_or(u32::MAX));
        Bitmap {
            bits: block,
            len,
            dirty: false,
        }
    }

    /// An all-free bitmap of `block_size` bytes with `len` meaningful bits and the padding
    /// after them set (what an UNINIT group's bitmap means).
    pub fn new_uninit(block_size: usize, len: u32) -> Self {
        let mut b = Bitmap::from_block(vec![0u8; block_size], len);
        b.set_padding();
        b.dirty = true;
        b
    }

    /// Set every bit from `len` to the end of the block.
    pub fn set_padding(&mut self) {
        let total = self.bits.len().saturating_mul(8);
        let mut i = self.len as usize;
        // Finish the partial byte, then whole bytes.
        while i < total && !i.is_multiple_of(8) {
            self.set_raw(i);
            i += 1;
        }
        if let Some(rest) = self.bits.get_mut(i / 8..) {
            rest.fill(0xFF);
        }
    }

    fn set_raw(&mut self, i: usize) {
        if let Some(b) = self.bits.get_mut(i / 8) {
            *b |= 1 << (i % 8);
        }
    }

    /// Number of meaningful bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the bitmap has no meaningful bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw block.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Bit `i` (out of range reads as set: never allocatable).
    pub fn get(&self, i: u32) -> bool {
        if i >= self.len {
            return true;
        }
        self.bits
            .get((i / 8) as usize)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// Set bit `i` to `v`; returns the previous value. Out of range is ignored (returns true).
    pub fn set(&mut self, i: u32, v: bool) -> bool {
        if i >= self.len {
            return true;
        }
        let Some(b) = self.bits.get_mut((i / 8) as usize) else {
            return true;
        };
        let mask = 1u8 << (i % 8);
        let old = *b & mask != 0;
        if v {
            *b |= mask;
        } else {
            *b &= !mask;
        }
        if old != v {
            self.dirty = true;
        }
        old
    }

    /// First clear bit in `start..end` (clamped to `len`).
    pub fn find_free(&self, start: u32, end: u32) -> Option<u32> {
        let end = end.min(self.len);
        let mut i = start;
        while i < end {
            // Skip full bytes quickly.
            if i.is_multiple_of(8) && self.bits.get((i / 8) as usize) == Some(&0xFF) {
                i = i.saturating_add(8);
                continue;
            }
            if !self.get(i) {
                return Some(i);
            }
            i += 1;
        }
        None
    }

    /// Length of the run of clear bits starting at `start`, at most `max`.
    pub fn free_run(&self, start: u32, max: u32) -> u32 {
        let mut n = 0;
        while n < max && !self.get(start.saturating_add(n)) && start.saturating_add(n) < self.len {
            n += 1;
        }
        n
    }

    /// Number of clear meaningful bits.
    pub fn count_free(&self) -> u32 {
        let full = (self.len / 8) as usize;
        let mut used: u32 = self
            .bits
            .get(..full)
            .unwrap_or(&[])
            .iter()
            .map(|b| b.count_ones())
            .sum();
        for i in (full as u32) * 8..self.len {
            used += u32::from(self.get(i));
        }
        self.len.saturating_sub(used)
    }

    /// crc32c over the first `nbytes` bytes (the part the descriptor checksum covers).
    pub fn checksum(&self, seed: u32, nbytes: usize) -> u32 {
        crc32c_raw(
            seed,
            self.bits.get(..nbytes.min(self.bits.len())).unwrap_or(&[]),
        )
    }

    /// Iterate over runs of clear bits as `(start, len)`.
    pub fn free_runs(&self) -> Vec<(u32, u32)> {
        let mut runs = Vec::new();
        let mut i = 0u32;
        while i < self.len {
            match self.find_free(i, self.len) {
                None => break,
                Some(s) => {
                    let n = self.free_run(s, self.len - s);
                    runs.push((s, n));
                    i = s.saturating_add(n.max(1));
                }
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_find() {
        let mut b = Bitmap::new_uninit(16, 13);
        assert_eq!(b.as_bytes()[1], 0b1110_0000);
        assert!(b.as_bytes()[2..].iter().all(|&x| x == 0xFF));
        assert_eq!(b.count_free(), 13);
        assert!(!b.set(0, true));
        assert_eq!(b.find_free(0, 100), Some(1));
        for i in 1..13 {
            b.set(i, true);
        }
        assert_eq!(b.find_free(0, 100), None);
        assert_eq!(b.count_free(), 0);
        b.set(5, false);
        b.set(6, false);
        assert_eq!(b.free_runs(), vec![(5, 2)]);
        assert!(b.get(200));
    }
}
