//! L1 and L2 table entries: decoding with validation, encoding for writes.
//!
//! Standard L2 entries are 64 bits; with extended L2 each entry is followed by a 64-bit
//! subcluster bitmap (bits 0..32: subcluster allocated, bits 32..64: subcluster reads as
//! zero). Tables are kept in memory as `Vec<u64>` of the big-endian words.

use crate::error::{Qcow2Error, Result};

/// L1 entry: bits 9..56 hold the L2 table offset.
pub const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// L2 entry: bits 9..56 hold the host cluster offset.
pub const L2_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bit 63 of L1/L2 entries: refcount is exactly one.
pub const COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: compressed cluster.
pub const COMPRESSED: u64 = 1 << 62;
/// Bit 0 of standard L2 entries (v3): reads as zero.
pub const ZERO: u64 = 1;
/// Extended L2 bitmap: all 32 subclusters allocated.
pub const SUB_ALL_ALLOC: u64 = 0xffff_ffff;
/// Extended L2 bitmap: all 32 subclusters read as zero.
pub const SUB_ALL_ZERO: u64 = 0xffff_ffff << 32;
/// Subclusters per cluster with extended L2.
pub const SUBCLUSTERS: u64 = 32;

/// What one guest cluster maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated: read the backing file, or zeros.
    Unallocated,
    /// Reads as zeros; `host` is a preallocated cluster that belongs to it, if any.
    Zero {
        /// Preallocated host cluster.
        host: Option<u64>,
    },
    /// Whole cluster of data at `host`.
    Data {
        /// Host offset (cluster aligned).
        host: u64,
        /// The COPIED flag.
        copied: bool,
    },
    /// Compressed cluster stored in `offset..end` of the host file.
    Compressed {
        /// First byte of the compressed data.
        offset: u64,
        /// One past the last byte that may belong to it (sector granular).
        end: u64,
    },
    /// Extended L2 cluster whose subclusters differ.
    Sub {
        /// Host cluster (0 when no subcluster is allocated).
        host: u64,
        /// Allocated subclusters (bit i = subcluster i).
        alloc: u32,
        /// Zero subclusters.
        zero: u32,
    },
}

impl Mapping {
    /// Decode an L2 entry (`bitmap` is 0 for standard entries). `at` is the host offset of
    /// the entry, for messages. `v3` enables the zero flag.
    pub fn decode(
        raw: u64,
        bitmap: u64,
        extended: bool,
        v3: bool,
        cluster_bits: u32,
        at: u64,
    ) -> Result<Mapping> {
        let cs_mask = (1u64 << cluster_bits) - 1;
        if raw & COMPRESSED != 0 {
            let x = 62 - (cluster_bits - 8);
            let offset = raw & ((1u64 << x) - 1);
            let extra = (raw >> x) & ((1u64 << (cluster_bits - 8)) - 1);
            let end = (offset & !511) + (extra + 1) * 512;
            if offset == 0 {
                return Err(Qcow2Error::corrupt(
                    "L2 entry",
                    at,
                    "compressed cluster at host offset 0",
                ));
            }
            return Ok(Mapping::Compressed { offset, end });
        }
        let host = raw & L2_OFFSET_MASK;
        if host & cs_mask != 0 {
            return Err(Qcow2Error::corrupt(
                "L2 entry",
                at,
                format!("host cluster offset {host:#x} is not cluster aligned"),
            ));
        }
        if extended {
            let alloc = (bitmap & SUB_ALL_ALLOC) as u32;
            let zero = (bitmap >> 32) as u32;
            if alloc & zero != 0 {
                return Err(Qcow2Error::corrupt(
                    "L2 entry",
                    at,
                    format!(
                        "subclusters {:#x} are both allocated and zero",
                        alloc & zero
                    ),
                ));
            }
            if alloc != 0 && host == 0 {
                return Err(Qcow2Error::corrupt(
                    "L2 entry",
                    at,
                    "allocated subclusters without a host cluster",
                ));
            }
            return Ok(match (alloc, zero) {
                (u32::MAX, _) => Mapping::Data {
                    host,
                    copied: raw & COPIED != 0,
                },
                (0, u32::MAX) => Mapping::Zero {
                    host: (host != 0).then_some(host),
                },
                (0, 0) => Mapping::Unallocated,
                _ => Mapping::Sub { host, alloc, zero },
            });
        }
        if v3 && raw & ZERO != 0 {
            return Ok(Mapping::Zero {
                host: (host != 0).then_some(host),
            });
        }
        if host == 0 {
            return Ok(Mapping::Unallocated);
        }
        Ok(Mapping::Data {
            host,
            copied: raw & COPIED != 0,
        })
    }

    /// True when `self` continues `prev` for a contiguous run: same kind, and for data the
    /// next host cluster.
    pub fn continues(&self, prev: &Mapping, cluster_size: u64) -> bool {
        match (prev, self) {
            (Mapping::Unallocated, Mapping::Unallocated) => true,
            (Mapping::Zero { .. }, Mapping::Zero { .. }) => true,
            (Mapping::Data { host: a, .. }, Mapping::Data { host: b, .. }) => {
                a.checked_add(cluster_size) == Some(*b)
            }
            _ => false,
        }
    }
}

/// Decode an L1 entry into the L2 table offset (0: no table).
pub fn l1_offset(raw: u64, cluster_bits: u32, at: u64) -> Result<u64> {
    let off = raw & L1_OFFSET_MASK;
    if off & ((1u64 << cluster_bits) - 1) != 0 {
        return Err(Qcow2Error::corrupt(
            "L1 entry",
            at,
            format!("L2 table offset {off:#x} is not cluster aligned"),
        ));
    }
    Ok(off)
}

/// Decode a table of big-endian words.
pub fn words_from_bytes(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_be_bytes(w)
        })
        .collect()
}

/// Encode a table of big-endian words.
pub fn words_to_bytes(w: &[u64]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_compressed_descriptor() {
        // 64 KiB clusters: x = 54, 8 bits of extra sectors.
        let raw = COMPRESSED | (3u64 << 54) | 0x12_3456;
        let m = Mapping::decode(raw, 0, false, true, 16, 0).unwrap();
        assert_eq!(
            m,
            Mapping::Compressed {
                offset: 0x12_3456,
                end: 0x12_3400 + 4 * 512
            }
        );
    }

    #[test]
    fn decode_rejects_unaligned() {
        assert!(Mapping::decode(0x1200, 0, false, true, 16, 8).is_err());
    }

    #[test]
    fn decode_extended() {
        let m = Mapping::decode(0x10000, 0x0000_0000_ffff_ffff, true, true, 16, 0).unwrap();
        assert_eq!(
            m,
            Mapping::Data {
                host: 0x10000,
                copied: false
            }
        );
        let m = Mapping::decode(0, SUB_ALL_ZERO, true, true, 16, 0).unwrap();
        assert_eq!(m, Mapping::Zero { host: None });
        assert!(Mapping::decode(0x10000, 0x1_0000_0001, true, true, 16, 0).is_err());
    }
}
