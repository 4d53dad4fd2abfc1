//! XFS targets: arbitrary bytes as a whole filesystem, byte flips on two real templates (v5 and
//! v4), and one metadata structure of the v5 template replaced by the input.
//!
//! Every target walks the filesystem read-only, then opens it for writing (which checks more:
//! every AG's btrees, the refcount and reverse-mapping btrees) and walks again when that
//! works; nothing may panic, and opening may never write to the device. (Edits and flush are
//! covered by the property tests against xfs_repair, not fuzzed here.)
//!
//! v5 metadata carries CRCs: a flipped byte in a v5 block only exercises the checksum check.
//! The v5 targets therefore *reseal* what they change (recompute the CRC of every structure a
//! flip touched, found in a map of the template's CRC-protected structures), so that the
//! damage reaches the parsers behind the checksums — unless the input asks to keep the CRCs
//! as flipped.

use crate::patchdev::PatchDev;
use crate::templates::{xfs_v4, xfs_v5};
use imgscrub_disk::BlockDev;
use imgscrub_xfs::bmap::Extent;
use imgscrub_xfs::btree::InodeChunk;
use imgscrub_xfs::inode::Inode;
use imgscrub_xfs::reader::Reader;
use imgscrub_xfs::{FileType, OpenOptions, Superblock, XfsFs, attr, csum};
use std::collections::HashMap;
use std::sync::OnceLock;

/// How far a walk goes: every input costs bounded time.
pub(crate) struct Limits {
    /// Entries looked at in all.
    entries: usize,
    /// Entries looked at per directory (the rest are listed, not visited), so that one big
    /// directory does not use up the budget.
    per_dir: usize,
    /// Names looked up per directory (a lookup reads the whole directory).
    lookups_per_dir: usize,
    /// Bytes read per file.
    file_bytes: u64,
}

const WALK: Limits = Limits {
    entries: 400,
    per_dir: 16,
    lookups_per_dir: 2,
    file_bytes: 256 << 10,
};

/// Read a file in 64 KiB calls up to `max` bytes, then a short read at its last byte and reads
/// at and past its end. `read` must never return more than asked nor more than the file
/// holds, and must make progress before the end.
fn read_file<D: BlockDev>(fs: &XfsFs<D>, ino: u64, size: u64, max: u64) {
    let mut buf = vec![0u8; 64 << 10];
    let mut off = 0u64;
    while off < size.min(max) {
        match fs.read(ino, off, &mut buf) {
            Ok(n) => {
                assert!(
                    n <= buf.len(),
                    "read returned {n} bytes for a {} buffer",
                    buf.len()
                );
                assert!(
                    n as u64 <= size - off,
                    "read returned {n} bytes at {off} of a {size}-byte file"
                );
                assert!(
                    n > 0,
                    "read returned 0 bytes at {off} of a {size}-byte file"
                );
                off += n as u64;
            }
            Err(_) => return,
        }
    }
    let mut small = [0u8; 3];
    if size > 0
        && let Ok(n) = fs.read(ino, size - 1, &mut small)
    {
        assert_eq!(n, 1, "read of the last byte of a {size}-byte file");
    }
    for at in [size, u64::MAX] {
        if let Ok(n) = fs.read(ino, at, &mut small) {
            assert_eq!(n, 0, "read at {at}, past the end of a {size}-byte file");
        }
    }
}

