//! Interrupting in-place commands at every failpoint (docs/safety.md), shared by the ext4
//! (`safety.rs`) and XFS (`xfs_write.rs`) crash tests. The binary is run under libfaketime
//! with a frozen clock, so two uninterrupted runs give the same bytes and "finished" can be
//! checked with `qemu-img compare`.

use super::{BIN, imgscrub};
use imgscrub_testkit::{in_ci, run, run_ok, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An in-place command: arguments before and after the image path.
pub type Job = (&'static [&'static str], &'static [&'static str]);
pub const PREPARE: Job = (&["prepare", "--profile", "linux"], &[]);
pub const RM: Job = (&["rm", "-r"], &["/etc/ssh"]);
pub const SPARSIFY: Job = (&["sparsify"], &[]);
pub const FROZEN: &str = "2024-01-01 00:00:00";

/// libfaketime, or `None` (skip) outside CI when it is not installed.
pub fn faketime_lib() -> Option<PathBuf> {
    let found = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/lib64/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    if found.is_none() {
        assert!(
            !in_ci(),
            "libfaketime is required in CI (apt-get install faketime)"
        );
        eprintln!("skipping: libfaketime not found");
    }
    found
}

/// `job` on `img` with a frozen clock and an optional failpoint (`IMGSCRUB_FAILPOINT`).
pub fn job_cmd(job: Job, lib: &Path, img: &Path, failpoint: Option<&str>) -> Command {
    let mut c = Command::new(BIN);
    c.args(job.0)
        .arg(img)
        .args(job.1)
        .env("LD_PRELOAD", lib)
        .env("FAKETIME", FROZEN)
        .env_remove("IMGSCRUB_FAILPOINT")
        .env_remove("IMGSCRUB_FAILPOINT_TRACE");
    if let Some(f) = failpoint {
        c.env("IMGSCRUB_FAILPOINT", f);
    }
    c
}

/// The redo log next to an image while a commit is in flight.
pub fn redo_log(img: &Path) -> PathBuf {
    let mut n = img.file_name().unwrap().to_os_string();
    n.push(".imgscrub-redo");
    img.with_file_name(n)
}

/// `qemu-img compare`: the two disks read the same.
pub fn identical(a: &Path, b: &Path) -> bool {
    let o = run(tool("qemu-img").arg("compare").arg(a).arg(b));
    match o.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "qemu-img compare {} {}: {}",
            a.display(),
            b.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// Failpoint steps of an uninterrupted run of `cmd` (from the failpoint trace); the run
/// leaves `img` finished.
pub fn count_steps(mut cmd: Command) -> u64 {
    let o = cmd.env("IMGSCRUB_FAILPOINT_TRACE", "1").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("imgscrub-failpoint: step "))
        .count() as u64
}

/// After an interruption: the next (read-only) open recovers, the redo log is gone, the
/// image is the original or the finished one, and `qemu-img check` is clean for qcow2.
/// Returns true for "finished".
pub fn recovered(img: &Path, orig: &Path, done: &Path, what: &str) -> bool {
    let o = imgscrub(&["inspect", "--json", img.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "{what}: inspect after the crash failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !redo_log(img).exists(),
        "{what}: the redo log is still there after the next open"
    );
    let is_orig = identical(img, orig);
    let is_done = !is_orig && identical(img, done);
    assert!(
        is_orig || is_done,
        "{what}: the image is neither the original nor the finished one"
    );
    if img.extension().is_some_and(|e| e == "qcow2") {
        run_ok(tool("qemu-img").arg("check").arg(img));
    }
    is_done
}

/// Interrupt a command at every failpoint step (the first 20, every k-th and the last when
/// there are more than 60). `done` starts as a copy of `orig` and is finished by an
/// uninterrupted run that counts the steps; `cmd(image, failpoint)` builds the command;
/// each crashed copy (`work`) must be `recovered`, then `fs_clean(work, what)` checks its
/// filesystems. Asserts that some crashes left the original and some the finished disk.
pub fn every_failpoint(
    label: &str,
    orig: &Path,
    done: &Path,
    work: &Path,
    cmd: impl Fn(&Path, Option<&str>) -> Command,
    mut fs_clean: impl FnMut(&Path, &str),
) {
    std::fs::copy(orig, done).unwrap();
    let total = count_steps(cmd(done, None));
    assert!(total >= 4, "{label}: only {total} failpoint steps");
    let points: Vec<u64> = if total <= 60 {
        (1..=total + 1).collect()
    } else {
        let k = total / 30;
        let mut v: Vec<u64> = (1..=20).chain((21..total).step_by(k as usize)).collect();
        v.extend([total, total + 1]);
        v
    };
    let start = std::time::Instant::now();
    let (mut n_orig, mut n_done) = (0, 0);
    for n in points {
        let what = format!("{label} step {n} of {total}");
        std::fs::copy(orig, work).unwrap();
        let o = cmd(work, Some(&n.to_string())).output().unwrap();
        if o.status.success() {
            assert!(n > total, "{what}: the failpoint was not reached");
            assert!(identical(work, done), "{what}: not the finished disk");
            break;
        }
        assert_eq!(
            o.status.code(),
            None,
            "{what}: not a crash: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if recovered(work, orig, done, &what) {
            n_done += 1;
        } else {
            n_orig += 1;
        }
        fs_clean(work, &what);
    }
    eprintln!(
        "{label}: {total} steps, {n_orig} crashes left the original, {n_done} the finished disk, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        n_orig > 0 && n_done > 0,
        "{label}: crashes left {n_orig} originals and {n_done} finished disks"
    );
}
