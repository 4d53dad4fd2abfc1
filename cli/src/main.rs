//! The `imgscrub` command. It only parses arguments and prints; the work is in the libraries.
//!
//! Each subcommand is one variant of [`Command`] and one module in `cmd/` with an `Args`
//! struct and a `run` function.

mod cmd;
mod progress;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Prepare Linux VM disk images offline: inspect, scrub, zero free space, recompress.
#[derive(Parser)]
#[command(
    name = "imgscrub",
    version,
    after_help = "\
Examples:
  imgscrub inspect disk.qcow2            partitions and filesystems, as a table
  imgscrub inspect --json disk.img | jq '.partitions[].filesystem.type'

Run `imgscrub <command> --help` for the options and examples of each command.

Exit status:
  0    success
  1    failure: I/O error, missing image, no such guest file, bad profile…
  2    usage error: the command line is wrong (unknown option, options that conflict)
  3    unsupported input: the image uses something imgscrub does not handle (a qcow2
       feature, encryption, a root on Btrfs or LUKS, an ext4 or XFS feature; v4 XFS
       is read-only)
  4    damaged input: corrupt metadata, a checksum mismatch, a journal or log that needs
       repair
  5    the image is in use (QEMU or another imgscrub holds its lock)
  130  interrupted (Ctrl-C, SIGTERM)

