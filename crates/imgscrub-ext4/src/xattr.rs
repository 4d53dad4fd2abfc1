//! Extended attributes: the in-inode area and the xattr block, their hashes and checksums,
//! name prefixes, and a layout function that places a set of attributes. Owner: dirs.
//!
//! Everything here works on buffers; core reads/writes inodes and blocks, allocates and frees
//! the xattr block, and copies shared blocks on write (see NOTES-team.md).
//!
//! On-disk rules (kernel `Documentation/filesystems/ext4/attributes.rst`, `fs/ext4/xattr.c`):
//!
//! * In-inode area: from `128 + i_extra_isize` to the end of the inode. It starts with the
//!   magic 0xEA020000, then entries; value offsets are relative to the first entry (magic+4).
//! * Block: a 32-byte header (h_magic 0xEA020000, h_refcount, h_blocks = 1, h_hash,
//!   h_checksum, 3 reserved words), entries from offset 32 sorted by (name index, name
//!   length, name); value offsets are relative to the block start.
//! * Entry: e_name_len u8, e_name_index u8, e_value_offs le16, e_value_inum le32,
//!   e_value_size le32, e_hash le32, name; padded to 4 bytes. The list ends with a zero
//!   u32. Values are padded to 4 bytes (with zeros) and packed from the end of the area.
//! * e_hash: name bytes then value words rotated in (ext2fs_ext_attr_hash_entry); h_hash
//!   combines the entry hashes (0 if any entry hash is 0). h_checksum (metadata_csum) =
//!   crc32c(fs seed, le64 block number ‖ block with h_checksum zeroed) — the filesystem
//!   seed, not the inode's, since blocks are shared between inodes.
//! * e_value_inum ≠ 0 (ea_inode feature): the value lives in another inode. We read the
//!   entry but refuse to write such attributes.

use crate::dir::{rd16, rd32, wr16, wr32};
use crate::error::{Ext4Error, Result};

/// Magic of the in-inode area and of xattr blocks.
pub const XATTR_MAGIC: u32 = 0xEA02_0000;
/// Size of the block header.
pub const BLOCK_HEADER: usize = 32;
/// Size of an entry header (before the name).
pub const ENTRY_HEADER: usize = 16;

/// Name prefixes by index, most specific first (the order e2fsprogs matches them in).
const PREFIXES: &[(u8, &str)] = &[
    (10, "gnu."),
    (3, "system.posix_acl_default"),
    (2, "system.posix_acl_access"),
    (8, "system.richacl"),
    (6, "security."),
    (5, "lustre."),
    (4, "trusted."),
    (7, "system."),
    (1, "user."),
];

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Name index (1 user, 2 posix_acl_access, 3 posix_acl_default, 4 trusted, 6 security,
    /// 7 system, …).
    pub index: u8,
    /// Name without the prefix.
    pub name: Vec<u8>,
    /// The value (empty when `value_inum` is set).
    pub value: Vec<u8>,
    /// Inode holding the value (ea_inode feature); 0 when the value is stored inline.
    pub value_inum: u32,
}

impl Xattr {
    /// Build from a full name ("user.foo", "system.posix_acl_access", "system.data").
    pub fn new(full_name: &[u8], value: &[u8]) -> Result<Self> {
        let (index, name) = split_name(full_name)?;
        Ok(Xattr {
            index,
            name: name.to_vec(),
            value: value.to_vec(),
            value_inum: 0,
        })
    }

    /// The full name with its prefix.
    pub fn full_name(&self) -> Vec<u8> {
        let mut v = PREFIXES
            .iter()
            .find(|p| p.0 == self.index)
            .map(|p| p.1.as_bytes().to_vec())
            .unwrap_or_default();
        v.extend_from_slice(&self.name);
        v
    }

    fn entry_len(&self) -> usize {
        entry_len(self.name.len())
    }

    fn value_len(&self) -> usize {
        if self.value_inum != 0 {
            0
        } else {
            pad4(self.value.len())
        }
    }
}

