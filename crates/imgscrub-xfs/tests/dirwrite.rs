#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The directory encoder (`dirwrite`) against the real tools. Directories are re-encoded and
//! written into images made by mkfs.xfs, then `xfs_repair -n` must be silent and `xfs_db`
//! must list (`ls`) and look up (`ls -i PATH`, through the hash index) exactly the entries.
//!
//! The harness plays the part of the engine's allocator: the encoded directory blocks are
//! put on the directory's own old physical blocks (directory block by directory block, in
//! logical order); what is left over goes to a "donor" regular file, and what is missing is
//! taken from the end of the donor, so that no block leaks and none is doubly owned. Both
//! inodes get their new extent lists, sizes and block counts (and v3 CRCs). Directories and
//! donors must stay in extents format (asserted). Variants with rmapbt are left out (the
//! reverse map would name the old owner).
//!
//! - `reencode_*`: every directory of the shared fixture tree that mkfs.xfs made (shortform,
//!   block, leaf, node; "huge" too when it is not a bmbt) is read with our reader, encoded
//!   in the same order, must come out in the form mkfs.xfs chose, and is written back; then
//!   again with a quarter of the names renamed.
//! - `grow_shrink_*`: one directory of hard links to one file is pushed through every form
//!   and back at the exact boundary entry counts (the counts where the encoder switches
//!   form), with entries dropped and renamed on the way (the file's link count follows),
//!   and with 1 KiB directory blocks up to a node-form directory with a two-level
//!   da-btree. Where this kernel mounts the format (root, loop devices; not ascii-ci or v4
//!   on recent kernels), its readdir and lookups must agree too, and it must be able to go
//!   on editing the directory (creates, unlinks, renames on a read-write copy) with
//!   `xfs_repair -n` still silent afterwards.
//! - `thresholds_*`: directories made by mkfs.xfs (which grows them with the kernel's own
//!   libxfs code) at the entry counts on both sides of every switch point of the encoder
//!   are in the form the encoder picks.

use imgscrub_disk::RawFile;
use imgscrub_testkit as tk;
use imgscrub_xfs::dir::DirForm;
use imgscrub_xfs::dirwrite::{self, DirGeom, DirImage, NewEntry};
use imgscrub_xfs::inode::{Format, Inode};
use imgscrub_xfs::meta::Stamp;
use imgscrub_xfs::reader::Reader;
use imgscrub_xfs::{FileType, OpenOptions, XfsFs};
use std::collections::BTreeMap;
use std::fs::OpenOptions as FOpen;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn open(img: &Path) -> XfsFs<RawFile> {
    XfsFs::open(RawFile::open(img).unwrap(), OpenOptions::default()).unwrap()
}

fn lookup_path(fs: &XfsFs<RawFile>, path: &str) -> u64 {
    let mut ino = fs.root();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = fs
            .lookup(ino, c.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{path}: not found"));
    }
    ino
}

/// An entry as the test keeps it (owned).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ent {
    name: Vec<u8>,
    ino: u64,
    ft: FileType,
}

fn new_entries(v: &[Ent]) -> Vec<NewEntry<'_>> {
    v.iter()
        .map(|e| NewEntry {
            name: &e.name,
            ino: e.ino,
            file_type: e.ft,
        })
        .collect()
}

fn kind_word(ft: FileType) -> &'static str {
    match ft {
        FileType::Regular => "regular",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "chardev",
        FileType::BlockDevice => "blkdev",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
    }
}

// ---- raw inode editing ------------------------------------------------------------------------

struct RawInode {
    off: u64,
    raw: Vec<u8>,
    v3: bool,
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes(b[o..o + 2].try_into().unwrap())
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

impl RawInode {
    fn read(fs: &XfsFs<RawFile>, ino: u64) -> RawInode {
        let sb = fs.superblock();
        let r = Reader::new(fs.device(), sb);
        let off = Inode::location(&r, ino).unwrap();
        let raw = r.bytes(off, usize::from(sb.inodesize)).unwrap();
        let v3 = raw[4] == 3;
        RawInode { off, raw, v3 }
    }
    fn lit_off(&self) -> usize {
        if self.v3 { 176 } else { 100 }
    }
    fn data_fork_len(&self) -> usize {
        match self.raw[82] {
            0 => self.raw.len() - self.lit_off(),
            f => usize::from(f) * 8,
        }
    }
    fn nrext64(&self) -> bool {
        self.v3 && be64(&self.raw, 120) & 0x10 != 0
    }
    fn set_nlink(&mut self, n: u32) {
        self.raw[16..20].copy_from_slice(&n.to_be_bytes());
    }
    fn set_local(&mut self, data: &[u8]) {
        let (lo, len) = (self.lit_off(), self.data_fork_len());
        assert!(data.len() <= len, "shortform does not fit the fork");
        self.raw[5] = 1;
        self.raw[lo..lo + len].fill(0);
        self.raw[lo..lo + data.len()].copy_from_slice(data);
        self.set_counts(data.len() as u64, 0, 0);
    }
    /// Extents format with `(file block, disk block, len)` runs.
    fn set_extents(&mut self, runs: &[(u64, u64, u64)], size: u64) {
        let (lo, len) = (self.lit_off(), self.data_fork_len());
        assert!(
            runs.len() * 16 <= len,
            "{} extents do not fit in the inode ({len} bytes)",
            runs.len()
        );
        self.raw[5] = 2;
        self.raw[lo..lo + len].fill(0);
        for (i, &(off, blk, n)) in runs.iter().enumerate() {
            let l0 = (off << 9) | (blk >> 43);
            let l1 = (blk << 21) | n;
            let p = lo + i * 16;
            self.raw[p..p + 8].copy_from_slice(&l0.to_be_bytes());
            self.raw[p + 8..p + 16].copy_from_slice(&l1.to_be_bytes());
        }
        let nblocks = runs.iter().map(|r| r.2).sum();
        self.set_counts(size, nblocks, runs.len() as u64);
    }
    fn set_counts(&mut self, size: u64, nblocks: u64, nextents: u64) {
        self.raw[56..64].copy_from_slice(&size.to_be_bytes());
        self.raw[64..72].copy_from_slice(&nblocks.to_be_bytes());
        if self.nrext64() {
            self.raw[24..32].copy_from_slice(&nextents.to_be_bytes());
        } else {
            self.raw[76..80].copy_from_slice(&(nextents as u32).to_be_bytes());
        }
    }
    fn write(&mut self, img: &Path) {
        if self.v3 {
            let c = imgscrub_xfs::csum::compute(&self.raw, 100);
            self.raw[100..104].copy_from_slice(&c.to_le_bytes());
        }
        let f = FOpen::new().write(true).open(img).unwrap();
        f.write_all_at(&self.raw, self.off).unwrap();
    }
}

/// Coalesce (file block, disk block) pairs (sorted by file block) into runs.
fn runs(pairs: &[(u64, u64)]) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    for &(l, p) in pairs {
        match out.last_mut() {
            Some(r) if r.0 + r.2 == l && r.1 + r.2 == p && r.2 < (1 << 21) - 1 => r.2 += 1,
            _ => out.push((l, p, 1)),
        }
    }
    out
}

