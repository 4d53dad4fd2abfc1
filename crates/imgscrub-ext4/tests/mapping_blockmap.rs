#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Block maps (direct, single, double, triple indirect) on the in-memory fake.

mod mapping_common;

use std::collections::BTreeMap;

use imgscrub_ext4::Ext4Error;
use imgscrub_ext4::mapping::{self, AllocMode, FileMap, MapKind};
use mapping_common::{MemCtx, check_accounting, expand};
use proptest::prelude::*;

type Model = BTreeMap<u64, u64>;

/// 1 KiB blocks: p = 256; single from 12, double from 268, triple from 65804.
const BS: u32 = 1024;
const MAX: u64 = 12 + 256 + 65536 + 16_777_216;

fn check(ctx: &mut MemCtx, fm: &mut FileMap<'_>, model: &Model) {
    let ext = mapping::extents(ctx, fm).unwrap();
    let got: Vec<(u64, u64)> = expand(&ext).into_iter().map(|(l, p, _)| (l, p)).collect();
    let want: Vec<(u64, u64)> = model.iter().map(|(&l, &p)| (l, p)).collect();
    assert_eq!(got, want);
    // No empty indirect block is left behind.
    for b in mapping::metadata_blocks(ctx, fm).unwrap() {
        assert!(
            ctx.block(b).iter().any(|&x| x != 0),
            "empty indirect block {b}"
        );
    }
    check_accounting(ctx, fm);
}

fn alloc(ctx: &mut MemCtx, fm: &mut FileMap<'_>, model: &mut Model, l: u64, n: u64) {
    let runs = mapping::allocate(ctx, fm, l, n, 10, AllocMode::Write).unwrap();
    let mut reported = Vec::new();
    for r in &runs {
        assert!(r.must_write);
        for i in 0..r.len {
            reported.push(r.lblk + i);
            assert!(model.insert(r.lblk + i, r.pblk + i).is_none());
        }
    }
    let holes: Vec<u64> = (l..l + n).filter(|x| !reported.contains(x)).collect();
    for h in holes {
        assert!(model.contains_key(&h), "block {h} not allocated");
    }
}

fn punch(ctx: &mut MemCtx, fm: &mut FileMap<'_>, model: &mut Model, f: u64, t: u64) {
    mapping::punch(ctx, fm, f, t).unwrap();
    let keys: Vec<u64> = model.range(f..t).map(|(&k, _)| k).collect();
    for k in keys {
        model.remove(&k);
    }
}

#[test]
fn mapping_blockmap_levels() {
    assert_eq!(mapping::max_lblk(MapKind::BlockMap, BS), MAX);
    let mut ctx = MemCtx::new(BS, 4000);
    let mut ib = [0u8; 60];
    let mut fm = FileMap::new(13, &mut ib, MapKind::BlockMap);
    let mut model = Model::new();
    // Across direct → single → double, then at the start and the end of triple.
    alloc(&mut ctx, &mut fm, &mut model, 0, 300);
    check(&mut ctx, &mut fm, &model);
    let meta = mapping::metadata_blocks(&mut ctx, &mut fm).unwrap();
    assert_eq!(meta.len(), 3, "single, double, one single under double");
    // The file is contiguous except for the indirect blocks placed inline.
    let m = mapping::map(&mut ctx, &mut fm, 0).unwrap();
    assert_eq!(m.len, 12);
    alloc(&mut ctx, &mut fm, &mut model, 65800, 10);
    alloc(&mut ctx, &mut fm, &mut model, MAX - 3, 3);
    check(&mut ctx, &mut fm, &model);
    assert_eq!(fm.blocks_delta, ctx.used_count() as i64);
    let m = mapping::map(&mut ctx, &mut fm, 70_000).unwrap();
    assert_eq!(m.pblk, None);
    assert!(m.len >= 1 && 70_000 + m.len <= MAX - 3);
    // Beyond the largest block: refused.
    assert!(matches!(
        mapping::allocate(&mut ctx, &mut fm, MAX, 1, 0, AllocMode::Write),
        Err(Ext4Error::InvalidArgument(_))
    ));
    // Punch the triple range: its indirect blocks go away.
    punch(&mut ctx, &mut fm, &mut model, 65804, u64::MAX);
    check(&mut ctx, &mut fm, &model);
    let w = |ib: &[u8; 60], i: usize| u32::from_le_bytes(ib[i * 4..i * 4 + 4].try_into().unwrap());
    assert_eq!(w(fm.i_block, 14), 0);
    assert_ne!(w(fm.i_block, 13), 0);
    punch(&mut ctx, &mut fm, &mut model, 0, u64::MAX);
    check(&mut ctx, &mut fm, &model);
    assert_eq!(*fm.i_block, [0u8; 60]);
    assert_eq!(ctx.used_count(), 0);
}

