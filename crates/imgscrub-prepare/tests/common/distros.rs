//! Synthetic distribution trees with the real files these distributions have where the
//! profiles touch them. Regular files, directories and symlinks only, so every tree can
//! also be fed to `mkfs.ext4 -d` (see fixtures/distros/README.md).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::Path;

/// Builds a tree under a root directory.
pub struct Tree<'a> {
    pub root: &'a Path,
}

impl Tree<'_> {
    fn p(&self, path: &str) -> std::path::PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
    pub fn dir(&self, path: &str) -> &Self {
        fs::create_dir_all(self.p(path)).unwrap();
        self
    }
    pub fn file(&self, path: &str, content: &str) -> &Self {
        self.file_mode(path, content, 0o644)
    }
    pub fn file_mode(&self, path: &str, content: &str, mode: u32) -> &Self {
        let p = self.p(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        self
    }
    pub fn exe(&self, path: &str, content: &str) -> &Self {
        self.file_mode(path, content, 0o755)
    }
    pub fn link(&self, path: &str, target: &str) -> &Self {
        let p = self.p(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, &p).unwrap();
        self
    }
    pub fn owner(&self, path: &str, uid: u32, gid: u32) -> &Self {
        lchown(self.p(path), Some(uid), Some(gid)).unwrap();
        self
    }
}

pub const DISTROS: &[&str] = &[
    "centos6", "centos7", "debian7", "debian12", "ubuntu14", "ubuntu22", "alpine",
];

/// Build the named tree into `root` (an empty directory).
pub fn build(name: &str, root: &Path) {
    let t = Tree { root };
    if matches!(name, "centos7" | "ubuntu22") {
        // merged /usr, before anything is put under /lib, /bin or /sbin
        t.dir("/usr/lib")
            .dir("/usr/bin")
            .dir("/usr/sbin")
            .dir("/usr/lib64");
        t.link("/lib", "usr/lib")
            .link("/bin", "usr/bin")
            .link("/sbin", "usr/sbin");
        t.link("/lib64", "usr/lib64");
    }
    common(&t);
    match name {
        "centos6" => centos6(&t),
        "centos7" => centos7(&t),
        "debian7" => debian7(&t),
        "debian12" => debian12(&t),
        "ubuntu14" => ubuntu14(&t),
        "ubuntu22" => ubuntu22(&t),
        "alpine" => alpine(&t),
        other => panic!("unknown distro tree {other}"),
    }
}

const SHADOW: &str = "root:$6$saltsalt$Q2hhbmdlTWVQbGVhc2VJdElzQUhhc2g:19000:0:99999:7:::\n\
bin:*:19000:0:99999:7:::\n\
daemon:*:19000:0:99999:7:::\n";

