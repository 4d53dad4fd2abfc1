//! Make free space read as zeros: the free blocks of every ext2/3/4 and FAT filesystem, the
//! data pages of swap partitions (the header page stays), and the unpartitioned gaps between
//! partitions.
//!
//! Never touched: the partition tables (LBA 0, the GPT headers and entry arrays), the area
//! before the first partition (boot loaders live there), BIOS-boot partitions, MBR extended
//! partitions (their EBRs), and anything we cannot identify.
//!
//! Only bytes that are not already zero are changed: `allocation()` says which ranges are
//! holes or zero clusters (skipped without reading), the rest is read and compared, and only
//! the non-zero 4 KiB blocks are discarded (a hole on raw files, a zero cluster on qcow2) or,
//! where a run does not cover whole blocks, overwritten with zeros.

use crate::compress::is_zero;
use crate::error::{Result, ShrinkError};
use crate::progress::Progress;
use crate::rangeset::RangeSet;
use imgscrub_disk::{
    BlockDev, Guid, Partition, PartitionTable, PartitionType, Slice, TableKind, discover,
};
use imgscrub_fs::free::{FreeSpace, FreeSpaceOptions, free_space_with};
use imgscrub_fs::probe::probe;

/// GPT type of a BIOS boot partition (GRUB's core image): never zeroed.
pub const BIOS_BOOT_GUID: &str = "21686148-6449-6e6f-744e-656564454649";
/// Granularity of discards and of the "already zero" test.
const BLOCK: u64 = 4096;
/// Bytes read at once while looking for non-zero blocks.
const SCAN_CHUNK: u64 = 4 << 20;

/// The hook that lets tests plug in an independent ext2/3/4 free-range reader (defined in
/// the filesystem layer, re-exported here).
pub use imgscrub_fs::free::ExtFreeRanges;

/// Options of [`sparsify`] and [`free_ranges_of_disk_with`].
#[derive(Clone, Copy, Default)]
pub struct SparsifyOptions<'a> {
    /// Where ext2/3/4 free ranges come from; `None` = the filesystem layer's own reader.
    pub ext: Option<&'a dyn ExtFreeRanges>,
    /// Leave the partition gaps alone.
    pub keep_gaps: bool,
}

impl std::fmt::Debug for SparsifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparsifyOptions")
            .field("ext", &self.ext.is_some())
            .field("keep_gaps", &self.keep_gaps)
            .finish()
    }
}

/// What happened to one partition or gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Its free space was zeroed (or found zero already).
    Zeroed,
    /// Left alone; the text says why.
    Skipped(String),
}

/// One line of a [`SparsifyReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AreaReport {
    /// Partition number (`sdaN`), 0 for a gap or a whole-disk filesystem.
    pub index: u32,
    /// Absolute byte offset of the partition or gap.
    pub start: u64,
    /// Its size in bytes.
    pub size: u64,
    /// `"ext4"`, `"vfat"`, `"swap"`, `"gap"`…
    pub content: String,
    /// Zeroed or skipped.
    pub action: Action,
    /// Free bytes found.
    pub free: u64,
    /// Free bytes that already read as zero (nothing written).
    pub already_zero: u64,
    /// Free bytes that were zeroed.
    pub zeroed: u64,
}

/// What [`sparsify`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparsifyReport {
    /// Free bytes examined.
    pub examined: u64,
    /// Of those, already zero.
    pub already_zero: u64,
    /// Of those, zeroed now.
    pub zeroed: u64,
    /// One entry per partition and gap.
    pub areas: Vec<AreaReport>,
    /// Partition-table warnings and similar notes.
    pub warnings: Vec<String>,
}

/// The free space of a disk: what [`sparsify`] zeroes, before zeroing.
#[derive(Debug, Clone, Default)]
pub struct FreeMap {
    /// Absolute free byte ranges.
    pub free: RangeSet,
    /// Per partition/gap, with `free` filled in and nothing zeroed yet.
    pub areas: Vec<(AreaReport, RangeSet)>,
    /// Notes.
    pub warnings: Vec<String>,
}

