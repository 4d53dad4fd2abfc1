//! Block group descriptors (32/64 byte, meta_bg), gdt_csum / metadata_csum. Owner: core.
//!
//! Each descriptor is kept as its raw on-disk bytes (`s_desc_size` of them) and edited in
//! place, so reserved bytes survive. The `_hi` halves of 64-bit descriptors are used only when
//! the 64bit feature is on and descriptors are at least 64 bytes long, as the kernel does.

use crate::csum::crc32c_raw;
use crate::le::{put_u16, put_u32, u16_at, u32_at};
use crate::superblock::{Superblock, incompat};
use crate::{Ext4Error, Result};

/// `bg_flags`: the inode bitmap and table are not initialised (uninit_bg/metadata_csum).
pub const BG_INODE_UNINIT: u16 = 0x0001;
/// `bg_flags`: the block bitmap is not initialised; compute it from the group's metadata.
pub const BG_BLOCK_UNINIT: u16 = 0x0002;
/// `bg_flags`: the inode table is zeroed.
pub const BG_INODE_ZEROED: u16 = 0x0004;

/// Offset of `bg_checksum`.
const CSUM_OFF: usize = 0x1E;

/// One group descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDesc {
    raw: Vec<u8>,
    wide: bool,
}

impl GroupDesc {
    /// Wrap the raw bytes of one descriptor. `wide`: the `_hi` halves are meaningful.
    pub fn from_bytes(raw: &[u8], wide: bool) -> Self {
        GroupDesc {
            raw: raw.to_vec(),
            wide,
        }
    }