/// Files nearly every Linux guest has.
fn common(t: &Tree) {
    t.dir("/tmp")
        .dir("/var/tmp")
        .dir("/home")
        .dir("/root")
        .dir("/proc")
        .dir("/dev")
        .file("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/sbin/nologin\n")
        .file("/etc/group", "root:x:0:\n")
        .file_mode("/etc/shadow", SHADOW, 0o640)
        .file_mode("/etc/shadow-", SHADOW, 0o640)
        .file("/etc/passwd-", "root:x:0:0:root:/root:/bin/bash\n")
        .file(
            "/etc/ssh/sshd_config",
            "# sshd_config\nPort 22\n#PasswordAuthentication yes\nUsePrivilegeSeparation sandbox\nPermitRootLogin without-password\n",
        )
        .file_mode("/etc/ssh/ssh_host_rsa_key", "-----BEGIN RSA PRIVATE KEY-----\nsecret\n", 0o600)
        .file("/etc/ssh/ssh_host_rsa_key.pub", "ssh-rsa AAAA host\n")
        .file_mode("/etc/ssh/ssh_host_ed25519_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n", 0o600)
        .file("/etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAA host\n")
        .file("/etc/ssh/ssh_config", "Host *\n")
        .exe("/usr/sbin/sshd", "ELF sshd\n")
        .exe("/usr/bin/ssh-keygen", "ELF ssh-keygen\n")
        .file_mode("/root/.bash_history", "ls\nmdata-get root_authorized_keys\n", 0o600)
        .file("/root/.lesshst", ".less-history-file:\n")
        .file("/root/.viminfo", "# viminfo\n")
        .file_mode("/root/.ssh/authorized_keys", "ssh-rsa AAAA builder@host\n", 0o600)
        .file("/root/.ssh/known_hosts", "github.com ssh-rsa AAAA\n")
        .file_mode("/root/.ssh/id_rsa", "-----BEGIN RSA PRIVATE KEY-----\n", 0o600)
        .file("/root/.ssh/config", "Host x\n")
        .file(
            "/etc/fstab",
            "# /etc/fstab\nUUID=0a1b2c3d-1111-2222-3333-444455556666 / ext4 defaults 1 1\n\
             /dev/vdb\t/data\text4\tdefaults\t0 0\n\
             /dev/vdc\t/mnt\tauto\tdefaults,nofail,comment=cloudconfig\t0 2\n",
        )
        .file("/etc/hosts", "127.0.0.1   localhost localhost.localdomain\n::1         localhost6\n")
        .file("/etc/udev/rules.d/70-persistent-net.rules", "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:12:34:56\", NAME=\"eth0\"\n")
        .file_mode("/var/log/wtmp", "wtmp-record-bytes", 0o664)
        .file_mode("/var/log/btmp", "btmp-record", 0o600)
        .file_mode("/var/log/lastlog", "lastlog", 0o644)
        .file("/var/log/.mdata-image.run", "")
        .file("/var/log/triton.log", "metadata fetched\n")
        .file("/var/log/mdata-user-script.log", "ran\n")
        .file("/tmp/prepare-image-trace.log", "+ trace\n")
        .file("/tmp/.mdata-image.run", "")
        .file("/var/tmp/build.tmp", "x\n")
        .file("/etc/ssh/sshd_config.bak", "old\n")
        .file("/var/svc/provision_success", "")
        .file("/var/svc/mdata-operator-script", "#!/bin/sh\nprepare-image\n")
        .file("/var/svc/mdata-user-script", "#!/bin/sh\n")
        .file("/var/db/mdata-user-data", "secret user data\n")
        .exe("/lib/smartdc/joyent_rc.local", "#!/bin/sh\n")
        .exe("/lib/smartdc/common.lib", "#!/bin/sh\n")
        .exe("/lib/smartdc/mdata-fetch", "#!/bin/sh\n")
        .file("/lib/smartdc/.firstboot-complete-do-not-delete", "")
        .owner("/lib/smartdc/common.lib", 1000, 1000)
        .owner("/lib/smartdc", 1000, 1000)
        .file("/var/lib/systemd/random-seed", "0123456789abcdef")
        .file("/usr/share/zoneinfo/UTC", "TZif2 UTC\n");
}

fn sysv_links(t: &Tree, rc: &str, name: &str, start: &str, kill: &str) {
    for n in ["2", "3", "4", "5"] {
        t.link(
            &format!("{rc}/rc{n}.d/S{start}{name}"),
            &format!("../init.d/{name}"),
        );
    }
    for n in ["0", "1", "6"] {
        t.link(
            &format!("{rc}/rc{n}.d/K{kill}{name}"),
            &format!("../init.d/{name}"),
        );
    }
}

