//! System customizations: `--hostname`, `--timezone`, `--root-password`/`--password`
//! (with `--password-crypto`) and `--ssh-inject`.
//!
//! The text edits are pure functions over file contents (tested below); the planner methods
//! find the guest's files, call them, and turn the results into steps. Every guest
//! precondition (a user, a zone, a home directory) is checked while planning, so a refused
//! option leaves the image untouched.
//!
//! - hostname: `/etc/hostname` (every family except RHEL < 7, and wherever it exists),
//!   `HOSTNAME=` of `/etc/sysconfig/network` (RHEL; added on RHEL < 7), SUSE's
//!   `/etc/HOSTNAME` when it is a regular file, `PRETTY_HOSTNAME=` of `/etc/machine-info`
//!   when set, and `/etc/hosts`: the old name is replaced by the new one on every line that
//!   has it; Debian, Ubuntu and Alpine also get the `127.0.1.1 FQDN SHORT` line Debian's
//!   installer writes, when no line names the host (other families resolve their own name
//!   through nss-myhostname).
//! - timezone: `/usr/share/zoneinfo/ZONE` must exist in the guest; `/etc/localtime` becomes
//!   a link to it in the form the guest already uses (relative `../usr/share/zoneinfo/ZONE`
//!   or absolute), or a copy when the guest keeps a copy (RHEL 6); `/etc/timezone` on
//!   Debian and Ubuntu (and wherever it exists); `ZONE=`/`TIMEZONE=` of
//!   `/etc/sysconfig/clock` when the file exists.
//! - passwords: field 2 (hash) and field 3 (last change, in days since 1970 from the run's
//!   timestamp) of the user's `/etc/shadow` line, and of `/etc/shadow-` when it has the
//!   user. The method is `--password-crypto`, else yescrypt when the guest's PAM or
//!   `login.defs` uses it, else sha512-crypt.
//! - ssh-inject: `~/.ssh` (0700) and `~/.ssh/authorized_keys` (0600) owned by the user's
//!   uid/gid from the guest's `/etc/passwd`; keys already present are not added again.
//!   On SELinux guests a new `.ssh` gets the type `ssh_home_t` (see the executor).

use super::text::{contains, join_lines, lines_of};
use super::{Planner, now_secs};
use crate::action::{LinkPolicy, WritePolicy};
use crate::crypt::{self, SaltSource};
use crate::customize::{CustomizeItem, CustomizeOp, PasswordCrypto, PasswordSelector};
use crate::error::Result;
use crate::inspect::{Family, InitSystem, parse_kv};
use crate::view::{join, show};
use imgscrub_fs::filesystem::FileType;

/// Planner variable holding the run's `--password-crypto` (global, as in virt-customize).
const CRYPTO_VAR: &str = "__password_crypto";

use super::customize::cerr as serr;

// ---------------------------------------------------------------------------------------
// Pure text edits.

