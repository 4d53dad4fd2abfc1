//! First boot in the planner: scripts staged in `/usr/lib/imgscrub/firstboot.d`, the runner
//! and one hook per init system (see [`crate::firstboot`] for the contents and the
//! contract). Users: `--firstboot`, `--firstboot-command`, `--firstboot-install` and the SSH
//! host key regenerator of the `ssh-hostkeys` operation.

use super::Planner;
use super::text::contains;
use crate::action::{LinkPolicy, WritePolicy};
use crate::customize::{CustomizeItem, CustomizeOp};
use crate::error::Result;
use crate::firstboot::{
    self as fb, FAILED_DIR, KEYGEN_SCRIPT, PackageManager, RUNNER, SCRIPTS_DIR, SERVICE,
};
use crate::inspect::InitSystem;
use crate::view::join;
use imgscrub_fs::filesystem::FileType;

use super::customize::cerr as item_err;

impl Planner<'_, '_> {
    /// Plan one first-boot customization (`--firstboot`, `--firstboot-command`,
    /// `--firstboot-install`). Other items are not first-boot items: nothing happens.
    pub(super) fn firstboot_item(&mut self, it: &CustomizeItem) -> Result<()> {
        let src = it.source();
        if self.os.init == InitSystem::Unknown {
            return Err(item_err(
                it,
                "the guest's init system is unknown (not systemd, sysvinit, OpenRC or \
                 upstart): no way to run a script at first boot"
                    .into(),
            ));
        }
        match &it.op {
            CustomizeOp::Firstboot { script } => {
                let mut content = script.script.clone();
                if content.is_empty() {
                    content = b"#!/bin/sh\n".to_vec();
                }
                self.firstboot_add(&src, &script.name, content)?;
            }
            CustomizeOp::FirstbootCommand { command } => {
                self.firstboot_add(&src, "command", fb::command_script(command).into_bytes())?;
            }
            CustomizeOp::FirstbootInstall { packages } => {
                for p in packages {
                    fb::check_package(p).map_err(|m| item_err(it, m))?;
                }
                let Some(pm) = self.package_manager()? else {
                    return Err(item_err(
                        it,
                        "no package manager found in the guest (dnf, yum, zypper, apt-get, apk)"
                            .into(),
                    ));
                };
                let script = pm.install_script(packages);
                self.firstboot_add(&src, &format!("install-{}", pm.name()), script.into_bytes())?;
            }
            _ => return Ok(()),
        }
        let note = format!(
            "first-boot scripts in {SCRIPTS_DIR} run once at the next boot, before sshd ({}); \
             output in {}",
            self.hook_description(),
            fb::LOG
        );
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
        Ok(())
    }

    /// The guest's package manager.
    fn package_manager(&self) -> Result<Option<PackageManager>> {
        for (path, pm) in PackageManager::PROBES {
            if self.v.exists(path.as_bytes())? {
                return Ok(Some(*pm));
            }
        }
        Ok(None)
    }

    /// Stage a script after the ones already pending (or failed); returns its name.
    fn firstboot_add(&mut self, src: &str, label: &str, content: Vec<u8>) -> Result<String> {
        let mut last = 0;
        for dir in [SCRIPTS_DIR, FAILED_DIR] {
            if let Some(c) = self.canon(dir, true)? {
                for (name, _) in self.v.list(&c)? {
                    last = last.max(fb::script_index(&name).unwrap_or(0));
                }
            }
        }
        let name = fb::script_name(last + 1, label);
        self.firstboot_put(src, &name, content)?;
        Ok(name)
    }

    /// Write `firstboot.d/NAME` and (re)install the runner and the hook.
    fn firstboot_put(&mut self, src: &str, name: &str, content: Vec<u8>) -> Result<()> {
        let path = format!("{SCRIPTS_DIR}/{name}");
        let Some(c) = self.canon(&path, false)? else {
            self.warn(format!("{src}: {path}: a parent is not a directory"));
            return Ok(());
        };
        self.write_file(
            src,
            &c,
            content,
            Some(0o755),
            0,
            0,
            WritePolicy::Always,
            None,
        )?;
        self.firstboot_hook(src)
    }

    /// The SSH host key regenerator as a first-boot script: keys are made before sshd.
    pub(super) fn firstboot_keygen(&mut self, src: &str, keygen: &str) -> Result<()> {
        self.firstboot_put(src, KEYGEN_SCRIPT, fb::keygen_script(keygen).into_bytes())?;
        let how = self.hook_description();
        self.notes.push(format!(
            "installed {SCRIPTS_DIR}/{KEYGEN_SCRIPT}: runs '{keygen} -A' at first boot \
             before sshd ({how})"
        ));
        Ok(())
    }

    fn hook_description(&self) -> String {
        match self.os.init {
            InitSystem::Systemd => format!("systemd: /etc/systemd/system/{SERVICE}.service"),
            InitSystem::Sysvinit => format!("sysvinit: /etc/init.d/{SERVICE} with S links"),
            InitSystem::Openrc => format!("openrc: /etc/init.d/{SERVICE}, default runlevel"),
            InitSystem::Upstart => format!("upstart: /etc/init/{SERVICE}.conf"),
            InitSystem::Unknown => "unknown init system".into(),
        }
    }