/// Absolute byte ranges of `dev` that are free (what the filesystem layer reports for each
/// filesystem — ext2/3/4 block bitmaps, FAT free clusters, swap data pages — and the
/// partition gaps). For `prepare --output`: pass them to
/// [`convert`](crate::convert) as `skip`.
pub fn free_ranges_of_disk(dev: &dyn BlockDev) -> Result<RangeSet> {
    Ok(free_map(dev, &SparsifyOptions::default())?.free)
}

/// [`free_ranges_of_disk`] with options (e.g. an ext free-space source).
pub fn free_ranges_of_disk_with(
    dev: &dyn BlockDev,
    opts: &SparsifyOptions<'_>,
) -> Result<RangeSet> {
    Ok(free_map(dev, opts)?.free)
}

/// Find every free range of the disk, per partition and gap.
pub fn free_map(dev: &dyn BlockDev, opts: &SparsifyOptions<'_>) -> Result<FreeMap> {
    let table = discover(dev)?;
    let mut map = FreeMap {
        warnings: table.warnings.clone(),
        ..FreeMap::default()
    };
    let bios_boot = Guid::parse(BIOS_BOOT_GUID);
    for p in &table.partitions {
        let (content, res) = if p.is_extended() {
            (
                "extended".to_string(),
                Err("an MBR extended partition (holds EBRs)".to_string()),
            )
        } else if matches!(p.ptype, PartitionType::Gpt(g) if Some(g) == bios_boot) {
            (
                "bios-boot".to_string(),
                Err("a BIOS boot partition".to_string()),
            )
        } else {
            partition_free(dev, &table, p, opts)?
        };
        let mut set = RangeSet::new();
        let action = match res {
            Ok(ranges) => {
                for (o, l) in ranges {
                    // Clip to the partition: never trust a filesystem's idea of its size.
                    let end = o.saturating_add(l).min(p.size);
                    if o < end {
                        set.insert(p.start + o, end - o);
                    }
                }
                Action::Zeroed
            }
            Err(why) => Action::Skipped(why),
        };
        map.free.extend_from(&set);
        map.areas.push((
            AreaReport {
                index: p.index,
                start: p.start,
                size: p.size,
                content,
                action,
                free: set.total(),
                already_zero: 0,
                zeroed: 0,
            },
            set,
        ));
    }
    if !opts.keep_gaps {
        for (s, e) in gaps(dev, &table)? {
            let mut set = RangeSet::new();
            set.insert(s, e - s);
            map.free.extend_from(&set);
            map.areas.push((
                AreaReport {
                    index: 0,
                    start: s,
                    size: e - s,
                    content: "gap".into(),
                    action: Action::Zeroed,
                    free: e - s,
                    already_zero: 0,
                    zeroed: 0,
                },
                set,
            ));
        }
    }
    Ok(map)
}

type PartFree = std::result::Result<Vec<(u64, u64)>, String>;

/// Free ranges of one partition relative to its start, or why it is skipped. Which engine
/// reads which filesystem is decided in the filesystem layer ([`free_space_with`]).
fn partition_free(
    dev: &dyn BlockDev,
    table: &PartitionTable,
    p: &Partition,
    opts: &SparsifyOptions<'_>,
) -> Result<(String, PartFree)> {
    let slice = Slice::new(dev, p.start, p.size)?;
    let pr = probe(&slice)?;
    let name = pr.fstype.blkid_name().to_string();
    if pr.fstype == imgscrub_fs::probe::FsType::LvmPv {
        return Ok((name, lvm_free(dev, table, p, opts)));
    }
    let fs_opts = FreeSpaceOptions { ext: opts.ext };
    let res = match free_space_with(&slice, &pr, &fs_opts)? {
        FreeSpace::Free(v) => Ok(v.into_iter().map(|r| (r.offset, r.len)).collect()),
        FreeSpace::Skipped(why) => Err(why),
    };
    Ok((name, res))
}

