//! A stand-in for `imgscrub convert` until the CLI wires the library in (benches/shrink.sh
//! uses it):
//!
//! ```text
//! convert IN OUT [--format qcow2|raw] [--compress zstd|zlib|none] [--level N]
//!                [--cluster-size BYTES] [--sparsify] [--sync]
//! ```
//!
//! IN is a raw image (opened read-only). With `--sparsify` the free space of its
//! filesystems and partition gaps is not read and reads as zeros in OUT.

use imgscrub_disk::RawFile;
use imgscrub_shrink::{
    Compression, ConvertOptions, NoProgress, OutputFormat, convert, free_ranges_of_disk,
};
use std::process::ExitCode;
use std::time::Instant;

fn usage() -> ExitCode {
    eprintln!(
        "usage: convert IN OUT [--format qcow2|raw] [--compress zstd|zlib|none] [--level N] \
         [--cluster-size BYTES] [--sparsify] [--sync]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut opts = ConvertOptions::default();
    let mut sparsify = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--format" => {
                opts.format = match val().as_str() {
                    "qcow2" => OutputFormat::Qcow2,
                    "raw" => {
                        opts.compression = Compression::None;
                        OutputFormat::Raw
                    }
                    _ => return usage(),
                }
            }
            "--compress" => {
                opts.compression = match val().as_str() {
                    "zstd" => Compression::Zstd,
                    "zlib" => Compression::Zlib,
                    "none" => Compression::None,
                    _ => return usage(),
                }
            }
            "--level" => match val().parse() {
                Ok(l) => opts.level = Some(l),
                Err(_) => return usage(),
            },
            "--cluster-size" => match val().parse() {
                Ok(c) => opts.cluster_size = c,
                Err(_) => return usage(),
            },
            "--sparsify" => sparsify = true,
            "--sync" => opts.sync = true,
            s if s.starts_with("--") => return usage(),
            _ => pos.push(a.clone()),
        }
    }
    let [input, output] = pos.as_slice() else {
        return usage();
    };
    let t0 = Instant::now();
    let mut t_free = 0.0;
    let result = (|| -> imgscrub_shrink::Result<_> {
        let dev = RawFile::open(input)?;
        let free = if sparsify {
            Some(free_ranges_of_disk(&dev)?)
        } else {
            None
        };
        t_free = t0.elapsed().as_secs_f64();
        let o = ConvertOptions {
            skip: free.as_ref(),
            ..opts
        };
        convert(&dev, output.as_ref(), &o, &NoProgress)
    })();
    match result {
        Ok(r) => {
            println!(
                "{{\"seconds\": {:.3}, \"free_map_seconds\": {t_free:.3}, \"virtual_size\": {}, \"bytes_read\": {}, \"bytes_skipped\": {}, \
                 \"output_size\": {}, \"clusters\": {}, \"zero\": {}, \"compressed\": {}, \"raw\": {}}}",
                t0.elapsed().as_secs_f64(),
                r.virtual_size,
                r.bytes_read,
                r.bytes_skipped,
                r.output_size,
                r.clusters,
                r.clusters_zero,
                r.clusters_compressed,
                r.clusters_raw
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("convert: {e}");
            ExitCode::FAILURE
        }
    }
}
