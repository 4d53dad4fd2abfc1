#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The XFS fixtures test themselves: every variant of `fixtures/mkxfs.sh` builds, is
//! `xfs_repair -n` clean, reaches the directory and attribute forms the tree is designed for,
//! and reads back — as xfsprogs sees it — what its manifest says. So engine tests can trust
//! both the images and the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use imgscrub_testkit::{
    XfsDirForm, XfsFixture, assert_xfs_repair_clean, make_xfs, make_xfs_dirty, parse_xfs_freesp,
    xfs_agfl, xfs_attr_form, xfs_attrs, xfs_bmap, xfs_cat, xfs_db, xfs_dir_form, xfs_free_ranges,
    xfs_free_ranges_with_agfl, xfs_ino, xfs_ls, xfs_readlink, xfs_repair_check, xfs_sb, xfs_stat,
    xfs_stat_many, xfs_variants, xfs_variants_all,
};

use XfsDirForm::{Block, Leaf, Node, Shortform};

/// (directory, form, data fork is a btree) that each variant must reach.
fn expected_dir_forms(variant: &str) -> Vec<(&'static str, XfsDirForm, bool)> {
    let mut v = vec![
        ("/dirs/sf", Shortform, false),
        ("/dirs/block", Block, false),
        ("/dirs/leaf", Leaf, false),
        ("/dirs/node", Node, false),
        ("/huge", Node, true),
    ];
    let set = |v: &mut Vec<(&'static str, XfsDirForm, bool)>, p: &str, f, b| {
        for e in v.iter_mut().filter(|e| e.0 == p) {
            (e.1, e.2) = (f, b);
        }
    };
    match variant {
        // 156-byte inode literal area: fewer extents fit before the fork becomes a btree.
        "v4" | "v4ftype0" => set(&mut v, "/dirs/node", Node, true),
        "n8k" => set(&mut v, "/dirs/node", Leaf, false),
        "n64k" => {
            set(&mut v, "/dirs/leaf", Block, false);
            set(&mut v, "/dirs/node", Block, false);
            set(&mut v, "/huge", Node, false);
        }
        // A 2 KiB inode holds the 60-entry directory, and many extents.
        "i2k" => {
            set(&mut v, "/dirs/block", Shortform, false);
            set(&mut v, "/huge", Node, false);
        }
        _ => {}
    }
    v
}

/// (file, attr fork form, attr fork is a btree).
fn expected_attr_forms(variant: &str) -> Vec<(&'static str, &'static str, bool)> {
    let big_inode = matches!(variant, "i1k" | "i2k");
    vec![
        ("/xattr/sf", "shortform", false),
        (
            "/xattr/leaf",
            if big_inode { "shortform" } else { "leaf" },
            false,
        ),
        ("/xattr/node", "node", false),
        ("/xattr/btree", "node", !big_inode),
        ("/xattr/btree2", "node", !big_inode),
        (
            "/xattr/remote",
            "leaf",
            matches!(variant, "b1k" | "i2k" | "kernel"),
        ),
        ("/xattr/dir", "shortform", false),
        ("/xattr/link", "shortform", false),
    ]
}

/// (namespace, on-disk name)
type AttrKey = (String, Vec<u8>);
/// path -> attribute -> (value length, value when at most 256 bytes)
type AttrMap = BTreeMap<Vec<u8>, BTreeMap<AttrKey, (usize, Option<Vec<u8>>)>>;

