//! Superblock: every field, feature flags (refuse unknown incompat), checksum. Owner: core.
//!
//! The primary superblock is the 1024 bytes at byte offset 1024 of the filesystem, whatever
//! the block size. We keep the raw bytes and rewrite only the fields we maintain (free
//! counts, write time, checksum), so that fields we do not understand survive an edit
//! untouched.

use crate::csum::crc32c_raw;
use crate::le::{put_u16, put_u32, u8_at, u16_at, u32_at, u64_at};
use crate::{Ext4Error, Result};

/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub const EXT4_MAGIC: u16 = 0xEF53;

/// `s_state`: cleanly unmounted.
pub const STATE_VALID: u16 = 0x0001;
/// `s_state`: errors detected (the kernel sets it; e2fsck clears it).
pub const STATE_ERROR: u16 = 0x0002;
/// `s_state`: orphans being recovered.
pub const STATE_ORPHAN: u16 = 0x0004;

/// `s_flags`: directory hashes are computed with signed chars.
pub const FLAG_SIGNED_HASH: u32 = 0x0001;
/// `s_flags`: directory hashes are computed with unsigned chars.
pub const FLAG_UNSIGNED_HASH: u32 = 0x0002;

/// Compatible features: anyone may read and write the filesystem without knowing them.
pub mod compat {
    pub const DIR_PREALLOC: u32 = 0x0001;
    pub const IMAGIC_INODES: u32 = 0x0002;
    pub const HAS_JOURNAL: u32 = 0x0004;
    pub const EXT_ATTR: u32 = 0x0008;
    pub const RESIZE_INODE: u32 = 0x0010;
    pub const DIR_INDEX: u32 = 0x0020;
    pub const LAZY_BG: u32 = 0x0040;
    pub const EXCLUDE_BITMAP: u32 = 0x0100;
    pub const SPARSE_SUPER2: u32 = 0x0200;
    pub const FAST_COMMIT: u32 = 0x0400;
    pub const STABLE_INODES: u32 = 0x0800;
    pub const ORPHAN_FILE: u32 = 0x1000;
}

/// Incompatible features: a reader that does not know one must not even read.
pub mod incompat {
    pub const COMPRESSION: u32 = 0x0001;
    pub const FILETYPE: u32 = 0x0002;
    pub const RECOVER: u32 = 0x0004;
    pub const JOURNAL_DEV: u32 = 0x0008;
    pub const META_BG: u32 = 0x0010;
    pub const EXTENTS: u32 = 0x0040;
    pub const BIT64: u32 = 0x0080;
    pub const MMP: u32 = 0x0100;
    pub const FLEX_BG: u32 = 0x0200;
    pub const EA_INODE: u32 = 0x0400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
}

/// Read-only-compatible features: a reader may read, but must not write unless it knows them.
pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x0001;
    pub const LARGE_FILE: u32 = 0x0002;
    pub const BTREE_DIR: u32 = 0x0004;
    pub const HUGE_FILE: u32 = 0x0008;
    pub const GDT_CSUM: u32 = 0x0010;
    pub const DIR_NLINK: u32 = 0x0020;
    pub const EXTRA_ISIZE: u32 = 0x0040;
    pub const HAS_SNAPSHOT: u32 = 0x0080;
    pub const QUOTA: u32 = 0x0100;
    pub const BIGALLOC: u32 = 0x0200;
    pub const METADATA_CSUM: u32 = 0x0400;
    pub const REPLICA: u32 = 0x0800;
    pub const READONLY: u32 = 0x1000;
    pub const PROJECT: u32 = 0x2000;
    pub const SHARED_BLOCKS: u32 = 0x4000;
    pub const VERITY: u32 = 0x8000;
    pub const ORPHAN_PRESENT: u32 = 0x10000;
}

/// Incompat features we can read, with their names.
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (incompat::COMPRESSION, "compression"),
    (incompat::FILETYPE, "filetype"),
    (incompat::RECOVER, "needs_recovery"),
    (incompat::JOURNAL_DEV, "journal_dev"),
    (incompat::META_BG, "meta_bg"),
    (0x0020, "incompat_0x20"),
    (incompat::EXTENTS, "extent"),
    (incompat::BIT64, "64bit"),
    (incompat::MMP, "mmp"),
    (incompat::FLEX_BG, "flex_bg"),
    (incompat::EA_INODE, "ea_inode"),
    (incompat::DIRDATA, "dirdata"),
    (incompat::CSUM_SEED, "metadata_csum_seed"),
    (incompat::LARGEDIR, "large_dir"),
    (incompat::INLINE_DATA, "inline_data"),
    (incompat::ENCRYPT, "encrypt"),
    (incompat::CASEFOLD, "casefold"),
];