    /// Install (or refresh) the runner and the init system's hook. Scripts other than the
    /// key regenerator make the hook wait for the network.
    fn firstboot_hook(&mut self, src: &str) -> Result<()> {
        let mut network = false;
        if let Some(c) = self.canon(SCRIPTS_DIR, true)? {
            network = self.v.list(&c)?.iter().any(|(n, t)| {
                *t != FileType::Directory && n.as_slice() != KEYGEN_SCRIPT.as_bytes()
            });
        }
        let init = self.os.init;
        self.put(src, RUNNER, fb::runner(init), 0o755)?;
        match init {
            InitSystem::Systemd => {
                let unit = format!("/etc/systemd/system/{SERVICE}.service");
                self.put(src, &unit, fb::systemd_unit(network), 0o644)?;
                let link = format!("/etc/systemd/system/multi-user.target.wants/{SERVICE}.service");
                if let Some(c) = self.canon(&link, false)? {
                    self.symlink(src, &c, unit.as_bytes(), LinkPolicy::Replace, None)?;
                }
            }
            InitSystem::Sysvinit => {
                self.put(
                    src,
                    &format!("/etc/init.d/{SERVICE}"),
                    fb::sysv_script(network),
                    0o755,
                )?;
                self.sysv_links(src)?;
            }
            InitSystem::Openrc => {
                let script = format!("/etc/init.d/{SERVICE}");
                let run = self
                    .vars
                    .get("openrc_run")
                    .cloned()
                    .unwrap_or_else(|| "/sbin/openrc-run".into());
                self.put(src, &script, fb::openrc_script(&run, network), 0o755)?;
                let link = format!("/etc/runlevels/default/{SERVICE}");
                if let Some(c) = self.canon(&link, false)? {
                    self.symlink(src, &c, script.as_bytes(), LinkPolicy::Replace, None)?;
                }
            }
            InitSystem::Upstart => {
                self.put(
                    src,
                    &format!("/etc/init/{SERVICE}.conf"),
                    fb::upstart_job(),
                    0o644,
                )?;
                // The runner disables the job with an override; a new script re-enables it.
                let ov = format!("/etc/init/{SERVICE}.override");
                if let Some(c) = self.canon(&ov, false)?
                    && let Some(info) = self.v.node(&c)?
                    && info.file_type != FileType::Directory
                {
                    self.delete(src, &c, &info)?;
                }
            }
            InitSystem::Unknown => {}
        }
        Ok(())
    }

    /// `S` links in runlevels 2-5: the same number as the runlevel's ssh/sshd link (our name
    /// sorts first, so we run just before it, after the network), else 99.
    fn sysv_links(&mut self, src: &str) -> Result<()> {
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
            let Some(d) = dir else { continue };
            let entries = self.v.list(&d)?;
            let mut nn = 99;
            for (name, _) in &entries {
                let Some(rest) = name.strip_prefix(b"S") else {
                    continue;
                };
                if let (Some(num), Some(svc)) = (rest.get(..2), rest.get(2..))
                    && (svc == b"ssh" || svc == b"sshd")
                    && let Ok(v) = std::str::from_utf8(num).unwrap_or("x").parse::<u32>()
                {
                    nn = v;
                    break;
                }
            }
            let want = fb::sysv_link(nn);
            for (name, _) in &entries {
                if name.len() > 3
                    && name.ends_with(SERVICE.as_bytes())
                    && name.len() == SERVICE.len() + 3
                    && name.as_slice() != want.as_bytes()
                {
                    let p = join(&d, name);
                    if let Some(info) = self.v.node(&p)? {
                        self.delete(src, &p, &info)?;
                    }
                }
            }
            let link = join(&d, want.as_bytes());
            let target = format!("../init.d/{SERVICE}");
            self.symlink(src, &link, target.as_bytes(), LinkPolicy::Replace, None)?;
        }
        Ok(())
    }

    /// Create or replace a root-owned file (a later write in the same plan wins).
    fn put(&mut self, src: &str, path: &str, content: String, mode: u16) -> Result<()> {
        if let Some(c) = self.canon(path, false)? {
            self.write_file(
                src,
                &c,
                content.into_bytes(),
                Some(mode),
                0,
                0,
                WritePolicy::Always,
                None,
            )?;
        }
        Ok(())
    }

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
        let ours = format!("{SCRIPTS_DIR}/{KEYGEN_SCRIPT}");
        if self.v.exists(ours.as_bytes())? {
            return Ok(Some(format!("{ours} (installed by imgscrub)")));
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
        if self.os.init == InitSystem::Unknown {
            self.warn(format!(
                "{src}: SSH host keys are gone, the guest has no regenerator and its init \
                 system is unknown: sshd may not start until someone runs 'ssh-keygen -A'"
            ));
            return Ok(());
        }
        self.firstboot_keygen(src, keygen)
    }
}
