#![allow(clippy::unwrap_used, clippy::expect_used)]
//! prepare / convert / sparsify on the bundled sample image (GPT: FAT ESP + ext4 root),
//! checked with e2fsck, zerofree, qemu-img check/compare.

use imgscrub_testkit::{assert_e2fsck_clean, fixture, require_tools, run, run_ok, tool};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{imgscrub, ok, root_fs};

fn sample(dir: &Path) -> PathBuf {
    let p = dir.join("sample.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &p).unwrap();
    p
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn zerofree_nonzero(fs: &Path) -> u64 {
    let o = run(tool("zerofree").arg("-n").arg("-v").arg(fs));
    let out = String::from_utf8_lossy(&o.stdout);
    // "<nonzero>/<free>/<total>"
    out.trim()
        .rsplit('\n')
        .next()
        .and_then(|l| l.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("zerofree output: {out}"))
}

#[test]
fn prepare_dry_run_in_place_and_idempotent() {
    require_tools!("qemu-img", "e2fsck", "debugfs");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let s = img.to_str().unwrap();
    let before = bytes(&img);
    let inspect: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", s])).unwrap();
    assert_eq!(inspect["os"]["family"], "debian", "{inspect}");
    assert_eq!(inspect["os"]["root_partition"], 2);
    let plan = ok(&["prepare", s, "--profile", "linux", "--dry-run"]);
    assert!(plan.contains("/etc/ssh/ssh_host_rsa_key"), "{plan}");
    assert_eq!(bytes(&img), before, "dry run changed the image");

    let report: serde_json::Value =
        serde_json::from_str(&ok(&["prepare", s, "--profile", "linux", "--json"])).unwrap();
    assert!(report["bytes_changed"].as_u64().unwrap() > 0);
    let fs = root_fs(t.path(), &img);
    assert_e2fsck_clean(&fs);
    let ssh = imgscrub_testkit::debugfs(&fs, "ls /etc/ssh");
    assert!(!ssh.contains("ssh_host_rsa_key"), "{ssh}");
    assert_eq!(imgscrub_testkit::debugfs(&fs, "cat /etc/machine-id"), "");
    // The sample is a systemd Debian without cloud-init: sshd must get its keys back at
    // first boot from the unit prepare installs.
    let units = imgscrub_testkit::debugfs(&fs, "ls /etc/systemd/system/multi-user.target.wants");
    assert!(units.contains("imgscrub-firstboot.service"), "{units}");
    let keygen =
        imgscrub_testkit::debugfs(&fs, "cat /usr/lib/imgscrub/firstboot.d/0000-ssh-keygen");
    assert!(keygen.contains("ssh-keygen -A"), "{keygen}");
    let qc = run_ok(tool("qemu-img").arg("check").arg(&img));
    assert!(qc.contains("No errors"), "{qc}");

    // A second run changes nothing at all.
    let prepared = bytes(&img);
    let again: serde_json::Value =
        serde_json::from_str(&ok(&["prepare", s, "--profile", "linux", "--json"])).unwrap();
    assert_eq!(again["bytes_changed"], 0, "{again}");
    assert_eq!(bytes(&img), prepared, "second prepare changed the image");
}

#[test]
fn prepare_output_one_pass() {
    require_tools!("qemu-img", "e2fsck", "zerofree");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let out = t.path().join("out.qcow2");
    let before = bytes(&img);
    ok(&[
        "prepare",
        img.to_str().unwrap(),
        "--profile",
        "linux",
        "--output",
        out.to_str().unwrap(),
        "--compress",
        "zstd",
        "-q",
    ]);
    assert_eq!(bytes(&img), before, "--output wrote to the input");
    let qc = run_ok(tool("qemu-img").arg("check").arg(&out));
    assert!(qc.contains("No errors"), "{qc}");
    let fs = root_fs(t.path(), &out);
    assert_e2fsck_clean(&fs);
    assert_eq!(zerofree_nonzero(&fs), 0);
}

/// `prepare -q` prints nothing at all when it succeeds without warnings (neither the plan
/// nor the summary), in place and with --output, but still does the work; a warning is still
/// printed (on standard error), and `-q --json` still gives the JSON report.
#[test]
fn prepare_quiet_prints_only_warnings() {
    require_tools!("qemu-img", "debugfs");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let s = img.to_str().unwrap();
    let before = bytes(&img);

    // Without -q the plan and the summary are there (so the test below proves something).
    let o = imgscrub(&["prepare", s, "--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("/etc/ssh/ssh_host_rsa_key"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("steps planned"));

    let quiet = |args: &[&str]| {
        let o = imgscrub(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stdout.is_empty() && o.stderr.is_empty(),
            "{args:?} printed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    quiet(&["prepare", s, "--dry-run", "-q"]);
    assert_eq!(bytes(&img), before, "dry run changed the image");
    let out = t.path().join("out.qcow2");
    quiet(&["prepare", s, "-q", "--output", out.to_str().unwrap()]);
    assert_eq!(bytes(&img), before, "--output wrote to the input");
    assert!(out.exists());
    quiet(&["prepare", "-q", s, "--profile", "linux"]);
    assert_ne!(bytes(&img), before, "prepare -q did not prepare");
    let fs = root_fs(t.path(), &img);
    let ssh = imgscrub_testkit::debugfs(&fs, "ls /etc/ssh");
    assert!(!ssh.contains("ssh_host_rsa_key"), "{ssh}");

    // -q --json: the report is still printed, and only it.
    let o = imgscrub(&["prepare", s, "-q", "--json", "--dry-run"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["report"]["steps"].is_array(), "{v}");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A warning of the plan survives -q, on standard error.
    let profile = t.path().join("warn.toml");
    std::fs::write(
        &profile,
        "name = \"warn\"\n\n[[action]]\nid = \"w\"\nkind = \"check\"\n\
         message = \"no /etc/nonesuch here\"\nwhen = { absent = [\"/etc/nonesuch\"] }\n",
    )
    .unwrap();
    let o = imgscrub(&[
        "prepare",
        s,
        "-q",
        "--dry-run",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("imgscrub: warning: ") && err.contains("no /etc/nonesuch here"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn convert_is_exact_and_deterministic_and_sparsify_zeroes() {
    require_tools!("qemu-img", "e2fsck", "zerofree", "fsck.vfat");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let s = img.to_str().unwrap();
    for algo in ["zstd", "zlib", "none"] {
        let a = t.path().join(format!("a-{algo}.qcow2"));
        let b = t.path().join(format!("b-{algo}.qcow2"));
        ok(&["convert", "-q", "--compress", algo, s, a.to_str().unwrap()]);
        ok(&["convert", "-q", "--compress", algo, s, b.to_str().unwrap()]);
        assert_eq!(bytes(&a), bytes(&b), "{algo}: output not deterministic");
        let qc = run_ok(tool("qemu-img").arg("check").arg(&a));
        assert!(qc.contains("No errors"), "{qc}");
        let cmp = run(tool("qemu-img").arg("compare").arg(&img).arg(&a));
        assert!(
            cmp.status.success(),
            "{algo}: {}",
            String::from_utf8_lossy(&cmp.stdout)
        );
    }
    // Sparsify in place on a raw copy.
    let raw = t.path().join("disk.raw");
    ok(&[
        "convert",
        "-q",
        "--format",
        "raw",
        "--compress",
        "none",
        s,
        raw.to_str().unwrap(),
    ]);
    // -q: nothing on stdout or stderr when all goes well (as qemu-img -q).
    let o = imgscrub(&["sparsify", "-q", raw.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
    let fs = root_fs(t.path(), &raw);
    assert_e2fsck_clean(&fs);
    assert_eq!(zerofree_nonzero(&fs), 0);
}

#[test]
fn bad_arguments_fail_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let s = img.to_str().unwrap();
    for args in [
        vec!["prepare", s, "--profile", "no-such-profile"],
        vec!["prepare", s, "--machine-id", "bogus"],
        vec!["prepare", s, "--operations", "not-an-op"],
        vec!["prepare", s, "--output", s],
        vec!["convert", s, s],
        vec![
            "convert",
            "--format",
            "raw",
            "--compress",
            "zstd",
            s,
            "/tmp/x.raw",
        ],
    ] {
        let o = imgscrub(&args);
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with("imgscrub: ") || err.contains("error:"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(bytes(&img), std::fs::read(fixture("sample.qcow2")).unwrap());
}

/// An output that names the input (or its backing file) by another path, a hard link or a
/// symbolic link is refused before anything is written; a directory or device as output is
/// refused; a failed conversion leaves an existing output as it was and no temporary file.
#[test]
fn outputs_that_alias_the_input_are_refused() {
    require_tools!("qemu-img");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let orig = bytes(&img);
    let dir = t.path().to_str().unwrap();
    std::fs::hard_link(&img, t.path().join("hard.qcow2")).unwrap();
    std::os::unix::fs::symlink("sample.qcow2", t.path().join("link.qcow2")).unwrap();
    // An overlay whose backing file is the sample.
    let overlay = t.path().join("overlay.qcow2");
    run_ok(
        tool("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&img)
            .arg(&overlay),
    );
    let o = overlay.to_str().unwrap();
    let dotted = format!("{dir}/./sample.qcow2");
    let hard = format!("{dir}/hard.qcow2");
    let link = format!("{dir}/link.qcow2");
    let s = img.to_str().unwrap();
    for args in [
        vec!["convert", s, &dotted],
        vec!["convert", s, &hard],
        vec!["convert", "-O", "raw", "--compress", "none", s, &link],
        vec!["convert", o, &dotted],
        vec!["prepare", s, "--profile", "linux", "--output", &hard],
        vec!["prepare", o, "--profile", "linux", "--output", &link],
    ] {
        let out = imgscrub(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the output is the same file as"),
            "{args:?}: {err}"
        );
        assert_eq!(bytes(&img), orig, "{args:?} changed the input");
    }
    for bad in [dir, "/dev/null"] {
        let out = imgscrub(&["convert", s, bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not a regular file"), "{bad}: {err}");
    }
    // A converter that fails half-way (unreadable input past its header) keeps the old output.
    let broken = t.path().join("broken.qcow2");
    std::fs::write(&broken, &orig[..orig.len() / 2]).unwrap();
    let prev = t.path().join("prev.qcow2");
    std::fs::write(&prev, b"previous").unwrap();
    let out = imgscrub(&["convert", broken.to_str().unwrap(), prev.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(bytes(&prev), b"previous");
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".imgscrub-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // Through a symbolic link to another file, the link stays and its target is replaced.
    let target = t.path().join("target.qcow2");
    std::fs::write(&target, b"old").unwrap();
    std::os::unix::fs::symlink("target.qcow2", t.path().join("to-target.qcow2")).unwrap();
    ok(&["convert", "-q", s, &format!("{dir}/to-target.qcow2")]);
    assert!(t.path().join("to-target.qcow2").is_symlink());
    run_ok(
        tool("qemu-img")
            .args(["compare", "-q"])
            .arg(&img)
            .arg(&target),
    );
}

/// Ctrl-C (SIGINT) during a long conversion: exit status 130, a one-line message, and neither
/// the output nor a temporary file left behind.
#[test]
fn an_interrupted_convert_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    // 256 MiB of compressible text: zlib level 9 takes seconds on it.
    let input = t.path().join("big.raw");
    {
        use std::io::Write;
        let chunk: Vec<u8> = (0..1u32 << 20)
            .flat_map(|i| format!("{:08x} ", i.wrapping_mul(2_654_435_761) % 9973).into_bytes())
            .take(4 << 20)
            .collect();
        let mut f = std::fs::File::create(&input).unwrap();
        for _ in 0..64 {
            f.write_all(&chunk).unwrap();
        }
    }
    let out = t.path().join("out.qcow2");
    let mut child = Command::new(common::BIN)
        .args(["convert", "-q", "--compress", "zlib", "--level", "9"])
        .arg(&input)
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The sign that the conversion runs (and so that its Ctrl-C handler is in place): its
    // temporary output exists. A fixed delay could signal a process still starting up on a
    // loaded machine, which would die of the signal instead of stopping cleanly.
    imgscrub_testkit::wait_until("convert created its temporary output", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("convert ended before it was interrupted: {status}");
        }
        std::fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".imgscrub-"))
    });
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let started = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // It stops at its next safe point, not at the end of the job (a loose bound: a loaded
    // machine can be slow, and finishing the job would have given exit status 0 anyway).
    assert!(
        started.elapsed().as_secs() < 120,
        "stopping took too long: {:?}",
        started.elapsed()
    );
    let names: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["big.raw"]);
}

/// Reproducible output: with `SOURCE_DATE_EPOCH` (or --timestamp) two runs of the same
/// one-pass prepare give byte-identical images; without it the times differ.
#[test]
fn source_date_epoch_makes_prepare_reproducible() {
    require_tools!("qemu-img");
    let t = tempfile::tempdir().unwrap();
    let s = sample(t.path());
    let s = s.to_str().unwrap();
    let run_prepare = |out: &Path, epoch: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_imgscrub"));
        c.args(["prepare", "-q", s, "--profile", "linux", "--output"])
            .arg(out)
            .env_remove("SOURCE_DATE_EPOCH");
        if let Some(e) = epoch {
            c.env("SOURCE_DATE_EPOCH", e);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out).unwrap()
    };
    let a = run_prepare(&t.path().join("a.qcow2"), Some("1700000000"));
    let b = run_prepare(&t.path().join("b.qcow2"), Some("1700000000"));
    assert!(a == b, "two runs with SOURCE_DATE_EPOCH differ");
    let c = run_prepare(&t.path().join("c.qcow2"), None);
    let d = run_prepare(&t.path().join("d.qcow2"), None);
    assert!(
        c != d,
        "without a fixed time the runs should differ (the test would prove nothing)"
    );
    // --timestamp is the same knob, and the result is a sound image.
    let e = t.path().join("e.qcow2");
    ok(&[
        "prepare",
        "-q",
        s,
        "--output",
        e.to_str().unwrap(),
        "--timestamp",
        "1700000000",
    ]);
    assert!(std::fs::read(&e).unwrap() == a);
    run_ok(tool("qemu-img").args(["check", "-q"]).arg(&e));
    let raw = t.path().join("e.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&e)
            .arg(&raw),
    );
    let fs = root_fs(t.path(), &raw);
    assert_e2fsck_clean(&fs);
}
