//! The planner: turns a profile into an ordered list of concrete steps with guest paths.
//!
//! Planning reads the guest and writes nothing. Each action is evaluated against a
//! [`View`] that already contains the effect of the earlier actions, so conditions and
//! edits see the tree as it will be. Actions whose effect is already in place produce no
//! step at all, which makes a second run on a prepared tree plan nothing. Several writes
//! to one file collapse into one write of the final content, and a file whose final
//! content equals its current content is not written.
//!
//! # Module map
//!
//! One concern per module; each adds methods to the one `Planner` (`impl Planner` blocks
//! in every file). `Planner::run` checks an action's conditions and dispatches to the
//! `act_*` method named after the [`Action`] variant.
//!
//! | module          | what lives there |
//! |-----------------|------------------|
//! | `mod.rs`        | the public types ([`Plan`], [`Step`], [`StepOp`], [`Options`], [`MachineIdPolicy`]), [`plan()`], the `Planner` state, template rendering, the dispatcher |
//! | `conditions`    | `when` conditions (`Condition`): family, version, init, paths, contents… |
//! | `text`          | line helpers (`lines_of`, `join_lines`, `contains`), `Edit` application, the `edit` action |
//! | `files`         | delete, truncate, mkdir, symlink, write, copy, chown, chmod; the low-level step builders every other module uses |
//! | `services`      | disable/enable services per init system, `unit_exists` |
//! | `firstboot`     | things that run at the guest's first boot (today: the SSH host key regenerator) |
//! | `accounts`      | `/etc/passwd`, `/etc/shadow`, `/etc/group` edits (`set_shadow`) |
//! | `identity`      | the machine's identity files (`/etc/machine-id`, dbus's copy) |
//! | `selinux`       | labels for new files, or `/.autorelabel` |
//! | `coalesce`      | the final pass: several writes of one file become one, no-op writes go |

mod accounts;
mod coalesce;
mod conditions;
mod customize;
mod files;
mod firstboot;
mod identity;
mod selinux;
mod services;
mod system;
mod text;

