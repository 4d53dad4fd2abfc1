//! One ext4 structure at a time, straight from the input: superblock, group descriptor,
//! inode, in-inode and block xattrs, inline data, directory blocks (linear and htree, read
//! and edited through an in-memory directory) and extent trees / block maps (read, allocate,
//! punch, repack through an in-memory block store). Whole-image targets reach these only
//! through valid superblocks and checksums; here every byte is the parser's problem.
//!
//! Input: byte 0 holds the options (bit 0 metadata_csum, bit 1 htree-indexed directory,
//! bit 2 large_dir, bit 3 block map instead of extents, bits 4-5 block size 1/2/4 KiB),
//! the rest is the structure bytes.

use imgscrub_ext4::dir::{self, BlockCtx, MemDir};
use imgscrub_ext4::group_desc::GroupDesc;
use imgscrub_ext4::inode::Inode;
use imgscrub_ext4::mapping::{self, AllocMode, FileMap, MapCtx, MapKind};
use imgscrub_ext4::{Ext4Error, Result, Superblock, extent, htree, inline, orphan, xattr};

/// Run every structure parser on the input.
pub fn ext4_structures(data: &[u8]) {
    let Some((&opts, bytes)) = data.split_first() else {
        return;
    };
    let csum = opts & 1 != 0;
    let bs = 1024u32 << ((opts >> 4) & 3).min(2);
    let seed = csum.then_some(0x1234_5678u32);
    metadata(bytes, csum);
    directory(bytes, bs, seed, opts);
    mapping(bytes, bs, seed, opts);
}

fn padded(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut v = bytes.iter().copied().take(len).collect::<Vec<u8>>();
    v.resize(len, 0);
    v
}

fn metadata(bytes: &[u8], csum: bool) {
    // Superblock: parse, then every derived value the engine computes from it.
    let raw = padded(bytes, 1024);
    if let Ok(sb) = Superblock::parse(&raw) {
        let _ = sb.write_refusal();
        let _ = (
            sb.desc_blocks(),
            sb.descs_per_block(),
            sb.free_blocks_count(),
        );
        let _ = (
            sb.reserved_blocks_count(),
            sb.volume_name(),
            sb.checksum_type(),
        );
        let gd = GroupDesc::from_bytes(
            &padded(bytes.get(1024..).unwrap_or(&[]), 64),
            sb.wide_desc(),
        );
        let _ = gd.verify(&sb, 0);
        let _ = gd.verify(&sb, 1);
    }
    let _ = orphan::pending(&raw);
    let _ = orphan::refuse_if_pending(&raw);

    // An inode record of 128 or 256 bytes and what hangs off it.
    let size = if bytes.len() >= 256 { 256 } else { 128 };
    let ino = Inode::from_bytes(&padded(bytes, size));
    let _ = ino.verify(0x1234_5678, 12);
    let _ = (ino.file_type(), ino.size(), ino.flags(), ino.file_acl());
    let _ = ino.blocks_512(csum, 1024);
    let i_block = ino.i_block();
    let _ = inline::read(12, &i_block, bytes.get(160..).unwrap_or(&[]), ino.size());
    if let Some(area) = bytes.get(128..size) {
        let _ = xattr::parse_ibody(area, 12);
    }
    let _ = xattr::parse_block(bytes, 100, csum.then_some(0x1234_5678));
}

fn directory(bytes: &[u8], bs: u32, seed: Option<u32>, opts: u8) {
    let mut d = MemDir::new(2, bs, seed);
    d.indexed = opts & 2 != 0;
    d.large_dir = opts & 4 != 0;
    d.max_blocks = 64;
    d.blocks = bytes
        .chunks(bs as usize)
        .take(16)
        .map(|c| padded(c, bs as usize))
        .collect();
    for (lblk, b) in d.blocks.iter().enumerate() {
        let ctx = BlockCtx {
            dir_ino: 2,
            lblk: lblk as u32,
            csum_seed: seed,
            inodes_count: d.inodes_count,
            filetype: true,
        };
        if let Ok(slots) = dir::parse_block(b, &ctx) {
            let _ = dir::live_entries(b, &slots);
        }
        let _ = dir::has_tail(b);
    }
    let _ = dir::list_all(&mut d);
    let _ = dir::parent(&mut d);
    if d.indexed {
        let _ = htree::check(&mut d);
        let _ = htree::leaf_blocks(&mut d);
    }
    for name in [&b"entry-7"[..], b"lost+found", b"a"] {
        let _ = dir::lookup(&mut d, name);
    }
    // Edits: what a prepare does to /etc or /var/log.
    for i in 0..40u32 {
        let name = format!("fuzz-entry-{i:03}-with-a-long-enough-name");
        if dir::add(&mut d, name.as_bytes(), 20 + i, 1).is_err() {
            break;
        }
    }
    let _ = dir::remove(&mut d, b"fuzz-entry-003-with-a-long-enough-name");
    let _ = dir::remove(&mut d, b"entry-7");
    let _ = dir::replace(&mut d, b"fuzz-entry-004-with-a-long-enough-name", 99, 2);
    let _ = dir::set_parent(&mut d, 77);
    let _ = dir::list_all(&mut d);
}

