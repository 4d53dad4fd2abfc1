#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The attribute-fork encoder (`attrwrite`) against the real tools.
//!
//! Each case takes an inode whose attributes the real tools made (`fixtures/mkxfs.sh`'s
//! `xfs_db attr_set` edits, or the kernel through `setfattr`/`setfacl` on a loop mount),
//! encodes an attribute list with `attrwrite::encode`, and writes the result in place: a
//! shortform fork into the inode at its fork offset (inode CRC recomputed), blocks over the
//! physical blocks the fork already maps at the same logical offsets (the encoding must need
//! exactly as many, in the same form). Then:
//! - `xfs_repair -n` must be silent;
//! - `xfs_db` must list exactly the attributes written (names, namespaces, local values,
//!   lengths);
//! - the kernel (read-only loop mount, `getfattr`, `getfacl`) must read back exactly the
//!   names and values, remote values included.
//!
//! The kernel cases also check that XFS chooses the same form as the encoder at the
//! boundaries (shortform size and 255-byte values, local/remote records, one leaf/node), and
//! that `from_linux` turns what the kernel was given into exactly the bytes it stored.

use imgscrub_disk::{BlockDev, RawFile};
use imgscrub_testkit as tk;
use imgscrub_xfs::attr::{self, RawAttr, flag};
use imgscrub_xfs::attrwrite::{self, AttrForm, AttrGeom, AttrImage, DataFork};
use imgscrub_xfs::bmap::{self, Fork};
use imgscrub_xfs::inode::{Format, Inode};
use imgscrub_xfs::meta::Stamp;
use imgscrub_xfs::reader::Reader;
use imgscrub_xfs::{OpenOptions, XfsFs};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn open(image: &Path) -> XfsFs<RawFile> {
    XfsFs::open(RawFile::open(image).unwrap(), OpenOptions::default()).unwrap()
}

fn walk(fs: &XfsFs<RawFile>, path: &str) -> u64 {
    let mut ino = fs.root();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = fs
            .lookup(ino, c.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{path}: not found"));
    }
    ino
}

/// What the inode holds now: number, raw attributes (our reader), the shortform space at
/// the current fork offset, the form, the attribute fork's blocks.
struct Now {
    ino: u64,
    attrs: Vec<RawAttr>,
    fork_space: usize,
    form: Option<AttrForm>,
    blocks: u64,
    forkoff: u8,
    /// The data fork, for `shortform_forkoff`.
    data: DataFork,
}

fn lit_off(v5: bool) -> usize {
    if v5 { 176 } else { 100 }
}

fn now(image: &Path, path: &str) -> Now {
    let fs = open(image);
    let ino = walk(&fs, path);
    let sb = fs.superblock();
    let r = Reader::new(fs.device() as &dyn BlockDev, sb);
    let inode = Inode::read(&r, ino).unwrap();
    let attrs = attr::raw(&r, &inode).unwrap();
    let exts = bmap::extents(&r, &inode, Fork::Attr).unwrap();
    let lit = usize::from(sb.inodesize) - lit_off(sb.is_v5());
    let form = match inode.aformat {
        None => None,
        Some(Format::Local) => Some(AttrForm::Shortform),
        Some(_) => {
            let b0 = bmap::read_mapped(&r, &exts, 0, 1, &String::new).unwrap();
            let magic = u16::from_be_bytes([b0[8], b0[9]]);
            Some(if magic == 0x3ebe || magic == 0xfebe {
                AttrForm::Node
            } else {
                AttrForm::Leaf
            })
        }
    };
    Now {
        ino,
        attrs,
        fork_space: lit - usize::from(inode.forkoff) * 8,
        form,
        blocks: exts.iter().map(|e| e.len).sum(),
        forkoff: inode.forkoff,
        data: match inode.format {
            Format::Dev => DataFork::Dev,
            Format::Local => DataFork::Local(inode.size as usize),
            Format::Extents => DataFork::Extents(inode.nextents as usize * 16),
            Format::Btree => DataFork::Btree(usize::MAX),
        },
    }
}

fn read_at(f: &mut std::fs::File, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    f.seek(SeekFrom::Start(off)).unwrap();
    f.read_exact(&mut b).unwrap();
    b
}

