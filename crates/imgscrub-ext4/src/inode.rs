//! Inode table entries: parse/serialize every field, extra_isize, checksum. Owner: core.
//!
//! An [`Inode`] holds the raw on-disk bytes (`s_inode_size` of them) and reads/writes fields
//! in place, so fields we do not interpret (osd1, i_version_hi, projid, in-inode xattrs after
//! `i_extra_isize`) survive edits.

use crate::csum::crc32c_raw;
use crate::le::{put_u16, put_u32, u16_at, u32_at};
use crate::types::{FileType, Timestamp};
use crate::{Ext4Error, Result};

/// The 128-byte "good old" inode size; fields after it need `i_extra_isize`.
pub const GOOD_OLD_INODE_SIZE: usize = 128;
/// Size of `i_block`.
pub const I_BLOCK_SIZE: usize = 60;
/// Offset of `i_block`.
pub const I_BLOCK_OFF: usize = 0x28;

/// Inode flags (`i_flags`).
pub mod flags {
    pub const SECRM: u32 = 0x1;
    pub const IMMUTABLE: u32 = 0x10;
    pub const APPEND: u32 = 0x20;
    pub const NOATIME: u32 = 0x80;
    pub const ENCRYPT: u32 = 0x800;
    /// Hashed-indexed directory.
    pub const INDEX: u32 = 0x1000;
    pub const JOURNAL_DATA: u32 = 0x4000;
    /// `i_blocks` counts filesystem blocks instead of 512-byte sectors.
    pub const HUGE_FILE: u32 = 0x40000;
    /// `i_block` holds an extent tree.
    pub const EXTENTS: u32 = 0x80000;
    pub const VERITY: u32 = 0x100000;
    /// The inode stores a large xattr value.
    pub const EA_INODE: u32 = 0x200000;
    /// Data lives in `i_block` and the `system.data` xattr.
    pub const INLINE_DATA: u32 = 0x1000_0000;
    pub const PROJINHERIT: u32 = 0x2000_0000;
    pub const CASEFOLD: u32 = 0x4000_0000;
}

// Offsets of the large-inode fields, relative to the inode start.
const EXTRA_ISIZE: usize = 0x80;
const CSUM_HI: usize = 0x82;
const CTIME_EXTRA: usize = 0x84;
const MTIME_EXTRA: usize = 0x88;
const ATIME_EXTRA: usize = 0x8C;
const CRTIME: usize = 0x90;
const CRTIME_EXTRA: usize = 0x94;
const CSUM_LO: usize = 0x7C;

/// One inode's on-disk bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Inode {
    raw: Vec<u8>,
}

impl std::fmt::Debug for Inode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inode")
            .field("mode", &format_args!("{:#o}", self.mode()))
            .field("size", &self.size())
            .field("links", &self.links_count())
            .field("flags", &format_args!("{:#x}", self.flags()))
            .finish_non_exhaustive()
    }
}

/// Which timestamp of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    Atime,
    Ctime,
    Mtime,
    Crtime,
}

impl TimeField {
    fn offsets(self) -> (usize, usize) {
        match self {
            TimeField::Atime => (0x08, ATIME_EXTRA),
            TimeField::Ctime => (0x0C, CTIME_EXTRA),
            TimeField::Mtime => (0x10, MTIME_EXTRA),
            TimeField::Crtime => (CRTIME, CRTIME_EXTRA),
        }
    }
}

impl Inode {
    /// Wrap on-disk bytes (the full `s_inode_size`).
    pub fn from_bytes(raw: &[u8]) -> Self {
        Inode { raw: raw.to_vec() }
    }

    /// An all-zero inode of `size` bytes.
    pub fn zeroed(size: usize) -> Self {
        Inode { raw: vec![0; size] }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Mutable raw bytes (for owners of in-inode areas such as in-inode xattrs).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw
    }

    /// On-disk size of this inode record.
    pub fn record_size(&self) -> usize {
        self.raw.len()
    }

