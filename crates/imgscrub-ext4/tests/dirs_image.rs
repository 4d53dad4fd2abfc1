#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Directory code against real images made by mke2fs and indexed by `e2fsck -fyD`:
//! hashes equal debugfs' `htree` dump, lookups find every entry, `list` equals `ls`, and
//! in-place edits (remove + re-add in freed space) leave `e2fsck -fn` clean.
//!
//! These tests read and write directory blocks in the image file directly (block numbers
//! from `debugfs -R blocks`), without the rest of the engine.

use imgscrub_ext4::csum::crc32c_raw;
use imgscrub_ext4::dir::{self, DirBlocks, HashParams};
use imgscrub_ext4::htree;
use imgscrub_ext4::{Ext4Error, Result};
use imgscrub_testkit as tk;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// The superblock fields directory code needs.
#[derive(Debug, Clone)]
struct Sb {
    block_size: u32,
    inodes_count: u32,
    hash: HashParams,
    fs_seed: Option<u32>,
    filetype: bool,
    dir_index: bool,
    large_dir: bool,
}

fn read_sb(img: &[u8]) -> Sb {
    let s = &img[1024..2048];
    let compat = le32(s, 0x5c);
    let incompat = le32(s, 0x60);
    let ro = le32(s, 0x64);
    let csum = ro & 0x400 != 0;
    let fs_seed = csum.then(|| {
        if incompat & 0x2000 != 0 {
            le32(s, 0x270)
        } else {
            crc32c_raw(!0, &s[0x68..0x78])
        }
    });
    Sb {
        block_size: 1024 << le32(s, 24),
        inodes_count: le32(s, 0),
        hash: HashParams {
            default_version: s[0xfc],
            seed: [le32(s, 0xec), le32(s, 0xf0), le32(s, 0xf4), le32(s, 0xf8)],
            unsigned: le32(s, 0x160) & 2 != 0,
        },
        fs_seed,
        filetype: incompat & 2 != 0,
        dir_index: compat & 0x20 != 0,
        large_dir: incompat & 0x4000 != 0,
    }
}

/// A directory of an image held in memory; blocks at fixed physical addresses.
struct ImgDir<'a> {
    img: &'a mut Vec<u8>,
    sb: Sb,
    ino: u32,
    seed: Option<u32>,
    blocks: Vec<u64>,
    indexed: bool,
}

impl DirBlocks for ImgDir<'_> {
    fn ino(&self) -> u32 {
        self.ino
    }
    fn block_size(&self) -> u32 {
        self.sb.block_size
    }
    fn num_blocks(&self) -> u32 {
        self.blocks.len() as u32
    }
    fn read(&mut self, lblk: u32) -> Result<Vec<u8>> {
        let p = self.blocks[lblk as usize] as usize * self.sb.block_size as usize;
        Ok(self.img[p..p + self.sb.block_size as usize].to_vec())
    }
    fn write(&mut self, lblk: u32, data: &[u8]) -> Result<()> {
        let p = self.blocks[lblk as usize] as usize * self.sb.block_size as usize;
        self.img[p..p + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn append_block(&mut self) -> Result<u32> {
        Err(Ext4Error::NoSpace("test: no allocator"))
    }
    fn csum_seed(&self) -> Option<u32> {
        self.seed
    }
    fn hash(&self) -> HashParams {
        self.sb.hash
    }
    fn has_filetype(&self) -> bool {
        self.sb.filetype
    }
    fn dir_index(&self) -> bool {
        self.sb.dir_index
    }
    fn large_dir(&self) -> bool {
        self.sb.large_dir
    }
    fn is_indexed(&self) -> bool {
        self.indexed
    }
    fn set_indexed(&mut self, on: bool) -> Result<()> {
        if on != self.indexed {
            return Err(Ext4Error::Unsupported("test: cannot change flags".into()));
        }
        Ok(())
    }
    fn inodes_count(&self) -> u32 {
        self.sb.inodes_count
    }
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    let i = text.find(key).unwrap_or_else(|| panic!("{key} in {text}")) + key.len();
    text[i..].split_whitespace().next().unwrap()
}

fn open_dir<'a>(image: &Path, img: &'a mut Vec<u8>, path: &str) -> ImgDir<'a> {
    let sb = read_sb(img);
    let st = tk::debugfs(image, &format!("stat {path}"));
    let ino: u32 = field(&st, "Inode:").parse().unwrap();
    let flags = u32::from_str_radix(field(&st, "Flags:").trim_start_matches("0x"), 16).unwrap();
    let generation: u32 = field(&st, "Generation:").parse().unwrap();
    let size: u64 = field(&st, "Size:").parse().unwrap();
    let n = size / u64::from(sb.block_size);
    // `bmap` per logical block (`blocks` would list indirect blocks of block-mapped files).
    let cmds: String = (0..n).map(|l| format!("bmap {path} {l}\n")).collect();
    let cmdfile = image.with_extension("bmap");
    std::fs::write(&cmdfile, cmds).unwrap();
    let out = tk::run_ok(
        Command::new(tk::find_tool("debugfs").unwrap())
            .arg("-f")
            .arg(&cmdfile)
            .arg(image),
    );
    let blocks: Vec<u64> = out
        .lines()
        .filter(|l| !l.starts_with("debugfs"))
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(blocks.len() as u64, n);
    let seed = sb
        .fs_seed
        .map(|s| crc32c_raw(crc32c_raw(s, &ino.to_le_bytes()), &generation.to_le_bytes()));
    ImgDir {
        img,
        sb,
        ino,
        seed,
        blocks,
        indexed: flags & 0x1000 != 0,
    }
}