/// Everything a prepare reads, within `lim`: directories (every form), lookups, stats, file
/// contents, symlinks, extended attributes, block maps; then the free-space map, inode chunks
/// and AG summaries, with the invariants callers rely on. The inodes visited are pushed to
/// `visited` when given.
pub(crate) fn walk<D: BlockDev>(fs: &XfsFs<D>, lim: &Limits, mut visited: Option<&mut Vec<u64>>) {
    let sb = fs.superblock().clone();
    let _ = (sb.feature_names(), sb.label(), fs.log_state());
    let root = fs.root();
    if let Ok(Some(dot)) = fs.lookup(root, b".") {
        assert_eq!(dot, root, "\".\" of the root is not the root");
    }
    let mut stack = vec![(root, 0u32)];
    let mut seen = 0usize;
    'dirs: while let Some((dir, depth)) = stack.pop() {
        let _ = (fs.dir_form(dir), fs.extents(dir), fs.list_xattrs(dir));
        let _ = fs.lookup(dir, b"no-such-name-in-this-directory");
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        for (i, e) in entries.iter().enumerate().take(lim.per_dir) {
            seen += 1;
            if seen > lim.entries {
                break 'dirs;
            }
            assert!(
                e.name != b"." && e.name != b"..",
                "read_dir returned \".\" or \"..\""
            );
            assert!(!e.name.is_empty(), "read_dir returned an empty name");
            if i < lim.lookups_per_dir
                && let Ok(found) = fs.lookup(dir, &e.name)
            {
                assert!(
                    found.is_some(),
                    "a name read_dir lists is not found by lookup"
                );
            }
            let _ = fs.list_xattrs(e.ino);
            let Ok(st) = fs.stat(e.ino) else {
                continue;
            };
            if let Some(v) = visited.as_deref_mut() {
                v.push(e.ino);
            }
            match st.file_type {
                FileType::Directory if depth < 32 => stack.push((e.ino, depth + 1)),
                FileType::Regular => {
                    let _ = fs.extents(e.ino);
                    read_file(fs, e.ino, st.size, lim.file_bytes);
                }
                FileType::Symlink => {
                    if let Ok(t) = fs.readlink(e.ino) {
                        assert_eq!(t.len() as u64, st.size, "symlink target length");
                    }
                }
                _ => {}
            }
        }
    }
    free_space(fs, &sb);
}

/// The free-space map and per-AG numbers, with their invariants: free ranges are sorted, do
/// not overlap and lie inside the filesystem; per-AG runs lie inside their AG; the summaries
/// add up.
fn free_space<D: BlockDev>(fs: &XfsFs<D>, sb: &Superblock) {
    let fs_bytes = u128::from(sb.dblocks) << sb.blocklog;
    let bs = u64::from(sb.blocksize);
    if let Ok(ranges) = fs.free_ranges() {
        let mut prev_end = 0u64;
        for (i, r) in ranges.iter().enumerate() {
            assert!(r.len > 0, "free range {i} is empty");
            let end = r.offset.checked_add(r.len);
            assert!(
                end.is_some_and(|e| u128::from(e) <= fs_bytes),
                "free range {i} ({:#x}+{:#x}) ends past the filesystem ({fs_bytes:#x} bytes)",
                r.offset,
                r.len
            );
            assert!(
                i == 0 || r.offset >= prev_end,
                "free range {i} at {:#x} is before the end of the previous one ({prev_end:#x})",
                r.offset
            );
            assert!(
                r.offset % bs == 0 && r.len % bs == 0,
                "free range {i} is not whole blocks"
            );
            prev_end = end.unwrap_or(u64::MAX);
        }
    }
    for ag in 0..sb.agcount.min(8) {
        if let Ok(runs) = fs.ag_free_blocks(ag) {
            let mut prev_end = 0u64;
            for (i, &(start, len)) in runs.iter().enumerate() {
                let end = u64::from(start) + u64::from(len);
                assert!(len > 0, "AG {ag}: free run {i} is empty");
                assert!(
                    end <= u64::from(sb.ag_len(ag)),
                    "AG {ag}: free run {i} ({start:#x}+{len}) ends past the AG"
                );
                assert!(
                    i == 0 || u64::from(start) >= prev_end,
                    "AG {ag}: free runs unsorted or overlapping at {i}"
                );
                prev_end = end;
            }
        }
        if let Ok(chunks) = fs.inode_chunks(ag) {
            for w in chunks.windows(2) {
                assert!(
                    w[0].startino < w[1].startino,
                    "AG {ag}: inode chunks out of order"
                );
            }
        }
    }
    if let Ok(sums) = fs.ag_summaries() {
        assert_eq!(
            sums.len() as u64,
            u64::from(sb.agcount),
            "one summary per AG"
        );
        for s in sums {
            assert!(s.free_blocks <= s.blocks, "AG {}: free > size", s.ag);
            assert!(
                s.longest_free <= s.free_blocks,
                "AG {}: longest > free",
                s.ag
            );
            assert!(
                s.free_inodes <= s.inodes,
                "AG {}: free inodes > inodes",
                s.ag
            );
        }
    }
}

