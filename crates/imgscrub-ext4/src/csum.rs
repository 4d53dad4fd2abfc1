//! CRC32C as ext4 and jbd2 use it.
//!
//! The kernel's `crc32c(seed, data)` (and e2fsprogs' `ext2fs_crc32c_le`) is the *raw* update:
//! no inversion before or after. The `crc32c` crate computes the standard CRC-32C, which
//! inverts on entry and exit, so `raw(seed, d) = !crc32c_append(!seed, d)`.

/// Raw CRC32C update, as `ext2fs_crc32c_le(seed, data)`.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_matches_standard_with_inversions() {
        // The standard CRC-32C check value of "123456789" is 0xE3069283.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
        // Chaining raw updates equals one update over the concatenation.
        let a = crc32c_raw(0x1234_5678, b"hello ");
        assert_eq!(
            crc32c_raw(a, b"world"),
            crc32c_raw(0x1234_5678, b"hello world")
        );
    }
}
