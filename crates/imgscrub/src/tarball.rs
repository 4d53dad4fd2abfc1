//! The guest tree as a tarball: `imgscrub export` and `imgscrub prepare --export-tar`.
//!
//! Both read the image only. The export walks the guest tree (the root and what the guest's
//! fstab mounts below it) through the same [`Guest`](crate::Guest) the other jobs use; with a
//! profile, the edits are staged in the copy-on-write overlay first and the tarball is taken
//! from that edited view, so the scrubbed files are not in it and the image is never written.

use crate::{Image, PrepareOutcome, Result};
use imgscrub_export::{ExportOptions, ExportReport};
use imgscrub_fs::{Filesystem, FsError, resolve};
use imgscrub_prepare::{Options as PrepareOptions, Profile};
use imgscrub_shrink::Progress;
use std::path::Path;

/// Where the export starts: the guest's `/`, or the directory `subtree` names (a guest
/// path; symlinks are followed inside the guest).
fn start(fs: &dyn Filesystem, subtree: Option<&[u8]>) -> Result<u64> {
    let Some(p) = subtree else {
        return Ok(fs.root());
    };
    let node = resolve(fs, p, true)?;
    if fs.stat(node)?.file_type != imgscrub_fs::filesystem::FileType::Directory {
        return Err(FsError::NotADirectory(String::from_utf8_lossy(p).into_owned()).into());
    }
    Ok(node)
}

impl Image {
    /// Write the guest tree (or the directory `subtree`) to `out` as a pax tarball. The
    /// image is only read; `out` appears under its name once complete and may not be the
    /// image or one of its backing files. The report's warnings include the fstab lines
    /// that could not be followed (what is below those mount points is not in the archive).
    pub fn export(
        &self,
        out: &Path,
        subtree: Option<&[u8]>,
        partition: Option<u32>,
        opts: &ExportOptions,
        progress: &dyn Progress,
    ) -> Result<ExportReport> {
        self.check_output(out)?;
        let g = self.guest(partition, false)?;
        let node = start(g.fs(), subtree)?;
        let mut report = imgscrub_export::export_tar(g.fs(), node, out, opts, progress)?;
        report.warnings.splice(0..0, g.warnings().iter().cloned());
        Ok(report)
    }

    /// [`Image::export`] into a stream (standard output, a pipe) instead of a file.
    pub fn export_to_writer<W: std::io::Write + Send>(
        &self,
        w: W,
        subtree: Option<&[u8]>,
        partition: Option<u32>,
        opts: &ExportOptions,
        progress: &dyn Progress,
    ) -> Result<ExportReport> {
        let g = self.guest(partition, false)?;
        let node = start(g.fs(), subtree)?;
        let mut report = imgscrub_export::export_to_writer(g.fs(), node, w, opts, progress)?;
        report.warnings.splice(0..0, g.warnings().iter().cloned());
        Ok(report)
    }

    /// One pass: apply `profile` on a staging overlay (the image is only read; nothing is
    /// committed) and write the edited guest tree to `out` as a pax tarball.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_export(
        &self,
        profile: &Profile,
        popts: &PrepareOptions,
        partition: Option<u32>,
        out: &Path,
        subtree: Option<&[u8]>,
        opts: &ExportOptions,
        progress: &dyn Progress,
    ) -> Result<(PrepareOutcome, ExportReport)> {
        self.check_output(out)?;
        let mut g = self.guest(partition, true)?;
        let mut report = imgscrub_prepare::prepare(g.fs_mut(), profile, popts)?;
        if report
            .operations
            .iter()
            .any(|o| o == imgscrub_prepare::LVM_UUIDS)
        {
            report.warnings.push(format!(
                "{}: a disk-level operation; a tarball has no disk, nothing done",
                imgscrub_prepare::LVM_UUIDS
            ));
        }
        report.warnings.extend(g.warnings().iter().cloned());
        let part = g.volume().partition;
        let bytes_changed = g.stage()?;
        let node = start(g.fs(), subtree)?;
        let mut exp = imgscrub_export::export_tar(g.fs(), node, out, opts, progress)?;
        exp.warnings.splice(0..0, g.warnings().iter().cloned());
        Ok((
            PrepareOutcome {
                report,
                bytes_changed,
                partition: part,
            },
            exp,
        ))
    }
}
