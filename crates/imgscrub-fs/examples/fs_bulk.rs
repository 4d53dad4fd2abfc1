//! Bulk edits on a bare filesystem image (no partition table) through the [`Filesystem`]
//! trait, for `benches/xfs-write.sh`: the engine's own cost, without a CLI process per file.
//!
//!   fs_bulk create IMAGE DIR COUNT     mkdir /DIR, create COUNT files of 100 bytes in it, flush
//!   fs_bulk remove IMAGE PATH          remove_tree /PATH (a/b/c), flush
//!
//! The filesystem (XFS or ext4) is found by its magic number. Prints the number of entries
//! and the seconds spent in the edits and in the flush.

use imgscrub_disk::RawFile;
use imgscrub_fs::filesystem::{NewAttr, Timestamp};
use imgscrub_fs::{Ext4, Filesystem, Xfs};
use std::process::ExitCode;
use std::time::Instant;

fn open(path: &str) -> Result<Box<dyn Filesystem>, String> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        f.read_exact(&mut magic)
            .map_err(|e| format!("{path}: {e}"))?;
    }
    let dev = RawFile::open_rw(path).map_err(|e| format!("{path}: {e}"))?;
    if &magic == b"XFSB" {
        Ok(Box::new(Xfs::open(dev, true).map_err(|e| e.to_string())?))
    } else {
        Ok(Box::new(Ext4::open(dev, true).map_err(|e| e.to_string())?))
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let usage = "usage: fs_bulk create IMAGE DIR COUNT | fs_bulk remove IMAGE DIR";
    let (verb, image, dir) = match args {
        [v, i, d, ..] => (v.as_str(), i.as_str(), d.as_bytes()),
        _ => return Err(usage.into()),
    };
    let mut fs = open(image)?;
    fs.set_clock(Some(Timestamp::new(1_700_000_000, 0)))
        .map_err(|e| e.to_string())?;
    let root = fs.root();
    let t0 = Instant::now();
    let n = match verb {
        "create" => {
            let count: u64 = args
                .get(3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| usage.to_string())?;
            let attr = NewAttr::default();
            let d = fs.mkdir(root, dir, &attr).map_err(|e| e.to_string())?;
            for i in 0..count {
                let f = fs
                    .create(d, format!("file-{i:06}").as_bytes(), &attr)
                    .map_err(|e| e.to_string())?;
                let body = format!("{i:0100}");
                fs.write(f, 0, &body.as_bytes()[..100])
                    .map_err(|e| e.to_string())?;
            }
            count + 1
        }
        "remove" => {
            // DIR may be a path ("srv/tree"): look up its parent.
            let mut parent = root;
            let parts: Vec<&[u8]> = dir
                .split(|b| *b == b'/')
                .filter(|p| !p.is_empty())
                .collect();
            let (last, up) = parts.split_last().ok_or_else(|| usage.to_string())?;
            for p in up {
                parent = fs
                    .lookup(parent, p)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{}: not found", String::from_utf8_lossy(p)))?;
            }
            fs.remove_tree(parent, last).map_err(|e| e.to_string())?
        }
        _ => return Err(usage.into()),
    };
    let edits = t0.elapsed();
    fs.flush().map_err(|e| e.to_string())?;
    println!(
        "{n} entries: edits {:.3} s, flush {:.3} s",
        edits.as_secs_f64(),
        (t0.elapsed() - edits).as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fs_bulk: {e}");
            ExitCode::FAILURE
        }
    }
}