fn write_at(f: &mut std::fs::File, off: u64, b: &[u8]) {
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(b).unwrap();
}

/// Encode `attrs` for `path` with `fork_space` and write the result in place. Errors (as
/// text) when the encoding cannot replace the fork as it is: another form, or another number
/// of blocks than the fork maps at logical blocks 0..n.
fn rewrite(
    image: &Path,
    path: &str,
    attrs: &[RawAttr],
    fork_space: usize,
) -> Result<AttrImage, String> {
    let fs = open(image);
    let ino = walk(&fs, path);
    let sb = fs.superblock().clone();
    let r = Reader::new(fs.device() as &dyn BlockDev, &sb);
    let inode = Inode::read(&r, ino).unwrap();
    let exts = bmap::extents(&r, &inode, Fork::Attr).unwrap();
    let g = AttrGeom::from_sb(&sb);
    let img = attrwrite::encode(&g, ino, attrs, fork_space).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    match &img {
        AttrImage::Short(bytes) => {
            if inode.aformat != Some(Format::Local) {
                return Err(format!("shortform for a fork in {:?}", inode.aformat));
            }
            let off = Inode::location(&r, ino).unwrap();
            let mut raw = read_at(&mut f, off, usize::from(sb.inodesize));
            let start = lit_off(sb.is_v5()) + usize::from(inode.forkoff) * 8;
            assert!(bytes.len() <= raw.len() - start);
            raw[start..].fill(0);
            raw[start..start + bytes.len()].copy_from_slice(bytes);
            if sb.is_v5() {
                let c = imgscrub_xfs::csum::compute(&raw, 100);
                raw[100..104].copy_from_slice(&c.to_le_bytes());
            }
            write_at(&mut f, off, &raw);
        }
        AttrImage::Blocks(blocks) => {
            let mapped: u64 = exts.iter().map(|e| e.len).sum();
            let contiguous = exts.first().is_some_and(|e| e.offset == 0)
                && exts.windows(2).all(|w| w[0].end() == w[1].offset);
            if inode.aformat == Some(Format::Local) || !contiguous || mapped != img.fs_blocks() {
                return Err(format!(
                    "{:?} of {} blocks for a fork of {mapped} blocks (format {:?})",
                    img.form(),
                    img.fs_blocks(),
                    inode.aformat
                ));
            }
            // An LSN the log has seen: the one the fork's block 0 carries.
            let b0 = bmap::read_mapped(&r, &exts, 0, 1, &String::new).unwrap();
            let st = Stamp {
                uuid: sb.meta_uuid(),
                lsn: u64::from_be_bytes(b0[24..32].try_into().unwrap()),
            };
            for b in blocks {
                let e = bmap::lookup(&exts, b.lblk).unwrap();
                let fsb = e.block + (b.lblk - e.offset);
                let mut b = b.clone();
                attrwrite::stamp(&mut b, r.fsb_daddr(fsb), ino, &st);
                write_at(&mut f, sb.fsb_to_byte(fsb), &b.data);
            }
        }
    }
    f.sync_all().unwrap();
    Ok(img)
}

/// `xfs_repair -n`: exit 0 and not a word about anything it would change.
fn repair_silent(image: &Path) {
    if tk::require_tool("xfs_repair").is_none() {
        return;
    }
    tk::xfs_repair_check(image).unwrap_or_else(|e| panic!("xfs_repair -n: {e}"));
    let o = Command::new("xfs_repair")
        .arg("-n")
        .arg(image)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    for bad in ["would", "bad ", "corrupt", "illegal", "attribute"] {
        assert!(!out.contains(bad), "xfs_repair -n says `{bad}`:\n{out}");
    }
}

fn ns_of(a: &RawAttr) -> &'static str {
    if a.flags & flag::ROOT != 0 {
        "trusted"
    } else if a.flags & flag::SECURE != 0 {
        "secure"
    } else {
        "user"
    }
}