/// The LSN for v5 headers: that of the superblock (`sb_lsn`), never ahead of the log.
fn lsn_of(img: &Path) -> u64 {
    let f = std::fs::File::open(img).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 240).unwrap();
    u64::from_be_bytes(b)
}

/// Put `image` in place as directory `dir`'s content (see the module comment); `donor` is
/// a regular file that gives and takes blocks.
fn apply(img: &Path, dir: u64, donor: u64, image: &DirImage) {
    let fs = open(img);
    let sb = fs.superblock().clone();
    let g = DirGeom::from_sb(&sb);
    let bs = u64::from(sb.blocksize);
    let fsbc = g.fsb_per_dirblk();
    // Old directory blocks, grouped per directory block, in logical order.
    let mut old: Vec<(u64, u64)> = Vec::new();
    let dinode = fs.inode(dir).unwrap();
    if dinode.format != Format::Local {
        for e in fs.extents(dir).unwrap() {
            for k in 0..e.len {
                old.push((e.offset + k, e.block + k));
            }
        }
    }
    let mut units: std::collections::VecDeque<Vec<u64>> = old
        .chunks(fsbc as usize)
        .map(|c| c.iter().map(|x| x.1).collect())
        .collect();
    let donor_ext = fs.extents(donor).unwrap();
    let mut dfsb: Vec<u64> = Vec::new();
    for e in &donor_ext {
        for k in 0..e.len {
            dfsb.push(e.block + k);
        }
    }
    let stamp = Stamp {
        uuid: sb.meta_uuid(),
        lsn: lsn_of(img),
    };
    let f = FOpen::new().write(true).open(img).unwrap();
    let mut dpairs: Vec<(u64, u64)> = Vec::new();
    let mut d = RawInode::read(&fs, dir);
    match image {
        DirImage::Short(sf) => d.set_local(sf),
        DirImage::Blocks(blocks) => {
            // Missing blocks come from the end of the donor, in ascending order.
            let need = blocks.len().saturating_sub(units.len()) * fsbc as usize;
            let at = dfsb.len().checked_sub(need).expect("donor too small");
            let extra = dfsb.split_off(at);
            units.extend(extra.chunks(fsbc as usize).map(<[u64]>::to_vec));
            for b in blocks {
                let unit = units.pop_front().unwrap();
                let mut data = b.data.clone();
                dirwrite::stamp(&mut data, sb.fsb_to_byte(unit[0]) >> 9, dir, &stamp);
                for (k, &p) in unit.iter().enumerate() {
                    let chunk = &data[k * bs as usize..(k + 1) * bs as usize];
                    f.write_all_at(chunk, sb.fsb_to_byte(p)).unwrap();
                    dpairs.push((b.lblk + k as u64, p));
                }
            }
            dpairs.sort_unstable();
            d.set_extents(&runs(&dpairs), image.di_size(&g));
        }
    }
    for u in units {
        dfsb.extend(u);
    }
    d.write(img);
    let mut donor_raw = RawInode::read(&fs, donor);
    let pairs: Vec<(u64, u64)> = dfsb
        .iter()
        .enumerate()
        .map(|(i, &p)| (i as u64, p))
        .collect();
    donor_raw.set_extents(&runs(&pairs), dfsb.len() as u64 * bs);
    donor_raw.write(img);
}

fn set_nlink(img: &Path, ino: u64, n: u32) {
    let fs = open(img);
    let mut r = RawInode::read(&fs, ino);
    r.set_nlink(n);
    r.write(img);
}

fn fork_space(fs: &XfsFs<RawFile>, dir: u64) -> usize {
    RawInode::read(fs, dir).data_fork_len()
}

