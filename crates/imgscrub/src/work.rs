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
use imgscrub_disk::lvm::{self, derived_uuid};
use imgscrub_disk::{BlockDev, DiskError, Overlay};
use imgscrub_fs::guest::{Dev, Volume, lvm_scan, open_root, open_volume, volumes};
use imgscrub_fs::{Filesystem, GuestTree, resolve};
use imgscrub_prepare::{DeviceSpec, DiskStep, IdChange, LVM_UUIDS};
use imgscrub_prepare::{Options as PrepareOptions, Profile, Report as PrepareReport};
use imgscrub_shrink::{
    ConvertOptions, ConvertReport, Progress, SparsifyOptions, SparsifyReport, free_ranges_of_disk,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The guest's root filesystem (or a chosen partition), opened over a staging overlay.
pub struct Guest<'a> {
    image: &'a Image,
    overlay: Arc<Overlay<Dev>>,
    fs: Box<dyn Filesystem>,
    volume: Volume,
    mounted: Vec<(String, Volume)>,
    warnings: Vec<String>,
}

impl Guest<'_> {
    /// The filesystems mounted below the root from the guest's `/etc/fstab` (mount point,
    /// volume), in mount order.
    pub fn mounted(&self) -> &[(String, Volume)] {
        &self.mounted
    }

    /// fstab lines that could not be followed (device not found, a filesystem imgscrub
    /// cannot open…): what is below those mount points was not edited.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

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

/// Which of `vols` an fstab device names.
fn find_volume<'v>(vols: &'v [Volume], dev: &DeviceSpec) -> Option<&'v Volume> {
    let by_uuid = |u: &str| {
        vols.iter().find(|v| {
            v.probe
                .uuid
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(u))
        })
    };
    let by_label = |l: &str| vols.iter().find(|v| v.probe.label.as_deref() == Some(l));
    let by_partuuid = |p: &str| vols.iter().find(|v| v.part_uuid.eq_ignore_ascii_case(p));
    let by_partlabel = |p: &str| vols.iter().find(|v| v.part_name == p);
    match dev {
        DeviceSpec::Uuid(u) => by_uuid(u),
        DeviceSpec::Label(l) => by_label(l),
        DeviceSpec::Partuuid(p) => by_partuuid(p),
        DeviceSpec::Partlabel(p) => by_partlabel(p),
        DeviceSpec::Path(path) => {
            // LVM2: /dev/mapper/VG-LV (dashes doubled) and /dev/VG/LV.
            if let Some(v) = vols
                .iter()
                .find(|v| v.lv.as_ref().is_some_and(|l| l.matches_path(path)))
            {
                return Some(v);
            }
            if let Some(rest) = path.strip_prefix("/dev/disk/") {
                let (kind, id) = rest.split_once('/')?;
                return match kind {
                    "by-uuid" => by_uuid(id),
                    "by-label" => by_label(id),
                    "by-partuuid" => by_partuuid(id),
                    "by-partlabel" => by_partlabel(id),
                    _ => None,
                };
            }
            // /dev/sda2, /dev/vda2, /dev/xvda2, /dev/hda2; /dev/nvme0n1p2, /dev/mmcblk0p2.
            let name = path.strip_prefix("/dev/")?;
            let number = if name.starts_with("nvme") || name.starts_with("mmcblk") {
                name.rsplit_once('p')?.1
            } else if ["sd", "vd", "xvd", "hd"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                name.trim_start_matches(|c: char| !c.is_ascii_digit())
            } else {
                return None;
            };
            let n: u32 = number.parse().ok()?;
            vols.iter()
                .find(|v| v.partition == Some(n) && v.lv.is_none())
        }
        DeviceSpec::Other(_) => None,
    }
}

/// Filesystems mounted below the root: (mount point, volume).
type Mounted = Vec<(String, Volume)>;

/// Follow the guest's `/etc/fstab`: mount every other block filesystem of this disk at its
/// mount point, so that `/boot`, `/var` or the ESP at `/boot/efi` are edited where the guest
/// has them. Returns the root unchanged when fstab names nothing else.
fn join_fstab(
    staged: &Dev,
    root_volume: &Volume,
    root: Box<dyn Filesystem>,
    edit: bool,
) -> Result<(Box<dyn Filesystem>, Mounted, Vec<String>)> {
    let mut warnings = Vec::new();
    let os = match imgscrub_prepare::inspect(root.as_ref()) {
        Ok(os) => os,
        Err(e) => {
            warnings.push(format!("/etc/fstab not read: {e}"));
            return Ok((root, Vec::new(), warnings));
        }
    };
    let mounts = imgscrub_prepare::inspect::block_mounts(&os.fstab);
    if mounts.iter().all(|m| m.mount_point == "/") {
        return Ok((root, Vec::new(), warnings));
    }
    let vols = volumes(staged)?;
    let mut tree = GuestTree::new(root);
    let mut mounted = Vec::new();
    let mut used: Vec<u64> = vec![root_volume.offset];
    for m in mounts {
        if m.mount_point == "/" {
            continue;
        }
        let Some(vol) = find_volume(&vols, &m.device) else {
            warnings.push(format!(
                "fstab: no partition of this disk matches {:?} for {}; not edited",
                m.device, m.mount_point
            ));
            continue;
        };
        if used.contains(&vol.offset) {
            // Two engines over one filesystem would corrupt it: mount each volume once.
            warnings.push(format!(
                "fstab: {} is already mounted elsewhere; {} not mounted again",
                vol.describe(),
                m.mount_point
            ));
            continue;
        }
        let at = match resolve(&tree, m.mount_point.as_bytes(), true) {
            Ok(at) => at,
            Err(e) => {
                warnings.push(format!(
                    "fstab: mount point {} not usable ({e}); not edited",
                    m.mount_point
                ));
                continue;
            }
        };
        let fs = match open_volume(staged, vol, edit) {
            Ok(fs) => fs,
            Err(e) => {
                warnings.push(format!(
                    "fstab: {} ({}) at {} not opened: {e}",
                    vol.describe(),
                    vol.probe.fstype.blkid_name(),
                    m.mount_point
                ));
                continue;
            }
        };
        tree.mount(at, fs)?;
        used.push(vol.offset);
        mounted.push((m.mount_point.clone(), vol.clone()));
    }
    Ok((Box::new(tree), mounted, warnings))
}

