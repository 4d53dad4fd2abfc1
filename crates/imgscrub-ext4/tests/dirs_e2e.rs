#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Directory edits end to end through `Ext4Fs` on every mkfs variant: thousands of creates
//! and unlinks in an htree directory (made by `e2fsck -fyD`), a linear directory growing
//! into an htree, renames across directories, rmdir, xattrs in-inode and in a block; then
//! flush, `e2fsck -fn` clean, and `debugfs ls` equal to the model.

use imgscrub_disk::RawFile;
use imgscrub_ext4::{Ext4Fs, NewAttr, OpenOptions, Timestamp};
use imgscrub_testkit as tk;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn attr() -> NewAttr {
    NewAttr {
        perm: 0o644,
        uid: 0,
        gid: 0,
        time: Some(Timestamp::new(1_700_000_000, 0)),
    }
}

fn name(prefix: &str, i: u32) -> Vec<u8> {
    // Varied lengths, some non-ASCII bytes.
    let pad = "x".repeat((i % 50) as usize);
    match i % 4 {
        0 => format!("{prefix}{i}").into_bytes(),
        1 => format!("{prefix}-long-{pad}-{i}.conf").into_bytes(),
        2 => format!("{prefix}\u{e9}t\u{e9}-{i}").into_bytes(),
        _ => format!("{prefix}{pad}{i}").into_bytes(),
    }
}

fn build(variant: &str, dir: &Path) -> Option<PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    std::fs::create_dir_all(src.join("small")).unwrap();
    std::fs::create_dir_all(src.join("gone/sub")).unwrap();
    for i in 0..1500 {
        let n = String::from_utf8(name("f", i)).unwrap();
        std::fs::write(src.join("big").join(n), b"").unwrap();
    }
    for i in 0..5 {
        std::fs::write(src.join("small").join(format!("s{i}")), b"x").unwrap();
    }
    std::fs::write(src.join("gone/sub/file"), b"x").unwrap();
    let img = dir.join(format!("{variant}.img"));
    if !tk::make_ext4(variant, &src, &img, 96) {
        return None;
    }
    let e2fsck = tk::find_tool("e2fsck")?;
    let o = tk::run(Command::new(e2fsck).arg("-fyD").arg(&img));
    assert!(
        o.status.code().unwrap_or(8) <= 1,
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    Some(img)
}

/// `debugfs ls -p` of a directory: name → inode, without "." and "..".
fn ls(image: &Path, path: &str) -> BTreeMap<Vec<u8>, u32> {
    let mut m = BTreeMap::new();
    for line in tk::debugfs(image, &format!("ls -p {path}")).lines() {
        let f: Vec<&str> = line.split('/').collect();
        if f.len() >= 7
            && f[5] != "."
            && f[5] != ".."
            && let Ok(ino @ 1..) = f[1].parse::<u32>()
        {
            m.insert(f[5].as_bytes().to_vec(), ino);
        }
    }
    m
}

fn ours(fs: &Ext4Fs<RawFile>, dir: u32) -> BTreeMap<Vec<u8>, u32> {
    fs.read_dir(dir)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.ino))
        .collect()
}

fn same(variant: &str, what: &str, a: &BTreeMap<Vec<u8>, u32>, b: &BTreeMap<Vec<u8>, u32>) {
    let d1: Vec<_> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .take(5)
        .collect();
    let d2: Vec<_> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(
        d1.is_empty() && d2.is_empty(),
        "{variant}: {what}: {} vs {}: {:?} / {:?}",
        a.len(),
        b.len(),
        d1.iter()
            .map(|x| String::from_utf8_lossy(x.0))
            .collect::<Vec<_>>(),
        d2.iter()
            .map(|x| String::from_utf8_lossy(x.0))
            .collect::<Vec<_>>()
    );
}

