#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The write side end to end on the mkfs.xfs matrix: a fixed script of every kind of edit
//! (files small and large with holes, directories through every form, symlinks local and
//! remote, renames, removals of fixture files and trees, attributes), flushed, then judged by
//! the real tools — `xfs_repair -n` silent, `xfs_db` reading back every name, mode, size,
//! content and target — and by reopening with our reader.

use imgscrub_disk::RawFile;
use imgscrub_testkit as tk;
use imgscrub_xfs::{FileType, NewAttr, OpenOptions, SetAttr, XfsError, XfsFs};
use std::path::Path;

fn walk(fs: &XfsFs<RawFile>, path: &str) -> Option<u64> {
    let mut ino = fs.root();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = fs.lookup(ino, c.as_bytes()).unwrap()?;
    }
    Some(ino)
}

fn attr(perm: u16) -> NewAttr {
    NewAttr {
        perm,
        uid: 1000,
        gid: 100,
        time: Some(imgscrub_xfs::Timestamp::new(1_700_000_000, 5)),
    }
}

/// Deterministic pseudo-random bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Expect {
    files: Vec<(String, Vec<u8>, u32)>,
    links: Vec<(String, Vec<u8>)>,
    dirs: Vec<(String, usize)>,
    gone: Vec<String>,
}

