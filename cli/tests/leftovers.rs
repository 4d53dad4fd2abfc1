#![allow(clippy::unwrap_used, clippy::expect_used)]
//! virt-sysprep's `logfiles` paths outside /var/log, `/etc/machine-info` and the opt-in
//! `sshd-build-settings` on ext4 images of the Debian, Ubuntu, CentOS and Alpine layouts:
//! `imgscrub prepare`, then debugfs reads the files back and e2fsck -fn is clean.

#[path = "../../crates/imgscrub-prepare/tests/common/distros.rs"]
mod distros;
#[path = "../../crates/imgscrub-prepare/tests/common/leftovers.rs"]
mod leftovers;

use imgscrub_testkit::{assert_e2fsck_clean, debugfs, make_ext4, require_tools, run_ok};
use std::path::Path;
use std::process::Command;

fn prepare(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_imgscrub"))
        .arg("prepare")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "prepare {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The exact bytes of a guest file, via `debugfs dump` (cat would not show a missing final
/// newline reliably).
fn dump(img: &Path, path: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join("dumped");
    let _ = std::fs::remove_file(&out);
    debugfs(img, &format!("dump {path} {}", out.display()));
    std::fs::read(&out).unwrap_or_else(|e| panic!("{path} not dumped: {e}"))
}

fn present(img: &Path, path: &str) -> bool {
    debugfs(img, &format!("stat {path}")).contains("Inode:")
}

fn sha(p: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(p))
}

#[test]
fn leftovers_on_ext4_distro_images() {
    require_tools!("mke2fs", "e2fsck", "debugfs");
    for distro in ["debian12", "ubuntu22", "centos7", "alpine"] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        distros::build(distro, &src);
        leftovers::add_leftovers(&src, true);
        let img = t.path().join("root.ext4");
        if !make_ext4("default", &src, &img, 64) {
            return;
        }
        let im = img.to_str().unwrap();

        // Dry run: the sshd steps are listed, nothing is written.
        let before = sha(&img);
        let plan = prepare(&[im, "--dry-run", "--operations", "sshd-build-settings"]);
        assert!(
            plan.contains("sshd-build-settings") && plan.contains("/etc/ssh/sshd_config"),
            "{distro}: {plan}"
        );
        assert_eq!(sha(&img), before, "{distro}: dry run wrote");

        prepare(&[im, "-q", "--operations", "defaults,sshd-build-settings"]);
        assert_e2fsck_clean(&img);
        let d = t.path();
        assert_eq!(
            dump(&img, "/etc/ssh/sshd_config", d),
            leftovers::SSHD_CONFIG_DONE.as_bytes(),
            "{distro}"
        );
        assert_eq!(
            dump(&img, "/etc/ssh/sshd_config.d/50-cloud-init.conf", d),
            leftovers::DROPIN_DONE.as_bytes(),
            "{distro}"
        );
        assert_eq!(
            dump(&img, "/etc/ssh/sshd_config.d/60-cloudimg-settings.conf", d),
            leftovers::DROPIN_NO.as_bytes(),
            "{distro}"
        );
        assert!(
            debugfs(&img, "stat /etc/ssh/sshd_config").contains("Mode:  0600"),
            "{distro}"
        );
        assert_eq!(
            dump(&img, "/etc/machine-info", d),
            leftovers::MACHINE_INFO_DONE.as_bytes(),
            "{distro}"
        );
        assert_eq!(dump(&img, "/var/named/data/named.run", d), b"", "{distro}");
        for f in leftovers::DELETED {
            assert!(!present(&img, f), "{distro}: {f} still there");
        }
        for f in leftovers::KEPT {
            assert!(present(&img, f), "{distro}: {f} went");
        }
        // A second run writes nothing.
        let after = sha(&img);
        prepare(&[im, "-q", "--operations", "defaults,sshd-build-settings"]);
        assert_eq!(sha(&img), after, "{distro}: second run wrote");
    }
}
