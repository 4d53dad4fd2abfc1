//! The three recovery passes (scan for the end of the log, collect revokes, replay), as the
//! kernel's `fs/jbd2/recovery.c` does them, and the write-out.
//!
//! Unlike the kernel, imgscrub first *plans* the replay (reading only) and writes nothing
//! until the whole plan is known to be valid: a corrupt transaction inside the replayed range
//! leaves the image untouched ("fail closed").

use super::block::{
    self, Commit, FLAG_ESCAPE, Header, commit_checksum_ok, data_checksum_ok, descriptor_tags,
    revoke_records, tail_checksum_ok,
};
use super::superblock::{
    BLOCKTYPE_COMMIT, BLOCKTYPE_DESCRIPTOR, BLOCKTYPE_REVOKE, COMPAT_CHECKSUM,
    INCOMPAT_ASYNC_COMMIT, INCOMPAT_FAST_COMMIT, JBD2_MAGIC, JournalSuperblock,
};
use crate::{Ext4Error, Result};
use imgscrub_disk::BlockDev;
use std::collections::{BTreeMap, HashMap};

/// Reads journal blocks through the logical → filesystem block map.
pub(crate) struct LogReader<'a> {
    pub dev: &'a dyn BlockDev,
    pub block_size: u32,
    pub map: &'a dyn Fn(u64) -> Result<u64>,
    /// `s_maxlen`: no journal block at or beyond it is ever read.
    pub max_len: u64,
}

impl LogReader<'_> {
    pub fn read(&self, lblk: u64) -> Result<Vec<u8>> {
        if lblk >= self.max_len {
            return Err(Ext4Error::corrupt(
                format!("journal block {lblk}"),
                format!("beyond the end of the journal ({} blocks)", self.max_len),
            ));
        }
        let pblk = (self.map)(lblk)?;
        let off = pblk
            .checked_mul(u64::from(self.block_size))
            .ok_or_else(|| {
                Ext4Error::corrupt(
                    format!("journal block {lblk}"),
                    format!("maps to impossible block {pblk}"),
                )
            })?;
        let mut buf = vec![0u8; self.block_size as usize];
        self.dev.read_at(&mut buf, off)?;
        Ok(buf)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pass {
    Scan,
    Revoke,
    Replay,
}

/// `tid_geq`: sequence comparison modulo 2^32.
fn tid_geq(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) >= 0
}

/// `tid_gt`.
fn tid_gt(x: u32, y: u32) -> bool {
    (x.wrapping_sub(y) as i32) > 0
}

/// Where one filesystem block's newest committed copy sits in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedWrite {
    /// Journal logical block holding the data.
    pub log_block: u64,
    /// Restore the jbd2 magic in the first 4 bytes.
    pub escaped: bool,
    /// Transaction the copy comes from.
    pub sequence: u32,
}

/// The result of reading the log: what a replay would write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayPlan {
    /// First transaction of the log (`s_sequence`).
    pub start_sequence: u32,
    /// First transaction *not* replayed (the end of the valid log).
    pub end_sequence: u32,
    /// Filesystem block → its newest non-revoked copy in the log.
    pub writes: BTreeMap<u64, PlannedWrite>,
    /// Data blocks replayed counting repeats (the kernel's `nr_replays`).
    pub nr_replays: u64,
    /// Revoke records read (`nr_revokes`).
    pub nr_revokes: u64,
    /// Blocks skipped because a later revoke covers them (`nr_revoke_hits`).
    pub nr_revoke_hits: u64,
    /// Why the scan ended where it did, when it was not simply "no more valid blocks".
    pub end_reason: Option<String>,
}

struct Walker<'a> {
    log: &'a LogReader<'a>,
    jsb: &'a JournalSuperblock,
    first: u64,
    last: u64,
}

impl Walker<'_> {
    fn wrap(&self, b: u64) -> u64 {
        if b >= self.last {
            b - (self.last - self.first)
        } else {
            b
        }
    }

    fn what(lblk: u64) -> String {
        format!("journal block {lblk}")
    }
}

/// State carried between passes.
#[derive(Default)]
struct Info {
    end_transaction: Option<u32>,
    failed_commit: Option<u32>,
    /// block → newest revoking sequence.
    revoked: HashMap<u64, u32>,
}