/// A block store holding the input (blocks `1..`) followed by free blocks for allocations.
struct Store {
    bs: u32,
    blocks: Vec<Vec<u8>>,
    used: Vec<bool>,
    seed: Option<u32>,
}

impl MapCtx for Store {
    fn block_size(&self) -> u32 {
        self.bs
    }
    fn blocks_count(&self) -> u64 {
        self.blocks.len() as u64
    }
    fn first_data_block(&self) -> u64 {
        1
    }
    fn read_block(&mut self, pblk: u64, buf: &mut [u8]) -> Result<()> {
        // The mapping layer validates every pointer against the filesystem bounds before
        // following it; a read outside them is a bug in it, not bad input.
        assert!(
            (1..self.blocks_count()).contains(&pblk),
            "read of block {pblk} outside the filesystem"
        );
        buf.copy_from_slice(&self.blocks[pblk as usize]);
        Ok(())
    }
    fn write_block(&mut self, pblk: u64, buf: &[u8]) -> Result<()> {
        assert!(
            (1..self.blocks_count()).contains(&pblk),
            "write of block {pblk} outside the filesystem"
        );
        self.blocks[pblk as usize].copy_from_slice(buf);
        Ok(())
    }
    fn alloc_blocks(&mut self, goal: u64, max: u32) -> Result<(u64, u32)> {
        let n = self.used.len() as u64;
        for k in 0..n {
            let b = (goal + k) % n;
            if b >= 1 && !self.used[b as usize] {
                let mut len = 0u32;
                while len < max.max(1)
                    && (b + u64::from(len)) < n
                    && !self.used[(b + u64::from(len)) as usize]
                {
                    self.used[(b + u64::from(len)) as usize] = true;
                    len += 1;
                }
                return Ok((b, len));
            }
        }
        Err(Ext4Error::NoSpace("fuzz store full"))
    }
    fn free_blocks(&mut self, start: u64, count: u64) -> Result<()> {
        let end = start.saturating_add(count);
        if start < 1 || end > self.used.len() as u64 {
            return Err(Ext4Error::InvalidArgument(format!(
                "free of blocks {start}+{count} outside the filesystem"
            )));
        }
        for b in start..end {
            if !self.used[b as usize] {
                return Err(Ext4Error::corrupt(
                    "fuzz store",
                    format!("block {b} freed twice"),
                ));
            }
            self.used[b as usize] = false;
        }
        Ok(())
    }
    fn csum_seed(&self) -> Option<u32> {
        self.seed
    }
}

fn mapping(bytes: &[u8], bs: u32, seed: Option<u32>, opts: u8) {
    let mut i_block = [0u8; 60];
    i_block.copy_from_slice(&padded(bytes, 60));
    let kind = if opts & 8 != 0 {
        MapKind::BlockMap
    } else {
        MapKind::Extents
    };
    // Block 0 is the boot block; the input's blocks follow, then 64 free blocks.
    let mut blocks = vec![vec![0u8; bs as usize]];
    blocks.extend(
        bytes
            .get(60..)
            .unwrap_or(&[])
            .chunks(bs as usize)
            .take(32)
            .map(|c| padded(c, bs as usize)),
    );
    let in_use = blocks.len();
    blocks.extend((0..64).map(|_| vec![0u8; bs as usize]));
    let mut used = vec![true; in_use];
    used.resize(blocks.len(), false);
    let mut store = Store {
        bs,
        blocks,
        used,
        seed,
    };
    let mut fm = FileMap::new(12, &mut i_block, kind);
    let _ = mapping::map(&mut store, &mut fm, 0);
    let _ = mapping::map(&mut store, &mut fm, 1000);
    let _ = mapping::extents(&mut store, &mut fm);
    let _ = mapping::metadata_blocks(&mut store, &mut fm);
    if kind == MapKind::Extents {
        let _ = extent::verify_strict(&mut store, &fm);
        let _ = extent::needs_optimize(&mut store, &fm);
    }
    // Edits only on a structure the engine accepts, as the filesystem layer does.
    if mapping::extents(&mut store, &mut fm).is_err() {
        return;
    }
    let _ = mapping::allocate(&mut store, &mut fm, 5, 20, 40, AllocMode::Write);
    let _ = mapping::allocate(&mut store, &mut fm, 300, 3, 40, AllocMode::Prealloc);
    let _ = mapping::punch(&mut store, &mut fm, 7, 9);
    let _ = mapping::optimize(&mut store, &mut fm);
    let _ = mapping::extents(&mut store, &mut fm);
    let _ = mapping::punch(&mut store, &mut fm, 0, u64::MAX);
}