    /// `i_mode`: type and permission bits.
    pub fn mode(&self) -> u16 {
        u16_at(&self.raw, 0x0)
    }
    /// Set `i_mode`.
    pub fn set_mode(&mut self, m: u16) {
        put_u16(&mut self.raw, 0x0, m);
    }
    /// File type from the mode (`None` when invalid).
    pub fn file_type(&self) -> Option<FileType> {
        FileType::from_mode(self.mode())
    }
    /// Whether the inode is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == Some(FileType::Directory)
    }
    /// `i_uid` with its high half.
    pub fn uid(&self) -> u32 {
        u32::from(u16_at(&self.raw, 0x2)) | (u32::from(u16_at(&self.raw, 0x78)) << 16)
    }
    /// Set `i_uid` (both halves).
    pub fn set_uid(&mut self, v: u32) {
        put_u16(&mut self.raw, 0x2, v as u16);
        put_u16(&mut self.raw, 0x78, (v >> 16) as u16);
    }
    /// `i_gid` with its high half.
    pub fn gid(&self) -> u32 {
        u32::from(u16_at(&self.raw, 0x18)) | (u32::from(u16_at(&self.raw, 0x7A)) << 16)
    }
    /// Set `i_gid` (both halves).
    pub fn set_gid(&mut self, v: u32) {
        put_u16(&mut self.raw, 0x18, v as u16);
        put_u16(&mut self.raw, 0x7A, (v >> 16) as u16);
    }
    /// `i_size` (lo | size_high << 32; size_high is used for every file type on ext4).
    pub fn size(&self) -> u64 {
        u64::from(u32_at(&self.raw, 0x4)) | (u64::from(u32_at(&self.raw, 0x6C)) << 32)
    }
    /// Set `i_size` (lo and high).
    pub fn set_size(&mut self, v: u64) {
        put_u32(&mut self.raw, 0x4, v as u32);
        put_u32(&mut self.raw, 0x6C, (v >> 32) as u32);
    }
    /// `i_links_count`.
    pub fn links_count(&self) -> u16 {
        u16_at(&self.raw, 0x1A)
    }
    /// Set `i_links_count`.
    pub fn set_links_count(&mut self, v: u16) {
        put_u16(&mut self.raw, 0x1A, v);
    }
    /// `i_dtime`: deletion time (or orphan list link).
    pub fn dtime(&self) -> u32 {
        u32_at(&self.raw, 0x14)
    }
    /// Set `i_dtime`.
    pub fn set_dtime(&mut self, v: u32) {
        put_u32(&mut self.raw, 0x14, v);
    }
    /// `i_flags` (see [`flags`]).
    pub fn flags(&self) -> u32 {
        u32_at(&self.raw, 0x20)
    }
    /// Set `i_flags`.
    pub fn set_flags(&mut self, v: u32) {
        put_u32(&mut self.raw, 0x20, v);
    }
    /// Whether `i_flags` has `f`.
    pub fn has_flag(&self, f: u32) -> bool {
        self.flags() & f != 0
    }
    /// `i_generation` (part of the per-inode checksum seed).
    pub fn generation(&self) -> u32 {
        u32_at(&self.raw, 0x64)
    }
    /// Set `i_generation`.
    pub fn set_generation(&mut self, v: u32) {
        put_u32(&mut self.raw, 0x64, v);
    }
    /// `i_file_acl` (the xattr block), lo | hi << 32.
    pub fn file_acl(&self) -> u64 {
        u64::from(u32_at(&self.raw, 0x68)) | (u64::from(u16_at(&self.raw, 0x76)) << 32)
    }
    /// Set `i_file_acl` (lo/hi).
    pub fn set_file_acl(&mut self, b: u64) {
        put_u32(&mut self.raw, 0x68, b as u32);
        put_u16(&mut self.raw, 0x76, (b >> 32) as u16);
    }
    /// The raw 60-byte `i_block` area.
    pub fn i_block(&self) -> [u8; I_BLOCK_SIZE] {
        let mut a = [0u8; I_BLOCK_SIZE];
        if let Some(s) = self.raw.get(I_BLOCK_OFF..I_BLOCK_OFF + I_BLOCK_SIZE) {
            a.copy_from_slice(s);
        }
        a
    }
    /// Replace `i_block`.
    pub fn set_i_block(&mut self, b: &[u8; I_BLOCK_SIZE]) {
        if let Some(s) = self.raw.get_mut(I_BLOCK_OFF..I_BLOCK_OFF + I_BLOCK_SIZE) {
            s.copy_from_slice(b);
        }
    }

    /// Raw `i_blocks` (lo | hi << 32) without interpreting units.
    pub fn blocks_raw(&self) -> u64 {
        u64::from(u32_at(&self.raw, 0x1C)) | (u64::from(u16_at(&self.raw, 0x74)) << 32)
    }

    /// `i_blocks` in 512-byte units. With huge_file, the `_hi` half counts, and
    /// `HUGE_FILE_FL` means the value is in filesystem blocks.
    pub fn blocks_512(&self, huge_file: bool, block_size: u32) -> u64 {
        if !huge_file {
            return u64::from(u32_at(&self.raw, 0x1C));
        }
        let v = self.blocks_raw();
        if self.has_flag(flags::HUGE_FILE) {
            v.saturating_mul(u64::from(block_size / 512))
        } else {
            v
        }
    }

    /// Store `i_blocks` from a count of 512-byte units, as the kernel's
    /// `ext4_inode_blocks_set`: 32 bits plain; up to 48 bits with huge_file; beyond that in
    /// filesystem blocks with `HUGE_FILE_FL`. Fails when the value does not fit.
    pub fn set_blocks_512(&mut self, v: u64, huge_file: bool, block_size: u32) -> Result<()> {
        let mut fl = self.flags();
        if v <= u64::from(u32::MAX) {
            put_u32(&mut self.raw, 0x1C, v as u32);
            put_u16(&mut self.raw, 0x74, 0);
            fl &= !flags::HUGE_FILE;
        } else if !huge_file {
            return Err(Ext4Error::NoSpace(
                "file too large for i_blocks without huge_file",
            ));
        } else if v < (1u64 << 48) {
            put_u32(&mut self.raw, 0x1C, v as u32);
            put_u16(&mut self.raw, 0x74, (v >> 32) as u16);
            fl &= !flags::HUGE_FILE;
        } else {
            let b = v / u64::from((block_size / 512).max(1));
            if b >= (1u64 << 48) {
                return Err(Ext4Error::NoSpace("file too large for i_blocks"));
            }
            put_u32(&mut self.raw, 0x1C, b as u32);
            put_u16(&mut self.raw, 0x74, (b >> 32) as u16);
            fl |= flags::HUGE_FILE;
        }
        self.set_flags(fl);
        Ok(())
    }

    /// `i_extra_isize` (0 for 128-byte inodes).
    pub fn extra_isize(&self) -> u16 {
        if self.raw.len() <= GOOD_OLD_INODE_SIZE {
            0
        } else {
            u16_at(&self.raw, EXTRA_ISIZE)
        }
    }
    /// Set `i_extra_isize` (ignored for 128-byte inodes).
    pub fn set_extra_isize(&mut self, v: u16) {
        if self.raw.len() > GOOD_OLD_INODE_SIZE {
            put_u16(&mut self.raw, EXTRA_ISIZE, v);
        }
    }

    /// Whether the large-inode field at `off` (4 bytes) lies within `i_extra_isize`.
    fn has_extra(&self, off: usize) -> bool {
        let end = GOOD_OLD_INODE_SIZE + usize::from(self.extra_isize());
        off + 4 <= end && end <= self.raw.len()
    }

    /// A timestamp. The extra word holds the epoch bits (2 low bits, extending the signed
    /// 32-bit seconds to 34 bits) and nanoseconds (30 high bits). `None` for crtime when the
    /// inode has no room for it.
    pub fn time(&self, which: TimeField) -> Option<Timestamp> {
        let (base, extra) = which.offsets();
        if which == TimeField::Crtime && !self.has_extra(CRTIME) {
            return None;
        }
        let secs = i64::from(u32_at(&self.raw, base) as i32);
        if self.has_extra(extra) {
            let x = u32_at(&self.raw, extra);
            let epoch = i64::from(x & 3);
            Some(Timestamp::new(
                secs + (epoch << 32),
                (x >> 2).min(999_999_999),
            ))
        } else {
            Some(Timestamp::new(secs, 0))
        }
    }

    /// Store a timestamp (the extra word only when the inode has room for it).
    pub fn set_time(&mut self, which: TimeField, t: Timestamp) {
        let (base, extra) = which.offsets();
        if which == TimeField::Crtime && !self.has_extra(CRTIME) {
            return;
        }
        put_u32(&mut self.raw, base, t.secs as u32);
        if self.has_extra(extra) {
            // secs = (i32)lo + epoch << 32  =>  epoch = (secs - (i32)lo) >> 32.
            let lo = i64::from(t.secs as u32 as i32);
            let epoch = ((t.secs - lo) >> 32) as u32 & 3;
            put_u32(
                &mut self.raw,
                extra,
                epoch | (t.nsecs.min(999_999_999) << 2),
            );
        }
    }

    /// Device number for character/block devices: old encoding in `i_block[0]` when it is
    /// non-zero, else the new 32-bit encoding in `i_block[1]`.
    pub fn rdev(&self) -> (u32, u32) {
        let old = u32_at(&self.raw, I_BLOCK_OFF);
        if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            let v = u32_at(&self.raw, I_BLOCK_OFF + 4);
            ((v & 0xfff00) >> 8, (v & 0xff) | ((v >> 12) & 0xfff00))
        }
    }

    /// Store a device number as the kernel does: the old 16-bit form when both parts fit in
    /// a byte, else the new form.
    pub fn set_rdev(&mut self, major: u32, minor: u32) {
        let mut b = [0u8; I_BLOCK_SIZE];
        if major < 256 && minor < 256 {
            b[..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
        } else {
            let v = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
            b[4..8].copy_from_slice(&v.to_le_bytes());
        }
        self.set_i_block(&b);
    }

    /// Whether the checksum has a high half: large inode whose extra area reaches it.
    fn csum_has_hi(&self) -> bool {
        self.raw.len() > GOOD_OLD_INODE_SIZE && usize::from(self.extra_isize()) >= 4
    }

    /// The inode checksum: crc32c(seed, ino, generation, inode with checksum fields zeroed),
    /// truncated to 16 bits when there is no `i_checksum_hi`.
    pub fn compute_checksum(&self, fs_seed: u32, ino: u32) -> u32 {
        let seed = inode_seed(fs_seed, ino, self.generation());
        let has_hi = self.csum_has_hi();
        let r = &self.raw;
        let mut c = crc32c_raw(seed, r.get(..CSUM_LO).unwrap_or(&[]));
        c = crc32c_raw(c, &[0, 0]);
        if has_hi {
            c = crc32c_raw(c, r.get(CSUM_LO + 2..CSUM_HI).unwrap_or(&[]));
            c = crc32c_raw(c, &[0, 0]);
            c = crc32c_raw(c, r.get(CSUM_HI + 2..).unwrap_or(&[]));
            c
        } else {
            c = crc32c_raw(c, r.get(CSUM_LO + 2..).unwrap_or(&[]));
            c & 0xFFFF
        }
    }

    fn stored_checksum(&self) -> u32 {
        let lo = u32::from(u16_at(&self.raw, CSUM_LO));
        if self.csum_has_hi() {
            lo | (u32::from(u16_at(&self.raw, CSUM_HI)) << 16)
        } else {
            lo
        }
    }

    /// Verify the checksum (an all-zero inode is accepted, as e2fsprogs does: never-used
    /// slots of a lazily initialised table).
    pub fn verify(&self, fs_seed: u32, ino: u32) -> Result<()> {
        let stored = self.stored_checksum();
        let computed = self.compute_checksum(fs_seed, ino);
        if stored == computed || self.raw.iter().all(|&b| b == 0) {
            return Ok(());
        }
        Err(Ext4Error::Checksum {
            structure: format!("inode {ino}"),
            stored,
            computed,
        })
    }

    /// Recompute and store the checksum.
    pub fn update_checksum(&mut self, fs_seed: u32, ino: u32) {
        let c = self.compute_checksum(fs_seed, ino);
        put_u16(&mut self.raw, CSUM_LO, c as u16);
        if self.csum_has_hi() {
            put_u16(&mut self.raw, CSUM_HI, (c >> 16) as u16);
        }
    }
}