fn centos6(t: &Tree) {
    t.file("/etc/redhat-release", "CentOS release 6.10 (Final)\n")
        .file("/etc/centos-release", "CentOS release 6.10 (Final)\n")
        .file("/etc/selinux/config", "# SELinux\nSELINUX=enforcing\nSELINUXTYPE=targeted\n")
        .file("/etc/sysconfig/network", "NETWORKING=yes\nHOSTNAME=c6.example.com\n")
        .file("/etc/sysconfig/keyboard", "KEYTABLE=\"us\"\n")
        .file("/etc/sysconfig/network-scripts/ifcfg-eth0", "DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nBOOTPROTO=dhcp\nDHCP_HOSTNAME=c6\n")
        .file("/etc/sysconfig/network-scripts/ifcfg-lo", "DEVICE=lo\nIPADDR=127.0.0.1\n")
        .file("/etc/inittab", "# inittab\n#\nid:5:initdefault:\n")
        .file("/etc/init/tty.conf", "# tty\nstop on runlevel [S016]\nrespawn\ninstance $TTY\nexec /sbin/mingetty $TTY\n")
        .file("/etc/init/start-ttys.conf", "start on stopped rc RUNLEVEL=[2345]\ntask\n")
        .file("/etc/init/control-alt-delete.conf", "start on control-alt-delete\nexec /sbin/shutdown -r now\n")
        .file("/etc/init/serial.conf", "respawn\n")
        .exe("/sbin/init", "ELF upstart\n")
        .exe("/sbin/initctl", "ELF initctl\n")
        .exe("/etc/rc.d/init.d/halt", "#!/bin/bash\n# halt\n\n# Save mixer settings, here for lack of a better place.\nif [ -s /etc/alsa/alsactl.conf ]; then\n  alsactl store\nfi\n\n# Sync the system clock.\n/sbin/hwclock --systohc\n\n[ -x /sbin/halt.local ] && /sbin/halt.local\nexit 0\n")
        .exe("/etc/rc.d/init.d/network", "#!/bin/bash\n# network: real network script\n")
        .exe("/etc/rc.d/init.d/sshd", "#!/bin/bash\n# sshd\ndo_rsa_keygen() {\n  /usr/bin/ssh-keygen -q -t rsa -f $RSA_KEY\n}\n")
        .exe("/etc/rc.d/init.d/acpid", "#!/bin/bash\n")
        .exe("/etc/rc.d/init.d/auditd", "#!/bin/bash\n")
        .exe("/etc/rc.d/init.d/iptables", "#!/bin/bash\n")
        .exe("/etc/rc.d/init.d/ntpd", "#!/bin/bash\n")
        .exe("/etc/rc.d/init.d/crond", "#!/bin/bash\n")
        .exe("/etc/rc.d/rc.sysinit", "#!/bin/bash\n# rc.sysinit\n/sbin/hwclock $CLOCKFLAGS\n/bin/dmesg -n 3\nmount -n /dev/pts >/dev/null 2>&1\nmount -n -o remount /dev/shm >/dev/null 2>&1\n#remount /dev/shm\necho done\n")
        .file("/etc/rc.d/rc.local", "#!/bin/sh\ntouch /var/lock/subsys/local\n");
    for n in 0..=6 {
        t.dir(&format!("/etc/rc.d/rc{n}.d"));
        t.link(&format!("/etc/rc{n}.d"), &format!("rc.d/rc{n}.d"));
    }
    t.link("/etc/init.d", "rc.d/init.d");
    sysv_links(t, "/etc/rc.d", "acpid", "26", "74");
    sysv_links(t, "/etc/rc.d", "auditd", "11", "88");
    sysv_links(t, "/etc/rc.d", "iptables", "08", "92");
    sysv_links(t, "/etc/rc.d", "ntpd", "58", "74");
    sysv_links(t, "/etc/rc.d", "crond", "90", "60");
    sysv_links(t, "/etc/rc.d", "sshd", "55", "25");
    t.file(
        "/var/lib/dbus/machine-id",
        "0123456789abcdef0123456789abcdef\n",
    )
    .file("/var/lib/dhclient/dhclient-eth0.leases", "lease { }\n")
    .file("/var/cache/yum/x86_64/6/base/packages/bash.rpm", "RPM")
    .file("/var/run/utmp", "utmp")
    .file("/var/run/sshd.pid", "123\n")
    .file("/var/lock/subsys/local", "")
    .file("/var/lock/subsys/sshd", "")
    .file("/.autofsck", "")
    .file("/var/log/messages", "Jan 1 kernel: booted\n")
    .file("/var/log/secure", "sshd accepted\n")
    .file("/var/lib/rpm/__db.001", "db")
    .file("/var/lib/rpm/Packages", "rpmdb")
    .file("/var/lib/yum/uuid", "abcd\n");
}

