#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The read side against the real tools, on every variant of the mkfs.xfs matrix
//! (`fixtures/mkxfs.sh --list`): every inode of the manifest (written by the fixture script
//! from the source tree and xfs_db's edits) reads back exactly — type, mode, owner, size, link
//! count, content, symlink target, device number, extended attributes — and the free space
//! equals what `xfs_db freesp -d` lists.

use imgscrub_disk::RawFile;
use imgscrub_testkit as tk;
use imgscrub_xfs::{FileType, FreeRange, OpenOptions, XfsFs};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// One line of `OUT.img.manifest.tsv`.
#[derive(Debug)]
struct Want {
    /// Raw bytes: names need not be UTF-8.
    path: Vec<u8>,
    kind: String,
    mode: u16,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    nlink: u32,
    sha256: Option<String>,
    target: Option<String>,
    rdev: Option<(u32, u32)>,
}

fn dash(s: &str) -> Option<&str> {
    (s != "-").then_some(s)
}

/// Tab-separated fields of each line: the path as bytes, the rest as text (the host path
/// column may hold bytes that are not UTF-8; it is not used).
fn tsv(path: String) -> Vec<(Vec<u8>, Vec<String>)> {
    let raw = std::fs::read(path).unwrap_or_default();
    raw.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split(|&b| b == b'\t');
            let first = f.next().unwrap().to_vec();
            let rest = f.map(|x| String::from_utf8_lossy(x).into_owned()).collect();
            (first, rest)
        })
        .collect()
}

fn manifest(img: &Path) -> Vec<Want> {
    tsv(format!("{}.manifest.tsv", img.display()))
        .into_iter()
        .map(|(path, rest)| {
            let f: Vec<&str> = std::iter::once("")
                .chain(rest.iter().map(String::as_str))
                .collect();
            Want {
                path,
                kind: f[1].to_string(),
                mode: u16::from_str_radix(f[2], 8).unwrap(),
                uid: f[3].parse().unwrap(),
                gid: f[4].parse().unwrap(),
                size: dash(f[5]).map(|s| s.parse().unwrap()),
                nlink: f[6].parse().unwrap(),
                sha256: dash(f[7]).map(str::to_string),
                target: dash(f[8]).map(str::to_string),
                rdev: dash(f[9]).map(|s| {
                    let (a, b) = s.split_once(':').unwrap();
                    (a.parse().unwrap(), b.parse().unwrap())
                }),
            }
        })
        .collect()
}

/// `OUT.img.xattrs.tsv` as path -> (Linux name -> sha256 of the on-disk value, hex).
type XattrMap = BTreeMap<Vec<u8>, BTreeMap<String, (String, Option<String>)>>;

