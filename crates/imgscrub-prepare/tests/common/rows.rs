//! The spec's rows as assertions on a prepared root directory: shared by the host-directory
//! tests (distros.rs) and the image tests (distros_xfs.rs, which check a kernel mount of the
//! prepared XFS image).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub fn p(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

pub fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(p(root, path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn exists(root: &Path, path: &str) -> bool {
    fs::symlink_metadata(p(root, path)).is_ok()
}

pub fn link(root: &Path, path: &str) -> String {
    fs::read_link(p(root, path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .display()
        .to_string()
}

pub fn mode(root: &Path, path: &str) -> u32 {
    fs::symlink_metadata(p(root, path))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

pub fn root_shadow_field(root: &Path) -> String {
    read(root, "/etc/shadow")
        .lines()
        .find(|l| l.starts_with("root:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .to_string()
}

/// The generic `linux` rows (L1-L22 and the extra operations) on any distro.
pub fn assert_linux_rows(root: &Path, name: &str) {
    // L1: logs truncated, files kept with their modes.
    assert_eq!(
        fs::metadata(p(root, "/var/log/wtmp")).unwrap().len(),
        0,
        "{name}"
    );
    assert_eq!(mode(root, "/var/log/wtmp"), 0o664, "{name}");
    assert_eq!(mode(root, "/var/log/btmp"), 0o600, "{name}");
    assert!(exists(root, "/var/log/lastlog"));
    assert_eq!(read(root, "/var/log/triton.log"), "");
    // L22: the run-once guard is kept.
    assert!(exists(root, "/var/log/.mdata-image.run"));
    // L2
    for k in [
        "ssh_host_rsa_key",
        "ssh_host_rsa_key.pub",
        "ssh_host_ed25519_key",
    ] {
        assert!(!exists(root, &format!("/etc/ssh/{k}")), "{name}: {k}");
    }
    assert!(exists(root, "/etc/ssh/sshd_config"));
    // L3
    for f in [
        ".bash_history",
        ".lesshst",
        ".viminfo",
        ".ssh/authorized_keys",
        ".ssh/known_hosts",
        ".ssh/id_rsa",
    ] {
        assert!(!exists(root, &format!("/root/{f}")), "{name}: {f}");
    }
    assert!(
        exists(root, "/root/.ssh/config"),
        "{name}: ~/.ssh/config is kept"
    );
    // L5: locked root (checklist row 6 accepts "*").
    assert_eq!(root_shadow_field(root), "*", "{name}");
    assert_eq!(mode(root, "/etc/shadow"), 0o640);
    // L6, L7, L8
    for f in [
        "/var/svc/provision_success",
        "/var/svc/mdata-operator-script",
        "/var/svc/mdata-user-script",
        "/var/db/mdata-user-data",
        "/lib/smartdc/.firstboot-complete-do-not-delete",
    ] {
        assert!(!exists(root, f), "{name}: {f}");
    }
    let m = fs::metadata(p(root, "/lib/smartdc/common.lib")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "{name}: L8 chown");
    // L9
    assert_eq!(read(root, "/etc/hostname"), "", "{name}");
    // L11
    assert!(!exists(root, "/etc/udev/rules.d/70-persistent-net.rules"));
    // L19
    assert!(!exists(root, "/tmp/prepare-image-trace.log"));
    assert!(!exists(root, "/tmp/.mdata-image.run"));
    assert!(!exists(root, "/var/tmp/build.tmp"));
    assert!(exists(root, "/tmp"));
    // backup-files
    assert!(!exists(root, "/etc/ssh/sshd_config.bak"));
    // random-seed
    assert!(!exists(root, "/var/lib/systemd/random-seed"));
    // passwd-backups
    assert!(!exists(root, "/etc/shadow-"));
}

/// L14: fstab keeps the root line but loses vdb and cloudconfig lines.
pub fn assert_linux_fstab(root: &Path, name: &str) {
    let fstab = read(root, "/etc/fstab");
    assert!(fstab.contains("UUID=0a1b2c3d"), "{name}");
    assert!(
        !fstab.contains("/dev/vdb") && !fstab.contains("cloudconfig"),
        "{name}"
    );
}

/// The `linux` rows specific to the centos7 tree (L15, network-generated, hosts-instance,
/// machine-id).
pub fn assert_linux_centos7_rows(root: &Path) {
    assert!(exists(root, "/var/lib/cloud"));
    assert_eq!(fs::read_dir(p(root, "/var/lib/cloud")).unwrap().count(), 0);
    assert!(!exists(root, "/var/log/cloud-init.log"));
    assert!(!exists(root, "/var/log/journal/4f1b7a1e/system.journal"));
    assert!(!exists(root, "/var/lib/systemd/credential.secret"));
    assert_eq!(
        read(root, "/etc/hosts"),
        "127.0.0.1\tlocalhost localhost.localdomain\n::1         localhost6\n"
    );
    assert!(!exists(
        root,
        "/etc/NetworkManager/system-connections/Wired.nmconnection"
    ));
    assert!(!exists(root, "/var/lib/NetworkManager/internal-eth0.lease"));
    assert!(exists(root, "/var/run"), "the /var/run link stays");
    // machine-id: emptied in place, mode kept; the dbus link is not written through.
    assert_eq!(read(root, "/etc/machine-id"), "");
    assert_eq!(mode(root, "/etc/machine-id"), 0o444);
    assert_eq!(link(root, "/var/lib/dbus/machine-id"), "/etc/machine-id");
}

/// The lx checklist (spec §4) rows every lx profile must meet.
pub fn assert_lx_checklist(root: &Path, name: &str, systemd: bool) {
    // 1
    let sshd = read(root, "/etc/ssh/sshd_config");
    assert!(
        sshd.lines()
            .any(|l| l.starts_with("PasswordAuthentication no")),
        "{name}"
    );
    assert!(sshd.contains("UsePrivilegeSeparation yes"), "{name} X8");
    // 2
    for t in ["get", "put", "list", "delete"] {
        assert_eq!(
            link(root, &format!("/usr/sbin/mdata-{t}")),
            format!("/native/usr/sbin/mdata-{t}"),
            "{name}"
        );
    }
    // 3
    assert!(read(root, "/etc/profile.d/native_manpath.sh").contains("/native/usr/share/man"));
    // 4: the guest tools we were given are root-owned and executable (L8).
    for f in ["joyent_rc.local", "common.lib", "mdata-fetch"] {
        let m = fs::metadata(p(root, &format!("/lib/smartdc/{f}"))).unwrap();
        assert!(
            m.is_file() && m.uid() == 0 && m.mode() & 0o111 != 0,
            "{name}: {f}"
        );
    }
    // 5
    let hosts = read(root, "/etc/hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with("127.0.0.1") && l.contains("localhost")),
        "{name}"
    );
    // 6
    let f = root_shadow_field(root);
    assert!(f.is_empty() || f == "*", "{name}: {f}");
    // 8
    for u in ["systemd-hostnamed", "systemd-localed", "systemd-timedated"] {
        let path = format!("/etc/systemd/system/{u}.service.d/override.conf");
        if systemd {
            let c = read(root, &path);
            for k in [
                "PrivateTmp",
                "PrivateDevices",
                "PrivateNetwork",
                "ProtectSystem",
                "ProtectHome",
            ] {
                assert!(c.contains(&format!("{k}=no")), "{name}: {u} {k}");
            }
        } else {
            assert!(!exists(root, &path), "{name}: {path}");
        }
    }
    // X1, X6
    for d in [
        "dev",
        "etc/default",
        "etc/svc/volatile",
        "lib",
        "proc",
        "usr",
        "var",
    ] {
        assert_eq!(
            mode(root, &format!("/native/{d}")),
            0o755,
            "{name}: /native/{d}"
        );
    }
    assert_eq!(mode(root, "/native/tmp"), 0o1777);
    assert!(fs::metadata(p(root, "/var/svc")).unwrap().is_dir());
    assert!(fs::metadata(p(root, "/var/db")).unwrap().is_dir());
    assert!(
        fs::metadata(p(root, "/var/ld/64")).unwrap().is_dir(),
        "X2 dirs"
    );
    // X3: the zone fstab, the original kept.
    let fstab = read(root, "/etc/fstab");
    assert!(
        fstab
            .starts_with("none\t\t/\t\tzfs\tdefaults\t1 1\nproc\t\t/proc\t\tproc\tdefaults\t0 0\n"),
        "{name}: {fstab}"
    );
    let backups: Vec<_> = fs::read_dir(p(root, "/etc"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("fstab.lxsave_"))
        .collect();
    assert_eq!(backups.len(), 1, "{name}");
    assert!(
        fs::read_to_string(backups[0].path())
            .unwrap()
            .contains("UUID=0a1b2c3d")
    );
    // X13
    assert!(read(root, "/etc/imgscrub-prepared").contains("profile="));
    // the generic rows apply too
    assert_linux_rows(root, name);
}

/// The lx-centos rows specific to CentOS 7 (C6, C11-C14, merged /usr).
pub fn assert_lx_centos7_rows(root: &Path) {
    // C6: masked units that exist, with their wants links removed.
    assert_eq!(
        link(root, "/etc/systemd/system/auditd.service"),
        "/dev/null"
    );
    assert_eq!(
        link(root, "/etc/systemd/system/irqbalance.service"),
        "/dev/null"
    );
    assert_eq!(link(root, "/etc/systemd/system/kdump.service"), "/dev/null");
    assert!(!exists(
        root,
        "/etc/systemd/system/multi-user.target.wants/auditd.service"
    ));
    assert!(
        !exists(root, "/etc/systemd/system/smartd.service"),
        "no unit, no mask"
    );
    // C12
    assert!(!exists(
        root,
        "/etc/systemd/system/dbus-org.freedesktop.NetworkManager.service"
    ));
    assert!(!exists(
        root,
        "/etc/systemd/system/dbus-org.freedesktop.nm-dispatcher.service"
    ));
    assert!(!exists(
        root,
        "/etc/systemd/system/multi-user.target.wants/NetworkManager.service"
    ));
    assert_eq!(
        link(
            root,
            "/etc/systemd/system/multi-user.target.wants/network.service"
        ),
        "/etc/rc.d/init.d/network"
    );
    assert!(exists(
        root,
        "/etc/systemd/system/multi-user.target.wants/sshd.service"
    ));
    // C11 over the real script; C13; C14 (through the /etc/rc.local link too)
    assert!(read(root, "/etc/rc.d/init.d/network").contains("Provides: $network"));
    assert_eq!(
        read(root, "/etc/systemd/system/httpd.service.d/override.conf"),
        "[Service]\nPrivateTmp=no\n"
    );
    assert_eq!(mode(root, "/etc/rc.d/rc.local"), 0o755);
    // C4, C9 are CentOS 6 only
    assert!(!exists(root, "/etc/inittab"));
    // merged /usr: /lib/smartdc is /usr/lib/smartdc
    assert_eq!(
        fs::metadata(p(root, "/usr/lib/smartdc/common.lib"))
            .unwrap()
            .uid(),
        0
    );
}
