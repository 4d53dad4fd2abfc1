//! First boot: things the guest runs at its first start. Today: the SSH host key
//! regenerator, installed (one unit/job/script per init system) when host keys were removed
//! and the guest has nothing of its own that recreates them.

use super::Planner;
use super::text::contains;
use crate::action::LinkPolicy;
use crate::error::Result;
use crate::inspect::InitSystem;
use crate::view::join;
use imgscrub_fs::filesystem::FileType;

/// Names of our own first-boot SSH key generator.
const KEYGEN_NAME: &str = "imgscrub-ssh-keygen";

impl Planner<'_, '_> {
    /// Whether the guest regenerates missing SSH host keys by itself, and how.
    pub(super) fn keygen_regenerator(&self) -> Result<Option<String>> {
        if self.v.exists(b"/usr/bin/cloud-init")? {
            return Ok(Some("cloud-init (ssh module)".into()));
        }
        for unit in [
            "sshd-keygen.service",
            "sshd-keygen@.service",
            "sshd-keygen.target",
            "ssh-keygen.service",
        ] {
            if self.unit_exists(unit)? {
                return Ok(Some(format!("systemd unit {unit}")));
            }
        }
        for f in [
            "/etc/systemd/system/imgscrub-ssh-keygen.service",
            "/etc/init/imgscrub-ssh-keygen.conf",
            "/etc/init.d/imgscrub-ssh-keygen",
        ] {
            if self.v.exists(f.as_bytes())? {
                return Ok(Some(format!("{f} (installed by imgscrub)")));
            }
        }
        for f in [
            "/etc/init.d/sshd",
            "/etc/rc.d/init.d/sshd",
            "/lib/systemd/system/ssh.service",
            "/usr/lib/systemd/system/ssh.service",
            "/usr/lib/systemd/system/sshd.service",
            "/lib/systemd/system/sshd.service",
            "/etc/init/ssh.conf",
            "/lib/smartdc/debian",
        ] {
            if let Some(d) = self.v.read_follow(f.as_bytes()).ok().flatten()
                && contains(&d, b"ssh-keygen")
            {
                return Ok(Some(format!("{f} runs ssh-keygen")));
            }
        }
        Ok(None)
    }

    pub(super) fn ssh_keygen(&mut self, src: &str) -> Result<()> {
        let has_sshd =
            self.v.exists(b"/usr/sbin/sshd")? || self.v.exists(b"/etc/ssh/sshd_config")?;
        if !has_sshd || !self.paths("/etc/ssh/ssh_host_*_key")?.is_empty() {
            return Ok(());
        }
        if let Some(how) = self.keygen_regenerator()? {
            if self.keys_deleted {
                self.notes.push(format!(
                    "SSH host keys removed; the guest regenerates them at first boot: {how}"
                ));
            }
            return Ok(());
        }
        let keygen = if self.v.exists(b"/usr/bin/ssh-keygen")? {
            "/usr/bin/ssh-keygen"
        } else if self.v.exists(b"/bin/ssh-keygen")? {
            "/bin/ssh-keygen"
        } else {
            "/usr/bin/ssh-keygen"
        };
        match self.os.init {
            InitSystem::Systemd => {
                let unit = format!(
                    "[Unit]\nDescription=Generate missing SSH host keys (installed by imgscrub)\n\
                     DefaultDependencies=no\nAfter=local-fs.target\n\
                     Before=ssh.service sshd.service ssh.socket sshd.socket\n\n\
                     [Service]\nType=oneshot\nExecStart={keygen} -A\nRemainAfterExit=yes\n\n\
                     [Install]\nWantedBy=multi-user.target\n"
                );
                let path = format!("/etc/systemd/system/{KEYGEN_NAME}.service");
                self.write_simple(src, &path, unit, 0o644)?;
                let link =
                    format!("/etc/systemd/system/multi-user.target.wants/{KEYGEN_NAME}.service");
                if let Some(c) = self.canon(&link, false)? {
                    self.symlink(src, &c, path.as_bytes(), LinkPolicy::IfAbsent, None)?;
                }
                self.notes.push(format!(
                    "installed {path} (systemd): runs '{keygen} -A' before sshd at first boot"
                ));
            }
            InitSystem::Upstart => {
                let job = format!(
                    "# Generate missing SSH host keys before sshd starts (installed by imgscrub)\n\
                     description \"Generate missing SSH host keys\"\n\n\
                     start on starting ssh or starting sshd\n\ntask\n\nexec {keygen} -A\n"
                );
                let path = format!("/etc/init/{KEYGEN_NAME}.conf");
                self.write_simple(src, &path, job, 0o644)?;
                self.notes.push(format!(
                    "installed {path} (upstart): runs '{keygen} -A' before sshd at first boot"
                ));
            }
            InitSystem::Sysvinit => {
                let script = format!(
                    "#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          {KEYGEN_NAME}\n\
                     # Required-Start:    $local_fs\n# Required-Stop:\n\
                     # X-Start-Before:    ssh sshd\n# Default-Start:     2 3 4 5\n\
                     # Default-Stop:\n# Short-Description: Generate missing SSH host keys\n\
                     ### END INIT INFO\n# Installed by imgscrub.\n\n\
                     case \"$1\" in\n  start)\n    {keygen} -A\n    ;;\n  stop|restart|force-reload|status)\n    ;;\n  *)\n    echo \"Usage: $0 start\" >&2\n    exit 3\n    ;;\nesac\nexit 0\n"
                );
                let path = format!("/etc/init.d/{KEYGEN_NAME}");
                self.write_simple(src, &path, script, 0o755)?;
                for n in 2..=5 {
                    let mut dir = None;
                    for d in [format!("/etc/rc{n}.d"), format!("/etc/rc.d/rc{n}.d")] {
                        if let Some(c) = self.canon(&d, true)?
                            && self.v.node(&c)?.map(|i| i.file_type) == Some(FileType::Directory)
                        {
                            dir = Some(c);
                            break;
                        }
                    }
                    if let Some(d) = dir {
                        let link = join(&d, format!("S01{KEYGEN_NAME}").as_bytes());
                        let target = format!("../init.d/{KEYGEN_NAME}");
                        self.symlink(src, &link, target.as_bytes(), LinkPolicy::IfAbsent, None)?;
                    }
                }
                self.notes.push(format!(
                    "installed {path} (sysvinit, S01 in runlevels 2-5): runs '{keygen} -A' before sshd"
                ));
            }
            InitSystem::Openrc => {
                let script = format!(
                    "#!/sbin/openrc-run\n# Installed by imgscrub.\n\
                     description=\"Generate missing SSH host keys\"\n\n\
                     depend() {{\n\tneed localmount\n\tbefore sshd\n}}\n\n\
                     start() {{\n\tebegin \"Generating missing SSH host keys\"\n\t{keygen} -A\n\teend $?\n}}\n"
                );
                let path = format!("/etc/init.d/{KEYGEN_NAME}");
                self.write_simple(src, &path, script, 0o755)?;
                let link = format!("/etc/runlevels/default/{KEYGEN_NAME}");
                if let Some(c) = self.canon(&link, false)? {
                    self.symlink(src, &c, path.as_bytes(), LinkPolicy::IfAbsent, None)?;
                }
                self.notes.push(format!(
                    "installed {path} (openrc, default runlevel): runs '{keygen} -A' before sshd"
                ));
            }
            InitSystem::Unknown => self.warn(format!(
                "{src}: SSH host keys are gone, the guest has no regenerator and its init \
                 system is unknown: sshd may not start until someone runs 'ssh-keygen -A'"
            )),
        }
        Ok(())
    }
}
