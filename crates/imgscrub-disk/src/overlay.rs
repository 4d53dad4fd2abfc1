//! A copy-on-write layer over a read-only base device.
//!
//! Writes land in memory in 4 KiB pages; [`BlockDev::write_zeroes`] and
//! [`BlockDev::discard`] of whole pages are recorded as zero ranges (no memory per page).
//! Reads merge the three sources: a page in memory, a zero range, or the base. The base is
//! never written. This serves `--dry-run` (run everything on the overlay, then
//! [`Overlay::discard_changes`]), `--output` mode, and staging for in-place commits
//! ([`Overlay::dirty_ranges`] + [`Overlay::commit_to`]).
//!
//! Invariant: every page index is in at most one of `pages` and `zeros`.

use crate::blockdev::{AllocKind, AllocRange, BlockDev, check_range};
use crate::error::Result;
use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The overlay's unit of copy-on-write, in bytes.
pub const OVERLAY_PAGE: u64 = 4096;
const PAGE: u64 = OVERLAY_PAGE;

#[derive(Debug, Default)]
struct State {
    /// Page index → content (`PAGE` bytes, fewer for a partial last page).
    pages: BTreeMap<u64, Vec<u8>>,
    /// Zeroed page ranges: start page → end page (exclusive); disjoint, coalesced.
    zeros: BTreeMap<u64, u64>,
}

impl State {
    /// The zero range containing page `p`, if any.
    fn zero_range_of(&self, p: u64) -> Option<(u64, u64)> {
        self.zeros
            .range(..=p)
            .next_back()
            .filter(|(_, e)| **e > p)
            .map(|(s, e)| (*s, *e))
    }

    fn is_zero(&self, p: u64) -> bool {
        self.zero_range_of(p).is_some()
    }

    /// Remove page `p` from the zero set (splitting its range).
    fn unzero(&mut self, p: u64) {
        if let Some((s, e)) = self.zero_range_of(p) {
            self.zeros.remove(&s);
            if s < p {
                self.zeros.insert(s, p);
            }
            if p + 1 < e {
                self.zeros.insert(p + 1, e);
            }
        }
    }

    /// Add pages `a..b` to the zero set, merging neighbours.
    fn add_zero(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (mut a, mut b) = (a, b);
        // Merge every range that overlaps or touches a..b. Each iteration removes one range.
        loop {
            let hit = self
                .zeros
                .range(..=b)
                .next_back()
                .filter(|(_, e)| **e >= a)
                .map(|(s, e)| (*s, *e));
            match hit {
                Some((s, e)) => {
                    self.zeros.remove(&s);
                    a = a.min(s);
                    b = b.max(e);
                }
                None => break,
            }
        }
        self.zeros.insert(a, b);
    }
}

/// One change recorded by an [`Overlay`] (see [`Overlay::for_each_change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// New bytes at `offset` (whole pages, or up to the end of the device).
    Data {
        /// Byte offset.
        offset: u64,
        /// The content.
        data: &'a [u8],
    },
    /// `len` bytes at `offset` read as zeros.
    Zero {
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
}

/// A copy-on-write [`BlockDev`] over `base`, which it only ever reads.
#[derive(Debug)]
pub struct Overlay<D> {
    base: D,
    len: u64,
    state: RwLock<State>,
}

impl<D: BlockDev> Overlay<D> {
    /// An overlay with no changes: reads return the base.
    pub fn new(base: D) -> Self {
        let len = base.len();
        Overlay {
            base,
            len,
            state: RwLock::new(State::default()),
        }
    }

    /// The device underneath.
    pub fn base(&self) -> &D {
        &self.base
    }

