//! The jbd2 journal superblock (block 0 of the journal, big-endian).
//!
//! Layout (kernel `Documentation/filesystems/ext4/journal.rst`, `journal_superblock_t`):
//! header (magic, block type 3 = v1 / 4 = v2, sequence), then `s_blocksize` 0x0C,
//! `s_maxlen` 0x10, `s_first` 0x14, `s_sequence` 0x18, `s_start` 0x1C, `s_errno` 0x20,
//! features 0x24/0x28/0x2C (v2 only), `s_uuid` 0x30, `s_nr_users` 0x40,
//! `s_checksum_type` 0x50, `s_num_fc_blks` 0x54, `s_checksum` 0xFC. The checksum (csum
//! v2/v3) is `crc32c(~0, first 1024 bytes with s_checksum = 0)`.

use super::be::{be32, put_be32};
use crate::csum::crc32c_raw;
use crate::{Ext4Error, Result};

/// `h_magic` of every jbd2 metadata block.
pub const JBD2_MAGIC: u32 = 0xC03B_3998;

/// Block types (`h_blocktype`).
pub const BLOCKTYPE_DESCRIPTOR: u32 = 1;
/// Commit block.
pub const BLOCKTYPE_COMMIT: u32 = 2;
/// Journal superblock, version 1 (no feature fields).
pub const BLOCKTYPE_SB_V1: u32 = 3;
/// Journal superblock, version 2.
pub const BLOCKTYPE_SB_V2: u32 = 4;
/// Revoke block.
pub const BLOCKTYPE_REVOKE: u32 = 5;

/// compat: v1 transaction checksums (crc32_be) in commit blocks.
pub const COMPAT_CHECKSUM: u32 = 0x1;
/// incompat: revoke blocks.
pub const INCOMPAT_REVOKE: u32 = 0x1;
/// incompat: 64-bit block numbers in tags and revoke records.
pub const INCOMPAT_64BIT: u32 = 0x2;
/// incompat: commit blocks may be written before the data blocks.
pub const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
/// incompat: checksum v2 (crc32c, 16-bit tag checksums).
pub const INCOMPAT_CSUM_V2: u32 = 0x8;
/// incompat: checksum v3 (crc32c, 32-bit tag checksums, 16-byte tags).
pub const INCOMPAT_CSUM_V3: u32 = 0x10;
/// incompat: fast commits (an area at the end of the journal).
pub const INCOMPAT_FAST_COMMIT: u32 = 0x20;
const KNOWN_INCOMPAT: u32 = INCOMPAT_REVOKE
    | INCOMPAT_64BIT
    | INCOMPAT_ASYNC_COMMIT
    | INCOMPAT_CSUM_V2
    | INCOMPAT_CSUM_V3
    | INCOMPAT_FAST_COMMIT;

/// `s_checksum_type` for crc32c.
pub const CHECKSUM_TYPE_CRC32C: u8 = 4;

/// Byte offsets of the fields imgscrub rewrites.
pub(crate) const OFF_SEQUENCE: usize = 0x18;
pub(crate) const OFF_START: usize = 0x1C;
pub(crate) const OFF_ERRNO: usize = 0x20;
pub(crate) const OFF_CHECKSUM: usize = 0xFC;
/// Size of the checksummed superblock structure.
pub(crate) const SB_SIZE: usize = 1024;

/// A parsed journal superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSuperblock {
    /// 3 (v1) or 4 (v2).
    pub version_block_type: u32,
    /// Journal block size; must equal the filesystem block size.
    pub block_size: u32,
    /// Journal length in blocks (including this superblock).
    pub max_len: u32,
    /// First block of the log.
    pub first: u32,
    /// Sequence number of the first transaction expected in the log.
    pub sequence: u32,
    /// First block of the log to replay; 0 means the journal is empty (clean).
    pub start: u32,
    /// Error recorded by the kernel (`s_errno`), propagated to the filesystem on recovery.
    pub errno: i32,
    /// Feature bits (zero for v1).
    pub feature_compat: u32,
    /// Incompatible feature bits.
    pub feature_incompat: u32,
    /// Read-only compatible feature bits.
    pub feature_ro_compat: u32,
    /// Journal UUID (seed of the crc32c checksums).
    pub uuid: [u8; 16],
    /// `s_checksum_type`.
    pub checksum_type: u8,
    /// Number of fast-commit blocks (`s_num_fc_blks`).
    pub num_fc_blocks: u32,
    /// Stored checksum (csum v2/v3).
    pub checksum: u32,
}