fn edit(image: &Path, variant: &str) -> Expect {
    let mut fs = XfsFs::open(
        RawFile::open_rw(image).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap_or_else(|e| panic!("{variant}: writable open: {e}"));
    let root = fs.root();
    let mut exp = Expect {
        files: Vec::new(),
        links: Vec::new(),
        dirs: Vec::new(),
        gone: Vec::new(),
    };
    let new = fs.mkdir(root, b"new", &attr(0o755)).unwrap();
    // A small file, a file with holes and many extents, an empty file.
    let small = fs.create(new, b"small", &attr(0o640)).unwrap();
    fs.write(small, 0, b"hello xfs\n").unwrap();
    exp.files
        .push(("/new/small".into(), b"hello xfs\n".to_vec(), 0o100640));
    let big = fs.create(new, b"holes", &attr(0o600)).unwrap();
    let mut want = Vec::new();
    for i in 0..40u64 {
        let data = pattern(3000 + i as usize * 17, i);
        let off = i * 20_000 + 123;
        fs.write(big, off, &data).unwrap();
        if want.len() < (off as usize) {
            want.resize(off as usize, 0);
        }
        want.truncate(off as usize);
        want.extend_from_slice(&data);
    }
    fs.truncate(big, 700_001).unwrap();
    want.resize(700_001, 0);
    exp.files.push(("/new/holes".into(), want, 0o100600));
    fs.create(new, b"empty", &attr(0o644)).unwrap();
    exp.files.push(("/new/empty".into(), Vec::new(), 0o100644));
    // Symlinks, short and long.
    fs.symlink(new, b"short", b"small", &attr(0o777)).unwrap();
    exp.links.push(("/new/short".into(), b"small".to_vec()));
    let long: Vec<u8> = (0..900).map(|i| b'a' + (i % 26) as u8).collect();
    fs.symlink(new, b"long", &long, &attr(0o777)).unwrap();
    exp.links.push(("/new/long".into(), long));
    // A directory through block, leaf and node forms.
    let many = fs.mkdir(new, b"many", &attr(0o755)).unwrap();
    for i in 0..2000 {
        let name = format!("entry-with-a-longish-name-{i:05}");
        let f = fs.create(many, name.as_bytes(), &attr(0o644)).unwrap();
        if i % 500 == 0 {
            fs.write(f, 0, name.as_bytes()).unwrap();
            exp.files
                .push((format!("/new/many/{name}"), name.into_bytes(), 0o100644));
        }
    }
    // ... and some of it removed again.
    for i in (0..2000).filter(|i| i % 3 == 1 && i % 500 != 0) {
        let name = format!("entry-with-a-longish-name-{i:05}");
        fs.unlink(many, name.as_bytes()).unwrap();
        exp.gone.push(format!("/new/many/{name}"));
    }
    exp.dirs.push(("/new/many".into(), 2000 - 666));
    // Renames: within a directory, across directories, a directory moved.
    fs.rename(new, b"small", new, b"small2").unwrap();
    exp.files[0].0 = "/new/small2".into();
    exp.gone.push("/new/small".into());
    let sub = fs.mkdir(root, b"sub", &attr(0o700)).unwrap();
    fs.rename(new, b"empty", sub, b"moved").unwrap();
    exp.files[2].0 = "/sub/moved".into();
    fs.rename(root, b"sub", new, b"sub").unwrap();
    exp.files[2].0 = "/new/sub/moved".into();
    exp.dirs.push(("/new/sub".into(), 1));
    // Attributes and modes.
    fs.set_xattr(big, "security.selinux", b"system_u:object_r:etc_t:s0\0")
        .unwrap();
    fs.set_xattr(big, "user.big", &pattern(5000, 7)).unwrap();
    fs.set_attr(
        big,
        &SetAttr {
            perm: Some(0o4711),
            ..Default::default()
        },
    )
    .unwrap();
    exp.files[1].2 = 0o104711;
    // Remove every top-level entry of the fixture except what we made.
    for e in fs.read_dir(root).unwrap() {
        if e.name == b"new" || e.name == b"lost+found" {
            continue;
        }
        let name = String::from_utf8_lossy(&e.name).into_owned();
        remove_tree(&mut fs, root, &e.name, e.file_type);
        exp.gone.push(format!("/{name}"));
    }
    fs.flush()
        .unwrap_or_else(|e| panic!("{variant}: flush: {e}"));
    exp
}

fn remove_tree(fs: &mut XfsFs<RawFile>, dir: u64, name: &[u8], t: FileType) {
    if t != FileType::Directory {
        fs.unlink(dir, name).unwrap();
        return;
    }
    let d = fs.lookup(dir, name).unwrap().unwrap();
    for e in fs.read_dir(d).unwrap() {
        remove_tree(fs, d, &e.name, e.file_type);
    }
    fs.rmdir(dir, name).unwrap();
}

fn check(image: &Path, variant: &str, exp: &Expect) {
    if let Err(out) = tk::xfs_repair_check(image) {
        panic!("{variant}: xfs_repair -n after the edits: {out}");
    }
    for (path, data, mode) in &exp.files {
        let st = tk::xfs_stat(image, path).unwrap_or_else(|| panic!("{variant}: {path} missing"));
        assert_eq!(st.mode, *mode, "{variant}: mode of {path}");
        assert_eq!(st.size, data.len() as u64, "{variant}: size of {path}");
        let got = tk::xfs_cat(image, path).unwrap();
        if got != *data {
            let first = got.iter().zip(data.iter()).position(|(a, b)| a != b);
            panic!(
                "{variant}: content of {path} differs: {} vs {} bytes, first difference at {first:?}",
                got.len(),
                data.len(),
            );
        }
    }
    for (path, target) in &exp.links {
        assert_eq!(
            tk::xfs_readlink(image, path).as_deref(),
            Some(target.as_slice()),
            "{variant}: target of {path}"
        );
    }
    for (path, n) in &exp.dirs {
        let ls = tk::xfs_ls(image, path);
        assert_eq!(ls.len(), n + 2, "{variant}: entries of {path}");
    }
    for path in &exp.gone {
        assert!(
            tk::xfs_stat(image, path).is_none(),
            "{variant}: {path} still there"
        );
    }
    // Our reader agrees.
    let fs = XfsFs::open(RawFile::open(image).unwrap(), OpenOptions::default()).unwrap();
    for (path, data, _) in &exp.files {
        let ino = walk(&fs, path).unwrap();
        let mut buf = vec![0u8; data.len() + 10];
        let mut got = Vec::new();
        loop {
            let n = fs.read(ino, got.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == *data, "{variant}: our read of {path}");
    }
    let big = walk(&fs, "/new/holes").unwrap();
    let x = fs.list_xattrs(big).unwrap();
    assert!(
        x.iter().any(|(n, v)| n == "user.big" && v.len() == 5000),
        "{variant}: xattrs {x:?}"
    );
}

fn run(variant: &str) {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs(variant, dir.path()) else {
        return;
    };
    let exp = edit(&fx.image, variant);
    check(&fx.image, variant, &exp);
}

#[test]
fn edits_v5() {
    run("v5");
}

#[test]
fn edits_centos7() {
    run("centos7");
}

#[test]
fn edits_el9() {
    run("el9");
}

#[test]
fn edits_small_blocks() {
    run("b1k");
}

#[test]
fn edits_big_dir_blocks() {
    run("n8k");
}

#[test]
fn edits_sparse_inodes() {
    run("sparse");
}

#[test]
fn edits_one_ag() {
    run("ag1");
}

#[test]
fn v4_is_refused_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs("v4", dir.path()) else {
        return;
    };
    let before = std::fs::read(&fx.image).unwrap();
    let r = XfsFs::open(
        RawFile::open_rw(&fx.image).unwrap(),
        OpenOptions { writable: true },
    );
    assert!(matches!(r, Err(XfsError::ReadOnly(_))));
    assert!(std::fs::read(&fx.image).unwrap() == before);
}

#[test]
fn edits_rest_of_the_matrix() {
    // Every other v5 variant of fixtures/mkxfs.sh.
    for v in [
        "rmapbt", "b2k", "n64k", "i1k", "i2k", "s4k", "ag8", "stripe", "ci", "nrext64",
    ] {
        run(v);
    }
}

/// On an ascii-ci filesystem names match without regard to ASCII case, as the kernel looks
/// them up: a name differing only in case is the same entry.
#[test]
fn ascii_ci_names_are_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fx) = tk::make_xfs("ci", dir.path()) else {
        return;
    };
    {
        let mut fs = XfsFs::open(
            RawFile::open_rw(&fx.image).unwrap(),
            OpenOptions { writable: true },
        )
        .unwrap();
        let root = fs.root();
        let d = fs.mkdir(root, b"CaseDir", &attr(0o755)).unwrap();
        let f = fs.create(d, b"Readme", &attr(0o644)).unwrap();
        assert!(matches!(
            fs.create(d, b"README", &attr(0o644)),
            Err(XfsError::Exists(_))
        ));
        assert_eq!(fs.lookup(d, b"readme").unwrap(), Some(f));
        fs.create(d, b"other", &attr(0o644)).unwrap();
        fs.unlink(d, b"OTHER").unwrap();
        fs.flush().unwrap();
    }
    tk::assert_xfs_repair_clean(&fx.image);
    let ls = tk::xfs_ls(&fx.image, "/CaseDir");
    let names: Vec<&[u8]> = ls.iter().map(|e| e.name.as_slice()).collect();
    assert_eq!(names, vec![&b"."[..], b"..", b"Readme"]);
    // Read back from disk (no in-memory state): lookups ignore ASCII case there too.
    let fs = XfsFs::open(RawFile::open(&fx.image).unwrap(), OpenOptions::default()).unwrap();
    let root = fs.root();
    let d = fs
        .lookup(root, b"casedir")
        .unwrap()
        .expect("CaseDir by another case");
    let f = fs
        .lookup(d, b"README")
        .unwrap()
        .expect("Readme by another case");
    assert_eq!(fs.lookup(d, b"readme").unwrap(), Some(f));
    assert_eq!(fs.lookup(d, b"Other").unwrap(), None);
}
