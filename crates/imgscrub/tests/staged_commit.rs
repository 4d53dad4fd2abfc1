#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Library view of docs/safety.md: an image opened for writing changes its file only when
//! the device is flushed (through the redo log), never before, and never when the job is
//! dropped; a second writer is refused while the first holds the image.

use imgscrub::{Error, Image, OpenOptions};
use imgscrub_testkit::{fixture, require_tools, run_ok, tool};
use std::path::{Path, PathBuf};

fn copies(dir: &Path) -> Vec<PathBuf> {
    let q = dir.join("s.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &q).unwrap();
    let r = dir.join("s.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&q)
            .arg(&r),
    );
    vec![q, r]
}

fn rw() -> OpenOptions {
    OpenOptions {
        write: true,
        format: None,
    }
}

#[test]
fn writes_reach_the_file_only_at_the_flush() {
    require_tools!("qemu-img");
    let t = tempfile::tempdir().unwrap();
    for img in copies(t.path()) {
        let before = std::fs::read(&img).unwrap();
        let log = PathBuf::from(format!("{}.imgscrub-redo", img.display()));
        {
            let image = Image::open(&img, rw()).unwrap();
            let dev = image.device();
            dev.write_at(&[0xab; 8192], 1 << 20).unwrap();
            dev.write_zeroes(2 << 20, 1 << 20).unwrap();
            let mut b = [0u8; 4];
            dev.read_at(&mut b, 1 << 20).unwrap();
            assert_eq!(b, [0xab; 4]);
            assert_eq!(std::fs::read(&img).unwrap(), before, "{}", img.display());
            // Dropped without a flush: nothing happened.
        }
        assert_eq!(std::fs::read(&img).unwrap(), before);
        let image = Image::open(&img, rw()).unwrap();
        image.device().write_at(&[0xcd; 512], 1 << 20).unwrap();
        image.device().flush().unwrap();
        assert!(!log.exists());
        drop(image);
        let image = Image::open(&img, OpenOptions::default()).unwrap();
        let mut b = [0u8; 512];
        image.device().read_at(&mut b, 1 << 20).unwrap();
        assert_eq!(b, [0xcd; 512]);
        if img.extension().is_some_and(|e| e == "qcow2") {
            run_ok(tool("qemu-img").arg("check").arg(&img));
        }
    }
}

/// Open `img` read-only once a dropped writer's lock is gone. The lock is an OFD lock: it
/// lives as long as any copy of its descriptor, and another test thread that forks a child
/// (qemu-img, debugfs) at that moment holds a copy until the child's exec closes it. Under
/// load that can outlast the drop by a while, so poll (generously) instead of expecting the
/// release to be instantaneous; a lock that never goes away still fails the test.
fn open_once_released(img: &Path) -> Image {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match Image::open(img, OpenOptions::default()) {
            Ok(i) => return i,
            Err(Error::Lock(e)) if std::time::Instant::now() < deadline => {
                eprintln!("still locked, retrying: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("{}: {e}", img.display()),
        }
    }
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_image() {
    require_tools!("qemu-img");
    let t = tempfile::tempdir().unwrap();
    for img in copies(t.path()) {
        let first = Image::open(&img, rw()).unwrap();
        let e = Image::open(&img, rw()).unwrap_err();
        assert!(matches!(e, Error::Lock(_)), "{e}");
        assert!(e.to_string().contains("in use by another process"), "{e}");
        let e = Image::open(&img, OpenOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Lock(_)), "{e}");
        drop(first);
        let r1 = open_once_released(&img);
        let _r2 = Image::open(&img, OpenOptions::default()).unwrap();
        assert!(Image::open(&img, rw()).is_err());
        drop(r1);
    }
}

/// A filesystem left with an orphan (a file deleted while open) is recovered when opened for
/// editing, the guest says so, and nothing reaches the file before the commit.
#[test]
fn recovery_is_reported_and_staged() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    std::fs::write(src.join("victim"), vec![7u8; 40_000]).unwrap();
    let img = t.path().join("fs.img");
    assert!(imgscrub_testkit::make_ext4("default", &src, &img, 16));
    let ino = imgscrub_testkit::debugfs(&img, "stat /victim")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let cmds = t.path().join("cmds");
    std::fs::write(
        &cmds,
        format!("unlink /victim\nsif <{ino}> links_count 0\nssv last_orphan {ino}\n"),
    )
    .unwrap();
    run_ok(tool("debugfs").arg("-w").arg("-f").arg(&cmds).arg(&img));
    let before = std::fs::read(&img).unwrap();
    let image = Image::open(&img, rw()).unwrap();
    let g = image.guest(None, true).unwrap();
    let notes = g.warnings().join("\n");
    assert!(notes.contains("orphan inode(s)"), "{notes}");
    g.discard().unwrap();
    drop(image);
    assert!(std::fs::read(&img).unwrap() == before, "discard wrote");
    let image = Image::open(&img, rw()).unwrap();
    let g = image.guest(None, true).unwrap();
    g.commit().unwrap();
    drop(image);
    imgscrub_testkit::assert_e2fsck_clean(&img);
}
