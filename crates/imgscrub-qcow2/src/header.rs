//! The qcow2 header (version 2 and 3) and its extensions.
//!
//! Layout (big-endian): see qemu `docs/interop/qcow2.rst`. The header is parsed from the first
//! cluster of the file; every field is validated before any table is read, so that a hostile
//! image cannot make us allocate absurd amounts of memory or read outside the file.

use crate::error::{Qcow2Error, Result};

/// `QFI\xfb`.
pub const MAGIC: u32 = 0x5146_49fb;
/// Size of a version 2 header.
pub const V2_HEADER_LEN: u32 = 72;
/// Size of the version 3 header we write (with the compression type byte and padding).
pub const V3_HEADER_LEN: u32 = 112;

/// Incompatible bit 0: refcounts may be stale.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
/// Incompatible bit 1: the image is corrupt.
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible bit 2: an external data file holds the guest data.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible bit 3: the compression type byte is meaningful.
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible bit 4: extended L2 entries (subclusters).
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
/// The incompatible bits this implementation understands.
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
/// Compatible bit 0: lazy refcounts.
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

/// Header extension: backing file format name.
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: feature name table.
pub const EXT_FEATURE_NAMES: u32 = 0x6803_f857;
/// Header extension: bitmaps.
pub const EXT_BITMAPS: u32 = 0x2385_2875;
/// Header extension: full disk encryption header pointer.
pub const EXT_CRYPTO: u32 = 0x0537_be77;
/// Header extension: external data file name.
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Largest L1 table we accept (QEMU's limit): 32 MiB.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table we accept: 32 MiB (QEMU's limit is 8 MiB; we allow growth room).
pub const MAX_REFTABLE_BYTES: u64 = 32 << 20;
/// Largest virtual size we accept: 2^61 bytes (2 EiB), so guest offset arithmetic never
/// overflows.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 61;
/// Host offsets are 56 bits wide in every table.
pub const MAX_HOST_OFFSET: u64 = (1 << 56) - 1;

/// Compression algorithm of compressed clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionType {
    /// Raw deflate, window bits 12 (type 0).
    Zlib,
    /// Zstandard, one frame per cluster (type 1).
    Zstd,
}

/// One entry of the feature name table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureName {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    pub kind: u8,
    /// Bit number.
    pub bit: u8,
    /// Name (NUL-trimmed).
    pub name: String,
}

/// The bitmaps header extension (persistent dirty bitmaps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitmapsExt {
    /// Number of bitmaps.
    pub nb_bitmaps: u32,
    /// Size of the bitmap directory in bytes.
    pub directory_size: u64,
    /// Host offset of the bitmap directory.
    pub directory_offset: u64,
}

/// A header extension we do not interpret (kept so that it can be preserved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownExtension {
    /// Extension type.
    pub kind: u32,
    /// Raw contents.
    pub data: Vec<u8>,
}

/// The parsed and validated header.
#[derive(Debug, Clone)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// Offset of the backing file name (0: none).
    pub backing_file_offset: u64,
    /// Length of the backing file name.
    pub backing_file_size: u32,
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// 0 none, 1 AES, 2 LUKS.
    pub crypt_method: u32,
    /// Number of L1 entries.
    pub l1_size: u32,
    /// Host offset of the L1 table.
    pub l1_table_offset: u64,
    /// Host offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters in the refcount table.
    pub refcount_table_clusters: u32,
    /// Number of internal snapshots.
    pub nb_snapshots: u32,
    /// Host offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (0 for v2).
    pub incompatible_features: u64,
    /// Compatible feature bits.
    pub compatible_features: u64,
    /// Autoclear feature bits.
    pub autoclear_features: u64,
    /// refcount_bits = 1 << refcount_order (4 for v2).
    pub refcount_order: u32,
    /// Length of the header proper (72 for v2).
    pub header_length: u32,
    /// Compression algorithm.
    pub compression_type: CompressionType,
    /// Backing file name, if any (raw bytes as stored).
    pub backing_file: Option<Vec<u8>>,
    /// Backing format from the header extension ("qcow2", "raw"…).
    pub backing_format: Option<String>,
    /// Feature name table.
    pub feature_names: Vec<FeatureName>,
    /// The bitmaps extension, if present.
    pub bitmaps: Option<BitmapsExt>,
    /// External data file name (extension 0x44415441), if any.
    pub data_file: Option<String>,
    /// Extensions we do not interpret, in file order.
    pub unknown_extensions: Vec<UnknownExtension>,
}

fn be32(b: &[u8], off: usize) -> Result<u32> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| Qcow2Error::corrupt("header", off as u64, "header is truncated"))
}