/// `/etc/hosts` naming the host `new` (possibly an FQDN) instead of the names in `old`.
///
/// On every non-comment line, the first name that is an old name (or the new one) is
/// replaced by `FQDN SHORT` (or just `NAME`) and later copies are dropped; other lines and
/// the rest of each line stay as they are. `localhost*` names are never touched. With
/// `loopback_line`, when no line names the host afterwards, the `127.0.1.1` line gets the
/// names (it is created after the last `127.0.0.1` line if missing).
pub fn hosts_with_name(old_file: &[u8], old: &[String], new: &str, loopback_line: bool) -> Vec<u8> {
    let short = new.split('.').next().unwrap_or(new);
    let new_names: Vec<&str> = if short != new {
        vec![new, short]
    } else {
        vec![new]
    };
    let mut replace: Vec<&str> = new_names.clone();
    let mut old_short: Vec<&str> = Vec::new();
    for o in old {
        let o = o.trim();
        if o.is_empty() || o.starts_with("localhost") {
            continue;
        }
        replace.push(o);
        if let Some(s) = o.split('.').next()
            && !s.is_empty()
            && !s.starts_with("localhost")
        {
            replace.push(s);
            old_short.push(s);
        }
    }
    // A name of the host: a new or old name, or an FQDN of an old short name.
    let is_host = |n: &[u8]| {
        replace.iter().any(|r| r.as_bytes() == n)
            || old_short.iter().any(|s| {
                n.strip_prefix(s.as_bytes())
                    .is_some_and(|rest| rest.first() == Some(&b'.'))
            })
    };
    let (mut lines, trailing) = lines_of(old_file);
    let mut named = false;
    let mut loopback_at = None;
    let mut last_v4_loopback = None;
    for (i, l) in lines.iter_mut().enumerate() {
        let (body, comment) = match l.iter().position(|&b| b == b'#') {
            Some(p) => (
                l.get(..p).unwrap_or_default().to_vec(),
                l.get(p..).map(<[u8]>::to_vec),
            ),
            None => (l.clone(), None),
        };
        let fields: Vec<&[u8]> = body
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let Some((addr, names)) = fields.split_first() else {
            continue;
        };
        if *addr == b"127.0.1.1" && loopback_at.is_none() {
            loopback_at = Some(i);
        }
        if *addr == b"127.0.0.1" {
            last_v4_loopback = Some(i);
        }
        if !names
            .iter()
            .any(|n| replace.iter().any(|r| r.as_bytes() == *n))
        {
            continue;
        }
        let mut out: Vec<&[u8]> = Vec::new();
        let mut put = false;
        for n in names {
            if is_host(n) {
                if !put {
                    out.extend(new_names.iter().map(|s| s.as_bytes()));
                    put = true;
                }
            } else {
                out.push(n);
            }
        }
        named = true;
        if out.as_slice() == names {
            continue;
        }
        let mut n = addr.to_vec();
        n.push(b'\t');
        n.extend_from_slice(&out.join(&b' '));
        if let Some(c) = comment {
            n.push(b' ');
            n.extend_from_slice(&c);
        }
        *l = n;
    }
    if loopback_line && !named {
        let line = format!("127.0.1.1\t{}", new_names.join(" ")).into_bytes();
        match (loopback_at, last_v4_loopback) {
            (Some(i), _) => {
                if let Some(l) = lines.get_mut(i) {
                    // Keep a comment at the end of the line.
                    let mut n = line;
                    if let Some(p) = l.iter().position(|&b| b == b'#') {
                        n.push(b' ');
                        n.extend_from_slice(l.get(p..).unwrap_or_default());
                    }
                    *l = n;
                }
            }
            (None, Some(i)) => lines.insert(i + 1, line),
            (None, None) => lines.push(line),
        }
    }
    join_lines(&lines, trailing || lines.is_empty())
}

/// Shell-style `KEY=value` files (`/etc/sysconfig/*`, `/etc/machine-info`): set `key` on
/// every non-comment line that assigns it, keeping the old value's quoting (double quotes
/// when the value needs them); with `append`, add `KEY="value"` when no line assigns it.
/// `None` when nothing changes.
pub fn set_shell_var(old: &[u8], key: &str, value: &str, append: bool) -> Option<Vec<u8>> {
    let (mut lines, _) = lines_of(old);
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| !(c.is_ascii_alphanumeric() || "._-+/:@,".contains(c)));
    let mut found = false;
    for l in &mut lines {
        let t = l.trim_ascii_start();
        let indent = l.len() - t.len();
        let Some(rest) = t.strip_prefix(key.as_bytes()) else {
            continue;
        };
        let Some(v) = rest.strip_prefix(b"=") else {
            continue;
        };
        found = true;
        let quote = match v.first() {
            Some(b'\'') if !value.contains('\'') => "'",
            Some(b'"' | b'\'') => "\"",
            _ if needs_quotes => "\"",
            _ => "",
        };
        let mut n = l.get(..indent).unwrap_or_default().to_vec();
        n.extend_from_slice(format!("{key}={quote}{value}{quote}").as_bytes());
        *l = n;
    }
    if !found {
        if !append {
            return None;
        }
        lines.push(format!("{key}=\"{value}\"").into_bytes());
    }
    let new = join_lines(&lines, true);
    (new != old).then_some(new)
}

