//! Hashed (htree / dir_index) directories: name hashes, index blocks, lookup, insert with
//! leaf and index splits, delete. Owner: dirs.
//!
//! On-disk rules (kernel `Documentation/filesystems/ext4/directory.rst`, `fs/ext4/namei.c`):
//!
//! * Block 0 is the root (`dx_root`): a fake "." entry (rec_len 12), a fake ".." entry whose
//!   rec_len covers the rest of the block, then `dx_root_info` at offset 24 (reserved le32,
//!   hash_version, info_length = 8, indirect_levels, unused_flags), then at offset 32 the
//!   `dx_countlimit` (limit le16, count le16) overlaying the hash of entry 0, the block of
//!   entry 0, and `count - 1` more `dx_entry { hash le32, block le32 }`.
//! * Interior nodes (`dx_node`): a fake entry (inode 0, rec_len = block size, name_len 0),
//!   the countlimit at offset 8, then the entries.
//! * `limit` = room for entries up to the end of the block, minus an 8-byte `dx_tail`
//!   (reserved le32, checksum le32) with metadata_csum. The tail sits right after `limit`
//!   entries; its checksum is crc32c(per-inode seed, block[..count_offset + count * 8],
//!   then the tail's reserved field, then four zero bytes).
//! * Entries are sorted by hash; entry 0 implicitly has hash 0. Entry *i* covers hashes from
//!   its hash to the next entry's hash. Bit 0 of a hash is the *continuation* bit: set when
//!   a leaf split put names with the same hash on both sides, so that a lookup of that hash
//!   also searches the next leaf. Name hashes always have bit 0 clear.
//! * `indirect_levels` is 0 or 1 (0..=2 with `large_dir`). All leaves are at the same depth.
//! * Leaves are ordinary directory blocks (with their dirent tail under metadata_csum).

use crate::dir::{
    self, BlockCtx, DirBlocks, FT_DIR, RawEntry, Slot, entries_end, insert_into_block, parse_block,
    rd16, rd32, rec_len_for, remove_from_block, set_tail, wr16, wr32,
};
use crate::error::{Ext4Error, Result};

/// Hash versions (`dx_root_info.hash_version`, `s_def_hash_version`); the unsigned
/// variants are the effective versions when `s_flags` has EXT2_FLAGS_UNSIGNED_HASH.
pub const DX_HASH_LEGACY: u8 = 0;
/// half-MD4.
pub const DX_HASH_HALF_MD4: u8 = 1;
/// TEA.
pub const DX_HASH_TEA: u8 = 2;
/// Legacy, unsigned chars.
pub const DX_HASH_LEGACY_UNSIGNED: u8 = 3;
/// half-MD4, unsigned chars.
pub const DX_HASH_HALF_MD4_UNSIGNED: u8 = 4;
/// TEA, unsigned chars.
pub const DX_HASH_TEA_UNSIGNED: u8 = 5;

/// Size of the metadata_csum tail of an index block.
pub const DX_TAIL_SIZE: usize = 8;
/// Offset of the countlimit in the root.
pub const ROOT_COUNT_OFF: usize = 32;
/// Offset of the countlimit in an interior node.
pub const NODE_COUNT_OFF: usize = 8;

const DEFAULT_SEED: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

// ---------------------------------------------------------------------------------------
// Hashes (kernel fs/ext4/hash.c, e2fsprogs lib/ext2fs/dirhash.c)

fn tea_transform(buf: &mut [u32; 4], inp: &[u32; 8]) {
    let mut sum: u32 = 0;
    let (mut b0, mut b1) = (buf[0], buf[1]);
    let (a, b, c, d) = (inp[0], inp[1], inp[2], inp[3]);
    for _ in 0..16 {
        sum = sum.wrapping_add(0x9E37_79B9);
        b0 = b0.wrapping_add(
            (b1 << 4).wrapping_add(a) ^ b1.wrapping_add(sum) ^ (b1 >> 5).wrapping_add(b),
        );
        b1 = b1.wrapping_add(
            (b0 << 4).wrapping_add(c) ^ b0.wrapping_add(sum) ^ (b0 >> 5).wrapping_add(d),
        );
    }
    buf[0] = buf[0].wrapping_add(b0);
    buf[1] = buf[1].wrapping_add(b1);
}

