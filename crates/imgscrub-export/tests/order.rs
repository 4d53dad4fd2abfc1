#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The archive written from a host directory (the `HostDir` backend), read back by GNU tar:
//! entry order, the end of the archive, and the byte-identical second run.

use imgscrub_export::write_tar;
use imgscrub_fs::{Filesystem, HostDir};
use imgscrub_shrink::NoProgress;
use std::process::Command;

fn tar_list(archive: &[u8], dir: &std::path::Path) -> Vec<String> {
    let p = dir.join("a.tar");
    std::fs::write(&p, archive).unwrap();
    let o = Command::new("tar").arg("-tf").arg(&p).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn entries_are_in_byte_order_of_their_paths() {
    if Command::new("tar").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "GNU tar missing in CI");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    // Names with bytes below and above '/' (0x2f): '-' 0x2d, '.' 0x2e, '0' 0x30.
    for d in ["a", "a/b", "a-", "a.d", "b"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["a/z", "a/b/c", "a-/x", "a.txt", "a0", "a-b", "a.d/e", "Z"] {
        std::fs::write(root.join(f), f.as_bytes()).unwrap();
    }
    // (HostDir names nodes by path, so host hard links are two files here; the ext4 test
    // in cli/tests/export.rs checks hard links.)
    std::fs::write(root.join("b/link"), b"l").unwrap();
    let fs = HostDir::open(&root).unwrap();
    let (r, out) = write_tar(&fs, fs.root(), Vec::new(), &NoProgress).unwrap();
    assert_eq!((r.files, r.directories), (9, 6));
    assert_eq!(out.len() as u64, r.tar_bytes);
    assert_eq!(out.len() % 10240, 0);
    let list = tar_list(&out, t.path());
    let mut sorted = list.clone();
    sorted.sort();
    assert_eq!(list, sorted);
    assert_eq!(
        list,
        [
            "./", "./Z", "./a-/", "./a-/x", "./a-b", "./a.d/", "./a.d/e", "./a.txt", "./a/",
            "./a/b/", "./a/b/c", "./a/z", "./a0", "./b/", "./b/link"
        ]
    );
    // Same bytes again.
    let (_, again) = write_tar(&fs, fs.root(), Vec::new(), &NoProgress).unwrap();
    assert!(out == again);
}
