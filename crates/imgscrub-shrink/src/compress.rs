//! Per-cluster compression the way qemu's qcow2 driver does it (`block/qcow2-threads.c`):
//! zlib is a raw deflate stream (no zlib header) with a 4 KiB window (window bits 12), because
//! qemu inflates with window bits −12 and would reject longer distances; zstd is one frame per
//! cluster. The output buffer is one byte smaller than the cluster: data that does not
//! compress below that is stored uncompressed.

use crate::error::{Result, ShrinkError};
use flate2::{Compress, FlushCompress, Status};

/// The compression of qcow2 data clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Store clusters uncompressed.
    None,
    /// Raw deflate with a 4 KiB window: qcow2 `compression_type` 0, readable by every qemu.
    Zlib,
    /// One zstd frame per cluster: qcow2 `compression_type` 1 (qemu 5.1 and later).
    #[default]
    Zstd,
    /// Deflate in zlib framing (RFC 1950, 32 KiB window), every cluster stored compressed
    /// whatever its size: the grains of a streamOptimized VMDK.
    Deflate,
}

impl Compression {
    /// The level used when none is given: zstd 3 (`ZSTD_CLEVEL_DEFAULT`, qemu's); zlib and
    /// VMDK deflate 9, because zlib-rs at qemu's level 6 packs 0.2–0.7 % worse than C zlib,
    /// and level 9 is the one whose output is no larger than `qemu-img convert -c` or
    /// qemu-img's streamOptimized VMDK (docs/decisions.md, docs/benchmarks.md).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Zlib => 9,
            Compression::Zstd => 3,
            Compression::Deflate => 9,
        }
    }

    /// Check a level: zlib 0..=9, zstd 1..=22 (negative "fast" levels −7..=−1 too).
    pub fn check_level(self, level: i32) -> Result<()> {
        let ok = match self {
            Compression::None => true,
            Compression::Zlib | Compression::Deflate => (0..=9).contains(&level),
            Compression::Zstd => (-7..=22).contains(&level) && level != 0,
        };
        if ok {
            Ok(())
        } else {
            Err(ShrinkError::InvalidOption(format!(
                "compression level {level} is out of range for {self:?}"
            )))
        }
    }
}

/// Window bits qemu uses for deflate (and inflate): a 4 KiB window.
pub const ZLIB_WINDOW_BITS: u8 = 12;

fn new_deflate(level: i32) -> Compress {
    Compress::new_with_window_bits(
        flate2::Compression::new(level.unsigned_abs()),
        false,
        ZLIB_WINDOW_BITS,
    )
}

/// A reusable compressor for one thread.
pub struct ClusterCompressor {
    kind: Compression,
    zlib: Option<Compress>,
    level: i32,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    out: Vec<u8>,
}

impl std::fmt::Debug for ClusterCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCompressor")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ClusterCompressor {
    /// A compressor for `kind` at `level` (see [`Compression::check_level`]).
    pub fn new(kind: Compression, level: i32) -> Result<Self> {
        kind.check_level(level)?;
        let mut c = ClusterCompressor {
            kind,
            zlib: None,
            level,
            zstd: None,
            out: Vec::new(),
        };
        match kind {
            Compression::None => {}
            Compression::Zlib => {
                c.zlib = Some(new_deflate(level));
            }
            Compression::Deflate => {
                c.zlib = Some(Compress::new(
                    flate2::Compression::new(level.unsigned_abs()),
                    true,
                ));
            }
            Compression::Zstd => {
                c.zstd = Some(zstd::bulk::Compressor::new(level).map_err(|e| {
                    ShrinkError::Compress {
                        codec: "zstd",
                        detail: e.to_string(),
                    }
                })?);
            }
        }
        Ok(c)
    }

    /// Compress one cluster. Returns the compressed bytes when they are at most
    /// `input.len() − 1` bytes long (qemu's rule), `None` when the cluster should be stored
    /// uncompressed (or compression is off).
    pub fn compress(&mut self, input: &[u8]) -> Result<Option<&[u8]>> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let r = self.compress_append(input, &mut out);
        self.out = out;
        Ok(r?.then_some(self.out.as_slice()))
    }

    /// Compress one cluster onto the end of `out` (no intermediate copy). Returns true when
    /// the compressed bytes, at most `input.len() − 1` long (qemu's rule), were appended;
    /// false, with `out` as it was, when the cluster should be stored uncompressed.
    ///
    /// [`Compression::Deflate`] always appends (every VMDK grain is stored compressed, even
    /// one that grows).
    pub fn compress_append(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        if self.kind == Compression::Deflate {
            return self.deflate_append(input, out).map(|()| true);
        }
        let max = input.len().saturating_sub(1);
        if max == 0 {
            return Ok(false);
        }
        let at = out.len();
        out.reserve(max);
        let fits = match self.kind {
            Compression::None | Compression::Deflate => false,
            Compression::Zlib => {
                let Some(z) = self.zlib.as_mut() else {
                    return Ok(false);
                };
                z.reset();
                match z.compress_vec(input, out, FlushCompress::Finish) {
                    Ok(Status::StreamEnd) => true,
                    // Output full before the end of the stream: does not compress. zlib-rs
                    // 0.6 panics in the next stream after `reset()` of a stream that ran out
                    // of output space (pending-buffer assertion), so start afresh instead.
                    Ok(Status::Ok) | Ok(Status::BufError) => {
                        *z = new_deflate(self.level);
                        false
                    }
                    Err(e) => {
                        out.truncate(at);
                        return Err(ShrinkError::Compress {
                            codec: "zlib",
                            detail: e.to_string(),
                        });
                    }
                }
            }
            Compression::Zstd => {
                let Some(z) = self.zstd.as_mut() else {
                    return Ok(false);
                };
                let mut cursor = std::io::Cursor::new(&mut *out);
                cursor.set_position(at as u64);
                // An error is "destination buffer is too small": does not compress.
                z.compress_to_buffer(input, &mut cursor).is_ok()
            }
        };
        if fits && out.len() - at <= max {
            Ok(true)
        } else {
            out.truncate(at);
            Ok(false)
        }
    }
}