/// The independent ext4-view reader (its own htree lookup): `read_dir` equals the model and
/// every name is found by path lookup. Skipped for what ext4-view 1.x cannot read (block
/// maps, 128-byte inodes).
fn view_check(variant: &str, image: &Path, dir: &str, model: &BTreeMap<Vec<u8>, u32>) {
    let data = std::fs::read(image).unwrap();
    let inode_size = u16::from_le_bytes([data[1024 + 0x58], data[1024 + 0x59]]);
    let incompat = u32::from_le_bytes(data[1024 + 0x60..1024 + 0x64].try_into().unwrap());
    if inode_size < 256 || incompat & 0x40 == 0 {
        return;
    }
    let v = match ext4_view::Ext4::load(Box::new(data)) {
        Ok(v) => v,
        Err(ext4_view::Ext4Error::Incompatible(e)) => {
            eprintln!("{variant}: ext4-view cannot read it ({e})");
            return;
        }
        Err(e) => panic!("{variant}: ext4-view: {e}"),
    };
    let mut names = BTreeMap::new();
    for e in v.read_dir(dir).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().as_ref().to_vec();
        if n != b"." && n != b".." {
            names.insert(n, 0u32);
        }
    }
    let want: BTreeMap<Vec<u8>, u32> = model.keys().map(|k| (k.clone(), 0)).collect();
    same(variant, "ext4-view read_dir", &names, &want);
    for n in model.keys() {
        let mut p = dir.as_bytes().to_vec();
        p.push(b'/');
        p.extend_from_slice(n);
        assert!(
            v.symlink_metadata(p.as_slice()).is_ok(),
            "{variant}: ext4-view lookup of {}",
            String::from_utf8_lossy(&p)
        );
    }
}

