//! Finding and opening the guest's filesystems on a whole disk: every partition (or the whole
//! disk when there is no table) is probed; the root is the volume that holds the
//! OS (`/etc/os-release`, or failing that `/etc/fstab`) on ext2/3/4 or XFS, unless the caller names a partition.

use crate::ext4::Ext4;
use crate::fat::FatFs;
use crate::filesystem::{Filesystem, FsError, Result};
use crate::probe::{FsProbe, FsType, probe};
use crate::xfs::Xfs;
use imgscrub_disk::{BlockDev, Slice, discover};
use std::sync::Arc;

/// A shared block device, as the facade hands it out.
pub type Dev = Arc<dyn BlockDev>;

/// One filesystem-bearing area of the disk.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Partition number as Linux counts it; `None` for a disk without a partition table.
    pub partition: Option<u32>,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// What the probe found there.
    pub probe: FsProbe,
    /// The partition's unique GUID (GPT) or `SIGNATURE-NN` (MBR), lower case; empty
    /// without a table.
    pub part_uuid: String,
    /// The GPT partition name (PARTLABEL); empty otherwise.
    pub part_name: String,
}

impl Volume {
    /// "partition 2" or "the whole disk", for messages.
    pub fn describe(&self) -> String {
        match self.partition {
            Some(n) => format!("partition {n}"),
            None => "the whole disk".to_owned(),
        }
    }

    /// The volume as a device of its own.
    pub fn device(&self, disk: &Dev) -> Result<Slice<Dev>> {
        Ok(Slice::new(disk.clone(), self.offset, self.size)?)
    }

    /// True for the filesystems we can open ([`open_volume`]).
    pub fn is_supported(&self) -> bool {
        matches!(
            self.probe.fstype,
            FsType::Ext2 | FsType::Ext3 | FsType::Ext4 | FsType::Xfs | FsType::Vfat
        )
    }
}

/// Every partition of the disk (or the whole disk when there is no table), probed.
pub fn volumes(disk: &Dev) -> Result<Vec<Volume>> {
    let table = discover(disk.as_ref())?;
    let mut out = Vec::new();
    if table.partitions.is_empty() {
        out.push(Volume {
            partition: None,
            offset: 0,
            size: disk.len(),
            probe: probe(disk.as_ref())?,
            part_uuid: String::new(),
            part_name: String::new(),
        });
    }
    for p in &table.partitions {
        let slice = Slice::new(disk.clone(), p.start, p.size)?;
        out.push(Volume {
            partition: Some(p.index),
            offset: p.start,
            size: p.size,
            probe: probe(&slice)?,
            part_uuid: p.part_uuid.to_lowercase(),
            part_name: p.name.clone(),
        });
    }
    Ok(out)
}

/// Open the filesystem of one volume. `writable` makes the engine refuse what it cannot
/// edit safely (unknown features, a journal it cannot replay, …) with a message saying why.
pub fn open_volume(disk: &Dev, volume: &Volume, writable: bool) -> Result<Box<dyn Filesystem>> {
    let dev = volume.device(disk)?;
    match volume.probe.fstype {
        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => Ok(Box::new(Ext4::open(dev, writable)?)),
        FsType::Xfs => Ok(Box::new(Xfs::open(dev, writable)?)),
        FsType::Vfat => Ok(Box::new(FatFs::open(Arc::new(dev))?)),
        other => Err(FsError::Unsupported(format!(
            "{} holds {} ({}), which imgscrub cannot open",
            volume.describe(),
            other.blkid_name(),
            "supported: ext2, ext3, ext4, xfs, vfat"
        ))),
    }
}

/// True when the filesystem holds an OS root: `/etc/os-release` or `/etc/fstab` exists
/// (lookups only, no symlink following: os-release is often a link into /usr).
fn looks_like_root(fs: &dyn Filesystem) -> bool {
    let Ok(Some(etc)) = fs.lookup(fs.root(), b"etc") else {
        return false;
    };
    [&b"os-release"[..], b"fstab"]
        .iter()
        .any(|n| matches!(fs.lookup(etc, n), Ok(Some(_))))
}

/// Open the guest's root filesystem, or `partition` when given. Returns the volume and
/// the opened filesystem.
pub fn open_root(
    disk: &Dev,
    partition: Option<u32>,
    writable: bool,
) -> Result<(Volume, Box<dyn Filesystem>)> {
    let vols = volumes(disk)?;
    if let Some(n) = partition {
        let v = vols
            .iter()
            .find(|v| v.partition == Some(n) || (n == 0 && v.partition.is_none()))
            .ok_or_else(|| {
                FsError::NotFound(format!("partition {n} (the disk has: {})", list(&vols)))
            })?;
        let fs = open_volume(disk, v, writable)?;
        return Ok((v.clone(), fs));
    }
    let ext: Vec<&Volume> = vols
        .iter()
        .filter(|v| {
            matches!(
                v.probe.fstype,
                FsType::Ext2 | FsType::Ext3 | FsType::Ext4 | FsType::Xfs
            )
        })
        .collect();
    // Read-only probes first, so that choosing a root never opens anything for writing
    // that is not the root.
    for v in &ext {
        if let Ok(fs) = open_volume(disk, v, false)
            && looks_like_root(fs.as_ref())
        {
            drop(fs);
            let fs = open_volume(disk, v, writable)?;
            return Ok(((*v).clone(), fs));
        }
    }
    if let [only] = ext.as_slice() {
        let fs = open_volume(disk, only, writable)?;
        return Ok(((*only).clone(), fs));
    }
    Err(FsError::NotFound(format!(
        "no root filesystem (an ext2/3/4 or XFS volume with /etc/os-release or /etc/fstab); \
         name one with --partition N (the disk has: {})",
        list(&vols)
    )))
}

fn list(vols: &[Volume]) -> String {
    if vols.is_empty() {
        return "no partitions".into();
    }
    vols.iter()
        .map(|v| format!("{} {}", v.describe(), v.probe.fstype.blkid_name()))
        .collect::<Vec<_>>()
        .join(", ")
}