fn xattrs(img: &Path) -> XattrMap {
    let mut out: XattrMap = BTreeMap::new();
    for (path, rest) in tsv(format!("{}.xattrs.tsv", img.display())) {
        let f: Vec<&str> = std::iter::once("")
            .chain(rest.iter().map(String::as_str))
            .collect();
        out.entry(path).or_default().insert(
            f[1].to_string(),
            (f[5].to_string(), dash(f[6]).map(str::to_string)),
        );
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn build(variant: &str, dir: &Path) -> std::path::PathBuf {
    let img = dir.join(format!("{variant}.img"));
    tk::run_ok(
        tk::tool("bash")
            .arg(tk::fixture("mkxfs.sh"))
            .arg(variant)
            .arg(&img),
    );
    img
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

/// `xfs_db freesp -d` as merged byte ranges.
fn xfs_db_free(img: &Path) -> Vec<FreeRange> {
    let sb = tk::run_ok(
        tk::tool("xfs_db")
            .args(["-r", "-c", "sb 0", "-c", "print blocksize agblocks"])
            .arg(img),
    );
    let field = |name: &str| -> u64 {
        sb.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (bs, agblocks) = (field("blocksize"), field("agblocks"));
    let out = tk::run_ok(tk::tool("xfs_db").args(["-r", "-c", "freesp -d"]).arg(img));
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for l in out.lines() {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if f.len() == 3 && l.split_whitespace().count() == 3 {
            runs.push(((f[0] * agblocks + f[1]) * bs, f[2] * bs));
        }
        if l.trim_start().starts_with("from") {
            break;
        }
    }
    runs.sort_unstable();
    let mut merged: Vec<FreeRange> = Vec::new();
    for (offset, len) in runs {
        match merged.last_mut() {
            Some(r) if r.offset + r.len == offset => r.len += len,
            _ => merged.push(FreeRange { offset, len }),
        }
    }
    merged
}

fn check_variant(variant: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = build(variant, dir.path());
    let fs = XfsFs::open(RawFile::open(&img).unwrap(), OpenOptions::default())
        .unwrap_or_else(|e| panic!("{variant}: open: {e}"));
    let want_x = xattrs(&img);
    let mut buf = vec![0u8; 1 << 16];
    let mut checked = 0;
    for w in manifest(&img) {
        let ino = walk_to(&fs, &w.path);
        let st = fs.stat(ino).unwrap();
        let ctx = format!("{variant}: {}", String::from_utf8_lossy(&w.path));
        assert_eq!(kind(st.file_type), w.kind, "{ctx}: type");
        assert_eq!(st.perm, w.mode, "{ctx}: mode");
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
                let t = fs.readlink(ino).unwrap();
                assert_eq!(
                    Some(String::from_utf8(t).unwrap()),
                    w.target,
                    "{ctx}: target"
                );
            }
            FileType::Directory => {
                let names: Vec<Vec<u8>> = fs
                    .read_dir(ino)
                    .unwrap()
                    .into_iter()
                    .map(|e| e.name)
                    .collect();
                let mut sorted = names.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), names.len(), "{ctx}: duplicate names");
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
        for (name, (sha, hexval)) in want {
            let v = &got[name];
            if name.starts_with("system.posix_acl") {
                // The fixture lists XFS's on-disk ACL; we return Linux's xattr format.
                let disk = unhex(hexval.as_ref().expect("ACLs are short"));
                assert_eq!(
                    Some(v.clone()),
                    imgscrub_xfs::attr::acl_to_linux(&disk),
                    "{ctx}: {name}"
                );
                assert_eq!(&v[..4], &2u32.to_le_bytes(), "{ctx}: {name} version");
            } else {
                assert_eq!(&hex(&Sha256::digest(v)), sha, "{ctx}: {name}");
            }
        }
        assert_eq!(fs.get_xattr(ino, "user.no-such").unwrap(), None);
        checked += 1;
    }
    assert!(
        checked > 1000,
        "{variant}: only {checked} inodes in the manifest"
    );
    // Free space: exactly xfs_db's, and the per-AG inode/free-space summaries are consistent.
    assert_eq!(
        fs.free_ranges().unwrap(),
        xfs_db_free(&img),
        "{variant}: free ranges"
    );
    let sums = fs.ag_summaries().unwrap();
    assert_eq!(sums.len() as u32, fs.superblock().agcount);
    eprintln!(
        "{variant}: {checked} inodes, {} free extents",
        fs.free_ranges().unwrap().len()
    );
}

macro_rules! variants {
    ($($name:ident => $v:literal),* $(,)?) => {$(
        #[test]
        fn $name() {
            if tk::require_tool("mkfs.xfs").is_none() || tk::require_tool("xfs_db").is_none() {
                return;
            }
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
}

/// Every variant the fixture script knows is tested here (a new one must be added above).
#[test]
fn every_variant_is_covered() {
    let src = include_str!("read_matrix.rs");
    let out = tk::run_ok(tk::tool("bash").arg(tk::fixture("mkxfs.sh")).arg("--list"));
    for v in out.split_whitespace() {
        assert!(
            src.contains(&format!("=> \"{v}\"")),
            "variant {v} of fixtures/mkxfs.sh is not in read_matrix.rs"
        );
    }
}
