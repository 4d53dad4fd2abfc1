#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The first-boot mechanism (`--firstboot`, `--firstboot-command`, `--firstboot-install`
//! and the SSH key regenerator) on the distro layouts, as ext4 images written by our engine
//! and read back with debugfs; e2fsck clean after each; the generated scripts pass `sh -n`,
//! the systemd unit `systemd-analyze verify`; and the runner itself is run by `sh` on a
//! scratch tree to prove its contract (order, once, log, failed scripts kept, self-disable).
//! The QEMU boot test (cli/tests/boot.rs) proves it under a real systemd.

mod common;

use common::distros::build;
use imgscrub_disk::RawFile;
use imgscrub_fs::filesystem::Timestamp;
use imgscrub_fs::{Ext4, Filesystem};
use imgscrub_prepare::firstboot as fb;
use imgscrub_prepare::{
    CustomizeItem, InitSystem, Options, Origin, ParseContext, PrepareError, Profile, Report,
    parse_option, plan, prepare,
};
use imgscrub_testkit::{
    assert_e2fsck_clean, debugfs, find_tool, in_ci, make_ext4, require_tools, run, run_ok,
};
use std::path::{Path, PathBuf};
use std::process::Command;

fn items(opts: &[(&str, &str)], base: &Path) -> Vec<CustomizeItem> {
    let pc = ParseContext {
        base_dir: base.to_path_buf(),
        home: None,
    };
    opts.iter()
        .flat_map(|(o, a)| parse_option(o, Some(a), &pc, Origin::CommandLine).unwrap())
        .collect()
}

fn options(customize: Vec<CustomizeItem>) -> Options {
    Options {
        fixed_time: Some(Timestamp::new(1_700_000_000, 0)),
        customize,
        ..Options::default()
    }
}

/// A distro tree (plus `extra` host files) as an ext4 image.
fn image(t: &Path, distro: &str, extra: &[(&str, &str)]) -> Option<PathBuf> {
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    build(distro, &src);
    for (path, content) in extra {
        let p = src.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    let img = t.join(format!("{distro}.ext4"));
    make_ext4("default", &src, &img, 64).then_some(img)
}

/// Plan and apply on the ext4 image with our engine.
fn apply(img: &Path, profile: &str, opts: &Options) -> Result<Report, PrepareError> {
    let mut fs = Ext4::open(RawFile::open_rw(img).unwrap(), true).unwrap();
    let r = prepare(&mut fs, &Profile::builtin(profile).unwrap(), opts);
    fs.flush().unwrap();
    r
}

fn cat(img: &Path, path: &str) -> String {
    debugfs(img, &format!("cat {path}"))
}

/// `ls` of a directory: the names, sorted.
fn names(img: &Path, dir: &str) -> Vec<String> {
    let out = debugfs(img, &format!("ls -p {dir}"));
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_owned))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect();
    v.sort();
    v
}

/// Mode bits (octal, 0755…) and type letter from debugfs `stat`.
fn mode(img: &Path, path: &str) -> u32 {
    let out = debugfs(img, &format!("stat {path}"));
    let m = out
        .split("Mode:")
        .nth(1)
        .unwrap_or_else(|| panic!("{path}: {out}"))
        .split_whitespace()
        .next()
        .unwrap();
    u32::from_str_radix(m.trim_start_matches('0'), 8).unwrap_or(0)
}