fn centos7(t: &Tree) {
    t.file("/etc/redhat-release", "CentOS Linux release 7.9.2009 (Core)\n")
        .link("/etc/system-release", "centos-release")
        .file("/etc/centos-release", "CentOS Linux release 7.9.2009 (Core)\n")
        .file("/etc/os-release", "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nVERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\n")
        .file("/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n")
        .file("/etc/hostname", "c7.example.com\n")
        .file("/etc/hosts", "127.0.0.1   localhost localhost.localdomain c7.example.com c7\n::1         localhost6\n10.0.0.5 c7.example.com c7\n")
        .file("/etc/sysconfig/network", "# Created by anaconda\n")
        .file("/etc/sysconfig/network-scripts/ifcfg-eth0", "# Created by cloud-init on instance boot automatically, do not edit.\nBOOTPROTO=dhcp\nDEVICE=eth0\nHWADDR=fa:16:3e:00:00:01\n")
        .file_mode("/etc/machine-id", "4f1b7a1e2c3d4e5f60718293a4b5c6d7\n", 0o444)
        .link("/var/lib/dbus/machine-id", "/etc/machine-id")
        .file("/var/lib/systemd/credential.secret", "secret")
        .exe("/usr/lib/systemd/systemd", "ELF systemd\n")
        .link("/usr/sbin/init", "../lib/systemd/systemd")
        .file("/usr/lib/systemd/system/sshd.service", "[Service]\nExecStart=/usr/sbin/sshd -D\n")
        .file("/usr/lib/systemd/system/sshd-keygen.service", "[Service]\nExecStart=/usr/sbin/sshd-keygen\n")
        .file("/usr/lib/systemd/system/auditd.service", "[Service]\n")
        .file("/usr/lib/systemd/system/irqbalance.service", "[Service]\n")
        .file("/usr/lib/systemd/system/kdump.service", "[Service]\n")
        .file("/usr/lib/systemd/system/NetworkManager.service", "[Service]\n")
        .file("/usr/lib/systemd/system/NetworkManager-dispatcher.service", "[Service]\n")
        .link("/etc/systemd/system/multi-user.target.wants/NetworkManager.service", "/usr/lib/systemd/system/NetworkManager.service")
        .link("/etc/systemd/system/multi-user.target.wants/auditd.service", "/usr/lib/systemd/system/auditd.service")
        .link("/etc/systemd/system/multi-user.target.wants/irqbalance.service", "/usr/lib/systemd/system/irqbalance.service")
        .link("/etc/systemd/system/multi-user.target.wants/sshd.service", "/usr/lib/systemd/system/sshd.service")
        .link("/etc/systemd/system/dbus-org.freedesktop.NetworkManager.service", "/usr/lib/systemd/system/NetworkManager.service")
        .link("/etc/systemd/system/dbus-org.freedesktop.nm-dispatcher.service", "/usr/lib/systemd/system/NetworkManager-dispatcher.service")
        .exe("/etc/rc.d/init.d/network", "#!/bin/bash\n# real network script\n")
        .file("/etc/rc.d/rc.local", "#!/bin/bash\ntouch /var/lock/subsys/local\n")
        .link("/etc/rc.local", "rc.d/rc.local")
        .link("/etc/init.d", "rc.d/init.d")
        .exe("/usr/bin/cloud-init", "#!/usr/bin/python\n")
        .file("/var/lib/cloud/instances/i-0123/obj.pkl", "pickle")
        .file("/var/lib/cloud/instances/i-0123/sem/config_ssh", "")
        .link("/var/lib/cloud/instance", "/var/lib/cloud/instances/i-0123")
        .file("/var/lib/cloud/seed/nocloud/user-data", "#cloud-config\n")
        .file("/var/log/cloud-init.log", "cloud-init ran\n")
        .file("/var/log/cloud-init-output.log", "output\n")
        .file("/var/log/journal/4f1b7a1e/system.journal", "LPKSHHRH")
        .file("/var/log/messages", "systemd: started\n")
        .file_mode("/var/log/audit/audit.log", "type=DAEMON_START\n", 0o600)
        .file("/var/cache/yum/x86_64/7/base/repomd.xml", "<repomd/>")
        .link("/var/run", "../run")
        .dir("/run")
        .file("/var/lib/NetworkManager/internal-eth0.lease", "lease")
        .file("/etc/NetworkManager/system-connections/Wired.nmconnection", "[connection]\n");
}

