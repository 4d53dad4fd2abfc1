//! Finding and opening the guest's filesystems on a whole disk: every partition (or the whole
//! disk when there is no table) is probed; the root is the volume that holds the OS
//! (`/etc/os-release`, or failing that `/etc/fstab`) among those of a kind that can hold a
//! root ([`ROOT_KINDS`]) and that imgscrub can open ([`OPENABLE`]), unless the caller names
//! a partition.

use crate::ext4::Ext4;
use crate::fat::FatFs;
use crate::filesystem::{Filesystem, FsError, Result};
use crate::probe::{FsProbe, FsType, probe};
use crate::xfs::Xfs;
use imgscrub_disk::lvm::{self, Lvm};
use imgscrub_disk::{BlockDev, DiskError, Slice, discover};
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
    /// For an LVM2 logical volume: which one. `partition` is then the partition of the PV
    /// holding its first extent, `offset` that extent's place on the disk (so that two
    /// volumes never share an offset), `size` the LV's size.
    pub lv: Option<LvName>,
}

/// An LVM2 logical volume, as [`volumes`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvName {
    pub vg: String,
    pub name: String,
    pub uuid: String,
    /// Why it cannot be opened (thin pool, snapshot, a PV not in the image…), or `None`.
    pub refused: Option<String>,
}

impl LvName {
    /// `/dev/mapper/VG-LV` with each dash of a name doubled, as device-mapper names it.
    pub fn mapper_name(&self) -> String {
        format!(
            "{}-{}",
            self.vg.replace('-', "--"),
            self.name.replace('-', "--")
        )
    }

    /// True when `path` is this LV's `/dev/mapper/VG-LV` or `/dev/VG/LV`.
    pub fn matches_path(&self, path: &str) -> bool {
        if let Some(m) = path.strip_prefix("/dev/mapper/") {
            return m == self.mapper_name();
        }
        path.strip_prefix("/dev/")
            .and_then(|r| r.split_once('/'))
            .is_some_and(|(vg, lv)| vg == self.vg && lv == self.name)
    }
}

impl Volume {
    /// "partition 2" or "the whole disk" (a disk without a partition table, which the table
    /// reader gives as the pseudo-partition 0), for messages.
    pub fn describe(&self) -> String {
        if let Some(lv) = &self.lv {
            return format!("LV {}/{}", lv.vg, lv.name);
        }
        match self.partition {
            Some(0) | None => "the whole disk".to_owned(),
            Some(n) => format!("partition {n}"),
        }
    }

    /// The volume as a device of its own: a slice of the disk, or an LV mapped onto its PVs.
    pub fn device(&self, disk: &Dev) -> Result<Dev> {
        match &self.lv {
            None => Ok(Arc::new(Slice::new(disk.clone(), self.offset, self.size)?)),
            Some(lv) => {
                if let Some(r) = &lv.refused {
                    return Err(DiskError::Unsupported(r.clone()).into());
                }
                Ok(Arc::new(lvm_scan(disk)?.open_lv(&lv.vg, &lv.name)?))
            }
        }
    }

    /// True for the filesystems we can open ([`open_volume`], [`OPENABLE`]).
    pub fn is_supported(&self) -> bool {
        OPENABLE.contains(&self.probe.fstype)
    }
}

/// The kinds of filesystem imgscrub can open ([`open_volume`]), in the order messages name
/// them. This is the one list that says so: supporting a new kind means adding it here and
/// an arm to [`open_volume`] (a unit test checks that the two agree). Error messages, the root
/// search and [`Volume::is_supported`] all read it.
pub const OPENABLE: &[FsType] = &[
    FsType::Ext2,
    FsType::Ext3,
    FsType::Ext4,
    FsType::Xfs,
    FsType::Vfat,
];

