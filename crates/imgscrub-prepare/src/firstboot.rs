//! The first-boot mechanism: what imgscrub installs in a guest so that scripts run once, in
//! order, at the guest's next boot (`--firstboot`, `--firstboot-command`,
//! `--firstboot-install`, and the SSH host key regenerator).
//!
//! This module only produces names and file contents (pure, deterministic); the planner
//! (`plan`) decides where they go in a given guest and stages them.
//!
//! Layout in the guest:
//!
//! - `/usr/lib/imgscrub/firstboot.d/NNNN-name`: the scripts (0755), run in name order;
//! - `/usr/lib/imgscrub/firstboot.sh`: the runner. It runs each script once with its output
//!   appended to `/var/log/imgscrub-firstboot.log` (0600). A script that exits 0 is deleted;
//!   one that fails is moved to `/usr/lib/imgscrub/firstboot.failed/` (kept for inspection,
//!   never retried: a failing package install must not hold up every later boot). When the
//!   directory is empty the runner disables its own init hook;
//! - one hook per init system: a systemd unit `imgscrub-firstboot.service` (wanted by
//!   multi-user.target, `ConditionPathExistsGlob` on the scripts, before `ssh`/`sshd`), a
//!   sysvinit script with an LSB header and `S` links, an OpenRC script in the default
//!   runlevel, or an upstart job.
//!
//! The hook runs before sshd, so the SSH host key regenerator (`0000-ssh-keygen`) is one of
//! its scripts. When there are other scripts, the hook also waits for the network
//! (`network-online.target`, OpenRC `after net`, the runlevel's network services) because
//! those scripts typically install packages.

use crate::inspect::InitSystem;

/// Directory of the pending scripts.
pub const SCRIPTS_DIR: &str = "/usr/lib/imgscrub/firstboot.d";
/// Where failed scripts are moved.
pub const FAILED_DIR: &str = "/usr/lib/imgscrub/firstboot.failed";
/// The runner.
pub const RUNNER: &str = "/usr/lib/imgscrub/firstboot.sh";
/// The log every script's output goes to.
pub const LOG: &str = "/var/log/imgscrub-firstboot.log";
/// Name of the service (unit, init script, upstart job).
pub const SERVICE: &str = "imgscrub-firstboot";
/// Name of the SSH host key regenerator's script.
pub const KEYGEN_SCRIPT: &str = "0000-ssh-keygen";

/// A guest's package manager, for `--firstboot-install`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    /// Debian, Ubuntu.
    Apt,
    /// Fedora, RHEL 8+.
    Dnf,
    /// RHEL/CentOS ≤ 7.
    Yum,
    /// SUSE.
    Zypper,
    /// Alpine.
    Apk,
}

impl PackageManager {
    /// Guest paths that identify each package manager, in order of preference (dnf before
    /// yum: RHEL 8 has both).
    pub const PROBES: &'static [(&'static str, PackageManager)] = &[
        ("/usr/bin/dnf", PackageManager::Dnf),
        ("/usr/bin/yum", PackageManager::Yum),
        ("/usr/bin/zypper", PackageManager::Zypper),
        ("/usr/bin/apt-get", PackageManager::Apt),
        ("/sbin/apk", PackageManager::Apk),
        ("/usr/sbin/apk", PackageManager::Apk),
    ];

    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Apt => "apt-get",
            Self::Dnf => "dnf",
            Self::Yum => "yum",
            Self::Zypper => "zypper",
            Self::Apk => "apk",
        }
    }

    /// A first-boot script installing `packages` (already checked with [`check_package`]).
    pub fn install_script(self, packages: &[String]) -> String {
        let list = packages
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let body = match self {
            Self::Apt => format!(
                "export DEBIAN_FRONTEND=noninteractive\napt-get -y update\n\
                 exec apt-get -y install {list}\n"
            ),
            Self::Dnf => format!("exec dnf -y install {list}\n"),
            Self::Yum => format!("exec yum -y install {list}\n"),
            Self::Zypper => format!("exec zypper -n install {list}\n"),
            Self::Apk => format!("apk update\nexec apk add {list}\n"),
        };
        format!("#!/bin/sh\n# Installed by imgscrub (--firstboot-install).\nset -e\n{body}")
    }
}

