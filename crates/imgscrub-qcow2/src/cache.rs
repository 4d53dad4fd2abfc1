//! A small fixed-capacity LRU cache for metadata tables (L2 tables, refcount blocks).
//!
//! Capacity is a number of entries fixed at open time, so memory use is bounded whatever the
//! image size. Lookups are a linear scan: capacities are small (tens of entries) and the scan
//! is cheap next to the I/O it saves. The cache is write-through (see `image.rs`), so an
//! evicted entry never needs to be written back.

/// An LRU map from a host offset to a table.
#[derive(Debug)]
pub struct Lru<V> {
    entries: Vec<(u64, u64, V)>, // (key, last use, value)
    capacity: usize,
    tick: u64,
}

impl<V> Lru<V> {
    /// A cache holding at most `capacity` (≥ 1) entries.
    pub fn new(capacity: usize) -> Self {
        Lru {
            entries: Vec::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    fn touch(&mut self) -> u64 {
        self.tick = self.tick.wrapping_add(1);
        self.tick
    }

    /// The entry for `key`, marked as most recently used.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        let t = self.touch();
        self.entries.iter_mut().find(|e| e.0 == key).map(|e| {
            e.1 = t;
            &mut e.2
        })
    }

    /// True when `key` is cached.
    pub fn contains(&self, key: u64) -> bool {
        self.entries.iter().any(|e| e.0 == key)
    }

    /// Insert (or replace) `key`, evicting the least recently used entry when full.
    pub fn insert(&mut self, key: u64, value: V) -> &mut V {
        let t = self.touch();
        let idx = if let Some(i) = self.entries.iter().position(|e| e.0 == key) {
            self.entries[i] = (key, t, value);
            i
        } else if self.entries.len() < self.capacity {
            self.entries.push((key, t, value));
            self.entries.len() - 1
        } else {
            let mut victim = 0;
            let mut oldest = u64::MAX;
            for (i, e) in self.entries.iter().enumerate() {
                if e.1 < oldest {
                    oldest = e.1;
                    victim = i;
                }
            }
            self.entries[victim] = (key, t, value);
            victim
        };
        &mut self.entries[idx].2
    }

    /// Number of cached entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = Lru::new(2);
        c.insert(1, "a");
        c.insert(2, "b");
        assert!(c.get_mut(1).is_some());
        c.insert(3, "c");
        assert!(c.contains(1));
        assert!(!c.contains(2));
        assert!(c.contains(3));
        assert_eq!(c.len(), 2);
    }
}