/// The kinds that can hold a Linux root filesystem, whether or not imgscrub opens them (an
/// LVM physical volume or a LUKS volume as the container of one). The root is looked for
/// among those that are also [`OPENABLE`]; when none is the root and one of the others is
/// present, the root is taken to be there: an unsupported input
/// ([`FsError::UnsupportedRoot`]).
pub const ROOT_KINDS: &[FsType] = &[
    FsType::Ext2,
    FsType::Ext3,
    FsType::Ext4,
    FsType::Xfs,
    FsType::Btrfs,
    FsType::LvmPv,
    FsType::Luks,
];

/// True when `kind` may hold the guest's root and imgscrub can open it.
pub fn openable_root(kind: FsType) -> bool {
    ROOT_KINDS.contains(&kind) && OPENABLE.contains(&kind)
}

/// `ext2, ext3, ext4 and vfat`: the kinds imgscrub opens, for messages.
pub fn openable_names() -> String {
    and_list(OPENABLE.iter().map(|k| k.blkid_name()))
}

fn and_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        None => "nothing".to_owned(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// `ext2, ext3 and ext4`: the kinds the root is looked for on, for messages.
fn root_names() -> String {
    and_list(
        OPENABLE
            .iter()
            .filter(|k| openable_root(**k))
            .map(|k| k.blkid_name()),
    )
}

/// The text of [`FsError::UnsupportedRoot`]: what the disk holds, and what imgscrub opens.
pub fn unsupported_root_message(found: &[(String, FsType)]) -> String {
    let has = if found.is_empty() {
        "no partitions".to_owned()
    } else {
        found
            .iter()
            .map(|(place, kind)| format!("{kind} ({place})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut m = format!(
        "no root filesystem imgscrub can open: the disk has {has}; \
         imgscrub can open {}, and looks for the root on {}",
        openable_names(),
        root_names()
    );
    if found.iter().any(|(_, k)| OPENABLE.contains(k)) {
        m += " (--partition N opens another volume)";
    }
    m
}

/// The LVM2 PVs of the disk (on its partitions, or the whole disk) and their VGs.
pub fn lvm_scan(disk: &Dev) -> Result<Lvm<Slice<Dev>>> {
    let table = discover(disk.as_ref())?;
    let mut devs = Vec::new();
    if table.partitions.is_empty() {
        devs.push(Slice::new(disk.clone(), 0, disk.len())?);
    }
    for p in &table.partitions {
        if !p.is_extended() {
            devs.push(Slice::new(disk.clone(), p.start, p.size)?);
        }
    }
    Ok(lvm::scan(devs)?)
}

/// Every partition of the disk (or the whole disk when there is no table), probed, then
/// every visible logical volume of the LVM2 volume groups on them.
pub fn volumes(disk: &Dev) -> Result<Vec<Volume>> {
    let mut out = partition_volumes(disk)?;
    if out.iter().any(|v| v.probe.fstype == FsType::LvmPv) {
        let lvm = lvm_scan(disk)?;
        for vg in &lvm.vgs {
            for l in vg.lvs.iter().filter(|l| l.visible) {
                let mut name = LvName {
                    vg: vg.name.clone(),
                    name: l.name.clone(),
                    uuid: l.uuid.clone(),
                    refused: l.refused.clone(),
                };
                let mut v = Volume {
                    partition: None,
                    offset: 0,
                    size: l.size,
                    probe: FsProbe::new(FsType::Unknown),
                    part_uuid: String::new(),
                    part_name: String::new(),
                    lv: None,
                };
                match lvm.open_lv(&vg.name, &l.name) {
                    Ok(dev) => {
                        if let Some(&(d, at, _)) = dev.extents().first()
                            && let Some(slice) = dev.devices().get(d)
                        {
                            v.offset = slice.offset() + at;
                            v.partition = out
                                .iter()
                                .find(|p| p.lv.is_none() && p.offset == slice.offset())
                                .and_then(|p| p.partition);
                        }
                        v.probe = probe(&dev)?;
                    }
                    Err(e) => {
                        if name.refused.is_none() {
                            name.refused = Some(e.to_string());
                        }
                    }
                }
                v.lv = Some(name);
                out.push(v);
            }
        }
    }
    Ok(out)
}

fn partition_volumes(disk: &Dev) -> Result<Vec<Volume>> {
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
            lv: None,
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
            lv: None,
        });
    }
    Ok(out)
}

