//! The `imgscrub` command. It only parses arguments and prints; the work is in the libraries.

use clap::Parser;

/// Prepare Linux VM disk images offline: inspect, scrub, zero free space, recompress.
#[derive(Parser)]
#[command(name = "imgscrub", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
