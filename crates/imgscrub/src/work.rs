//! The jobs: edit the guest tree, prepare it with a profile, zero free space, convert.
//!
//! Every edit runs on a copy-on-write [`Overlay`] over the image. Only when the whole job
//! succeeded are the changed blocks written to the image ([`Guest::commit`]), so a failing
//! job leaves the image as it was; a dry run throws the overlay away. The image device of a
//! writable [`Image`] is itself staged at the file level, and its flush (the end of
//! [`Guest::commit`]) applies everything atomically through a redo log, so a crash during the
//! commit leaves the original or the fully changed image after the next open (see
//! `docs/safety.md`). `prepare --output` never writes the input at all: the prepared overlay
//! is converted straight into the new image, and the blocks that are free after the scrub are
//! never read.

use crate::{Error, Image, Result};
use imgscrub_disk::{BlockDev, Overlay};
use imgscrub_fs::Filesystem;
use imgscrub_fs::guest::{Dev, Volume, open_root};
use imgscrub_prepare::{Options as PrepareOptions, Profile, Report as PrepareReport};
use imgscrub_shrink::{
    ConvertOptions, ConvertReport, Progress, SparsifyOptions, SparsifyReport, free_ranges_of_disk,
};
use std::path::Path;
use std::sync::Arc;

/// The guest's root filesystem (or a chosen partition), opened over a staging overlay.
pub struct Guest<'a> {
    image: &'a Image,
    overlay: Arc<Overlay<Dev>>,
    fs: Box<dyn Filesystem>,
    volume: Volume,
}

impl Guest<'_> {
    /// The filesystem (reads see staged edits).
    pub fn fs(&self) -> &dyn Filesystem {
        self.fs.as_ref()
    }

    /// The filesystem, for edits (staged until [`Guest::commit`]).
    pub fn fs_mut(&mut self) -> &mut dyn Filesystem {
        self.fs.as_mut()
    }

    /// Which partition this is and what the probe found.
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    /// The staged disk (the image plus every staged change), e.g. to convert it.
    pub fn staged_device(&self) -> Dev {
        self.overlay.clone()
    }

    /// Flush the filesystem's metadata into the overlay; returns the bytes that differ from
    /// the image.
    pub fn stage(&mut self) -> Result<u64> {
        self.fs.flush()?;
        Ok(self.overlay.dirty_ranges().iter().map(|r| r.1).sum())
    }

    /// Stage, then write the changed blocks to the image and flush it; the flush commits
    /// them atomically through the image's redo log. Returns the bytes written. The image
    /// must have been opened for writing.
    pub fn commit(mut self) -> Result<u64> {
        let changed = self.stage()?;
        if changed > 0 {
            let disk = self.image.device();
            if disk.is_read_only() {
                return Err(Error::ReadOnly {
                    path: self.image.path().to_path_buf(),
                });
            }
            self.overlay.commit_to(disk.as_ref())?;
            disk.flush()?;
        }
        Ok(changed)
    }

    /// Stage and throw away (dry run). Returns the bytes that would have changed.
    pub fn discard(mut self) -> Result<u64> {
        self.stage()
    }
}

/// What [`Image::prepare`] did.
#[derive(Debug, serde::Serialize)]
pub struct PrepareOutcome {
    /// Every step, with paths and bytes.
    pub report: PrepareReport,
    /// Bytes of the image changed (or that would change, in a dry run).
    pub bytes_changed: u64,
    /// The partition prepared (`None`: a disk without partition table).
    pub partition: Option<u32>,
}

impl Image {
    /// Open the guest's root filesystem (found automatically: the ext2/3/4 volume holding
    /// `/etc/os-release` or `/etc/fstab`), or `partition`. With `edit`, the filesystem is
    /// opened for editing (the engine refuses what it cannot edit safely, saying why);
    /// edits are staged until [`Guest::commit`].
    pub fn guest(&self, partition: Option<u32>, edit: bool) -> Result<Guest<'_>> {
        let overlay = Arc::new(Overlay::new(self.device().clone()));
        let staged: Dev = overlay.clone();
        let (volume, fs) = open_root(&staged, partition, edit)?;
        Ok(Guest {
            image: self,
            overlay,
            fs,
            volume,
        })
    }

    /// Apply `profile` to the guest in place (or only plan it with `opts.dry_run`).
    pub fn prepare(
        &self,
        profile: &Profile,
        opts: &PrepareOptions,
        partition: Option<u32>,
    ) -> Result<PrepareOutcome> {
        let mut g = self.guest(partition, true)?;
        let report = imgscrub_prepare::prepare(g.fs_mut(), profile, opts)?;
        let part = g.volume().partition;
        let bytes_changed = if opts.dry_run {
            g.discard()?
        } else {
            g.commit()?
        };
        Ok(PrepareOutcome {
            report,
            bytes_changed,
            partition: part,
        })
    }

    /// One pass: prepare the guest on a staging overlay (the image is only read) and write
    /// the result to `out`, never reading the blocks that are free after the scrub.
    pub fn prepare_to(
        &self,
        profile: &Profile,
        opts: &PrepareOptions,
        partition: Option<u32>,
        out: &Path,
        convert: &ConvertOptions<'_>,
        progress: &dyn Progress,
    ) -> Result<(PrepareOutcome, ConvertReport)> {
        let mut g = self.guest(partition, true)?;
        let report = imgscrub_prepare::prepare(g.fs_mut(), profile, opts)?;
        let part = g.volume().partition;
        let bytes_changed = g.stage()?;
        let staged = g.staged_device();
        let free = free_ranges_of_disk(staged.as_ref())?;
        let copts = ConvertOptions {
            skip: Some(&free),
            ..*convert
        };
        let conv = imgscrub_shrink::convert(staged.as_ref(), out, &copts, progress)?;
        Ok((
            PrepareOutcome {
                report,
                bytes_changed,
                partition: part,
            },
            conv,
        ))
    }

    /// Make the free space of every filesystem, swap area and partition gap read as zeros,
    /// in place. The image must be opened for writing.
    pub fn sparsify(
        &self,
        opts: &SparsifyOptions<'_>,
        progress: &dyn Progress,
    ) -> Result<SparsifyReport> {
        let disk = self.device();
        if disk.is_read_only() {
            return Err(Error::ReadOnly {
                path: self.path().to_path_buf(),
            });
        }
        let report = imgscrub_shrink::sparsify(disk.as_ref(), opts, progress)?;
        disk.flush()?;
        Ok(report)
    }

    /// Convert the image to `out` (qcow2 or raw). With `sparsify`, free space reads as zeros
    /// in the output and is never read.
    pub fn convert(
        &self,
        out: &Path,
        opts: &ConvertOptions<'_>,
        sparsify: bool,
        progress: &dyn Progress,
    ) -> Result<ConvertReport> {
        let disk = self.device();
        if sparsify {
            let free = free_ranges_of_disk(disk.as_ref())?;
            let o = ConvertOptions {
                skip: Some(&free),
                ..*opts
            };
            Ok(imgscrub_shrink::convert(disk.as_ref(), out, &o, progress)?)
        } else {
            Ok(imgscrub_shrink::convert(
                disk.as_ref(),
                out,
                opts,
                progress,
            )?)
        }
    }
}
