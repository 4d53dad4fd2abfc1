//! Customization: from [`CustomizeOp`]s (virt-customize's options) to planner steps.
//!
//! The operations run after the profile's actions, in the order given, against the same
//! [`View`](crate::view::View), so each one sees the tree as the earlier ones leave it.
//! The file options are here; the system options (hostname, timezone, passwords, ssh keys)
//! and the first-boot options have their own modules.
//!
//! Rules shared by the file options, as virt-customize has them: guest paths are absolute;
//! a missing parent directory is an error (use `--mkdir` first), except for `--mkdir`
//! itself; `--write`, `--edit`, `--append-line`, `--chmod` and `--chown` follow a final
//! symlink (inside the guest); `--delete`, `--link` and `--move` act on the link itself.
//! New files are `0644 root:root` unless the option says otherwise; rewritten files keep
//! their mode and owner. New files get the SELinux label of their directory like every
//! file the planner creates.

use super::{Planner, step};
use crate::action::LinkPolicy;
use crate::customize::{CustomizeItem, CustomizeOp, HostEntryKind, Origin};
use crate::error::{PrepareError, Result};
use crate::glob::expand;
use crate::plan::StepOp;
use crate::view::{NodeInfo, Staged, join, show, split};
use imgscrub_fs::filesystem::FileType;

/// Largest guest file `--copy`/`--move` read into memory (1 GiB).
const MAX_COPY: u64 = 1 << 30;

/// The error of one customization item, located (`cmds:3: --edit …` or `--edit …`); the
/// system and first-boot options use it too.
pub(super) fn cerr(it: &CustomizeItem, message: String) -> PrepareError {
    let loc = match &it.origin {
        Origin::File { path, line } => format!("{}:{line}: ", path.display()),
        Origin::CommandLine => String::new(),
    };
    PrepareError::Customize {
        option: format!("{loc}--{}", it.option),
        message,
    }
}

impl Planner<'_, '_> {
    /// Plan every customization item, in order.
    pub(super) fn customize_all(&mut self, items: &[CustomizeItem]) -> Result<()> {
        self.system_setup(items);
        for it in items {
            self.customize(it)?;
        }
        Ok(())
    }

    /// Canonical path of `path` (a final symlink followed with `follow`).
    fn cpath(&self, it: &CustomizeItem, path: &str, follow: bool) -> Result<Vec<u8>> {
        if !path.starts_with('/') {
            return Err(cerr(it, format!("guest path {path:?} must be absolute")));
        }
        self.v.canon(path.as_bytes(), follow)?.ok_or_else(|| {
            cerr(
                it,
                format!("{path}: a component of the path is not a directory (or a symlink loop)"),
            )
        })
    }

    /// The node at `c`, which must exist.
    fn existing(&self, it: &CustomizeItem, c: &[u8]) -> Result<NodeInfo> {
        self.v
            .node(c)?
            .ok_or_else(|| cerr(it, format!("{}: no such file or directory", show(c))))
    }

    /// The parent directory of `c` must exist.
    fn need_parent(&self, it: &CustomizeItem, c: &[u8]) -> Result<()> {
        let Some((parent, _)) = split(c) else {
            return Err(cerr(it, format!("{}: not a file path", show(c))));
        };
        match self.v.node(parent)? {
            Some(n) if n.file_type == FileType::Directory => Ok(()),
            Some(_) => Err(cerr(it, format!("{} is not a directory", show(parent)))),
            None => Err(cerr(
                it,
                format!(
                    "directory {} does not exist (create it first with --mkdir)",
                    show(parent)
                ),
            )),
        }
    }

    /// Content of a regular file for copying: staged content or the file's data.
    fn read_for_copy(&self, it: &CustomizeItem, c: &[u8]) -> Result<Vec<u8>> {
        if let Some(Staged::File { content, .. }) = self.v.staged.get(c) {
            return Ok(content.clone());
        }
        let node = self
            .v
            .fs_node(c)?
            .ok_or_else(|| cerr(it, format!("{}: no such file", show(c))))?;
        let fs = self.v.fs();
        let m = fs.stat(node)?;
        if m.size > MAX_COPY {
            return Err(cerr(
                it,
                format!("{}: {} bytes is larger than {MAX_COPY}", show(c), m.size),
            ));
        }
        Ok(fs.read_all(node)?)
    }

