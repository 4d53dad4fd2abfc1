//! jbd2 log blocks: the common header, descriptor blocks and their tags, commit blocks and
//! revoke blocks, with their checksums.
//!
//! Header (12 bytes, big-endian): `h_magic`, `h_blocktype`, `h_sequence`.
//!
//! Descriptor tags follow the header. A tag is `t_blocknr` (be32), then either
//! `t_checksum` (be16) + `t_flags` (be16) + `t_blocknr_high` (be32) — 8 bytes without
//! 64bit, 12 with, plus 2 with csum v2 (the kernel's `journal_tag_bytes`) — or with csum v3
//! `t_flags` (be32) + `t_blocknr_high` (be32) + `t_checksum` (be32), always 16 bytes.
//! Either way the flags' low 16 bits sit at byte 6. A tag without `SAME_UUID` is followed by
//! a 16-byte UUID. With csum v2/v3 the last 4 bytes of descriptor and revoke blocks hold
//! `crc32c(seed, block with those bytes zeroed)`.

use super::be::{be16, be32, be64, crc32_be};
use super::superblock::{INCOMPAT_64BIT, INCOMPAT_CSUM_V3, JBD2_MAGIC, JournalSuperblock};
use crate::csum::crc32c_raw;
use crate::{Ext4Error, Result};

/// Tag flag: the data block began with the jbd2 magic, which was zeroed in the log copy.
pub const FLAG_ESCAPE: u16 = 1;
/// Tag flag: no UUID follows this tag.
pub const FLAG_SAME_UUID: u16 = 2;
/// Tag flag: deleted (unused by jbd2, kept for completeness).
pub const FLAG_DELETED: u16 = 4;
/// Tag flag: last tag of this descriptor block.
pub const FLAG_LAST_TAG: u16 = 8;

/// Size of `journal_header_t`.
pub const HEADER_SIZE: usize = 12;
/// Size of the checksum tail of descriptor and revoke blocks (csum v2/v3).
pub const TAIL_SIZE: usize = 4;

/// The common header of a log block, if it has the jbd2 magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `h_blocktype`.
    pub block_type: u32,
    /// `h_sequence`: the transaction this block belongs to.
    pub sequence: u32,
}

impl Header {
    /// `None` when the block does not start with the jbd2 magic (the end of the log).
    pub fn parse(block: &[u8], what: &str) -> Result<Option<Header>> {
        if be32(block, 0, what)? != JBD2_MAGIC {
            return Ok(None);
        }
        Ok(Some(Header {
            block_type: be32(block, 4, what)?,
            sequence: be32(block, 8, what)?,
        }))
    }
}

/// One tag of a descriptor block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Filesystem block the following log block belongs to.
    pub fs_block: u64,
    /// `t_flags` (low 16 bits).
    pub flags: u16,
    /// Stored data checksum (16 bits for v2, 32 for v3, 0 without checksums).
    pub checksum: u32,
}

/// The tags of a descriptor block, in order, stopping at `LAST_TAG` or at the end of the
/// usable space (block size minus the checksum tail), as the kernel's `count_tags`.
pub fn descriptor_tags(block: &[u8], jsb: &JournalSuperblock, what: &str) -> Result<Vec<Tag>> {
    let tag_bytes = jsb.tag_bytes();
    let tail = if jsb.csum_v2_or_v3() { TAIL_SIZE } else { 0 };
    let limit = block.len().saturating_sub(tail);
    let v3 = jsb.has_incompat(INCOMPAT_CSUM_V3);
    let wide = jsb.has_incompat(INCOMPAT_64BIT);
    let mut tags = Vec::new();
    let mut off = HEADER_SIZE;
    // Each iteration advances `off` by at least 8 bytes: bounded by the block size.
    while off.saturating_add(tag_bytes) <= limit {
        let lo = be32(block, off, what)?;
        let flags = be16(block, off + 6, what)?;
        let hi = if wide { be32(block, off + 8, what)? } else { 0 };
        let checksum = if v3 {
            be32(block, off + 12, what)?
        } else if jsb.csum_v2_or_v3() {
            u32::from(be16(block, off + 4, what)?)
        } else {
            0
        };
        tags.push(Tag {
            fs_block: (u64::from(hi) << 32) | u64::from(lo),
            flags,
            checksum,
        });
        off += tag_bytes;
        if flags & FLAG_SAME_UUID == 0 {
            off += 16;
        }
        if flags & FLAG_LAST_TAG != 0 {
            break;
        }
    }
    Ok(tags)
}

/// Verify the checksum tail of a descriptor or revoke block (always true without v2/v3).
pub fn tail_checksum_ok(block: &[u8], jsb: &JournalSuperblock) -> bool {
    if !jsb.csum_v2_or_v3() || block.len() < TAIL_SIZE + HEADER_SIZE {
        return !jsb.csum_v2_or_v3();
    }
    let split = block.len() - TAIL_SIZE;
    let (body, tail) = block.split_at(split);
    let stored = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let c = crc32c_raw(jsb.csum_seed(), body);
    crc32c_raw(c, &[0; TAIL_SIZE]) == stored
}

