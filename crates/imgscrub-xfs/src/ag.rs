//! Allocation group headers: AGF (free space), AGI (inodes) and AGFL (the free list), each in
//! its own sector after the AG's superblock copy.

use crate::be::{bytes, u32_at};
use crate::csum;
use crate::error::{Result, corrupt};
use crate::reader::Reader;

pub const AGF_MAGIC: &[u8; 4] = b"XAGF";
pub const AGI_MAGIC: &[u8; 4] = b"XAGI";
pub const AGFL_MAGIC: &[u8; 4] = b"XAFL";
const AGF_CRC_OFF: usize = 216;
const AGI_CRC_OFF: usize = 312;
const AGFL_CRC_OFF: usize = 32;
/// Maximum btree height we accept (the kernel's limits are lower for every btree).
pub const MAX_LEVELS: u32 = 9;

/// The AG free-space header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agf {
    pub seqno: u32,
    pub length: u32,
    pub bno_root: u32,
    pub cnt_root: u32,
    pub rmap_root: u32,
    pub bno_level: u32,
    pub cnt_level: u32,
    pub rmap_level: u32,
    pub flfirst: u32,
    pub fllast: u32,
    pub flcount: u32,
    pub freeblks: u32,
    pub longest: u32,
    pub btreeblks: u32,
    pub rmap_blocks: u32,
    pub refcount_blocks: u32,
    pub refcount_root: u32,
    pub refcount_level: u32,
}

/// The AG inode header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agi {
    pub seqno: u32,
    pub length: u32,
    pub count: u32,
    pub root: u32,
    pub level: u32,
    pub freecount: u32,
    pub newino: u32,
    pub unlinked: Vec<u32>,
    pub free_root: u32,
    pub free_level: u32,
    pub iblocks: u32,
    pub fblocks: u32,
}

fn check_common(
    r: &Reader<'_>,
    b: &[u8],
    ag: u32,
    magic: &[u8; 4],
    uuid_off: usize,
    crc_off: usize,
    what: &str,
) -> Result<()> {
    let name = || format!("{what} of AG {ag}");
    if bytes(b, 0, 4) != magic {
        return Err(corrupt(name(), "bad magic number"));
    }
    if r.sb.is_v5() {
        csum::verify(b, crc_off, name)?;
        if bytes(b, uuid_off, 16) != r.sb.meta_uuid() {
            return Err(corrupt(name(), "UUID does not match the superblock"));
        }
    }
    Ok(())
}

fn check_root(ag: u32, what: &str, root: u32, level: u32, len: u32) -> Result<()> {
    if level == 0 || level > MAX_LEVELS {
        return Err(corrupt(
            format!("AG {ag}"),
            format!("{what} btree level {level}"),
        ));
    }
    if root == 0 || root >= len {
        return Err(corrupt(
            format!("AG {ag}"),
            format!("{what} btree root block {root:#x}"),
        ));
    }
    Ok(())
}

impl Agf {
    pub fn read(r: &Reader<'_>, ag: u32) -> Result<Agf> {
        let b = r.ag_sector(ag, 1)?;
        check_common(r, &b, ag, AGF_MAGIC, 64, AGF_CRC_OFF, "AGF")?;
        let agf = Agf {
            seqno: u32_at(&b, 8),
            length: u32_at(&b, 12),
            bno_root: u32_at(&b, 16),
            cnt_root: u32_at(&b, 20),
            rmap_root: u32_at(&b, 24),
            bno_level: u32_at(&b, 28),
            cnt_level: u32_at(&b, 32),
            rmap_level: u32_at(&b, 36),
            flfirst: u32_at(&b, 40),
            fllast: u32_at(&b, 44),
            flcount: u32_at(&b, 48),
            freeblks: u32_at(&b, 52),
            longest: u32_at(&b, 56),
            btreeblks: u32_at(&b, 60),
            rmap_blocks: u32_at(&b, 80),
            refcount_blocks: u32_at(&b, 84),
            refcount_root: u32_at(&b, 88),
            refcount_level: u32_at(&b, 92),
        };
        let name = || format!("AGF of AG {ag}");
        if u32_at(&b, 4) != 1 {
            return Err(corrupt(name(), format!("version {}", u32_at(&b, 4))));
        }
        if agf.seqno != ag {
            return Err(corrupt(name(), format!("sequence number {}", agf.seqno)));
        }
        if agf.length != r.sb.ag_len(ag) {
            return Err(corrupt(
                name(),
                format!(
                    "length {} (the superblock says {})",
                    agf.length,
                    r.sb.ag_len(ag)
                ),
            ));
        }
        if agf.freeblks > agf.length || agf.longest > agf.freeblks || agf.flcount > agf.length {
            return Err(corrupt(
                name(),
                format!(
                    "counters: {} free blocks, longest {}, {} on the free list",
                    agf.freeblks, agf.longest, agf.flcount
                ),
            ));
        }
        check_root(
            ag,
            "by-block free-space",
            agf.bno_root,
            agf.bno_level,
            agf.length,
        )?;
        check_root(
            ag,
            "by-size free-space",
            agf.cnt_root,
            agf.cnt_level,
            agf.length,
        )?;
        if r.sb.has_ro_compat(crate::superblock::ro_compat::RMAPBT) {
            check_root(
                ag,
                "reverse-mapping",
                agf.rmap_root,
                agf.rmap_level,
                agf.length,
            )?;
        }
        if r.sb.has_ro_compat(crate::superblock::ro_compat::REFLINK) {
            check_root(
                ag,
                "refcount",
                agf.refcount_root,
                agf.refcount_level,
                agf.length,
            )?;
        }
        Ok(agf)
    }
}

