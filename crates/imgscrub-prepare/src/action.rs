//! The declarative vocabulary of profiles and operations: actions, edits and conditions
//! (spec §5.1). Every path is a guest path, resolved inside the guest root.

use crate::inspect::{Family, InitSystem};
use serde::{Deserialize, Serialize};

/// An action plus its bookkeeping: an id (a spec row such as `C1`), the operation it
/// belongs to (for `--operations` selection), and a condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSpec {
    /// Identifier shown in reports (e.g. `L2`, `C5`); optional.
    #[serde(default)]
    pub id: Option<String>,
    /// When set, the action runs only if this operation is selected.
    #[serde(default)]
    pub operation: Option<String>,
    /// Condition; all given fields must hold.
    #[serde(default)]
    pub when: Condition,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
}

/// When to replace/write a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WritePolicy {
    /// Create or replace.
    #[default]
    Always,
    /// Only create; never replace an existing file.
    IfAbsent,
    /// Only replace an existing file.
    IfExists,
}

/// What to do when a symlink's path is already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPolicy {
    /// Leave an existing path alone.
    #[default]
    IfAbsent,
    /// Replace an existing file or link (never a directory).
    Replace,
}

/// Declarative actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Delete files and symlinks matching a glob; directories only with `recursive`.
    Delete {
        /// Glob.
        path: String,
        /// Also remove matching directories with everything below them.
        #[serde(default)]
        recursive: bool,
        /// Only delete files whose content contains this text.
        #[serde(default)]
        if_contains: Option<String>,
    },
    /// Delete everything inside matching directories (the directories stay).
    DeleteContents {
        /// Glob of directories.
        path: String,
        /// Names (globs) directly inside the directory to keep.
        #[serde(default)]
        keep: Vec<String>,
    },
    /// Truncate matching regular files to zero bytes (mode, owner and inode kept).
    Truncate {
        /// Glob.
        path: String,
    },
    /// Truncate every regular file below matching directories, recursively.
    TruncateTree {
        /// Glob of directories.
        path: String,
        /// File names (globs) to leave alone.
        #[serde(default)]
        except: Vec<String>,
    },
    /// Create a directory (and missing parents, 0755 root).
    Mkdir {
        /// Path.
        path: String,
        /// Permission bits (default 0755).
        #[serde(default)]
        mode: Option<u16>,
        /// Owner (default 0).
        #[serde(default)]
        uid: u32,
        /// Group (default 0).
        #[serde(default)]
        gid: u32,
    },
    /// Create a symbolic link `path → target`.
    Symlink {
        /// Link path.
        path: String,
        /// Link target (stored verbatim).
        target: String,
        /// If the path exists.
        #[serde(default)]
        policy: LinkPolicy,
        /// Only replace an existing link whose target contains this text.
        #[serde(default)]
        if_target_contains: Option<String>,
    },
    /// Write a file (content is a template: `{{var}}` / `{{var|default}}`).
    WriteFile {
        /// Path.
        path: String,
        /// Content template.
        content: String,
        /// Permission bits (default: keep an existing file's, else 0644).
        #[serde(default)]
        mode: Option<u16>,
        /// Owner for a new file (default 0).
        #[serde(default)]
        uid: u32,
        /// Group for a new file (default 0).
        #[serde(default)]
        gid: u32,
        /// Create / replace policy.
        #[serde(default)]
        policy: WritePolicy,
        /// Before replacing different content, keep the old file as `path + suffix`
        /// (template; e.g. `.lxsave_{{date}}`).
        #[serde(default)]
        backup_suffix: Option<String>,
    },
    /// Copy a guest file to another guest path (e.g. `/etc/localtime` from zoneinfo).
    CopyFile {
        /// Source (symlinks followed inside the guest).
        from: String,
        /// Destination.
        to: String,
        /// Permission bits (default 0644).
        #[serde(default)]
        mode: Option<u16>,
        /// Line edits applied to the copy.
        #[serde(default)]
        edits: Vec<Edit>,
        /// Create / replace policy for the destination.
        #[serde(default)]
        policy: WritePolicy,
    },
    /// Edit a text file line by line.
    Edit {
        /// Path (symlinks followed inside the guest).
        path: String,
        /// Edits, applied in order.
        edits: Vec<Edit>,
        /// Leave the file alone if it already contains this text (an idempotency marker).
        #[serde(default)]
        skip_if_contains: Option<String>,
        /// Create the file (empty) if it is missing.
        #[serde(default)]
        create: bool,
        /// Set these permission bits on the result.
        #[serde(default)]
        mode: Option<u16>,
    },
    /// Disable services for one init system.
    DisableService {
        /// Which init system's mechanism to use.
        system: InitSystem,
        /// Service / unit / job names.
        names: Vec<String>,
        /// sysvinit: also delete the init script (as the LX brand does).
        #[serde(default)]
        delete_script: bool,
    },
    /// Enable OpenRC services in a runlevel (only scripts that exist).
    EnableService {
        /// Init system (only `openrc` is supported).
        system: InitSystem,
        /// Runlevel (`boot`, `default`, …).
        runlevel: String,
        /// Service names.
        names: Vec<String>,
    },
    /// Set one field of a user's line in `/etc/shadow` (and `/etc/shadow-` if present).
    SetShadow {
        /// User name.
        user: String,
        /// 1-based field number (2 = password).
        field: usize,
        /// New value (template).
        value: String,
    },
    /// Change owner recursively (no symlink is followed).
    Chown {
        /// Path (symlinks in the path followed inside the guest).
        path: String,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Whole tree.
        #[serde(default)]
        recursive: bool,
    },
    /// Change permission bits of an existing file.
    Chmod {
        /// Path.
        path: String,
        /// Permission bits.
        mode: u16,
    },
    /// Apply the machine-id policy to `/etc/machine-id` and `/var/lib/dbus/machine-id`.
    MachineId,
    /// Install a first-boot SSH host key generator if the guest has none and no host keys.
    SshKeyRegenerator,
    /// Remove login users (UID_MIN..UID_MAX of `/etc/login.defs`, root never) with their
    /// passwd, shadow, group and gshadow entries, home, mail spool and crontab; the
    /// `--keep-user-accounts` / `--remove-user-accounts` options choose whom.
    UserAccounts,
    /// A lint: when the condition holds, the report carries `message` as a warning.
    Check {
        /// Warning text.
        message: String,
    },
}

