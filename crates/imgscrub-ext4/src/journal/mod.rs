//! jbd2 journal: parse and replay (descriptor, commit and revoke blocks; checksums v1, v2 and
//! v3; 32- and 64-bit block numbers; escaped blocks). Owner: journal.
//!
//! [`replay`] is what `Ext4Fs::open` calls when the ext4 superblock has the `RECOVER`
//! incompat flag: it reads the whole log first ([`plan_replay`]: the kernel's scan and revoke
//! passes plus a dry replay pass that verifies every checksum), and only when the log is
//! valid writes the committed, non-revoked blocks, marks the journal empty (`s_start = 0`,
//! `s_sequence` = the next transaction) and clears `RECOVER` in the ext4 superblock. A corrupt
//! transaction inside the committed range (a bad commit, descriptor or data-block checksum
//! where the kernel would report an error) returns [`Ext4Error::NeedsRecovery`] and writes
//! nothing. A bad checksum that the kernel treats as the end of the log (an interrupted
//! async commit, a stale block from an earlier pass over the log) ends the replay there.

mod be;
pub mod block;
mod recovery;
pub mod superblock;

pub use recovery::{PlannedWrite, ReplayPlan};
pub use superblock::JournalSuperblock;

use crate::csum::crc32c_raw;
use crate::{Ext4Error, Result};
use be::{le16, le32, put_le16, put_le32};
use imgscrub_disk::BlockDev;
use recovery::LogReader;

/// ext4 superblock offsets (little-endian) the journal code reads or patches.
const EXT4_SB_OFFSET: u64 = 1024;
const EXT4_SB_SIZE: usize = 1024;
const SB_BLOCKS_LO: usize = 0x04;
const SB_LOG_BLOCK_SIZE: usize = 0x18;
const SB_MAGIC: usize = 0x38;
const SB_STATE: usize = 0x3A;
const SB_COMPAT: usize = 0x5C;
const SB_INCOMPAT: usize = 0x60;
const SB_RO_COMPAT: usize = 0x64;
const SB_JOURNAL_INUM: usize = 0xE0;
const SB_JOURNAL_DEV: usize = 0xE4;
const SB_BLOCKS_HI: usize = 0x150;
const SB_CHECKSUM: usize = 0x3FC;

const EXT4_MAGIC: u16 = 0xEF53;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
/// ext4 incompat `RECOVER` (needs_recovery).
pub const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const STATE_ERROR_FS: u16 = 0x2;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// False when the journal was already empty (`s_start == 0`): only the flag was cleared.
    pub log_was_dirty: bool,
    /// First transaction in the log.
    pub start_sequence: u32,
    /// First transaction not replayed; the journal's new `s_sequence` is this plus one.
    pub end_sequence: u32,
    /// Committed transactions replayed.
    pub transactions: u32,
    /// Filesystem blocks written, ascending (each once, with its newest committed copy).
    pub blocks_written: Vec<u64>,
    /// Log copies replayed counting repeats (the kernel's `nr_replays`).
    pub nr_replays: u64,
    /// Revoke records read.
    pub nr_revokes: u64,
    /// Log copies skipped because a revoke covers them.
    pub nr_revoke_hits: u64,
    /// The journal recorded an error (`s_errno`): the filesystem was marked as having errors
    /// (`EXT2_ERROR_FS`), as e2fsck does.
    pub marked_fs_error: bool,
    /// Why the log ended before the last block carrying the magic, if notable.
    pub end_reason: Option<String>,
}

/// True when an ext4 superblock (its 1024 bytes) has the `RECOVER` incompat flag.
pub fn needs_recovery(ext4_sb: &[u8]) -> bool {
    le32(ext4_sb, SB_INCOMPAT, "superblock").is_ok_and(|f| f & INCOMPAT_RECOVER != 0)
}

struct Ext4SbInfo {
    raw: Vec<u8>,
    block_size: u32,
    blocks_count: u64,
}

fn read_ext4_sb(dev: &dyn BlockDev) -> Result<Ext4SbInfo> {
    let mut raw = vec![0u8; EXT4_SB_SIZE];
    dev.read_at(&mut raw, EXT4_SB_OFFSET)?;
    let what = "superblock";
    let magic = le16(&raw, SB_MAGIC, what)?;
    if magic != EXT4_MAGIC {
        return Err(Ext4Error::corrupt(what, format!("bad magic {magic:#06x}")));
    }
    let log = le32(&raw, SB_LOG_BLOCK_SIZE, what)?;
    if log > 6 {
        return Err(Ext4Error::corrupt(what, format!("s_log_block_size {log}")));
    }
    let block_size = 1024u32 << log;
    let incompat = le32(&raw, SB_INCOMPAT, what)?;
    let lo = u64::from(le32(&raw, SB_BLOCKS_LO, what)?);
    let hi = if incompat & INCOMPAT_64BIT != 0 {
        u64::from(le32(&raw, SB_BLOCKS_HI, what)?)
    } else {
        0
    };
    Ok(Ext4SbInfo {
        raw,
        block_size,
        blocks_count: (hi << 32) | lo,
    })
}

