#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The system customizations (`--hostname`, `--timezone`, `--root-password`, `--password`,
//! `--password-crypto`, `--ssh-inject`) on ext4 images of the distro layouts: debugfs reads
//! the files back, python3's `crypt` (libxcrypt) and `openssl passwd` check the hashes,
//! `e2fsck -fn` must be clean, refusals leave the image byte-identical, and a run with a
//! fixed timestamp is reproducible. One run on an XFS root is checked with xfs_db and
//! `xfs_repair -n`.

mod common;

use common::distros::build;
use imgscrub_disk::RawFile;
use imgscrub_fs::filesystem::Timestamp;
use imgscrub_fs::{Ext4, Filesystem};
use imgscrub_prepare::customize::ParseContext;
use imgscrub_prepare::{
    CustomizeItem, Options, Origin, PrepareError, Profile, Report, execute, parse_option, plan,
};
use imgscrub_testkit::{assert_e2fsck_clean, debugfs, make_ext4, require_tool, require_tools};
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

const T: i64 = 1_700_000_000;
const DAYS: &str = "19675"; // T / 86400
const KEY1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey1Key1Key1Key1 alice@laptop";
const KEY2: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQKey2 ops@bastion";
const ALL: &[&str] = &[
    "centos6", "centos7", "debian7", "debian12", "ubuntu14", "ubuntu22", "alpine",
];

fn empty_profile() -> Profile {
    Profile {
        name: "customize".into(),
        description: "customization only".into(),
        chain: Vec::new(),
        requires_family: Vec::new(),
        operations: None,
        actions: Vec::new(),
    }
}

fn items(args: &[(&str, &str)]) -> Vec<CustomizeItem> {
    let pc = ParseContext {
        base_dir: PathBuf::from("/"),
        home: None,
    };
    args.iter()
        .flat_map(|(o, a)| parse_option(o, Some(a), &pc, Origin::CommandLine).unwrap())
        .collect()
}

fn put(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn append(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    let mut old = std::fs::read_to_string(&p).unwrap_or_default();
    old.push_str(content);
    std::fs::write(p, old).unwrap();
}

/// What the layouts lack for these options: more zones, the guest's own `/etc/localtime`
/// form, Debian's `/etc/timezone`, RHEL 6's `/etc/sysconfig/clock`, a user `alice` with a
/// home, and Debian 12's / Ubuntu 22.04's yescrypt PAM line.
fn extras(name: &str, root: &Path) {
    put(root, "/usr/share/zoneinfo/Europe/Paris", "TZif2 Paris\n");
    put(root, "/usr/share/zoneinfo/America/New_York", "TZif2 NY\n");
    let lt = root.join("etc/localtime");
    match name {
        "centos6" => {
            std::fs::write(&lt, "TZif2 UTC\n").unwrap();
            put(root, "/etc/sysconfig/clock", "ZONE=\"UTC\"\nUTC=true\n");
        }
        "alpine" => symlink("/usr/share/zoneinfo/UTC", &lt).unwrap(),
        _ => symlink("../usr/share/zoneinfo/UTC", &lt).unwrap(),
    }
    if name.starts_with("debian") || name.starts_with("ubuntu") {
        put(root, "/etc/timezone", "Etc/UTC\n");
    }
    append(
        root,
        "/etc/passwd",
        "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
    );
    append(root, "/etc/shadow", "alice:!:19000:0:99999:7:::\n");
    append(root, "/etc/shadow-", "alice:!:19000:0:99999:7:::\n");
    append(root, "/etc/group", "alice:x:1000:\n");
    let home = root.join("home/alice");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750)).unwrap();
    chown(&home, Some(1000), Some(1000)).unwrap();
    if matches!(name, "debian12" | "ubuntu22") {
        put(
            root,
            "/etc/pam.d/common-password",
            "password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\n\
             password\trequisite\t\t\tpam_deny.so\n",
        );
    }
}

/// An ext4 image of the layout (plus extras); `None` when mke2fs is missing outside CI.
fn image(name: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build(name, &src);
    extras(name, &src);
    let img = t.path().join("root.ext4");
    if !make_ext4("default", &src, &img, 64) {
        return None;
    }
    Some((t, img))
}

fn opts(items: Vec<CustomizeItem>, time: Option<i64>) -> Options {
    Options {
        fixed_time: time.map(|s| Timestamp::new(s, 0)),
        customize: items,
        ..Options::default()
    }
}

