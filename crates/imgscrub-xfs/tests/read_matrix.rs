#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The read side against the real tools, on every variant of the mkfs.xfs matrix
//! (`fixtures/mkxfs.sh --list`, plus the loop-mounted `kernel` variant as root): every inode
//! of the manifest (written by the fixture script from the source tree, xfs_db's edits and
//! the kernel's own view) reads back exactly — type, mode, owner, size, link count, content,
//! symlink target, device number, extended attributes — and the free space equals what
//! `xfs_db freesp -d` lists. A dirty log is refused with the reason.

use imgscrub_disk::RawFile;
use imgscrub_testkit as tk;
use imgscrub_xfs::{FileType, FreeRange, OpenOptions, XfsError, XfsFs};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn walk_to(fs: &XfsFs<RawFile>, path: &[u8]) -> u64 {
    let mut ino = fs.root();
    for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        ino = fs
            .lookup(ino, c)
            .unwrap()
            .unwrap_or_else(|| panic!("{}: not found", String::from_utf8_lossy(path)));
    }
    ino
}

fn kind(t: FileType) -> &'static str {
    match t {
        FileType::Regular => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "chr",
        FileType::BlockDevice => "blk",
        FileType::Fifo => "fifo",
        FileType::Socket => "sock",
    }
}

fn check_variant(variant: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs(variant, dir.path()) else {
        return;
    };
    let fs = XfsFs::open(RawFile::open(&fx.image).unwrap(), OpenOptions::default())
        .unwrap_or_else(|e| panic!("{variant}: open: {e}"));
    let mut want_x: BTreeMap<Vec<u8>, BTreeMap<String, tk::XfsXattr>> = BTreeMap::new();
    for x in fx.xattrs() {
        want_x
            .entry(x.path.clone())
            .or_default()
            .insert(x.name.clone(), x);
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut checked = 0;
    for w in fx.manifest() {
        let ino = walk_to(&fs, &w.path);
        let st = fs.stat(ino).unwrap();
        let ctx = format!("{variant}: {}", String::from_utf8_lossy(&w.path));
        assert_eq!(kind(st.file_type), w.kind, "{ctx}: type");
        assert_eq!(u32::from(st.perm), w.mode, "{ctx}: mode");
        assert_eq!((st.uid, st.gid), (w.uid, w.gid), "{ctx}: owner");
        assert_eq!(st.nlink, w.nlink, "{ctx}: nlink");
        if let Some(size) = w.size {
            assert_eq!(st.size, size, "{ctx}: size");
        }
        assert_eq!(st.rdev, w.rdev, "{ctx}: rdev");
        match st.file_type {
            FileType::Regular => {
                let mut h = Sha256::new();
                let mut off = 0u64;
                loop {
                    let n = fs.read(ino, off, &mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    off += n as u64;
                }
                assert_eq!(off, st.size, "{ctx}: bytes read");
                assert_eq!(Some(hex(&h.finalize())), w.sha256, "{ctx}: content");
            }
            FileType::Symlink => {
                assert_eq!(Some(fs.readlink(ino).unwrap()), w.target, "{ctx}: target");
            }
            FileType::Directory => {
                let mut names: Vec<Vec<u8>> = fs
                    .read_dir(ino)
                    .unwrap()
                    .into_iter()
                    .map(|e| e.name)
                    .collect();
                let n = names.len();
                names.sort();
                names.dedup();
                assert_eq!(names.len(), n, "{ctx}: duplicate names");
            }
            _ => {}
        }
        // Extended attributes: exactly the ones the fixture set, with their values.
        let got: BTreeMap<String, Vec<u8>> = fs.list_xattrs(ino).unwrap().into_iter().collect();
        let empty = BTreeMap::new();
        let want = want_x.get(&w.path).unwrap_or(&empty);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{ctx}: xattr names"
        );
        for (name, x) in want {
            let v = &got[name];
            if name.starts_with("system.posix_acl") {
                // The fixture lists XFS's on-disk ACL; we return Linux's xattr format.
                let disk = x.value.as_ref().expect("ACLs are short");
                assert_eq!(
                    Some(v.clone()),
                    imgscrub_xfs::attr::acl_to_linux(disk),
                    "{ctx}: {name}"
                );
                assert_eq!(&v[..4], &2u32.to_le_bytes(), "{ctx}: {name} version");
                assert_eq!((v.len() - 4) / 8, (x.len - 4) / 12, "{ctx}: {name} entries");
            } else {
                assert_eq!(v.len(), x.len, "{ctx}: {name} length");
                assert_eq!(hex(&Sha256::digest(v)), x.sha256, "{ctx}: {name}");
            }
        }
        assert_eq!(fs.get_xattr(ino, "user.no-such").unwrap(), None);
        checked += 1;
    }
    assert!(
        checked > 1000,
        "{variant}: only {checked} inodes in the manifest"
    );
    times_and_blocks_match_xfs_db(&fs, &fx, variant);
    // Free space: exactly xfs_db's (free-space btrees and AG free lists).
    let want_free: Vec<FreeRange> = tk::xfs_free_ranges_with_agfl(&fx.image)
        .into_iter()
        .map(|(offset, len)| FreeRange { offset, len })
        .collect();
    assert_eq!(
        fs.free_ranges().unwrap(),
        want_free,
        "{variant}: free ranges"
    );
    let sb = tk::xfs_sb(&fx.image);
    let sums = fs.ag_summaries().unwrap();
    assert_eq!(sums.len() as u64, sb.agcount);
    eprintln!("{variant}: {checked} inodes, {} free runs", want_free.len());
}

/// `ctime(3)`'s form, which xfs_db prints timestamps in: "Thu Jan  1 00:00:00 1970" (UTC).
fn ctime(t: imgscrub_xfs::Timestamp) -> String {
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, sec) = t.utc();
    let wd = WD[t.secs.div_euclid(86_400).rem_euclid(7) as usize];
    format!(
        "{wd} {} {d:>2} {h:02}:{mi:02}:{sec:02} {y}",
        MON[mo as usize - 1]
    )
}