/// Split a full attribute name into (index, suffix). Unknown prefixes are `InvalidArgument`
/// (the kernel has no handler for them either).
pub fn split_name(full: &[u8]) -> Result<(u8, &[u8])> {
    for &(idx, prefix) in PREFIXES {
        if let Some(rest) = full.strip_prefix(prefix.as_bytes()) {
            // The ACL and richacl names are complete names, not prefixes.
            if matches!(idx, 2 | 3 | 8) && !rest.is_empty() {
                continue;
            }
            if rest.is_empty() && !matches!(idx, 2 | 3 | 8) {
                return Err(Ext4Error::InvalidArgument(format!(
                    "empty xattr name after prefix {prefix:?}"
                )));
            }
            if rest.len() > 255 {
                return Err(Ext4Error::NameTooLong(rest.len()));
            }
            return Ok((idx, rest));
        }
    }
    Err(Ext4Error::InvalidArgument(format!(
        "unsupported xattr namespace in {:?}",
        String::from_utf8_lossy(full)
    )))
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn entry_len(name_len: usize) -> usize {
    pad4(ENTRY_HEADER + name_len)
}

/// `ext2fs_ext_attr_hash_entry`: the entry hash over the name and the padded value words.
/// `signed` hashes name bytes as signed chars (what kernels before 6.2 did on x86).
pub fn hash_entry(name: &[u8], value: &[u8], signed: bool) -> u32 {
    let mut hash: u32 = 0;
    for &b in name {
        let c = if signed {
            b as i8 as i32 as u32
        } else {
            b as u32
        };
        hash = (hash << 5) ^ (hash >> 27) ^ c;
    }
    let words = pad4(value.len()) / 4;
    for i in 0..words {
        let mut w = [0u8; 4];
        for (k, x) in w.iter_mut().enumerate() {
            *x = value.get(i * 4 + k).copied().unwrap_or(0);
        }
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes(w);
    }
    hash
}

/// The block hash (`ext4_xattr_rehash`) from the entry hashes, in block order.
pub fn block_hash(entry_hashes: &[u32]) -> u32 {
    let mut hash: u32 = 0;
    for &h in entry_hashes {
        if h == 0 {
            return 0;
        }
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    hash
}

/// Checksum of an xattr block.
pub fn block_csum(fs_seed: u32, blocknr: u64, block: &[u8]) -> u32 {
    let c = crate::csum::crc32c_raw(fs_seed, &blocknr.to_le_bytes());
    let c = crate::csum::crc32c_raw(c, block.get(..16).unwrap_or(&[]));
    let c = crate::csum::crc32c_raw(c, &[0; 4]);
    crate::csum::crc32c_raw(c, block.get(20..).unwrap_or(&[]))
}

/// Parse entries starting at `start` in `buf`; values at `value_base + e_value_offs`, and
/// must end by `value_end`. `verify_hash`: block entries must carry a correct hash;
/// in-inode entries may carry 0.
fn parse_entries(
    buf: &[u8],
    start: usize,
    value_base: usize,
    value_end: usize,
    in_block: bool,
    what: &dyn Fn() -> String,
) -> Result<Vec<Xattr>> {
    let corrupt = |d: String| Ext4Error::corrupt(what(), d);
    let mut out = Vec::new();
    let mut off = start;
    // Each entry is at least 20 bytes: bounded by the buffer length.
    loop {
        if off + 4 > buf.len() {
            return Err(corrupt(format!("entry list runs past the end at {off}")));
        }
        if rd32(buf, off) == 0 {
            break;
        }
        let name_len = buf.get(off).copied().unwrap_or(0) as usize;
        let index = buf.get(off + 1).copied().unwrap_or(0);
        let value_offs = rd16(buf, off + 2) as usize;
        let value_inum = rd32(buf, off + 4);
        let value_size = rd32(buf, off + 8) as usize;
        let e_hash = rd32(buf, off + 12);
        let elen = entry_len(name_len);
        // An empty name is valid with a name index: POSIX ACLs are stored as index 2/3
        // ("system.posix_acl_access/default") with e_name_len 0.
        if (name_len == 0 && index == 0) || off + elen + 4 > buf.len() {
            return Err(corrupt(format!("bad entry at offset {off}")));
        }
        let name = buf
            .get(off + ENTRY_HEADER..off + ENTRY_HEADER + name_len)
            .unwrap_or(&[])
            .to_vec();
        let mut value = Vec::new();
        if value_inum == 0 && value_size > 0 {
            let vs = value_base.saturating_add(value_offs);
            let ve = vs.saturating_add(value_size);
            if vs < off + elen + 4
                || ve > value_end
                || pad4(ve - value_base) + value_base > value_end
            {
                return Err(corrupt(format!(
                    "value of entry at offset {off} out of bounds ({value_offs}+{value_size})"
                )));
            }
            value = buf.get(vs..ve).unwrap_or(&[]).to_vec();
            let padded = buf.get(vs..vs + pad4(value_size)).unwrap_or(&[]);
            let h = hash_entry(&name, padded, false);
            let hs = hash_entry(&name, padded, true);
            if (in_block || e_hash != 0) && e_hash != h && e_hash != hs {
                return Err(corrupt(format!(
                    "entry at offset {off}: hash {e_hash:#x}, expected {h:#x}"
                )));
            }
        }
        out.push(Xattr {
            index,
            name,
            value,
            value_inum,
        });
        off += elen;
    }
    Ok(out)
}

/// Parse the in-inode area (`inode[128 + i_extra_isize ..]`). No magic: no attributes.
pub fn parse_ibody(area: &[u8], ino: u32) -> Result<Vec<Xattr>> {
    if area.len() < 8 || rd32(area, 0) != XATTR_MAGIC {
        return Ok(Vec::new());
    }
    let what = move || format!("in-inode extended attributes of inode {ino}");
    parse_entries(area, 4, 4, area.len(), false, &what)
}

/// Parse and validate an xattr block (`blocknr` and `fs_seed` for the checksum when
/// metadata_csum).
pub fn parse_block(block: &[u8], blocknr: u64, fs_seed: Option<u32>) -> Result<Vec<Xattr>> {
    let what = move || format!("extended attribute block {blocknr}");
    if block.len() < 1024 {
        return Err(Ext4Error::corrupt(what(), "short block"));
    }
    if rd32(block, 0) != XATTR_MAGIC {
        return Err(Ext4Error::corrupt(what(), "bad magic"));
    }
    if rd32(block, 8) != 1 {
        return Err(Ext4Error::corrupt(
            what(),
            format!("h_blocks {}", rd32(block, 8)),
        ));
    }
    if let Some(seed) = fs_seed {
        let stored = rd32(block, 16);
        let computed = block_csum(seed, blocknr, block);
        if stored != computed {
            return Err(Ext4Error::Checksum {
                structure: what(),
                stored,
                computed,
            });
        }
    }
    parse_entries(block, BLOCK_HEADER, 0, block.len(), true, &what)
}

/// `h_refcount` of an xattr block.
pub fn block_refcount(block: &[u8]) -> u32 {
    rd32(block, 4)
}

/// Set `h_refcount`; call [`finish_block`] afterwards.
pub fn set_block_refcount(block: &mut [u8], refcount: u32) {
    wr32(block, 4, refcount);
}

/// Recompute `h_hash` and (with `fs_seed`) `h_checksum` of a block laid out by [`layout`]
/// (or after [`set_block_refcount`]), once its block number is known.
pub fn finish_block(block: &mut [u8], blocknr: u64, fs_seed: Option<u32>) {
    let mut hashes = Vec::new();
    let mut off = BLOCK_HEADER;
    while off + 4 <= block.len() && rd32(block, off) != 0 {
        hashes.push(rd32(block, off + 12));
        let name_len = block.get(off).copied().unwrap_or(0) as usize;
        off += entry_len(name_len);
    }
    wr32(block, 12, block_hash(&hashes));
    wr32(block, 16, 0);
    if let Some(seed) = fs_seed {
        let c = block_csum(seed, blocknr, block);
        wr32(block, 16, c);
    }
}

/// Sort order of entries in a block (kernel `ext4_xattr_find_entry` with `sorted`).
fn block_order(a: &Xattr, b: &Xattr) -> std::cmp::Ordering {
    (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name))
}

/// Write `attrs` as entries from `start` and values packed down from `end`; offsets
/// relative to `base`. Caller checked the space.
fn write_entries(buf: &mut [u8], attrs: &[&Xattr], start: usize, base: usize, end: usize) {
    let mut off = start;
    let mut vend = end;
    for a in attrs {
        let nl = a.name.len();
        let vlen = a.value_len();
        let offs = if a.value.is_empty() {
            0
        } else {
            vend -= vlen;
            if let Some(s) = buf.get_mut(vend..vend + a.value.len()) {
                s.copy_from_slice(&a.value);
            }
            vend - base
        };
        let padded = buf.get(vend..vend + vlen).unwrap_or(&[]).to_vec();
        let h = hash_entry(
            &a.name,
            if a.value.is_empty() { &[] } else { &padded },
            false,
        );
        if let Some(s) = buf.get_mut(off..off + 2) {
            s.copy_from_slice(&[nl as u8, a.index]);
        }
        wr16(buf, off + 2, u16::try_from(offs).unwrap_or(0));
        wr32(buf, off + 4, 0);
        wr32(buf, off + 8, u32::try_from(a.value.len()).unwrap_or(0));
        wr32(buf, off + 12, h);
        if let Some(s) = buf.get_mut(off + ENTRY_HEADER..off + ENTRY_HEADER + nl) {
            s.copy_from_slice(&a.name);
        }
        off += a.entry_len();
    }
    wr32(buf, off, 0);
}

/// Bytes needed by attributes in an area: entries + values + the 4-byte end marker.
fn needed(attrs: &[&Xattr]) -> usize {
    attrs
        .iter()
        .map(|a| a.entry_len() + a.value_len())
        .sum::<usize>()
        + 4
}

/// Place `attrs`: in the inode when they fit (like the kernel, in-inode first; `system.data`
/// always in-inode), the rest in one block.
///
/// `ibody_capacity` = inode size − 128 − i_extra_isize (0: no in-inode area). Returns the
/// new in-inode area (exactly `ibody_capacity` bytes; all zero when empty) and the block
/// (`block_size` bytes, h_refcount 1) or `None` when no attribute needs one. Call
/// [`finish_block`] on the block once its number is known. Errors: `NoSpace` when the
/// attributes do not fit, `Unsupported` for attributes stored in EA inodes.
pub fn layout(
    attrs: &[Xattr],
    ibody_capacity: usize,
    block_size: usize,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    for (i, a) in attrs.iter().enumerate() {
        if a.value_inum != 0 {
            return Err(Ext4Error::Unsupported(
                "writing extended attributes stored in EA inodes (ea_inode)".into(),
            ));
        }
        if a.name.is_empty() && !matches!(a.index, 2 | 3 | 8) || a.name.len() > 255 {
            return Err(Ext4Error::InvalidArgument("bad xattr name".into()));
        }
        if attrs[..i]
            .iter()
            .any(|b| b.index == a.index && b.name == a.name)
        {
            return Err(Ext4Error::InvalidArgument(format!(
                "duplicate xattr {:?}",
                String::from_utf8_lossy(&a.full_name())
            )));
        }
    }
    let is_data = |a: &Xattr| a.index == 7 && a.name == b"data";
    let mut ib: Vec<&Xattr> = Vec::new();
    let mut bl: Vec<&Xattr> = Vec::new();
    // In-inode area: magic (4) + entries + end marker (4) + values.
    let ib_room = ibody_capacity.saturating_sub(4);
    for a in attrs.iter().filter(|a| is_data(a)) {
        if needed(&[a]) > ib_room {
            return Err(Ext4Error::NoSpace("in-inode xattr area (system.data)"));
        }
        ib.push(a);
    }
    for a in attrs.iter().filter(|a| !is_data(a)) {
        let mut trial = ib.clone();
        trial.push(a);
        if needed(&trial) <= ib_room {
            ib = trial;
        } else {
            bl.push(a);
        }
    }
    let mut ibody = vec![0u8; ibody_capacity];
    if !ib.is_empty() {
        wr32(&mut ibody, 0, XATTR_MAGIC);
        write_entries(&mut ibody, &ib, 4, 4, ibody_capacity);
    }
    let block = if bl.is_empty() {
        None
    } else {
        if needed(&bl) > block_size.saturating_sub(BLOCK_HEADER) {
            return Err(Ext4Error::NoSpace("extended attribute block"));
        }
        bl.sort_by(|a, b| block_order(a, b));
        let mut b = vec![0u8; block_size];
        wr32(&mut b, 0, XATTR_MAGIC);
        wr32(&mut b, 4, 1);
        wr32(&mut b, 8, 1);
        write_entries(&mut b, &bl, BLOCK_HEADER, 0, block_size);
        Some(b)
    };
    Ok((ibody, block))
}

/// Find an attribute by full name.
pub fn get<'a>(attrs: &'a [Xattr], full_name: &[u8]) -> Option<&'a Xattr> {
    let (index, name) = split_name(full_name).ok()?;
    attrs.iter().find(|a| a.index == index && a.name == name)
}