fn customize(img: &Path, o: &Options) -> Result<Report, PrepareError> {
    let mut efs = Ext4::open(RawFile::open_rw(img).unwrap(), true).unwrap();
    let p = plan(&efs, &empty_profile(), o)?;
    let r = execute(&mut efs, &p)?;
    efs.flush().unwrap();
    Ok(r)
}

fn cat(img: &Path, path: &str) -> String {
    debugfs(img, &format!("cat {path}"))
}

/// `(type, mode, uid, gid)` from debugfs `stat`; `None` when the path does not exist.
fn stat(img: &Path, path: &str) -> Option<(String, u32, u32, u32)> {
    let out = debugfs(img, &format!("stat {path}"));
    let word_after = |key: &str| -> Option<String> {
        let i = out.find(key)? + key.len();
        out.get(i..)?.split_whitespace().next().map(str::to_owned)
    };
    Some((
        word_after("Type:")?,
        u32::from_str_radix(&word_after("Mode:")?, 8).ok()?,
        word_after("User:")?.parse().ok()?,
        word_after("Group:")?.parse().ok()?,
    ))
}

fn link_target(img: &Path, path: &str) -> String {
    let out = debugfs(img, &format!("stat {path}"));
    let i = out.find("Fast link dest: \"").expect("a fast symlink") + 17;
    out[i..].split('"').next().unwrap().to_string()
}

fn shadow_line(img: &Path, file: &str, user: &str) -> Vec<String> {
    cat(img, file)
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("{user} not in {file}"))
        .split(':')
        .map(str::to_owned)
        .collect()
}

/// libxcrypt (python3's `crypt`) recomputes `hash` for `password`; for `$6$`/`$5$` also
/// `openssl passwd`. Returns false when an oracle disagrees.
fn verifies(password: &str, hash: &str) -> bool {
    let py = require_tool("python3").expect("python3 is needed for the crypt oracle");
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
    assert!(o.status.success(), "python3 crypt failed: {o:?}");
    let py_ok = String::from_utf8_lossy(&o.stdout).trim() == hash;
    let flag = match hash.get(..3) {
        Some("$6$") => Some("-6"),
        Some("$5$") => Some("-5"),
        _ => None,
    };
    let ssl_ok = match (flag, require_tool("openssl")) {
        (Some(f), Some(ssl)) => {
            let salt = hash.split('$').nth(2).unwrap();
            let o = Command::new(ssl)
                .args(["passwd", f, "-salt", salt, password])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim() == hash
        }
        _ => true,
    };
    py_ok && ssl_ok
}

fn all_options() -> Vec<CustomizeItem> {
    items(&[
        ("hostname", "web-01.example.com"),
        ("timezone", "Europe/Paris"),
        ("root-password", "password:Root-Pw1"),
        ("password", "alice:password:Alice pw 2"),
        ("ssh-inject", &format!("alice:string:{KEY1}")),
        ("ssh-inject", &format!("root:string:{KEY2}")),
    ])
}

