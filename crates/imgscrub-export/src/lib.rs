//! The guest tree of an image as a POSIX (pax) tarball: what `imgscrub export` and
//! `imgscrub prepare --export-tar` write, for container tooling (`docker import`), SmartOS LX
//! image builders and anything else that takes a root-filesystem tarball.
//!
//! [`write_tar`] walks any [`Filesystem`] (a `GuestTree` joins the mounts of the guest's
//! fstab) from a starting directory and writes every entry in byte order of its path:
//! directories, regular files, symbolic links, hard links (the first path as a file, the
//! others as links to it), character and block devices and FIFOs, with numeric owners,
//! permission bits, modification times (pax `mtime` with nanoseconds when they are not zero)
//! and extended attributes as pax `SCHILY.xattr.NAME` records — the form GNU tar
//! (`--xattrs`) and bsdtar read — including `security.selinux`, `security.capability` and
//! POSIX ACLs in Linux's `system.posix_acl_access`/`_default` value format. Runs of at least
//! [`HOLE_MIN`] zero bytes in a file are stored as holes (pax GNU.sparse 1.0), so a sparse
//! file stays small in the archive and sparse when extracted. Sockets cannot be archived and
//! are skipped with a warning, as GNU tar does.
//!
//! The archive is a function of the tree alone: no clock, no user database, no process id,
//! so the same image gives the same bytes ([`export_tar`] compresses deterministically too).
//! Memory stays bounded whatever the tree: files are read in chunks of [`CHUNK`] bytes, the
//! walk holds one directory listing per level, and only files with several links are
//! remembered (to write the later paths as links).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod sink;
pub mod tar;
mod walk;

pub use sink::Compress;
pub use walk::{CHUNK, HOLE_MIN, write_tar};

use imgscrub_fs::{FsError, NodeId, filesystem::Filesystem};
use imgscrub_shrink::{OutputFile, Progress, ShrinkError};
use std::path::Path;

/// Errors of the export. Each says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the guest tree failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The output file could not be created or renamed into place, or the job was cancelled.
    #[error(transparent)]
    Shrink(#[from] ShrinkError),
    /// Writing or compressing the archive failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being written.
        what: String,
        /// The OS or compressor error.
        #[source]
        source: std::io::Error,
    },
    /// One guest file cannot be archived as it is (a device number too large for tar, a
    /// file that reads shorter than its size).
    #[error("{path}: {reason}")]
    Entry {
        /// The guest path.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Result with [`ExportError`].
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// How to write the archive.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportOptions {
    /// Compression of the whole archive.
    pub compress: Compress,
    /// Compression level (gzip 1–9, default 6; zstd 1–19, default 3).
    pub level: Option<i32>,
    /// fsync the archive before renaming it into place.
    pub sync: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportReport {
    /// Archive entries (every path, links included; pax headers not counted).
    pub entries: u64,
    /// Directories (the starting one included).
    pub directories: u64,
    /// Regular files written with their data.
    pub files: u64,
    /// Regular files among them stored with holes (GNU.sparse 1.0).
    pub sparse_files: u64,
    /// Later paths of files with several links, written as hard links.
    pub hard_links: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Character and block devices.
    pub devices: u64,
    /// FIFOs.
    pub fifos: u64,
    /// Sockets skipped (tar cannot hold them).
    pub sockets_skipped: u64,
    /// Extended attributes written (ACLs and SELinux labels included).
    pub xattrs: u64,
    /// Bytes of file content (the apparent sizes of the files written with data).
    pub content_bytes: u64,
    /// Of those, bytes stored as holes.
    pub hole_bytes: u64,
    /// Size of the uncompressed archive.
    pub tar_bytes: u64,
    /// Size of the file written (compressed).
    pub output_size: u64,
    /// What could not be archived as it is (sockets…).
    pub warnings: Vec<String>,
}

/// Write the tree below `start` of `fs` into `w` (a pipe, standard output), compressed as
/// `opts.compress` says (`opts.sync` does not apply). On an error or cancellation the
/// stream stops part-way: the reader sees a truncated archive.
pub fn export_to_writer<W: std::io::Write + Send>(
    fs: &dyn Filesystem,
    start: NodeId,
    w: W,
    opts: &ExportOptions,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let counted = std::sync::atomic::AtomicU64::new(0);
    let w = Counter { w, n: &counted };
    let mut report = sink::pipe(w, opts.compress, opts.level, |s| {
        write_tar(fs, start, s, progress).map(|(r, _)| r)
    })?;
    report.output_size = counted.load(std::sync::atomic::Ordering::Relaxed);
    Ok(report)
}

/// Counts the bytes that reach the writer.
struct Counter<'a, W> {
    w: W,
    n: &'a std::sync::atomic::AtomicU64,
}

impl<W: std::io::Write> std::io::Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n
            .fetch_add(k as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// Write the tree below `start` of `fs` to the file `out` (under a temporary name, renamed
/// into place once complete; removed on any error or cancellation), compressed as
/// `opts.compress` says. `progress` sees one phase, "export", counted in bytes of file
/// content.
pub fn export_tar(
    fs: &dyn Filesystem,
    start: NodeId,
    out: &Path,
    opts: &ExportOptions,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let file = OutputFile::create(out)?;
    let name = file.dest().display().to_string();
    let sink = sink::Sink::new(file.file(), opts.compress, opts.level).map_err(|source| {
        ExportError::Io {
            what: format!("start the {} compressor for {name}", opts.compress),
            source,
        }
    })?;
    let (mut report, sink) = write_tar(fs, start, sink, progress)?;
    sink.finish().map_err(|source| ExportError::Io {
        what: format!("finish {name}"),
        source,
    })?;
    report.output_size = file
        .file()
        .metadata()
        .map_err(|source| ExportError::Io {
            what: format!("stat {name}"),
            source,
        })?
        .len();
    if progress.cancelled() {
        return Err(ShrinkError::Cancelled.into());
    }
    file.commit(opts.sync)?;
    Ok(report)
}