/// xfs_repair -n silent; xfs_db lists exactly `want` (plus "." and "..") with the right
/// inode numbers (and file types when the filesystem has them), and finds `probe` names by
/// path lookup (the hash index).
fn check(img: &Path, path: &str, self_ino: u64, parent: u64, want: &[Ent], probe: &[&[u8]]) {
    if let Err(out) = tk::xfs_repair_check(img) {
        panic!("{path}: xfs_repair -n is not clean:\n{out}");
    }
    let sb = open(img).superblock().clone();
    let ftype = sb.has_ftype();
    let mut got: BTreeMap<Vec<u8>, (u64, String)> = BTreeMap::new();
    for e in tk::xfs_ls(img, path) {
        assert!(
            got.insert(e.name.clone(), (e.ino, e.kind)).is_none(),
            "{path}: {:?} listed twice",
            String::from_utf8_lossy(&e.name)
        );
    }
    let mut exp: BTreeMap<Vec<u8>, (u64, String)> = BTreeMap::new();
    let dir = "directory".to_string();
    exp.insert(b".".to_vec(), (self_ino, dir.clone()));
    exp.insert(b"..".to_vec(), (parent, dir));
    for e in want {
        exp.insert(e.name.clone(), (e.ino, kind_word(e.ft).to_string()));
    }
    if !ftype {
        for v in got.values_mut().chain(exp.values_mut()) {
            v.1.clear();
        }
    }
    if got != exp {
        let missing: Vec<_> = exp
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !exp.contains_key(*k))
            .take(5)
            .collect();
        panic!(
            "{path}: xfs_db ls lists {} entries, {} expected; missing {missing:?}, extra {extra:?}",
            got.len(),
            exp.len()
        );
    }
    if !probe.is_empty() {
        let cmds: Vec<String> = probe
            .iter()
            .map(|n| format!("ls -i {path}/{}", String::from_utf8_lossy(n)))
            .collect();
        let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
        let (out, err) = tk::xfs_db_full(img, &refs);
        let inos: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let want_inos: Vec<u64> = probe
            .iter()
            .map(|n| {
                want.iter()
                    .find(|e| e.name.eq_ignore_ascii_case(n))
                    .map(|e| e.ino)
                    .unwrap()
            })
            .collect();
        assert_eq!(
            inos, want_inos,
            "{path}: xfs_db path lookups {cmds:?}: {err}"
        );
    }
}

/// Whether the running kernel mounts `img` as made (before any change): root, loop
/// devices, and a kernel that still supports the format (ascii-ci and v4 are gone from
/// recent kernels). Prints why not.
fn kernel_mounts(img: &Path) -> bool {
    if !tk::xfs_can_mount() {
        return false;
    }
    let mnt = tempfile::tempdir().unwrap();
    let out = tk::run(
        std::process::Command::new("mount")
            .args(["-o", "loop,ro,nouuid"])
            .arg(img)
            .arg(mnt.path()),
    );
    if !out.status.success() {
        eprintln!(
            "SKIP kernel checks: this kernel does not mount the unchanged image ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return false;
    }
    drop(Mounted(mnt.path().to_path_buf()));
    true
}

/// Unmounts on drop. A busy mount point (a process another test thread forked at the wrong
/// moment can hold a file open for a moment) is retried for a while; failing to unmount is
/// a failure: what the kernel wrote may not be on disk yet.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let mut last = String::new();
        for _ in 0..100 {
            let out = tk::run(std::process::Command::new("umount").arg(&self.0));
            if out.status.success() {
                return;
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !std::thread::panicking() {
            panic!("umount {}: {last}", self.0.display());
        }
    }
}

/// The kernel's view (root only: loop mount, read-only): `readdir` lists exactly `want`
/// with their inode numbers (and types, with ftype), and `probe` names resolve (the hash
/// index; case-folded on ascii-ci).
fn kernel_check(kernel: bool, img: &Path, path: &str, want: &[Ent], probe: &[&[u8]]) {
    if !kernel {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    let mnt = tempfile::tempdir().unwrap();
    let out = tk::run(
        std::process::Command::new("mount")
            .args(["-o", "loop,ro,nouuid"])
            .arg(img)
            .arg(mnt.path()),
    );
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mounted(mnt.path().to_path_buf());
    let dir = m.0.join(path.trim_start_matches('/'));
    let mut got: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("kernel: readdir {path}: {e}")) {
        let e = e.unwrap_or_else(|e| panic!("kernel: readdir {path}: {e}"));
        got.insert(e.file_name().as_bytes().to_vec(), e.ino());
        let ft = e.file_type().unwrap();
        let want_dir = want
            .iter()
            .find(|w| w.name == e.file_name().as_bytes())
            .is_some_and(|w| w.ft == FileType::Directory);
        assert_eq!(
            ft.is_dir(),
            want_dir,
            "kernel: {path}: type of {:?}",
            e.file_name()
        );
    }
    let exp: BTreeMap<Vec<u8>, u64> = want.iter().map(|e| (e.name.clone(), e.ino)).collect();
    assert!(
        got == exp,
        "kernel: {path}: readdir gives {} entries, {} expected",
        got.len(),
        exp.len()
    );
    for n in probe {
        let p = dir.join(std::ffi::OsStr::from_bytes(n));
        let ino = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("kernel: lookup {}: {e}", p.display()))
            .ino();
        let w = want
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(n))
            .unwrap();
        assert_eq!(ino, w.ino, "kernel: lookup {}", p.display());
    }
    drop(m);
}