fn debian7(t: &Tree) {
    t.file("/etc/debian_version", "7.11\n")
        .file("/etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 7 (wheezy)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"7\"\nID=debian\n")
        .file("/etc/hostname", "deb7\n")
        .file("/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tdeb7.example.com\tdeb7\n")
        .file("/etc/inittab", "id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\n1:2345:respawn:/sbin/getty 38400 tty1\n2:23:respawn:/sbin/getty 38400 tty2\n6:23:respawn:/sbin/getty 38400 tty6\n")
        .exe("/sbin/init", "ELF sysvinit\n")
        .exe("/etc/init.d/udev", "#!/bin/sh\n")
        .exe("/etc/init.d/hwclock.sh", "#!/bin/sh\n")
        .exe("/etc/init.d/procps", "#!/bin/sh\n")
        .exe("/etc/init.d/kmod", "#!/bin/sh\n")
        .exe("/etc/init.d/ssh", "#!/bin/sh\n# OpenBSD Secure Shell server\n")
        .exe("/etc/init.d/cron", "#!/bin/sh\n")
        .link("/etc/rcS.d/S02udev", "../init.d/udev")
        .link("/etc/rcS.d/S05hwclock.sh", "../init.d/hwclock.sh")
        .link("/etc/rcS.d/S10kmod", "../init.d/kmod")
        .link("/etc/rcS.d/S12procps", "../init.d/procps")
        .link("/etc/rc0.d/K05hwclock.sh", "../init.d/hwclock.sh")
        .link("/etc/rc2.d/S02ssh", "../init.d/ssh")
        .link("/etc/rc2.d/S02cron", "../init.d/cron")
        .dir("/etc/rc3.d")
        .dir("/etc/rc4.d")
        .dir("/etc/rc5.d")
        .dir("/etc/rc1.d")
        .dir("/etc/rc6.d")
        .file("/etc/network/interfaces", "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n")
        .file("/var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n")
        .file("/var/lib/dhcp/dhclient.eth0.leases", "lease {}\n")
        .file("/var/cache/apt/archives/bash_4.2_amd64.deb", "deb")
        .dir("/var/cache/apt/archives/partial")
        .file("/var/cache/apt/archives/lock", "")
        .file("/var/cache/apt/pkgcache.bin", "cache")
        .file("/var/log/syslog", "kernel booted\n")
        .file_mode("/var/log/auth.log", "sshd accepted\n", 0o640)
        .file("/var/log/apt/history.log", "Start-Date\n")
        .link("/var/run", "/run")
        .dir("/run")
        .file("/etc/resolv.conf", "nameserver 10.0.0.1\n");
}

fn debian12(t: &Tree) {
    t.file("/etc/debian_version", "12.5\n")
        .file(
            "/etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n",
        )
        .file("/etc/hostname", "deb12\n")
        .file(
            "/etc/hosts",
            "127.0.0.1\tlocalhost\n127.0.1.1\tdeb12\n::1\tlocalhost ip6-localhost\n",
        )
        .exe("/lib/systemd/systemd", "ELF systemd\n")
        .link("/sbin/init", "/lib/systemd/systemd")
        .file(
            "/lib/systemd/system/ssh.service",
            "[Service]\nExecStartPre=/usr/sbin/sshd -t\nExecStart=/usr/sbin/sshd -D\n",
        )
        .file("/lib/systemd/system/systemd-udevd.service", "[Service]\n")
        .file(
            "/lib/systemd/system/systemd-udevd-control.socket",
            "[Socket]\n",
        )
        .file(
            "/lib/systemd/system/systemd-udevd-kernel.socket",
            "[Socket]\n",
        )
        .link(
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
            "/lib/systemd/system/ssh.service",
        )
        .link(
            "/etc/systemd/system/sshd.service",
            "/lib/systemd/system/ssh.service",
        )
        .link(
            "/etc/systemd/system/sockets.target.wants/systemd-udevd-control.socket",
            "/lib/systemd/system/systemd-udevd-control.socket",
        )
        .exe("/etc/init.d/udev", "#!/bin/sh\n")
        .exe("/etc/init.d/procps", "#!/bin/sh\n")
        .exe("/etc/init.d/ssh", "#!/bin/sh\n")
        .link("/etc/rcS.d/S01udev", "../init.d/udev")
        .link("/etc/rcS.d/S01procps", "../init.d/procps")
        .link("/etc/rc2.d/S01ssh", "../init.d/ssh")
        .dir("/etc/rc3.d")
        .dir("/etc/rc4.d")
        .dir("/etc/rc5.d")
        .file_mode(
            "/etc/machine-id",
            "0a1b2c3d4e5f60718293a4b5c6d7e8f9\n",
            0o444,
        )
        .link("/var/lib/dbus/machine-id", "/etc/machine-id")
        .file("/var/lib/systemd/credential.secret", "secret")
        .file(
            "/etc/network/interfaces",
            "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n",
        )
        .dir("/etc/network/interfaces.d")
        .file("/var/lib/dhcp/dhclient.leases", "lease {}\n")
        .file("/var/cache/apt/archives/vim.deb", "deb")
        .file("/var/cache/apt/srcpkgcache.bin", "cache")
        .file("/var/log/journal/0a1b/system.journal", "LPKSHHRH")
        .file("/var/log/dpkg.log", "install\n")
        .link("/var/run", "/run")
        .dir("/run");
}