#[test]
fn every_system_option_on_every_layout() {
    require_tools!("mke2fs", "e2fsck", "debugfs", "python3");
    for &name in ALL {
        let Some((_t, img)) = image(name) else {
            return;
        };
        let rep = customize(&img, &opts(all_options(), Some(T))).unwrap();
        assert!(!rep.steps.is_empty(), "{name}");
        assert_e2fsck_clean(&img);

        // Host name.
        if name == "centos6" {
            assert!(
                stat(&img, "/etc/hostname").is_none(),
                "{name}: RHEL 6 has no /etc/hostname"
            );
            assert_eq!(
                cat(&img, "/etc/sysconfig/network"),
                "NETWORKING=yes\nHOSTNAME=web-01.example.com\n"
            );
        } else {
            assert_eq!(cat(&img, "/etc/hostname"), "web-01.example.com\n", "{name}");
        }
        let hosts = cat(&img, "/etc/hosts");
        for old in ["c6", "c7", "deb7", "deb12", "trusty", "jammy", "alpine"] {
            assert!(
                !hosts
                    .split_whitespace()
                    .any(|w| w == old || w.starts_with(&format!("{old}."))),
                "{name}: old name {old} left in /etc/hosts:\n{hosts}"
            );
        }
        assert!(hosts.contains("localhost"), "{name}: {hosts}");
        match name {
            "centos6" => assert!(
                !hosts.contains("web-01"),
                "{name}: RHEL resolves its name itself"
            ),
            "centos7" => {
                assert!(
                    hosts.contains("localhost.localdomain web-01.example.com web-01\n"),
                    "{hosts}"
                );
                assert!(
                    hosts.contains("10.0.0.5\tweb-01.example.com web-01\n"),
                    "{hosts}"
                );
            }
            _ => assert!(
                hosts
                    .lines()
                    .any(|l| l == "127.0.1.1\tweb-01.example.com web-01"),
                "{name}: no 127.0.1.1 line:\n{hosts}"
            ),
        }

        // Time zone.
        match name {
            "centos6" => {
                assert_eq!(cat(&img, "/etc/localtime"), "TZif2 Paris\n");
                assert_eq!(
                    cat(&img, "/etc/sysconfig/clock"),
                    "ZONE=\"Europe/Paris\"\nUTC=true\n"
                );
            }
            "alpine" => {
                assert_eq!(
                    link_target(&img, "/etc/localtime"),
                    "/usr/share/zoneinfo/Europe/Paris"
                )
            }
            _ => assert_eq!(
                link_target(&img, "/etc/localtime"),
                "../usr/share/zoneinfo/Europe/Paris",
                "{name}"
            ),
        }
        if name.starts_with("debian") || name.starts_with("ubuntu") {
            assert_eq!(cat(&img, "/etc/timezone"), "Europe/Paris\n", "{name}");
        } else {
            assert!(stat(&img, "/etc/timezone").is_none(), "{name}");
        }

        // Passwords: the method the guest uses, verified by libxcrypt and openssl.
        let prefix = if matches!(name, "debian12" | "ubuntu22") {
            "$y$j9T$"
        } else {
            "$6$"
        };
        for file in ["/etc/shadow", "/etc/shadow-"] {
            for (user, pw) in [("root", "Root-Pw1"), ("alice", "Alice pw 2")] {
                let f = shadow_line(&img, file, user);
                assert!(f[1].starts_with(prefix), "{name} {file} {user}: {}", f[1]);
                assert!(
                    verifies(pw, &f[1]),
                    "{name} {file} {user}: {} does not verify",
                    f[1]
                );
                assert!(!verifies("wrong", &f[1]));
                assert_eq!(f[2], DAYS, "{name} {file} {user}: last change");
                assert_eq!(
                    f[3..],
                    ["0", "99999", "7", "", "", ""],
                    "{name}: other fields kept"
                );
            }
            assert_eq!(
                shadow_line(&img, file, "bin")[1],
                "*",
                "{name}: other users kept"
            );
        }
        assert_eq!(
            stat(&img, "/etc/shadow").unwrap().1,
            0o640,
            "{name}: shadow mode kept"
        );

        // ssh keys.
        assert_eq!(
            stat(&img, "/home/alice/.ssh"),
            Some(("directory".into(), 0o700, 1000, 1000)),
            "{name}"
        );
        assert_eq!(
            stat(&img, "/home/alice/.ssh/authorized_keys"),
            Some(("regular".into(), 0o600, 1000, 1000)),
            "{name}"
        );
        assert_eq!(
            cat(&img, "/home/alice/.ssh/authorized_keys"),
            format!("{KEY1}\n")
        );
        assert_eq!(
            cat(&img, "/root/.ssh/authorized_keys"),
            format!("ssh-rsa AAAA builder@host\n{KEY2}\n"),
            "{name}: existing keys kept"
        );
        assert_eq!(stat(&img, "/root/.ssh/authorized_keys").unwrap().1, 0o600);
    }
}

#[test]
fn fixed_timestamp_is_reproducible_and_a_second_run_changes_nothing() {
    require_tools!("mke2fs", "e2fsck", "debugfs");
    for name in ["debian12", "centos7"] {
        let Some((t, a)) = image(name) else {
            return;
        };
        let b = t.path().join("copy.ext4");
        std::fs::copy(&a, &b).unwrap();
        customize(&a, &opts(all_options(), Some(T))).unwrap();
        customize(&b, &opts(all_options(), Some(T))).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{name}: two runs with the same timestamp differ"
        );
        // Again on the result: the key is there, the hash is the same: nothing to do.
        let efs = Ext4::open(RawFile::open(&a).unwrap(), false).unwrap();
        let p = plan(&efs, &empty_profile(), &opts(all_options(), Some(T))).unwrap();
        assert!(p.steps.is_empty(), "{name}: second run plans {:?}", p.steps);
        drop(efs);
        let again = customize(&a, &opts(all_options(), Some(T))).unwrap();
        assert!(again.steps.is_empty());
        assert_eq!(
            cat(&a, "/home/alice/.ssh/authorized_keys")
                .matches(KEY1)
                .count(),
            1,
            "{name}: key appended once"
        );
        assert_e2fsck_clean(&a);
        // Another timestamp: other salts.
        let c = t.path().join("other.ext4");
        std::fs::copy(&b, &c).unwrap();
        let h1 = shadow_line(&b, "/etc/shadow", "root")[1].clone();
        customize(&c, &opts(all_options(), Some(T + 86_400))).unwrap();
        let f = shadow_line(&c, "/etc/shadow", "root");
        assert_ne!(f[1], h1);
        assert_eq!(f[2], "19676");
    }
}