fn be64(b: &[u8], off: usize) -> Result<u64> {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Qcow2Error::corrupt("header", off as u64, "header is truncated"))
}

impl Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// True with extended L2 entries.
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }

    /// Bits per refcount.
    pub fn refcount_bits(&self) -> u32 {
        1 << self.refcount_order
    }

    /// Bytes per L2 entry (8, or 16 with extended L2).
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2() { 16 } else { 8 }
    }

    /// L2 entries per table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Name of an incompatible feature bit from the feature table.
    pub fn feature_name(&self, kind: u8, bit: u32) -> Option<&str> {
        self.feature_names
            .iter()
            .find(|f| f.kind == kind && u32::from(f.bit) == bit)
            .map(|f| f.name.as_str())
    }

    /// Parse the header from the start of the file. `first` holds at least the first
    /// `min(file_len, 2 MiB)` bytes; `file_len` is the host file size.
    ///
    /// This checks structure only; policy (encryption, dirty, unknown bits) is applied by
    /// [`Header::check_features`].
    pub fn parse(first: &[u8], file_len: u64) -> Result<Header> {
        if first.len() < V2_HEADER_LEN as usize {
            return Err(Qcow2Error::corrupt(
                "header",
                0,
                format!("file is {} bytes, shorter than a qcow2 header", first.len()),
            ));
        }
        let magic = be32(first, 0)?;
        if magic != MAGIC {
            return Err(Qcow2Error::corrupt(
                "header",
                0,
                format!("bad magic {magic:#010x} (not a qcow2 image)"),
            ));
        }
        let version = be32(first, 4)?;
        if version != 2 && version != 3 {
            return Err(Qcow2Error::Unsupported(format!("qcow2 version {version}")));
        }
        let cluster_bits = be32(first, 20)?;
        if !(9..=21).contains(&cluster_bits) {
            return Err(Qcow2Error::corrupt(
                "header",
                20,
                format!("cluster_bits {cluster_bits} is outside 9..=21"),
            ));
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(first, 8)?,
            backing_file_size: be32(first, 16)?,
            cluster_bits,
            size: be64(first, 24)?,
            crypt_method: be32(first, 32)?,
            l1_size: be32(first, 36)?,
            l1_table_offset: be64(first, 40)?,
            refcount_table_offset: be64(first, 48)?,
            refcount_table_clusters: be32(first, 56)?,
            nb_snapshots: be32(first, 60)?,
            snapshots_offset: be64(first, 64)?,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression_type: CompressionType::Zlib,
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
            bitmaps: None,
            data_file: None,
            unknown_extensions: Vec::new(),
        };
        if version == 3 {
            h.incompatible_features = be64(first, 72)?;
            h.compatible_features = be64(first, 80)?;
            h.autoclear_features = be64(first, 88)?;
            h.refcount_order = be32(first, 96)?;
            h.header_length = be32(first, 100)?;
            if h.header_length < 104 || h.header_length % 8 != 0 {
                return Err(Qcow2Error::corrupt(
                    "header",
                    100,
                    format!(
                        "header_length {} must be at least 104 and a multiple of 8",
                        h.header_length
                    ),
                ));
            }
            if u64::from(h.header_length) > cluster_size {
                return Err(Qcow2Error::corrupt(
                    "header",
                    100,
                    format!("header_length {} is larger than a cluster", h.header_length),
                ));
            }
            if h.refcount_order > 6 {
                return Err(Qcow2Error::corrupt(
                    "header",
                    96,
                    format!("refcount_order {} is larger than 6", h.refcount_order),
                ));
            }
            let ctype = if h.header_length >= 105 {
                first
                    .get(104)
                    .copied()
                    .ok_or_else(|| Qcow2Error::corrupt("header", 104, "header is truncated"))?
            } else {
                0
            };
            if h.incompatible_features & INCOMPAT_COMPRESSION != 0 {
                if h.header_length < 105 {
                    return Err(Qcow2Error::corrupt(
                        "header",
                        100,
                        "compression type bit set but the header has no compression type field",
                    ));
                }
                h.compression_type = match ctype {
                    0 => CompressionType::Zlib,
                    1 => CompressionType::Zstd,
                    n => {
                        return Err(Qcow2Error::Unsupported(format!("compression type {n}")));
                    }
                };
            } else if ctype != 0 {
                return Err(Qcow2Error::corrupt(
                    "header",
                    104,
                    format!("compression type {ctype} without incompatible bit 3"),
                ));
            }
        }
        if first.len() < h.header_length as usize {
            return Err(Qcow2Error::corrupt(
                "header",
                0,
                "file is shorter than its header_length",
            ));
        }
        h.validate(file_len)?;
        h.parse_extensions(first)?;
        h.parse_backing_name(first)?;
        Ok(h)
    }

    fn validate(&self, file_len: u64) -> Result<()> {
        let cs = self.cluster_size();
        if self.extended_l2() && self.cluster_bits < 14 {
            return Err(Qcow2Error::corrupt(
                "header",
                20,
                format!("extended L2 entries need clusters of at least 16 KiB, not {cs} bytes"),
            ));
        }
        if self.size > MAX_VIRTUAL_SIZE {
            return Err(Qcow2Error::corrupt(
                "header",
                24,
                format!("virtual size {} is absurd", self.size),
            ));
        }
        // L1 table: aligned, inside the file, large enough for the virtual size, bounded.
        let l2_span = cs * self.l2_entries();
        let needed = self.size.div_ceil(l2_span);
        if u64::from(self.l1_size) < needed {
            return Err(Qcow2Error::corrupt(
                "header",
                36,
                format!(
                    "l1_size {} is too small for a virtual size of {} bytes (needs {needed})",
                    self.l1_size, self.size
                ),
            ));
        }
        let l1_bytes = u64::from(self.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(Qcow2Error::corrupt(
                "header",
                36,
                format!("l1_size {} is absurd (more than 32 MiB)", self.l1_size),
            ));
        }
        if self.l1_size > 0 {
            check_table("L1 table", 40, self.l1_table_offset, l1_bytes, cs, file_len)?;
        }
        // Refcount table.
        if self.refcount_table_clusters == 0 {
            return Err(Qcow2Error::corrupt(
                "header",
                56,
                "the refcount table has no clusters",
            ));
        }
        let rt_bytes = u64::from(self.refcount_table_clusters) * cs;
        if rt_bytes > MAX_REFTABLE_BYTES {
            return Err(Qcow2Error::corrupt(
                "header",
                56,
                format!(
                    "refcount_table_clusters {} is absurd (more than 32 MiB)",
                    self.refcount_table_clusters
                ),
            ));
        }
        check_table(
            "refcount table",
            48,
            self.refcount_table_offset,
            rt_bytes,
            cs,
            file_len,
        )?;
        if self.nb_snapshots > 65536 {
            return Err(Qcow2Error::corrupt(
                "header",
                60,
                format!("{} snapshots is absurd", self.nb_snapshots),
            ));
        }
        if self.nb_snapshots > 0 && self.snapshots_offset % cs != 0 {
            return Err(Qcow2Error::corrupt(
                "header",
                64,
                format!(
                    "snapshot table offset {:#x} is not cluster aligned",
                    self.snapshots_offset
                ),
            ));
        }
        Ok(())
    }

    fn parse_extensions(&mut self, first: &[u8]) -> Result<()> {
        // Extensions follow the header and end within the first cluster.
        let limit = first.len().min(self.cluster_size() as usize);
        let mut off = self.header_length as usize;
        // Bounded: each step advances by at least 8 bytes within one cluster.
        loop {
            if off + 8 > limit {
                // A v2 header may be followed by the end of the file directly.
                return Ok(());
            }
            let kind = be32(first, off)?;
            let len = be32(first, off + 4)? as usize;
            if kind == 0 {
                return Ok(());
            }
            let start = off + 8;
            let data = start
                .checked_add(len)
                .filter(|&e| e <= limit)
                .and_then(|e| first.get(start..e))
                .ok_or_else(|| {
                    Qcow2Error::corrupt(
                        "header extension",
                        off as u64,
                        format!(
                            "extension {kind:#010x} of {len} bytes runs past the first cluster"
                        ),
                    )
                })?;
            match kind {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(
                        String::from_utf8_lossy(data)
                            .trim_end_matches('\0')
                            .to_owned(),
                    );
                }
                EXT_FEATURE_NAMES => {
                    for e in data.chunks_exact(48) {
                        let (kind, bit) = (e[0], e[1]);
                        let name = String::from_utf8_lossy(&e[2..])
                            .trim_end_matches('\0')
                            .to_owned();
                        self.feature_names.push(FeatureName { kind, bit, name });
                    }
                }
                EXT_BITMAPS => {
                    let field = |o: usize, n: usize| -> u64 {
                        data.get(o..o + n)
                            .map(|b| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
                            .unwrap_or(0)
                    };
                    self.bitmaps = Some(BitmapsExt {
                        nb_bitmaps: field(0, 4) as u32,
                        directory_size: field(8, 8),
                        directory_offset: field(16, 8),
                    });
                }
                EXT_DATA_FILE => {
                    self.data_file = Some(
                        String::from_utf8_lossy(data)
                            .trim_end_matches('\0')
                            .to_owned(),
                    );
                }
                _ => self.unknown_extensions.push(UnknownExtension {
                    kind,
                    data: data.to_vec(),
                }),
            }
            off = start + len.div_ceil(8) * 8;
        }
    }

    fn parse_backing_name(&mut self, first: &[u8]) -> Result<()> {
        if self.backing_file_offset == 0 {
            return Ok(());
        }
        if self.backing_file_size == 0 || self.backing_file_size > 1023 {
            return Err(Qcow2Error::corrupt(
                "header",
                16,
                format!(
                    "backing file name length {} is outside 1..=1023",
                    self.backing_file_size
                ),
            ));
        }
        let start = self.backing_file_offset;
        let end = start.saturating_add(u64::from(self.backing_file_size));
        if end > self.cluster_size() || end > first.len() as u64 {
            return Err(Qcow2Error::corrupt(
                "backing file name",
                start,
                "backing file name is not inside the first cluster of the file",
            ));
        }
        let name = first
            .get(start as usize..end as usize)
            .ok_or_else(|| Qcow2Error::corrupt("backing file name", start, "out of range"))?;
        self.backing_file = Some(name.to_vec());
        Ok(())
    }

    /// Apply the feature policy: refuse encryption, the corrupt bit, external data files and
    /// unknown incompatible bits always; refuse the dirty bit when `writable`, unless the
    /// image has lazy refcounts (then the refcounts are rebuilt at open).
    pub fn check_features(&self, writable: bool) -> Result<()> {
        if self.crypt_method != 0 {
            return Err(Qcow2Error::Encrypted(self.crypt_method));
        }
        let unknown = self.incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let bit = unknown.trailing_zeros();
            let name = self.feature_name(0, bit).unwrap_or("unnamed").to_owned();
            return Err(Qcow2Error::UnknownIncompatible { bit, name });
        }
        if self.incompatible_features & INCOMPAT_CORRUPT != 0 {
            return Err(Qcow2Error::MarkedCorrupt);
        }
        if self.incompatible_features & INCOMPAT_DATA_FILE != 0 || self.data_file.is_some() {
            let name = self
                .data_file
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            return Err(Qcow2Error::ExternalDataFile(name));
        }
        // A dirty image with lazy refcounts gets its refcounts rebuilt before writing.
        if writable
            && self.incompatible_features & INCOMPAT_DIRTY != 0
            && self.compatible_features & COMPAT_LAZY_REFCOUNTS == 0
        {
            return Err(Qcow2Error::Dirty);
        }
        Ok(())
    }

    /// Serialise a fresh version 3 header of [`V3_HEADER_LEN`] bytes (no extensions).
    pub fn to_v3_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(V3_HEADER_LEN as usize);
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        b.extend_from_slice(&self.backing_file_offset.to_be_bytes());
        b.extend_from_slice(&self.backing_file_size.to_be_bytes());
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.crypt_method.to_be_bytes());
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        b.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        b.extend_from_slice(&self.incompatible_features.to_be_bytes());
        b.extend_from_slice(&self.compatible_features.to_be_bytes());
        b.extend_from_slice(&self.autoclear_features.to_be_bytes());
        b.extend_from_slice(&self.refcount_order.to_be_bytes());
        b.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
        b.push(match self.compression_type {
            CompressionType::Zlib => 0,
            CompressionType::Zstd => 1,
        });
        b.resize(V3_HEADER_LEN as usize, 0);
        b
    }
}

