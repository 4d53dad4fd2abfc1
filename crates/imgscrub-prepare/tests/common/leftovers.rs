//! Build-time leftovers added to a synthetic distribution tree (see `distros.rs`): the
//! `logfiles` paths outside /var/log, `/etc/machine-info`, and the sshd settings a kickstart
//! or preseed leaves. Self-contained (std only) so the CLI tests can include it too.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn write(root: &Path, path: &str, content: &[u8], mode: u32) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// sshd_config as a kickstart leaves it: the build-time lines, a commented default, a
/// deliberate `no`, and a `Match` block whose settings are not build leftovers.
pub const SSHD_CONFIG: &str = "# written by the kickstart\n\
Include /etc/ssh/sshd_config.d/*.conf\n\
#PermitRootLogin yes\n\
PermitRootLogin yes\n\
  passwordauthentication=YES   # for packer\n\
PermitEmptyPasswords no\n\
UsePAM yes\n\
Match User backup\n\
\tPasswordAuthentication yes\n\
\tPermitRootLogin yes\n";

/// SSHD_CONFIG after `sshd-build-settings` with a modern sshd.
pub const SSHD_CONFIG_DONE: &str = "# written by the kickstart\n\
Include /etc/ssh/sshd_config.d/*.conf\n\
#PermitRootLogin yes\n\
PermitRootLogin prohibit-password\n\
  passwordauthentication=no   # for packer\n\
PermitEmptyPasswords no\n\
UsePAM yes\n\
Match User backup\n\
\tPasswordAuthentication yes\n\
\tPermitRootLogin yes\n";

/// A cloud-init drop-in (`ssh_pwauth: true`), CRLF and no final newline.
pub const DROPIN: &str = "# cloud-init\r\nPasswordAuthentication yes\r\nPermitRootLogin=yes";
/// DROPIN after the operation (modern sshd).
pub const DROPIN_DONE: &str =
    "# cloud-init\r\nPasswordAuthentication no\r\nPermitRootLogin=prohibit-password";
/// A drop-in that already says no: never written.
pub const DROPIN_NO: &str = "PasswordAuthentication no\n";

pub const MACHINE_INFO: &str = "PRETTY_HOSTNAME=\"Build host 7\"\nICON_NAME=computer-vm\n\
CHASSIS=vm\nLOCATION=\"Builder rack 3\"\nDEPLOYMENT=production\nHARDWARE_VENDOR=QEMU\n";
pub const MACHINE_INFO_DONE: &str = "ICON_NAME=computer-vm\nCHASSIS=vm\nDEPLOYMENT=production\n";

/// Files the `logfiles` operation deletes (outside /var/log).
pub const DELETED: &[&str] = &[
    "/root/initial-setup-ks.cfg",
    "/root/original-ks.cfg",
    "/var/lib/logrotate.status",
    "/var/lib/logrotate/status",
    "/var/lib/logrotate/logrotate.status",
    "/var/cache/fontconfig/0123-le64.cache-7",
    "/var/cache/man/index.db",
    "/var/cache/man/cat1",
    "/var/cache/gdm/alice/dmrc",
    "/var/lib/AccountsService/users/alice",
    "/var/lib/AccountService/users/alice",
    "/var/lib/fprint/alice",
    "/etc/Pegasus/server.pem",
    "/etc/Pegasus/client.srl",
];

/// What stays: the directories themselves, an unrelated Pegasus file, logrotate's config.
pub const KEPT: &[&str] = &[
    "/var/cache/fontconfig",
    "/var/cache/man",
    "/var/lib/AccountsService/users",
    "/var/lib/fprint",
    "/var/lib/logrotate",
    "/etc/Pegasus/cimserver_planned.conf",
    "/etc/logrotate.conf",
];

/// Add the leftovers. `modern_sshd`: the sshd binary knows `prohibit-password`
/// (OpenSSH ≥ 7.0); otherwise it is an old one that does not.
pub fn add_leftovers(root: &Path, modern_sshd: bool) {
    let sshd: &[u8] = if modern_sshd {
        b"\x7fELF sshd\0without-password\0prohibit-password\0forced-commands-only\0"
    } else {
        b"\x7fELF sshd\0without-password\0forced-commands-only\0"
    };
    write(root, "/usr/sbin/sshd", sshd, 0o755);
    write(root, "/etc/ssh/sshd_config", SSHD_CONFIG.as_bytes(), 0o600);
    write(
        root,
        "/etc/ssh/sshd_config.d/50-cloud-init.conf",
        DROPIN.as_bytes(),
        0o600,
    );
    write(
        root,
        "/etc/ssh/sshd_config.d/60-cloudimg-settings.conf",
        DROPIN_NO.as_bytes(),
        0o644,
    );
    write(root, "/etc/machine-info", MACHINE_INFO.as_bytes(), 0o644);
    write(root, "/var/named/data/named.run", b"zone loaded\n", 0o640);
    write(root, "/etc/logrotate.conf", b"weekly\n", 0o644);
    for f in DELETED {
        if f.ends_with("cat1") || f.ends_with("fprint/alice") {
            write(root, &format!("{f}/x.gz"), b"x", 0o644);
        } else {
            write(root, f, b"state\n", 0o644);
        }
    }
    write(root, "/etc/Pegasus/cimserver_planned.conf", b"x=1\n", 0o644);
}
