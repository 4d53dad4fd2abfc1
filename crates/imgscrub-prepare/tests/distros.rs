#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Profiles applied to synthetic distribution trees through the host-directory backend:
//! inspection, the spec §4 acceptance checklist row by row, the §5 rows, idempotence,
//! dry runs, user profiles and refusals.

mod common;

use common::rows::*;

use common::distros::{DISTROS, build};
use imgscrub_fs::HostDir;
use imgscrub_prepare::{
    Family, InitSystem, MachineIdPolicy, Options, PrepareError, Profile, Report, Selection,
    SelinuxMode, StepOp, execute, inspect, plan,
};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn tree(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build(name, dir.path());
    dir
}

fn run(root: &Path, profile: &Profile, opts: &Options) -> Result<Report, PrepareError> {
    let mut fs = HostDir::open(root).unwrap();
    let p = plan(&fs, profile, opts)?;
    execute(&mut fs, &p)
}

fn prepared(name: &str, profile: &str) -> (tempfile::TempDir, Report) {
    let dir = tree(name);
    let r = run(
        dir.path(),
        &Profile::builtin(profile).unwrap(),
        &Options::default(),
    )
    .unwrap();
    (dir, r)
}

/// Everything about a tree that a run could change, mtimes included.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let body = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                String::from("dir")
            } else {
                format!("{:?}", fs::read(&p).unwrap())
            };
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                format!(
                    "{:o} {}:{} {} {} {}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    m.mtime_nsec(),
                    body
                ),
            );
        }
    }
    out
}

fn md5(root: &Path, path: &str) -> Option<String> {
    let out = std::process::Command::new("md5sum")
        .arg(p(root, path))
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------
// Inspection

#[test]
fn inspect_each_distro() {
    let want = [
        ("centos6", Family::Redhat, "6.10", InitSystem::Upstart),
        ("centos7", Family::Redhat, "7", InitSystem::Systemd),
        ("debian7", Family::Debian, "7", InitSystem::Sysvinit),
        ("debian12", Family::Debian, "12", InitSystem::Systemd),
        ("ubuntu14", Family::Ubuntu, "14.04", InitSystem::Upstart),
        ("ubuntu22", Family::Ubuntu, "22.04", InitSystem::Systemd),
        ("alpine", Family::Alpine, "3.18.4", InitSystem::Openrc),
    ];
    for (name, fam, ver, init) in want {
        let dir = tree(name);
        let fs = HostDir::open(dir.path()).unwrap();
        let os = inspect(&fs).unwrap();
        assert_eq!(os.family, fam, "{name}");
        assert_eq!(os.version.as_deref(), Some(ver), "{name}");
        assert_eq!(os.init, init, "{name}");
        assert!(!os.fstab.is_empty(), "{name}");
        assert!(os.linux_root, "{name}");
        let json = serde_json::to_string(&os).unwrap();
        assert!(json.contains("\"family\""));
    }
    let dir = tree("centos7");
    let os = inspect(&HostDir::open(dir.path()).unwrap()).unwrap();
    assert_eq!(os.selinux, Some(SelinuxMode::Enforcing));
    assert_eq!(os.selinux_type.as_deref(), Some("targeted"));
    assert!(os.cloud_init);
    assert_eq!(os.id.as_deref(), Some("centos"));
}

#[test]
fn not_a_linux_root() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("EFI/BOOT")).unwrap();
    let os = inspect(&HostDir::open(dir.path()).unwrap()).unwrap();
    assert!(!os.linux_root);
    assert_eq!(os.family, Family::Other);
    assert_eq!(os.init, InitSystem::Unknown);
}

#[test]
fn distro_trees_cover_the_list() {
    assert_eq!(DISTROS.len(), 7);
}

// ---------------------------------------------------------------------------------------
// The generic `linux` profile (spec §5.2)

#[test]
fn linux_profile_on_every_distro() {
    for name in DISTROS {
        let (dir, r) = prepared(name, "linux");
        let root = dir.path();
        assert!(!r.is_empty());
        assert_linux_rows(root, name);
        // L14: fstab keeps the root line but loses vdb and cloudconfig lines.
        let fstab = read(root, "/etc/fstab");
        assert!(fstab.contains("UUID=0a1b2c3d"), "{name}");
        assert!(
            !fstab.contains("/dev/vdb") && !fstab.contains("cloudconfig"),
            "{name}"
        );
        // Idempotence: a second run plans nothing and changes nothing, mtimes included.
        let before = snapshot(root);
        let r2 = run(
            root,
            &Profile::builtin("linux").unwrap(),
            &Options::default(),
        )
        .unwrap();
        assert!(r2.is_empty(), "{name}: second run: {}", r2.to_text());
        assert_eq!(before, snapshot(root), "{name}");
    }
}

