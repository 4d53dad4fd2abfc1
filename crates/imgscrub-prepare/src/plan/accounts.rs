//! Accounts: edits of `/etc/passwd`, `/etc/shadow`, `/etc/group` and `/etc/gshadow`.
//!
//! - `set_shadow`: one field of one user's shadow line (root's password or lock).
//! - the `user-account` operation (virt-sysprep's): remove login users — UID in the guest's
//!   `UID_MIN..UID_MAX` (`/etc/login.defs`, default 1000..60000), root never — except those
//!   in `--keep-user-accounts`, or only those in `--remove-user-accounts`. Their lines go
//!   from passwd, shadow, subuid and subgid (and the `-` backups); their personal group goes
//!   from group and gshadow when nobody else is in it, and their name leaves every other
//!   group's member (and gshadow admin) list. Their home goes when it is safe to remove
//!   (below `/home`, or owned by the user and not a system directory), and so do their
//!   mail spool and crontab. Users the options name must exist in the guest.
//!
//! The text transforms are plain functions on file contents (unit-tested below); the
//! planner glue turns them into steps.

use super::Planner;
use super::text::{join_lines, lines_of};
use crate::action::WritePolicy;
use crate::error::{PrepareError, Result};
use crate::view::show;
use imgscrub_fs::filesystem::FileType;
use std::collections::BTreeSet;

/// Default `UID_MIN` / `UID_MAX` (shadow-utils' defaults) when `/etc/login.defs` has none.
pub const DEFAULT_UID_RANGE: (u32, u32) = (1000, 60000);

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: Vec<u8>,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Home directory.
    pub home: Vec<u8>,
}

fn fields(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| b == b':').collect()
}

fn num(f: Option<&&[u8]>) -> Option<u32> {
    std::str::from_utf8(f?).ok()?.trim().parse().ok()
}

/// The user entries of a passwd file. Comments, NIS `+`/`-` lines and malformed lines
/// (fewer than 7 fields, a UID or GID that is not a number) are not users.
pub fn parse_passwd(data: &[u8]) -> Vec<PasswdEntry> {
    let (lines, _) = lines_of(data);
    lines
        .iter()
        .filter_map(|l| {
            let f = fields(l);
            let name = *f.first()?;
            if f.len() < 7 || name.is_empty() || matches!(name[0], b'#' | b'+' | b'-') {
                return None;
            }
            Some(PasswdEntry {
                name: name.to_vec(),
                uid: num(f.get(2))?,
                gid: num(f.get(3))?,
                home: f.get(5)?.to_vec(),
            })
        })
        .collect()
}

/// `UID_MIN` and `UID_MAX` of a login.defs (decimal; the defaults where missing or bad).
pub fn uid_range(login_defs: Option<&[u8]>) -> (u32, u32) {
    let (mut min, mut max) = DEFAULT_UID_RANGE;
    let (lines, _) = lines_of(login_defs.unwrap_or_default());
    for l in &lines {
        let mut words = l
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        let (Some(k), Some(v)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(v) = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) else {
            continue;
        };
        match k {
            b"UID_MIN" => min = v,
            b"UID_MAX" => max = v,
            _ => {}
        }
    }
    (min, max)
}

/// Drop the lines whose first `:` field is one of `names` (passwd, shadow, subuid, subgid).
/// Every other byte is kept.
pub fn drop_named(data: &[u8], names: &BTreeSet<Vec<u8>>) -> Vec<u8> {
    let (mut lines, trailing) = lines_of(data);
    let before = lines.len();
    lines.retain(|l| !names.contains(fields(l).first().copied().unwrap_or_default()));
    if lines.len() == before {
        return data.to_vec();
    }
    join_lines(&lines, trailing)
}

/// A comma-separated member list without `removed`; `None` if nothing changes.
fn without_members(list: &[u8], removed: &BTreeSet<Vec<u8>>) -> Option<Vec<u8>> {
    if list.is_empty() {
        return None;
    }
    let members: Vec<&[u8]> = list.split(|&b| b == b',').collect();
    let kept: Vec<&[u8]> = members
        .iter()
        .copied()
        .filter(|m| !removed.contains(m.trim_ascii()))
        .collect();
    (kept.len() != members.len()).then(|| kept.join(&b','))
}

