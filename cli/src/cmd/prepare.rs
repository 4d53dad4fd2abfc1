//! `imgscrub prepare` and `imgscrub list-operations`.

use super::human_size;
use crate::progress::Bar;
use anyhow::{Result, bail};
use imgscrub::prepare::Timestamp;
use imgscrub::prepare::{
    MachineIdPolicy, Options, Profile, Selection, builtin_names, list_operations,
    list_operations_text,
};
use imgscrub::{Format, OpenOptions};
use std::path::PathBuf;
use std::time::Instant;

use super::shrink::OutputArgs;

/// Arguments of `imgscrub prepare`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub prepare disk.qcow2 --profile linux --dry-run
      list every path that would be deleted, truncated, created or edited; write nothing
  imgscrub prepare disk.qcow2 --profile lx-centos
      scrub the image in place and add what SmartOS LX zones need
  imgscrub prepare in.qcow2 --profile linux --output out.qcow2 --compress zstd
      one pass: in.qcow2 is only read; out.qcow2 is scrubbed, free space zeroed, compressed
  imgscrub prepare in.qcow2 --profile linux --output out.vmdk
      the same into a streamOptimized VMDK (vSphere, OVA, AWS); out.vhd: a fixed VHD (Azure)
  SOURCE_DATE_EPOCH=1700000000 imgscrub prepare in.qcow2 --output out.qcow2
      reproducible: every time written is that one, so each run gives the same bytes
  imgscrub prepare in.qcow2 --profile lx-centos --export-tar rootfs.tar.zst
      one pass: in.qcow2 is only read; the scrubbed guest tree as a tarball (`imgscrub export --help`)
  imgscrub prepare disk.qcow2 --operations defaults,user-account --keep-user-accounts admin
      also remove every login user except admin (home, mail, crontab, group entries)
  imgscrub prepare disk.qcow2 --profile ./site.toml --json > report.json
      a profile of your own (it can `extends = [\"linux\"]`), report as JSON

Profiles: linux, lx-centos, lx-debian, lx-ubuntu, lx-alpine, or a TOML file (docs/profiles.md).
Operations: `imgscrub list-operations` (docs/operations.md).
In place, every change is staged first and written only when the whole profile succeeded.
Output: the plan (one line per step) on standard output and a summary line on standard
error; -q prints neither, only warnings and errors; --json prints the plan as JSON (with or
without -q).")]
pub struct Args {
    /// The disk image (raw or qcow2).
    pub image: PathBuf,
    /// A built-in profile name or the path of a profile TOML file.
    #[arg(long, short = 'P', default_value = "linux")]
    pub profile: String,
    /// Plan only: print what would change, leave the image byte-identical.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// machine-id policy: `empty` (a new ID at first boot), `uninitialized` (also runs
    /// systemd's first-boot units) or `keep`.
    #[arg(long, value_name = "POLICY", default_value = "empty")]
    pub machine_id: String,
    /// Operations to run instead of the profile's, like virt-sysprep: `a,b`, `defaults,-c`, `all`.
    #[arg(long, value_name = "LIST")]
    pub operations: Option<String>,
    /// Apply a distribution-specific profile to another distribution anyway.
    #[arg(long)]
    pub force: bool,
    /// Set root's password hash (crypt(3) format, e.g. from `openssl passwd -6`) instead of
    /// locking root.
    #[arg(long, value_name = "HASH")]
    pub root_password_hash: Option<String>,
    /// A template variable for opt-in profile rows (image_name, image_version, docs_url,
    /// description, locale, timezone_utc…; see docs/profiles.md). Repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// The `user-account` operation (select it with `--operations defaults,user-account`)
    /// keeps these users (comma-separated; repeatable). Each must exist in the guest.
    #[arg(long, value_name = "USERS", value_delimiter = ',')]
    pub keep_user_accounts: Vec<String>,
    /// The `user-account` operation removes only these users (comma-separated; repeatable)
    /// instead of every user with a UID in the guest's UID_MIN..UID_MAX. Each must exist.
    #[arg(long, value_name = "USERS", value_delimiter = ',')]
    pub remove_user_accounts: Vec<String>,
    /// Stamp every file, directory and deletion time this run writes with this time
    /// (seconds since 1970, UTC) instead of the current time: the same input then gives a
    /// byte-identical output (reproducible builds). Defaults to `$SOURCE_DATE_EPOCH`.
    #[arg(long, value_name = "SECONDS", env = "SOURCE_DATE_EPOCH")]
    pub timestamp: Option<i64>,
    /// Prepare this partition instead of the root filesystem found automatically.
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Do not detect the format: read the image as `raw`, `qcow2`, `vmdk` or `vhd`.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Write the prepared image here (the input is only read) instead of editing in place.
    #[arg(long, short = 'o', value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Format of the --output image: qcow2, raw, vmdk (streamOptimized) or vhd (see
    /// --vhd-subformat). Default: from the output's suffix (.vmdk, .vhd, .raw), else qcow2.
    #[arg(long, value_name = "FORMAT", value_parser = ["qcow2", "raw", "vmdk", "vhd"])]
    pub output_format: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Write the prepared guest tree as a tarball here (.tar, .tar.gz, .tar.zst) instead of
    /// editing in place: the edits are staged, never written to the image.
    #[arg(long, value_name = "OUT.tar", conflicts_with_all = ["output", "dry_run"])]
    pub export_tar: Option<PathBuf>,
    #[command(flatten)]
    pub tar: super::export::TarArgs,
    /// Quiet: no plan, no summary line, no progress bar; only warnings and errors (on
    /// standard error). With --json the JSON report is still printed.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub customize: super::customize::CustomizeArgs,
}