const WHAT: &str = "journal superblock";

impl JournalSuperblock {
    /// Parse and validate a journal superblock from (at least) its first 1024 bytes.
    ///
    /// Checks the magic, version, known features, the v2/v3 checksum and the log geometry
    /// against `journal_len_blocks` (the journal inode's size in blocks) and the expected
    /// block size.
    pub fn parse(buf: &[u8], fs_block_size: u32, journal_len_blocks: u64) -> Result<Self> {
        if buf.len() < SB_SIZE {
            return Err(Ext4Error::corrupt(
                WHAT,
                format!("only {} bytes", buf.len()),
            ));
        }
        let magic = be32(buf, 0, WHAT)?;
        if magic != JBD2_MAGIC {
            return Err(Ext4Error::corrupt(WHAT, format!("bad magic {magic:#010x}")));
        }
        let version_block_type = be32(buf, 4, WHAT)?;
        let v2 = match version_block_type {
            BLOCKTYPE_SB_V1 => false,
            BLOCKTYPE_SB_V2 => true,
            t => {
                return Err(Ext4Error::corrupt(
                    WHAT,
                    format!("unknown journal superblock version (block type {t})"),
                ));
            }
        };
        let (feature_compat, feature_incompat, feature_ro_compat) = if v2 {
            (
                be32(buf, 0x24, WHAT)?,
                be32(buf, 0x28, WHAT)?,
                be32(buf, 0x2C, WHAT)?,
            )
        } else {
            (0, 0, 0)
        };
        let mut uuid = [0u8; 16];
        if let Some(u) = buf.get(0x30..0x40) {
            uuid.copy_from_slice(u);
        }
        let checksum_type = buf.get(0x50).copied().unwrap_or(0);
        let sb = JournalSuperblock {
            version_block_type,
            block_size: be32(buf, 0x0C, WHAT)?,
            max_len: be32(buf, 0x10, WHAT)?,
            first: be32(buf, 0x14, WHAT)?,
            sequence: be32(buf, OFF_SEQUENCE, WHAT)?,
            start: be32(buf, OFF_START, WHAT)?,
            errno: be32(buf, OFF_ERRNO, WHAT)? as i32,
            feature_compat,
            feature_incompat,
            feature_ro_compat,
            uuid,
            checksum_type,
            num_fc_blocks: be32(buf, 0x54, WHAT)?,
            checksum: be32(buf, OFF_CHECKSUM, WHAT)?,
        };
        sb.validate(buf, fs_block_size, journal_len_blocks)?;
        Ok(sb)
    }

