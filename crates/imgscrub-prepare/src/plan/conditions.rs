//! `when` conditions: whether an action applies to this guest (family, distro, version,
//! init system, paths that exist or not, file contents, SELinux, variables).

use super::Planner;
use super::text::{contains, lines_of};
use crate::action::Condition;
use crate::error::Result;
use crate::glob::expand;
use crate::inspect::{SelinuxMode, version_numbers};
use imgscrub_fs::filesystem::FileType;

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
    pub(super) fn cond(&mut self, c: &Condition) -> Result<bool> {
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

    pub(super) fn is_executable(&self, p: &str) -> Result<bool> {
        Ok(self
            .v
            .node_follow(p.as_bytes())?
            .is_some_and(|n| n.file_type == FileType::Regular && n.perm & 0o111 != 0))
    }
}