    /// Create or replace the regular file `c` (whose parent exists): new content, and the
    /// given attributes (`None`: keep an existing file's, else 0644 root:root).
    fn put_file(
        &mut self,
        it: &CustomizeItem,
        src: &str,
        c: &[u8],
        content: Vec<u8>,
        attrs: Option<(u16, u32, u32)>,
    ) -> Result<()> {
        match self.v.node(c)? {
            Some(n) if n.file_type == FileType::Directory => {
                Err(cerr(it, format!("{} is a directory", show(c))))
            }
            Some(n) if n.file_type == FileType::Regular => {
                let (mode, uid, gid) = attrs.unwrap_or((n.perm, n.uid, n.gid));
                self.push_write(src, c, content, mode, uid, gid, false);
                Ok(())
            }
            Some(n) => {
                // A symlink or special file is replaced by the regular file.
                self.delete(src, c, &n)?;
                let (mode, uid, gid) = attrs.unwrap_or((0o644, 0, 0));
                self.push_write(src, c, content, mode, uid, gid, true);
                Ok(())
            }
            None => {
                let (mode, uid, gid) = attrs.unwrap_or((0o644, 0, 0));
                self.push_write(src, c, content, mode, uid, gid, true);
                Ok(())
            }
        }
    }

    /// Set mode/owner of an existing node where they differ.
    fn set_attr(
        &mut self,
        src: &str,
        c: &[u8],
        info: &NodeInfo,
        mode: Option<u16>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) {
        let mode = mode.filter(|m| *m != info.perm);
        let uid = uid.filter(|u| *u != info.uid);
        let gid = gid.filter(|g| *g != info.gid);
        if mode.is_none() && uid.is_none() && gid.is_none() {
            return;
        }
        self.steps
            .push(step(src, c, StepOp::SetAttr { mode, uid, gid }, 0));
        self.restage_attr(c, mode, uid, gid);
    }

    /// Ids listed in a passwd-style file (field 3).
    fn guest_ids(&self, file: &[u8]) -> Result<Vec<u32>> {
        let data = self.v.read_follow(file)?.unwrap_or_default();
        Ok(data
            .split(|&b| b == b'\n')
            .filter_map(|l| {
                let f: Vec<&[u8]> = l.split(|&b| b == b':').collect();
                std::str::from_utf8(f.get(2)?).ok()?.trim().parse().ok()
            })
            .collect())
    }

    /// Copy the guest node `from` (not followed) to the new path `to`.
    fn copy_tree(&mut self, it: &CustomizeItem, src: &str, from: &[u8], to: &[u8]) -> Result<()> {
        let info = self.existing(it, from)?;
        match info.file_type {
            FileType::Directory => {
                match self.v.node(to)? {
                    Some(n) if n.file_type == FileType::Directory => {
                        self.set_attr(src, to, &n, Some(info.perm), Some(info.uid), Some(info.gid));
                    }
                    Some(_) => {
                        return Err(cerr(
                            it,
                            format!("{} exists and is not a directory", show(to)),
                        ));
                    }
                    None => {
                        self.steps.push(step(
                            src,
                            to,
                            StepOp::Mkdir {
                                mode: info.perm,
                                uid: info.uid,
                                gid: info.gid,
                            },
                            0,
                        ));
                        self.v.stage(
                            to.to_vec(),
                            Staged::Dir {
                                perm: info.perm,
                                uid: info.uid,
                                gid: info.gid,
                            },
                        );
                    }
                }
                for (name, _) in self.v.list(from)? {
                    self.copy_tree(it, src, &join(from, &name), &join(to, &name))?;
                }
            }
            FileType::Regular => {
                let data = self.read_for_copy(it, from)?;
                self.put_file(it, src, to, data, Some((info.perm, info.uid, info.gid)))?;
            }
            FileType::Symlink => {
                let target = self.v.readlink(from)?.unwrap_or_default();
                self.link_at(it, src, to, &target)?;
            }
            other => {
                return Err(cerr(it, format!("{}: cannot copy a {other:?}", show(from))));
            }
        }
        Ok(())
    }

    /// `ln -sf`: a link at `c` (replacing a file or link; never a directory).
    fn link_at(&mut self, it: &CustomizeItem, src: &str, c: &[u8], target: &[u8]) -> Result<()> {
        if let Some(n) = self.v.node(c)?
            && n.file_type == FileType::Directory
        {
            return Err(cerr(it, format!("{} is a directory", show(c))));
        }
        if let Some(n) = self.v.node(c)?
            && n.file_type != FileType::Symlink
        {
            self.delete(src, c, &n)?;
        }
        self.symlink(src, c, target, LinkPolicy::Replace, None)
    }

    /// Where `--copy`/`--move`/`--upload` put `name`: into `dest` if it is a directory.
    fn dest_path(&self, it: &CustomizeItem, dest: &str, name: &[u8]) -> Result<Vec<u8>> {
        let d = self.cpath(it, dest, true)?;
        if dest.ends_with('/')
            || self
                .v
                .node(&d)?
                .is_some_and(|n| n.file_type == FileType::Directory)
        {
            match self.v.node(&d)? {
                Some(n) if n.file_type == FileType::Directory => return Ok(join(&d, name)),
                _ => {
                    return Err(cerr(it, format!("{dest}: no such directory")));
                }
            }
        }
        // Not a directory: the final name is dest's own (a final link is replaced).
        let c = self.cpath(it, dest, false)?;
        self.need_parent(it, &c)?;
        Ok(c)
    }