fn edit(variant: &str, image: &Path) {
    let mut fs = Ext4Fs::open(
        RawFile::open_rw(image).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap();
    let root = fs.root();
    let big = fs.lookup_path(b"/big").unwrap();
    let small = fs.lookup_path(b"/small").unwrap();
    let mut model = ours(&fs, big);
    assert_eq!(model.len(), 1500);

    // Unlink every third, create 2000 more (leaf splits; index node splits on 1 KiB blocks).
    for i in (0..1500).step_by(3) {
        let n = name("f", i);
        fs.unlink(big, &n)
            .unwrap_or_else(|e| panic!("{variant}: unlink: {e}"));
        model.remove(&n);
    }
    for i in 0..2000 {
        let n = name("g", i);
        let ino = fs
            .create(big, &n, &attr())
            .unwrap_or_else(|e| panic!("{variant}: create {i}: {e}"));
        model.insert(n, ino);
    }
    assert!(
        fs.create(big, &name("g", 7), &attr()).is_err(),
        "{variant}: duplicate"
    );
    // Renames across directories and back, and within the htree.
    for i in (1..1500).step_by(50) {
        let n = name("f", i);
        if !model.contains_key(&n) {
            continue;
        }
        fs.rename(big, &n, small, b"moved").unwrap();
        fs.rename(small, b"moved", big, &name("r", i)).unwrap();
        let ino = model.remove(&n).unwrap();
        model.insert(name("r", i), ino);
    }
    // A new directory grows from one linear block into an htree, then loses half.
    let nd = fs.mkdir(root, b"newdir", &attr()).unwrap();
    let mut nmodel = BTreeMap::new();
    for i in 0..700 {
        let n = name("n", i);
        let ino = fs.create(nd, &n, &attr()).unwrap();
        nmodel.insert(n, ino);
    }
    for i in (0..700).step_by(2) {
        let n = name("n", i);
        fs.unlink(nd, &n).unwrap();
        nmodel.remove(&n);
    }
    // A subdirectory moved between directories (its ".." changes), then a tree removed.
    let sub = fs.mkdir(nd, b"subdir", &attr()).unwrap();
    fs.rename(nd, b"subdir", big, b"subdir-moved").unwrap();
    model.insert(b"subdir-moved".to_vec(), sub);
    let r = (|| -> imgscrub_ext4::Result<()> {
        let gone = fs.lookup_path(b"/gone")?;
        let gsub = fs.lookup(gone, b"sub")?.unwrap();
        fs.unlink(gsub, b"file")?;
        fs.rmdir(gone, b"sub")?;
        fs.rmdir(root, b"gone")
    })();
    match r {
        // mke2fs makes these small directories inline; Ext4Fs may refuse them.
        Err(imgscrub_ext4::Ext4Error::Unsupported(e)) if variant == "inline" => {
            eprintln!("{variant}: skipping inline directory edits: {e}");
        }
        r => r.unwrap(),
    }
    // xattrs: in-inode, then one that needs a block, then removal.
    let x = model[&name("g", 1)];
    fs.set_xattr(x, "user.small", b"v").unwrap();
    fs.set_xattr(x, "user.big", &vec![b'b'; 700]).unwrap();
    fs.set_xattr(x, "security.selinux", b"system_u:object_r:etc_t:s0\0")
        .unwrap();
    fs.remove_xattr(x, "user.small").unwrap();
    assert_eq!(fs.get_xattr(x, "user.big").unwrap(), Some(vec![b'b'; 700]));

    same(variant, "read_dir /big", &ours(&fs, big), &model);
    for (n, ino) in model.iter().step_by(13) {
        assert_eq!(fs.lookup(big, n).unwrap(), Some(*ino), "{variant}");
    }
    fs.flush().unwrap();
    drop(fs);
    tk::assert_e2fsck_clean(image);
    same(variant, "debugfs ls /big", &ls(image, "/big"), &model);
    same(
        variant,
        "debugfs ls /newdir",
        &ls(image, "/newdir"),
        &nmodel,
    );
    assert!(tk::debugfs(image, "stat /big/subdir-moved").contains("Type: directory"));
    let ht = tk::debugfs(image, "htree /big");
    if variant == "b1024" {
        // 1 KiB blocks: the index needed a second level.
        assert!(
            ht.contains("Indirect levels: 1"),
            "{variant}: {}",
            &ht[..ht.len().min(300)]
        );
    }
    assert!(
        tk::debugfs(image, "stat /newdir").contains("Flags: 0x"),
        "{variant}"
    );
    view_check(variant, image, "/big", &model);
    view_check(variant, image, "/newdir", &nmodel);
    let ea = tk::debugfs(image, &format!("ea_list <{x}>"));
    assert!(
        ea.contains("user.big (700)") && !ea.contains("user.small"),
        "{ea}"
    );
}

#[test]
fn dirs_e2e_every_variant() {
    tk::require_tools!("mke2fs", "e2fsck", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    for v in tk::ext4_variants() {
        let Some(img) = build(&v, tmp.path()) else {
            return;
        };
        edit(&v, &img);
        std::fs::remove_file(&img).unwrap();
    }
}

/// Random create / unlink / rename sequences in an htree directory, then e2fsck.
fn random_sequence(variant: &str, image: &Path, seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    let mut fs = Ext4Fs::open(
        RawFile::open_rw(image).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap();
    let big = fs.lookup_path(b"/big").unwrap();
    let small = fs.lookup_path(b"/small").unwrap();
    let mut model = ours(&fs, big);
    let mut smodel = ours(&fs, small);
    for step in 0..2500u32 {
        match rnd(10) {
            0..=4 => {
                let n = name("p", rnd(5000) as u32);
                match fs.create(big, &n, &attr()) {
                    Ok(ino) => assert!(model.insert(n, ino).is_none(), "{variant} {step}"),
                    Err(imgscrub_ext4::Ext4Error::Exists(_)) => assert!(model.contains_key(&n)),
                    Err(e) => panic!("{variant} {step}: create: {e}"),
                }
            }
            5..=7 if !model.is_empty() => {
                let k = model
                    .keys()
                    .nth(rnd(model.len() as u64) as usize)
                    .unwrap()
                    .clone();
                fs.unlink(big, &k)
                    .unwrap_or_else(|e| panic!("{variant} {step}: unlink: {e}"));
                model.remove(&k);
            }
            8 if !model.is_empty() => {
                let k = model
                    .keys()
                    .nth(rnd(model.len() as u64) as usize)
                    .unwrap()
                    .clone();
                let to = name("q", rnd(5000) as u32);
                if model.contains_key(&to) {
                    continue;
                }
                fs.rename(big, &k, big, &to)
                    .unwrap_or_else(|e| panic!("{variant}: rename: {e}"));
                let ino = model.remove(&k).unwrap();
                model.insert(to, ino);
            }
            _ if !model.is_empty() => {
                let k = model
                    .keys()
                    .nth(rnd(model.len() as u64) as usize)
                    .unwrap()
                    .clone();
                if smodel.contains_key(&k) {
                    continue;
                }
                fs.rename(big, &k, small, &k).unwrap();
                let ino = model.remove(&k).unwrap();
                smodel.insert(k, ino);
            }
            _ => {}
        }
    }
    same(variant, "read_dir", &ours(&fs, big), &model);
    fs.flush().unwrap();
    drop(fs);
    tk::assert_e2fsck_clean(image);
    same(variant, "ls /big", &ls(image, "/big"), &model);
    same(variant, "ls /small", &ls(image, "/small"), &smodel);
}

#[test]
fn dirs_e2e_random_sequences() {
    tk::require_tools!("mke2fs", "e2fsck", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    for v in ["default", "b1024", "nocsum", "largedir", "ext2"] {
        for seed in 1..3u64 {
            let Some(img) = build(v, tmp.path()) else {
                return;
            };
            random_sequence(v, &img, seed);
            std::fs::remove_file(&img).unwrap();
        }
    }
}

/// A three-level htree (large_dir, 1 KiB blocks, long names as hard links to one file),
/// then e2fsck; without large_dir the same directory stops at two levels with NoSpace.
#[test]
fn dirs_e2e_large_dir_three_levels() {
    tk::require_tools!("mke2fs", "e2fsck", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    for large in [true, false] {
        let img = tmp.path().join(format!("ld{large}.img"));
        std::fs::write(&img, b"").unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let features = if large { "large_dir" } else { "^large_dir" };
        tk::run_ok(
            Command::new(tk::find_tool("mke2fs").unwrap())
                .args([
                    "-q", "-F", "-t", "ext4", "-b", "1024", "-T", "default", "-O", features,
                ])
                .arg(&img)
                .env("E2FSPROGS_FAKE_TIME", "1700000000"),
        );
        let mut fs = Ext4Fs::open(
            RawFile::open_rw(&img).unwrap(),
            OpenOptions { writable: true },
        )
        .unwrap();
        let root = fs.root();
        let d = fs.mkdir(root, b"d", &attr()).unwrap();
        let target = fs.create(root, b"target", &attr()).unwrap();
        let mut n = 0u32;
        let mut full = false;
        while n < 40_000 {
            let mut nm = format!("{n:07}-").into_bytes();
            nm.resize(250, b'l');
            match fs.link(target, d, &nm) {
                Ok(()) => n += 1,
                Err(imgscrub_ext4::Ext4Error::NoSpace(_)) if !large => {
                    full = true;
                    break;
                }
                Err(e) => panic!("large={large} link {n}: {e}"),
            }
            if large && n >= 30_000 {
                break;
            }
        }
        assert!(large || full, "two levels must fill up");
        fs.flush().unwrap();
        drop(fs);
        tk::assert_e2fsck_clean(&img);
        let ht = tk::debugfs(&img, "htree /d");
        let levels = if large {
            "Indirect levels: 2"
        } else {
            "Indirect levels: 1"
        };
        assert!(
            ht.contains(levels),
            "large={large}: {}",
            &ht[..ht.len().min(300)]
        );
    }
}
