//! Short-form btrees: the per-AG btrees whose pointers are AG block numbers (free space by
//! block and by size, inodes, free inodes). Every block is checked — magic, level, record
//! count, and on v5 the CRC, the disk address, the UUID and the owning AG — before a record
//! of it is used.

use crate::be::{bytes, u16_at, u32_at, u64_at};
use crate::csum;
use crate::error::{Result, corrupt};
use crate::reader::Reader;

const NULL_AGBLOCK: u32 = u32::MAX;

/// Which btree: its magic numbers and record/key sizes.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub magic_v4: &'static [u8; 4],
    pub magic_v5: &'static [u8; 4],
    pub rec_size: usize,
    pub key_size: usize,
}

/// The by-block free-space btree: records (start block, length).
pub const BNO: Spec = Spec {
    name: "by-block free-space btree",
    magic_v4: b"ABTB",
    magic_v5: b"AB3B",
    rec_size: 8,
    key_size: 8,
};
/// The by-size free-space btree: records (start block, length) sorted by length.
pub const CNT: Spec = Spec {
    name: "by-size free-space btree",
    magic_v4: b"ABTC",
    magic_v5: b"AB3C",
    rec_size: 8,
    key_size: 8,
};
/// The inode btree: one record per 64-inode chunk.
pub const INO: Spec = Spec {
    name: "inode btree",
    magic_v4: b"IABT",
    magic_v5: b"IAB3",
    rec_size: 16,
    key_size: 4,
};
/// The free-inode btree: the chunks that have free inodes.
pub const FINO: Spec = Spec {
    name: "free-inode btree",
    magic_v4: b"FIBT",
    magic_v5: b"FIB3",
    rec_size: 16,
    key_size: 4,
};

fn hdr_len(v5: bool) -> usize {
    if v5 { 56 } else { 16 }
}

/// Visit every leaf record of the btree rooted at `root` (with `levels` levels) in key order.
/// Returns the number of blocks the btree occupies.
pub fn walk(
    r: &Reader<'_>,
    ag: u32,
    spec: &Spec,
    root: u32,
    levels: u32,
    visit: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut blocks = 0u64;
    // Explicit stack of (block, expected level): depth-first, children pushed in reverse so
    // that records come out in key order.
    let mut stack = vec![(root, levels - 1)];
    let limit = u64::from(r.sb.ag_len(ag));
    while let Some((bno, level)) = stack.pop() {
        blocks += 1;
        if blocks > limit {
            return Err(corrupt(
                format!("{} of AG {ag}", spec.name),
                "more blocks than the AG has (a loop)",
            ));
        }
        let b = read_block(r, ag, spec, bno, level, bno == root)?;
        let v5 = r.sb.is_v5();
        let hdr = hdr_len(v5);
        let n = usize::from(u16_at(&b, 6));
        if level == 0 {
            for i in 0..n {
                visit(bytes(&b, hdr + i * spec.rec_size, spec.rec_size))?;
            }
        } else {
            let maxrecs = (b.len() - hdr) / (spec.key_size + 4);
            let ptrs = hdr + maxrecs * spec.key_size;
            for i in (0..n).rev() {
                let child = u32_at(&b, ptrs + 4 * i);
                if child == 0 || child == NULL_AGBLOCK || u64::from(child) >= limit {
                    return Err(corrupt(
                        format!("{} block {bno:#x} of AG {ag}", spec.name),
                        format!("pointer {i} to block {child:#x}"),
                    ));
                }
                stack.push((child, level - 1));
            }
        }
    }
    Ok(blocks)
}

/// Read and check one btree block. Only a root leaf may be empty (an AG with no free space,
/// or no inodes).
fn read_block(
    r: &Reader<'_>,
    ag: u32,
    spec: &Spec,
    bno: u32,
    level: u32,
    root: bool,
) -> Result<Vec<u8>> {
    let name = || format!("{} block {bno:#x} of AG {ag}", spec.name);
    let b = r.agb(ag, bno, 1, &name)?;
    let v5 = r.sb.is_v5();
    let magic = if v5 { spec.magic_v5 } else { spec.magic_v4 };
    if bytes(&b, 0, 4) != magic {
        return Err(corrupt(name(), "bad magic number"));
    }
    if v5 {
        csum::verify(&b, 52, name)?;
        if u64_at(&b, 16) != r.agb_daddr(ag, bno) {
            return Err(corrupt(name(), "block number in the header is wrong"));
        }
        if bytes(&b, 32, 16) != r.sb.meta_uuid() {
            return Err(corrupt(name(), "UUID does not match the superblock"));
        }
        if u32_at(&b, 48) != ag {
            return Err(corrupt(name(), format!("owner AG {}", u32_at(&b, 48))));
        }
    }
    if u32::from(u16_at(&b, 4)) != level {
        return Err(corrupt(
            name(),
            format!("level {} where {level} was expected", u16_at(&b, 4)),
        ));
    }
    let hdr = hdr_len(v5);
    let n = usize::from(u16_at(&b, 6));
    let per = if level == 0 {
        spec.rec_size
    } else {
        spec.key_size + 4
    };
    let maxrecs = (b.len() - hdr) / per;
    if (n == 0 && !(root && level == 0)) || n > maxrecs {
        return Err(corrupt(name(), format!("{n} records (at most {maxrecs})")));
    }
    Ok(b)
}

/// One inode btree record: a chunk of 64 inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeChunk {
    /// First AG inode number of the chunk.
    pub startino: u32,
    /// Sparse chunks: bit i set = inodes 4i..4i+3 are not allocated (a hole).
    pub holemask: u16,
    /// Inodes allocated in the chunk (64 for a full chunk).
    pub count: u8,
    pub freecount: u32,
    /// Bit i set = inode startino+i is free.
    pub free: u64,
}

impl InodeChunk {
    pub fn parse(rec: &[u8], sparse: bool) -> InodeChunk {
        let startino = u32_at(rec, 0);
        let free = u64_at(rec, 8);
        if sparse {
            InodeChunk {
                startino,
                holemask: u16_at(rec, 4),
                count: crate::be::u8_at(rec, 6),
                freecount: u32::from(crate::be::u8_at(rec, 7)),
                free,
            }
        } else {
            InodeChunk {
                startino,
                holemask: 0,
                count: 64,
                freecount: u32_at(rec, 4),
                free,
            }
        }
    }

    /// Is inode `startino + i` present (not in a sparse hole)?
    pub fn present(&self, i: u32) -> bool {
        i < 64 && self.holemask & (1 << (i / 4)) == 0
    }
}
