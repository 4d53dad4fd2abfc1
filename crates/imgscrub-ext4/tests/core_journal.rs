#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `Ext4Fs::open` and a journal that needs recovery: read-only opens refuse, writable opens
//! replay (through the journal inode's mapping) and then edit as usual; e2fsck -fn agrees.

mod core_common;

use core_common::*;
use imgscrub_disk::RawFile;
use imgscrub_ext4::{Ext4Error, Ext4Fs, NewAttr, OpenOptions};
use std::process::Command;

#[test]
fn dirty_journal_is_replayed_on_writable_open() {
    imgscrub_testkit::require_tools!("mke2fs", "debugfs", "e2fsck");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    for variant in ["default", "ext3", "b1024"] {
        let Some(img) = image(variant, &src, tmp.path(), 16) else {
            return;
        };
        let bs: usize = if variant == "b1024" { 1024 } else { 4096 };
        let ffb = imgscrub_testkit::debugfs(&img, "ffb 1 100");
        let free: u64 = ffb.split(':').nth(1).unwrap().trim().parse().unwrap();
        let data = pattern(bs, 4);
        let dfile = tmp.path().join("d");
        std::fs::write(&dfile, &data).unwrap();
        let cmds = tmp.path().join("cmds");
        std::fs::write(&cmds, format!("jo\njw -b {free} {}\njc\n", dfile.display())).unwrap();
        imgscrub_testkit::run_ok(
            Command::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&cmds)
                .arg(&img),
        );
        let before = std::fs::read(&img).unwrap();
        assert!(
            matches!(
                Ext4Fs::open(
                    RawFile::open(&img).unwrap(),
                    OpenOptions { writable: false }
                ),
                Err(Ext4Error::NeedsRecovery(_))
            ),
            "{variant}"
        );
        assert_eq!(std::fs::read(&img).unwrap(), before);
        let mut fs = open_rw(&img);
        assert_eq!(
            fs.read_block(free).unwrap(),
            data,
            "{variant}: block not replayed"
        );
        let f = fs
            .create(fs.root(), b"after-replay", &NewAttr::default())
            .unwrap();
        fs.write(f, 0, b"ok").unwrap();
        fs.flush().unwrap();
        drop(fs);
        strict_fsck(&img, "");
        let fs = open_ro(&img);
        assert_eq!(
            fs.read_to_vec(fs.lookup_path(b"/after-replay").unwrap())
                .unwrap(),
            b"ok"
        );
    }
}
