//! The walk: every entry below the starting directory, in byte order of its archive path,
//! written as it is met.
//!
//! Order: a directory's archive path ends with `/`, so sorting the children of each
//! directory by `name` (files) or `name/` (directories) and descending into a directory
//! right after its own entry yields the archive paths in plain byte order — the children of
//! `a/` all sort between `a/` and any sibling that sorts after it — without ever holding more
//! than one listing per level.

use crate::tar::{self, BLOCK, Header, Kind, Record};
use crate::{ExportError, ExportReport, Result};
use imgscrub_fs::filesystem::{FileType, Filesystem, FsError, Meta, NodeId};
use imgscrub_shrink::{Progress, ShrinkError};
use std::collections::{HashMap, HashSet};
use std::io::Write;

/// Bytes of a file read at a time.
pub const CHUNK: usize = 1 << 20;
/// Shortest run of zero bytes stored as a hole (aligned to [`HOLE_ALIGN`]).
pub const HOLE_MIN: u64 = 64 << 10;
/// Holes start and end at multiples of this (except at the end of the file).
const HOLE_ALIGN: u64 = 4096;
/// Files up to this size are read once (kept in memory between the hole scan and the write).
const INLINE_MAX: u64 = 4 << 20;
/// Most data segments of one sparse file: past that, the rest of the file is one segment
/// (the map must be held until the header is written).
const MAX_SEGMENTS: usize = 1 << 16;
/// Deepest directory nesting followed (a damaged image could loop).
const MAX_DEPTH: usize = 4096;
/// Tar archives end on a whole record of 20 blocks, as GNU tar writes them.
const RECORD: u64 = 20 * BLOCK as u64;

/// One child of a directory being walked.
struct Child {
    /// `name`, or `name/` for a directory: the sort key and the path suffix.
    key: Vec<u8>,
    meta: Meta,
}

/// A directory being walked: its archive path (`./`, `./etc/`) and the children not yet
/// written.
struct Frame {
    path: Vec<u8>,
    children: std::vec::IntoIter<Child>,
}

/// The sorted children of `dir`.
fn children(fs: &dyn Filesystem, dir: NodeId) -> Result<Vec<Child>> {
    let mut v = Vec::new();
    for e in fs.read_dir(dir)? {
        if e.name.is_empty() || e.name == b"." || e.name == b".." || e.name.contains(&b'/') {
            continue;
        }
        let meta = fs.stat(e.node)?;
        let mut key = e.name;
        if meta.file_type == FileType::Directory {
            key.push(b'/');
        }
        v.push(Child { key, meta });
    }
    v.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(v)
}

/// Visit every entry below `start` (the start itself first, as `./`) in archive order.
fn walk(
    fs: &dyn Filesystem,
    start: NodeId,
    progress: &dyn Progress,
    mut visit: impl FnMut(&[u8], &Meta) -> Result<()>,
) -> Result<()> {
    let root = fs.stat(start)?;
    if root.file_type != FileType::Directory {
        return Err(FsError::NotADirectory("the export starts at a directory".into()).into());
    }
    visit(b"./", &root)?;
    let mut seen: HashSet<NodeId> = HashSet::from([start]);
    let mut stack = vec![Frame {
        path: b"./".to_vec(),
        children: children(fs, start)?.into_iter(),
    }];
    while let Some(top) = stack.last_mut() {
        if progress.cancelled() {
            return Err(ShrinkError::Cancelled.into());
        }
        let Some(child) = top.children.next() else {
            stack.pop();
            continue;
        };
        let mut path = top.path.clone();
        path.extend_from_slice(&child.key);
        visit(&path, &child.meta)?;
        if child.meta.file_type == FileType::Directory {
            if !seen.insert(child.meta.node) || stack.len() >= MAX_DEPTH {
                return Err(ExportError::Entry {
                    path: show(&path),
                    reason: "directory met twice or nested too deep (a damaged filesystem)".into(),
                });
            }
            let list = children(fs, child.meta.node)?;
            stack.push(Frame {
                path,
                children: list.into_iter(),
            });
        }
    }
    Ok(())
}

fn show(path: &[u8]) -> String {
    let p = path.strip_prefix(b".").unwrap_or(path);
    let p = if p.len() > 1 {
        p.strip_suffix(b"/").unwrap_or(p)
    } else {
        p
    };
    String::from_utf8_lossy(p).into_owned()
}

