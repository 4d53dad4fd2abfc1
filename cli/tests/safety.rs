#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash safety and locking of in-place commands (docs/safety.md):
//! - `prepare --profile linux` interrupted at every failpoint of its commit sequence (and by
//!   `kill -9` at random moments) leaves, after the next open, the original or the fully
//!   prepared image, with `qemu-img check` and `e2fsck -fn` clean;
//! - writing commands refuse an image QEMU holds, and QEMU refuses an image imgscrub writes;
//! - an ext4 with multi-mount protection is refused.
//!
//! Runs of `prepare` use libfaketime with a frozen clock, so that two uninterrupted runs give
//! byte-identical images and "fully prepared" can be checked with `qemu-img compare`.

use imgscrub_testkit::{
    assert_e2fsck_clean, fixture, require_tools, run, run_ok, tool, wait_for_output,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::crash::{self, Job, PREPARE, RM, SPARSIFY, faketime_lib, identical, job_cmd, redo_log};
use common::{BIN, imgscrub, root_fs};

/// `imgscrub prepare IMG --profile linux` with a frozen clock and optional failpoint.
fn prepare_cmd(lib: &Path, img: &Path, failpoint: Option<&str>) -> Command {
    job_cmd(PREPARE, lib, img, failpoint)
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// The sample in `format` (qcow2 as shipped, raw converted).
fn sample(dir: &Path, format: &str) -> PathBuf {
    let q = dir.join("orig.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &q).unwrap();
    if format == "qcow2" {
        return q;
    }
    let r = dir.join("orig.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&q)
            .arg(&r),
    );
    r
}

/// After an interruption: recovered to the original or the prepared image (see
/// `crash::recovered`), and the root filesystem `e2fsck -fn` clean. True for "prepared".
fn check_after_crash(dir: &Path, img: &Path, orig: &Path, prepared: &Path, what: &str) -> bool {
    let is_prep = crash::recovered(img, orig, prepared, what);
    let fs = root_fs(dir, img);
    assert_e2fsck_clean(&fs);
    std::fs::remove_file(&fs).unwrap();
    is_prep
}

/// Steps of an uninterrupted `prepare` (it leaves `img` prepared).
fn count_steps(lib: &Path, img: &Path) -> u64 {
    crash::count_steps(prepare_cmd(lib, img, None))
}

/// Interrupt `job` at every step; `setup` runs first (uninterrupted) to make the original.
fn every_failpoint(format: &str, job: Job, setup: Option<Job>) {
    require_tools!("qemu-img", "e2fsck");
    let Some(lib) = faketime_lib() else { return };
    let t = tempfile::tempdir().unwrap();
    let orig = sample(t.path(), format);
    if let Some(setup) = setup {
        let o = job_cmd(setup, &lib, &orig, None).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    crash::every_failpoint(
        &format!("{format} {job:?}"),
        &orig,
        &t.path().join(format!("prepared.{format}")),
        &t.path().join(format!("work.{format}")),
        |img, fp| job_cmd(job, &lib, img, fp),
        |img, _| {
            let fs = root_fs(t.path(), img);
            assert_e2fsck_clean(&fs);
            std::fs::remove_file(&fs).unwrap();
        },
    );
}

#[test]
fn prepare_interrupted_at_every_failpoint_qcow2() {
    every_failpoint("qcow2", PREPARE, None);
}

#[test]
fn prepare_interrupted_at_every_failpoint_raw() {
    every_failpoint("raw", PREPARE, None);
}

#[test]
fn rm_and_sparsify_interrupted_at_every_failpoint() {
    for format in ["qcow2", "raw"] {
        every_failpoint(format, RM, None);
        // Sparsify after a prepare, which leaves deleted data in free blocks.
        every_failpoint(format, SPARSIFY, Some(PREPARE));
    }
}

/// A small deterministic generator (xorshift) for the kill moments.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn prepare_killed_at_random_moments() {
    require_tools!("qemu-img", "e2fsck");
    let Some(lib) = faketime_lib() else { return };
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for format in ["qcow2", "raw"] {
        let t = tempfile::tempdir().unwrap();
        let orig = sample(t.path(), format);
        let prepared = t.path().join(format!("prepared.{format}"));
        std::fs::copy(&orig, &prepared).unwrap();
        let total = count_steps(&lib, &prepared);
        let img = t.path().join(format!("work.{format}"));
        for i in 0..8 {
            std::fs::copy(&orig, &img).unwrap();
            // Half the runs pause at a random step, so the kill lands inside the commit.
            let pause = (i % 2 == 0).then(|| format!("{}:sleep=30", 1 + rng.next(total)));
            let delay = Duration::from_millis(rng.next(60));
            let mut child = prepare_cmd(&lib, &img, pause.as_deref())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill(); // SIGKILL
            let status = child.wait().unwrap();
            let what = format!("{format} kill {i} after {delay:?} (pause {pause:?}, {status})");
            let in_commit = redo_log(&img).exists();
            let prepared_now = check_after_crash(t.path(), &img, &orig, &prepared, &what);
            eprintln!(
                "{what}: {}, {}",
                if in_commit {
                    "inside the commit"
                } else {
                    "outside the commit"
                },
                if prepared_now { "prepared" } else { "original" }
            );
        }
    }
}

/// Start `qemu-io` holding `img` open for writing; returns once it has locked the image.
///
/// qemu-io opens (and locks) the image given on its command line first, then reads commands
/// from standard input, printing its prompt `qemu-io> ` (flushed, even into a pipe) before
/// each: the prompt is the sign that the lock is there, however long a loaded machine takes
/// to get there. Standard input stays open, so qemu-io waits for commands until killed.
fn qemu_io_holding(img: &Path, format: &str) -> std::process::Child {
    let mut child = tool("qemu-io")
        .args(["-f", format])
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    if let Err(out) = wait_for_output(stdout, "qemu-io> ") {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!(
            "qemu-io did not open {}: {out} {}",
            img.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    child
}

#[test]
fn writing_commands_refuse_an_image_qemu_holds() {
    require_tools!("qemu-img", "qemu-io");
    for format in ["qcow2", "raw"] {
        let t = tempfile::tempdir().unwrap();
        let img = sample(t.path(), format);
        let before = bytes(&img);
        let mut holder = qemu_io_holding(&img, format);
        let p = img.to_str().unwrap();
        let cmds: [&[&str]; 6] = [
            &["prepare", "--profile", "linux", p],
            &["rm", p, "/etc/hostname"],
            &["mkdir", p, "/new-dir"],
            &["sparsify", p],
            &["prepare", "--profile", "linux", "--dry-run", p],
            &["ls", p, "/"],
        ];
        for args in cmds {
            let o = imgscrub(args);
            let err = String::from_utf8_lossy(&o.stderr);
            // 5: the exit status of an image in use.
            assert_eq!(
                o.status.code(),
                Some(5),
                "{args:?} while qemu-io holds the image: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
            assert!(err.contains("in use by another process"), "{args:?}: {err}");
            assert_eq!(bytes(&img), before, "{args:?} changed the image");
        }
        holder.kill().unwrap();
        holder.wait().unwrap();
        // Once QEMU is gone, the same command works.
        let o = imgscrub(&["rm", p, "/etc/hostname"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn qemu_refuses_an_image_imgscrub_writes() {
    require_tools!("qemu-img", "qemu-io");
    for format in ["qcow2", "raw"] {
        let t = tempfile::tempdir().unwrap();
        let img = sample(t.path(), format);
        // Hold imgscrub at the first step of its commit (the lock taken, the redo log written)
        // until `go` exists; with the trace on, it says on stderr when it got there.
        let go = t.path().join("go");
        let mut child = Command::new(BIN)
            .args(["prepare", "--profile", "linux"])
            .arg(&img)
            .env("IMGSCRUB_FAILPOINT", format!("1:wait={}", go.display()))
            .env("IMGSCRUB_FAILPOINT_TRACE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = redo_log(&img);
        let stderr = child.stderr.take().unwrap();
        if let Err(err) = wait_for_output(stderr, "imgscrub-failpoint: step 1:") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("imgscrub did not reach its commit: {err}");
        }
        assert!(log.exists(), "no redo log at the first step of the commit");
        let o = run(tool("qemu-io")
            .args(["-f", format, "-c", "write 0 512"])
            .arg(&img));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() || err.contains("lock"),
            "qemu-io wrote while imgscrub held the image"
        );
        assert!(err.contains("lock"), "qemu-io: {err}");
        // QEMU's raw driver lets read-only users share a written image; qcow2 does not.
        if format == "qcow2" {
            let o = run(tool("qemu-io")
                .args(["-r", "-f", format, "-c", "read 0 512"])
                .arg(&img));
            assert!(
                !o.status.success(),
                "a read-only qemu-io (without -U) should be refused"
            );
            let o = run(tool("qemu-img").arg("info").arg(&img));
            assert!(
                !o.status.success(),
                "qemu-img info without -U should be refused"
            );
        }
        std::fs::write(&go, b"").unwrap();
        let status = child.wait().unwrap();
        assert!(status.success());
        assert!(!log.exists());
        if format == "qcow2" {
            run_ok(tool("qemu-img").arg("check").arg(&img));
        }
    }
}

#[test]
fn an_ext4_with_mmp_is_refused_for_writing() {
    require_tools!("mkfs.ext4", "e2fsck");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    std::fs::write(src.join("etc/hostname"), "golden\n").unwrap();
    let img = t.path().join("mmp.img");
    run_ok(Command::new("truncate").arg("-s").arg("32M").arg(&img));
    run_ok(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-O", "mmp", "-d"])
            .arg(&src)
            .arg(&img),
    );
    let before = bytes(&img);
    let p = img.to_str().unwrap();
    for args in [
        &["rm", p, "/etc/hostname"][..],
        &["prepare", "--profile", "linux", p][..],
    ] {
        let o = imgscrub(args);
        let err = String::from_utf8_lossy(&o.stderr);
        // 3: an ext4 feature imgscrub refuses to write under (it cannot take part in MMP).
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("mmp"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert_eq!(bytes(&img), before);
    }
    assert_e2fsck_clean(&img);
}

#[test]
fn a_leftover_incomplete_log_is_removed_and_a_complete_one_finished() {
    require_tools!("qemu-img");
    let Some(lib) = faketime_lib() else { return };
    let t = tempfile::tempdir().unwrap();
    let orig = sample(t.path(), "qcow2");
    let img = t.path().join("work.qcow2");
    std::fs::copy(&orig, &img).unwrap();
    // Step 2 is the first record of the log: the log is incomplete.
    let o = prepare_cmd(&lib, &img, Some("2")).output().unwrap();
    assert_eq!(o.status.code(), None);
    assert!(redo_log(&img).exists());
    assert_eq!(bytes(&img), bytes(&orig));
    let o = imgscrub(&["inspect", img.to_str().unwrap()]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("removed an incomplete redo log"), "{out}");
    assert!(!redo_log(&img).exists());
    assert_eq!(bytes(&img), bytes(&orig));
    // The last step removes the log: crashing there leaves a complete, applied log.
    let prepared = t.path().join("prepared.qcow2");
    std::fs::copy(&orig, &prepared).unwrap();
    let total = count_steps(&lib, &prepared);
    std::fs::copy(&orig, &img).unwrap();
    let o = prepare_cmd(&lib, &img, Some(&total.to_string()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), None);
    let o = imgscrub(&["inspect", img.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("finished an interrupted change"), "{out}");
    assert!(identical(&img, &prepared));
    // A read-only image with a leftover log is refused with a way out.
    std::fs::copy(&orig, &img).unwrap();
    let o = prepare_cmd(&lib, &img, Some("2")).output().unwrap();
    assert_eq!(o.status.code(), None);
    let mut perm = std::fs::metadata(&img).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    std::fs::set_permissions(&img, perm).unwrap();
    let o = imgscrub(&["inspect", img.to_str().unwrap()]);
    // root ignores file permissions: then the open recovers instead.
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("interrupted imgscrub change"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