/// Open read-only and walk; then open for writing: the writable open checks more (every
/// AG's btrees, the refcount and reverse-mapping btrees) and may refuse what the read-only
/// open accepted, with any error — but it must never panic, and opening writes nothing.
fn exercise(dev: &PatchDev<'_>) {
    let ro = XfsFs::open(dev, OpenOptions { writable: false });
    if let Ok(fs) = &ro {
        walk(fs, &WALK, None);
    }
    dev.reset_read_count();
    if let Ok(fs) = XfsFs::open(dev, OpenOptions { writable: true }) {
        assert!(
            ro.is_ok(),
            "a writable open succeeded where a read-only open failed"
        );
        walk(&fs, &WALK, None);
    }
    let _ = imgscrub_fs::Xfs::open(dev, true);
    assert_eq!(
        dev.writes(),
        0,
        "opening XFS (read-only or for writing) wrote to the device"
    );
}

/// The filesystem size the superblock claims (0 when it makes no sense), without validating.
fn claimed_size(data: &[u8]) -> u64 {
    let (Some(d), Some(&log)) = (data.get(8..16), data.get(120)) else {
        return 0;
    };
    let mut b = [0u8; 8];
    b.copy_from_slice(d);
    if log > 16 {
        return 0;
    }
    u64::from_be_bytes(b).saturating_mul(1 << log)
}

/// Open arbitrary bytes as an XFS filesystem (superblock, log, AG headers, root inode) and
/// walk it. The input is zero-padded (without allocating) to the size its superblock claims,
/// up to 1 GiB, so that the start of a real one-AG filesystem whose log is zero (up to its
/// last inode in use: 36 KiB for the v5 seed) is a whole filesystem (`fuzz/seeds/xfs_open/`,
/// made by `templates/make-xfs-templates.sh`).
pub fn xfs_open(data: &[u8]) {
    let len = (data.len() as u64)
        .max(64 << 10)
        .max(claimed_size(data).min(1 << 30));
    exercise(&PatchDev::new(data, len));
}

/// Flip bytes of the v5 or the v4 template and walk it.
///
/// Byte 0 holds the options: bit 0 spreads the offsets over the whole image instead of its
/// metadata sectors, bit 1 picks the v4 template, bit 2 keeps the CRCs of v5 structures as
/// flipped instead of resealing them, bits 3-7 extend whole-image offsets past 16 MiB. Then
/// records of 4 bytes: a little-endian 24-bit offset and a byte XORed in there (at most 256).
/// In the metadata area the offset's top 15 bits pick a metadata sector, the low 9 bits the
/// byte in it.
pub fn xfs_image(data: &[u8]) {
    let Some((&mode, records)) = data.split_first() else {
        return;
    };
    let t = if mode & 2 == 0 {
        v5_template()
    } else {
        v4_template()
    };
    if t.img.is_empty() {
        return;
    }
    let len = t.img.len() as u64;
    let mut dev = PatchDev::new(t.img, len);
    for rec in records.chunks_exact(4).take(256) {
        let idx = u64::from(rec[0]) | u64::from(rec[1]) << 8 | u64::from(rec[2]) << 16;
        let off = if mode & 1 == 0 && !t.meta.is_empty() {
            t.meta[(idx >> 9) as usize % t.meta.len()] * 512 + (idx & 511)
        } else {
            ((u64::from(mode >> 3) << 24) | idx) % len
        };
        dev.xor(off, rec[3]);
    }
    if mode & 4 == 0 {
        reseal(&mut dev, t);
    }
    exercise(&dev);
}

/// One structure of the v5 template replaced by the input, then a walk of the whole image.
///
/// Input: byte 0 picks the kind of structure (superblock, AGF, AGI, AGFL, free-space btree
/// block, inode btree block, inode, directory data block, directory leaf/free block, da-btree
/// node, attribute leaf, bmbt block, remote value or symlink block, log head), bytes 1-2 (LE)
/// which one of that kind, byte 3 bit 0 keeps the CRC as given instead of resealing; the rest
/// overwrites the structure from its start. Also feeds the whole input to the parsers that
/// take bytes directly (superblock, extent record, inode btree record, ACL).
pub fn xfs_structures(data: &[u8]) {
    parsers(data);
    let [kind, lo, hi, flags, bytes @ ..] = data else {
        return;
    };
    let t = v5_template();
    let Some(list) = t.by_kind.get(usize::from(*kind) % KINDS.len()) else {
        return;
    };
    if list.is_empty() {
        return;
    }
    let s = t.structs[list[usize::from(u16::from_le_bytes([*lo, *hi])) % list.len()]];
    let mut dev = PatchDev::new(t.img, t.img.len() as u64);
    dev.put(s.start, &bytes[..bytes.len().min(s.len as usize)]);
    if flags & 1 == 0 {
        seal(&mut dev, &s);
    }
    exercise(&dev);
}

