//! The planner: turns a profile into an ordered list of concrete steps with guest paths.
//!
//! Planning reads the guest and writes nothing. Each action is evaluated against a
//! [`View`] that already contains the effect of the earlier actions, so conditions and
//! edits see the tree as it will be. Actions whose effect is already in place produce no
//! step at all, which makes a second run on a prepared tree plan nothing. Several writes
//! to one file collapse into one write of the final content, and a file whose final
//! content equals its current content is not written.

use crate::action::{Action, ActionSpec, Condition, Edit, LinkPolicy, WritePolicy};
use crate::error::{PrepareError, Result};
use crate::glob::{expand, match_component};
use crate::inspect::{InitSystem, OsInfo, SelinuxMode, inspect_view, version_numbers};
use crate::ops::{Selection, catalogue};
use crate::profile::Profile;
use crate::view::{NodeInfo, Staged, View, join, show, split};
use imgscrub_fs::Filesystem;
use imgscrub_fs::filesystem::{FileType, Timestamp};
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

mod customize;
mod firstboot;
mod system;

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

/// Split text into lines; returns (lines, had trailing newline).
fn lines_of(content: &[u8]) -> (Vec<Vec<u8>>, bool) {
    if content.is_empty() {
        return (Vec::new(), true);
    }
    let trailing = content.last() == Some(&b'\n');
    let body = if trailing {
        content.get(..content.len() - 1).unwrap_or_default()
    } else {
        content
    };
    (
        body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect(),
        trailing,
    )
}

fn join_lines(lines: &[Vec<u8>], trailing: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(l);
    }
    if trailing && !lines.is_empty() {
        out.push(b'\n');
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn cmp_versions(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        match x.cmp(&y) {
            std::cmp::Ordering::Equal => {}
            o => return o,
        }
    }
    std::cmp::Ordering::Equal
}

impl Planner<'_, '_> {
    fn selinux_label_flag(&self) -> bool {
        self.vars.get("__selinux_label").is_some_and(|v| v == "1")
    }

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

