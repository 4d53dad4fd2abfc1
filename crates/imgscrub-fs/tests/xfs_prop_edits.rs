#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The acceptance test of the XFS write side (issue 12), like `prop_edits.rs` for ext4: for
//! every v5 variant of `fixtures/mkxfs.sh`, build an image from a small source tree (with the
//! attributes, holes, sticky bit, devices and owners mkxfs.sh adds), run seeded random
//! sequences of every edit of the [`Filesystem`] trait through [`imgscrub_fs::Xfs`] opened
//! writable, mirror each into an in-memory model, and after every segment + `flush()` check
//! with oracles that are not our reader:
//! - `xfs_repair -n` is silent;
//! - `xfs_db` reads back the model: every path (`ls`, walked by inode), type, mode, owner,
//!   size and link count (`print core`), file contents and symlink targets (through `bmap`
//!   and the raw blocks), extended attributes (shortform/leaf entries, remote values from
//!   their blocks; POSIX ACLs in XFS's on-disk format);
//! - the free space xfs_db lists (`freesp`, AGFL included) equals `free_ranges()`, each AGF's
//!   `freeblks + flcount`, and the superblock `fdblocks` (with `btreeblks`); `icount`/`ifree`
//!   equal the AGI sums;
//! - the kernel (a plain read-only loop mount, so the log must be clean) sees the model:
//!   `readdir`, `lstat` (mode, owner, size, nlink, times set by `set_attr`), contents,
//!   `readlink`, and every xattr through `getfattr`.
//!
//! The first checkpoint runs on the untouched image, so the oracles themselves are checked
//! against mkxfs.sh's manifest before any edit. v4 and v4ftype0 must refuse a writable open
//! and every edit, and stay byte-identical.
//!
//! Edits: create, write (small, large, at offsets past EOF, and "scatter" writes of one
//! block every other block so that files need many extents and a bmbt), truncate (to zero,
//! down, up past EOF), unlink, rmdir, remove_tree, mkdir, symlink (short: local; long: remote,
//! over one block with 1 KiB blocks), rename (within and across directories, replacing files
//! and empty directories), set_attr (mode, owner, atime/mtime), set_xattr/remove_xattr
//! (`user.*` small, leaf-sized and remote values over one block, `trusted.*`,
//! `security.selinux`, `system.posix_acl_access`/`_default`). A separate test pushes one
//! directory through every form — shortform, block, leaf, node, node with a B+tree data
//! fork — and back down to shortform by removals.
//!
//! Reproduce: `IMGSCRUB_XFS_PROP_VARIANT=b1k IMGSCRUB_XFS_PROP_SEED=<seed> cargo test -p
//! imgscrub-fs --test xfs_prop_edits`. Longer runs: `IMGSCRUB_XFS_PROP_CASES=<n>` cases per
//! variant (default 1), `IMGSCRUB_XFS_PROP_OPS=<n>` edits per segment (default 40),
//! `IMGSCRUB_XFS_PROP_SEGMENTS=<n>` checkpoints per case (default 2),
//! `IMGSCRUB_XFS_PROP_FIRST=<k>` first case number, `IMGSCRUB_XFS_PROP_FORMS=all` (or a
//! comma list) for the variants of the directory-forms walk (default v5,b1k,ci,rmapbt).

use imgscrub_disk::RawFile;
use imgscrub_fs::filesystem::{FileType, NewAttr, SetAttr, Timestamp};
use imgscrub_fs::{Filesystem, FsError, Xfs};
use imgscrub_testkit::{self as tk, XfsDirForm, XfsOptions};
use imgscrub_xfs::XfsError;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------------------
// Deterministic RNG (xorshift64*): failures reproduce from the seed alone.

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // (Multiplied first: seeds that differ only in bit 0 must not give the same run.)
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            v.get(self.below(v.len() as u64) as usize)
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// FNV-1a of a variant name: each variant gets its own seeds.
fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

const T0: Timestamp = Timestamp {
    secs: 1_700_000_000,
    nsecs: 0,
};

// ---------------------------------------------------------------------------------------
// The model: the tree as it must read back.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Dev(FileType, (u32, u32)),
    Fifo,
}

#[derive(Debug, Clone)]
struct MNode {
    kind: Kind,
    perm: u16,
    uid: u32,
    gid: u32,
    /// Directories: name → inode.
    entries: BTreeMap<Vec<u8>, u64>,
    parent: u64,
    /// Linux names and values (POSIX ACLs in the Linux xattr format).
    xattrs: BTreeMap<String, Vec<u8>>,
    /// (atime, mtime) as last set by `set_attr`, while nothing else touched the inode.
    times: Option<(Timestamp, Timestamp)>,
}

impl MNode {
    fn new(kind: Kind, perm: u16, uid: u32, gid: u32, parent: u64) -> Self {
        MNode {
            kind,
            perm,
            uid,
            gid,
            entries: BTreeMap::new(),
            parent,
            xattrs: BTreeMap::new(),
            times: None,
        }
    }
    fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
    fn type_bits(&self) -> u32 {
        match &self.kind {
            Kind::File(_) => 0o100_000,
            Kind::Dir => 0o040_000,
            Kind::Symlink(_) => 0o120_000,
            Kind::Dev(FileType::BlockDevice, _) => 0o060_000,
            Kind::Dev(_, _) => 0o020_000,
            Kind::Fifo => 0o010_000,
        }
    }
    /// xfs_db's word for the directory entry type.
    fn db_kind(&self) -> &'static str {
        match &self.kind {
            Kind::File(_) => "regular",
            Kind::Dir => "directory",
            Kind::Symlink(_) => "symlink",
            Kind::Dev(FileType::BlockDevice, _) => "blkdev",
            Kind::Dev(_, _) => "chardev",
            Kind::Fifo => "fifo",
        }
    }
    fn size(&self) -> u64 {
        match &self.kind {
            Kind::File(d) | Kind::Symlink(d) => d.len() as u64,
            _ => 0,
        }
    }
}

#[derive(Debug)]
struct Model {
    root: u64,
    nodes: BTreeMap<u64, MNode>,
}

impl Model {
    fn node(&self, ino: u64) -> &MNode {
        self.nodes
            .get(&ino)
            .unwrap_or_else(|| panic!("inode {ino} not in the model"))
    }
    fn node_mut(&mut self, ino: u64) -> &mut MNode {
        self.nodes.get_mut(&ino).unwrap()
    }
    fn dirs(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.is_dir())
            .map(|(&i, _)| i)
            .collect()
    }
    fn files(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n.kind, Kind::File(_)))
            .map(|(&i, _)| i)
            .collect()
    }
    fn edges(&self) -> Vec<(u64, Vec<u8>, u64)> {
        let mut v = Vec::new();
        for (&d, n) in &self.nodes {
            for (name, &i) in &n.entries {
                v.push((d, name.clone(), i));
            }
        }
        v
    }
    fn is_ancestor(&self, a: u64, mut d: u64) -> bool {
        for _ in 0..100_000 {
            if d == a {
                return true;
            }
            if d == self.root {
                return false;
            }
            d = self.node(d).parent;
        }
        false
    }
    /// Remove an edge and (no hard links here) the subtree below it.
    fn remove_edge(&mut self, dir: u64, name: &[u8]) {
        let ino = self.node_mut(dir).entries.remove(name).unwrap();
        self.node_mut(dir).times = None;
        let mut stack = vec![ino];
        while let Some(i) = stack.pop() {
            if let Some(n) = self.nodes.remove(&i) {
                stack.extend(n.entries.values());
            }
        }
    }
    fn add(&mut self, dir: u64, name: Vec<u8>, ino: u64, node: MNode) {
        assert!(
            !self.nodes.contains_key(&ino),
            "the engine handed out inode {ino} twice"
        );
        self.nodes.insert(ino, node);
        let d = self.node_mut(dir);
        d.entries.insert(name, ino);
        d.times = None;
    }
    /// Path of every inode (the root is "/").
    fn paths(&self) -> BTreeMap<u64, Vec<u8>> {
        let mut out = BTreeMap::new();
        out.insert(self.root, b"/".to_vec());
        let mut stack = vec![(self.root, Vec::new())];
        while let Some((d, p)) = stack.pop() {
            for (name, &i) in &self.node(d).entries {
                let mut c = p.clone();
                c.push(b'/');
                c.extend_from_slice(name);
                if self.node(i).is_dir() {
                    stack.push((i, c.clone()));
                }
                out.insert(i, c);
            }
        }
        out
    }
    fn nlink(&self, ino: u64) -> u32 {
        let n = self.node(ino);
        if n.is_dir() {
            2 + n
                .entries
                .values()
                .filter(|&&i| self.node(i).is_dir())
                .count() as u32
        } else {
            1
        }
    }
}