fn parsers(data: &[u8]) {
    if let Ok(sb) = Superblock::parse(data) {
        let _ = (sb.check_readable(), sb.feature_names(), sb.label());
        let _ = (sb.dirblksize(), sb.ag_len(0), sb.ag_len(sb.agcount - 1));
        let _ = (sb.fsb_valid(sb.rootino, 1), sb.fsb_to_byte(sb.logstart));
        let _ = (sb.has_ftype(), sb.lazy_counters(), sb.meta_uuid());
    }
    let _ = attr::acl_to_linux(data);
    let mut rec = [0u8; 16];
    let n = data.len().min(16);
    rec[..n].copy_from_slice(&data[..n]);
    let e = Extent::parse(&rec);
    let _ = e.end();
    for sparse in [false, true] {
        let c = InodeChunk::parse(&rec, sparse);
        let _ = (0..64).filter(|&i| c.present(i)).count();
    }
}

// ---- the templates: metadata map, CRC-protected structures -----------------------------------

/// Kinds of structures `xfs_structures` can replace (byte 0 of its input, in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Superblock,
    Agf,
    Agi,
    Agfl,
    FreeBtree,
    InodeBtree,
    Inode,
    DirData,
    DirIndex,
    DaNode,
    AttrLeaf,
    Bmbt,
    Remote,
    LogHead,
}

const KINDS: [Kind; 14] = [
    Kind::Superblock,
    Kind::Agf,
    Kind::Agi,
    Kind::Agfl,
    Kind::FreeBtree,
    Kind::InodeBtree,
    Kind::Inode,
    Kind::DirData,
    Kind::DirIndex,
    Kind::DaNode,
    Kind::AttrLeaf,
    Kind::Bmbt,
    Kind::Remote,
    Kind::LogHead,
];

/// One metadata structure of a template.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Structure {
    pub(crate) kind: Kind,
    pub(crate) start: u64,
    pub(crate) len: u32,
    /// Offset of its CRC field (v5).
    pub(crate) crc: Option<u32>,
}

pub(crate) struct Template {
    pub(crate) img: &'static [u8],
    /// Sector indexes of the metadata: non-zero sectors that are not file data.
    pub(crate) meta: Vec<u64>,
    /// CRC-protected structures (v5), and the log head.
    pub(crate) structs: Vec<Structure>,
    /// Sector index -> the CRC-protected structure holding it.
    by_sector: HashMap<u64, usize>,
    /// For each of [`KINDS`], the structures of that kind `xfs_structures` may pick (inodes:
    /// only those a walk visits).
    pub(crate) by_kind: Vec<Vec<usize>>,
}

pub(crate) fn v5_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| prepare(xfs_v5()))
}

pub(crate) fn v4_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| prepare(xfs_v4()))
}

fn empty() -> Template {
    Template {
        img: &[],
        meta: Vec::new(),
        structs: Vec::new(),
        by_sector: HashMap::new(),
        by_kind: vec![Vec::new(); KINDS.len()],
    }
}

