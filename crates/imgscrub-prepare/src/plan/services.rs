//! Services: disable (systemd mask, upstart override, sysvinit rc links) and enable
//! (OpenRC runlevels) per init system.

use super::Planner;
use crate::action::{LinkPolicy, WritePolicy};
use crate::error::Result;
use crate::inspect::InitSystem;
use crate::view::join;
use imgscrub_fs::filesystem::FileType;
use std::collections::BTreeSet;

impl Planner<'_, '_> {
    /// The `disable_service` action.
    pub(super) fn act_disable_service(
        &mut self,
        src: &str,
        system: InitSystem,
        names: &[String],
        delete_script: bool,
    ) -> Result<()> {
        for n in names {
            let n = self.render(n);
            self.disable_service(src, system, &n, delete_script)?;
        }
        Ok(())
    }

    /// The `enable_service` action (OpenRC only).
    pub(super) fn act_enable_service(
        &mut self,
        src: &str,
        system: InitSystem,
        runlevel: &str,
        names: &[String],
    ) -> Result<()> {
        if system != InitSystem::Openrc {
            self.warn(format!("{src}: enable_service supports only openrc"));
            return Ok(());
        }
        for n in names {
            let script = format!("/etc/init.d/{n}");
            if !self.v.exists(script.as_bytes())? {
                continue;
            }
            let link = format!("/etc/runlevels/{runlevel}/{n}");
            let Some(c) = self.canon(&link, false)? else {
                continue;
            };
            self.symlink(src, &c, script.as_bytes(), LinkPolicy::IfAbsent, None)?;
        }
        Ok(())
    }

    pub(super) fn unit_exists(&self, unit: &str) -> Result<bool> {
        for d in [
            "/etc/systemd/system",
            "/usr/lib/systemd/system",
            "/lib/systemd/system",
        ] {
            if self.v.exists(format!("{d}/{unit}").as_bytes())? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn disable_service(
        &mut self,
        src: &str,
        system: InitSystem,
        name: &str,
        delete_script: bool,
    ) -> Result<()> {
        if name.is_empty() || name.contains('/') {
            return Ok(());
        }
        match system {
            InitSystem::Systemd => {
                let unit = if name.contains('.') {
                    name.to_string()
                } else {
                    format!("{name}.service")
                };
                let Some(c) = self.canon(&format!("/etc/systemd/system/{unit}"), false)? else {
                    return Ok(());
                };
                match self.v.node(&c)? {
                    Some(info) if info.file_type == FileType::Symlink => {
                        if self.v.readlink(&c)?.as_deref() == Some(b"/dev/null") {
                            return Ok(());
                        }
                    }
                    Some(_) => {
                        self.warn(format!(
                            "{src}: /etc/systemd/system/{unit} is a local unit file; not masked"
                        ));
                        return Ok(());
                    }
                    None => {
                        if !self.unit_exists(&unit)? {
                            return Ok(());
                        }
                    }
                }
                for p in self.paths(&format!("/etc/systemd/system/*.wants/{unit}"))? {
                    if let Some(info) = self.v.node(&p)? {
                        self.delete(src, &p, &info)?;
                    }
                }
                self.symlink(src, &c, b"/dev/null", LinkPolicy::Replace, None)?;
            }
            InitSystem::Upstart => {
                if self.v.node_follow(b"/etc/init")?.map(|n| n.file_type)
                    != Some(FileType::Directory)
                {
                    return Ok(());
                }
                let Some(c) = self.canon(&format!("/etc/init/{name}.override"), false)? else {
                    return Ok(());
                };
                if self.v.node(&c)?.is_none() {
                    self.write_file(
                        src,
                        &c,
                        b"manual\n".to_vec(),
                        Some(0o644),
                        0,
                        0,
                        WritePolicy::IfAbsent,
                        None,
                    )?;
                }
            }
            InitSystem::Sysvinit => {
                let re = self.regex(&format!("^[SK][0-9]+{}$", regex::escape(name)))?;
                let mut dirs = BTreeSet::new();
                for d in [
                    "/etc/rc0.d",
                    "/etc/rc1.d",
                    "/etc/rc2.d",
                    "/etc/rc3.d",
                    "/etc/rc4.d",
                    "/etc/rc5.d",
                    "/etc/rc6.d",
                    "/etc/rcS.d",
                    "/etc/rc.d/rc0.d",
                    "/etc/rc.d/rc1.d",
                    "/etc/rc.d/rc2.d",
                    "/etc/rc.d/rc3.d",
                    "/etc/rc.d/rc4.d",
                    "/etc/rc.d/rc5.d",
                    "/etc/rc.d/rc6.d",
                ] {
                    if let Some(c) = self.canon(d, true)?
                        && self.v.node(&c)?.map(|n| n.file_type) == Some(FileType::Directory)
                    {
                        dirs.insert(c);
                    }
                }
                for d in dirs {
                    for (n, ft) in self.v.list(&d)? {
                        if ft != FileType::Directory && re.is_match(&n) {
                            let p = join(&d, &n);
                            if let Some(info) = self.v.node(&p)? {
                                self.delete(src, &p, &info)?;
                            }
                        }
                    }
                }
                if delete_script {
                    for d in ["/etc/init.d", "/etc/rc.d/init.d"] {
                        if let Some(c) = self.canon(&format!("{d}/{name}"), false)?
                            && let Some(info) = self.v.node(&c)?
                            && info.file_type != FileType::Directory
                        {
                            self.delete(src, &c, &info)?;
                        }
                    }
                }
            }
            InitSystem::Openrc => {
                for p in self.paths(&format!("/etc/runlevels/*/{name}"))? {
                    if let Some(info) = self.v.node(&p)? {
                        self.delete(src, &p, &info)?;
                    }
                }
            }
            InitSystem::Unknown => {}
        }
        Ok(())
    }
}
