#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The system customizations through the CLI on the sample disk (qcow2, GPT, ext4 root):
//! `prepare --profile linux --hostname … --root-password …` in one pass, `--json` showing a
//! random password once, `SOURCE_DATE_EPOCH` giving identical images, and guest
//! preconditions (user, zone) refused with exit 1 and the image untouched. Files read back
//! with debugfs, hashes checked by python3's `crypt` (libxcrypt), e2fsck clean.

use imgscrub_testkit::{assert_e2fsck_clean, debugfs, fixture, require_tool, require_tools};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{imgscrub, root_fs};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISystemHelperKey ops@bastion";

fn sample(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    std::fs::copy(fixture("sample.qcow2"), &img).unwrap();
    img
}

fn shadow_hash(root: &Path, user: &str) -> String {
    debugfs(root, "cat /etc/shadow")
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_string()
}

fn libxcrypt_verifies(password: &str, hash: &str) -> bool {
    let py = require_tool("python3").expect("python3");
    let o = Command::new(py)
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]))",
            password,
            hash,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).trim() == hash
}

#[test]
fn prepare_with_system_options_in_one_pass() {
    require_tools!("qemu-img", "debugfs", "e2fsck", "python3");
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path(), "disk.qcow2");
    let out = dir.path().join("out.qcow2");
    let key = format!("debian:string:{KEY}");
    let o = imgscrub(&[
        "prepare",
        img.to_str().unwrap(),
        "--profile",
        "linux",
        "--hostname",
        "web-01.example.com",
        "--root-password",
        "password:S3cret root",
        "--password",
        "debian:random",
        "--ssh-inject",
        &key,
        "--json",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v.to_string();
    // The random password appears exactly once, in a note.
    let notes: Vec<String> = v["prepare"]["report"]["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .filter(|n| n.contains("random password for debian: "))
        .collect();
    assert_eq!(notes.len(), 1, "{text}");
    let pw = notes[0]
        .split("random password for debian: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(text.matches(&pw).count(), 1, "{text}");

    let root = root_fs(dir.path(), &out);
    assert_e2fsck_clean(&root);
    assert_eq!(debugfs(&root, "cat /etc/hostname"), "web-01.example.com\n");
    let rh = shadow_hash(&root, "root");
    assert!(
        rh.starts_with("$6$") && libxcrypt_verifies("S3cret root", &rh),
        "{rh}"
    );
    let dh = shadow_hash(&root, "debian");
    assert!(libxcrypt_verifies(&pw, &dh), "{dh}");
    let keys = debugfs(&root, "cat /home/debian/.ssh/authorized_keys");
    assert!(keys.ends_with(&format!("{KEY}\n")), "{keys}");
    assert_eq!(keys.matches(KEY).count(), 1);
}

#[test]
fn source_date_epoch_gives_identical_images() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let img = sample(dir.path(), name);
        let o = Command::new(common::BIN)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "customize",
                img.to_str().unwrap(),
                "--hostname",
                "h1",
                "--root-password",
                "password:pw",
                "--password",
                "debian:locked:password:pw2",
                "--ssh-inject",
                &format!("root:string:{KEY}"),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(img).unwrap()
    };
    let (a, b) = (run("a.qcow2"), run("b.qcow2"));
    assert!(a == b, "two runs with the same SOURCE_DATE_EPOCH differ");
}

#[test]
fn missing_user_or_zone_exits_1_and_leaves_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path(), "disk.qcow2");
    let p = img.to_str().unwrap();
    let before = std::fs::read(&img).unwrap();
    for (args, want) in [
        (
            vec!["customize", p, "--password", "nobody9:password:x"],
            "--password: no user \"nobody9\" in the guest's /etc/passwd",
        ),
        (
            vec![
                "customize",
                p,
                "--hostname",
                "x",
                "--timezone",
                "Europe/Paris",
            ],
            "--timezone: time zone \"Europe/Paris\": /usr/share/zoneinfo/Europe/Paris does not exist",
        ),
        (
            vec![
                "customize",
                p,
                "--ssh-inject",
                "ghost:string:ssh-ed25519 AAAA k",
            ],
            "--ssh-inject: no user \"ghost\"",
        ),
        (
            vec![
                "customize",
                p,
                "--password-crypto",
                "md5",
                "--root-password",
                "password:x",
            ],
            "md5 is not supported",
        ),
    ] {
        let o = imgscrub(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Bad syntax is exit 2, before the image is opened.
    let o = imgscrub(&["customize", p, "--password-crypto", "des"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");
}

#[test]
fn dry_run_lists_the_system_steps_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path(), "disk.qcow2");
    let before = std::fs::read(&img).unwrap();
    let o = imgscrub(&[
        "customize",
        img.to_str().unwrap(),
        "--hostname",
        "web-01",
        "--root-password",
        "random",
        "--ssh-inject",
        &format!("root:string:{KEY}"),
        "--dry-run",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = v.to_string();
    let steps: Vec<(String, String)> = v["report"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["source"].as_str().unwrap().to_string(),
                s["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (source, path) in [
        ("customize:--hostname", "/etc/hostname"),
        ("customize:--hostname", "/etc/hosts"),
        ("customize:--root-password", "/etc/shadow"),
        ("customize:--ssh-inject", "/root/.ssh/authorized_keys"),
    ] {
        assert!(
            steps.contains(&(source.to_string(), path.to_string())),
            "{source} {path}: {steps:?}"
        );
    }
    assert!(text.contains("(dry run: not set)"), "{text}");
    assert!(std::fs::read(&img).unwrap() == before, "a dry run wrote");
}
