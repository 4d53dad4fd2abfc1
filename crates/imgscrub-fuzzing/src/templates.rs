//! Small real images embedded in the binary, and the overlay that applies fuzz input to
//! them, so that mutations land in deep structures random bytes would never reach.
//! Rebuild them with `templates/make-ext4-templates.sh`, `templates/make-fat-templates.sh` and
//! `templates/make-xfs-templates.sh`.

use flate2::read::GzDecoder;
use std::io::Read;
use std::sync::OnceLock;

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // The templates are ours (embedded at build time); a failure would show at once in the
    // corpus test. An empty template just makes every input a no-op.
    if GzDecoder::new(gz).read_to_end(&mut out).is_err() {
        out.clear();
    }
    out
}

/// zstd handles the long zero runs of the 32 MiB XFS images far better than gzip (32 KB
/// instead of 60 KB).
fn unzstd(zst: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(zst).unwrap_or_default()
}

macro_rules! template {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        template!($(#[$doc])* $name, $file, gunzip);
    };
    ($(#[$doc:meta])* $name:ident, $file:literal, $decode:ident) => {
        $(#[$doc])*
        pub fn $name() -> &'static [u8] {
            static IMG: OnceLock<Vec<u8>> = OnceLock::new();
            IMG.get_or_init(|| $decode(include_bytes!(concat!("../templates/", $file))))
        }
    };
}

template!(
    /// A clean 4 MiB ext4 image (1 KiB blocks, metadata_csum, journal, htree, extent tree…).
    ext4_clean,
    "ext4-clean.img.gz"
);
template!(
    /// The same image with committed transactions in its journal (needs_recovery).
    ext4_dirty,
    "ext4-dirty-journal.img.gz"
);
template!(
    /// A 1 MiB FAT12 volume with an ESP-like tree.
    fat12,
    "fat12.img.gz"
);
template!(
    /// A 4 MiB FAT16 volume with the same tree.
    fat16,
    "fat16.img.gz"
);

template!(
    /// A 32 MiB v5 XFS image (two AGs, 1 KiB blocks) with every directory, attribute and
    /// file form.
    xfs_v5,
    "xfs-v5.img.zst",
    unzstd
);
template!(
    /// The same tree on a v4 XFS filesystem.
    xfs_v4,
    "xfs-v4.img.zst",
    unzstd
);

/// Apply the fuzz input to a copy of `template`: records of 4 bytes, a little-endian 24-bit
/// offset (reduced to the first `low` bytes, where the metadata lives, when bit 0 of `mode`
/// is clear) and a byte XORed in there. At most 256 records.
pub fn overlay(template: &[u8], mode: u8, records: &[u8], low: usize) -> Vec<u8> {
    let mut img = template.to_vec();
    let len = img.len();
    if len == 0 {
        return img;
    }
    for rec in records.chunks_exact(4).take(256) {
        let off = usize::from(rec[0]) | usize::from(rec[1]) << 8 | usize::from(rec[2]) << 16;
        let off = if mode & 1 == 0 {
            off % low.min(len)
        } else {
            off % len
        };
        img[off] ^= rec[3];
    }
    img
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_decompress() {
        assert_eq!(super::ext4_clean().len(), 4 << 20);
        assert_eq!(super::ext4_dirty().len(), 4 << 20);
        assert_eq!(super::fat12().len(), 1 << 20);
        assert_eq!(super::fat16().len(), 4 << 20);
        assert_eq!(super::xfs_v5().len(), 32 << 20);
        assert_eq!(super::xfs_v4().len(), 32 << 20);
    }
}
