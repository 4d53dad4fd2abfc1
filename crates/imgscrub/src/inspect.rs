//! `Image::inspect`: what is in an image, as data (`imgscrub inspect --json`).
//!
//! The JSON shape of [`Inspection`] is a public interface, documented in
//! `docs/inspect-json.md`: add fields, never rename or remove them.

use crate::error::Result;
use crate::image::{Format, Image};
use imgscrub_disk::partition::{Partition, PartitionType, TableKind};
use imgscrub_disk::{BlockDev, Slice};
use imgscrub_fs::probe::{FsProbe, FsType, probe};
use serde::Serialize;

/// Version of the JSON schema of [`Inspection`] (`schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// Everything `inspect` reports about an image.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The image path as given.
    pub path: String,
    /// `raw` or `qcow2`.
    pub format: Format,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// Backing files, nearest first (qcow2 only).
    pub backing_chain: Vec<BackingFile>,
    /// The partition table.
    pub partition_table: TableInfo,
    /// Partitions (or the whole-disk pseudo-partition), with the filesystem found in each.
    pub partitions: Vec<PartitionInfo>,
    /// LVM2 volume groups found on the partitions (empty without LVM).
    pub volume_groups: Vec<VgInfo>,
    /// The operating system on the root filesystem (`null` when no root was found).
    pub os: Option<OsSection>,
    /// Problems that did not stop the inspection.
    pub warnings: Vec<String>,
}

/// The guest OS, as the prepare engine sees it.
#[derive(Debug, Clone, Serialize)]
pub struct OsSection {
    /// The partition holding the root filesystem (`null`: a disk without partition table).
    pub root_partition: Option<u32>,
    /// The LVM2 logical volume holding the root, as `VG/LV` (`null`: not in an LV).
    pub root_lv: Option<String>,
    /// Distribution, version, init system, SELinux, cloud-init, fstab.
    #[serde(flatten)]
    pub info: imgscrub_prepare::OsInfo,
}

/// An LVM2 volume group, from the newest valid metadata copy on its PVs.
#[derive(Debug, Clone, Serialize)]
pub struct VgInfo {
    pub name: String,
    pub uuid: String,
    /// The metadata sequence number.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    pub pvs: Vec<PvInfo>,
    pub lvs: Vec<LvInfo>,
}

/// A physical volume of a VG.
#[derive(Debug, Clone, Serialize)]
pub struct PvInfo {
    /// Key in the metadata (`pv0`), as segments name it.
    pub key: String,
    pub uuid: String,
    /// The partition it is on; `null` when it is not in this image (or on the whole disk:
    /// then `in_image` is true).
    pub partition: Option<u32>,
    /// False for a PV of the VG that is not in this image.
    pub in_image: bool,
    /// Byte offset of the first extent on the PV.
    pub pe_start: u64,
    pub pe_count: u64,
    /// Extents no LV uses (`null` when that cannot be known).
    pub free_extents: Option<u64>,
}

/// A logical volume.
#[derive(Debug, Clone, Serialize)]
pub struct LvInfo {
    pub name: String,
    pub uuid: String,
    /// Size in bytes.
    pub size: u64,
    /// False for the hidden parts of pools and mirrors.
    pub visible: bool,
    pub segments: Vec<SegmentInfo>,
    /// Why imgscrub does not open it (thin pool, snapshot, a missing PV…); `null` when it does.
    pub refused: Option<String>,
    /// What it holds (`null` for hidden or refused LVs).
    pub filesystem: Option<FilesystemInfo>,
}

/// One segment of an LV.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentInfo {
    pub start_extent: u64,
    pub extent_count: u64,
    /// `striped` (linear is `striped` with one stripe), `thin-pool`, `raid1`…
    #[serde(rename = "type")]
    pub seg_type: String,
    /// Stripe size in bytes (0 for one stripe).
    pub stripe_size: u64,
    /// Per stripe: the PV key and its first extent there.
    pub stripes: Vec<(String, u64)>,
}

