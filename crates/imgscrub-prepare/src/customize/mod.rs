//! Offline customization: virt-customize's options as data.
//!
//! A [`CustomizeOp`] is one option (`--write`, `--hostname`, `--firstboot`, …) with its
//! argument already checked and typed. [`parse_option`] turns one `(option, argument)`
//! pair into operations; the CLI calls it for every customization flag in the order the
//! flags were given, and [`parse_commands_file`] reads virt-customize's
//! `--commands-from-file` syntax into the same operations. Host-side inputs (the file of
//! `--upload`, the tree of `--copy-in`, `file:` password selectors, ssh keys, first-boot
//! scripts) are read while parsing, so every error comes before the image is touched.
//!
//! Every operation remembers where it came from ([`Origin`]) so that plans and errors can
//! say `customize:--write` or `cmds.txt:3: --edit …`.

mod host;
mod parse;
mod sed;

pub use host::{HostEntry, HostEntryKind, HostFile, HostTree};
pub use parse::{
    CUSTOMIZE_OPTIONS, OFFLINE_IMPOSSIBLE, OptionInfo, ParseContext, parse_commands_file,
    parse_commands_str, parse_option,
};
pub use sed::SedExpr;

use serde::Serialize;
use std::path::PathBuf;

/// How a password is chosen (virt-builder's `SELECTOR` syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordSelector {
    /// `password:PASSWORD`: this clear-text password.
    Password(String),
    /// `file:FILENAME`: the first line of a host file (read at parse time).
    File {
        /// Host path as given (made absolute).
        path: PathBuf,
        /// The password read from it.
        #[serde(skip)]
        password: String,
    },
    /// `random`: a random password, printed once after the run.
    Random,
    /// `disabled`: no password login (`*` in the shadow file).
    Disabled,
    /// `locked`, `locked:SELECTOR`: the account is locked (`!` in front of the hash);
    /// `locked` alone is `locked:disabled`.
    Locked(Box<PasswordSelector>),
}

/// Password hashing method (`--password-crypto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordCrypto {
    /// `$1$` md5-crypt (old guests only).
    Md5,
    /// `$5$` sha256-crypt.
    Sha256,
    /// `$6$` sha512-crypt (the default).
    Sha512,
    /// `$y$` yescrypt.
    Yescrypt,
}

/// Where an `--ssh-inject` key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SshKeySource {
    /// `USER` alone: the invoking user's newest `~/.ssh/id*.pub` (not `*-cert.pub`), as
    /// virt-customize and ssh-copy-id choose it.
    Default(PathBuf),
    /// `USER:file:PATH`: a public key file on the host.
    File(PathBuf),
    /// `USER:string:KEY`: the key itself.
    String,
}

/// A first-boot script's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirstbootScript {
    /// Name (the host file's base name), used to name the installed script.
    pub name: String,
    /// Host path it was read from.
    pub host_path: PathBuf,
    /// Its bytes.
    #[serde(skip)]
    pub script: Vec<u8>,
}

/// One customization, argument already parsed. Guest paths are absolute (checked by
/// the parser); host inputs are already read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CustomizeOp {
    /// `--write FILE:CONTENT`: create or replace a file with this content.
    Write {
        /// Guest path.
        path: String,
        /// Content (a `\` line continuation in a commands file keeps the newline).
        content: String,
    },
    /// `--upload HOSTFILE:DEST`: copy a host file in; `DEST` is a file name or an
    /// existing directory. Mode and owner are the host file's, as with virt-customize.
    Upload {
        /// The host file (read at parse time).
        file: HostFile,
        /// Guest destination.
        dest: String,
    },
    /// `--copy-in HOSTPATH:GUESTDIR`: copy a host file or directory tree (modes, owners,
    /// symlinks kept) into an existing guest directory.
    CopyIn {
        /// The host tree (read at parse time).
        tree: HostTree,
        /// Existing guest directory.
        dir: String,
    },
    /// `--copy SOURCE:DEST`: copy a guest file or directory tree inside the guest.
    Copy {
        /// Guest source.
        src: String,
        /// Guest destination (an existing directory receives `SOURCE`'s name).
        dest: String,
    },
    /// `--move SOURCE:DEST`: move (rename) a guest file or directory.
    Move {
        /// Guest source.
        src: String,
        /// Guest destination.
        dest: String,
    },
    /// `--append-line FILE:LINE`: append a line, keeping the file's line endings.
    AppendLine {
        /// Guest path.
        path: String,
        /// The line (without terminator).
        line: String,
    },
    /// `--edit FILE:s/REGEX/REPL/FLAGS`: a perl-style substitution on every line.
    Edit {
        /// Guest path.
        path: String,
        /// The substitution.
        expr: SedExpr,
    },
    /// `--mkdir DIR`: `mkdir -p`.
    Mkdir {
        /// Guest path.
        path: String,
    },
    /// `--link TARGET:LINK[:LINK…]`: symbolic links `LINK → TARGET`.
    Link {
        /// Link target (stored verbatim).
        target: String,
        /// Link paths.
        links: Vec<String>,
    },
    /// `--delete PATH`: delete files or directory trees (shell globs allowed).
    Delete {
        /// Guest path or glob.
        path: String,
    },
    /// `--scrub FILE`: overwrite a regular file's data, then delete it.
    Scrub {
        /// Guest path.
        path: String,
    },
    /// `--touch FILE`: create an empty file, or update an existing one's times.
    Touch {
        /// Guest path.
        path: String,
    },
    /// `--truncate FILE`: truncate an existing file to zero bytes.
    Truncate {
        /// Guest path.
        path: String,
    },
    /// `--truncate-recursive PATH`: truncate every regular file below `PATH`.
    TruncateRecursive {
        /// Guest path.
        path: String,
    },
    /// `--chmod PERMISSIONS:FILE`.
    Chmod {
        /// Permission bits (octal in the option: `0755`).
        mode: u16,
        /// Guest path.
        path: String,
    },
    /// `--chown UID:GID:PATH` (virt-customize) or `UID.GID:PATH`.
    Chown {
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Guest path.
        path: String,
    },
    /// `--hostname HOSTNAME`.
    Hostname {
        /// Host name, possibly dotted (FQDN).
        name: String,
    },
    /// `--timezone ZONE` (e.g. `Europe/London`).
    Timezone {
        /// Zone name.
        zone: String,
    },
    /// `--root-password SELECTOR` (user `root`) and `--password USER:SELECTOR`.
    Password {
        /// User (must exist in the guest).
        user: String,
        /// How the password is chosen.
        selector: PasswordSelector,
    },
    /// `--password-crypto md5|sha256|sha512|yescrypt`: the hash method of the password
    /// options that follow (and precede: virt-customize treats it as a global flag).
    PasswordCrypto {
        /// Method.
        crypto: PasswordCrypto,
    },
    /// `--ssh-inject USER[:file:PATH|:string:KEY]`.
    SshInject {
        /// User (must exist in the guest).
        user: String,
        /// Where the key came from.
        source: SshKeySource,
        /// The key line(s) (read at parse time; one key per line, no trailing newline).
        key: String,
    },
    /// `--firstboot SCRIPT`: run a host script at the guest's first boot.
    Firstboot {
        /// The script.
        script: FirstbootScript,
    },
    /// `--firstboot-command 'CMD ARGS'`: run a command at first boot.
    FirstbootCommand {
        /// Shell command line.
        command: String,
    },
    /// `--firstboot-install PKG,PKG…`: install packages at first boot with the guest's
    /// package manager.
    FirstbootInstall {
        /// Package names.
        packages: Vec<String>,
    },
}

