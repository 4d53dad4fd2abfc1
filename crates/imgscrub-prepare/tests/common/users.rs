//! Login users added to a synthetic distribution tree (see `distros.rs`) for the
//! `user-account` operation: account files in each distribution's style, homes, mail
//! spools and crontabs. Self-contained (std only) so the CLI tests can include it too.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::Path;

/// What `add_login_users` put in a tree.
pub struct Users {
    /// UID of alice; bob, carol, dave follow (CentOS 6 starts at 500).
    pub base: u32,
    /// Where the mail spool of a user is.
    pub mail_dir: &'static str,
    /// Where the crontab of a user is.
    pub cron_dir: &'static str,
    /// The distribution has /etc/gshadow.
    pub gshadow: bool,
}

fn write(root: &Path, path: &str, content: &str, mode: u32) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn dir(root: &Path, path: &str, uid: u32, gid: u32, mode: u32) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(&p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    lchown(&p, Some(uid), Some(gid)).unwrap();
}

fn owned(root: &Path, path: &str, content: &str, uid: u32, gid: u32, mode: u32) {
    write(root, path, content, mode);
    lchown(
        root.join(path.trim_start_matches('/')),
        Some(uid),
        Some(gid),
    )
    .unwrap();
}

/// Add root's companions and four login users to the tree of `distro`:
/// - `svc` (UID base-1, home /var/lib/svc): a system account, never removed;
/// - `alice` (base, /home/alice, personal group, in `sudo`/`wheel` and `users`);
/// - `bob` (base+1, /home/bob, personal group, in `sudo`/`wheel`, admin of it in gshadow);
/// - `carol` (base+2, home /srv/carol owned by her, primary group `users`, no group of
///   her own);
/// - `dave` (base+3, home `/opt`, a top-level directory he owns: never removed);
/// - `nobody` (65534): outside the range.
///
/// alice has a mail spool and a crontab; bob a crontab.
pub fn add_login_users(root: &Path, distro: &str) -> Users {
    let redhat = distro.starts_with("centos");
    let alpine = distro == "alpine";
    let base = if distro == "centos6" { 500 } else { 1000 };
    let (a, b, c, d, s) = (base, base + 1, base + 2, base + 3, base - 1);
    let admin = if redhat || alpine { "wheel" } else { "sudo" };
    let admin_gid = if redhat || alpine { 10 } else { 27 };
    let shell = if alpine { "/bin/ash" } else { "/bin/bash" };
    let passwd = format!(
        "root:x:0:0:root:/root:{shell}\n\
         daemon:x:2:2:daemon:/sbin:/sbin/nologin\n\
         svc:x:{s}:{s}:service:/var/lib/svc:/sbin/nologin\n\
         alice:x:{a}:{a}:Alice Example,,,:/home/alice:{shell}\n\
         bob:x:{b}:{b}::/home/bob:{shell}\n\
         carol:x:{c}:100::/srv/carol:/bin/sh\n\
         dave:x:{d}:{d}::/opt:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    );
    let shadow = "root:*:19000:0:99999:7:::\n\
                  daemon:*:19000:0:99999:7:::\n\
                  svc:!:19000::::::\n\
                  alice:$6$salt$aliceHash:19000:0:99999:7:::\n\
                  bob:$6$salt$bobHash:19000:0:99999:7:::\n\
                  carol:!:19000:0:99999:7:::\n\
                  dave:!:19000:0:99999:7:::\n\
                  nobody:*:19000:0:99999:7:::\n";
    let group = format!(
        "root:x:0:\n\
         daemon:x:2:\n\
         {admin}:x:{admin_gid}:alice,bob\n\
         users:x:100:alice\n\
         svc:x:{s}:\n\
         alice:x:{a}:\n\
         bob:x:{b}:carol\n\
         dave:x:{d}:\n\
         nogroup:x:65534:\n"
    );
    let gshadow = format!(
        "root:*::\n\
         daemon:*::\n\
         {admin}:*:bob:alice,bob\n\
         users:*::alice\n\
         svc:!::\n\
         alice:!::\n\
         bob:!::carol\n\
         dave:!::\n\
         nogroup:*::\n"
    );
    write(root, "/etc/passwd", &passwd, 0o644);
    write(root, "/etc/passwd-", &passwd, 0o644);
    write(root, "/etc/shadow", shadow, 0o640);
    write(root, "/etc/shadow-", shadow, 0o640);
    write(root, "/etc/group", &group, 0o644);
    write(root, "/etc/group-", &group, 0o644);
    if !alpine {
        write(root, "/etc/gshadow", &gshadow, 0o640);
        write(
            root,
            "/etc/subuid",
            "alice:100000:65536\nbob:165536:65536\n",
            0o644,
        );
        write(
            root,
            "/etc/subgid",
            "alice:100000:65536\nbob:165536:65536\n",
            0o644,
        );
        write(
            root,
            "/etc/login.defs",
            &format!(
                "# login.defs\nMAIL_DIR\t/var/{}\nUID_MIN\t\t\t {base}\nUID_MAX\t\t\t60000\n\
                 SYS_UID_MIN\t\t  201\n",
                if redhat { "spool/mail" } else { "mail" }
            ),
            0o644,
        );
    } else {
        let _ = fs::remove_file(root.join("etc/login.defs"));
    }
    dir(root, "/home/alice", a, a, 0o700);
    owned(root, "/home/alice/.profile", "export A=1\n", a, a, 0o644);
    dir(root, "/home/alice/work/deep", a, a, 0o755);
    owned(
        root,
        "/home/alice/work/deep/notes.txt",
        "secret\n",
        a,
        a,
        0o600,
    );
    dir(root, "/home/bob", b, b, 0o700);
    owned(root, "/home/bob/.profile", "export B=1\n", b, b, 0o644);
    dir(root, "/srv/carol", c, 100, 0o750);
    owned(root, "/srv/carol/data", "carol's\n", c, 100, 0o640);
    dir(root, "/opt", d, d, 0o755);
    write(root, "/opt/vendor/app", "app\n", 0o755);
    dir(root, "/var/lib/svc", s, s, 0o750);
    let mail_dir = if redhat || alpine {
        "/var/spool/mail"
    } else {
        "/var/mail"
    };
    let cron_dir = if redhat {
        "/var/spool/cron"
    } else {
        "/var/spool/cron/crontabs"
    };
    owned(
        root,
        &format!("{mail_dir}/alice"),
        "From x\n\nhello\n",
        a,
        8,
        0o660,
    );
    owned(
        root,
        &format!("{cron_dir}/alice"),
        "0 * * * * backup\n",
        a,
        a,
        0o600,
    );
    owned(
        root,
        &format!("{cron_dir}/bob"),
        "5 * * * * b\n",
        b,
        b,
        0o600,
    );
    Users {
        base,
        mail_dir,
        cron_dir,
        gshadow: !alpine,
    }
}

/// First `:` fields of the lines of an account file.
pub fn names(content: &str) -> Vec<String> {
    content
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(str::to_string)
        .collect()
}

/// The line of `name` in an account file.
pub fn line<'a>(content: &'a str, name: &str) -> Option<&'a str> {
    content.lines().find(|l| l.split(':').next() == Some(name))
}