impl ClusterCompressor {
    /// One complete zlib stream of `input` onto the end of `out`.
    fn deflate_append(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let Some(z) = self.zlib.as_mut() else {
            return Err(ShrinkError::Compress {
                codec: "deflate",
                detail: "no compressor".into(),
            });
        };
        z.reset();
        let at = out.len();
        // More than deflateBound: the stream always ends in one call.
        out.reserve(input.len() + input.len() / 8 + 128);
        match z.compress_vec(input, out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => Ok(()),
            other => {
                out.truncate(at);
                *z = Compress::new(flate2::Compression::new(self.level.unsigned_abs()), true);
                Err(ShrinkError::Compress {
                    codec: "deflate",
                    detail: format!("the stream did not end: {other:?}"),
                })
            }
        }
    }
}

/// True when every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    let chunks = buf.chunks_exact(16);
    let rem = chunks.remainder();
    rem.iter().all(|&b| b == 0)
        && chunks
            .map(|c| <[u8; 16]>::try_from(c).map_or(1, u128::from_ne_bytes))
            .all(|v| v == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i / 7 % 251) as u8).collect()
    }

    #[test]
    fn zlib_is_raw_deflate_with_a_4k_window() {
        let data = sample(65536);
        let mut c = ClusterCompressor::new(Compression::Zlib, 6).unwrap();
        let out = c.compress(&data).unwrap().unwrap().to_vec();
        assert!(out.len() < 65535);
        // qemu's inflate: raw, window bits 12.
        let mut d = Decompress::new_with_window_bits(false, 12);
        let mut back = vec![0u8; 65536];
        let st = d
            .decompress(&out, &mut back, FlushDecompress::Finish)
            .unwrap();
        assert_eq!(st, Status::StreamEnd);
        assert_eq!(back, data);
        // Reuse after reset gives the same bytes (determinism).
        let again = c.compress(&data).unwrap().unwrap().to_vec();
        assert_eq!(out, again);
    }

    #[test]
    fn zlib_reuse_after_an_incompressible_cluster() {
        // Alternate incompressible and compressible 4 KiB clusters through one compressor.
        let mut c = ClusterCompressor::new(Compression::Zlib, 6).unwrap();
        for i in 0..64 {
            let data: Vec<u8> = if i % 2 == 0 {
                imgscrub_testkit::random_bytes(4096, 7 + i)
            } else {
                sample(4096)
            };
            let r = c.compress(&data).unwrap().map(<[u8]>::to_vec);
            assert_eq!(r.is_some(), i % 2 == 1);
        }
    }

    #[test]
    fn zstd_one_frame() {
        let data = sample(65536);
        let mut c = ClusterCompressor::new(Compression::Zstd, 3).unwrap();
        let out = c.compress(&data).unwrap().unwrap().to_vec();
        let back = zstd::bulk::decompress(&out, 65536).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn incompressible_is_stored() {
        let data = imgscrub_testkit::random_bytes(65536, 1);
        for k in [Compression::Zlib, Compression::Zstd] {
            let mut c = ClusterCompressor::new(k, k.default_level()).unwrap();
            assert!(c.compress(&data).unwrap().is_none(), "{k:?}");
        }
        let mut c = ClusterCompressor::new(Compression::None, 0).unwrap();
        assert!(c.compress(&sample(4096)).unwrap().is_none());
    }

    #[test]
    fn compress_append_appends_or_leaves_the_buffer_alone() {
        let noise = imgscrub_testkit::random_bytes(65536, 3);
        let text = sample(65536);
        for k in [Compression::Zlib, Compression::Zstd] {
            let mut c = ClusterCompressor::new(k, k.default_level()).unwrap();
            let alone = c.compress(&text).unwrap().unwrap().to_vec();
            let mut out = b"prefix".to_vec();
            assert!(c.compress_append(&text, &mut out).unwrap());
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(&out[6..], alone.as_slice(), "{k:?}");
            // With lots of spare capacity, incompressible data is still refused.
            let mut big = Vec::with_capacity(1 << 20);
            big.extend_from_slice(b"xy");
            assert!(!c.compress_append(&noise, &mut big).unwrap(), "{k:?}");
            assert_eq!(big, b"xy");
            // And the compressor is still good afterwards.
            assert!(c.compress_append(&text, &mut big).unwrap());
            assert_eq!(&big[2..], alone.as_slice(), "{k:?}");
        }
    }

    #[test]
    fn levels_checked_and_zero_detection() {
        assert!(ClusterCompressor::new(Compression::Zlib, 10).is_err());
        assert!(ClusterCompressor::new(Compression::Zstd, 23).is_err());
        assert!(is_zero(&[0u8; 4099]));
        let mut v = vec![0u8; 4099];
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[1] = 1;
        assert!(!is_zero(&v));
        assert!(is_zero(&[]));
    }
}