#[test]
fn linux_specific_rows() {
    // L12, L13, L17, L18, net-hwaddr, net-hostname, rpm-db, yum-uuid, utmp
    let (dir, _) = prepared("centos6", "linux");
    let root = dir.path();
    assert!(!exists(root, "/etc/sysconfig/network-scripts/ifcfg-eth0"));
    assert!(exists(root, "/etc/sysconfig/network-scripts/ifcfg-lo"));
    assert!(!exists(root, "/var/lib/dhclient/dhclient-eth0.leases"));
    assert!(!exists(root, "/var/cache/yum/x86_64"));
    assert!(exists(root, "/var/cache/yum"));
    assert_eq!(read(root, "/etc/sysconfig/network"), "NETWORKING=yes\n");
    assert!(!exists(root, "/var/lib/rpm/__db.001") && exists(root, "/var/lib/rpm/Packages"));
    assert!(!exists(root, "/var/lib/yum/uuid"));
    assert!(!exists(root, "/var/run/utmp") && !exists(root, "/var/run/sshd.pid"));
    assert!(!exists(root, "/var/lock/subsys/local") && exists(root, "/var/lock/subsys/sshd"));
    assert!(!exists(root, "/.autofsck"));
    // machine-id on CentOS 6: no /etc/machine-id, so dbus's own copy just goes
    // (dbus-uuidgen --ensure makes a new one at boot).
    assert!(!exists(root, "/var/lib/dbus/machine-id"));
    assert!(!exists(root, "/etc/machine-id"));

    // L13 (Debian path), L17 (apt), hosts-instance
    let (dir, _) = prepared("debian7", "linux");
    let root = dir.path();
    assert!(!exists(root, "/var/lib/dhcp/dhclient.eth0.leases"));
    assert!(!exists(root, "/var/cache/apt/archives/bash_4.2_amd64.deb"));
    assert!(!exists(root, "/var/cache/apt/pkgcache.bin"));
    assert!(exists(root, "/var/cache/apt/archives/partial"));
    assert_eq!(read(root, "/etc/hosts"), "127.0.0.1\tlocalhost\n");
    assert_eq!(mode(root, "/var/log/auth.log"), 0o640);

    // L15, L16-adjacent, network-generated, hosts-instance with aliases
    let (dir, _) = prepared("centos7", "linux");
    let root = dir.path();
    assert_linux_centos7_rows(root);

    let (dir, _) = prepared("ubuntu22", "linux");
    let root = dir.path();
    assert!(!exists(root, "/etc/netplan/50-cloud-init.yaml"));
    assert!(!exists(root, "/home/ubuntu/.ssh/authorized_keys"), "L4");
    let (dir, _) = prepared("ubuntu14", "linux");
    assert!(!exists(
        dir.path(),
        "/etc/network/interfaces.d/50-cloud-init.cfg"
    ));
    assert!(!exists(dir.path(), "/home/ubuntu/.bash_history"), "L4");
    assert!(exists(dir.path(), "/home/ubuntu/.ssh/config"));
}

#[test]
fn machine_id_policies() {
    let dir = tree("debian12");
    let mut o = Options {
        machine_id: MachineIdPolicy::Uninitialized,
        ..Options::default()
    };
    run(dir.path(), &Profile::builtin("linux").unwrap(), &o).unwrap();
    assert_eq!(read(dir.path(), "/etc/machine-id"), "uninitialized\n");
    let dir = tree("debian12");
    o.machine_id = MachineIdPolicy::Keep;
    run(dir.path(), &Profile::builtin("linux").unwrap(), &o).unwrap();
    assert_eq!(
        read(dir.path(), "/etc/machine-id"),
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9\n"
    );
    assert_eq!(
        "empty".parse::<MachineIdPolicy>(),
        Ok(MachineIdPolicy::Empty)
    );
    assert!("bogus".parse::<MachineIdPolicy>().is_err());
}

