//! The output file of a conversion: written under a temporary name next to its destination
//! and renamed into place only when it is complete.
//!
//! Why not create-and-truncate the destination, as `qemu-img convert` does:
//!
//! - A failed or interrupted conversion leaves nothing under the destination's name (and an
//!   existing file there is untouched until the new one is complete); the temporary file is
//!   removed on every error.
//! - The input can never be truncated under our feet. `convert disk.raw ./disk.raw` or an
//!   output that is a hard link to the input (or to a backing file) used to truncate the
//!   input before reading it; the facade refuses those by device and inode numbers
//!   ([`same_file`]), and even without that check the input's inode is only ever read.
//!
//! A destination that is a symbolic link is followed: the file it points to is replaced, not
//! the link. A destination that exists but is not a regular file (a block device, a
//! directory, a FIFO) is refused: imgscrub writes image files.
//!
//! The new file gets the mode a new file gets (0666 minus the umask); like `qemu-img convert`,
//! nothing is fsynced unless asked ([`OutputFile::commit`] with `sync`).

use crate::error::{Result, ShrinkError};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// An output image being written. Dropping it without [`OutputFile::commit`] removes the
/// temporary file.
#[derive(Debug)]
pub struct OutputFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl OutputFile {
    /// Create a temporary file in the destination's directory.
    pub fn create(dest: &Path) -> Result<Self> {
        let dest = resolve(dest)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ShrinkError::Output {
                path: dest.clone(),
                reason: "not a file name",
            })?;
        let pid = std::process::id();
        let mut attempt = 0u32;
        loop {
            let tmp = dir.join(format!(".{name}.imgscrub-{pid}-{attempt}.tmp"));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(OutputFile {
                        file,
                        tmp,
                        dest,
                        committed: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(ShrinkError::io(
                        format!("create {} (next to {})", tmp.display(), dest.display()),
                        e,
                    ));
                }
            }
        }
    }

    /// The open file (written with positional writes).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The name the finished file will have.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Give the file its final name. With `sync`, the data is fsynced first and the
    /// directory after the rename, so that the new file survives a crash.
    pub fn commit(mut self, sync: bool) -> Result<()> {
        if sync {
            self.file
                .sync_all()
                .map_err(|e| ShrinkError::io(format!("fsync {}", self.tmp.display()), e))?;
        }
        let exchanged = replace(&self.tmp, &self.dest).map_err(|e| {
            ShrinkError::io(
                format!("rename {} to {}", self.tmp.display(), self.dest.display()),
                e,
            )
        })?;
        self.committed = true;
        if sync {
            let dir = match self.dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ShrinkError::io(format!("fsync {}", dir.display()), e))?;
        }
        if exchanged {
            // The temporary name now holds the previous file.
            std::fs::remove_file(&self.tmp).map_err(|e| {
                ShrinkError::io(format!("remove the replaced {}", self.tmp.display()), e)
            })?;
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that got us here is the one worth reporting.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Put `tmp` in place of `dest` atomically. Returns true when an existing `dest` was
/// exchanged with `tmp` (the caller removes `tmp`, now the old file), false after a plain
/// rename.
///
/// Why exchange rather than rename over: when a rename replaces an existing file, ext4 (with
/// its default `auto_da_alloc`) starts writeback of the whole new file inside `rename()`, which
/// costs about what an fsync does; `RENAME_EXCHANGE` followed by removing the old file is just
/// as atomic (the name always holds a complete file) without that. Filesystems without
/// `RENAME_EXCHANGE` get the plain rename.
fn replace(tmp: &Path, dest: &Path) -> io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(CWD, tmp, CWD, dest, RenameFlags::EXCHANGE) {
        Ok(()) => Ok(true),
        // No file to exchange with, or no support for exchanging here.
        Err(Errno::NOENT | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            std::fs::rename(tmp, dest).map(|()| false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The path to replace: `dest` itself, or the file a symbolic link at `dest` points to.
/// Refuses an existing destination that is not a regular file.
fn resolve(dest: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(dest.to_path_buf()),
        Err(e) => Err(ShrinkError::io(format!("stat {}", dest.display()), e)),
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(dest) {
            Ok(target) => resolve(&target),
            // A dangling link: create the file it names.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let target = std::fs::read_link(dest)
                    .map_err(|e| ShrinkError::io(format!("readlink {}", dest.display()), e))?;
                let target = match dest.parent() {
                    Some(p) if target.is_relative() => p.join(target),
                    _ => target,
                };
                if std::fs::symlink_metadata(&target).is_ok() {
                    // A link to a link that loops or dangles further: do not chase it.
                    return Err(ShrinkError::Output {
                        path: dest.to_path_buf(),
                        reason: "a symbolic link that cannot be resolved",
                    });
                }
                Ok(target)
            }
            Err(e) => Err(ShrinkError::io(format!("resolve {}", dest.display()), e)),
        },
        Ok(m) if m.file_type().is_file() => Ok(dest.to_path_buf()),
        Ok(_) => Err(ShrinkError::Output {
            path: dest.to_path_buf(),
            reason: "exists and is not a regular file (imgscrub writes image files)",
        }),
    }
}

/// True when `a` and `b` name the same existing file (same device and inode), through any
/// path, hard link or symbolic link. False when either does not exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn committed_file_replaces_the_destination_and_a_dropped_one_vanishes() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.img");
        std::fs::write(&dest, b"old").unwrap();
        let o = OutputFile::create(&dest).unwrap();
        o.file().write_all(b"new").unwrap();
        // Until the commit, the old file is untouched.
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(names(d.path()).len(), 2);
        o.commit(true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(names(d.path()), ["out.img"]);

        let o = OutputFile::create(&dest).unwrap();
        o.file().write_all(b"half").unwrap();
        drop(o);
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(names(d.path()), ["out.img"]);
    }

    #[test]
    fn symlinks_are_followed_and_non_files_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.img");
        std::fs::write(&real, b"old").unwrap();
        let link = d.path().join("link.img");
        std::os::unix::fs::symlink("real.img", &link).unwrap();
        let o = OutputFile::create(&link).unwrap();
        o.file().write_all(b"new").unwrap();
        o.commit(false).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).unwrap(), b"new");

        // A dangling link creates its target.
        let dangling = d.path().join("dangling.img");
        std::os::unix::fs::symlink("made.img", &dangling).unwrap();
        OutputFile::create(&dangling)
            .unwrap()
            .commit(false)
            .unwrap();
        assert!(d.path().join("made.img").is_file());

        let e = OutputFile::create(d.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = OutputFile::create(Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn same_file_sees_through_links_and_dot_paths() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.img");
        std::fs::write(&a, b"x").unwrap();
        let hard = d.path().join("hard.img");
        std::fs::hard_link(&a, &hard).unwrap();
        let dotted = d.path().join(".").join("a.img");
        assert!(same_file(&a, &hard));
        assert!(same_file(&a, &dotted));
        assert!(!same_file(&a, &d.path().join("missing.img")));
        std::fs::write(d.path().join("b.img"), b"x").unwrap();
        assert!(!same_file(&a, &d.path().join("b.img")));
    }
}