use crate::action::{Action, ActionSpec};
use crate::error::{PrepareError, Result};
use crate::glob::expand;
use crate::inspect::{OsInfo, inspect_view};
use crate::ops::{Selection, catalogue};
use crate::profile::Profile;
use crate::view::{View, show};
use imgscrub_fs::Filesystem;
use imgscrub_fs::filesystem::Timestamp;
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What to do with `/etc/machine-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineIdPolicy {
    /// Empty file: systemd generates a new ID at every boot until one is committed
    /// (the first boot with a writable root).
    #[default]
    Empty,
    /// The word `uninitialized`: systemd generates a new ID and runs first-boot units
    /// (`ConditionFirstBoot=yes`), systemd ≥ 247.
    Uninitialized,
    /// Leave it alone.
    Keep,
}

impl std::str::FromStr for MachineIdPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "empty" => Ok(Self::Empty),
            "uninitialized" => Ok(Self::Uninitialized),
            "keep" => Ok(Self::Keep),
            o => Err(format!(
                "unknown machine-id policy {o:?} (empty, uninitialized, keep)"
            )),
        }
    }
}

/// Options of one preparation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Machine-id policy (default: empty).
    pub machine_id: MachineIdPolicy,
    /// Operation selection (`--operations`); `None` = the profile's own selection.
    pub operations: Option<Selection>,
    /// Apply a distro-specific profile to another distribution anyway.
    pub force: bool,
    /// Plan only; [`execute`](crate::execute) then writes nothing.
    pub dry_run: bool,
    /// Timestamp for new and rewritten files (reproducible output); `None` = now.
    pub fixed_time: Option<Timestamp>,
    /// Root's password hash (`--root-password-hash`); `None` locks root (`*`).
    pub root_password_hash: Option<String>,
    /// Template variables (opt-in rows: `image_name`, `image_version`, `docs_url`,
    /// `description`, `locale`, `timezone_utc`, `legacy_upstart_disable`, …).
    pub vars: BTreeMap<String, String>,
    /// Customizations (virt-customize's options), applied after the profile in this order.
    pub customize: Vec<crate::customize::CustomizeItem>,
}

/// One concrete step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum StepOp {
    /// Remove a file, link or (recursive) directory tree.
    Delete {
        /// A directory with its contents.
        recursive: bool,
        /// Entries removed (1 for a file).
        entries: u64,
    },
    /// Truncate a regular file to zero bytes.
    Truncate {
        /// Size before.
        old_size: u64,
    },
    /// Create a directory.
    Mkdir {
        /// Permission bits.
        mode: u16,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Create (or replace) a symlink.
    Symlink {
        /// Link target.
        target: String,
        /// An existing entry is replaced.
        replace: bool,
    },
    /// Create or rewrite a regular file.
    WriteFile {
        /// Permission bits.
        mode: u16,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// The file is new.
        created: bool,
        /// This is a backup copy of that path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backup_of: Option<String>,
    },
    /// Change mode and/or owner.
    SetAttr {
        /// New permission bits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u16>,
        /// New owner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
        /// New group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gid: Option<u32>,
    },
}

/// One planned step: what, where, why, and how many bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Where it comes from: `operation` or `profile/row` (e.g. `ssh-hostkeys`,
    /// `lx-centos/C1`).
    pub source: String,
    /// Guest path (lossy UTF-8 for display).
    pub path: String,
    /// The step.
    #[serde(flatten)]
    pub op: StepOp,
    /// Bytes removed (delete, truncate) or written (write_file).
    pub bytes: u64,
    #[serde(skip)]
    pub(crate) raw: Vec<u8>,
    #[serde(skip)]
    pub(crate) content: Vec<u8>,
    #[serde(skip)]
    pub(crate) raw_target: Vec<u8>,
    #[serde(skip)]
    pub(crate) backup_for: Option<Vec<u8>>,
}

impl Step {
    /// The raw guest path bytes.
    pub fn raw_path(&self) -> &[u8] {
        &self.raw
    }

    /// The content a `write_file` step writes.
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// Whether the step creates a new directory entry.
    pub fn creates(&self) -> bool {
        match &self.op {
            StepOp::Mkdir { .. } | StepOp::Symlink { .. } => true,
            StepOp::WriteFile { created, .. } => *created,
            _ => false,
        }
    }
}

/// A plan: the inspected OS, the selected operations and the ordered steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Profile name.
    pub profile: String,
    /// What inspection found (before any change).
    pub os: OsInfo,
    /// Operations that were selected.
    pub operations: Vec<String>,
    /// Steps in execution order.
    pub steps: Vec<Step>,
    /// Things the user should know (first-boot units installed, autorelabel…).
    pub notes: Vec<String>,
    /// Warnings from checks and skipped actions.
    pub warnings: Vec<String>,
    /// New files get a `security.selinux` label copied from their parent directory.
    pub selinux_label: bool,
    /// Plan only.
    pub dry_run: bool,
    /// Timestamp for new and rewritten files.
    #[serde(skip)]
    pub fixed_time: Option<Timestamp>,
}

impl Plan {
    /// No step would change anything.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Plan `profile` against the guest in `fs`.
pub fn plan(fs: &dyn Filesystem, profile: &Profile, opts: &Options) -> Result<Plan> {
    let view = View::new(fs);
    let os = inspect_view(&view)?;
    if !profile.requires_family.is_empty()
        && !profile.requires_family.contains(&os.family)
        && !opts.force
    {
        return Err(PrepareError::WrongDistro {
            profile: profile.name.clone(),
            expected: profile
                .requires_family
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(" or "),
            found: os.describe(),
        });
    }
    let selected: BTreeSet<String> = match (&opts.operations, &profile.operations) {
        (Some(sel), Some(base)) if sel.only_removals() => sel.apply(base.resolve()),
        (Some(sel), _) => sel.resolve(),
        (None, Some(base)) => base.resolve(),
        (None, None) => BTreeSet::new(),
    };
    let mut vars = opts.vars.clone();
    vars.insert("profile".into(), profile.name.clone());
    vars.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    vars.entry("date".into())
        .or_insert_with(|| yyyymmdd(opts.fixed_time.map_or_else(now_secs, |t| t.secs)));
    let date = vars.get("date").cloned().unwrap_or_default();
    vars.entry("image_version".into()).or_insert(date);
    vars.entry("docs_url".into()).or_insert_with(|| {
        "https://docs.tritondatacenter.com/public-cloud/instances/infrastructure/images".into()
    });
    if let Some(name) = vars.get("image_name").cloned() {
        vars.entry("description".into()).or_insert(name);
    }
    let openrc_run = if view.exists(b"/sbin/runscript")? {
        "/sbin/runscript"
    } else {
        "/sbin/openrc-run"
    };
    vars.entry("openrc_run".into())
        .or_insert_with(|| openrc_run.into());
    if let Some(h) = &opts.root_password_hash {
        vars.insert("root_password_hash".into(), h.clone());
    }
    // The instance's own name: /etc/hostname, else HOSTNAME= of /etc/sysconfig/network.
    let mut hostname = view
        .read_follow(b"/etc/hostname")?
        .map(|h| String::from_utf8_lossy(&h).trim().to_string())
        .unwrap_or_default();
    if hostname.is_empty()
        && let Some(d) = view.read_follow(b"/etc/sysconfig/network")?
    {
        hostname = crate::inspect::parse_kv(&d)
            .into_iter()
            .rev()
            .find(|(k, _)| k == "HOSTNAME")
            .map(|(_, v)| v)
            .unwrap_or_default();
    }
    if !hostname.is_empty() {
        vars.entry("hostname".into()).or_insert(hostname);
    }
    let mut p = Planner {
        v: view,
        os: os.clone(),
        opts,
        vars,
        steps: Vec::new(),
        notes: Vec::new(),
        warnings: Vec::new(),
        regexes: HashMap::new(),
        profile: profile.name.clone(),
        keys_deleted: false,
    };
    for op in catalogue() {
        if !selected.contains(&op.name) {
            continue;
        }
        for spec in &op.actions {
            p.run(spec, &op.name)?;
        }
    }
    for pa in &profile.actions {
        if let Some(op) = &pa.spec.operation
            && !selected.contains(op)
        {
            continue;
        }
        let source = match (&pa.spec.operation, &pa.spec.id) {
            (_, Some(id)) => format!("{}/{}", pa.profile, id),
            (Some(op), None) => format!("{}/{}", pa.profile, op),
            (None, None) => pa.profile.clone(),
        };
        p.run(&pa.spec, &source)?;
    }
    p.customize_all(&opts.customize)?;
    p.finish_selinux()?;
    p.coalesce()?;
    let selinux_label = p.selinux_label_flag();
    Ok(Plan {
        profile: profile.name.clone(),
        os,
        operations: selected.into_iter().collect(),
        steps: p.steps,
        notes: p.notes,
        warnings: p.warnings,
        selinux_label,
        dry_run: opts.dry_run,
        fixed_time: opts.fixed_time,
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYYMMDD` of a Unix time (UTC), proleptic Gregorian.
pub fn yyyymmdd(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}{m:02}{d:02}")
}

