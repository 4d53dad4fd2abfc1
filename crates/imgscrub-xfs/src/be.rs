//! Big-endian field access. XFS stores every field big-endian except the CRC fields, which are
//! little-endian. A read past the end of the buffer gives 0: callers check lengths against the
//! geometry first, and a zero is then caught by the structure's own validation, never a panic.

pub(crate) fn u8_at(b: &[u8], o: usize) -> u8 {
    b.get(o).copied().unwrap_or(0)
}

pub(crate) fn u16_at(b: &[u8], o: usize) -> u16 {
    match b.get(o..o.saturating_add(2)) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

pub(crate) fn u32_at(b: &[u8], o: usize) -> u32 {
    match b.get(o..o.saturating_add(4)) {
        Some(&[a, c, d, e]) => u32::from_be_bytes([a, c, d, e]),
        _ => 0,
    }
}

pub(crate) fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    match b.get(o..o.saturating_add(8)) {
        Some(s) => {
            a.copy_from_slice(s);
            u64::from_be_bytes(a)
        }
        None => 0,
    }
}

/// `n` bytes at `o`, or an empty slice when out of range.
pub(crate) fn bytes(b: &[u8], o: usize, n: usize) -> &[u8] {
    b.get(o..o.saturating_add(n)).unwrap_or(&[])
}

/// Round `v` up to a multiple of `a` (a power of two).
pub(crate) fn round_up(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}