/// `n` LVM2 UUIDs (32 characters of `[A-Za-z0-9]`) from the system's random source.
fn random_uuids(n: usize) -> Result<Vec<[u8; 32]>> {
    use std::io::Read;
    const CHARS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut src = std::fs::File::open("/dev/urandom")
        .map_err(|e| DiskError::io("open /dev/urandom for new LVM2 UUIDs", e))?;
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        let mut u = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            src.read_exact(&mut buf)
                .map_err(|e| DiskError::io("read /dev/urandom for new LVM2 UUIDs", e))?;
            // 248 = 4 * 62: bytes at or above it are dropped, so every character is as likely.
            for &b in buf.iter().filter(|&&b| b < 248) {
                if i < 32 {
                    u[i] = CHARS[usize::from(b % 62)];
                    i += 1;
                }
            }
        }
        out.push(u);
    }
    Ok(out)
}

/// Run the selected disk-level operations (`lvm-uuids`) on the staged disk, after the
/// filesystem steps, and record them in the report. A dry run stages them too (its overlay
/// is thrown away), so the bytes it reports are those a real run changes. With a fixed time
/// (`SOURCE_DATE_EPOCH`, `--timestamp`) the new UUIDs derive from it and the old UUIDs, so
/// two runs give the same bytes.
fn disk_operations(staged: &Dev, report: &mut PrepareReport, opts: &PrepareOptions) -> Result<()> {
    if !report.operations.iter().any(|o| o == LVM_UUIDS) {
        return Ok(());
    }
    let names: Vec<String> = lvm_scan(staged)?
        .vgs
        .iter()
        .map(|v| v.name.clone())
        .collect();
    if names.is_empty() {
        report.warnings.push(format!(
            "{LVM_UUIDS}: the disk has no LVM2 volume group; nothing to change"
        ));
        return Ok(());
    }
    let seed = opts
        .fixed_time
        .map(|t| format!("imgscrub {LVM_UUIDS} {}", t.secs).into_bytes());
    for name in names {
        // Scan again: each VG's rewrite moves its metadata areas' ring positions.
        let scan = lvm_scan(staged)?;
        let Some(g) = scan.vg(&name) else {
            continue;
        };
        // One per PV plus one for the VG (the calls change_uuids makes), and one spare as the
        // seed of any further call.
        let mut fresh = match seed {
            Some(_) => Vec::new(),
            None => random_uuids(2 + g.pvs.len())?,
        };
        let spare = fresh.pop().unwrap_or([0; 32]);
        let mut replaced: Vec<(String, [u8; 32])> = Vec::new();
        scan.change_uuids(&name, |old| {
            let new = match &seed {
                Some(s) => derived_uuid(s, old),
                None => fresh.pop().unwrap_or_else(|| derived_uuid(&spare, old)),
            };
            replaced.push((old.to_owned(), new));
            new
        })?;
        let changes = replaced
            .into_iter()
            .map(|(old, new)| IdChange {
                what: if old == g.uuid {
                    format!("VG {name}")
                } else {
                    g.pvs
                        .iter()
                        .find(|p| p.uuid == old)
                        .map_or_else(|| "PV".to_owned(), |p| format!("PV {}", p.key))
                },
                old,
                new: lvm::format_uuid(&new),
            })
            .collect();
        report.disk_steps.push(DiskStep {
            source: LVM_UUIDS.to_owned(),
            target: format!("LVM2 VG {name}"),
            changes,
        });
    }
    Ok(())
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
        let (volume, root) = open_root(&staged, partition, edit)?;
        let (fs, mounted, mut warnings) = if partition.is_none() {
            join_fstab(&staged, &volume, root, edit)?
        } else {
            (root, Vec::new(), Vec::new())
        };
        // Recovery is a change the user did not ask for: say so.
        warnings.extend(fs.recovery_notes());
        Ok(Guest {
            image: self,
            overlay,
            fs,
            volume,
            mounted,
            warnings,
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
        let mut report = imgscrub_prepare::prepare(g.fs_mut(), profile, opts)?;
        disk_operations(&g.staged_device(), &mut report, opts)?;
        report.warnings.extend(g.warnings().iter().cloned());
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
        self.check_output(out)?;
        let mut g = self.guest(partition, true)?;
        let mut report = imgscrub_prepare::prepare(g.fs_mut(), profile, opts)?;
        disk_operations(&g.staged_device(), &mut report, opts)?;
        report.warnings.extend(g.warnings().iter().cloned());
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

    /// Refuse an output path that names the image or a file of its backing chain.
    pub fn check_output(&self, out: &Path) -> Result<()> {
        let inputs = std::iter::once(self.path().to_path_buf())
            .chain(self.backing_chain().iter().map(|b| PathBuf::from(&b.path)));
        for input in inputs {
            if imgscrub_shrink::same_file(out, &input) {
                return Err(Error::OutputIsInput {
                    output: out.to_path_buf(),
                    input,
                });
            }
        }
        Ok(())
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
        self.check_output(out)?;
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
