//! Where the archive goes: the output file, through gzip or zstd or as it is.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::str::FromStr;

/// Compression of the whole archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    /// A plain `.tar`.
    #[default]
    None,
    /// `.tar.gz`: gzip (every tool reads it).
    Gzip,
    /// `.tar.zst`: zstd, on several cores.
    Zstd,
}

impl Compress {
    /// The compression a file name asks for by its suffix: `.tar` (none), `.tar.gz`/`.tgz`
    /// (gzip), `.tar.zst`/`.tar.zstd`/`.tzst` (zstd); `None` for any other name.
    pub fn from_name(path: &Path) -> Option<Compress> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".tar") {
            Some(Compress::None)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Compress::Gzip)
        } else if name.ends_with(".tar.zst")
            || name.ends_with(".tar.zstd")
            || name.ends_with(".tzst")
        {
            Some(Compress::Zstd)
        } else {
            None
        }
    }

    /// `none`, `gzip` or `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compress::None => "none",
            Compress::Gzip => "gzip",
            Compress::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Compress::None),
            "gzip" | "gz" => Ok(Compress::Gzip),
            "zstd" | "zst" => Ok(Compress::Zstd),
            _ => Err(format!(
                "unknown compression `{s}` (expected none, gzip or zstd)"
            )),
        }
    }
}

/// zstd worker threads: as many as there are cores, at most 8. zstd's multithreaded
/// output depends on its parameters, not on the number of workers, so every machine writes
/// the same bytes.
fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get().min(8) as u32)
        .unwrap_or(1)
        .max(1)
}

/// The archive's byte stream into the output file.
pub(crate) enum Sink<W: Write> {
    Plain(BufWriter<W>),
    Gzip(flate2::write::GzEncoder<BufWriter<W>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<W>>),
}

const BUF: usize = 1 << 20;

impl<W: Write> Sink<W> {
    pub(crate) fn new(file: W, c: Compress, level: Option<i32>) -> io::Result<Self> {
        let w = BufWriter::with_capacity(BUF, file);
        Ok(match c {
            Compress::None => Sink::Plain(w),
            Compress::Gzip => {
                let level = level.unwrap_or(6).clamp(0, 9) as u32;
                // No name, mtime 0: the gzip header is the same on every run.
                Sink::Gzip(
                    flate2::GzBuilder::new()
                        .mtime(0)
                        .write(w, flate2::Compression::new(level)),
                )
            }
            Compress::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(w, level.unwrap_or(3))?;
                e.include_checksum(true)?;
                e.multithread(zstd_workers())?;
                Sink::Zstd(e)
            }
        })
    }

    /// End the compressed stream and flush everything into the file.
    pub(crate) fn finish(self) -> io::Result<()> {
        let mut w = match self {
            Sink::Plain(w) => w,
            Sink::Gzip(e) => e.finish()?,
            Sink::Zstd(e) => e.finish()?,
        };
        w.flush()
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(buf),
            Sink::Gzip(w) => w.write_all(buf),
            Sink::Zstd(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

/// Bytes handed to the compressor thread at a time.
const HANDOFF: usize = 1 << 20;
/// Chunks in flight between the walk and the compressor (bounds the memory).
const IN_FLIGHT: usize = 4;

/// The walk's end of the pipe to the compressor thread.
struct ChanWriter {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChanWriter {
    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(HANDOFF));
        match &self.tx {
            Some(tx) => tx
                .send(full)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the compressor stopped")),
            None => Ok(()),
        }
    }
    /// Send what is left and close the pipe.
    fn close(&mut self) -> io::Result<()> {
        let r = if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        };
        self.tx = None;
        r
    }
}

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(HANDOFF - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() >= HANDOFF {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Run `body` with a writer whose bytes reach `w` through the compressor `c`. A compressed
/// archive is compressed on a thread of its own (fed through a bounded channel), so that
/// reading the guest tree and compressing overlap, as `tar | zstd` would.
pub(crate) fn pipe<W: Write + Send, R>(
    w: W,
    c: Compress,
    level: Option<i32>,
    body: impl FnOnce(&mut dyn Write) -> crate::Result<R>,
) -> crate::Result<R> {
    let io_err = |what: &str, source| crate::ExportError::Io {
        what: format!("{what} ({c})"),
        source,
    };
    if c == Compress::None {
        let mut s = Sink::new(w, c, level).map_err(|e| io_err("start the archive", e))?;
        let r = body(&mut s)?;
        s.finish().map_err(|e| io_err("finish the archive", e))?;
        return Ok(r);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let compressor = scope.spawn(move || -> io::Result<()> {
            let mut s = Sink::new(w, c, level)?;
            for chunk in rx {
                s.write_all(&chunk)?;
            }
            s.finish()
        });
        let mut cw = ChanWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(HANDOFF),
        };
        let r = body(&mut cw);
        let closed = cw.close();
        drop(cw);
        let done = compressor
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the compressor thread panicked")));
        // The compressor's own error explains a broken pipe on the walk's side.
        if let Err(e) = done
            && (r.is_ok() || closed.is_err() || matches!(&r, Err(crate::ExportError::Io { .. })))
        {
            return Err(io_err("compress the archive", e));
        }
        let r = r?;
        closed.map_err(|e| io_err("compress the archive", e))?;
        Ok(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_choose_the_compression() {
        for (n, c) in [
            ("a.tar", Some(Compress::None)),
            ("A.TAR.GZ", Some(Compress::Gzip)),
            ("a.tgz", Some(Compress::Gzip)),
            ("dir/a.tar.zst", Some(Compress::Zstd)),
            ("a.tzst", Some(Compress::Zstd)),
            ("a.zst", None),
            ("a.img", None),
        ] {
            assert_eq!(Compress::from_name(Path::new(n)), c, "{n}");
        }
    }

    /// zstd with 1 and with 2 workers gives the same bytes (what `zstd_workers` relies on).
    #[test]
    fn zstd_output_does_not_depend_on_the_worker_count() {
        let data: Vec<u8> = (0..6u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x0f)
            .collect();
        let mut outs = Vec::new();
        for workers in [1, 2, 4] {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            e.include_checksum(true).unwrap();
            e.multithread(workers).unwrap();
            e.write_all(&data).unwrap();
            outs.push(e.finish().unwrap());
        }
        assert_eq!(outs[0], outs[1]);
        assert_eq!(outs[0], outs[2]);
    }
}