/// The kernel goes on editing what we wrote (on a copy, mounted read-write): 40 new files,
/// 10 entries unlinked, 5 renamed; after unmounting, `xfs_repair -n` is silent and xfs_db
/// lists the result. This holds only if the best-free tables, leaf bests and free index are
/// exactly what the kernel would have kept (it trusts them to place new entries).
fn kernel_edit(kernel: bool, img: &Path, path: &str, want: &[Ent]) {
    if !kernel {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy.img");
    let out = tk::run(
        std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(img)
            .arg(&copy),
    );
    assert!(out.status.success());
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = tk::run(
        std::process::Command::new("mount")
            .args(["-o", "loop,nouuid"])
            .arg(&copy)
            .arg(&mnt),
    );
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mounted(mnt.clone());
    let dir = mnt.join(path.trim_start_matches('/'));
    let mut names: std::collections::BTreeSet<Vec<u8>> =
        want.iter().map(|e| e.name.clone()).collect();
    let files: Vec<&Ent> = want.iter().filter(|e| e.ft == FileType::Regular).collect();
    for e in files
        .iter()
        .step_by(files.len().div_ceil(10).max(1))
        .take(10)
    {
        std::fs::remove_file(dir.join(std::ffi::OsStr::from_bytes(&e.name))).unwrap();
        names.remove(&e.name);
    }
    for i in 0..40 {
        let n = format!("kernel-new-{i:03}");
        std::fs::write(dir.join(&n), b"k").unwrap();
        names.insert(n.into_bytes());
    }
    let left: Vec<Vec<u8>> = names
        .iter()
        .filter(|n| !n.starts_with(b"kernel-new"))
        .take(5)
        .cloned()
        .collect();
    for (i, n) in left.iter().enumerate() {
        let to = format!("kernel-renamed-{i}");
        std::fs::rename(dir.join(std::ffi::OsStr::from_bytes(n)), dir.join(&to)).unwrap();
        names.remove(n);
        names.insert(to.into_bytes());
    }
    drop(m);
    if let Err(out) = tk::xfs_repair_check(&copy) {
        panic!("{path}: after the kernel's edits, xfs_repair -n is not clean:\n{out}");
    }
    let got: std::collections::BTreeSet<Vec<u8>> = tk::xfs_ls(&copy, path)
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n != b"." && n != b"..")
        .collect();
    assert!(
        got == names,
        "{path}: after the kernel's edits xfs_db lists {} names, {} expected",
        got.len(),
        names.len()
    );
}

fn probes(v: &[Ent]) -> Vec<&[u8]> {
    if v.is_empty() {
        return Vec::new();
    }
    let n = v.len();
    let mut idx = vec![0, n / 3, n / 2, n - 1];
    idx.dedup();
    idx.into_iter().map(|i| v[i].name.as_slice()).collect()
}

fn form_of(fs: &XfsFs<RawFile>, ino: u64) -> DirForm {
    fs.dir_form(ino).unwrap()
}

/// What mkfs.xfs (libxfs, the kernel's code) grew in this very order is reproduced byte
/// for byte, v5 headers stamped with the original blocks' addresses and LSNs: shortform and
/// block-form directories whole; in leaf and node form, with names of one length, every
/// data block but the first, the leaf block and the free-index blocks. Not compared: data
/// block 0 after a block→leaf conversion (libxfs leaves old hash entries as junk in entry
/// padding where the encoder writes zeros), leaf/node blocks of the da-btree (libxfs splits
/// them in halves, the encoder fills them evenly) and data blocks when names differ in
/// length (libxfs back-fills earlier blocks with later short names).
fn same_bytes(fs: &XfsFs<RawFile>, ino: u64, image: &DirImage, ents: &[Ent], ctx: &str) {
    let sb = fs.superblock();
    let r = Reader::new(fs.device(), sb);
    let g = DirGeom::from_sb(sb);
    let blocks = match image {
        DirImage::Short(sf) => {
            let raw = RawInode::read(fs, ino);
            let lo = raw.lit_off();
            assert_eq!(
                &raw.raw[lo..lo + sf.len()],
                &sf[..],
                "{ctx}: shortform bytes"
            );
            return;
        }
        DirImage::Blocks(b) => b,
    };
    let one_len = ents.windows(2).all(|w| w[0].name.len() == w[1].name.len());
    let exts = fs.extents(ino).unwrap();
    let mut compared = 0;
    for x in blocks {
        let da = g.v5 && be16(&x.data, 8) != 0 || !g.v5 && x.data[..2] != *b"XD";
        let compare = match image.form() {
            DirForm::Block => true,
            _ if x.lblk >= g.free_lblk() => true,
            _ if x.lblk >= g.leaf_lblk() => image.form() == DirForm::Leaf,
            _ => one_len && x.lblk != 0,
        };
        if !compare {
            continue;
        }
        let on_disk =
            imgscrub_xfs::bmap::read_mapped(&r, &exts, x.lblk, g.fsb_per_dirblk() as u32, &|| {
                ctx.to_string()
            })
            .unwrap();
        let (hdr_blkno, hdr_lsn) = if da { (16, 24) } else { (8, 16) };
        let mut ours = x.data.clone();
        let stamp = Stamp {
            uuid: sb.meta_uuid(),
            lsn: if g.v5 { be64(&on_disk, hdr_lsn) } else { 0 },
        };
        dirwrite::stamp(&mut ours, be64(&on_disk, hdr_blkno), ino, &stamp);
        if let Some(i) = (0..ours.len()).find(|&i| ours[i] != on_disk[i]) {
            panic!(
                "{ctx}: directory block at {} differs first at byte {i}",
                x.lblk
            );
        }
        compared += 1;
    }
    eprintln!("{ctx}: {compared} blocks byte-identical to mkfs.xfs's");
}