/// Everything the fixture claims, checked with xfsprogs.
fn check_fixture(variant: &str, fx: &XfsFixture) {
    let img = &fx.image;
    let t = Instant::now();
    assert_xfs_repair_clean(img);
    let sb = xfs_sb(img);

    // Directory and attribute forms.
    for (path, form, btree) in expected_dir_forms(variant) {
        assert_eq!(
            xfs_dir_form(img, path),
            Some((form, btree)),
            "{variant}: {path}"
        );
    }
    for (path, form, btree) in expected_attr_forms(variant) {
        assert_eq!(
            xfs_attr_form(img, path),
            Some((form, btree)),
            "{variant}: {path}"
        );
    }

    // Every manifest entry: type, mode, owner, size, link count, as xfs_db sees the inode.
    let manifest = fx.manifest();
    let paths: Vec<&[u8]> = manifest.iter().map(|e| e.path.as_slice()).collect();
    let stats = xfs_stat_many(img, &paths);
    for (e, st) in manifest.iter().zip(&stats) {
        let what = format!("{variant}: {}", String::from_utf8_lossy(&e.path));
        let fmt = match e.kind.as_str() {
            "dir" => 0o040_000,
            "file" => 0o100_000,
            "symlink" => 0o120_000,
            "fifo" => 0o010_000,
            "chr" => 0o020_000,
            "blk" => 0o060_000,
            k => panic!("{what}: kind {k}"),
        };
        assert_eq!(st.mode, fmt | e.mode, "{what}: mode {:o}", st.mode);
        assert_eq!((st.uid, st.gid), (e.uid, e.gid), "{what}: owner");
        assert_eq!(st.nlink, e.nlink, "{what}: nlink");
        if let Some(size) = e.size {
            assert_eq!(st.size, size, "{what}: size");
        }
    }
    // The root is the superblock's root inode.
    assert_eq!(stats[0].ino, sb.rootino, "{variant}");
    assert_eq!(xfs_ino(img, "/"), Some(sb.rootino));
    assert_eq!(xfs_ino(img, "/nonexistent"), None);

    // Directory listings agree with the manifest.
    let mut children: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for e in &manifest {
        if let Some(p) = e.path.iter().rposition(|b| *b == b'/') {
            let parent = if p == 0 {
                b"/".to_vec()
            } else {
                e.path[..p].to_vec()
            };
            if e.path.len() > 1 {
                children
                    .entry(parent)
                    .or_default()
                    .insert(e.path[p + 1..].to_vec());
            }
        }
    }
    for dir in [
        "/",
        "/dirs/sf",
        "/dirs/block",
        "/dirs/leaf",
        "/dirs/node",
        "/huge",
        "/names",
    ] {
        let got: BTreeSet<Vec<u8>> = xfs_ls(img, dir)
            .into_iter()
            .map(|d| d.name)
            .filter(|n| n != b"." && n != b"..")
            .collect();
        assert_eq!(
            Some(&got),
            children.get(dir.as_bytes()),
            "{variant}: ls {dir}"
        );
    }

    // File contents (read through xfs_db's extent maps) and symlink targets.
    for e in &manifest {
        let p = String::from_utf8_lossy(&e.path).into_owned();
        let interesting = ["/sparse/", "/sizes/", "/etc/", "/kernel/"]
            .iter()
            .any(|d| p.starts_with(d))
            && !p.starts_with("/kernel/sparse-inodes/");
        if e.kind == "file" && interesting {
            assert!(
                xfs_cat(img, &p) == e.content(),
                "{variant}: content of {p} differs"
            );
        }
        if e.kind == "symlink" && p.starts_with("/links/") {
            assert_eq!(xfs_readlink(img, &p), e.target, "{variant}: {p}");
        }
    }

    // Device numbers, in XFS's on-disk encoding (major << 18 | minor).
    let dev = if sb.v5 { "u3.dev" } else { "u.dev" };
    for e in manifest.iter().filter(|e| e.rdev.is_some()) {
        let p = String::from_utf8_lossy(&e.path).into_owned();
        let (major, minor) = e.rdev.unwrap();
        let out = xfs_db(img, &[&format!("path {p}"), &format!("print {dev}")]);
        assert_eq!(
            out.trim(),
            format!("{dev} = {:#x}", (major << 18) | minor),
            "{variant}: {p}"
        );
    }

    // Holes and unwritten extents where mkxfs.sh made them.
    let unwritten = xfs_bmap(img, "/sparse/unwritten", false);
    assert!(
        unwritten.iter().any(|x| x.unwritten),
        "{variant}: {unwritten:?}"
    );
    let middle = xfs_bmap(img, "/sparse/middle", false);
    assert_eq!(middle.len(), 2, "{variant}: {middle:?}");
    assert!(
        middle[1].file_block > middle[0].file_block + middle[0].blocks,
        "{variant}: no hole: {middle:?}"
    );
    assert!(
        xfs_bmap(img, "/sparse/prealloc", false)
            .iter()
            .all(|x| x.unwritten)
    );

    // Extended attributes: names, lengths and local values as xfs_db prints them.
    let mut want: AttrMap = BTreeMap::new();
    for x in fx.xattrs() {
        want.entry(x.path.clone()).or_default().insert(
            (x.ns.clone(), x.disk_name.clone()),
            (x.len, x.value.clone()),
        );
    }
    for (path, want) in &want {
        let p = String::from_utf8_lossy(path).into_owned();
        if p.contains("btree") && !matches!(variant, "v5" | "b1k" | "v4") {
            continue; // one xfs_db run per attribute block: a few variants are enough
        }
        let got = xfs_attrs(img, &p);
        let names: BTreeMap<AttrKey, usize> = got
            .iter()
            .map(|a| ((a.ns.clone(), a.name.clone()), a.value_len))
            .collect();
        let want_names: BTreeMap<AttrKey, usize> =
            want.iter().map(|(k, v)| (k.clone(), v.0)).collect();
        if names != want_names {
            let show = |m: &BTreeMap<AttrKey, usize>, o: &BTreeMap<AttrKey, usize>| {
                m.iter()
                    .filter(|(k, v)| o.get(*k) != Some(*v))
                    .take(5)
                    .map(|((ns, n), l)| format!("{ns}.{} ({l})", String::from_utf8_lossy(n)))
                    .collect::<Vec<_>>()
            };
            panic!(
                "{variant}: xattrs of {p}: xfs_db has {} names, the manifest {}; only xfs_db: \
                 {:?}; only the manifest: {:?}",
                names.len(),
                want_names.len(),
                show(&names, &want_names),
                show(&want_names, &names)
            );
        }
        for a in got {
            // Values stored locally (remote ones are in value blocks xfs_db does not print).
            if let Some(v) = a.value {
                let w = &want[&(a.ns.clone(), a.name.clone())];
                if let Some(wv) = &w.1 {
                    assert_eq!(
                        &v,
                        wv,
                        "{variant}: {p}: value of {}",
                        String::from_utf8_lossy(&a.name)
                    );
                }
            }
        }
    }

    // Free space: the btrees hold what the AG headers say, freesp adds the AGFL blocks; all
    // inside the filesystem and not under a file.
    let free = xfs_free_ranges(img);
    let total: u64 = free.iter().map(|r| r.1).sum();
    let (mut agf_free, mut agfl_count) = (0, 0);
    for ag in 0..sb.agcount {
        let out = xfs_db(img, &[&format!("agf {ag}"), "print freeblks flcount"]);
        let f = imgscrub_testkit::xfs_db_fields(&out);
        agf_free += f["freeblks"].parse::<u64>().unwrap();
        agfl_count += f["flcount"].parse::<u64>().unwrap();
    }
    assert_eq!(total, agf_free * sb.blocksize, "{variant}");
    assert_eq!(xfs_agfl(img).len() as u64, agfl_count, "{variant}");
    let with_agfl: u64 = xfs_free_ranges_with_agfl(img).iter().map(|r| r.1).sum();
    assert_eq!(
        with_agfl,
        (agf_free + agfl_count) * sb.blocksize,
        "{variant}"
    );
    assert!(free.iter().all(|(o, l)| o + l <= sb.dblocks * sb.blocksize));
    for x in xfs_bmap(img, "/sizes/f3158073", false) {
        let (a, b) = (x.byte, x.byte + x.blocks * sb.blocksize);
        assert!(
            free.iter().all(|(o, l)| o + l <= a || *o >= b),
            "{variant}: file extent {x:?} is free"
        );
    }
    eprintln!(
        "{variant}: checks {:.1}s, {} inodes, {} attrs, {} free ranges",
        t.elapsed().as_secs_f64(),
        manifest.len(),
        want.values().map(BTreeMap::len).sum::<usize>(),
        free.len()
    );
}