/// The Linux name and value of an on-disk attribute (as the kernel shows it).
fn linux(a: &RawAttr) -> (String, Vec<u8>) {
    let n = String::from_utf8(a.name.clone()).unwrap();
    match (ns_of(a), n.as_str()) {
        ("trusted", "SGI_ACL_FILE") => (
            "system.posix_acl_access".into(),
            attr::acl_to_linux(&a.value).unwrap(),
        ),
        ("trusted", "SGI_ACL_DEFAULT") => (
            "system.posix_acl_default".into(),
            attr::acl_to_linux(&a.value).unwrap(),
        ),
        ("trusted", _) => (format!("trusted.{n}"), a.value.clone()),
        ("secure", _) => (format!("security.{n}"), a.value.clone()),
        _ => (format!("user.{n}"), a.value.clone()),
    }
}

/// The names and values the kernel lists for an on-disk attribute: its Linux name, and for
/// XFS's ACL attributes also the raw `trusted.SGI_ACL_*` one (root sees both).
fn kernel_view(a: &RawAttr) -> Vec<(String, Vec<u8>)> {
    let l = linux(a);
    if l.0.starts_with("system.posix_acl") {
        let raw = format!("trusted.{}", String::from_utf8_lossy(&a.name));
        vec![l, (raw, a.value.clone())]
    } else {
        vec![l]
    }
}

/// `xfs_db` must list exactly `want`: namespace, name, length, and the value when it is
/// stored in the inode or the leaf (remote values are compared through the kernel).
fn xfs_db_lists(image: &Path, path: &str, want: &[RawAttr]) {
    let got = tk::xfs_attrs(image, path);
    let mut want: Vec<&RawAttr> = want.iter().collect();
    want.sort_by(|a, b| (ns_of(a), &a.name).cmp(&(ns_of(b), &b.name)));
    assert_eq!(
        got.len(),
        want.len(),
        "{path}: xfs_db lists {} attributes",
        got.len()
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.ns.as_str(), &g.name), (ns_of(w), &w.name), "{path}");
        let n = String::from_utf8_lossy(&w.name);
        assert_eq!(g.value_len, w.value.len(), "{path}: {n}");
        if let Some(v) = &g.value {
            assert_eq!(v, &w.value, "{path}: {n}");
        }
    }
}

/// A loop mount, unmounted (and its directory removed) on drop.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(image: &Path, ro: bool) -> Option<Mount> {
        if !tk::xfs_can_mount() || tk::require_tool("getfattr").is_none() {
            return None;
        }
        if !open(image).superblock().is_v5() {
            // Kernels built without CONFIG_XFS_SUPPORT_V4 refuse v4: xfs_repair and xfs_db
            // are the oracles there (and the write side writes only v5).
            eprintln!(
                "SKIP: no kernel read-back of the v4 image {}",
                image.display()
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let opts = if ro { "ro,loop,nouuid" } else { "loop,nouuid" };
        let o = Command::new("mount")
            .args(["-t", "xfs", "-o", opts])
            .arg(image)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(Mount { dir })
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p.trim_start_matches('/'))
    }

    /// Every xattr of `p` as the kernel reads it (`getfattr -d -m - -e hex`).
    fn xattrs(&self, p: &str) -> BTreeMap<String, Vec<u8>> {
        let o = Command::new("getfattr")
            .args(["--absolute-names", "-h", "-d", "-m", "-", "-e", "hex"])
            .arg(self.path(p))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "getfattr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| match l.split_once('=') {
                Some((n, v)) => (
                    n.to_string(),
                    v.strip_prefix("0x").map(unhex).unwrap_or_default(),
                ),
                None => (l.to_string(), Vec::new()),
            })
            .collect()
    }

    fn run(&self, cmd: &mut Command) -> String {
        let o = cmd.current_dir(self.dir.path()).output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The kernel reads back exactly `want` (all names and values, remote ones included).
fn kernel_reads(image: &Path, path: &str, want: &[RawAttr]) {
    let Some(m) = Mount::new(image, true) else {
        return;
    };
    let got = m.xattrs(path);
    let want: BTreeMap<String, Vec<u8>> = want.iter().flat_map(kernel_view).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{path}"
    );
    for (k, v) in &want {
        assert!(
            got[k] == *v,
            "{path}: {k}: the kernel reads {} bytes, {} written",
            got[k].len(),
            v.len()
        );
    }
}