// ---- re-encoding what mkfs.xfs made -------------------------------------------------------------

fn reencode(variant: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs(variant, tmp.path()) else {
        return;
    };
    let img = fx.image.clone();
    let kernel = kernel_mounts(&img);
    let fs = open(&img);
    let donor = lookup_path(&fs, "/sizes/f3158073");
    let mut dirs: Vec<(String, u64, u64, Vec<Ent>, DirForm)> = Vec::new();
    for path in [
        "/dirs/empty",
        "/dirs/sf",
        "/dirs/block",
        "/dirs/leaf",
        "/dirs/node",
        "/huge",
    ] {
        let ino = lookup_path(&fs, path);
        let form = form_of(&fs, ino);
        if form == DirForm::Btree {
            eprintln!("{variant}: {path} has a bmbt data fork: not rewritten");
            continue;
        }
        let mut parent = 0;
        let mut ents = Vec::new();
        for e in fs.raw_entries(ino).unwrap() {
            if e.name == b".." {
                parent = e.ino;
            } else if e.name != b"." {
                let ft = match e.file_type {
                    Some(t) => t,
                    None => fs.stat(e.ino).unwrap().file_type,
                };
                ents.push(Ent {
                    name: e.name,
                    ino: e.ino,
                    ft,
                });
            }
        }
        dirs.push((path.to_string(), ino, parent, ents, form));
    }
    drop(fs);
    for round in 0..2 {
        for (path, ino, parent, ents, form) in &mut dirs {
            if round == 1 {
                // Rename every fourth entry (same length, so the form stays; the names of the
                // tree differ past their first byte).
                for e in ents.iter_mut().step_by(4) {
                    e.name[0] = b'R';
                }
            }
            let fs = open(&img);
            let g = DirGeom::from_sb(fs.superblock());
            let image =
                dirwrite::encode(&g, *ino, *parent, &new_entries(ents), fork_space(&fs, *ino))
                    .unwrap();
            assert_eq!(image.form(), *form, "{variant}: {path}: form");
            if round == 0 {
                same_bytes(&fs, *ino, &image, ents, &format!("{variant}: {path}"));
            }
            drop(fs);
            apply(&img, *ino, donor, &image);
            let fs = open(&img);
            assert_eq!(
                form_of(&fs, *ino),
                *form,
                "{variant}: {path}: form after writing"
            );
            let raw: Vec<Vec<u8>> = fs
                .raw_entries(*ino)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .filter(|n| n != b"." && n != b"..")
                .collect();
            let want: Vec<Vec<u8>> = ents.iter().map(|e| e.name.clone()).collect();
            assert_eq!(raw, want, "{variant}: {path}: our reader, entry order");
        }
        for (path, ino, parent, ents, _) in &dirs {
            check(&img, path, *ino, *parent, ents, &probes(ents));
            kernel_check(kernel, &img, path, ents, &probes(ents));
        }
    }
}

#[test]
fn reencode_v5() {
    reencode("v5");
}
#[test]
fn reencode_b1k() {
    reencode("b1k");
}
#[test]
fn reencode_n8k() {
    reencode("n8k");
}
#[test]
fn reencode_n64k() {
    reencode("n64k");
}
#[test]
fn reencode_ci() {
    reencode("ci");
}
#[test]
fn reencode_centos7() {
    reencode("centos7");
}
#[test]
fn reencode_v4ftype0() {
    reencode("v4ftype0");
}

// ---- one directory through every form and back ----------------------------------------------

/// The source tree: `/syn` (the directory under test) with a subdirectory, a symlink and a
/// fifo-less set of real entries, `/f` (the file every synthetic entry links to), `/donor`
/// (4 MiB of data, the block pool).
fn syn_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("syn/sub")).unwrap();
    std::fs::write(src.join("syn/file"), b"x").unwrap();
    std::os::unix::fs::symlink("file", src.join("syn/link")).unwrap();
    std::fs::write(src.join("f"), b"hard links").unwrap();
    std::fs::write(src.join("donor"), tk::random_bytes(4 << 20, 7)).unwrap();
    src
}

