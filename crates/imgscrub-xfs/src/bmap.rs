//! File block maps: the extent list of a data or attribute fork, stored inline in the inode
//! (extents format) or in a block-map btree (bmbt) of any depth whose root lives in the fork.
//!
//! An extent record is 128 bits: unwritten flag (1), file offset (54), disk block (52),
//! length (21), all in filesystem blocks.

use crate::be::{bytes, u16_at, u64_at};
use crate::csum;
use crate::error::{Result, corrupt};
use crate::inode::{Format, Inode};
use crate::reader::Reader;

/// One mapping of file blocks to disk blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First file block.
    pub offset: u64,
    /// First filesystem block.
    pub block: u64,
    pub len: u64,
    /// Allocated but unwritten (reads as zeros).
    pub unwritten: bool,
}

impl Extent {
    pub fn parse(rec: &[u8]) -> Extent {
        let l0 = u64_at(rec, 0);
        let l1 = u64_at(rec, 8);
        Extent {
            unwritten: l0 >> 63 != 0,
            offset: (l0 & ((1u64 << 63) - 1)) >> 9,
            block: ((l0 & 0x1ff) << 43) | (l1 >> 21),
            len: l1 & ((1u64 << 21) - 1),
        }
    }

    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Which fork of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Data,
    Attr,
}

const BMAP_MAGIC_V4: &[u8; 4] = b"BMAP";
const BMAP_MAGIC_V5: &[u8; 4] = b"BMA3";
const NULL_FSBLOCK: u64 = u64::MAX;

/// The extents of `fork`, sorted by file offset and checked: non-empty, non-overlapping,
/// inside the filesystem, as many as the inode says.
pub fn extents(r: &Reader<'_>, ino: &Inode, fork: Fork) -> Result<Vec<Extent>> {
    extents_and_btree_blocks(r, ino, fork).map(|(e, _)| e)
}

/// [`extents`], and the filesystem blocks of the fork's block-map btree (empty unless the
/// fork is in btree form): the blocks a rewrite of the fork frees.
pub fn extents_and_btree_blocks(
    r: &Reader<'_>,
    ino: &Inode,
    fork: Fork,
) -> Result<(Vec<Extent>, Vec<u64>)> {
    let mut btree_blocks = Vec::new();
    let (fmt, data, count) = match fork {
        Fork::Data => (Some(ino.format), ino.data_fork(), ino.nextents),
        Fork::Attr => (ino.aformat, ino.attr_fork(), u64::from(ino.anextents)),
    };
    let fname = match fork {
        Fork::Data => "data",
        Fork::Attr => "attribute",
    };
    let name = || format!("{fname} fork of inode {}", ino.ino);
    let mut out = Vec::new();
    match fmt {
        Some(Format::Extents) => {
            let n = usize::try_from(count).unwrap_or(usize::MAX);
            if n.saturating_mul(16) > data.len() {
                return Err(corrupt(
                    name(),
                    format!("{count} extents do not fit in the inode"),
                ));
            }
            for i in 0..n {
                out.push(Extent::parse(bytes(data, i * 16, 16)));
            }
        }
        Some(Format::Btree) => {
            let level = u16_at(data, 0);
            let numrecs = usize::from(u16_at(data, 2));
            let maxrecs = data.len().saturating_sub(4) / 16;
            if level == 0 || level > 9 || numrecs == 0 || numrecs > maxrecs {
                return Err(corrupt(
                    name(),
                    format!("btree root: level {level}, {numrecs} records"),
                ));
            }
            let ptrs = 4 + maxrecs * 8;
            let mut stack: Vec<(u64, u16)> = (0..numrecs)
                .rev()
                .map(|i| (u64_at(data, ptrs + i * 8), level - 1))
                .collect();
            let mut visited = 0u64;
            while let Some((fsb, lvl)) = stack.pop() {
                visited += 1;
                if visited > ino.nblocks {
                    return Err(corrupt(name(), "the btree loops"));
                }
                let b = read_bmbt_block(r, ino.ino, fsb, lvl, &name)?;
                btree_blocks.push(fsb);
                let hdr = if r.sb.is_v5() { 72 } else { 24 };
                let n = usize::from(u16_at(&b, 6));
                if lvl == 0 {
                    for i in 0..n {
                        out.push(Extent::parse(bytes(&b, hdr + i * 16, 16)));
                    }
                    if out.len() as u64 > count {
                        return Err(corrupt(
                            name(),
                            format!("more extents in the btree than the {count} the inode says"),
                        ));
                    }
                } else {
                    let maxrecs = (b.len() - hdr) / 16;
                    let p = hdr + maxrecs * 8;
                    for i in (0..n).rev() {
                        stack.push((u64_at(&b, p + i * 8), lvl - 1));
                    }
                }
            }
        }
        Some(Format::Local) | Some(Format::Dev) | None => return Ok((Vec::new(), Vec::new())),
    }
    if out.len() as u64 != count {
        return Err(corrupt(
            name(),
            format!("{} extents found, the inode says {count}", out.len()),
        ));
    }
    let mut prev_end = 0u64;
    for (i, e) in out.iter().enumerate() {
        if e.len == 0 || e.offset < prev_end || !r.sb.fsb_valid(e.block, e.len) {
            return Err(corrupt(
                name(),
                format!(
                    "extent {i}: file block {}, disk block {:#x}, {} blocks",
                    e.offset, e.block, e.len
                ),
            ));
        }
        prev_end = e.end();
    }
    Ok((out, btree_blocks))
}

