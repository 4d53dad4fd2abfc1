#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `imgscrub prepare --operations defaults,user-account --keep-user-accounts …` on ext4
//! images of the Debian, Ubuntu, CentOS and Alpine layouts: debugfs reads back passwd,
//! shadow, group and gshadow, the removed homes and spools are gone, e2fsck -fn is clean;
//! a dry run and a refused request leave the image byte-identical.

#[path = "../../crates/imgscrub-prepare/tests/common/distros.rs"]
mod distros;
#[path = "../../crates/imgscrub-prepare/tests/common/users.rs"]
mod users;

use imgscrub_testkit::{assert_e2fsck_clean, debugfs, make_ext4, require_tools, run_ok};
use std::path::Path;
use std::process::{Command, Output};

fn imgscrub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imgscrub"))
        .args(args)
        .output()
        .unwrap()
}

fn sha(p: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(p))
}

/// debugfs `cat`, which prints nothing for a missing file.
fn cat(fs: &Path, path: &str) -> String {
    debugfs(fs, &format!("cat {path}"))
}

/// Whether debugfs finds the path (`stat` of a missing path prints no inode).
fn present(fs: &Path, path: &str) -> bool {
    debugfs(fs, &format!("stat {path}")).contains("Inode:")
}

#[test]
fn user_account_on_ext4_distro_images() {
    require_tools!("mke2fs", "e2fsck", "debugfs");
    for distro in ["debian12", "ubuntu22", "centos7", "alpine"] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        distros::build(distro, &src);
        let u = users::add_login_users(&src, distro);
        let img = t.path().join("root.ext4");
        if !make_ext4("default", &src, &img, 64) {
            return;
        }
        let im = img.to_str().unwrap();

        // Refusals first: nothing written.
        let before = sha(&img);
        for (args, want) in [
            (
                &["--keep-user-accounts", "bob,mallory"][..],
                "no user mallory in the guest's /etc/passwd",
            ),
            (
                &["--remove-user-accounts", "root"][..],
                "root is never removed",
            ),
            (&["--keep-user-accounts", "bob,,"][..], "is not a user name"),
        ] {
            let mut a = vec!["prepare", im, "--operations", "defaults,user-account"];
            a.extend_from_slice(args);
            let o = imgscrub(&a);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{distro} {args:?} should fail");
            assert!(err.contains(want), "{distro} {args:?}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
        let o = imgscrub(&["prepare", im, "--keep-user-accounts", "bob"]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("--operations defaults,user-account"));
        // Dry run: the steps are listed, nothing is written.
        let o = imgscrub(&[
            "prepare",
            im,
            "--dry-run",
            "--operations",
            "user-account",
            "--keep-user-accounts",
            "bob",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let plan = String::from_utf8_lossy(&o.stdout);
        for want in ["/etc/passwd", "/etc/shadow", "/etc/group", "/home/alice"] {
            assert!(plan.contains(want), "{distro}: {want} not in {plan}");
        }
        assert_eq!(sha(&img), before, "{distro}: refused or dry run wrote");

        // The real run, with the default operations.
        let o = imgscrub(&[
            "prepare",
            im,
            "--json",
            "--operations",
            "defaults,user-account",
            "--keep-user-accounts",
            "bob",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let steps = v["report"]["steps"].as_array().unwrap();
        let ours: Vec<&str> = steps
            .iter()
            .filter(|s| s["source"] == "user-account")
            .map(|s| s["path"].as_str().unwrap())
            .collect();
        assert!(
            ours.contains(&"/etc/passwd") && ours.contains(&"/home/alice"),
            "{distro}: {ours:?}"
        );
        assert_e2fsck_clean(&img);

        let passwd = cat(&img, "/etc/passwd");
        assert_eq!(
            users::names(&passwd),
            ["root", "daemon", "svc", "bob", "nobody"],
            "{distro}: {passwd}"
        );
        let shadow = cat(&img, "/etc/shadow");
        assert_eq!(
            users::names(&shadow),
            ["root", "daemon", "svc", "bob", "nobody"],
            "{distro}"
        );
        assert_eq!(
            users::line(&shadow, "bob").unwrap(),
            "bob:$6$salt$bobHash:19000:0:99999:7:::"
        );
        let group = cat(&img, "/etc/group");
        let admin = if distro == "debian12" || distro == "ubuntu22" {
            "sudo"
        } else {
            "wheel"
        };
        assert_eq!(
            users::names(&group),
            ["root", "daemon", admin, "users", "svc", "bob", "nogroup"],
            "{distro}: {group}"
        );
        assert!(users::line(&group, admin).unwrap().ends_with(":bob"));
        assert_eq!(
            users::line(&group, "bob").unwrap(),
            format!("bob:x:{}:", u.base + 1)
        );
        if u.gshadow {
            let gs = cat(&img, "/etc/gshadow");
            assert_eq!(
                users::names(&gs),
                ["root", "daemon", admin, "users", "svc", "bob", "nogroup"],
                "{distro}: {gs}"
            );
            assert_eq!(
                users::line(&gs, admin).unwrap(),
                format!("{admin}:*:bob:bob")
            );
        }
        // The defaults removed the backups before user-account ran.
        assert!(!present(&img, "/etc/passwd-"), "{distro}");
        // Homes and spools.
        assert!(!present(&img, "/home/alice"), "{distro}");
        assert!(!present(&img, "/srv/carol"), "{distro}");
        assert!(present(&img, "/home/bob/.profile"), "{distro}");
        assert!(present(&img, "/opt/vendor/app"), "{distro}");
        assert!(!present(&img, &format!("{}/alice", u.mail_dir)), "{distro}");
        assert!(!present(&img, &format!("{}/alice", u.cron_dir)), "{distro}");
        assert!(present(&img, u.cron_dir), "{distro}");

        // A second run changes nothing.
        let after = sha(&img);
        let o = imgscrub(&[
            "prepare",
            im,
            "-q",
            "--operations",
            "user-account",
            "--keep-user-accounts",
            "bob",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(sha(&img), after, "{distro}: second run wrote");
    }
}
