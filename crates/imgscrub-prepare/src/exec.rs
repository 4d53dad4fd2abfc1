//! The executor: applies a [`Plan`] through `&mut dyn Filesystem`, and the [`Report`].

use crate::error::Result;
use crate::inspect::OsInfo;
use crate::plan::{Plan, Step, StepOp};
use imgscrub_fs::filesystem::{FileType, NewAttr, SetAttr};
use imgscrub_fs::{Filesystem, FsError, NodeId, resolve_entry};
use serde::{Deserialize, Serialize};

/// Totals of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Files, links and directories removed (entries, recursively).
    pub deleted_entries: u64,
    /// Bytes of regular files removed.
    pub deleted_bytes: u64,
    /// Files truncated.
    pub truncated_files: u64,
    /// Bytes freed by truncation.
    pub truncated_bytes: u64,
    /// Files created or rewritten.
    pub written_files: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Directories created.
    pub created_dirs: u64,
    /// Symlinks created or replaced.
    pub created_links: u64,
    /// Mode/owner changes.
    pub attr_changes: u64,
}

/// A disk-level step: a change made to the disk outside any filesystem (e.g. `lvm-uuids`).
/// The prepare engine only sees filesystems, so the caller that holds the disk (the
/// `imgscrub` facade) runs these operations and records them here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStep {
    /// The operation (`lvm-uuids`).
    pub source: String,
    /// What is changed (`LVM2 VG vg0`).
    pub target: String,
    /// Identifiers replaced, in order.
    pub changes: Vec<IdChange>,
}

/// One identifier replaced by a disk-level step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdChange {
    /// What it identifies (`VG vg0`, `PV pv0`).
    pub what: String,
    /// Before.
    pub old: String,
    /// After.
    pub new: String,
}

/// What a preparation did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Profile name.
    pub profile: String,
    /// The guest as inspected before any change.
    pub os: OsInfo,
    /// Selected operations.
    pub operations: Vec<String>,
    /// Dry run: nothing was written.
    pub dry_run: bool,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// Disk-level steps (run after the filesystem steps, on the same staged disk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_steps: Vec<DiskStep>,
    /// Notes (first-boot units installed, SELinux handling…).
    pub notes: Vec<String>,
    /// Warnings (checks, skipped actions).
    pub warnings: Vec<String>,
    /// Totals.
    pub totals: Totals,
}