/// Target of a symlink (debugfs `stat` prints `Fast link dest: "…"`).
fn link(img: &Path, path: &str) -> String {
    let out = debugfs(img, &format!("stat {path}"));
    out.split("Fast link dest: \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("{path} is not a fast symlink: {out}"))
        .to_owned()
}

/// `sh -n` on a script's text.
fn sh_n(name: &str, text: &str) {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("s");
    std::fs::write(&f, text).unwrap();
    let o = run(Command::new("sh").arg("-n").arg(&f));
    assert!(
        o.status.success(),
        "{name}: sh -n: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `systemd-analyze verify` on a unit whose ExecStart is `RUNNER` (copied into a scratch
/// root so the command exists).
fn verify_unit(unit: &str) {
    let Some(sa) = find_tool("systemd-analyze") else {
        assert!(!in_ci(), "systemd-analyze missing in CI (package systemd)");
        eprintln!("SKIP systemd-analyze verify: not installed");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let runner = t.path().join("firstboot.sh");
    std::fs::write(&runner, fb::runner(InitSystem::Systemd)).unwrap();
    run_ok(Command::new("chmod").arg("0755").arg(&runner));
    let text = unit.replace(fb::RUNNER, runner.to_str().unwrap());
    let f = t.path().join("imgscrub-firstboot.service");
    std::fs::write(&f, text).unwrap();
    let o = run(Command::new(sa).args(["verify", "--man=no"]).arg(&f));
    let err = String::from_utf8_lossy(&o.stderr);
    // Unknown units named in ordering (ssh.service on a host without sshd) are fine; any
    // complaint about our own file is not.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("imgscrub-firstboot") || l.contains("firstboot.sh"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{err}");
}

#[test]
fn systemd_debian_scripts_in_order() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("setup web.sh"), "#!/bin/bash\necho web\n").unwrap();
    let Some(img) = image(
        t.path(),
        "debian12",
        &[("/usr/bin/apt-get", "ELF apt-get\n")],
    ) else {
        return;
    };
    let its = items(
        &[
            ("firstboot-command", "echo one > /root/one"),
            ("firstboot", "setup web.sh"),
            ("firstboot-install", "vim,curl"),
        ],
        t.path(),
    );
    let r = apply(&img, "linux", &options(its)).unwrap();
    assert_e2fsck_clean(&img);
    let d = fb::SCRIPTS_DIR;
    assert_eq!(
        names(&img, d),
        [
            "0000-ssh-keygen",
            "0001-command",
            "0002-setup-web.sh",
            "0003-install-apt-get"
        ]
    );
    assert_eq!(
        cat(&img, &format!("{d}/0001-command")),
        fb::command_script("echo one > /root/one")
    );
    assert_eq!(
        cat(&img, &format!("{d}/0002-setup-web.sh")),
        "#!/bin/bash\necho web\n"
    );
    let install = cat(&img, &format!("{d}/0003-install-apt-get"));
    assert!(
        install.contains("apt-get -y install 'vim' 'curl'"),
        "{install}"
    );
    for n in names(&img, d) {
        let p = format!("{d}/{n}");
        assert_eq!(mode(&img, &p), 0o755, "{p}");
        sh_n(&p, &cat(&img, &p));
    }
    let runner = cat(&img, fb::RUNNER);
    assert_eq!(runner, fb::runner(InitSystem::Systemd));
    assert_eq!(mode(&img, fb::RUNNER), 0o755);
    sh_n("runner", &runner);
    let unit = cat(&img, "/etc/systemd/system/imgscrub-firstboot.service");
    assert!(unit.contains("Wants=network-online.target"), "{unit}");
    assert!(unit.contains("Before=ssh.service sshd.service"), "{unit}");
    assert!(unit.contains("ConditionPathExistsGlob=/usr/lib/imgscrub/firstboot.d/*"));
    verify_unit(&unit);
    assert_eq!(
        link(
            &img,
            "/etc/systemd/system/multi-user.target.wants/imgscrub-firstboot.service"
        ),
        "/etc/systemd/system/imgscrub-firstboot.service"
    );
    // Every first-boot step says where it came from.
    for (path, source) in [
        (
            "/usr/lib/imgscrub/firstboot.d/0000-ssh-keygen",
            "ssh-hostkeys",
        ),
        (
            "/usr/lib/imgscrub/firstboot.d/0001-command",
            "customize:--firstboot-command",
        ),
        (
            "/usr/lib/imgscrub/firstboot.d/0002-setup-web.sh",
            "customize:--firstboot",
        ),
        (
            "/usr/lib/imgscrub/firstboot.d/0003-install-apt-get",
            "customize:--firstboot-install",
        ),
    ] {
        let s = r.steps.iter().find(|s| s.path == path).unwrap();
        assert_eq!(s.source, source, "{path}");
    }

    // A second customization appends after the scripts already there, and changes nothing
    // else (same unit, same runner).
    let its = items(&[("firstboot-command", "echo two")], t.path());
    let r = apply(&img, "linux", &options(its)).unwrap();
    assert_e2fsck_clean(&img);
    assert!(names(&img, d).contains(&"0004-command".to_string()));
    let paths: Vec<&str> = r.steps.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/usr/lib/imgscrub/firstboot.d/0004-command"],
        "{paths:?}"
    );
}

#[test]
fn same_inputs_same_plan() {
    let t = tempfile::tempdir().unwrap();
    let plan_json = || {
        let d = tempfile::tempdir().unwrap();
        build("debian12", d.path());
        let fs = imgscrub_fs::HostDir::open(d.path()).unwrap();
        let its = items(&[("firstboot-command", "date")], t.path());
        let p = plan(&fs, &Profile::builtin("linux").unwrap(), &options(its)).unwrap();
        let contents: Vec<Vec<u8>> = p.steps.iter().map(|s| s.content().to_vec()).collect();
        (serde_json::to_string(&p.steps).unwrap(), contents)
    };
    assert_eq!(plan_json(), plan_json());
}

#[test]
fn per_init_system_hooks() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    let t = tempfile::tempdir().unwrap();

    // Ubuntu 22.04 (systemd, cloud-init regenerates keys): only our script, numbered 0001.
    let dt = t.path().join("u22");
    let Some(img) = image(&dt, "ubuntu22", &[("/usr/bin/apt-get", "ELF\n")]) else {
        return;
    };
    let its = items(&[("firstboot-install", "nginx")], t.path());
    apply(&img, "linux", &options(its)).unwrap();
    assert_e2fsck_clean(&img);
    assert_eq!(names(&img, fb::SCRIPTS_DIR), ["0001-install-apt-get"]);
    assert!(cat(&img, "/etc/systemd/system/imgscrub-firstboot.service").contains("network-online"));

    // CentOS 7 (systemd, SELinux enforcing, yum): yum; the tree has no labels, so relabel.
    let dt = t.path().join("c7");
    let Some(img) = image(&dt, "centos7", &[("/usr/bin/yum", "ELF\n")]) else {
        return;
    };
    let its = items(&[("firstboot-install", "httpd")], t.path());
    let r = apply(&img, "linux", &options(its)).unwrap();
    assert_e2fsck_clean(&img);
    assert!(
        cat(&img, "/usr/lib/imgscrub/firstboot.d/0001-install-yum")
            .contains("yum -y install 'httpd'")
    );
    assert!(
        r.notes.iter().any(|n| n.contains("SELinux")),
        "{:?}",
        r.notes
    );
    assert!(names(&img, "/").contains(&".autorelabel".to_string()));

    // CentOS 6 (upstart; sshd regenerates keys itself): an upstart job.
    let dt = t.path().join("c6");
    let Some(img) = image(&dt, "centos6", &[]) else {
        return;
    };
    let its = items(&[("firstboot-command", "touch /root/x")], t.path());
    apply(&img, "linux", &options(its)).unwrap();
    assert_e2fsck_clean(&img);
    let job = cat(&img, "/etc/init/imgscrub-firstboot.conf");
    assert_eq!(job, fb::upstart_job());
    assert!(job.contains("start on starting ssh or starting sshd or stopped rc RUNLEVEL=[2345]"));
    assert!(cat(&img, fb::RUNNER).contains("echo manual >/etc/init/imgscrub-firstboot.override"));
    assert_eq!(names(&img, fb::SCRIPTS_DIR), ["0001-command"]);

    // Debian 7 (sysvinit): LSB script, S links at ssh's number in rc2.d, 99 elsewhere.
    let dt = t.path().join("d7");
    let Some(img) = image(&dt, "debian7", &[]) else {
        return;
    };
    let its = items(&[("firstboot-command", "touch /root/x")], t.path());
    apply(&img, "linux", &options(its)).unwrap();
    assert_e2fsck_clean(&img);
    let script = cat(&img, "/etc/init.d/imgscrub-firstboot");
    assert!(script.contains("### BEGIN INIT INFO") && script.contains("$network"));
    assert!(script.contains("X-Start-Before:    ssh sshd"));
    sh_n("init.d script", &script);
    assert_eq!(mode(&img, "/etc/init.d/imgscrub-firstboot"), 0o755);
    assert_eq!(
        link(&img, "/etc/rc2.d/S02imgscrub-firstboot"),
        "../init.d/imgscrub-firstboot"
    );
    assert_eq!(
        link(&img, "/etc/rc5.d/S99imgscrub-firstboot"),
        "../init.d/imgscrub-firstboot"
    );
    assert_eq!(
        names(&img, fb::SCRIPTS_DIR),
        ["0000-ssh-keygen", "0001-command"]
    );

    // Alpine (OpenRC, apk).
    let dt = t.path().join("al");
    let Some(img) = image(&dt, "alpine", &[("/sbin/apk", "ELF\n")]) else {
        return;
    };
    let its = items(&[("firstboot-install", "curl")], t.path());
    apply(&img, "linux", &options(its)).unwrap();
    assert_e2fsck_clean(&img);
    let script = cat(&img, "/etc/init.d/imgscrub-firstboot");
    assert!(script.starts_with("#!/sbin/openrc-run\n"), "{script}");
    assert!(script.contains("after net") && script.contains("before sshd"));
    sh_n("openrc script", &script);
    assert_eq!(
        link(&img, "/etc/runlevels/default/imgscrub-firstboot"),
        "/etc/init.d/imgscrub-firstboot"
    );
    assert!(cat(&img, "/usr/lib/imgscrub/firstboot.d/0001-install-apk").contains("apk add 'curl'"));
    assert!(cat(&img, fb::RUNNER).contains("rm -f /etc/runlevels/*/imgscrub-firstboot"));
}