fn build_and_check(variant: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let Some(fx) = make_xfs(variant, tmp.path()) else {
        return;
    };
    eprintln!("{variant}: built in {:.1}s", t.elapsed().as_secs_f64());
    check_fixture(variant, &fx);
}

macro_rules! variant_tests {
    ($($name:ident: $variant:literal,)*) => {
        $( #[test] fn $name() { build_and_check($variant); } )*
        const VARIANTS: &[&str] = &[$($variant),*];
    };
}

variant_tests! {
    variant_v5: "v5",
    variant_centos7: "centos7",
    variant_el9: "el9",
    variant_rmapbt: "rmapbt",
    variant_b1k: "b1k",
    variant_b2k: "b2k",
    variant_n8k: "n8k",
    variant_n64k: "n64k",
    variant_i1k: "i1k",
    variant_i2k: "i2k",
    variant_sparse: "sparse",
    variant_s4k: "s4k",
    variant_v4: "v4",
    variant_v4ftype0: "v4ftype0",
    variant_ag1: "ag1",
    variant_ag8: "ag8",
    variant_stripe: "stripe",
    variant_ci: "ci",
    variant_nrext64: "nrext64",
}

#[test]
fn every_listed_variant_has_a_test() {
    if imgscrub_testkit::require_tool("mkfs.xfs").is_none() {
        return;
    }
    assert_eq!(xfs_variants(), VARIANTS);
    let all = xfs_variants_all();
    assert_eq!(&all[..VARIANTS.len()], VARIANTS);
    assert_eq!(&all[VARIANTS.len()..], ["kernel", "dirtylog"]);
}

/// `--dirty`: the free extents hold pseudo-random bytes; nothing else changes.
#[test]
fn dirty_fills_free_space() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fx) = make_xfs_dirty("v5", tmp.path()) else {
        return;
    };
    assert_xfs_repair_clean(&fx.image);
    let data = std::fs::read(&fx.image).unwrap();
    let free = xfs_free_ranges(&fx.image);
    let mut zero_blocks = 0;
    let mut blocks = 0;
    for (off, len) in &free {
        for b in data[*off as usize..(*off + *len) as usize].chunks(4096) {
            blocks += 1;
            zero_blocks += usize::from(b.iter().all(|x| *x == 0));
        }
    }
    assert!(
        blocks > 1000 && zero_blocks == 0,
        "{zero_blocks} of {blocks} free blocks are zero"
    );
    let m = fx.manifest_map();
    for p in ["/sizes/f1048577", "/sparse/middle", "/etc/hostname"] {
        assert!(xfs_cat(&fx.image, p) == m[p.as_bytes()].content(), "{p}");
    }
}