/// Read the log and compute what a replay writes; nothing is written.
pub(crate) fn plan(
    log: &LogReader<'_>,
    jsb: &JournalSuperblock,
    fs_blocks: u64,
) -> Result<ReplayPlan> {
    let mut plan = ReplayPlan {
        start_sequence: jsb.sequence,
        end_sequence: jsb.sequence,
        ..ReplayPlan::default()
    };
    if jsb.start == 0 {
        return Ok(plan);
    }
    if jsb.has_incompat(INCOMPAT_FAST_COMMIT) {
        return Err(Ext4Error::NeedsRecovery(
            "the journal uses fast commits, which imgscrub cannot replay; run e2fsck".into(),
        ));
    }
    let walker = Walker {
        log,
        jsb,
        first: u64::from(jsb.first),
        last: u64::from(jsb.last()),
    };
    let mut info = Info::default();
    for pass in [Pass::Scan, Pass::Revoke, Pass::Replay] {
        one_pass(&walker, &mut info, pass, &mut plan, fs_blocks)?;
    }
    if let Some(failed) = info.failed_commit {
        return Err(Ext4Error::NeedsRecovery(format!(
            "journal transaction {failed} is corrupt (commit block checksum mismatch); run e2fsck"
        )));
    }
    Ok(plan)
}

