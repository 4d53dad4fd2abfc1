//! Big-endian field access for jbd2 structures (the journal is big-endian, unlike ext4).
//!
//! Every accessor is bounds-checked and returns `Corrupt` naming the structure, so that a
//! truncated or crafted block can never panic.

use crate::{Ext4Error, Result};

fn field<'a>(b: &'a [u8], off: usize, len: usize, what: &str) -> Result<&'a [u8]> {
    off.checked_add(len)
        .and_then(|end| b.get(off..end))
        .ok_or_else(|| {
            Ext4Error::corrupt(
                what,
                format!(
                    "field at byte {off} (+{len}) lies outside the {}-byte block",
                    b.len()
                ),
            )
        })
}

fn field_mut<'a>(b: &'a mut [u8], off: usize, len: usize, what: &str) -> Result<&'a mut [u8]> {
    let size = b.len();
    off.checked_add(len)
        .and_then(|end| b.get_mut(off..end))
        .ok_or_else(|| {
            Ext4Error::corrupt(
                what,
                format!("field at byte {off} (+{len}) lies outside the {size}-byte block"),
            )
        })
}

/// Big-endian u16 at `off`.
pub(crate) fn be16(b: &[u8], off: usize, what: &str) -> Result<u16> {
    let f = field(b, off, 2, what)?;
    Ok(u16::from_be_bytes([f[0], f[1]]))
}

/// Big-endian u32 at `off`.
pub(crate) fn be32(b: &[u8], off: usize, what: &str) -> Result<u32> {
    let f = field(b, off, 4, what)?;
    Ok(u32::from_be_bytes([f[0], f[1], f[2], f[3]]))
}

/// Big-endian u64 at `off`.
pub(crate) fn be64(b: &[u8], off: usize, what: &str) -> Result<u64> {
    let hi = be32(b, off, what)?;
    let lo = be32(b, off.saturating_add(4), what)?;
    Ok((u64::from(hi) << 32) | u64::from(lo))
}

/// Store a big-endian u32 at `off`.
pub(crate) fn put_be32(b: &mut [u8], off: usize, v: u32, what: &str) -> Result<()> {
    field_mut(b, off, 4, what)?.copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Little-endian u16 at `off` (for the few ext4 superblock fields the journal touches).
pub(crate) fn le16(b: &[u8], off: usize, what: &str) -> Result<u16> {
    let f = field(b, off, 2, what)?;
    Ok(u16::from_le_bytes([f[0], f[1]]))
}

/// Little-endian u32 at `off`.
pub(crate) fn le32(b: &[u8], off: usize, what: &str) -> Result<u32> {
    let f = field(b, off, 4, what)?;
    Ok(u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
}

/// Store a little-endian u16 at `off`.
pub(crate) fn put_le16(b: &mut [u8], off: usize, v: u16, what: &str) -> Result<()> {
    field_mut(b, off, 2, what)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Store a little-endian u32 at `off`.
pub(crate) fn put_le32(b: &mut [u8], off: usize, v: u32, what: &str) -> Result<()> {
    field_mut(b, off, 4, what)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// CRC-32 big-endian (polynomial 0x04C11DB7, MSB first, no inversion), as the kernel's
/// `crc32_be(seed, data)`: the jbd2 v1 "compat checksum" of a transaction.
pub(crate) fn crc32_be(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        let idx = ((crc >> 24) ^ u32::from(byte)) & 0xFF;
        crc = (crc << 8) ^ CRC32_BE_TABLE[idx as usize];
    }
    crc
}

const CRC32_BE_TABLE: [u32; 256] = make_crc32_be_table();

const fn make_crc32_be_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_be_check_value() {
        // CRC-32/BZIP2 check value ("123456789"): init !0, xorout !0, MSB-first.
        assert_eq!(!crc32_be(!0, b"123456789"), 0xFC89_1918);
    }

    #[test]
    fn accessors_are_bounds_checked() {
        let b = [0x12, 0x34, 0x56, 0x78, 0x9a];
        assert_eq!(be32(&b, 0, "t").unwrap(), 0x1234_5678);
        assert!(be32(&b, 2, "t").is_err());
        assert!(be16(&b, usize::MAX, "t").is_err());
        assert_eq!(le16(&b, 0, "t").unwrap(), 0x3412);
    }
}