#[test]
fn missing_user_zone_or_home_is_an_error_and_the_image_is_unchanged() {
    require_tools!("mke2fs", "debugfs");
    let Some((t, img)) = image("debian12") else {
        return;
    };
    let before = std::fs::read(&img).unwrap();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("password", "bob:password:x")], "no user \"bob\""),
        (
            vec![("ssh-inject", "bob:string:ssh-ed25519 AAAA k")],
            "no user \"bob\"",
        ),
        (
            vec![("timezone", "Mars/Olympus_Mons")],
            "/usr/share/zoneinfo/Mars/Olympus_Mons does not exist",
        ),
        // bin's home is /bin, which the layout lacks.
        (
            vec![("ssh-inject", "bin:string:ssh-ed25519 AAAA k")],
            "home directory /bin does not exist",
        ),
        (
            vec![("password-crypto", "md5"), ("root-password", "password:x")],
            "md5 is not supported",
        ),
        // An error after good options: nothing of the good ones is written either.
        (
            vec![
                ("hostname", "h"),
                ("root-password", "password:x"),
                ("password", "nobody2:random"),
            ],
            "no user \"nobody2\"",
        ),
    ];
    for (args, want) in cases {
        let e = customize(&img, &opts(items(&args), None)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(want), "{args:?}: {msg}");
        assert!(
            msg.starts_with("--"),
            "{args:?}: the option is named: {msg}"
        );
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{args:?}: image changed"
        );
    }
    // Without /etc/shadow (no such guest should exist, but it must not be created).
    let src = t.path().join("noshadow");
    std::fs::create_dir(&src).unwrap();
    build("alpine", &src);
    std::fs::remove_file(src.join("etc/shadow")).unwrap();
    let img2 = t.path().join("noshadow.ext4");
    assert!(make_ext4("default", &src, &img2, 64));
    let e = customize(
        &img2,
        &opts(items(&[("root-password", "password:x")]), None),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no /etc/shadow"), "{e}");
}

#[test]
fn selectors_and_password_crypto() {
    require_tools!("mke2fs", "e2fsck", "debugfs", "python3");
    let Some((t, img)) = image("debian12") else {
        return;
    };
    let pwfile = t.path().join("pw.txt");
    std::fs::write(&pwfile, "from a file\nsecond line ignored\n").unwrap();
    let pwarg = format!("alice:locked:file:{}", pwfile.display());
    // --password-crypto is global (virt-customize): it applies to the option before it too.
    let rep = customize(
        &img,
        &opts(
            items(&[
                ("root-password", "password:Root-Pw1"),
                ("password-crypto", "sha256"),
                ("password", &pwarg),
            ]),
            None,
        ),
    )
    .unwrap();
    assert!(rep.steps.iter().any(|s| s.path == "/etc/shadow"));
    let root = shadow_line(&img, "/etc/shadow", "root");
    assert!(root[1].starts_with("$5$"), "{}", root[1]);
    assert!(verifies("Root-Pw1", &root[1]));
    let alice = shadow_line(&img, "/etc/shadow", "alice");
    let h = alice[1].strip_prefix('!').expect("locked");
    assert!(
        h.starts_with("$5$") && verifies("from a file", h),
        "{}",
        alice[1]
    );
    assert_e2fsck_clean(&img);

    for (sel, want) in [("disabled", "*"), ("locked", "!*")] {
        customize(&img, &opts(items(&[("root-password", sel)]), Some(T))).unwrap();
        assert_eq!(shadow_line(&img, "/etc/shadow", "root")[1], want);
    }
    customize(
        &img,
        &opts(
            items(&[
                ("password-crypto", "yescrypt"),
                ("root-password", "password:y"),
            ]),
            None,
        ),
    )
    .unwrap();
    let y = shadow_line(&img, "/etc/shadow", "root")[1].clone();
    assert!(y.starts_with("$y$") && verifies("y", &y), "{y}");
    assert_e2fsck_clean(&img);
}

