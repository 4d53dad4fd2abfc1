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
    /// Compression: for qcow2 zstd (the default; qemu ≥ 5.1), zlib (every qemu) or none. A
    /// VMDK is always deflate-compressed (zlib); raw and VHD are never compressed.
    #[arg(long, value_name = "ALGO", value_parser = ["zstd", "zlib", "none"])]
    pub compress: Option<String>,
    /// Compression level (zstd 1–22, default 3; zlib 1–9, default 9 for qcow2 and VMDK, whose output is then no larger than qemu-img's; 6 is about twice as fast and 0.2–0.7 % larger).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,
    /// Cluster size in bytes: qcow2 clusters (512 to 2097152), VMDK grains (4096 to
    /// 1048576); a power of two.
    #[arg(long, value_name = "BYTES", default_value_t = 65536)]
    pub cluster_size: u32,
    /// VHD variant: `fixed` (Azure's; the file is the virtual size + 512 bytes, zero runs
    /// stay holes) or `dynamic` (2 MiB blocks for the data only).
    #[arg(long, value_name = "KIND", default_value = "fixed", value_parser = ["fixed", "dynamic"])]
    pub vhd_subformat: String,
    /// fsync the output before exiting. Like `qemu-img convert`, imgscrub does not by
    /// default; either way the output appears under its name only once it is complete.
    #[arg(long)]
    pub sync: bool,
}

/// The output format: the one given, else from the output's suffix (`.vmdk`, `.vhd`/`.vpc`,
/// `.raw`), else qcow2 (`.img` too: it names raw and qcow2 files alike).
pub fn output_format(given: Option<&str>, out: &std::path::Path) -> String {
    if let Some(f) = given {
        return f.to_string();
    }
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "vmdk" => "vmdk",
        "vhd" | "vpc" => "vhd",
        "raw" => "raw",
        _ => "qcow2",
    }
    .to_string()
}

impl OutputArgs {
    /// Options for an output of `format` (`qcow2`, `raw`, `vmdk` or `vhd`).
    pub fn convert_options(&self, format: &str) -> Result<ConvertOptions<'static>> {
        let format = match format {
            "raw" => OutputFormat::Raw,
            "vmdk" => OutputFormat::Vmdk,
            "vhd" if self.vhd_subformat == "dynamic" => OutputFormat::VhdDynamic,
            "vhd" => OutputFormat::VhdFixed,
            _ => OutputFormat::Qcow2,
        };
        let compression = match (format, self.compress.as_deref()) {
            (
                OutputFormat::Raw | OutputFormat::VhdFixed | OutputFormat::VhdDynamic,
                None | Some("none"),
            ) => Compression::None,
            (OutputFormat::Raw | OutputFormat::VhdFixed | OutputFormat::VhdDynamic, Some(c)) => {
                return Err(super::usage(format!(
                    "{} output cannot be compressed (--compress {c}): use qcow2 or vmdk",
                    format.as_str()
                )));
            }
            (OutputFormat::Vmdk, None | Some("zlib")) => Compression::Deflate,
            (OutputFormat::Vmdk, Some(c)) => {
                return Err(super::usage(format!(
                    "a streamOptimized VMDK is always deflate-compressed (--compress {c}): \
                     leave --compress out or say zlib"
                )));
            }
            (_, Some("zlib")) => Compression::Zlib,
            (_, Some("none")) => Compression::None,
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
  imgscrub convert --format raw disk.qcow2 disk.img
      a sparse raw file (zero runs stay holes)
  imgscrub convert --sparsify disk.qcow2 disk.vmdk
      streamOptimized VMDK (vSphere, OVA, AWS import): grains deflate-compressed on every core
  imgscrub convert disk.qcow2 disk.vhd
      fixed VHD (Azure, AWS): virtual size rounded up to a whole MiB, file = size + 512
  imgscrub convert --vhd-subformat dynamic disk.qcow2 disk.vhd
      dynamic VHD: only the 2 MiB blocks that hold data

Without --format the output format follows the output's suffix: .vmdk, .vhd (or .vpc) or
.raw; anything else (.img too) is qcow2. Inputs: raw, qcow2, VMDK (monolithicSparse, streamOptimized)
and VHD (fixed, dynamic), detected by their magic; other formats (VHDX, VDI, QED...) are
refused with the qemu-img command that converts them.

The same input and options always give a byte-identical output. The output is written under
a temporary name and renamed into place when complete; Ctrl-C stops the job and removes it
(exit status 130). An output that is the input, or its backing file, is refused.")]
pub struct ConvertArgs {
    /// The input image (raw, qcow2, VMDK or VHD; only read).
    pub input: PathBuf,
    /// The output image (created or replaced).
    pub output: PathBuf,
    /// Output format: qcow2, raw, vmdk (streamOptimized) or vhd (see --vhd-subformat).
    /// Default: from the output's suffix, else qcow2.
    #[arg(long, short = 'O', visible_alias = "output-format", value_name = "FORMAT", value_parser = ["qcow2", "raw", "vmdk", "vhd"])]
    pub format: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Treat the free space of ext2/3/4, FAT and swap, and partition gaps, as zeros.
    #[arg(long)]
    pub sparsify: bool,
    /// Do not detect the input format: read it as `raw`, `qcow2`, `vmdk` or `vhd` (`raw`
    /// reads any file byte for byte).
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
    let format = output_format(a.format.as_deref(), &a.output);
    let opts = a.out.convert_options(&format)?;
    let bar = Bar::new(a.quiet || a.json);
    let r = img.convert(&a.output, &opts, a.sparsify, &bar)?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let mut v = convert_json(&r);
        let input = std::fs::metadata(&a.input)?.len();
        v["seconds"] = secs.into();
        v["output_format"] = opts.format.as_str().into();
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
    /// Do not detect the format: read the image as `raw`, `qcow2`, `vmdk` or `vhd`.
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
