//! Extended attributes: shortform (in the inode's attribute fork), leaf and node (da-btree)
//! blocks, local and remote values.
//!
//! Names come out as Linux sees them: the namespace flag becomes the `user.`, `trusted.` or
//! `security.` prefix, and XFS's own POSIX ACL attributes (`SGI_ACL_FILE`,
//! `SGI_ACL_DEFAULT` in the trusted namespace, in XFS's big-endian ACL format) become
//! `system.posix_acl_access` / `system.posix_acl_default` in the kernel's xattr format.
//! Parent pointers and incomplete attributes are not user-visible and are skipped.

use crate::be::{bytes, u8_at, u16_at, u32_at, u64_at};
use crate::bmap::{self, Extent, Fork};
use crate::csum;
use crate::error::{Result, corrupt};
use crate::inode::{Format, Inode};
use crate::reader::Reader;

/// On-disk attribute flags.
pub mod flag {
    pub const LOCAL: u8 = 0x1;
    pub const ROOT: u8 = 0x2;
    pub const SECURE: u8 = 0x4;
    pub const PARENT: u8 = 0x8;
    pub const INCOMPLETE: u8 = 0x80;
}

const LEAF_MAGIC_V4: u16 = 0xfbee;
const LEAF_MAGIC_V5: u16 = 0x3bee;
const NODE_MAGIC_V4: u16 = 0xfebe;
const NODE_MAGIC_V5: u16 = 0x3ebe;
const RMT_MAGIC: &[u8; 4] = b"XARM";
const RMT_HDR: usize = 56;

const ACL_USER: u32 = 0x02;
const ACL_GROUP: u32 = 0x08;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// One attribute as stored: namespace flags, raw name, value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttr {
    pub flags: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Every user-visible attribute of `ino` as (full Linux name, value).
pub fn list(r: &Reader<'_>, ino: &Inode) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(list_raw(&raw(r, ino)?))
}

/// The user-visible attributes of a stored list as (full Linux name, value).
pub fn list_raw(attrs: &[RawAttr]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for a in attrs {
        if a.flags & (flag::PARENT | flag::INCOMPLETE) != 0 {
            continue;
        }
        if let Some(named) = to_linux(a) {
            out.push(named);
        }
    }
    out
}

/// The Linux name and value of an on-disk attribute (`None` if it has no Linux name).
fn to_linux(a: &RawAttr) -> Option<(String, Vec<u8>)> {
    let name = String::from_utf8_lossy(&a.name).into_owned();
    if a.flags & flag::ROOT != 0 {
        let acl = match a.name.as_slice() {
            b"SGI_ACL_FILE" => Some("system.posix_acl_access"),
            b"SGI_ACL_DEFAULT" => Some("system.posix_acl_default"),
            _ => None,
        };
        if let Some(sys) = acl {
            return acl_to_linux(&a.value).map(|v| (sys.to_string(), v));
        }
        return Some((format!("trusted.{name}"), a.value.clone()));
    }
    if a.flags & flag::SECURE != 0 {
        return Some((format!("security.{name}"), a.value.clone()));
    }
    Some((format!("user.{name}"), a.value.clone()))
}

