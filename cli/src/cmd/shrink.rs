//! `imgscrub convert` and `imgscrub sparsify`.

use super::human_size;
use crate::progress::Bar;
use anyhow::Result;
use imgscrub::shrink::sparsify::Action;
use imgscrub::shrink::{Compression, ConvertOptions, ConvertReport, OutputFormat, SparsifyOptions};
use imgscrub::{Format, OpenOptions};
use std::path::PathBuf;
use std::time::Instant;

/// Options of the output image (`convert`, `prepare --output`).
#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    /// Compression of qcow2 clusters: zstd (qemu ≥ 5.1), zlib (every qemu) or none.
    #[arg(long, value_name = "ALGO", default_value = "zstd", value_parser = ["zstd", "zlib", "none"])]
    pub compress: String,
    /// Compression level (zstd 1–22, default 3; zlib 1–9, default 9).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
    /// qcow2 cluster size in bytes (power of two, 512 to 2097152).
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    pub cluster_size: u32,
    /// fsync the output before exiting. Like `qemu-img convert`, imgscrub does not by
    /// default; either way the output appears under its name only once it is complete.
    #[arg(long)]
    pub sync: bool,
}

impl OutputArgs {
    /// Options for an output of `format` (`qcow2` or `raw`).
    pub fn convert_options(&self, format: &str) -> Result<ConvertOptions<'static>> {
        let format = match format {
            "raw" => OutputFormat::Raw,
            _ => OutputFormat::Qcow2,
        };
        let compression = match (format, self.compress.as_str()) {
            (OutputFormat::Raw, "none") => Compression::None,
            (OutputFormat::Raw, c) => {
                return Err(super::usage(format!(
                    "raw output cannot be compressed (--compress {c}): use --compress none or qcow2"
                )));
            }
            (_, "zlib") => Compression::Zlib,
            (_, "none") => Compression::None,
            _ => Compression::Zstd,
        };
        Ok(ConvertOptions {
            format,
            compression,
            level: self.level,
            cluster_size: self.cluster_size,
            skip: None,
            sync: self.sync,
        })
    }
}

pub fn convert_json(r: &ConvertReport) -> serde_json::Value {
    serde_json::json!({
        "virtual_size": r.virtual_size,
        "bytes_read": r.bytes_read,
        "bytes_skipped": r.bytes_skipped,
        "bytes_written": r.bytes_written,
        "output_size": r.output_size,
        "clusters": r.clusters,
        "clusters_zero": r.clusters_zero,
        "clusters_compressed": r.clusters_compressed,
        "clusters_raw": r.clusters_raw,
    })
}

/// Arguments of `imgscrub convert`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub convert disk.img disk.qcow2
      zstd-compressed qcow2, compressed on every core, clusters in guest order
  imgscrub convert --sparsify --compress zlib disk.qcow2 small.qcow2
      free space of every filesystem is not even read; zlib for old qemu versions
  imgscrub convert --format raw --compress none disk.qcow2 disk.img
      a sparse raw file (zero runs stay holes)

