#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end: the mapping code driven through core's `Ext4Fs` (write / truncate / unlink)
//! on real images, then `e2fsck -fn` must be clean and debugfs must read what we wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgscrub_disk::RawFile;
use imgscrub_ext4::{Ext4Fs, NewAttr, OpenOptions};
use imgscrub_testkit::{debugfs, make_ext4, random_bytes, require_tools, run_ok};

/// Also fail on e2fsck's optimisation hints ("extent tree could be shorter / narrower": not
/// errors, exit code 0): `Ext4Fs` repacks trees with `mapping::optimize` after its edits.
const STRICT_HINTS: bool = true;

/// `e2fsck -fn` is clean (exit code 0) and, with `STRICT_HINTS`, does not even suggest
/// optimising an extent tree.
fn assert_e2fsck_clean(image: &Path) {
    imgscrub_testkit::assert_e2fsck_clean(image);
    let o = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    if text.contains("could be") {
        if STRICT_HINTS || std::env::var_os("IMGSCRUB_E2FSCK_HINTS_FATAL").is_some() {
            panic!("{text}");
        }
        eprintln!("e2fsck hint (not an error):\n{text}");
    }
}

fn open_rw(path: &Path) -> Ext4Fs<RawFile> {
    Ext4Fs::open(
        RawFile::open_rw(path).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap()
}

fn dump(image: &Path, path: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join("dumped");
    let _ = std::fs::remove_file(&out);
    debugfs(image, &format!("dump {path} {}", out.display()));
    std::fs::read(&out).unwrap()
}

/// Depth of the extent tree of `path` as debugfs reports it (first line of `ex`).
fn ex_depth(image: &Path, path: &str) -> u32 {
    let ex = debugfs(image, &format!("ex {path}"));
    ex.lines()
        .nth(1)
        .and_then(|l| l.split('/').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .map_or(0, |s| s.parse().unwrap())
}

/// Many small files, every other one deleted, then a big file written by debugfs into the
/// holes: a fragmented file with a deep extent tree.
fn fragmented_image(variant: &str, dir: &Path, files: usize, big: &[u8]) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        std::fs::write(src.join(format!("f{i}")), random_bytes(900, i as u64)).unwrap();
    }
    let image = dir.join("img");
    assert!(make_ext4(variant, &src, &image, 64));
    let mut s = String::new();
    for i in (0..files).step_by(2) {
        s.push_str(&format!("rm /f{i}\n"));
    }
    let host_big = dir.join("bigsrc");
    std::fs::write(&host_big, big).unwrap();
    s.push_str(&format!("write {} /big\n", host_big.display()));
    let cmds = dir.join("cmds");
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

/// Truncating a deep fragmented tree in steps, rewriting parts of it, then unlinking it.
#[test]
fn mapping_e2e_truncate_and_rewrite_deep_tree() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    for variant in ["b1024", "default"] {
        let dir = tempfile::tempdir().unwrap();
        let mut want = random_bytes(1_500_000, 7);
        let image = fragmented_image(variant, dir.path(), 1200, &want);
        assert!(ex_depth(&image, "/big") >= 1, "{variant}");
        assert_e2fsck_clean(&image);
        let bs = if variant == "b1024" { 1024 } else { 4096 };
        for (step, new_len) in [1_200_003usize, 700_000, 123_457].into_iter().enumerate() {
            let mut fs = open_rw(&image);
            let ino = fs.lookup_path(b"/big").unwrap();
            fs.truncate(ino, new_len as u64).unwrap();
            want.truncate(new_len);
            // Overwrite a range in the middle and append past the end (new blocks).
            let patch = random_bytes(3 * bs + 17, 100 + step as u64);
            let off = new_len / 3;
            fs.write(ino, off as u64, &patch).unwrap();
            want[off..off + patch.len()].copy_from_slice(&patch);
            let tail = random_bytes(5 * bs + 5, 200 + step as u64);
            fs.write(ino, want.len() as u64, &tail).unwrap();
            want.extend_from_slice(&tail);
            assert_eq!(fs.read_to_vec(ino).unwrap(), want);
            fs.flush().unwrap();
            drop(fs);
            assert_e2fsck_clean(&image);
            assert!(
                dump(&image, "/big", dir.path()) == want,
                "{variant} step {step}"
            );
        }
        let mut fs = open_rw(&image);
        let root = fs.root();
        fs.unlink(root, b"big").unwrap();
        fs.flush().unwrap();
        drop(fs);
        assert_e2fsck_clean(&image);
    }
}

