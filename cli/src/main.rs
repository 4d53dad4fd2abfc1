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

Run `imgscrub <command> --help` for the options and examples of each command."
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
    Prepare(cmd::prepare::Args),
    /// List the operations profiles are made of.
    ListOperations(cmd::prepare::ListArgs),
    /// Zero the free space of every filesystem, swap area and partition gap, in place.
    Sparsify(cmd::shrink::SparsifyArgs),
    /// Convert to compressed qcow2 or sparse raw, on every core.
    Convert(cmd::shrink::ConvertArgs),
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
        Command::ListOperations(args) => cmd::prepare::list(&args),
        Command::Sparsify(args) => cmd::shrink::sparsify(&args),
        Command::Convert(args) => cmd::shrink::convert(&args),
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
        Err(e) if interrupted(&e) => {
            eprintln!("imgscrub: interrupted: stopped before writing anything");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("imgscrub: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// True when the job stopped because of Ctrl-C / SIGTERM (see `progress::Bar`).
fn interrupted(e: &anyhow::Error) -> bool {
    use imgscrub::shrink::ShrinkError;
    e.chain().any(|c| {
        matches!(c.downcast_ref(), Some(ShrinkError::Cancelled))
            || matches!(
                c.downcast_ref(),
                Some(imgscrub::Error::Shrink(ShrinkError::Cancelled))
            )
    })
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
    use clap::CommandFactory;

    /// clap's own consistency checks (unique short options, valid defaults…) over every
    /// subcommand: a clash would otherwise only show when a user runs that subcommand.
    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
