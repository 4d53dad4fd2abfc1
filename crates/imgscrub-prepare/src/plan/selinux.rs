//! SELinux: new files on an enabled guest get their parent directory's label, or the plan
//! creates `/.autorelabel`.

use super::Planner;
use crate::error::Result;
use crate::view::split;

impl Planner<'_, '_> {
    pub(super) fn selinux_label_flag(&self) -> bool {
        self.vars.get("__selinux_label").is_some_and(|v| v == "1")
    }

    /// SELinux: new files on an enabled guest need a label. Copy the parent directory's
    /// `security.selinux` when the filesystem has labels; otherwise ask for a relabel.
    pub(super) fn finish_selinux(&mut self) -> Result<()> {
        let cfg = self.v.read_follow(b"/etc/selinux/config")?;
        let enabled = cfg.as_deref().is_some_and(|d| {
            crate::inspect::parse_kv(d).iter().rev().any(|(k, v)| {
                k == "SELINUX"
                    && matches!(v.to_ascii_lowercase().as_str(), "enforcing" | "permissive")
            })
        });
        if !enabled {
            return Ok(());
        }
        let created: Vec<Vec<u8>> = self
            .steps
            .iter()
            .filter(|s| s.creates())
            .map(|s| s.raw.clone())
            .collect();
        if created.is_empty() {
            return Ok(());
        }
        let fs = self.v.fs();
        let mut labelled = true;
        for p in &created {
            // Nearest ancestor that exists on the filesystem now.
            let mut a = p.as_slice();
            let mut label = None;
            while let Some((parent, _)) = split(a) {
                if let Some(node) = self.v.fs_node(parent)? {
                    label = fs.get_xattr(node, "security.selinux")?;
                    break;
                }
                a = parent;
            }
            if split(a).is_none()
                && let Ok(r) = fs.get_xattr(fs.root(), "security.selinux")
            {
                label = label.or(r);
            }
            if label.is_none() {
                labelled = false;
                break;
            }
        }
        if labelled {
            self.vars.insert("__selinux_label".into(), "1".into());
            self.notes.push(
                "SELinux is enabled: new files get the security.selinux label of their parent \
                 directory"
                    .into(),
            );
        } else if self.v.node(b"/.autorelabel")?.is_none() {
            self.push_write("selinux", b"/.autorelabel", Vec::new(), 0o644, 0, 0, true);
            self.notes.push(
                "SELinux is enabled and new files cannot be labelled here: created \
                 /.autorelabel (the first boot relabels the filesystem, which takes a while)"
                    .into(),
            );
        }
        Ok(())
    }
}