/// A sparse file written one block at a time (every other block, then the gaps): the tree
/// grows to depth ≥ 2 through our inserts and splits, then merges back as gaps are filled.
#[test]
fn mapping_e2e_sparse_writes_grow_tree() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let image = dir.path().join("img");
    assert!(make_ext4("b1024", &src, &image, 32));
    let bs = 1024usize;
    let n = 800usize;
    let mut want = vec![0u8; 2 * n * bs];
    let mut fs = open_rw(&image);
    let root = fs.root();
    let ino = fs.create(root, b"sparse", &NewAttr::default()).unwrap();
    for i in 0..n {
        let data = random_bytes(bs, i as u64);
        let off = 2 * i * bs;
        fs.write(ino, off as u64, &data).unwrap();
        want[off..off + bs].copy_from_slice(&data);
    }
    fs.flush().unwrap();
    drop(fs);
    assert_e2fsck_clean(&image);
    assert!(ex_depth(&image, "/sparse") >= 2);
    want.truncate((2 * n - 1) * bs);
    assert!(dump(&image, "/sparse", dir.path()) == want);

    let mut fs = open_rw(&image);
    for i in 0..n - 1 {
        let data = random_bytes(bs, 10_000 + i as u64);
        let off = (2 * i + 1) * bs;
        fs.write(ino, off as u64, &data).unwrap();
        want[off..off + bs].copy_from_slice(&data);
    }
    fs.flush().unwrap();
    drop(fs);
    assert_e2fsck_clean(&image);
    assert!(dump(&image, "/sparse", dir.path()) == want);

    let mut fs = open_rw(&image);
    fs.truncate(ino, 10 * bs as u64 + 1).unwrap();
    want.truncate(10 * bs + 1);
    fs.flush().unwrap();
    drop(fs);
    assert_e2fsck_clean(&image);
    assert!(dump(&image, "/sparse", dir.path()) == want);
    assert!(ex_depth(&image, "/sparse") <= 1);
}

/// ext2 / ext3 block maps: grow a file into the double-indirect range, shrink it back into
/// the single-indirect and direct ranges, write holes, unlink.
#[test]
fn mapping_e2e_blockmaps() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    for variant in ["ext2", "ext3"] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("keep"), random_bytes(50_000, 3)).unwrap();
        let image = dir.path().join("img");
        assert!(make_ext4(variant, &src, &image, 64));
        let mut fs = open_rw(&image);
        let root = fs.root();
        let ino = fs.create(root, b"big", &NewAttr::default()).unwrap();
        // 4 KiB blocks: 12 direct + 1024 single-indirect = 4.2 MB; 6 MB reaches double.
        let mut want = random_bytes(6_000_000, 11);
        fs.write(ino, 0, &want).unwrap();
        // A sparse write far out (a hole in between).
        let far = random_bytes(10_000, 12);
        fs.write(ino, 9_000_000, &far).unwrap();
        want.resize(9_000_000, 0);
        want.extend_from_slice(&far);
        fs.flush().unwrap();
        drop(fs);
        assert_e2fsck_clean(&image);
        assert!(dump(&image, "/big", dir.path()) == want, "{variant}");
        assert!(debugfs(&image, "stat /big").contains("(DIND)"));

        for new_len in [5_000_000usize, 4_000_000, 30_000, 0] {
            let mut fs = open_rw(&image);
            fs.truncate(ino, new_len as u64).unwrap();
            want.truncate(new_len);
            fs.flush().unwrap();
            drop(fs);
            assert_e2fsck_clean(&image);
            assert!(
                dump(&image, "/big", dir.path()) == want,
                "{variant} {new_len}"
            );
        }
        let mut fs = open_rw(&image);
        fs.write(ino, 70_000, b"after the hole").unwrap();
        fs.unlink(root, b"keep").unwrap();
        fs.flush().unwrap();
        drop(fs);
        assert_e2fsck_clean(&image);
    }
}

