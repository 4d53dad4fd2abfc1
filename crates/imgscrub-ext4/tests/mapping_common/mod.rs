//! Shared helpers for the mapping tests: an in-memory `MapCtx` with a simple allocator.
#![allow(dead_code)]

use imgscrub_ext4::mapping::{self, FileMap, MapCtx};
use imgscrub_ext4::{Ext4Error, Result};

/// A Vec-backed filesystem: `blocks_count` blocks of `bs` bytes, a bitmap, a first-fit
/// allocator starting at the goal.
pub struct MemCtx {
    pub bs: u32,
    pub data: Vec<u8>,
    pub used: Vec<bool>,
    pub first_data_block: u64,
    pub seed: Option<u32>,
    /// Largest run the allocator hands out (forces fragmentation when small).
    pub max_run: u32,
    /// Skip this many blocks after the goal (forces physically non-contiguous runs).
    pub skip: u64,
    /// Fail with NoSpace after this many more successful allocations.
    pub fail_after: Option<u64>,
    pub allocs: u64,
    pub frees: u64,
    /// Robustness tests: reading a free block or freeing a free block is an `Err`, not a
    /// test failure (random trees point anywhere).
    pub lenient: bool,
}

impl MemCtx {
    pub fn new(bs: u32, blocks: u64) -> Self {
        let mut used = vec![false; blocks as usize];
        // Block 0 (boot / superblock) is never handed out.
        used[0] = true;
        MemCtx {
            bs,
            data: vec![0u8; bs as usize * blocks as usize],
            used,
            first_data_block: 1,
            seed: None,
            max_run: u32::MAX,
            skip: 0,
            fail_after: None,
            allocs: 0,
            frees: 0,
            lenient: false,
        }
    }

    /// Blocks currently allocated (excluding the reserved block 0).
    pub fn used_count(&self) -> u64 {
        self.used.iter().skip(1).filter(|&&u| u).count() as u64
    }

    pub fn block(&self, b: u64) -> &[u8] {
        let s = b as usize * self.bs as usize;
        &self.data[s..s + self.bs as usize]
    }

    pub fn block_mut(&mut self, b: u64) -> &mut [u8] {
        let s = b as usize * self.bs as usize;
        let bs = self.bs as usize;
        &mut self.data[s..s + bs]
    }
}

impl MapCtx for MemCtx {
    fn block_size(&self) -> u32 {
        self.bs
    }
    fn blocks_count(&self) -> u64 {
        self.used.len() as u64
    }
    fn first_data_block(&self) -> u64 {
        self.first_data_block
    }
    fn read_block(&mut self, pblk: u64, buf: &mut [u8]) -> Result<()> {
        assert!(
            pblk < self.blocks_count() && pblk >= 1,
            "read of block {pblk}"
        );
        if self.lenient && !self.used[pblk as usize] {
            return Err(Ext4Error::InvalidArgument(
                "test: read of a free block".into(),
            ));
        }
        assert!(self.used[pblk as usize], "read of free block {pblk}");
        buf.copy_from_slice(self.block(pblk));
        Ok(())
    }
    fn write_block(&mut self, pblk: u64, buf: &[u8]) -> Result<()> {
        assert!(
            pblk < self.blocks_count() && pblk >= 1,
            "write of block {pblk}"
        );
        if self.lenient && !self.used[pblk as usize] {
            return Err(Ext4Error::InvalidArgument(
                "test: write to a free block".into(),
            ));
        }
        assert!(self.used[pblk as usize], "write to free block {pblk}");
        self.block_mut(pblk).copy_from_slice(buf);
        Ok(())
    }
    fn alloc_blocks(&mut self, goal: u64, max: u32) -> Result<(u64, u32)> {
        assert!(max >= 1);
        if let Some(n) = self.fail_after.as_mut() {
            if *n == 0 {
                return Err(Ext4Error::NoSpace("test: fail_after"));
            }
            *n -= 1;
        }
        let total = self.blocks_count();
        let start = goal.saturating_add(self.skip) % total;
        let max = max.min(self.max_run).max(1) as u64;
        for k in 0..total {
            let b = (start + k) % total;
            if !self.used[b as usize] {
                let mut n = 0;
                while n < max && b + n < total && !self.used[(b + n) as usize] {
                    self.used[(b + n) as usize] = true;
                    n += 1;
                }
                self.allocs += n;
                // Garbage in new blocks: callers must initialise what they allocate.
                for i in 0..n {
                    self.block_mut(b + i).fill(0xA5);
                }
                return Ok((b, n as u32));
            }
        }
        Err(Ext4Error::NoSpace("test: full"))
    }
    fn free_blocks(&mut self, start: u64, count: u64) -> Result<()> {
        for b in start..start + count {
            if self.lenient && !self.used[b as usize] {
                return Err(Ext4Error::InvalidArgument("test: double free".into()));
            }
            assert!(self.used[b as usize], "double free of block {b}");
            self.used[b as usize] = false;
        }
        self.frees += count;
        Ok(())
    }
    fn csum_seed(&self) -> Option<u32> {
        self.seed
    }
}

/// Expand a mapping into per-block `(lblk, pblk, uninit)` triples.
pub fn expand(ext: &[mapping::Extent]) -> Vec<(u64, u64, bool)> {
    let mut v = Vec::new();
    for e in ext {
        for i in 0..e.len {
            v.push((e.lblk + i, e.pblk + i, e.uninit));
        }
    }
    v
}

/// Sum of data blocks in an extent list.
pub fn data_blocks(ext: &[mapping::Extent]) -> u64 {
    ext.iter().map(|e| e.len).sum()
}

/// Check that the fake's used blocks are exactly the file's data + metadata blocks, and that
/// `blocks_delta` agrees.
pub fn check_accounting(ctx: &mut MemCtx, fm: &mut FileMap<'_>) {
    let ext = mapping::extents(ctx, fm).unwrap();
    let meta = mapping::metadata_blocks(ctx, fm).unwrap();
    let mut all: Vec<u64> = expand(&ext).into_iter().map(|(_, p, _)| p).collect();
    all.extend(&meta);
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a block is referenced twice");
    assert_eq!(
        all.len() as u64,
        ctx.used_count(),
        "leaked or unreferenced blocks"
    );
    for b in &all {
        assert!(ctx.used[*b as usize], "block {b} referenced but free");
    }
    assert_eq!(fm.blocks_delta, ctx.used_count() as i64, "blocks_delta");
}
