//! The error type of the prepare engine.

use imgscrub_fs::FsError;

/// Everything that can go wrong while inspecting, planning or executing a preparation.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The filesystem layer failed (I/O, damaged filesystem, unsupported operation).
    #[error("filesystem: {0}")]
    Fs(#[from] FsError),
    /// A guest file is larger than we are willing to read as configuration.
    #[error("{path}: {size} bytes is larger than the {limit}-byte limit for configuration files")]
    TooLarge {
        /// Guest path.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A profile could not be parsed or is inconsistent.
    #[error("profile {name}: {message}")]
    Profile {
        /// Profile name (or file).
        name: String,
        /// What is wrong.
        message: String,
    },
    /// No built-in profile has this name.
    #[error("unknown profile {0:?} (built-ins: linux, lx-centos, lx-debian, lx-ubuntu, lx-alpine)")]
    UnknownProfile(String),
    /// `extends` forms a cycle or is too deep.
    #[error("profile {0}: extends chain is cyclic or deeper than 16")]
    ExtendsCycle(String),
    /// The operation selection names an unknown operation.
    #[error("unknown operation {0:?} (see list-operations)")]
    UnknownOperation(String),
    /// A profile meant for one distribution was applied to another (use `force`).
    #[error(
        "profile {profile} is for {expected} guests, but this guest is {found}; \
         refusing (use --force to apply it anyway)"
    )]
    WrongDistro {
        /// Profile name.
        profile: String,
        /// Families the profile accepts.
        expected: String,
        /// What inspection found.
        found: String,
    },
    /// A regular expression in a profile is invalid.
    #[error("profile {profile}: bad regular expression {pattern:?}: {message}")]
    Regex {
        /// Profile name.
        profile: String,
        /// The pattern.
        pattern: String,
        /// The regex crate's message.
        message: String,
    },
    /// A profile file on the host could not be read.
    #[error("cannot read profile {path}: {source}")]
    ProfileIo {
        /// Host path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A customization option cannot be applied to this guest (`--truncate` of a missing
    /// file, `--chown` to an unknown user…).
    #[error("{option}: {message}")]
    Customize {
        /// The option, located: `--edit` or `cmds.txt:3: --edit`.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The `user-account` operation cannot do what its options ask (a user that does not
    /// exist in the guest, root, a bad name, or the options without the operation).
    #[error("user-account: {0}")]
    UserAccount(String),
    /// A guest path is unusable (not absolute, or leads through a non-directory).
    #[error("bad guest path {0:?}")]
    BadPath(String),
}

/// Result alias of this crate.
pub type Result<T, E = PrepareError> = std::result::Result<T, E>;
