#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The mapping code on real images made by mke2fs/debugfs: fragmented files with deep extent
//! trees, ext2/ext3 block maps with double and triple indirect blocks, inline data. Our
//! extent lists, metadata blocks and contents must equal what debugfs reports.

mod mapping_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use imgscrub_ext4::csum::crc32c_raw;
use imgscrub_ext4::mapping::{self, FileMap, MapCtx, MapKind};
use imgscrub_ext4::{Result, inline};
use imgscrub_testkit::{debugfs, make_ext4, random_bytes, require_tools, run_ok};
use mapping_common::expand;

/// A read-only `MapCtx` over an image file held in memory.
struct ImgCtx {
    img: Vec<u8>,
    bs: u32,
    blocks: u64,
    first: u64,
    fs_seed: Option<u32>,
    seed: Option<u32>,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

impl ImgCtx {
    fn open(path: &Path) -> Self {
        let img = std::fs::read(path).unwrap();
        let sb = &img[1024..2048];
        let bs = 1024u32 << le32(sb, 0x18);
        let incompat = le32(sb, 0x60);
        let ro_compat = le32(sb, 0x64);
        let mut blocks = u64::from(le32(sb, 0x04));
        if incompat & 0x80 != 0 {
            blocks |= u64::from(le32(sb, 0x150)) << 32;
        }
        let fs_seed = (ro_compat & 0x400 != 0).then(|| {
            if incompat & 0x2000 != 0 {
                le32(sb, 0x270)
            } else {
                crc32c_raw(!0, &sb[0x68..0x78])
            }
        });
        ImgCtx {
            bs,
            blocks,
            first: u64::from(le32(sb, 0x14)),
            fs_seed,
            seed: None,
            img,
        }
    }

    fn block(&self, b: u64) -> &[u8] {
        let s = (b * u64::from(self.bs)) as usize;
        &self.img[s..s + self.bs as usize]
    }
}

impl MapCtx for ImgCtx {
    fn block_size(&self) -> u32 {
        self.bs
    }
    fn blocks_count(&self) -> u64 {
        self.blocks
    }
    fn first_data_block(&self) -> u64 {
        self.first
    }
    fn read_block(&mut self, pblk: u64, buf: &mut [u8]) -> Result<()> {
        buf.copy_from_slice(self.block(pblk));
        Ok(())
    }
    fn write_block(&mut self, _: u64, _: &[u8]) -> Result<()> {
        panic!("read-only test context")
    }
    fn alloc_blocks(&mut self, _: u64, _: u32) -> Result<(u64, u32)> {
        panic!("read-only test context")
    }
    fn free_blocks(&mut self, _: u64, _: u64) -> Result<()> {
        panic!("read-only test context")
    }
    fn csum_seed(&self) -> Option<u32> {
        self.seed
    }
}

/// Per-inode checksum seed: crc32c(crc32c(fs_seed, le32 ino), le32 generation).
fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    crc32c_raw(
        crc32c_raw(fs_seed, &ino.to_le_bytes()),
        &generation.to_le_bytes(),
    )
}

/// The raw inode bytes of `path`, located with `debugfs imap`.
fn inode_bytes(image: &Path, ctx: &ImgCtx, path: &str) -> Vec<u8> {
    let out = debugfs(image, &format!("imap {path}"));
    let loc = out.split("located at block ").nth(1).unwrap();
    let (blk, rest) = loc.split_once(", offset ").unwrap();
    let blk: u64 = blk.trim().parse().unwrap();
    let off = usize::from_str_radix(rest.trim().trim_start_matches("0x"), 16).unwrap();
    let start = (blk * u64::from(ctx.bs)) as usize + off;
    ctx.img[start..start + 256.min(ctx.img.len() - start)].to_vec()
}

struct Ino {
    ino: u32,
    flags: u32,
    i_block: [u8; 60],
    size: u64,
    raw: Vec<u8>,
}

fn load_inode(image: &Path, ctx: &mut ImgCtx, path: &str) -> Ino {
    let raw = inode_bytes(image, ctx, path);
    let stat = debugfs(image, &format!("stat {path}"));
    let ino: u32 = stat.split_whitespace().nth(1).unwrap().parse().unwrap();
    let generation = le32(&raw, 0x64);
    ctx.seed = ctx.fs_seed.map(|s| inode_seed(s, ino, generation));
    Ino {
        ino,
        flags: le32(&raw, 0x20),
        i_block: raw[0x28..0x64].try_into().unwrap(),
        size: u64::from(le32(&raw, 4)) | (u64::from(le32(&raw, 0x6c)) << 32),
        raw,
    }
}