/// The incompat bits we know how to read.
const INCOMPAT_READABLE: u32 = incompat::FILETYPE
    | incompat::RECOVER
    | incompat::META_BG
    | incompat::EXTENTS
    | incompat::BIT64
    | incompat::MMP
    | incompat::FLEX_BG
    | incompat::EA_INODE
    | incompat::CSUM_SEED
    | incompat::LARGEDIR
    | incompat::INLINE_DATA
    | incompat::ENCRYPT
    | incompat::CASEFOLD;

/// The ro_compat bits whose invariants our writer maintains.
const RO_COMPAT_WRITABLE: u32 = ro_compat::SPARSE_SUPER
    | ro_compat::LARGE_FILE
    | ro_compat::BTREE_DIR
    | ro_compat::HUGE_FILE
    | ro_compat::GDT_CSUM
    | ro_compat::DIR_NLINK
    | ro_compat::EXTRA_ISIZE
    | ro_compat::METADATA_CSUM
    // Processed (and cleared) by the writable open, as e2fsck does: `fs::process_orphans`.
    | ro_compat::ORPHAN_PRESENT;

const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (ro_compat::SPARSE_SUPER, "sparse_super"),
    (ro_compat::LARGE_FILE, "large_file"),
    (ro_compat::BTREE_DIR, "btree_dir"),
    (ro_compat::HUGE_FILE, "huge_file"),
    (ro_compat::GDT_CSUM, "uninit_bg"),
    (ro_compat::DIR_NLINK, "dir_nlink"),
    (ro_compat::EXTRA_ISIZE, "extra_isize"),
    (ro_compat::HAS_SNAPSHOT, "snapshot"),
    (ro_compat::QUOTA, "quota"),
    (ro_compat::BIGALLOC, "bigalloc"),
    (ro_compat::METADATA_CSUM, "metadata_csum"),
    (ro_compat::REPLICA, "replica"),
    (ro_compat::READONLY, "read-only"),
    (ro_compat::PROJECT, "project"),
    (ro_compat::SHARED_BLOCKS, "shared_blocks"),
    (ro_compat::VERITY, "verity"),
    (ro_compat::ORPHAN_PRESENT, "orphan_present"),
];

fn feature_name(table: &[(u32, &str)], bit: u32, prefix: &str) -> String {
    table
        .iter()
        .find(|(b, _)| *b == bit)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| format!("{prefix}_{bit:#x}"))
}

/// The parsed superblock. Every field is available from the raw bytes through the accessors;
/// the ones the engine uses all the time are also kept as plain fields.
#[derive(Clone)]
pub struct Superblock {
    raw: Box<[u8; SUPERBLOCK_SIZE]>,
    /// Block size in bytes (1 KiB..=64 KiB).
    pub block_size: u32,
    /// `s_blocks_count` (lo/hi; hi only with 64bit).
    pub blocks_count: u64,
    /// `s_inodes_count`.
    pub inodes_count: u32,
    /// `s_first_data_block`: 1 for 1 KiB blocks (block 0 holds the boot sector), else 0.
    pub first_data_block: u32,
    /// `s_blocks_per_group`.
    pub blocks_per_group: u32,
    /// `s_clusters_per_group` (equals blocks_per_group without bigalloc).
    pub clusters_per_group: u32,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// On-disk inode size (128 for revision 0).
    pub inode_size: u16,
    /// First non-reserved inode (11 for revision 0).
    pub first_ino: u32,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    /// Group descriptor size: 32, or `s_desc_size` with 64bit.
    pub desc_size: u16,
    /// Number of block groups.
    pub group_count: u32,
    /// Checksum seed for metadata_csum: `s_checksum_seed` with metadata_csum_seed, else
    /// crc32c(~0, uuid).
    pub csum_seed: u32,
}