/// One image below another in a qcow2 backing chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackingFile {
    /// Path, resolved relative to the image that names it.
    pub path: String,
    /// Its format, `null` when it cannot be opened.
    pub format: Option<Format>,
}

/// The partition table.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// `gpt`, `mbr` or `none` (no table: the whole disk holds one filesystem).
    pub kind: &'static str,
    /// GPT disk GUID, or the MBR disk signature as 8 hex digits (Linux `PTUUID`).
    pub id: Option<String>,
    /// Logical sector size the GPT was found with; `null` for MBR/none.
    pub sector_size: Option<u32>,
    /// True when the table was read from the backup GPT (primary damaged).
    pub read_only: bool,
}

/// One partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    /// Linux partition number (`sda<N>`); 0 for the whole-disk pseudo-partition.
    pub index: u32,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// `gpt`, `mbr` or `whole-disk`.
    pub scheme: &'static str,
    /// GPT type GUID, or MBR type as `0x83`; `null` for the whole disk.
    pub type_id: Option<String>,
    /// Human name of the type (`Linux filesystem`, `EFI System`…), when known.
    pub type_name: Option<String>,
    /// GPT partition name; `null` when empty or MBR.
    pub name: Option<String>,
    /// `PARTUUID` (GPT unique GUID, or `SIGNATURE-NN` for MBR).
    pub part_uuid: Option<String>,
    /// MBR boot flag or GPT legacy-BIOS-bootable attribute.
    pub bootable: bool,
    /// GPT attribute bits (0 for MBR).
    pub attributes: u64,
    /// True for an MBR extended partition (a container, never probed).
    pub extended: bool,
    /// What the partition holds; `null` for extended partitions or when probing failed.
    pub filesystem: Option<FilesystemInfo>,
}

/// A filesystem (or swap, LVM PV, LUKS…) detected by magic.
#[derive(Debug, Clone, Serialize)]
pub struct FilesystemInfo {
    /// blkid's `TYPE`: `ext4`, `vfat`, `swap`, `xfs`, `LVM2_member`, `crypto_LUKS`, …,
    /// or `unknown`.
    #[serde(rename = "type")]
    pub fs_type: String,
    /// blkid's `VERSION` (`FAT32`, `1.0`, LUKS `2`…).
    pub version: Option<String>,
    /// Volume label.
    pub label: Option<String>,
    /// Filesystem UUID as blkid prints it.
    pub uuid: Option<String>,
    /// Block / cluster / page size in bytes.
    pub block_size: Option<u32>,
    /// Size the filesystem says it has, in bytes.
    pub size: Option<u64>,
    /// ext2/3/4 feature flags.
    pub features: Option<ExtFeaturesInfo>,
    /// XFS details (`null` for other filesystems, and for an XFS that cannot be read: a
    /// warning then says why).
    pub xfs: Option<XfsInfo>,
}

/// What an XFS filesystem is made of, read by the XFS engine.
#[derive(Debug, Clone, Serialize)]
pub struct XfsInfo {
    /// 4, or 5 (metadata checksums).
    pub version: u16,
    /// Feature names as `mkfs.xfs` calls them: `crc`, `finobt`, `reflink`, `bigtime`, ….
    pub features: Vec<String>,
    pub block_size: u32,
    pub sector_size: u32,
    pub inode_size: u32,
    pub dir_block_size: u32,
    pub ag_count: u32,
    pub ag_blocks: u32,
    /// `clean` or `zeroed`.
    pub log: String,
    /// Free space in bytes.
    pub free_bytes: u64,
    /// Whether imgscrub can edit it (v5 filesystems without a realtime volume or quota
    /// accounting; v4 is read-only).
    pub writable: bool,
    /// Why it cannot be edited, when `writable` is false.
    pub read_only_reason: Option<String>,
}

/// ext2/3/4 feature names, as `dumpe2fs` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct ExtFeaturesInfo {
    /// Compatible features.
    pub compat: Vec<String>,
    /// Incompatible features.
    pub incompat: Vec<String>,
    /// Read-only compatible features.
    pub ro_compat: Vec<String>,
}

