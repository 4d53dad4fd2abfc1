//! Orphan inodes: the `s_last_orphan` list (inodes chained through `i_dtime`) and the
//! `orphan_file` feature (an inode whose blocks hold arrays of inode numbers, flagged by the
//! `orphan_present` ro_compat bit). Owner: journal.
//!
//! An orphan is an inode that was unlinked while open, or truncated, when the system stopped:
//! the kernel (or e2fsck) must finish the job (free it, or truncate it to `i_size`) before the
//! bitmaps and counters are consistent. A writable `Ext4Fs::open` does that job, as e2fsck's
//! `release_orphan_inodes` does (`fs.rs`, `process_orphans`); a read-only open leaves them
//! (reading is safe). [`refuse_if_pending`] remains for callers that must not process them.

use crate::csum::crc32c_raw;
use crate::{Ext4Error, Result};

const SB_LAST_ORPHAN: usize = 0xE8;
const SB_COMPAT: usize = 0x5C;
const SB_RO_COMPAT: usize = 0x64;
const SB_ORPHAN_FILE_INUM: usize = 0x280;
const COMPAT_ORPHAN_FILE: u32 = 0x1000;
const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x1_0000;

/// Magic in the tail of each orphan-file block (`ob_magic`).
pub const ORPHAN_BLOCK_MAGIC: u32 = 0x0B10_CA04;
/// Size of the orphan-file block tail (`ob_magic`, `ob_checksum`).
const ORPHAN_TAIL: usize = 8;

/// Orphan work recorded in a superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingOrphans {
    /// Nothing to do.
    None,
    /// `s_last_orphan` names the head of a list of orphan inodes.
    List {
        /// First inode of the list.
        head: u32,
    },
    /// The orphan file may hold entries (`orphan_present` is set).
    OrphanFile {
        /// `s_orphan_file_inum`.
        inum: u32,
    },
}

fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
        .unwrap_or(0)
}

/// What orphan processing the superblock (its raw 1024 bytes) asks for.
pub fn pending(sb_raw: &[u8]) -> PendingOrphans {
    let head = le32(sb_raw, SB_LAST_ORPHAN);
    if head != 0 {
        return PendingOrphans::List { head };
    }
    if le32(sb_raw, SB_RO_COMPAT) & RO_COMPAT_ORPHAN_PRESENT != 0 {
        let inum = if le32(sb_raw, SB_COMPAT) & COMPAT_ORPHAN_FILE != 0 {
            le32(sb_raw, SB_ORPHAN_FILE_INUM)
        } else {
            0
        };
        return PendingOrphans::OrphanFile { inum };
    }
    PendingOrphans::None
}

/// `Err(ReadOnly)` when orphans are pending: call it from a writable open (after the journal
/// replay, which may change the answer).
pub fn refuse_if_pending(sb_raw: &[u8]) -> Result<()> {
    match pending(sb_raw) {
        PendingOrphans::None => Ok(()),
        PendingOrphans::List { head } => Err(Ext4Error::ReadOnly(format!(
            "the filesystem has unprocessed orphan inodes (s_last_orphan = {head}): \
             run e2fsck first (imgscrub does not process orphans)"
        ))),
        PendingOrphans::OrphanFile { inum } => Err(Ext4Error::ReadOnly(format!(
            "the orphan file (inode {inum}) has unprocessed orphan inodes (orphan_present): \
             run e2fsck first (imgscrub does not process orphans)"
        ))),
    }
}

/// The checksum of an orphan-file block: `crc32c(seed, le64 blocknr ++ entries)`, where
/// `blocknr` is the block's number on disk (as the kernel's `b_blocknr`).
fn block_csum(seed: u32, blocknr: u64, entries: &[u8]) -> u32 {
    crc32c_raw(crc32c_raw(seed, &blocknr.to_le_bytes()), entries)
}

/// Set the tail of an orphan-file block: the magic and, with `inode_csum_seed`
/// (metadata_csum), the checksum of its entries as they are.
pub fn finish_block(block: &mut [u8], blocknr: u64, inode_csum_seed: Option<u32>) {
    let Some(entries_len) = block.len().checked_sub(ORPHAN_TAIL) else {
        return;
    };
    let (entries, tail) = block.split_at_mut(entries_len);
    tail[..4].copy_from_slice(&ORPHAN_BLOCK_MAGIC.to_le_bytes());
    let c = inode_csum_seed.map_or(0, |seed| block_csum(seed, blocknr, entries));
    tail[4..8].copy_from_slice(&c.to_le_bytes());
}