#[test]
fn refusals_change_nothing() {
    let t = tempfile::tempdir().unwrap();
    // No package manager in the debian12 layout: an error naming the option, before any write.
    let d = tempfile::tempdir().unwrap();
    build("debian12", d.path());
    let fs = imgscrub_fs::HostDir::open(d.path()).unwrap();
    let its = items(&[("firstboot-install", "vim")], t.path());
    let e = plan(&fs, &Profile::builtin("linux").unwrap(), &options(its)).unwrap_err();
    assert!(
        e.to_string().contains("--firstboot-install") && e.to_string().contains("package manager"),
        "{e}"
    );
    // A guest whose init system is unknown.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::write(d.path().join("etc/os-release"), "ID=mystery\n").unwrap();
    std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let fs = imgscrub_fs::HostDir::open(d.path()).unwrap();
    let its = items(&[("firstboot-command", "true")], t.path());
    let e = plan(&fs, &Profile::builtin("linux").unwrap(), &options(its)).unwrap_err();
    assert!(e.to_string().contains("init system is unknown"), "{e}");
}

/// The runner's contract, run for real by `sh` on a scratch tree (its absolute paths
/// rewritten under a temporary directory).
#[test]
fn runner_runs_once_in_order_and_disables_itself() {
    for init in [
        InitSystem::Systemd,
        InitSystem::Openrc,
        InitSystem::Sysvinit,
        InitSystem::Upstart,
    ] {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().to_str().unwrap();
        let text = fb::runner(init)
            .replace("/usr/lib/imgscrub", &format!("{r}/usr/lib/imgscrub"))
            .replace("/var/log/", &format!("{r}/var/log/"))
            .replace("/etc/", &format!("{r}/etc/"));
        let runner = t.path().join("firstboot.sh");
        std::fs::write(&runner, text).unwrap();
        let d = t.path().join("usr/lib/imgscrub/firstboot.d");
        std::fs::create_dir_all(&d).unwrap();
        let order = t.path().join("order");
        let o = order.display();
        std::fs::write(
            d.join("0001-a"),
            format!("#!/bin/sh\necho a >>{o}\necho out-a\n"),
        )
        .unwrap();
        // No shebang: run by the shell, as virt-customize's scripts often are.
        std::fs::write(d.join("0002-fails"), format!("echo f >>{o}\nexit 3\n")).unwrap();
        std::fs::write(d.join("0003-b"), format!("#!/bin/sh\necho b >>{o}\n")).unwrap();
        // The hook's enablement, as the planner installs it.
        let hook: &[&str] = match init {
            InitSystem::Systemd => {
                &["etc/systemd/system/multi-user.target.wants/imgscrub-firstboot.service"]
            }
            InitSystem::Openrc => &["etc/runlevels/default/imgscrub-firstboot"],
            InitSystem::Sysvinit => &[
                "etc/rc2.d/S02imgscrub-firstboot",
                "etc/rc5.d/S99imgscrub-firstboot",
            ],
            _ => &[],
        };
        for h in hook {
            let p = t.path().join(h);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink("/nonexistent", &p).unwrap();
        }
        std::fs::create_dir_all(t.path().join("etc/init")).unwrap();

        let st = run(Command::new("sh").arg(&runner));
        assert_eq!(st.status.code(), Some(1), "{init:?}: a script failed");
        assert_eq!(
            std::fs::read_to_string(&order).unwrap(),
            "a\nf\nb\n",
            "{init:?}"
        );
        assert!(
            std::fs::read_dir(&d).unwrap().next().is_none(),
            "{init:?}: scripts left"
        );
        assert!(
            t.path()
                .join("usr/lib/imgscrub/firstboot.failed/0002-fails")
                .is_file()
        );
        let log = std::fs::read_to_string(t.path().join("var/log/imgscrub-firstboot.log")).unwrap();
        assert!(
            log.contains("running 0001-a") && log.contains("out-a"),
            "{log}"
        );
        assert!(
            log.contains("0002-fails: failed with exit status 3"),
            "{log}"
        );
        assert!(log.contains("imgscrub-firstboot disabled"), "{log}");
        let lm = std::fs::metadata(t.path().join("var/log/imgscrub-firstboot.log")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&lm.permissions()) & 0o777,
            0o600
        );
        for h in hook {
            assert!(
                std::fs::symlink_metadata(t.path().join(h)).is_err(),
                "{init:?}: {h} left"
            );
        }
        if init == InitSystem::Upstart {
            assert_eq!(
                std::fs::read_to_string(t.path().join("etc/init/imgscrub-firstboot.override"))
                    .unwrap(),
                "manual\n"
            );
        }
        // Once: a second run finds nothing to do, succeeds and logs nothing.
        let log_path = t.path().join("var/log/imgscrub-firstboot.log");
        let log_before = std::fs::read(&log_path).unwrap();
        let st = run(Command::new("sh").arg(&runner));
        assert!(st.status.success());
        assert_eq!(std::fs::read_to_string(&order).unwrap(), "a\nf\nb\n");
        assert_eq!(std::fs::read(&log_path).unwrap(), log_before);
    }
}

