//! Creating a new, empty version 3 image.

use crate::error::{Qcow2Error, Result};
use crate::header::{
    COMPAT_LAZY_REFCOUNTS, CompressionType, Header, INCOMPAT_COMPRESSION, INCOMPAT_EXTL2,
    MAX_L1_BYTES, MAX_VIRTUAL_SIZE,
};
use crate::image::{OpenOptions, Qcow2, lock};
use crate::storage::{FileStorage, Storage};
use std::path::Path;

/// Options of [`Qcow2::create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// log2 of the cluster size, 9..=21 (default 16: 64 KiB).
    pub cluster_bits: u32,
    /// Compression type recorded in the header (used by compressed writes).
    pub compression: CompressionType,
    /// log2 of the refcount width, 0..=6 (default 4: 16 bits).
    pub refcount_order: u32,
    /// Extended L2 entries (needs clusters of at least 16 KiB).
    pub extended_l2: bool,
    /// Set the lazy refcounts compatible bit (refcounts are still always kept exact).
    pub lazy_refcounts: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            cluster_bits: 16,
            compression: CompressionType::Zlib,
            refcount_order: 4,
            extended_l2: false,
            lazy_refcounts: false,
        }
    }
}

impl Qcow2 {
    /// Create (or truncate) `path` as an empty qcow2 v3 image of `virtual_size` bytes
    /// (rounded up to a multiple of 512, as `qemu-img create` does) and open it read-write.
    pub fn create(
        path: impl AsRef<Path>,
        virtual_size: u64,
        options: &CreateOptions,
    ) -> Result<Qcow2> {
        let storage = FileStorage::create(path)?;
        Self::create_in(Box::new(storage), virtual_size, options)
    }

    /// Create an empty qcow2 v3 image in `storage` (which must be empty or is overwritten).
    ///
    /// Layout: header in cluster 0, refcount table in cluster 1, L1 table after it; the
    /// refcount blocks are then allocated by the normal allocator, which makes them
    /// self-covering.
    pub fn create_in(
        storage: Box<dyn Storage>,
        virtual_size: u64,
        options: &CreateOptions,
    ) -> Result<Qcow2> {
        let bits = options.cluster_bits;
        if !(9..=21).contains(&bits) {
            return Err(Qcow2Error::Unsupported(format!(
                "cluster_bits {bits} (must be 9..=21)"
            )));
        }
        if options.refcount_order > 6 {
            return Err(Qcow2Error::Unsupported(format!(
                "refcount_order {} (must be 0..=6)",
                options.refcount_order
            )));
        }
        if options.extended_l2 && bits < 14 {
            return Err(Qcow2Error::Unsupported(
                "extended L2 entries need clusters of at least 16 KiB".to_owned(),
            ));
        }
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(Qcow2Error::Unsupported(format!(
                "virtual size {virtual_size} is too large"
            )));
        }
        let virtual_size = virtual_size.div_ceil(512) * 512;
        let cs = 1u64 << bits;
        let esz = if options.extended_l2 { 16 } else { 8 };
        let l1_size = virtual_size.div_ceil(cs * (cs / esz));
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(Qcow2Error::Unsupported(format!(
                "virtual size {virtual_size} needs an L1 table larger than 32 MiB with {cs}-byte clusters"
            )));
        }
        let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
        let mut incompat = 0;
        if options.compression == CompressionType::Zstd {
            incompat |= INCOMPAT_COMPRESSION;
        }
        if options.extended_l2 {
            incompat |= INCOMPAT_EXTL2;
        }
        let hdr = Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: bits,
            size: virtual_size,
            crypt_method: 0,
            l1_size: l1_size as u32,
            l1_table_offset: 2 * cs,
            refcount_table_offset: cs,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: incompat,
            compatible_features: if options.lazy_refcounts {
                COMPAT_LAZY_REFCOUNTS
            } else {
                0
            },
            autoclear_features: 0,
            refcount_order: options.refcount_order,
            header_length: crate::header::V3_HEADER_LEN,
            compression_type: options.compression,
            backing_file: None,
            backing_format: None,
            feature_names: Vec::new(),
            bitmaps: None,
            data_file: None,
            unknown_extensions: Vec::new(),
        };
        // Header + end-of-extensions marker (8 zero bytes), then zeroed tables.
        let mut first = hdr.to_v3_bytes();
        first.resize(first.len() + 8, 0);
        let end = (2 + l1_clusters) * cs;
        // Zero everything up to the end of the L1 table (the file may have held data).
        let zeros = vec![0u8; cs as usize];
        for c in 0..2 + l1_clusters {
            storage.write_at(&zeros, c * cs)?;
        }
        storage.write_at(&first, 0)?;
        let opts = OpenOptions::read_write();
        let img = Qcow2::from_storage(storage, &opts)?;
        {
            let mut m = lock(&img.meta);
            m.end = end;
            for c in 0..2 + l1_clusters {
                img.update_refcount(&mut m, c * cs, 1, 0)?;
            }
        }
        img.storage.sync()?;
        Ok(img)
    }
}
