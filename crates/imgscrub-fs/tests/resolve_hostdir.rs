#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Guest-root path resolution over the host-directory backend: symlinks never leave the guest
//! root, `..` stops at the root, loops are detected.

use imgscrub_fs::filesystem::{FileType, NewAttr};
use imgscrub_fs::{Filesystem, FsError, HostDir, resolve, resolve_entry};
use std::os::unix::fs::symlink;

fn guest() -> (tempfile::TempDir, HostDir) {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("root");
    std::fs::create_dir_all(r.join("etc/ssh")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib")).unwrap();
    std::fs::write(r.join("etc/os-release"), b"ID=debian\n").unwrap();
    std::fs::write(r.join("usr/lib/os-release"), b"ID=real\n").unwrap();
    // A file outside the guest root that an absolute or `..` link must never reach.
    std::fs::write(t.path().join("secret"), b"host").unwrap();
    std::fs::create_dir_all(r.join("etc/alt")).unwrap();
    symlink("/usr/lib/os-release", r.join("etc/abs-link")).unwrap();
    symlink("../usr/lib/os-release", r.join("etc/rel-link")).unwrap();
    symlink("../../../../secret", r.join("etc/escape")).unwrap();
    symlink("/../../secret", r.join("etc/escape-abs")).unwrap();
    symlink("loop-b", r.join("etc/loop-a")).unwrap();
    symlink("loop-a", r.join("etc/loop-b")).unwrap();
    symlink("/usr", r.join("usrlink")).unwrap();
    symlink("/", r.join("rootlink")).unwrap();
    let fs = HostDir::open(&r).unwrap();
    (t, fs)
}

fn content(fs: &HostDir, path: &str) -> Vec<u8> {
    let n = resolve(fs, path.as_bytes(), true).unwrap();
    fs.read_all(n).unwrap()
}

#[test]
fn absolute_and_relative_links_stay_in_the_guest() {
    let (_t, fs) = guest();
    assert_eq!(content(&fs, "/etc/abs-link"), b"ID=real\n");
    assert_eq!(content(&fs, "/etc/rel-link"), b"ID=real\n");
    assert_eq!(content(&fs, "/usrlink/lib/os-release"), b"ID=real\n");
    assert_eq!(content(&fs, "/rootlink/etc/os-release"), b"ID=debian\n");
    assert_eq!(content(&fs, "etc/./ssh/../os-release"), b"ID=debian\n");
}

#[test]
fn escapes_resolve_inside_the_root() {
    let (_t, fs) = guest();
    // "../../../../secret" from /etc ends at the guest's /secret, which does not exist.
    assert!(matches!(
        resolve(&fs, b"/etc/escape", true),
        Err(FsError::NotFound(_))
    ));
    assert!(matches!(
        resolve(&fs, b"/etc/escape-abs", true),
        Err(FsError::NotFound(_))
    ));
    assert!(matches!(
        resolve(&fs, b"/../../../secret", true),
        Err(FsError::NotFound(_))
    ));
}

#[test]
fn loops_are_reported() {
    let (_t, fs) = guest();
    assert!(matches!(
        resolve(&fs, b"/etc/loop-a", true),
        Err(FsError::SymlinkLoop(_))
    ));
    // Without following the last link, the link itself is found.
    let n = resolve(&fs, b"/etc/loop-a", false).unwrap();
    assert_eq!(fs.stat(n).unwrap().file_type, FileType::Symlink);
}

#[test]
fn missing_last_component_gives_parent_for_create() {
    let (_t, mut fs) = guest();
    let r = resolve_entry(&fs, b"/usrlink/lib/new-file", true).unwrap();
    assert_eq!(r.node, None);
    assert_eq!(r.name, b"new-file");
    let n = fs.create(r.parent, &r.name, &NewAttr::default()).unwrap();
    fs.write(n, 0, b"x").unwrap();
    assert_eq!(content(&fs, "/usr/lib/new-file"), b"x");
    assert!(matches!(
        resolve_entry(&fs, b"/nope/x", true),
        Err(FsError::NotFound(_))
    ));
    assert!(matches!(
        resolve_entry(&fs, b"/etc/os-release/x", true),
        Err(FsError::NotADirectory(_))
    ));
}

#[test]
fn remove_tree_empties_nested_directories() {
    let (t, mut fs) = guest();
    let r = t.path().join("root/var/lib/cloud/instances/i-1");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(r.join("a"), b"1").unwrap();
    std::fs::write(r.parent().unwrap().join("b"), b"2").unwrap();
    let var = resolve(&fs, b"/var/lib", true).unwrap();
    let n = fs.remove_tree(var, b"cloud").unwrap();
    assert_eq!(n, 5); // a, i-1, b, instances, cloud
    assert!(fs.lookup(var, b"cloud").unwrap().is_none());
}