    /// The raw descriptor bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn lo_hi32(&self, lo: usize, hi: usize) -> u64 {
        let h = if self.wide {
            u64::from(u32_at(&self.raw, hi))
        } else {
            0
        };
        u64::from(u32_at(&self.raw, lo)) | (h << 32)
    }
    fn lo_hi16(&self, lo: usize, hi: usize) -> u32 {
        let h = if self.wide {
            u32::from(u16_at(&self.raw, hi))
        } else {
            0
        };
        u32::from(u16_at(&self.raw, lo)) | (h << 16)
    }
    fn set_lo_hi16(&mut self, lo: usize, hi: usize, v: u32) {
        put_u16(&mut self.raw, lo, v as u16);
        if self.wide {
            put_u16(&mut self.raw, hi, (v >> 16) as u16);
        }
    }

    /// Block of the block bitmap.
    pub fn block_bitmap(&self) -> u64 {
        self.lo_hi32(0x0, 0x20)
    }
    /// Block of the inode bitmap.
    pub fn inode_bitmap(&self) -> u64 {
        self.lo_hi32(0x4, 0x24)
    }
    /// First block of the inode table.
    pub fn inode_table(&self) -> u64 {
        self.lo_hi32(0x8, 0x28)
    }
    /// `bg_free_blocks_count` (lo/hi).
    pub fn free_blocks(&self) -> u32 {
        self.lo_hi16(0xC, 0x2C)
    }
    /// `bg_free_inodes_count` (lo/hi).
    pub fn free_inodes(&self) -> u32 {
        self.lo_hi16(0xE, 0x2E)
    }
    /// `bg_used_dirs_count` (lo/hi).
    pub fn used_dirs(&self) -> u32 {
        self.lo_hi16(0x10, 0x30)
    }
    /// `bg_flags` (`BG_INODE_UNINIT`, `BG_BLOCK_UNINIT`, `BG_INODE_ZEROED`).
    pub fn flags(&self) -> u16 {
        u16_at(&self.raw, 0x12)
    }
    /// `bg_itable_unused` (lo/hi): inodes at the end of the table never used.
    pub fn itable_unused(&self) -> u32 {
        self.lo_hi16(0x1C, 0x32)
    }
    /// `bg_checksum`.
    pub fn checksum(&self) -> u16 {
        u16_at(&self.raw, CSUM_OFF)
    }
    /// `bg_exclude_bitmap` (snapshots; unused).
    pub fn exclude_bitmap(&self) -> u64 {
        self.lo_hi32(0x14, 0x34)
    }
    /// Stored block bitmap checksum (lo, plus hi with wide descriptors).
    pub fn block_bitmap_csum(&self) -> u32 {
        self.lo_hi16(0x18, 0x38)
    }
    /// Stored inode bitmap checksum (lo, plus hi with wide descriptors).
    pub fn inode_bitmap_csum(&self) -> u32 {
        self.lo_hi16(0x1A, 0x3A)
    }

    /// Set `bg_free_blocks_count`.
    pub fn set_free_blocks(&mut self, v: u32) {
        self.set_lo_hi16(0xC, 0x2C, v);
    }
    /// Set `bg_free_inodes_count`.
    pub fn set_free_inodes(&mut self, v: u32) {
        self.set_lo_hi16(0xE, 0x2E, v);
    }
    /// Set `bg_used_dirs_count`.
    pub fn set_used_dirs(&mut self, v: u32) {
        self.set_lo_hi16(0x10, 0x30, v);
    }
    /// Set `i_flags`.
    pub fn set_flags(&mut self, v: u16) {
        put_u16(&mut self.raw, 0x12, v);
    }
    /// Set `bg_itable_unused`.
    pub fn set_itable_unused(&mut self, v: u32) {
        self.set_lo_hi16(0x1C, 0x32, v);
    }
    /// Store a block bitmap crc32c: the low 16 bits always, the high 16 bits with wide
    /// descriptors (e2fsprogs compares only the bits the descriptor can hold).
    pub fn set_block_bitmap_csum(&mut self, c: u32) {
        self.set_lo_hi16(0x18, 0x38, c);
    }
    /// Store an inode bitmap crc32c (see [`GroupDesc::set_block_bitmap_csum`]).
    pub fn set_inode_bitmap_csum(&mut self, c: u32) {
        self.set_lo_hi16(0x1A, 0x3A, c);
    }
    /// Mask of the bitmap checksum bits the descriptor stores.
    pub fn bitmap_csum_mask(&self) -> u32 {
        if self.wide { u32::MAX } else { 0xFFFF }
    }

    /// The descriptor checksum as the superblock's features define it: crc32c (low 16 bits)
    /// with metadata_csum, crc16 with gdt_csum, none otherwise (`None`).
    pub fn compute_checksum(&self, sb: &Superblock, group: u32) -> Option<u16> {
        let le_group = group.to_le_bytes();
        if sb.metadata_csum() {
            let mut c = crc32c_raw(sb.csum_seed, &le_group);
            c = crc32c_raw(c, self.raw.get(..CSUM_OFF).unwrap_or(&[]));
            c = crc32c_raw(c, &[0, 0]);
            c = crc32c_raw(c, self.raw.get(CSUM_OFF + 2..).unwrap_or(&[]));
            Some((c & 0xFFFF) as u16)
        } else if sb.has_group_desc_csum() {
            let mut c = crc16(!0, &sb.uuid());
            c = crc16(c, &le_group);
            c = crc16(c, self.raw.get(..CSUM_OFF).unwrap_or(&[]));
            // The old crc16 scheme skips the checksum field rather than zeroing it.
            c = crc16(c, self.raw.get(CSUM_OFF + 2..).unwrap_or(&[]));
            Some(c)
        } else {
            None
        }
    }

    /// Verify the stored checksum.
    pub fn verify(&self, sb: &Superblock, group: u32) -> Result<()> {
        match self.compute_checksum(sb, group) {
            Some(c) if c != self.checksum() => Err(Ext4Error::Checksum {
                structure: format!("group descriptor {group}"),
                stored: u32::from(self.checksum()),
                computed: u32::from(c),
            }),
            _ => Ok(()),
        }
    }

    /// Recompute and store the checksum.
    pub fn update_checksum(&mut self, sb: &Superblock, group: u32) {
        if let Some(c) = self.compute_checksum(sb, group) {
            put_u16(&mut self.raw, CSUM_OFF, c);
        }
    }

    /// Set a block address field (used by tests building descriptors).
    pub fn set_locations(&mut self, block_bitmap: u64, inode_bitmap: u64, inode_table: u64) {
        for (lo, hi, v) in [
            (0x0, 0x20, block_bitmap),
            (0x4, 0x24, inode_bitmap),
            (0x8, 0x28, inode_table),
        ] {
            put_u32(&mut self.raw, lo, v as u32);
            if self.wide {
                put_u32(&mut self.raw, hi, (v >> 32) as u32);
            }
        }
    }
}