/// Counts bytes on their way to the sink.
struct Out<W> {
    w: W,
    n: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(|source| ExportError::Io {
            what: format!("write the archive at byte {}", self.n),
            source,
        })?;
        self.n += b.len() as u64;
        Ok(())
    }
    fn zeros(&mut self, mut n: u64) -> Result<()> {
        const Z: [u8; 8192] = [0; 8192];
        while n > 0 {
            let k = n.min(Z.len() as u64) as usize;
            self.put(&Z[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

/// Write the tree below `start` (a directory) as a tar archive into `w`, and return `w`.
/// `progress` sees the phase "export" with the apparent size of every file (each inode once)
/// as its total.
pub fn write_tar<W: Write>(
    fs: &dyn Filesystem,
    start: NodeId,
    w: W,
    progress: &dyn Progress,
) -> Result<(ExportReport, W)> {
    // A first walk over the metadata only, for the progress total.
    let mut total = 0u64;
    let mut counted = HashSet::new();
    walk(fs, start, progress, |_, m| {
        if m.file_type == FileType::Regular && (m.nlink <= 1 || counted.insert(m.node)) {
            total += m.size;
        }
        Ok(())
    })?;
    drop(counted);
    progress.begin("export", total);

    let mut out = Out { w, n: 0 };
    let mut report = ExportReport::default();
    let mut links: HashMap<NodeId, Vec<u8>> = HashMap::new();
    let mut buf = vec![0u8; CHUNK];
    walk(fs, start, progress, |path, m| {
        entry(
            fs,
            path,
            m,
            &mut out,
            &mut report,
            &mut links,
            &mut buf,
            progress,
        )
    })?;
    // Two zero blocks end the archive; then fill the last 10 KiB record.
    out.zeros(2 * BLOCK as u64)?;
    let r = out.n % RECORD;
    if r != 0 {
        out.zeros(RECORD - r)?;
    }
    progress.end();
    report.tar_bytes = out.n;
    Ok((report, out.w))
}

/// The xattrs of `node` as pax records, sorted by name.
fn xattr_records(fs: &dyn Filesystem, node: NodeId) -> Result<Vec<Record>> {
    let mut x = match fs.list_xattrs(node) {
        Ok(x) => x,
        Err(FsError::Unsupported(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    x.sort();
    let mut records: Vec<Record> = Vec::new();
    // POSIX ACLs also as the text records bsdtar and `tar --acls` restore ACLs from.
    for (name, key) in [
        ("system.posix_acl_access", "SCHILY.acl.access"),
        ("system.posix_acl_default", "SCHILY.acl.default"),
    ] {
        if let Some(text) = x
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| acl_text(v))
        {
            records.push((key.as_bytes().to_vec(), text.into_bytes()));
        }
    }
    records.extend(
        x.into_iter()
            .map(|(name, value)| ([b"SCHILY.xattr.", name.as_bytes()].concat(), value)),
    );
    Ok(records)
}

/// A POSIX ACL in Linux's xattr format (version 2: `(tag u16, perm u16, id u32)` entries,
/// little-endian) as the short text form with numeric ids:
/// `user::rwx,user:1000:r-x,group::r-x,mask::r-x,other::r--`. `None` when it does not parse.
fn acl_text(v: &[u8]) -> Option<String> {
    let (head, body) = v.split_at_checked(4)?;
    if head != [2, 0, 0, 0] || body.is_empty() || body.len() % 8 != 0 {
        return None;
    }
    let mut parts = Vec::new();
    for e in body.chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let p = |bit: u16, c: char| if perm & bit != 0 { c } else { '-' };
        let rwx: String = [p(4, 'r'), p(2, 'w'), p(1, 'x')].iter().collect();
        parts.push(match tag {
            0x01 => format!("user::{rwx}"),
            0x02 => format!("user:{id}:{rwx}"),
            0x04 => format!("group::{rwx}"),
            0x08 => format!("group:{id}:{rwx}"),
            0x10 => format!("mask::{rwx}"),
            0x20 => format!("other::{rwx}"),
            _ => return None,
        });
    }
    Some(parts.join(","))
}

#[allow(clippy::too_many_arguments)]
fn entry<W: Write>(
    fs: &dyn Filesystem,
    path: &[u8],
    m: &Meta,
    out: &mut Out<W>,
    report: &mut ExportReport,
    links: &mut HashMap<NodeId, Vec<u8>>,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<()> {
    let mut h = Header {
        path: path.to_vec(),
        kind: Kind::File,
        mode: u32::from(m.perm & 0o7777),
        uid: m.uid,
        gid: m.gid,
        size: 0,
        mtime_secs: m.mtime.secs,
        mtime_nsecs: m.mtime.nsecs,
        link: Vec::new(),
        dev: (0, 0),
    };
    let entry_err = |reason: String| ExportError::Entry {
        path: show(path),
        reason,
    };
    match m.file_type {
        FileType::Socket => {
            report.sockets_skipped += 1;
            report.warnings.push(format!(
                "{}: a socket; tar cannot hold it, skipped",
                show(path)
            ));
            return Ok(());
        }
        FileType::Regular if m.nlink > 1 => {
            if let Some(first) = links.get(&m.node) {
                h.kind = Kind::HardLink;
                h.link = first.clone();
                out.put(&h.encode(Vec::new()).map_err(entry_err)?)?;
                report.entries += 1;
                report.hard_links += 1;
                return Ok(());
            }
            links.insert(m.node, path.to_vec());
        }
        _ => {}
    }
    let mut records = xattr_records(fs, m.node)?;
    report.xattrs += records
        .iter()
        .filter(|r| r.0.starts_with(b"SCHILY.xattr."))
        .count() as u64;
    report.entries += 1;
    match m.file_type {
        FileType::Directory => {
            h.kind = Kind::Directory;
            report.directories += 1;
        }
        FileType::Symlink => {
            h.kind = Kind::Symlink;
            h.link = fs.readlink(m.node)?;
            report.symlinks += 1;
        }
        FileType::CharDevice | FileType::BlockDevice => {
            h.kind = if m.file_type == FileType::CharDevice {
                Kind::CharDevice
            } else {
                Kind::BlockDevice
            };
            h.dev = m.rdev.unwrap_or((0, 0));
            report.devices += 1;
        }
        FileType::Fifo => {
            h.kind = Kind::Fifo;
            report.fifos += 1;
        }
        FileType::Socket => {}
        FileType::Regular => {
            return file(fs, h, records, m, out, report, buf, progress);
        }
    }
    let bytes = h.encode(std::mem::take(&mut records)).map_err(entry_err)?;
    out.put(&bytes)
}

/// Read `len` bytes of `node` at `off` into `buf` (exactly: a short file is an error).
fn read_exact(
    fs: &dyn Filesystem,
    node: NodeId,
    off: u64,
    buf: &mut [u8],
    path: &[u8],
    size: u64,
) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let n = fs.read(node, off + got as u64, &mut buf[got..])?;
        if n == 0 {
            return Err(ExportError::Entry {
                path: show(path),
                reason: format!(
                    "reads {} bytes but its size is {size} (a damaged inode)",
                    off + got as u64
                ),
            });
        }
        got += n;
    }
    Ok(())
}

/// The data segments of a file with holes: `(offset, length)` of the parts that are not
/// zero runs of at least [`HOLE_MIN`] bytes (aligned to [`HOLE_ALIGN`]). `None` when there is
/// no such run. `data` is the whole file when it was read into memory; otherwise it is read
/// in chunks into `buf`.
fn segments(
    fs: &dyn Filesystem,
    node: NodeId,
    size: u64,
    data: Option<&[u8]>,
    buf: &mut [u8],
    path: &[u8],
    progress: &dyn Progress,
) -> Result<Option<Vec<(u64, u64)>>> {
    let mut segs: Vec<(u64, u64)> = Vec::new();
    // Start of the data not yet put in a segment, and of the current zero run.
    let mut data_start = 0u64;
    let mut zero_start: Option<u64> = None;
    let mut holes = false;
    let mut close_zero = |segs: &mut Vec<(u64, u64)>, z: u64, end: u64, data_start: &mut u64| {
        if end - z >= HOLE_MIN && segs.len() < MAX_SEGMENTS {
            if z > *data_start {
                segs.push((*data_start, z - *data_start));
            }
            *data_start = end;
            holes = true;
        }
    };
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(buf.len() as u64) as usize;
        let chunk: &[u8] = match data {
            Some(d) => &d[off as usize..off as usize + n],
            None => {
                if progress.cancelled() {
                    return Err(ShrinkError::Cancelled.into());
                }
                read_exact(fs, node, off, &mut buf[..n], path, size)?;
                &buf[..n]
            }
        };
        // Blocks of HOLE_ALIGN bytes at file offsets off + i (CHUNK is a multiple of it).
        for (i, block) in chunk.chunks(HOLE_ALIGN as usize).enumerate() {
            let at = off + (i as u64) * HOLE_ALIGN;
            if block.iter().all(|&b| b == 0) {
                zero_start.get_or_insert(at);
            } else if let Some(z) = zero_start.take() {
                close_zero(&mut segs, z, at, &mut data_start);
            }
        }
        off += n as u64;
    }
    if let Some(z) = zero_start.take() {
        close_zero(&mut segs, z, size, &mut data_start);
    }
    if !holes {
        return Ok(None);
    }
    if data_start < size {
        segs.push((data_start, size - data_start));
    } else {
        // The file ends in a hole: the map's last entry is its end, with no data.
        segs.push((size, 0));
    }
    Ok(Some(segs))
}

#[allow(clippy::too_many_arguments)]
fn file<W: Write>(
    fs: &dyn Filesystem,
    mut h: Header,
    mut records: Vec<Record>,
    m: &Meta,
    out: &mut Out<W>,
    report: &mut ExportReport,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<()> {
    let path = h.path.clone();
    let size = m.size;
    report.files += 1;
    report.content_bytes += size;
    // Small files are read once, into memory; larger ones are scanned for holes first.
    let whole: Option<Vec<u8>> = if (HOLE_MIN..=INLINE_MAX).contains(&size) {
        let mut v = vec![0u8; size as usize];
        read_exact(fs, m.node, 0, &mut v, &path, size)?;
        Some(v)
    } else {
        None
    };
    let segs = if size >= HOLE_MIN {
        segments(fs, m.node, size, whole.as_deref(), buf, &path, progress)?
    } else {
        None
    };
    let Some(segs) = segs else {
        h.size = size;
        let entry_err = |reason: String| ExportError::Entry {
            path: show(&path),
            reason,
        };
        out.put(&h.encode(records).map_err(entry_err)?)?;
        copy(
            fs,
            m.node,
            0,
            size,
            whole.as_deref(),
            out,
            buf,
            &path,
            progress,
        )?;
        return out.zeros(tar::padding(size) as u64);
    };

    // GNU sparse 1.0: the real name and size in pax records, the map at the start of the
    // data, then the data segments one after the other.
    let mut map = format!("{}\n", segs.len()).into_bytes();
    for (o, l) in &segs {
        map.extend_from_slice(format!("{o}\n{l}\n").as_bytes());
    }
    tar::pad(&mut map);
    let data: u64 = segs.iter().map(|s| s.1).sum();
    report.sparse_files += 1;
    report.hole_bytes += size - data;
    let mut sparse: Vec<Record> = vec![
        (b"GNU.sparse.major".to_vec(), b"1".to_vec()),
        (b"GNU.sparse.minor".to_vec(), b"0".to_vec()),
        (b"GNU.sparse.name".to_vec(), path.clone()),
        (
            b"GNU.sparse.realsize".to_vec(),
            size.to_string().into_bytes(),
        ),
    ];
    sparse.append(&mut records);
    h.path = sparse_name(&path);
    h.size = map.len() as u64 + data;
    let entry_err = |reason: String| ExportError::Entry {
        path: show(&path),
        reason,
    };
    out.put(&h.encode(sparse).map_err(entry_err)?)?;
    out.put(&map)?;
    let mut done = 0u64;
    for (o, l) in &segs {
        progress.advance(o - done);
        copy(
            fs,
            m.node,
            *o,
            *l,
            whole.as_deref(),
            out,
            buf,
            &path,
            progress,
        )?;
        done = o + l;
    }
    progress.advance(size - done);
    out.zeros(tar::padding(h.size) as u64)
}

/// The ustar name of a GNU sparse 1.0 entry: `DIR/GNUSparseFile.0/NAME` (a reader that
/// knows the format uses GNU.sparse.name instead).
fn sparse_name(path: &[u8]) -> Vec<u8> {
    let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b"."[..], path),
    };
    [dir, b"/GNUSparseFile.0/", base].concat()
}

/// Write `len` bytes of `node` from `off`.
#[allow(clippy::too_many_arguments)]
fn copy<W: Write>(
    fs: &dyn Filesystem,
    node: NodeId,
    off: u64,
    len: u64,
    whole: Option<&[u8]>,
    out: &mut Out<W>,
    buf: &mut [u8],
    path: &[u8],
    progress: &dyn Progress,
) -> Result<()> {
    if let Some(d) = whole {
        out.put(&d[off as usize..(off + len) as usize])?;
        progress.advance(len);
        return Ok(());
    }
    let size = off + len;
    let mut at = off;
    while at < size {
        if progress.cancelled() {
            return Err(ShrinkError::Cancelled.into());
        }
        let n = (size - at).min(buf.len() as u64) as usize;
        read_exact(fs, node, at, &mut buf[..n], path, size)?;
        out.put(&buf[..n])?;
        progress.advance(n as u64);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_xattrs_as_text() {
        // setfacl -m u:1234:rx,g:99:r on a 0755 directory, as the kernel stores it.
        let mut v = vec![2, 0, 0, 0];
        for (tag, perm, id) in [
            (1u16, 7u16, u32::MAX),
            (2, 5, 1234),
            (4, 5, u32::MAX),
            (8, 4, 99),
            (0x10, 5, u32::MAX),
            (0x20, 5, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&v).unwrap(),
            "user::rwx,user:1234:r-x,group::r-x,group:99:r--,mask::r-x,other::r-x"
        );
        assert_eq!(acl_text(&v[..7]), None);
        assert_eq!(acl_text(&[1, 0, 0, 0]), None);
    }
}