/// The per-inode checksum seed used by inode, extent, directory and xattr checksums:
/// crc32c(crc32c(fs_seed, le32 ino), le32 generation).
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let c = crc32c_raw(fs_seed, &ino.to_le_bytes());
    crc32c_raw(c, &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_with_epoch() {
        let mut i = Inode::zeroed(256);
        i.set_extra_isize(32);
        for t in [
            Timestamp::new(0, 0),
            Timestamp::new(-1, 5),
            Timestamp::new(1_700_000_000, 123_456_789),
            Timestamp::new(1i64 << 33, 1),
            Timestamp::new(i64::from(i32::MIN), 0),
        ] {
            i.set_time(TimeField::Mtime, t);
            assert_eq!(i.time(TimeField::Mtime), Some(t));
            i.set_time(TimeField::Crtime, t);
            assert_eq!(i.time(TimeField::Crtime), Some(t));
        }
        let small = Inode::zeroed(128);
        assert_eq!(small.time(TimeField::Crtime), None);
    }

    #[test]
    fn rdev_encodings() {
        let mut i = Inode::zeroed(128);
        for d in [(1, 3), (8, 1), (259, 0), (4, 300), (4095, 1 << 19)] {
            i.set_rdev(d.0, d.1);
            assert_eq!(i.rdev(), d);
        }
    }

    #[test]
    fn checksum_round_trip() {
        let mut i = Inode::zeroed(256);
        i.set_extra_isize(32);
        i.set_mode(0o100644);
        i.update_checksum(0x1234, 12);
        i.verify(0x1234, 12).unwrap();
        assert!(i.verify(0x1234, 13).is_err());
        let mut s = Inode::zeroed(128);
        s.set_mode(0o100644);
        s.update_checksum(7, 12);
        s.verify(7, 12).unwrap();
    }

    #[test]
    fn blocks_units() {
        let mut i = Inode::zeroed(256);
        i.set_blocks_512(8, true, 4096).unwrap();
        assert_eq!(i.blocks_512(true, 4096), 8);
        i.set_blocks_512(1 << 40, true, 4096).unwrap();
        assert_eq!(i.blocks_512(true, 4096), 1 << 40);
        assert!(i.set_blocks_512(1 << 40, false, 4096).is_err());
    }
}