The same input and options always give a byte-identical output. The output is written under
a temporary name and renamed into place when complete; Ctrl-C stops the job and removes it
(exit status 130). An output that is the input, or its backing file, is refused.")]
pub struct ConvertArgs {
    /// The input image (raw or qcow2; only read).
    pub input: PathBuf,
    /// The output image (created or replaced).
    pub output: PathBuf,
    /// Output format.
    #[arg(long, short = 'O', value_name = "FORMAT", default_value = "qcow2", value_parser = ["qcow2", "raw"])]
    pub format: String,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Treat the free space of ext2/3/4, FAT and swap, and partition gaps, as zeros.
    #[arg(long)]
    pub sparsify: bool,
    /// Do not detect the input format: read it as `raw` or `qcow2`.
    #[arg(long, short = 'f', value_name = "FORMAT")]
    pub input_format: Option<Format>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
    /// Quiet: no progress bar and no summary line (errors and warnings are still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn convert(a: &ConvertArgs) -> Result<()> {
    // An output naming the input (or a backing file) through any path is refused by
    // `Image::convert`, before anything is written.
    let start = Instant::now();
    let img = super::open_image(
        &a.input,
        OpenOptions {
            write: false,
            format: a.input_format,
        },
    )?;
    let opts = a.out.convert_options(&a.format)?;
    let bar = Bar::new(a.quiet || a.json);
    let r = img.convert(&a.output, &opts, a.sparsify, &bar)?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let mut v = convert_json(&r);
        let input = std::fs::metadata(&a.input)?.len();
        v["seconds"] = secs.into();
        v["input_size"] = input.into();
        v["size_ratio"] = (r.output_size as f64 / input.max(1) as f64).into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if !a.quiet {
        let input = std::fs::metadata(&a.input)?.len();
        eprintln!(
            "{} ({}) -> {} ({}, {:.1}% of the input) in {secs:.2} s; {} read, {} never read",
            a.input.display(),
            human_size(input),
            a.output.display(),
            human_size(r.output_size),
            100.0 * r.output_size as f64 / input.max(1) as f64,
            human_size(r.bytes_read),
            human_size(r.bytes_skipped),
        );
    }
    Ok(())
}

/// Arguments of `imgscrub sparsify`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub sparsify disk.img           free space reads as zeros (raw: holes are punched)
  imgscrub sparsify --json disk.qcow2  qcow2: freed clusters become zero clusters

Zeroes the free blocks of ext2/3/4 and FAT, swap areas (keeping their header page) and the
gaps between partitions (never the partition tables or a BIOS boot partition). What already
reads as zero is not rewritten. The image changes only when the whole job succeeded: Ctrl-C
stops it with the image untouched (exit status 130).")]
pub struct SparsifyArgs {
    /// The image, edited in place.
    pub image: PathBuf,
    /// Leave the gaps between partitions alone.
    #[arg(long)]
    pub keep_gaps: bool,
    /// Do not detect the format: read the image as `raw` or `qcow2`.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
    /// Quiet: no progress bar and no summary line (errors and warnings are still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn sparsify(a: &SparsifyArgs) -> Result<()> {
    let start = Instant::now();
    let img = super::open_image(
        &a.image,
        OpenOptions {
            write: true,
            format: a.format,
        },
    )?;
    let bar = Bar::new(a.quiet || a.json);
    let r = img.sparsify(
        &SparsifyOptions {
            keep_gaps: a.keep_gaps,
            ..SparsifyOptions::default()
        },
        &bar,
    )?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let areas: Vec<_> = r
            .areas
            .iter()
            .map(|x| {
                serde_json::json!({
                    "partition": x.index, "start": x.start, "size": x.size,
                    "content": x.content, "free": x.free, "already_zero": x.already_zero,
                    "zeroed": x.zeroed,
                    "skipped": match &x.action { Action::Skipped(why) => Some(why.clone()), Action::Zeroed => None },
                })
            })
            .collect();
        let v = serde_json::json!({
            "examined": r.examined, "already_zero": r.already_zero, "zeroed": r.zeroed,
            "areas": areas, "warnings": r.warnings, "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if a.quiet {
        return Ok(());
    }
    for x in &r.areas {
        let what = match &x.action {
            Action::Zeroed => format!(
                "{} free, {} zeroed, {} already zero",
                human_size(x.free),
                human_size(x.zeroed),
                human_size(x.already_zero)
            ),
            Action::Skipped(why) => format!("skipped: {why}"),
        };
        let name = if x.index == 0 {
            x.content.clone()
        } else {
            format!("partition {} ({})", x.index, x.content)
        };
        println!("{name:<24} {what}");
    }
    eprintln!(
        "{}: {} of free space examined, {} zeroed in {secs:.2} s",
        a.image.display(),
        human_size(r.examined),
        human_size(r.zeroed)
    );
    Ok(())
}