/// Check one package name of `--firstboot-install`: letters, digits and `.+-_:~=*@/`
/// (versions and architectures as the package managers spell them), not starting with `-`.
pub fn check_package(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+-_:~=*@/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--firstboot-install: bad package name {name:?} (letters, digits and .+-_:~=*@/)"
        ))
    }
}

/// The label part of a script's name: `[A-Za-z0-9._-]` kept, anything else `-`, at most 40
/// characters, never empty or hidden.
pub fn sanitize_label(label: &str) -> String {
    let mut s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    while s.starts_with('.') {
        s.replace_range(0..1, "_");
    }
    if s.is_empty() {
        s.push_str("script");
    }
    s
}

/// `NNNN-label` for the `index`-th script (4 digits, so name order is run order).
pub fn script_name(index: u32, label: &str) -> String {
    format!("{index:04}-{}", sanitize_label(label))
}

/// The sequence number of a script name (`0012-x` → 12), if it has one.
pub fn script_index(name: &[u8]) -> Option<u32> {
    let digits: Vec<u8> = name
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    if digits.is_empty() || name.get(digits.len()) != Some(&b'-') {
        return None;
    }
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// A `--firstboot-command` as a script.
pub fn command_script(cmd: &str) -> String {
    format!("#!/bin/sh\n# Installed by imgscrub (--firstboot-command).\n{cmd}\n")
}

/// The SSH host key regenerator's script.
pub fn keygen_script(keygen: &str) -> String {
    format!(
        "#!/bin/sh\n# Generate missing SSH host keys before sshd starts (installed by imgscrub).\n\
         exec {keygen} -A\n"
    )
}

/// How the runner disables the hook once every script has run.
fn disable_lines(init: InitSystem) -> String {
    match init {
        InitSystem::Systemd => {
            format!("  rm -f /etc/systemd/system/*.wants/{SERVICE}.service\n")
        }
        InitSystem::Sysvinit => format!(
            "  rm -f /etc/rc[0-6S].d/[SK][0-9][0-9]{SERVICE} \
             /etc/rc.d/rc[0-6].d/[SK][0-9][0-9]{SERVICE}\n"
        ),
        InitSystem::Openrc => format!("  rm -f /etc/runlevels/*/{SERVICE}\n"),
        InitSystem::Upstart => format!("  echo manual >/etc/init/{SERVICE}.override\n"),
        InitSystem::Unknown => "  :\n".into(),
    }
}

/// The runner script for a guest with `init`.
pub fn runner(init: InitSystem) -> String {
    format!(
        r#"#!/bin/sh
# imgscrub first-boot runner (installed by imgscrub).
# Runs each script of {SCRIPTS_DIR} once, in name order, appending its output to
# {LOG}. A script that exits 0 is deleted; a failed one is moved to
# {FAILED_DIR} and not run again. When no script is left, the {SERVICE}
# hook of the init system is disabled. Exits 1 when a script failed.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
d={SCRIPTS_DIR}
failed={FAILED_DIR}
log={LOG}
status=0
# Nothing to do (an init system that cannot be disabled runs us again): stay silent.
[ -n "$(ls -A "$d" 2>/dev/null)" ] || exit 0
umask 077
mkdir -p "${{log%/*}}"
touch "$log"
exec >>"$log" 2>&1 </dev/null
umask 022
say() {{
  echo "imgscrub-firstboot: $(date -u +%Y-%m-%dT%H:%M:%SZ 2>/dev/null) $*"
}}
say "start"
for f in "$d"/*; do
  [ -f "$f" ] || continue
  n=${{f##*/}}
  say "running $n"
  chmod 0755 "$f" 2>/dev/null
  "$f"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    say "$n: done"
    rm -f "$f"
  else
    say "$n: failed with exit status $rc; moved to $failed"
    mkdir -p "$failed"
    mv -f "$f" "$failed/"
    status=1
  fi
done
if [ -z "$(ls -A "$d" 2>/dev/null)" ]; then
{disable}  say "all scripts ran; {SERVICE} disabled"
fi
sync
exit $status
"#,
        disable = disable_lines(init)
    )
}

