//! Refcount blocks: entries of 1, 2, 4, 8, 16, 32 or 64 bits.
//!
//! Entries of 8 bits or more are big-endian; narrower entries are packed starting with the
//! least significant bits of each byte (as QEMU does). Blocks are kept in memory as raw bytes
//! so an update writes back only the bytes that changed.

/// Refcount entries per block.
pub fn entries_per_block(cluster_bits: u32, refcount_order: u32) -> u64 {
    1u64 << (cluster_bits + 3 - refcount_order)
}

/// Largest refcount a width can hold.
pub fn max_refcount(refcount_order: u32) -> u64 {
    let bits = 1u32 << refcount_order;
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Read entry `idx`; `None` when `idx` is outside the block.
pub fn get(block: &[u8], idx: u64, refcount_order: u32) -> Option<u64> {
    let bits = 1u64 << refcount_order;
    if bits < 8 {
        let bit = idx.checked_mul(bits)?;
        let byte = *block.get(usize::try_from(bit / 8).ok()?)?;
        let shift = bit % 8;
        Some((u64::from(byte) >> shift) & ((1u64 << bits) - 1))
    } else {
        let w = usize::try_from(bits / 8).ok()?;
        let start = usize::try_from(idx).ok()?.checked_mul(w)?;
        let bytes = block.get(start..start.checked_add(w)?)?;
        Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
}

/// Set entry `idx` to `value` (which must fit). Returns the byte range that changed, or
/// `None` when `idx` is outside the block.
pub fn set(block: &mut [u8], idx: u64, refcount_order: u32, value: u64) -> Option<(usize, usize)> {
    let bits = 1u64 << refcount_order;
    if bits < 8 {
        let bit = idx.checked_mul(bits)?;
        let pos = usize::try_from(bit / 8).ok()?;
        let shift = bit % 8;
        let mask = ((1u64 << bits) - 1) << shift;
        let byte = block.get_mut(pos)?;
        let v = (u64::from(*byte) & !mask) | ((value << shift) & mask);
        *byte = v as u8;
        Some((pos, 1))
    } else {
        let w = usize::try_from(bits / 8).ok()?;
        let start = usize::try_from(idx).ok()?.checked_mul(w)?;
        let bytes = block.get_mut(start..start.checked_add(w)?)?;
        let be = value.to_be_bytes();
        bytes.copy_from_slice(be.get(8 - w..)?);
        Some((start, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_width() {
        for order in 0..=6u32 {
            let mut b = vec![0u8; 512];
            let n = entries_per_block(9, order);
            let max = max_refcount(order);
            for i in 0..n {
                set(&mut b, i, order, (i * 7 + 3) & max).unwrap();
            }
            for i in 0..n {
                assert_eq!(
                    get(&b, i, order),
                    Some((i * 7 + 3) & max),
                    "order {order} idx {i}"
                );
            }
            assert_eq!(get(&b, n, order), None);
        }
    }

    #[test]
    fn one_bit_is_lsb_first() {
        let mut b = vec![0u8; 1];
        set(&mut b, 0, 0, 1).unwrap();
        assert_eq!(b[0], 1);
        set(&mut b, 7, 0, 1).unwrap();
        assert_eq!(b[0], 0x81);
    }
}