impl std::fmt::Debug for Superblock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Superblock")
            .field("block_size", &self.block_size)
            .field("blocks_count", &self.blocks_count)
            .field("inodes_count", &self.inodes_count)
            .field("group_count", &self.group_count)
            .field("inode_size", &self.inode_size)
            .field(
                "feature_compat",
                &format_args!("{:#x}", self.feature_compat),
            )
            .field(
                "feature_incompat",
                &format_args!("{:#x}", self.feature_incompat),
            )
            .field(
                "feature_ro_compat",
                &format_args!("{:#x}", self.feature_ro_compat),
            )
            .finish_non_exhaustive()
    }
}

fn corrupt(detail: impl Into<String>) -> Ext4Error {
    Ext4Error::corrupt("superblock", detail)
}

impl Superblock {
    /// Parse and validate the 1024 superblock bytes: magic, geometry, incompat features
    /// (an unknown one is refused by name) and, with metadata_csum, the checksum.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut raw = Box::new([0u8; SUPERBLOCK_SIZE]);
        let src = bytes
            .get(..SUPERBLOCK_SIZE)
            .ok_or_else(|| corrupt("shorter than 1024 bytes"))?;
        raw.copy_from_slice(src);
        let r = &raw[..];
        if u16_at(r, 0x38) != EXT4_MAGIC {
            return Err(corrupt(format!(
                "bad magic {:#06x} (not an ext2/3/4 filesystem)",
                u16_at(r, 0x38)
            )));
        }
        let feature_compat = u32_at(r, 0x5C);
        let feature_incompat = u32_at(r, 0x60);
        let feature_ro_compat = u32_at(r, 0x64);
        let rev = u32_at(r, 0x4C);

        // Unknown (or known but unreadable) incompat bits: refuse by name.
        let unreadable = feature_incompat & !INCOMPAT_READABLE;
        if unreadable != 0 {
            let bit = 1u32 << unreadable.trailing_zeros();
            return Err(Ext4Error::UnsupportedFeature {
                name: feature_name(INCOMPAT_NAMES, bit, "incompat"),
                kind: "incompat",
                bit,
            });
        }

        if feature_ro_compat & ro_compat::METADATA_CSUM != 0 {
            if u8_at(r, 0x175) != 1 {
                return Err(corrupt(format!(
                    "unknown checksum type {} (only crc32c is defined)",
                    u8_at(r, 0x175)
                )));
            }
            let stored = u32_at(r, 0x3FC);
            let computed = crc32c_raw(!0, r.get(..0x3FC).unwrap_or(&[]));
            if stored != computed {
                return Err(Ext4Error::Checksum {
                    structure: "superblock".into(),
                    stored,
                    computed,
                });
            }
        }

        let log_bs = u32_at(r, 0x18);
        if log_bs > 6 {
            return Err(corrupt(format!(
                "s_log_block_size {log_bs} (block size above 64 KiB)"
            )));
        }
        let block_size = 1024u32 << log_bs;
        let bit64 = feature_incompat & incompat::BIT64 != 0;
        let blocks_count = u64::from(u32_at(r, 0x4))
            | if bit64 {
                u64::from(u32_at(r, 0x150)) << 32
            } else {
                0
            };
        let inodes_count = u32_at(r, 0x0);
        let first_data_block = u32_at(r, 0x14);
        let blocks_per_group = u32_at(r, 0x20);
        let clusters_per_group = u32_at(r, 0x24);
        let inodes_per_group = u32_at(r, 0x28);
        let (inode_size, first_ino) = if rev == 0 {
            (128u16, 11u32)
        } else {
            (u16_at(r, 0x58), u32_at(r, 0x54))
        };
        let desc_size = if bit64 { u16_at(r, 0xFE) } else { 32 };

