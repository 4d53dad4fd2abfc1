//! The prepare engine of imgscrub: OS inspection, the operation catalogue, profiles as
//! data, the planner, the executor and the report.
//!
//! Everything works on `&dyn Filesystem` / `&mut dyn Filesystem` from `imgscrub-fs`, so the
//! same profile applies to an ext4 image, a FAT volume or a host directory. Guest paths are
//! resolved inside the guest root; symlinks never lead to the host. Guest files are
//! untrusted: configuration files larger than 16 MiB are refused, and non-UTF-8 content is
//! edited as bytes.
//!
//! The API, in the order a caller uses it:
//!
//! - [`Profile::load`] (`--profile NAME|FILE`), [`Profile::builtin`], [`Profile::from_toml`],
//!   [`builtin_names`];
//! - [`inspect()`] → [`OsInfo`] (family, version, init, SELinux, fstab; [`block_mounts`] for
//!   joining partitions);
//! - [`plan()`]`(fs, &profile, &Options)` → [`Plan`]; [`report()`] turns a plan into the dry-run
//!   [`Report`]; [`execute`]`(fs, &plan)` applies it and returns the [`Report`] (a dry-run
//!   plan writes nothing); [`prepare`] does both;
//! - [`list_operations`] / [`list_operations_text`] for `list-operations`, and
//!   [`Selection::parse`] for `--operations a,b,-c`.
//!
//! ```no_run
//! # fn main() -> Result<(), imgscrub_prepare::PrepareError> {
//! use imgscrub_prepare::{Options, Profile, execute, plan};
//! let mut fs = imgscrub_fs::HostDir::open("/tmp/guest-root")?;
//! let profile = Profile::builtin("lx-centos")?;
//! let plan = plan(&fs, &profile, &Options::default())?;
//! let report = execute(&mut fs, &plan)?;
//! println!("{}", report.to_text());
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod action;
pub mod crypt;
pub mod customize;
pub mod error;
pub mod exec;
pub mod firstboot;
pub mod glob;
pub mod inspect;
pub mod ops;
pub mod plan;
pub mod profile;
pub mod view;

pub use action::{Action, ActionSpec, Condition, Edit, LinkPolicy, WritePolicy};
pub use customize::{
    CustomizeError, CustomizeItem, CustomizeOp, Origin, ParseContext, parse_commands_file,
    parse_option,
};
pub use error::{PrepareError, Result};
pub use exec::{DiskStep, IdChange, Report, Totals, execute, report};
pub use imgscrub_fs::filesystem::Timestamp;
pub use inspect::{
    DeviceSpec, Family, FstabEntry, InitSystem, OsInfo, SelinuxMode, block_mounts, inspect,
    parse_fstab,
};
pub use ops::{
    LVM_UUIDS, Operation, OperationInfo, Selection, list_operations, list_operations_text,
};
pub use plan::{MachineIdPolicy, Options, Plan, Step, StepOp, plan};
pub use profile::{Profile, builtin_names};

/// Plan and execute in one call (a dry run only plans).
pub fn prepare(
    fs: &mut dyn imgscrub_fs::Filesystem,
    profile: &Profile,
    opts: &Options,
) -> Result<Report> {
    let p = plan(&*fs, profile, opts)?;
    execute(fs, &p)
}