/// Names for a big directory: various lengths, some with bytes ≥ 0x80 (signed vs unsigned
/// hashing differ on those).
fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 5 {
            0 => format!("f{i}"),
            1 => format!("file-with-a-longer-name-{i:06}.conf"),
            2 => format!("caf\u{e9}-{i}"),
            3 => format!("{}{i}", "x".repeat(40 + i % 60)),
            _ => format!("\u{65e5}\u{672c}-{i}.txt"),
        })
        .collect()
}

fn build(variant: &str, dir: &Path, n: usize, tweak: &[&str]) -> Option<PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    std::fs::create_dir_all(src.join("small")).unwrap();
    for name in names(n) {
        std::fs::write(src.join("big").join(&name), b"").unwrap();
    }
    for i in 0..5 {
        std::fs::write(src.join("small").join(format!("s{i}")), b"x").unwrap();
    }
    let img = dir.join("img");
    if !tk::make_ext4(variant, &src, &img, 32) {
        return None;
    }
    let debugfs = tk::find_tool("debugfs")?;
    for req in tweak {
        tk::run_ok(
            Command::new(&debugfs)
                .arg("-w")
                .arg("-R")
                .arg(req)
                .arg(&img),
        );
    }
    // -D indexes every directory; exit status 1 = "fixed" (the optimisation).
    let e2fsck = tk::find_tool("e2fsck")?;
    let o = tk::run(Command::new(e2fsck).arg("-fyD").arg(&img));
    assert!(
        o.status.code().unwrap_or(8) <= 1,
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    tk::assert_e2fsck_clean(&img);
    Some(img)
}

/// (name, hash) for every entry of `path` from `debugfs htree`.
fn debugfs_hashes(image: &Path, path: &str) -> BTreeMap<Vec<u8>, u32> {
    let out = tk::debugfs(image, &format!("htree {path}"));
    let mut m = BTreeMap::new();
    for line in out.lines() {
        if line.starts_with("Reading directory block") || !line.contains(" 0x") {
            continue;
        }
        // Entries look like "95 0x0018dcfe-5c3129f1 (16) file_172   80 0x…"
        let mut rest = line.trim();
        while let Some(x) = rest.find(" 0x") {
            let after = &rest[x + 3..];
            let hash = u32::from_str_radix(&after[..8], 16).unwrap();
            let Some(p) = after.find(") ") else { break };
            let tail = &after[p + 2..];
            let end = tail.find("   ").unwrap_or(tail.len());
            let name = &tail[..end];
            m.insert(name.as_bytes().to_vec(), hash);
            rest = &tail[end..];
        }
    }
    m
}

/// (name, inode) from `debugfs ls -p`, "." and ".." included.
fn debugfs_ls(image: &Path, path: &str) -> BTreeMap<Vec<u8>, u32> {
    let out = tk::debugfs(image, &format!("ls -p {path}"));
    let mut m = BTreeMap::new();
    // "/ino/mode/uid/gid/name/size/"
    for line in out.lines() {
        let f: Vec<&str> = line.split('/').collect();
        if f.len() >= 7
            && let Ok(ino) = f[1].parse::<u32>()
        {
            m.insert(f[5].as_bytes().to_vec(), ino);
        }
    }
    m
}