/// Parse the EXTENTS:/BLOCKS: section of `debugfs stat`: data blocks as (lblk, pblk) and the
/// metadata blocks ((IND), (DIND), (TIND), (ETBn)).
fn stat_blocks(stat: &str) -> (Vec<(u64, u64)>, Vec<u64>) {
    let sec = stat
        .split("EXTENTS:")
        .nth(1)
        .or_else(|| stat.split("BLOCKS:").nth(1))
        .unwrap_or("");
    let sec = sec.split("TOTAL:").next().unwrap();
    let mut data = Vec::new();
    let mut meta = Vec::new();
    for item in sec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (l, p) = item.split_once("):").unwrap();
        let l = l.trim_start_matches('(').trim_end_matches("[u]");
        let p = p.trim_start_matches("[uninit]");
        if l.starts_with(|c: char| c.is_ascii_alphabetic()) {
            meta.push(p.parse().unwrap());
            continue;
        }
        let range = |s: &str| -> (u64, u64) {
            match s.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (s.parse().unwrap(), s.parse().unwrap()),
            }
        };
        let (l0, l1) = range(l);
        let (p0, _) = range(p);
        for i in 0..=(l1 - l0) {
            data.push((l0 + i, p0 + i));
        }
    }
    (data, meta)
}

/// Leaf lines of `debugfs ex`: (lblk, pblk, len, uninit).
fn ex_leaves(ex: &str) -> Vec<(u64, u64, u64, bool)> {
    let mut out = Vec::new();
    for line in ex.lines().skip(1) {
        let t: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '/' || c == '-')
            .filter(|s| !s.is_empty())
            .collect();
        if t.len() < 7 || t[0] != t[1] {
            continue; // index line or noise
        }
        let uninit = t.last() == Some(&"Uninit");
        let n: Vec<u64> = t.iter().filter_map(|s| s.parse().ok()).collect();
        // level, max, entry, entries, lstart, lend, pstart, pend, len
        out.push((n[4], n[6], n[n.len() - 1], uninit));
    }
    out
}

/// The file read through our mapping, block by block (holes and uninit as zeros).
fn read_file(ctx: &mut ImgCtx, fm: &mut FileMap<'_>, size: u64) -> Vec<u8> {
    let bs = u64::from(ctx.bs);
    let mut out = Vec::with_capacity(size as usize);
    let mut lblk = 0;
    while lblk * bs < size {
        let m = mapping::map(ctx, fm, lblk).unwrap();
        let n = m.len.min(size.div_ceil(bs) - lblk);
        for i in 0..n {
            match m.pblk {
                Some(p) if !m.uninit => out.extend_from_slice(ctx.block(p + i)),
                _ => out.extend(std::iter::repeat_n(0u8, bs as usize)),
            }
        }
        lblk += n;
    }
    out.truncate(size as usize);
    out
}

fn dump(image: &Path, path: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join("dumped");
    let _ = std::fs::remove_file(&out);
    debugfs(image, &format!("dump {path} {}", out.display()));
    std::fs::read(&out).unwrap()
}

/// Check one file: extent list, metadata blocks and contents against debugfs.
fn check_file(image: &Path, path: &str, dir: &Path) -> (Ino, usize) {
    let mut ctx = ImgCtx::open(image);
    let mut ino = load_inode(image, &mut ctx, path);
    let kind = MapKind::from_flags(ino.flags);
    if kind == MapKind::Inline {
        // Inline files have no blocks: mapping_image_inline_data covers them.
        return (ino, 0);
    }
    let mut ib = ino.i_block;
    let mut fm = FileMap::new(ino.ino, &mut ib, kind);
    let ext = mapping::extents(&mut ctx, &mut fm).unwrap();
    let meta = mapping::metadata_blocks(&mut ctx, &mut fm).unwrap();
    let stat = debugfs(image, &format!("stat {path}"));
    let (want_data, want_meta) = stat_blocks(&stat);
    let got: Vec<(u64, u64)> = expand(&ext).into_iter().map(|(l, p, _)| (l, p)).collect();
    assert_eq!(
        got, want_data,
        "{path}: data blocks differ from debugfs stat"
    );
    let mut m1 = meta.clone();
    let mut m2 = want_meta.clone();
    m1.sort_unstable();
    m2.sort_unstable();
    assert_eq!(m1, m2, "{path}: metadata blocks differ from debugfs stat");
    if kind == MapKind::Extents {
        extent_strict(&mut ctx, &fm);
        let leaves = ex_leaves(&debugfs(image, &format!("ex {path}")));
        let mine: Vec<(u64, u64, u64, bool)> = ext
            .iter()
            .map(|e| (e.lblk, e.pblk, e.len, e.uninit))
            .collect();
        assert_eq!(mine, leaves, "{path}: extents differ from debugfs ex");
    }
    let content = read_file(&mut ctx, &mut fm, ino.size);
    assert!(
        content == dump(image, path, dir),
        "{path}: contents differ from debugfs dump"
    );
    ino.i_block = *fm.i_block;
    (ino, ext.len())
}

