//! Bulk loading of short-form (per-AG) v5 btrees from a sorted record list, the way
//! `xfs_repair` phase 5 rebuilds them: the leaves are filled evenly from the left, every
//! level above holds the first key of each child, siblings are linked, and every block gets
//! the v5 header (magic, level, record count, siblings, its own daddr, LSN, metadata UUID,
//! owning AG, CRC-32C).
//!
//! Record and key formats are the caller's: with [`build`] a key is the first `key_size`
//! bytes of a record (true for the by-block and by-size free-space btrees and the inode
//! btrees, whose keys are a prefix of their records); [`build_keys`] takes a function giving
//! a record's low and high keys, for overlapping btrees (the reverse-mapping btree), whose
//! node entries hold both (the high key of a block is the largest high key under it).
//!
//! Even filling keeps every non-root block at or above half of its capacity (`minrecs`), as
//! the kernel's and `xfs_repair`'s verifiers require.

use crate::csum;

/// Size of the v5 short-form btree block header.
pub const HDR_V5: usize = 56;
/// Offset of the CRC in a v5 short-form btree block.
pub const CRC_OFF: usize = 52;
/// The null AG block pointer (no sibling).
pub const NULL_AGBLOCK: u32 = u32::MAX;

/// Shape of one btree: block size and record/key sizes (pointers are 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub block_size: usize,
    pub rec_size: usize,
    pub key_size: usize,
    /// Node entries hold a low and a high key (the rmapbt).
    pub overlapping: bool,
}

impl Shape {
    /// Records a leaf block holds.
    pub fn leaf_max(&self) -> usize {
        (self.block_size - HDR_V5) / self.rec_size
    }

    /// Key/pointer pairs a node block holds.
    pub fn node_max(&self) -> usize {
        (self.block_size - HDR_V5) / (self.node_key_size() + 4)
    }

    /// Bytes of keys per node entry.
    fn node_key_size(&self) -> usize {
        self.key_size * (1 + usize::from(self.overlapping))
    }

    /// Blocks per level, leaves first, for `nrecs` records. An empty btree is one empty leaf
    /// (the root). The length of the result is the btree height.
    pub fn level_blocks(&self, nrecs: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut n = nrecs.div_ceil(self.leaf_max()).max(1);
        out.push(n);
        while n > 1 {
            n = n.div_ceil(self.node_max());
            out.push(n);
        }
        out
    }

    /// Total blocks of a btree of `nrecs` records.
    pub fn total_blocks(&self, nrecs: usize) -> usize {
        self.level_blocks(nrecs).iter().sum()
    }

    /// Height of a btree of `nrecs` records.
    pub fn levels(&self, nrecs: usize) -> u32 {
        self.level_blocks(nrecs).len() as u32
    }
}

/// What every block of the btree is stamped with.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub magic: &'a [u8; 4],
    pub agno: u32,
    pub uuid: [u8; 16],
    pub lsn: u64,
}

/// `record -> (low key, high key)`.
pub type KeyFn<'a> = dyn Fn(&[u8]) -> (Vec<u8>, Vec<u8>) + 'a;

/// A built btree: its blocks (AG block number, contents), root and height.
#[derive(Debug, Clone)]
pub struct Built {
    pub blocks: Vec<(u32, Vec<u8>)>,
    pub root: u32,
    pub levels: u32,
}

/// Split `n` items into `k` runs as evenly as possible (the first runs take the extra ones).
fn split_even(n: usize, k: usize) -> Vec<usize> {
    let (q, r) = (n / k, n % k);
    (0..k).map(|i| q + usize::from(i < r)).collect()
}

/// Build the btree of `recs` (sorted, `shape.rec_size` bytes each, concatenated) into the
/// AG blocks `agbnos`, which must number exactly `shape.total_blocks(n)`: leaves take the
/// first ones, the root the last. `daddr(agbno)` gives the 512-byte disk address stamped in
/// each block. Returns `None` when `recs` or `agbnos` do not fit the shape.
pub fn build(
    shape: &Shape,
    hdr: &Header<'_>,
    recs: &[u8],
    agbnos: &[u32],
    daddr: &dyn Fn(u32) -> u64,
) -> Option<Built> {
    let ks = shape.key_size;
    let prefix = move |r: &[u8]| {
        let k = r.get(..ks).unwrap_or(&[]).to_vec();
        (k.clone(), k)
    };
    build_keys(shape, hdr, recs, agbnos, daddr, &prefix)
}

