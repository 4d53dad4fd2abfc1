//! ext2/ext3 block maps: 12 direct, single, double, triple indirect. Owner: mapping.
//!
//! On-disk rule: `i_block` is 15 little-endian `u32`: entries 0..12 point to the file's first
//! 12 data blocks, entry 12 to a single-indirect block (an array of `p = block_size / 4`
//! little-endian `u32` data-block pointers), entry 13 to a double-indirect block (pointers to
//! single-indirect blocks), entry 14 to a triple-indirect block. A zero pointer is a hole (at
//! any level: a zero indirect pointer is a hole over its whole span). Every non-zero pointer
//! must lie in `s_first_data_block..s_blocks_count`. Indirect blocks are counted in
//! `i_blocks`; an indirect block whose pointers are all zero is freed (e2fsck accepts empty
//! ones, but the kernel and e2fsprogs never leave them).
//!
//! Internally an entry "at level k" covers `p^k` logical blocks: level 0 entries point to data
//! blocks, level k ≥ 1 entries to an indirect block holding `p` entries of level k−1. The three
//! indirect `i_block` slots are single entries of levels 1, 2 and 3.

use crate::le::{put_u32, u32_at};
use crate::mapping::{self, AllocMode, Extent, FileMap, MapCtx, Mapping, NewRun};
use crate::{Ext4Error, Result};

const NDIR: usize = 12;

/// Exclusive upper bound of the logical blocks a block map addresses: `12 + p + p² + p³`
/// with `p = block_size / 4`, capped at 2^32 (logical block numbers are 32-bit).
pub fn max_lblk(block_size: u32) -> u64 {
    let p = u64::from(block_size / 4);
    (12 + p + p * p + p * p * p).min(1 << 32)
}

/// Pointers per indirect block (block sizes below 64 bytes are refused: a span of 0 would
/// divide by zero).
fn ptrs_per_block(ctx: &dyn MapCtx) -> Result<u64> {
    let p = u64::from(ctx.block_size() / 4);
    if p < 16 {
        return Err(Ext4Error::InvalidArgument(format!(
            "block size {} is too small for a block map",
            ctx.block_size()
        )));
    }
    Ok(p)
}

fn span(p: u64, level: u32) -> u64 {
    p.saturating_pow(level)
}

fn ib_words(ib: &[u8; 60]) -> [u32; 15] {
    let mut w = [0u32; 15];
    for (i, x) in w.iter_mut().enumerate() {
        *x = u32_at(ib, i * 4);
    }
    w
}

fn put_ib_words(fm: &mut FileMap<'_>, w: &[u32; 15]) {
    let mut ib = [0u8; 60];
    for (i, x) in w.iter().enumerate() {
        put_u32(&mut ib, i * 4, *x);
    }
    if ib != *fm.i_block {
        *fm.i_block = ib;
        fm.i_block_dirty = true;
    }
}