#[test]
fn mapping_blockmap_corrupt_pointer() {
    let mut ctx = MemCtx::new(BS, 1000);
    let mut ib = [0u8; 60];
    let mut fm = FileMap::new(21, &mut ib, MapKind::BlockMap);
    mapping::allocate(&mut ctx, &mut fm, 0, 20, 0, AllocMode::Write).unwrap();
    let ind = u32::from_le_bytes(fm.i_block[48..52].try_into().unwrap()) as u64;
    ctx.block_mut(ind)[8..12].copy_from_slice(&5000u32.to_le_bytes());
    let e = mapping::extents(&mut ctx, &mut fm).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains(&format!("indirect block {ind} of inode 21")),
        "{s}"
    );
    assert!(matches!(
        mapping::map(&mut ctx, &mut fm, 14),
        Err(Ext4Error::Corrupt { .. })
    ));
    fm.i_block[0..4].copy_from_slice(&0u32.to_le_bytes());
    fm.i_block[4..8].copy_from_slice(&1_000_000u32.to_le_bytes());
    assert!(matches!(
        mapping::map(&mut ctx, &mut fm, 1),
        Err(Ext4Error::Corrupt { .. })
    ));
    assert!(matches!(
        mapping::punch(&mut ctx, &mut fm, 0, 5),
        Err(Ext4Error::Corrupt { .. })
    ));
}

#[test]
fn mapping_blockmap_nospace_keeps_allocated() {
    let mut ctx = MemCtx::new(BS, 1000);
    ctx.max_run = 1;
    let mut ib = [0u8; 60];
    let mut fm = FileMap::new(21, &mut ib, MapKind::BlockMap);
    for budget in [0u64, 1, 5, 13, 14, 300] {
        ctx.fail_after = Some(budget);
        let r = mapping::allocate(&mut ctx, &mut fm, 0, 600, 0, AllocMode::Write);
        assert!(matches!(r, Err(Ext4Error::NoSpace(_))));
        ctx.fail_after = None;
        check_accounting(&mut ctx, &mut fm);
        for b in mapping::metadata_blocks(&mut ctx, &mut fm).unwrap() {
            assert!(
                ctx.block(b).iter().any(|&x| x != 0),
                "empty indirect block {b}"
            );
        }
        mapping::punch(&mut ctx, &mut fm, 0, u64::MAX).unwrap();
        assert_eq!(ctx.used_count(), 0);
    }
}

fn lblk() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..400,
        65_600u64..66_100,
        16_000_000u64..16_000_600,
        (MAX - 400)..MAX,
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(u64, u64),
    Punch(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (lblk(), 1u64..300).prop_map(|(l, n)| Op::Alloc(l, n.min(MAX - l))),
        (lblk(), 1u64..600).prop_map(|(l, n)| Op::Punch(l, l + n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]
    #[test]
    fn mapping_blockmap_model(ops in proptest::collection::vec(op(), 1..30), max_run in 1u32..8, skip in 0u64..3) {
        let mut ctx = MemCtx::new(BS, 12_000);
        ctx.max_run = max_run;
        ctx.skip = skip;
        let mut ib = [0u8; 60];
        let mut fm = FileMap::new(12, &mut ib, MapKind::BlockMap);
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Alloc(l, n) => alloc(&mut ctx, &mut fm, &mut model, l, n),
                Op::Punch(f, t) => punch(&mut ctx, &mut fm, &mut model, f, t),
            }
            check(&mut ctx, &mut fm, &model);
            // map() agrees with the model at a few points.
            for (&l, &p) in model.iter().step_by(37) {
                let m = mapping::map(&mut ctx, &mut fm, l).unwrap();
                prop_assert_eq!(m.pblk, Some(p));
                for i in 0..m.len {
                    prop_assert_eq!(model.get(&(l + i)), Some(&(p + i)));
                }
            }
        }
        punch(&mut ctx, &mut fm, &mut model, 0, u64::MAX);
        check(&mut ctx, &mut fm, &model);
        prop_assert_eq!(ctx.used_count(), 0);
        prop_assert_eq!(*fm.i_block, [0u8; 60]);
    }
}
