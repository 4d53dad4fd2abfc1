//! Rebuilding refcounts of an image left dirty with lazy refcounts.
//!
//! With the lazy-refcounts compatible feature, QEMU may skip refcount updates and sets the
//! dirty bit; after a crash the refcounts are stale. Before writing to such an image we
//! recount every reference (header, L1 table, L2 tables, data and compressed clusters,
//! refcount table and blocks), write the differences, fsync, and only then clear the dirty
//! bit. Images without lazy refcounts that are dirty are refused instead
//! ([`crate::Qcow2Error::Dirty`]).

use crate::error::{Qcow2Error, Result};
use crate::header::{INCOMPAT_DIRTY, field};
use crate::image::{Meta, Qcow2, lock};
use crate::l2::{self, Mapping};
use crate::write::RcOp;

/// Largest number of host clusters we recount in memory (4 bytes each: 256 MiB).
const MAX_CLUSTERS: u64 = 1 << 26;

impl Qcow2 {
    /// Recount all references, fix the refcounts, then clear the dirty bit.
    pub(crate) fn repair_refcounts(&self) -> Result<()> {
        if self.hdr.bitmaps.is_some() {
            return Err(Qcow2Error::Unsupported(
                "repairing the refcounts of a dirty image with persistent bitmaps; run `qemu-img check -r all` first".into(),
            ));
        }
        let mut m = lock(&self.meta);
        let cs = self.cluster_size;
        // Bounded: a refcount table growth restarts the count once or twice at most.
        for _ in 0..4 {
            let table_at_start = m.reftable_offset;
            let counts = self.count_references(&mut m)?;
            let mut restarted = false;
            for (i, &want) in counts.iter().enumerate() {
                let host = i as u64 * cs;
                if self.refcount_locked(&mut m, host)? != u64::from(want) {
                    self.change_refcount(&mut m, host, RcOp::Set(u64::from(want)), 0)?;
                    if m.reftable_offset != table_at_start {
                        restarted = true;
                        break;
                    }
                }
            }
            if !restarted {
                self.storage.sync()?;
                let incompat = self.hdr.incompatible_features & !INCOMPAT_DIRTY;
                self.storage
                    .write_at(&incompat.to_be_bytes(), field::INCOMPATIBLE)?;
                self.storage.sync()?;
                return Ok(());
            }
        }
        Err(Qcow2Error::corrupt(
            "refcount table",
            m.reftable_offset,
            "refcount repair does not converge",
        ))
    }

    /// References to every host cluster below the end of the file.
    fn count_references(&self, m: &mut Meta) -> Result<Vec<u32>> {
        let cs = self.cluster_size;
        let n = m.end / cs;
        if n > MAX_CLUSTERS {
            return Err(Qcow2Error::Unsupported(format!(
                "repairing refcounts of an image with {n} clusters; run `qemu-img check -r all`"
            )));
        }
        let mut counts = vec![0u32; n as usize];
        let mut add = |what: &'static str, start: u64, len: u64| -> Result<()> {
            if len == 0 {
                return Ok(());
            }
            let first = start / cs;
            let last = start.saturating_add(len - 1) / cs;
            for c in first..=last {
                let slot = counts.get_mut(c as usize).ok_or_else(|| {
                    Qcow2Error::corrupt(what, start, "refers past the end of the file")
                })?;
                *slot = slot.saturating_add(1);
            }
            Ok(())
        };
        add("header", 0, cs)?;
        add(
            "L1 table",
            self.hdr.l1_table_offset,
            u64::from(self.hdr.l1_size) * 8,
        )?;
        add(
            "refcount table",
            m.reftable_offset,
            m.reftable.len() as u64 * 8,
        )?;
        for &e in &m.reftable {
            let off = e & 0xffff_ffff_ffff_fe00;
            if off != 0 {
                add("refcount block", off, cs)?;
            }
        }
        let ext = self.hdr.extended_l2();
        let v3 = self.hdr.version >= 3;
        let esz = self.hdr.l2_entry_size();
        let mut seen_l2 = std::collections::HashSet::new();
        for (i, &e) in m.l1.iter().enumerate() {
            let at = self.hdr.l1_table_offset + i as u64 * 8;
            let l2_off = l2::l1_offset(e, self.cluster_bits, at)?;
            if l2_off == 0 {
                continue;
            }
            add("L1 entry", l2_off, cs)?;
            // Without snapshots an L2 table belongs to one L1 entry; refusing duplicates also
            // bounds the work to one read of each cluster of the file.
            if !seen_l2.insert(l2_off) {
                return Err(Qcow2Error::corrupt(
                    "L1 table",
                    at,
                    format!("L2 table {l2_off:#x} is referenced twice"),
                ));
            }
            let table = l2::words_from_bytes(&self.read_meta_cluster("L2 table", l2_off)?);
            for j in 0..self.l2_entries {
                let w = if ext { j * 2 } else { j } as usize;
                let raw = table.get(w).copied().unwrap_or(0);
                let bm = if ext {
                    table.get(w + 1).copied().unwrap_or(0)
                } else {
                    0
                };
                let at = l2_off + j * esz;
                match Mapping::decode(raw, bm, ext, v3, self.cluster_bits, at)? {
                    Mapping::Unallocated | Mapping::Zero { host: None } => {}
                    Mapping::Data { host, .. } | Mapping::Zero { host: Some(host) } => {
                        add("L2 entry", host, cs)?
                    }
                    Mapping::Sub { host, .. } => {
                        if host != 0 {
                            add("L2 entry", host, cs)?
                        }
                    }
                    Mapping::Compressed { offset, end } => {
                        let start = offset & !511;
                        add("L2 entry", start, end.saturating_sub(start))?
                    }
                }
            }
        }
        Ok(counts)
    }
}