/// On an SELinux guest whose ext4 has labels, the first-boot files get their directory's
/// label (read back with debugfs `ea_get`), and no relabel is requested.
#[test]
fn selinux_labels_on_firstboot_files() {
    require_tools!("mke2fs", "debugfs", "e2fsck");
    let t = tempfile::tempdir().unwrap();
    let Some(img) = image(t.path(), "centos7", &[]) else {
        return;
    };
    // Label every directory of the tree: /usr/lib as lib_t, the unit directory as
    // systemd_unit_file_t, everything else etc_t.
    let mut cmds = String::new();
    let mut stack = vec![String::from("/")];
    while let Some(d) = stack.pop() {
        let label = if d.starts_with("/usr/lib") {
            "system_u:object_r:lib_t:s0"
        } else if d.starts_with("/etc/systemd/system") {
            "system_u:object_r:systemd_unit_file_t:s0"
        } else {
            "system_u:object_r:etc_t:s0"
        };
        cmds.push_str(&format!("ea_set \"{d}\" security.selinux {label}\n"));
        let host = t.path().join("src").join(d.trim_start_matches('/'));
        for e in std::fs::read_dir(&host).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                let name = e.file_name().into_string().unwrap();
                stack.push(format!("{}/{name}", d.trim_end_matches('/')));
            }
        }
    }
    let f = t.path().join("label.cmds");
    std::fs::write(&f, cmds).unwrap();
    run_ok(
        Command::new(find_tool("debugfs").unwrap())
            .arg("-w")
            .arg("-f")
            .arg(&f)
            .arg(&img),
    );
    let its = items(&[("firstboot-command", "true")], t.path());
    let r = apply(&img, "linux", &options(its)).unwrap();
    assert_e2fsck_clean(&img);
    assert!(
        r.notes.iter().any(|n| n.contains("label of their parent")),
        "{:?}",
        r.notes
    );
    assert!(!names(&img, "/").contains(&".autorelabel".to_string()));
    for (path, label) in [
        ("/usr/lib/imgscrub/firstboot.sh", "lib_t"),
        ("/usr/lib/imgscrub/firstboot.d/0001-command", "lib_t"),
        (
            "/etc/systemd/system/imgscrub-firstboot.service",
            "systemd_unit_file_t",
        ),
    ] {
        let got = debugfs(&img, &format!("ea_get {path} security.selinux"));
        assert!(got.contains(label), "{path}: {got}");
    }
}