/// The systemd unit. `network`: wait for `network-online.target` (scripts other than the
/// key regenerator).
pub fn systemd_unit(network: bool) -> String {
    let (wants, after) = if network {
        ("Wants=network-online.target\n", " network-online.target")
    } else {
        ("", "")
    };
    format!(
        "[Unit]\nDescription=imgscrub first-boot scripts (installed by imgscrub)\n\
         ConditionPathExistsGlob={SCRIPTS_DIR}/*\n{wants}\
         After=local-fs.target{after}\n\
         Before=ssh.service sshd.service systemd-user-sessions.service\n\n\
         [Service]\nType=oneshot\nExecStart={RUNNER}\nTimeoutStartSec=0\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// The sysvinit script (LSB header; `insserv`/`update-rc.d` compatible).
pub fn sysv_script(network: bool) -> String {
    let req = if network {
        "$local_fs $remote_fs $network $syslog"
    } else {
        "$local_fs"
    };
    format!(
        "#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          {SERVICE}\n\
         # Required-Start:    {req}\n# Required-Stop:\n\
         # X-Start-Before:    ssh sshd\n# Default-Start:     2 3 4 5\n\
         # Default-Stop:\n# Short-Description: imgscrub first-boot scripts\n\
         ### END INIT INFO\n# chkconfig: 2345 99 01\n# Installed by imgscrub.\n\n\
         case \"$1\" in\n  start)\n    {RUNNER}\n    ;;\n\
         \x20 stop|restart|force-reload|status)\n    ;;\n\
         \x20 *)\n    echo \"Usage: $0 start\" >&2\n    exit 3\n    ;;\nesac\nexit 0\n"
    )
}

/// The OpenRC script; `openrc_run` is the guest's interpreter (`/sbin/openrc-run`, or
/// `/sbin/runscript` on old OpenRC).
pub fn openrc_script(openrc_run: &str, network: bool) -> String {
    let after = if network { "\tafter net\n" } else { "" };
    format!(
        "#!{openrc_run}\n# Installed by imgscrub.\n\
         description=\"imgscrub first-boot scripts\"\n\n\
         depend() {{\n\tneed localmount\n{after}\tbefore sshd\n}}\n\n\
         start() {{\n\tebegin \"Running imgscrub first-boot scripts\"\n\t{RUNNER}\n\teend $?\n}}\n"
    )
}

/// The upstart job: a task that holds up ssh/sshd, or runs at the end of the runlevel's rc
/// when there is no ssh job.
pub fn upstart_job() -> String {
    format!(
        "# imgscrub first-boot scripts (installed by imgscrub)\n\
         description \"imgscrub first-boot scripts\"\n\n\
         start on starting ssh or starting sshd or stopped rc RUNLEVEL=[2345]\n\n\
         task\n\nexec {RUNNER}\n"
    )
}

/// The sysvinit `S` link name for sequence number `nn`.
pub fn sysv_link(nn: u32) -> String {
    format!("S{nn:02}{SERVICE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(script_name(3, "my script.sh"), "0003-my-script.sh");
        assert_eq!(script_name(12, ".hidden"), "0012-_hidden");
        assert_eq!(script_name(1, ""), "0001-script");
        assert_eq!(script_index(b"0012-x"), Some(12));
        assert_eq!(script_index(b"x-1"), None);
        assert_eq!(script_index(b"12"), None);
    }

    #[test]
    fn packages() {
        assert!(check_package("vim").is_ok() && check_package("libc6:amd64").is_ok());
        assert!(check_package("vim;rm").is_err() && check_package("-y").is_err());
        let s = PackageManager::Apt.install_script(&["vim".into(), "curl".into()]);
        assert!(s.contains("apt-get -y install 'vim' 'curl'"));
        assert!(
            PackageManager::Apk
                .install_script(&["vim".into()])
                .contains("apk add 'vim'")
        );
    }

    #[test]
    fn unit_waits_for_network_only_with_scripts() {
        assert!(!systemd_unit(false).contains("network-online"));
        assert!(systemd_unit(true).contains("Wants=network-online.target"));
        assert!(systemd_unit(true).contains("Before=ssh.service sshd.service"));
    }
}