/// One line edit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Edit {
    /// Replace the first match of `replace` on each line (regex, `$1` groups) with `with`;
    /// with `until`, only on the lines before the first line matching that regex.
    Replace {
        /// Regex.
        replace: String,
        /// Replacement.
        with: String,
        /// Regex: this line and everything after it are left alone (e.g. sshd's `Match`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
    },
    /// Put `prefix` in front of lines from one matching `block_start` up to, not including,
    /// the next line matching `block_end`.
    PrefixBlock {
        /// Regex of the first line.
        block_start: String,
        /// Regex of the line that ends the block (not prefixed).
        block_end: String,
        /// Prefix.
        prefix: String,
    },
    /// Put `prefix` in front of lines matching `prefix_lines` (and not already prefixed).
    PrefixLines {
        /// Regex.
        prefix_lines: String,
        /// Prefix.
        prefix: String,
    },
    /// Delete lines matching the regex.
    DeleteLines {
        /// Regex.
        delete_lines: String,
    },
    /// Append `append_if_missing` unless a line equals it (or matches `matching`).
    AppendIfMissing {
        /// Line to append.
        append_if_missing: String,
        /// Regex; a matching line counts as present.
        #[serde(default, rename = "match")]
        matching: Option<String>,
    },
    /// `/etc/hosts`-style edit: remove this name (template) from every non-comment line's
    /// name list, and drop lines left without names. Nothing happens if it renders empty.
    RemoveHostname {
        /// Host name (template, e.g. `{{hostname}}`).
        remove_hostname: String,
    },
    /// Insert `prepend_if_missing` as the first line unless a line equals it (or matches
    /// `matching`); for files where order matters (sshd_config's `Match` blocks).
    PrependIfMissing {
        /// Line to insert.
        prepend_if_missing: String,
        /// Regex; a matching line counts as present.
        #[serde(default, rename = "match")]
        matching: Option<String>,
    },
    /// Append a line unconditionally (pair with `skip_if_contains`).
    Append {
        /// Line.
        append: String,
    },
}

/// A condition on the guest; every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Family is one of these.
    #[serde(default)]
    pub family: Option<Vec<Family>>,
    /// os-release `ID` is one of these.
    #[serde(default)]
    pub distro: Option<Vec<String>>,
    /// Version comparisons, all must hold: e.g. `">=7"`, `"<8"`, `"=14.04"`.
    #[serde(default)]
    pub version: Option<Vec<String>>,
    /// Init system is one of these.
    #[serde(default)]
    pub init: Option<Vec<InitSystem>>,
    /// All of these paths exist (final symlink not followed).
    #[serde(default)]
    pub exists: Option<Vec<String>>,
    /// None of these paths exist.
    #[serde(default)]
    pub absent: Option<Vec<String>>,
    /// All of these are directories (symlinks followed).
    #[serde(default)]
    pub is_dir: Option<Vec<String>>,
    /// All of these are real directories, not symlinks.
    #[serde(default)]
    pub real_dir: Option<Vec<String>>,
    /// At least one path matches this glob.
    #[serde(default)]
    pub any_match: Option<String>,
    /// `[path, text]`: the file contains the text.
    #[serde(default)]
    pub contains: Option<(String, String)>,
    /// `[glob, regex]`: some regular file matching the glob has a line matching the regex.
    #[serde(default)]
    pub any_contains: Option<(String, String)>,
    /// `[path, text]`: the file does not contain the text (or is absent).
    #[serde(default)]
    pub not_contains: Option<(String, String)>,
    /// All of these are executable regular files (symlinks followed).
    #[serde(default)]
    pub executable: Option<Vec<String>>,
    /// At least one of these is missing or not executable.
    #[serde(default)]
    pub not_executable: Option<Vec<String>>,
    /// `[path, text]`: the path is a symlink whose target contains the text.
    #[serde(default)]
    pub link_target_contains: Option<(String, String)>,
    /// Some account other than root has a password hash in `/etc/shadow` (`true`), or none
    /// has (`false`).
    #[serde(default)]
    pub user_password_hash: Option<bool>,
    /// A template variable is set (opt-in rows).
    #[serde(default)]
    pub var: Option<String>,
    /// SELinux is enforcing or permissive.
    #[serde(default)]
    pub selinux: Option<bool>,
}