#[test]
fn dbus_machine_id_file_becomes_the_link() {
    let dir = tree("debian12");
    let root = dir.path();
    fs::remove_file(p(root, "/var/lib/dbus/machine-id")).unwrap();
    fs::write(
        p(root, "/var/lib/dbus/machine-id"),
        "0a1b2c3d4e5f60718293a4b5c6d7e8f9\n",
    )
    .unwrap();
    run(
        root,
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(link(root, "/var/lib/dbus/machine-id"), "/etc/machine-id");
    assert_eq!(read(root, "/etc/machine-id"), "");
}

#[test]
fn checks_warn_without_changing_anything() {
    let dir = tree("debian12");
    let root = dir.path();
    fs::write(p(root, "/lib/smartdc/common.lib"), "#!/bin/sh\nDEBUG=1\n").unwrap();
    let mut pw = read(root, "/etc/passwd");
    pw.push_str("joyent:x:1000:1000::/home/joyent:/bin/bash\n");
    fs::write(p(root, "/etc/passwd"), pw).unwrap();
    let mut sh = read(root, "/etc/shadow");
    sh.push_str("joyent:$6$x$y:19000:0:99999:7:::\n");
    fs::write(p(root, "/etc/shadow"), sh).unwrap();
    let r = run(
        root,
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
    for w in ["password hash", "'joyent' user", "DEBUG>0"] {
        assert!(
            r.warnings.iter().any(|x| x.contains(w)),
            "{w}: {:?}",
            r.warnings
        );
    }
    assert!(
        read(root, "/etc/shadow").contains("joyent:$6$x$y:"),
        "checks only warn"
    );
}

#[test]
fn root_password_hash_option() {
    let dir = tree("debian12");
    let o = Options {
        root_password_hash: Some("$6$abc$def".into()),
        ..Options::default()
    };
    run(dir.path(), &Profile::builtin("linux").unwrap(), &o).unwrap();
    assert_eq!(root_shadow_field(dir.path()), "$6$abc$def");
}

#[test]
fn operation_selection() {
    let dir = tree("debian7");
    let o = Options {
        operations: Some(Selection::parse("defaults,-logfiles,-ssh-hostkeys").unwrap()),
        ..Options::default()
    };
    let r = run(dir.path(), &Profile::builtin("linux").unwrap(), &o).unwrap();
    assert!(!r.operations.contains(&"logfiles".to_string()));
    assert_eq!(read(dir.path(), "/var/log/syslog"), "kernel booted\n");
    assert!(exists(dir.path(), "/etc/ssh/ssh_host_rsa_key"));
    assert!(!exists(dir.path(), "/root/.bash_history"));
    // Only removals: start from the profile's selection.
    let dir = tree("debian7");
    let o = Options {
        operations: Some(Selection::parse("-logfiles").unwrap()),
        ..Options::default()
    };
    run(dir.path(), &Profile::builtin("linux").unwrap(), &o).unwrap();
    assert_eq!(read(dir.path(), "/var/log/syslog"), "kernel booted\n");
    assert!(!exists(dir.path(), "/root/.bash_history"));
    // Exactly one operation.
    let dir = tree("debian7");
    let o = Options {
        operations: Some(Selection::parse("bash-history").unwrap()),
        ..Options::default()
    };
    let r = run(dir.path(), &Profile::builtin("linux").unwrap(), &o).unwrap();
    assert!(
        r.steps.iter().all(|s| s.source == "bash-history"),
        "{}",
        r.to_text()
    );
    assert!(exists(dir.path(), "/root/.lesshst"));
}

// ---------------------------------------------------------------------------------------
// First boot: SSH host keys

#[test]
fn ssh_key_regenerator_per_init_system() {
    // The regenerator is a first-boot script (docs/firstboot.md): 0000-ssh-keygen in
    // /usr/lib/imgscrub/firstboot.d, run by the first-boot hook of the guest's init before sshd.
    let keygen = "/usr/lib/imgscrub/firstboot.d/0000-ssh-keygen";
    // Debian with systemd and no cloud-init: our unit, wanted by multi-user.target.
    let (dir, r) = prepared("debian12", "linux");
    let root = dir.path();
    assert!(read(root, keygen).contains("exec /usr/bin/ssh-keygen -A"));
    assert_eq!(mode(root, keygen), 0o755);
    assert_eq!(mode(root, "/usr/lib/imgscrub/firstboot.sh"), 0o755);
    let unit = read(root, "/etc/systemd/system/imgscrub-firstboot.service");
    assert!(unit.contains("ExecStart=/usr/lib/imgscrub/firstboot.sh"));
    assert!(unit.contains("Before=ssh.service sshd.service"));
    // Only the key regenerator: sshd does not wait for the network.
    assert!(!unit.contains("network-online"), "{unit}");
    assert_eq!(
        link(
            root,
            "/etc/systemd/system/multi-user.target.wants/imgscrub-firstboot.service"
        ),
        "/etc/systemd/system/imgscrub-firstboot.service"
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("0000-ssh-keygen") && n.contains("systemd")),
        "{:?}",
        r.notes
    );

    // Debian 7 sysvinit: script + S links; in rc2.d the same number as S02ssh (sorts first).
    let (dir, r) = prepared("debian7", "linux");
    let root = dir.path();
    assert_eq!(mode(root, "/etc/init.d/imgscrub-firstboot"), 0o755);
    assert!(
        read(root, "/etc/init.d/imgscrub-firstboot").contains("/usr/lib/imgscrub/firstboot.sh")
    );
    assert!(read(root, keygen).contains("ssh-keygen -A"));
    assert_eq!(
        link(root, "/etc/rc2.d/S02imgscrub-firstboot"),
        "../init.d/imgscrub-firstboot"
    );
    for n in 3..=5 {
        assert_eq!(
            link(root, &format!("/etc/rc{n}.d/S99imgscrub-firstboot")),
            "../init.d/imgscrub-firstboot"
        );
    }
    assert!(r.notes.iter().any(|n| n.contains("sysvinit")));

    // Ubuntu 14.04 without cloud-init: an upstart job.
    let dir = tree("ubuntu14");
    fs::remove_file(p(dir.path(), "/usr/bin/cloud-init")).unwrap();
    run(
        dir.path(),
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
    let job = read(dir.path(), "/etc/init/imgscrub-firstboot.conf");
    assert!(
        job.contains("start on starting ssh")
            && job.contains("exec /usr/lib/imgscrub/firstboot.sh")
    );
    assert!(read(dir.path(), keygen).contains("ssh-keygen -A"));

    // Guests that regenerate keys by themselves get nothing.
    for (name, how) in [
        ("centos6", "ssh-keygen"),
        ("centos7", "cloud-init"),
        ("ubuntu22", "cloud-init"),
        ("alpine", "ssh-keygen"),
    ] {
        let (dir, r) = prepared(name, "linux");
        assert!(!exists(dir.path(), "/usr/lib/imgscrub"), "{name}");
        assert!(!exists(
            dir.path(),
            "/etc/systemd/system/imgscrub-firstboot.service"
        ));
        assert!(
            !exists(dir.path(), "/etc/init.d/imgscrub-firstboot"),
            "{name}"
        );
        assert!(
            !exists(dir.path(), "/etc/init/imgscrub-firstboot.conf"),
            "{name}"
        );
        assert!(
            r.notes.iter().any(|n| n.contains(how)),
            "{name}: {:?}",
            r.notes
        );
    }
    // CentOS 7 without cloud-init still has sshd-keygen.service.
    let dir = tree("centos7");
    fs::remove_file(p(dir.path(), "/usr/bin/cloud-init")).unwrap();
    let r = run(
        dir.path(),
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
    assert!(r.notes.iter().any(|n| n.contains("sshd-keygen.service")));
}

// ---------------------------------------------------------------------------------------
// SELinux

#[test]
fn selinux_enabled_guest_gets_autorelabel() {
    // The host-directory backend has no xattrs, so new files cannot be labelled: relabel.
    // A user profile that creates a file.
    let text = "extends = [\"linux\"]\n[[action]]\nkind = \"write_file\"\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n";
    let prof = Profile::from_toml("site", text, &Profile::builtin_resolver).unwrap();
    let dir = tree("centos7");
    let r = run(dir.path(), &prof, &Options::default()).unwrap();
    assert!(exists(dir.path(), "/.autorelabel"));
    assert!(r.notes.iter().any(|n| n.contains("autorelabel")));
    // lx-centos disables SELinux (C1), so no relabel is needed.
    let (dir, _) = prepared("centos7", "lx-centos");
    assert!(!exists(dir.path(), "/.autorelabel"));
    assert!(read(dir.path(), "/etc/selinux/config").contains("SELINUX=disabled\n"));
    assert_eq!(mode(dir.path(), "/etc/selinux/config"), 0o644);
}

// ---------------------------------------------------------------------------------------
// LX profiles: the spec §4 acceptance checklist

fn assert_idempotent(root: &Path, profile: &str, name: &str) {
    let before = snapshot(root);
    let r = run(
        root,
        &Profile::builtin(profile).unwrap(),
        &Options::default(),
    )
    .unwrap();
    assert!(
        r.is_empty(),
        "{name}: second run of {profile}:\n{}",
        r.to_text()
    );
    assert_eq!(
        before,
        snapshot(root),
        "{name}: tree changed on the second run"
    );
}

#[test]
fn lx_centos6() {
    let (dir, r) = prepared("centos6", "lx-centos");
    let root = dir.path();
    assert_lx_checklist(root, "centos6", false);
    // C1
    assert_eq!(
        read(root, "/etc/selinux/config"),
        "# SELinux\nSELINUX=disabled\nSELINUXTYPE=targeted\n"
    );
    // C2, C3 (+L18)
    assert!(!exists(root, "/etc/sysconfig/keyboard"));
    assert_eq!(read(root, "/etc/sysconfig/network"), "NETWORKING=yes\n");
    // C4
    let inittab = read(root, "/etc/inittab");
    assert!(inittab.contains("id:3:initdefault: id:5:initdefault:\n"));
    assert!(inittab.ends_with("# Modified by lx brand\n"));
    // C5: links and scripts gone, others kept.
    for s in ["acpid", "auditd", "iptables", "ntpd"] {
        assert!(!exists(root, &format!("/etc/rc.d/init.d/{s}")), "{s}");
    }
    assert!(!exists(root, "/etc/rc.d/rc3.d/S26acpid"));
    assert!(!exists(root, "/etc/rc.d/rc0.d/K88auditd"));
    assert!(exists(root, "/etc/rc.d/rc3.d/S90crond"));
    assert!(exists(root, "/etc/rc.d/init.d/crond"));
    // C7, C8
    assert_eq!(
        read(root, "/etc/init/control-alt-delete.override"),
        "manual\n"
    );
    assert_eq!(read(root, "/etc/init/ttyS0.override"), "manual\n");
    assert!(read(root, "/etc/init/tty.override").contains("exec /sbin/mingetty console"));
    assert!(read(root, "/etc/init/start-ttys.override").contains("initctl start tty"));
    // C9: the block from "# Save mixer" up to the halt.local line, blank lines kept.
    let halt = read(root, "/etc/rc.d/init.d/halt");
    assert!(halt.contains("# Disabled by lx brand: # Save mixer settings"));
    assert!(halt.contains("# Disabled by lx brand: /sbin/hwclock --systohc"));
    assert!(halt.contains("\n[ -x /sbin/halt.local ]"));
    assert!(halt.contains("\n\n"), "blank lines kept");
    assert_eq!(mode(root, "/etc/rc.d/init.d/halt"), 0o755);
    // C10
    let sysinit = read(root, "/etc/rc.d/rc.sysinit");
    assert!(sysinit.contains("# lx: /sbin/hwclock $CLOCKFLAGS"));
    assert!(sysinit.contains("# lx: /bin/dmesg -n 3"));
    assert!(sysinit.contains("# lx: mount -n /dev/pts"));
    assert!(sysinit.contains("mount -t tmpfs tmpfs /dev/shm >/dev/null"));
    assert!(!sysinit.contains("#remount /dev/shm"));
    // C11
    let net = read(root, "/etc/rc.d/init.d/network");
    assert!(net.contains("Provides: $network") && net.contains("/var/lock/subsys/network"));
    assert_eq!(mode(root, "/etc/rc.d/init.d/network"), 0o755);
    // C14
    assert_eq!(mode(root, "/etc/rc.d/rc.local"), 0o755);
    // No relabel: SELinux is disabled by C1.
    assert!(!exists(root, "/.autorelabel"));
    assert!(r.warnings.iter().any(|w| w.contains("ld.config")));
    assert_idempotent(root, "lx-centos", "centos6");
}

#[test]
fn lx_centos7() {
    let (dir, _) = prepared("centos7", "lx-centos");
    let root = dir.path();
    assert_lx_checklist(root, "centos7", true);
    assert_lx_centos7_rows(root);
    assert_idempotent(root, "lx-centos", "centos7");
}

#[test]
fn lx_debian7() {
    let (dir, _) = prepared("debian7", "lx-debian");
    let root = dir.path();
    assert_lx_checklist(root, "debian7", false);
    // D1
    let inittab = read(root, "/etc/inittab");
    assert!(inittab.contains("# Disabled by lx brand: 1:2345:respawn:/sbin/getty 38400 tty1"));
    assert!(inittab.contains("# Disabled by lx brand: 6:23:respawn"));
    assert!(
        inittab.ends_with("1:2345:respawn:/sbin/getty 38400 console\n# Modified by lx brand\n")
    );
    assert!(inittab.contains("si::sysinit:/etc/init.d/rcS\n"));
    // D2
    for s in ["udev", "hwclock.sh", "procps", "kmod"] {
        assert!(!exists(root, &format!("/etc/init.d/{s}")), "{s}");
    }
    assert!(!exists(root, "/etc/rcS.d/S02udev") && !exists(root, "/etc/rc0.d/K05hwclock.sh"));
    assert!(exists(root, "/etc/rc2.d/S02ssh") && exists(root, "/etc/init.d/cron"));
    // D3: no /etc/init, nothing written
    assert!(!exists(root, "/etc/init"));
    // D4
    assert!(read(root, "/etc/fstab").ends_with("swapfs\t/dev/shm\ttmpfs\tdefaults\t0 0\n"));
    // D6 is for ≥ 8
    assert!(!exists(root, "/etc/apt/preferences.d/udev"));
    assert_idempotent(root, "lx-debian", "debian7");
}

#[test]
fn lx_debian12() {
    let (dir, _) = prepared("debian12", "lx-debian");
    let root = dir.path();
    assert_lx_checklist(root, "debian12", true);
    // checklist 9 / D6
    assert_eq!(
        read(root, "/etc/apt/preferences.d/udev"),
        "Package: udev\nPin: release *\nPin-Priority: -1\n"
    );
    // D7
    for u in [
        "systemd-udevd.service",
        "systemd-udevd-control.socket",
        "systemd-udevd-kernel.socket",
    ] {
        assert_eq!(link(root, &format!("/etc/systemd/system/{u}")), "/dev/null");
    }
    assert!(!exists(
        root,
        "/etc/systemd/system/sockets.target.wants/systemd-udevd-control.socket"
    ));
    // D2 on a systemd Debian too
    assert!(!exists(root, "/etc/init.d/udev") && !exists(root, "/etc/rcS.d/S01udev"));
    assert!(read(root, "/etc/fstab").contains("swapfs\t/dev/shm"));
    assert_idempotent(root, "lx-debian", "debian12");
}

#[test]
fn lx_ubuntu14() {
    let (dir, _) = prepared("ubuntu14", "lx-ubuntu");
    let root = dir.path();
    assert_lx_checklist(root, "ubuntu14", false);
    // U1
    let console = read(root, "/etc/init/console.override");
    assert!(console.contains("container CONTAINER=smartos or"));
    assert!(console.contains("container CONTAINER=smartos-libvirt)"));
    // U2, U3 with the md5s the lx-brand tests check (checklist 10)
    assert_eq!(
        md5(root, "/etc/init/container-detect.override").as_deref(),
        Some("dfd990f3a6ed9ed8582a3bae564551d9")
    );
    assert_eq!(
        md5(root, "/etc/init/mountall.override").as_deref(),
        Some("77e43ed540b051c9dc22df649eb7b597")
    );
    // U4
    assert_eq!(
        read(root, "/etc/network/interfaces.d/smartos"),
        "# AUTOMATIC ZONE CONFIG\n"
    );
    assert!(
        read(root, "/etc/network/interfaces").ends_with("source /etc/network/interfaces.d/*\n")
    );
    // U5, U7, U8, U9 (checklist 9)
    assert!(!exists(root, "/etc/resolvconf/resolv.conf.d/original"));
    assert!(!exists(root, "/etc/resolvconf/resolv.conf.d/tail"));
    assert!(exists(root, "/etc/resolvconf/resolv.conf.d/head"));
    assert_eq!(
        read(root, "/etc/apt/preferences.d/makedev"),
        "Package: makedev\nPin: release *\nPin-Priority: -1\n"
    );
    assert!(!exists(root, "/etc/cron.weekly/fstrim"));
    assert!(read(root, "/etc/init/ttyS0.conf").contains("getty -L 115200 ttyS0 vt102"));
    // U12 is opt-in
    assert!(!exists(root, "/etc/init/plymouth.override"));
    assert_idempotent(root, "lx-ubuntu", "ubuntu14");
}

#[test]
fn lx_ubuntu22() {
    let (dir, _) = prepared("ubuntu22", "lx-ubuntu");
    let root = dir.path();
    assert_lx_checklist(root, "ubuntu22", true);
    // U6
    assert_eq!(
        read(root, "/etc/systemd/resolved.conf"),
        "[Resolve]\n#FallbackDNS=\n"
    );
    // U10
    assert_eq!(
        link(root, "/etc/systemd/system/systemd-udevd.service"),
        "/dev/null"
    );
    // upstart-only rows do nothing
    assert!(!exists(root, "/etc/init/container-detect.override"));
    assert!(!exists(root, "/etc/init/ttyS0.conf"));
    assert!(!exists(root, "/etc/cron.weekly/fstrim"));
    assert_idempotent(root, "lx-ubuntu", "ubuntu22");
}

#[test]
fn lx_alpine() {
    let (dir, r) = prepared("alpine", "lx-alpine");
    let root = dir.path();
    assert_lx_checklist(root, "alpine", false);
    // A1
    let inittab = read(root, "/etc/inittab");
    assert!(inittab.contains("# Disabled by lx brand: tty1::respawn"));
    assert!(
        inittab.ends_with("console::respawn:/sbin/getty 38400 console\n# Modified by lx brand\n")
    );
    // A2, A3 (openrc-run: this Alpine has no /sbin/runscript)
    for s in ["fsck", "hwclock", "klogd", "sysfs"] {
        let c = read(root, &format!("/etc/init.d/{s}"));
        assert!(
            c.starts_with("#!/sbin/openrc-run\n") && c.contains("return 0"),
            "{s}"
        );
        assert_eq!(mode(root, &format!("/etc/init.d/{s}")), 0o755, "mode kept");
    }
    assert!(read(root, "/etc/init.d/hwclock").contains("provide clock"));
    assert!(read(root, "/etc/init.d/klogd").contains("need clock hostname localmount"));
    assert!(read(root, "/etc/init.d/networking").contains("provide net"));
    // A4
    assert!(read(root, "/etc/fstab").contains("swapfs\t/dev/shm\ttmpfs"));
    // A5 (checklist 12: crond, sshd, local enabled)
    for (lvl, s) in [
        ("default", "crond"),
        ("default", "sshd"),
        ("default", "local"),
        ("sysinit", "devfs"),
        ("boot", "networking"),
        ("shutdown", "killprocs"),
    ] {
        assert_eq!(
            link(root, &format!("/etc/runlevels/{lvl}/{s}")),
            format!("/etc/init.d/{s}")
        );
    }
    assert!(!exists(root, "/etc/runlevels/sysinit/hwdrivers"));
    // A6, A7
    assert_eq!(link(root, "/sbin/init"), "../bin/busybox");
    assert!(!exists(root, "/etc/resolv.conf"));
    // A8: the hooks exist, so no warning about them
    assert!(!r.warnings.iter().any(|w| w.contains("joyent.start")));
    // package cache (L17 proposal)
    assert!(!exists(root, "/var/cache/apk/APKINDEX.abc.tar.gz"));
    assert_idempotent(root, "lx-alpine", "alpine");
}

#[test]
fn lx_opt_in_rows() {
    let dir = tree("centos7");
    let mut vars = BTreeMap::new();
    vars.insert("image_name".to_string(), "centos-7".to_string());
    vars.insert("image_version".to_string(), "20240101".to_string());
    vars.insert("locale".to_string(), "en_US.UTF-8".to_string());
    vars.insert("timezone_utc".to_string(), "1".to_string());
    let o = Options {
        vars,
        ..Options::default()
    };
    run(dir.path(), &Profile::builtin("lx-centos").unwrap(), &o).unwrap();
    let root = dir.path();
    // checklist 7
    let product = read(root, "/etc/product");
    assert!(
        product
            .contains("Name: Joyent Instance\nImage: centos-7 20240101\nDocumentation: https://")
    );
    assert!(product.contains("Description: centos-7\n"));
    assert!(read(root, "/etc/motd").contains("Instance (centos-7 20240101)"));
    assert_eq!(read(root, "/etc/localtime"), "TZif2 UTC\n");
    // checklist 11
    assert_eq!(read(root, "/etc/locale.conf"), "LANG=\"en_US.UTF-8\"\n");
    assert!(!exists(root, "/etc/sysconfig/i18n"));
}

#[test]
fn ubuntu_legacy_upstart_disable() {
    let dir = tree("ubuntu14");
    let mut vars = BTreeMap::new();
    vars.insert("legacy_upstart_disable".to_string(), "1".to_string());
    let o = Options {
        vars,
        ..Options::default()
    };
    run(dir.path(), &Profile::builtin("lx-ubuntu").unwrap(), &o).unwrap();
    assert_eq!(read(dir.path(), "/etc/init/plymouth.override"), "manual\n");
    assert_eq!(read(dir.path(), "/etc/init/tty1.override"), "manual\n");
}

// ---------------------------------------------------------------------------------------
// Dry runs, reports, user profiles, refusals

#[test]
fn dry_run_writes_nothing() {
    for name in DISTROS {
        let dir = tree(name);
        let before = snapshot(dir.path());
        let prof = match *name {
            "centos6" | "centos7" => "lx-centos",
            "debian7" | "debian12" => "lx-debian",
            "ubuntu14" | "ubuntu22" => "lx-ubuntu",
            _ => "lx-alpine",
        };
        let o = Options {
            dry_run: true,
            ..Options::default()
        };
        let r = run(dir.path(), &Profile::builtin(prof).unwrap(), &o).unwrap();
        assert!(r.dry_run && !r.is_empty());
        assert!(r.to_text().contains("would"));
        assert_eq!(before, snapshot(dir.path()), "{name}");
        // The dry-run plan equals the plan that a real run then executes.
        let real = run(
            dir.path(),
            &Profile::builtin(prof).unwrap(),
            &Options::default(),
        )
        .unwrap();
        let a: Vec<_> = r
            .steps
            .iter()
            .map(|s| (&s.source, &s.path, &s.op))
            .collect();
        let b: Vec<_> = real
            .steps
            .iter()
            .map(|s| (&s.source, &s.path, &s.op))
            .collect();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn json_report_has_paths_and_bytes() {
    let (_dir, r) = prepared("centos6", "lx-centos");
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    let steps = v["steps"].as_array().unwrap();
    let key = steps
        .iter()
        .find(|s| s["path"] == "/etc/ssh/ssh_host_rsa_key")
        .unwrap();
    assert_eq!(key["action"], "delete");
    assert_eq!(key["source"], "ssh-hostkeys");
    assert!(key["bytes"].as_u64().unwrap() > 0);
    let trunc = steps
        .iter()
        .find(|s| s["path"] == "/var/log/messages")
        .unwrap();
    assert_eq!(trunc["action"], "truncate");
    assert!(steps.iter().any(|s| s["source"] == "lx-centos/C1"));
    assert!(v["totals"]["deleted_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["os"]["family"], "redhat");
    assert!(
        r.steps
            .iter()
            .any(|s| matches!(s.op, StepOp::Truncate { .. }))
    );
}

#[test]
fn user_profile_extends_builtin() {
    let text = r#"
name = "site"
extends = ["lx-centos"]

# RFD 109's example: consul's node id is per instance.
[[action]]
id = "consul"
kind = "delete"
path = "/var/lib/consul/node-id"
"#;
    let prof = Profile::from_toml("site.toml", text, &Profile::builtin_resolver).unwrap();
    let dir = tree("centos7");
    fs::create_dir_all(p(dir.path(), "/var/lib/consul")).unwrap();
    fs::write(p(dir.path(), "/var/lib/consul/node-id"), "abcd-1234").unwrap();
    fs::write(p(dir.path(), "/var/lib/consul/keep"), "x").unwrap();
    let r = run(dir.path(), &prof, &Options::default()).unwrap();
    assert!(!exists(dir.path(), "/var/lib/consul/node-id"));
    assert!(exists(dir.path(), "/var/lib/consul/keep"));
    assert!(r.steps.iter().any(|s| s.source == "site/consul"));
    // and everything lx-centos does
    assert_lx_checklist(dir.path(), "site", true);
    // refusal is inherited
    let dir = tree("debian12");
    assert!(matches!(
        run(dir.path(), &prof, &Options::default()),
        Err(PrepareError::WrongDistro { .. })
    ));
}

#[test]
fn lx_profile_on_wrong_distro_is_refused() {
    let dir = tree("debian12");
    let before = snapshot(dir.path());
    let err = run(
        dir.path(),
        &Profile::builtin("lx-centos").unwrap(),
        &Options::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("lx-centos") && msg.contains("redhat") && msg.contains("debian"),
        "{msg}"
    );
    assert!(msg.contains("--force"));
    assert_eq!(before, snapshot(dir.path()));
    // Ubuntu is not Debian for lx-debian, and vice versa.
    let dir = tree("ubuntu22");
    assert!(
        run(
            dir.path(),
            &Profile::builtin("lx-debian").unwrap(),
            &Options::default()
        )
        .is_err()
    );
    // force applies it anyway
    let dir = tree("debian12");
    let o = Options {
        force: true,
        ..Options::default()
    };
    run(dir.path(), &Profile::builtin("lx-centos").unwrap(), &o).unwrap();
    assert!(exists(dir.path(), "/native/tmp"));
    // linux applies everywhere
    let dir = tree("alpine");
    run(
        dir.path(),
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
}

#[test]
fn fixed_time_makes_new_files_reproducible() {
    let t = imgscrub_prepare::Timestamp::new(1_700_000_000, 0);
    let o = Options {
        fixed_time: Some(t),
        ..Options::default()
    };
    let dir = tree("debian12");
    run(dir.path(), &Profile::builtin("lx-debian").unwrap(), &o).unwrap();
    for f in [
        "/etc/apt/preferences.d/udev",
        "/etc/imgscrub-prepared",
        "/etc/fstab",
        "/etc/hostname",
    ] {
        assert_eq!(
            fs::metadata(p(dir.path(), f)).unwrap().mtime(),
            1_700_000_000,
            "{f}"
        );
    }
    assert!(exists(dir.path(), "/etc/fstab.lxsave_20231114"));
}

#[test]
fn guest_symlinks_never_reach_the_host() {
    // A hostile guest: /etc/ssh is a link to an absolute path, /var/log to "../../..".
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("ssh_host_rsa_key"), "host file").unwrap();
    let dir = tree("debian12");
    let root = dir.path();
    fs::remove_dir_all(p(root, "/etc/ssh")).unwrap();
    std::os::unix::fs::symlink(host.path(), p(root, "/etc/ssh")).unwrap();
    fs::remove_dir_all(p(root, "/var/log")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", p(root, "/var/log")).unwrap();
    run(
        root,
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(host.path().join("ssh_host_rsa_key")).unwrap(),
        "host file"
    );
}

#[test]
fn oversized_config_is_refused_not_read() {
    let dir = tree("debian12");
    let f = fs::File::create(p(dir.path(), "/etc/os-release")).unwrap();
    f.set_len(17 << 20).unwrap();
    let err = inspect(&HostDir::open(dir.path()).unwrap()).unwrap_err();
    assert!(matches!(err, PrepareError::TooLarge { .. }), "{err}");
}

#[test]
fn non_utf8_files_are_edited_as_bytes() {
    let dir = tree("debian12");
    let mut hosts = b"127.0.0.1\tlocalhost\n10.0.0.1\tcaf\xe9\n127.0.1.1\tdeb12\n".to_vec();
    fs::write(p(dir.path(), "/etc/hosts"), &hosts).unwrap();
    run(
        dir.path(),
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
    hosts.truncate(hosts.len() - b"127.0.1.1\tdeb12\n".len());
    assert_eq!(fs::read(p(dir.path(), "/etc/hosts")).unwrap(), hosts);
}

#[test]
fn twenty_thousand_files_plan_quickly() {
    let dir = tree("debian12");
    let root = dir.path();
    for d in 0..100 {
        let usr = p(root, &format!("/usr/share/doc/pkg{d}"));
        let var = p(root, &format!("/var/lib/dpkg/info{d}"));
        fs::create_dir_all(&usr).unwrap();
        fs::create_dir_all(&var).unwrap();
        for f in 0..100 {
            fs::write(usr.join(format!("f{f}")), "x").unwrap();
            fs::write(var.join(format!("f{f}.list")), "x").unwrap();
        }
    }
    let t = std::time::Instant::now();
    run(
        root,
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
    let first = t.elapsed();
    let t = std::time::Instant::now();
    let r = run(
        root,
        &Profile::builtin("linux").unwrap(),
        &Options::default(),
    )
    .unwrap();
    assert!(r.is_empty());
    eprintln!(
        "20k files: first run {first:?}, second run {:?}",
        t.elapsed()
    );
    // Generous bound for unoptimised test builds on a shared machine.
    assert!(first.as_secs() < 20);
}

/// The trees are meant for the ext4-vs-host-directory differential test: make sure
/// `mkfs.ext4 -d` takes each one (before and after preparation) and e2fsck is happy.
#[test]
fn trees_feed_mkfs_ext4() {
    let ok = |c: &mut std::process::Command| c.output().map(|o| o.status.success());
    if ok(std::process::Command::new("mkfs.ext4").arg("-V")).is_err() {
        eprintln!("mkfs.ext4 not installed; skipped");
        return;
    }
    for name in DISTROS {
        let dir = tree(name);
        let prof = match *name {
            "centos6" | "centos7" => "lx-centos",
            "debian7" | "debian12" => "lx-debian",
            "ubuntu14" | "ubuntu22" => "lx-ubuntu",
            _ => "lx-alpine",
        };
        for stage in ["before", "after"] {
            if stage == "after" {
                run(
                    dir.path(),
                    &Profile::builtin(prof).unwrap(),
                    &Options::default(),
                )
                .unwrap();
            }
            let img = tempfile::NamedTempFile::new().unwrap();
            let made = std::process::Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(dir.path())
                .arg(img.path())
                .arg("16M")
                .output()
                .unwrap();
            assert!(
                made.status.success(),
                "{name} {stage}: {}",
                String::from_utf8_lossy(&made.stderr)
            );
            let fsck = std::process::Command::new("e2fsck")
                .args(["-fn"])
                .arg(img.path())
                .output()
                .unwrap();
            assert!(
                fsck.status.success(),
                "{name} {stage}: {}",
                String::from_utf8_lossy(&fsck.stdout)
            );
        }
    }
}