    fn customize(&mut self, it: &CustomizeItem) -> Result<()> {
        let source = it.source();
        let src = source.as_str();
        match &it.op {
            CustomizeOp::Write { path, content } => {
                let c = self.cpath(it, path, true)?;
                self.need_parent(it, &c)?;
                self.put_file(it, src, &c, content.clone().into_bytes(), None)?;
            }
            CustomizeOp::Upload { file, dest } => {
                let c = self.dest_path(it, dest, &file.name)?;
                self.put_file(
                    it,
                    src,
                    &c,
                    file.data.clone(),
                    Some((file.mode, file.uid, file.gid)),
                )?;
            }
            CustomizeOp::CopyIn { tree, dir } => {
                let d = self.cpath(it, dir, true)?;
                match self.v.node(&d)? {
                    Some(n) if n.file_type == FileType::Directory => {}
                    _ => {
                        return Err(cerr(
                            it,
                            format!("{dir}: no such directory (it must exist; use --mkdir)"),
                        ));
                    }
                }
                for e in &tree.entries {
                    let c = join(&d, &e.rel);
                    match &e.kind {
                        HostEntryKind::Dir => match self.v.node(&c)? {
                            Some(n) if n.file_type == FileType::Directory => {
                                self.set_attr(src, &c, &n, Some(e.mode), Some(e.uid), Some(e.gid));
                            }
                            Some(_) => {
                                return Err(cerr(
                                    it,
                                    format!("{} exists and is not a directory", show(&c)),
                                ));
                            }
                            None => {
                                self.steps.push(step(
                                    src,
                                    &c,
                                    StepOp::Mkdir {
                                        mode: e.mode,
                                        uid: e.uid,
                                        gid: e.gid,
                                    },
                                    0,
                                ));
                                self.v.stage(
                                    c.clone(),
                                    Staged::Dir {
                                        perm: e.mode,
                                        uid: e.uid,
                                        gid: e.gid,
                                    },
                                );
                            }
                        },
                        HostEntryKind::File(data) => {
                            self.put_file(it, src, &c, data.clone(), Some((e.mode, e.uid, e.gid)))?;
                        }
                        HostEntryKind::Symlink(target) => {
                            self.link_at(it, src, &c, target)?;
                        }
                    }
                }
            }
            CustomizeOp::Copy { src: from, dest } | CustomizeOp::Move { src: from, dest } => {
                let f = self.cpath(it, from, false)?;
                let info = self.existing(it, &f)?;
                let name = split(&f).map(|(_, n)| n.to_vec()).ok_or_else(|| {
                    cerr(
                        it,
                        format!("{from}: cannot copy or move the root directory"),
                    )
                })?;
                let t = self.dest_path(it, dest, &name)?;
                if t == f {
                    return Err(cerr(it, format!("{from} and {dest} are the same file")));
                }
                let mut prefix = f.clone();
                prefix.push(b'/');
                if info.file_type == FileType::Directory && t.starts_with(&prefix) {
                    return Err(cerr(
                        it,
                        format!("cannot put {from} inside itself ({})", show(&t)),
                    ));
                }
                self.copy_tree(it, src, &f, &t)?;
                if matches!(it.op, CustomizeOp::Move { .. }) {
                    let info = self.existing(it, &f)?;
                    self.delete(src, &f, &info)?;
                }
            }
            CustomizeOp::AppendLine { path, line } => {
                let c = self.cpath(it, path, true)?;
                let old = match self.v.node(&c)? {
                    Some(n) if n.file_type == FileType::Regular => self.read_for_copy(it, &c)?,
                    Some(_) => {
                        return Err(cerr(it, format!("{path} is not a regular file")));
                    }
                    None => {
                        self.need_parent(it, &c)?;
                        Vec::new()
                    }
                };
                let eol: &[u8] = match old.iter().position(|&b| b == b'\n') {
                    Some(i) if i > 0 && old.get(i - 1) == Some(&b'\r') => b"\r\n",
                    _ => b"\n",
                };
                let mut new = old.clone();
                if !new.is_empty() && new.last() != Some(&b'\n') {
                    new.extend_from_slice(eol);
                }
                new.extend_from_slice(line.as_bytes());
                new.extend_from_slice(eol);
                self.put_file(it, src, &c, new, None)?;
            }
            CustomizeOp::Edit { path, expr } => {
                let c = self.cpath(it, path, true)?;
                match self.v.node(&c)? {
                    Some(n) if n.file_type == FileType::Regular => {}
                    Some(_) => return Err(cerr(it, format!("{path} is not a regular file"))),
                    None => return Err(cerr(it, format!("{path}: no such file"))),
                }
                let old = self.read_for_copy(it, &c)?;
                let re = expr
                    .regex()
                    .map_err(|e| cerr(it, format!("bad regular expression: {e}")))?;
                let new = expr.apply(&re, &old);
                if new != old {
                    self.put_file(it, src, &c, new, None)?;
                }
            }
            CustomizeOp::Mkdir { path } => {
                let c = self.cpath(it, path, true)?;
                if let Some(n) = self.v.node(&c)?
                    && n.file_type != FileType::Directory
                {
                    return Err(cerr(it, format!("{path} exists and is not a directory")));
                }
                if !self.mkdir_p(src, &c, 0o755, 0, 0, false)? {
                    return Err(cerr(
                        it,
                        format!("{path}: a parent exists and is not a directory"),
                    ));
                }
            }
            CustomizeOp::Link { target, links } => {
                for l in links {
                    let c = self.cpath(it, l, false)?;
                    self.need_parent(it, &c)?;
                    self.link_at(it, src, &c, target.as_bytes())?;
                }
            }
            CustomizeOp::Delete { path } => {
                for p in expand(&self.v, path)? {
                    if let Some(info) = self.v.node(&p)? {
                        self.delete(src, &p, &info)?;
                    }
                }
            }
            CustomizeOp::Scrub { path } => {
                let c = self.cpath(it, path, true)?;
                match self.v.node(&c)? {
                    Some(n) if n.file_type == FileType::Regular => {
                        self.delete(src, &c, &n)?;
                        let note = format!(
                            "--scrub {path}: deleted; its old blocks are free space, zeroed \
                             by `prepare --output`, `customize --output` or `imgscrub sparsify`"
                        );
                        if !self.notes.contains(&note) {
                            self.notes.push(note);
                        }
                    }
                    Some(_) => {
                        return Err(cerr(it, format!("{path} is not a regular file")));
                    }
                    None => return Err(cerr(it, format!("{path}: no such file"))),
                }
            }
            CustomizeOp::Touch { path } => {
                let c = self.cpath(it, path, true)?;
                if self.v.node(&c)?.is_none() {
                    self.need_parent(it, &c)?;
                    self.push_write(src, &c, Vec::new(), 0o644, 0, 0, true);
                }
            }
            CustomizeOp::Truncate { path } => {
                let c = self.cpath(it, path, true)?;
                let n = self.existing(it, &c)?;
                if n.file_type != FileType::Regular {
                    return Err(cerr(it, format!("{path} is not a regular file")));
                }
                self.truncate(src, &c, &n);
            }
            CustomizeOp::TruncateRecursive { path } => {
                let c = self.cpath(it, path, true)?;
                let n = self.existing(it, &c)?;
                let mut stack = vec![(c, n, 0usize)];
                while let Some((p, n, depth)) = stack.pop() {
                    match n.file_type {
                        FileType::Regular => self.truncate(src, &p, &n),
                        FileType::Directory if depth < 256 => {
                            for (name, _) in self.v.list(&p)?.into_iter().rev() {
                                let q = join(&p, &name);
                                if let Some(qn) = self.v.node(&q)? {
                                    stack.push((q, qn, depth + 1));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            CustomizeOp::Chmod { mode, path } => {
                let c = self.cpath(it, path, true)?;
                let n = self.existing(it, &c)?;
                self.set_attr(src, &c, &n, Some(*mode), None, None);
            }
            CustomizeOp::Chown { uid, gid, path } => {
                if *uid != 0 && !self.guest_ids(b"/etc/passwd")?.contains(uid) {
                    return Err(cerr(
                        it,
                        format!("no user with UID {uid} in the guest's /etc/passwd"),
                    ));
                }
                if *gid != 0 && !self.guest_ids(b"/etc/group")?.contains(gid) {
                    return Err(cerr(
                        it,
                        format!("no group with GID {gid} in the guest's /etc/group"),
                    ));
                }
                let c = self.cpath(it, path, true)?;
                let n = self.existing(it, &c)?;
                self.set_attr(src, &c, &n, None, Some(*uid), Some(*gid));
            }
            CustomizeOp::Hostname { name } => self.sys_hostname(it, name)?,
            CustomizeOp::Timezone { zone } => self.sys_timezone(it, zone)?,
            CustomizeOp::Password { user, selector } => self.sys_password(it, user, selector)?,
            // Global: system_setup took it before the first item.
            CustomizeOp::PasswordCrypto { .. } => {}
            CustomizeOp::SshInject { user, key, .. } => self.sys_ssh_inject(it, user, key)?,
            CustomizeOp::Firstboot { .. }
            | CustomizeOp::FirstbootCommand { .. }
            | CustomizeOp::FirstbootInstall { .. } => self.firstboot_item(it)?,
        }
        Ok(())
    }
}