fn syn_name(i: usize, ci: bool) -> Vec<u8> {
    let pad = "abcdefghijklmnopqrstuvwxyz0123456789";
    let n = format!("syn-{i:06}-{}", &pad[..(i * 7) % 30]);
    if ci {
        // Mixed case: the ascii-ci hash folds it.
        n.chars()
            .enumerate()
            .map(|(k, c)| {
                if (k + i).is_multiple_of(3) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect::<String>()
            .into_bytes()
    } else {
        n.into_bytes()
    }
}

/// The smallest number of synthetic entries (after `base`) whose encoding is in `form`.
fn first_count(g: &DirGeom, base: &[Ent], f_ino: u64, space: usize, form: DirForm) -> usize {
    let rank = |f: DirForm| match f {
        DirForm::Shortform => 0,
        DirForm::Block => 1,
        DirForm::Leaf => 2,
        _ => 3,
    };
    let enc = |n: usize| {
        let v = syn_entries(base, f_ino, n, g.ci);
        rank(
            dirwrite::encode(g, 1000, 128, &new_entries(&v), space)
                .unwrap()
                .form(),
        )
    };
    let (mut lo, mut hi) = (0usize, 1usize);
    while enc(hi) < rank(form) {
        lo = hi;
        hi *= 2;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if enc(mid) < rank(form) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    assert_eq!(enc(lo), rank(form), "form {form:?} is skipped");
    lo
}

fn syn_entries(base: &[Ent], f_ino: u64, n: usize, ci: bool) -> Vec<Ent> {
    let mut v = base.to_vec();
    v.extend((0..n).map(|i| Ent {
        name: syn_name(i, ci),
        ino: f_ino,
        ft: FileType::Regular,
    }));
    v
}

/// How the image of a grow/shrink test is made.
enum Mk<'a> {
    /// A `fixtures/mkxfs.sh` variant.
    Variant(&'a str),
    /// `mkfs.xfs` itself with these options and a protofile of the tree (for geometries the
    /// variant matrix does not have), then the superblocks' `dirblklog` set (1 KiB
    /// directory blocks on 1 KiB blocks, which mkfs.xfs no longer makes).
    Mkfs(&'a [&'a str], Option<u8>),
}

/// A protofile for `syn_tree`.
fn mkfs_image(tmp: &Path, src: &Path, opts: &[&str], dirblklog: Option<u8>) -> Option<PathBuf> {
    let mkfs = tk::require_tool("mkfs.xfs")?;
    let s = |p: &str| src.join(p).display().to_string();
    let proto = format!(
        "imgscrub\n0 0\nd--755 0 0\nsyn d--755 0 0\nsub d--755 0 0\n$\nfile ---644 0 0 {}\n\
         link l--777 0 0 file\n$\nf ---644 0 0 {}\ndonor ---644 0 0 {}\n$\n",
        s("syn/file"),
        s("f"),
        s("donor")
    );
    let pf = tmp.join("proto");
    std::fs::write(&pf, proto).unwrap();
    let img = tmp.join("mkfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // mkfs.xfs 5.19+ makes filesystems under 300 MB only the way fstests runs it.
    let out = tk::run(
        std::process::Command::new(mkfs)
            .env("TEST_DIR", "/nonexistent")
            .env("TEST_DEV", "/nonexistent")
            .env("QA_CHECK_FS", "xfs")
            .arg("-f")
            .args(opts)
            .arg("-p")
            .arg(&pf)
            .arg(&img),
    );
    assert!(
        out.status.success(),
        "mkfs.xfs {opts:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(log) = dirblklog {
        // mkfs.xfs refuses directory blocks under 4 KiB; the kernel and xfs_repair take any
        // size from the block size up. Every directory is still shortform here, so the
        // superblocks (all of them: xfs_repair compares) can simply say so.
        let agcount = open(&img).superblock().agcount;
        let mut cmds = Vec::new();
        for ag in 0..agcount {
            cmds.push(format!("sb {ag}"));
            cmds.push(format!("write dirblklog {log}"));
        }
        let mut c = std::process::Command::new(tk::require_tool("xfs_db")?);
        c.arg("-x");
        for x in &cmds {
            c.arg("-c").arg(x);
        }
        let out = tk::run(c.arg(&img));
        assert!(
            out.status.success(),
            "xfs_db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tk::assert_xfs_repair_clean(&img);
    Some(img)
}

fn grow_shrink(mk: Mk<'_>, deep: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let src = syn_tree(tmp.path());
    let (variant, img) = match mk {
        Mk::Variant(v) => {
            let opts = tk::XfsOptions {
                src: Some(src),
                size_mb: Some(64),
                ..Default::default()
            };
            let Some(fx) = tk::make_xfs_with(v, tmp.path(), &opts) else {
                return;
            };
            (v.to_string(), fx.image)
        }
        Mk::Mkfs(opts, log) => {
            let Some(img) = mkfs_image(tmp.path(), &src, opts, log) else {
                return;
            };
            (format!("mkfs.xfs {}", opts.join(" ")), img)
        }
    };
    let kernel = kernel_mounts(&img);
    let fs = open(&img);
    let g = DirGeom::from_sb(fs.superblock());
    let dir = lookup_path(&fs, "/syn");
    let f_ino = lookup_path(&fs, "/f");
    let donor = lookup_path(&fs, "/donor");
    let space = fork_space(&fs, dir);
    let parent = fs.root();
    let base: Vec<Ent> = fs
        .read_dir(dir)
        .unwrap()
        .into_iter()
        .filter(|e| e.name != b"." && e.name != b"..")
        .map(|e| Ent {
            name: e.name,
            ino: e.ino,
            ft: e.file_type,
        })
        .collect();
    assert_eq!(base.len(), 3);
    drop(fs);
    let sf_max = first_count(&g, &base, f_ino, space, DirForm::Block) - 1;
    let block_max = first_count(&g, &base, f_ino, space, DirForm::Leaf) - 1;
    let leaf_max = first_count(&g, &base, f_ino, space, DirForm::Node) - 1;
    eprintln!(
        "{variant}: shortform up to {sf_max}, block up to {block_max}, leaf up to {leaf_max} synthetic entries"
    );
    // (count, expected form, changed set: drop/rename some)
    let mut steps: Vec<(usize, DirForm, bool)> = vec![
        (0, DirForm::Shortform, false),
        (sf_max, DirForm::Shortform, false),
        (sf_max + 1, DirForm::Block, false),
        (block_max, DirForm::Block, false),
        (block_max + 1, DirForm::Leaf, false),
        (leaf_max, DirForm::Leaf, false),
        (leaf_max + 1, DirForm::Node, false),
        (leaf_max * 3, DirForm::Node, true),
    ];
    if deep {
        steps.push((20_000, DirForm::Node, true));
    }
    steps.extend([
        (leaf_max + 1, DirForm::Node, false),
        (leaf_max, DirForm::Leaf, false),
        (leaf_max, DirForm::Leaf, true),
        (block_max + 1, DirForm::Leaf, false),
        (block_max, DirForm::Block, false),
        (block_max, DirForm::Block, true),
        (sf_max + 1, DirForm::Block, false),
        (sf_max, DirForm::Shortform, false),
        (1, DirForm::Shortform, false),
    ]);
    for (n, form, change) in steps {
        let mut v = syn_entries(&base, f_ino, n, g.ci);
        if change {
            // Drop every 7th synthetic entry, rename every 5th (new names of the same length),
            // move the real entries to the end.
            let real: Vec<Ent> = v.drain(..base.len()).collect();
            let mut k = 0usize;
            v.retain(|_| {
                k += 1;
                !k.is_multiple_of(7)
            });
            for e in v.iter_mut().step_by(5) {
                e.name[0] = b'T';
            }
            v.extend(real);
        }
        let links = v.iter().filter(|e| e.ino == f_ino).count() as u32;
        let image = dirwrite::encode(&g, dir, parent, &new_entries(&v), space).unwrap();
        let ctx = format!("{variant}: {n} entries (changed: {change})");
        assert_eq!(image.form(), form, "{ctx}: form");
        apply(&img, dir, donor, &image);
        set_nlink(&img, f_ino, 1 + links);
        let fs = open(&img);
        assert_eq!(form_of(&fs, dir), form, "{ctx}: form read back");
        if n == 20_000 {
            // The da-btree root (first leaf-space block) is a node of level >= 2.
            let DirImage::Blocks(b) = &image else {
                panic!()
            };
            let root = b.iter().find(|x| x.lblk == g.leaf_lblk()).unwrap();
            let lvl_off = if g.v5 { 58 } else { 14 };
            assert!(
                be16(&root.data, lvl_off) >= 2,
                "{ctx}: root level {}",
                be16(&root.data, lvl_off)
            );
        }
        drop(fs);
        let mut probe = probes(&v);
        let folded: Vec<Vec<u8>> = if g.ci {
            probe.iter().map(|n| n.to_ascii_lowercase()).collect()
        } else {
            Vec::new()
        };
        if g.ci {
            probe = folded.iter().map(Vec::as_slice).collect();
        }
        check(&img, "/syn", dir, parent, &v, &probe);
        kernel_check(kernel, &img, "/syn", &v, &probe);
        if !change || n == 20_000 {
            kernel_edit(kernel, &img, "/syn", &v);
        }
        eprintln!("{ctx}: {form:?} ok");
    }
}

#[test]
fn grow_shrink_v5() {
    grow_shrink(Mk::Variant("v5"), false);
}
#[test]
fn grow_shrink_b1k() {
    grow_shrink(Mk::Variant("b1k"), false);
}
/// 1 KiB directory blocks: 20,000 entries need a two-level da-btree (120 hashes a leaf,
/// 120 pointers a node).
#[test]
fn grow_shrink_n1k_two_level_node() {
    grow_shrink(Mk::Mkfs(&["-b", "size=1024"], Some(0)), true);
}
#[test]
fn grow_shrink_n8k() {
    grow_shrink(Mk::Variant("n8k"), false);
}
#[test]
fn grow_shrink_n64k() {
    grow_shrink(Mk::Variant("n64k"), false);
}
#[test]
fn grow_shrink_ci() {
    grow_shrink(Mk::Variant("ci"), false);
}
#[test]
fn grow_shrink_v4ftype0() {
    grow_shrink(Mk::Variant("v4ftype0"), false);
}

/// The harness can fail: the same path with one leaf hash out of order, or one data entry's
/// tag wrong, is reported by `xfs_repair -n`.
#[test]
fn oracle_sees_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let src = syn_tree(tmp.path());
    let opts = tk::XfsOptions {
        src: Some(src),
        size_mb: Some(64),
        ..Default::default()
    };
    let Some(fx) = tk::make_xfs_with("v5", tmp.path(), &opts) else {
        return;
    };
    let img = fx.image;
    let fs = open(&img);
    let g = DirGeom::from_sb(fs.superblock());
    let (dir, f_ino, donor) = (
        lookup_path(&fs, "/syn"),
        lookup_path(&fs, "/f"),
        lookup_path(&fs, "/donor"),
    );
    let parent = fs.root();
    let base: Vec<Ent> = fs
        .read_dir(dir)
        .unwrap()
        .into_iter()
        .filter(|e| e.name != b"." && e.name != b"..")
        .map(|e| Ent {
            name: e.name,
            ino: e.ino,
            ft: e.file_type,
        })
        .collect();
    drop(fs);
    let v = syn_entries(&base, f_ino, 200, false);
    let good = dirwrite::encode(&g, dir, parent, &new_entries(&v), 336).unwrap();
    assert_eq!(good.form(), DirForm::Leaf);
    let DirImage::Blocks(blocks) = &good else {
        panic!()
    };
    let leaf_at = blocks.iter().position(|b| b.lblk == g.leaf_lblk()).unwrap();
    for damage in 0..2 {
        let mut bad = blocks.clone();
        match damage {
            // Swap the first and last hash entries of the leaf block.
            0 => {
                let d = &mut bad[leaf_at].data;
                let last = 64 + (v.len() + 1) * 8;
                let (a, b) = (d[64..72].to_vec(), d[last..last + 8].to_vec());
                d[64..72].copy_from_slice(&b);
                d[last..last + 8].copy_from_slice(&a);
            }
            // The tag of the first entry of data block 0 ("." at byte 64).
            _ => {
                let d = &mut bad[0].data;
                let tag = 64 + g.data_entsize(1) - 2;
                d[tag + 1] ^= 8;
            }
        }
        apply(&img, dir, donor, &DirImage::Blocks(bad));
        set_nlink(&img, f_ino, 201);
        assert!(
            tk::xfs_repair_check(&img).is_err(),
            "damage {damage} not reported"
        );
    }
    apply(&img, dir, donor, &good);
    check(&img, "/syn", dir, parent, &v, &probes(&v));
}

// ---- the form switch points are XFS's own ---------------------------------------------------

/// Two-character names: short enough that on 2 KiB inodes the shortform is limited by what
/// one directory block holds, not by the inode.
fn short_name(i: usize) -> Vec<u8> {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    vec![A[i / A.len()], A[i % A.len()]]
}

fn long_name(i: usize) -> Vec<u8> {
    syn_name(i, false)
}

/// mkfs.xfs grows directories one entry at a time with the kernel's own code (libxfs), so
/// the form it leaves a directory of N entries in is XFS's choice. For the counts where the
/// encoder switches form (N and N+1 around each switch), directories made by mkfs.xfs from a
/// protofile must be in the form the encoder picks. `g` and `space` are the geometry the
/// variant is expected to have (checked against the image).
fn thresholds(variant: &str, g: DirGeom, space: usize, name: fn(usize) -> Vec<u8>) {
    let count_for = |form: DirForm| {
        let rank = |f: DirForm| match f {
            DirForm::Shortform => 0,
            DirForm::Block => 1,
            DirForm::Leaf => 2,
            _ => 3,
        };
        let mut n = 0usize;
        let mut step = 1024usize;
        // Smallest n in `form` (forms only grow with n): gallop, then walk back.
        let enc = |n: usize| {
            let names: Vec<Vec<u8>> = (0..n).map(name).collect();
            let v: Vec<NewEntry<'_>> = names
                .iter()
                .map(|x| NewEntry {
                    name: x,
                    ino: 1000,
                    file_type: FileType::Regular,
                })
                .collect();
            rank(dirwrite::encode(&g, 128, 128, &v, space).unwrap().form())
        };
        while step > 0 {
            while enc(n + step) < rank(form) {
                n += step;
            }
            step /= 2;
        }
        n + 1
    };
    let mut counts = Vec::new();
    for f in [DirForm::Block, DirForm::Leaf, DirForm::Node] {
        let c = count_for(f);
        counts.extend([c - 1, c]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for &n in &counts {
        let d = src.join(format!("d{n}"));
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            std::fs::File::create(
                d.join(std::ffi::OsStr::new(std::str::from_utf8(&name(i)).unwrap())),
            )
            .unwrap();
        }
    }
    let opts = tk::XfsOptions {
        src: Some(src),
        ..Default::default()
    };
    let Some(fx) = tk::make_xfs_with(variant, tmp.path(), &opts) else {
        return;
    };
    let fs = open(&fx.image);
    assert_eq!(DirGeom::from_sb(fs.superblock()), g, "{variant}: geometry");
    for &n in &counts {
        let ino = lookup_path(&fs, &format!("/d{n}"));
        assert_eq!(fork_space(&fs, ino), space, "{variant}: fork space");
        let names: Vec<Vec<u8>> = (0..n).map(name).collect();
        let v: Vec<NewEntry<'_>> = names
            .iter()
            .map(|x| NewEntry {
                name: x,
                ino: 1000,
                file_type: FileType::Regular,
            })
            .collect();
        let ours = dirwrite::encode(&g, ino, fs.root(), &v, space)
            .unwrap()
            .form();
        let theirs = form_of(&fs, ino);
        eprintln!("{variant}: {n} entries: mkfs.xfs {theirs:?}, encoder {ours:?}");
        assert_eq!(ours, theirs, "{variant}: {n} entries");
    }
}

const G4K: DirGeom = DirGeom {
    v5: true,
    ftype: true,
    ci: false,
    blocksize: 4096,
    dirblksize: 4096,
};

#[test]
fn thresholds_v5() {
    thresholds("v5", G4K, 336, long_name);
}
#[test]
fn thresholds_i2k_short_names() {
    // 2 KiB inodes: 1872 bytes of fork; 2-byte names: the block (165 entries) binds first.
    thresholds("i2k", G4K, 1872, short_name);
}
#[test]
fn thresholds_n64k() {
    thresholds(
        "n64k",
        DirGeom {
            dirblksize: 65536,
            ..G4K
        },
        336,
        long_name,
    );
}
#[test]
fn thresholds_v4ftype0() {
    thresholds(
        "v4ftype0",
        DirGeom {
            v5: false,
            ftype: false,
            ..G4K
        },
        156,
        long_name,
    );
}