/// Map a template: its file data (to leave out of the metadata area), its CRC-protected
/// structures, and the inodes a walk visits. The templates are ours; one that does not open
/// makes every input a no-op (and fails the crate's tests).
fn prepare(img: &'static [u8]) -> Template {
    let dev = PatchDev::new(img, img.len() as u64);
    let Ok(fs) = XfsFs::open(&dev, OpenOptions::default()) else {
        return empty();
    };
    let sb = fs.superblock().clone();
    let bs = u64::from(sb.blocksize);

    // File data: every regular file's extents (the template is small: no limits).
    let mut data = vec![false; img.len() / 512];
    let mut dirs = vec![fs.root()];
    while let Some(d) = dirs.pop() {
        for e in fs.read_dir(d).unwrap_or_default() {
            match e.file_type {
                FileType::Directory => dirs.push(e.ino),
                FileType::Regular => {
                    for x in fs.extents(e.ino).unwrap_or_default() {
                        if x.unwritten {
                            continue;
                        }
                        let start = sb.fsb_to_byte(x.block) / 512;
                        let end = start + x.len * bs / 512;
                        for s in start..end.min(data.len() as u64) {
                            data[s as usize] = true;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let meta = img
        .chunks(512)
        .enumerate()
        .filter(|&(i, c)| !data[i] && c.iter().any(|&b| b != 0))
        .map(|(i, _)| i as u64)
        .collect();

    let mut structs = if sb.is_v5() {
        sealed_structures(img, &sb)
    } else {
        Vec::new()
    };
    structs.push(Structure {
        kind: Kind::LogHead,
        start: sb.fsb_to_byte(sb.logstart),
        len: 4096,
        crc: None,
    });
    let mut by_sector = HashMap::new();
    for (i, s) in structs.iter().enumerate() {
        if s.crc.is_some() {
            for sec in s.start / 512..(s.start + u64::from(s.len)).div_ceil(512) {
                by_sector.insert(sec, i);
            }
        }
    }
    // Inodes worth replacing: those a walk reaches.
    let mut visited = vec![fs.root()];
    walk(&fs, &WALK, Some(&mut visited));
    let r = Reader::new(&dev, &sb);
    let reached: Vec<u64> = visited
        .iter()
        .filter_map(|&i| Inode::location(&r, i).ok())
        .collect();
    let by_kind = KINDS
        .iter()
        .map(|&k| {
            (0..structs.len())
                .filter(|&i| {
                    structs[i].kind == k
                        && (k != Kind::Inode || reached.contains(&structs[i].start))
                })
                .collect()
        })
        .collect();
    Template {
        img,
        meta,
        structs,
        by_sector,
        by_kind,
    }
}

fn be16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
}

/// Every v5 structure of the image whose CRC verifies: AG header sectors, inodes, btree,
/// directory, attribute, remote blocks.
fn sealed_structures(img: &[u8], sb: &Superblock) -> Vec<Structure> {
    let bs = sb.blocksize as usize;
    let ss = usize::from(sb.sectsize);
    let isz = usize::from(sb.inodesize);
    let dirblk = sb.dirblksize() as usize;
    let mut out = Vec::new();
    let ok = |start: usize, len: usize, crc: usize| {
        img.get(start..start + len)
            .is_some_and(|b| csum::compute(b, crc) == csum::stored(b, crc))
    };
    let push = |out: &mut Vec<Structure>, kind, start: usize, len: usize, crc: usize| {
        out.push(Structure {
            kind,
            start: start as u64,
            len: len as u32,
            crc: Some(crc as u32),
        })
    };
    // AG headers: superblock, AGF, AGI, AGFL in the first four sectors of each AG.
    let mut header_end = HashMap::new();
    for ag in 0..sb.agcount {
        let base = sb.agb_to_byte(ag, 0) as usize;
        header_end.insert(ag, base + 4 * ss);
        for i in 0..4 {
            let s = base + i * ss;
            let (kind, crc) = match img.get(s..s + 4) {
                Some(b"XFSB") => (Kind::Superblock, 224),
                Some(b"XAGF") => (Kind::Agf, 216),
                Some(b"XAGI") => (Kind::Agi, 312),
                Some(b"XAFL") => (Kind::Agfl, 32),
                _ => continue,
            };
            if ok(s, ss, crc) {
                push(&mut out, kind, s, ss, crc);
            }
        }
    }
    let ag_bytes = sb.agblocks as usize * bs;
    let mut off = 0usize;
    while off + bs <= img.len() {
        let ag = (off / ag_bytes) as u32;
        let b = &img[off..off + bs];
        if off < header_end.get(&ag).copied().unwrap_or(0) || b.iter().all(|&x| x == 0) {
            off += bs;
            continue;
        }
        if b.starts_with(b"IN") {
            for s in (off..off + bs).step_by(isz) {
                if img[s..].starts_with(b"IN") && ok(s, isz, 100) {
                    push(&mut out, Kind::Inode, s, isz, 100);
                }
            }
            off += bs;
            continue;
        }
        let cands: &[(Kind, usize, usize)] = match &b[..4] {
            b"AB3B" | b"AB3C" => &[(Kind::FreeBtree, bs, 52)],
            b"IAB3" | b"FIB3" => &[(Kind::InodeBtree, bs, 52)],
            b"BMA3" => &[(Kind::Bmbt, bs, 64)],
            b"XARM" | b"XSLM" => &[(Kind::Remote, bs, 12)],
            b"XDB3" | b"XDD3" => &[(Kind::DirData, dirblk, 4)],
            b"XDF3" => &[(Kind::DirIndex, dirblk, 4)],
            _ => match be16(b, 8) {
                0x3bee => &[(Kind::AttrLeaf, bs, 12)],
                0x3ebe => &[(Kind::DaNode, bs, 12), (Kind::DaNode, dirblk, 12)],
                0x3df1 | 0x3dff => &[(Kind::DirIndex, dirblk, 12)],
                _ => &[],
            },
        };
        match cands.iter().find(|&&(_, len, crc)| ok(off, len, crc)) {
            Some(&(kind, len, crc)) => {
                push(&mut out, kind, off, len, crc);
                off += len.div_ceil(bs) * bs;
            }
            None => off += bs,
        }
    }
    out.sort_by_key(|s| s.start);
    out
}

/// Recompute the CRC of one structure over its current contents.
fn seal(dev: &mut PatchDev<'_>, s: &Structure) {
    let Some(crc) = s.crc else { return };
    let mut buf = vec![0u8; s.len as usize];
    if dev.read_at(&mut buf, s.start).is_ok() {
        let c = csum::compute(&buf, crc as usize);
        dev.put(s.start + u64::from(crc), &c.to_le_bytes());
    }
    dev.reset_read_count();
}

/// Reseal every CRC-protected structure a change touched.
fn reseal(dev: &mut PatchDev<'_>, t: &Template) {
    let mut todo: Vec<usize> = dev
        .patched_sectors()
        .iter()
        .filter_map(|s| t.by_sector.get(s).copied())
        .collect();
    todo.sort_unstable();
    todo.dedup();
    for i in todo {
        seal(dev, &t.structs[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgscrub_xfs::dir::DirForm;

    fn path(fs: &XfsFs<&PatchDev<'_>>, p: &str) -> u64 {
        let mut ino = fs.root();
        for c in p.split('/').filter(|c| !c.is_empty()) {
            ino = fs.lookup(ino, c.as_bytes()).unwrap().unwrap();
        }
        ino
    }

    /// The templates hold what the targets promise: all five directory forms, remote and
    /// local symlinks, a multi-extent file, attributes in every form.
    #[test]
    fn templates_have_every_form() {
        for (name, t) in [("v5", v5_template()), ("v4", v4_template())] {
            assert_eq!(t.img.len(), 32 << 20, "{name}");
            let dev = PatchDev::new(t.img, t.img.len() as u64);
            let fs = XfsFs::open(&dev, OpenOptions::default()).unwrap();
            for (d, form) in [
                ("/sf", DirForm::Shortform),
                ("/block", DirForm::Block),
                ("/leaf", DirForm::Leaf),
                ("/node", DirForm::Node),
                ("/btree", DirForm::Btree),
            ] {
                assert_eq!(fs.dir_form(path(&fs, d)).unwrap(), form, "{name} {d}");
            }
            assert_eq!(fs.read_dir(path(&fs, "/node")).unwrap().len(), 520);
            assert_eq!(fs.read_dir(path(&fs, "/btree")).unwrap().len(), 360);
            assert_eq!(
                fs.readlink(path(&fs, "/etc/remote")).unwrap().len(),
                456,
                "{name}"
            );
            assert_eq!(
                fs.readlink(path(&fs, "/etc/localtime")).unwrap(),
                b"../usr/share/zoneinfo/UTC"
            );
            assert_eq!(fs.extents(path(&fs, "/files/frag")).unwrap().len(), 3);
            let mut buf = vec![0u8; 16384];
            let frag = path(&fs, "/files/frag");
            assert_eq!(fs.read(frag, 0, &mut buf).unwrap(), 16384);
            assert!(buf[..4096].iter().all(|&b| b == b'c'));
            assert!(buf[4096..8192].iter().all(|&b| b == 0), "{name}: hole");
            assert!(buf[12288..].iter().all(|&b| b == 0), "{name}: unwritten");
            for (f, n) in [
                ("/xattr/sf", 3),
                ("/xattr/leaf", 12),
                ("/xattr/node", 120),
                ("/xattr/remote", 3),
                ("/xattr/bt1", 450),
            ] {
                assert_eq!(fs.list_xattrs(path(&fs, f)).unwrap().len(), n, "{name} {f}");
            }
            let remote = fs.list_xattrs(path(&fs, "/xattr/remote")).unwrap();
            assert!(
                remote
                    .iter()
                    .any(|(n, v)| n == "user.remote-value" && v.len() == 3000)
            );
            assert!(
                remote
                    .iter()
                    .any(|(n, v)| n == "trusted.big-trusted" && v.len() == 900)
            );
            assert!(fs.free_ranges().unwrap().len() > 2);
            assert!(
                t.meta.len() > 1000,
                "{name}: {} metadata sectors",
                t.meta.len()
            );
        }
    }

    /// Every kind of v5 structure was found with a valid CRC, and resealing a flipped one
    /// makes it valid again.
    #[test]
    fn v5_structures_are_mapped_and_resealed() {
        let t = v5_template();
        for (k, list) in KINDS.iter().zip(&t.by_kind) {
            assert!(!list.is_empty(), "no {k:?} in the v5 template");
        }
        // Flip a byte of the root inode's timestamps: CRC error; resealed: opens.
        let root = t.structs[t.by_kind[Kind::Inode as usize][0]];
        let mut dev = PatchDev::new(t.img, t.img.len() as u64);
        dev.xor(root.start + 40, 1);
        assert!(matches!(
            XfsFs::open(&dev, OpenOptions::default()),
            Err(imgscrub_xfs::XfsError::Checksum { .. })
        ));
        reseal(&mut dev, t);
        let fs = XfsFs::open(&dev, OpenOptions::default()).unwrap();
        assert!(fs.stat(fs.root()).is_ok());
    }

    /// The `xfs_open` seeds (the start of a one-AG filesystem) are whole filesystems once
    /// zero-padded.
    #[test]
    fn xfs_open_seeds_are_filesystems() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/xfs_open");
        for v in ["v5-one-ag", "v4-one-ag"] {
            let data = std::fs::read(dir.join(v)).unwrap();
            assert!(data.len() <= 40 << 10);
            let dev = PatchDev::new(&data, claimed_size(&data));
            let fs = XfsFs::open(&dev, OpenOptions::default()).unwrap();
            let names: Vec<Vec<u8>> = fs
                .read_dir(fs.root())
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names.len(), 4, "{v}");
            let file = fs.lookup(fs.root(), b"file").unwrap().unwrap();
            let mut buf = [0u8; 16];
            assert_eq!(fs.read(file, 0, &mut buf).unwrap(), 6);
            assert_eq!(&buf[..6], b"hello\n");
            assert_eq!(fs.list_xattrs(fs.root()).unwrap().len(), 1, "{v}");
            // The seeds are cut-down images: the log was moved into blocks the free-space
            // btrees still list as free, which the engine refuses to treat as free space.
            match fs.free_ranges() {
                Ok(r) => assert!(!r.is_empty(), "{v}"),
                Err(e) => assert!(
                    e.to_string().contains("(log) is listed as free"),
                    "{v}: {e}"
                ),
            }
        }
    }

    /// Regenerate `fuzz/seeds/xfs_structures/`: each kind's first structure, unchanged.
    /// `cargo test -p imgscrub-fuzzing -- --ignored write_xfs_structure_seeds`
    #[test]
    #[ignore]
    fn write_xfs_structure_seeds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/seeds/xfs_structures");
        std::fs::create_dir_all(&dir).unwrap();
        let t = v5_template();
        for (k, (kind, list)) in KINDS.iter().zip(&t.by_kind).enumerate() {
            let s = t.structs[list[0]];
            let mut seed = vec![k as u8, 0, 0, 0];
            seed.extend_from_slice(&t.img[s.start as usize..(s.start + u64::from(s.len)) as usize]);
            std::fs::write(dir.join(format!("{kind:?}").to_lowercase()), seed).unwrap();
        }
    }
}
