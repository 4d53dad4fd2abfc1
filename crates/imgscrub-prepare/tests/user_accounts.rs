#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `user-account` operation on every synthetic distribution tree (host-directory
//! backend): who is removed, what happens to passwd/shadow/group/gshadow/subuid, homes,
//! mail spools and crontabs, what stays, the errors, dry runs and idempotence. The same
//! operation on ext4 images, read back with debugfs and checked by e2fsck, is in
//! cli/tests/user_accounts.rs.

mod common;

use common::distros::{DISTROS, build};
use common::rows::{exists, read};
use common::users::{add_login_users, line, names};
use imgscrub_fs::HostDir;
use imgscrub_prepare::{Options, PrepareError, Profile, Report, Selection, execute, plan};
use std::path::Path;

fn tree(name: &str) -> (tempfile::TempDir, common::users::Users) {
    let dir = tempfile::tempdir().unwrap();
    build(name, dir.path());
    let u = add_login_users(dir.path(), name);
    (dir, u)
}

fn opts(ops: &str, keep: &[&str], remove: &[&str]) -> Options {
    Options {
        operations: Some(Selection::parse(ops).unwrap()),
        keep_user_accounts: keep.iter().map(|s| s.to_string()).collect(),
        remove_user_accounts: remove.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    }
}

fn run(root: &Path, o: &Options) -> Result<Report, PrepareError> {
    let mut fs = HostDir::open(root).unwrap();
    let p = plan(&fs, &Profile::builtin("linux").unwrap(), o)?;
    execute(&mut fs, &p)
}

/// Every account file, mail and cron spool, and the homes: what a run could change.
fn accounts_snapshot(root: &Path) -> Vec<(String, Option<String>)> {
    [
        "/etc/passwd",
        "/etc/passwd-",
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/group",
        "/etc/group-",
        "/etc/gshadow",
        "/etc/subuid",
        "/etc/subgid",
        "/home/alice/.profile",
        "/home/bob/.profile",
        "/srv/carol/data",
        "/opt/vendor/app",
    ]
    .iter()
    .map(|p| {
        (
            p.to_string(),
            std::fs::read_to_string(root.join(&p[1..])).ok(),
        )
    })
    .collect()
}

