//! A set of byte ranges: sorted, non-overlapping, coalesced.

/// A set of half-open byte ranges `start..end`, kept sorted and coalesced.
///
/// ```
/// use imgscrub_shrink::RangeSet;
/// let mut s = RangeSet::new();
/// s.insert(10, 5);
/// s.insert(15, 5);
/// s.insert(0, 2);
/// assert_eq!(s.ranges(), &[(0, 2), (10, 20)]);
/// assert_eq!(s.total(), 12);
/// assert!(s.covers(12, 8));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    // (start, end) pairs, sorted by start, disjoint and non-adjacent.
    r: Vec<(u64, u64)>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// Add `offset..offset+len` (saturating at `u64::MAX`). Empty ranges are ignored.
    pub fn insert(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let mut start = offset;
        let mut end = offset.saturating_add(len);
        // First range whose end reaches `start` (touching ranges merge).
        let i = self.r.partition_point(|&(_, e)| e < start);
        let mut j = i;
        while let Some(&(s, e)) = self.r.get(j) {
            if s > end {
                break;
            }
            start = start.min(s);
            end = end.max(e);
            j += 1;
        }
        self.r.splice(i..j, [(start, end)]);
    }

    /// Add every range of `other`.
    pub fn extend_from(&mut self, other: &RangeSet) {
        for &(s, e) in &other.r {
            self.insert(s, e - s);
        }
    }

    /// The ranges as `(start, end)` pairs, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.r
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.r.is_empty()
    }

    /// Total bytes in the set.
    pub fn total(&self) -> u64 {
        self.r.iter().map(|&(s, e)| e - s).sum()
    }

    /// True when every byte of `offset..offset+len` is in the set (true for `len == 0`).
    pub fn covers(&self, offset: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let end = offset.saturating_add(len);
        let i = self.r.partition_point(|&(_, e)| e <= offset);
        matches!(self.r.get(i), Some(&(s, e)) if s <= offset && e >= end)
    }

    /// The parts of `offset..offset+len` that are in the set, as `(start, end)` pairs.
    pub fn intersect(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let end = offset.saturating_add(len);
        let mut out = Vec::new();
        let mut i = self.r.partition_point(|&(_, e)| e <= offset);
        while let Some(&(s, e)) = self.r.get(i) {
            if s >= end {
                break;
            }
            out.push((s.max(offset), e.min(end)));
            i += 1;
        }
        out
    }

    /// The parts of `offset..offset+len` that are not in the set.
    pub fn complement_within(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let end = offset.saturating_add(len);
        let mut out = Vec::new();
        let mut pos = offset;
        for (s, e) in self.intersect(offset, len) {
            if s > pos {
                out.push((pos, s));
            }
            pos = e;
        }
        if pos < end {
            out.push((pos, end));
        }
        out
    }
}

impl FromIterator<(u64, u64)> for RangeSet {
    /// Collect `(offset, len)` pairs.
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        let mut s = RangeSet::new();
        for (o, l) in iter {
            s.insert(o, l);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_queries() {
        let mut s = RangeSet::new();
        s.insert(100, 10);
        s.insert(50, 10);
        s.insert(60, 40); // bridges both
        assert_eq!(s.ranges(), &[(50, 110)]);
        s.insert(200, 0);
        s.insert(300, 1);
        assert_eq!(s.ranges(), &[(50, 110), (300, 301)]);
        assert!(s.covers(50, 60));
        assert!(!s.covers(49, 2));
        assert!(!s.covers(100, 201));
        assert_eq!(s.intersect(100, 250), vec![(100, 110), (300, 301)]);
        assert_eq!(
            s.complement_within(0, 400),
            vec![(0, 50), (110, 300), (301, 400)]
        );
        assert_eq!(s.complement_within(60, 10), vec![]);
    }

    #[test]
    fn matches_a_bitmap_model() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut s = RangeSet::new();
            let mut model = [false; 256];
            for _ in 0..8 {
                let o = next() % 240;
                let l = next() % 16;
                s.insert(o, l);
                for b in &mut model[o as usize..(o + l) as usize] {
                    *b = true;
                }
            }
            let total = model.iter().filter(|&&b| b).count() as u64;
            assert_eq!(s.total(), total);
            for w in s.ranges().windows(2) {
                assert!(w[0].1 < w[1].0);
            }
            let o = next() % 200;
            let l = next() % 56;
            let want = model[o as usize..(o + l) as usize].iter().all(|&b| b);
            assert_eq!(s.covers(o, l), want);
        }
    }
}
