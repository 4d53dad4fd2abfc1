//! Writing block maps: extent records, and a block-map btree (bmbt) built from scratch for a
//! fork whose extents do not fit in the inode. The btree is bulk-loaded: records spread evenly
//! over the leaves (so every block below the root holds at least half its maximum, as
//! `xfs_repair` requires of blocks that are not children of the root), levels added until the
//! top fits in the root that lives in the inode fork.

use crate::bmap::Extent;
use crate::error::{Result, XfsError};
use crate::meta::Stamp;
use crate::superblock::Superblock;

/// Longest extent a record can hold (21 bits).
pub const MAX_EXTENT_LEN: u64 = (1 << 21) - 1;
const NULL_FSBLOCK: u64 = u64::MAX;

/// The 16-byte on-disk record of an extent.
pub fn encode_extent(e: &Extent) -> [u8; 16] {
    let l0 = (u64::from(e.unwritten) << 63) | ((e.offset & ((1 << 54) - 1)) << 9) | (e.block >> 43);
    let l1 = ((e.block & ((1 << 43) - 1)) << 21) | (e.len & MAX_EXTENT_LEN);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&l0.to_be_bytes());
    out[8..].copy_from_slice(&l1.to_be_bytes());
    out
}

/// Extents as the inode's extent list.
pub fn encode_extents(exts: &[Extent]) -> Vec<u8> {
    exts.iter().flat_map(encode_extent).collect()
}

/// Merge adjacent extents (same state, contiguous on disk and in the file) and split ones
/// longer than a record can hold.
pub fn normalize(exts: &mut Vec<Extent>) {
    exts.sort_by_key(|e| e.offset);
    let mut out: Vec<Extent> = Vec::with_capacity(exts.len());
    for e in exts.drain(..) {
        if e.len == 0 {
            continue;
        }
        match out.last_mut() {
            Some(p)
                if p.end() == e.offset
                    && p.block + p.len == e.block
                    && p.unwritten == e.unwritten
                    && p.len + e.len <= MAX_EXTENT_LEN =>
            {
                p.len += e.len;
            }
            _ => {
                let mut e = e;
                while e.len > MAX_EXTENT_LEN {
                    out.push(Extent {
                        len: MAX_EXTENT_LEN,
                        ..e
                    });
                    e.offset += MAX_EXTENT_LEN;
                    e.block += MAX_EXTENT_LEN;
                    e.len -= MAX_EXTENT_LEN;
                }
                out.push(e);
            }
        }
    }
    *exts = out;
}

fn hdr_len(v5: bool) -> usize {
    if v5 { 72 } else { 24 }
}

/// How many blocks a btree for `n` extents needs below a root of `root_max` entries, and
/// the number of entries per level (leaves first).
pub fn shape(sb: &Superblock, n: usize, root_max: usize) -> Vec<usize> {
    let per_block = (sb.blocksize as usize - hdr_len(sb.is_v5())) / 16;
    let mut levels = Vec::new();
    let mut count = n;
    loop {
        let blocks = count.div_ceil(per_block.max(1)).max(1);
        levels.push(blocks);
        if blocks <= root_max {
            break;
        }
        count = blocks;
    }
    levels
}