/// `/etc/group` without the removed users: a group named after a removed user goes when no
/// one else is a member and no remaining user has it as primary group (`kept_gids`); the
/// removed users leave every other member list. Returns the new content and the names of
/// the groups that went.
pub fn edit_group(
    data: &[u8],
    removed: &BTreeSet<Vec<u8>>,
    kept_gids: &BTreeSet<u32>,
) -> (Vec<u8>, BTreeSet<Vec<u8>>) {
    let (lines, trailing) = lines_of(data);
    let mut out = Vec::with_capacity(lines.len());
    let mut dropped = BTreeSet::new();
    let mut changed = false;
    for l in lines {
        let f = fields(&l);
        let name = f.first().copied().unwrap_or_default();
        let members = f.get(3).copied().unwrap_or_default();
        let new_members = without_members(members, removed);
        let remaining = new_members.as_deref().unwrap_or(members);
        if f.len() >= 4
            && removed.contains(name)
            && remaining
                .iter()
                .all(|b| *b == b',' || b.is_ascii_whitespace())
            && num(f.get(2)).is_none_or(|gid| !kept_gids.contains(&gid))
        {
            dropped.insert(name.to_vec());
            changed = true;
            continue;
        }
        match new_members {
            Some(m) if f.len() >= 4 => {
                let mut nf: Vec<&[u8]> = f.clone();
                nf[3] = &m;
                out.push(nf.join(&b':'));
                changed = true;
            }
            _ => out.push(l.clone()),
        }
    }
    if !changed {
        return (data.to_vec(), dropped);
    }
    (join_lines(&out, trailing), dropped)
}

/// `/etc/gshadow` without the groups in `dropped`, and without the removed users in the
/// administrator (3rd) and member (4th) lists of the others.
pub fn edit_gshadow(
    data: &[u8],
    removed: &BTreeSet<Vec<u8>>,
    dropped: &BTreeSet<Vec<u8>>,
) -> Vec<u8> {
    let (lines, trailing) = lines_of(data);
    let mut out = Vec::with_capacity(lines.len());
    let mut changed = false;
    for l in lines {
        let f = fields(&l);
        if dropped.contains(f.first().copied().unwrap_or_default()) {
            changed = true;
            continue;
        }
        let admins = f.get(2).and_then(|a| without_members(a, removed));
        let members = f.get(3).and_then(|m| without_members(m, removed));
        if admins.is_none() && members.is_none() {
            out.push(l.clone());
            continue;
        }
        let mut nf: Vec<&[u8]> = f.clone();
        if let Some(a) = &admins {
            nf[2] = a;
        }
        if let Some(m) = &members {
            nf[3] = m;
        }
        out.push(nf.join(&b':'));
        changed = true;
    }
    if !changed {
        return data.to_vec();
    }
    join_lines(&out, trailing)
}