impl Agi {
    pub fn read(r: &Reader<'_>, ag: u32) -> Result<Agi> {
        let b = r.ag_sector(ag, 2)?;
        check_common(r, &b, ag, AGI_MAGIC, 296, AGI_CRC_OFF, "AGI")?;
        let agi = Agi {
            seqno: u32_at(&b, 8),
            length: u32_at(&b, 12),
            count: u32_at(&b, 16),
            root: u32_at(&b, 20),
            level: u32_at(&b, 24),
            freecount: u32_at(&b, 28),
            newino: u32_at(&b, 32),
            unlinked: (0..64).map(|i| u32_at(&b, 40 + 4 * i)).collect(),
            free_root: u32_at(&b, 328),
            free_level: u32_at(&b, 332),
            iblocks: u32_at(&b, 336),
            fblocks: u32_at(&b, 340),
        };
        let name = || format!("AGI of AG {ag}");
        if u32_at(&b, 4) != 1 {
            return Err(corrupt(name(), format!("version {}", u32_at(&b, 4))));
        }
        if agi.seqno != ag {
            return Err(corrupt(name(), format!("sequence number {}", agi.seqno)));
        }
        if agi.length != r.sb.ag_len(ag) {
            return Err(corrupt(name(), format!("length {}", agi.length)));
        }
        if agi.freecount > agi.count {
            return Err(corrupt(
                name(),
                format!("{} free inodes of {}", agi.freecount, agi.count),
            ));
        }
        check_root(ag, "inode", agi.root, agi.level, agi.length)?;
        if r.sb.has_ro_compat(crate::superblock::ro_compat::FINOBT) {
            check_root(ag, "free-inode", agi.free_root, agi.free_level, agi.length)?;
        }
        Ok(agi)
    }

    /// Inodes on the unlinked lists (unlinked while open, not yet freed): a log recovery or
    /// `xfs_repair` would free them.
    pub fn has_unlinked(&self) -> bool {
        self.unlinked.iter().any(|&v| v != u32::MAX)
    }
}

/// The blocks on the AG free list, in list order.
pub fn agfl_blocks(r: &Reader<'_>, ag: u32, agf: &Agf) -> Result<Vec<u32>> {
    let b = r.ag_sector(ag, 3)?;
    let name = || format!("AGFL of AG {ag}");
    let hdr = if r.sb.is_v5() {
        check_common(r, &b, ag, AGFL_MAGIC, 8, AGFL_CRC_OFF, "AGFL")?;
        if u32_at(&b, 4) != ag {
            return Err(corrupt(name(), "sequence number"));
        }
        36
    } else {
        0
    };
    let size = (b.len() - hdr) / 4;
    if agf.flcount == 0 {
        return Ok(Vec::new());
    }
    let (first, last) = (agf.flfirst as usize, agf.fllast as usize);
    if first >= size || last >= size || agf.flcount as usize > size {
        return Err(corrupt(
            format!("AGF of AG {ag}"),
            format!(
                "free list first {first}, last {last}, count {} (the list holds {size})",
                agf.flcount
            ),
        ));
    }
    let n = if last >= first {
        last - first + 1
    } else {
        size - first + last + 1
    };
    if n != agf.flcount as usize {
        return Err(corrupt(
            format!("AGF of AG {ag}"),
            format!("free list count {} but {n} slots are in use", agf.flcount),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let bno = u32_at(&b, hdr + 4 * ((first + i) % size));
        if bno == 0 || bno >= agf.length {
            return Err(corrupt(name(), format!("block {bno:#x} on the free list")));
        }
        out.push(bno);
    }
    Ok(out)
}