/// Every mkfs variant: sparse writes, gap fills, a far write past a hole, truncates; the
/// inline variant also grows an inline file past what fits inline (conversion to extents).
#[test]
fn mapping_e2e_all_variants() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    for variant in imgscrub_testkit::ext4_variants() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("tiny"), b"inline when the variant allows it\n").unwrap();
        std::fs::write(src.join("other"), random_bytes(70_000, 1)).unwrap();
        let image = dir.path().join("img");
        assert!(make_ext4(&variant, &src, &image, 32));
        let bs = match variant.as_str() {
            "b1024" => 1024,
            "b2048" => 2048,
            _ => 4096,
        };
        let inline_before = debugfs(&image, "stat /tiny").contains("Flags: 0x10000000");
        assert_eq!(inline_before, variant == "inline", "{variant}");
        let mut fs = open_rw(&image);
        let root = fs.root();
        let ino = fs.create(root, b"f", &NewAttr::default()).unwrap();
        let mut want = vec![0u8; 0];
        let put = |fs: &mut Ext4Fs<RawFile>, want: &mut Vec<u8>, off: usize, data: &[u8]| {
            fs.write(ino, off as u64, data).unwrap();
            if want.len() < off + data.len() {
                want.resize(off + data.len(), 0);
            }
            want[off..off + data.len()].copy_from_slice(data);
        };
        for i in 0..120 {
            put(
                &mut fs,
                &mut want,
                3 * i * bs + 7,
                &random_bytes(bs / 2, i as u64),
            );
        }
        for i in (0..120).step_by(4) {
            put(
                &mut fs,
                &mut want,
                (3 * i + 1) * bs,
                &random_bytes(2 * bs, 500 + i as u64),
            );
        }
        put(&mut fs, &mut want, 5_000 * bs + 3, b"far away");
        fs.truncate(ino, (200 * bs + 5) as u64).unwrap();
        want.truncate(200 * bs + 5);
        // Grow the (maybe inline) small file well past 60 bytes + the in-inode xattr space.
        let tiny = fs.lookup_path(b"/tiny").unwrap();
        let mut tiny_want = b"inline when the variant allows it\n".to_vec();
        let more = random_bytes(3 * bs + 11, 77);
        fs.write(tiny, tiny_want.len() as u64, &more).unwrap();
        tiny_want.extend_from_slice(&more);
        fs.unlink(root, b"other").unwrap();
        fs.flush().unwrap();
        drop(fs);
        assert_e2fsck_clean(&image);
        assert!(dump(&image, "/f", dir.path()) == want, "{variant}");
        assert!(dump(&image, "/tiny", dir.path()) == tiny_want, "{variant}");
        if inline_before {
            let st = debugfs(&image, "stat /tiny");
            assert!(st.contains("Flags: 0x80000"), "converted to extents: {st}");
        }
    }
}

/// ext2 with 1 KiB blocks: writes deep into the triple-indirect range (sparse), then
/// truncates that punch the triple, double and single indirect trees away again.
#[test]
fn mapping_e2e_triple_indirect_1k() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let image = dir.path().join("img");
    run_ok(
        Command::new("mke2fs")
            .args([
                "-q", "-F", "-t", "ext2", "-b", "1024", "-T", "default", "-d",
            ])
            .arg(&src)
            .arg(&image)
            .arg("32M"),
    );
    let mut fs = open_rw(&image);
    let root = fs.root();
    let ino = fs.create(root, b"sparse", &NewAttr::default()).unwrap();
    let mut want = Vec::new();
    // Direct, single (12..268), double (268..65804) and triple (65804.., i.e. from byte
    // 67_383_296) ranges.
    for (off, seed) in [
        (5_000u64, 1u64),
        (200_000, 2),
        (30_000_000, 3),
        (68_000_000, 4),
        (69_500_000, 5),
    ] {
        let data = random_bytes(3000, seed);
        fs.write(ino, off, &data).unwrap();
        want.resize(off as usize, 0);
        want.extend_from_slice(&data);
    }
    fs.flush().unwrap();
    drop(fs);
    assert_e2fsck_clean(&image);
    let st = debugfs(&image, "stat /sparse");
    assert!(st.contains("(TIND)"), "{st}");
    let dumped = dump(&image, "/sparse", dir.path());
    assert!(dumped == want);
    for new_len in [68_001_000u64, 40_000_000, 100_000, 0] {
        let mut fs = open_rw(&image);
        fs.truncate(ino, new_len).unwrap();
        fs.flush().unwrap();
        drop(fs);
        want.truncate(new_len as usize);
        assert_e2fsck_clean(&image);
        assert!(dump(&image, "/sparse", dir.path()) == want, "{new_len}");
    }
    assert!(!debugfs(&image, "stat /sparse").contains("IND)"));
}