fn load_profile(spec: &str) -> Result<Profile> {
    let is_builtin = builtin_names().contains(&spec);
    if !is_builtin && !std::path::Path::new(spec).exists() {
        bail!(
            "unknown profile {spec:?}: built-in profiles are {}, or give the path of a TOML file",
            builtin_names().join(", ")
        );
    }
    Ok(Profile::load(spec)?)
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

pub fn run(a: &Args) -> Result<()> {
    let profile = load_profile(&a.profile)?;
    let opts = Options {
        machine_id: a
            .machine_id
            .parse::<MachineIdPolicy>()
            .map_err(|e| super::usage(format!("--machine-id: {e}")))?,
        operations: a.operations.as_deref().map(Selection::parse).transpose()?,
        force: a.force,
        dry_run: a.dry_run,
        root_password_hash: a.root_password_hash.clone(),
        vars: a.vars.iter().cloned().collect(),
        keep_user_accounts: a.keep_user_accounts.clone(),
        remove_user_accounts: a.remove_user_accounts.clone(),
        fixed_time: a.timestamp.map(|s| Timestamp::new(s, 0)),
        customize: a.customize.items()?,
    };
    if a.output.is_some() && a.dry_run {
        return Err(super::usage(
            "--dry-run and --output do not go together (a dry run writes nothing)",
        ));
    }
    let start = Instant::now();
    if let Some(tar) = &a.export_tar {
        return export_tar(a, &profile, &opts, tar, start);
    }
    run_target(
        &Target {
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
        &profile,
        &opts,
    )
}

/// What `prepare` and `customize` share: the image, where the result goes, how to report.
pub struct Target<'a> {
    pub image: &'a std::path::Path,
    pub dry_run: bool,
    pub json: bool,
    pub quiet: bool,
    pub partition: Option<u32>,
    pub format: Option<Format>,
    pub output: Option<&'a std::path::Path>,
    pub output_format: Option<&'a str>,
    pub out: &'a OutputArgs,
}

/// Plan and apply `profile` (and `opts.customize`) in place or into `--output`.
pub fn run_target(a: &Target<'_>, profile: &Profile, opts: &Options) -> Result<()> {
    if a.output.is_some() && a.dry_run {
        return Err(super::usage(
            "--dry-run and --output do not go together (a dry run writes nothing)",
        ));
    }
    let start = Instant::now();
    let Some(out) = a.output else {
        let img = super::open_image(
            a.image,
            OpenOptions {
                write: !a.dry_run,
                format: a.format,
            },
        )?;
        let outcome = img.prepare(profile, opts, a.partition)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&outcome)?);
        } else if a.quiet {
            warn_quietly(&outcome.report.warnings);
        } else {
            print!("{}", outcome.report.to_text());
            let steps = outcome.report.steps.len();
            if a.dry_run {
                eprintln!(
                    "{}: dry run, {steps} steps planned, nothing written",
                    a.image.display()
                );
            } else {
                eprintln!(
                    "{}: {steps} steps, {} of the image changed in {:.2} s",
                    a.image.display(),
                    human_size(outcome.bytes_changed),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        return Ok(());
    };
    if out == a.image || imgscrub::shrink::same_file(out, a.image) {
        bail!(
            "{}: the output is the same file as the input (for in-place preparation, leave --output out)",
            out.display()
        );
    }
    let img = super::open_image(
        a.image,
        OpenOptions {
            write: false,
            format: a.format,
        },
    )?;
    let format = super::shrink::output_format(a.output_format, out);
    let copts = a.out.convert_options(&format)?;
    let bar = Bar::new(a.quiet || a.json);
    let (outcome, conv) = img.prepare_to(profile, opts, a.partition, out, &copts, &bar)?;
    if a.json {
        let v = serde_json::json!({
            "prepare": outcome,
            "convert": super::shrink::convert_json(&conv),
            "seconds": start.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if a.quiet {
        warn_quietly(&outcome.report.warnings);
    } else {
        print!("{}", outcome.report.to_text());
        eprintln!(
            "{} -> {}: {} written ({} of the guest never read) in {:.2} s",
            a.image.display(),
            out.display(),
            human_size(conv.bytes_written),
            human_size(conv.bytes_skipped),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `prepare --export-tar`: scrub on the overlay, then the tarball of the edited tree.
fn export_tar(
    a: &Args,
    profile: &Profile,
    opts: &Options,
    tar: &std::path::Path,
    start: Instant,
) -> Result<()> {
    let eopts = a.tar.options(tar, a.out.sync)?;
    if tar == a.image || imgscrub::shrink::same_file(tar, &a.image) {
        bail!(
            "{}: the output is the same file as the image (choose another output path)",
            tar.display()
        );
    }
    let img = super::open_image(
        &a.image,
        OpenOptions {
            write: false,
            format: a.format,
        },
    )?;
    let bar = Bar::new(a.quiet || a.json);
    let (outcome, r) = img.prepare_export(profile, opts, a.partition, tar, None, &eopts, &bar)?;
    for w in &r.warnings {
        if !outcome.report.warnings.contains(w) {
            super::warn_later(w.clone());
        }
    }
    if a.json {
        let v = serde_json::json!({
            "prepare": outcome,
            "export": super::export::export_json(&r, tar, eopts.compress),
            "seconds": start.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if a.quiet {
        warn_quietly(&outcome.report.warnings);
    } else {
        print!("{}", outcome.report.to_text());
        eprintln!(
            "{} -> {}: {} in {:.2} s (the image was only read)",
            a.image.display(),
            tar.display(),
            super::export::summary(&r),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// With -q the plan (which ends with the warnings) is not printed: the warnings still are,
/// on standard error once the command has succeeded, like every other command's.
fn warn_quietly(warnings: &[String]) {
    for w in warnings {
        super::warn_later(w.clone());
    }
}

/// Arguments of `imgscrub list-operations`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub list-operations            name, * when on by default, description
  imgscrub list-operations --json")]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn list(a: &ListArgs) -> Result<()> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list_operations())?);
    } else {
        print!("{}", list_operations_text());
    }
    Ok(())
}
