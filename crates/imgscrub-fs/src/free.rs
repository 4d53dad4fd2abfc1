//! The free space of one filesystem, whatever engine reads it: the single place where a
//! probed filesystem type is matched to the code that knows its free-space map.
//!
//! Layers above (sparsify, `prepare --output`) call [`free_space`] with the result of
//! [`probe`](crate::probe::probe) and never name an engine; a new engine is wired in by one
//! arm of the `match` in [`free_space_with`].
//!
//! Nothing is guessed: a filesystem that cannot be read safely (a journal to recover, a
//! damaged FAT, a feature the engine refuses) is [`FreeSpace::Skipped`] with the reason, and
//! its bytes are left alone.

use crate::ext4::Ext4;
use crate::fat::FatGeometry;
use crate::filesystem::{Filesystem, FreeRange, Result};
use crate::probe::{FsProbe, FsType};
use crate::xfs::Xfs;
use imgscrub_disk::BlockDev;

/// What [`free_space`] found for one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeSpace {
    /// Free byte runs, relative to the start of the filesystem (the device given), sorted.
    /// Callers clip them to the device: a damaged superblock may claim more.
    Free(Vec<FreeRange>),
    /// The filesystem is left alone; the text says why (for the user to read).
    Skipped(String),
}

/// An independent source of ext2/3/4 free ranges, used instead of the ext4 engine (tests plug
/// in `dumpe2fs` this way to check the engine against e2fsprogs).
pub trait ExtFreeRanges: Sync {
    /// Free byte runs of the ext2/3/4 filesystem on `fs`, relative to its start.
    fn ext_free_ranges(&self, fs: &dyn BlockDev) -> Result<Vec<FreeRange>>;
}

/// Options of [`free_space_with`].
#[derive(Clone, Copy, Default)]
pub struct FreeSpaceOptions<'a> {
    /// Where ext2/3/4 free ranges come from; `None` = the ext4 engine, opened read-only.
    pub ext: Option<&'a dyn ExtFreeRanges>,
}

impl std::fmt::Debug for FreeSpaceOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreeSpaceOptions")
            .field("ext", &self.ext.is_some())
            .finish()
    }
}

/// The free space of the filesystem on `dev` (which starts at the filesystem's first byte),
/// as `probe` identified it.
///
/// - ext2/3/4: the block bitmaps, through the ext4 engine opened read-only; skipped when the
///   journal needs recovery or the engine refuses the filesystem (its message is kept).
/// - XFS: the extents of the by-block free-space btrees (what `xfs_db freesp -d` lists);
///   skipped when the log is not clean or the engine refuses the filesystem.
/// - FAT: the free clusters; skipped when the boot sector is not usable.
/// - swap: everything after the header page (signature, label and UUID stay).
/// - anything else: skipped, "… is not handled".
///
/// Errors are I/O errors (and errors of an [`ExtFreeRanges`] source); a filesystem we cannot
/// read is a [`FreeSpace::Skipped`], not an error.
pub fn free_space(dev: &dyn BlockDev, probe: &FsProbe) -> Result<FreeSpace> {
    free_space_with(dev, probe, &FreeSpaceOptions::default())
}

/// [`free_space`] with options (an independent ext free-range source).
pub fn free_space_with(
    dev: &dyn BlockDev,
    probe: &FsProbe,
    opts: &FreeSpaceOptions<'_>,
) -> Result<FreeSpace> {
    Ok(match probe.fstype {
        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => {
            let recovering = probe
                .ext_features
                .as_ref()
                .is_some_and(|f| f.incompat.iter().any(|n| n == "needs_recovery"));
            if recovering {
                FreeSpace::Skipped(
                    "the journal needs recovery (mount it once or run e2fsck)".to_string(),
                )
            } else if let Some(ext) = opts.ext {
                FreeSpace::Free(ext.ext_free_ranges(dev)?)
            } else {
                // Anything the engine refuses (unsupported feature, damage) is skipped with
                // its reason: nothing is zeroed on a guess.
                match Ext4::open(dev, false).and_then(|fs| fs.free_ranges()) {
                    Ok(v) => FreeSpace::Free(v),
                    Err(e) => FreeSpace::Skipped(format!("ext4 engine: {e}")),
                }
            }
        }
        // The by-block free-space btrees, cross-checked with the by-size btrees and the AGF
        // counters; a dirty log or damage is a skip with the engine's reason.
        FsType::Xfs => match Xfs::open(dev, false).and_then(|fs| fs.free_ranges()) {
            Ok(v) => FreeSpace::Free(v),
            Err(e) => FreeSpace::Skipped(format!("xfs engine: {e}")),
        },
        FsType::Vfat => match FatGeometry::read(dev) {
            Ok(g) => FreeSpace::Free(g.free_ranges(dev)?),
            Err(e) => FreeSpace::Skipped(format!("FAT volume not usable: {e}")),
        },
        FsType::Swap => {
            // The page size is where the signature was found.
            let page = u64::from(probe.block_size.unwrap_or(4096));
            FreeSpace::Free(vec![FreeRange {
                offset: page,
                len: dev.len().saturating_sub(page),
            }])
        }
        other => FreeSpace::Skipped(format!("{other} is not handled")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ExtFeatures;
    use imgscrub_disk::MemDev;

    fn probed(fstype: FsType) -> FsProbe {
        FsProbe {
            fstype,
            label: None,
            uuid: None,
            block_size: None,
            version: None,
            size: None,
            ext_features: None,
        }
    }

    #[test]
    fn swap_keeps_its_header_page() {
        let dev = MemDev::zeroed(1 << 20);
        let mut p = probed(FsType::Swap);
        p.block_size = Some(8192);
        assert_eq!(
            free_space(&dev, &p).unwrap(),
            FreeSpace::Free(vec![FreeRange {
                offset: 8192,
                len: (1 << 20) - 8192
            }])
        );
    }

    #[test]
    fn skip_reasons() {
        let dev = MemDev::zeroed(1 << 20);
        let skipped = |p: &FsProbe| match free_space(&dev, p).unwrap() {
            FreeSpace::Skipped(why) => why,
            other => panic!("not skipped: {other:?}"),
        };
        assert!(skipped(&probed(FsType::Xfs)).starts_with("xfs engine: corrupt XFS superblock"));
        assert_eq!(skipped(&probed(FsType::Btrfs)), "btrfs is not handled");
        assert!(skipped(&probed(FsType::Vfat)).starts_with("FAT volume not usable: "));
        // Zeros are no ext4 filesystem: the engine's refusal is the reason.
        assert!(skipped(&probed(FsType::Ext4)).starts_with("ext4 engine: "));
        let mut dirty = probed(FsType::Ext4);
        dirty.ext_features = Some(ExtFeatures {
            incompat: vec!["needs_recovery".into()],
            ..ExtFeatures::default()
        });
        assert!(skipped(&dirty).contains("journal needs recovery"));
    }

    #[test]
    fn an_ext_source_replaces_the_engine() {
        struct Fixed;
        impl ExtFreeRanges for Fixed {
            fn ext_free_ranges(&self, _fs: &dyn BlockDev) -> Result<Vec<FreeRange>> {
                Ok(vec![FreeRange {
                    offset: 4096,
                    len: 4096,
                }])
            }
        }
        let dev = MemDev::zeroed(1 << 20);
        let opts = FreeSpaceOptions { ext: Some(&Fixed) };
        assert_eq!(
            free_space_with(&dev, &probed(FsType::Ext2), &opts).unwrap(),
            FreeSpace::Free(vec![FreeRange {
                offset: 4096,
                len: 4096
            }])
        );
    }
}