/// Free ranges of an LVM2 PV partition, relative to its start: the extents no LV uses, and
/// inside each LV with extents here, the free space of its filesystem (swap: behind the
/// header) mapped back onto this PV. Anything uncertain (damaged metadata, a segment type we
/// do not map) skips the partition or the LV: nothing is zeroed that might be in use.
fn lvm_free(
    dev: &dyn BlockDev,
    table: &PartitionTable,
    p: &Partition,
    opts: &SparsifyOptions<'_>,
) -> PartFree {
    let mut slices = Vec::new();
    for q in table.partitions.iter().filter(|q| !q.is_extended()) {
        slices.push(Slice::new(dev, q.start, q.size).map_err(|e| e.to_string())?);
    }
    let lvm = imgscrub_disk::lvm::scan(slices).map_err(|e| format!("LVM2: {e}"))?;
    let Some(me) = lvm.pvs.iter().position(|pv| pv.dev.offset() == p.start) else {
        return Err("an LVM2 PV whose label cannot be read".into());
    };
    let pv = &lvm.pvs[me];
    let Some(vg) = pv
        .vg_uuid
        .as_ref()
        .and_then(|u| lvm.vgs.iter().find(|v| &v.uuid == u))
    else {
        return Err("an LVM2 PV in no volume group".into());
    };
    let mut out: Vec<(u64, u64)> = lvm
        .unallocated()
        .into_iter()
        .filter(|(i, _, _)| *i == me)
        .map(|(_, o, l)| (o, l))
        .collect();
    let fs_opts = FreeSpaceOptions { ext: opts.ext };
    for lv in vg.lvs.iter().filter(|l| l.visible && l.refused.is_none()) {
        let Ok(lvdev) = lvm.open_lv(&vg.name, &lv.name) else {
            continue;
        };
        let on_me = |d: usize| {
            lvdev
                .devices()
                .get(d)
                .is_some_and(|s| s.offset() == p.start)
        };
        if !lvdev.extents().iter().any(|e| on_me(e.0)) {
            continue;
        }
        let Ok(pr) = probe(&lvdev) else { continue };
        let Ok(FreeSpace::Free(ranges)) = free_space_with(&lvdev, &pr, &fs_opts) else {
            continue;
        };
        for r in ranges {
            let end = r.offset.saturating_add(r.len).min(lvdev.len());
            if r.offset >= end {
                continue;
            }
            let Ok(pieces) = lvdev.physical(r.offset, end - r.offset) else {
                continue;
            };
            out.extend(
                pieces
                    .into_iter()
                    .filter(|x| on_me(x.0))
                    .map(|x| (x.1, x.2)),
            );
        }
    }
    Ok(out)
}

/// Unpartitioned gaps that may be zeroed: between partitions and after the last one, never
/// before the first one, never over the partition tables.
fn gaps(dev: &dyn BlockDev, table: &PartitionTable) -> Result<Vec<(u64, u64)>> {
    let (lo, hi) = match &table.kind {
        TableKind::None => return Ok(Vec::new()),
        TableKind::Gpt { sector_size, .. } => match gpt_usable(dev, u64::from(*sector_size))? {
            Some(r) => r,
            None => return Ok(Vec::new()),
        },
        TableKind::Mbr { .. } => (0, dev.len()),
    };
    let mut used: Vec<(u64, u64)> = table
        .partitions
        .iter()
        .filter(|p| p.size > 0)
        .map(|p| (p.start, p.end()))
        .collect();
    used.sort_unstable();
    let Some(&(first, _)) = used.first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut pos = first.max(lo);
    for (s, e) in used {
        if s > pos && s <= hi {
            out.push((pos, s));
        }
        pos = pos.max(e);
    }
    if pos < hi {
        out.push((pos, hi));
    }
    Ok(out)
}