impl CustomizeOp {
    /// The option this operation comes from, without `--` (`write`, `root-password`…).
    pub fn option_name(&self) -> &'static str {
        match self {
            Self::Write { .. } => "write",
            Self::Upload { .. } => "upload",
            Self::CopyIn { .. } => "copy-in",
            Self::Copy { .. } => "copy",
            Self::Move { .. } => "move",
            Self::AppendLine { .. } => "append-line",
            Self::Edit { .. } => "edit",
            Self::Mkdir { .. } => "mkdir",
            Self::Link { .. } => "link",
            Self::Delete { .. } => "delete",
            Self::Scrub { .. } => "scrub",
            Self::Touch { .. } => "touch",
            Self::Truncate { .. } => "truncate",
            Self::TruncateRecursive { .. } => "truncate-recursive",
            Self::Chmod { .. } => "chmod",
            Self::Chown { .. } => "chown",
            Self::Hostname { .. } => "hostname",
            Self::Timezone { .. } => "timezone",
            Self::Password { user, .. } if user == "root" => "root-password",
            Self::Password { .. } => "password",
            Self::PasswordCrypto { .. } => "password-crypto",
            Self::SshInject { .. } => "ssh-inject",
            Self::Firstboot { .. } => "firstboot",
            Self::FirstbootCommand { .. } => "firstboot-command",
            Self::FirstbootInstall { .. } => "firstboot-install",
        }
    }
}

/// Where an operation came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Origin {
    /// A command-line flag.
    CommandLine,
    /// Line `line` (1-based, the first line of a continued command) of a commands file.
    File {
        /// Host path of the commands file.
        path: PathBuf,
        /// Line number.
        line: usize,
    },
}

/// One parsed customization with its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomizeItem {
    /// The option as written, without `--` (`root-password`, `write`, …).
    pub option: String,
    /// The operation.
    #[serde(flatten)]
    pub op: CustomizeOp,
    /// Where it came from.
    pub origin: Origin,
}

impl CustomizeItem {
    /// The plan's step source for this item: `customize:--write`.
    pub fn source(&self) -> String {
        format!("customize:--{}", self.option)
    }
}

/// A customization option that could not be parsed or whose host input is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CustomizeError {
    /// Bad argument syntax or value.
    #[error("--{option} {arg:?}: {message}")]
    Syntax {
        /// Option name without `--`.
        option: String,
        /// The argument as given.
        arg: String,
        /// What is wrong.
        message: String,
    },
    /// The option exists in virt-customize but cannot be done on an image offline.
    #[error("--{option}: {message}")]
    Unsupported {
        /// Option name without `--`.
        option: String,
        /// Why, and what to use instead.
        message: String,
    },
    /// No such option.
    #[error("unknown customization option --{0} (see `imgscrub customize --help`)")]
    Unknown(String),
    /// A host file named by an option could not be read.
    #[error("--{option} {arg:?}: cannot read {path}: {source}")]
    HostIo {
        /// Option name.
        option: String,
        /// The argument as given.
        arg: String,
        /// Host path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An error on one line of a commands file.
    #[error("{path}:{line}: {error}")]
    InFile {
        /// Commands file.
        path: String,
        /// 1-based line.
        line: usize,
        /// The error.
        error: Box<CustomizeError>,
    },
    /// A commands file could not be read.
    #[error("--commands-from-file {path}: {source}")]
    CommandsFile {
        /// Host path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