/// The loop-mount variants (root only; CI runs as root).
#[test]
fn kernel_variants() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let Some(fx) = make_xfs("kernel", tmp.path()) else {
        return;
    };
    eprintln!("kernel: built in {:.1}s", t.elapsed().as_secs_f64());
    check_fixture("kernel", &fx);
    let img = &fx.image;
    // A fragmented file: B+tree data fork with an interior level.
    let st = xfs_stat(img, "/kernel/frag").unwrap();
    assert_eq!(st.format, 3);
    assert!(st.nextents > 1000, "{}", st.nextents);
    let level = xfs_db(img, &["path /kernel/frag", "print u3.bmbt.level"]);
    assert!(level.contains("= 2"), "{level}");
    // Unwritten extents inside the size, and past EOF.
    assert!(
        xfs_bmap(img, "/kernel/unwritten", false)
            .iter()
            .filter(|x| x.unwritten)
            .count()
            >= 2
    );
    let keep = xfs_bmap(img, "/kernel/keepsize", false);
    assert!(keep.iter().any(|x| x.unwritten), "{keep:?}");
    // Shared extents: reflink-b starts with the blocks of reflink-a.
    let (a, b) = (
        xfs_bmap(img, "/kernel/reflink-a", false),
        xfs_bmap(img, "/kernel/reflink-b", false),
    );
    assert_eq!(a[0].byte, b[0].byte, "{a:?} {b:?}");
    // Sparse inode chunks: an inobt record with a hole mask.
    let sb = xfs_sb(img);
    let sparse = (0..sb.agcount).any(|ag| {
        xfs_db(img, &[&format!("agi {ag}"), "addr root", "btdump"])
            .lines()
            .any(|l| l.contains(":[") && l.split(',').nth(1).is_some_and(|h| h != "0"))
    });
    assert!(sparse, "no sparse inode chunk");
    // The multi-block remote symlink (1 KiB blocks): read through both blocks.
    let t = xfs_readlink(img, "/links/len1023").unwrap();
    assert_eq!(t.len(), 1023);
    assert_eq!(xfs_bmap(img, "/links/len1023", false)[0].blocks, 2);

    let t = Instant::now();
    let Some(dirty) = make_xfs("dirtylog", tmp.path()) else {
        return;
    };
    eprintln!("dirtylog: built in {:.1}s", t.elapsed().as_secs_f64());
    let err = xfs_repair_check(&dirty.image).unwrap_err();
    assert!(err.contains("metadata changes in a log"), "{err}");
    let logprint = imgscrub_testkit::run_ok(
        imgscrub_testkit::tool("xfs_logprint")
            .arg("-t")
            .arg(&dirty.image),
    );
    assert!(logprint.contains("TRANS"), "{logprint}");
}

#[test]
fn parse_freesp_output() {
    let out = "    agno    agbno      len\n       0        6        1\n       0       49     4047\n       \
               3       10     4086\n   from      to extents  blocks    pct\n      1       1      16      16   0.11\n";
    assert_eq!(
        parse_xfs_freesp(out),
        [(0, 6, 1), (0, 49, 4047), (3, 10, 4086)]
    );
    assert_eq!(
        imgscrub_testkit::xfs_db_unescape(br#"a\000\377\\b\"c"#),
        b"a\0\xff\\b\"c"
    );
}