/// The usable byte range of a GPT disk (first usable LBA .. last usable LBA + 1), from the
/// primary header or, when that is damaged, the backup.
fn gpt_usable(dev: &dyn BlockDev, ss: u64) -> Result<Option<(u64, u64)>> {
    let last_lba = (dev.len() / ss).saturating_sub(1);
    for lba in [1, last_lba] {
        let mut h = [0u8; 92];
        if (lba + 1) * ss > dev.len() {
            continue;
        }
        dev.read_at(&mut h, lba * ss)?;
        if h.get(..8) != Some(b"EFI PART".as_slice()) {
            continue;
        }
        let rd = |at: usize| {
            let mut a = [0u8; 8];
            if let Some(s) = h.get(at..at + 8) {
                a.copy_from_slice(s);
            }
            u64::from_le_bytes(a)
        };
        let (first, last) = (rd(40), rd(48));
        // The backup array and header sit after last usable; LBA 0..first usable hold the
        // MBR, header and entries.
        if first < 2 || last < first || last >= last_lba {
            continue;
        }
        return Ok(Some((first * ss, (last + 1) * ss)));
    }
    Ok(None)
}

/// Zero the free space of `dev` in place (see the module documentation).
pub fn sparsify(
    dev: &dyn BlockDev,
    opts: &SparsifyOptions<'_>,
    progress: &dyn Progress,
) -> Result<SparsifyReport> {
    let map = free_map(dev, opts)?;
    progress.begin("sparsify", map.free.total());
    let mut report = SparsifyReport {
        warnings: map.warnings,
        ..SparsifyReport::default()
    };
    for (mut area, set) in map.areas {
        for &(s, e) in set.ranges() {
            let (zero, zeroed) = zero_range(dev, s, e, progress)?;
            area.already_zero += zero;
            area.zeroed += zeroed;
        }
        report.examined += area.free;
        report.already_zero += area.already_zero;
        report.zeroed += area.zeroed;
        report.areas.push(area);
    }
    dev.flush()?;
    progress.end();
    Ok(report)
}

/// Make `start..end` read as zeros, changing only non-zero blocks. Returns (bytes already
/// zero, bytes zeroed).
fn zero_range(
    dev: &dyn BlockDev,
    start: u64,
    end: u64,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    let mut already = 0u64;
    let mut zeroed = 0u64;
    for a in dev.allocation(start, end - start)? {
        if a.kind.reads_as_zero() {
            already += a.len;
            progress.advance(a.len);
            continue;
        }
        let a_end = a.offset + a.len;
        let mut pos = a.offset;
        let mut buf = Vec::new();
        while pos < a_end {
            if progress.cancelled() {
                return Err(ShrinkError::Cancelled);
            }
            let n = SCAN_CHUNK.min(a_end - pos);
            buf.resize(n as usize, 0);
            dev.read_at(&mut buf, pos)?;
            // Blocks on absolute 4 KiB boundaries, clipped to the range.
            let mut run: Option<u64> = None;
            let mut b = pos;
            while b < pos + n {
                let be = (b / BLOCK + 1).saturating_mul(BLOCK).min(pos + n);
                let slice = buf
                    .get((b - pos) as usize..(be - pos) as usize)
                    .unwrap_or_default();
                if is_zero(slice) {
                    already += be - b;
                    if let Some(rs) = run.take() {
                        zeroed += zero_run(dev, rs, b)?;
                    }
                } else if run.is_none() {
                    run = Some(b);
                }
                b = be;
            }
            if let Some(rs) = run {
                zeroed += zero_run(dev, rs, pos + n)?;
            }
            progress.advance(n);
            pos += n;
        }
    }
    Ok((already, zeroed))
}

/// Zero `s..e`: discard the whole 4 KiB blocks, write zeros over the partial ones.
fn zero_run(dev: &dyn BlockDev, s: u64, e: u64) -> Result<u64> {
    let a = s.next_multiple_of(BLOCK);
    let b = e / BLOCK * BLOCK;
    if a < b {
        if s < a {
            dev.write_at(&vec![0u8; (a - s) as usize], s)?;
        }
        dev.discard(a, b - a)?;
        if b < e {
            dev.write_at(&vec![0u8; (e - b) as usize], b)?;
        }
    } else {
        dev.write_at(&vec![0u8; (e - s) as usize], s)?;
    }
    Ok(e - s)
}
