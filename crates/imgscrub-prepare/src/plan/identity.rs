//! The machine's identity files: `/etc/machine-id` by [`MachineIdPolicy`] and dbus's copy.

use super::{MachineIdPolicy, Planner};
use crate::action::{LinkPolicy, WritePolicy};
use crate::error::Result;
use imgscrub_fs::filesystem::FileType;

impl Planner<'_, '_> {
    pub(super) fn machine_id(&mut self, src: &str) -> Result<()> {
        let target: &[u8] = match self.opts.machine_id {
            MachineIdPolicy::Keep => return Ok(()),
            MachineIdPolicy::Empty => b"",
            MachineIdPolicy::Uninitialized => b"uninitialized\n",
        };
        if let Some(c) = self.canon("/etc/machine-id", true)?
            && self.v.node(&c)?.map(|n| n.file_type) == Some(FileType::Regular)
        {
            self.write_file(
                src,
                &c,
                target.to_vec(),
                None,
                0,
                0,
                WritePolicy::IfExists,
                None,
            )?;
        }
        // dbus keeps its own copy on older systems; a regular file would keep the old ID
        // alive, so make it the link modern dbus installs. A symlink is left alone (writing
        // through it would be writing /etc/machine-id twice, or somewhere unexpected).
        // Without /etc/machine-id (pre-systemd guests) the file just goes: dbus's init
        // script (`dbus-uuidgen --ensure`) makes a new one at boot.
        let etc_id =
            self.v.node_follow(b"/etc/machine-id")?.map(|n| n.file_type) == Some(FileType::Regular);
        if let Some(c) = self.canon("/var/lib/dbus/machine-id", false)?
            && let Some(info) = self.v.node(&c)?
            && info.file_type == FileType::Regular
        {
            self.delete(src, &c, &info)?;
            if etc_id {
                self.symlink(src, &c, b"/etc/machine-id", LinkPolicy::IfAbsent, None)?;
            }
        }
        Ok(())
    }
}
