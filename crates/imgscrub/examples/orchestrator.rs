//! How an orchestrator (an IMGAPI-like service, a build system) uses imgscrub as a library:
//! inspect an uploaded image, pick the LX profile for its distribution, add a site rule,
//! prepare it into a new compressed image in one pass, and keep the typed report.
//!
//! ```text
//! cargo run -p imgscrub --example orchestrator -- fixtures/sample.qcow2 /tmp/ready.qcow2
//! ```

use imgscrub::prepare::{Family, Options, Profile};
use imgscrub::shrink::{Compression, ConvertOptions, NoProgress, OutputFormat};
use imgscrub::{Image, OpenOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// A site rule on top of a built-in profile (RFD 109's example: consul's node id must not
/// be baked into an image).
const SITE_RULES: &str = r#"
name = "site"
extends = ["{base}"]

[[action]]
id = "consul"
kind = "delete"
path = "/var/lib/consul/node-id"
"#;

fn run(input: PathBuf, output: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    // Read-only: the uploaded image is never written.
    let image = Image::open(&input, OpenOptions::default())?;
    let inspection = image.inspect()?;
    let os = inspection
        .os
        .as_ref()
        .ok_or("no Linux root filesystem in this image")?;
    let base = match os.info.family {
        Family::Redhat => "lx-centos",
        Family::Debian => "lx-debian",
        Family::Ubuntu => "lx-ubuntu",
        Family::Alpine => "lx-alpine",
        _ => "linux",
    };
    println!(
        "{}: {} -> profile {base}",
        input.display(),
        os.info.describe()
    );

    let site = SITE_RULES.replace("{base}", base);
    let profile = Profile::from_toml("site", &site, &Profile::builtin_resolver)?;
    let convert = ConvertOptions {
        format: OutputFormat::Qcow2,
        compression: Compression::Zstd,
        ..ConvertOptions::default()
    };
    let (outcome, written) = image.prepare_to(
        &profile,
        &Options::default(),
        None,
        &output,
        &convert,
        &NoProgress,
    )?;
    for step in &outcome.report.steps {
        println!("  {}", serde_json::to_string(step)?);
    }
    for w in &outcome.report.warnings {
        println!("  warning: {w}");
    }
    println!(
        "{} written ({} bytes of the guest never read)",
        output.display(),
        written.bytes_skipped
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        eprintln!("usage: orchestrator INPUT OUTPUT");
        return ExitCode::from(2);
    };
    match run(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orchestrator: {e}");
            ExitCode::FAILURE
        }
    }
}
