//! Little-endian field access on byte buffers, in one place.
//!
//! Every on-disk ext4 field is little-endian. These helpers never panic: a read outside the
//! buffer yields 0 and a write outside it is ignored. Callers size their buffers from the
//! structure they parse (1024-byte superblock, `s_desc_size` descriptor, `s_inode_size`
//! inode), so an out-of-range access is a bug in the caller's offsets, not an input error;
//! it must still never crash on a damaged image.

/// Read a `u8` at `off` (0 when out of range).
#[inline]
pub fn u8_at(buf: &[u8], off: usize) -> u8 {
    buf.get(off).copied().unwrap_or(0)
}

/// Read a little-endian `u16` at `off` (0 when out of range).
#[inline]
pub fn u16_at(buf: &[u8], off: usize) -> u16 {
    match buf.get(off..off.saturating_add(2)) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

/// Read a little-endian `u32` at `off` (0 when out of range).
#[inline]
pub fn u32_at(buf: &[u8], off: usize) -> u32 {
    match buf.get(off..off.saturating_add(4)) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Read a little-endian `u64` at `off` (0 when out of range).
#[inline]
pub fn u64_at(buf: &[u8], off: usize) -> u64 {
    match buf.get(off..off.saturating_add(8)) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        }
        None => 0,
    }
}

/// Write a `u8` at `off` (ignored when out of range).
#[inline]
pub fn put_u8(buf: &mut [u8], off: usize, v: u8) {
    if let Some(b) = buf.get_mut(off) {
        *b = v;
    }
}

/// Write a little-endian `u16` at `off` (ignored when out of range).
#[inline]
pub fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    if let Some(s) = buf.get_mut(off..off.saturating_add(2)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Write a little-endian `u32` at `off` (ignored when out of range).
#[inline]
pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(s) = buf.get_mut(off..off.saturating_add(4)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Write a little-endian `u64` at `off` (ignored when out of range).
#[inline]
pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    if let Some(s) = buf.get_mut(off..off.saturating_add(8)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_out_of_range() {
        let mut b = [0u8; 8];
        put_u32(&mut b, 2, 0xdead_beef);
        assert_eq!(u32_at(&b, 2), 0xdead_beef);
        assert_eq!(u16_at(&b, 2), 0xbeef);
        assert_eq!(u32_at(&b, 6), 0);
        put_u64(&mut b, 1, 5); // out of range: ignored
        assert_eq!(u8_at(&b, 100), 0);
        put_u64(&mut b, 0, u64::MAX);
        assert_eq!(u64_at(&b, 0), u64::MAX);
    }
}
