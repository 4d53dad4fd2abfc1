#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The guest's own init proves the customization: a real Debian 12 (built at test time by
//! fixtures/mkbootdebian.sh: systemd, openssh-server, the Debian kernel) is prepared and
//! customized by imgscrub (qcow2 in, qcow2 out, one pass), then booted under
//! `qemu-system-x86_64` (TCG, no KVM) with `-kernel/-initrd` and a serial console. A
//! test-only unit in the image waits for the boot to finish, records what the guest sees in
//! /root/boottest/ and powers off; the test then reads the image back with debugfs.
//!
//! Skipped with a message outside CI when qemu-system-x86_64 or mmdebstrap is missing or the
//! test runs neither as root nor with passwordless sudo (the fixture needs
//! mmdebstrap --mode=root); under `CI=true` those are failures.
//! The first run downloads the packages (about 100 MB) and builds the tree (about a minute);
//! later runs reuse the cache (see the fixture script).

mod common;

use common::BIN;
use imgscrub_testkit::{assert_e2fsck_clean, debugfs, fixture, in_ci, require_tools, run_ok, tool};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: the boot itself takes about a minute on two TCG cores (RSA key generation is
/// most of it); this only stops a hung guest from hanging the suite.
const BOOT_DEADLINE: Duration = Duration::from_secs(900);

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The command that runs the fixture script: bash as root, `sudo -n` (passwordless, as CI
/// runners have it) otherwise; `None` when neither is possible.
fn fixture_runner() -> Option<Command> {
    if is_root() {
        return Some(Command::new("bash"));
    }
    let sudo_ok = Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !sudo_ok {
        return None;
    }
    let mut c = Command::new("sudo");
    c.args(["-n", "env"]);
    for var in ["TMPDIR", "IMGSCRUB_BOOT_CACHE", "PATH"] {
        if let Ok(v) = std::env::var(var) {
            c.arg(format!("{var}={v}"));
        }
    }
    c.arg("bash");
    Some(c)
}

fn cat(img: &Path, path: &str) -> String {
    debugfs(img, &format!("cat {path}"))
}

/// Boot `disk` (qcow2), wait for the guest to power off; returns the serial log and the
/// time it took.
fn boot(dir: &Path, disk: &Path) -> (String, Duration) {
    let log = dir.join("serial.log");
    let start = Instant::now();
    let mut child = tool("qemu-system-x86_64")
        .args(["-machine", "q35", "-m", "1024", "-smp", "2"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.join("initrd.img"))
        .args([
            "-append",
            "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=1",
        ])
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", disk.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start qemu-system-x86_64");
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > BOOT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let serial = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = serial
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "the guest did not power off within {BOOT_DEADLINE:?}; serial log tail:\n{tail}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = start.elapsed();
    let out = child.wait_with_output().unwrap();
    let serial = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(
        status.success(),
        "qemu failed ({status}): {}\n{serial}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serial, took)
}

#[test]
fn customized_debian_boots_runs_firstboot_and_starts_ssh() {
    require_tools!(
        "qemu-system-x86_64",
        "mmdebstrap",
        "qemu-img",
        "mke2fs",
        "debugfs",
        "e2fsck"
    );
    let Some(mut fixture_cmd) = fixture_runner() else {
        assert!(
            !in_ci(),
            "the boot test builds its Debian with mmdebstrap --mode=root: run CI as root or \
             with passwordless sudo"
        );
        eprintln!("SKIP: the boot test needs root or passwordless sudo (mmdebstrap --mode=root)");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let start = Instant::now();
    run_ok(fixture_cmd.arg(fixture("mkbootdebian.sh")).arg(dir));
    eprintln!("boot test: fixture ready in {:?}", start.elapsed());
    let raw = dir.join("root.img");
    let old_key = cat(&raw, "/etc/ssh/ssh_host_ed25519_key.pub");
    assert!(old_key.starts_with("ssh-ed25519 "), "{old_key}");
    let template = dir.join("template.qcow2");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&raw)
            .arg(&template),
    );
    std::fs::remove_file(&raw).unwrap();

    // A first-boot script that fails: kept aside, logged, the unit marked failed, sshd
    // still started.
    let failing = dir.join("fails.sh");
    std::fs::write(&failing, "#!/bin/sh\necho about to fail\nexit 7\n").unwrap();

    let disk = dir.join("booted.qcow2");
    let out = Command::new(BIN)
        .arg("prepare")
        .arg(&template)
        .args(["--profile", "linux"])
        .args(["--hostname", "boot-test"])
        .args([
            "--firstboot-command",
            "echo fb-ran > /root/fb-ok; hostname > /root/fb-hostname",
        ])
        .arg("--firstboot")
        .arg(&failing)
        .arg("--output")
        .arg(&disk)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "prepare: {}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("0000-ssh-keygen"), "{report}");

    let (serial, took) = boot(dir, &disk);
    eprintln!("boot test: boot to power-off took {took:?} (TCG)");
    assert!(serial.contains("IMGSCRUB-BOOTTEST-DONE"), "{serial}");

    let fs = dir.join("after.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&disk)
            .arg(&fs),
    );
    // The guest shut down cleanly.
    assert_e2fsck_clean(&fs);
    let log = cat(&fs, "/var/log/imgscrub-firstboot.log");
    assert!(log.contains("0000-ssh-keygen: done"), "{log}");
    assert!(log.contains("0001-command: done"), "{log}");
    assert!(
        log.contains("about to fail\n") && log.contains("0002-fails.sh: failed with exit status 7"),
        "{log}"
    );
    assert!(
        log.contains("all scripts ran; imgscrub-firstboot disabled"),
        "{log}"
    );
    let failed = debugfs(&fs, "ls /usr/lib/imgscrub/firstboot.failed");
    assert!(failed.contains("0002-fails.sh"), "{failed}");
    assert_eq!(cat(&fs, "/root/fb-ok"), "fb-ran\n");
    // The hostname was taken: in the file, by the kernel, and already at first boot.
    assert_eq!(cat(&fs, "/etc/hostname").trim(), "boot-test");
    assert_eq!(cat(&fs, "/root/boottest/hostname").trim(), "boot-test");
    assert_eq!(cat(&fs, "/root/fb-hostname").trim(), "boot-test");
    // sshd started (with the regenerated keys), the first-boot unit disabled itself.
    assert_eq!(
        cat(&fs, "/root/boottest/ssh-active").trim(),
        "active",
        "{serial}"
    );
    assert_eq!(
        cat(&fs, "/root/boottest/firstboot-enabled").trim(),
        "disabled"
    );
    // The failed script makes the unit fail (visible to `systemctl --failed`), nothing else.
    let failed_units = cat(&fs, "/root/boottest/failed-units");
    let failed_units: Vec<&str> = failed_units
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(failed_units, ["imgscrub-firstboot.service"], "{serial}");
    let new_key = cat(&fs, "/etc/ssh/ssh_host_ed25519_key.pub");
    assert!(new_key.starts_with("ssh-ed25519 "), "{new_key}");
    assert_ne!(new_key, old_key, "host keys were not regenerated");
    let left = debugfs(&fs, "ls /usr/lib/imgscrub/firstboot.d");
    assert!(
        !left.contains("0001-command") && !left.contains("0000-ssh-keygen"),
        "{left}"
    );
}