#[test]
fn random_password_is_shown_once_and_verifies() {
    require_tools!("mke2fs", "e2fsck", "debugfs", "python3");
    let Some((_t, img)) = image("centos7") else {
        return;
    };
    let rep = customize(&img, &opts(items(&[("root-password", "random")]), Some(T))).unwrap();
    let notes: Vec<&String> = rep
        .notes
        .iter()
        .filter(|n| n.contains("random password for root: "))
        .collect();
    assert_eq!(notes.len(), 1, "{:?}", rep.notes);
    assert!(notes[0].contains("not reproducible"), "{}", notes[0]);
    let pw = notes[0]
        .split("random password for root: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(pw.len(), 16);
    let h = shadow_line(&img, "/etc/shadow", "root")[1].clone();
    assert!(h.starts_with("$6$") && verifies(pw, &h), "{h}");
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("differ from run to run")),
        "{:?}",
        rep.warnings
    );
    assert_e2fsck_clean(&img);
}

#[test]
fn new_ssh_dir_gets_ssh_home_t_on_a_labelled_selinux_guest() {
    require_tools!("mke2fs", "e2fsck", "debugfs");
    let Some((_t, img)) = image("centos7") else {
        return;
    };
    let dbg = require_tool("debugfs").unwrap();
    for (p, ty) in [
        ("/", "root_t"),
        ("/home", "home_root_t"),
        ("/home/alice", "user_home_dir_t"),
    ] {
        let ctx = format!("unconfined_u:object_r:{ty}:s0");
        let o = Command::new(&dbg)
            .args(["-w", "-R", &format!("ea_set {p} security.selinux {ctx}")])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    let rep = customize(
        &img,
        &opts(
            items(&[("ssh-inject", &format!("alice:string:{KEY1}"))]),
            None,
        ),
    )
    .unwrap();
    assert!(
        rep.notes
            .iter()
            .any(|n| n.contains("security.selinux label")),
        "{:?}",
        rep.notes
    );
    let label = |p: &str| debugfs(&img, &format!("ea_get {p} security.selinux"));
    assert!(
        label("/home/alice/.ssh").contains("unconfined_u:object_r:ssh_home_t:s0"),
        "{}",
        label("/home/alice/.ssh")
    );
    assert!(
        label("/home/alice/.ssh/authorized_keys").contains("unconfined_u:object_r:ssh_home_t:s0"),
        "{}",
        label("/home/alice/.ssh/authorized_keys")
    );
    assert!(
        stat(&img, "/.autorelabel").is_none(),
        "labelled: no relabel needed"
    );
    assert_e2fsck_clean(&img);
}

#[test]
fn system_options_on_an_xfs_root() {
    use imgscrub_fs::Xfs;
    use imgscrub_testkit::{
        XfsOptions, assert_xfs_repair_clean, make_xfs_with, xfs_cat, xfs_readlink, xfs_stat,
    };
    require_tools!("mkfs.xfs", "xfs_db", "xfs_repair", "python3");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build("centos7", &src);
    extras("centos7", &src);
    std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let Some(fx) = make_xfs_with(
        "centos7",
        &t.path().join("img"),
        &XfsOptions {
            dirty: false,
            size_mb: Some(64),
            src: Some(src),
        },
    ) else {
        return;
    };
    let img = fx.image;
    {
        let mut fs = Xfs::open(RawFile::open_rw(&img).unwrap(), true).unwrap();
        let p = plan(&fs, &empty_profile(), &opts(all_options(), Some(T))).unwrap();
        execute(&mut fs, &p).unwrap();
        fs.flush().unwrap();
    }
    assert_xfs_repair_clean(&img);
    let cat = |p: &str| String::from_utf8(xfs_cat(&img, p).unwrap_or_default()).unwrap();
    assert_eq!(cat("/etc/hostname"), "web-01.example.com\n");
    let shadow = cat("/etc/shadow");
    let root = shadow.lines().find(|l| l.starts_with("root:")).unwrap();
    let h = root.split(':').nth(1).unwrap();
    assert!(h.starts_with("$6$") && verifies("Root-Pw1", h), "{root}");
    assert_eq!(root.split(':').nth(2), Some(DAYS));
    assert_eq!(cat("/home/alice/.ssh/authorized_keys"), format!("{KEY1}\n"));
    assert_eq!(
        cat("/root/.ssh/authorized_keys"),
        format!("ssh-rsa AAAA builder@host\n{KEY2}\n")
    );
    // xfs_db's view of modes and owners.
    let st = |p: &str| {
        let s = xfs_stat(&img, p).unwrap_or_else(|| panic!("{p} missing"));
        (s.mode, s.uid, s.gid)
    };
    assert_eq!(st("/home/alice/.ssh"), (0o040_700, 1000, 1000));
    assert_eq!(
        st("/home/alice/.ssh/authorized_keys"),
        (0o100_600, 1000, 1000)
    );
    assert_eq!(
        xfs_readlink(&img, "/etc/localtime").unwrap(),
        b"../usr/share/zoneinfo/Europe/Paris"
    );
}

#[test]
fn dangling_links_are_not_followed_into_new_files() {
    require_tools!("mke2fs", "e2fsck", "debugfs");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build("debian12", &src);
    extras("debian12", &src);
    std::fs::remove_file(src.join("etc/hosts")).unwrap();
    symlink("/run/hosts.generated", src.join("etc/hosts")).unwrap();
    let img = t.path().join("root.ext4");
    if !make_ext4("default", &src, &img, 64) {
        return;
    }
    let rep = customize(&img, &opts(items(&[("hostname", "web")]), None)).unwrap();
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("/etc/hosts is a link to a missing file")),
        "{:?}",
        rep.warnings
    );
    assert_eq!(cat(&img, "/etc/hostname"), "web\n");
    assert_eq!(link_target(&img, "/etc/hosts"), "/run/hosts.generated");
    assert!(stat(&img, "/run/hosts.generated").is_none());
    assert_e2fsck_clean(&img);
}