fn block_words(buf: &[u8]) -> Vec<u32> {
    buf.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn words_block(w: &[u32], bs: usize) -> Vec<u8> {
    let mut out = vec![0u8; bs];
    for (i, x) in w.iter().enumerate() {
        put_u32(&mut out, i * 4, *x);
    }
    out
}

/// The top-level regions of `i_block`: (slot range, level, first logical block).
fn regions(p: u64) -> [(std::ops::Range<usize>, u32, u64); 4] {
    [
        (0..NDIR, 0, 0),
        (12..13, 1, 12),
        (13..14, 2, 12 + p),
        (14..15, 3, 12 + p + p * p),
    ]
}

fn check_ptr(ctx: &dyn MapCtx, ino: u32, holder: &str, i: usize, ptr: u32) -> Result<()> {
    if !mapping::blocks_in_fs(ctx, u64::from(ptr), 1) {
        return Err(Ext4Error::corrupt(
            format!("{holder} of inode {ino}"),
            format!("entry {i} points to block {ptr} outside the filesystem"),
        ));
    }
    Ok(())
}

fn holder_name(parent: Option<u64>) -> String {
    match parent {
        None => "block map".to_string(),
        Some(b) => format!("indirect block {b}"),
    }
}

fn read_ind(ctx: &mut dyn MapCtx, pblk: u32) -> Result<Vec<u32>> {
    let mut buf = vec![0u8; ctx.block_size() as usize];
    ctx.read_block(u64::from(pblk), &mut buf)?;
    Ok(block_words(&buf))
}

pub(crate) fn map(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>, lblk: u64) -> Result<Mapping> {
    let p = ptrs_per_block(ctx)?;
    let hole = |len: u64| Mapping {
        lblk,
        len: len.max(1),
        pblk: None,
        uninit: false,
    };
    if lblk >= max_lblk(ctx.block_size()) {
        return Ok(hole(1));
    }
    let w = ib_words(fm.i_block);
    let Some((range, mut level, mut base)) =
        regions(p).into_iter().rev().find(|(_, _, b)| lblk >= *b)
    else {
        return Ok(hole(1));
    };
    let mut arr: Vec<u32> = w.get(range).unwrap_or(&[]).to_vec();
    let mut holder: Option<u64> = None;
    for _ in 0..4 {
        let sp = span(p, level);
        let i = usize::try_from((lblk - base) / sp).unwrap_or(usize::MAX);
        let Some(&ptr) = arr.get(i) else {
            return Ok(hole(1));
        };
        if ptr == 0 {
            // Hole: this entry's remaining span plus following empty entries.
            let mut len = sp - (lblk - base) % sp;
            for &x in arr.iter().skip(i + 1) {
                if x != 0 {
                    break;
                }
                len = len.saturating_add(sp);
            }
            return Ok(hole(len));
        }
        check_ptr(ctx, fm.ino, &holder_name(holder), i, ptr)?;
        if level == 0 {
            let mut len = 1u64;
            for (k, &x) in arr.iter().enumerate().skip(i + 1) {
                if u64::from(x) != u64::from(ptr) + (k - i) as u64 {
                    break;
                }
                len += 1;
            }
            return Ok(Mapping {
                lblk,
                len,
                pblk: Some(u64::from(ptr)),
                uninit: false,
            });
        }
        base += i as u64 * sp;
        level -= 1;
        holder = Some(u64::from(ptr));
        arr = read_ind(ctx, ptr)?;
    }
    Ok(hole(1))
}

/// Read-only walk over every entry in `arr` (at `level`, first block `base`).
#[allow(clippy::too_many_arguments)]
fn walk(
    ctx: &mut dyn MapCtx,
    ino: u32,
    holder: Option<u64>,
    arr: &[u32],
    level: u32,
    base: u64,
    p: u64,
    data: &mut dyn FnMut(u64, u64),
    meta: &mut dyn FnMut(u64),
) -> Result<()> {
    let sp = span(p, level);
    for (i, &ptr) in arr.iter().enumerate() {
        if ptr == 0 {
            continue;
        }
        check_ptr(ctx, ino, &holder_name(holder), i, ptr)?;
        let b = base + i as u64 * sp;
        if level == 0 {
            data(b, u64::from(ptr));
        } else {
            meta(u64::from(ptr));
            let child = read_ind(ctx, ptr)?;
            walk(
                ctx,
                ino,
                Some(u64::from(ptr)),
                &child,
                level - 1,
                b,
                p,
                data,
                meta,
            )?;
        }
    }
    Ok(())
}

fn walk_all(
    ctx: &mut dyn MapCtx,
    fm: &FileMap<'_>,
    data: &mut dyn FnMut(u64, u64),
    meta: &mut dyn FnMut(u64),
) -> Result<()> {
    let p = ptrs_per_block(ctx)?;
    let w = ib_words(fm.i_block);
    for (range, level, base) in regions(p) {
        let arr = w.get(range).unwrap_or(&[]);
        walk(ctx, fm.ino, None, arr, level, base, p, data, meta)?;
    }
    Ok(())
}

pub(crate) fn extents(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<Vec<Extent>> {
    let mut out: Vec<Extent> = Vec::new();
    walk_all(
        ctx,
        fm,
        &mut |lblk, pblk| match out.last_mut() {
            Some(e) if e.lblk + e.len == lblk && e.pblk + e.len == pblk => e.len += 1,
            _ => out.push(Extent {
                lblk,
                pblk,
                len: 1,
                uninit: false,
            }),
        },
        &mut |_| {},
    )?;
    Ok(out)
}

pub(crate) fn metadata_blocks(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    walk_all(ctx, fm, &mut |_, _| {}, &mut |b| out.push(b))?;
    Ok(out)
}

struct AllocState {
    goal: u64,
    runs: Vec<NewRun>,
    p: u64,
    bs: usize,
}

/// Allocate one block for the map; block maps hold 32-bit pointers.
fn alloc_ptrs(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    goal: u64,
    max: u32,
) -> Result<(u32, u32)> {
    let (b, n) = mapping::alloc_counted(ctx, fm, goal, max)?;
    match u32::try_from(b.saturating_add(u64::from(n))) {
        Ok(_) if mapping::blocks_in_fs(ctx, b, u64::from(n)) => Ok((b as u32, n)),
        _ => {
            let _ = mapping::free_counted(ctx, fm, b, u64::from(n));
            Err(Ext4Error::Unsupported(format!(
                "inode {}: a block-mapped file cannot use blocks {b}+{n} (32-bit pointers)",
                fm.ino
            )))
        }
    }
}

/// Fill holes of `s..e` inside `arr` (entries at `level`, first block `base`). Sets
/// `*modified` when `arr` changed — also when an error is returned part-way, so the caller
/// still persists what was allocated.
#[allow(clippy::too_many_arguments)]
fn alloc_array(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    holder: Option<u64>,
    arr: &mut [u32],
    level: u32,
    base: u64,
    s: u64,
    e: u64,
    st: &mut AllocState,
    modified: &mut bool,
) -> Result<()> {
    let sp = span(st.p, level);
    let n = arr.len() as u64;
    if e <= base {
        return Ok(());
    }
    let first = s.saturating_sub(base) / sp;
    let last = (e - base).div_ceil(sp).min(n);
    let mut i = first;
    while i < last {
        let iu = i as usize;
        let b = base + i * sp;
        let ptr = arr.get(iu).copied().unwrap_or(0);
        if level == 0 {
            if ptr != 0 {
                check_ptr(ctx, fm.ino, &holder_name(holder), iu, ptr)?;
                st.goal = u64::from(ptr) + 1;
                i += 1;
                continue;
            }
            // Run of empty slots inside s..e.
            let mut j = i;
            while j < last && arr.get(j as usize).copied() == Some(0) {
                j += 1;
            }
            let want = u32::try_from(j - i).unwrap_or(u32::MAX);
            let (pb, got) = alloc_ptrs(ctx, fm, st.goal, want)?;
            for k in 0..got {
                if let Some(slot) = arr.get_mut(iu + k as usize) {
                    *slot = pb + k;
                }
            }
            *modified = true;
            let got = u64::from(got);
            match st.runs.last_mut() {
                Some(r) if r.lblk + r.len == b && r.pblk + r.len == u64::from(pb) => r.len += got,
                _ => st.runs.push(NewRun {
                    lblk: b,
                    pblk: u64::from(pb),
                    len: got,
                    must_write: true,
                }),
            }
            st.goal = u64::from(pb) + got;
            i += got;
            continue;
        }
        // An indirect entry: load or create the child block.
        let (child_blk, mut child, fresh) = if ptr == 0 {
            let (cb, _) = alloc_ptrs(ctx, fm, st.goal, 1)?;
            st.goal = u64::from(cb) + 1;
            (cb, vec![0u32; st.p as usize], true)
        } else {
            check_ptr(ctx, fm.ino, &holder_name(holder), iu, ptr)?;
            (ptr, read_ind(ctx, ptr)?, false)
        };
        let mut child_mod = false;
        let r = alloc_array(
            ctx,
            fm,
            Some(u64::from(child_blk)),
            &mut child,
            level - 1,
            b,
            s.max(b),
            e.min(b + sp),
            st,
            &mut child_mod,
        );
        if fresh && child.iter().all(|&x| x == 0) {
            // Nothing got mapped below a new indirect block (the allocation failed): give it
            // back rather than link an empty one.
            mapping::free_counted(ctx, fm, u64::from(child_blk), 1)?;
            r?;
            i += 1;
            continue;
        }
        if child_mod || fresh {
            ctx.write_block(u64::from(child_blk), &words_block(&child, st.bs))?;
        }
        if fresh {
            if let Some(slot) = arr.get_mut(iu) {
                *slot = child_blk;
            }
            *modified = true;
        }
        r?;
        i += 1;
    }
    Ok(())
}

pub(crate) fn allocate(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    lblk: u64,
    end: u64,
    goal: u64,
    _mode: AllocMode,
) -> Result<Vec<NewRun>> {
    let p = ptrs_per_block(ctx)?;
    let mut goal = goal;
    if lblk > 0
        && let Some(pb) = map(ctx, fm, lblk - 1)?.pblk
    {
        goal = pb + 1;
    }
    let mut st = AllocState {
        goal,
        runs: Vec::new(),
        p,
        bs: ctx.block_size() as usize,
    };
    let mut w = ib_words(fm.i_block);
    let mut result = Ok(());
    for (range, level, base) in regions(p) {
        let Some(arr) = w.get_mut(range) else {
            continue;
        };
        let top_span = span(p, level).saturating_mul(arr.len() as u64);
        if end <= base || lblk >= base.saturating_add(top_span) {
            continue;
        }
        let mut modified = false;
        result = alloc_array(
            ctx,
            fm,
            None,
            arr,
            level,
            base,
            lblk,
            end,
            &mut st,
            &mut modified,
        );
        if result.is_err() {
            break;
        }
    }
    put_ib_words(fm, &w);
    result.map(|()| st.runs)
}

/// Unmap `s..e` inside `arr`; data and emptied indirect blocks go to `frees`.
#[allow(clippy::too_many_arguments)]
fn punch_array(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    holder: Option<u64>,
    arr: &mut [u32],
    level: u32,
    base: u64,
    s: u64,
    e: u64,
    p: u64,
    frees: &mut Vec<u64>,
) -> Result<bool> {
    let sp = span(p, level);
    let n = arr.len() as u64;
    if e <= base {
        return Ok(false);
    }
    let first = s.saturating_sub(base) / sp;
    let last = (e - base).div_ceil(sp).min(n);
    let mut modified = false;
    for i in first..last {
        let iu = i as usize;
        let ptr = arr.get(iu).copied().unwrap_or(0);
        if ptr == 0 {
            continue;
        }
        check_ptr(ctx, fm.ino, &holder_name(holder), iu, ptr)?;
        let b = base + i * sp;
        if level == 0 {
            frees.push(u64::from(ptr));
            if let Some(slot) = arr.get_mut(iu) {
                *slot = 0;
            }
            modified = true;
            continue;
        }
        let mut child = read_ind(ctx, ptr)?;
        let child_mod = punch_array(
            ctx,
            fm,
            Some(u64::from(ptr)),
            &mut child,
            level - 1,
            b,
            s.max(b),
            e.min(b + sp),
            p,
            frees,
        )?;
        if child.iter().all(|&x| x == 0) {
            frees.push(u64::from(ptr));
            if let Some(slot) = arr.get_mut(iu) {
                *slot = 0;
            }
            modified = true;
        } else if child_mod {
            ctx.write_block(
                u64::from(ptr),
                &words_block(&child, ctx.block_size() as usize),
            )?;
        }
    }
    Ok(modified)
}

pub(crate) fn punch(ctx: &mut dyn MapCtx, fm: &mut FileMap<'_>, from: u64, to: u64) -> Result<()> {
    let p = ptrs_per_block(ctx)?;
    let mut w = ib_words(fm.i_block);
    let mut frees: Vec<u64> = Vec::new();
    for (range, level, base) in regions(p) {
        let Some(arr) = w.get_mut(range) else {
            continue;
        };
        let top_span = span(p, level).saturating_mul(arr.len() as u64);
        if to <= base || from >= base.saturating_add(top_span) {
            continue;
        }
        punch_array(ctx, fm, None, arr, level, base, from, to, p, &mut frees)?;
    }
    put_ib_words(fm, &w);
    // Free after the map no longer references the blocks, coalescing runs.
    frees.sort_unstable();
    let mut run: Option<(u64, u64)> = None;
    for b in frees {
        run = match run {
            Some((s, n)) if s + n == b => Some((s, n + 1)),
            Some((s, n)) => {
                mapping::free_counted(ctx, fm, s, n)?;
                Some((b, 1))
            }
            None => Some((b, 1)),
        };
    }
    if let Some((s, n)) = run {
        mapping::free_counted(ctx, fm, s, n)?;
    }
    Ok(())
}
