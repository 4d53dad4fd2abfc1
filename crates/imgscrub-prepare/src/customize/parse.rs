//! The option parser shared by command-line flags and `--commands-from-file`.

use super::host::{read_host_file, read_host_tree};
use super::{
    CustomizeError, CustomizeItem, CustomizeOp, FirstbootScript, Origin, PasswordCrypto,
    PasswordSelector, SedExpr, SshKeySource,
};
use std::path::{Path, PathBuf};

/// One customization option: name (without `--`), value name, one-line help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionInfo {
    /// Option name without `--`.
    pub name: &'static str,
    /// Value name for help (`FILE:CONTENT`); empty for flags without a value.
    pub value: &'static str,
    /// One-line help.
    pub help: &'static str,
}

const fn o(name: &'static str, value: &'static str, help: &'static str) -> OptionInfo {
    OptionInfo { name, value, help }
}

/// Every customization option imgscrub accepts, in virt-customize's spelling.
pub const CUSTOMIZE_OPTIONS: &[OptionInfo] = &[
    o(
        "append-line",
        "FILE:LINE",
        "Append a line, keeping the file's line endings",
    ),
    o(
        "chmod",
        "PERMISSIONS:FILE",
        "Change permission bits (octal, e.g. 0755)",
    ),
    o(
        "chown",
        "UID:GID:PATH",
        "Change owner and group (numeric; UID.GID:PATH too)",
    ),
    o(
        "commands-from-file",
        "FILENAME",
        "Read customization commands from a file",
    ),
    o(
        "copy",
        "SOURCE:DEST",
        "Copy a guest file or directory inside the guest",
    ),
    o(
        "copy-in",
        "LOCALPATH:REMOTEDIR",
        "Copy a host file or tree into a guest directory",
    ),
    o(
        "delete",
        "PATH",
        "Delete files or directories (shell globs allowed)",
    ),
    o(
        "edit",
        "FILE:s/REGEX/REPL/FLAGS",
        "Substitute on every line (perl s/// forms)",
    ),
    o(
        "firstboot",
        "SCRIPT",
        "Run a host script at the guest's first boot",
    ),
    o(
        "firstboot-command",
        "'CMD ARGS'",
        "Run a command at the guest's first boot",
    ),
    o(
        "firstboot-install",
        "PKG,PKG..",
        "Install packages at first boot (guest's manager)",
    ),
    o("hostname", "HOSTNAME", "Set the host name"),
    o(
        "link",
        "TARGET:LINK[:LINK..]",
        "Create symbolic links to TARGET",
    ),
    o("mkdir", "DIR", "Create a directory and its parents"),
    o("move", "SOURCE:DEST", "Move a guest file or directory"),
    o(
        "no-logfile",
        "",
        "Accepted for compatibility (imgscrub keeps no build log)",
    ),
    o(
        "password",
        "USER:SELECTOR",
        "Set a user's password (password:, file:, random, locked, disabled)",
    ),
    o(
        "password-crypto",
        "md5|sha256|sha512|yescrypt",
        "Password hash method",
    ),
    o("root-password", "SELECTOR", "Set root's password"),
    o(
        "scrub",
        "FILE",
        "Delete a regular file (its blocks are zeroed with the free space)",
    ),
    o(
        "ssh-inject",
        "USER[:SELECTOR]",
        "Add an ssh key to USER's authorized_keys",
    ),
    o(
        "timezone",
        "TIMEZONE",
        "Set the time zone (e.g. Europe/London)",
    ),
    o("touch", "FILE", "Create an empty file if it is missing"),
    o(
        "truncate",
        "FILE",
        "Truncate an existing file to zero bytes",
    ),
    o(
        "truncate-recursive",
        "PATH",
        "Truncate every file below PATH",
    ),
    o("upload", "FILE:DEST", "Copy a host file into the guest"),
    o("write", "FILE:CONTENT", "Write a file"),
];