/// Check that a table at `offset` of `bytes` bytes is cluster aligned and inside the file.
fn check_table(
    what: &'static str,
    field: u64,
    offset: u64,
    bytes: u64,
    cluster_size: u64,
    file_len: u64,
) -> Result<()> {
    if offset == 0 || offset % cluster_size != 0 {
        return Err(Qcow2Error::corrupt(
            "header",
            field,
            format!("{what} offset {offset:#x} is zero or not cluster aligned"),
        ));
    }
    match offset.checked_add(bytes) {
        Some(end) if end <= file_len && end <= MAX_HOST_OFFSET => Ok(()),
        _ => Err(Qcow2Error::corrupt(
            "header",
            field,
            format!(
                "{what} at {offset:#x} ({bytes} bytes) reaches past the end of the file ({file_len} bytes)"
            ),
        )),
    }
}

/// Field offsets for in-place header updates.
pub mod field {
    /// `incompatible_features` (v3).
    pub const INCOMPATIBLE: u64 = 72;
    /// `autoclear_features` (v3).
    pub const AUTOCLEAR: u64 = 88;
    /// `refcount_table_offset`.
    pub const REFCOUNT_TABLE_OFFSET: u64 = 48;
    /// `refcount_table_clusters`.
    pub const REFCOUNT_TABLE_CLUSTERS: u64 = 56;
}