fn read_bmbt_block(
    r: &Reader<'_>,
    ino: u64,
    fsb: u64,
    level: u16,
    fork: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let name = || format!("bmbt block {fsb:#x} of the {}", fork());
    if fsb == NULL_FSBLOCK {
        return Err(corrupt(name(), "null pointer"));
    }
    let b = r.fsb(fsb, 1, &name)?;
    let v5 = r.sb.is_v5();
    if bytes(&b, 0, 4) != if v5 { BMAP_MAGIC_V5 } else { BMAP_MAGIC_V4 } {
        return Err(corrupt(name(), "bad magic number"));
    }
    if v5 {
        csum::verify(&b, 64, name)?;
        if u64_at(&b, 24) != r.fsb_daddr(fsb) {
            return Err(corrupt(name(), "block number in the header is wrong"));
        }
        if bytes(&b, 40, 16) != r.sb.meta_uuid() {
            return Err(corrupt(name(), "UUID does not match the superblock"));
        }
        if u64_at(&b, 56) != ino {
            return Err(corrupt(name(), format!("owner {}", u64_at(&b, 56))));
        }
    }
    if u16_at(&b, 4) != level {
        return Err(corrupt(
            name(),
            format!("level {} where {level} was expected", u16_at(&b, 4)),
        ));
    }
    let hdr = if v5 { 72 } else { 24 };
    let n = usize::from(u16_at(&b, 6));
    if n == 0 || n > (b.len() - hdr) / 16 {
        return Err(corrupt(name(), format!("{n} records")));
    }
    Ok(b)
}

/// Find the extent holding file block `fb` (binary search), or `None` for a hole.
pub fn lookup(exts: &[Extent], fb: u64) -> Option<&Extent> {
    let i = exts.partition_point(|e| e.end() <= fb);
    exts.get(i).filter(|e| e.offset <= fb)
}

/// Read `len` bytes of fork data starting at file block `fb` of a multi-block structure
/// (directory or attribute block) into one buffer; holes are an error.
pub fn read_mapped(
    r: &Reader<'_>,
    exts: &[Extent],
    fb: u64,
    nblocks: u32,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let bs = r.sb.blocksize as usize;
    let mut out = Vec::with_capacity(nblocks as usize * bs);
    let mut cur = fb;
    let end = fb + u64::from(nblocks);
    while cur < end {
        let Some(e) = lookup(exts, cur) else {
            return Err(corrupt(what(), format!("file block {cur} is not mapped")));
        };
        let n = (e.end().min(end) - cur) as u32;
        let b = r.fsb(e.block + (cur - e.offset), n, what)?;
        out.extend_from_slice(&b);
        cur += u64::from(n);
    }
    Ok(out)
}