/// virt-customize options that need to run code inside the guest (or talk to the
/// network) and so cannot be done on an image offline: `(name, takes a value, why)`.
pub const OFFLINE_IMPOSSIBLE: &[(&str, bool, &str)] = &[
    (
        "run",
        true,
        "runs a script inside the guest, which needs the guest's own kernel; use --firstboot SCRIPT to run it at first boot",
    ),
    (
        "run-command",
        true,
        "runs a command inside the guest, which needs the guest's own kernel; use --firstboot-command to run it at first boot",
    ),
    (
        "install",
        true,
        "runs the guest's package manager; use --firstboot-install PKG,... to install at first boot",
    ),
    (
        "uninstall",
        true,
        "runs the guest's package manager; use --firstboot-command 'apt-get -y remove PKG' (or dnf/apk) at first boot",
    ),
    (
        "update",
        false,
        "runs the guest's package manager; use --firstboot-command 'apt-get -y upgrade' (or dnf/apk) at first boot",
    ),
    (
        "sm-credentials",
        true,
        "subscription-manager runs inside the guest and needs the network; use --firstboot-command",
    ),
    (
        "sm-register",
        false,
        "subscription-manager runs inside the guest and needs the network; use --firstboot-command",
    ),
    (
        "sm-attach",
        true,
        "subscription-manager runs inside the guest and needs the network; use --firstboot-command",
    ),
    (
        "sm-remove",
        false,
        "subscription-manager runs inside the guest and needs the network; use --firstboot-command",
    ),
    (
        "sm-unregister",
        false,
        "subscription-manager runs inside the guest and needs the network; use --firstboot-command",
    ),
    (
        "inject-virtio-win",
        true,
        "is for Windows guests (registry edits, driver store); imgscrub prepares Linux guests",
    ),
    (
        "inject-qemu-ga",
        true,
        "is for Windows guests; on Linux use --firstboot-install qemu-guest-agent",
    ),
    (
        "inject-blnsvr",
        true,
        "is for Windows guests; imgscrub prepares Linux guests",
    ),
    (
        "selinux-relabel",
        false,
        "relabels the whole tree by running setfiles inside the guest; imgscrub labels every file it creates like its directory's default, and --touch /.autorelabel asks the guest to relabel at next boot",
    ),
];

/// How host paths and defaults are found while parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseContext {
    /// Relative host paths are relative to this directory (the current directory, also
    /// inside a commands file, as virt-customize does).
    pub base_dir: PathBuf,
    /// The invoking user's home (for `--ssh-inject USER` without a selector).
    pub home: Option<PathBuf>,
}