fn ubuntu14(t: &Tree) {
    t.file("/etc/debian_version", "jessie/sid\n")
        .file("/etc/lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=14.04\nDISTRIB_CODENAME=trusty\nDISTRIB_DESCRIPTION=\"Ubuntu 14.04.6 LTS\"\n")
        .file("/etc/os-release", "NAME=\"Ubuntu\"\nVERSION=\"14.04.6 LTS, Trusty Tahr\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"14.04\"\n")
        .file("/etc/hostname", "trusty\n")
        .file("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 trusty\n")
        .exe("/sbin/init", "ELF upstart\n")
        .exe("/sbin/initctl", "ELF initctl\n")
        .file("/etc/init/console.conf", "# console - getty\n#\n# This service maintains a getty on the console from the point the system is\n# started until it is shut down again.\n\nstart on stopped rc RUNLEVEL=[2345] and (\n            not-container or\n            container CONTAINER=lxc or\n            container CONTAINER=lxc-libvirt)\n\nstop on runlevel [!2345]\n\nrespawn\nexec /sbin/getty -8 38400 console\n")
        .file("/etc/init/ssh.conf", "# ssh - OpenBSD Secure Shell server\nstart on runlevel [2345]\nexec /usr/sbin/sshd -D\n")
        .file("/etc/init/udev.conf", "start on virtual-filesystems\n")
        .file("/etc/init/tty1.conf", "start on stopped rc RUNLEVEL=[2345]\n")
        .file("/etc/init/mountall.conf", "start on startup\n")
        .exe("/etc/init.d/udev", "#!/bin/sh\n")
        .file("/etc/resolvconf/resolv.conf.d/head", "# Dynamic resolv.conf(5) file\n")
        .file("/etc/resolvconf/resolv.conf.d/tail", "nameserver 8.8.8.8\n")
        .file("/etc/resolvconf/resolv.conf.d/original", "nameserver 10.0.2.3\n")
        .exe("/etc/cron.weekly/fstrim", "#!/bin/sh\nexec fstrim-all\n")
        .file("/etc/network/interfaces", "# interfaces(5) file used by ifup(8) and ifdown(8)\nauto lo\niface lo inet loopback\n")
        .file("/etc/network/interfaces.d/50-cloud-init.cfg", "auto eth0\niface eth0 inet dhcp\n")
        .exe("/usr/bin/cloud-init", "#!/usr/bin/python\n")
        .file("/var/lib/cloud/instances/i-1/boot-finished", "done")
        .file("/var/log/cloud-init.log", "ran\n")
        .file_mode("/home/ubuntu/.ssh/authorized_keys", "ssh-rsa AAAA user\n", 0o600)
        .file("/home/ubuntu/.ssh/config", "Host *\n")
        .file("/home/ubuntu/.bash_history", "sudo -i\n")
        .owner("/home/ubuntu/.ssh/authorized_keys", 1000, 1000)
        .file("/var/lib/dhcp/dhclient.eth0.leases", "lease {}\n")
        .file("/var/cache/apt/pkgcache.bin", "cache")
        .file("/var/log/syslog", "booted\n")
        .file("/var/log/upstart/ssh.log", "started\n")
        .link("/var/run", "/run")
        .dir("/run");
}