#[test]
fn keep_one_user_on_every_distro() {
    for &name in DISTROS {
        let (dir, u) = tree(name);
        let root = dir.path();
        let before_root = line(&read(root, "/etc/shadow"), "root")
            .unwrap()
            .to_string();
        let r = run(root, &opts("user-account", &["bob"], &[])).unwrap();
        let text = r.to_text();
        // Every change is a step of the operation.
        assert!(!r.steps.is_empty(), "{name}");
        assert!(
            r.steps.iter().all(|s| s.source == "user-account"),
            "{name}: {text}"
        );
        for f in ["/etc/passwd", "/etc/passwd-"] {
            assert_eq!(
                names(&read(root, f)),
                ["root", "daemon", "svc", "bob", "nobody"],
                "{name} {f}"
            );
        }
        for f in ["/etc/shadow", "/etc/shadow-"] {
            let s = read(root, f);
            assert_eq!(
                names(&s),
                ["root", "daemon", "svc", "bob", "nobody"],
                "{name} {f}"
            );
            // Kept lines are byte-identical.
            assert_eq!(line(&s, "root").unwrap(), before_root, "{name}");
            assert_eq!(
                line(&s, "bob").unwrap(),
                "bob:$6$salt$bobHash:19000:0:99999:7:::"
            );
        }
        let admin = if name.starts_with("centos") || name == "alpine" {
            "wheel"
        } else {
            "sudo"
        };
        for f in ["/etc/group", "/etc/group-"] {
            let g = read(root, f);
            // alice's and dave's personal groups went; carol had none; bob's stays and
            // loses carol as a member; alice leaves the admin group and `users`.
            assert_eq!(
                names(&g),
                ["root", "daemon", admin, "users", "svc", "bob", "nogroup"],
                "{name} {f}"
            );
            assert!(line(&g, admin).unwrap().ends_with(":bob"), "{name}: {g}");
            assert_eq!(line(&g, "users").unwrap(), "users:x:100:", "{name}");
            assert_eq!(
                line(&g, "bob").unwrap(),
                format!("bob:x:{}:", u.base + 1),
                "{name}"
            );
        }
        if u.gshadow {
            let gs = read(root, "/etc/gshadow");
            assert_eq!(
                names(&gs),
                ["root", "daemon", admin, "users", "svc", "bob", "nogroup"],
                "{name}"
            );
            assert_eq!(line(&gs, admin).unwrap(), format!("{admin}:*:bob:bob"));
            assert_eq!(line(&gs, "bob").unwrap(), "bob:!::");
            assert_eq!(read(root, "/etc/subuid"), "bob:165536:65536\n", "{name}");
            assert_eq!(read(root, "/etc/subgid"), "bob:165536:65536\n", "{name}");
        } else {
            assert!(!exists(root, "/etc/gshadow"), "{name}");
        }
        // Homes: alice's (below /home) and carol's (/srv/carol, hers) go; bob's stays;
        // dave's home is /opt, a top-level directory: kept, with a warning.
        assert!(!exists(root, "/home/alice"), "{name}");
        assert!(!exists(root, "/srv/carol"), "{name}");
        assert!(exists(root, "/srv"), "{name}");
        assert!(exists(root, "/home/bob/.profile"), "{name}");
        assert!(exists(root, "/opt/vendor/app"), "{name}");
        assert!(exists(root, "/var/lib/svc"), "{name}");
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("/opt") && w.contains("dave")),
            "{name}: {:?}",
            r.warnings
        );
        // Spools.
        assert!(!exists(root, &format!("{}/alice", u.mail_dir)), "{name}");
        assert!(!exists(root, &format!("{}/alice", u.cron_dir)), "{name}");
        assert!(exists(root, &format!("{}/bob", u.cron_dir)), "{name}");
        assert!(exists(root, u.cron_dir), "{name}");
        // The report names the users.
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("alice") && n.contains("carol") && n.contains("dave")),
            "{name}: {:?}",
            r.notes
        );
        // A second run plans nothing.
        let r2 = run(root, &opts("user-account", &["bob"], &[])).unwrap();
        assert!(r2.is_empty(), "{name}: second run: {}", r2.to_text());
    }
}

#[test]
fn remove_only_named_users() {
    for name in ["debian12", "ubuntu22", "centos7", "centos6", "alpine"] {
        let (dir, u) = tree(name);
        let root = dir.path();
        run(root, &opts("user-account", &[], &["alice"])).unwrap();
        assert_eq!(
            names(&read(root, "/etc/passwd")),
            ["root", "daemon", "svc", "bob", "carol", "dave", "nobody"],
            "{name}"
        );
        let g = read(root, "/etc/group");
        assert!(line(&g, "alice").is_none(), "{name}");
        assert_eq!(
            line(&g, "bob").unwrap(),
            format!("bob:x:{}:carol", u.base + 1)
        );
        assert!(!exists(root, "/home/alice") && exists(root, "/srv/carol/data"));
        // keep wins over remove (virt-sysprep's rule).
        let (dir, _) = tree(name);
        let r = run(dir.path(), &opts("user-account", &["alice"], &["alice"])).unwrap();
        assert!(r.is_empty(), "{name}: {}", r.to_text());
    }
}

#[test]
fn everyone_in_range_goes_without_options() {
    let (dir, _) = tree("debian12");
    let root = dir.path();
    run(root, &opts("defaults,user-account", &[], &[])).unwrap();
    assert_eq!(
        names(&read(root, "/etc/passwd")),
        ["root", "daemon", "svc", "nobody"]
    );
    assert!(!exists(root, "/home/alice") && !exists(root, "/home/bob"));
    assert!(exists(root, "/home"));
    // With the defaults the backups are gone before user-account runs.
    assert!(!exists(root, "/etc/passwd-"));
}

#[test]
fn a_home_holding_a_kept_users_home_stays() {
    let (dir, _) = tree("debian12");
    let root = dir.path();
    // bob's home moves below carol's: removing carol must not take bob's home along.
    let passwd = read(root, "/etc/passwd").replace("/home/bob", "/srv/carol/bob");
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::create_dir_all(root.join("srv/carol/bob")).unwrap();
    let r = run(root, &opts("user-account", &["bob"], &[])).unwrap();
    assert!(exists(root, "/srv/carol/bob"));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("/srv/carol") && w.contains("another user's home"))
    );
}

