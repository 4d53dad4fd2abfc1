//! Is the internal log clean? We never replay an XFS log: a filesystem whose log holds
//! changes is refused with a message to mount it once (the kernel replays) or to run
//! `xfs_repair`.
//!
//! The log is a ring of 512-byte sectors; every sector written in pass N of the ring starts
//! with the cycle number N. The head (where the next write goes) is where the cycle number
//! drops. The log is clean when the record just before the head is an unmount record: a
//! record with exactly one operation whose flags say "unmount" and that ends at the head —
//! the same test the kernel makes at mount time.

use crate::be::{u8_at, u32_at};
use crate::error::{Result, XfsError, corrupt};
use crate::reader::Reader;

const BB: u64 = 512;
const RECORD_MAGIC: u32 = 0xfeed_babe;
const UNMOUNT_TRANS: u8 = 0x20;
/// How far back from the head a record header may start: the largest log record (256 KiB)
/// plus its extra header sectors.
const MAX_RECORD_BBS: u64 = (256 << 10) / BB + 16;

/// What we found in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogState {
    /// Never written (all zeros): nothing to replay.
    Zeroed,
    /// Ends with an unmount record.
    Clean,
}

impl std::fmt::Display for LogState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogState::Zeroed => "zeroed",
            LogState::Clean => "clean",
        })
    }
}

fn dirty(detail: &str) -> XfsError {
    XfsError::NeedsRepair(format!(
        "the XFS log is not clean ({detail}): it holds changes that were never written to \
         the filesystem. Mount the filesystem once (the kernel replays the log) or run \
         `xfs_repair` on it, then try again"
    ))
}

struct Log<'a> {
    r: Reader<'a>,
    start: u64,
    bbs: u64,
}

impl Log<'_> {
    fn sector(&self, bb: u64) -> Result<Vec<u8>> {
        self.r.bytes(self.start + (bb % self.bbs) * BB, BB as usize)
    }
    /// The cycle number of a sector: its first word, or `h_cycle` for a record header.
    fn cycle(&self, bb: u64) -> Result<u32> {
        let s = self.sector(bb)?;
        Ok(if u32_at(&s, 0) == RECORD_MAGIC {
            u32_at(&s, 4)
        } else {
            u32_at(&s, 0)
        })
    }
}

/// Check the internal log.
pub fn check(r: &Reader<'_>) -> Result<LogState> {
    let sb = r.sb;
    let bbs = (u64::from(sb.logblocks) << sb.blocklog) / BB;
    if bbs < 2 {
        return Err(corrupt("log", format!("{} blocks", sb.logblocks)));
    }
    let log = Log {
        r: *r,
        start: sb.fsb_to_byte(sb.logstart),
        bbs,
    };
    let first = log.cycle(0)?;
    let last = log.cycle(bbs - 1)?;
    if first == 0 {
        // mkfs may zero the log and write nothing; the kernel accepts an all-zero log.
        // Anything written after a zero block start would mean a torn ring: check the end.
        if last == 0 {
            return Ok(LogState::Zeroed);
        }
        return Err(dirty("the log starts with a zeroed block but is not empty"));
    }
    // The head: the first sector whose cycle is one less than the first sector's (binary
    // search for the drop), or the end of the log when the whole ring has one cycle.
    let head = if first == last {
        bbs
    } else {
        if last.wrapping_add(1) != first {
            return Err(dirty(&format!(
                "cycle numbers {first} and {last} at the ends of the log"
            )));
        }
        let (mut lo, mut hi) = (0u64, bbs - 1); // cycle(lo) == first, cycle(hi) == last
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if log.cycle(mid)? == first {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    };
    // Find the last record header before the head.
    let mut found = None;
    for back in 1..=MAX_RECORD_BBS.min(bbs) {
        let bb = (head + bbs - back) % bbs;
        let s = log.sector(bb)?;
        if u32_at(&s, 0) == RECORD_MAGIC {
            found = Some((bb, s));
            break;
        }
    }
    let Some((rec_bb, hdr)) = found else {
        return Err(dirty("no log record found before the head"));
    };
    let rec_cycle = u32_at(&hdr, 4);
    if rec_cycle != first {
        return Err(dirty("the last record's cycle does not match the head"));
    }
    let version = u32_at(&hdr, 8);
    let len = u64::from(u32_at(&hdr, 12));
    let num_logops = u32_at(&hdr, 40);
    let h_size = u64::from(u32_at(&hdr, 320));
    let hblks = if version & 2 != 0 && h_size > 32 << 10 {
        h_size.div_ceil(32 << 10)
    } else {
        1
    };
    let after = (rec_bb + hblks + len.div_ceil(BB)) % bbs;
    if after != head % bbs {
        return Err(dirty("log records follow the last one"));
    }
    if num_logops != 1 {
        return Err(dirty(&format!(
            "the last record holds {num_logops} operations"
        )));
    }
    // The first operation header starts the record's data (its first word is replaced by
    // the cycle number; the flags byte at offset 9 is intact).
    let data = log.sector(rec_bb + hblks)?;
    if u8_at(&data, 9) & UNMOUNT_TRANS == 0 {
        return Err(dirty("the last record is not an unmount record"));
    }
    Ok(LogState::Clean)
}