impl ParseContext {
    /// The current directory and `$HOME`.
    pub fn from_env() -> Self {
        ParseContext {
            base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    fn host_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

struct Ctx<'a> {
    option: &'a str,
    arg: &'a str,
    pc: &'a ParseContext,
}

impl Ctx<'_> {
    fn err(&self, message: impl Into<String>) -> CustomizeError {
        CustomizeError::Syntax {
            option: self.option.to_string(),
            arg: self.arg.to_string(),
            message: message.into(),
        }
    }

    fn io(&self, path: &Path, source: std::io::Error) -> CustomizeError {
        CustomizeError::HostIo {
            option: self.option.to_string(),
            arg: self.arg.to_string(),
            path: path.display().to_string(),
            source,
        }
    }

    fn pair(&self, what: &str) -> Result<(&str, &str), CustomizeError> {
        self.arg
            .split_once(':')
            .ok_or_else(|| self.err(format!("expected {what}")))
    }

    fn guest(&self, p: &str) -> Result<String, CustomizeError> {
        if p.is_empty() {
            return Err(self.err("empty guest path"));
        }
        if !p.starts_with('/') {
            return Err(self.err(format!("guest path {p:?} must be absolute")));
        }
        if p.contains('\0') {
            return Err(self.err("guest path contains a NUL byte"));
        }
        Ok(p.to_string())
    }
}

/// Parse one option (`name` without `--`) and its argument into operations.
///
/// `--commands-from-file` expands to the file's operations (it cannot be nested inside a
/// commands file); `--no-logfile` yields nothing. The error names the option and the bad
/// argument.
pub fn parse_option(
    name: &str,
    arg: Option<&str>,
    pc: &ParseContext,
    origin: Origin,
) -> Result<Vec<CustomizeItem>, CustomizeError> {
    let name = name.strip_prefix("--").unwrap_or(name);
    if let Some((_, _, why)) = OFFLINE_IMPOSSIBLE.iter().find(|(n, _, _)| *n == name) {
        return Err(CustomizeError::Unsupported {
            option: name.to_string(),
            message: format!("cannot be done offline: it {why}"),
        });
    }
    let Some(info) = CUSTOMIZE_OPTIONS.iter().find(|i| i.name == name) else {
        return Err(CustomizeError::Unknown(name.to_string()));
    };
    if info.value.is_empty() {
        if let Some(a) = arg
            && !a.trim().is_empty()
        {
            return Err(CustomizeError::Syntax {
                option: name.into(),
                arg: a.into(),
                message: "takes no argument".into(),
            });
        }
        return Ok(Vec::new());
    }
    let Some(arg) = arg else {
        return Err(CustomizeError::Syntax {
            option: name.into(),
            arg: String::new(),
            message: format!("needs an argument {}", info.value),
        });
    };
    if name == "commands-from-file" {
        if matches!(origin, Origin::File { .. }) {
            return Err(CustomizeError::Syntax {
                option: name.into(),
                arg: arg.into(),
                message: "cannot be used inside a commands file".into(),
            });
        }
        return parse_commands_file(&pc.host_path(arg), pc);
    }
    let c = Ctx {
        option: name,
        arg,
        pc,
    };
    let op = parse_op(&c)?;
    Ok(vec![CustomizeItem {
        option: name.to_string(),
        op,
        origin,
    }])
}

fn parse_op(c: &Ctx<'_>) -> Result<CustomizeOp, CustomizeError> {
    let arg = c.arg;
    Ok(match c.option {
        "write" => {
            let (p, content) = c.pair("FILE:CONTENT")?;
            CustomizeOp::Write {
                path: c.guest(p)?,
                content: content.to_string(),
            }
        }
        "upload" => {
            let (h, dest) = c.pair("FILE:DEST")?;
            let hp = c.pc.host_path(h);
            let dest = c.guest(dest)?;
            let file = read_host_file(&hp).map_err(|e| c.io(&hp, e))?;
            CustomizeOp::Upload { file, dest }
        }
        "copy-in" => {
            let (h, dir) = c.pair("LOCALPATH:REMOTEDIR")?;
            let hp = c.pc.host_path(h);
            let dir = c.guest(dir)?;
            let tree = read_host_tree(&hp).map_err(|e| c.io(&hp, e))?;
            CustomizeOp::CopyIn { tree, dir }
        }
        "copy" | "move" => {
            let (s, d) = c.pair("SOURCE:DEST")?;
            let (src, dest) = (c.guest(s)?, c.guest(d)?);
            if c.option == "copy" {
                CustomizeOp::Copy { src, dest }
            } else {
                CustomizeOp::Move { src, dest }
            }
        }
        "append-line" => {
            let (p, line) = c.pair("FILE:LINE")?;
            if line.contains('\n') || line.contains('\r') {
                return Err(c.err("LINE must be one line (no newline)"));
            }
            CustomizeOp::AppendLine {
                path: c.guest(p)?,
                line: line.to_string(),
            }
        }
        "edit" => {
            let (p, expr) = c.pair("FILE:EXPR")?;
            let path = c.guest(p)?;
            let expr = SedExpr::parse(expr).map_err(|m| c.err(m))?;
            CustomizeOp::Edit { path, expr }
        }
        "mkdir" => CustomizeOp::Mkdir {
            path: c.guest(arg)?,
        },
        "delete" => CustomizeOp::Delete {
            path: c.guest(arg)?,
        },
        "scrub" => CustomizeOp::Scrub {
            path: c.guest(arg)?,
        },
        "touch" => CustomizeOp::Touch {
            path: c.guest(arg)?,
        },
        "truncate" => CustomizeOp::Truncate {
            path: c.guest(arg)?,
        },
        "truncate-recursive" => CustomizeOp::TruncateRecursive {
            path: c.guest(arg)?,
        },
        "link" => {
            let mut parts = arg.split(':');
            let target = parts.next().unwrap_or_default();
            if target.is_empty() {
                return Err(c.err("expected TARGET:LINK[:LINK..] (empty TARGET)"));
            }
            let links = parts.map(|l| c.guest(l)).collect::<Result<Vec<_>, _>>()?;
            if links.is_empty() {
                return Err(c.err("expected TARGET:LINK[:LINK..]"));
            }
            CustomizeOp::Link {
                target: target.to_string(),
                links,
            }
        }
        "chmod" => {
            let (m, p) = c.pair("PERMISSIONS:FILE")?;
            let mode = parse_mode(m).map_err(|e| c.err(e))?;
            CustomizeOp::Chmod {
                mode,
                path: c.guest(p)?,
            }
        }
        "chown" => {
            let (a, rest) = c.pair("UID:GID:PATH")?;
            let (u, g, p) = if let Some((u, g)) = a.split_once('.') {
                (u, g, rest)
            } else {
                let (g, p) = rest
                    .split_once(':')
                    .ok_or_else(|| c.err("expected UID:GID:PATH or UID.GID:PATH"))?;
                (a, g, p)
            };
            let num = |s: &str, what: &str| {
                s.parse::<u32>().map_err(|_| {
                    c.err(format!(
                        "{what} {s:?} is not a number (--chown takes numeric ids, as \
                         virt-customize does)"
                    ))
                })
            };
            CustomizeOp::Chown {
                uid: num(u, "UID")?,
                gid: num(g, "GID")?,
                path: c.guest(p)?,
            }
        }
        "hostname" => {
            check_hostname(arg).map_err(|m| c.err(m))?;
            CustomizeOp::Hostname {
                name: arg.to_string(),
            }
        }
        "timezone" => {
            let ok = !arg.is_empty()
                && !arg.starts_with('/')
                && arg
                    .split('/')
                    .all(|s| !s.is_empty() && s != "." && s != "..")
                && arg
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_+-/".contains(ch));
            if !ok {
                return Err(c.err("expected a zone name such as Europe/London or UTC"));
            }
            CustomizeOp::Timezone {
                zone: arg.to_string(),
            }
        }
        "root-password" => CustomizeOp::Password {
            user: "root".into(),
            selector: parse_selector(c, arg)?,
        },
        "password" => {
            let (u, sel) = c.pair("USER:SELECTOR")?;
            check_user(u).map_err(|m| c.err(m))?;
            CustomizeOp::Password {
                user: u.to_string(),
                selector: parse_selector(c, sel)?,
            }
        }
        "password-crypto" => CustomizeOp::PasswordCrypto {
            crypto: match arg {
                "md5" => PasswordCrypto::Md5,
                "sha256" => PasswordCrypto::Sha256,
                "sha512" => PasswordCrypto::Sha512,
                "yescrypt" => PasswordCrypto::Yescrypt,
                _ => return Err(c.err("expected md5, sha256, sha512 or yescrypt")),
            },
        },
        "ssh-inject" => {
            let (u, sel) = match arg.split_once(':') {
                Some((u, s)) => (u, Some(s)),
                None => (arg, None),
            };
            check_user(u).map_err(|m| c.err(m))?;
            let (source, key) = match sel {
                None => {
                    let p = default_ssh_key(c.pc).map_err(|m| c.err(m))?;
                    let k = std::fs::read(&p).map_err(|e| c.io(&p, e))?;
                    (SshKeySource::Default(p), k)
                }
                Some(s) => {
                    if let Some(f) = s.strip_prefix("file:") {
                        let p = c.pc.host_path(f);
                        let k = std::fs::read(&p).map_err(|e| c.io(&p, e))?;
                        (SshKeySource::File(p), k)
                    } else if let Some(k) = s.strip_prefix("string:") {
                        (SshKeySource::String, k.as_bytes().to_vec())
                    } else {
                        return Err(c.err("expected USER, USER:file:KEYFILE or USER:string:KEY"));
                    }
                }
            };
            let key = check_ssh_key(&key).map_err(|m| c.err(m))?;
            CustomizeOp::SshInject {
                user: u.to_string(),
                source,
                key,
            }
        }
        "firstboot" => {
            let hp = c.pc.host_path(arg);
            let f = read_host_file(&hp).map_err(|e| c.io(&hp, e))?;
            CustomizeOp::Firstboot {
                script: FirstbootScript {
                    name: String::from_utf8_lossy(&f.name).into_owned(),
                    host_path: hp,
                    script: f.data,
                },
            }
        }
        "firstboot-command" => {
            if arg.trim().is_empty() {
                return Err(c.err("empty command"));
            }
            CustomizeOp::FirstbootCommand {
                command: arg.to_string(),
            }
        }
        "firstboot-install" => {
            let packages: Vec<String> = arg.split(',').map(|p| p.trim().to_string()).collect();
            for p in &packages {
                if p.is_empty() {
                    return Err(c.err("empty package name"));
                }
                if !p
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._+-:~=@/*".contains(ch))
                    || p.starts_with('-')
                {
                    return Err(c.err(format!("bad package name {p:?}")));
                }
            }
            CustomizeOp::FirstbootInstall { packages }
        }
        other => return Err(CustomizeError::Unknown(other.to_string())),
    })
}

/// `0755` (octal, as virt-customize wants it with the leading 0) or `0o755`.
fn parse_mode(s: &str) -> Result<u16, String> {
    let digits = s
        .strip_prefix("0o")
        .or_else(|| s.strip_prefix('0').filter(|d| !d.is_empty()))
        .or(if s == "0" { Some("0") } else { None });
    let Some(d) = digits else {
        return Err(if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            format!(
                "write the mode in octal with a leading 0 (0{s}); virt-customize would read \
                 {s} as a decimal number"
            )
        } else {
            format!("{s:?} is not an octal mode such as 0755")
        });
    };
    match u16::from_str_radix(d, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("{s:?} is not an octal mode such as 0755")),
    }
}

fn check_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err("a host name has 1 to 253 characters".into());
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label has 1 to 63 characters".into());
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!(
                "label {label:?}: letters, digits and inner hyphens only"
            ));
        }
    }
    Ok(())
}

fn check_user(u: &str) -> Result<(), String> {
    if u.is_empty()
        || u.len() > 256
        || u.starts_with('-')
        || !u
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-$".contains(c))
    {
        return Err(format!("{u:?} is not a user name"));
    }
    Ok(())
}

fn parse_selector(c: &Ctx<'_>, s: &str) -> Result<PasswordSelector, CustomizeError> {
    if let Some(p) = s.strip_prefix("password:") {
        if p.is_empty() {
            return Err(c.err("empty password (use disabled or locked for no password)"));
        }
        return Ok(PasswordSelector::Password(p.to_string()));
    }
    if let Some(f) = s.strip_prefix("file:") {
        let path = c.pc.host_path(f);
        let data = std::fs::read(&path).map_err(|e| c.io(&path, e))?;
        let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
        let first = first.strip_suffix(b"\r").unwrap_or(first);
        let password = String::from_utf8(first.to_vec())
            .map_err(|_| c.err(format!("{}: the password is not UTF-8", path.display())))?;
        if password.is_empty() {
            return Err(c.err(format!("{}: the first line is empty", path.display())));
        }
        return Ok(PasswordSelector::File { path, password });
    }
    match s {
        "random" => return Ok(PasswordSelector::Random),
        "disabled" => return Ok(PasswordSelector::Disabled),
        "locked" => {
            return Ok(PasswordSelector::Locked(Box::new(
                PasswordSelector::Disabled,
            )));
        }
        _ => {}
    }
    if let Some(inner) = s.strip_prefix("locked:") {
        if inner.starts_with("locked") {
            return Err(c.err("locked:locked is not a selector"));
        }
        return Ok(PasswordSelector::Locked(Box::new(parse_selector(
            c, inner,
        )?)));
    }
    Err(c.err(
        "expected a password selector: password:PASSWORD, file:FILENAME, random, disabled, \
         locked or locked:SELECTOR",
    ))
}

/// The newest `~/.ssh/id*.pub` that is not a certificate.
fn default_ssh_key(pc: &ParseContext) -> Result<PathBuf, String> {
    let home = pc
        .home
        .as_ref()
        .ok_or("no HOME to find ~/.ssh/id*.pub in; use USER:file:KEYFILE")?;
    let dir = home.join(".ssh");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if !n.starts_with("id") || !n.ends_with(".pub") || n.ends_with("-cert.pub") {
                continue;
            }
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            let t = md.modified().unwrap_or(std::time::UNIX_EPOCH);
            if best
                .as_ref()
                .is_none_or(|(bt, bp)| (t, e.path()) > (*bt, bp.clone()))
            {
                best = Some((t, e.path()));
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        format!(
            "no {}/id*.pub key found; use USER:file:KEYFILE or USER:string:KEY",
            dir.display()
        )
    })
}

/// Keys as lines, checked to look like `TYPE BASE64 [COMMENT]`.
fn check_ssh_key(data: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(data).map_err(|_| "the ssh key is not text".to_string())?;
    let lines: Vec<&str> = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.is_empty() {
        return Err("no ssh public key".into());
    }
    for l in &lines {
        let mut f = l.split_whitespace();
        let (Some(_), Some(b64)) = (f.next(), f.next()) else {
            return Err(format!(
                "{l:?} is not an ssh public key (TYPE BASE64 [COMMENT])"
            ));
        };
        if !b64
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
        {
            return Err(format!(
                "{l:?} is not an ssh public key (TYPE BASE64 [COMMENT])"
            ));
        }
    }
    Ok(lines.join("\n"))
}

/// Read a commands file (virt-customize's `--commands-from-file` syntax).
pub fn parse_commands_file(
    path: &Path,
    pc: &ParseContext,
) -> Result<Vec<CustomizeItem>, CustomizeError> {
    let data = std::fs::read(path).map_err(|source| CustomizeError::CommandsFile {
        path: path.display().to_string(),
        source,
    })?;
    let text = String::from_utf8(data).map_err(|_| CustomizeError::CommandsFile {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })?;
    parse_commands_str(&text, path, pc)
}

/// Parse commands-file text: one `option argument` per line (the option's leading `--`
/// optional, `--option=argument` also accepted), blank lines and `#` comment lines
/// ignored, a `\` at the end of a line continues the argument on the next line (the
/// newline is kept, as in virt-customize: `--write` content can span lines).
pub fn parse_commands_str(
    text: &str,
    path: &Path,
    pc: &ParseContext,
) -> Result<Vec<CustomizeItem>, CustomizeError> {
    let mut out = Vec::new();
    let raw: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    while i < raw.len() {
        let start = i + 1;
        let mut line = raw[i].strip_suffix('\r').unwrap_or(raw[i]).to_string();
        i += 1;
        while line.ends_with('\\') && i < raw.len() {
            line.pop();
            line.push('\n');
            line.push_str(raw[i].strip_suffix('\r').unwrap_or(raw[i]));
            i += 1;
        }
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let first = t.split(' ').next().unwrap_or(t);
        let (cmd, arg) = match t.strip_prefix("--") {
            Some(long) if first.contains('=') => match long.split_once('=') {
                Some((c, a)) => (c, Some(a)),
                None => (long, None),
            },
            _ => {
                let t = t.strip_prefix("--").unwrap_or(t);
                match t.split_once(' ') {
                    Some((c, a)) => (c, Some(a)),
                    None => (t, None),
                }
            }
        };
        let origin = Origin::File {
            path: path.to_path_buf(),
            line: start,
        };
        let items = parse_option(cmd, arg, pc, origin).map_err(|e| CustomizeError::InFile {
            path: path.display().to_string(),
            line: start,
            error: Box::new(e),
        })?;
        out.extend(items);
    }
    Ok(out)
}