/// Set (replace or append) an attribute by full name.
pub fn set(attrs: &mut Vec<Xattr>, full_name: &[u8], value: &[u8]) -> Result<()> {
    let x = Xattr::new(full_name, value)?;
    match attrs
        .iter_mut()
        .find(|a| a.index == x.index && a.name == x.name)
    {
        Some(a) => *a = x,
        None => attrs.push(x),
    }
    Ok(())
}

/// Remove an attribute by full name; `NotFound` when absent.
pub fn remove(attrs: &mut Vec<Xattr>, full_name: &[u8]) -> Result<Xattr> {
    let (index, name) = split_name(full_name)?;
    match attrs
        .iter()
        .position(|a| a.index == index && a.name == name)
    {
        Some(i) => Ok(attrs.remove(i)),
        None => Err(Ext4Error::NotFound(format!(
            "xattr {}",
            String::from_utf8_lossy(full_name)
        ))),
    }
}

/// POSIX ACL tags that carry an id (ACL_USER, ACL_GROUP).
fn acl_has_id(tag: u16) -> bool {
    tag == 2 || tag == 8
}

/// Convert a POSIX ACL from the VFS xattr format (version 2, 8-byte entries) to the ext4
/// on-disk format (version 1, 4-byte entries for tags without an id).
pub fn acl_to_disk(vfs: &[u8]) -> Result<Vec<u8>> {
    if vfs.len() < 4 || rd32(vfs, 0) != 2 || !(vfs.len() - 4).is_multiple_of(8) {
        return Err(Ext4Error::InvalidArgument(
            "bad POSIX ACL xattr value".into(),
        ));
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in vfs.get(4..).unwrap_or(&[]).chunks_exact(8) {
        let tag = rd16(e, 0);
        out.extend_from_slice(e.get(..4).unwrap_or(&[]));
        if acl_has_id(tag) {
            out.extend_from_slice(e.get(4..8).unwrap_or(&[]));
        }
    }
    Ok(out)
}

/// Convert an ext4 on-disk POSIX ACL to the VFS xattr format.
pub fn acl_from_disk(disk: &[u8]) -> Result<Vec<u8>> {
    if disk.len() < 4 || rd32(disk, 0) != 1 {
        return Err(Ext4Error::corrupt("POSIX ACL xattr", "bad header"));
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut off = 4;
    // Each entry consumes at least 4 bytes.
    while off < disk.len() {
        let tag = rd16(disk, off);
        let perm = rd16(disk, off + 2);
        let (id, len) = if acl_has_id(tag) {
            (rd32(disk, off + 4), 8)
        } else {
            (u32::MAX, 4)
        };
        if off + len > disk.len() {
            return Err(Ext4Error::corrupt("POSIX ACL xattr", "truncated entry"));
        }
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        off += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_xattr_names() {
        assert_eq!(split_name(b"user.foo").unwrap(), (1, &b"foo"[..]));
        assert_eq!(
            split_name(b"system.posix_acl_access").unwrap(),
            (2, &b""[..])
        );
        assert_eq!(split_name(b"system.data").unwrap(), (7, &b"data"[..]));
        assert_eq!(
            split_name(b"security.selinux").unwrap(),
            (6, &b"selinux"[..])
        );
        assert!(split_name(b"bogus.x").is_err());
        assert!(split_name(b"user.").is_err());
        let x = Xattr::new(b"trusted.t", b"v").unwrap();
        assert_eq!(x.full_name(), b"trusted.t");
    }

    #[test]
    fn dirs_xattr_layout_roundtrip() {
        let mut attrs = Vec::new();
        set(&mut attrs, b"user.a", b"1").unwrap();
        set(
            &mut attrs,
            b"security.selinux",
            b"system_u:object_r:etc_t:s0\0",
        )
        .unwrap();
        set(&mut attrs, b"user.big", &[7u8; 300]).unwrap();
        set(&mut attrs, b"user.empty", b"").unwrap();
        let (ib, blk) = layout(&attrs, 256 - 128 - 32, 4096).unwrap();
        let mut blk = blk.unwrap();
        finish_block(&mut blk, 1234, Some(42));
        let mut got = parse_ibody(&ib, 12).unwrap();
        got.extend(parse_block(&blk, 1234, Some(42)).unwrap());
        let mut a = attrs.clone();
        a.sort_by(block_order);
        got.sort_by(block_order);
        assert_eq!(a, got);
        // Wrong block number: checksum error.
        assert!(matches!(
            parse_block(&blk, 1235, Some(42)),
            Err(Ext4Error::Checksum { .. })
        ));
        // Everything fits in a big inode.
        let (_, none) = layout(&attrs[..2], 1024 - 160, 4096).unwrap();
        assert!(none.is_none());
        assert_eq!(remove(&mut attrs, b"user.a").unwrap().value, b"1");
        assert!(remove(&mut attrs, b"user.a").is_err());
    }

    #[test]
    fn dirs_xattr_acl_conversion() {
        let mut vfs = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            vfs.extend_from_slice(&tag.to_le_bytes());
            vfs.extend_from_slice(&perm.to_le_bytes());
            vfs.extend_from_slice(&id.to_le_bytes());
        }
        let disk = acl_to_disk(&vfs).unwrap();
        assert_eq!(disk.len(), 4 + 4 * 4 + 8);
        assert_eq!(acl_from_disk(&disk).unwrap(), vfs);
    }
}
