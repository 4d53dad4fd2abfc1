#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests of the directory code on an in-memory directory: random add/remove
//! sequences against a `BTreeMap` model, with the structural invariants (record chains,
//! checksums, index limits, hash order and ranges, every block referenced once) checked
//! after every step.

use imgscrub_ext4::Ext4Error;
use imgscrub_ext4::dir::{self, MemDir};
use imgscrub_ext4::htree;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Name `i` of the pool: lengths from 1 to 255, some bytes ≥ 0x80.
fn pool_name(i: u16, long: bool) -> Vec<u8> {
    let i = u32::from(i);
    let mut n = format!("{i:x}-").into_bytes();
    let extra = if long {
        200 + (i * 7) % 50
    } else {
        (i * 13) % 40
    };
    for k in 0..extra {
        n.push(b"abcxyz\xe9\xc3\x80_.-"[((i + k) % 12) as usize]);
    }
    n.truncate(255);
    n
}

#[derive(Debug, Clone)]
enum Op {
    Add(u16),
    Remove(u16),
    SetParent(u32),
    Replace(u16, u32),
}

fn ops(pool: u16, len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            6 => (0..pool).prop_map(Op::Add),
            3 => (0..pool).prop_map(Op::Remove),
            1 => (2u32..100).prop_map(Op::SetParent),
            1 => ((0..pool), 2u32..60000).prop_map(|(i, ino)| Op::Replace(i, ino)),
        ],
        1..len,
    )
}

/// Invariants of the whole directory, compared with the model.
fn check_all(d: &mut MemDir, model: &BTreeMap<Vec<u8>, u32>, parent: u32, lookups: bool) {
    if d.indexed {
        htree::check(d).unwrap();
    }
    let got: BTreeMap<Vec<u8>, u32> = dir::list(d)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.ino))
        .collect();
    assert_eq!(got.len(), model.len());
    assert!(got == *model, "listing differs from the model");
    assert_eq!(dir::parent(d).unwrap(), parent);
    if lookups {
        for (n, ino) in model {
            assert_eq!(dir::lookup(d, n).unwrap().map(|x| x.0), Some(*ino));
        }
    }
}

fn run(mut d: MemDir, ops: &[Op], long: bool) {
    dir::init(&mut d, 11, 2).unwrap();
    let mut model: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    let mut parent = 2;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Add(i) => {
                let n = pool_name(i, long);
                let ino = 1000 + u32::from(i);
                let r = dir::add(&mut d, &n, ino, 1);
                match model.entry(n) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        assert!(matches!(r, Err(Ext4Error::Exists(_))), "{r:?}");
                    }
                    std::collections::btree_map::Entry::Vacant(v) => {
                        r.unwrap();
                        v.insert(ino);
                    }
                }
            }
            Op::Remove(i) => {
                let n = pool_name(i, long);
                let r = dir::remove(&mut d, &n);
                match model.remove(&n) {
                    Some(ino) => assert_eq!(r.unwrap(), ino),
                    None => assert!(matches!(r, Err(Ext4Error::NotFound(_))), "{r:?}"),
                }
            }
            Op::Replace(i, ino) => {
                let n = pool_name(i, long);
                let r = dir::replace(&mut d, &n, ino, 2);
                match model.get_mut(&n) {
                    Some(old) => {
                        assert_eq!(r.unwrap(), *old);
                        *old = ino;
                    }
                    None => assert!(matches!(r, Err(Ext4Error::NotFound(_))), "{r:?}"),
                }
            }
            Op::SetParent(p) => {
                dir::set_parent(&mut d, p).unwrap();
                parent = p;
            }
        }
        check_all(&mut d, &model, parent, step % 64 == 0);
    }
    check_all(&mut d, &model, parent, true);
}

fn memdir(bs: u32, csum: bool, version: u8, unsigned: bool, index: bool) -> MemDir {
    let mut d = MemDir::new(11, bs, csum.then_some(0xdead_beef));
    d.hash.default_version = version;
    d.hash.unsigned = unsigned;
    d.dir_index = index;
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn dirs_prop_short_names(
        ops in ops(2000, 1500),
        bs in prop_oneof![Just(1024u32), Just(4096)],
        csum: bool,
        version in 0u8..3,
        unsigned: bool,
        index in prop::bool::weighted(0.8),
    ) {
        run(memdir(bs, csum, version, unsigned, index), &ops, false);
    }

    #[test]
    fn dirs_prop_long_names_node_splits(
        ops in ops(1200, 900),
        csum: bool,
        version in 0u8..3,
    ) {
        // 1 KiB blocks and ~250-byte names: about three entries a leaf, so the index
        // needs a second level and its nodes split.
        run(memdir(1024, csum, version, false, true), &ops, true);
    }
}

/// Fill a 1 KiB-block directory with long names until the two-level index is full
/// (NoSpace), then check everything is still consistent; with large_dir the same
/// directory grows a third level.
#[test]
fn dirs_htree_depth_limit_and_large_dir() {
    for large in [false, true] {
        let mut d = memdir(1024, true, 1, false, true);
        d.large_dir = large;
        dir::init(&mut d, 11, 2).unwrap();
        let mut model = BTreeMap::new();
        let mut full = false;
        let target = 40_000u32;
        for i in 0..target {
            let mut n = format!("{i:08}-").into_bytes();
            n.resize(250, b'q');
            match dir::add(&mut d, &n, 20 + i, 1) {
                Ok(()) => {
                    model.insert(n, 20 + i);
                }
                Err(Ext4Error::NoSpace(_)) if !large => {
                    full = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let (info, _) = htree::read_root(&mut d).unwrap();
        if large {
            assert_eq!(info.indirect_levels, 2, "three levels with large_dir");
        } else {
            assert!(full, "a two-level index must fill up");
            assert_eq!(info.indirect_levels, 1);
        }
        check_all(&mut d, &model, 2, true);
        // Removing everything leaves a valid (empty) htree.
        let names: Vec<Vec<u8>> = model.keys().step_by(7).cloned().collect();
        for n in names {
            let ino = model.remove(&n).unwrap();
            assert_eq!(dir::remove(&mut d, &n).unwrap(), ino);
        }
        check_all(&mut d, &model, 2, true);
    }
}
