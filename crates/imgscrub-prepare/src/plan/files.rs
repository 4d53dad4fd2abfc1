//! File actions (delete, truncate, mkdir, symlink, write, copy, chown, chmod) and the
//! low-level step builders the other modules use (`delete`, `truncate`, `mkdir_p`,
//! `symlink`, `write_file`, `push_write`, `write_simple`). Each builder records a [`Step`]
//! and stages its effect in the view.

use super::text::contains;
use super::{Planner, StepOp, step};
use crate::action::{Edit, LinkPolicy, WritePolicy};
use crate::error::{PrepareError, Result};
use crate::glob::match_component;
use crate::view::{NodeInfo, Staged, join, show, split};
use imgscrub_fs::filesystem::FileType;

impl Planner<'_, '_> {
    /// The `delete` action.
    pub(super) fn act_delete(
        &mut self,
        src: &str,
        path: &str,
        recursive: bool,
        if_contains: Option<&str>,
    ) -> Result<()> {
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
        Ok(())
    }

    /// The `delete_contents` action.
    pub(super) fn act_delete_contents(
        &mut self,
        src: &str,
        path: &str,
        keep: &[String],
    ) -> Result<()> {
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
        Ok(())
    }

    /// The `truncate` action.
    pub(super) fn act_truncate(&mut self, src: &str, path: &str) -> Result<()> {
        for p in self.paths(path)? {
            if let Some(info) = self.v.node(&p)? {
                self.truncate(src, &p, &info);
            }
        }
        Ok(())
    }

    /// The `truncate_tree` action.
    pub(super) fn act_truncate_tree(
        &mut self,
        src: &str,
        path: &str,
        except: &[String],
    ) -> Result<()> {
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
        Ok(())
    }

    /// The `mkdir` action.
    pub(super) fn act_mkdir(
        &mut self,
        src: &str,
        path: &str,
        mode: Option<u16>,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let Some(c) = self.canon(&self.render(path), true)? else {
            self.warn(format!(
                "{src}: cannot create {path}: a parent is not a directory"
            ));
            return Ok(());
        };
        self.mkdir_p(src, &c, mode.unwrap_or(0o755), uid, gid, mode.is_some())?;
        Ok(())
    }

    /// The `symlink` action.
    pub(super) fn act_symlink(
        &mut self,
        src: &str,
        path: &str,
        target: &str,
        policy: LinkPolicy,
        if_target_contains: Option<&str>,
    ) -> Result<()> {
        let Some(c) = self.canon(&self.render(path), false)? else {
            return Ok(());
        };
        let target = self.render(target).into_bytes();
        self.symlink(src, &c, &target, policy, if_target_contains)
    }

    /// The `write_file` action (`owner`: uid and gid of a new file).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn act_write_file(
        &mut self,
        src: &str,
        path: &str,
        content: &str,
        mode: Option<u16>,
        owner: (u32, u32),
        policy: WritePolicy,
        backup_suffix: Option<&str>,
    ) -> Result<()> {
        let Some(c) = self.canon(&self.render(path), false)? else {
            return Ok(());
        };
        let content = self.render(content).into_bytes();
        let backup = backup_suffix.map(|s| self.render(s));
        let (uid, gid) = owner;
        self.write_file(src, &c, content, mode, uid, gid, policy, backup)
    }

    /// The `copy_file` action: a guest file (edited) to another guest path.
    pub(super) fn act_copy_file(
        &mut self,
        src: &str,
        from: &str,
        to: &str,
        mode: Option<u16>,
        edits: &[Edit],
        policy: WritePolicy,
    ) -> Result<()> {
        let Some(data) = self.v.read_follow(self.render(from).as_bytes())? else {
            return Ok(());
        };
        let data = self.apply_edits(&data, edits)?;
        let Some(c) = self.canon(&self.render(to), false)? else {
            return Ok(());
        };
        match self.v.node(&c)? {
            Some(_) if policy == WritePolicy::IfAbsent => return Ok(()),
            Some(info) if info.file_type == FileType::Symlink => {
                self.delete(src, &c, &info)?;
            }
            None if policy == WritePolicy::IfExists => return Ok(()),
            _ => {}
        }
        self.write_file(src, &c, data, mode, 0, 0, WritePolicy::Always, None)
    }

    /// The `chown` action.
    pub(super) fn act_chown(
        &mut self,
        src: &str,
        path: &str,
        uid: u32,
        gid: u32,
        recursive: bool,
    ) -> Result<()> {
        let Some(c) = self.canon(&self.render(path), true)? else {
            return Ok(());
        };
        let mut stack = vec![(c, 0usize)];
        while let Some((p, depth)) = stack.pop() {
            let Some(info) = self.v.node(&p)? else {
                continue;
            };
            if info.uid != uid || info.gid != gid {
                self.steps.push(step(
                    src,
                    &p,
                    StepOp::SetAttr {
                        mode: None,
                        uid: Some(uid),
                        gid: Some(gid),
                    },
                    0,
                ));
                self.restage_attr(&p, None, Some(uid), Some(gid));
            }
            if recursive && info.file_type == FileType::Directory && depth < 64 {
                for (name, _) in self.v.list(&p)? {
                    stack.push((join(&p, &name), depth + 1));
                }
            }
        }
        Ok(())
    }

    /// The `chmod` action.
    pub(super) fn act_chmod(&mut self, src: &str, path: &str, mode: u16) -> Result<()> {
        let Some(c) = self.canon(&self.render(path), true)? else {
            return Ok(());
        };
        if let Some(info) = self.v.node(&c)?
            && info.file_type != FileType::Symlink
            && info.perm != mode
        {
            self.steps.push(step(
                src,
                &c,
                StepOp::SetAttr {
                    mode: Some(mode),
                    uid: None,
                    gid: None,
                },
                0,
            ));
            self.restage_attr(&c, Some(mode), None, None);
        }
        Ok(())
    }

    /// Keep the view's idea of a staged node's attributes in step with a SetAttr.
    pub(super) fn restage_attr(
        &mut self,
        p: &[u8],
        mode: Option<u16>,
        u: Option<u32>,
        g: Option<u32>,
    ) {
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

    pub(super) fn delete(&mut self, src: &str, p: &[u8], info: &NodeInfo) -> Result<()> {
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

    pub(super) fn tree_size(&self, dir: &[u8]) -> Result<(u64, u64)> {
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

    pub(super) fn truncate(&mut self, src: &str, p: &[u8], info: &NodeInfo) {
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
    pub(super) fn mkdir_p(
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

    pub(super) fn parents(&mut self, src: &str, c: &[u8]) -> Result<bool> {
        match split(c) {
            Some((parent, _)) => self.mkdir_p(src, parent, 0o755, 0, 0, false),
            None => Ok(false),
        }
    }

    pub(super) fn symlink(
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
    pub(super) fn write_file(
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
    pub(super) fn push_write(
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

    pub(super) fn write_simple(
        &mut self,
        src: &str,
        path: &str,
        content: String,
        mode: u16,
    ) -> Result<()> {
        if let Some(c) = self.canon(path, false)? {
            self.write_file(
                src,
                &c,
                content.into_bytes(),
                Some(mode),
                0,
                0,
                WritePolicy::IfAbsent,
                None,
            )?;
        }
        Ok(())
    }
}
