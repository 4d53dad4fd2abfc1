//! `imgscrub customize` and the customization flags shared with `imgscrub prepare`.
//!
//! [`CustomizeArgs`] adds one flag per virt-customize option (`--write`, `--hostname`, …)
//! and keeps them in the order they were given (clap's `ArgMatches::indices_of`), with
//! `--commands-from-file` expanded in place.

use anyhow::Result;
use clap::{Arg, ArgAction, ArgMatches, Command};
use imgscrub::prepare::customize::{
    CUSTOMIZE_OPTIONS, CustomizeError, CustomizeItem, OFFLINE_IMPOSSIBLE, Origin, ParseContext,
    parse_option,
};
use imgscrub::prepare::{Options, Profile};
use imgscrub::{Format, prepare::Timestamp};
use std::path::PathBuf;

use super::shrink::OutputArgs;

/// The customization flags, in command-line order: `(option, value)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomizeArgs {
    /// `(option name without --, value)` in the order given.
    pub given: Vec<(String, Option<String>)>,
}

const HEADING: &str = "Customization (virt-customize's options, applied in the order given)";

impl clap::FromArgMatches for CustomizeArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut all: Vec<(usize, String, Option<String>)> = Vec::new();
        let valued = CUSTOMIZE_OPTIONS
            .iter()
            .map(|o| (o.name, !o.value.is_empty()))
            .chain(OFFLINE_IMPOSSIBLE.iter().map(|(n, v, _)| (*n, *v)));
        for (name, takes_value) in valued {
            if takes_value {
                let (Some(vals), Some(idx)) = (m.get_many::<String>(name), m.indices_of(name))
                else {
                    continue;
                };
                for (v, i) in vals.zip(idx) {
                    all.push((i, name.to_string(), Some(v.clone())));
                }
            } else if m.get_flag(name) {
                let i = m.index_of(name).unwrap_or(0);
                all.push((i, name.to_string(), None));
            }
        }
        all.sort_by_key(|(i, _, _)| *i);
        Ok(CustomizeArgs {
            given: all.into_iter().map(|(_, n, v)| (n, v)).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for CustomizeArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd.next_help_heading(HEADING);
        for o in CUSTOMIZE_OPTIONS {
            let a = Arg::new(o.name).long(o.name).help(o.help);
            let a = if o.value.is_empty() {
                a.action(ArgAction::SetTrue)
            } else {
                a.value_name(o.value).action(ArgAction::Append)
            };
            cmd = cmd.arg(a);
        }
        // virt-customize options that cannot be done offline are accepted by the parser so
        // that the error says why and what to use instead.
        for (name, takes_value, _) in OFFLINE_IMPOSSIBLE {
            let a = Arg::new(*name).long(*name).hide(true);
            let a = if *takes_value {
                a.value_name("ARG").action(ArgAction::Append)
            } else {
                a.action(ArgAction::SetTrue)
            };
            cmd = cmd.arg(a);
        }
        cmd.next_help_heading(None::<&str>)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl CustomizeArgs {
    /// Parse every flag (reading host files and commands files now, before the image is
    /// touched). Syntax errors are usage errors (exit 2); unreadable host files are
    /// failures (exit 1).
    pub fn items(&self) -> Result<Vec<CustomizeItem>> {
        let pc = ParseContext::from_env();
        let mut out = Vec::new();
        for (name, value) in &self.given {
            match parse_option(name, value.as_deref(), &pc, Origin::CommandLine) {
                Ok(items) => out.extend(items),
                Err(e) if is_usage(&e) => return Err(super::usage(e.to_string())),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

fn is_usage(e: &CustomizeError) -> bool {
    match e {
        CustomizeError::InFile { error, .. } => is_usage(error),
        CustomizeError::HostIo { .. } | CustomizeError::CommandsFile { .. } => false,
        _ => true,
    }
}

/// Arguments of `imgscrub customize`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub customize disk.qcow2 --hostname web-01 --timezone Europe/Berlin \\
      --root-password file:./rootpw --ssh-inject admin:file:./id_ed25519.pub
      set the name, time zone, root's password and an admin key, in place
  imgscrub customize disk.qcow2 --dry-run --write /etc/motd:'Welcome' \\
      --append-line /etc/hosts:'10.0.0.5 db' --edit /etc/ssh/sshd_config:'s/^#?Port .*/Port 2222/'
      show every step (with the option it comes from) and write nothing
  imgscrub customize in.qcow2 --upload ./app.conf:/etc/app/ --chmod 0600:/etc/app/app.conf \\
      --chown 1000:1000:/etc/app/app.conf --output out.qcow2
      one pass: in.qcow2 is only read; out.qcow2 is customized and compressed
  imgscrub customize disk.qcow2 --commands-from-file build.cmds
      a virt-customize commands file, unchanged: one `option argument` per line, `#`
      comments, `\\` at the end of a line continues it
  imgscrub customize disk.qcow2 --firstboot-install nginx --firstboot-command 'systemctl enable --now nginx'
      things that need the guest running happen at its first boot, in the order given

Options apply in the order given, --commands-from-file files in place among them. Every
option is checked, and every host file read, before the image is touched; a bad option
exits with status 2 and leaves the image as it was. Not possible offline (they run code
inside the guest): --run, --run-command, --install, --uninstall, --update, --sm-*,
--inject-*; use --firstboot, --firstboot-command, --firstboot-install instead.
The same options work on `imgscrub prepare`, after the profile. Reference:
docs/customize.md.")]
pub struct Args {
    /// The disk image (raw, qcow2, vmdk or vhd).
    pub image: PathBuf,
    /// Plan only: print what would change, leave the image byte-identical.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Stamp every time this run writes with this time (seconds since 1970, UTC):
    /// reproducible output. Defaults to `$SOURCE_DATE_EPOCH`.
    #[arg(long, value_name = "SECONDS", env = "SOURCE_DATE_EPOCH")]
    pub timestamp: Option<i64>,
    /// Customize this partition instead of the root filesystem found automatically.
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Do not detect the format: read the image as `raw`, `qcow2`, `vmdk` or `vhd`.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Write the customized image here (the input is only read) instead of editing in place.
    #[arg(long, short = 'o', value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Format of the --output image: qcow2, raw, vmdk or vhd. Default: from the suffix.
    #[arg(long, value_name = "FORMAT", value_parser = ["qcow2", "raw", "vmdk", "vhd"])]
    pub output_format: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Quiet: no plan, no summary line, no progress bar; only warnings and errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub customize: CustomizeArgs,
}

/// The profile of `imgscrub customize`: no operation, no action.
pub fn empty_profile() -> Profile {
    Profile {
        name: "customize".into(),
        description: "customization only".into(),
        chain: Vec::new(),
        requires_family: Vec::new(),
        operations: None,
        actions: Vec::new(),
    }
}

pub fn run(a: &Args) -> Result<()> {
    let items = a.customize.items()?;
    if items.is_empty() {
        return Err(super::usage(
            "nothing to do: give at least one customization option (see imgscrub customize --help)",
        ));
    }
    let opts = Options {
        dry_run: a.dry_run,
        fixed_time: a.timestamp.map(|s| Timestamp::new(s, 0)),
        customize: items,
        ..Options::default()
    };
    super::prepare::run_target(
        &super::prepare::Target {
            image: &a.image,
            dry_run: a.dry_run,
            json: a.json,
            quiet: a.quiet,
            partition: a.partition,
            format: a.format,
            output: a.output.as_deref(),
            output_format: a.output_format.as_deref(),
            out: &a.out,
        },
        &empty_profile(),
        &opts,
    )
}
