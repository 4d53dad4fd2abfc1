//! A logical volume as a block device: linear and striped segments mapped onto PV devices.

use crate::blockdev::{AllocRange, BlockDev, check_range};
use crate::error::Result;

/// One segment, in bytes: `len` bytes of the LV from `start`, cut into `stripe`-byte chunks
/// dealt round-robin over `areas` (device index, byte offset of the area on that device).
/// A linear segment has one area and `stripe == len`.
#[derive(Debug, Clone)]
pub(crate) struct MapSeg {
    pub start: u64,
    pub len: u64,
    pub stripe: u64,
    pub areas: Vec<(usize, u64)>,
}

/// A logical volume: reads and writes go to the PV extents its segments name.
#[derive(Clone)]
pub struct LvDev<D> {
    devs: Vec<D>,
    segs: Vec<MapSeg>,
    len: u64,
}

impl<D> std::fmt::Debug for LvDev<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvDev")
            .field("devices", &self.devs.len())
            .field("segments", &self.segs)
            .field("len", &self.len)
            .finish()
    }
}

impl<D: BlockDev> LvDev<D> {
    /// `segs` are sorted, contiguous from 0 and cover `len` (checked by the metadata reader).
    pub(crate) fn new(devs: Vec<D>, segs: Vec<MapSeg>, len: u64) -> Self {
        LvDev { devs, segs, len }
    }

    /// Where LV byte `off` is: (device index, device offset, bytes contiguous from there).
    fn map(&self, off: u64) -> Option<(usize, u64, u64)> {
        let i = self.segs.partition_point(|s| s.start + s.len <= off);
        let s = self.segs.get(i)?;
        let rel = off.checked_sub(s.start)?;
        let stripe = s.stripe.max(1);
        let n = s.areas.len().max(1) as u64;
        let chunk = rel / stripe;
        let within = rel % stripe;
        let (dev, base) = *s.areas.get((chunk % n) as usize)?;
        let run = (stripe - within).min(s.len - rel);
        Some((dev, base + (chunk / n) * stripe + within, run))
    }

    /// Call `f(device, device offset, position in the request, length)` for each contiguous
    /// piece of `offset..offset+len`.
    fn each(
        &self,
        what: &'static str,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&D, u64, u64, u64) -> Result<()>,
    ) -> Result<()> {
        check_range(what, offset, len, self.len)?;
        let mut done = 0;
        while done < len {
            let (d, at, run) = self.map(offset + done).ok_or_else(|| {
                crate::DiskError::corrupt(
                    "LVM2 mapping",
                    format!("no segment maps byte {}", offset + done),
                )
            })?;
            let n = run.min(len - done);
            let dev = self.devs.get(d).ok_or_else(|| {
                crate::DiskError::corrupt("LVM2 mapping", format!("device {d} is missing"))
            })?;
            f(dev, at, done, n)?;
            done += n;
        }
        Ok(())
    }

    /// The PV byte ranges (device index, offset, length) that hold the LV, in LV order.
    pub fn extents(&self) -> Vec<(usize, u64, u64)> {
        let mut v = Vec::new();
        for s in &self.segs {
            let per = s.len / s.areas.len().max(1) as u64;
            for &(d, at) in &s.areas {
                v.push((d, at, per));
            }
        }
        v
    }

    /// Where `offset..offset+len` of the LV is: (device index, device offset, length)
    /// pieces in LV order.
    pub fn physical(&self, offset: u64, len: u64) -> Result<Vec<(usize, u64, u64)>> {
        let mut v = Vec::new();
        self.each("map", offset, len, |_, at, _, n| {
            v.push((0, at, n));
            Ok(())
        })?;
        // `each` hands out devices, not indexes: map again for the index.
        let mut pos = offset;
        for piece in &mut v {
            if let Some((d, _, _)) = self.map(pos) {
                piece.0 = d;
            }
            pos += piece.2;
        }
        Ok(v)
    }

    /// The PV devices, indexed as in [`LvDev::extents`].
    pub fn devices(&self) -> &[D] {
        &self.devs
    }
}

impl<D: BlockDev> BlockDev for LvDev<D> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.each("read", offset, buf.len() as u64, |dev, at, pos, n| {
            dev.read_at(&mut buf[pos as usize..(pos + n) as usize], at)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.each("write", offset, buf.len() as u64, |dev, at, pos, n| {
            dev.write_at(&buf[pos as usize..(pos + n) as usize], at)
        })
    }

    fn flush(&self) -> Result<()> {
        for d in &self.devs {
            d.flush()?;
        }
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        self.devs.iter().any(|d| d.is_read_only())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.each("write_zeroes", offset, len, |dev, at, _, n| {
            dev.write_zeroes(at, n)
        })
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.each("discard", offset, len, |dev, at, _, n| dev.discard(at, n))
    }

    fn allocation(&self, offset: u64, len: u64) -> Result<Vec<AllocRange>> {
        let mut out: Vec<AllocRange> = Vec::new();
        self.each("allocation", offset, len, |dev, at, pos, n| {
            for r in dev.allocation(at, n)? {
                let o = offset + pos + (r.offset - at);
                match out.last_mut() {
                    Some(last) if last.kind == r.kind && last.offset + last.len == o => {
                        last.len += r.len
                    }
                    _ => out.push(AllocRange {
                        offset: o,
                        len: r.len,
                        kind: r.kind,
                    }),
                }
            }
            Ok(())
        })?;
        Ok(out)
    }
}
