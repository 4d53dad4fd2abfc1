//! LVM2: physical volumes found by their label, the volume-group metadata read from their
//! metadata areas (the newest copy by seqno whose checksum holds), and logical volumes made
//! of linear and striped segments presented as [`BlockDev`]s ([`LvDev`]).
//!
//! What is not a plain mapping onto PV extents is refused by name when the LV is opened:
//! thin pools and thin volumes, raid and mirror, cache and writecache, snapshots, VDO,
//! integrity. An LV with an extent on a PV that is not in the image is refused naming the PV.
//! The metadata text is parsed by our own small parser ([`text`]); every number is checked
//! with checked arithmetic against the PV sizes before it is used.
//!
//! [`Lvm::change_uuids`] gives the PVs and the VG new UUIDs in every metadata copy and label,
//! with the seqno bumped and the checksums recomputed (what `vgimportclone` does, without the
//! rename).

mod lv;
mod ondisk;
pub mod text;

use crate::blockdev::BlockDev;
use crate::error::{DiskError, Result};
pub use lv::LvDev;
pub use ondisk::{
    Area, MetadataArea, PvLabel, format_uuid, raw_uuid, read_label, read_metadata_area,
};
use text::{Section, Value};

const SECTOR: u64 = 512;

/// LVM2's CRC-32 (initial value 0xf597a6cf, no final inversion), as stored in labels,
/// metadata area headers and over the metadata text.
pub fn checksum(data: &[u8]) -> u32 {
    ondisk::crc(data)
}

/// The segment types we map, and those we refuse with the name users know them by.
fn refused_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "thin" => "a thin volume",
        "thin-pool" => "a thin pool",
        "mirror" => "a mirror",
        k if k.starts_with("raid") => "a RAID volume",
        "cache" | "cache-pool" | "writecache" => "a cache volume",
        "snapshot" => "a snapshot",
        "vdo" | "vdo-pool" => "a VDO volume",
        "integrity" => "an integrity volume",
        _ => return None,
    })
}

/// A PV as the VG metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgPv {
    /// The key in the metadata (`pv0`).
    pub key: String,
    pub uuid: String,
    /// The device path LVM2 last saw it at (a hint only).
    pub device_hint: String,
    /// Byte offset of the first extent on the PV.
    pub pe_start: u64,
    pub pe_count: u64,
    /// Device size in bytes, as recorded.
    pub dev_size: u64,
}

/// One segment of an LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start_extent: u64,
    pub extent_count: u64,
    /// The metadata's type: `striped` (linear is `striped` with one stripe), `thin-pool`…
    pub kind: String,
    /// Stripe (chunk) size in bytes; 0 for one stripe.
    pub stripe_size: u64,
    /// (PV key, first extent on that PV) per stripe; empty for types we do not map.
    pub stripes: Vec<(String, u64)>,
}

/// A logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    pub name: String,
    pub uuid: String,
    /// Size in bytes.
    pub size: u64,
    /// `VISIBLE` in its status (hidden LVs are the parts of pools, mirrors…).
    pub visible: bool,
    pub segments: Vec<Segment>,
    /// Why it cannot be opened as a block device (thin pool, snapshot…), or `None`.
    pub refused: Option<String>,
}

/// A volume group, from the newest valid metadata copy.
#[derive(Debug, Clone)]
pub struct VolumeGroup {
    pub name: String,
    pub uuid: String,
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    pub pvs: Vec<VgPv>,
    pub lvs: Vec<LogicalVolume>,
    /// The metadata text this was read from.
    pub text: Vec<u8>,
}

fn corrupt(detail: impl Into<String>) -> DiskError {
    DiskError::corrupt("LVM2 metadata", detail)
}

fn int(sec: &Section, key: &str, what: &str) -> Result<u64> {
    let a = sec
        .get(key)
        .ok_or_else(|| corrupt(format!("line {}: {what} has no {key}", sec.line)))?;
    match a.value.as_int() {
        Some(i) if i >= 0 => Ok(i as u64),
        _ => Err(corrupt(format!(
            "line {}: {key} of {what} is not a non-negative number",
            a.line
        ))),
    }
}