fn same_maps(variant: &str, what: &str, a: &BTreeMap<Vec<u8>, u32>, b: &BTreeMap<Vec<u8>, u32>) {
    let only_a: Vec<_> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .take(5)
        .collect();
    let only_b: Vec<_> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{variant}: {what}: {} vs {} entries; ours only {:?}; theirs only {:?}",
        a.len(),
        b.len(),
        only_a
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k), v))
            .collect::<Vec<_>>(),
        only_b
            .iter()
            .map(|(k, v)| (String::from_utf8_lossy(k), v))
            .collect::<Vec<_>>(),
    );
}

fn check_image(variant: &str, tweak: &[&str], expect_version: u8) {
    let tmp = tempfile::tempdir().unwrap();
    let n = 800;
    let Some(image) = build(variant, tmp.path(), n, tweak) else {
        return;
    };
    let mut img = std::fs::read(&image).unwrap();
    let mut d = open_dir(&image, &mut img, "/big");
    assert!(d.indexed, "{variant}: /big not indexed");
    if let Err(e) = htree::check(&mut d) {
        panic!(
            "{variant}: {e}\n{}",
            tk::debugfs(&image, "htree /big")
                .lines()
                .filter(|l| l.contains("Entry") || l.contains("Reading"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let (info, _) = htree::read_root(&mut d).unwrap();
    assert_eq!(info.hash_version, expect_version % 3, "{variant}");
    let version = htree::effective_version(info.hash_version, d.sb.hash.unsigned);
    assert_eq!(version, expect_version, "{variant}");

    // Hashes equal debugfs'.
    let theirs = debugfs_hashes(&image, "/big");
    assert_eq!(theirs.len(), n, "{variant}: debugfs htree parse");
    for (name, h) in &theirs {
        let (mine, _) = htree::dx_hash(name, version, &d.sb.hash.seed).unwrap();
        assert_eq!(
            mine,
            *h,
            "{variant}: hash of {:?}",
            String::from_utf8_lossy(name)
        );
    }
    // list equals ls; lookup finds every entry.
    let ls = debugfs_ls(&image, "/big");
    let mine: BTreeMap<Vec<u8>, u32> = dir::list_all(&mut d)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.ino))
        .collect();
    same_maps(variant, "list vs ls", &mine, &ls);
    for (name, ino) in &ls {
        if name != b"." && name != b".." {
            assert_eq!(dir::lookup(&mut d, name).unwrap().map(|x| x.0), Some(*ino));
        }
    }
    assert_eq!(dir::lookup(&mut d, b"not-there").unwrap(), None);

    // Edit in place: remove a third, then re-add them with swapped inodes (link counts and
    // types stay right); the small linear directory too.
    let victims: Vec<(Vec<u8>, u32)> = ls
        .iter()
        .filter(|(k, _)| k.as_slice() != b"." && k.as_slice() != b"..")
        .step_by(3)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (name, ino) in &victims {
        assert_eq!(dir::remove(&mut d, name).unwrap(), *ino);
    }
    htree::check(&mut d).unwrap();
    let nv = victims.len();
    for (i, (name, _)) in victims.iter().enumerate().rev() {
        let ino = victims[(i + 1) % nv].1;
        dir::add(&mut d, name, ino, 1).unwrap();
    }
    htree::check(&mut d).unwrap();
    let mut s = open_dir(&image, &mut img, "/small");
    assert!(!s.indexed);
    assert_eq!(dir::list(&mut s).unwrap().len(), 5);
    let a = dir::remove(&mut s, b"s1").unwrap();
    let b = dir::remove(&mut s, b"s3").unwrap();
    dir::add(&mut s, b"s3", a, 1).unwrap();
    dir::add(&mut s, b"s1-renamed", b, 1).unwrap();
    assert_eq!(dir::parent(&mut s).unwrap(), 2);
    std::fs::write(&image, &img).unwrap();
    tk::assert_e2fsck_clean(&image);
    let ls2 = debugfs_ls(&image, "/small");
    assert_eq!(ls2.get(b"s1-renamed".as_slice()), Some(&b));
}

#[test]
fn dirs_image_every_variant() {
    tk::require_tools!("mke2fs", "e2fsck", "debugfs");
    for v in tk::ext4_variants() {
        check_image(&v, &[], 1);
    }
}

#[test]
fn dirs_image_hash_variants() {
    tk::require_tools!("mke2fs", "e2fsck", "debugfs");
    // s_flags: 1 signed, 2 unsigned. def_hash_version: legacy 0, half_md4 1, tea 2.
    for (flags, ver, expect) in [
        (2, "half_md4", 4),
        (1, "tea", 2),
        (2, "tea", 5),
        (1, "legacy", 0),
        (2, "legacy", 3),
    ] {
        let tweak = [
            format!("ssv flags {flags}"),
            format!("ssv def_hash_version {ver}"),
        ];
        let t: Vec<&str> = tweak.iter().map(String::as_str).collect();
        check_image("default", &t, expect);
        check_image("nocsum", &t, expect);
    }
}

/// `debugfs dx_hash` for every hash version (0..=5, unsigned included), the default
/// (all-zero) seed and a custom one, names of 1..200 bytes (several hash chunks) with bytes
/// ≥ 0x80.
#[test]
fn dirs_image_dx_hash_command() {
    tk::require_tools!("mke2fs", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let image = tmp.path().join("img");
    if !tk::make_ext4("default", &src, &image, 8) {
        return;
    }
    let seeds: [(&str, [u32; 4]); 2] = [
        ("00000000-0000-0000-0000-000000000000", [0; 4]),
        (
            "0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9",
            [0x3d2c_1b0a, 0x6140_5f4e, 0xb5a4_9382, 0xf9e8_d7c6],
        ),
    ];
    let mut names: Vec<Vec<u8>> = Vec::new();
    for len in [1usize, 3, 4, 5, 15, 16, 17, 31, 32, 33, 64, 65, 100, 200] {
        let mut n: Vec<u8> = (0..len).map(|i| b"aZ9_.-\xe9\xff\x80q"[i % 10]).collect();
        n[0] = b'n';
        names.push(n);
    }
    let mut cmds = Vec::new();
    let mut expect = Vec::new();
    for (s, seed) in &seeds {
        for v in 0u8..=5 {
            for n in &names {
                cmds.extend_from_slice(format!("dx_hash -h {v} -s {s} ").as_bytes());
                cmds.extend_from_slice(n);
                cmds.push(b'\n');
                expect.push(htree::dx_hash(n, v, seed).unwrap());
            }
        }
    }
    let cmdfile = tmp.path().join("cmds");
    std::fs::write(&cmdfile, &cmds).unwrap();
    let o = tk::run(
        Command::new(tk::find_tool("debugfs").unwrap())
            .arg("-f")
            .arg(&cmdfile)
            .arg(&image),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let got: Vec<(u32, u32)> = out
        .lines()
        .filter(|l| l.starts_with("Hash of "))
        .map(|l| {
            let h = l.split(" is 0x").nth(1).unwrap();
            let major = u32::from_str_radix(h.split(' ').next().unwrap(), 16).unwrap();
            let minor = u32::from_str_radix(
                h.split("minor 0x").nth(1).unwrap().trim_end_matches(')'),
                16,
            )
            .unwrap();
            (major, minor)
        })
        .collect();
    assert_eq!(got.len(), expect.len(), "{out}");
    for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
        assert_eq!(g, e, "request {i}");
    }
}

/// Damaged directory blocks on a metadata_csum image are refused with errors that name the
/// directory inode and the block.
#[test]
fn dirs_image_checksum_errors_name_the_block() {
    tk::require_tools!("mke2fs", "e2fsck", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    let Some(image) = build("default", tmp.path(), 400, &[]) else {
        return;
    };
    let pristine = std::fs::read(&image).unwrap();
    for (lblk, what) in [
        (0usize, "htree root of inode"),
        (1, "directory block 1 of inode"),
    ] {
        let mut img = pristine.clone();
        let d = open_dir(&image, &mut img, "/big");
        let p = d.blocks[lblk] as usize * d.sb.block_size as usize;
        let ino = d.ino;
        drop(d);
        img[p + 40] ^= 0x40; // inside the dx entries / a leaf record name
        let mut d = open_dir(&image, &mut img, "/big");
        let e = dir::list(&mut d).unwrap_err();
        assert!(matches!(e, Ext4Error::Checksum { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("{what} {ino}")), "{msg}");
        if lblk == 0 {
            // Every operation goes through the root; a damaged leaf only fails the
            // operations that read it (as in the kernel).
            assert!(dir::add(&mut d, b"x", 11, 1).is_err());
            assert!(dir::lookup(&mut d, b"f0").is_err());
        }
    }
}