/// Times (atime, mtime, ctime, and crtime on v5, to the nanosecond) and allocated blocks of
/// a sample of inodes equal what xfs_db prints for them.
fn times_and_blocks_match_xfs_db(fs: &XfsFs<RawFile>, fx: &tk::XfsFixture, variant: &str) {
    let manifest = fx.manifest();
    let paths: Vec<&[u8]> = manifest
        .iter()
        .enumerate()
        .filter(|(i, e)| i % 40 == 0 || e.path.starts_with(b"/sparse") || e.path == b"/")
        .map(|(_, e)| e.path.as_slice())
        .collect();
    let want = tk::xfs_stat_many(&fx.image, &paths);
    assert_eq!(want.len(), paths.len());
    let v5 = fs.superblock().is_v5();
    for (p, w) in paths.iter().zip(&want) {
        let st = fs.stat(walk_to(fs, p)).unwrap();
        let ctx = format!("{variant}: {}", String::from_utf8_lossy(p));
        let mut stamps = vec![
            ("core.atime", st.atime),
            ("core.mtime", st.mtime),
            ("core.ctime", st.ctime),
        ];
        if v5 {
            stamps.push(("v3.crtime", st.crtime.unwrap()));
        }
        for (name, t) in stamps {
            // `print core` shows the v3 fields (crtime) on some xfs_db versions only.
            let Some(sec) = w.fields.get(&format!("{name}.sec")) else {
                assert!(name.starts_with("v3."), "{ctx}: xfs_db printed no {name}");
                continue;
            };
            assert_eq!(sec, &ctime(t), "{ctx}: {name}");
            assert_eq!(
                w.fields[&format!("{name}.nsec")],
                t.nsecs.to_string(),
                "{ctx}: {name}"
            );
        }
        let bs = fs.superblock().blocksize as u64;
        assert_eq!(st.blocks_512, w.nblocks * bs / 512, "{ctx}: blocks");
        assert_eq!(st.ino, w.ino, "{ctx}: inode number");
    }
}

macro_rules! variants {
    ($($name:ident => $v:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            check_variant($v);
        }
    )*};
}

variants! {
    v5 => "v5",
    centos7 => "centos7",
    el9 => "el9",
    rmapbt => "rmapbt",
    b1k => "b1k",
    b2k => "b2k",
    n8k => "n8k",
    n64k => "n64k",
    i1k => "i1k",
    i2k => "i2k",
    sparse => "sparse",
    s4k => "s4k",
    v4 => "v4",
    v4ftype0 => "v4ftype0",
    ag1 => "ag1",
    ag8 => "ag8",
    stripe => "stripe",
    ci => "ci",
    nrext64 => "nrext64",
    kernel => "kernel",
}