#[test]
fn bad_requests_fail_before_any_change() {
    let cases: &[(&str, &[&str], &[&str], &str)] = &[
        ("user-account", &["mallory"], &[], "no user mallory"),
        (
            "user-account",
            &[],
            &["mallory", "alice"],
            "no user mallory",
        ),
        ("user-account", &[], &["root"], "root is never removed"),
        (
            "user-account",
            &[],
            &["daemon"],
            "outside the guest's login range",
        ),
        ("user-account", &[], &["nobody"], "outside"),
        ("user-account", &["a b"], &[], "is not a user name"),
        ("user-account", &[""], &[], "is not a user name"),
        ("user-account", &["../etc"], &[], "is not a user name"),
        ("defaults", &["bob"], &[], "operation is not selected"),
        ("defaults", &[], &["bob"], "operation is not selected"),
    ];
    for (ops, keep, remove, want) in cases {
        let (dir, _) = tree("debian12");
        let root = dir.path();
        let before = accounts_snapshot(root);
        let e = run(root, &opts(ops, keep, remove)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(want), "{ops} {keep:?} {remove:?}: {msg}");
        assert!(msg.starts_with("user-account: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert_eq!(before, accounts_snapshot(root), "{msg}");
    }
}

#[test]
fn dry_run_lists_every_step_and_writes_nothing() {
    let (dir, _) = tree("centos7");
    let root = dir.path();
    let before = accounts_snapshot(root);
    let mut o = opts("user-account", &["bob"], &[]);
    o.dry_run = true;
    let fs = HostDir::open(root).unwrap();
    let p = plan(&fs, &Profile::builtin("linux").unwrap(), &o).unwrap();
    let paths: Vec<&str> = p.steps.iter().map(|s| s.path.as_str()).collect();
    for want in [
        "/etc/passwd",
        "/etc/shadow",
        "/etc/group",
        "/etc/gshadow",
        "/etc/subuid",
        "/home/alice",
        "/srv/carol",
        "/var/spool/mail/alice",
        "/var/spool/cron/alice",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    let json = serde_json::to_value(&p).unwrap();
    assert!(json["operations"].to_string().contains("user-account"));
    assert!(json["steps"].to_string().contains("\"delete\""));
    let mut fs = HostDir::open(root).unwrap();
    execute(&mut fs, &p).unwrap();
    assert_eq!(before, accounts_snapshot(root));
}

#[test]
fn hostile_home_and_names_are_left_alone() {
    let (dir, _) = tree("debian12");
    let root = dir.path();
    // A user whose home is / and one with a path in its name (both in range).
    let mut passwd = read(root, "/etc/passwd");
    passwd.push_str("eve:x:1010:1010::/:/bin/sh\n../../etc:x:1011:1011::/home/x:/bin/sh\n");
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    let r = run(root, &opts("user-account", &["bob"], &[])).unwrap();
    let pw = read(root, "/etc/passwd");
    assert!(line(&pw, "eve").is_none());
    assert!(pw.contains("../../etc:x:1011"), "{pw}");
    assert!(exists(root, "/etc/hostname") || exists(root, "/etc/os-release"));
    assert!(exists(root, "/home") && exists(root, "/usr"));
    assert!(
        r.warnings.iter().any(|w| w.contains("../../etc")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn a_symlinked_account_file_stops_the_operation() {
    let (dir, _) = tree("debian12");
    let root = dir.path();
    std::fs::rename(root.join("etc/shadow"), root.join("etc/shadow.real")).unwrap();
    std::os::unix::fs::symlink("shadow.real", root.join("etc/shadow")).unwrap();
    let before = accounts_snapshot(root);
    let r = run(root, &opts("user-account", &[], &[])).unwrap();
    assert!(r.is_empty(), "{}", r.to_text());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("/etc/shadow is not a regular file"))
    );
    assert_eq!(before, accounts_snapshot(root));
    assert!(exists(root, "/home/alice/.profile"));
    let e = run(root, &opts("user-account", &["bob"], &[])).unwrap_err();
    assert!(e.to_string().contains("refusing"), "{e}");
}