/// The package manager is the guest's: dnf before yum (RHEL 8 has both), zypper, apt-get, apk.
#[test]
fn package_manager_is_chosen_from_the_guest() {
    let t = tempfile::tempdir().unwrap();
    for (distro, tools, want) in [
        (
            "centos7",
            &["/usr/bin/yum", "/usr/bin/dnf"][..],
            "0001-install-dnf",
        ),
        ("centos7", &["/usr/bin/yum"][..], "0001-install-yum"),
        ("debian12", &["/usr/bin/zypper"][..], "0001-install-zypper"),
        ("alpine", &["/sbin/apk"][..], "0001-install-apk"),
    ] {
        let d = tempfile::tempdir().unwrap();
        build(distro, d.path());
        for tool in tools {
            let p = d.path().join(tool.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "ELF\n").unwrap();
        }
        let fs = imgscrub_fs::HostDir::open(d.path()).unwrap();
        let its = items(&[("firstboot-install", "tmux,git")], t.path());
        let p = plan(&fs, &Profile::builtin("linux").unwrap(), &options(its)).unwrap();
        let step = p
            .steps
            .iter()
            .find(|s| s.path.ends_with(want))
            .unwrap_or_else(|| panic!("{distro} {tools:?}: no {want}"));
        let text = String::from_utf8(step.content().to_vec()).unwrap();
        let cmd = match want.rsplit('-').next().unwrap() {
            "dnf" => "dnf -y install 'tmux' 'git'",
            "yum" => "yum -y install 'tmux' 'git'",
            "zypper" => "zypper -n install 'tmux' 'git'",
            _ => "apk add 'tmux' 'git'",
        };
        assert!(text.contains(cmd), "{text}");
        sh_n(want, &text);
    }
}
