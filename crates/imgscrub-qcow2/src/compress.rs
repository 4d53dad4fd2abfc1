//! Compressed clusters: raw deflate (window bits 12) and zstd, one cluster each.

use crate::error::{Qcow2Error, Result};
use crate::header::CompressionType;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// Decompress `input` into exactly `out.len()` bytes (one cluster). `at` is the host offset,
/// for messages. Bytes after the end of the compressed stream (sector padding, the start of
/// the next compressed cluster) are ignored.
pub fn decompress(kind: CompressionType, input: &[u8], out: &mut [u8], at: u64) -> Result<()> {
    let done = match kind {
        CompressionType::Zlib => {
            let mut d = Decompress::new(false);
            match d.decompress(input, out, FlushDecompress::Finish) {
                Ok(_) => d.total_out() as usize,
                Err(e) => {
                    return Err(Qcow2Error::corrupt(
                        "compressed cluster",
                        at,
                        format!("deflate data is invalid: {e}"),
                    ));
                }
            }
        }
        CompressionType::Zstd => zstd_stream(input, out, at)?,
    };
    if done != out.len() {
        return Err(Qcow2Error::corrupt(
            "compressed cluster",
            at,
            format!(
                "decompressed to {done} bytes instead of a {}-byte cluster",
                out.len()
            ),
        ));
    }
    Ok(())
}

fn zstd_stream(input: &[u8], out: &mut [u8], at: u64) -> Result<usize> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let bad = |e: std::io::Error| {
        Qcow2Error::corrupt(
            "compressed cluster",
            at,
            format!("zstd data is invalid: {e}"),
        )
    };
    let mut dec = Decoder::new().map_err(bad)?;
    let mut inb = InBuffer::around(input);
    let mut outb = OutBuffer::around(out);
    // Bounded: every round either makes progress on input or output, or stops.
    for _ in 0..input.len().saturating_add(64) {
        let (ip, op) = (inb.pos(), outb.pos());
        let hint = dec.run(&mut inb, &mut outb).map_err(bad)?;
        if outb.pos() == outb.capacity() || hint == 0 {
            break;
        }
        if inb.pos() == ip && outb.pos() == op {
            break;
        }
    }
    Ok(outb.pos())
}

/// Compress one cluster. Returns `None` when the result would not be smaller than the
/// cluster (store it uncompressed then). Deflate uses window bits 12 like QEMU.
pub fn compress(kind: CompressionType, data: &[u8]) -> Result<Option<Vec<u8>>> {
    let limit = data.len().saturating_sub(1);
    match kind {
        CompressionType::Zlib => {
            let mut c = Compress::new_with_window_bits(Compression::default(), false, 12);
            let mut out = Vec::with_capacity(data.len());
            match c.compress_vec(data, &mut out, FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) if out.len() <= limit => Ok(Some(out)),
                Ok(_) => Ok(None),
                Err(e) => Err(Qcow2Error::io(
                    "deflate",
                    std::io::Error::other(e.to_string()),
                )),
            }
        }
        CompressionType::Zstd => {
            let out =
                zstd::bulk::compress(data, 0).map_err(|e| Qcow2Error::io("zstd compress", e))?;
            Ok((out.len() <= limit).then_some(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_trailing_garbage() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            let mut c = compress(kind, &data).unwrap().unwrap();
            c.extend_from_slice(&[0xAA; 700]);
            let mut out = vec![0u8; data.len()];
            decompress(kind, &c, &mut out, 0).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut out = vec![0u8; 4096];
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            assert!(decompress(kind, &[0xff; 100], &mut out, 0).is_err());
        }
    }
}