struct Planner<'a, 'o> {
    v: View<'a>,
    os: OsInfo,
    opts: &'o Options,
    vars: BTreeMap<String, String>,
    steps: Vec<Step>,
    notes: Vec<String>,
    warnings: Vec<String>,
    regexes: HashMap<String, Regex>,
    profile: String,
    keys_deleted: bool,
}

fn step(source: &str, path: &[u8], op: StepOp, bytes: u64) -> Step {
    Step {
        source: source.to_string(),
        path: show(path),
        op,
        bytes,
        raw: path.to_vec(),
        content: Vec::new(),
        raw_target: Vec::new(),
        backup_for: None,
    }
}

impl Planner<'_, '_> {
    /// Render `{{var}}` / `{{var|default}}`.
    fn render(&self, t: &str) -> String {
        let mut out = String::new();
        let mut rest = t;
        while let Some(start) = rest.find("{{") {
            let (head, tail) = rest.split_at(start);
            out.push_str(head);
            let Some(end) = tail.find("}}") else {
                out.push_str(tail);
                return out;
            };
            let inner = tail.get(2..end).unwrap_or_default();
            let (name, default) = match inner.split_once('|') {
                Some((n, d)) => (n.trim(), Some(d)),
                None => (inner.trim(), None),
            };
            match self.vars.get(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(v),
                None => out.push_str(default.unwrap_or_default()),
            }
            rest = tail.get(end + 2..).unwrap_or_default();
        }
        out.push_str(rest);
        out
    }