/// [`build`] with `keys(record) = (low key, high key)`, each `shape.key_size` bytes and
/// ordered bytewise (big-endian fields). The high keys are written only when
/// `shape.overlapping`.
pub fn build_keys(
    shape: &Shape,
    hdr: &Header<'_>,
    recs: &[u8],
    agbnos: &[u32],
    daddr: &dyn Fn(u32) -> u64,
    keys: &KeyFn<'_>,
) -> Option<Built> {
    if shape.rec_size == 0 || !recs.len().is_multiple_of(shape.rec_size) {
        return None;
    }
    let nrecs = recs.len() / shape.rec_size;
    let levels = shape.level_blocks(nrecs);
    if agbnos.len() != levels.iter().sum::<usize>() {
        return None;
    }
    let mut out = Vec::with_capacity(agbnos.len());
    let mut next = 0usize;
    // (low key, high key, agbno) of the blocks of the level below.
    let mut below: Vec<(Vec<u8>, Vec<u8>, u32)> = Vec::new();
    let ks = shape.key_size;
    for (level, &nblocks) in levels.iter().enumerate() {
        let mine = agbnos.get(next..next + nblocks)?;
        next += nblocks;
        let mut this: Vec<(Vec<u8>, Vec<u8>, u32)> = Vec::with_capacity(nblocks);
        if level == 0 {
            let counts = split_even(nrecs, nblocks);
            let mut at = 0usize;
            for (i, (&cnt, &bno)) in counts.iter().zip(mine).enumerate() {
                let mut b = vec![0u8; shape.block_size];
                let body = recs.get(at * shape.rec_size..(at + cnt) * shape.rec_size)?;
                b.get_mut(HDR_V5..HDR_V5 + body.len())?
                    .copy_from_slice(body);
                let mut low = Vec::new();
                let mut high = Vec::new();
                for (j, r) in body.chunks_exact(shape.rec_size).enumerate() {
                    let (l, h) = keys(r);
                    if l.len() != ks || h.len() != ks {
                        return None;
                    }
                    if j == 0 {
                        low = l;
                    }
                    if h > high {
                        high = h;
                    }
                }
                header(&mut b, hdr, 0, cnt, mine, i, daddr(bno));
                this.push((low, high, bno));
                out.push((bno, b));
                at += cnt;
            }
        } else {
            let counts = split_even(below.len(), nblocks);
            let nmax = shape.node_max();
            let nks = shape.node_key_size();
            let ptr_base = HDR_V5 + nmax * nks;
            let mut at = 0usize;
            for (i, (&cnt, &bno)) in counts.iter().zip(mine).enumerate() {
                let mut b = vec![0u8; shape.block_size];
                let kids = below.get(at..at + cnt)?;
                let mut high = Vec::new();
                for (j, (low, hi, child)) in kids.iter().enumerate() {
                    let ko = HDR_V5 + j * nks;
                    b.get_mut(ko..ko + ks)?.copy_from_slice(low);
                    if shape.overlapping {
                        b.get_mut(ko + ks..ko + 2 * ks)?.copy_from_slice(hi);
                    }
                    if *hi > high {
                        high = hi.clone();
                    }
                    let po = ptr_base + 4 * j;
                    b.get_mut(po..po + 4)?.copy_from_slice(&child.to_be_bytes());
                }
                let low = kids.first().map(|k| k.0.clone()).unwrap_or_default();
                header(&mut b, hdr, level as u16, cnt, mine, i, daddr(bno));
                this.push((low, high, bno));
                out.push((bno, b));
                at += cnt;
            }
        }
        below = this;
    }
    let root = below.first()?.2;
    Some(Built {
        blocks: out,
        root,
        levels: levels.len() as u32,
    })
}