/// A fork in btree form: the root for the inode and the blocks to write.
pub struct BtreeImage {
    /// The root (`bmdr`) laid out for a fork of `fork_size` bytes.
    pub root: Vec<u8>,
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Build the bmbt of `exts` for inode `ino` in `blocks` (as many as [`shape`] says, summed),
/// with a root for a fork of `fork_size` bytes.
pub fn build_btree(
    sb: &Superblock,
    stamp: &Stamp,
    ino: u64,
    exts: &[Extent],
    fork_size: usize,
    blocks: &[u64],
) -> Result<BtreeImage> {
    let v5 = sb.is_v5();
    let hdr = hdr_len(v5);
    let bs = sb.blocksize as usize;
    let root_max = fork_size.saturating_sub(4) / 16;
    let levels = shape(sb, exts.len(), root_max);
    let need: usize = levels.iter().sum();
    if blocks.len() != need || root_max == 0 {
        return Err(XfsError::Invalid(format!(
            "bmbt of inode {ino}: {} blocks given, {need} needed",
            blocks.len()
        )));
    }
    let mut out = Vec::with_capacity(need);
    // Entries of the level being built: (first file offset, its block) of each block.
    let mut below: Vec<(u64, u64)> = Vec::new();
    let mut next_block = 0usize;
    for (level, &nblocks) in levels.iter().enumerate() {
        let items = if level == 0 { exts.len() } else { below.len() };
        let ids = &blocks[next_block..next_block + nblocks];
        next_block += nblocks;
        let mut this: Vec<(u64, u64)> = Vec::with_capacity(nblocks);
        let maxrecs = (bs - hdr) / 16;
        let mut start = 0usize;
        for (i, &fsb) in ids.iter().enumerate() {
            // Spread evenly: block i takes items [start, end).
            let end = items * (i + 1) / nblocks;
            let mut b = vec![0u8; bs];
            b[0..4].copy_from_slice(if v5 { b"BMA3" } else { b"BMAP" });
            b[4..6].copy_from_slice(&(level as u16).to_be_bytes());
            b[6..8].copy_from_slice(&((end - start) as u16).to_be_bytes());
            let left = if i == 0 { NULL_FSBLOCK } else { ids[i - 1] };
            let right = ids.get(i + 1).copied().unwrap_or(NULL_FSBLOCK);
            b[8..16].copy_from_slice(&left.to_be_bytes());
            b[16..24].copy_from_slice(&right.to_be_bytes());
            if level == 0 {
                for (k, e) in exts[start..end].iter().enumerate() {
                    b[hdr + k * 16..hdr + k * 16 + 16].copy_from_slice(&encode_extent(e));
                }
                this.push((exts[start].offset, fsb));
            } else {
                let ptrs = hdr + maxrecs * 8;
                for (k, &(off, ptr)) in below[start..end].iter().enumerate() {
                    b[hdr + k * 8..hdr + k * 8 + 8].copy_from_slice(&off.to_be_bytes());
                    b[ptrs + k * 8..ptrs + k * 8 + 8].copy_from_slice(&ptr.to_be_bytes());
                }
                this.push((below[start].0, fsb));
            }
            if v5 {
                let daddr = sb.fsb_to_byte(fsb) >> 9;
                b[24..32].copy_from_slice(&daddr.to_be_bytes());
                b[32..40].copy_from_slice(&stamp.lsn.to_be_bytes());
                b[40..56].copy_from_slice(&stamp.uuid);
                b[56..64].copy_from_slice(&ino.to_be_bytes());
                let crc = crate::csum::compute(&b, 64);
                b[64..68].copy_from_slice(&crc.to_le_bytes());
            }
            out.push((fsb, b));
            start = end;
        }
        below = this;
    }
    // The root in the inode.
    let mut root = vec![0u8; fork_size];
    root[0..2].copy_from_slice(&(levels.len() as u16).to_be_bytes());
    root[2..4].copy_from_slice(&(below.len() as u16).to_be_bytes());
    let ptrs = 4 + root_max * 8;
    for (k, &(off, ptr)) in below.iter().enumerate() {
        root[4 + k * 8..4 + k * 8 + 8].copy_from_slice(&off.to_be_bytes());
        root[ptrs + k * 8..ptrs + k * 8 + 8].copy_from_slice(&ptr.to_be_bytes());
    }
    Ok(BtreeImage { root, blocks: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_records_round_trip() {
        for e in [
            Extent {
                offset: 0,
                block: 0,
                len: 1,
                unwritten: false,
            },
            Extent {
                offset: (1 << 54) - 1,
                block: (1 << 52) - 1,
                len: MAX_EXTENT_LEN,
                unwritten: true,
            },
            Extent {
                offset: 12345,
                block: 0x0012_3456_789a,
                len: 77,
                unwritten: false,
            },
        ] {
            assert_eq!(Extent::parse(&encode_extent(&e)), e);
        }
    }

    #[test]
    fn normalize_merges_and_splits() {
        let mut v = vec![
            Extent {
                offset: 10,
                block: 110,
                len: 5,
                unwritten: false,
            },
            Extent {
                offset: 0,
                block: 100,
                len: 10,
                unwritten: false,
            },
            Extent {
                offset: 15,
                block: 115,
                len: 1,
                unwritten: true,
            },
        ];
        normalize(&mut v);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].len, 15);
        let mut big = vec![Extent {
            offset: 0,
            block: 0,
            len: MAX_EXTENT_LEN * 2 + 3,
            unwritten: false,
        }];
        normalize(&mut big);
        assert_eq!(big.len(), 3);
        assert_eq!(big[2].len, 3);
        assert_eq!(big[2].offset, MAX_EXTENT_LEN * 2);
    }
}