fn open_journal_sb(
    dev: &dyn BlockDev,
    fs_block_size: u32,
    journal_blocks: &dyn Fn(u64) -> Result<u64>,
    journal_len_blocks: u64,
) -> Result<(Ext4SbInfo, JournalSuperblock, Vec<u8>)> {
    let sb = read_ext4_sb(dev)?;
    let what = "superblock";
    let compat = le32(&sb.raw, SB_COMPAT, what)?;
    let incompat = le32(&sb.raw, SB_INCOMPAT, what)?;
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return Err(Ext4Error::Unsupported(
            "this is an external journal device, not a filesystem".into(),
        ));
    }
    let inum = le32(&sb.raw, SB_JOURNAL_INUM, what)?;
    let jdev = le32(&sb.raw, SB_JOURNAL_DEV, what)?;
    if inum == 0 {
        return Err(Ext4Error::NeedsRecovery(format!(
            "the journal is on an external journal device (s_journal_dev {jdev:#x}), which imgscrub cannot replay; run e2fsck with the journal device"
        )));
    }
    if compat & COMPAT_HAS_JOURNAL == 0 {
        return Err(Ext4Error::NeedsRecovery(
            "needs_recovery is set but the filesystem has no journal; run e2fsck".into(),
        ));
    }
    if sb.block_size != fs_block_size {
        return Err(Ext4Error::InvalidArgument(format!(
            "journal replay called with block size {fs_block_size}, superblock says {}",
            sb.block_size
        )));
    }
    let reader = LogReader {
        dev,
        block_size: fs_block_size,
        map: journal_blocks,
        max_len: journal_len_blocks,
    };
    let jbuf = reader.read(0)?;
    let jsb = JournalSuperblock::parse(&jbuf, fs_block_size, journal_len_blocks)?;
    Ok((sb, jsb, jbuf))
}

/// Read the journal and compute what [`replay`] would write, without writing anything.
/// Same arguments as [`replay`].
pub fn plan_replay(
    dev: &dyn BlockDev,
    fs_block_size: u32,
    journal_blocks: &dyn Fn(u64) -> Result<u64>,
    journal_len_blocks: u64,
) -> Result<ReplayPlan> {
    let (sb, jsb, _) = open_journal_sb(dev, fs_block_size, journal_blocks, journal_len_blocks)?;
    let reader = LogReader {
        dev,
        block_size: fs_block_size,
        map: journal_blocks,
        max_len: u64::from(jsb.max_len),
    };
    recovery::plan(&reader, &jsb, sb.blocks_count)
}

/// Replay the internal journal of the ext4 filesystem on `dev` and mark it clean.
///
/// `journal_blocks` maps a journal logical block (0 is the journal superblock) to a
/// filesystem block, from the journal inode's extent or block map; `journal_len_blocks` is
/// the journal inode's size in blocks. Committed, non-revoked blocks are written, then the
/// journal superblock (`s_start = 0`, `s_sequence` = end + 1, checksum), then the primary
/// ext4 superblock (`RECOVER` cleared, `ERROR_FS` set when the journal recorded an error,
/// checksum recomputed with metadata_csum), then the device is flushed. The caller must
/// re-read every piece of metadata afterwards (the superblock included).
///
/// Errors (nothing is written): [`Ext4Error::NeedsRecovery`] for an external journal, fast
/// commits or a corrupt transaction; `Corrupt`/`Checksum` for a damaged journal superblock
/// or log.
pub fn replay(
    dev: &dyn BlockDev,
    fs_block_size: u32,
    journal_blocks: &dyn Fn(u64) -> Result<u64>,
    journal_len_blocks: u64,
) -> Result<ReplayReport> {
    let (_, jsb, mut jbuf) =
        open_journal_sb(dev, fs_block_size, journal_blocks, journal_len_blocks)?;
    let reader = LogReader {
        dev,
        block_size: fs_block_size,
        map: journal_blocks,
        max_len: u64::from(jsb.max_len),
    };
    let sb = read_ext4_sb(dev)?;
    let plan = recovery::plan(&reader, &jsb, sb.blocks_count)?;

    // 1. The replayed blocks (idempotent: a crash here replays again on the next open).
    recovery::apply(&reader, &plan)?;
    dev.flush()?;

    // 2. The journal superblock: empty, next sequence.
    let next_sequence = plan.end_sequence.wrapping_add(1);
    superblock::mark_empty(&mut jbuf, &jsb, next_sequence)?;
    let jsb_block = journal_blocks(0)?;
    let jsb_off = jsb_block
        .checked_mul(u64::from(fs_block_size))
        .ok_or_else(|| Ext4Error::corrupt("journal superblock", "location out of range"))?;
    dev.write_at(&jbuf, jsb_off)?;

    // 3. The ext4 superblock, re-read because the replay may have rewritten it.
    let mut sb = read_ext4_sb(dev)?;
    let what = "superblock";
    let incompat = le32(&sb.raw, SB_INCOMPAT, what)?;
    put_le32(&mut sb.raw, SB_INCOMPAT, incompat & !INCOMPAT_RECOVER, what)?;
    let marked_fs_error = jsb.errno != 0;
    if marked_fs_error {
        let state = le16(&sb.raw, SB_STATE, what)?;
        put_le16(&mut sb.raw, SB_STATE, state | STATE_ERROR_FS, what)?;
    }
    if le32(&sb.raw, SB_RO_COMPAT, what)? & RO_COMPAT_METADATA_CSUM != 0 {
        let body = sb
            .raw
            .get(..SB_CHECKSUM)
            .ok_or_else(|| Ext4Error::corrupt(what, "short superblock"))?;
        let c = crc32c_raw(!0, body);
        put_le32(&mut sb.raw, SB_CHECKSUM, c, what)?;
    }
    dev.write_at(&sb.raw, EXT4_SB_OFFSET)?;
    dev.flush()?;

    Ok(ReplayReport {
        log_was_dirty: jsb.start != 0,
        start_sequence: plan.start_sequence,
        end_sequence: plan.end_sequence,
        transactions: plan.end_sequence.wrapping_sub(plan.start_sequence),
        blocks_written: plan.writes.keys().copied().collect(),
        nr_replays: plan.nr_replays,
        nr_revokes: plan.nr_revokes,
        nr_revoke_hits: plan.nr_revoke_hits,
        marked_fs_error,
        end_reason: plan.end_reason,
    })
}
