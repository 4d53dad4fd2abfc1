//! CRC-32C of v5 metadata: computed over the whole structure with its 4-byte CRC field taken
//! as zero, stored little-endian (the only little-endian field of XFS).

use crate::error::{Result, XfsError};

/// The CRC of `buf` with the field at `off` counted as zeros.
pub fn compute(buf: &[u8], off: usize) -> u32 {
    let (head, rest) = buf.split_at(off.min(buf.len()));
    let tail = rest.get(4..).unwrap_or(&[]);
    let c = crc32c::crc32c_append(crc32c::crc32c(head), &[0u8; 4][..rest.len().min(4)]);
    crc32c::crc32c_append(c, tail)
}

/// The CRC stored at `off`.
pub fn stored(buf: &[u8], off: usize) -> u32 {
    match buf.get(off..off + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Check the CRC at `off`; `what` names the structure for the error.
pub fn verify(buf: &[u8], off: usize, what: impl FnOnce() -> String) -> Result<()> {
    let s = stored(buf, off);
    let c = compute(buf, off);
    if s != c {
        return Err(XfsError::Checksum {
            structure: what(),
            stored: s,
            computed: c,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_counts_as_zero() {
        let mut b = vec![7u8; 64];
        let c = super::compute(&b, 8);
        b[8..12].copy_from_slice(&c.to_le_bytes());
        assert!(super::verify(&b, 8, String::new).is_ok());
        b[20] ^= 1;
        assert!(super::verify(&b, 8, String::new).is_err());
        let mut z = vec![7u8; 64];
        z[8..12].fill(0);
        assert_eq!(super::compute(&z, 8), crc32c::crc32c(&z));
    }
}