fn string<'a>(sec: &'a Section, key: &str, what: &str) -> Result<&'a str> {
    let a = sec
        .get(key)
        .ok_or_else(|| corrupt(format!("line {}: {what} has no {key}", sec.line)))?;
    a.value
        .as_str()
        .ok_or_else(|| corrupt(format!("line {}: {key} of {what} is not a string", a.line)))
}

fn has_flag(sec: &Section, key: &str, flag: &str) -> bool {
    match sec.get(key).map(|a| &a.value) {
        Some(Value::Array(v)) => v.iter().any(|x| x.as_str() == Some(flag)),
        _ => false,
    }
}

/// The one top-level section of a metadata text: the VG.
fn vg_section(root: &Section) -> Result<&Section> {
    match root.sections.as_slice() {
        [vg] => Ok(vg),
        [] => Err(corrupt("no volume group section")),
        [_, second, ..] => Err(corrupt(format!(
            "line {}: a second volume group section '{}'",
            second.line, second.name
        ))),
    }
}

impl VolumeGroup {
    /// Parse and check a metadata text.
    pub fn parse(text: &[u8]) -> Result<VolumeGroup> {
        let root = text::parse(text).map_err(|e| corrupt(e.to_string()))?;
        let vg = vg_section(&root)?;
        let what = format!("volume group {}", vg.name);
        let uuid = string(vg, "id", &what)?.to_owned();
        let seqno = int(vg, "seqno", &what)?;
        let extent_sectors = int(vg, "extent_size", &what)?;
        if extent_sectors == 0 || extent_sectors > 1 << 32 {
            return Err(corrupt(format!(
                "{what}: extent size of {extent_sectors} sectors"
            )));
        }
        let extent_size = extent_sectors * SECTOR;
        let mut pvs = Vec::new();
        if let Some(list) = vg.section("physical_volumes") {
            for s in &list.sections {
                let what = format!("PV {}", s.name);
                let pe_start = int(s, "pe_start", &what)?;
                let pe_count = int(s, "pe_count", &what)?;
                let dev_size = int(s, "dev_size", &what).unwrap_or(0);
                let end = pe_count
                    .checked_mul(extent_sectors)
                    .and_then(|n| n.checked_add(pe_start))
                    .and_then(|n| n.checked_mul(SECTOR))
                    .filter(|&e| e <= 1 << 62)
                    .ok_or_else(|| {
                        corrupt(format!(
                            "line {}: {what} has {pe_count} extents from sector {pe_start}: past any disk",
                            s.line
                        ))
                    })?;
                if dev_size != 0 && end > dev_size.saturating_mul(SECTOR) {
                    return Err(corrupt(format!(
                        "line {}: the extents of {what} end at byte {end}, past its {}-sector size",
                        s.line, dev_size
                    )));
                }
                pvs.push(VgPv {
                    key: s.name.clone(),
                    uuid: string(s, "id", &what)?.to_owned(),
                    device_hint: string(s, "device", &what).unwrap_or("").to_owned(),
                    pe_start: pe_start * SECTOR,
                    pe_count,
                    dev_size: dev_size.saturating_mul(SECTOR),
                });
            }
        }
        let mut lvs = Vec::new();
        if let Some(list) = vg.section("logical_volumes") {
            for s in &list.sections {
                lvs.push(parse_lv(s, &pvs, extent_size)?);
            }
        }
        // Snapshot segments name their copy-on-write store: that LV's bytes are not a
        // filesystem. Stacked segment types name other LVs; we never map through them.
        let cows: Vec<(String, String)> = vg
            .section("logical_volumes")
            .map(|list| {
                list.sections
                    .iter()
                    .flat_map(|lv| lv.sections.iter())
                    .filter(|seg| {
                        seg.get("type").and_then(|t| t.value.as_str()) == Some("snapshot")
                    })
                    .filter_map(|seg| {
                        let cow = seg.get("cow_store")?.value.as_str()?.to_owned();
                        let origin = seg
                            .get("origin")
                            .and_then(|o| o.value.as_str())
                            .unwrap_or("?")
                            .to_owned();
                        Some((cow, origin))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (cow, origin) in cows {
            if let Some(lv) = lvs.iter_mut().find(|l| l.name == cow) {
                lv.refused = Some(format!(
                    "LV {}/{} is a snapshot (the copy-on-write store of {origin}), which imgscrub does not map",
                    vg.name, cow
                ));
            }
        }
        let name = vg.name.clone();
        for lv in &mut lvs {
            if let Some(r) = &mut lv.refused
                && !r.starts_with("LV ")
            {
                *r = format!("LV {name}/{} {r}", lv.name);
            }
        }
        Ok(VolumeGroup {
            name,
            uuid,
            seqno,
            extent_size,
            pvs,
            lvs,
            text: text.to_vec(),
        })
    }

    pub fn lv(&self, name: &str) -> Option<&LogicalVolume> {
        self.lvs.iter().find(|l| l.name == name)
    }

    /// The extents of PV `key` that no LV uses, as (first extent, count) runs, or `None` when
    /// that cannot be known for sure (a segment type we do not map names PVs directly).
    pub fn free_extents(&self, key: &str) -> Option<Vec<(u64, u64)>> {
        let pv = self.pvs.iter().find(|p| p.key == key)?;
        let mut used: Vec<(u64, u64)> = Vec::new();
        for lv in &self.lvs {
            for seg in &lv.segments {
                if seg.kind != "striped" {
                    // Our parser keeps no areas for such segments; if the raw text lists
                    // PVs for one, we cannot tell what it uses.
                    if seg_names_pvs(&self.text, &lv.name, self) {
                        return None;
                    }
                    continue;
                }
                let per = seg.extent_count / seg.stripes.len().max(1) as u64;
                for (k, pe) in &seg.stripes {
                    if k == key {
                        used.push((*pe, per));
                    }
                }
            }
        }
        used.sort_unstable();
        let mut free = Vec::new();
        let mut at = 0u64;
        for (s, n) in used {
            if s > at {
                free.push((at, s - at));
            }
            at = at.max(s + n);
        }
        if at < pv.pe_count {
            free.push((at, pv.pe_count - at));
        }
        Some(free)
    }
}

/// True when some segment of LV `lv` of a type we do not map lists one of the VG's PVs in an
/// array (old-style mirrors and raid with PV areas do).
fn seg_names_pvs(text: &[u8], lv: &str, vg: &VolumeGroup) -> bool {
    let Ok(root) = text::parse(text) else {
        return true;
    };
    let Some(sec) = vg_section(&root)
        .ok()
        .and_then(|v| v.section("logical_volumes"))
        .and_then(|l| l.section(lv))
    else {
        return true;
    };
    sec.sections.iter().any(|seg| {
        seg.assigns.iter().any(|a| match &a.value {
            Value::Array(v) => v.iter().any(|x| {
                x.as_str()
                    .is_some_and(|s| vg.pvs.iter().any(|p| p.key == s))
            }),
            _ => false,
        })
    })
}

fn parse_lv(s: &Section, pvs: &[VgPv], extent_size: u64) -> Result<LogicalVolume> {
    let what = format!("LV {}", s.name);
    let uuid = string(s, "id", &what)?.to_owned();
    let visible = has_flag(s, "status", "VISIBLE");
    let mut segments = Vec::new();
    let mut refused = None;
    for seg in s.sections.iter().filter(|x| x.name.starts_with("segment")) {
        let swhat = format!("{} of {what}", seg.name);
        let start_extent = int(seg, "start_extent", &swhat)?;
        let extent_count = int(seg, "extent_count", &swhat)?;
        if extent_count == 0 {
            return Err(corrupt(format!(
                "line {}: {swhat} has no extents",
                seg.line
            )));
        }
        let kind = string(seg, "type", &swhat)?.to_owned();
        let mut stripe_size = 0;
        let mut stripes = Vec::new();
        if kind == "striped" {
            let n = int(seg, "stripe_count", &swhat)?;
            let list = match seg.get("stripes").map(|a| &a.value) {
                Some(Value::Array(v)) => v,
                _ => {
                    return Err(corrupt(format!(
                        "line {}: {swhat} has no stripes list",
                        seg.line
                    )));
                }
            };
            if n == 0 || list.len() as u64 != 2 * n {
                return Err(corrupt(format!(
                    "line {}: {swhat} has stripe_count {n} and {} stripes entries",
                    seg.line,
                    list.len()
                )));
            }
            if extent_count % n != 0 {
                return Err(corrupt(format!(
                    "line {}: {swhat}: {extent_count} extents do not divide into {n} stripes",
                    seg.line
                )));
            }
            let per = extent_count / n;
            if n > 1 {
                let ss = int(seg, "stripe_size", &swhat)?;
                stripe_size = ss
                    .checked_mul(SECTOR)
                    .filter(|&b| {
                        b > 0
                            && per
                                .checked_mul(extent_size)
                                .is_some_and(|l| l.is_multiple_of(b))
                    })
                    .ok_or_else(|| {
                        corrupt(format!(
                            "line {}: {swhat}: stripe size of {ss} sectors does not divide a stripe",
                            seg.line
                        ))
                    })?;
            }
            for pair in list.chunks(2) {
                let (Some(pv), Some(pe)) = (pair[0].as_str(), pair[1].as_int()) else {
                    return Err(corrupt(format!(
                        "line {}: {swhat}: stripes must be (\"pvN\", extent) pairs",
                        seg.line
                    )));
                };
                let Some(p) = pvs.iter().find(|p| p.key == pv) else {
                    return Err(corrupt(format!(
                        "line {}: {swhat} maps onto '{pv}', which is not a PV of the VG \
                         (stacked or looping segments are not mapped)",
                        seg.line
                    )));
                };
                let pe = u64::try_from(pe)
                    .ok()
                    .filter(|&pe| pe.checked_add(per).is_some_and(|end| end <= p.pe_count));
                let Some(pe) = pe else {
                    return Err(corrupt(format!(
                        "line {}: {swhat} uses extents past the {} of {pv}",
                        seg.line, p.pe_count
                    )));
                };
                stripes.push((pv.to_owned(), pe));
            }
        } else if refused.is_none() {
            refused = Some(match refused_kind(&kind) {
                Some(name) => {
                    format!("is {name} (segment type {kind}), which imgscrub does not map")
                }
                None => format!("has a segment of type {kind}, which imgscrub does not map"),
            });
        }
        segments.push(Segment {
            start_extent,
            extent_count,
            kind,
            stripe_size,
            stripes,
        });
    }
    if segments.is_empty() {
        return Err(corrupt(format!("line {}: {what} has no segments", s.line)));
    }
    segments.sort_by_key(|g| g.start_extent);
    let mut at = 0u64;
    for g in &segments {
        if g.start_extent != at {
            return Err(corrupt(format!(
                "line {}: the segments of {what} {} at extent {at}",
                s.line,
                if g.start_extent < at {
                    "overlap"
                } else {
                    "leave a gap"
                }
            )));
        }
        at = at
            .checked_add(g.extent_count)
            .ok_or_else(|| corrupt(format!("line {}: {what} is absurdly long", s.line)))?;
    }
    let size = at
        .checked_mul(extent_size)
        .filter(|&b| b <= 1 << 62)
        .ok_or_else(|| corrupt(format!("line {}: {what} is absurdly long", s.line)))?;
    if let Some(sc) = s.get("segment_count").and_then(|a| a.value.as_int())
        && sc != segments.len() as i64
    {
        return Err(corrupt(format!(
            "line {}: {what} says segment_count {sc} and has {} segments",
            s.line,
            segments.len()
        )));
    }
    Ok(LogicalVolume {
        name: s.name.clone(),
        uuid,
        size,
        visible,
        segments,
        refused,
    })
}

/// A physical volume found in the image.
#[derive(Debug, Clone)]
pub struct PhysicalVolume<D> {
    /// The device it is on (a partition, the whole disk, or a test buffer).
    pub dev: D,
    pub label: PvLabel,
    /// Its metadata areas, checked.
    pub areas: Vec<MetadataArea>,
    /// The UUID of the VG it belongs to, when known.
    pub vg_uuid: Option<String>,
}

/// Every PV and VG found among some devices.
#[derive(Debug, Clone)]
pub struct Lvm<D> {
    pub pvs: Vec<PhysicalVolume<D>>,
    pub vgs: Vec<VolumeGroup>,
}

/// Look for PVs on each device and read their VGs. Devices without an LVM2 label are
/// skipped; a damaged label, metadata area or metadata text is an error naming it.
pub fn scan<D: BlockDev>(devs: impl IntoIterator<Item = D>) -> Result<Lvm<D>> {
    let mut pvs = Vec::new();
    // Every committed copy: the VG parsed, the PV it came from, and its text's checksum
    // (already checked against the text by `read_metadata_area`).
    let mut copies: Vec<(VolumeGroup, String, u32)> = Vec::new();
    for dev in devs {
        let Some(label) = read_label(&dev)? else {
            continue;
        };
        let mut areas = Vec::new();
        let mut vg_uuid = None;
        for a in &label.metadata_areas {
            let m = read_metadata_area(&dev, *a).map_err(|e| named(&label, e))?;
            if !m.text.is_empty() {
                let vg = VolumeGroup::parse(&m.text).map_err(|e| named(&label, e))?;
                vg_uuid = Some(vg.uuid.clone());
                copies.push((vg, label.uuid.clone(), m.text_crc));
            }
            areas.push(m);
        }
        pvs.push(PhysicalVolume {
            dev,
            label,
            areas,
            vg_uuid,
        });
    }
    // The newest copy of each VG. lvm2 writes one text to every area in a commit, so two
    // copies with the same seqno and different texts mean the VG was changed behind lvm2's
    // back (or half-restored): which one is right cannot be told, and writing on either
    // could destroy data the other maps. lvm2 itself calls such a VG inconsistent.
    copies.sort_by(|(a, _, _), (b, _, _)| a.uuid.cmp(&b.uuid).then(b.seqno.cmp(&a.seqno)));
    for w in copies.windows(2) {
        let ((a, pa, ca), (b, pb, cb)) = (&w[0], &w[1]);
        if a.uuid == b.uuid && a.seqno == b.seqno && ca != cb {
            return Err(corrupt(format!(
                "the metadata copies of VG {} on PVs {pa} and {pb} differ at the same seqno {} \
                 (inconsistent VG: repair it with lvm2's vgcfgrestore first)",
                a.name, a.seqno
            )));
        }
    }
    copies.dedup_by(|(later, _, _), (first, _, _)| later.uuid == first.uuid);
    let copies: Vec<VolumeGroup> = copies.into_iter().map(|(vg, _, _)| vg).collect();
    for pv in &mut pvs {
        if pv.vg_uuid.is_none() {
            pv.vg_uuid = copies
                .iter()
                .find(|vg| vg.pvs.iter().any(|p| p.uuid == pv.label.uuid))
                .map(|vg| vg.uuid.clone());
        }
    }
    Ok(Lvm { pvs, vgs: copies })
}

fn named(label: &PvLabel, e: DiskError) -> DiskError {
    match e {
        DiskError::Corrupt { structure, detail } => DiskError::Corrupt {
            structure,
            detail: format!("PV {}: {detail}", label.uuid),
        },
        other => other,
    }
}

impl<D: BlockDev + Clone> Lvm<D> {
    /// The VG called `name`.
    pub fn vg(&self, name: &str) -> Option<&VolumeGroup> {
        self.vgs.iter().find(|v| v.name == name)
    }

    /// The PV in the image with this UUID.
    pub fn pv(&self, uuid: &str) -> Option<&PhysicalVolume<D>> {
        self.pvs.iter().find(|p| p.label.uuid == uuid)
    }

    /// Open LV `lv` of VG `vg` as a block device.
    pub fn open_lv(&self, vg: &str, lv: &str) -> Result<LvDev<D>> {
        let g = self
            .vg(vg)
            .ok_or_else(|| DiskError::Unsupported(format!("no volume group {vg} in the image")))?;
        let l = g.lv(lv).ok_or_else(|| {
            DiskError::Unsupported(format!("volume group {vg} has no logical volume {lv}"))
        })?;
        if let Some(r) = &l.refused {
            return Err(DiskError::Unsupported(r.clone()));
        }
        let mut devs: Vec<D> = Vec::new();
        let mut keys: Vec<&str> = Vec::new();
        let mut segs = Vec::new();
        for s in &l.segments {
            let mut areas = Vec::new();
            for (key, pe) in &s.stripes {
                let vp = g.pvs.iter().find(|p| &p.key == key).ok_or_else(|| {
                    corrupt(format!("LV {vg}/{lv} names {key}, which is not in the VG"))
                })?;
                let Some(pv) = self.pv(&vp.uuid) else {
                    return Err(DiskError::Unsupported(format!(
                        "LV {vg}/{lv} has extents on PV {key} (UUID {}, last seen as {}), which is not in this image",
                        vp.uuid,
                        if vp.device_hint.is_empty() {
                            "?"
                        } else {
                            &vp.device_hint
                        }
                    )));
                };
                let end = vp.pe_start + vp.pe_count * g.extent_size;
                if end > pv.dev.len() {
                    return Err(corrupt(format!(
                        "the extents of PV {key} end at byte {end}, past the end of its device ({} bytes)",
                        pv.dev.len()
                    )));
                }
                let idx = match keys.iter().position(|k| k == key) {
                    Some(i) => i,
                    None => {
                        keys.push(key);
                        devs.push(pv.dev.clone());
                        devs.len() - 1
                    }
                };
                areas.push((idx, vp.pe_start + pe * g.extent_size));
            }
            let len = s.extent_count * g.extent_size;
            segs.push(lv::MapSeg {
                start: s.start_extent * g.extent_size,
                len,
                stripe: if areas.len() > 1 { s.stripe_size } else { len },
                areas,
            });
        }
        Ok(LvDev::new(devs, segs, l.size))
    }

    /// Unused byte ranges of each PV in the image: (index into `pvs`, offset, length) of
    /// extents no LV uses, for zeroing. PVs whose use cannot be known for sure are left out.
    pub fn unallocated(&self) -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        for (i, pv) in self.pvs.iter().enumerate() {
            let Some(g) = pv
                .vg_uuid
                .as_ref()
                .and_then(|u| self.vgs.iter().find(|v| &v.uuid == u))
            else {
                continue;
            };
            let Some(vp) = g.pvs.iter().find(|p| p.uuid == pv.label.uuid) else {
                continue;
            };
            let Some(free) = g.free_extents(&vp.key) else {
                continue;
            };
            for (pe, n) in free {
                let off = vp.pe_start + pe * g.extent_size;
                let len = n * g.extent_size;
                if off + len <= pv.dev.len() {
                    out.push((i, off, len));
                }
            }
        }
        out
    }

    /// Give VG `vg` and each of its PVs new UUIDs (`new_uuid` is called once per UUID to
    /// replace, with the old one), in every PV label and metadata area, seqno + 1. Every PV
    /// of the VG must be in the image. Nothing is written when a check fails.
    pub fn change_uuids(&self, vg: &str, mut new_uuid: impl FnMut(&str) -> [u8; 32]) -> Result<()> {
        let g = self
            .vg(vg)
            .ok_or_else(|| DiskError::Unsupported(format!("no volume group {vg} in the image")))?;
        for vp in &g.pvs {
            if self.pv(&vp.uuid).is_none() {
                return Err(DiskError::Unsupported(format!(
                    "PV {} (UUID {}) of VG {vg} is not in this image: its UUID cannot be changed with the others",
                    vp.key, vp.uuid
                )));
            }
        }
        for pv in &self.pvs {
            if pv.vg_uuid.as_deref() == Some(g.uuid.as_str())
                && !g.pvs.iter().any(|v| v.uuid == pv.label.uuid)
            {
                return Err(corrupt(format!(
                    "PV {} holds the metadata of VG {vg}, which does not list it",
                    pv.label.uuid
                )));
            }
        }
        if g.pvs.is_empty() {
            return Err(corrupt(format!("VG {vg} lists no PVs")));
        }
        let root = text::parse(&g.text).map_err(|e| corrupt(e.to_string()))?;
        let vsec = vg_section(&root)?;
        // (span, replacement) edits on the text.
        let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        let id = vsec.get("id").ok_or_else(|| corrupt("the VG has no id"))?;
        let new_vg = format_uuid(&new_uuid(&g.uuid));
        edits.push((id.span.clone(), text::quote(&new_vg)));
        let seq = vsec
            .get("seqno")
            .ok_or_else(|| corrupt("the VG has no seqno"))?;
        edits.push((seq.span.clone(), (g.seqno + 1).to_string()));
        let mut pv_new: Vec<(String, [u8; 32])> = Vec::new();
        for s in vsec
            .section("physical_volumes")
            .map(|l| l.sections.as_slice())
            .unwrap_or(&[])
        {
            let id = s
                .get("id")
                .ok_or_else(|| corrupt(format!("PV {} has no id", s.name)))?;
            let old = id.value.as_str().unwrap_or("");
            let raw = new_uuid(old);
            edits.push((id.span.clone(), text::quote(&format_uuid(&raw))));
            pv_new.push((old.to_owned(), raw));
        }
        edits.sort_by_key(|e| std::cmp::Reverse(e.0.start));
        let mut out = g.text.clone();
        if let Some(nul) = out.iter().position(|&b| b == 0) {
            out.truncate(nul);
        }
        for (span, rep) in edits {
            out.splice(span, rep.into_bytes());
        }
        // Check the result before writing anything.
        let check = VolumeGroup::parse(&out)?;
        if check.uuid != new_vg || check.seqno != g.seqno + 1 {
            return Err(corrupt("the rewritten metadata does not read back"));
        }
        let ring_room = |m: &MetadataArea| {
            let old = if m.text_offset == 0 { 0 } else { m.text_size };
            out.len() as u64 + old.next_multiple_of(SECTOR) <= m.area.size - ondisk::MDA_HEADER_SIZE
        };
        let members: Vec<&PhysicalVolume<D>> = self
            .pvs
            .iter()
            .filter(|p| g.pvs.iter().any(|v| v.uuid == p.label.uuid))
            .collect();
        if let Some(pv) = members.iter().find(|p| !p.areas.iter().all(ring_room)) {
            return Err(DiskError::Unsupported(format!(
                "the metadata area of PV {} has no room for a new copy",
                pv.label.uuid
            )));
        }
        for pv in members {
            for m in &pv.areas {
                ondisk::write_metadata_area(&pv.dev, m, &out)?;
            }
            let raw = pv_new
                .iter()
                .find(|(old, _)| *old == pv.label.uuid)
                .map(|(_, r)| *r)
                .ok_or_else(|| corrupt(format!("PV {} lost its new UUID", pv.label.uuid)))?;
            ondisk::write_label_uuid(&pv.dev, &pv.label, &raw)?;
            pv.dev.flush()?;
        }
        Ok(())
    }
}

/// A deterministic LVM2 UUID (32 characters of `[A-Za-z0-9]`) from a seed and the old UUID:
/// used when `SOURCE_DATE_EPOCH` asks for reproducible output.
pub fn derived_uuid(seed: &[u8], old: &str) -> [u8; 32] {
    const CHARS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = [0u8; 32];
    let mut state = ondisk::crc_update(ondisk::crc(seed), old.as_bytes());
    for (i, b) in out.iter_mut().enumerate() {
        state = ondisk::crc_update(state, &[i as u8, (state >> 24) as u8]);
        *b = CHARS[(state % 62) as usize];
    }
    out
}