fn extent_strict(ctx: &mut ImgCtx, fm: &FileMap<'_>) {
    imgscrub_ext4::extent::verify_strict(ctx, fm).unwrap();
}

fn depth(ib: &[u8; 60]) -> u16 {
    le16(ib, 6)
}

/// Many small files, every other one deleted, then a big file written into the holes by
/// debugfs: a deeply fragmented extent tree.
fn fragmented_image(variant: &str, dir: &Path, files: usize, big: usize) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        std::fs::write(src.join(format!("f{i}")), random_bytes(900, i as u64)).unwrap();
    }
    let image = dir.join("img");
    assert!(make_ext4(variant, &src, &image, 64));
    let cmds = dir.join("cmds");
    let mut s = String::new();
    for i in (0..files).step_by(2) {
        s.push_str(&format!("rm /f{i}\n"));
    }
    let host_big = dir.join("bigsrc");
    std::fs::write(&host_big, random_bytes(big, 99)).unwrap();
    s.push_str(&format!("write {} /big\n", host_big.display()));
    std::fs::write(&cmds, s).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(&image),
    );
    image
}

#[test]
fn mapping_image_fragmented_deep_extent_tree() {
    require_tools!("mke2fs", "debugfs");
    for (variant, files, big, min_depth) in [
        ("b1024", 1200, 1_500_000, 2),
        ("default", 400, 3_000_000, 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let image = fragmented_image(variant, dir.path(), files, big);
        let (ino, n) = check_file(&image, "/big", dir.path());
        assert!(
            depth(&ino.i_block) >= min_depth,
            "{variant}: depth {}",
            depth(&ino.i_block)
        );
        assert!(n > 100, "{variant}: only {n} extents");
        // A few of the small files too.
        check_file(&image, "/f1", dir.path());
        check_file(&image, "/f7", dir.path());
        // Preallocated (uninitialized) extents in fragmented free space, past EOF.
        run_ok(
            Command::new("debugfs")
                .arg("-w")
                .arg("-R")
                .arg("fallocate /f3 5 2500")
                .arg(&image),
        );
        let (_, n) = check_file(&image, "/f3", dir.path());
        let ex = debugfs(&image, "ex /f3");
        assert!(ex.contains("Uninit") && n >= 2, "{ex}");
    }
}

#[test]
fn mapping_image_csum_mismatch_detected() {
    require_tools!("mke2fs", "debugfs");
    let dir = tempfile::tempdir().unwrap();
    let image = fragmented_image("default", dir.path(), 200, 1_000_000);
    let mut ctx = ImgCtx::open(&image);
    let ino = load_inode(&image, &mut ctx, "/big");
    assert!(ctx.seed.is_some());
    let mut ib = ino.i_block;
    let mut fm = FileMap::new(ino.ino, &mut ib, MapKind::Extents);
    let meta = mapping::metadata_blocks(&mut ctx, &mut fm).unwrap();
    assert!(!meta.is_empty());
    // The wrong seed (another inode's) fails the tail checksum.
    ctx.seed = ctx.fs_seed.map(|s| inode_seed(s, ino.ino + 1, 0));
    assert!(matches!(
        mapping::extents(&mut ctx, &mut fm),
        Err(imgscrub_ext4::Ext4Error::Checksum { .. })
    ));
}

#[test]
fn mapping_image_blockmaps_double_and_triple_indirect() {
    require_tools!("mke2fs", "debugfs");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), random_bytes(20_000_000, 1)).unwrap();
    std::fs::write(src.join("small"), random_bytes(5000, 2)).unwrap();
    // Sparse: data in the direct range, the double range and the triple range (1 KiB blocks:
    // triple starts at block 65804).
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(100 << 20).unwrap();
    drop(f);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(src.join("sparse"))
            .unwrap();
        f.write_all_at(b"head", 5000).unwrap();
        f.write_all_at(b"double", 30_000_000).unwrap();
        f.write_all_at(b"triple", 80_000_000).unwrap();
        f.write_all_at(b"tail", (100 << 20) - 4).unwrap();
    }
    // ext2 with 1 KiB blocks (mkext4.sh's ext2 variant uses 4 KiB).
    let image = dir.path().join("e2.img");
    run_ok(
        Command::new("mke2fs")
            .args([
                "-q", "-F", "-t", "ext2", "-b", "1024", "-T", "default", "-d",
            ])
            .arg(&src)
            .arg(&image)
            .arg("64M"),
    );
    let (ino, _) = check_file(&image, "/big", dir.path());
    assert_eq!(MapKind::from_flags(ino.flags), MapKind::BlockMap);
    assert_ne!(le32(&ino.i_block, 13 * 4), 0, "double indirect used");
    check_file(&image, "/small", dir.path());
    let (ino, _) = check_file(&image, "/sparse", dir.path());
    assert_ne!(le32(&ino.i_block, 14 * 4), 0, "triple indirect used");

    // ext3 (4 KiB blocks, journal): a 10 MB file needs the double indirect block.
    for variant in ["ext3", "ext2"] {
        let image = dir.path().join(format!("{variant}.img"));
        assert!(make_ext4(variant, &src, &image, 128));
        let (ino, _) = check_file(&image, "/big", dir.path());
        assert_ne!(le32(&ino.i_block, 13 * 4), 0);
        check_file(&image, "/sparse", dir.path());
    }
}

