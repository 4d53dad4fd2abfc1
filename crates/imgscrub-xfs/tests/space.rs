#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The AG space manager (`imgscrub_xfs::space`) against the real tools on the v5 variants of
//! the mkfs.xfs matrix: balanced allocate/free sequences leave `xfs_db freesp -d`, the AGF
//! and AGI as they were and `xfs_repair -n` silent; allocations show up in `freesp` with
//! the AGF counters and `sb_fdblocks` right; inode allocations (existing chunks, new full
//! and sparse chunks) freed again leave the inode btrees as they were; fragmenting an AG
//! forces multi-level free-space btrees that xfs_repair accepts.

use imgscrub_disk::{BlockDev, RawFile};
use imgscrub_testkit as tk;
use imgscrub_xfs::reader::Reader;
use imgscrub_xfs::space::{Owner, Space, Stamp};
use imgscrub_xfs::{Superblock, XfsError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Deterministic xorshift generator (tests only).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Img {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn image(variant: &str) -> Option<Img> {
    let dir = tempfile::tempdir().unwrap();
    let fx = tk::make_xfs(variant, dir.path())?;
    let path = dir.path().join("work.img");
    std::fs::copy(&fx.image, &path).unwrap();
    Some(Img { _dir: dir, path })
}

fn read_sb(dev: &dyn BlockDev) -> Superblock {
    let mut b = vec![0u8; 4096];
    dev.read_at(&mut b, 0).unwrap();
    Superblock::parse(&b).unwrap()
}

fn stamp(sb: &Superblock) -> Stamp {
    Stamp {
        uuid: sb.meta_uuid(),
        lsn: 1 << 32,
    }
}

/// Write the superblock counters the way the lead's flush will (sb 0 only; the secondary
/// copies are not updated by the kernel either).
fn write_counters(dev: &dyn BlockDev, sb: &Superblock, sp: &Space) {
    let ss = usize::from(sb.sectsize);
    let mut b = vec![0u8; ss];
    dev.read_at(&mut b, 0).unwrap();
    b[128..136].copy_from_slice(&sp.icount().to_be_bytes());
    b[136..144].copy_from_slice(&sp.ifree().to_be_bytes());
    b[144..152].copy_from_slice(&sp.fdblocks().to_be_bytes());
    let c = imgscrub_xfs::csum::compute(&b, 224);
    b[224..228].copy_from_slice(&c.to_le_bytes());
    dev.write_at(&b, 0).unwrap();
}

/// `agf N` / `agi N` fields of every AG (lsn and crc left out).
fn headers(img: &Path, which: &str) -> Vec<BTreeMap<String, String>> {
    let sb = tk::xfs_sb(img);
    (0..sb.agcount)
        .map(|ag| {
            let mut f = tk::xfs_db_fields(&tk::xfs_db(img, &[&format!("{which} {ag}"), "print"]));
            f.remove("lsn");
            f.remove("crc");
            f
        })
        .collect()
}

fn sb_field(img: &Path, k: &str) -> u64 {
    let out = tk::xfs_db(img, &["sb 0", &format!("print {k}")]);
    tk::xfs_db_fields(&out)[k].parse().unwrap()
}

fn repair_clean(img: &Path, ctx: &str) {
    if let Err(e) = tk::xfs_repair_check(img) {
        panic!("{ctx}: xfs_repair -n is not clean:\n{e}");
    }
    assert_eq!(blockget(img), "", "{ctx}: xfs_db blockget -n");
}

/// `xfs_db blockget -n`: every block's owner checked (xfs_repair -n does not report blocks
/// that are neither free nor owned; blockget does, as "type unknown not expected").
fn blockget(img: &Path) -> String {
    let o = std::process::Command::new("xfs_db")
        .env(
            "PATH",
            format!(
                "{}:/sbin:/usr/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .args(["-r", "-c", "blockget -n"])
        .arg(img)
        .output()
        .expect("xfs_db");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn file_owner(i: u64) -> Owner {
    Owner::File {
        ino: 1000 + i,
        attr: false,
        offset: 0,
    }
}

/// Allocate `n` random extents, free them in another random order, flush: nothing changed.
/// Where an AG's btrees were built by the kernel with room to spare (the rmapbt variant),
/// the rebuilt btrees are smaller and the layout moves: only the totals are compared then.
fn balanced(variant: &str, n: usize, max_len: u64, seed: u64) {
    let exact_layout = variant != "rmapbt";
    let Some(img) = image(variant) else { return };
    let before_freesp = tk::xfs_freesp(&img.path);
    let before_agf = headers(&img.path, "agf");
    let before_fd = sb_field(&img.path, "fdblocks");
    let dev = RawFile::open_rw(&img.path).unwrap();
    let sb = read_sb(&dev);
    let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
    assert_eq!(sp.fdblocks(), before_fd, "{variant}: fdblocks at load");
    let mut rng = Rng(seed);
    let total = sb.dblocks;
    let mut got = Vec::new();
    for i in 0..n {
        let near = rng.below(total);
        let near = (near / u64::from(sb.agblocks)) << sb.agblklog | (near % u64::from(sb.agblocks));
        let len = 1 + rng.below(max_len);
        let (fsb, l) = sp.alloc(near, len, 1, file_owner(i as u64)).unwrap();
        assert!(l >= 1 && l <= len);
        got.push((fsb, l, i));
    }
    // no two allocations overlap
    let mut sorted = got.clone();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{variant}: overlapping allocations {w:?}"
        );
    }
    for k in (1..got.len()).rev() {
        let j = rng.below(k as u64 + 1) as usize;
        got.swap(k, j);
    }
    for &(fsb, l, i) in &got {
        sp.free(fsb, l, file_owner(i as u64)).unwrap();
    }
    // a double free is refused
    if let Some(&(fsb, l, i)) = got.first() {
        assert!(matches!(
            sp.free(fsb, l, file_owner(i as u64)),
            Err(XfsError::Invalid(_))
        ));
    }
    // so are frees of AG metadata (the by-block btree root, from `agf 0`), of the block
    // holding the root inode, and of AG 0's header block
    let bnoroot: u64 = before_agf[0]["bnoroot"].parse().unwrap();
    let root_block = {
        let agshift = u32::from(sb.agblklog) + u32::from(sb.inopblog);
        ((sb.rootino >> agshift) << sb.agblklog)
            | ((sb.rootino & ((1 << agshift) - 1)) >> sb.inopblog)
    };
    for fsb in [bnoroot, root_block, 0] {
        assert!(
            matches!(sp.free(fsb, 1, file_owner(0)), Err(XfsError::Invalid(_))),
            "{variant}: free of block {fsb} accepted"
        );
    }
    sp.flush(&dev, &sb, &stamp(&sb)).unwrap();
    assert_eq!(sp.fdblocks(), before_fd);
    write_counters(&dev, &sb, &sp);
    drop(dev);
    repair_clean(&img.path, variant);
    if exact_layout {
        assert_eq!(
            tk::xfs_freesp(&img.path),
            before_freesp,
            "{variant}: freesp -d"
        );
        assert_eq!(headers(&img.path, "agf"), before_agf, "{variant}: AGF");
    } else {
        let total = |v: &[(u64, u64, u64)]| v.iter().map(|r| r.2).sum::<u64>();
        let agf = headers(&img.path, "agf");
        let n = |f: &BTreeMap<String, String>, k: &str| f[k].parse::<u64>().unwrap();
        for (ag, (a, b)) in agf.iter().zip(&before_agf).enumerate() {
            assert_eq!(
                n(a, "freeblks") + n(a, "flcount") + n(a, "btreeblks"),
                n(b, "freeblks") + n(b, "flcount") + n(b, "btreeblks"),
                "{variant}: AG {ag}: {a:?} / {b:?}"
            );
        }
        let moved: u64 = agf
            .iter()
            .zip(&before_agf)
            .map(|(a, b)| n(b, "btreeblks") - n(a, "btreeblks"))
            .sum();
        assert_eq!(
            total(&tk::xfs_freesp(&img.path)),
            total(&before_freesp) + moved
        );
    }
    assert_eq!(sb_field(&img.path, "fdblocks"), before_fd);
}

const V5: &[&str] = &[
    "v5", "centos7", "el9", "b1k", "b2k", "n64k", "i1k", "sparse", "s4k", "ag1", "ag8", "stripe",
    "ci", "nrext64",
];

#[test]
fn balanced_alloc_free_matrix() {
    for (k, v) in V5.iter().enumerate() {
        balanced(v, 60, 40, 0x9e37_79b9_7f4a_7c15 ^ k as u64);
    }
}

#[test]
fn balanced_rmapbt() {
    balanced("rmapbt", 60, 40, 5);
}

#[test]
fn v4_is_refused_for_writing() {
    let Some(img) = image("v4") else { return };
    let dev = RawFile::open(&img.path).unwrap();
    let sb = read_sb(&dev);
    assert!(matches!(
        Space::load(&Reader::new(&dev, &sb)),
        Err(XfsError::ReadOnly(_))
    ));
}

/// Per-AG free blocks as `freesp -d` lists them (btree records and AGFL blocks), as a set of
/// (ag, block) runs merged.
fn free_blocks(img: &Path) -> BTreeMap<(u64, u64), u64> {
    let mut m: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for (ag, b, l) in tk::xfs_freesp(img) {
        for x in b..b + l {
            m.insert((ag, x), 1);
        }
    }
    m
}

/// Allocations stay allocated after a flush: `freesp` no longer lists them, the AGF
/// counters add up to `sb_fdblocks`, and xfs_repair -n says what it says about blocks that
/// no inode owns (recorded in the assertion below).
fn alloc_persist(variant: &str) {
    let Some(img) = image(variant) else { return };
    let before = free_blocks(&img.path);
    let before_fd = sb_field(&img.path, "fdblocks");
    let dev = RawFile::open_rw(&img.path).unwrap();
    let sb = read_sb(&dev);
    let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
    let mut got = Vec::new();
    let mut rng = Rng(77);
    for i in 0..20 {
        let ag = i % u64::from(sb.agcount);
        let near = (ag << sb.agblklog) | rng.below(u64::from(sb.agblocks));
        let (fsb, l) = sp.alloc(near, 1 + rng.below(30), 1, file_owner(i)).unwrap();
        got.push((fsb, l));
    }
    let used: u64 = got.iter().map(|&(_, l)| l).sum();
    sp.flush(&dev, &sb, &stamp(&sb)).unwrap();
    assert_eq!(sp.fdblocks(), before_fd - used, "{variant}");
    write_counters(&dev, &sb, &sp);
    drop(dev);
    let after = free_blocks(&img.path);
    let mask = (1u64 << sb.agblklog) - 1;
    for &(fsb, l) in &got {
        for x in fsb..fsb + l {
            let key = (x >> sb.agblklog, x & mask);
            assert!(before.contains_key(&key), "{variant}: {key:?} was not free");
            assert!(!after.contains_key(&key), "{variant}: {key:?} still free");
        }
    }
    // AGF counters against the records xfs_db lists
    let agf = headers(&img.path, "agf");
    let mut fd = 0u64;
    for (ag, f) in agf.iter().enumerate() {
        let n = |k: &str| f[k].parse::<u64>().unwrap();
        let recs: Vec<(u64, u64, u64)> = tk::xfs_freesp(&img.path)
            .into_iter()
            .filter(|r| r.0 == ag as u64)
            .collect();
        let listed: u64 = recs.iter().map(|r| r.2).sum();
        assert_eq!(listed, n("freeblks") + n("flcount"), "{variant}: AG {ag}");
        fd += n("freeblks") + n("flcount") + n("btreeblks");
    }
    assert_eq!(fd, before_fd - used);
    assert_eq!(sb_field(&img.path, "fdblocks"), before_fd - used);
    // xfs_repair -n (6.1) is silent about blocks that are neither free nor owned (its
    // phase 5 is skipped in no-modify mode), but the counters it does check hold.
    // With an rmapbt it cross-checks the reverse mappings against what inodes claim, and
    // names exactly the allocated ranges (their rmap owners are inodes that do not map them).
    let mut runs: Vec<(u64, u64, u64)> = Vec::new();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    for &(fsb, l) in &sorted {
        let (ag, b) = (fsb >> sb.agblklog, fsb & ((1u64 << sb.agblklog) - 1));
        match runs.last_mut() {
            Some(r) if r.0 == ag && r.2 + 1 == b => r.2 = b + l - 1,
            _ => runs.push((ag, b, b + l - 1)),
        }
    }
    match tk::xfs_repair_check(&img.path) {
        Ok(()) => assert!(variant != "rmapbt", "{variant}: xfs_repair -n saw nothing"),
        Err(out) => {
            assert_eq!(variant, "rmapbt", "{variant}: {out}");
            let lines: Vec<&str> = out
                .lines()
                .filter(|l| !l.trim_start().starts_with("- ") && !l.starts_with("Phase"))
                .filter(|l| l.contains("would") || l.contains("unknown") || l.contains("counted"))
                .collect();
            let want: Vec<String> = runs
                .iter()
                .map(|(ag, s, e)| format!("unknown block state, ag {ag}, blocks {s}-{e}"))
                .collect();
            assert_eq!(lines, want, "{variant}: {out}");
        }
    }
    // xfs_db blockget lists exactly the allocated blocks as owned by nobody.
    let mut leaked: Vec<String> = blockget(&img.path).lines().map(str::to_owned).collect();
    leaked.sort();
    let mut want: Vec<String> = got
        .iter()
        .flat_map(|&(fsb, l)| fsb..fsb + l)
        .map(|x| {
            format!(
                "block {}/{} type unknown not expected",
                x >> sb.agblklog,
                x & mask
            )
        })
        .collect();
    want.sort();
    assert_eq!(leaked, want, "{variant}: blockget");
}

#[test]
fn allocations_persist_v5_and_b1k() {
    alloc_persist("rmapbt");
    alloc_persist("v5");
    alloc_persist("b1k");
}

/// Fragment an AG into thousands of free records (multi-level btrees), flush and check,
/// then free everything and flush again: xfs_repair -n clean.
fn fragment(variant: &str) {
    let Some(img) = image(variant) else { return };
    let before_fd = sb_field(&img.path, "fdblocks");
    let dev = RawFile::open_rw(&img.path).unwrap();
    let sb = read_sb(&dev);
    let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
    // take every other block of the biggest free extent of AG 0
    let (s, l) = sp
        .free_extents(0)
        .into_iter()
        .max_by_key(|&(_, l)| l)
        .unwrap();
    let mut got = Vec::new();
    let mut b = s + 1;
    while b + 1 < s + l && got.len() < 3000 {
        let (fsb, n) = sp
            .alloc(u64::from(b), 1, 1, file_owner(got.len() as u64))
            .unwrap();
        assert_eq!(
            (fsb, n),
            (u64::from(b), 1),
            "{variant}: exact near allocation"
        );
        got.push(fsb);
        b += 2;
    }
    sp.flush(&dev, &sb, &stamp(&sb)).unwrap();
    write_counters(&dev, &sb, &sp);
    let agf0 = &headers(&img.path, "agf")[0];
    assert!(
        agf0["bnolevel"].parse::<u32>().unwrap() >= 2,
        "{variant}: {agf0:?}"
    );
    let fd: u64 = headers(&img.path, "agf")
        .iter()
        .map(|f| {
            ["freeblks", "flcount", "btreeblks"]
                .iter()
                .map(|k| f[*k].parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(fd, before_fd - got.len() as u64);
    assert_eq!(sp.fdblocks(), fd);
    // our view equals xfs_db's
    let ours: Vec<(u64, u64)> = sp
        .free_extents(0)
        .into_iter()
        .map(|(s, l)| (u64::from(s), u64::from(l)))
        .collect();
    let agfl: std::collections::BTreeSet<(u64, u64)> =
        tk::xfs_agfl(&img.path).into_iter().collect();
    let theirs: Vec<(u64, u64)> = tk::xfs_freesp(&img.path)
        .into_iter()
        .filter(|r| r.0 == 0 && !(r.2 == 1 && agfl.contains(&(0, r.1))))
        .map(|r| (r.1, r.2))
        .collect();
    assert_eq!(ours, theirs, "{variant}");
    if sb.has_ro_compat(imgscrub_xfs::superblock::ro_compat::RMAPBT) {
        // the reverse mapping knows who owns what
        assert!(matches!(
            sp.free(got[0], 1, file_owner(1)),
            Err(XfsError::Invalid(_))
        ));
    }
    for (i, &f) in got.iter().enumerate() {
        sp.free(f, 1, file_owner(i as u64)).unwrap();
    }
    sp.flush(&dev, &sb, &stamp(&sb)).unwrap();
    write_counters(&dev, &sb, &sp);
    drop(dev);
    repair_clean(&img.path, variant);
    assert_eq!(sb_field(&img.path, "fdblocks"), before_fd);
    let agf0 = &headers(&img.path, "agf")[0];
    assert_eq!(agf0["bnolevel"], "1", "{variant}: shrinks back");
}

#[test]
fn fragmented_multilevel_btrees() {
    fragment("b1k");
    fragment("ag1");
    fragment("rmapbt");
}

/// Allocate inodes (more than the free ones, so new chunks are made) and free them again.
fn inode_pairs(variant: &str, n: usize) {
    let Some(img) = image(variant) else { return };
    let before_agi = headers(&img.path, "agi");
    let before_freesp = tk::xfs_freesp(&img.path);
    let (icount, ifree) = (sb_field(&img.path, "icount"), sb_field(&img.path, "ifree"));
    let dev = RawFile::open_rw(&img.path).unwrap();
    let sb = read_sb(&dev);
    let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
    assert_eq!((sp.icount(), sp.ifree()), (icount, ifree), "{variant}");
    let st = stamp(&sb);
    let mut inos = Vec::new();
    for _ in 0..n {
        let ino = sp.alloc_inode(&dev, &sb, &st, sb.rootino).unwrap();
        assert!(!inos.contains(&ino));
        inos.push(ino);
    }
    // flushed once with the inodes in use: the new chunks are in the inobt
    sp.flush(&dev, &sb, &st).unwrap();
    write_counters(&dev, &sb, &sp);
    check_in_use_but_free(&img.path, variant, &inos, &[]);
    for &ino in inos.iter().rev() {
        sp.free_inode(ino).unwrap();
    }
    assert!(sp.free_inode(inos[0]).is_err());
    sp.flush(&dev, &sb, &st).unwrap();
    write_counters(&dev, &sb, &sp);
    drop(dev);
    repair_clean(&img.path, variant);
    let mut after = headers(&img.path, "agi");
    let mut before = before_agi;
    for h in after.iter_mut().chain(before.iter_mut()) {
        h.remove("newino"); // the kernel does not move it back either
    }
    assert_eq!(after, before, "{variant}: AGI");
    assert_eq!(
        tk::xfs_freesp(&img.path),
        before_freesp,
        "{variant}: freesp"
    );
    assert_eq!(
        (sb_field(&img.path, "icount"), sb_field(&img.path, "ifree")),
        (icount, ifree)
    );
}

/// With the allocated inodes' cores still free (the caller writes them), the oracles report
/// exactly those inodes and nothing else: the inobt, finobt, AGI and counters agree.
fn check_in_use_but_free(img: &Path, ctx: &str, inos: &[u64], leaked: &[(u64, u64)]) {
    let sb = tk::xfs_sb(img);
    let agblklog = sb.fields["agblklog"].parse::<u32>().unwrap();
    let leaked: std::collections::BTreeSet<String> = leaked
        .iter()
        .flat_map(|&(f, n)| f..f + n)
        .map(|x| {
            format!(
                "block {}/{} type unknown not expected",
                x >> agblklog,
                x & ((1 << agblklog) - 1)
            )
        })
        .collect();
    let out = tk::xfs_repair_check(img).err().unwrap_or_default();
    let mut got: Vec<u64> = Vec::new();
    // progress lines ("        - 07:24:03: ...") and phase headers are not findings
    let findings = out
        .lines()
        .filter(|l| !l.trim_start().starts_with("- ") && !l.starts_with("Phase"));
    for l in findings.filter(|l| l.contains("would") || l.contains("counted")) {
        let n = l
            .strip_prefix("imap claims a free inode ")
            .and_then(|r| r.strip_suffix(" is in use, would correct imap and clear inode"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{ctx}: unexpected xfs_repair -n line: {l}\n{out}"));
        got.push(n);
    }
    got.sort_unstable();
    let mut want = inos.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{ctx}: xfs_repair -n");
    for l in blockget(img).lines().filter(|l| !leaked.contains(*l)) {
        let n: u64 = l
            .strip_prefix("bad format 0 for inode ")
            .and_then(|r| r.strip_suffix(" type 0"))
            .or_else(|| {
                l.strip_prefix("allocated inode ")
                    .and_then(|r| r.strip_suffix(" has 0 link count"))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{ctx}: unexpected blockget line: {l}"));
        assert!(want.binary_search(&n).is_ok(), "{ctx}: blockget: {l}");
    }
}

#[test]
fn inode_alloc_free_matrix() {
    for v in [
        "v5", "centos7", "el9", "b1k", "i1k", "sparse", "ag1", "stripe",
    ] {
        inode_pairs(v, 200);
    }
}

/// No full aligned chunk fits anywhere: new chunks are sparse (one cluster of
/// `sb_spino_align` blocks, the rest of the record a hole); freed again, the space returns.
#[test]
fn sparse_chunks_when_no_full_chunk_fits() {
    let variant = "sparse";
    let Some(img) = image(variant) else { return };
    let before_fd = sb_field(&img.path, "fdblocks");
    let (icount, ifree) = (sb_field(&img.path, "icount"), sb_field(&img.path, "ifree"));
    let dev = RawFile::open_rw(&img.path).unwrap();
    let sb = read_sb(&dev);
    assert!(
        sb.spino_align > 0 && sb.spino_align < sb.inoalignmt,
        "{sb:?}"
    );
    let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
    let align = sb.inoalignmt;
    // one used block at the start of every aligned chunk window
    let mut blockers = Vec::new();
    for ag in 0..sb.agcount {
        for (s, l) in sp.free_extents(ag) {
            let mut w = s.div_ceil(align) * align;
            while w < s + l {
                let fsb = (u64::from(ag) << sb.agblklog) | u64::from(w);
                if let Ok((f, n)) = sp.alloc(fsb, 1, 1, file_owner(blockers.len() as u64)) {
                    blockers.push((f, n));
                }
                w += align;
            }
        }
    }
    let st = stamp(&sb);
    let per_cluster = u64::from(sb.spino_align) << sb.inopblog;
    let mut inos = Vec::new();
    for _ in 0..(3 * per_cluster + 20) {
        inos.push(sp.alloc_inode(&dev, &sb, &st, sb.rootino).unwrap());
    }
    sp.flush(&dev, &sb, &st).unwrap();
    write_counters(&dev, &sb, &sp);
    check_in_use_but_free(&img.path, variant, &inos, &blockers);
    // the inode btree of AG 0 holds records with holes (holemask != 0)
    let out = tk::xfs_db(&img.path, &["agi 0", "addr root", "print recs"]);
    let sparse_recs = out
        .split_whitespace()
        .filter_map(|r| {
            r.split_once(":[")
                .map(|(_, v)| v.trim_end_matches(']').to_owned())
        })
        .filter(|v| v.split(',').nth(1).is_some_and(|h| h != "0"))
        .count();
    assert!(sparse_recs >= 3, "{variant}: {out}");
    for &ino in &inos {
        sp.free_inode(ino).unwrap();
    }
    for (i, &(f, n)) in blockers.iter().enumerate() {
        sp.free(f, n, file_owner(i as u64)).unwrap();
    }
    sp.flush(&dev, &sb, &st).unwrap();
    write_counters(&dev, &sb, &sp);
    drop(dev);
    repair_clean(&img.path, variant);
    assert_eq!(sb_field(&img.path, "fdblocks"), before_fd);
    assert_eq!(
        (sb_field(&img.path, "icount"), sb_field(&img.path, "ifree")),
        (icount, ifree)
    );
}

/// Several sessions of random allocations and frees (of what earlier sessions allocated),
/// each ended by a flush. After every flush `xfs_db blockget -n` names as owned by nobody
/// exactly the blocks we hold, xfs_repair -n reports nothing else (with an rmapbt: exactly
/// those ranges), and `sb_fdblocks` is right. Run twice on two copies: byte-identical images.
fn random_sessions(variant: &str, seed: u64) {
    let Some(img) = image(variant) else { return };
    let copy = img.path.with_extension("copy");
    std::fs::copy(&img.path, &copy).unwrap();
    let before_fd = sb_field(&img.path, "fdblocks");
    let rmapbt = variant == "rmapbt";
    for (pass, path) in [&img.path, &copy].into_iter().enumerate() {
        let dev = RawFile::open_rw(path).unwrap();
        let sb = read_sb(&dev);
        let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
        let mut rng = Rng(seed);
        let mut held: Vec<(u64, u64, u64)> = Vec::new(); // fsb, len, owner
        let mut next_owner = 0u64;
        let mask = (1u64 << sb.agblklog) - 1;
        for round in 0..4 {
            for _ in 0..(40 + rng.below(80)) {
                if held.is_empty() || rng.below(3) != 0 {
                    let ag = rng.below(u64::from(sb.agcount));
                    let near = (ag << sb.agblklog) | rng.below(u64::from(sb.agblocks));
                    let big = rng.below(4) == 0;
                    let len = 1 + rng.below(if big { 200 } else { 8 });
                    let (f, l) = sp.alloc(near, len, 1, file_owner(next_owner)).unwrap();
                    held.push((f, l, next_owner));
                    next_owner += 1;
                } else {
                    let k = rng.below(held.len() as u64) as usize;
                    let (f, l, o) = held.swap_remove(k);
                    sp.free(f, l, file_owner(o)).unwrap();
                }
            }
            sp.flush(&dev, &sb, &stamp(&sb)).unwrap();
            write_counters(&dev, &sb, &sp);
            if pass == 1 {
                continue;
            }
            let ctx = format!("{variant} round {round}");
            let used: u64 = held.iter().map(|h| h.1).sum();
            assert_eq!(sb_field(path, "fdblocks"), before_fd - used, "{ctx}");
            let mut want: Vec<String> = held
                .iter()
                .flat_map(|&(f, l, _)| f..f + l)
                .map(|x| {
                    format!(
                        "block {}/{} type unknown not expected",
                        x >> sb.agblklog,
                        x & mask
                    )
                })
                .collect();
            want.sort();
            let mut got: Vec<String> = blockget(path).lines().map(str::to_owned).collect();
            got.sort();
            assert_eq!(got, want, "{ctx}: blockget");
            let findings: Vec<String> = match tk::xfs_repair_check(path) {
                Ok(()) => Vec::new(),
                Err(out) => out
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("- ") && !l.starts_with("Phase"))
                    .filter(|l| {
                        l.contains("would") || l.contains("unknown") || l.contains("counted")
                    })
                    .map(str::to_owned)
                    .collect(),
            };
            if rmapbt {
                let runs = unknown_runs(&sb, held.iter().map(|&(f, l, _)| (f, l)));
                assert_eq!(findings, runs, "{ctx}: xfs_repair -n");
            } else {
                assert!(findings.is_empty(), "{ctx}: xfs_repair -n: {findings:?}");
            }
        }
        for (f, l, o) in held.drain(..) {
            sp.free(f, l, file_owner(o)).unwrap();
        }
        sp.flush(&dev, &sb, &stamp(&sb)).unwrap();
        write_counters(&dev, &sb, &sp);
    }
    repair_clean(&img.path, variant);
    assert_eq!(sb_field(&img.path, "fdblocks"), before_fd);
    assert!(
        std::fs::read(&img.path).unwrap() == std::fs::read(&copy).unwrap(),
        "{variant}: the same edits gave different bytes"
    );
}

#[test]
fn random_sessions_matrix() {
    for (k, v) in ["v5", "b1k", "rmapbt", "ag1", "centos7", "el9"]
        .iter()
        .enumerate()
    {
        random_sessions(v, 0x51_7cc1_b727_220a ^ (k as u64) << 7);
    }
}

/// Allocate until `NoSpace`: every AG keeps what its rebuild needs, the flush succeeds, the
/// oracles agree; then everything is given back.
fn fill_up(variant: &str) {
    let Some(img) = image(variant) else { return };
    let before_fd = sb_field(&img.path, "fdblocks");
    let dev = RawFile::open_rw(&img.path).unwrap();
    let sb = read_sb(&dev);
    let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
    let mut held = Vec::new();
    loop {
        match sp.alloc(0, 1000, 1, file_owner(held.len() as u64)) {
            Ok((f, l)) => held.push((f, l)),
            Err(XfsError::NoSpace(_)) => break,
            Err(e) => panic!("{variant}: {e}"),
        }
        assert!(held.len() < 1_000_000);
    }
    let used: u64 = held.iter().map(|h| h.1).sum();
    assert!(
        used > before_fd * 9 / 10,
        "{variant}: only {used} of {before_fd}"
    );
    sp.flush(&dev, &sb, &stamp(&sb)).unwrap();
    write_counters(&dev, &sb, &sp);
    assert_eq!(sb_field(&img.path, "fdblocks"), before_fd - used);
    let mut want = 0usize;
    for &(_, l) in &held {
        want += l as usize;
    }
    assert_eq!(
        blockget(&img.path).lines().count(),
        want,
        "{variant}: blockget"
    );
    if variant != "rmapbt" {
        tk::xfs_repair_check(&img.path).unwrap_or_else(|e| panic!("{variant}: {e}"));
    }
    // and back
    for (i, &(f, l)) in held.iter().enumerate() {
        sp.free(f, l, file_owner(i as u64)).unwrap();
    }
    sp.flush(&dev, &sb, &stamp(&sb)).unwrap();
    write_counters(&dev, &sb, &sp);
    drop(dev);
    repair_clean(&img.path, variant);
    assert_eq!(sb_field(&img.path, "fdblocks"), before_fd);
}

#[test]
fn fill_up_and_give_back() {
    fill_up("v5");
    fill_up("rmapbt");
}

/// An AGF whose counters disagree with its btrees is refused before anything is written.
#[test]
fn damaged_agf_is_refused() {
    let Some(img) = image("v5") else { return };
    let o = std::process::Command::new("xfs_db")
        .env(
            "PATH",
            format!(
                "{}:/sbin:/usr/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .args(["-x", "-c", "agf 2", "-c", "write btreeblks 3"])
        .arg(&img.path)
        .output()
        .unwrap();
    assert!(o.status.success());
    let dev = RawFile::open(&img.path).unwrap();
    let sb = read_sb(&dev);
    match Space::load(&Reader::new(&dev, &sb)) {
        Err(XfsError::Corrupt { structure, detail }) => {
            assert_eq!(structure, "AGF of AG 2");
            assert!(detail.contains("btreeblks 3"), "{detail}");
        }
        other => panic!("loaded: {:?}", other.map(|_| ())),
    }
}

/// What xfs_repair -n says, on an rmapbt filesystem, about blocks we hold: the reverse
/// mappings name owners that do not map them ("unknown block state"), one line per run.
fn unknown_runs(sb: &Superblock, held: impl Iterator<Item = (u64, u64)>) -> Vec<String> {
    let mask = (1u64 << sb.agblklog) - 1;
    let mut blocks: Vec<u64> = held.flat_map(|(f, l)| f..f + l).collect();
    blocks.sort_unstable();
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let mut j = i;
        while j + 1 < blocks.len()
            && blocks[j + 1] == blocks[j] + 1
            && blocks[j + 1] >> sb.agblklog == blocks[i] >> sb.agblklog
        {
            j += 1;
        }
        runs.push(format!(
            "unknown block state, ag {}, blocks {}-{}",
            blocks[i] >> sb.agblklog,
            blocks[i] & mask,
            blocks[j] & mask
        ));
        i = j + 1;
    }
    runs
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn sh(script: &str) {
    let o = std::process::Command::new("bash")
        .args(["-euc", script])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The kernel works on what we built: after our edits (multi-level free-space btrees from a
/// fragmented AG, new and freed inode chunks, a refilled AGFL), the image is mounted, files
/// are written (thousands of inodes, data over the fragmented AG) and deleted, and
/// unmounted; xfs_repair -n finds nothing and blockget names only the blocks we still hold.
fn kernel_uses(variant: &str) {
    let Some(img) = image(variant) else { return };
    let dev = RawFile::open_rw(&img.path).unwrap();
    let sb = read_sb(&dev);
    let st = stamp(&sb);
    let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
    // fragment AG 0 (every other block of its biggest free extent) and keep the holes
    let (s, l) = sp
        .free_extents(0)
        .into_iter()
        .max_by_key(|&(_, l)| l)
        .unwrap();
    let mut held = Vec::new();
    let mut b = s + 1;
    while b + 1 < s + l && held.len() < 1500 {
        held.push(
            sp.alloc(u64::from(b), 1, 1, file_owner(held.len() as u64))
                .unwrap(),
        );
        b += 2;
    }
    // inodes: allocate past the free ones (new chunks), free them (chunks freed again)
    let inos: Vec<u64> = (0..150)
        .map(|_| sp.alloc_inode(&dev, &sb, &st, sb.rootino).unwrap())
        .collect();
    sp.flush(&dev, &sb, &st).unwrap();
    for &i in &inos {
        sp.free_inode(i).unwrap();
    }
    sp.flush(&dev, &sb, &st).unwrap();
    write_counters(&dev, &sb, &sp);
    drop(dev);
    let mnt = img.path.with_extension("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    sh(&format!(
        "mount -o loop {} {}",
        img.path.display(),
        mnt.display()
    ));
    let guard = Mounted(mnt.clone());
    let m = mnt.display();
    sh(&format!(
        "mkdir {m}/k && for i in $(seq 1 1500); do echo $i > {m}/k/f$i; done; \
         for i in $(seq 1 100); do head -c $((i * 400)) /dev/zero > {m}/k/d$i; done; \
         dd if=/dev/zero of={m}/k/big bs=64k count=100 status=none; sync; \
         rm -f {m}/k/f1* {m}/k/d1* {m}/k/big; sync"
    ));
    drop(guard);
    let out = tk::xfs_repair_check(&img.path).err().unwrap_or_default();
    let findings: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim_start().starts_with("- ") && !l.starts_with("Phase"))
        .filter(|l| l.contains("would") || l.contains("counted") || l.contains("unknown"))
        .collect();
    let want_findings = if variant == "rmapbt" {
        unknown_runs(&sb, held.iter().copied())
    } else {
        Vec::new()
    };
    assert_eq!(
        findings, want_findings,
        "{variant}: xfs_repair -n after the kernel: {out}"
    );
    let mask = (1u64 << sb.agblklog) - 1;
    let mut want: Vec<String> = held
        .iter()
        .flat_map(|&(f, l)| f..f + l)
        .map(|x| {
            format!(
                "block {}/{} type unknown not expected",
                x >> sb.agblklog,
                x & mask
            )
        })
        .collect();
    want.sort();
    let mut got: Vec<String> = blockget(&img.path).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, want, "{variant}: blockget after the kernel");
}

#[test]
fn kernel_mounts_and_writes_over_our_btrees() {
    if !tk::xfs_can_mount() {
        return;
    }
    kernel_uses("b1k");
    kernel_uses("v5");
    kernel_uses("sparse");
    kernel_uses("rmapbt");
}

/// 10,000 inodes and 10,000 one-block extents near them, flushed, then all given back and
/// flushed: the big rebuilds stay exact (and the times are printed for the benchmarks).
#[test]
fn ten_thousand_files_worth() {
    let variant = "ag8";
    let Some(img) = image(variant) else { return };
    let before_agi = headers(&img.path, "agi");
    let before_fd = sb_field(&img.path, "fdblocks");
    let dev = RawFile::open_rw(&img.path).unwrap();
    let sb = read_sb(&dev);
    let st = stamp(&sb);
    let t = std::time::Instant::now();
    let mut sp = Space::load(&Reader::new(&dev, &sb)).unwrap();
    let t_load = t.elapsed();
    let t = std::time::Instant::now();
    let mut inos = Vec::new();
    let mut exts = Vec::new();
    let agshift = u32::from(sb.agblklog) + u32::from(sb.inopblog);
    for i in 0..10_000u64 {
        let ino = sp.alloc_inode(&dev, &sb, &st, sb.rootino).unwrap();
        let near =
            ((ino >> agshift) << sb.agblklog) | ((ino & ((1 << agshift) - 1)) >> sb.inopblog);
        exts.push(sp.alloc(near, 1, 1, file_owner(i)).unwrap());
        inos.push(ino);
    }
    sp.flush(&dev, &sb, &st).unwrap();
    let t_alloc = t.elapsed();
    write_counters(&dev, &sb, &sp);
    assert_eq!(sp.icount() - sp.ifree(), sb.icount - sb.ifree + 10_000);
    let t = std::time::Instant::now();
    for (i, (&ino, &(f, l))) in inos.iter().zip(&exts).enumerate() {
        sp.free_inode(ino).unwrap();
        sp.free(f, l, file_owner(i as u64)).unwrap();
    }
    sp.flush(&dev, &sb, &st).unwrap();
    let t_free = t.elapsed();
    write_counters(&dev, &sb, &sp);
    drop(dev);
    eprintln!(
        "{variant}: load {t_load:?}, 10k inodes + 10k extents + flush {t_alloc:?}, \
         free all + flush {t_free:?}"
    );
    repair_clean(&img.path, variant);
    assert_eq!(sb_field(&img.path, "fdblocks"), before_fd);
    let strip = |mut v: Vec<BTreeMap<String, String>>| {
        for h in &mut v {
            h.remove("newino");
        }
        v
    };
    assert_eq!(strip(headers(&img.path, "agi")), strip(before_agi));
}