/// Location of the primary copy of descriptor-table block `i` (0-based).
///
/// Without meta_bg (and for the first `s_first_meta_bg` blocks with it) the table follows
/// the superblock in group 0. With meta_bg each "meta group" of `descs_per_block` groups keeps
/// its one descriptor block at the start of its first group (after the superblock backup if
/// that group has one), with backups in the second and last groups of the meta group.
pub fn desc_block_location(sb: &Superblock, i: u32) -> u64 {
    let first = u64::from(sb.first_data_block);
    if !sb.has_incompat(incompat::META_BG) || i < sb.first_meta_bg() {
        return first + u64::from(i) + 1;
    }
    let g = i.saturating_mul(sb.descs_per_block());
    sb.group_first_block(g) + u64::from(sb.group_has_super(g))
}

/// Blocks occupied in group `g` by the superblock backup and descriptor table copies
/// (including reserved GDT blocks), as `(first_block, count)` runs. These are fixed by the
/// geometry; the bitmaps and the inode table come from the descriptors.
pub fn group_base_metadata(sb: &Superblock, g: u32) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let start = sb.group_first_block(g);
    let has_super = sb.group_has_super(g);
    let meta_bg = sb.has_incompat(incompat::META_BG);
    if has_super {
        // The superblock backup occupies the group's first block. In group 0 with 1 KiB blocks
        // block 0 (boot block) lies before the first group and is not counted in any group.
        runs.push((start, 1));
        let old_desc_blocks = if meta_bg {
            u64::from(sb.first_meta_bg())
        } else {
            u64::from(sb.desc_blocks()) + u64::from(sb.reserved_gdt_blocks())
        };
        if old_desc_blocks > 0 {
            runs.push((start + 1, old_desc_blocks));
        }
    }
    if meta_bg {
        let dpb = sb.descs_per_block().max(1);
        let mbg = g / dpb;
        let idx = g % dpb;
        if mbg >= sb.first_meta_bg() && (idx == 0 || idx == 1 || idx == dpb - 1) {
            runs.push((start + u64::from(has_super), 1));
        }
    }
    // Clip to the group (a damaged superblock must not make us mark other groups' blocks).
    let end = start + u64::from(sb.blocks_in_group(g));
    runs.retain(|&(b, _)| b < end);
    for r in &mut runs {
        r.1 = r.1.min(end - r.0);
    }
    runs
}

/// Standard CRC-16 (reflected polynomial 0xA001), as e2fsprogs' `ext2fs_crc16` for gdt_csum.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        // CRC-16/ARC of "123456789" is 0xBB3D (init 0, reflected 0x8005).
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }

    #[test]
    fn narrow_descriptor_ignores_hi() {
        let mut raw = vec![0u8; 64];
        raw[0x2C] = 1;
        let mut d = GroupDesc::from_bytes(&raw[..32], false);
        assert_eq!(d.free_blocks(), 0);
        d.set_free_blocks(0x12345);
        assert_eq!(d.free_blocks(), 0x2345);
        let mut w = GroupDesc::from_bytes(&raw, true);
        w.set_free_blocks(0x12345);
        assert_eq!(w.free_blocks(), 0x12345);
    }
}
