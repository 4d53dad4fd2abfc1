//! Image locks compatible with QEMU's.
//!
//! QEMU's file driver announces what it does with an image through open-file-description
//! (OFD) byte-range locks on the image file itself. Permission bit `i` is
//! 0 = consistent read, 1 = write, 2 = write unchanged, 3 = resize. A user holding
//! permission `i` keeps a shared lock on byte `100 + i`; a user that refuses to let others
//! have permission `i` keeps a shared lock on byte `200 + i`. Before using an image, a new
//! user checks (with a test for an exclusive lock) that nobody else locks byte `200 + i` for
//! each permission it wants, and nobody else locks byte `100 + i` for each permission it
//! refuses to share.
//!
//! imgscrub takes the same locks:
//!
//! | mode              | holds (bytes 100+i)          | refuses to share (200+i) |
//! |-------------------|------------------------------|--------------------------|
//! | [`LockMode::Write`] | consistent read, write, resize | write, resize          |
//! | [`LockMode::Read`]  | consistent read                | write, resize          |
//!
//! So a writing imgscrub refuses an image that QEMU (a VM, `qemu-io`, `qemu-nbd`,
//! `qemu-img` without `-U`) has open, and QEMU refuses to open for writing — or even for
//! reading without `-U` — an image imgscrub holds. The locks belong to the lock's own file
//! descriptor and disappear when it is closed (also when the process dies).

pub use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use std::fs::File;
use std::path::{Path, PathBuf};

/// First lock byte of the permissions a user holds.
pub const PERM_BASE: i64 = 100;
/// First lock byte of the permissions a user refuses to share.
pub const SHARED_BASE: i64 = 200;

/// QEMU's permission bits, by bit index.
const PERM_NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];
const CONSISTENT_READ: u32 = 1 << 0;
const WRITE: u32 = 1 << 1;
const RESIZE: u32 = 1 << 3;

/// What imgscrub means to do with the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Read it, and keep writers out meanwhile.
    Read,
    /// Write it (and grow it), with nobody else writing or resizing.
    Write,
}

impl LockMode {
    fn perms(self) -> u32 {
        match self {
            LockMode::Read => CONSISTENT_READ,
            LockMode::Write => CONSISTENT_READ | WRITE | RESIZE,
        }
    }
    fn unshared(self) -> u32 {
        WRITE | RESIZE
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (QEMU, another imgscrub…) uses the image in a conflicting way.
    #[error(
        "{}: in use by another process (it holds a QEMU image lock: {detail}); stop the VM, qemu-nbd or qemu-io using it first",
        path.display()
    )]
    InUse {
        /// The image.
        path: PathBuf,
        /// Which permission conflicts.
        detail: String,
    },
    /// The lock calls failed.
    #[error("{}: cannot lock the image: {what}: {errno}", path.display())]
    Io {
        /// The image.
        path: PathBuf,
        /// Which call.
        what: String,
        /// The error.
        errno: Errno,
    },
}

/// A held image lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct ImageLock {
    file: File,
    path: PathBuf,
    mode: LockMode,
}

fn flock_for(kind: i32, start: i64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        l_pid: 0,
    }
}

impl ImageLock {
    /// Take the locks of `mode` on the image at `path` (on a descriptor of the lock's own),
    /// then check that nobody else holds a conflicting one. Never waits.
    pub fn acquire(path: &Path, mode: LockMode) -> Result<ImageLock, LockError> {
        let file = File::open(path).map_err(|e| LockError::Io {
            path: path.to_path_buf(),
            what: "open".to_owned(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let lock = ImageLock {
            file,
            path: path.to_path_buf(),
            mode,
        };
        let (perms, unshared) = (mode.perms(), mode.unshared());
        for i in 0..PERM_NAMES.len() as u32 {
            if perms & (1 << i) != 0 {
                lock.set(libc::F_RDLCK, PERM_BASE + i64::from(i))?;
            }
            if unshared & (1 << i) != 0 {
                lock.set(libc::F_RDLCK, SHARED_BASE + i64::from(i))?;
            }
        }
        for (i, name) in PERM_NAMES.iter().enumerate() {
            let bit = 1u32 << i;
            if perms & bit != 0 && lock.locked_by_other(SHARED_BASE + i as i64)? {
                return Err(lock.in_use(format!("it does not share the \"{name}\" permission")));
            }
            if unshared & bit != 0 && lock.locked_by_other(PERM_BASE + i as i64)? {
                return Err(lock.in_use(format!("it holds the \"{name}\" permission")));
            }
        }
        Ok(lock)
    }

    /// The mode the lock was taken in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    fn in_use(&self, detail: String) -> LockError {
        LockError::InUse {
            path: self.path.clone(),
            detail,
        }
    }

    fn set(&self, kind: i32, byte: i64) -> Result<(), LockError> {
        let fl = flock_for(kind, byte);
        match fcntl(&self.file, FcntlArg::F_OFD_SETLK(&fl)) {
            Ok(_) => Ok(()),
            // A conflicting exclusive lock: someone refuses everything.
            Err(Errno::EAGAIN) | Err(Errno::EACCES) => {
                Err(self.in_use(format!("byte {byte} is locked exclusively")))
            }
            Err(errno) => Err(LockError::Io {
                path: self.path.clone(),
                what: format!("F_OFD_SETLK byte {byte}"),
                errno,
            }),
        }
    }

    /// True when another open file description holds a lock on `byte`.
    fn locked_by_other(&self, byte: i64) -> Result<bool, LockError> {
        let mut fl = flock_for(libc::F_WRLCK, byte);
        fcntl(&self.file, FcntlArg::F_OFD_GETLK(&mut fl)).map_err(|errno| LockError::Io {
            path: self.path.clone(),
            what: format!("F_OFD_GETLK byte {byte}"),
            errno,
        })?;
        Ok(i32::from(fl.l_type) != libc::F_UNLCK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_exclude_each_other_and_readers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let r1 = ImageLock::acquire(&p, LockMode::Read).unwrap();
        let r2 = ImageLock::acquire(&p, LockMode::Read).unwrap();
        let e = ImageLock::acquire(&p, LockMode::Write).unwrap_err();
        assert!(matches!(e, LockError::InUse { .. }), "{e}");
        drop((r1, r2));
        let w = ImageLock::acquire(&p, LockMode::Write).unwrap();
        assert_eq!(w.mode(), LockMode::Write);
        assert!(ImageLock::acquire(&p, LockMode::Read).is_err());
        assert!(ImageLock::acquire(&p, LockMode::Write).is_err());
        drop(w);
        ImageLock::acquire(&p, LockMode::Write).unwrap();
    }
}
