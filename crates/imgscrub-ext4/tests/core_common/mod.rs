//! Shared helpers of the core_* integration tests: source trees, images, walking.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use imgscrub_disk::RawFile;
use imgscrub_ext4::{Ext4Fs, FileType, OpenOptions};

/// A small but varied source tree: empty/one-byte/multi-block/sparse-ish files, nested
/// directories, fast and slow symlinks, a hard link, odd permissions.
pub fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/ssh")).unwrap();
    fs::create_dir_all(root.join("var/log/deep/deeper")).unwrap();
    fs::create_dir_all(root.join("emptydir")).unwrap();
    fs::write(root.join("etc/hostname"), b"testhost\n").unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::write(root.join("etc/ssh/ssh_host_rsa_key"), pattern(3000, 1)).unwrap();
    fs::write(root.join("var/log/big.log"), pattern(200_000, 7)).unwrap();
    fs::write(root.join("var/log/deep/deeper/x"), pattern(4096, 3)).unwrap();
    fs::write(root.join("one"), b"1").unwrap();
    symlink("/etc/hostname", root.join("fastlink")).unwrap();
    let long: String = std::iter::repeat_n("long-component/", 10).collect();
    symlink(&long, root.join("slowlink")).unwrap();
    fs::hard_link(root.join("one"), root.join("one-again")).unwrap();
    fs::set_permissions(
        root.join("etc/ssh/ssh_host_rsa_key"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    for i in 0..40 {
        fs::write(root.join(format!("var/log/f{i:03}")), format!("file {i}\n")).unwrap();
    }
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed)) as u8
        })
        .collect()
}

/// Build `variant` from `src` into `dir/<variant>.img`; None when mke2fs is missing.
pub fn image(variant: &str, src: &Path, dir: &Path, size_mb: u32) -> Option<PathBuf> {
    let out = dir.join(format!("{variant}.img"));
    imgscrub_testkit::make_ext4(variant, src, &out, size_mb).then_some(out)
}

pub fn open_ro(path: &Path) -> Ext4Fs<RawFile> {
    Ext4Fs::open(
        RawFile::open(path).unwrap(),
        OpenOptions { writable: false },
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

pub fn open_rw(path: &Path) -> Ext4Fs<RawFile> {
    Ext4Fs::open(
        RawFile::open_rw(path).unwrap(),
        OpenOptions { writable: true },
    )
    .unwrap_or_else(|e| panic!("open rw {}: {e}", path.display()))
}

/// What a tree holds, keyed by path: ("d") directory, ("f", contents), ("l", target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Link(Vec<u8>),
    Other(FileType),
}

/// Walk a host directory.
pub fn host_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, Node>) {
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = format!("/{}", path.strip_prefix(root).unwrap().display());
            let md = fs::symlink_metadata(&path).unwrap();
            if md.is_dir() {
                out.insert(rel, Node::Dir);
                walk(root, &path, out);
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&path).unwrap();
                out.insert(rel, Node::Link(t.into_os_string().into_encoded_bytes()));
            } else {
                out.insert(rel, Node::File(fs::read(&path).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Walk the filesystem with our reader.
pub fn our_tree<D: imgscrub_disk::BlockDev>(fs: &Ext4Fs<D>) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(fs.root(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for e in fs.read_dir(dir).unwrap() {
            let name = String::from_utf8(e.name.clone()).unwrap();
            if prefix.is_empty() && name == "lost+found" {
                continue;
            }
            let path = format!("{prefix}/{name}");
            let st = fs.stat(e.ino).unwrap();
            assert_eq!(st.file_type, e.file_type, "{path}: dirent type vs inode");
            let node = match e.file_type {
                FileType::Directory => {
                    stack.push((e.ino, path.clone()));
                    Node::Dir
                }
                FileType::Regular => {
                    let data = fs.read_to_vec(e.ino).unwrap();
                    assert_eq!(data.len() as u64, st.size, "{path}");
                    Node::File(data)
                }
                FileType::Symlink => Node::Link(fs.readlink(e.ino).unwrap()),
                other => Node::Other(other),
            };
            out.insert(path, node);
        }
    }
    out
}

/// Walk the filesystem image with the independent `ext4-view` reader.
pub fn view_tree(image: &Path) -> BTreeMap<String, Node> {
    let data = fs::read(image).unwrap();
    let v = ext4_view::Ext4::load(Box::new(data)).unwrap();
    let mut out = BTreeMap::new();
    let mut stack = vec![ext4_view::PathBuf::new("/")];
    while let Some(dir) = stack.pop() {
        for e in v.read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().as_str().unwrap().to_string();
            if name == "." || name == ".." || (dir.to_str().unwrap() == "/" && name == "lost+found")
            {
                continue;
            }
            let path = e.path();
            let key = path.to_str().unwrap().to_string();
            let md = v.symlink_metadata(&path).unwrap();
            let node = if md.is_dir() {
                stack.push(path.clone());
                Node::Dir
            } else if md.is_symlink() {
                Node::Link(v.read_link(&path).unwrap().as_ref().to_vec())
            } else if md.file_type().is_regular_file() {
                Node::File(v.read(&path).unwrap())
            } else {
                continue;
            };
            out.insert(key, node);
        }
    }
    out
}

/// Build an image with explicit mke2fs options (for layouts the variant matrix lacks), with
/// the same fixed UUID/hash seed/time as fixtures/mkext4.sh. None when mke2fs is missing.
pub fn image_with(opts: &[&str], src: &Path, out: &Path, size_mb: u32) -> Option<PathBuf> {
    let mke2fs = imgscrub_testkit::require_tool("mke2fs")?;
    let f = std::fs::File::create(out).unwrap();
    f.set_len(u64::from(size_mb) << 20).unwrap();
    drop(f);
    let mut cmd = std::process::Command::new(mke2fs);
    cmd.env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args([
            "-q",
            "-F",
            "-T",
            "default",
            "-U",
            "5c3a2b1e-0d0f-4c1a-9e7b-6a5d4c3b2a10",
        ])
        .args([
            "-E",
            "hash_seed=0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9,root_owner=0:0",
        ])
        .arg("-d")
        .arg(src)
        .args(opts)
        .arg(out);
    imgscrub_testkit::run_ok(&mut cmd);
    Some(out.to_path_buf())
}

/// `e2fsck -fn` must exit 0 *and* print nothing but its pass headers and the summary (no
/// "could be narrower", no "Optimize?", no warnings).
pub fn strict_fsck(img: &Path, what: &str) {
    let Some(e2fsck) = imgscrub_testkit::require_tool("e2fsck") else {
        return;
    };
    let o = std::process::Command::new(e2fsck)
        .arg("-fn")
        .arg(img)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let noise: Vec<&str> = out
        .lines()
        .filter(|l| {
            !(l.starts_with("Pass ")
                || l.starts_with("e2fsck ")
                || l.contains(" files (")
                || l.is_empty())
        })
        .collect();
    if !o.status.success() || !noise.is_empty() {
        panic!(
            "{what}: e2fsck -fn {} not clean:\n{out}{err}",
            img.display()
        );
    }
}