/// Write `attrs` and require every oracle to read exactly them.
fn write_and_check(image: &Path, path: &str, attrs: &[RawAttr], fork_space: usize) -> AttrImage {
    let img = rewrite(image, path, attrs, fork_space).unwrap_or_else(|e| panic!("{path}: {e}"));
    repair_silent(image);
    xfs_db_lists(image, path, attrs);
    kernel_reads(image, path, attrs);
    // And our own reader (not an oracle, but it must agree).
    let mut back = now(image, path).attrs;
    let mut want = attrs.to_vec();
    back.sort_by(|a, b| (a.flags, &a.name).cmp(&(b.flags, &b.name)));
    want.sort_by(|a, b| (a.flags, &a.name).cmp(&(b.flags, &b.name)));
    assert_eq!(back, want, "{path}: our reader");
    img
}

fn ua(name: &str, len: usize, seed: u8) -> RawAttr {
    RawAttr {
        flags: 0,
        name: name.as_bytes().to_vec(),
        value: (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect(),
    }
}

/// `base` plus small `user.fill-N` attributes until the encoding takes exactly `blocks`
/// blocks (None if it jumps past).
fn fill_to(g: &AttrGeom, ino: u64, base: &[RawAttr], blocks: u64) -> Option<Vec<RawAttr>> {
    // Fillers about as large as the list's values (fewer names: Linux lists at most 64 KiB
    // of them), but well under a leaf.
    let mut lens: Vec<usize> = base.iter().map(|a| a.value.len()).collect();
    lens.sort_unstable();
    let flen = lens
        .get(lens.len() / 2)
        .copied()
        .unwrap_or(40)
        .clamp(40, g.blocksize as usize / 4);
    let mut v = base.to_vec();
    for i in 0.. {
        let n = attrwrite::encode(g, ino, &v, 0).unwrap().fs_blocks();
        if n == blocks {
            return Some(v);
        }
        if n > blocks {
            return None;
        }
        v.push(ua(&format!("fill-{i}"), flen + i % 8, i as u8));
    }
    None
}

/// Every attribute the fixture script set (`xfs_db attr_set`, values written in place) is
/// re-encoded as it is and written back: shortform forks byte for byte as they were, leaf
/// forks (with remote values of 1 to 17 blocks) in the same blocks; node forks (`xattr/node`
/// with 600 names, `xattr/btree` with a bmbt attr fork) take fewer leaves than libxfs's
/// half-full splits, so filler attributes are added until the fork is the same size. Then
/// the values must still be the ones the fixture recorded (sha256 in `xattrs.tsv`, read by
/// the kernel).
fn fixture_roundtrip(variant: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs(variant, tmp.path()) else {
        return;
    };
    let tsv = fx.xattrs();
    let mut paths: Vec<String> = tsv
        .iter()
        .map(|x| String::from_utf8(x.path.clone()).unwrap())
        .collect();
    paths.sort();
    paths.dedup();
    let g = AttrGeom::from_sb(open(&fx.image).superblock());
    let mut forms = BTreeMap::new();
    for p in &paths {
        let n = now(&fx.image, p);
        let form = n.form.unwrap();
        let img = attrwrite::encode(&g, n.ino, &n.attrs, n.fork_space).unwrap();
        assert_eq!(img.form(), form, "{variant} {p}: the form XFS chose");
        let mut attrs = n.attrs.clone();
        if form == AttrForm::Shortform {
            // Same list, same order: the very bytes XFS wrote.
            let fs = open(&fx.image);
            let r = Reader::new(fs.device() as &dyn BlockDev, fs.superblock());
            let inode = Inode::read(&r, n.ino).unwrap();
            let AttrImage::Short(b) = &img else { panic!() };
            assert_eq!(
                &inode.attr_fork()[..b.len()],
                &b[..],
                "{variant} {p}: shortform bytes"
            );
        } else if img.fs_blocks() != n.blocks {
            assert_eq!(
                form,
                AttrForm::Node,
                "{variant} {p}: a leaf fork of {} blocks",
                n.blocks
            );
            attrs = fill_to(&g, n.ino, &attrs, n.blocks)
                .unwrap_or_else(|| panic!("{variant} {p}: cannot fill to {} blocks", n.blocks));
        }
        write_and_check(&fx.image, p, &attrs, n.fork_space);
        *forms.entry(format!("{form:?}")).or_insert(0) += 1;
    }
    // The fixture's values, from the kernel's reading (independent of our reader).
    if let Some(m) = Mount::new(&fx.image, true) {
        for p in &paths {
            let got = m.xattrs(p);
            for x in tsv.iter().filter(|x| x.path == p.as_bytes()) {
                let v = &got[&x.name];
                let disk = if x.name.starts_with("system.posix_acl") {
                    attrwrite::from_linux(&x.name, v).unwrap().value
                } else {
                    v.clone()
                };
                assert_eq!(disk.len(), x.len, "{variant} {p} {}", x.name);
                assert_eq!(
                    hex(&Sha256::digest(&disk)),
                    x.sha256,
                    "{variant} {p} {}",
                    x.name
                );
            }
        }
    }
    eprintln!("{variant}: rewrote {forms:?}");
    for f in ["Shortform", "Leaf", "Node"] {
        assert!(
            forms.contains_key(f),
            "{variant}: no {f} fork in the fixture: {forms:?}"
        );
    }
}

#[test]
fn fixture_roundtrip_4k() {
    fixture_roundtrip("v5");
}

#[test]
fn fixture_roundtrip_1k() {
    fixture_roundtrip("b1k");
}

/// v4 headers (no CRC, raw remote blocks), 2 KiB inodes (larger shortform forks), and the
/// image the kernel made (ACLs by setfacl; root and loop mounts only).
#[test]
fn fixture_roundtrip_v4_i2k_kernel() {
    for v in ["v4", "i2k", "kernel"] {
        fixture_roundtrip(v);
    }
}

/// One kernel-made case: a file, the attributes set on it in order.
struct Case {
    name: String,
    attrs: Vec<RawAttr>,
}

/// A `setfattr --restore` dump setting `attrs` on `file` (values of any size).
fn dump(file: &str, attrs: &[RawAttr]) -> String {
    let mut s = format!("# file: {file}\n");
    for a in attrs {
        let (n, v) = linux(a);
        s += &format!("{n}=0x{}\n", hex(&v));
    }
    s + "\n"
}

/// Set the cases' attributes with the kernel (files under /attrtest), unmount, and check
/// that the filesystem is clean.
fn kernel_make(image: &Path, cases: &[Case]) -> bool {
    let Some(m) = Mount::new(image, false) else {
        return false;
    };
    std::fs::create_dir_all(m.path("attrtest")).unwrap();
    let mut d = String::new();
    for c in cases {
        std::fs::write(m.path(&format!("attrtest/{}", c.name)), b"").unwrap();
        d += &dump(&format!("attrtest/{}", c.name), &c.attrs);
    }
    let df = m.path("attrtest/.dump");
    std::fs::write(&df, d).unwrap();
    m.run(Command::new("setfattr").arg(format!("--restore={}", df.display())));
    std::fs::remove_file(df).unwrap();
    drop(m);
    repair_silent(image);
    true
}

/// Attributes that fill a shortform fork of `total` bytes exactly (names `s0`, `s1`…).
fn sf_total(total: usize) -> Vec<RawAttr> {
    let mut v = Vec::new();
    let mut left = total - 4;
    let mut i = 0;
    while left > 0 {
        let name = format!("s{i}");
        let vl = (left - 3 - name.len()).min(200);
        left -= 3 + name.len() + vl;
        v.push(ua(&name, vl, i as u8));
        i += 1;
        if left > 0 && left < 3 + 3 + 2 {
            // Too little for another entry: grow this one instead.
            let last = v.last_mut().unwrap();
            last.value.extend(std::iter::repeat_n(0x5a, left));
            left = 0;
        }
    }
    v
}

/// `n` attributes named `leaf-NNNN` with `vlen`-byte values.
fn many(prefix: &str, n: usize, vlen: usize) -> Vec<RawAttr> {
    (0..n)
        .map(|i| ua(&format!("{prefix}-{i:04}"), vlen, i as u8))
        .collect()
}

/// The largest count of `many(prefix, _, vlen)` one leaf block holds (by the on-disk sizes).
fn leaf_capacity(g: &AttrGeom, prefix: &str, vlen: usize) -> usize {
    let per = 8 + g.leaf_entsize(prefix.len() + 5, vlen).0;
    (g.blocksize as usize - g.leaf_hdr()) / per
}

/// XFS (the kernel) and the encoder choose the same form at every boundary, `from_linux`
/// gives the bytes the kernel stored, and what the encoder writes in place — the same
/// lists, then changed lists of the same size — reads back through every oracle. 4 KiB and
/// 1 KiB blocks.
fn kernel_boundaries(variant: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs(variant, tmp.path()) else {
        return;
    };
    let sb = open(&fx.image).superblock().clone();
    let g = AttrGeom::from_sb(&sb);
    let bs = sb.blocksize as usize;
    // An empty regular file: the attribute fork may take all the literal area but the data
    // fork's minimum (a bmbt root of 3 records, 56 bytes) — xfs_attr_shortform_bytesfit.
    let sf_max = usize::from(sb.inodesize) - 176 - 56;
    // Value length whose record is the largest local one (3/4 of the block, minus one word).
    let local_max_v = (bs / 2 + bs / 4) - 4 - 4;
    let cap = leaf_capacity(&g, "leaf", 16);
    let selinux = b"system_u:object_r:etc_t:s0\0".to_vec();
    let cases = vec![
        Case {
            name: "sf-max".into(),
            attrs: sf_total(sf_max),
        },
        Case {
            name: "sf-over".into(),
            attrs: sf_total(sf_max + 1),
        },
        Case {
            name: "v254".into(),
            attrs: vec![ua("v", 254, 1)],
        },
        Case {
            name: "v255".into(),
            attrs: vec![ua("v", 255, 2)],
        },
        Case {
            name: "local-max".into(),
            attrs: vec![ua("x", local_max_v, 3)],
        },
        Case {
            name: "remote-min".into(),
            attrs: vec![ua("x", local_max_v + 1, 4)],
        },
        Case {
            name: "remote-multi".into(),
            attrs: vec![
                ua("small", 1, 5),
                ua("big", 65536, 6),
                ua("mid", 2 * g.rmt_space() + 1, 7),
                RawAttr {
                    flags: flag::SECURE,
                    name: b"selinux".to_vec(),
                    value: selinux.clone(),
                },
                RawAttr {
                    flags: flag::ROOT,
                    name: b"big".to_vec(),
                    value: vec![0xee; 5000],
                },
            ],
        },
        Case {
            name: "leaf-full".into(),
            attrs: many("leaf", cap, 16),
        },
        Case {
            name: "node-min".into(),
            attrs: many("leaf", cap + 1, 16),
        },
        // A root over more than one node block: two node levels.
        Case {
            name: "node-deep".into(),
            attrs: if bs == 1024 {
                many("deep", 1200, 300)
            } else {
                many("deep", 520, 3000)
            },
        },
        Case {
            name: "node-many".into(),
            // With two names of one hash (c-200008, c-300000) looked up through the tree.
            attrs: many("node", 1500, 24)
                .into_iter()
                .chain([ua("c-200008", 24, 1), ua("c-300000", 24, 2)])
                .collect(),
        },
    ];
    if !kernel_make(&fx.image, &cases) {
        return;
    }
    for c in &cases {
        let p = format!("/attrtest/{}", c.name);
        let n = now(&fx.image, &p);
        // Our reader sees what the kernel stored, and from_linux gives the same bytes from
        // what the kernel was given.
        let mut got = n.attrs.clone();
        got.sort_by(|a, b| (a.flags, &a.name).cmp(&(b.flags, &b.name)));
        let mut want: Vec<RawAttr> = c
            .attrs
            .iter()
            .map(|a| {
                let (ln, lv) = linux(a);
                attrwrite::from_linux(&ln, &lv).unwrap()
            })
            .collect();
        want.sort_by(|a, b| (a.flags, &a.name).cmp(&(b.flags, &b.name)));
        assert_eq!(got, want, "{variant} {p}");
        // The space a lead would give this file's shortform fork: all it can have.
        let img = attrwrite::encode(&g, n.ino, &c.attrs, sf_max).unwrap();
        // And the fork offset XFS picked for a shortform fork.
        let fo = attrwrite::short_size(&c.attrs).and_then(|b| {
            attrwrite::shortform_forkoff(sb.inodesize, true, DataFork::Extents(0), 0, b)
        });
        if n.form == Some(AttrForm::Shortform) {
            assert_eq!(fo, Some(n.forkoff), "{variant} {p}: forkoff");
        } else {
            assert_eq!(fo, None, "{variant} {p}: fits in the inode");
        }
        assert_eq!(
            Some(img.form()),
            n.form,
            "{variant} {p}: XFS chose {:?}",
            n.form
        );
        if img.form() != AttrForm::Node {
            assert_eq!(img.fs_blocks(), n.blocks, "{variant} {p}: blocks");
        }
        // The same list (fillers for node forks), in place.
        let same = if img.fs_blocks() == n.blocks {
            c.attrs.clone()
        } else {
            fill_to(&g, n.ino, &c.attrs, n.blocks).unwrap()
        };
        let img = write_and_check(&fx.image, &p, &same, n.fork_space);
        if c.name == "node-deep" {
            let AttrImage::Blocks(b) = &img else { panic!() };
            assert_eq!(b[0].data[58..60], [0, 2], "{variant} {p}: root level");
        }
        // A changed list of the same form and size: every name changed (same length) and
        // every value (same length); node forks topped up to the same size if needed.
        let mut changed: Vec<RawAttr> = same
            .iter()
            .map(|a| {
                let mut b = a.clone();
                b.name[0] = b.name[0].wrapping_add(1);
                b.value.iter_mut().for_each(|x| *x ^= 0xa5);
                b
            })
            .collect();
        let enc = attrwrite::encode(&g, n.ino, &changed, n.fork_space).unwrap();
        if enc.form() == AttrForm::Node && enc.fs_blocks() != n.blocks {
            changed = fill_to(&g, n.ino, &changed, n.blocks).unwrap();
        }
        let img2 = write_and_check(&fx.image, &p, &changed, n.fork_space);
        assert_eq!(Some(img2.form()), n.form, "{variant} {p}: changed list");
        // The kernel carries on from what we wrote (our free map and first-used offset tell
        // it where a new record goes): add one attribute, remove another, and everything
        // must still read back.
        if let Some(m) = Mount::new(&fx.image, false) {
            let after = ua("after", 20, 9);
            let (gone, _) = linux(&changed[0]);
            let f = m.path(&p);
            m.run(
                Command::new("setfattr")
                    .args(["-n", "user.after", "-v"])
                    .arg(format!("0x{}", hex(&after.value)))
                    .arg(&f),
            );
            m.run(Command::new("setfattr").args(["-x", &gone]).arg(&f));
            drop(m);
            let mut want = changed[1..].to_vec();
            want.push(after);
            repair_silent(&fx.image);
            xfs_db_lists(&fx.image, &p, &want);
            kernel_reads(&fx.image, &p, &want);
        }
    }
}

#[test]
fn kernel_boundaries_4k() {
    kernel_boundaries("v5");
}

#[test]
fn kernel_boundaries_1k() {
    kernel_boundaries("b1k");
}

/// POSIX ACLs and SELinux labels: set by `setfacl`/`setfattr`, stored by the kernel in
/// XFS's format exactly as `from_linux` converts them; then other ACLs written by the
/// encoder read back through `getfacl` as the entries given.
#[test]
fn acls_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs("v5", tmp.path()) else {
        return;
    };
    let Some(m) = Mount::new(&fx.image, false) else {
        return;
    };
    if tk::require_tool("setfacl").is_none() {
        return;
    }
    std::fs::create_dir_all(m.path("acltest/dir")).unwrap();
    std::fs::write(m.path("acltest/file"), b"x").unwrap();
    m.run(Command::new("chmod").args(["0644", "acltest/file"]));
    m.run(Command::new("setfacl").args(["-m", "u:1000:r,g:100:rw", "acltest/file"]));
    m.run(Command::new("setfacl").args([
        "-m",
        "u:1000:rwx",
        "-d",
        "-m",
        "u:1000:rwx,g:100:rx",
        "acltest/dir",
    ]));
    m.run(Command::new("setfattr").args([
        "-n",
        "security.selinux",
        "-v",
        "system_u:object_r:etc_t:s0",
        "acltest/file",
    ]));
    let kernel: BTreeMap<String, BTreeMap<String, Vec<u8>>> = ["acltest/file", "acltest/dir"]
        .iter()
        .map(|p| (p.to_string(), m.xattrs(p)))
        .collect();
    drop(m);
    repair_silent(&fx.image);
    for (p, xs) in &kernel {
        let n = now(&fx.image, &format!("/{p}"));
        // A fork offset exists for this list beside this data fork (the kernel's own choice
        // depends on the history of the fork: it never moves the offset back when it could).
        let b = attrwrite::short_size(&n.attrs).unwrap();
        let fo = attrwrite::shortform_forkoff(512, true, n.data, 0, b).unwrap();
        assert!(
            fo >= n.forkoff,
            "{p}: forkoff {fo} for {b} bytes with {:?}",
            n.data
        );
        let mut stored = n.attrs.clone();
        stored.sort_by(|a, b| (a.flags, &a.name).cmp(&(b.flags, &b.name)));
        let mut conv: Vec<RawAttr> = xs
            .iter()
            .filter(|(k, _)| !k.starts_with("trusted.SGI_ACL_"))
            .map(|(k, v)| attrwrite::from_linux(k, v).unwrap())
            .collect();
        // The kernel also lists the raw attribute: the same bytes.
        for a in conv.iter().filter(|a| a.flags == flag::ROOT) {
            let raw = format!("trusted.{}", String::from_utf8_lossy(&a.name));
            assert_eq!(xs[&raw], a.value, "{p}: {raw}");
        }
        conv.sort_by(|a, b| (a.flags, &a.name).cmp(&(b.flags, &b.name)));
        assert_eq!(
            conv, stored,
            "{p}: from_linux of what the kernel shows = what it stored"
        );
    }
    // Other ACLs (and label), written by the encoder over the same shortform forks.
    let acl = |ents: &[(u16, u16, u32)]| {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(t, p, id) in ents {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    };
    let u = u32::MAX;
    let file_acl = acl(&[
        (1, 6, u),
        (2, 7, 2000),
        (4, 4, u),
        (8, 1, 300),
        (0x10, 7, u),
        (0x20, 0, u),
    ]);
    let dir_def = acl(&[(1, 7, u), (4, 5, u), (8, 7, 42), (0x10, 7, u), (0x20, 1, u)]);
    let n = now(&fx.image, "/acltest/file");
    let attrs = vec![
        attrwrite::from_linux("system.posix_acl_access", &file_acl).unwrap(),
        attrwrite::from_linux("security.selinux", b"user_u:object_r:tmp_t:s0\0").unwrap(),
    ];
    write_and_check(&fx.image, "/acltest/file", &attrs, n.fork_space);
    let n = now(&fx.image, "/acltest/dir");
    let mut attrs = n.attrs.clone();
    attrs.retain(|a| a.name != b"SGI_ACL_DEFAULT");
    attrs.push(attrwrite::from_linux("system.posix_acl_default", &dir_def).unwrap());
    write_and_check(&fx.image, "/acltest/dir", &attrs, n.fork_space);
    let Some(m) = Mount::new(&fx.image, true) else {
        return;
    };
    let f = m.run(Command::new("getfacl").args(["-n", "-p", "-c", "acltest/file"]));
    assert_eq!(
        f.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(),
        [
            "user::rw-",
            "user:2000:rwx",
            "group::r--",
            "group:300:--x",
            "mask::rwx",
            "other::---"
        ],
        "getfacl acltest/file"
    );
    let d = m.run(Command::new("getfacl").args(["-n", "-p", "-c", "-d", "acltest/dir"]));
    assert_eq!(
        d.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(),
        [
            "user::rwx",
            "group::r-x",
            "group:42:rwx",
            "mask::rwx",
            "other::--x"
        ],
        "getfacl -d acltest/dir"
    );
}