fn half_md4_transform(buf: &mut [u32; 4], x: &[u32; 8]) {
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let (mut a, mut b, mut c, mut d) = (buf[0], buf[1], buf[2], buf[3]);
    macro_rules! round {
        ($f:expr, $a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $s:expr) => {
            $a = $a
                .wrapping_add($f($b, $c, $d))
                .wrapping_add($x)
                .rotate_left($s);
        };
    }
    round!(f, a, b, c, d, x[0], 3);
    round!(f, d, a, b, c, x[1], 7);
    round!(f, c, d, a, b, x[2], 11);
    round!(f, b, c, d, a, x[3], 19);
    round!(f, a, b, c, d, x[4], 3);
    round!(f, d, a, b, c, x[5], 7);
    round!(f, c, d, a, b, x[6], 11);
    round!(f, b, c, d, a, x[7], 19);

    round!(g, a, b, c, d, x[1].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[3].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[5].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[7].wrapping_add(K2), 13);
    round!(g, a, b, c, d, x[0].wrapping_add(K2), 3);
    round!(g, d, a, b, c, x[2].wrapping_add(K2), 5);
    round!(g, c, d, a, b, x[4].wrapping_add(K2), 9);
    round!(g, b, c, d, a, x[6].wrapping_add(K2), 13);

    round!(h, a, b, c, d, x[3].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[7].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[2].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[6].wrapping_add(K3), 15);
    round!(h, a, b, c, d, x[1].wrapping_add(K3), 3);
    round!(h, d, a, b, c, x[5].wrapping_add(K3), 9);
    round!(h, c, d, a, b, x[0].wrapping_add(K3), 11);
    round!(h, b, c, d, a, x[4].wrapping_add(K3), 15);

    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// A name byte as the hash sees it: sign-extended (signed char) or not.
fn ch(b: u8, unsigned: bool) -> u32 {
    if unsigned {
        b as u32
    } else {
        b as i8 as i32 as u32
    }
}

fn dx_hack_hash(name: &[u8], unsigned: bool) -> u32 {
    let (mut hash0, mut hash1): (u32, u32) = (0x12a3_fe2d, 0x37ab_e8f9);
    for &b in name {
        let mut hash = hash1.wrapping_add(hash0 ^ ch(b, unsigned).wrapping_mul(7_152_373));
        if hash & 0x8000_0000 != 0 {
            hash = hash.wrapping_sub(0x7fff_ffff);
        }
        hash1 = hash0;
        hash0 = hash;
    }
    hash0 << 1
}

/// `str2hashbuf`: pack up to `num * 4` bytes of `msg` into `num` words, padded.
fn str2hashbuf(msg: &[u8], num: usize, unsigned: bool) -> [u32; 8] {
    let mut out = [0u32; 8];
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut val = pad;
    let take = msg.len().min(num * 4);
    let mut k = 0usize;
    for (i, &b) in msg.iter().take(take).enumerate() {
        val = ch(b, unsigned).wrapping_add(val << 8);
        if i % 4 == 3 {
            if let Some(o) = out.get_mut(k) {
                *o = val;
            }
            k += 1;
            val = pad;
        }
    }
    if k < num {
        if let Some(o) = out.get_mut(k) {
            *o = val;
        }
        k += 1;
    }
    while k < num {
        if let Some(o) = out.get_mut(k) {
            *o = pad;
        }
        k += 1;
    }
    out
}

/// The directory hash of `name`: `(major, minor)`. `version` is the effective hash version
/// (0..=2 signed, 3..=5 unsigned). An all-zero `seed` means the default seed.
pub fn dx_hash(name: &[u8], version: u8, seed: &[u32; 4]) -> Result<(u32, u32)> {
    let mut buf = if seed.iter().any(|&s| s != 0) {
        *seed
    } else {
        DEFAULT_SEED
    };
    let (hash, minor) = match version {
        DX_HASH_LEGACY | DX_HASH_LEGACY_UNSIGNED => {
            (dx_hack_hash(name, version == DX_HASH_LEGACY_UNSIGNED), 0)
        }
        DX_HASH_HALF_MD4 | DX_HASH_HALF_MD4_UNSIGNED => {
            let unsigned = version == DX_HASH_HALF_MD4_UNSIGNED;
            for chunk_start in (0..name.len()).step_by(32) {
                let p = name.get(chunk_start..).unwrap_or(&[]);
                let inp = str2hashbuf(p, 8, unsigned);
                half_md4_transform(&mut buf, &inp);
            }
            (buf[1], buf[2])
        }
        DX_HASH_TEA | DX_HASH_TEA_UNSIGNED => {
            let unsigned = version == DX_HASH_TEA_UNSIGNED;
            for chunk_start in (0..name.len()).step_by(16) {
                let p = name.get(chunk_start..).unwrap_or(&[]);
                let inp = str2hashbuf(p, 4, unsigned);
                tea_transform(&mut buf, &inp);
            }
            (buf[0], buf[1])
        }
        v => {
            return Err(Ext4Error::Unsupported(format!(
                "directory hash version {v}"
            )));
        }
    };
    let mut hash = hash & !1;
    if hash == 0x7fff_ffff << 1 {
        hash = (0x7fff_ffff - 1) << 1;
    }
    Ok((hash, minor))
}

/// Effective hash version of a root's `hash_version` on this filesystem: +3 when the
/// superblock says names hash as unsigned chars.
pub fn effective_version(root_version: u8, unsigned: bool) -> u8 {
    if root_version <= DX_HASH_TEA && unsigned {
        root_version + 3
    } else {
        root_version
    }
}

// ---------------------------------------------------------------------------------------
// Index blocks

/// Maximum number of entries in the root (`dx_root_limit`).
pub fn root_limit(block_size: usize, csum: bool) -> usize {
    let tail = if csum { DX_TAIL_SIZE } else { 0 };
    block_size.saturating_sub(ROOT_COUNT_OFF + tail) / 8
}

/// Maximum number of entries in an interior node (`dx_node_limit`).
pub fn node_limit(block_size: usize, csum: bool) -> usize {
    let tail = if csum { DX_TAIL_SIZE } else { 0 };
    block_size.saturating_sub(NODE_COUNT_OFF + tail) / 8
}

/// Maximum htree depth counting the root (2, or 3 with large_dir).
pub fn max_levels(large_dir: bool) -> usize {
    if large_dir { 3 } else { 2 }
}

/// Checksum of an index block (`ext4_dx_csum`).
pub fn dx_csum(seed: u32, block: &[u8], count_off: usize, count: usize, limit: usize) -> u32 {
    let size = count_off.saturating_add(count.saturating_mul(8));
    let tail = count_off.saturating_add(limit.saturating_mul(8));
    let c = crate::csum::crc32c_raw(seed, block.get(..size).unwrap_or(&[]));
    let c = crate::csum::crc32c_raw(c, block.get(tail..tail + 4).unwrap_or(&[0; 4]));
    crate::csum::crc32c_raw(c, &[0; 4])
}

/// One index block (root or node) in memory.
#[derive(Debug, Clone)]
pub struct DxBlock {
    /// Logical block in the directory.
    pub lblk: u32,
    /// The block bytes.
    pub raw: Vec<u8>,
    /// Offset of the countlimit (32 root, 8 node).
    pub count_off: usize,
    /// Capacity in entries.
    pub limit: usize,
    /// `(hash, block)`; the hash of entry 0 is reported as 0.
    pub entries: Vec<(u32, u32)>,
}

impl DxBlock {
    /// Serialize the entries, count/limit and (with `seed`) the dx tail into `raw`.
    pub fn encode(&mut self, seed: Option<u32>) {
        let co = self.count_off;
        wr16(&mut self.raw, co, u16::try_from(self.limit).unwrap_or(0));
        wr16(
            &mut self.raw,
            co + 2,
            u16::try_from(self.entries.len()).unwrap_or(0),
        );
        for i in 0..self.limit {
            let off = co + 8 * i;
            match self.entries.get(i) {
                Some(&(h, b)) => {
                    if i > 0 {
                        wr32(&mut self.raw, off, h);
                    }
                    wr32(&mut self.raw, off + 4, b);
                }
                None => {
                    wr32(&mut self.raw, off, 0);
                    wr32(&mut self.raw, off + 4, 0);
                }
            }
        }
        if let Some(seed) = seed {
            let t = co + 8 * self.limit;
            wr32(&mut self.raw, t, 0);
            let c = dx_csum(seed, &self.raw, co, self.entries.len(), self.limit);
            wr32(&mut self.raw, t + 4, c);
        }
    }
}

/// Parsed root header.
#[derive(Debug, Clone, Copy)]
pub struct RootInfo {
    /// Stored hash version (0..=2).
    pub hash_version: u8,
    /// Index levels below the root (0..=2).
    pub indirect_levels: u8,
}

fn dx_corrupt(d: &dyn DirBlocks, lblk: u32, detail: impl Into<String>) -> Ext4Error {
    let what = if lblk == 0 {
        format!("htree root of inode {}", d.ino())
    } else {
        format!("htree node (block {lblk}) of inode {}", d.ino())
    };
    Ext4Error::corrupt(what, detail)
}

/// Validate countlimit, entries and checksum of an index block.
fn parse_dx_entries(
    d: &dyn DirBlocks,
    lblk: u32,
    raw: Vec<u8>,
    count_off: usize,
    expect_limit: usize,
) -> Result<DxBlock> {
    let limit = rd16(&raw, count_off) as usize;
    let count = rd16(&raw, count_off + 2) as usize;
    if limit != expect_limit {
        return Err(dx_corrupt(
            d,
            lblk,
            format!("limit {limit}, expected {expect_limit}"),
        ));
    }
    if count == 0 || count > limit {
        return Err(dx_corrupt(
            d,
            lblk,
            format!("count {count} (limit {limit})"),
        ));
    }
    if let Some(seed) = d.csum_seed() {
        let t = count_off + 8 * limit;
        let stored = rd32(&raw, t + 4);
        let computed = dx_csum(seed, &raw, count_off, count, limit);
        if stored != computed {
            let structure = if lblk == 0 {
                format!("htree root of inode {}", d.ino())
            } else {
                format!("htree node (block {lblk}) of inode {}", d.ino())
            };
            return Err(Ext4Error::Checksum {
                structure,
                stored,
                computed,
            });
        }
    }
    let nblocks = d.num_blocks();
    let mut entries = Vec::with_capacity(count);
    let mut prev = 0u32;
    for i in 0..count {
        let off = count_off + 8 * i;
        let h = if i == 0 { 0 } else { rd32(&raw, off) };
        let b = rd32(&raw, off + 4);
        if b == 0 || b >= nblocks {
            return Err(dx_corrupt(
                d,
                lblk,
                format!("entry {i} points at block {b} (directory has {nblocks})"),
            ));
        }
        if h < prev {
            return Err(dx_corrupt(
                d,
                lblk,
                format!("entry {i}: hashes out of order"),
            ));
        }
        prev = h;
        entries.push((h, b));
    }
    Ok(DxBlock {
        lblk,
        raw,
        count_off,
        limit,
        entries,
    })
}

fn read_block(d: &mut dyn DirBlocks, lblk: u32) -> Result<Vec<u8>> {
    let b = d.read(lblk)?;
    if b.len() != d.block_size() as usize || b.len() < 1024 {
        return Err(dx_corrupt(d, lblk, format!("read {} bytes", b.len())));
    }
    Ok(b)
}

/// Read and validate the root (block 0).
pub fn read_root(d: &mut dyn DirBlocks) -> Result<(RootInfo, DxBlock)> {
    let raw = read_block(d, 0)?;
    let bs = raw.len();
    let dot_ok = rd32(&raw, 0) != 0
        && rd16(&raw, 4) == 12
        && raw.get(6) == Some(&1)
        && raw.get(8) == Some(&b'.');
    let dotdot_ok = rd16(&raw, 16) as usize == bs.saturating_sub(12)
        && raw.get(18) == Some(&2)
        && raw.get(20..22) == Some(b"..");
    if !dot_ok || !dotdot_ok {
        return Err(dx_corrupt(d, 0, "bad \".\" or \"..\" entry"));
    }
    let hash_version = raw.get(28).copied().unwrap_or(0xff);
    let info_length = raw.get(29).copied().unwrap_or(0);
    let indirect_levels = raw.get(30).copied().unwrap_or(0xff);
    let unused_flags = raw.get(31).copied().unwrap_or(0);
    if info_length != 8 {
        return Err(dx_corrupt(d, 0, format!("info_length {info_length}")));
    }
    if hash_version > DX_HASH_TEA {
        return Err(Ext4Error::Unsupported(format!(
            "htree hash version {hash_version} in directory inode {}",
            d.ino()
        )));
    }
    if unused_flags & 1 != 0 {
        return Err(dx_corrupt(d, 0, "unsupported root flags"));
    }
    if indirect_levels as usize >= max_levels(d.large_dir()) {
        return Err(dx_corrupt(
            d,
            0,
            format!("indirect_levels {indirect_levels} too deep"),
        ));
    }
    let csum = d.csum_seed().is_some();
    let blk = parse_dx_entries(d, 0, raw, ROOT_COUNT_OFF, root_limit(bs, csum))?;
    Ok((
        RootInfo {
            hash_version,
            indirect_levels,
        },
        blk,
    ))
}

/// Read and validate an interior node.
pub fn read_node(d: &mut dyn DirBlocks, lblk: u32) -> Result<DxBlock> {
    let raw = read_block(d, lblk)?;
    let bs = raw.len();
    let fake_ok = rd32(&raw, 0) == 0 && dir_rec_len(&raw, 4) == bs && raw.get(6) == Some(&0);
    if !fake_ok {
        return Err(dx_corrupt(d, lblk, "bad fake entry of an index node"));
    }
    let csum = d.csum_seed().is_some();
    parse_dx_entries(d, lblk, raw, NODE_COUNT_OFF, node_limit(bs, csum))
}

fn dir_rec_len(b: &[u8], off: usize) -> usize {
    let v = rd16(b, off);
    if b.len() >= 65536 && (v == 0 || v == 65535) {
        65536
    } else {
        v as usize
    }
}

/// A new, empty interior node.
fn new_node(lblk: u32, bs: usize, csum: bool) -> DxBlock {
    let mut raw = vec![0u8; bs];
    let rl = if bs >= 65536 { 65535 } else { bs as u16 };
    wr16(&mut raw, 4, rl);
    DxBlock {
        lblk,
        raw,
        count_off: NODE_COUNT_OFF,
        limit: node_limit(bs, csum),
        entries: Vec::new(),
    }
}

/// A fresh root block for directory `self_ino` with parent `parent`.
fn new_root(d: &dyn DirBlocks, self_ino: u32, parent: u32, hash_version: u8) -> DxBlock {
    let bs = d.block_size() as usize;
    let ft = if d.has_filetype() { FT_DIR } else { 0 };
    let mut raw = vec![0u8; bs];
    wr32(&mut raw, 0, self_ino);
    wr16(&mut raw, 4, 12);
    raw[6] = 1;
    raw[7] = ft;
    raw[8] = b'.';
    wr32(&mut raw, 12, parent);
    wr16(
        &mut raw,
        16,
        if bs >= 65536 {
            65535
        } else {
            bs.saturating_sub(12) as u16
        },
    );
    raw[18] = 2;
    raw[19] = ft;
    raw[20] = b'.';
    raw[21] = b'.';
    raw[28] = hash_version;
    raw[29] = 8;
    raw[30] = 0;
    DxBlock {
        lblk: 0,
        raw,
        count_off: ROOT_COUNT_OFF,
        limit: root_limit(bs, d.csum_seed().is_some()),
        entries: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Probe

/// One level of a lookup path: an index block and the chosen entry.
#[derive(Debug, Clone)]
struct Frame {
    blk: DxBlock,
    at: usize,
}

/// The last entry whose hash is ≤ `hash` (entry 0 when none).
fn find_at(entries: &[(u32, u32)], hash: u32) -> usize {
    // entries[0] has hash 0; entries are sorted.
    entries.iter().skip(1).take_while(|e| e.0 <= hash).count()
}

struct Probe {
    info: RootInfo,
    frames: Vec<Frame>,
    version: u8,
}

impl Probe {
    fn leaf(&self) -> u32 {
        self.frames
            .last()
            .and_then(|f| f.blk.entries.get(f.at))
            .map(|e| e.1)
            .unwrap_or(0)
    }
}

fn root_version(d: &mut dyn DirBlocks) -> Result<(RootInfo, DxBlock, u8)> {
    let (info, root) = read_root(d)?;
    let v = effective_version(info.hash_version, d.hash().unsigned);
    Ok((info, root, v))
}

/// Walk from the root to the leaf covering `hash`.
fn probe_with(
    d: &mut dyn DirBlocks,
    info: RootInfo,
    root: DxBlock,
    hash: u32,
) -> Result<Vec<Frame>> {
    let mut frames = Vec::with_capacity(3);
    let at = find_at(&root.entries, hash);
    frames.push(Frame { blk: root, at });
    for _ in 0..info.indirect_levels {
        let child = frames
            .last()
            .and_then(|f| f.blk.entries.get(f.at))
            .map(|e| e.1)
            .unwrap_or(0);
        let node = read_node(d, child)?;
        let at = find_at(&node.entries, hash);
        frames.push(Frame { blk: node, at });
    }
    Ok(frames)
}

fn probe(d: &mut dyn DirBlocks, name: &[u8]) -> Result<(Probe, u32)> {
    let (info, root, version) = root_version(d)?;
    let (hash, _) = dx_hash(name, version, &d.hash().seed)?;
    let frames = probe_with(d, info, root, hash)?;
    Ok((
        Probe {
            info,
            frames,
            version,
        },
        hash,
    ))
}

/// Advance `frames` to the next leaf if its hash range continues `hash` (a collision chain,
/// kernel `ext4_htree_next_block`). Returns false when the search is over.
fn next_leaf(d: &mut dyn DirBlocks, frames: &mut [Frame], hash: u32) -> Result<bool> {
    let depth = frames.len();
    // Find the deepest level that has a next entry.
    let mut lvl = depth;
    while lvl > 0 {
        let f = &frames[lvl - 1];
        if f.at + 1 < f.blk.entries.len() {
            break;
        }
        lvl -= 1;
    }
    if lvl == 0 {
        return Ok(false);
    }
    let f = &mut frames[lvl - 1];
    f.at += 1;
    let bhash = f.blk.entries.get(f.at).map(|e| e.0).unwrap_or(0);
    if bhash & !1 != hash {
        return Ok(false);
    }
    // Descend along the first entries.
    for l in lvl..depth {
        let child = frames[l - 1]
            .blk
            .entries
            .get(frames[l - 1].at)
            .map(|e| e.1)
            .unwrap_or(0);
        let node = read_node(d, child)?;
        frames[l] = Frame { blk: node, at: 0 };
    }
    Ok(true)
}

/// Find `name`: `(leaf lblk, leaf block, slots, index)` or None.
fn find(d: &mut dyn DirBlocks, name: &[u8]) -> Result<Option<dir::Found>> {
    let (mut p, hash) = probe(d, name)?;
    // Each step moves to a later index entry, so this is bounded by the number of blocks.
    for _ in 0..=d.num_blocks() {
        let lblk = p.leaf();
        let b = read_block(d, lblk)?;
        let slots = parse_block(&b, &BlockCtx::of(d, lblk))?;
        if let Some(i) = slots.iter().position(|s| s.ino != 0 && s.name(&b) == name) {
            return Ok(Some((lblk, b, slots, i)));
        }
        if !next_leaf(d, &mut p.frames, hash)? {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Look `name` up in a hashed directory.
pub fn lookup(d: &mut dyn DirBlocks, name: &[u8]) -> Result<Option<(u32, u8)>> {
    Ok(find(d, name)?.and_then(|(_, _, slots, i)| slots.get(i).map(|s| (s.ino, s.file_type))))
}

/// Logical blocks of all leaves, in index order. Validates every index block and that no
/// block is referenced twice.
pub fn leaf_blocks(d: &mut dyn DirBlocks) -> Result<Vec<u32>> {
    let (info, root) = read_root(d)?;
    let mut seen = std::collections::BTreeSet::new();
    seen.insert(0u32);
    let mut level: Vec<u32> = Vec::new();
    for &(_, b) in &root.entries {
        level.push(b);
    }
    for _ in 0..info.indirect_levels {
        let mut next = Vec::new();
        for lblk in level {
            if !seen.insert(lblk) {
                return Err(dx_corrupt(d, lblk, "index block referenced twice"));
            }
            let node = read_node(d, lblk)?;
            next.extend(node.entries.iter().map(|e| e.1));
        }
        level = next;
    }
    for &lblk in &level {
        if !seen.insert(lblk) {
            return Err(dx_corrupt(d, lblk, "leaf referenced twice"));
        }
    }
    Ok(level)
}

/// All entries of a hashed directory: "." and ".." from the root, then every leaf.
pub fn list_all(d: &mut dyn DirBlocks) -> Result<Vec<RawEntry>> {
    let (_, root) = read_root(d)?;
    let filetype = d.has_filetype();
    let ft = |b: u8| if filetype { b } else { 0 };
    let mut out = vec![
        RawEntry {
            name: b".".to_vec(),
            ino: rd32(&root.raw, 0),
            file_type: ft(root.raw.get(7).copied().unwrap_or(0)),
        },
        RawEntry {
            name: b"..".to_vec(),
            ino: rd32(&root.raw, 12),
            file_type: ft(root.raw.get(19).copied().unwrap_or(0)),
        },
    ];
    for lblk in leaf_blocks(d)? {
        let b = read_block(d, lblk)?;
        let slots = parse_block(&b, &BlockCtx::of(d, lblk))?;
        out.extend(dir::live_entries(&b, &slots));
    }
    Ok(out)
}

/// The ".." inode of a hashed directory.
pub fn parent(d: &mut dyn DirBlocks) -> Result<u32> {
    let (_, root) = read_root(d)?;
    Ok(rd32(&root.raw, 12))
}

/// Point ".." of a hashed directory at `parent`.
pub fn set_parent(d: &mut dyn DirBlocks, parent: u32) -> Result<()> {
    let (_, mut root) = read_root(d)?;
    wr32(&mut root.raw, 12, parent);
    root.encode(d.csum_seed());
    d.write(0, &root.raw)
}

/// Find `name` in a hashed directory: (leaf lblk, leaf block, records, index) or None.
pub(crate) fn find_entry(d: &mut dyn DirBlocks, name: &[u8]) -> Result<Option<dir::Found>> {
    find(d, name)
}

/// Remove `name` from a hashed directory (the index is unchanged; an emptied leaf stays).
pub fn remove(d: &mut dyn DirBlocks, name: &[u8]) -> Result<u32> {
    let Some((lblk, mut b, slots, i)) = find(d, name)? else {
        return Err(Ext4Error::NotFound(
            String::from_utf8_lossy(name).into_owned(),
        ));
    };
    let ino = slots.get(i).map(|s| s.ino).unwrap_or(0);
    remove_from_block(&mut b, &slots, i);
    set_tail(&mut b, d.csum_seed());
    d.write(lblk, &b)?;
    Ok(ino)
}

/// Write a leaf made of `entries` (packed in order), with its tail.
fn pack_leaf(bs: usize, seed: Option<u32>, entries: &[(Vec<u8>, u32, u8)]) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    let end = entries_end(bs, seed.is_some());
    let mut off = 0usize;
    let n = entries.len();
    for (i, (name, ino, ft)) in entries.iter().enumerate() {
        let len = if i + 1 == n {
            end - off
        } else {
            rec_len_for(name.len())
        };
        wr32(&mut b, off, *ino);
        wr16(
            &mut b,
            off + 4,
            if len >= 65536 { 65535 } else { len as u16 },
        );
        if let Some(s) = b.get_mut(off + 6..off + 8) {
            s.copy_from_slice(&[name.len() as u8, *ft]);
        }
        if let Some(s) = b.get_mut(off + 8..off + 8 + name.len()) {
            s.copy_from_slice(name);
        }
        off += len;
    }
    if n == 0 {
        wr16(&mut b, 4, if end >= 65536 { 65535 } else { end as u16 });
    }
    set_tail(&mut b, seed);
    b
}

/// Add `name` to a hashed directory (kernel `ext4_dx_add_entry`).
pub fn add(d: &mut dyn DirBlocks, name: &[u8], ino: u32, ft: u8) -> Result<()> {
    if find(d, name)?.is_some() {
        return Err(Ext4Error::Exists(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    let seed = d.csum_seed();
    // Each round either inserts, splits a leaf, splits an index node or adds a level:
    // a few rounds always suffice.
    for _ in 0..8 {
        let (mut p, hash) = probe(d, name)?;
        let leaf = p.leaf();
        let mut b = read_block(d, leaf)?;
        let slots = parse_block(&b, &BlockCtx::of(d, leaf))?;
        if insert_into_block(&mut b, &slots, name, ino, ft) {
            set_tail(&mut b, seed);
            return d.write(leaf, &b);
        }
        let depth = p.frames.len();
        // Deepest index level that has room for one more entry.
        let room = (0..depth)
            .rev()
            .find(|&l| p.frames[l].blk.entries.len() < p.frames[l].blk.limit);
        match room {
            Some(l) if l + 1 == depth => {
                split_leaf(d, &mut p, leaf, b, slots, hash, name, ino, ft)?;
                return Ok(());
            }
            Some(l) => split_node(d, &mut p.frames, l)?,
            None => {
                if depth >= max_levels(d.large_dir()) {
                    return Err(Ext4Error::NoSpace("directory index is full"));
                }
                add_level(d, &mut p)?;
            }
        }
    }
    Err(dx_corrupt(d, 0, "insert did not converge"))
}

/// Split the full node at level `l + 1` of `frames`, inserting the new node into level `l`.
fn split_node(d: &mut dyn DirBlocks, frames: &mut [Frame], l: usize) -> Result<()> {
    let seed = d.csum_seed();
    let bs = d.block_size() as usize;
    let newblk = d.append_block()?;
    let (parent_part, child_part) = frames.split_at_mut(l + 1);
    let (Some(parent), Some(child)) = (parent_part.last_mut(), child_part.first_mut()) else {
        return Err(dx_corrupt(d, 0, "bad split level"));
    };
    let count = child.blk.entries.len();
    let half = count / 2;
    let upper: Vec<(u32, u32)> = child.blk.entries.split_off(half);
    let hash2 = upper.first().map(|e| e.0).unwrap_or(0);
    let mut node = new_node(newblk, bs, seed.is_some());
    node.entries = upper;
    if let Some(e) = node.entries.first_mut() {
        e.0 = 0;
    }
    node.encode(seed);
    child.blk.encode(seed);
    parent.blk.entries.insert(parent.at + 1, (hash2, newblk));
    parent.blk.encode(seed);
    d.write(node.lblk, &node.raw)?;
    d.write(child.blk.lblk, &child.blk.raw)?;
    d.write(parent.blk.lblk, &parent.blk.raw)
}

/// Move the root's entries into a new node and make the root point at it.
fn add_level(d: &mut dyn DirBlocks, p: &mut Probe) -> Result<()> {
    let seed = d.csum_seed();
    let bs = d.block_size() as usize;
    let newblk = d.append_block()?;
    let Some(root) = p.frames.first_mut() else {
        return Err(dx_corrupt(d, 0, "empty probe"));
    };
    let mut node = new_node(newblk, bs, seed.is_some());
    node.entries = std::mem::take(&mut root.blk.entries);
    node.encode(seed);
    root.blk.entries = vec![(0, newblk)];
    let levels = p.info.indirect_levels.saturating_add(1);
    if let Some(x) = root.blk.raw.get_mut(30) {
        *x = levels;
    }
    root.blk.encode(seed);
    d.write(newblk, &node.raw)?;
    d.write(0, &root.blk.raw)
}

/// Split a full leaf (kernel `do_split`) and insert the new entry.
#[allow(clippy::too_many_arguments)]
fn split_leaf(
    d: &mut dyn DirBlocks,
    p: &mut Probe,
    leaf: u32,
    b: Vec<u8>,
    slots: Vec<Slot>,
    hash: u32,
    name: &[u8],
    ino: u32,
    ft: u8,
) -> Result<()> {
    let seed = d.csum_seed();
    let bs = d.block_size() as usize;
    let hseed = d.hash().seed;
    let mut map: Vec<(u32, Vec<u8>, u32, u8)> = Vec::new();
    for s in slots.iter().filter(|s| s.ino != 0) {
        let n = s.name(&b).to_vec();
        let (h, _) = dx_hash(&n, p.version, &hseed)?;
        map.push((h, n, s.ino, s.file_type));
    }
    map.sort_by_key(|e| e.0);
    let count = map.len();
    if count < 2 {
        return Err(dx_corrupt(d, leaf, "full leaf with fewer than two entries"));
    }
    // Move entries from the top while less than half a block has moved.
    let mut size = 0usize;
    let mut moved = 0usize;
    let mut stopped = false;
    for e in map.iter().rev() {
        let sz = rec_len_for(e.1.len());
        if size + sz / 2 > bs / 2 {
            stopped = true;
            break;
        }
        size += sz;
        moved += 1;
    }
    let split = if stopped && count - 1 - moved > 0 {
        count - moved
    } else {
        count / 2
    };
    let split = split.clamp(1, count - 1);
    let hash2 = map[split].0;
    let continued = u32::from(hash2 == map[split - 1].0);
    let lower: Vec<(Vec<u8>, u32, u8)> = map[..split]
        .iter()
        .map(|e| (e.1.clone(), e.2, e.3))
        .collect();
    let upper: Vec<(Vec<u8>, u32, u8)> = map[split..]
        .iter()
        .map(|e| (e.1.clone(), e.2, e.3))
        .collect();
    let newblk = d.append_block()?;
    let mut b1 = pack_leaf(bs, seed, &lower);
    let mut b2 = pack_leaf(bs, seed, &upper);
    let Some(parent) = p.frames.last_mut() else {
        return Err(dx_corrupt(d, 0, "empty probe"));
    };
    parent
        .blk
        .entries
        .insert(parent.at + 1, (hash2 | continued, newblk));
    parent.blk.encode(seed);
    // The new entry goes to the half that covers its hash.
    let (target, tb) = if hash >= hash2 {
        (newblk, &mut b2)
    } else {
        (leaf, &mut b1)
    };
    let ctx = BlockCtx::of(d, target);
    let tslots = parse_block(tb, &ctx)?;
    if !insert_into_block(tb, &tslots, name, ino, ft) {
        return Err(dx_corrupt(d, target, "no room after a leaf split"));
    }
    set_tail(tb, seed);
    d.write(newblk, &b2)?;
    d.write(leaf, &b1)?;
    let parent_lblk = parent.blk.lblk;
    let raw = parent.blk.raw.clone();
    d.write(parent_lblk, &raw)
}

/// Convert a full one-block linear directory into a hashed one (kernel `make_indexed_dir`)
/// and add `name`. `block0` is the (full) first block as read.
pub fn make_indexed(
    d: &mut dyn DirBlocks,
    block0: Vec<u8>,
    name: &[u8],
    ino: u32,
    ft: u8,
) -> Result<()> {
    let seed = d.csum_seed();
    let bs = d.block_size() as usize;
    let hp = d.hash();
    if bs < 1024 {
        return Err(dx_corrupt(d, 0, format!("block size {bs}")));
    }
    if hp.default_version > DX_HASH_TEA {
        return Err(Ext4Error::Unsupported(format!(
            "default hash version {}",
            hp.default_version
        )));
    }
    let slots = parse_block(&block0, &BlockCtx::of(d, 0))?;
    let (Some(dot), Some(dotdot)) = (slots.first(), slots.get(1)) else {
        return Err(dx_corrupt(d, 0, "block 0 lacks \".\" and \"..\""));
    };
    if dot.name(&block0) != b"." || dotdot.name(&block0) != b".." {
        return Err(dx_corrupt(d, 0, "block 0 lacks \".\" and \"..\""));
    }
    let entries: Vec<(Vec<u8>, u32, u8)> = slots
        .iter()
        .skip(2)
        .filter(|s| s.ino != 0)
        .map(|s| (s.name(&block0).to_vec(), s.ino, s.file_type))
        .collect();
    let leaf_lblk = d.append_block()?;
    let leaf = pack_leaf(bs, seed, &entries);
    let mut root = new_root(d, dot.ino, dotdot.ino, hp.default_version);
    root.entries = vec![(0, leaf_lblk)];
    root.encode(seed);
    d.write(leaf_lblk, &leaf)?;
    d.write(0, &root.raw)?;
    d.set_indexed(true)?;
    add(d, name, ino, ft)
}

/// Summary of an htree for invariant checks (tests, fsck-like verification): every index
/// block validated, every leaf's names within its hash range.
pub fn check(d: &mut dyn DirBlocks) -> Result<()> {
    let (info, root, version) = root_version(d)?;
    let seed = d.hash().seed;
    // (lblk, min hash, max hash exclusive-ish upper bound, depth)
    let mut stack: Vec<(u32, u32, u64, u8)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let push_children = |blk: &DxBlock, lo: u32, hi: u64, depth: u8, st: &mut Vec<_>| {
        let n = blk.entries.len();
        for i in 0..n {
            let h = if i == 0 { lo } else { blk.entries[i].0 };
            let next: u64 = if i + 1 < n {
                u64::from(blk.entries[i + 1].0)
            } else {
                hi
            };
            st.push((blk.entries[i].1, h, next, depth));
        }
    };
    push_children(&root, 0, 1 << 32, 1, &mut stack);
    let mut guard = 0u32;
    while let Some((lblk, lo, hi, depth)) = stack.pop() {
        guard += 1;
        if guard > d.num_blocks().saturating_add(1) || !seen.insert(lblk) {
            return Err(dx_corrupt(d, lblk, "block referenced twice"));
        }
        if depth <= info.indirect_levels {
            let node = read_node(d, lblk)?;
            push_children(&node, lo, hi, depth + 1, &mut stack);
            continue;
        }
        let b = read_block(d, lblk)?;
        let slots = parse_block(&b, &BlockCtx::of(d, lblk))?;
        for s in slots.iter().filter(|s| s.ino != 0) {
            let (h, _) = dx_hash(s.name(&b), version, &seed)?;
            // Entry i covers [hash_i & !1, hash_{i+1}); a continuation bit on hash_{i+1}
            // lets this leaf also hold names hashing to hash_{i+1} & !1.
            let h64 = u64::from(h);
            let below = h < (lo & !1);
            let above = h64 >= hi && !(hi & 1 == 1 && h64 == (hi & !1));
            if below || above {
                return Err(dx_corrupt(
                    d,
                    lblk,
                    format!("name hash {h:#x} outside [{lo:#x}, {hi:#x})"),
                ));
            }
        }
    }
    if seen.len() as u32 != d.num_blocks().saturating_sub(1) {
        return Err(dx_corrupt(
            d,
            0,
            format!(
                "{} blocks referenced, directory has {}",
                seen.len() + 1,
                d.num_blocks()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::MemDir;
    use std::collections::HashMap;

    /// Known values, cross-checked with `debugfs -R "dx_hash -h ALG -s SEED NAME"`
    /// (tests/dirs_image.rs checks thousands more against real images).
    #[test]
    fn dirs_hash_default_seed_and_empty() {
        // All-zero seed means the default seed.
        let a = dx_hash(b"hello", DX_HASH_HALF_MD4, &[0; 4]).unwrap();
        let b = dx_hash(b"hello", DX_HASH_HALF_MD4, &DEFAULT_SEED).unwrap();
        assert_eq!(a, b);
        for v in 0..6 {
            let (h, _) = dx_hash(b"x", v, &[1, 2, 3, 4]).unwrap();
            assert_eq!(h & 1, 0);
        }
        assert!(dx_hash(b"x", 6, &[0; 4]).is_err());
    }

    /// Long names (three a 1 KiB leaf) that collide pairwise on the major hash.
    fn colliding_pairs(d: &MemDir, want: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut seen: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut out = Vec::new();
        for i in 0u32..400_000 {
            let mut n = format!("c{i:x}-").into_bytes();
            n.resize(240, b'z');
            let (h, _) = dx_hash(&n, DX_HASH_HALF_MD4, &d.hash.seed).unwrap();
            if let Some(prev) = seen.insert(h, n.clone()) {
                out.push((prev, n));
                if out.len() == want {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn dirs_htree_hash_collisions_continuation() {
        let probe_dir = MemDir::new(40, 1024, Some(5));
        let pairs = colliding_pairs(&probe_dir, 3);
        assert!(!pairs.is_empty());
        let long = |s: String| {
            let mut n = s.into_bytes();
            n.resize(240, b'y');
            n
        };
        let hash = |n: &[u8]| {
            dx_hash(n, DX_HASH_HALF_MD4, &probe_dir.hash.seed)
                .unwrap()
                .0
        };
        for (a, b) in &pairs {
            let h = hash(a);
            // x below, y above the colliding hash: the leaf [x, a, b, y] splits between a
            // and b, so the new index entry must carry the continuation bit.
            let x = (0..)
                .map(|i| long(format!("x{i}")))
                .find(|n| hash(n) < h)
                .unwrap();
            let y = (0..)
                .map(|i| long(format!("y{i}")))
                .find(|n| hash(n) > h)
                .unwrap();
            let mut d = probe_dir.clone();
            dir::init(&mut d, 40, 2).unwrap();
            let mut names = vec![x, a.clone(), b.clone(), y];
            for (i, n) in names.iter().enumerate() {
                dir::add(&mut d, n, 100 + i as u32, 1).unwrap();
            }
            let z = long("z".into());
            dir::add(&mut d, &z, 104, 1).unwrap();
            names.push(z);
            assert!(d.indexed);
            let continued: usize = continuation_entries(&mut d).iter().sum();
            assert_eq!(continued, 1, "one continuation entry expected");
            check(&mut d).unwrap();
            for (i, n) in names.iter().enumerate() {
                assert_eq!(dir::lookup(&mut d, n).unwrap(), Some((100 + i as u32, 1)));
            }
            // Grow and shrink around it.
            for i in 0..400u32 {
                dir::add(&mut d, &long(format!("fill{i}")), 200 + i, 1).unwrap();
            }
            check(&mut d).unwrap();
            assert_eq!(dir::remove(&mut d, a).unwrap(), 101);
            assert_eq!(dir::lookup(&mut d, b).unwrap(), Some((102, 1)));
            assert_eq!(dir::remove(&mut d, b).unwrap(), 102);
            assert_eq!(dir::lookup(&mut d, a).unwrap(), None);
            dir::add(&mut d, b, 102, 1).unwrap();
            assert!(matches!(
                dir::add(&mut d, b, 7, 1),
                Err(Ext4Error::Exists(_))
            ));
            dir::add(&mut d, a, 101, 1).unwrap();
            check(&mut d).unwrap();
            assert_eq!(dir::lookup(&mut d, a).unwrap(), Some((101, 1)));
        }
    }

    /// Number of index entries with the continuation bit.
    fn continuation_entries(d: &mut MemDir) -> Vec<usize> {
        let (info, root) = read_root(d).unwrap();
        let mut blocks = vec![root];
        let mut level: Vec<u32> = blocks[0].entries.iter().map(|e| e.1).collect();
        for _ in 0..info.indirect_levels {
            let mut next = Vec::new();
            for l in level {
                let n = read_node(d, l).unwrap();
                next.extend(n.entries.iter().map(|e| e.1));
                blocks.push(n);
            }
            level = next;
        }
        blocks
            .iter()
            .map(|b| b.entries.iter().filter(|e| e.0 & 1 == 1).count())
            .collect()
    }
}