fn one_pass(
    w: &Walker<'_>,
    info: &mut Info,
    pass: Pass,
    plan: &mut ReplayPlan,
    fs_blocks: u64,
) -> Result<()> {
    let jsb = w.jsb;
    let mut next_id = jsb.sequence;
    let mut next_block = u64::from(jsb.start);
    let mut crc32_sum: u32 = !0;
    let mut need_check_commit_time = false;
    let mut last_commit_time: u64 = 0;
    // Every iteration consumes at least one log block; a valid log is never longer than the
    // log area, so this bounds the walk even on a crafted journal.
    let budget = w.last.saturating_sub(w.first).saturating_add(1);
    let mut consumed: u64 = 0;

    loop {
        if pass != Pass::Scan
            && let Some(end) = info.end_transaction
            && tid_geq(next_id, end)
        {
            break;
        }
        if consumed > budget {
            return Err(Ext4Error::corrupt(
                "journal",
                "the log wraps onto itself (longer than the journal)",
            ));
        }
        let this_block = next_block;
        let what = Walker::what(this_block);
        let buf = w.log.read(this_block)?;
        consumed += 1;
        next_block = w.wrap(next_block + 1);

        let Some(hdr) = Header::parse(&buf, &what)? else {
            break;
        };
        if hdr.sequence != next_id {
            break;
        }

        match hdr.block_type {
            BLOCKTYPE_DESCRIPTOR => {
                if !tail_checksum_ok(&buf, jsb) {
                    if pass != Pass::Scan {
                        return Err(Ext4Error::NeedsRecovery(format!(
                            "invalid checksum of descriptor {what} in transaction {next_id}"
                        )));
                    }
                    need_check_commit_time = true;
                }
                let tags = descriptor_tags(&buf, jsb, &what)?;
                if pass == Pass::Scan
                    && jsb.feature_compat & COMPAT_CHECKSUM != 0
                    && !need_check_commit_time
                    && info.end_transaction.is_none()
                {
                    crc32_sum = block::v1_update(crc32_sum, &buf);
                    for _ in &tags {
                        let data = w.log.read(next_block)?;
                        consumed += 1;
                        next_block = w.wrap(next_block + 1);
                        crc32_sum = block::v1_update(crc32_sum, &data);
                    }
                    continue;
                }
                if pass != Pass::Replay {
                    consumed += tags.len() as u64;
                    next_block = w.wrap(next_block + tags.len() as u64);
                    continue;
                }
                for tag in &tags {
                    let io_block = next_block;
                    consumed += 1;
                    next_block = w.wrap(next_block + 1);
                    if let Some(&rseq) = info.revoked.get(&tag.fs_block)
                        && !tid_gt(next_id, rseq)
                    {
                        plan.nr_revoke_hits += 1;
                        continue;
                    }
                    if jsb.csum_v2_or_v3() {
                        let data = w.log.read(io_block)?;
                        if !data_checksum_ok(&data, tag, hdr.sequence, jsb) {
                            return Err(Ext4Error::NeedsRecovery(format!(
                                "invalid checksum of the copy of filesystem block {} in journal block {io_block} (transaction {next_id})",
                                tag.fs_block
                            )));
                        }
                    }
                    if tag.fs_block >= fs_blocks {
                        return Err(Ext4Error::corrupt(
                            what.clone(),
                            format!(
                                "transaction {next_id} writes block {} beyond the filesystem ({fs_blocks} blocks)",
                                tag.fs_block
                            ),
                        ));
                    }
                    plan.nr_replays += 1;
                    plan.writes.insert(
                        tag.fs_block,
                        PlannedWrite {
                            log_block: io_block,
                            escaped: tag.flags & FLAG_ESCAPE != 0,
                            sequence: next_id,
                        },
                    );
                }
            }
            BLOCKTYPE_COMMIT => {
                let commit = Commit::parse(&buf, &what)?;
                let commit_time = commit.commit_sec;
                if need_check_commit_time {
                    if commit_time >= last_commit_time {
                        return Err(Ext4Error::NeedsRecovery(format!(
                            "invalid checksum found in journal transaction {next_id}"
                        )));
                    }
                    // A stale block from an older use of the log: the log ends here.
                    plan.end_reason = Some(format!(
                        "stale transaction {next_id} with a bad checksum ends the log"
                    ));
                    break;
                }
                let mut bad = false;
                if pass == Pass::Scan && jsb.feature_compat & COMPAT_CHECKSUM != 0 {
                    if let Some(end) = info.end_transaction {
                        info.failed_commit = Some(end);
                        break;
                    }
                    if !commit.v1_ok(crc32_sum) {
                        bad = true;
                    }
                    crc32_sum = !0;
                }
                if !bad && pass == Pass::Scan && !commit_checksum_ok(&buf, jsb) {
                    bad = true;
                }
                if bad {
                    if commit_time < last_commit_time {
                        plan.end_reason = Some(format!(
                            "stale transaction {next_id} with a bad checksum ends the log"
                        ));
                        break;
                    }
                    info.end_transaction = Some(next_id);
                    if !jsb.has_incompat(INCOMPAT_ASYNC_COMMIT) {
                        info.failed_commit = Some(next_id);
                        break;
                    }
                    plan.end_reason = Some(format!(
                        "transaction {next_id} has a bad commit checksum (async commit: treated as interrupted)"
                    ));
                }
                if pass == Pass::Scan {
                    last_commit_time = commit_time;
                }
                next_id = next_id.wrapping_add(1);
            }
            BLOCKTYPE_REVOKE => {
                if pass == Pass::Scan && !tail_checksum_ok(&buf, jsb) {
                    need_check_commit_time = true;
                }
                if pass != Pass::Revoke {
                    continue;
                }
                for b in revoke_records(&buf, jsb, &what)? {
                    plan.nr_revokes += 1;
                    let e = info.revoked.entry(b).or_insert(next_id);
                    if tid_gt(next_id, *e) {
                        *e = next_id;
                    }
                }
            }
            _ => break,
        }
    }

    match pass {
        Pass::Scan => {
            if info.end_transaction.is_none() {
                info.end_transaction = Some(next_id);
            }
            plan.end_sequence = info.end_transaction.unwrap_or(next_id);
        }
        _ => {
            if info.end_transaction != Some(next_id) {
                return Err(Ext4Error::corrupt(
                    "journal",
                    format!(
                        "recovery pass {pass:?} ended at transaction {next_id}, expected {:?}",
                        info.end_transaction
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Write the planned blocks to the filesystem.
pub(crate) fn apply(log: &LogReader<'_>, plan: &ReplayPlan) -> Result<()> {
    let bs = u64::from(log.block_size);
    for (&fs_block, pw) in &plan.writes {
        let mut data = log.read(pw.log_block)?;
        if pw.escaped
            && let Some(head) = data.get_mut(..4)
        {
            head.copy_from_slice(&JBD2_MAGIC.to_be_bytes());
        }
        let off = fs_block.checked_mul(bs).ok_or_else(|| {
            Ext4Error::corrupt("journal", format!("block {fs_block} is out of range"))
        })?;
        log.dev.write_at(&data, off)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tid_comparisons_wrap() {
        assert!(tid_geq(5, 5));
        assert!(tid_geq(0, u32::MAX));
        assert!(!tid_geq(u32::MAX, 0));
        assert!(tid_gt(1, 0));
        assert!(!tid_gt(0, 0));
    }
}