/// A log with changes in it is refused, naming the remedy; `xfs_repair -n` agrees it is dirty.
#[test]
fn dirty_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs("dirtylog", dir.path()) else {
        return;
    };
    assert!(tk::xfs_repair_check(&fx.image).is_err());
    match XfsFs::open(RawFile::open(&fx.image).unwrap(), OpenOptions::default()) {
        Err(XfsError::NeedsRepair(msg)) => {
            assert!(msg.contains("log is not clean"), "{msg}");
            assert!(msg.contains("xfs_repair"), "{msg}");
        }
        Err(e) => panic!("dirtylog: wrong error {e}"),
        Ok(_) => panic!("dirtylog: opened"),
    }
}

/// Every variant the fixture script knows is tested here (a new one must be added above).
#[test]
fn every_variant_is_covered() {
    let src = include_str!("read_matrix.rs");
    for v in tk::xfs_variants_all() {
        assert!(
            src.contains(&format!("=> \"{v}\"")) || v == "dirtylog",
            "variant {v} of fixtures/mkxfs.sh is not in read_matrix.rs"
        );
    }
}

/// A damaged attribute leaf block is a checksum error naming the block, not a panic; the
/// rest of the filesystem still reads.
#[test]
fn damaged_attribute_block_is_a_checksum_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs("v5", dir.path()) else {
        return;
    };
    let out = tk::xfs_db(&fx.image, &["path /xattr/leaf", "ablock 0", "daddr"]);
    let daddr: u64 = out
        .split_whitespace()
        .last()
        .and_then(|w| w.trim_end_matches('.').parse().ok())
        .unwrap_or_else(|| panic!("xfs_db: {out}"));
    let mut bytes = std::fs::read(&fx.image).unwrap();
    bytes[(daddr * 512 + 300) as usize] ^= 0x5a;
    std::fs::write(&fx.image, &bytes).unwrap();
    let fs = XfsFs::open(RawFile::open(&fx.image).unwrap(), OpenOptions::default()).unwrap();
    let ino = walk_to(&fs, b"/xattr/leaf");
    match fs.list_xattrs(ino) {
        Err(XfsError::Checksum { structure, .. }) => {
            assert!(structure.contains("attribute"), "{structure}")
        }
        other => panic!("damaged attribute leaf: {other:?}"),
    }
    assert!(fs.stat(ino).is_ok());
    assert!(fs.list_xattrs(walk_to(&fs, b"/xattr/sf")).is_ok());
}

/// Free-space btrees that agree with each other and with the AGF can still be wrong
/// together: a free extent over the AG headers is refused before anything could be zeroed.
#[test]
fn free_space_over_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs("v5", dir.path()) else {
        return;
    };
    // The first by-block record moved to block 0 (same length, so the by-size btree and the
    // AGF counters still agree; xfs_db reseals the CRC).
    let out = tk::run_ok(
        tk::tool("xfs_db")
            .args([
                "-x",
                "-c",
                "agf 0",
                "-c",
                "addr bnoroot",
                "-c",
                "write recs[1].startblock 0",
            ])
            .arg(&fx.image),
    );
    assert!(out.contains("startblock = 0"), "{out}");
    assert!(tk::xfs_repair_check(&fx.image).is_err());
    let fs = XfsFs::open(RawFile::open(&fx.image).unwrap(), OpenOptions::default()).unwrap();
    let err = fs.free_ranges().unwrap_err().to_string();
    assert!(
        err.contains("AG header") && err.contains("listed as free"),
        "{err}"
    );
}

/// A nearly empty filesystem: AGs whose inode btree root is an empty leaf (no inodes there)
/// are valid, and their free space is read like any other.
#[test]
fn empty_btree_roots_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tiny");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("only-file"), b"one file\n").unwrap();
    let opts = tk::XfsOptions {
        src: Some(src),
        ..tk::XfsOptions::default()
    };
    let Some(fx) = tk::make_xfs_with("v5", dir.path(), &opts) else {
        return;
    };
    let fs = XfsFs::open(RawFile::open(&fx.image).unwrap(), OpenOptions::default()).unwrap();
    let sums = fs.ag_summaries().unwrap();
    assert!(sums.iter().any(|s| s.inodes == 0), "{sums:?}");
    let want: Vec<FreeRange> = tk::xfs_free_ranges_with_agfl(&fx.image)
        .into_iter()
        .map(|(offset, len)| FreeRange { offset, len })
        .collect();
    assert_eq!(fs.free_ranges().unwrap(), want);
    let ino = walk_to(&fs, b"/only-file");
    let mut buf = [0u8; 64];
    assert_eq!(fs.read(ino, 0, &mut buf).unwrap(), 9);
}