/// The `system.data` value from the in-inode xattr area (parsed by the dirs engineer's
/// `xattr` module). `raw` holds the first 256 bytes of the inode (inode size 256).
fn ibody_system_data(raw: &[u8], ino: u32) -> Option<Vec<u8>> {
    let extra = usize::from(le16(raw, 0x80));
    let attrs = imgscrub_ext4::xattr::parse_ibody(&raw[0x80 + extra..], ino).unwrap();
    imgscrub_ext4::xattr::get(&attrs, b"system.data").map(|a| a.value.clone())
}

#[test]
fn mapping_image_inline_data() {
    require_tools!("mke2fs", "debugfs");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("tiny"), b"short inline contents\n").unwrap();
    std::fs::write(src.join("mid"), random_bytes(100, 5)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let image = dir.path().join("img");
    assert!(make_ext4("inline", &src, &image, 32));
    for name in ["/tiny", "/mid", "/empty"] {
        let mut ctx = ImgCtx::open(&image);
        let ino = load_inode(&image, &mut ctx, name);
        assert_eq!(MapKind::from_flags(ino.flags), MapKind::Inline, "{name}");
        let value = ibody_system_data(&ino.raw, ino.ino).expect("system.data");
        let data = inline::read(ino.ino, &ino.i_block, &value, ino.size).unwrap();
        // debugfs 1.47 `dump` writes the whole 60-byte i_block of short inline files, so
        // the oracle is the source file mke2fs copied (and dump's first i_size bytes).
        assert_eq!(data, std::fs::read(src.join(&name[1..])).unwrap(), "{name}");
        let dumped = dump(&image, name, dir.path());
        assert_eq!(data[..], dumped[..data.len()], "{name}");
        // split() gives back what is on disk.
        let (ib, v) = inline::split(&data);
        assert_eq!(
            &ib[..data.len().min(60)],
            &ino.i_block[..data.len().min(60)]
        );
        assert_eq!(v, value[..data.len().saturating_sub(60)]);
        // The block-mapping functions refuse inline inodes.
        let mut ib = ino.i_block;
        let mut fm = FileMap::new(ino.ino, &mut ib, MapKind::Inline);
        assert!(mapping::map(&mut ctx, &mut fm, 0).is_err());
    }
}

/// Every mkfs variant: files around block boundaries, a multi-megabyte file and a sparse
/// one; our extent lists / block lists, tree blocks and contents equal debugfs's.
#[test]
fn mapping_image_all_variants() {
    require_tools!("mke2fs", "debugfs");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let sizes = [
        0usize, 1, 1023, 1024, 1025, 4095, 4096, 4097, 123_457, 2_000_000,
    ];
    for (i, n) in sizes.iter().enumerate() {
        std::fs::write(src.join(format!("s{n}")), random_bytes(*n, i as u64 + 10)).unwrap();
    }
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(src.join("sparse")).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 1_000_000).unwrap();
        f.write_all_at(b"end", 5_000_000).unwrap();
    }
    for variant in imgscrub_testkit::ext4_variants() {
        let image = dir.path().join(format!("{variant}.img"));
        assert!(make_ext4(&variant, &src, &image, 16));
        let mut names: Vec<String> = sizes.iter().map(|n| format!("/s{n}")).collect();
        names.push("/sparse".into());
        for name in names {
            check_file(&image, &name, dir.path());
        }
    }
}