    fn regex(&mut self, pat: &str) -> Result<Regex> {
        if let Some(r) = self.regexes.get(pat) {
            return Ok(r.clone());
        }
        let r = Regex::new(pat).map_err(|e| PrepareError::Regex {
            profile: self.profile.clone(),
            pattern: pat.to_string(),
            message: e.to_string(),
        })?;
        self.regexes.insert(pat.to_string(), r.clone());
        Ok(r)
    }

    fn canon(&self, path: &str, follow: bool) -> Result<Option<Vec<u8>>> {
        if !path.starts_with('/') {
            return Err(PrepareError::BadPath(path.to_string()));
        }
        self.v.canon(path.as_bytes(), follow)
    }

    /// Paths named by a pattern: glob-expanded if it has wildcards or braces, otherwise
    /// the canonical path (final component not followed) if it exists.
    fn paths(&self, pattern: &str) -> Result<Vec<Vec<u8>>> {
        let pattern = self.render(pattern);
        if !pattern.starts_with('/') {
            return Err(PrepareError::BadPath(pattern));
        }
        expand(&self.v, &pattern)
    }

    fn warn(&mut self, msg: String) {
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }

    /// Run one action if its conditions hold: dispatch to the `act_*` method of its kind.
    fn run(&mut self, spec: &ActionSpec, source: &str) -> Result<()> {
        if !self.cond(&spec.when)? {
            return Ok(());
        }
        let source = match (&spec.id, source.contains('/')) {
            (Some(id), false) => format!("{source}/{id}"),
            _ => source.to_string(),
        };
        let src = source.as_str();
        match &spec.action {
            Action::Delete {
                path,
                recursive,
                if_contains,
            } => self.act_delete(src, path, *recursive, if_contains.as_deref()),
            Action::DeleteContents { path, keep } => self.act_delete_contents(src, path, keep),
            Action::Truncate { path } => self.act_truncate(src, path),
            Action::TruncateTree { path, except } => self.act_truncate_tree(src, path, except),
            Action::Mkdir {
                path,
                mode,
                uid,
                gid,
            } => self.act_mkdir(src, path, *mode, *uid, *gid),
            Action::Symlink {
                path,
                target,
                policy,
                if_target_contains,
            } => self.act_symlink(src, path, target, *policy, if_target_contains.as_deref()),
            Action::WriteFile {
                path,
                content,
                mode,
                uid,
                gid,
                policy,
                backup_suffix,
            } => self.act_write_file(
                src,
                path,
                content,
                *mode,
                (*uid, *gid),
                *policy,
                backup_suffix.as_deref(),
            ),
            Action::CopyFile {
                from,
                to,
                mode,
                edits,
                policy,
            } => self.act_copy_file(src, from, to, *mode, edits, *policy),
            Action::Edit {
                path,
                edits,
                skip_if_contains,
                create,
                mode,
            } => self.act_edit(
                src,
                path,
                edits,
                skip_if_contains.as_deref(),
                *create,
                *mode,
            ),
            Action::DisableService {
                system,
                names,
                delete_script,
            } => self.act_disable_service(src, *system, names, *delete_script),
            Action::EnableService {
                system,
                runlevel,
                names,
            } => self.act_enable_service(src, *system, runlevel, names),
            Action::SetShadow { user, field, value } => {
                self.act_set_shadow(src, user, *field, value)
            }
            Action::Chown {
                path,
                uid,
                gid,
                recursive,
            } => self.act_chown(src, path, *uid, *gid, *recursive),
            Action::Chmod { path, mode } => self.act_chmod(src, path, *mode),
            Action::MachineId => self.machine_id(src),
            Action::SshKeyRegenerator => self.ssh_keygen(src),
            Action::Check { message } => {
                let m = self.render(message);
                self.warn(format!("{src}: {m}"));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(yyyymmdd(0), "19700101");
        assert_eq!(yyyymmdd(1_700_000_000), "20231114");
        assert_eq!(yyyymmdd(951_782_400), "20000229");
    }
}
