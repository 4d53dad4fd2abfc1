#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Damaged input never panics or loops: directory blocks, index blocks, inline areas and
//! xattr areas with random corruption go through every operation; each returns Ok or Err.

use imgscrub_ext4::dir::{self, InlineDir, MemDir};
use imgscrub_ext4::{htree, xattr};
use proptest::prelude::*;

fn base_dir(n: u32, bs: u32) -> MemDir {
    // No checksums: corruption must be caught by the structural checks.
    let mut d = MemDir::new(11, bs, None);
    d.inodes_count = 5000;
    dir::init(&mut d, 11, 2).unwrap();
    for i in 0..n {
        dir::add(
            &mut d,
            format!("entry-{i}-{}", "q".repeat((i % 30) as usize)).as_bytes(),
            20 + i,
            1,
        )
        .unwrap();
    }
    d
}

fn exercise(d: &mut MemDir) {
    let _ = dir::list_all(d);
    let _ = dir::lookup(d, b"entry-7-qqqqqqq");
    let _ = dir::lookup(d, b"missing");
    let _ = dir::remove(d, b"entry-3-qqq");
    let _ = dir::add(d, b"new-name", 4000, 1);
    for i in 0..40u32 {
        let _ = dir::add(d, format!("more-{i}").as_bytes(), 4100 + i, 1);
    }
    let _ = dir::set_parent(d, 5);
    let _ = dir::parent(d);
    let _ = dir::is_empty(d);
    if d.indexed {
        let _ = htree::check(d);
        let _ = htree::leaf_blocks(d);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn dirs_robust_corrupt_blocks(
        n in prop_oneof![Just(3u32), Just(60), Just(400)],
        flips in prop::collection::vec((any::<u16>(), any::<u16>(), 1u8..=255), 1..12),
    ) {
        let mut d = base_dir(n, 1024);
        let nb = d.blocks.len();
        for (b, off, x) in flips {
            let b = b as usize % nb;
            let off = off as usize % 1024;
            d.blocks[b][off] ^= x;
        }
        exercise(&mut d);
    }

    #[test]
    fn dirs_robust_corrupt_blocks_with_valid_checksums(
        n in prop_oneof![Just(60u32), Just(400)],
        flips in prop::collection::vec((any::<u16>(), any::<u16>(), 1u8..=255), 1..8),
    ) {
        // metadata_csum: damage, then make every checksum match again, so that the
        // structural checks behind the checksums are reached.
        let mut d = MemDir::new(11, 1024, Some(0x1234));
        d.inodes_count = 5000;
        dir::init(&mut d, 11, 2).unwrap();
        for i in 0..n {
            dir::add(&mut d, format!("entry-{i}").as_bytes(), 20 + i, 1).unwrap();
        }
        let nb = d.blocks.len();
        for (b, off, x) in flips {
            d.blocks[b as usize % nb][off as usize % 1024] ^= x;
        }
        for (i, b) in d.blocks.iter_mut().enumerate() {
            if dir::has_tail(b) {
                dir::set_tail(b, Some(0x1234));
            } else {
                let co = if i == 0 { 32 } else { 8 };
                let limit = u16::from_le_bytes([b[co], b[co + 1]]) as usize;
                let count = u16::from_le_bytes([b[co + 2], b[co + 3]]) as usize;
                let t = co + 8 * limit;
                if t + 8 <= b.len() {
                    let c = htree::dx_csum(0x1234, b, co, count, limit);
                    b[t + 4..t + 8].copy_from_slice(&c.to_le_bytes());
                }
            }
        }
        exercise(&mut d);
    }

    #[test]
    fn dirs_robust_random_areas(bytes in prop::collection::vec(any::<u8>(), 0..1100), seed: u32) {
        let _ = xattr::parse_ibody(&bytes, 1);
        let mut with_magic = bytes.clone();
        if with_magic.len() >= 4 {
            with_magic[..4].copy_from_slice(&xattr::XATTR_MAGIC.to_le_bytes());
        }
        let _ = xattr::parse_ibody(&with_magic, 1);
        let _ = xattr::parse_block(&with_magic, 7, Some(seed));
        let _ = xattr::parse_block(&with_magic, 7, None);
        let mut b = with_magic.clone();
        xattr::finish_block(&mut b, 9, Some(seed));
        let _ = xattr::acl_from_disk(&bytes);
        let _ = xattr::acl_to_disk(&bytes);
        let il = InlineDir { dir_ino: 3, inodes_count: 1000, filetype: true };
        let mut ib = bytes.iter().copied().chain(std::iter::repeat(0)).take(60).collect::<Vec<_>>();
        let mut data = bytes.get(60..).unwrap_or(&[]).to_vec();
        let _ = il.list(&ib, &data);
        let _ = il.add(&mut ib, &mut data, b"x", 5, 1);
        let _ = il.remove(&mut ib, &mut data, b"x");
        let ctx = dir::BlockCtx { dir_ino: 1, lblk: 0, csum_seed: None, inodes_count: 100, filetype: true };
        let _ = dir::parse_block(&bytes, &ctx);
    }

    #[test]
    fn dirs_robust_corrupt_xattr_block(
        flips in prop::collection::vec((any::<u16>(), 1u8..=255), 1..8),
    ) {
        let mut attrs = Vec::new();
        for i in 0..12u32 {
            xattr::set(&mut attrs, format!("user.k{i}").as_bytes(), &vec![i as u8; (i * 5) as usize]).unwrap();
        }
        let (mut ib, blk) = xattr::layout(&attrs, 96, 1024).unwrap();
        let mut blk = blk.unwrap();
        xattr::finish_block(&mut blk, 3, None);
        for (off, x) in flips {
            let o = off as usize % 1024;
            blk[o] ^= x;
            let o = off as usize % ib.len();
            ib[o] ^= x;
        }
        let _ = xattr::parse_block(&blk, 3, None);
        let _ = xattr::parse_ibody(&ib, 3);
    }
}