/// Verify a data block against its tag (v2: low 16 bits; v3: 32 bits):
/// `crc32c(crc32c(seed, be32(sequence)), data)`.
pub fn data_checksum_ok(data: &[u8], tag: &Tag, sequence: u32, jsb: &JournalSuperblock) -> bool {
    if !jsb.csum_v2_or_v3() {
        return true;
    }
    let c = crc32c_raw(jsb.csum_seed(), &sequence.to_be_bytes());
    let c = crc32c_raw(c, data);
    if jsb.has_incompat(INCOMPAT_CSUM_V3) {
        tag.checksum == c
    } else {
        tag.checksum == (c & 0xFFFF)
    }
}

/// Offsets inside a commit block.
const COMMIT_CHKSUM_TYPE: usize = 0x0C;
const COMMIT_CHKSUM_SIZE: usize = 0x0D;
const COMMIT_CHKSUM0: usize = 0x10;
const COMMIT_SEC: usize = 0x30;

/// `h_chksum_type` of a v1 (crc32_be) transaction checksum.
pub const CRC32_CHKSUM: u8 = 1;
/// `h_chksum_size` of a v1 transaction checksum.
pub const CRC32_CHKSUM_SIZE: u8 = 4;

/// The fields of a commit block that recovery looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// `h_chksum_type`.
    pub chksum_type: u8,
    /// `h_chksum_size`.
    pub chksum_size: u8,
    /// `h_chksum[0]`.
    pub chksum0: u32,
    /// `h_commit_sec`.
    pub commit_sec: u64,
}

impl Commit {
    /// Parse the commit fields.
    pub fn parse(block: &[u8], what: &str) -> Result<Commit> {
        let byte = |off: usize| {
            block
                .get(off)
                .copied()
                .ok_or_else(|| Ext4Error::corrupt(what, "short commit block"))
        };
        Ok(Commit {
            chksum_type: byte(COMMIT_CHKSUM_TYPE)?,
            chksum_size: byte(COMMIT_CHKSUM_SIZE)?,
            chksum0: be32(block, COMMIT_CHKSUM0, what)?,
            commit_sec: be64(block, COMMIT_SEC, what)?,
        })
    }

    /// The v1 check: the crc32_be sum matches, or the block carries no checksum at all.
    pub fn v1_ok(&self, crc32_sum: u32) -> bool {
        (self.chksum0 == crc32_sum
            && self.chksum_type == CRC32_CHKSUM
            && self.chksum_size == CRC32_CHKSUM_SIZE)
            || (self.chksum_type == 0 && self.chksum_size == 0 && self.chksum0 == 0)
    }
}

/// Verify the v2/v3 checksum of a commit block: `crc32c(seed, block with h_chksum[0] = 0)`.
pub fn commit_checksum_ok(block: &[u8], jsb: &JournalSuperblock) -> bool {
    if !jsb.csum_v2_or_v3() {
        return true;
    }
    let (Some(head), Some(stored), Some(rest)) = (
        block.get(..COMMIT_CHKSUM0),
        block.get(COMMIT_CHKSUM0..COMMIT_CHKSUM0 + 4),
        block.get(COMMIT_CHKSUM0 + 4..),
    ) else {
        return false;
    };
    let stored = u32::from_be_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let c = crc32c_raw(jsb.csum_seed(), head);
    let c = crc32c_raw(c, &[0; 4]);
    crc32c_raw(c, rest) == stored
}

/// The v1 running checksum over one log block.
pub fn v1_update(crc32_sum: u32, block: &[u8]) -> u32 {
    crc32_be(crc32_sum, block)
}

/// The block numbers a revoke block revokes (`r_count` bytes used, starting after the
/// 16-byte header; 8-byte records with 64bit, else 4).
pub fn revoke_records(block: &[u8], jsb: &JournalSuperblock, what: &str) -> Result<Vec<u64>> {
    let tail = if jsb.csum_v2_or_v3() { TAIL_SIZE } else { 0 };
    let r_count = be32(block, HEADER_SIZE, what)? as usize;
    if r_count > block.len().saturating_sub(tail) {
        return Err(Ext4Error::corrupt(
            what,
            format!("revoke block claims {r_count} bytes of records"),
        ));
    }
    let record_len = if jsb.has_incompat(INCOMPAT_64BIT) {
        8
    } else {
        4
    };
    let mut out = Vec::new();
    let mut off = HEADER_SIZE + 4;
    while off + record_len <= r_count {
        let b = if record_len == 8 {
            be64(block, off, what)?
        } else {
            u64::from(be32(block, off, what)?)
        };
        out.push(b);
        off += record_len;
    }
    Ok(out)
}