/// Fast (in-inode) and slow (one data block) symlinks next to our block edits.
#[test]
fn mapping_e2e_symlinks() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    for variant in ["default", "ext2", "inline"] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let image = dir.path().join("img");
        assert!(make_ext4(variant, &src, &image, 32));
        let long: Vec<u8> = (0..300).map(|i| b'a' + (i % 26) as u8).collect();
        let mut fs = open_rw(&image);
        let root = fs.root();
        fs.symlink(root, b"fast", b"/etc/short", &NewAttr::default())
            .unwrap();
        let slow = fs
            .symlink(root, b"slow", &long, &NewAttr::default())
            .unwrap();
        assert_eq!(fs.readlink(slow).unwrap(), long);
        fs.flush().unwrap();
        drop(fs);
        assert_e2fsck_clean(&image);
        let st = debugfs(&image, "stat /fast");
        assert!(
            st.contains("Fast link dest: \"/etc/short\""),
            "{variant}: {st}"
        );
        let mut fs = open_rw(&image);
        let root = fs.root();
        fs.unlink(root, b"slow").unwrap();
        fs.flush().unwrap();
        drop(fs);
        assert_e2fsck_clean(&image);
    }
}

/// Preallocated (uninitialized) extents made by debugfs `fallocate`: writing into the middle
/// converts part of an extent (split in three), reads of the rest stay zeros, truncating
/// cuts through initialized and uninitialized extents alike.
#[test]
fn mapping_e2e_uninit_extents() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    for variant in ["default", "b1024"] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let head = random_bytes(20_000, 1);
        std::fs::write(src.join("f"), &head).unwrap();
        let image = dir.path().join("img");
        assert!(make_ext4(variant, &src, &image, 32));
        let bs: usize = if variant == "b1024" { 1024 } else { 4096 };
        let first_free_lblk = 20_000usize.div_ceil(bs);
        run_ok(
            Command::new("debugfs")
                .arg("-w")
                .arg("-R")
                .arg(format!("fallocate /f {first_free_lblk} 400"))
                .arg(&image),
        );
        assert!(debugfs(&image, "ex /f").contains("Uninit"));
        let mut want = head.clone();
        let mut fs = open_rw(&image);
        let ino = fs.lookup_path(b"/f").unwrap();
        let off = 100 * bs + 123;
        let data = random_bytes(10 * bs, 2);
        fs.write(ino, off as u64, &data).unwrap();
        want.resize(off, 0);
        want.extend_from_slice(&data);
        assert!(fs.read_to_vec(ino).unwrap() == want);
        fs.flush().unwrap();
        drop(fs);
        assert_e2fsck_clean(&image);
        assert!(dump(&image, "/f", dir.path()) == want, "{variant}");
        let ex = debugfs(&image, "ex /f");
        assert_eq!(ex.matches("Uninit").count(), 2, "{ex}");

        for new_len in [105 * bs + 7, 50 * bs + 1, 3] {
            let mut fs = open_rw(&image);
            fs.truncate(ino, new_len as u64).unwrap();
            fs.flush().unwrap();
            drop(fs);
            want.truncate(new_len);
            assert_e2fsck_clean(&image);
            assert!(
                dump(&image, "/f", dir.path()) == want,
                "{variant} {new_len}"
            );
        }
        assert!(!debugfs(&image, "ex /f").contains("Uninit"));
    }
}