/// SUSE has no layout in tests/common: a small one on a host directory, with
/// `/etc/HOSTNAME`, `TIMEZONE=` in `/etc/sysconfig/clock` and a pretty host name.
#[test]
fn suse_files_and_machine_info() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    put(
        r,
        "/etc/SuSE-release",
        "SUSE Linux Enterprise Server 12 (x86_64)\nVERSION = 12\n",
    );
    put(
        r,
        "/etc/os-release",
        "NAME=\"SLES\"\nVERSION_ID=\"12.5\"\nID=\"sles\"\n",
    );
    put(r, "/etc/HOSTNAME", "old.suse.lan\n");
    put(r, "/etc/hostname", "old.suse.lan\n");
    put(
        r,
        "/etc/hosts",
        "127.0.0.1\tlocalhost\n192.168.1.9\told.suse.lan old\n",
    );
    put(
        r,
        "/etc/machine-info",
        "PRETTY_HOSTNAME=\"Old box\"\nICON_NAME=computer-vm\n",
    );
    put(
        r,
        "/etc/sysconfig/clock",
        "HWCLOCK=\"-u\"\nTIMEZONE=\"UTC\"\nDEFAULT_TIMEZONE=\"US/Eastern\"\n",
    );
    put(r, "/usr/share/zoneinfo/Europe/Paris", "TZif2 Paris\n");
    std::fs::create_dir_all(r.join("etc")).unwrap();
    symlink("/usr/share/zoneinfo/UTC", r.join("etc/localtime")).unwrap();
    let mut fs = imgscrub_fs::HostDir::open(r).unwrap();
    let o = opts(
        items(&[
            ("hostname", "web-01.example.com"),
            ("timezone", "Europe/Paris"),
        ]),
        None,
    );
    let p = plan(&fs, &empty_profile(), &o).unwrap();
    execute(&mut fs, &p).unwrap();
    let read = |p: &str| std::fs::read_to_string(r.join(p.trim_start_matches('/'))).unwrap();
    assert_eq!(read("/etc/HOSTNAME"), "web-01.example.com\n");
    assert_eq!(read("/etc/hostname"), "web-01.example.com\n");
    assert_eq!(
        read("/etc/hosts"),
        "127.0.0.1\tlocalhost\n192.168.1.9\tweb-01.example.com web-01\n"
    );
    assert_eq!(
        read("/etc/machine-info"),
        "PRETTY_HOSTNAME=\"web-01.example.com\"\nICON_NAME=computer-vm\n"
    );
    assert_eq!(
        read("/etc/sysconfig/clock"),
        "HWCLOCK=\"-u\"\nTIMEZONE=\"Europe/Paris\"\nDEFAULT_TIMEZONE=\"US/Eastern\"\n"
    );
    assert_eq!(
        std::fs::read_link(r.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Paris")
    );
    assert!(
        !r.join("etc/timezone").exists(),
        "SUSE has no /etc/timezone"
    );
}