/// A user name we are willing to put in a path (`/var/mail/NAME`): not empty, not `.` or
/// `..`, no `/`, no NUL.
pub fn safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Top-level directories a home below which is never removed by ownership alone (the
/// system's own trees), and directories that are never a removable home themselves.
const SYSTEM_TOPS: &[&[u8]] = &[
    b"bin", b"boot", b"dev", b"etc", b"lib", b"lib32", b"lib64", b"libx32", b"proc", b"root",
    b"run", b"sbin", b"sys", b"usr",
];

/// Whether a canonical home path may be removed: strictly below `/home`, or (`owned`: the
/// directory belongs to the user) at least two levels deep, outside the system trees and,
/// under `/var`, three levels deep (`/var/lib/app`, never `/var/lib`). `/` and top-level
/// directories never.
pub fn home_removable(path: &[u8], owned: bool) -> bool {
    let comps: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    if !path.starts_with(b"/") || comps.iter().any(|c| *c == b"." || *c == b"..") {
        return false;
    }
    match comps.first() {
        None => false,
        Some(_) if comps.len() < 2 => false,
        Some(&b"home") => true,
        Some(top) if SYSTEM_TOPS.contains(top) => false,
        Some(&b"var") => owned && comps.len() >= 3,
        Some(_) => owned,
    }
}

/// `a` is `b` or a directory above it.
fn is_ancestor_or_same(a: &[u8], b: &[u8]) -> bool {
    b == a || (b.starts_with(a) && (a.ends_with(b"/") || b.get(a.len()) == Some(&b'/')))
}

fn names_list(names: &BTreeSet<Vec<u8>>) -> String {
    names.iter().map(|n| show(n)).collect::<Vec<_>>().join(", ")
}

impl Planner<'_, '_> {
    /// The `set_shadow` action: one field of a user's line in `/etc/shadow` and its backup.
    pub(super) fn act_set_shadow(
        &mut self,
        src: &str,
        user: &str,
        field: usize,
        value: &str,
    ) -> Result<()> {
        let value = self.render(value);
        for f in ["/etc/shadow", "/etc/shadow-"] {
            self.set_shadow(src, f, user, field, &value)?;
        }
        Ok(())
    }

    pub(super) fn set_shadow(
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

    /// The options of `user-account` were given but the operation never ran.
    pub(super) fn check_user_account_options(&self) -> Result<()> {
        let opts = self.opts;
        if self.user_accounts_ran
            || (opts.keep_user_accounts.is_empty() && opts.remove_user_accounts.is_empty())
        {
            return Ok(());
        }
        let which = if opts.keep_user_accounts.is_empty() {
            "--remove-user-accounts"
        } else {
            "--keep-user-accounts"
        };
        Err(PrepareError::UserAccount(format!(
            "{which} was given but the user-account operation is not selected \
             (add it: --operations defaults,user-account)"
        )))
    }

    /// The `user_accounts` action (the `user-account` operation).
    pub(super) fn act_user_accounts(&mut self, src: &str) -> Result<()> {
        self.user_accounts_ran = true;
        let keep = option_names("--keep-user-accounts", &self.opts.keep_user_accounts)?;
        let only = option_names("--remove-user-accounts", &self.opts.remove_user_accounts)?;
        if only.contains(&b"root"[..]) {
            return Err(PrepareError::UserAccount(
                "--remove-user-accounts: root is never removed".into(),
            ));
        }
        let Some(passwd) = self.v.read_follow(b"/etc/passwd")? else {
            if keep.is_empty() && only.is_empty() {
                self.warn(format!(
                    "{src}: the guest has no /etc/passwd; no user removed"
                ));
                return Ok(());
            }
            return Err(PrepareError::UserAccount(
                "the guest has no /etc/passwd, so the users named by the options do not exist"
                    .into(),
            ));
        };
        // The databases are rewritten together or not at all: one that is a symlink (or
        // not a file) would be left behind, so nobody is removed then.
        for f in ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"] {
            if let Some(c) = self.canon(f, false)?
                && let Some(info) = self.v.node(&c)?
                && info.file_type != FileType::Regular
            {
                if !keep.is_empty() || !only.is_empty() {
                    return Err(PrepareError::UserAccount(format!(
                        "{f} is not a regular file; refusing to edit the account files"
                    )));
                }
                self.warn(format!("{src}: {f} is not a regular file; no user removed"));
                return Ok(());
            }
        }
        let users = parse_passwd(&passwd);
        let login_defs = self.v.read_follow(b"/etc/login.defs")?;
        let (uid_min, uid_max) = uid_range(login_defs.as_deref());
        for (opt, set) in [
            ("--keep-user-accounts", &keep),
            ("--remove-user-accounts", &only),
        ] {
            let missing: BTreeSet<Vec<u8>> = set
                .iter()
                .filter(|n| !users.iter().any(|u| &&u.name == n))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(PrepareError::UserAccount(format!(
                    "{opt}: no user {} in the guest's /etc/passwd",
                    names_list(&missing)
                )));
            }
        }
        let in_range = |u: &PasswdEntry| u.uid >= uid_min && u.uid <= uid_max;
        for u in users.iter().filter(|u| only.contains(&u.name)) {
            if !in_range(u) || u.uid == 0 {
                return Err(PrepareError::UserAccount(format!(
                    "--remove-user-accounts: {} has UID {}, outside the guest's login range \
                     UID_MIN..UID_MAX = {uid_min}..{uid_max} (a system account); not removed",
                    show(&u.name),
                    u.uid
                )));
            }
        }
        let removed: Vec<&PasswdEntry> = users
            .iter()
            .filter(|u| {
                u.uid != 0
                    && u.name != b"root"
                    && in_range(u)
                    && !keep.contains(&u.name)
                    && (only.is_empty() || only.contains(&u.name))
            })
            .collect();
        let mut names: BTreeSet<Vec<u8>> = BTreeSet::new();
        for u in &removed {
            if safe_name(&u.name) {
                names.insert(u.name.clone());
            } else {
                self.warn(format!(
                    "{src}: user {:?} has a name that cannot be a file name; left alone",
                    show(&u.name)
                ));
            }
        }
        if names.is_empty() {
            return Ok(());
        }
        let removed: Vec<&PasswdEntry> = removed
            .into_iter()
            .filter(|u| names.contains(&u.name))
            .collect();
        let kept: Vec<&PasswdEntry> = users.iter().filter(|u| !names.contains(&u.name)).collect();
        let kept_gids: BTreeSet<u32> = kept.iter().map(|u| u.gid).collect();

        for f in [
            "/etc/passwd",
            "/etc/passwd-",
            "/etc/shadow",
            "/etc/shadow-",
            "/etc/subuid",
            "/etc/subuid-",
            "/etc/subgid",
            "/etc/subgid-",
        ] {
            self.rewrite_db(src, f, |d| drop_named(d, &names))?;
        }
        let mut dropped = BTreeSet::new();
        for f in ["/etc/group", "/etc/group-"] {
            self.rewrite_db(src, f, |d| {
                let (new, gone) = edit_group(d, &names, &kept_gids);
                dropped.extend(gone);
                new
            })?;
        }
        for f in ["/etc/gshadow", "/etc/gshadow-"] {
            self.rewrite_db(src, f, |d| edit_gshadow(d, &names, &dropped))?;
        }

        let kept_homes: Vec<Vec<u8>> = kept
            .iter()
            .filter_map(|u| {
                let h = String::from_utf8_lossy(&u.home).into_owned();
                self.canon(&h, false).ok().flatten()
            })
            .collect();
        for u in &removed {
            self.remove_home(src, u, &kept_homes)?;
            let name = show(&u.name);
            for spool in [
                format!("/var/mail/{name}"),
                format!("/var/spool/mail/{name}"),
                format!("/var/spool/cron/crontabs/{name}"),
                format!("/var/spool/cron/tabs/{name}"),
                format!("/var/spool/cron/{name}"),
            ] {
                let Some(c) = self.canon(&spool, false)? else {
                    continue;
                };
                let Some(info) = self.v.node(&c)? else {
                    continue;
                };
                // A mail spool may be a maildir of the user's own; a crontab is a file.
                let ok = info.file_type != FileType::Directory
                    || (spool.contains("/mail/") && info.uid == u.uid);
                if ok {
                    self.delete(src, &c, &info)?;
                }
            }
        }
        self.notes.push(format!(
            "{src}: user accounts removed: {} (login UIDs {uid_min}..{uid_max})",
            removed
                .iter()
                .map(|u| format!("{} (uid {})", show(&u.name), u.uid))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(())
    }

    /// Rewrite an account database file (if it is a regular file) with `f`.
    fn rewrite_db(
        &mut self,
        src: &str,
        file: &str,
        f: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Result<()> {
        let Some(c) = self.canon(file, false)? else {
            return Ok(());
        };
        if self.v.node(&c)?.map(|n| n.file_type) != Some(FileType::Regular) {
            return Ok(());
        }
        let Some(old) = self.v.read(&c)? else {
            return Ok(());
        };
        let new = f(&old);
        if new != old {
            self.write_file(src, &c, new, None, 0, 0, WritePolicy::IfExists, None)?;
        }
        Ok(())
    }

    /// Remove a removed user's home if that is safe, else say why it stays.
    fn remove_home(&mut self, src: &str, u: &PasswdEntry, kept_homes: &[Vec<u8>]) -> Result<()> {
        let home = String::from_utf8_lossy(&u.home).into_owned();
        if !home.starts_with('/') {
            return Ok(());
        }
        let Some(c) = self.canon(&home, false)? else {
            return Ok(());
        };
        let Some(info) = self.v.node(&c)? else {
            return Ok(());
        };
        let name = show(&u.name);
        let shared = kept_homes.iter().any(|k| is_ancestor_or_same(&c, k));
        let owned = info.uid == u.uid;
        let symlink = info.file_type == FileType::Symlink;
        let removable = home_removable(&c, owned && !symlink)
            && (!symlink || c.starts_with(b"/home/"))
            && matches!(info.file_type, FileType::Directory | FileType::Symlink);
        if shared {
            self.warn(format!(
                "{src}: home {} of removed user {name} is kept: it holds another user's home",
                show(&c)
            ));
        } else if !removable {
            self.warn(format!(
                "{src}: home {} of removed user {name} is kept: it is not below /home and not \
                 a directory of the user's own outside the system trees",
                show(&c)
            ));
        } else {
            self.delete(src, &c, &info)?;
        }
        Ok(())
    }
}

/// The names of a `--keep/--remove-user-accounts` option, checked.
fn option_names(opt: &str, list: &[String]) -> Result<BTreeSet<Vec<u8>>> {
    let mut out = BTreeSet::new();
    for n in list {
        let n = n.trim();
        if n.is_empty()
            || !safe_name(n.as_bytes())
            || n.contains([':', ',', '\n'])
            || n.chars().any(char::is_whitespace)
        {
            return Err(PrepareError::UserAccount(format!(
                "{opt}: {n:?} is not a user name"
            )));
        }
        out.insert(n.as_bytes().to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<Vec<u8>> {
        names.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # a comment\n\
        alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
        bob:x:1001:100::/srv/bob:/bin/sh\n\
        +nisuser::::::\n\
        bad:x:notanumber:1:::\n";

    #[test]
    fn passwd_parsing() {
        let u = parse_passwd(PASSWD.as_bytes());
        let names: Vec<_> = u.iter().map(|e| show(&e.name)).collect();
        assert_eq!(names, ["root", "daemon", "alice", "bob"]);
        assert_eq!(u[2].uid, 1000);
        assert_eq!(u[3].gid, 100);
        assert_eq!(u[3].home, b"/srv/bob");
    }

    #[test]
    fn login_defs() {
        assert_eq!(uid_range(None), (1000, 60000));
        let d =
            b"# UID_MIN 5\nMAIL_DIR /var/mail\nUID_MIN\t\t  500\nUID_MAX 29999\nSYS_UID_MIN 100\n";
        assert_eq!(uid_range(Some(d)), (500, 29999));
        assert_eq!(uid_range(Some(b"UID_MIN oops\n")), (1000, 60000));
    }

    #[test]
    fn drop_lines_keeps_other_bytes() {
        let out = drop_named(PASSWD.as_bytes(), &set(&["alice"]));
        let want = PASSWD.replace("alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n", "");
        assert_eq!(String::from_utf8(out).unwrap(), want);
        // No trailing newline, and nothing to drop: byte-identical.
        assert_eq!(drop_named(b"a:1\nb:2", &set(&["b"])), b"a:1");
        assert_eq!(drop_named(b"a:1 \r\n", &set(&["c"])), b"a:1 \r\n");
        // A name is a whole field, not a prefix.
        assert_eq!(drop_named(b"alice2:x\n", &set(&["alice"])), b"alice2:x\n");
    }

    #[test]
    fn groups() {
        let g = "root:x:0:\nusers:x:100:alice,carol\nalice:x:1000:\nbob:x:1001:carol\n\
                 sudo:x:27:bob,alice\nshared:x:1002:\n";
        // alice's group goes (no member left); bob's stays (carol is in it); both leave sudo.
        let (out, gone) = edit_group(g.as_bytes(), &set(&["alice", "bob"]), &BTreeSet::new());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "root:x:0:\nusers:x:100:carol\nbob:x:1001:carol\nsudo:x:27:\nshared:x:1002:\n"
        );
        assert_eq!(gone, set(&["alice"]));
        // A kept user's primary group stays even if named after a removed user.
        let (out, gone) = edit_group(g.as_bytes(), &set(&["alice"]), &BTreeSet::from([1000]));
        assert!(String::from_utf8(out).unwrap().contains("alice:x:1000:\n"));
        assert!(gone.is_empty());
        // Untouched: byte-identical.
        let (out, _) = edit_group(g.as_bytes(), &set(&["zed"]), &BTreeSet::new());
        assert_eq!(out, g.as_bytes());

        let gs = "root:*::\nusers:!::alice,carol\nalice:!::\nsudo:*:alice:bob,alice\n";
        let out = edit_gshadow(gs.as_bytes(), &set(&["alice", "bob"]), &set(&["alice"]));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "root:*::\nusers:!::carol\nsudo:*::\n"
        );
    }

    #[test]
    fn home_safety() {
        assert!(home_removable(b"/home/alice", false));
        assert!(home_removable(b"/home/x/alice", false));
        assert!(!home_removable(b"/home", true));
        assert!(!home_removable(b"/", true));
        assert!(!home_removable(b"/srv", true));
        assert!(home_removable(b"/srv/bob", true));
        assert!(!home_removable(b"/srv/bob", false));
        assert!(!home_removable(b"/var/lib", true));
        assert!(home_removable(b"/var/lib/app", true));
        assert!(!home_removable(b"/usr/local/bob", true));
        assert!(!home_removable(b"/root/sub", true));
        assert!(!home_removable(b"/etc/bob", true));
        assert!(!home_removable(b"relative/x", true));
        assert!(is_ancestor_or_same(b"/srv", b"/srv/bob"));
        assert!(!is_ancestor_or_same(b"/srv/b", b"/srv/bob"));
        assert!(safe_name(b"alice") && !safe_name(b"..") && !safe_name(b"a/b"));
    }

    #[test]
    fn option_name_checks() {
        assert!(option_names("--keep-user-accounts", &["alice".into()]).is_ok());
        for bad in ["", "a b", "a:b", "../x", ".."] {
            let e = option_names("--keep-user-accounts", &[bad.into()]).unwrap_err();
            assert!(e.to_string().contains("--keep-user-accounts"), "{e}");
        }
    }
}
