#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The catalogue rows for virt-sysprep's `logfiles` paths outside /var/log, `/etc/machine-info`
//! (`hostname`) and the opt-in `sshd-build-settings` on every synthetic distribution tree
//! (host-directory backend). The same on ext4 images, read back with debugfs and checked by
//! e2fsck, is in cli/tests/leftovers.rs.

mod common;

use common::distros::{DISTROS, build};
use common::leftovers::*;
use common::rows::{exists, mode, read};
use imgscrub_fs::HostDir;
use imgscrub_prepare::{Options, Profile, Report, Selection, execute, plan};
use std::path::Path;

fn tree(name: &str, modern_sshd: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build(name, dir.path());
    add_leftovers(dir.path(), modern_sshd);
    dir
}

fn run(root: &Path, ops: Option<&str>) -> Report {
    let o = Options {
        operations: ops.map(|s| Selection::parse(s).unwrap()),
        ..Options::default()
    };
    let mut fs = HostDir::open(root).unwrap();
    let p = plan(&fs, &Profile::builtin("linux").unwrap(), &o).unwrap();
    execute(&mut fs, &p).unwrap()
}

fn raw(root: &Path, path: &str) -> Vec<u8> {
    std::fs::read(root.join(&path[1..])).unwrap()
}

#[test]
fn defaults_remove_the_logfiles_rows_and_machine_info_lines() {
    for &name in DISTROS {
        let dir = tree(name, true);
        let root = dir.path();
        let r = run(root, None);
        for f in DELETED {
            assert!(!exists(root, f), "{name}: {f} still there");
        }
        for f in KEPT {
            assert!(exists(root, f), "{name}: {f} went");
        }
        // named.run is a log: truncated, mode kept.
        assert_eq!(read(root, "/var/named/data/named.run"), "", "{name}");
        assert_eq!(mode(root, "/var/named/data/named.run"), 0o640, "{name}");
        assert_eq!(read(root, "/etc/machine-info"), MACHINE_INFO_DONE, "{name}");
        // sshd-build-settings is opt-in: the defaults leave sshd's files alone.
        assert_eq!(read(root, "/etc/ssh/sshd_config"), SSHD_CONFIG, "{name}");
        assert_eq!(
            read(root, "/etc/ssh/sshd_config.d/50-cloud-init.conf"),
            DROPIN,
            "{name}"
        );
        assert!(
            !r.steps.iter().any(|s| s.source == "sshd-build-settings"),
            "{name}"
        );
        let again = run(root, None);
        assert!(again.is_empty(), "{name}: {}", again.to_text());
    }
}

#[test]
fn sshd_build_settings_modern_sshd() {
    for &name in DISTROS {
        let dir = tree(name, true);
        let root = dir.path();
        let before_no =
            std::fs::metadata(root.join("etc/ssh/sshd_config.d/60-cloudimg-settings.conf"))
                .unwrap();
        let r = run(root, Some("sshd-build-settings"));
        assert_eq!(
            read(root, "/etc/ssh/sshd_config"),
            SSHD_CONFIG_DONE,
            "{name}"
        );
        assert_eq!(mode(root, "/etc/ssh/sshd_config"), 0o600, "{name}");
        assert_eq!(
            raw(root, "/etc/ssh/sshd_config.d/50-cloud-init.conf"),
            DROPIN_DONE.as_bytes(),
            "{name}"
        );
        // A file without build-time lines is not written at all.
        let after_no =
            std::fs::metadata(root.join("etc/ssh/sshd_config.d/60-cloudimg-settings.conf"))
                .unwrap();
        assert_eq!(
            (before_no.len(), before_no.modified().unwrap()),
            (after_no.len(), after_no.modified().unwrap())
        );
        let paths: Vec<&str> = r.steps.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/ssh/sshd_config",
                "/etc/ssh/sshd_config.d/50-cloud-init.conf"
            ],
            "{name}"
        );
        assert!(run(root, Some("sshd-build-settings")).is_empty(), "{name}");
    }
}

#[test]
fn sshd_build_settings_old_sshd_gets_without_password() {
    for name in ["centos6", "ubuntu14", "debian7"] {
        let dir = tree(name, false);
        let root = dir.path();
        run(root, Some("sshd-build-settings"));
        let want = SSHD_CONFIG_DONE.replace(
            "PermitRootLogin prohibit-password",
            "PermitRootLogin without-password",
        );
        assert_eq!(read(root, "/etc/ssh/sshd_config"), want, "{name}");
        assert_eq!(
            read(root, "/etc/ssh/sshd_config.d/50-cloud-init.conf"),
            DROPIN_DONE.replace("prohibit-password", "without-password"),
            "{name}"
        );
    }
}