/// Empty an orphan-file block in place: every entry zero, then [`finish_block`] — what
/// e2fsck writes after processing it.
pub fn clear_block(block: &mut [u8], blocknr: u64, inode_csum_seed: Option<u32>) {
    let entries_len = block.len().saturating_sub(ORPHAN_TAIL);
    if let Some(entries) = block.get_mut(..entries_len) {
        entries.fill(0);
    }
    finish_block(block, blocknr, inode_csum_seed);
}

/// The inode numbers recorded in one orphan-file block (non-zero entries).
///
/// Checks the tail magic and, when `inode_csum_seed` is given (metadata_csum: the orphan
/// file's per-inode seed `crc32c(crc32c(fs_seed, le32 ino), le32 generation)`), the block
/// checksum `crc32c(seed, le64 blocknr ++ entries)` with `blocknr` the block's number on
/// disk.
pub fn orphan_file_block_entries(
    block: &[u8],
    blocknr: u64,
    inode_csum_seed: Option<u32>,
) -> Result<Vec<u32>> {
    let what = || format!("orphan file block {blocknr}");
    let Some(entries_len) = block.len().checked_sub(ORPHAN_TAIL) else {
        return Err(Ext4Error::corrupt(what(), "block too small"));
    };
    let (entries, tail) = block.split_at(entries_len);
    let magic = le32(tail, 0);
    if magic != ORPHAN_BLOCK_MAGIC {
        return Err(Ext4Error::corrupt(
            what(),
            format!("bad magic {magic:#010x}"),
        ));
    }
    if let Some(seed) = inode_csum_seed {
        let stored = le32(tail, 4);
        let computed = block_csum(seed, blocknr, entries);
        if stored != computed {
            return Err(Ext4Error::Checksum {
                structure: what(),
                stored,
                computed,
            });
        }
    }
    Ok(entries
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|&i| i != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_from_superblock_bytes() {
        let mut sb = vec![0u8; 1024];
        assert_eq!(pending(&sb), PendingOrphans::None);
        assert!(refuse_if_pending(&sb).is_ok());
        sb[SB_LAST_ORPHAN..SB_LAST_ORPHAN + 4].copy_from_slice(&13u32.to_le_bytes());
        assert_eq!(pending(&sb), PendingOrphans::List { head: 13 });
        assert!(matches!(
            refuse_if_pending(&sb),
            Err(Ext4Error::ReadOnly(_))
        ));
        sb[SB_LAST_ORPHAN..SB_LAST_ORPHAN + 4].fill(0);
        sb[SB_COMPAT..SB_COMPAT + 4].copy_from_slice(&COMPAT_ORPHAN_FILE.to_le_bytes());
        sb[SB_RO_COMPAT..SB_RO_COMPAT + 4].copy_from_slice(&RO_COMPAT_ORPHAN_PRESENT.to_le_bytes());
        sb[SB_ORPHAN_FILE_INUM..SB_ORPHAN_FILE_INUM + 4].copy_from_slice(&12u32.to_le_bytes());
        assert_eq!(pending(&sb), PendingOrphans::OrphanFile { inum: 12 });
        // Short buffers never panic.
        assert_eq!(pending(&sb[..10]), PendingOrphans::None);
    }

    #[test]
    fn orphan_block_entries_and_checksum() {
        let mut b = vec![0u8; 1024];
        b[8..12].copy_from_slice(&77u32.to_le_bytes());
        b[1016..1020].copy_from_slice(&ORPHAN_BLOCK_MAGIC.to_le_bytes());
        let c = crc32c_raw(crc32c_raw(5, &3u64.to_le_bytes()), &b[..1016]);
        b[1020..].copy_from_slice(&c.to_le_bytes());
        assert_eq!(orphan_file_block_entries(&b, 3, Some(5)).unwrap(), vec![77]);
        assert!(matches!(
            orphan_file_block_entries(&b, 4, Some(5)),
            Err(Ext4Error::Checksum { .. })
        ));
        assert_eq!(orphan_file_block_entries(&b, 4, None).unwrap(), vec![77]);
        clear_block(&mut b, 3, Some(5));
        assert!(
            orphan_file_block_entries(&b, 3, Some(5))
                .unwrap()
                .is_empty()
        );
        b[1016] ^= 1;
        assert!(orphan_file_block_entries(&b, 3, None).is_err());
        assert!(orphan_file_block_entries(&b[..4], 3, None).is_err());
    }
}