        // Geometry sanity: every later computation relies on these bounds.
        let bits_per_block = block_size.saturating_mul(8);
        if blocks_per_group == 0 || blocks_per_group > bits_per_block.saturating_mul(16) {
            return Err(corrupt(format!("s_blocks_per_group {blocks_per_group}")));
        }
        if clusters_per_group == 0 || clusters_per_group > bits_per_block {
            return Err(corrupt(format!(
                "s_clusters_per_group {clusters_per_group}"
            )));
        }
        if feature_ro_compat & ro_compat::BIGALLOC == 0 && clusters_per_group != blocks_per_group {
            return Err(corrupt(format!(
                "s_clusters_per_group {clusters_per_group} differs from s_blocks_per_group \
                 {blocks_per_group} without bigalloc"
            )));
        }
        if inodes_per_group == 0 || inodes_per_group > bits_per_block {
            return Err(corrupt(format!("s_inodes_per_group {inodes_per_group}")));
        }
        if inode_size < 128 || !inode_size.is_power_of_two() || u32::from(inode_size) > block_size {
            return Err(corrupt(format!("s_inode_size {inode_size}")));
        }
        if bit64
            && (desc_size < 32 || !desc_size.is_power_of_two() || u32::from(desc_size) > block_size)
        {
            return Err(corrupt(format!("s_desc_size {desc_size}")));
        }
        if blocks_count <= u64::from(first_data_block) {
            return Err(corrupt(format!(
                "s_blocks_count {blocks_count} not above s_first_data_block {first_data_block}"
            )));
        }
        if first_data_block > 1 {
            return Err(corrupt(format!("s_first_data_block {first_data_block}")));
        }
        let data_blocks = blocks_count - u64::from(first_data_block);
        let groups = data_blocks.div_ceil(u64::from(blocks_per_group));
        let group_count =
            u32::try_from(groups).map_err(|_| corrupt(format!("{groups} block groups")))?;
        if u64::from(inodes_count) != u64::from(group_count) * u64::from(inodes_per_group) {
            return Err(corrupt(format!(
                "s_inodes_count {inodes_count} is not {group_count} groups × \
                 {inodes_per_group} inodes"
            )));
        }
        if first_ino < 11 || first_ino >= inodes_count {
            return Err(corrupt(format!("s_first_ino {first_ino}")));
        }

        let uuid_seed = crc32c_raw(!0, r.get(0x68..0x78).unwrap_or(&[]));
        let csum_seed = if feature_incompat & incompat::CSUM_SEED != 0 {
            u32_at(r, 0x270)
        } else {
            uuid_seed
        };