    /// The rendered `template` line, and whether `lines` already has it (the same text, or a
    /// line matching `matching`).
    fn line_present(
        &mut self,
        lines: &[Vec<u8>],
        template: &str,
        matching: Option<&str>,
    ) -> Result<(String, bool)> {
        let line = self.render(template);
        let re = matching.map(|m| self.regex(m)).transpose()?;
        let present = lines.iter().any(|l| {
            l.trim_ascii_end() == line.as_bytes() || re.as_ref().is_some_and(|r| r.is_match(l))
        });
        Ok((line, present))
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

    fn cond(&mut self, c: &Condition) -> Result<bool> {
        if let Some(f) = &c.family
            && !f.contains(&self.os.family)
        {
            return Ok(false);
        }
        if let Some(d) = &c.distro
            && !self.os.id.as_ref().is_some_and(|id| d.contains(id))
        {
            return Ok(false);
        }
        if let Some(vs) = &c.version {
            let have = self.os.version_numbers();
            if have.is_empty() {
                return Ok(false);
            }
            for v in vs {
                let v = v.trim();
                let (op, num) = ["<=", ">=", "==", "!=", "<", ">", "="]
                    .iter()
                    .find_map(|op| v.strip_prefix(op).map(|n| (*op, n)))
                    .unwrap_or(("=", v));
                let want = version_numbers(num);
                let ord = cmp_versions(&have, &want);
                let prefix_eq = have.iter().zip(want.iter()).all(|(a, b)| a == b);
                let ok = match op {
                    "<=" => ord.is_le(),
                    ">=" => ord.is_ge(),
                    "<" => ord.is_lt(),
                    ">" => ord.is_gt(),
                    "!=" => !prefix_eq,
                    _ => prefix_eq,
                };
                if !ok {
                    return Ok(false);
                }
            }
        }
        if let Some(i) = &c.init
            && !i.contains(&self.os.init)
        {
            return Ok(false);
        }
        for p in c.exists.iter().flatten() {
            if !self.v.exists(self.render(p).as_bytes())? {
                return Ok(false);
            }
        }
        for p in c.absent.iter().flatten() {
            if self.v.exists(self.render(p).as_bytes())? {
                return Ok(false);
            }
        }
        for p in c.is_dir.iter().flatten() {
            if self.v.node_follow(p.as_bytes())?.map(|n| n.file_type) != Some(FileType::Directory) {
                return Ok(false);
            }
        }
        for p in c.real_dir.iter().flatten() {
            let Some(cp) = self.canon(p, false)? else {
                return Ok(false);
            };
            if self.v.node(&cp)?.map(|n| n.file_type) != Some(FileType::Directory) {
                return Ok(false);
            }
        }
        if let Some(g) = &c.any_match
            && expand(&self.v, g)?.is_empty()
        {
            return Ok(false);
        }
        if let Some((p, t)) = &c.contains {
            match self.v.read_follow(p.as_bytes())? {
                Some(d) if contains(&d, self.render(t).as_bytes()) => {}
                _ => return Ok(false),
            }
        }
        if let Some((p, t)) = &c.not_contains
            && let Some(d) = self.v.read_follow(p.as_bytes())?
            && contains(&d, self.render(t).as_bytes())
        {
            return Ok(false);
        }
        if let Some((g, re)) = &c.any_contains {
            let re = self.regex(&format!("(?m){re}"))?;
            let mut found = false;
            for p in expand(&self.v, g)? {
                if let Ok(Some(d)) = self.v.read(&p)
                    && re.is_match(&d)
                {
                    found = true;
                    break;
                }
            }
            if !found {
                return Ok(false);
            }
        }
        for p in c.executable.iter().flatten() {
            if !self.is_executable(p)? {
                return Ok(false);
            }
        }
        if let Some(ps) = &c.not_executable {
            let mut any_missing = false;
            for p in ps {
                if !self.is_executable(p)? {
                    any_missing = true;
                }
            }
            if !any_missing {
                return Ok(false);
            }
        }
        if let Some((p, t)) = &c.link_target_contains {
            let Some(cp) = self.canon(p, false)? else {
                return Ok(false);
            };
            match self.v.readlink(&cp)? {
                Some(target) if contains(&target, t.as_bytes()) => {}
                _ => return Ok(false),
            }
        }
        if let Some(want) = c.user_password_hash {
            let has = match self.v.read_follow(b"/etc/shadow")? {
                Some(d) => lines_of(&d).0.iter().any(|l| {
                    let mut f = l.split(|&b| b == b':');
                    let user = f.next().unwrap_or_default();
                    let pw = f.next().unwrap_or_default();
                    user != b"root" && pw.first() == Some(&b'$')
                }),
                None => false,
            };
            if has != want {
                return Ok(false);
            }
        }
        if let Some(var) = &c.var
            && self.vars.get(var).is_none_or(|v| v.is_empty())
        {
            return Ok(false);
        }
        if let Some(want) = c.selinux {
            let on = matches!(
                self.os.selinux,
                Some(SelinuxMode::Enforcing | SelinuxMode::Permissive)
            );
            if on != want {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn is_executable(&self, p: &str) -> Result<bool> {
        Ok(self
            .v
            .node_follow(p.as_bytes())?
            .is_some_and(|n| n.file_type == FileType::Regular && n.perm & 0o111 != 0))
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
            } => {
                for p in self.paths(path)? {
                    let Some(info) = self.v.node(&p)? else {
                        continue;
                    };
                    if let Some(text) = if_contains {
                        if info.file_type != FileType::Regular {
                            continue;
                        }
                        match self.v.read(&p) {
                            Ok(Some(d)) if contains(&d, text.as_bytes()) => {}
                            _ => continue,
                        }
                    }
                    if info.file_type == FileType::Directory && !recursive {
                        continue;
                    }
                    if p.ends_with(b"/ssh_host_") || show(&p).contains("/ssh_host_") {
                        self.keys_deleted = true;
                    }
                    self.delete(src, &p, &info)?;
                }
            }
            Action::DeleteContents { path, keep } => {
                for dir in self.paths(path)? {
                    if self.v.node(&dir)?.map(|n| n.file_type) != Some(FileType::Directory) {
                        continue;
                    }
                    for (name, _) in self.v.list(&dir)? {
                        if keep.iter().any(|k| match_component(k.as_bytes(), &name)) {
                            continue;
                        }
                        let p = join(&dir, &name);
                        if let Some(info) = self.v.node(&p)? {
                            self.delete(src, &p, &info)?;
                        }
                    }
                }
            }
            Action::Truncate { path } => {
                for p in self.paths(path)? {
                    if let Some(info) = self.v.node(&p)? {
                        self.truncate(src, &p, &info);
                    }
                }
            }
            Action::TruncateTree { path, except } => {
                for dir in self.paths(path)? {
                    let mut stack = vec![(dir, 0usize)];
                    while let Some((d, depth)) = stack.pop() {
                        if depth > 64 {
                            continue;
                        }
                        for (name, ft) in self.v.list(&d)? {
                            let p = join(&d, &name);
                            match ft {
                                FileType::Directory => stack.push((p, depth + 1)),
                                FileType::Regular => {
                                    if except.iter().any(|e| match_component(e.as_bytes(), &name)) {
                                        continue;
                                    }
                                    if let Some(info) = self.v.node(&p)? {
                                        self.truncate(src, &p, &info);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            Action::Mkdir {
                path,
                mode,
                uid,
                gid,
            } => {
                let Some(c) = self.canon(&self.render(path), true)? else {
                    self.warn(format!(
                        "{src}: cannot create {path}: a parent is not a directory"
                    ));
                    return Ok(());
                };
                self.mkdir_p(src, &c, mode.unwrap_or(0o755), *uid, *gid, mode.is_some())?;
            }
            Action::Symlink {
                path,
                target,
                policy,
                if_target_contains,
            } => {
                let Some(c) = self.canon(&self.render(path), false)? else {
                    return Ok(());
                };
                let target = self.render(target).into_bytes();
                self.symlink(src, &c, &target, *policy, if_target_contains.as_deref())?;
            }
            Action::WriteFile {
                path,
                content,
                mode,
                uid,
                gid,
                policy,
                backup_suffix,
            } => {
                let Some(c) = self.canon(&self.render(path), false)? else {
                    return Ok(());
                };
                let content = self.render(content).into_bytes();
                let backup = backup_suffix.as_ref().map(|s| self.render(s));
                self.write_file(src, &c, content, *mode, *uid, *gid, *policy, backup)?;
            }
            Action::CopyFile {
                from,
                to,
                mode,
                edits,
                policy,
            } => {
                let Some(data) = self.v.read_follow(self.render(from).as_bytes())? else {
                    return Ok(());
                };
                let data = self.apply_edits(&data, edits)?;
                let Some(c) = self.canon(&self.render(to), false)? else {
                    return Ok(());
                };
                match self.v.node(&c)? {
                    Some(_) if *policy == WritePolicy::IfAbsent => return Ok(()),
                    Some(info) if info.file_type == FileType::Symlink => {
                        self.delete(src, &c, &info)?;
                    }
                    None if *policy == WritePolicy::IfExists => return Ok(()),
                    _ => {}
                }
                self.write_file(src, &c, data, *mode, 0, 0, WritePolicy::Always, None)?;
            }
            Action::Edit {
                path,
                edits,
                skip_if_contains,
                create,
                mode,
            } => {
                let rendered = self.render(path);
                let targets = if crate::glob::has_magic(rendered.as_bytes()) {
                    self.paths(&rendered)?
                } else {
                    self.canon(&rendered, false)?.into_iter().collect()
                };
                for c in targets {
                    self.edit(src, &c, edits, skip_if_contains.as_deref(), *create, *mode)?;
                }
            }
            Action::DisableService {
                system,
                names,
                delete_script,
            } => {
                for n in names {
                    let n = self.render(n);
                    self.disable_service(src, *system, &n, *delete_script)?;
                }
            }
            Action::EnableService {
                system,
                runlevel,
                names,
            } => {
                if *system != InitSystem::Openrc {
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
            }
            Action::SetShadow { user, field, value } => {
                let value = self.render(value);
                for f in ["/etc/shadow", "/etc/shadow-"] {
                    self.set_shadow(src, f, user, *field, &value)?;
                }
            }
            Action::Chown {
                path,
                uid,
                gid,
                recursive,
            } => {
                let Some(c) = self.canon(&self.render(path), true)? else {
                    return Ok(());
                };
                let mut stack = vec![(c, 0usize)];
                while let Some((p, depth)) = stack.pop() {
                    let Some(info) = self.v.node(&p)? else {
                        continue;
                    };
                    if info.uid != *uid || info.gid != *gid {
                        self.steps.push(step(
                            src,
                            &p,
                            StepOp::SetAttr {
                                mode: None,
                                uid: Some(*uid),
                                gid: Some(*gid),
                            },
                            0,
                        ));
                        self.restage_attr(&p, None, Some(*uid), Some(*gid));
                    }
                    if *recursive && info.file_type == FileType::Directory && depth < 64 {
                        for (name, _) in self.v.list(&p)? {
                            stack.push((join(&p, &name), depth + 1));
                        }
                    }
                }
            }
            Action::Chmod { path, mode } => {
                let Some(c) = self.canon(&self.render(path), true)? else {
                    return Ok(());
                };
                if let Some(info) = self.v.node(&c)?
                    && info.file_type != FileType::Symlink
                    && info.perm != *mode
                {
                    self.steps.push(step(
                        src,
                        &c,
                        StepOp::SetAttr {
                            mode: Some(*mode),
                            uid: None,
                            gid: None,
                        },
                        0,
                    ));
                    self.restage_attr(&c, Some(*mode), None, None);
                }
            }
            Action::MachineId => self.machine_id(src)?,
            Action::SshKeyRegenerator => self.ssh_keygen(src)?,
            Action::Check { message } => {
                let m = self.render(message);
                self.warn(format!("{src}: {m}"));
            }
        }
        Ok(())
    }

    /// Keep the view's idea of a staged node's attributes in step with a SetAttr.
    fn restage_attr(&mut self, p: &[u8], mode: Option<u16>, u: Option<u32>, g: Option<u32>) {
        if let Some(Staged::File { perm, uid, gid, .. } | Staged::Dir { perm, uid, gid }) =
            self.v.staged.get_mut(p)
        {
            if let Some(m) = mode {
                *perm = m;
            }
            if let Some(x) = u {
                *uid = x;
            }
            if let Some(x) = g {
                *gid = x;
            }
        }
    }

    fn delete(&mut self, src: &str, p: &[u8], info: &NodeInfo) -> Result<()> {
        let (recursive, entries, bytes) = if info.file_type == FileType::Directory {
            let (e, b) = self.tree_size(p)?;
            (true, e + 1, b)
        } else {
            let b = if info.file_type == FileType::Regular {
                info.size
            } else {
                0
            };
            (false, 1, b)
        };
        self.steps
            .push(step(src, p, StepOp::Delete { recursive, entries }, bytes));
        self.v.stage(p.to_vec(), Staged::Absent);
        Ok(())
    }

    fn tree_size(&self, dir: &[u8]) -> Result<(u64, u64)> {
        let (mut entries, mut bytes) = (0u64, 0u64);
        let mut stack = vec![(dir.to_vec(), 0usize)];
        while let Some((d, depth)) = stack.pop() {
            for (name, ft) in self.v.list(&d)? {
                entries += 1;
                let p = join(&d, &name);
                match ft {
                    FileType::Directory if depth < 64 => stack.push((p, depth + 1)),
                    FileType::Regular => {
                        bytes += self.v.node(&p)?.map_or(0, |n| n.size);
                    }
                    _ => {}
                }
            }
        }
        Ok((entries, bytes))
    }

    fn truncate(&mut self, src: &str, p: &[u8], info: &NodeInfo) {
        if info.file_type != FileType::Regular || info.size == 0 {
            return;
        }
        self.steps.push(step(
            src,
            p,
            StepOp::Truncate {
                old_size: info.size,
            },
            info.size,
        ));
        self.v.stage(
            p.to_vec(),
            Staged::File {
                content: Vec::new(),
                perm: info.perm,
                uid: info.uid,
                gid: info.gid,
            },
        );
    }

    /// Create `c` and its missing parents. `force_mode`: fix the mode of an existing dir.
    fn mkdir_p(
        &mut self,
        src: &str,
        c: &[u8],
        mode: u16,
        uid: u32,
        gid: u32,
        force_mode: bool,
    ) -> Result<bool> {
        if let Some(info) = self.v.node(c)? {
            if info.file_type != FileType::Directory {
                self.warn(format!("{src}: {} exists and is not a directory", show(c)));
                return Ok(false);
            }
            if force_mode && (info.perm != mode || info.uid != uid || info.gid != gid) {
                self.steps.push(step(
                    src,
                    c,
                    StepOp::SetAttr {
                        mode: (info.perm != mode).then_some(mode),
                        uid: (info.uid != uid).then_some(uid),
                        gid: (info.gid != gid).then_some(gid),
                    },
                    0,
                ));
                self.restage_attr(c, Some(mode), Some(uid), Some(gid));
            }
            return Ok(true);
        }
        if let Some((parent, _)) = split(c)
            && !self.mkdir_p(src, parent, 0o755, 0, 0, false)?
        {
            return Ok(false);
        }
        self.steps
            .push(step(src, c, StepOp::Mkdir { mode, uid, gid }, 0));
        self.v.stage(
            c.to_vec(),
            Staged::Dir {
                perm: mode,
                uid,
                gid,
            },
        );
        Ok(true)
    }

    fn parents(&mut self, src: &str, c: &[u8]) -> Result<bool> {
        match split(c) {
            Some((parent, _)) => self.mkdir_p(src, parent, 0o755, 0, 0, false),
            None => Ok(false),
        }
    }

    fn symlink(
        &mut self,
        src: &str,
        c: &[u8],
        target: &[u8],
        policy: LinkPolicy,
        if_target_contains: Option<&str>,
    ) -> Result<()> {
        let mut replace = false;
        if let Some(info) = self.v.node(c)? {
            let current = self.v.readlink(c)?;
            if current.as_deref() == Some(target) {
                return Ok(());
            }
            if policy != LinkPolicy::Replace || info.file_type == FileType::Directory {
                return Ok(());
            }
            if let Some(t) = if_target_contains {
                match current {
                    Some(cur) if contains(&cur, t.as_bytes()) => {}
                    _ => return Ok(()),
                }
            }
            replace = true;
        } else if if_target_contains.is_some() {
            return Ok(());
        }
        if !self.parents(src, c)? {
            return Ok(());
        }
        let mut s = step(
            src,
            c,
            StepOp::Symlink {
                target: show(target),
                replace,
            },
            0,
        );
        s.raw_target = target.to_vec();
        self.steps.push(s);
        self.v.stage(
            c.to_vec(),
            Staged::Symlink {
                target: target.to_vec(),
            },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_file(
        &mut self,
        src: &str,
        c: &[u8],
        content: Vec<u8>,
        mode: Option<u16>,
        uid: u32,
        gid: u32,
        policy: WritePolicy,
        backup: Option<String>,
    ) -> Result<()> {
        match self.v.node(c)? {
            Some(info) => {
                if info.file_type != FileType::Regular {
                    self.warn(format!(
                        "{src}: {} is not a regular file; left alone",
                        show(c)
                    ));
                    return Ok(());
                }
                if policy == WritePolicy::IfAbsent {
                    return Ok(());
                }
                let old = match self.v.read(c) {
                    Ok(Some(d)) => d,
                    Ok(None) => Vec::new(),
                    Err(PrepareError::TooLarge { .. }) => {
                        self.warn(format!("{src}: {} is too large; left alone", show(c)));
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let perm = mode.unwrap_or(info.perm);
                if old == content && perm == info.perm {
                    return Ok(());
                }
                if let Some(suffix) = backup.filter(|_| old != content) {
                    let mut bpath = c.to_vec();
                    bpath.extend_from_slice(suffix.as_bytes());
                    if self.v.node(&bpath)?.is_none() {
                        let mut s = step(
                            src,
                            &bpath,
                            StepOp::WriteFile {
                                mode: info.perm,
                                uid: info.uid,
                                gid: info.gid,
                                created: true,
                                backup_of: Some(show(c)),
                            },
                            old.len() as u64,
                        );
                        s.content = old.clone();
                        s.backup_for = Some(c.to_vec());
                        self.steps.push(s);
                        self.v.stage(
                            bpath,
                            Staged::File {
                                content: old,
                                perm: info.perm,
                                uid: info.uid,
                                gid: info.gid,
                            },
                        );
                    }
                }
                self.push_write(src, c, content, perm, info.uid, info.gid, false);
            }
            None => {
                if policy == WritePolicy::IfExists {
                    return Ok(());
                }
                if !self.parents(src, c)? {
                    return Ok(());
                }
                self.push_write(src, c, content, mode.unwrap_or(0o644), uid, gid, true);
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push_write(
        &mut self,
        src: &str,
        c: &[u8],
        content: Vec<u8>,
        mode: u16,
        uid: u32,
        gid: u32,
        created: bool,
    ) {
        let mut s = step(
            src,
            c,
            StepOp::WriteFile {
                mode,
                uid,
                gid,
                created,
                backup_of: None,
            },
            content.len() as u64,
        );
        s.content = content.clone();
        self.steps.push(s);
        self.v.stage(
            c.to_vec(),
            Staged::File {
                content,
                perm: mode,
                uid,
                gid,
            },
        );
    }

    fn edit(
        &mut self,
        src: &str,
        c: &[u8],
        edits: &[Edit],
        skip_if: Option<&str>,
        create: bool,
        mode: Option<u16>,
    ) -> Result<()> {
        let info = self.v.node(c)?;
        let old = match &info {
            Some(i) if i.file_type == FileType::Regular => match self.v.read(c) {
                Ok(Some(d)) => d,
                Ok(None) => return Ok(()),
                Err(PrepareError::TooLarge { .. }) => {
                    self.warn(format!("{src}: {} is too large to edit", show(c)));
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
            Some(i) if i.file_type == FileType::Symlink => {
                self.warn(format!(
                    "{src}: {} is a symlink; not edited (LX safety rule)",
                    show(c)
                ));
                return Ok(());
            }
            Some(_) => return Ok(()),
            None if create => Vec::new(),
            None => return Ok(()),
        };
        if let Some(marker) = skip_if
            && contains(&old, marker.as_bytes())
        {
            return Ok(());
        }
        let new = self.apply_edits(&old, edits)?;
        self.write_file(src, c, new, mode, 0, 0, WritePolicy::Always, None)
    }

    fn apply_edits(&mut self, old: &[u8], edits: &[Edit]) -> Result<Vec<u8>> {
        let (mut lines, mut trailing) = lines_of(old);
        for e in edits {
            match e {
                Edit::Replace { replace, with } => {
                    let re = self.regex(replace)?;
                    let with = self.render(with);
                    for l in &mut lines {
                        if re.is_match(l) {
                            *l = re.replace(l, with.as_bytes()).into_owned();
                        }
                    }
                }
                Edit::PrefixBlock {
                    block_start,
                    block_end,
                    prefix,
                } => {
                    let start = self.regex(block_start)?;
                    let end = self.regex(block_end)?;
                    let mut inside = false;
                    let mut done = false;
                    for l in &mut lines {
                        if done {
                            break;
                        }
                        if !inside && start.is_match(l) {
                            inside = true;
                        } else if inside && end.is_match(l) {
                            done = true;
                            continue;
                        }
                        if inside && !l.starts_with(prefix.as_bytes()) {
                            let mut n = prefix.as_bytes().to_vec();
                            n.extend_from_slice(l);
                            *l = n;
                        }
                    }
                }
                Edit::PrefixLines {
                    prefix_lines,
                    prefix,
                } => {
                    let re = self.regex(prefix_lines)?;
                    for l in &mut lines {
                        if re.is_match(l) && !l.starts_with(prefix.as_bytes()) {
                            let mut n = prefix.as_bytes().to_vec();
                            n.extend_from_slice(l);
                            *l = n;
                        }
                    }
                }
                Edit::DeleteLines { delete_lines } => {
                    let re = self.regex(delete_lines)?;
                    lines.retain(|l| !re.is_match(l));
                }
                Edit::AppendIfMissing {
                    append_if_missing,
                    matching,
                } => {
                    let (line, present) =
                        self.line_present(&lines, append_if_missing, matching.as_deref())?;
                    if !present {
                        lines.push(line.into_bytes());
                        trailing = true;
                    }
                }
                Edit::PrependIfMissing {
                    prepend_if_missing,
                    matching,
                } => {
                    let (line, present) =
                        self.line_present(&lines, prepend_if_missing, matching.as_deref())?;
                    if !present {
                        lines.insert(0, line.into_bytes());
                        trailing = true;
                    }
                }
                Edit::Append { append } => {
                    lines.push(self.render(append).into_bytes());
                    trailing = true;
                }
                Edit::RemoveHostname { remove_hostname } => {
                    let name = self.render(remove_hostname);
                    let name = name.trim();
                    if name.is_empty() || name.starts_with("localhost") {
                        continue;
                    }
                    let short = name.split('.').next().unwrap_or(name);
                    let mut out = Vec::new();
                    for l in lines {
                        let (body, comment) = match l.iter().position(|&b| b == b'#') {
                            Some(i) => (l.get(..i).unwrap_or_default(), l.get(i..)),
                            None => (&l[..], None),
                        };
                        let fields: Vec<&[u8]> = body
                            .split(|b| b.is_ascii_whitespace())
                            .filter(|f| !f.is_empty())
                            .collect();
                        let Some((addr, names)) = fields.split_first() else {
                            out.push(l.clone());
                            continue;
                        };
                        let kept: Vec<&[u8]> = names
                            .iter()
                            .copied()
                            .filter(|n| *n != name.as_bytes() && *n != short.as_bytes())
                            .collect();
                        if kept.len() == names.len() {
                            out.push(l.clone());
                        } else if !kept.is_empty() {
                            let mut n = addr.to_vec();
                            n.push(b'\t');
                            n.extend_from_slice(&kept.join(&b' '));
                            if let Some(c) = comment {
                                n.push(b' ');
                                n.extend_from_slice(c);
                            }
                            out.push(n);
                        }
                    }
                    lines = out;
                }
            }
        }
        Ok(join_lines(&lines, trailing))
    }

    fn set_shadow(
        &mut self,
        src: &str,
        file: &str,
        user: &str,
        field: usize,
        value: &str,
    ) -> Result<()> {
        let Some(c) = self.canon(file, false)? else {
            return Ok(());
        };
        let Some(old) = self.v.read(&c)? else {
            return Ok(());
        };
        if field == 0 || value.contains(':') || value.contains('\n') {
            self.warn(format!(
                "{src}: bad shadow field or value; {file} left alone"
            ));
            return Ok(());
        }
        let (mut lines, trailing) = lines_of(&old);
        let mut prefix = user.as_bytes().to_vec();
        prefix.push(b':');
        for l in &mut lines {
            if !l.starts_with(&prefix) {
                continue;
            }
            let mut fields: Vec<Vec<u8>> = l.split(|&b| b == b':').map(<[u8]>::to_vec).collect();
            while fields.len() < field {
                fields.push(Vec::new());
            }
            if let Some(f) = fields.get_mut(field - 1) {
                *f = value.as_bytes().to_vec();
            }
            *l = fields.join(&b':');
        }
        let new = join_lines(&lines, trailing);
        if new != old {
            self.write_file(src, &c, new, None, 0, 0, WritePolicy::IfExists, None)?;
        }
        Ok(())
    }

    fn machine_id(&mut self, src: &str) -> Result<()> {
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

    fn unit_exists(&self, unit: &str) -> Result<bool> {
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

    fn disable_service(
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

    /// Whether the guest regenerates missing SSH host keys by itself, and how.
    fn keygen_regenerator(&self) -> Result<Option<String>> {
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
        let ours = format!(
            "{}/{}",
            crate::firstboot::SCRIPTS_DIR,
            crate::firstboot::KEYGEN_SCRIPT
        );
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

    fn ssh_keygen(&mut self, src: &str) -> Result<()> {
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

    /// SELinux: new files on an enabled guest need a label. Copy the parent directory's
    /// `security.selinux` when the filesystem has labels; otherwise ask for a relabel.
    fn finish_selinux(&mut self) -> Result<()> {
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

    /// Collapse several writes of one file into one write of its final content, and drop
    /// writes that leave a file as it already is (with their backups).
    fn coalesce(&mut self) -> Result<()> {
        let fresh = View::new(self.v.fs());
        let mut first: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut drop_paths: BTreeSet<Vec<u8>> = BTreeSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            if let StepOp::WriteFile {
                backup_of: None, ..
            } = s.op
            {
                first.entry(s.raw.clone()).or_insert(i);
            }
        }
        let mut keep = vec![true; self.steps.len()];
        for (path, &idx) in &first {
            match self.v.staged.get(path) {
                Some(Staged::File {
                    content,
                    perm,
                    uid,
                    gid,
                }) => {
                    let orig = fresh.node(path)?;
                    let same = match &orig {
                        Some(o) if o.file_type == FileType::Regular => {
                            o.perm == *perm
                                && o.uid == *uid
                                && o.gid == *gid
                                && o.size == content.len() as u64
                                && fresh.read(path).ok().flatten().as_ref() == Some(content)
                        }
                        _ => false,
                    };
                    if same {
                        drop_paths.insert(path.clone());
                        continue;
                    }
                    if let Some(s) = self.steps.get_mut(idx) {
                        s.content = content.clone();
                        s.bytes = content.len() as u64;
                        let created = orig.is_none()
                            || orig
                                .as_ref()
                                .is_some_and(|o| o.file_type != FileType::Regular);
                        s.op = StepOp::WriteFile {
                            mode: *perm,
                            uid: *uid,
                            gid: *gid,
                            created,
                            backup_of: None,
                        };
                    }
                    for (i, s) in self.steps.iter().enumerate() {
                        if i != idx
                            && s.raw == *path
                            && matches!(
                                s.op,
                                StepOp::WriteFile {
                                    backup_of: None,
                                    ..
                                }
                            )
                            && let Some(k) = keep.get_mut(i)
                        {
                            *k = false;
                        }
                    }
                }
                _ => {
                    drop_paths.insert(path.clone());
                }
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            let dropped = (drop_paths.contains(&s.raw)
                && matches!(
                    s.op,
                    StepOp::WriteFile {
                        backup_of: None,
                        ..
                    }
                ))
                || s.backup_for
                    .as_ref()
                    .is_some_and(|b| drop_paths.contains(b));
            if dropped && let Some(k) = keep.get_mut(i) {
                *k = false;
            }
        }
        let mut it = keep.into_iter();
        self.steps.retain(|_| it.next().unwrap_or(true));
        Ok(())
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

    #[test]
    fn lines_roundtrip() {
        for t in [&b""[..], b"a\nb\n", b"a\nb", b"\n\n"] {
            let (l, tr) = lines_of(t);
            assert_eq!(join_lines(&l, tr), t);
        }
    }
}