// ---------------------------------------------------------------------------------------
// POSIX ACLs: the Linux xattr format (what the trait and the kernel speak) and XFS's
// on-disk format (what xfs_db shows).

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// A valid ACL in the Linux format (version 2, entries sorted by tag then id).
fn gen_acl(rng: &mut Rng) -> Vec<u8> {
    let mut ents: Vec<(u16, u16, u32)> = vec![(ACL_USER_OBJ, rng.below(8) as u16, u32::MAX)];
    let mut users: Vec<u32> = (0..rng.below(4))
        .map(|_| 1000 + rng.below(5000) as u32)
        .collect();
    users.sort_unstable();
    users.dedup();
    ents.extend(users.iter().map(|&u| (ACL_USER, rng.below(8) as u16, u)));
    ents.push((ACL_GROUP_OBJ, rng.below(8) as u16, u32::MAX));
    let mut groups: Vec<u32> = (0..rng.below(3))
        .map(|_| 100 + rng.below(900) as u32)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    ents.extend(groups.iter().map(|&g| (ACL_GROUP, rng.below(8) as u16, g)));
    if !users.is_empty() || !groups.is_empty() {
        ents.push((ACL_MASK, rng.below(8) as u16, u32::MAX));
    }
    ents.push((ACL_OTHER, rng.below(8) as u16, u32::MAX));
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in ents {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn acl_linux_to_xfs(v: &[u8]) -> Vec<u8> {
    let ents: Vec<&[u8]> = v[4..].chunks(8).collect();
    let mut out = (ents.len() as u32).to_be_bytes().to_vec();
    for e in ents {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let id = if tag == ACL_USER || tag == ACL_GROUP {
            id
        } else {
            u32::MAX
        };
        out.extend_from_slice(&u32::from(tag).to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&perm.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out
}

fn acl_xfs_to_linux(v: &[u8]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for e in v[4..].chunks(12) {
        let tag = u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as u16;
        let id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
        let perm = u16::from_be_bytes([e[8], e[9]]);
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// A Linux xattr as XFS stores it: (namespace, on-disk name, on-disk value).
fn to_disk(name: &str, value: &[u8]) -> (String, Vec<u8>, Vec<u8>) {
    match name {
        "system.posix_acl_access" => (
            "trusted".into(),
            b"SGI_ACL_FILE".to_vec(),
            acl_linux_to_xfs(value),
        ),
        "system.posix_acl_default" => (
            "trusted".into(),
            b"SGI_ACL_DEFAULT".to_vec(),
            acl_linux_to_xfs(value),
        ),
        _ => {
            let (ns, rest) = name.split_once('.').unwrap();
            let ns = if ns == "security" { "secure" } else { ns };
            (ns.into(), rest.as_bytes().to_vec(), value.to_vec())
        }
    }
}

// ---------------------------------------------------------------------------------------
// The source tree (small, so that the whole matrix builds quickly) and the initial model.

fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A tree with the paths mkxfs.sh decorates (xattr/*, sparse/*, tmp, the ssh key), a leaf
/// directory, a fragmented-looking set of files, symlinks, and (through SRC.meta) devices,
/// a fifo and owners.
fn build_source(src: &Path) {
    let mut rng = Rng::new(7);
    write_file(src, "etc/hostname", b"guest\n");
    write_file(src, "etc/ssh/ssh_host_rsa_key", &[b'k'; 1679]);
    write_file(src, "etc/medium.bin", &rng.bytes(280_000));
    write_file(src, "etc/small.txt", b"small text file\n");
    std::os::unix::fs::symlink("hostname", src.join("etc/fastlink")).unwrap();
    let slow = "../".repeat(20) + &"long/target/".repeat(60);
    std::os::unix::fs::symlink(&slow[..700], src.join("etc/slowlink")).unwrap();
    for i in 0..120 {
        write_file(
            src,
            &format!("big/entry-{i:04}-with-a-longer-name-for-leaf-form"),
            if i % 10 == 0 { b"x\n" } else { b"" },
        );
    }
    for i in 0..24 {
        write_file(src, &format!("frag/f{i:03}"), &vec![i as u8; 4096]);
    }
    for p in ["xattr/sf", "xattr/acl", "xattr/leaf", "xattr/link-target"] {
        write_file(src, p, p.as_bytes());
    }
    std::fs::create_dir_all(src.join("xattr/acldir/sub")).unwrap();
    std::fs::create_dir_all(src.join("xattr/dir")).unwrap();
    std::os::unix::fs::symlink("link-target", src.join("xattr/link")).unwrap();
    write_file(src, "sparse/middle", &rng.bytes(65536));
    write_file(src, "sparse/lead", &rng.bytes(65536));
    std::fs::create_dir_all(src.join("tmp")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    write_file(src, "home/user/.profile", b"export X=1\n");
    let meta = "home\td--755\t0\t0\n\
                home/user\td--700\t1000\t1000\n\
                home/user/.profile\t---644\t1000\t1000\n\
                dev/null\tc--666\t0\t0\t1 3\n\
                dev/sda1\tb--660\t0\t6\t8 1\n\
                dev/initctl\tp--600\t0\t0\n";
    let mut m = src.as_os_str().to_owned();
    m.push(".meta");
    std::fs::write(PathBuf::from(m), meta).unwrap();
    std::fs::create_dir_all(src.join("dev")).unwrap();
}

/// The model of a fresh fixture: types, modes, owners, contents, targets and devices from
/// mkxfs.sh's manifest, attributes from its xattr list, inode numbers from xfs_db.
fn model_from_fixture(fx: &tk::XfsFixture) -> Model {
    let root = tk::xfs_sb(&fx.image).rootino;
    let walk = tk::xfs_walk(&fx.image);
    let ino_of: BTreeMap<Vec<u8>, (u64, u64)> = walk
        .iter()
        .map(|e| (e.path.clone(), (e.ino, e.parent)))
        .collect();
    let mut m = Model {
        root,
        nodes: BTreeMap::new(),
    };
    let manifest = fx.manifest();
    let by_path = |p: &[u8]| {
        *ino_of
            .get(p)
            .unwrap_or_else(|| panic!("{} not listed by xfs_db", String::from_utf8_lossy(p)))
    };
    // Parents before children: the manifest is sorted with '/' first.
    for e in &manifest {
        let perm = e.mode as u16;
        if e.path == b"/" {
            m.nodes
                .insert(root, MNode::new(Kind::Dir, perm, e.uid, e.gid, root));
            continue;
        }
        let (ino, parent) = by_path(&e.path);
        let kind = match e.kind.as_str() {
            "dir" => Kind::Dir,
            "file" => Kind::File(e.content().unwrap_or_default()),
            "symlink" => Kind::Symlink(e.target.clone().unwrap()),
            "chr" => Kind::Dev(FileType::CharDevice, e.rdev.unwrap()),
            "blk" => Kind::Dev(FileType::BlockDevice, e.rdev.unwrap()),
            "fifo" => Kind::Fifo,
            other => panic!("manifest type {other}"),
        };
        let name = e.path.rsplit(|b| *b == b'/').next().unwrap().to_vec();
        m.add(
            parent,
            name,
            ino,
            MNode::new(kind, perm, e.uid, e.gid, parent),
        );
    }
    for x in fx.xattrs() {
        let (ino, _) = if x.path == b"/" {
            (root, root)
        } else {
            by_path(&x.path)
        };
        let disk = x.value.clone().unwrap_or_else(|| {
            panic!(
                "{}: value of {} not in the list",
                String::from_utf8_lossy(&x.path),
                x.name
            )
        });
        let v = if x.name.starts_with("system.posix_acl") {
            acl_xfs_to_linux(&disk)
        } else {
            disk
        };
        m.node_mut(ino).xattrs.insert(x.name.clone(), v);
    }
    assert_eq!(
        m.nodes.len(),
        walk.len() + 1,
        "{}: the manifest and xfs_db disagree on the number of inodes",
        fx.image.display()
    );
    m
}

// ---------------------------------------------------------------------------------------
// Operations.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Write,
    Scatter,
    Truncate,
    Mkdir,
    Symlink,
    Unlink,
    Rmdir,
    RemoveTree,
    Rename,
    SetAttr,
    SetXattr,
    RemoveXattr,
}

const WEIGHTS: &[(Op, u64)] = &[
    (Op::Create, 14),
    (Op::Write, 16),
    (Op::Scatter, 3),
    (Op::Truncate, 8),
    (Op::Mkdir, 6),
    (Op::Symlink, 6),
    (Op::Unlink, 10),
    (Op::Rmdir, 3),
    (Op::RemoveTree, 2),
    (Op::Rename, 8),
    (Op::SetAttr, 6),
    (Op::SetXattr, 10),
    (Op::RemoveXattr, 4),
];

fn pick_op(rng: &mut Rng) -> Op {
    let total: u64 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut r = rng.below(total);
    for &(k, w) in WEIGHTS {
        if r < w {
            return k;
        }
        r -= w;
    }
    Op::Create
}

struct Ctx {
    variant: String,
    seed: u64,
    /// Case-insensitive names (variant `ci`): generate lower-case names only.
    ci: bool,
    block: u64,
    log: Vec<String>,
}

impl Ctx {
    fn at(&self) -> String {
        let start = self.log.len().saturating_sub(60);
        format!(
            "variant {} seed {} (reproduce: IMGSCRUB_XFS_PROP_VARIANT={} IMGSCRUB_XFS_PROP_SEED={})\nlast ops:\n  {}",
            self.variant,
            self.seed,
            self.variant,
            self.seed,
            self.log[start..].join("\n  ")
        )
    }
}

type Fs = Xfs<RawFile>;

fn show(n: &[u8]) -> String {
    String::from_utf8_lossy(n).into_owned()
}

fn gen_name(rng: &mut Rng, ci: bool, taken: &BTreeMap<Vec<u8>, u64>) -> Vec<u8> {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.";
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-.";
    let set = if ci { LOWER } else { CHARS };
    for _ in 0..100 {
        let len = if rng.chance(5) {
            200 + rng.below(56) as usize
        } else {
            1 + rng.below(24) as usize
        };
        let mut n: Vec<u8> = (0..len)
            .map(|_| set[rng.below(set.len() as u64) as usize])
            .collect();
        if n[0] == b'.' {
            n[0] = b'x';
        }
        if !taken.contains_key(&n) {
            return n;
        }
    }
    panic!("could not find a free name");
}

fn gen_attr(rng: &mut Rng, dir: bool) -> NewAttr {
    let perm = if dir { 0o755 } else { 0o644 } ^ (rng.below(0o1000) as u16 & 0o077);
    NewAttr {
        perm,
        uid: if rng.chance(30) {
            rng.below(70_000) as u32
        } else {
            0
        },
        gid: if rng.chance(30) {
            rng.below(70_000) as u32
        } else {
            0
        },
        time: Some(T0),
    }
}

fn gen_time(rng: &mut Rng) -> Timestamp {
    Timestamp::new(
        1_000_000_000 + rng.below(1_000_000_000) as i64,
        rng.below(1_000_000_000) as u32,
    )
}

fn ok<T>(ctx: &Ctx, what: &str, r: Result<T, FsError>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}\n{}", ctx.at()))
}

fn set_data(d: &mut Vec<u8>, off: u64, buf: &[u8]) {
    if buf.is_empty() {
        return;
    }
    let end = off as usize + buf.len();
    if d.len() < end {
        d.resize(end, 0);
    }
    d[off as usize..end].copy_from_slice(buf);
}

/// Run one random edit on `fs` and mirror it into the model (nothing when nothing fits).
/// `protected` inodes are never removed or moved.
fn step(fs: &mut dyn Filesystem, m: &mut Model, rng: &mut Rng, ctx: &mut Ctx, protected: &[u64]) {
    let dirs = m.dirs();
    let files = m.files();
    let edges = m.edges();
    let dir = *rng.pick(&dirs).unwrap();
    let bs = ctx.block;
    match pick_op(rng) {
        Op::Create => {
            let name = gen_name(rng, ctx.ci, &m.node(dir).entries);
            let a = gen_attr(rng, false);
            ctx.log.push(format!(
                "create({dir}, {:?}, {:o} {}:{})",
                show(&name),
                a.perm,
                a.uid,
                a.gid
            ));
            let ino = ok(ctx, "create", fs.create(dir, &name, &a));
            m.add(
                dir,
                name,
                ino,
                MNode::new(Kind::File(Vec::new()), a.perm, a.uid, a.gid, dir),
            );
        }
        Op::Mkdir => {
            let name = gen_name(rng, ctx.ci, &m.node(dir).entries);
            let a = gen_attr(rng, true);
            ctx.log.push(format!("mkdir({dir}, {:?})", show(&name)));
            let ino = ok(ctx, "mkdir", fs.mkdir(dir, &name, &a));
            m.add(
                dir,
                name,
                ino,
                MNode::new(Kind::Dir, a.perm, a.uid, a.gid, dir),
            );
        }
        Op::Symlink => {
            let name = gen_name(rng, ctx.ci, &m.node(dir).entries);
            let len = match rng.below(4) {
                0 | 1 => 1 + rng.below(60),
                2 => 60 + rng.below(900),
                _ => 960 + rng.below(65), // over one 1 KiB block with its header; max 1024
            } as usize;
            let target: Vec<u8> = (0..len)
                .map(|i| b"abc/def_ghi."[(i + rng.below(3) as usize) % 12])
                .collect();
            let a = gen_attr(rng, false);
            ctx.log
                .push(format!("symlink({dir}, {:?}, {len} bytes)", show(&name)));
            let ino = ok(ctx, "symlink", fs.symlink(dir, &name, &target, &a));
            m.add(
                dir,
                name,
                ino,
                MNode::new(Kind::Symlink(target), 0o777, a.uid, a.gid, dir),
            );
        }
        Op::Write => {
            let Some(&ino) = rng.pick(&files) else { return };
            let cur = m.node(ino).size();
            let off = match rng.below(5) {
                0 => 0,
                1 => cur,
                2 => rng.below(cur + 1),
                3 => rng.below(cur + 300_000),
                _ => cur + rng.below(8 << 20), // far past EOF: a hole
            };
            let len = if rng.chance(15) {
                rng.below(300_000)
            } else {
                rng.below(9000)
            } as usize;
            let buf = rng.bytes(len);
            ctx.log.push(format!("write({ino}, off {off}, len {len})"));
            ok(ctx, "write", fs.write(ino, off, &buf));
            let n = m.node_mut(ino);
            n.times = None;
            if let Kind::File(d) = &mut n.kind {
                set_data(d, off, &buf);
            }
        }
        Op::Scatter => {
            // One short write every other block: as many extents as writes (a bmbt).
            let Some(&ino) = rng.pick(&files) else { return };
            let start = m.node(ino).size().div_ceil(bs) * bs + bs * rng.below(4);
            let count = 40 + rng.below(160);
            ctx.log.push(format!(
                "scatter({ino}, from {start}, {count} writes, stride 2 blocks)"
            ));
            for k in 0..count {
                let off = start + k * 2 * bs + rng.below(bs / 2);
                let blen = 1 + rng.below(bs / 2) as usize;
                let buf = rng.bytes(blen);
                ok(ctx, "scatter write", fs.write(ino, off, &buf));
                if let Kind::File(d) = &mut m.node_mut(ino).kind {
                    set_data(d, off, &buf);
                }
            }
            m.node_mut(ino).times = None;
        }
        Op::Truncate => {
            let Some(&ino) = rng.pick(&files) else { return };
            let cur = m.node(ino).size();
            let size = match rng.below(4) {
                0 => 0,
                1 => rng.below(cur + 1),
                2 => cur + rng.below(100_000),
                _ => cur + rng.below(16 << 20),
            };
            ctx.log.push(format!("truncate({ino}, {size})"));
            ok(ctx, "truncate", fs.truncate(ino, size));
            let n = m.node_mut(ino);
            n.times = None;
            if let Kind::File(d) = &mut n.kind {
                d.resize(size as usize, 0);
            }
        }
        Op::Unlink => {
            let c: Vec<&(u64, Vec<u8>, u64)> = edges
                .iter()
                .filter(|(_, _, i)| !m.node(*i).is_dir() && !protected.contains(i))
                .collect();
            let Some(&&(d, ref name, _)) = rng.pick(&c) else {
                return;
            };
            ctx.log.push(format!("unlink({d}, {:?})", show(name)));
            ok(ctx, "unlink", fs.unlink(d, name));
            m.remove_edge(d, name);
        }
        Op::Rmdir => {
            let c: Vec<&(u64, Vec<u8>, u64)> = edges
                .iter()
                .filter(|(_, _, i)| {
                    let n = m.node(*i);
                    n.is_dir() && n.entries.is_empty() && !protected.contains(i)
                })
                .collect();
            let Some(&&(d, ref name, _)) = rng.pick(&c) else {
                return;
            };
            ctx.log.push(format!("rmdir({d}, {:?})", show(name)));
            ok(ctx, "rmdir", fs.rmdir(d, name));
            m.remove_edge(d, name);
        }
        Op::RemoveTree => {
            let c: Vec<&(u64, Vec<u8>, u64)> = edges
                .iter()
                .filter(|(_, _, i)| {
                    m.node(*i).is_dir() && !protected.iter().any(|p| m.is_ancestor(*i, *p))
                })
                .collect();
            let Some(&&(d, ref name, _)) = rng.pick(&c) else {
                return;
            };
            ctx.log.push(format!("remove_tree({d}, {:?})", show(name)));
            ok(ctx, "remove_tree", fs.remove_tree(d, name));
            m.remove_edge(d, name);
        }
        Op::Rename => {
            let c: Vec<&(u64, Vec<u8>, u64)> = edges
                .iter()
                .filter(|(_, _, i)| !protected.iter().any(|p| m.is_ancestor(*i, *p)))
                .collect();
            let Some(&&(fd, ref from, ino)) = rng.pick(&c) else {
                return;
            };
            let is_dir = m.node(ino).is_dir();
            let tdirs: Vec<u64> = dirs
                .iter()
                .copied()
                .filter(|&t| !(is_dir && m.is_ancestor(ino, t)))
                .collect();
            // Half within the same directory.
            let td = if rng.chance(50) {
                fd
            } else {
                match rng.pick(&tdirs) {
                    Some(&t) => t,
                    None => return,
                }
            };
            let replace: Vec<Vec<u8>> = m
                .node(td)
                .entries
                .iter()
                .filter(|&(_, &i)| {
                    i != ino
                        && !protected.iter().any(|p| m.is_ancestor(i, *p))
                        && if is_dir {
                            m.node(i).is_dir() && m.node(i).entries.is_empty()
                        } else {
                            !m.node(i).is_dir()
                        }
                })
                .map(|(n, _)| n.clone())
                .collect();
            let to = if !replace.is_empty() && rng.chance(30) {
                rng.pick(&replace).unwrap().clone()
            } else {
                gen_name(rng, ctx.ci, &m.node(td).entries)
            };
            ctx.log.push(format!(
                "rename({fd}, {:?}, {td}, {:?})",
                show(from),
                show(&to)
            ));
            ok(ctx, "rename", fs.rename(fd, from, td, &to));
            if m.node(td).entries.contains_key(&to) {
                m.remove_edge(td, &to);
            }
            m.node_mut(fd).entries.remove(from);
            m.node_mut(fd).times = None;
            m.node_mut(td).entries.insert(to, ino);
            m.node_mut(td).times = None;
            if is_dir {
                m.node_mut(ino).parent = td;
                m.node_mut(ino).times = None; // its ".." changed
            }
        }
        Op::SetAttr => {
            let all: Vec<u64> = m.nodes.keys().copied().collect();
            let &ino = rng.pick(&all).unwrap();
            let is_link = matches!(m.node(ino).kind, Kind::Symlink(_));
            let mut a = SetAttr::default();
            if rng.chance(50) && !is_link {
                a.perm = Some(rng.below(0o10000) as u16);
            }
            if rng.chance(40) {
                a.uid = Some(rng.below(100_000) as u32);
            }
            if rng.chance(40) {
                a.gid = Some(rng.below(100_000) as u32);
            }
            let times = rng.chance(40).then(|| (gen_time(rng), gen_time(rng)));
            if let Some((at, mt)) = times {
                a.atime = Some(at);
                a.mtime = Some(mt);
            }
            ctx.log.push(format!("set_attr({ino}, {a:?})"));
            ok(ctx, "set_attr", fs.set_attr(ino, &a));
            let n = m.node_mut(ino);
            if let Some(p) = a.perm {
                n.perm = p & 0o7777;
            }
            if let Some(u) = a.uid {
                n.uid = u;
            }
            if let Some(g) = a.gid {
                n.gid = g;
            }
            if times.is_some() {
                n.times = times;
            }
        }
        Op::SetXattr => {
            let all: Vec<u64> = m.nodes.keys().copied().collect();
            let &ino = rng.pick(&all).unwrap();
            let n = m.node(ino);
            let is_dir = n.is_dir();
            let regular = matches!(n.kind, Kind::File(_) | Kind::Dir);
            let existing: Vec<String> = n.xattrs.keys().cloned().collect();
            const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let word = |rng: &mut Rng, len: usize| -> String {
                (0..len)
                    .map(|_| char::from(CH[rng.below(CH.len() as u64) as usize]))
                    .collect()
            };
            let (name, value) = match rng.below(10) {
                // Replace an existing one with a new value of another size.
                0 | 1 if !existing.is_empty() => {
                    let name = rng.pick(&existing).unwrap().clone();
                    if name.starts_with("system.posix_acl") {
                        (name, gen_acl(rng))
                    } else {
                        let len = 1 + rng.below(3 * bs) as usize;
                        let w = word(rng, len);
                        (name, w.into_bytes())
                    }
                }
                2 => {
                    let l = 3 + rng.below(10) as usize;
                    let t = word(rng, l);
                    let mut v = format!("system_u:object_r:{t}_t:s0").into_bytes();
                    v.push(0);
                    ("security.selinux".to_owned(), v)
                }
                3 if regular => ("system.posix_acl_access".to_owned(), gen_acl(rng)),
                4 if is_dir => ("system.posix_acl_default".to_owned(), gen_acl(rng)),
                5 => {
                    let len = 1 + rng.below(40) as usize;
                    (
                        {
                            let l = 1 + rng.below(12) as usize;
                            format!("trusted.{}", word(rng, l))
                        },
                        word(rng, len).into_bytes(),
                    )
                }
                _ if regular => {
                    let len = match rng.below(10) {
                        0..=5 => 1 + rng.below(60),
                        6 | 7 => 100 + rng.below(900),
                        // Remote: more than one block, up to the 64 KiB limit.
                        _ => (bs + 1 + rng.below(2 * bs)).min(65536),
                    } as usize;
                    let l = 1 + rng.below(30) as usize;
                    let name = format!("user.{}", word(rng, l));
                    (name, rng.bytes(len))
                }
                _ => return,
            };
            ctx.log
                .push(format!("set_xattr({ino}, {name:?}, {} bytes)", value.len()));
            match fs.set_xattr(ino, &name, &value) {
                Ok(()) => {
                    m.node_mut(ino).xattrs.insert(name, value);
                }
                // ext4 (the model's own check) cannot hold every value; XFS can.
                Err(FsError::Ext4(imgscrub_ext4::Ext4Error::NoSpace(why))) => {
                    ctx.log.push(format!("  -> ext4 NoSpace({why})"));
                }
                Err(e) => panic!("set_xattr: {e}\n{}", ctx.at()),
            }
        }
        Op::RemoveXattr => {
            let c: Vec<u64> = m
                .nodes
                .iter()
                .filter(|(_, n)| !n.xattrs.is_empty())
                .map(|(&i, _)| i)
                .collect();
            let Some(&ino) = rng.pick(&c) else { return };
            let names: Vec<String> = m.node(ino).xattrs.keys().cloned().collect();
            let name = rng.pick(&names).unwrap().clone();
            ctx.log.push(format!("remove_xattr({ino}, {name:?})"));
            ok(ctx, "remove_xattr", fs.remove_xattr(ino, &name));
            m.node_mut(ino).xattrs.remove(&name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Checks.

/// Every oracle against the model. `fs` (after its flush) is asked for its free ranges.
fn check_all(image: &Path, m: &Model, fs: Option<&Fs>, ctx: &Ctx, what: &str) {
    let at = || format!("{what}: {}", ctx.at());
    if let Err(out) = tk::xfs_repair_check(image) {
        panic!("xfs_repair -n is not clean after {}:\n{out}", at());
    }
    check_xfs_db(image, m, &at);
    check_space(image, fs, &at);
    if ctx.ci {
        // Linux 6.x dropped ascii-ci ("not supported by kernel"): no kernel view of it.
        eprintln!(
            "{}: no kernel check (the kernel cannot mount ascii-ci)",
            ctx.variant
        );
    } else {
        check_kernel(image, "xfs", m, &at);
    }
}

fn check_xfs_db(image: &Path, m: &Model, at: &dyn Fn() -> String) {
    let paths = m.paths();
    // Paths and entry types.
    let got: BTreeMap<Vec<u8>, (u64, String)> = tk::xfs_walk(image)
        .into_iter()
        .map(|e| (e.path, (e.ino, e.kind)))
        .collect();
    let want: BTreeMap<Vec<u8>, (u64, String)> = paths
        .iter()
        .filter(|(i, _)| **i != m.root)
        .map(|(&i, p)| (p.clone(), (i, m.node(i).db_kind().to_owned())))
        .collect();
    if got != want {
        let missing: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .take(10)
            .map(|(k, v)| format!("{} {v:?} (xfs_db: {:?})", show(k), got.get(k)))
            .collect();
        let extra: Vec<String> = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .take(10)
            .map(|k| show(k))
            .collect();
        panic!(
            "xfs_db ls: the tree differs from the model; wrong or missing: {missing:?}; not in the model: {extra:?}\n{}",
            at()
        );
    }
    // Inode cores.
    let inos: Vec<u64> = m.nodes.keys().copied().collect();
    let stats = tk::xfs_stat_inos(image, &inos);
    for (&ino, n) in &m.nodes {
        let st = &stats[&ino];
        let p = show(&paths[&ino]);
        assert_eq!(
            st.mode,
            n.type_bits() | u32::from(n.perm),
            "xfs_db: mode of {p} (inode {ino}) is {:o}\n{}",
            st.mode,
            at()
        );
        assert_eq!(
            (st.uid, st.gid),
            (n.uid, n.gid),
            "xfs_db: owner of {p}\n{}",
            at()
        );
        if !n.is_dir() {
            assert_eq!(st.size, n.size(), "xfs_db: size of {p}\n{}", at());
        }
        assert_eq!(st.nlink, m.nlink(ino), "xfs_db: nlink of {p}\n{}", at());
        if let Kind::Dev(_, (maj, min)) = n.kind {
            let _ = (maj, min); // rdev: checked by the kernel (xfs_db prints it raw)
        }
    }
    // Contents and targets.
    let data_inos: Vec<u64> = m
        .nodes
        .iter()
        .filter(|(_, n)| matches!(n.kind, Kind::File(_) | Kind::Symlink(_)))
        .map(|(&i, _)| i)
        .collect();
    let contents = tk::xfs_contents(image, &data_inos);
    for ino in &data_inos {
        let (Kind::File(d) | Kind::Symlink(d)) = &m.node(*ino).kind else {
            unreachable!()
        };
        let got = &contents[ino];
        if got != d {
            let first = got.iter().zip(d).position(|(a, b)| a != b);
            panic!(
                "xfs_db: contents of {} (inode {ino}) differ: {} bytes vs {} in the model, first difference at {first:?}\n{}",
                show(&paths[ino]),
                got.len(),
                d.len(),
                at()
            );
        }
    }
    // Extended attributes, where the model has some or the inode has an attribute fork.
    for (&ino, n) in &m.nodes {
        if n.xattrs.is_empty() && stats[&ino].forkoff == 0 {
            continue;
        }
        let got: Vec<(String, Vec<u8>, Vec<u8>)> = tk::xfs_attrs_full(image, &format!("#{ino}"))
            .into_iter()
            .map(|a| (a.ns, a.name, a.value.unwrap()))
            .collect();
        let mut want: Vec<(String, Vec<u8>, Vec<u8>)> =
            n.xattrs.iter().map(|(k, v)| to_disk(k, v)).collect();
        want.sort();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        if got_sorted != want {
            let names = |v: &[(String, Vec<u8>, Vec<u8>)]| -> Vec<String> {
                v.iter()
                    .map(|(ns, n, val)| format!("{ns}.{} ({} bytes)", show(n), val.len()))
                    .collect()
            };
            panic!(
                "xfs_db: attributes of {} (inode {ino}):\n  disk:  {:?}\n  model: {:?}\n{}",
                show(&paths[&ino]),
                names(&got_sorted),
                names(&want),
                at()
            );
        }
    }
}

fn check_space(image: &Path, fs: Option<&Fs>, at: &dyn Fn() -> String) {
    let sb = tk::xfs_sb(image);
    let freesp = tk::xfs_freesp(image);
    let c = tk::xfs_counters(image);
    let mut per_ag = vec![0u64; sb.agcount as usize];
    for (ag, _, len) in &freesp {
        per_ag[*ag as usize] += len;
    }
    let mut fd = 0;
    let (mut icount, mut ifree) = (0, 0);
    for (ag, &(freeblks, flcount, btreeblks, count, freecount)) in c.ags.iter().enumerate() {
        assert_eq!(
            per_ag[ag],
            freeblks + flcount,
            "AG {ag}: freesp lists {} blocks, AGF freeblks {freeblks} + flcount {flcount}\n{}",
            per_ag[ag],
            at()
        );
        fd += freeblks + flcount + btreeblks;
        icount += count;
        ifree += freecount;
    }
    assert_eq!(
        c.sb_fdblocks,
        fd,
        "superblock fdblocks vs the AGFs (freeblks + flcount + btreeblks)\n{}",
        at()
    );
    assert_eq!(
        (c.sb_icount, c.sb_ifree),
        (icount, ifree),
        "superblock icount/ifree vs the AGIs\n{}",
        at()
    );
    if let Some(fs) = fs {
        let ours: Vec<(u64, u64)> = merge(
            fs.free_ranges()
                .unwrap()
                .into_iter()
                .map(|r| (r.offset, r.len)),
        );
        let theirs = tk::xfs_free_ranges_with_agfl(image);
        assert!(
            ours == theirs,
            "free_ranges() after flush differs from xfs_db freesp ({} vs {} ranges, {} vs {} bytes)\n{}",
            ours.len(),
            theirs.len(),
            ours.iter().map(|r| r.1).sum::<u64>(),
            theirs.iter().map(|r| r.1).sum::<u64>(),
            at()
        );
    }
}

fn merge(v: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = v.filter(|r| r.1 > 0).collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (o, l) in v {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == o => last.1 += l,
            _ => out.push((o, l)),
        }
    }
    out
}

/// The kernel's view through a read-only loop mount.
fn check_kernel(image: &Path, fstype: &str, m: &Model, at: &dyn Fn() -> String) {
    let Some(mnt) = tk::mount_ro_as(image, fstype) else {
        return;
    };
    let base = mnt.path();
    let paths = m.paths();
    let host = |p: &[u8]| -> PathBuf {
        let mut b = base.as_os_str().as_bytes().to_vec();
        if p != b"/" {
            b.extend_from_slice(p);
        }
        PathBuf::from(std::ffi::OsStr::from_bytes(&b))
    };
    for (&ino, n) in &m.nodes {
        let hp = host(&paths[&ino]);
        let p = show(&paths[&ino]);
        let md = std::fs::symlink_metadata(&hp)
            .unwrap_or_else(|e| panic!("kernel: lstat {p}: {e}\n{}", at()));
        assert_eq!(md.ino(), ino, "kernel: inode number of {p}\n{}", at());
        assert_eq!(
            md.mode(),
            n.type_bits() | u32::from(n.perm),
            "kernel: mode of {p}\n{}",
            at()
        );
        assert_eq!(
            (md.uid(), md.gid()),
            (n.uid, n.gid),
            "kernel: owner of {p}\n{}",
            at()
        );
        assert_eq!(
            md.nlink(),
            u64::from(m.nlink(ino)),
            "kernel: nlink of {p}\n{}",
            at()
        );
        if let Some((a, mt)) = n.times {
            assert_eq!(
                (
                    md.atime(),
                    md.atime_nsec() as u32,
                    md.mtime(),
                    md.mtime_nsec() as u32
                ),
                (a.secs, a.nsecs, mt.secs, mt.nsecs),
                "kernel: atime/mtime of {p}\n{}",
                at()
            );
        }
        match &n.kind {
            Kind::File(d) => {
                assert_eq!(md.len(), d.len() as u64, "kernel: size of {p}\n{}", at());
                let got = std::fs::read(&hp)
                    .unwrap_or_else(|e| panic!("kernel: read {p}: {e}\n{}", at()));
                assert!(got == *d, "kernel: contents of {p} differ\n{}", at());
            }
            Kind::Symlink(t) => {
                let got = std::fs::read_link(&hp).unwrap();
                assert_eq!(
                    got.as_os_str().as_bytes(),
                    &t[..],
                    "kernel: target of {p}\n{}",
                    at()
                );
            }
            Kind::Dir => {
                let mut got: Vec<Vec<u8>> = std::fs::read_dir(&hp)
                    .unwrap_or_else(|e| panic!("kernel: readdir {p}: {e}\n{}", at()))
                    .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                    .collect();
                got.sort();
                let want: Vec<Vec<u8>> = n.entries.keys().cloned().collect();
                assert!(
                    got == want,
                    "kernel: entries of {p} differ ({} vs {})\n{}",
                    got.len(),
                    want.len(),
                    at()
                );
            }
            Kind::Dev(t, (maj, min)) => {
                let ft = md.file_type();
                assert!(
                    if *t == FileType::BlockDevice {
                        ft.is_block_device()
                    } else {
                        ft.is_char_device()
                    },
                    "kernel: type of {p}"
                );
                let r = md.rdev();
                let (gmaj, gmin) = (
                    ((r >> 8) & 0xfff) as u32 | ((r >> 32) as u32 & !0xfff),
                    (r & 0xff) as u32 | ((r >> 12) as u32 & !0xff),
                );
                assert_eq!((gmaj, gmin), (*maj, *min), "kernel: rdev of {p}\n{}", at());
            }
            Kind::Fifo => assert!(md.file_type().is_fifo(), "kernel: type of {p}"),
        }
    }
    // Extended attributes through getfattr, many paths per run.
    if tk::require_tool("getfattr").is_none() {
        return;
    }
    let all: Vec<(u64, PathBuf)> = m.nodes.keys().map(|&i| (i, host(&paths[&i]))).collect();
    for chunk in all.chunks(400) {
        let o = tk::run(
            Command::new("getfattr")
                .args(["-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
                .args(chunk.iter().map(|(_, p)| p)),
        );
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut got: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        let mut cur = String::new();
        for line in out.lines() {
            if let Some(f) = line.strip_prefix("# file: ") {
                cur = f.to_owned();
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            // The kernel also shows XFS's own names for the ACLs: compared as system.*.
            if k.starts_with("trusted.SGI_ACL_") {
                continue;
            }
            let v = v.strip_prefix("0x").unwrap_or(v);
            let bytes: Vec<u8> = (0..v.len() / 2)
                .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            got.entry(cur.clone())
                .or_default()
                .insert(k.to_owned(), bytes);
        }
        for (ino, hp) in chunk {
            let want = &m.node(*ino).xattrs;
            let key = hp.to_string_lossy().into_owned();
            let empty = BTreeMap::new();
            let g = got.get(&key).unwrap_or(&empty);
            if g != want {
                panic!(
                    "kernel (getfattr): attributes of {} differ: {:?} vs model {:?}\n{}",
                    show(&paths[ino]),
                    g.iter()
                        .map(|(k, v)| format!("{k}:{}", v.len()))
                        .collect::<Vec<_>>(),
                    want.iter()
                        .map(|(k, v)| format!("{k}:{}", v.len()))
                        .collect::<Vec<_>>(),
                    at()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Drivers.

fn v5_variants() -> Vec<String> {
    let only = std::env::var("IMGSCRUB_XFS_PROP_VARIANT").ok();
    tk::xfs_variants()
        .into_iter()
        .filter(|v| !v.starts_with("v4"))
        .filter(|v| only.as_ref().is_none_or(|o| o == v))
        .collect()
}

/// Build the fixture for `variant` from the small tree; `None` when xfsprogs is missing
/// outside CI.
fn fixture(variant: &str, dir: &Path) -> Option<tk::XfsFixture> {
    let src = dir.join("src");
    if !src.exists() {
        build_source(&src);
    }
    let img_dir = dir.join(variant);
    std::fs::create_dir_all(&img_dir).unwrap();
    tk::make_xfs_with(
        variant,
        &img_dir,
        &XfsOptions {
            dirty: false,
            size_mb: None,
            src: Some(src),
        },
    )
}

/// Open the image writable through the imgscrub-fs adapter. Until the write side lands this
/// is where every v5 case stops: `FsError::Xfs(ReadOnly)`; the caller goes on with the
/// other variants (their fresh images still meet the oracles) and fails at the end.
fn open_writable(image: &Path, ctx: &Ctx) -> Result<Fs, String> {
    let dev = RawFile::open_rw(image).unwrap();
    let mut fs = Xfs::open(dev, true).map_err(|e| {
        format!(
            "{}: the writable open of a v5 XFS is refused: {e}",
            ctx.variant
        )
    })?;
    fs.set_clock(Some(T0)).unwrap();
    Ok(fs)
}

fn no_refusals(refused: &[String]) {
    assert!(
        refused.is_empty(),
        "the XFS write side (issue 12) must accept every v5 variant:\n{}",
        refused.join("\n")
    );
}

#[test]
fn random_edits_on_every_v5_variant() {
    tk::require_tools!("mkfs.xfs", "xfs_db", "xfs_repair");
    let cases = env_u64("IMGSCRUB_XFS_PROP_CASES", 1);
    let first = env_u64("IMGSCRUB_XFS_PROP_FIRST", 0);
    let ops = env_u64("IMGSCRUB_XFS_PROP_OPS", 40);
    let segments = env_u64("IMGSCRUB_XFS_PROP_SEGMENTS", 2);
    let fixed_seed = std::env::var("IMGSCRUB_XFS_PROP_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let t = tempfile::tempdir().unwrap();
    let mut refused = Vec::new();
    for variant in v5_variants() {
        for case in first..first + cases {
            let seed = fixed_seed.unwrap_or_else(|| name_hash(&variant) ^ (case * 0x9E37_79B9));
            let case_dir = t.path().join(format!("case{case}"));
            let Some(fx) = fixture(&variant, &case_dir) else {
                return;
            };
            let sb = tk::xfs_sb(&fx.image);
            let mut ctx = Ctx {
                variant: variant.clone(),
                seed,
                ci: variant == "ci",
                block: sb.blocksize,
                log: Vec::new(),
            };
            let mut m = model_from_fixture(&fx);
            // The oracles on the untouched image: they must agree with mkxfs.sh's manifest.
            {
                // (Our read side's free_ranges() included: it must already match freesp.)
                let ro = Xfs::open(RawFile::open(&fx.image).unwrap(), false).unwrap();
                check_all(&fx.image, &m, Some(&ro), &ctx, "the fresh image");
            }
            let mut rng = Rng::new(seed);
            let mut fs = match open_writable(&fx.image, &ctx) {
                Ok(fs) => fs,
                Err(e) => {
                    refused.push(e);
                    continue;
                }
            };
            for seg in 0..segments {
                for _ in 0..ops {
                    step(&mut fs, &mut m, &mut rng, &mut ctx, &[]);
                }
                ctx.log.push(format!("flush (checkpoint {seg})"));
                ok(&ctx, "flush", fs.flush());
                check_all(&fx.image, &m, Some(&fs), &ctx, &format!("checkpoint {seg}"));
            }
            drop(fs);
            eprintln!(
                "{variant} case {case} seed {seed}: {} edits, {} inodes at the end",
                ctx.log.len(),
                m.nodes.len()
            );
            std::fs::remove_dir_all(&case_dir).unwrap();
        }
    }
    no_refusals(&refused);
}

fn form_rank(f: XfsDirForm) -> u8 {
    match f {
        XfsDirForm::Shortform => 0,
        XfsDirForm::Block => 1,
        XfsDirForm::Leaf => 2,
        XfsDirForm::Node => 3,
    }
}

/// One directory grown through shortform → block → leaf → node → node with a B+tree data
/// fork (entries with data interleaved, so the directory blocks are not contiguous), then
/// emptied back to shortform, with random edits elsewhere and every oracle at each form.
#[test]
fn a_directory_through_every_form_and_back() {
    tk::require_tools!("mkfs.xfs", "xfs_db", "xfs_repair");
    let wanted =
        std::env::var("IMGSCRUB_XFS_PROP_FORMS").unwrap_or_else(|_| "v5,b1k,ci,rmapbt".into());
    let t = tempfile::tempdir().unwrap();
    let mut refused = Vec::new();
    for variant in v5_variants() {
        if wanted != "all" && !wanted.split(',').any(|w| w == variant) {
            continue;
        }
        let seed = std::env::var("IMGSCRUB_XFS_PROP_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| name_hash(&variant) ^ 0xF0F0);
        let vdir = t.path().join(&variant);
        let Some(fx) = fixture(&variant, &vdir) else {
            return;
        };
        let sb = tk::xfs_sb(&fx.image);
        let mut ctx = Ctx {
            variant: variant.clone(),
            seed,
            ci: variant == "ci",
            block: sb.blocksize,
            log: Vec::new(),
        };
        let mut m = model_from_fixture(&fx);
        let mut rng = Rng::new(seed);
        let mut fs = match open_writable(&fx.image, &ctx) {
            Ok(fs) => fs,
            Err(e) => {
                refused.push(e);
                continue;
            }
        };
        let root = m.root;
        let a = NewAttr {
            perm: 0o755,
            uid: 0,
            gid: 0,
            time: Some(T0),
        };
        ctx.log.push("mkdir(root, \"forms\")".into());
        let d = ok(&ctx, "mkdir forms", fs.mkdir(root, b"forms", &a));
        m.add(
            root,
            b"forms".to_vec(),
            d,
            MNode::new(Kind::Dir, 0o755, 0, 0, root),
        );
        // Names of 200 bytes: about dirblksize / 216 entries per directory block.
        let per_block = (sb.dirblksize / 216).max(4);
        let name = |i: u64| -> Vec<u8> {
            let mut n = format!("e{i:07}-").into_bytes();
            n.resize(200, b'a' + (i % 26) as u8);
            n
        };
        let form = |ctx: &Ctx| {
            tk::xfs_dir_form(&fx.image, "/forms")
                .unwrap_or_else(|| panic!("/forms is not a directory for xfs_db\n{}", ctx.at()))
        };
        let mut seen = vec![XfsDirForm::Shortform];
        let mut next = 0u64;
        let mut btree = false;
        let mut rounds = 0;
        while !btree {
            rounds += 1;
            assert!(
                rounds < 600,
                "/forms never reached a B+tree data fork ({next} entries, forms {seen:?}): the engine keeps directory blocks contiguous?\n{}",
                ctx.at()
            );
            let cur = *seen.last().unwrap();
            let batch = if form_rank(cur) < 2 {
                (per_block / 4).max(1)
            } else {
                per_block
            };
            for k in 0..batch {
                let n = name(next);
                next += 1;
                let ino = ok(&ctx, "create in forms", fs.create(d, &n, &a));
                let mut data = Vec::new();
                // From leaf form on, one entry per batch gets a block of data right after
                // the directory's new block.
                if form_rank(cur) >= 2 && k == 0 {
                    data = rng.bytes(ctx.block as usize);
                    ok(&ctx, "write in forms", fs.write(ino, 0, &data));
                }
                m.add(d, n, ino, MNode::new(Kind::File(data), 0o755, 0, 0, d));
            }
            for _ in 0..3 {
                step(&mut fs, &mut m, &mut rng, &mut ctx, &[d]);
            }
            ctx.log.push(format!("flush ({next} entries in /forms)"));
            ok(&ctx, "flush", fs.flush());
            let (f, bt) = form(&ctx);
            assert!(
                form_rank(f) >= form_rank(cur),
                "/forms went from {cur:?} back to {f:?} while growing to {next} entries\n{}",
                ctx.at()
            );
            if f != cur {
                seen.push(f);
                check_all(
                    &fx.image,
                    &m,
                    Some(&fs),
                    &ctx,
                    &format!("/forms became {f:?}"),
                );
            }
            // (Leaf form may already need a B+tree fork when its blocks are scattered.)
            btree = bt && f == XfsDirForm::Node;
        }
        assert_eq!(
            seen,
            vec![
                XfsDirForm::Shortform,
                XfsDirForm::Block,
                XfsDirForm::Leaf,
                XfsDirForm::Node
            ],
            "/forms skipped a form on the way up\n{}",
            ctx.at()
        );
        check_all(
            &fx.image,
            &m,
            Some(&fs),
            &ctx,
            "/forms in node form with a B+tree fork",
        );
        // Back down, removing in random order.
        let mut down = vec![XfsDirForm::Node];
        let mut names: Vec<Vec<u8>> = m.node(d).entries.keys().cloned().collect();
        while !names.is_empty() {
            let cur = *down.last().unwrap();
            // Small steps near the block form, so that no form is skipped.
            let batch = if form_rank(cur) <= 1 || (names.len() as u64) < 3 * per_block {
                (per_block / 4).max(1)
            } else {
                per_block
            } as usize;
            for _ in 0..batch.min(names.len()) {
                let i = rng.below(names.len() as u64) as usize;
                let n = names.swap_remove(i);
                // (The random edits may have put directories in /forms too.)
                if m.node(m.node(d).entries[&n]).is_dir() {
                    ok(
                        &ctx,
                        "remove_tree in forms",
                        fs.remove_tree(d, &n).map(|_| ()),
                    );
                } else {
                    ok(&ctx, "unlink in forms", fs.unlink(d, &n));
                }
                m.remove_edge(d, &n);
            }
            ctx.log
                .push(format!("flush ({} entries left in /forms)", names.len()));
            ok(&ctx, "flush", fs.flush());
            let (f, bt) = form(&ctx);
            assert!(
                form_rank(f) <= form_rank(cur),
                "/forms went from {cur:?} up to {f:?} while shrinking to {} entries\n{}",
                names.len(),
                ctx.at()
            );
            if f != cur {
                down.push(f);
                check_all(
                    &fx.image,
                    &m,
                    Some(&fs),
                    &ctx,
                    &format!("/forms back to {f:?}"),
                );
            }
            if names.len() < 2 * per_block as usize {
                assert!(
                    !bt,
                    "/forms keeps a B+tree fork with {} entries\n{}",
                    names.len(),
                    ctx.at()
                );
            }
        }
        assert_eq!(
            down,
            vec![
                XfsDirForm::Node,
                XfsDirForm::Leaf,
                XfsDirForm::Block,
                XfsDirForm::Shortform
            ],
            "/forms skipped a form on the way down\n{}",
            ctx.at()
        );
        ctx.log.push("rmdir(root, \"forms\")".into());
        ok(&ctx, "rmdir forms", fs.rmdir(root, b"forms"));
        m.remove_edge(root, b"forms");
        ok(&ctx, "flush", fs.flush());
        check_all(&fx.image, &m, Some(&fs), &ctx, "/forms removed");
        drop(fs);
        std::fs::remove_dir_all(&vdir).unwrap();
    }
    no_refusals(&refused);
}

fn is_read_only(e: &FsError) -> bool {
    matches!(e, FsError::Xfs(XfsError::ReadOnly(_)))
}

/// v4 is read-only: the writable open is refused naming v4, every edit through a read-only
/// open is refused, and the image stays byte-identical and clean.
#[test]
fn v4_refuses_every_edit_and_writes_nothing() {
    tk::require_tools!("mkfs.xfs", "xfs_db", "xfs_repair");
    let t = tempfile::tempdir().unwrap();
    for variant in ["v4", "v4ftype0"] {
        let Some(fx) = fixture(variant, t.path()) else {
            return;
        };
        let before = std::fs::read(&fx.image).unwrap();
        match Xfs::open(RawFile::open_rw(&fx.image).unwrap(), true) {
            Ok(_) => panic!("{variant}: a writable open of v4 XFS was accepted"),
            Err(e) => {
                assert!(is_read_only(&e), "{variant}: {e:?}");
                assert!(
                    e.to_string().contains("v4"),
                    "{variant}: the refusal does not name v4: {e}"
                );
            }
        }
        let mut fs = Xfs::open(RawFile::open_rw(&fx.image).unwrap(), false).unwrap();
        let root = fs.root();
        let etc = fs.lookup(root, b"etc").unwrap().unwrap();
        let file = fs.lookup(etc, b"hostname").unwrap().unwrap();
        let a = NewAttr::default();
        let results: Vec<(&str, Result<(), FsError>)> = vec![
            ("create", fs.create(root, b"new", &a).map(|_| ())),
            ("mkdir", fs.mkdir(root, b"newdir", &a).map(|_| ())),
            ("symlink", fs.symlink(root, b"l", b"t", &a).map(|_| ())),
            ("write", fs.write(file, 0, b"x")),
            ("truncate", fs.truncate(file, 0)),
            ("unlink", fs.unlink(etc, b"hostname")),
            ("rmdir", fs.rmdir(root, b"empty")),
            ("rename", fs.rename(etc, b"hostname", root, b"h")),
            (
                "set_attr",
                fs.set_attr(
                    file,
                    &SetAttr {
                        perm: Some(0o600),
                        ..SetAttr::default()
                    },
                ),
            ),
            ("set_xattr", fs.set_xattr(file, "user.x", b"y")),
            ("remove_xattr", fs.remove_xattr(file, "user.x")),
            ("remove_tree", fs.remove_tree(root, b"big").map(|_| ())),
        ];
        for (what, r) in results {
            match r {
                Ok(()) => panic!("{variant}: {what} was accepted on a read-only XFS"),
                Err(e) => assert!(is_read_only(&e), "{variant}: {what}: {e:?}"),
            }
        }
        fs.flush().unwrap();
        drop(fs);
        assert!(
            std::fs::read(&fx.image).unwrap() == before,
            "{variant}: the refused edits changed the image"
        );
        tk::assert_xfs_repair_clean(&fx.image);
    }
}

/// Damaged v5 metadata (a flipped byte in an AGF, an AGI, the root inode) is refused by the
/// writable open, before anything is written: the file stays byte-identical.
#[test]
fn damaged_v5_is_refused_before_any_write() {
    tk::require_tools!("mkfs.xfs", "xfs_db", "xfs_repair");
    let t = tempfile::tempdir().unwrap();
    let Some(fx) = fixture("v5", t.path()) else {
        return;
    };
    let sb = tk::xfs_sb(&fx.image);
    let ag1 = sb.agblocks * sb.blocksize;
    let root_inode = {
        let out = tk::xfs_db(&fx.image, &[&format!("inode {}", sb.rootino), "daddr"]);
        let d: u64 = out
            .split_whitespace()
            .last()
            .and_then(|w| w.trim_end_matches('.').parse().ok())
            .unwrap_or_else(|| panic!("xfs_db daddr: {out}"));
        d * 512
    };
    let pristine = std::fs::read(&fx.image).unwrap();
    for (what, at) in [
        ("AGF of AG 1", ag1 + sb.sectsize + 40),
        ("AGI of AG 0", 2 * sb.sectsize + 40),
        ("root inode", root_inode + 8),
    ] {
        let mut bytes = pristine.clone();
        bytes[at as usize] ^= 0x5a;
        std::fs::write(&fx.image, &bytes).unwrap();
        match Xfs::open(RawFile::open_rw(&fx.image).unwrap(), true) {
            Ok(_) => panic!("{what}: a damaged filesystem was opened for writing"),
            Err(e) => assert!(
                !is_read_only(&e) || !e.to_string().contains("not implemented"),
                "{what}: refused for the wrong reason (damage must be found first): {e}"
            ),
        }
        assert!(
            std::fs::read(&fx.image).unwrap() == bytes,
            "{what}: the refused open wrote to the image"
        );
    }
}

/// The test's own model and kernel check, proven on an engine that already writes: the same
/// random edits through the ext4 backend (`imgscrub_fs::Ext4`) on an empty ext4, then
/// `e2fsck -fn` and the kernel's view (read-only loop mount) against the model. A failure
/// here is a bug of this test, not of the XFS engine.
#[test]
fn the_model_holds_on_ext4() {
    tk::require_tools!("mke2fs", "e2fsck");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("empty");
    std::fs::create_dir(&src).unwrap();
    let img = t.path().join("ext4.img");
    if !tk::make_ext4("default", &src, &img, 128) {
        return;
    }
    let seed = env_u64("IMGSCRUB_XFS_PROP_SEED", 0xE474);
    let mut fs = imgscrub_fs::Ext4::open(RawFile::open_rw(&img).unwrap(), true).unwrap();
    fs.set_clock(Some(T0)).unwrap();
    let root = fs.root();
    let mut m = Model {
        root,
        nodes: BTreeMap::new(),
    };
    let st = fs.stat(root).unwrap();
    m.nodes
        .insert(root, MNode::new(Kind::Dir, st.perm, st.uid, st.gid, root));
    for e in fs.read_dir(root).unwrap() {
        let st = fs.stat(e.node).unwrap();
        m.add(
            root,
            e.name,
            e.node,
            MNode::new(Kind::Dir, st.perm, st.uid, st.gid, root),
        );
    }
    let mut ctx = Ctx {
        variant: "ext4 (model self-check)".into(),
        seed,
        ci: false,
        block: 4096,
        log: Vec::new(),
    };
    let mut rng = Rng::new(seed);
    let ops = env_u64("IMGSCRUB_XFS_PROP_OPS", 40);
    for seg in 0..env_u64("IMGSCRUB_XFS_PROP_SEGMENTS", 2) {
        for _ in 0..3 * ops {
            step(&mut fs, &mut m, &mut rng, &mut ctx, &[]);
        }
        ok(&ctx, "flush", fs.flush());
        tk::assert_e2fsck_clean(&img);
        let at = || format!("ext4 checkpoint {seg}: {}", ctx.at());
        check_kernel(&img, "ext4", &m, &at);
    }
    eprintln!(
        "ext4 self-check: {} edits, {} inodes",
        ctx.log.len(),
        m.nodes.len()
    );
}