    fn validate(&self, buf: &[u8], fs_block_size: u32, journal_len_blocks: u64) -> Result<()> {
        let unknown = self.feature_incompat & !KNOWN_INCOMPAT;
        if unknown != 0 {
            return Err(Ext4Error::UnsupportedFeature {
                name: format!("journal incompat {unknown:#x}"),
                kind: "journal incompat",
                bit: unknown,
            });
        }
        if self.feature_ro_compat != 0 {
            return Err(Ext4Error::UnsupportedFeature {
                name: format!("journal ro_compat {:#x}", self.feature_ro_compat),
                kind: "journal ro_compat",
                bit: self.feature_ro_compat,
            });
        }
        if self.has_incompat(INCOMPAT_CSUM_V2) && self.has_incompat(INCOMPAT_CSUM_V3) {
            return Err(Ext4Error::corrupt(WHAT, "both checksum v2 and v3 are set"));
        }
        if self.csum_v2_or_v3() {
            if self.checksum_type != CHECKSUM_TYPE_CRC32C {
                return Err(Ext4Error::corrupt(
                    WHAT,
                    format!("unknown checksum type {}", self.checksum_type),
                ));
            }
            let computed = superblock_checksum(buf)?;
            if computed != self.checksum {
                return Err(Ext4Error::Checksum {
                    structure: WHAT.into(),
                    stored: self.checksum,
                    computed,
                });
            }
        }
        if self.block_size != fs_block_size {
            return Err(Ext4Error::corrupt(
                WHAT,
                format!(
                    "journal block size {} differs from the filesystem block size {fs_block_size}",
                    self.block_size
                ),
            ));
        }
        if u64::from(self.max_len) > journal_len_blocks {
            return Err(Ext4Error::corrupt(
                WHAT,
                format!(
                    "journal claims {} blocks but the journal inode has {journal_len_blocks}",
                    self.max_len
                ),
            ));
        }
        if self.first == 0 || self.first >= self.last() {
            return Err(Ext4Error::corrupt(
                WHAT,
                format!(
                    "log area {}..{} is empty or invalid",
                    self.first,
                    self.last()
                ),
            ));
        }
        if self.start != 0 && (self.start < self.first || self.start >= self.last()) {
            return Err(Ext4Error::corrupt(
                WHAT,
                format!(
                    "log start {} outside the log area {}..{}",
                    self.start,
                    self.first,
                    self.last()
                ),
            ));
        }
        Ok(())
    }

    /// True when an incompat feature bit is set.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    /// True with checksum v2 or v3 (crc32c everywhere).
    pub fn csum_v2_or_v3(&self) -> bool {
        self.has_incompat(INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3)
    }

    /// End (exclusive) of the normal log area: `s_maxlen`, minus the fast-commit area.
    pub fn last(&self) -> u32 {
        if self.has_incompat(INCOMPAT_FAST_COMMIT) {
            let fc = if self.num_fc_blocks == 0 {
                256
            } else {
                self.num_fc_blocks
            };
            self.max_len.saturating_sub(fc)
        } else {
            self.max_len
        }
    }

    /// Size in bytes of one descriptor tag (without the optional 16-byte UUID).
    pub fn tag_bytes(&self) -> usize {
        if self.has_incompat(INCOMPAT_CSUM_V3) {
            return 16;
        }
        let mut sz = 12;
        if self.has_incompat(INCOMPAT_CSUM_V2) {
            sz += 2;
        }
        if self.has_incompat(INCOMPAT_64BIT) {
            sz
        } else {
            sz - 4
        }
    }

    /// Seed of every crc32c in the journal: `crc32c(~0, s_uuid)`.
    pub fn csum_seed(&self) -> u32 {
        crc32c_raw(!0, &self.uuid)
    }
}

/// The v2/v3 checksum of a journal superblock buffer (first 1024 bytes, checksum zeroed).
pub fn superblock_checksum(buf: &[u8]) -> Result<u32> {
    let head = buf
        .get(..OFF_CHECKSUM)
        .ok_or_else(|| Ext4Error::corrupt(WHAT, "short buffer"))?;
    let tail = buf
        .get(OFF_CHECKSUM + 4..SB_SIZE)
        .ok_or_else(|| Ext4Error::corrupt(WHAT, "short buffer"))?;
    let c = crc32c_raw(!0, head);
    let c = crc32c_raw(c, &[0; 4]);
    Ok(crc32c_raw(c, tail))
}

/// Mark the journal empty after a replay: `s_start = 0`, `s_sequence = next_sequence`,
/// `s_errno = 0`, and the checksum recomputed when the journal has one.
pub(crate) fn mark_empty(buf: &mut [u8], sb: &JournalSuperblock, next_sequence: u32) -> Result<()> {
    put_be32(buf, OFF_SEQUENCE, next_sequence, WHAT)?;
    put_be32(buf, OFF_START, 0, WHAT)?;
    put_be32(buf, OFF_ERRNO, 0, WHAT)?;
    if sb.csum_v2_or_v3() {
        let c = superblock_checksum(buf)?;
        put_be32(buf, OFF_CHECKSUM, c, WHAT)?;
    }
    Ok(())
}