On any failure one line `imgscrub: <error>` goes to standard error and the image is left
as it was."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show an image's format, backing chain, partitions and filesystems (reads only).
    Inspect(cmd::inspect::Args),
    /// Scrub an image with a profile (in place, or into a new image with --output).
    Prepare(Box<cmd::prepare::Args>),
    /// Customize an image offline with virt-customize's options (--write, --hostname,
    /// --ssh-inject, --firstboot-command, --commands-from-file…), in the order given.
    Customize(Box<cmd::customize::Args>),
    /// List the operations profiles are made of.
    ListOperations(cmd::prepare::ListArgs),
    /// Zero the free space of every filesystem, swap area and partition gap, in place.
    Sparsify(cmd::shrink::SparsifyArgs),
    /// Convert to compressed qcow2 or sparse raw, on every core.
    Convert(cmd::shrink::ConvertArgs),
    /// Write the guest tree as a tarball (.tar, .tar.gz, .tar.zst) with xattrs and ACLs.
    Export(cmd::export::Args),
    /// List a directory of the guest (root filesystem found automatically).
    Ls(cmd::files::LsArgs),
    /// Print a guest file to standard output.
    Cat(cmd::files::CatArgs),
    /// Show a guest file's type, size, mode, owner and times.
    Stat(cmd::files::StatArgs),
    /// Remove guest files or (with -r) directory trees.
    Rm(cmd::files::RmArgs),
    /// Write standard input to a guest file (created if missing).
    Write(cmd::files::WriteArgs),
    /// Create a guest directory (-p: with its parents).
    Mkdir(cmd::files::MkdirArgs),
    /// Create a symbolic link in the guest.
    Symlink(cmd::files::SymlinkArgs),
    /// Change the permission bits of a guest file.
    Chmod(cmd::files::ChmodArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cmd::inspect::run(&args),
        Command::Prepare(args) => cmd::prepare::run(&args),
        Command::Customize(args) => cmd::customize::run(&args),
        Command::ListOperations(args) => cmd::prepare::list(&args),
        Command::Sparsify(args) => cmd::shrink::sparsify(&args),
        Command::Convert(args) => cmd::shrink::convert(&args),
        Command::Export(args) => cmd::export::run(&args),
        Command::Ls(args) => cmd::files::ls(&args),
        Command::Cat(args) => cmd::files::cat(&args),
        Command::Stat(args) => cmd::files::stat(&args),
        Command::Rm(args) => cmd::files::rm(&args),
        Command::Write(args) => cmd::files::write(&args),
        Command::Mkdir(args) => cmd::files::mkdir(&args),
        Command::Symlink(args) => cmd::files::symlink(&args),
        Command::Chmod(args) => cmd::files::chmod(&args),
    };
    match result {
        Ok(()) => {
            for w in cmd::take_warnings() {
                eprintln!("imgscrub: warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let status = exit_status(&e);
            if status == INTERRUPTED {
                eprintln!("imgscrub: interrupted: stopped before writing anything");
            } else {
                eprintln!("imgscrub: {}", one_line(&e));
            }
            ExitCode::from(status)
        }
    }
}

/// Exit status of a failure (`--help` lists them; docs/decisions.md says why).
const FAILURE: u8 = 1;
/// clap exits with 2 on usage errors; [`cmd::Usage`] errors found after parsing do too.
const USAGE: u8 = 2;
const UNSUPPORTED: u8 = 3;
const DAMAGED: u8 = 4;
const IN_USE: u8 = 5;
/// 128 + SIGINT, what shells report for a command ended by Ctrl-C.
const INTERRUPTED: u8 = 130;

/// The exit status of a failed command: its category, found anywhere in the chain of causes
/// (so that context added on the way up does not hide it).
fn exit_status(e: &anyhow::Error) -> u8 {
    use imgscrub::ErrorCategory;
    if e.chain().any(|c| c.is::<cmd::Usage>()) {
        return USAGE;
    }
    match imgscrub::error_category(e.as_ref()) {
        ErrorCategory::Unsupported => UNSUPPORTED,
        ErrorCategory::Damaged => DAMAGED,
        ErrorCategory::InUse => IN_USE,
        ErrorCategory::Interrupted => INTERRUPTED,
        _ => FAILURE,
    }
}

/// The error and its causes joined with ": " on one line. Library errors already include
/// their cause in their message, so a cause whose text the line already ends with is skipped.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line += ": ";
        }
        line += &text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::exit_status;
    use anyhow::Context;
    use clap::CommandFactory;
    use imgscrub::disk::{DiskError, LockError};
    use imgscrub::fs::FsError;
    use imgscrub::fs::probe::FsType;
    use imgscrub::prepare::PrepareError;
    use imgscrub::shrink::ShrinkError;

    /// `err` as the CLI sees it: converted to anyhow, with context on top.
    fn status(err: impl std::error::Error + Send + Sync + 'static) -> u8 {
        let e = Err::<(), _>(err)
            .context("disk.img")
            .context("while preparing")
            .unwrap_err();
        exit_status(&e)
    }

    #[test]
    fn exit_status_other_failures_are_1() {
        assert_eq!(
            status(std::io::Error::from(std::io::ErrorKind::NotFound)),
            1
        );
        assert_eq!(
            status(imgscrub::Error::Open {
                path: "disk.img".into(),
                message: "no such file or directory".into(),
            }),
            1
        );
        assert_eq!(status(FsError::NotFound("/etc/x".into())), 1);
        assert_eq!(
            status(imgscrub::Error::Prepare(PrepareError::UnknownProfile(
                "x".into()
            ))),
            1
        );
        assert_eq!(exit_status(&anyhow::anyhow!("plain message")), 1);
    }

    #[test]
    fn exit_status_usage_errors_are_2() {
        let e = Err::<(), _>(super::cmd::usage("--a and --b do not go together"))
            .context("prepare")
            .unwrap_err();
        assert_eq!(exit_status(&e), 2);
    }

    #[test]
    fn exit_status_unsupported_inputs_are_3() {
        assert_eq!(
            status(imgscrub::Error::Filesystem(FsError::UnsupportedRoot {
                found: vec![("the whole disk".into(), FsType::Btrfs)],
            })),
            3
        );
        // Through a non-transparent wrapper of another layer.
        assert_eq!(
            status(imgscrub::Error::Prepare(PrepareError::Fs(
                FsError::UnsupportedFilesystem {
                    volume: "partition 2".into(),
                    fstype: FsType::Btrfs,
                }
            ))),
            3
        );
        assert_eq!(
            status(imgscrub::Error::Disk(DiskError::Unsupported(
                "qcow2 image is encrypted".into()
            ))),
            3
        );
    }

    #[test]
    fn exit_status_damaged_inputs_are_4() {
        assert_eq!(
            status(imgscrub::Error::Disk(DiskError::corrupt(
                "GPT header",
                "both copies damaged"
            ))),
            4
        );
        assert_eq!(
            status(ShrinkError::Fs(FsError::Disk(DiskError::corrupt("x", "y")))),
            4
        );
    }

    #[test]
    fn exit_status_an_image_in_use_is_5() {
        assert_eq!(
            status(imgscrub::Error::Lock(LockError::InUse {
                path: "disk.img".into(),
                detail: "it holds the \"write\" permission".into(),
            })),
            5
        );
    }

    #[test]
    fn exit_status_interrupted_is_130() {
        assert_eq!(status(ShrinkError::Cancelled), 130);
        assert_eq!(status(imgscrub::Error::Shrink(ShrinkError::Cancelled)), 130);
    }

    /// clap's own consistency checks (unique short options, valid defaults…) over every
    /// subcommand: a clash would otherwise only show when a user runs that subcommand.
    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