/// `(uid, gid, home)` of `user` in a passwd file.
pub fn passwd_entry(passwd: &[u8], user: &str) -> Option<(u32, u32, String)> {
    for l in passwd.split(|&b| b == b'\n') {
        let f: Vec<&[u8]> = l.split(|&b| b == b':').collect();
        if f.first() != Some(&user.as_bytes()) || f.len() < 6 {
            continue;
        }
        let num =
            |i: usize| -> Option<u32> { std::str::from_utf8(f.get(i)?).ok()?.trim().parse().ok() };
        let home = String::from_utf8(f.get(5)?.to_vec()).ok()?;
        return Some((num(2)?, num(3)?, home));
    }
    None
}

/// Whether a shadow/passwd-style file has a line for `user`.
pub fn has_user(data: &[u8], user: &str) -> bool {
    let mut prefix = user.as_bytes().to_vec();
    prefix.push(b':');
    data.split(|&b| b == b'\n').any(|l| l.starts_with(&prefix))
}

/// Whether the guest's PAM stack or `login.defs` hashes new passwords with yescrypt.
pub fn uses_yescrypt(pam_files: &[&[u8]], login_defs: Option<&[u8]>) -> bool {
    let pam = pam_files.iter().any(|d| {
        d.split(|&b| b == b'\n').any(|l| {
            let l = l.trim_ascii_start();
            !l.starts_with(b"#")
                && contains(l, b"pam_unix")
                && l.split(|b| b.is_ascii_whitespace())
                    .any(|w| w == b"yescrypt")
        })
    });
    let defs = login_defs.is_some_and(|d| {
        d.split(|&b| b == b'\n').any(|l| {
            let mut w = l
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty());
            w.next() == Some(b"ENCRYPT_METHOD")
                && w.next()
                    .is_some_and(|m| m.eq_ignore_ascii_case(b"yescrypt"))
        })
    });
    pam || defs
}

/// `authorized_keys` with the lines of `keys` that it lacks appended; `None` when every
/// key is already there.
pub fn append_keys(old: &[u8], keys: &str) -> Option<Vec<u8>> {
    let have: Vec<&[u8]> = old
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).trim_ascii())
        .collect();
    let mut out = old.to_vec();
    let mut added = false;
    for k in keys.lines() {
        let k = k.trim();
        if k.is_empty() || have.contains(&k.as_bytes()) {
            continue;
        }
        if out.last().is_some_and(|&b| b != b'\n') {
            out.push(b'\n');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'\n');
        added = true;
    }
    added.then_some(out)
}

// ---------------------------------------------------------------------------------------
// The planner side.

impl Planner<'_, '_> {
    /// Before the customization items run: remember the run's `--password-crypto` (the last
    /// one given), which applies to every password option, before or after it.
    pub(super) fn system_setup(&mut self, items: &[CustomizeItem]) {
        if let Some(c) = items.iter().rev().find_map(|it| match &it.op {
            CustomizeOp::PasswordCrypto { crypto } => Some(*crypto),
            _ => None,
        }) {
            self.vars
                .insert(CRYPTO_VAR.into(), crypt::method_name(c).into());
        }
    }

    /// A regular file's current content (a final symlink followed inside the guest), with
    /// its canonical path; `None` when absent or not a regular file.
    fn sys_read(&self, path: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(c) = self.canon(path, true)? else {
            return Ok(None);
        };
        match self.v.node(&c)? {
            Some(n) if n.file_type == FileType::Regular => Ok(self.v.read(&c)?.map(|d| (c, d))),
            _ => Ok(None),
        }
    }