/// Open the filesystem of one volume. `writable` makes the engine refuse what it cannot
/// edit safely (unknown features, a journal it cannot replay, …) with a message saying why.
pub fn open_volume(disk: &Dev, volume: &Volume, writable: bool) -> Result<Box<dyn Filesystem>> {
    if volume.probe.fstype == FsType::Luks {
        return Err(DiskError::Unsupported(format!(
            "{} is a LUKS volume: what is inside is encrypted, and imgscrub has no key handling",
            volume.describe()
        ))
        .into());
    }
    if !OPENABLE.contains(&volume.probe.fstype) {
        return Err(FsError::UnsupportedFilesystem {
            volume: volume.describe(),
            fstype: volume.probe.fstype,
        });
    }
    let dev = volume.device(disk)?;
    match volume.probe.fstype {
        FsType::Ext2 | FsType::Ext3 | FsType::Ext4 => Ok(Box::new(Ext4::open(dev, writable)?)),
        FsType::Xfs => Ok(Box::new(Xfs::open(dev, writable)?)),
        FsType::Vfat => Ok(Box::new(FatFs::open(dev)?)),
        other => Err(FsError::UnsupportedFilesystem {
            volume: volume.describe(),
            fstype: other,
        }),
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
    let candidates: Vec<&Volume> = vols
        .iter()
        .filter(|v| openable_root(v.probe.fstype))
        .collect();
    // Read-only probes first, so that choosing a root never opens anything for writing
    // that is not the root.
    for v in &candidates {
        if let Ok(fs) = open_volume(disk, v, false)
            && looks_like_root(fs.as_ref())
        {
            drop(fs);
            let fs = open_volume(disk, v, writable)?;
            return Ok(((*v).clone(), fs));
        }
    }
    // No openable volume holds an OS. When one that could (Btrfs, LVM, LUKS…) is there,
    // the root is most likely on it: say so rather than open, say, an ext4 /boot as the root.
    let unopenable_root = vols
        .iter()
        .any(|v| ROOT_KINDS.contains(&v.probe.fstype) && !OPENABLE.contains(&v.probe.fstype));
    if unopenable_root {
        return Err(FsError::UnsupportedRoot {
            found: vols
                .iter()
                .map(|v| (v.describe(), v.probe.fstype))
                .collect(),
        });
    }
    if let [only] = candidates.as_slice() {
        let fs = open_volume(disk, only, writable)?;
        return Ok(((*only).clone(), fs));
    }
    Err(FsError::NotFound(format!(
        "no root filesystem (a volume of {} with /etc/os-release or /etc/fstab); \
         name one with --partition N (the disk has: {})",
        root_names(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use imgscrub_disk::MemDev;

    /// Every kind the probe knows; the match makes a new kind a compile error here, so it
    /// cannot be forgotten in the agreement test below.
    fn all_kinds() -> Vec<FsType> {
        let all = [
            FsType::Ext2,
            FsType::Ext3,
            FsType::Ext4,
            FsType::Jbd,
            FsType::Vfat,
            FsType::Xfs,
            FsType::Btrfs,
            FsType::Swap,
            FsType::LvmPv,
            FsType::Luks,
            FsType::Iso9660,
            FsType::Unknown,
        ];
        for k in all {
            match k {
                FsType::Ext2
                | FsType::Ext3
                | FsType::Ext4
                | FsType::Jbd
                | FsType::Vfat
                | FsType::Xfs
                | FsType::Btrfs
                | FsType::Swap
                | FsType::LvmPv
                | FsType::Luks
                | FsType::Iso9660
                | FsType::Unknown => {}
            }
        }
        all.to_vec()
    }

    /// A whole disk (no partition table) with a Btrfs superblock magic and nothing else.
    fn btrfs_disk() -> Dev {
        let mut v = vec![0u8; 1 << 20];
        v[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        Arc::new(MemDev::from_vec(v))
    }

    #[test]
    fn a_root_of_a_kind_we_cannot_open_is_unsupported_and_named() {
        let disk = btrfs_disk();
        let Err(e) = open_root(&disk, None, false) else {
            panic!("a Btrfs-only disk gave a root");
        };
        match &e {
            FsError::UnsupportedRoot { found } => {
                assert_eq!(found, &[("the whole disk".to_owned(), FsType::Btrfs)]);
            }
            other => panic!("wrong category: {other:?}"),
        }
        let m = e.to_string();
        assert!(m.contains("btrfs (the whole disk)"), "{m}");
        assert!(!m.contains("no such file"), "{m}");
        for k in OPENABLE {
            assert!(m.contains(k.blkid_name()), "{m} does not name {k}");
        }
        assert_eq!(
            m,
            format!(
                "no root filesystem imgscrub can open: the disk has btrfs (the whole disk); \
                 imgscrub can open {}, and looks for the root on {}",
                openable_names(),
                root_names()
            )
        );
        assert!(openable_names().contains("ext4") && root_names().contains("ext4"));
        // Naming the volume gives the same category for that volume.
        match open_root(&disk, Some(0), false) {
            Err(FsError::UnsupportedFilesystem { volume, fstype }) => {
                assert_eq!((volume.as_str(), fstype), ("the whole disk", FsType::Btrfs));
            }
            Err(other) => panic!("wrong category: {other:?}"),
            Ok(_) => panic!("opened Btrfs"),
        }
    }

    #[test]
    fn the_message_lists_what_was_found_and_what_opens() {
        let found = vec![
            ("partition 1".to_owned(), FsType::Vfat),
            ("partition 2".to_owned(), FsType::Btrfs),
        ];
        let m = FsError::UnsupportedRoot { found }.to_string();
        assert!(m.contains("vfat (partition 1), btrfs (partition 2)"), "{m}");
        assert!(m.contains(&format!("can open {}", openable_names())), "{m}");
        // A volume imgscrub opens is there: say how to reach it.
        assert!(m.contains("--partition N"), "{m}");
    }

    /// [`OPENABLE`] says exactly which kinds [`open_volume`] opens: every other kind is
    /// refused as unsupported, naming it and the list; a listed kind is tried (and fails on
    /// zeros for another reason).
    #[test]
    fn openable_list_agrees_with_open_volume() {
        let disk: Dev = Arc::new(MemDev::zeroed(1 << 20));
        for kind in all_kinds() {
            let v = Volume {
                partition: Some(3),
                offset: 0,
                size: 1 << 20,
                probe: FsProbe::new(kind),
                part_uuid: String::new(),
                part_name: String::new(),
                lv: None,
            };
            assert_eq!(v.is_supported(), OPENABLE.contains(&kind));
            match open_volume(&disk, &v, false) {
                Err(e) if kind == FsType::Luks => {
                    assert!(e.to_string().contains("encrypted"), "{e}");
                }
                Err(e @ FsError::UnsupportedFilesystem { .. }) => {
                    assert!(!OPENABLE.contains(&kind), "{kind} is listed but refused");
                    let m = e.to_string();
                    assert_eq!(
                        m,
                        format!(
                            "partition 3 holds {kind}, which imgscrub cannot open \
                             (it can open {})",
                            openable_names()
                        )
                    );
                }
                _ => assert!(OPENABLE.contains(&kind), "{kind} is opened but not listed"),
            }
        }
    }
}
