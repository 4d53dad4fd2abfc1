//! `imgscrub export`: the guest tree as a tarball.

use super::human_size;
use crate::progress::Bar;
use anyhow::Result;
use imgscrub::export::{Compress, ExportOptions, ExportReport};
use imgscrub::{Format, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `imgscrub export`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub export disk.qcow2 rootfs.tar.zst
      the whole guest tree (/ and what its fstab mounts: /boot, /boot/efi…), zstd on every core
  imgscrub export --path /etc disk.img etc.tar.gz
      one directory of the guest (it becomes the archive's ./)
  imgscrub export disk.qcow2 - | docker import - myimage:latest
      to standard output (uncompressed unless --tar-compress), straight into container tooling
  imgscrub prepare disk.qcow2 --profile lx-centos --export-tar rootfs.tar.zst
      scrub and export in one pass; the image is only read

The archive is POSIX pax, read by GNU tar and bsdtar: regular files, directories, symbolic
links, hard links (the first path as a file, the others as links), devices, FIFOs, numeric
owners (no user names), permission bits including setuid/setgid/sticky, modification times
with nanoseconds, and extended attributes (security.selinux, security.capability, POSIX
ACLs as system.posix_acl_*) as SCHILY.xattr records. Zero runs of 64 KiB or more are stored
as holes (GNU.sparse 1.0). Sockets are skipped with a warning. Extract it as root with
  tar --xattrs --xattrs-include='*' --numeric-owner -xpf rootfs.tar.zst -C DIR
Entries are in byte order of their paths and nothing depends on the clock: the same image
gives the same bytes. Compression: by the name (.tar, .tar.gz/.tgz, .tar.zst/.tzst) or
--compress (--tar-compress in `prepare`). The archive is written under a temporary name and renamed into place when
complete; Ctrl-C removes it (exit status 130). The image itself is refused as the output.")]
pub struct Args {
    /// The disk image (raw or qcow2; only read).
    pub image: PathBuf,
    /// The tarball to write (created or replaced), or `-` for standard output.
    pub output: PathBuf,
    /// Export this guest directory instead of the whole tree.
    #[arg(long, value_name = "GUEST_DIR")]
    pub path: Option<PathBuf>,
    /// Compression: none, gzip or zstd (default: from the name's suffix).
    #[arg(long, alias = "tar-compress", value_name = "ALGO")]
    pub compress: Option<Compress>,
    /// Compression level (gzip 1–9, default 6; zstd 1–19, default 3).
    #[arg(long, alias = "tar-level", value_name = "N")]
    pub level: Option<i32>,
    /// Export this partition alone (no fstab mounts) instead of the root found automatically.
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Do not detect the format: read the image as `raw` or `qcow2`.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// fsync the archive before exiting.
    #[arg(long)]
    pub sync: bool,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
    /// Quiet: no progress bar and no summary line (errors and warnings are still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Compression options of a tarball (`export`, `prepare --export-tar`).
#[derive(clap::Args, Debug)]
pub struct TarArgs {
    /// Compression of the tarball: none, gzip or zstd (default: from the name's suffix).
    #[arg(
        long = "tar-compress",
        visible_alias = "compress-tar",
        value_name = "ALGO"
    )]
    pub tar_compress: Option<Compress>,
    /// Compression level of the tarball (gzip 1–9, default 6; zstd 1–19, default 3).
    #[arg(long = "tar-level", value_name = "N")]
    pub tar_level: Option<i32>,
}

impl TarArgs {
    /// The export options for the tarball `out`.
    pub fn options(&self, out: &Path, sync: bool) -> Result<ExportOptions> {
        let by_name = if out.as_os_str() == "-" {
            Some(Compress::None)
        } else {
            Compress::from_name(out)
        };
        let compress = match self.tar_compress.or(by_name) {
            Some(c) => c,
            None => {
                return Err(super::usage(format!(
                    "{}: name the tarball .tar, .tar.gz or .tar.zst, or give the compression (none, gzip or zstd)",
                    out.display()
                )));
            }
        };
        Ok(ExportOptions {
            compress,
            level: self.tar_level,
            sync,
        })
    }
}

/// The JSON summary of an export.
pub fn export_json(r: &ExportReport, out: &Path, compress: Compress) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["output"] = out.display().to_string().into();
    v["compression"] = compress.as_str().into();
    v
}

/// The summary line of an export.
pub fn summary(r: &ExportReport) -> String {
    let mut s = format!(
        "{} entries ({} files, {} directories, {} links, {} hard links",
        r.entries, r.files, r.directories, r.symlinks, r.hard_links
    );
    if r.devices + r.fifos > 0 {
        s += &format!(", {} devices and FIFOs", r.devices + r.fifos);
    }
    s += &format!(
        "), {} of content, archive {}",
        human_size(r.content_bytes),
        human_size(r.output_size)
    );
    s
}

pub fn run(a: &Args) -> Result<()> {
    let start = Instant::now();
    let tar = TarArgs {
        tar_compress: a.compress,
        tar_level: a.level,
    };
    let opts = tar.options(&a.output, a.sync)?;
    if a.output == a.image || imgscrub::shrink::same_file(&a.output, &a.image) {
        anyhow::bail!(
            "{}: the output is the same file as the image (choose another output path)",
            a.output.display()
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
    let sub = a.path.as_ref().map(|p| p.as_os_str().as_bytes());
    let r = if a.output.as_os_str() == "-" {
        use std::io::IsTerminal;
        let out = std::io::stdout();
        if out.is_terminal() {
            return Err(super::usage(
                "refusing to write a tarball to a terminal: redirect standard output or name a file",
            ));
        }
        if a.json {
            return Err(super::usage(
                "--json goes to standard output, which the tarball uses: name a file",
            ));
        }
        img.export_to_writer(out, sub, a.partition, &opts, &bar)?
    } else {
        img.export(&a.output, sub, a.partition, &opts, &bar)?
    };
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        let mut v = export_json(&r, &a.output, opts.compress);
        v["seconds"] = secs.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for w in &r.warnings {
            super::warn_later(w.clone());
        }
        if !a.quiet {
            eprintln!(
                "{} -> {}: {} in {secs:.2} s",
                a.image.display(),
                a.output.display(),
                summary(&r)
            );
        }
    }
    Ok(())
}