        Ok(Superblock {
            raw,
            block_size,
            blocks_count,
            inodes_count,
            first_data_block,
            blocks_per_group,
            clusters_per_group,
            inodes_per_group,
            inode_size,
            first_ino,
            feature_compat,
            feature_incompat,
            feature_ro_compat,
            desc_size,
            group_count,
            csum_seed,
        })
    }

    /// The raw 1024 bytes (as last serialized).
    pub fn raw(&self) -> &[u8; SUPERBLOCK_SIZE] {
        &self.raw
    }

    /// Why we must not write this filesystem, or `None` when we may. Checked at open for
    /// writing; every reason is something whose on-disk invariants we do not maintain.
    pub fn write_refusal(&self) -> Option<String> {
        let unknown_ro = self.feature_ro_compat & !RO_COMPAT_WRITABLE;
        if unknown_ro != 0 {
            let bit = 1u32 << unknown_ro.trailing_zeros();
            let name = feature_name(RO_COMPAT_NAMES, bit, "ro_compat");
            let why = match bit {
                ro_compat::BIGALLOC => " (cluster allocation is not implemented)",
                ro_compat::QUOTA | ro_compat::PROJECT => " (quota files would go stale)",
                _ => "",
            };
            return Some(format!("read-only-compatible feature `{name}`{why}"));
        }
        if self.state() & STATE_ERROR != 0 {
            return Some("the filesystem has the errors flag set: run e2fsck first".into());
        }
        if self.has_incompat(incompat::MMP) {
            return Some(
                "multi-mount protection (mmp) is enabled: the image may be in use by a host; \
                 disable mmp with tune2fs -O ^mmp once it is not"
                    .into(),
            );
        }
        for (bit, name) in [
            (incompat::ENCRYPT, "encrypt"),
            (incompat::CASEFOLD, "casefold"),
            (incompat::EA_INODE, "ea_inode"),
            (incompat::COMPRESSION, "compression"),
        ] {
            if self.has_incompat(bit) {
                return Some(format!(
                    "incompatible feature `{name}` is not maintained by our writer"
                ));
            }
        }
        if self.block_size > 65536 {
            return Some("block size above 64 KiB".into());
        }
        None
    }

    /// Test one compat bit.
    pub fn has_compat(&self, bit: u32) -> bool {
        self.feature_compat & bit != 0
    }
    /// Test one incompat bit.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }
    /// Test one ro_compat bit.
    pub fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }
    /// metadata_csum: crc32c checksums on every metadata structure.
    pub fn metadata_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM)
    }
    /// Group descriptors carry a checksum and the UNINIT flags are meaningful (uninit_bg or
    /// metadata_csum).
    pub fn has_group_desc_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM) || self.has_ro_compat(ro_compat::GDT_CSUM)
    }
    /// 64bit feature with descriptors of at least 64 bytes: the `_hi` halves exist.
    pub fn wide_desc(&self) -> bool {
        self.has_incompat(incompat::BIT64) && self.desc_size >= 64
    }
    /// Number of group descriptors per block.
    pub fn descs_per_block(&self) -> u32 {
        self.block_size / u32::from(self.desc_size.max(32))
    }
    /// Number of blocks the whole descriptor table occupies.
    pub fn desc_blocks(&self) -> u32 {
        self.group_count.div_ceil(self.descs_per_block().max(1))
    }

    /// `s_rev_level` (0: fixed 128-byte inodes, first inode 11).
    pub fn rev_level(&self) -> u32 {
        u32_at(&self.raw[..], 0x4C)
    }
    /// `s_state` (`STATE_VALID`, `STATE_ERROR`, `STATE_ORPHAN`).
    pub fn state(&self) -> u16 {
        u16_at(&self.raw[..], 0x3A)
    }
    /// `s_uuid`.
    pub fn uuid(&self) -> [u8; 16] {
        let mut u = [0u8; 16];
        u.copy_from_slice(&self.raw[0x68..0x78]);
        u
    }
    /// `s_volume_name` up to its first NUL.
    pub fn volume_name(&self) -> &[u8] {
        let v = &self.raw[0x78..0x88];
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        v.get(..end).unwrap_or(&[])
    }
    /// `s_r_blocks_count` (lo/hi): blocks reserved for root.
    pub fn reserved_blocks_count(&self) -> u64 {
        let hi = if self.has_incompat(incompat::BIT64) {
            u64::from(u32_at(&self.raw[..], 0x154))
        } else {
            0
        };
        u64::from(u32_at(&self.raw[..], 0x8)) | (hi << 32)
    }
    /// `s_free_blocks_count` (lo/hi).
    pub fn free_blocks_count(&self) -> u64 {
        let hi = if self.has_incompat(incompat::BIT64) {
            u64::from(u32_at(&self.raw[..], 0x158))
        } else {
            0
        };
        u64::from(u32_at(&self.raw[..], 0xC)) | (hi << 32)
    }
    /// `s_free_inodes_count`.
    pub fn free_inodes_count(&self) -> u32 {
        u32_at(&self.raw[..], 0x10)
    }
    /// `s_reserved_gdt_blocks`: blocks kept after the descriptor table for online resize.
    pub fn reserved_gdt_blocks(&self) -> u16 {
        u16_at(&self.raw[..], 0xCE)
    }
    /// `s_journal_inum` (0 with an external journal).
    pub fn journal_inum(&self) -> u32 {
        u32_at(&self.raw[..], 0xE0)
    }
    /// `s_journal_dev` (external journal device number).
    pub fn journal_dev(&self) -> u32 {
        u32_at(&self.raw[..], 0xE4)
    }
    /// `s_journal_uuid` (external journal).
    pub fn journal_uuid(&self) -> [u8; 16] {
        let mut u = [0u8; 16];
        u.copy_from_slice(&self.raw[0xD0..0xE0]);
        u
    }
    /// `s_last_orphan`: head of the orphan inode list (0 when empty).
    pub fn last_orphan(&self) -> u32 {
        u32_at(&self.raw[..], 0xE8)
    }
    /// `s_hash_seed` as four little-endian words (the htree hash seed).
    pub fn hash_seed(&self) -> [u32; 4] {
        [0, 1, 2, 3].map(|i| u32_at(&self.raw[..], 0xEC + 4 * i))
    }
    /// `s_def_hash_version`.
    pub fn def_hash_version(&self) -> u8 {
        u8_at(&self.raw[..], 0xFC)
    }
    /// `s_flags` (signed/unsigned hash…).
    pub fn flags(&self) -> u32 {
        u32_at(&self.raw[..], 0x160)
    }
    /// Directory hashes use unsigned chars.
    pub fn unsigned_hash(&self) -> bool {
        self.flags() & FLAG_UNSIGNED_HASH != 0
    }
    /// `s_default_mount_opts`.
    pub fn default_mount_opts(&self) -> u32 {
        u32_at(&self.raw[..], 0x100)
    }
    /// `s_first_meta_bg`: descriptor blocks before it follow the superblock, later ones live in their meta group.
    pub fn first_meta_bg(&self) -> u32 {
        u32_at(&self.raw[..], 0x104)
    }
    /// The 17 words of the journal inode backup (`s_jnl_blocks`).
    pub fn jnl_blocks(&self) -> [u32; 17] {
        let mut a = [0u32; 17];
        for (i, w) in a.iter_mut().enumerate() {
            *w = u32_at(&self.raw[..], 0x10C + 4 * i);
        }
        a
    }
    /// `s_min_extra_isize`.
    pub fn min_extra_isize(&self) -> u16 {
        u16_at(&self.raw[..], 0x15C)
    }
    /// `s_want_extra_isize`: `i_extra_isize` of new inodes.
    pub fn want_extra_isize(&self) -> u16 {
        u16_at(&self.raw[..], 0x15E)
    }
    /// `s_mmp_interval`.
    pub fn mmp_interval(&self) -> u16 {
        u16_at(&self.raw[..], 0x166)
    }
    /// `s_mmp_block`.
    pub fn mmp_block(&self) -> u64 {
        u64_at(&self.raw[..], 0x168)
    }
    /// `s_raid_stride`.
    pub fn raid_stride(&self) -> u16 {
        u16_at(&self.raw[..], 0x164)
    }
    /// `s_raid_stripe_width`.
    pub fn raid_stripe_width(&self) -> u32 {
        u32_at(&self.raw[..], 0x170)
    }
    /// `s_log_groups_per_flex` (flex_bg group count is `1 << this`).
    pub fn log_groups_per_flex(&self) -> u8 {
        u8_at(&self.raw[..], 0x174)
    }
    /// `s_checksum_type` (1 = crc32c).
    pub fn checksum_type(&self) -> u8 {
        u8_at(&self.raw[..], 0x175)
    }
    /// `s_kbytes_written`.
    pub fn kbytes_written(&self) -> u64 {
        u64_at(&self.raw[..], 0x178)
    }
    /// `s_usr_quota_inum`.
    pub fn usr_quota_inum(&self) -> u32 {
        u32_at(&self.raw[..], 0x240)
    }
    /// `s_grp_quota_inum`.
    pub fn grp_quota_inum(&self) -> u32 {
        u32_at(&self.raw[..], 0x244)
    }
    /// `s_prj_quota_inum`.
    pub fn prj_quota_inum(&self) -> u32 {
        u32_at(&self.raw[..], 0x26C)
    }
    /// `s_overhead_blocks` (0: not recorded).
    pub fn overhead_blocks(&self) -> u32 {
        u32_at(&self.raw[..], 0x248)
    }
    /// `s_backup_bgs`: the two groups holding backups with sparse_super2.
    pub fn backup_bgs(&self) -> [u32; 2] {
        [u32_at(&self.raw[..], 0x24C), u32_at(&self.raw[..], 0x250)]
    }
    /// `s_lpf_ino` (lost+found, when recorded).
    pub fn lpf_ino(&self) -> u32 {
        u32_at(&self.raw[..], 0x268)
    }
    /// `s_checksum_seed` as stored (meaningful with metadata_csum_seed).
    pub fn checksum_seed_field(&self) -> u32 {
        u32_at(&self.raw[..], 0x270)
    }
    /// `s_encoding` (casefold).
    pub fn encoding(&self) -> u16 {
        u16_at(&self.raw[..], 0x27C)
    }
    /// `s_orphan_file_inum` (orphan_file feature).
    pub fn orphan_file_inum(&self) -> u32 {
        u32_at(&self.raw[..], 0x280)
    }
    /// `s_mkfs_time` with its high byte.
    pub fn mkfs_time(&self) -> i64 {
        i64::from(u32_at(&self.raw[..], 0x108)) | (i64::from(u8_at(&self.raw[..], 0x276)) << 32)
    }
    /// `s_wtime` with its high byte.
    pub fn wtime(&self) -> i64 {
        i64::from(u32_at(&self.raw[..], 0x30)) | (i64::from(u8_at(&self.raw[..], 0x274)) << 32)
    }

    /// Number of blocks in group `g` (the last group may be short).
    pub fn blocks_in_group(&self, g: u32) -> u32 {
        let start = self.group_first_block(g);
        let end = start
            .saturating_add(u64::from(self.blocks_per_group))
            .min(self.blocks_count);
        u32::try_from(end.saturating_sub(start)).unwrap_or(0)
    }
    /// First block of group `g`.
    pub fn group_first_block(&self, g: u32) -> u64 {
        u64::from(self.first_data_block) + u64::from(g) * u64::from(self.blocks_per_group)
    }
    /// Group of block `b` (callers check `b < blocks_count`).
    pub fn group_of_block(&self, b: u64) -> u32 {
        u32::try_from(
            b.saturating_sub(u64::from(self.first_data_block)) / u64::from(self.blocks_per_group),
        )
        .unwrap_or(u32::MAX)
    }
    /// Whether group `g` holds a superblock backup (and, without meta_bg, a GDT copy):
    /// group 0 always; with sparse_super2 only the two `s_backup_bgs`; with sparse_super
    /// groups 1 and powers of 3, 5, 7; otherwise every group.
    pub fn group_has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(compat::SPARSE_SUPER2) {
            let b = self.backup_bgs();
            return g == b[0] || g == b[1];
        }
        if g <= 1 || !self.has_ro_compat(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if g & 1 == 0 {
            return false;
        }
        is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)
    }

    /// Set the free counts (called from flush with the sums over all groups).
    pub fn set_free_counts(&mut self, free_blocks: u64, free_inodes: u32) {
        let r = &mut self.raw[..];
        put_u32(r, 0xC, free_blocks as u32);
        if self.feature_incompat & incompat::BIT64 != 0 {
            put_u32(r, 0x158, (free_blocks >> 32) as u32);
        }
        put_u32(r, 0x10, free_inodes);
    }

    /// Set `s_wtime` (with its high byte when the superblock has one).
    pub fn set_wtime(&mut self, secs: i64) {
        let rev = self.rev_level();
        let r = &mut self.raw[..];
        put_u32(r, 0x30, secs as u32);
        if rev >= 1 {
            crate::le::put_u8(r, 0x274, ((secs >> 32) & 0xff) as u8);
        }
    }

    /// Set `s_state`.
    pub fn set_state(&mut self, state: u16) {
        put_u16(&mut self.raw[..], 0x3A, state);
    }

    /// Set the incompat feature word (e.g. clear RECOVER after a replay).
    pub fn set_feature_incompat(&mut self, v: u32) {
        self.feature_incompat = v;
        put_u32(&mut self.raw[..], 0x60, v);
    }

    /// Set the read-only-compatible feature word (e.g. clear orphan_present after the orphan
    /// file was processed).
    pub fn set_feature_ro_compat(&mut self, v: u32) {
        self.feature_ro_compat = v;
        put_u32(&mut self.raw[..], 0x64, v);
    }

    /// Set `s_last_orphan` (cleared after processing orphans).
    pub fn set_last_orphan(&mut self, ino: u32) {
        put_u32(&mut self.raw[..], 0xE8, ino);
    }

    /// Serialize: the raw bytes with the checksum recomputed when metadata_csum is on.
    pub fn to_bytes(&mut self) -> [u8; SUPERBLOCK_SIZE] {
        if self.metadata_csum() {
            let c = crc32c_raw(!0, &self.raw[..0x3FC]);
            put_u32(&mut self.raw[..], 0x3FC, c);
        }
        *self.raw
    }
}

fn is_power_of(mut n: u32, base: u32) -> bool {
    // Bounded: n shrinks by a factor of at least 3 each step.
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_groups() {
        assert!(is_power_of(1, 3));
        assert!(is_power_of(27, 3));
        assert!(is_power_of(125, 5));
        assert!(!is_power_of(15, 3));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            Superblock::parse(&[0u8; 1024]),
            Err(Ext4Error::Corrupt { .. })
        ));
        assert!(Superblock::parse(&[0u8; 10]).is_err());
    }
}