    /// Give the base back, dropping all changes.
    pub fn into_base(self) -> D {
        self.base
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Byte length of page `p` (the last page may be short).
    fn page_len(&self, p: u64) -> u64 {
        self.len.saturating_sub(p * PAGE).min(PAGE)
    }

    /// True when nothing has been changed.
    pub fn is_clean(&self) -> bool {
        let s = self.read_state();
        s.pages.is_empty() && s.zeros.is_empty()
    }

    /// Bytes of memory held by modified pages.
    pub fn memory_used(&self) -> u64 {
        self.read_state()
            .pages
            .values()
            .map(|v| v.len() as u64)
            .sum()
    }

    /// The changed byte ranges `(offset, len)`, sorted and coalesced, at page granularity
    /// (a one-byte write marks its 4 KiB page).
    pub fn dirty_ranges(&self) -> Vec<(u64, u64)> {
        let s = self.read_state();
        let mut spans: Vec<(u64, u64)> = s
            .pages
            .keys()
            .map(|&p| (p, p + 1))
            .chain(s.zeros.iter().map(|(a, b)| (*a, *b)))
            .collect();
        spans.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (a, b) in spans {
            let start = a * PAGE;
            let end = (b * PAGE).min(self.len);
            match out.last_mut() {
                Some((o, l)) if *o + *l == start => *l = end - *o,
                _ => out.push((start, end - start)),
            }
        }
        out
    }

    /// Write every change into `target` (normally the base opened for writing, or a copy of
    /// it): modified pages with `write_at`, zeroed ranges with `write_zeroes`. Does not flush
    /// `target` and keeps the changes; call [`Overlay::discard_changes`] afterwards if wanted.
    pub fn commit_to(&self, target: &dyn BlockDev) -> Result<()> {
        check_range("commit", 0, self.len, target.len())?;
        let s = self.read_state();
        // Consecutive pages go out as one write of up to 1 MiB.
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        for (&p, data) in &s.pages {
            let off = p * PAGE;
            if run.is_empty() || run_start + run.len() as u64 != off || run.len() >= 1 << 20 {
                if !run.is_empty() {
                    target.write_at(&run, run_start)?;
                    run.clear();
                }
                run_start = off;
            }
            run.extend_from_slice(data);
        }
        if !run.is_empty() {
            target.write_at(&run, run_start)?;
        }
        for (&a, &b) in &s.zeros {
            let start = a * PAGE;
            let end = (b * PAGE).min(self.len);
            target.write_zeroes(start, end - start)?;
        }
        Ok(())
    }

    /// Visit every change in offset order within each kind (modified pages first, merged
    /// into runs of consecutive pages, then zeroed ranges), e.g. to write a redo log. The
    /// overlay is locked for reading during the walk.
    pub fn for_each_change(&self, mut f: impl FnMut(Change<'_>) -> Result<()>) -> Result<()> {
        let s = self.read_state();
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = 0u64;
        for (&p, data) in &s.pages {
            let off = p * PAGE;
            if !run.is_empty() && run_start + run.len() as u64 != off {
                f(Change::Data {
                    offset: run_start,
                    data: &run,
                })?;
                run.clear();
            }
            if run.is_empty() {
                run_start = off;
            }
            run.extend_from_slice(data);
        }
        if !run.is_empty() {
            f(Change::Data {
                offset: run_start,
                data: &run,
            })?;
        }
        for (&a, &b) in &s.zeros {
            let start = a * PAGE;
            let end = (b * PAGE).min(self.len);
            f(Change::Zero {
                offset: start,
                len: end - start,
            })?;
        }
        Ok(())
    }

    /// Forget every change: the overlay reads as the base again.
    pub fn discard_changes(&self) {
        let mut s = self.write_state();
        s.pages.clear();
        s.zeros.clear();
    }

    /// The page's current content (memory, zeros or base).
    fn materialize(&self, s: &State, p: u64) -> Result<Vec<u8>> {
        let n = self.page_len(p) as usize;
        if let Some(d) = s.pages.get(&p) {
            return Ok(d.clone());
        }
        let mut buf = vec![0u8; n];
        if !s.is_zero(p) {
            self.base.read_at(&mut buf, p * PAGE)?;
        }
        Ok(buf)
    }
}

impl<D: BlockDev> BlockDev for Overlay<D> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, self.len)?;
        let s = self.read_state();
        let end = offset + buf.len() as u64;
        // Base bytes are read in runs, not page by page.
        let mut base_run: Option<u64> = None; // start offset of a pending base run
        let mut pos = offset;
        while pos < end {
            let p = pos / PAGE;
            let stop = ((p + 1) * PAGE).min(end);
            let from_mem = s.pages.get(&p);
            let zero = from_mem.is_none() && s.is_zero(p);
            if from_mem.is_some() || zero {
                if let Some(b) = base_run.take() {
                    let (bs, be) = ((b - offset) as usize, (pos - offset) as usize);
                    self.base.read_at(&mut buf[bs..be], b)?;
                }
                let dst = &mut buf[(pos - offset) as usize..(stop - offset) as usize];
                match from_mem {
                    Some(d) => {
                        let i = (pos - p * PAGE) as usize;
                        dst.copy_from_slice(&d[i..i + dst.len()]);
                    }
                    None => dst.fill(0),
                }
            } else if base_run.is_none() {
                base_run = Some(pos);
            }
            pos = stop;
        }
        if let Some(b) = base_run {
            let bs = (b - offset) as usize;
            self.base.read_at(&mut buf[bs..], b)?;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range("write", offset, buf.len() as u64, self.len)?;
        let mut s = self.write_state();
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        while pos < end {
            let p = pos / PAGE;
            let page_start = p * PAGE;
            let plen = self.page_len(p);
            let stop = (page_start + plen).min(end);
            let src = &buf[(pos - offset) as usize..(stop - offset) as usize];
            let mut page = if pos == page_start && stop == page_start + plen {
                src.to_vec()
            } else {
                let mut page = self.materialize(&s, p)?;
                let i = (pos - page_start) as usize;
                page[i..i + src.len()].copy_from_slice(src);
                page
            };
            page.truncate(plen as usize);
            s.unzero(p);
            s.pages.insert(p, page);
            pos = stop;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_range("write_zeroes", offset, len, self.len)?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let first_full = offset.div_ceil(PAGE);
        // The last page counts as full when the range reaches the end of the device.
        let last_full = if end == self.len {
            end.div_ceil(PAGE)
        } else {
            end / PAGE
        };
        let mut s = self.write_state();
        if first_full < last_full {
            let keys: Vec<u64> = s
                .pages
                .range(first_full..last_full)
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                s.pages.remove(&k);
            }
            s.add_zero(first_full, last_full);
            // Partial pages at the edges.
            if offset < first_full * PAGE {
                zero_part(self, &mut s, offset, first_full * PAGE)?;
            }
            let tail = last_full * PAGE;
            if end > tail {
                zero_part(self, &mut s, tail, end)?;
            }
        } else {
            // Within one or two pages and covering none fully.
            let mut pos = offset;
            while pos < end {
                let stop = ((pos / PAGE + 1) * PAGE).min(end);
                zero_part(self, &mut s, pos, stop)?;
                pos = stop;
            }
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> {
        check_range("allocation", offset, len, self.len)?;
        let end = offset + len;
        let base = self.base.allocation(offset, len)?;
        // Overlay intervals (bytes) inside the request, sorted and disjoint.
        let s = self.read_state();
        let (pa, pb) = (offset / PAGE, end.div_ceil(PAGE));
        let mut over: Vec<(u64, u64, AllocKind)> = s
            .pages
            .range(pa..pb)
            .map(|(&p, _)| (p, p + 1, AllocKind::Data))
            .chain(
                s.zeros
                    .range(..pb)
                    .filter(|(_, e)| **e > pa)
                    .map(|(&a, &b)| (a, b, AllocKind::Zero)),
            )
            .map(|(a, b, k)| ((a * PAGE).max(offset), (b * PAGE).min(end), k))
            .filter(|(a, b, _)| a < b)
            .collect();
        over.sort_unstable_by_key(|r| r.0);
        drop(s);
        // Paint the overlay intervals over the base ranges.
        let mut out: Vec<AllocRange> = Vec::new();
        let mut push = |a: u64, b: u64, kind: AllocKind| {
            if a >= b {
                return;
            }
            match out.last_mut() {
                Some(l) if l.kind == kind && l.offset + l.len == a => l.len = b - l.offset,
                _ => out.push(AllocRange {
                    offset: a,
                    len: b - a,
                    kind,
                }),
            }
        };
        let mut oi = 0;
        for r in base {
            let (mut a, b) = (r.offset, r.offset + r.len);
            while a < b {
                // Skip overlay intervals that ended before a.
                while over.get(oi).is_some_and(|o| o.1 <= a) {
                    oi += 1;
                }
                match over.get(oi) {
                    Some(&(oa, ob, k)) if oa <= a => {
                        let stop = ob.min(b);
                        push(a, stop, k);
                        a = stop;
                    }
                    Some(&(oa, _, _)) => {
                        let stop = oa.min(b);
                        push(a, stop, r.kind);
                        a = stop;
                    }
                    None => {
                        push(a, b, r.kind);
                        a = b;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Zero `a..b`, which lies inside one page, by materializing that page.
fn zero_part<D: BlockDev>(o: &Overlay<D>, s: &mut State, a: u64, b: u64) -> Result<()> {
    let p = a / PAGE;
    if s.is_zero(p) {
        return Ok(());
    }
    let mut page = o.materialize(s, p)?;
    let i = (a - p * PAGE) as usize;
    let j = (b - p * PAGE) as usize;
    if let Some(d) = page.get_mut(i..j) {
        d.fill(0);
    }
    s.pages.insert(p, page);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDev;
    use proptest::prelude::*;

    fn patterned(len: usize) -> MemDev {
        MemDev::from_vec((0..len).map(|i| (i % 251) as u8 + 1).collect())
    }

    #[test]
    fn base_is_never_written() {
        let base = patterned(3 * 4096 + 100).read_only();
        let o = Overlay::new(&base);
        o.write_at(b"hello", 4094).unwrap();
        o.write_zeroes(0, 3 * 4096 + 100).unwrap();
        o.write_at(b"x", 3 * 4096 + 99).unwrap();
        assert_eq!(base.to_vec(), patterned(3 * 4096 + 100).to_vec());
        let mut b = [1u8; 2];
        o.read_at(&mut b, 3 * 4096 + 98).unwrap();
        assert_eq!(b, [0, b'x']);
        assert_eq!(o.dirty_ranges(), vec![(0, 3 * 4096 + 100)]);
        o.discard_changes();
        assert!(o.is_clean());
        assert!(o.dirty_ranges().is_empty());
    }

    #[test]
    fn big_zero_ranges_use_no_memory() {
        let base = MemDev::zeroed(64 << 20);
        let o = Overlay::new(&base);
        o.write_at(&[7; 10], 5).unwrap();
        o.write_zeroes(1000, (64 << 20) - 2000).unwrap();
        assert!(o.memory_used() <= 2 * PAGE, "{}", o.memory_used());
        let a = o.allocation(0, 64 << 20).unwrap();
        assert_eq!(a.first().unwrap().kind, AllocKind::Data);
        assert!(
            a.iter()
                .any(|r| r.kind == AllocKind::Zero && r.len > 60 << 20)
        );
    }

    #[test]
    fn readers_and_writers_in_parallel() {
        let base = patterned(64 * 4096).read_only();
        let o = Overlay::new(&base);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let o = &o;
                s.spawn(move || {
                    for i in 0..64u64 {
                        let page = (i * 4 + u64::from(t)) % 64;
                        o.write_at(&[t + 1; 100], page * 4096 + 10).unwrap();
                        let mut b = [0u8; 100];
                        o.read_at(&mut b, page * 4096 + 10).unwrap();
                        assert!(b.iter().all(|&x| x == b[0]));
                    }
                });
            }
        });
        assert_eq!(o.dirty_ranges(), vec![(0, 64 * 4096)]);
    }

    #[test]
    fn commit_to_a_raw_file_punches_zero_ranges() {
        use crate::raw::RawFile;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.img");
        let len = 1u64 << 20;
        let data: Vec<u8> = (0..len).map(|i| (i % 7) as u8 + 1).collect();
        std::fs::write(&path, &data).unwrap();
        let target = RawFile::open_rw(&path).unwrap();
        let base = MemDev::from_vec(data).read_only();
        let o = Overlay::new(&base);
        o.write_zeroes(64 << 10, 512 << 10).unwrap();
        o.write_at(b"abc", 3).unwrap();
        o.commit_to(&target).unwrap();
        target.flush().unwrap();
        let got = std::fs::read(&path).unwrap();
        let mut want = vec![0u8; len as usize];
        o.read_at(&mut want, 0).unwrap();
        assert_eq!(got, want);
        assert_eq!(&got[3..6], b"abc");
        assert_eq!(o.dirty_ranges(), vec![(0, 4096), (64 << 10, 512 << 10)]);
        // A short target is refused before anything is written.
        assert!(o.commit_to(&MemDev::zeroed(1000)).is_err());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Zero(u64, u64),
        Discard(u64, u64),
        Read(u64, u64),
    }

    const LEN: u64 = 5 * 4096 + 777;

    fn op() -> impl Strategy<Value = Op> {
        let span = (0..LEN).prop_flat_map(|o| (Just(o), 0..=(LEN - o).min(3 * 4096)));
        prop_oneof![
            (0..LEN)
                .prop_flat_map(|o| {
                    let max = (LEN - o).min(9000) as usize;
                    (Just(o), proptest::collection::vec(any::<u8>(), 0..=max))
                })
                .prop_map(|(o, d)| Op::Write(o, d)),
            span.clone().prop_map(|(o, l)| Op::Zero(o, l)),
            span.clone().prop_map(|(o, l)| Op::Discard(o, l)),
            span.prop_map(|(o, l)| Op::Read(o, l)),
        ]
    }

    proptest! {
        #[test]
        fn overlay_matches_memdev_model(ops in proptest::collection::vec(op(), 1..40)) {
            let base = patterned(LEN as usize).read_only();
            let model = patterned(LEN as usize);
            let o = Overlay::new(&base);
            for op in &ops {
                match op {
                    Op::Write(off, d) => { o.write_at(d, *off).unwrap(); model.write_at(d, *off).unwrap(); }
                    Op::Zero(off, l) => { o.write_zeroes(*off, *l).unwrap(); model.write_zeroes(*off, *l).unwrap(); }
                    Op::Discard(off, l) => { o.discard(*off, *l).unwrap(); model.write_zeroes(*off, *l).unwrap(); }
                    Op::Read(off, l) => {
                        let mut a = vec![0u8; *l as usize];
                        let mut b = vec![0u8; *l as usize];
                        o.read_at(&mut a, *off).unwrap();
                        model.read_at(&mut b, *off).unwrap();
                        prop_assert_eq!(a, b);
                    }
                }
            }
            // Whole content.
            let mut all = vec![0u8; LEN as usize];
            o.read_at(&mut all, 0).unwrap();
            let want = model.to_vec();
            prop_assert_eq!(&all, &want);
            // Every changed byte is inside a dirty range; ranges sorted and coalesced.
            let dirty = o.dirty_ranges();
            for w in dirty.windows(2) {
                prop_assert!(w[0].0 + w[0].1 < w[1].0);
            }
            let orig = base.to_vec();
            for (i, (x, y)) in orig.iter().zip(&want).enumerate() {
                if x != y {
                    let i = i as u64;
                    prop_assert!(dirty.iter().any(|(a, l)| *a <= i && i < a + l), "byte {} not dirty", i);
                }
            }
            // Allocation covers the request; Zero ranges read as zeros.
            let (qa, ql) = (1000u64, LEN - 2000);
            let alloc = o.allocation(qa, ql).unwrap();
            let mut pos = qa;
            for r in &alloc {
                prop_assert_eq!(r.offset, pos);
                prop_assert!(r.len > 0);
                if r.kind.reads_as_zero() {
                    prop_assert!(want[r.offset as usize..(r.offset + r.len) as usize].iter().all(|b| *b == 0));
                }
                pos += r.len;
            }
            prop_assert_eq!(pos, qa + ql);
            // Replaying the changes gives the model too.
            let replay = patterned(LEN as usize);
            o.for_each_change(|c| match c {
                Change::Data { offset, data } => replay.write_at(data, offset),
                Change::Zero { offset, len } => replay.write_zeroes(offset, len),
            }).unwrap();
            prop_assert_eq!(replay.to_vec(), want.clone());
            // Commit into a copy of the base gives the model.
            let target = patterned(LEN as usize);
            o.commit_to(&target).unwrap();
            prop_assert_eq!(target.to_vec(), want);
            o.discard_changes();
            let mut again = vec![0u8; LEN as usize];
            o.read_at(&mut again, 0).unwrap();
            prop_assert_eq!(again, orig);
        }
    }
}
