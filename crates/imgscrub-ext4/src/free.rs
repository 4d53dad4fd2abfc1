//! `free_ranges()`: every free block range for zeroing. Owner: core.
//!
//! The block bitmaps are the truth. A BLOCK_UNINIT group has no bitmap on disk: everything in
//! it is free except its own metadata (superblock backup, descriptor copies, and whatever
//! bitmaps / inode tables flex_bg placed there), which is exactly the bitmap
//! [`Groups::read_block_bitmap`] synthesizes for it.

use crate::Result;
use crate::alloc::{Groups, ReadBlock};
use crate::superblock::Superblock;
use crate::types::FreeRange;

/// Every free block run of the filesystem in bytes, sorted and coalesced across groups.
pub fn free_ranges(
    sb: &Superblock,
    groups: &Groups,
    read: &mut ReadBlock<'_>,
) -> Result<Vec<FreeRange>> {
    let bs = u64::from(sb.block_size);
    let mut out: Vec<FreeRange> = Vec::new();
    for g in 0..groups.len() {
        // Skip reading groups the descriptor says are full.
        if groups.desc(g)?.free_blocks() == 0 {
            continue;
        }
        let bm = groups.read_block_bitmap(sb, g, read)?;
        let gstart = sb.group_first_block(g);
        for (s, n) in bm.free_runs() {
            let offset = (gstart + u64::from(s)) * bs;
            let len = u64::from(n) * bs;
            match out.last_mut() {
                Some(last) if last.offset + last.len == offset => last.len += len,
                _ => out.push(FreeRange { offset, len }),
            }
        }
    }
    Ok(out)
}
