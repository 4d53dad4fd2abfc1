#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Garbage in, no panic out: random extent trees and block maps (valid-looking headers with
//! random fields, random pointers) through every mapping entry point. Errors are fine;
//! panics, overflows and endless loops are not.

mod mapping_common;

use imgscrub_ext4::extent;
use imgscrub_ext4::mapping::{self, AllocMode, FileMap, MapKind};
use mapping_common::MemCtx;
use proptest::prelude::*;

const BS: u32 = 1024;
const BLOCKS: u64 = 48;

/// A node-like block: magic, random counts/depth, entries with small logical and physical
/// numbers so that pointers often land inside the filesystem.
fn node_bytes(len: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop_oneof![0u16..6, 0u16..90],
        prop_oneof![Just(4u16), Just(84u16), Just(83u16), 0u16..90],
        prop_oneof![Just(0u16), Just(1u16), 0u16..7],
        proptest::collection::vec((0u32..400, any::<u16>(), 0u32..(BLOCKS as u32 + 4)), 0..8),
        proptest::collection::vec(any::<u8>(), len),
    )
        .prop_map(move |(magic, entries, max, depth, ents, noise)| {
            let mut b = noise;
            if magic {
                b[0..2].copy_from_slice(&0xF30Au16.to_le_bytes());
            }
            b[2..4].copy_from_slice(&entries.to_le_bytes());
            b[4..6].copy_from_slice(&max.to_le_bytes());
            b[6..8].copy_from_slice(&depth.to_le_bytes());
            for (i, (l, len_or_hi, p)) in ents.into_iter().enumerate() {
                let o = 12 + 12 * i;
                if o + 12 > b.len() {
                    break;
                }
                b[o..o + 4].copy_from_slice(&l.to_le_bytes());
                b[o + 4..o + 6].copy_from_slice(&len_or_hi.to_le_bytes());
                b[o + 6..o + 8].copy_from_slice(&0u16.to_le_bytes());
                b[o + 8..o + 12].copy_from_slice(&p.to_le_bytes());
                if len_or_hi % 3 == 0 {
                    // Index-shaped entry: child in ei_leaf_lo.
                    b[o + 4..o + 8].copy_from_slice(&p.to_le_bytes());
                    b[o + 8..o + 10].copy_from_slice(&0u16.to_le_bytes());
                }
            }
            b
        })
}

fn ctx_with(blocks: Vec<Vec<u8>>) -> MemCtx {
    let mut ctx = MemCtx::new(BS, BLOCKS);
    ctx.lenient = true;
    for (i, b) in blocks.into_iter().enumerate() {
        let blk = i as u64 + 1;
        if blk < BLOCKS {
            ctx.used[blk as usize] = true;
            ctx.block_mut(blk).copy_from_slice(&b);
        }
    }
    ctx
}

fn exercise(ctx: &mut MemCtx, fm: &mut FileMap<'_>, ops: &[(u8, u64, u64)]) {
    let _ = mapping::extents(ctx, fm);
    let _ = mapping::metadata_blocks(ctx, fm);
    if fm.kind == MapKind::Extents {
        let _ = extent::verify_strict(ctx, fm);
        let _ = extent::needs_optimize(ctx, fm);
    }
    for &(op, a, b) in ops {
        let _ = match op % 5 {
            0 => mapping::map(ctx, fm, a).map(|_| ()),
            1 => mapping::allocate(ctx, fm, a, b % 50 + 1, 0, AllocMode::Write).map(|_| ()),
            2 => mapping::allocate(ctx, fm, a, b % 50 + 1, 0, AllocMode::Prealloc).map(|_| ()),
            3 => mapping::punch(ctx, fm, a, a.saturating_add(b)),
            _ => mapping::optimize(ctx, fm).map(|_| ()),
        };
    }
}

fn ops() -> impl Strategy<Value = Vec<(u8, u64, u64)>> {
    proptest::collection::vec(
        (
            any::<u8>(),
            prop_oneof![0u64..500, any::<u64>()],
            0u64..1000,
        ),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn mapping_robust_random_extent_trees(
        root in node_bytes(60),
        blocks in proptest::collection::vec(node_bytes(BS as usize), 1..(BLOCKS as usize - 1)),
        ops in ops(),
        csum in any::<bool>(),
    ) {
        let mut ctx = ctx_with(blocks);
        ctx.seed = csum.then_some(7);
        let mut ib: [u8; 60] = root.try_into().unwrap();
        let mut fm = FileMap::new(11, &mut ib, MapKind::Extents);
        exercise(&mut ctx, &mut fm, &ops);
    }

    #[test]
    fn mapping_robust_random_block_maps(
        ptrs in proptest::collection::vec(0u32..(BLOCKS as u32 + 8), 15),
        blocks in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(0u32), 0u32..(BLOCKS as u32 + 8), any::<u32>()], 256),
            1..(BLOCKS as usize - 1)),
        ops in ops(),
    ) {
        let blocks: Vec<Vec<u8>> = blocks
            .into_iter()
            .map(|w| w.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let mut ctx = ctx_with(blocks);
        let mut ib = [0u8; 60];
        for (i, p) in ptrs.iter().enumerate() {
            ib[i * 4..i * 4 + 4].copy_from_slice(&p.to_le_bytes());
        }
        let mut fm = FileMap::new(11, &mut ib, MapKind::BlockMap);
        exercise(&mut ctx, &mut fm, &ops);
    }
}

/// A valid depth-2 tree (built by our own code), then a few random byte flips in its root or
/// tree blocks.
fn mutated_tree(muts: &[(usize, usize, u8)], csum: bool) -> (MemCtx, [u8; 60]) {
    let mut ctx = MemCtx::new(BS, 2000);
    ctx.skip = 1;
    ctx.seed = csum.then_some(99);
    let mut ib = [0u8; 60];
    mapping::init_extents(&mut ib);
    {
        let mut fm = FileMap::new(11, &mut ib, MapKind::Extents);
        for i in 0..400 {
            mapping::allocate(&mut ctx, &mut fm, 2 * i, 1, 0, AllocMode::Write).unwrap();
        }
        let meta = mapping::metadata_blocks(&mut ctx, &mut fm).unwrap();
        for &(which, off, val) in muts {
            if which % (meta.len() + 1) == 0 {
                fm.i_block[off % 60] ^= val;
            } else {
                let b = meta[which % (meta.len() + 1) - 1];
                ctx.block_mut(b)[off % BS as usize] ^= val;
            }
        }
    }
    ctx.lenient = true;
    (ctx, ib)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn mapping_robust_mutated_extent_trees(
        muts in proptest::collection::vec((any::<usize>(), prop_oneof![0usize..64, any::<usize>()], 1u8..=255), 1..4),
        ops in ops(),
        csum in any::<bool>(),
    ) {
        let (mut ctx, mut ib) = mutated_tree(&muts, csum);
        let mut fm = FileMap::new(11, &mut ib, MapKind::Extents);
        exercise(&mut ctx, &mut fm, &ops);
    }
}