fn ubuntu22(t: &Tree) {
    t.file("/etc/debian_version", "bookworm/sid\n")
        .file("/etc/lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n")
        .file("/etc/os-release", "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\n")
        .file("/etc/hostname", "jammy\n")
        .file("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 jammy\n\n# The following lines are desirable for IPv6 capable hosts\n::1 ip6-localhost ip6-loopback\n")
        .exe("/lib/systemd/systemd", "ELF systemd\n")
        .link("/sbin/init", "/lib/systemd/systemd")
        .file("/lib/systemd/system/ssh.service", "[Service]\nExecStart=/usr/sbin/sshd -D\n")
        .file("/lib/systemd/system/systemd-udevd.service", "[Service]\n")
        .file("/lib/systemd/system/systemd-udevd-control.socket", "[Socket]\n")
        .file("/lib/systemd/system/systemd-udevd-kernel.socket", "[Socket]\n")
        .link("/etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service")
        .file("/etc/systemd/resolved.conf", "[Resolve]\nDNS=8.8.8.8\nDomains=example.com\n#FallbackDNS=\n")
        .file("/etc/netplan/50-cloud-init.yaml", "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n")
        .file_mode("/etc/machine-id", "0a1b2c3d4e5f60718293a4b5c6d7e8f9\n", 0o444)
        .link("/var/lib/dbus/machine-id", "/etc/machine-id")
        .exe("/usr/bin/cloud-init", "#!/usr/bin/python3\n")
        .file("/var/lib/cloud/instances/i-2/boot-finished", "done")
        .link("/var/lib/cloud/instance", "/var/lib/cloud/instances/i-2")
        .file("/var/log/cloud-init.log", "ran\n")
        .file("/etc/resolvconf/resolv.conf.d/original", "nameserver 10.0.2.3\n")
        .exe("/etc/cron.weekly/fstrim", "#!/bin/sh\n")
        .file_mode("/home/ubuntu/.ssh/authorized_keys", "ssh-ed25519 AAAA user\n", 0o600)
        .file("/var/log/journal/0a1b/system.journal", "LPKSHHRH")
        .file("/var/log/syslog", "booted\n")
        .link("/var/run", "/run")
        .dir("/run");
}

fn alpine(t: &Tree) {
    t.file("/etc/alpine-release", "3.18.4\n")
        .file("/etc/os-release", "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\nPRETTY_NAME=\"Alpine Linux v3.18\"\n")
        .file("/etc/hostname", "alpine\n")
        .exe("/bin/busybox", "ELF busybox\n")
        .link("/sbin/init", "/bin/busybox")
        .exe("/sbin/openrc", "ELF openrc\n")
        .exe("/sbin/openrc-run", "ELF openrc-run\n")
        .link("/sbin/shutdown", "/bin/busybox")
        .file("/etc/inittab", "::sysinit:/sbin/openrc sysinit\n::sysinit:/sbin/openrc boot\n::wait:/sbin/openrc default\ntty1::respawn:/sbin/getty 38400 tty1\ntty2::respawn:/sbin/getty 38400 tty2\n::shutdown:/sbin/openrc shutdown\n")
        .exe("/etc/local.d/joyent.start", "#!/bin/sh\n/lib/smartdc/joyent_rc.local\n")
        .file("/etc/resolv.conf", "nameserver 8.8.8.8\nnameserver 8.8.4.4\n")
        .file("/var/cache/apk/APKINDEX.abc.tar.gz", "index")
        .file("/var/log/messages", "syslogd started\n")
        .dir("/etc/runlevels/sysinit")
        .dir("/etc/runlevels/boot")
        .dir("/etc/runlevels/default")
        .dir("/etc/runlevels/shutdown")
        .link("/etc/runlevels/default/sshd", "/etc/init.d/sshd");
    for s in [
        "devfs",
        "dmesg",
        "mdev",
        "bootmisc",
        "hostname",
        "modules",
        "sysctl",
        "syslog",
        "crond",
        "local",
        "mount-ro",
        "killprocs",
        "savecache",
    ] {
        t.exe(&format!("/etc/init.d/{s}"), "#!/sbin/openrc-run\n");
    }
    for s in ["fsck", "hwclock", "klogd", "sysfs"] {
        t.file_mode(
            &format!("/etc/init.d/{s}"),
            "#!/sbin/openrc-run\ndepend() { need root; }\nstart() { real work; }\n",
            0o755,
        );
    }
    t.exe(
        "/etc/init.d/networking",
        "#!/sbin/openrc-run\ndepend() { need localmount; }\nstart() { ifup -a; }\n",
    )
    .exe(
        "/etc/init.d/sshd",
        "#!/sbin/openrc-run\ngenerate_host_keys() {\n\tssh-keygen -A\n}\n",
    );
}
