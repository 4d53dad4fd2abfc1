//! Backing files: name resolution, format detection, loop and depth limits.
//!
//! A backing file is opened read-only. Relative names are resolved against the directory of
//! the image that names them (as QEMU does). Each image of the chain is canonicalised and
//! compared with the images above it, so `a → b → a` is refused instead of recursing.

use crate::Qcow2;
use crate::error::{Qcow2Error, Result};
use crate::header::MAGIC;
use crate::image::OpenOptions;
use imgscrub_disk::{BlockDev, RawFile};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Resolve a stored backing name against the directory of `image`.
pub fn resolve(image: &Path, name: &[u8]) -> PathBuf {
    let p = Path::new(OsStr::from_bytes(name));
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        image
            .parent()
            .map(|d| d.join(p))
            .unwrap_or_else(|| p.to_path_buf())
    }
}

/// Open the backing file `path` with format `format` (from the header extension; probed from
/// the magic when absent). `chain` holds the canonical paths of the images above it.
pub fn open(
    path: &Path,
    format: Option<&str>,
    opts: &OpenOptions,
    chain: &mut Vec<PathBuf>,
) -> Result<Box<dyn BlockDev>> {
    let fmt = match format {
        Some(f) => f.to_owned(),
        None => probe(path)?,
    };
    match fmt.as_str() {
        "qcow2" => {
            let ro = OpenOptions {
                writable: false,
                ..opts.clone()
            };
            Ok(Box::new(Qcow2::open_in_chain(path, &ro, chain)?))
        }
        "raw" | "file" => {
            let canon = canonical(path)?;
            if chain.contains(&canon) {
                return Err(Qcow2Error::BackingLoop(canon));
            }
            Ok(Box::new(RawFile::open(path)?))
        }
        other => Err(Qcow2Error::Unsupported(format!(
            "backing file {} has format {other:?} (only qcow2 and raw are supported)",
            path.display()
        ))),
    }
}

/// Canonical path, for loop detection.
pub fn canonical(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path)
        .map_err(|e| Qcow2Error::io(format!("open backing file {}", path.display()), e))
}

fn probe(path: &Path) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)
        .map_err(|e| Qcow2Error::io(format!("open backing file {}", path.display()), e))?;
    let mut m = [0u8; 4];
    Ok(match f.read_exact_at(&mut m, 0) {
        Ok(()) if u32::from_be_bytes(m) == MAGIC => "qcow2".to_owned(),
        _ => "raw".to_owned(),
    })
}