impl Report {
    /// Whether nothing was (or would be) changed.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.disk_steps.is_empty()
    }

    /// Human-readable lines: one per step, then notes and warnings.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let verb = if self.dry_run { "would" } else { "did" };
        s.push_str(&format!(
            "profile {} on {} ({} step{}, {verb}):\n",
            self.profile,
            self.os.describe(),
            self.steps.len() + self.disk_steps.len(),
            if self.steps.len() + self.disk_steps.len() == 1 {
                ""
            } else {
                "s"
            }
        ));
        for st in &self.steps {
            let what = match &st.op {
                StepOp::Delete { recursive, entries } => {
                    if *recursive {
                        format!("delete -r ({entries} entries, {} bytes)", st.bytes)
                    } else {
                        format!("delete ({} bytes)", st.bytes)
                    }
                }
                StepOp::Truncate { old_size } => format!("truncate ({old_size} bytes)"),
                StepOp::Mkdir { mode, .. } => format!("mkdir {mode:04o}"),
                StepOp::Symlink { target, replace } => {
                    format!(
                        "symlink{} -> {target}",
                        if *replace { " (replace)" } else { "" }
                    )
                }
                StepOp::WriteFile {
                    mode,
                    created,
                    backup_of,
                    ..
                } => match backup_of {
                    Some(b) => format!("backup of {b} ({} bytes)", st.bytes),
                    None => format!(
                        "{} {mode:04o} ({} bytes)",
                        if *created { "create" } else { "rewrite" },
                        st.bytes
                    ),
                },
                StepOp::SetAttr { mode, uid, gid } => {
                    let mut parts = Vec::new();
                    if let Some(m) = mode {
                        parts.push(format!("mode {m:04o}"));
                    }
                    match (uid, gid) {
                        (Some(u), Some(g)) => parts.push(format!("owner {u}:{g}")),
                        (Some(u), None) => parts.push(format!("owner {u}")),
                        (None, Some(g)) => parts.push(format!("group {g}")),
                        (None, None) => {}
                    }
                    format!("set {}", parts.join(", "))
                }
            };
            s.push_str(&format!("  {:<28} {:<40} {what}\n", st.source, st.path));
        }
        for d in &self.disk_steps {
            let what: Vec<String> = d
                .changes
                .iter()
                .map(|c| format!("{} {} -> {}", c.what, c.old, c.new))
                .collect();
            s.push_str(&format!(
                "  {:<28} {:<40} new UUIDs: {}\n",
                d.source,
                d.target,
                what.join(", ")
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        for w in &self.warnings {
            s.push_str(&format!("warning: {w}\n"));
        }
        s
    }
}

/// The report of a plan without applying it (what a dry run shows).
pub fn report(plan: &Plan) -> Report {
    let mut t = Totals::default();
    for s in &plan.steps {
        match &s.op {
            StepOp::Delete { entries, .. } => {
                t.deleted_entries += entries;
                t.deleted_bytes += s.bytes;
            }
            StepOp::Truncate { .. } => {
                t.truncated_files += 1;
                t.truncated_bytes += s.bytes;
            }
            StepOp::Mkdir { .. } => t.created_dirs += 1,
            StepOp::Symlink { .. } => t.created_links += 1,
            StepOp::WriteFile { .. } => {
                t.written_files += 1;
                t.written_bytes += s.bytes;
            }
            StepOp::SetAttr { .. } => t.attr_changes += 1,
        }
    }
    Report {
        profile: plan.profile.clone(),
        os: plan.os.clone(),
        operations: plan.operations.clone(),
        dry_run: plan.dry_run,
        steps: plan.steps.clone(),
        disk_steps: Vec::new(),
        notes: plan.notes.clone(),
        warnings: plan.warnings.clone(),
        totals: t,
    }
}

/// Apply `plan` to `fs` (nothing is written for a dry-run plan) and flush.
pub fn execute(fs: &mut dyn Filesystem, plan: &Plan) -> Result<Report> {
    let rep = report(plan);
    if plan.dry_run {
        return Ok(rep);
    }
    // A fixed time also covers what the filesystem stamps by itself (directory mtimes,
    // deletion times, ctimes), so that the whole output is reproducible.
    if plan.fixed_time.is_some() {
        fs.set_clock(plan.fixed_time)?;
    }
    for s in &plan.steps {
        apply(fs, plan, s)?;
    }
    fs.flush()?;
    if plan.fixed_time.is_some() {
        fs.set_clock(None)?;
    }
    Ok(rep)
}

fn new_attr(plan: &Plan, mode: u16, uid: u32, gid: u32) -> NewAttr {
    NewAttr {
        perm: mode,
        uid,
        gid,
        time: plan.fixed_time,
    }
}

fn label(
    fs: &mut dyn Filesystem,
    plan: &Plan,
    parent: NodeId,
    name: &[u8],
    node: NodeId,
) -> Result<()> {
    if !plan.selinux_label {
        return Ok(());
    }
    if let Some(l) = fs.get_xattr(parent, "security.selinux")? {
        // A new `.ssh` (from --ssh-inject) is `ssh_home_t` in every policy's file
        // contexts (`HOME_DIR/\.ssh(/.*)?`, `/root/\.ssh(/.*)?`); what is created inside
        // it then inherits that from its parent.
        let l = if name == b".ssh" {
            with_selinux_type(&l, "ssh_home_t")
        } else {
            l
        };
        fs.set_xattr(node, "security.selinux", &l)?;
    }
    Ok(())
}

/// An SELinux context `user:role:type[:level]` with its type replaced (a trailing NUL, as
/// the kernel stores it, is kept); unchanged when it has no type field.
pub(crate) fn with_selinux_type(ctx: &[u8], ty: &str) -> Vec<u8> {
    let (body, nul) = match ctx.strip_suffix(b"\0") {
        Some(b) => (b, true),
        None => (ctx, false),
    };
    let mut f: Vec<&[u8]> = body.splitn(4, |&b| b == b':').collect();
    if f.len() < 3 {
        return ctx.to_vec();
    }
    if let Some(t) = f.get_mut(2) {
        *t = ty.as_bytes();
    }
    let mut out = f.join(&b':');
    if nul {
        out.push(0);
    }
    out
}

fn apply(fs: &mut dyn Filesystem, plan: &Plan, s: &Step) -> Result<()> {
    let r = match resolve_entry(fs, &s.raw, false) {
        Ok(r) => r,
        // Removals and attribute changes of something already gone are done.
        Err(FsError::NotFound(_) | FsError::NotADirectory(_))
            if matches!(
                s.op,
                StepOp::Delete { .. } | StepOp::Truncate { .. } | StepOp::SetAttr { .. }
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if r.name.is_empty() {
        // The root itself: never removed or replaced.
        return Ok(());
    }
    match &s.op {
        StepOp::Delete { .. } => {
            if let Some(node) = r.node {
                if fs.stat(node)?.file_type == FileType::Directory {
                    fs.remove_tree(r.parent, &r.name)?;
                } else {
                    fs.unlink(r.parent, &r.name)?;
                }
            }
        }
        StepOp::Truncate { .. } => {
            if let Some(node) = r.node {
                fs.truncate(node, 0)?;
            }
        }
        StepOp::Mkdir { mode, uid, gid } => match r.node {
            Some(_) => {}
            None => {
                let node = fs.mkdir(r.parent, &r.name, &new_attr(plan, *mode, *uid, *gid))?;
                label(fs, plan, r.parent, &r.name, node)?;
            }
        },
        StepOp::Symlink { replace, .. } => {
            if let Some(node) = r.node {
                if !replace {
                    return Ok(());
                }
                if fs.stat(node)?.file_type == FileType::Directory {
                    return Err(FsError::IsADirectory(s.path.clone()).into());
                }
                fs.unlink(r.parent, &r.name)?;
            }
            let node = fs.symlink(
                r.parent,
                &r.name,
                &s.raw_target,
                &new_attr(plan, 0o777, 0, 0),
            )?;
            label(fs, plan, r.parent, &r.name, node)?;
        }
        StepOp::WriteFile { mode, uid, gid, .. } => {
            let node = match r.node {
                Some(node) => {
                    let m = fs.stat(node)?;
                    if m.file_type != FileType::Regular {
                        return Err(FsError::Exists(s.path.clone()).into());
                    }
                    fs.set_content(node, &s.content)?;
                    let mut attr = SetAttr::default();
                    if m.perm != *mode {
                        attr.perm = Some(*mode);
                    }
                    if m.uid != *uid {
                        attr.uid = Some(*uid);
                    }
                    if m.gid != *gid {
                        attr.gid = Some(*gid);
                    }
                    if let Some(t) = plan.fixed_time {
                        attr.atime = Some(t);
                        attr.mtime = Some(t);
                        attr.ctime = Some(t);
                    }
                    if attr != SetAttr::default() {
                        fs.set_attr(node, &attr)?;
                    }
                    node
                }
                None => {
                    let node = fs.create(r.parent, &r.name, &new_attr(plan, *mode, *uid, *gid))?;
                    label(fs, plan, r.parent, &r.name, node)?;
                    if !s.content.is_empty() {
                        fs.write(node, 0, &s.content)?;
                    }
                    if let Some(t) = plan.fixed_time {
                        fs.set_attr(
                            node,
                            &SetAttr {
                                atime: Some(t),
                                mtime: Some(t),
                                ctime: Some(t),
                                ..SetAttr::default()
                            },
                        )?;
                    }
                    node
                }
            };
            let _ = node;
        }
        StepOp::SetAttr { mode, uid, gid } => {
            if let Some(node) = r.node {
                fs.set_attr(
                    node,
                    &SetAttr {
                        perm: *mode,
                        uid: *uid,
                        gid: *gid,
                        ..SetAttr::default()
                    },
                )?;
            }
        }
    }
    Ok(())
}