    /// Write `content` to `path` (a final link followed), keeping an existing file's mode
    /// and owner; new files are 0644 root.
    fn sys_write(&mut self, src: &str, path: &str, content: Vec<u8>) -> Result<()> {
        // A dangling link (`/etc/hosts -> /run/…`) is not followed into a new file.
        if let Some(l) = self.canon(path, false)?
            && self.v.node(&l)?.map(|n| n.file_type) == Some(FileType::Symlink)
            && self.v.node_follow(path.as_bytes())?.is_none()
        {
            self.warn(format!(
                "{src}: {path} is a link to a missing file; left alone"
            ));
            return Ok(());
        }
        if let Some(c) = self.canon(path, true)? {
            self.write_file(src, &c, content, None, 0, 0, WritePolicy::Always, None)?;
        }
        Ok(())
    }

    /// The guest's current host name: `/etc/hostname`, else `HOSTNAME=` of
    /// `/etc/sysconfig/network`, else `/etc/HOSTNAME`.
    fn current_hostnames(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if let Some(h) = self.vars.get("hostname") {
            out.push(h.clone());
        }
        for f in ["/etc/hostname", "/etc/HOSTNAME"] {
            if let Some((_, d)) = self.sys_read(f)? {
                let h = String::from_utf8_lossy(&d);
                if let Some(first) = h
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    out.push(first.to_string());
                }
            }
        }
        if let Some((_, d)) = self.sys_read("/etc/sysconfig/network")? {
            for (k, v) in parse_kv(&d) {
                if k == "HOSTNAME" && !v.is_empty() {
                    out.push(v);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `--hostname NAME`.
    pub(super) fn sys_hostname(&mut self, it: &CustomizeItem, name: &str) -> Result<()> {
        let source = it.source();
        let src = source.as_str();
        let old = self.current_hostnames()?;
        let rhel_old = self.os.family == crate::inspect::Family::Redhat
            && self.os.init != InitSystem::Systemd
            && self.os.version_numbers().first().is_some_and(|&v| v < 7);
        // /etc/hostname.
        let hostname_exists = self.sys_read("/etc/hostname")?.is_some();
        if hostname_exists || !rhel_old {
            match self.v.node_follow(b"/etc/hostname")? {
                Some(n) if n.file_type != FileType::Regular => {
                    return Err(serr(it, "/etc/hostname is not a regular file".into()));
                }
                _ => self.sys_write(src, "/etc/hostname", format!("{name}\n").into_bytes())?,
            }
        }
        // RHEL's /etc/sysconfig/network.
        match self.sys_read("/etc/sysconfig/network")? {
            Some((c, d)) => {
                if let Some(new) = set_shell_var(&d, "HOSTNAME", name, rhel_old) {
                    self.write_file(src, &c, new, None, 0, 0, WritePolicy::IfExists, None)?;
                }
            }
            None if rhel_old => {
                self.sys_write(
                    src,
                    "/etc/sysconfig/network",
                    format!("NETWORKING=yes\nHOSTNAME={name}\n").into_bytes(),
                )?;
            }
            None => {}
        }
        // SUSE's /etc/HOSTNAME (today often a link to /etc/hostname: left alone then).
        if let Some(c) = self.canon("/etc/HOSTNAME", false)?
            && self
                .v
                .node(&c)?
                .is_some_and(|n| n.file_type == FileType::Regular)
        {
            self.write_file(
                src,
                &c,
                format!("{name}\n").into_bytes(),
                None,
                0,
                0,
                WritePolicy::IfExists,
                None,
            )?;
        }
        // systemd's pretty host name, when one is set.
        if let Some((c, d)) = self.sys_read("/etc/machine-info")?
            && let Some(new) = set_shell_var(&d, "PRETTY_HOSTNAME", name, false)
        {
            self.write_file(src, &c, new, None, 0, 0, WritePolicy::IfExists, None)?;
        }
        // /etc/hosts.
        let loopback = matches!(
            self.os.family,
            Family::Debian | Family::Ubuntu | Family::Alpine
        );
        match self.sys_read("/etc/hosts")? {
            Some((c, d)) => {
                let new = hosts_with_name(&d, &old, name, loopback);
                if new != d {
                    self.write_file(src, &c, new, None, 0, 0, WritePolicy::IfExists, None)?;
                }
            }
            None if loopback => {
                let new = hosts_with_name(b"127.0.0.1\tlocalhost\n", &old, name, true);
                self.sys_write(src, "/etc/hosts", new)?;
            }
            None => {}
        }
        self.vars.insert("hostname".into(), name.to_string());
        Ok(())
    }

    /// `--timezone ZONE`.
    pub(super) fn sys_timezone(&mut self, it: &CustomizeItem, zone: &str) -> Result<()> {
        let source = it.source();
        let src = source.as_str();
        let zpath = format!("/usr/share/zoneinfo/{zone}");
        let zinfo = self.v.node_follow(zpath.as_bytes())?;
        if zinfo.is_none_or(|n| n.file_type != FileType::Regular) {
            return Err(serr(
                it,
                format!(
                    "time zone {zone:?}: {zpath} does not exist in the guest \
                     (unknown zone, or the guest has no time zone data: install tzdata first)"
                ),
            ));
        }
        let Some(lt) = self.canon("/etc/localtime", false)? else {
            return Err(serr(it, "/etc is not a directory".into()));
        };
        match self.v.node(&lt)? {
            Some(n) if n.file_type == FileType::Directory => {
                return Err(serr(it, "/etc/localtime is a directory".into()));
            }
            Some(n) if n.file_type == FileType::Regular => {
                // A copy (RHEL 6, some Alpine installs): keep it a copy.
                let data = self
                    .v
                    .read_follow(zpath.as_bytes())?
                    .ok_or_else(|| serr(it, format!("{zpath}: cannot be read")))?;
                self.write_file(src, &lt, data, None, 0, 0, WritePolicy::IfExists, None)?;
            }
            Some(_) => {
                let old = self.v.readlink(&lt)?.unwrap_or_default();
                let target = if old.starts_with(b"/") {
                    zpath.clone()
                } else {
                    format!("../usr/share/zoneinfo/{zone}")
                };
                self.symlink(src, &lt, target.as_bytes(), LinkPolicy::Replace, None)?;
            }
            None => {
                let target = format!("../usr/share/zoneinfo/{zone}");
                self.symlink(src, &lt, target.as_bytes(), LinkPolicy::IfAbsent, None)?;
            }
        }
        // Debian's /etc/timezone.
        let debian = matches!(self.os.family, Family::Debian | Family::Ubuntu);
        if debian || self.sys_read("/etc/timezone")?.is_some() {
            self.sys_write(src, "/etc/timezone", format!("{zone}\n").into_bytes())?;
        }
        // RHEL's and SUSE's /etc/sysconfig/clock.
        if let Some((c, d)) = self.sys_read("/etc/sysconfig/clock")? {
            let mut new = d.clone();
            let has = |k: &str| parse_kv(&d).iter().any(|(key, _)| key == k);
            let suse = has("TIMEZONE") && !has("ZONE");
            let key = if suse { "TIMEZONE" } else { "ZONE" };
            if let Some(n) = set_shell_var(&new, key, zone, self.os.family == Family::Redhat) {
                new = n;
            }
            if new != d {
                self.write_file(src, &c, new, None, 0, 0, WritePolicy::IfExists, None)?;
            }
        }
        Ok(())
    }

    /// The hashing method for passwords: `--password-crypto`, else the guest's own.
    fn password_method(&self) -> Result<(PasswordCrypto, &'static str)> {
        match self.vars.get(CRYPTO_VAR).map(String::as_str) {
            Some("md5") => return Ok((PasswordCrypto::Md5, "--password-crypto")),
            Some("sha256") => return Ok((PasswordCrypto::Sha256, "--password-crypto")),
            Some("sha512") => return Ok((PasswordCrypto::Sha512, "--password-crypto")),
            Some("yescrypt") => return Ok((PasswordCrypto::Yescrypt, "--password-crypto")),
            _ => {}
        }
        let mut pam = Vec::new();
        for f in [
            "/etc/pam.d/common-password",
            "/etc/pam.d/system-auth",
            "/etc/pam.d/password-auth",
        ] {
            if let Some(d) = self.v.read_follow(f.as_bytes())? {
                pam.push(d);
            }
        }
        let defs = self.v.read_follow(b"/etc/login.defs")?;
        let refs: Vec<&[u8]> = pam.iter().map(Vec::as_slice).collect();
        if uses_yescrypt(&refs, defs.as_deref()) {
            Ok((PasswordCrypto::Yescrypt, "the guest's PAM/login.defs"))
        } else {
            Ok((PasswordCrypto::Sha512, "the default"))
        }
    }

    /// `--root-password SELECTOR` / `--password USER:SELECTOR`.
    pub(super) fn sys_password(
        &mut self,
        it: &CustomizeItem,
        user: &str,
        selector: &PasswordSelector,
    ) -> Result<()> {
        let source = it.source();
        let src = source.as_str();
        let passwd = self.v.read_follow(b"/etc/passwd")?.unwrap_or_default();
        if !has_user(&passwd, user) {
            return Err(serr(
                it,
                format!("no user {user:?} in the guest's /etc/passwd"),
            ));
        }
        let Some((_, shadow)) = self.sys_read("/etc/shadow")? else {
            return Err(serr(it, "the guest has no /etc/shadow".into()));
        };
        if !has_user(&shadow, user) {
            return Err(serr(
                it,
                format!("no user {user:?} in the guest's /etc/shadow"),
            ));
        }
        let secs = self.opts.fixed_time.map_or_else(now_secs, |t| t.secs);
        let mut salt = match self.opts.fixed_time {
            Some(t) => SaltSource::seeded(t.secs, user),
            None => SaltSource::Os,
        };
        let field = self.password_field(it, user, selector, &mut salt)?;
        let days = secs.div_euclid(86_400).max(0).to_string();
        for f in ["/etc/shadow", "/etc/shadow-"] {
            if f == "/etc/shadow-" && !self.sys_read(f)?.is_some_and(|(_, d)| has_user(&d, user)) {
                continue;
            }
            self.set_shadow(src, f, user, 2, &field)?;
            self.set_shadow(src, f, user, 3, &days)?;
        }
        Ok(())
    }

    /// The shadow field 2 a selector asks for.
    fn password_field(
        &mut self,
        it: &CustomizeItem,
        user: &str,
        selector: &PasswordSelector,
        salt: &mut SaltSource,
    ) -> Result<String> {
        let hash = |p: &mut Self, pw: &str, salt: &mut SaltSource| -> Result<String> {
            let (m, why) = p.password_method()?;
            crypt::hash_password(m, pw, salt)
                .map_err(|e| serr(it, format!("{e} (method chosen by {why})")))
        };
        Ok(match selector {
            PasswordSelector::Password(pw) | PasswordSelector::File { password: pw, .. } => {
                hash(self, pw, salt)?
            }
            PasswordSelector::Random => {
                let pw = crypt::random_password().map_err(|e| serr(it, e.to_string()))?;
                // Never from the seeded source: a random password is not reproducible.
                let h = hash(self, &pw, &mut SaltSource::Os)?;
                let dry = if self.opts.dry_run {
                    " (dry run: not set)"
                } else {
                    ""
                };
                self.notes.push(format!(
                    "{}: random password for {user}: {pw}{dry} (shown only here; a random \
                     password is not reproducible, even with SOURCE_DATE_EPOCH)",
                    it.source()
                ));
                if self.opts.fixed_time.is_some() {
                    self.warn(format!(
                        "{}: a random password makes this run's output differ from run to run",
                        it.source()
                    ));
                }
                h
            }
            PasswordSelector::Disabled => "*".into(),
            PasswordSelector::Locked(inner) => {
                format!("!{}", self.password_field(it, user, inner, salt)?)
            }
        })
    }

    /// `--ssh-inject USER[:…]`: `key` holds one key per line.
    pub(super) fn sys_ssh_inject(
        &mut self,
        it: &CustomizeItem,
        user: &str,
        key: &str,
    ) -> Result<()> {
        let source = it.source();
        let src = source.as_str();
        let passwd = self.v.read_follow(b"/etc/passwd")?.unwrap_or_default();
        let Some((uid, gid, home)) = passwd_entry(&passwd, user) else {
            return Err(serr(
                it,
                format!("no user {user:?} in the guest's /etc/passwd"),
            ));
        };
        if !home.starts_with('/') {
            return Err(serr(
                it,
                format!("{user}'s home directory {home:?} is not an absolute path"),
            ));
        }
        let home_c = self.canon(&home, true)?;
        let Some(home_c) = home_c.filter(|h| {
            self.v
                .node(h)
                .ok()
                .flatten()
                .is_some_and(|n| n.file_type == FileType::Directory)
        }) else {
            return Err(serr(
                it,
                format!("{user}'s home directory {home} does not exist in the guest"),
            ));
        };
        let ssh = join(&home_c, b".ssh");
        match self.v.node(&ssh)? {
            None => {
                self.mkdir_p(src, &ssh, 0o700, uid, gid, false)?;
            }
            Some(n) if n.file_type == FileType::Directory => {}
            Some(_) => {
                return Err(serr(it, format!("{} is not a directory", show(&ssh))));
            }
        }
        let ak = join(&ssh, b"authorized_keys");
        match self.v.node(&ak)? {
            None => {
                let content = append_keys(b"", key).unwrap_or_default();
                self.write_file(
                    src,
                    &ak,
                    content,
                    Some(0o600),
                    uid,
                    gid,
                    WritePolicy::IfAbsent,
                    None,
                )?;
            }
            Some(n) if n.file_type == FileType::Regular => {
                let old = self.v.read(&ak)?.unwrap_or_default();
                if let Some(new) = append_keys(&old, key) {
                    self.write_file(src, &ak, new, None, 0, 0, WritePolicy::IfExists, None)?;
                }
            }
            Some(_) => {
                return Err(serr(it, format!("{} is not a regular file", show(&ak))));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn hosts_debian_line_replaced() {
        let old = b"127.0.0.1\tlocalhost\n127.0.1.1\tdebian.example.org\tdebian\n\n# The following lines\n::1     localhost ip6-localhost ip6-loopback\n";
        let new = hosts_with_name(old, &["debian".into()], "web-01.example.com", true);
        assert_eq!(
            s(new),
            "127.0.0.1\tlocalhost\n127.0.1.1\tweb-01.example.com web-01\n\n# The following lines\n::1     localhost ip6-localhost ip6-loopback\n"
        );
    }

    #[test]
    fn hosts_line_added_after_loopback_and_idempotent() {
        let old = b"127.0.0.1 localhost\n::1 localhost\n";
        let new = hosts_with_name(old, &[], "web", true);
        assert_eq!(
            s(new.clone()),
            "127.0.0.1 localhost\n127.0.1.1\tweb\n::1 localhost\n"
        );
        assert_eq!(hosts_with_name(&new, &["web".into()], "web", true), new);
        // Without the loopback rule (RHEL), nothing is added.
        assert_eq!(hosts_with_name(old, &[], "web", false), old.to_vec());
    }

    #[test]
    fn hosts_old_name_everywhere_comments_kept() {
        let old = b"127.0.0.1 localhost old # me\n10.0.0.5 old.lan old other\n#127.0.0.1 old\n";
        let new = hosts_with_name(old, &["old.lan".into()], "new", false);
        assert_eq!(
            s(new),
            "127.0.0.1\tlocalhost new # me\n10.0.0.5\tnew other\n#127.0.0.1 old\n"
        );
    }

    #[test]
    fn shell_vars() {
        let net = b"NETWORKING=yes\nHOSTNAME=old.example\n";
        assert_eq!(
            s(set_shell_var(net, "HOSTNAME", "new", false).unwrap()),
            "NETWORKING=yes\nHOSTNAME=new\n"
        );
        assert_eq!(
            set_shell_var(b"NETWORKING=yes\n", "HOSTNAME", "x", false),
            None
        );
        assert_eq!(
            s(set_shell_var(b"NETWORKING=yes", "HOSTNAME", "x", true).unwrap()),
            "NETWORKING=yes\nHOSTNAME=\"x\"\n"
        );
        assert_eq!(
            s(set_shell_var(b"ZONE=\"UTC\"\nUTC=true\n", "ZONE", "Europe/Paris", false).unwrap()),
            "ZONE=\"Europe/Paris\"\nUTC=true\n"
        );
        assert_eq!(
            s(set_shell_var(
                b"PRETTY_HOSTNAME='Old box'\n",
                "PRETTY_HOSTNAME",
                "web 1",
                false
            )
            .unwrap()),
            "PRETTY_HOSTNAME='web 1'\n"
        );
        assert_eq!(set_shell_var(b"ZONE=UTC\n", "ZONE", "UTC", true), None);
        // A commented-out assignment is not one.
        assert_eq!(set_shell_var(b"#ZONE=UTC\n", "ZONE", "X", false), None);
    }

    #[test]
    fn passwd_and_shadow() {
        let p = b"root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1001:A:/home/alice:/bin/sh\n";
        assert_eq!(
            passwd_entry(p, "alice"),
            Some((1000, 1001, "/home/alice".into()))
        );
        assert_eq!(passwd_entry(p, "ali"), None);
        assert!(has_user(p, "root"));
        assert!(!has_user(p, "roo"));
    }

    #[test]
    fn yescrypt_detection() {
        let deb = b"password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\n";
        let old = b"password\t[success=1 default=ignore]\tpam_unix.so obscure sha512\n";
        let commented = b"# password pam_unix.so yescrypt\n";
        assert!(uses_yescrypt(&[deb], None));
        assert!(!uses_yescrypt(&[old], None));
        assert!(!uses_yescrypt(&[commented], None));
        assert!(uses_yescrypt(&[old], Some(b"ENCRYPT_METHOD YESCRYPT\n")));
        assert!(!uses_yescrypt(&[], Some(b"ENCRYPT_METHOD SHA512\n")));
    }

    #[test]
    fn keys_appended_once() {
        let k = "ssh-ed25519 AAAA key1";
        let a = append_keys(b"", k).unwrap();
        assert_eq!(s(a.clone()), "ssh-ed25519 AAAA key1\n");
        assert_eq!(append_keys(&a, k), None);
        let b = append_keys(b"ssh-rsa BBB old", k).unwrap();
        assert_eq!(s(b), "ssh-rsa BBB old\nssh-ed25519 AAAA key1\n");
    }

    #[test]
    fn ssh_home_label() {
        use crate::exec::with_selinux_type;
        assert_eq!(
            with_selinux_type(b"unconfined_u:object_r:admin_home_t:s0\0", "ssh_home_t"),
            b"unconfined_u:object_r:ssh_home_t:s0\0".to_vec()
        );
        assert_eq!(
            with_selinux_type(
                b"system_u:object_r:user_home_dir_t:s0:c0.c1023",
                "ssh_home_t"
            ),
            b"system_u:object_r:ssh_home_t:s0:c0.c1023".to_vec()
        );
        assert_eq!(with_selinux_type(b"junk", "ssh_home_t"), b"junk".to_vec());
    }
}