/// XFS ACL (`be32 count`, entries of `be32 tag, be32 id, be16 perm, be16 pad`) to the Linux
/// xattr format (`le32 version 2`, entries of `le16 tag, le16 perm, le32 id`).
pub fn acl_to_linux(v: &[u8]) -> Option<Vec<u8>> {
    let n = u32_at(v, 0) as usize;
    if v.len() != 4 + n.checked_mul(12)? {
        return None;
    }
    let mut out = Vec::with_capacity(4 + 8 * n);
    out.extend_from_slice(&2u32.to_le_bytes());
    for i in 0..n {
        let e = 4 + 12 * i;
        let tag = u32_at(v, e);
        let id = match tag {
            ACL_USER | ACL_GROUP => u32_at(v, e + 4),
            _ => ACL_UNDEFINED_ID,
        };
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(&u16_at(v, e + 8).to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

/// Every attribute as stored.
pub fn raw(r: &Reader<'_>, ino: &Inode) -> Result<Vec<RawAttr>> {
    match ino.aformat {
        None => Ok(Vec::new()),
        Some(Format::Local) => shortform(ino),
        Some(Format::Extents) | Some(Format::Btree) => {
            let exts = bmap::extents(r, ino, Fork::Attr)?;
            if exts.is_empty() {
                return Ok(Vec::new());
            }
            blocks(r, ino, &exts)
        }
        Some(Format::Dev) => Err(corrupt(
            format!("attribute fork of inode {}", ino.ino),
            "device format",
        )),
    }
}

fn shortform(ino: &Inode) -> Result<Vec<RawAttr>> {
    let f = ino.attr_fork();
    let name = || format!("shortform attributes of inode {}", ino.ino);
    let total = usize::from(u16_at(f, 0));
    if total < 4 || total > f.len() {
        return Err(corrupt(name(), format!("total size {total}")));
    }
    let count = usize::from(u8_at(f, 2));
    let mut pos = 4;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let nl = usize::from(u8_at(f, pos));
        let vl = usize::from(u8_at(f, pos + 1));
        let fl = u8_at(f, pos + 2);
        if nl == 0 || pos + 3 + nl + vl > total {
            return Err(corrupt(name(), format!("entry {i} runs past the end")));
        }
        out.push(RawAttr {
            flags: fl,
            name: bytes(f, pos + 3, nl).to_vec(),
            value: bytes(f, pos + 3 + nl, vl).to_vec(),
        });
        pos += 3 + nl + vl;
    }
    Ok(out)
}

/// Read one attribute-fork block (a filesystem block) and check its da header.
fn read_da_block(r: &Reader<'_>, ino: &Inode, exts: &[Extent], fb: u64) -> Result<(Vec<u8>, u16)> {
    let what = || format!("attribute block {fb} of inode {}", ino.ino);
    let b = bmap::read_mapped(r, exts, fb, 1, &what)?;
    let magic = u16_at(&b, 8);
    if r.sb.is_v5() {
        if magic != LEAF_MAGIC_V5 && magic != NODE_MAGIC_V5 {
            return Err(corrupt(what(), "bad magic number"));
        }
        csum::verify(&b, 12, what)?;
        let daddr = bmap::lookup(exts, fb).map(|e| r.fsb_daddr(e.block + (fb - e.offset)));
        if Some(u64_at(&b, 16)) != daddr {
            return Err(corrupt(what(), "block number in the header is wrong"));
        }
        if bytes(&b, 32, 16) != r.sb.meta_uuid() {
            return Err(corrupt(what(), "UUID does not match the superblock"));
        }
        if u64_at(&b, 48) != ino.ino {
            return Err(corrupt(what(), format!("owner {}", u64_at(&b, 48))));
        }
    } else if magic != LEAF_MAGIC_V4 && magic != NODE_MAGIC_V4 {
        return Err(corrupt(what(), "bad magic number"));
    }
    let leaf = magic == LEAF_MAGIC_V4 || magic == LEAF_MAGIC_V5;
    Ok((b, if leaf { 0 } else { 1 }))
}

/// Walk the da-btree from block 0 down its leftmost path, then along the leaf chain.
fn blocks(r: &Reader<'_>, ino: &Inode, exts: &[Extent]) -> Result<Vec<RawAttr>> {
    let v5 = r.sb.is_v5();
    let total_blocks: u64 = exts.iter().map(|e| e.len).sum();
    let mut fb = 0u64;
    let mut depth = 0;
    // Descend.
    let mut b = loop {
        let (b, kind) = read_da_block(r, ino, exts, fb)?;
        if kind == 0 {
            break b;
        }
        depth += 1;
        let hdr = if v5 { 64 } else { 16 };
        let count = u16_at(&b, if v5 { 56 } else { 12 });
        if count == 0 || depth > 8 {
            return Err(corrupt(
                format!("attribute node block {fb} of inode {}", ino.ino),
                format!("{count} entries at depth {depth}"),
            ));
        }
        fb = u64::from(u32_at(&b, hdr + 4));
    };
    let mut out = Vec::new();
    let mut seen = 0u64;
    loop {
        seen += 1;
        if seen > total_blocks {
            return Err(corrupt(
                format!("attribute leaf chain of inode {}", ino.ino),
                "the chain loops",
            ));
        }
        leaf_entries(r, ino, exts, &b, fb, &mut out)?;
        let next = u32_at(&b, 0);
        if next == 0 {
            break;
        }
        fb = u64::from(next);
        let (nb, kind) = read_da_block(r, ino, exts, fb)?;
        if kind != 0 {
            return Err(corrupt(
                format!("attribute block {fb} of inode {}", ino.ino),
                "a node block in the leaf chain",
            ));
        }
        b = nb;
    }
    Ok(out)
}

fn leaf_entries(
    r: &Reader<'_>,
    ino: &Inode,
    exts: &[Extent],
    b: &[u8],
    fb: u64,
    out: &mut Vec<RawAttr>,
) -> Result<()> {
    let v5 = r.sb.is_v5();
    let name = || format!("attribute leaf block {fb} of inode {}", ino.ino);
    let (count_off, hdr) = if v5 { (56, 80) } else { (12, 32) };
    let count = usize::from(u16_at(b, count_off));
    if hdr + count * 8 > b.len() {
        return Err(corrupt(name(), format!("{count} entries")));
    }
    for i in 0..count {
        let e = hdr + i * 8;
        let idx = usize::from(u16_at(b, e + 4));
        let fl = u8_at(b, e + 6);
        if idx < hdr + count * 8 || idx >= b.len() {
            return Err(corrupt(name(), format!("entry {i} name index {idx}")));
        }
        if fl & flag::LOCAL != 0 {
            let vl = usize::from(u16_at(b, idx));
            let nl = usize::from(u8_at(b, idx + 2));
            if nl == 0 || idx + 3 + nl + vl > b.len() {
                return Err(corrupt(name(), format!("entry {i} runs past the block")));
            }
            out.push(RawAttr {
                flags: fl & !flag::LOCAL,
                name: bytes(b, idx + 3, nl).to_vec(),
                value: bytes(b, idx + 3 + nl, vl).to_vec(),
            });
        } else {
            let valueblk = u32_at(b, idx);
            let vl = u32_at(b, idx + 4) as usize;
            let nl = usize::from(u8_at(b, idx + 8));
            if nl == 0 || idx + 9 + nl > b.len() {
                return Err(corrupt(name(), format!("entry {i} runs past the block")));
            }
            let nm = bytes(b, idx + 9, nl).to_vec();
            let value = if fl & flag::INCOMPLETE != 0 {
                Vec::new()
            } else {
                remote_value(r, ino, exts, u64::from(valueblk), vl)?
            };
            out.push(RawAttr {
                flags: fl,
                name: nm,
                value,
            });
        }
    }
    Ok(())
}

/// A value stored in its own blocks of the attribute fork (v5: each block has a header).
fn remote_value(
    r: &Reader<'_>,
    ino: &Inode,
    exts: &[Extent],
    fb: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let bs = r.sb.blocksize as usize;
    let v5 = r.sb.is_v5();
    let per = if v5 { bs - RMT_HDR } else { bs };
    if len > 64 << 10 {
        return Err(corrupt(
            format!("attribute of inode {}", ino.ino),
            format!("remote value of {len} bytes (at most 64 KiB)"),
        ));
    }
    let nblocks = len.div_ceil(per).max(1);
    let mut out = Vec::with_capacity(len);
    for i in 0..nblocks as u64 {
        let what = || format!("remote attribute block {} of inode {}", fb + i, ino.ino);
        let b = bmap::read_mapped(r, exts, fb + i, 1, &what)?;
        let want = (len - out.len()).min(per);
        if v5 {
            if bytes(&b, 0, 4) != RMT_MAGIC {
                return Err(corrupt(what(), "bad magic number"));
            }
            csum::verify(&b, 12, what)?;
            if u32_at(&b, 4) as usize != out.len() || u32_at(&b, 8) as usize != want {
                return Err(corrupt(
                    what(),
                    format!("offset {} size {}", u32_at(&b, 4), u32_at(&b, 8)),
                ));
            }
            if bytes(&b, 16, 16) != r.sb.meta_uuid() || u64_at(&b, 32) != ino.ino {
                return Err(corrupt(what(), "UUID or owner is wrong"));
            }
            out.extend_from_slice(bytes(&b, RMT_HDR, want));
        } else {
            out.extend_from_slice(bytes(&b, 0, want));
        }
    }
    Ok(out)
}