fn header(
    b: &mut [u8],
    hdr: &Header<'_>,
    level: u16,
    numrecs: usize,
    siblings: &[u32],
    i: usize,
    daddr: u64,
) {
    let left = if i == 0 {
        NULL_AGBLOCK
    } else {
        siblings.get(i - 1).copied().unwrap_or(NULL_AGBLOCK)
    };
    let right = siblings.get(i + 1).copied().unwrap_or(NULL_AGBLOCK);
    put(b, 0, hdr.magic);
    put(b, 4, &level.to_be_bytes());
    put(b, 6, &(numrecs as u16).to_be_bytes());
    put(b, 8, &left.to_be_bytes());
    put(b, 12, &right.to_be_bytes());
    put(b, 16, &daddr.to_be_bytes());
    put(b, 24, &hdr.lsn.to_be_bytes());
    put(b, 32, &hdr.uuid);
    put(b, 48, &hdr.agno.to_be_bytes());
    let c = csum::compute(b, CRC_OFF);
    put(b, CRC_OFF, &c.to_le_bytes());
}

/// Copy `v` into `b` at `off` (ignored when out of range; callers size their buffers).
pub(crate) fn put(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(off..off + v.len()) {
        d.copy_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOC: (usize, usize) = (8, 8);
    const INO: (usize, usize) = (16, 4);

    fn shape(bs: usize, (rec, key): (usize, usize)) -> Shape {
        Shape {
            block_size: bs,
            rec_size: rec,
            key_size: key,
            overlapping: false,
        }
    }

    #[test]
    fn maxrecs_per_block_size() {
        // (blocksize - 56) / 8 records, (blocksize - 56) / 12 key+ptr pairs: the values
        // xfs_db reports as the free-space btree limits (m_alloc_mxr) for each block size.
        for (bs, leaf, node) in [
            (1024, 121, 80),
            (2048, 249, 166),
            (4096, 505, 336),
            (8192, 1017, 678),
            (16384, 2041, 1360),
            (32768, 4089, 2726),
            (65536, 8185, 5456),
        ] {
            let s = shape(bs, ALLOC);
            assert_eq!((s.leaf_max(), s.node_max()), (leaf, node), "{bs}");
        }
        // inode btrees: 16-byte records, 4-byte keys
        let s = shape(4096, INO);
        assert_eq!((s.leaf_max(), s.node_max()), (252, 505));
        let s = shape(1024, INO);
        assert_eq!((s.leaf_max(), s.node_max()), (60, 121));
    }

    #[test]
    fn level_counts() {
        let s = shape(1024, ALLOC);
        assert_eq!(s.level_blocks(0), vec![1]);
        assert_eq!(s.level_blocks(1), vec![1]);
        assert_eq!(s.level_blocks(121), vec![1]);
        assert_eq!(s.level_blocks(122), vec![2, 1]);
        assert_eq!(s.level_blocks(121 * 80), vec![80, 1]);
        assert_eq!(s.level_blocks(121 * 80 + 1), vec![81, 2, 1]);
        assert_eq!(s.levels(121 * 80 * 80 + 1), 4);
        assert_eq!(s.total_blocks(122), 3);
    }

    fn recs(n: u32) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let mut r = (i * 3).to_be_bytes().to_vec();
                r.extend_from_slice(&1u32.to_be_bytes());
                r
            })
            .collect()
    }

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_be_bytes([b[o], b[o + 1]])
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn builds_three_levels_evenly_with_valid_blocks() {
        let s = shape(1024, ALLOC);
        let n = 121 * 80 + 1; // 81 leaves, 2 nodes, 1 root
        let r = recs(n);
        let total = s.total_blocks(n as usize);
        let bnos: Vec<u32> = (100..100 + total as u32).collect();
        let hdr = Header {
            magic: b"AB3B",
            agno: 3,
            uuid: [7; 16],
            lsn: 0x1_0000_0002,
        };
        let b = build(&s, &hdr, &r, &bnos, &|x| u64::from(x) * 2).unwrap();
        assert_eq!(b.levels, 3);
        assert_eq!(b.root, *bnos.last().unwrap());
        let mut seen = 0usize;
        for (bno, blk) in &b.blocks {
            assert_eq!(&blk[..4], b"AB3B");
            assert!(csum::verify(blk, CRC_OFF, String::new).is_ok());
            assert_eq!(
                u64::from_be_bytes(blk[16..24].try_into().unwrap()),
                u64::from(*bno) * 2
            );
            assert_eq!(u32_at(blk, 48), 3);
            let level = u16_at(blk, 4);
            let nr = usize::from(u16_at(blk, 6));
            let max = if level == 0 {
                s.leaf_max()
            } else {
                s.node_max()
            };
            if *bno != b.root {
                assert!(nr >= max / 2 && nr <= max, "block {bno}: {nr} of {max}");
            }
            if level == 0 {
                // leaves in order, keys continuous
                for i in 0..nr {
                    assert_eq!(u32_at(blk, HDR_V5 + 8 * i), (seen as u32) * 3);
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, n as usize);
        // the root's two children are the two level-1 nodes, keyed by their first records
        let root = &b.blocks.last().unwrap().1;
        assert_eq!(u16_at(root, 6), 2);
        let ptrs = HDR_V5 + s.node_max() * 8;
        let c0 = u32_at(root, ptrs);
        let c1 = u32_at(root, ptrs + 4);
        assert_eq!((c0, c1), (bnos[81], bnos[82]));
        assert_eq!(u32_at(root, HDR_V5), 0);
        // the second node starts at leaf 41 (81 leaves split 41 + 40)
        assert_eq!(u32_at(root, HDR_V5 + 8), 3 * first_rec_of_leaf(41, n));
        // sibling links of the leaves
        let l0 = &b.blocks[0].1;
        assert_eq!(u32_at(l0, 8), NULL_AGBLOCK);
        assert_eq!(u32_at(l0, 12), bnos[1]);
        let l80 = &b.blocks[80].1;
        assert_eq!(u32_at(l80, 12), NULL_AGBLOCK);
    }

    fn first_rec_of_leaf(leaf: usize, n: u32) -> u32 {
        split_even(n as usize, 81).iter().take(leaf).sum::<usize>() as u32
    }

    #[test]
    fn empty_tree_is_one_empty_leaf() {
        let s = shape(4096, INO);
        let hdr = Header {
            magic: b"FIB3",
            agno: 0,
            uuid: [0; 16],
            lsn: 0,
        };
        let b = build(&s, &hdr, &[], &[9], &|x| u64::from(x)).unwrap();
        assert_eq!((b.root, b.levels, b.blocks.len()), (9, 1, 1));
        assert_eq!(u16_at(&b.blocks[0].1, 6), 0);
        assert!(build(&s, &hdr, &[], &[9, 10], &|x| u64::from(x)).is_none());
    }

    #[test]
    fn overlapping_nodes_carry_low_and_high_keys() {
        // rmapbt: 24-byte records, 20-byte keys, node entries low + high + pointer
        let s = Shape {
            block_size: 1024,
            rec_size: 24,
            key_size: 20,
            overlapping: true,
        };
        assert_eq!((s.leaf_max(), s.node_max()), (40, 22));
        let s4 = Shape {
            block_size: 4096,
            ..s
        };
        assert_eq!((s4.leaf_max(), s4.node_max()), (168, 91));
        let n = 100u32; // 3 leaves (34, 33, 33) under one root
        let mut recs = Vec::new();
        for i in 0..n {
            recs.extend_from_slice(&(i * 10).to_be_bytes());
            recs.extend_from_slice(&5u32.to_be_bytes());
            recs.extend_from_slice(&[0u8; 16]);
        }
        let keys = |r: &[u8]| {
            let st = u32_at(r, 0);
            let len = u32_at(r, 4);
            let mut lo = st.to_be_bytes().to_vec();
            lo.resize(20, 0);
            let mut hi = (st + len - 1).to_be_bytes().to_vec();
            hi.resize(20, 0);
            (lo, hi)
        };
        let hdr = Header {
            magic: b"RMB3",
            agno: 1,
            uuid: [1; 16],
            lsn: 0,
        };
        let b = build_keys(&s, &hdr, &recs, &[10, 11, 12, 13], &|x| u64::from(x), &keys).unwrap();
        assert_eq!((b.root, b.levels), (13, 2));
        let root = &b.blocks[3].1;
        assert_eq!(u16_at(root, 6), 3);
        // entry j: low at 56 + 40j, high at 56 + 40j + 20; pointers after 22 entries
        let lows: Vec<u32> = (0..3).map(|j| u32_at(root, HDR_V5 + 40 * j)).collect();
        let highs: Vec<u32> = (0..3).map(|j| u32_at(root, HDR_V5 + 40 * j + 20)).collect();
        let ptrs: Vec<u32> = (0..3)
            .map(|j| u32_at(root, HDR_V5 + 22 * 40 + 4 * j))
            .collect();
        assert_eq!(lows, vec![0, 340, 670]);
        assert_eq!(highs, vec![334, 664, 994]);
        assert_eq!(ptrs, vec![10, 11, 12]);
    }
}