impl From<FsProbe> for FilesystemInfo {
    fn from(p: FsProbe) -> Self {
        FilesystemInfo {
            fs_type: p.fstype.blkid_name().to_string(),
            version: p.version,
            label: p.label,
            uuid: p.uuid,
            block_size: p.block_size,
            size: p.size,
            features: p.ext_features.map(|f| ExtFeaturesInfo {
                compat: f.compat,
                incompat: f.incompat,
                ro_compat: f.ro_compat,
            }),
            xfs: None,
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Image {
    /// Inspect the image: format, backing chain, partition table, and the filesystem in each
    /// partition. Reads only. A partition that cannot be probed gets `filesystem: null` and
    /// a warning; only a failure to read the partition table is an error.
    pub fn inspect(&self) -> Result<Inspection> {
        let table = self.partitions()?;
        let mut warnings = self.warnings().to_vec();
        warnings.extend(table.warnings.iter().cloned());
        let dev: &dyn BlockDev = &**self.device();
        let partitions = table
            .partitions
            .iter()
            .map(|p| partition_info(dev, p, &mut warnings))
            .collect();
        let (kind, id, sector_size) = match &table.kind {
            TableKind::Gpt {
                disk_guid,
                sector_size,
            } => ("gpt", Some(disk_guid.to_string()), Some(*sector_size)),
            TableKind::Mbr { disk_signature } => {
                ("mbr", Some(format!("{disk_signature:08x}")), None)
            }
            TableKind::None => ("none", None, None),
        };
        let volume_groups = lvm_info(self.device(), &table, &mut warnings);
        let os = match self.guest(None, false) {
            Ok(g) => {
                warnings.extend(g.warnings().iter().cloned());
                match imgscrub_prepare::inspect(g.fs()) {
                    Ok(info) => Some(OsSection {
                        root_partition: g.volume().partition,
                        root_lv: g
                            .volume()
                            .lv
                            .as_ref()
                            .map(|l| format!("{}/{}", l.vg, l.name)),
                        info,
                    }),
                    Err(e) => {
                        warnings.push(format!("operating system not identified: {e}"));
                        None
                    }
                }
            }
            // The same text `prepare` and the file verbs fail with.
            Err(e @ crate::Error::Filesystem(imgscrub_fs::FsError::UnsupportedRoot { .. })) => {
                warnings.push(e.to_string());
                None
            }
            Err(e) => {
                warnings.push(format!("no root filesystem: {e}"));
                None
            }
        };
        Ok(Inspection {
            schema_version: SCHEMA_VERSION,
            path: self.path().display().to_string(),
            format: self.format(),
            virtual_size: self.virtual_size(),
            backing_chain: self.backing_chain().to_vec(),
            partition_table: TableInfo {
                kind,
                id,
                sector_size,
                read_only: table.read_only,
            },
            partitions,
            volume_groups,
            os,
            warnings,
        })
    }
}

/// The LVM2 VGs of the disk; a damaged metadata area becomes a warning.
fn lvm_info(
    disk: &imgscrub_fs::guest::Dev,
    table: &imgscrub_disk::PartitionTable,
    warnings: &mut Vec<String>,
) -> Vec<VgInfo> {
    let lvm = match imgscrub_fs::guest::lvm_scan(disk) {
        Ok(l) => l,
        Err(e) => {
            warnings.push(format!("LVM2: {e}"));
            return Vec::new();
        }
    };
    lvm.vgs
        .iter()
        .map(|vg| VgInfo {
            name: vg.name.clone(),
            uuid: vg.uuid.clone(),
            seqno: vg.seqno,
            extent_size: vg.extent_size,
            pvs: vg
                .pvs
                .iter()
                .map(|p| {
                    let found = lvm.pv(&p.uuid);
                    PvInfo {
                        key: p.key.clone(),
                        uuid: p.uuid.clone(),
                        partition: found.and_then(|f| {
                            table
                                .partitions
                                .iter()
                                .find(|t| t.start == f.dev.offset() && t.index != 0)
                                .map(|t| t.index)
                        }),
                        in_image: found.is_some(),
                        pe_start: p.pe_start,
                        pe_count: p.pe_count,
                        free_extents: vg.free_extents(&p.key).map(|f| f.iter().map(|r| r.1).sum()),
                    }
                })
                .collect(),
            lvs: vg
                .lvs
                .iter()
                .map(|l| {
                    let mut refused = l.refused.clone();
                    let mut filesystem = None;
                    if refused.is_none() && l.visible {
                        match lvm.open_lv(&vg.name, &l.name) {
                            Ok(dev) => match probe(&dev) {
                                Ok(f) => filesystem = Some(FilesystemInfo::from(f)),
                                Err(e) => warnings
                                    .push(format!("LV {}/{}: cannot probe: {e}", vg.name, l.name)),
                            },
                            Err(e) => refused = Some(e.to_string()),
                        }
                    }
                    LvInfo {
                        name: l.name.clone(),
                        uuid: l.uuid.clone(),
                        size: l.size,
                        visible: l.visible,
                        segments: l
                            .segments
                            .iter()
                            .map(|s| SegmentInfo {
                                start_extent: s.start_extent,
                                extent_count: s.extent_count,
                                seg_type: s.kind.clone(),
                                stripe_size: s.stripe_size,
                                stripes: s.stripes.clone(),
                            })
                            .collect(),
                        refused,
                        filesystem,
                    }
                })
                .collect(),
        })
        .collect()
}

fn partition_info(dev: &dyn BlockDev, p: &Partition, warnings: &mut Vec<String>) -> PartitionInfo {
    let (scheme, type_id) = match p.ptype {
        PartitionType::Gpt(g) => ("gpt", Some(g.to_string())),
        PartitionType::Mbr(t) => ("mbr", Some(format!("0x{t:02x}"))),
        PartitionType::WholeDisk => ("whole-disk", None),
    };
    let filesystem = if p.is_extended() {
        None
    } else {
        match Slice::new(dev, p.start, p.size).and_then(|s| probe(&s).map(|f| (s, f))) {
            Ok((slice, f)) => {
                let xfs = f.fstype == FsType::Xfs;
                let mut info = FilesystemInfo::from(f);
                if xfs {
                    match imgscrub_fs::xfs::describe(&slice) {
                        Ok(d) => {
                            info.xfs = Some(XfsInfo {
                                version: d.version,
                                features: d.features,
                                block_size: d.block_size,
                                sector_size: d.sector_size,
                                inode_size: d.inode_size,
                                dir_block_size: d.dir_block_size,
                                ag_count: d.ag_count,
                                ag_blocks: d.ag_blocks,
                                log: d.log,
                                free_bytes: d.free_bytes,
                                writable: d.read_only_reason.is_none(),
                                read_only_reason: d.read_only_reason,
                            })
                        }
                        Err(e) => warnings.push(format!("partition {}: {e}", p.index)),
                    }
                }
                Some(info)
            }
            Err(e) => {
                warnings.push(format!("partition {}: cannot probe: {e}", p.index));
                None
            }
        }
    };
    PartitionInfo {
        index: p.index,
        start: p.start,
        size: p.size,
        scheme,
        type_id,
        type_name: p.ptype.name().map(str::to_string),
        name: non_empty(&p.name),
        part_uuid: non_empty(&p.part_uuid),
        bootable: p.bootable,
        attributes: p.attributes,
        extended: p.is_extended(),
        filesystem,
    }
}

impl FilesystemInfo {
    /// True when the filesystem type is one imgscrub can edit (ext2/3/4, FAT).
    pub fn is_editable(&self) -> bool {
        [FsType::Ext2, FsType::Ext3, FsType::Ext4, FsType::Vfat]
            .iter()
            .any(|t| t.blkid_name() == self.fs_type)
    }
}
