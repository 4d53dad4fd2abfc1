//! The extended-attribute encoder: an inode's complete attribute list in, its attribute fork
//! out, in the form XFS itself would keep it in.
//!
//! The write side edits attributes in memory and re-encodes the whole fork at flush (see the
//! XFS write design): [`encode`] is pure, it only turns a list into bytes.
//!
//! Forms, smallest first, chosen the way XFS chooses them:
//! - **shortform**: in the inode, when every name and value is under 255 bytes and the list
//!   fits the space the caller gives (`xfs_attr_shortform_allfit`/`_bytesfit`);
//! - **leaf**: one da block at attribute-fork block 0 (entries sorted by name hash,
//!   name/value records packed from the end of the block, one free region), values too large
//!   for the leaf (a local record of 3/4 of the block or more) in **remote** value blocks;
//! - **node**: a da-btree: a root node at block 0 (and lower node levels if needed) whose
//!   entries are (highest hash below, child block) pairs, over a chain of leaf blocks linked
//!   both ways.
//!
//! Remote value blocks come after all leaf and node blocks, one value after another in leaf
//! order. On v5 every remote block has its own `xfs_attr3_rmt_hdr` (56 bytes: magic, byte
//! offset and count of the value bytes in this block, CRC, UUID, owner, own address, LSN).
//!
//! v5 headers (block address, LSN, UUID, owner, CRC) are filled by [`stamp`] once the caller
//! knows where each block goes.

use crate::attr::{RawAttr, flag};
use crate::csum;
use crate::error::{Result, XfsError};
use crate::hash::da_hashname;
use crate::meta::Stamp;
use crate::superblock::Superblock;

/// Longest attribute name as stored on disk (without a namespace prefix).
pub const NAME_MAX: usize = 255;
/// Largest attribute value (Linux's `XATTR_SIZE_MAX`).
pub const VALUE_MAX: usize = 65536;
/// Longest full Linux xattr name, prefix included (`XATTR_NAME_MAX`).
pub const LINUX_NAME_MAX: usize = 255;

/// Size of the shortform header (`totsize`, `count`, padding).
pub const SF_HDR: usize = 4;
/// Names and values must be shorter than this to be kept in shortform.
const SF_ENTSIZE_MAX: usize = 0xff;
const ENTRY: usize = 8;
const RMT_HDR: usize = 56;
/// Levels of a da-btree, leaves included (`XFS_DA_NODE_MAXDEPTH`).
const DA_MAXDEPTH: usize = 5;

const LEAF_MAGIC_V4: u16 = 0xfbee;
const LEAF_MAGIC_V5: u16 = 0x3bee;
const NODE_MAGIC_V4: u16 = 0xfebe;
const NODE_MAGIC_V5: u16 = 0x3ebe;
const RMT_MAGIC: &[u8; 4] = b"XARM";

const ACL_USER_OBJ: u32 = 0x01;
const ACL_USER: u32 = 0x02;
const ACL_GROUP_OBJ: u32 = 0x04;
const ACL_GROUP: u32 = 0x08;
const ACL_MASK: u32 = 0x10;
const ACL_OTHER: u32 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
/// Most entries an XFS ACL may have on a v5 filesystem (`XFS_ACL_MAX_ENTRIES`: the value
/// must fit in 64 KiB).
pub const ACL_MAX_ENTRIES: usize = (VALUE_MAX - 4) / 12;

/// What the encoder needs of the filesystem geometry. Attribute da blocks are always one
/// filesystem block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrGeom {
    /// v5 (CRC) headers; v4 headers otherwise.
    pub v5: bool,
    /// Filesystem block size.
    pub blocksize: u32,
}

impl AttrGeom {
    /// The attribute geometry of a filesystem.
    pub fn from_sb(sb: &Superblock) -> AttrGeom {
        AttrGeom {
            v5: sb.is_v5(),
            blocksize: sb.blocksize,
        }
    }

    fn bs(&self) -> usize {
        self.blocksize as usize
    }

    /// Size of a leaf block header (`xfs_attr3_leaf_hdr` / `xfs_attr_leaf_hdr`).
    pub fn leaf_hdr(&self) -> usize {
        if self.v5 { 80 } else { 32 }
    }

    /// Size of a node block header (`xfs_da3_node_hdr` / `xfs_da_node_hdr`).
    pub fn node_hdr(&self) -> usize {
        if self.v5 { 64 } else { 16 }
    }

    /// Entries (hash, child) a node block holds.
    pub fn node_max_ents(&self) -> usize {
        (self.bs() - self.node_hdr()) / ENTRY
    }

    /// Value bytes one remote value block holds.
    pub fn rmt_space(&self) -> usize {
        if self.v5 {
            self.bs() - RMT_HDR
        } else {
            self.bs()
        }
    }

    /// Blocks a remote value of `len` bytes takes (`xfs_attr3_rmt_blocks`).
    pub fn rmt_blocks(&self, len: usize) -> u64 {
        len.div_ceil(self.rmt_space()) as u64
    }

    /// Size of the name/value record of an attribute in a leaf block and whether its value
    /// is kept there (local) rather than in remote blocks (`xfs_attr_leaf_newentsize`).
    pub fn leaf_entsize(&self, name_len: usize, value_len: usize) -> (usize, bool) {
        let local = (3 + name_len + value_len).next_multiple_of(4);
        // xfs_attr_leaf_entsize_local_max: 3/4 of the block.
        if local < self.bs() / 2 + self.bs() / 4 {
            (local, true)
        } else {
            ((11 + name_len).next_multiple_of(4), false)
        }
    }
}

/// The kind of one block of an encoded attribute fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrBlockKind {
    /// An attribute leaf block (magic `0x3bee`, v4 `0xfbee`).
    Leaf,
    /// A da-btree node block (magic `0x3ebe`, v4 `0xfebe`).
    Node,
    /// A block of a remote value (v5: with its `XARM` header; v4: raw bytes).
    Remote,
}

/// One filesystem block of an encoded attribute fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrBlockImage {
    /// Logical block in the attribute fork, in filesystem blocks.
    pub lblk: u64,
    /// `blocksize` bytes.
    pub data: Vec<u8>,
    pub kind: AttrBlockKind,
    /// The block has a v5 header (so [`stamp`] has something to fill).
    pub v5: bool,
}

/// An encoded attribute fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrImage {
    /// The shortform attr fork bytes (header totsize/count + entries), `totsize` long; the
    /// inode's attribute fork format is "local". Entries keep the order of the input list.
    Short(Vec<u8>),
    /// Blocks at logical attr-fork offsets `lblk` (fs blocks): leaf/node blocks from 0 (the
    /// root at 0), then remote value blocks; sorted by `lblk`, no holes. v5 headers are left
    /// to [`stamp`].
    Blocks(Vec<AttrBlockImage>),
}

/// The form of an encoded attribute fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrForm {
    Shortform,
    Leaf,
    Node,
}

impl AttrImage {
    /// Which form this is (leaf: block 0 is a leaf; node: block 0 is a node).
    pub fn form(&self) -> AttrForm {
        match self {
            AttrImage::Short(_) => AttrForm::Shortform,
            AttrImage::Blocks(b) => match b.first().map(|x| x.kind) {
                Some(AttrBlockKind::Node) => AttrForm::Node,
                _ => AttrForm::Leaf,
            },
        }
    }

    /// Filesystem blocks the fork occupies (0 for shortform): the attribute fork's extents
    /// must map logical blocks `0..fs_blocks()`.
    pub fn fs_blocks(&self) -> u64 {
        match self {
            AttrImage::Short(_) => 0,
            AttrImage::Blocks(b) => b.len() as u64,
        }
    }
}

fn invalid(msg: String) -> XfsError {
    XfsError::Invalid(msg)
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// The namespace bits an attribute may carry here (one at most).
const NS_MASK: u8 = flag::ROOT | flag::SECURE;

/// Check one attribute list before encoding: names 1..=255 bytes without NUL, values up to
/// 64 KiB, one namespace (user, trusted, secure) at most, no parent pointers or incomplete
/// entries, no duplicate (namespace, name), XFS ACLs valid as `xfs_repair` checks them.
fn check(attrs: &[RawAttr]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for a in attrs {
        let n = &a.name;
        if n.is_empty() || n.len() > NAME_MAX || n.contains(&0) {
            return Err(invalid(format!(
                "extended attribute name `{}` ({} bytes): must be 1..=255 bytes without NUL",
                show(n),
                n.len()
            )));
        }
        if a.value.len() > VALUE_MAX {
            return Err(invalid(format!(
                "extended attribute `{}`: value of {} bytes (at most {VALUE_MAX})",
                show(n),
                a.value.len()
            )));
        }
        let ns = a.flags & !flag::LOCAL;
        if ns & !NS_MASK != 0 || ns == NS_MASK {
            return Err(invalid(format!(
                "extended attribute `{}`: flags {:#x} (only one of the user, trusted and \
                 secure namespaces can be written)",
                show(n),
                a.flags
            )));
        }
        if !seen.insert((ns, n.as_slice())) {
            return Err(invalid(format!(
                "extended attribute `{}` appears twice in one namespace",
                show(n)
            )));
        }
        if ns == flag::ROOT && (n == b"SGI_ACL_FILE" || n == b"SGI_ACL_DEFAULT") {
            check_xfs_acl(&a.value)
                .map_err(|e| invalid(format!("POSIX ACL `trusted.{}`: {e}", show(n))))?;
        }
    }
    Ok(())
}

/// An XFS on-disk ACL as `xfs_repair` accepts it (`xfs_acl_valid`): one USER_OBJ, GROUP_OBJ
/// and OTHER, at most one MASK (required with named users or groups), no duplicate named
/// entry, permissions rwx only.
fn check_xfs_acl(v: &[u8]) -> std::result::Result<(), String> {
    let be32 = |o: usize| u32::from_be_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
    if v.len() < 4 {
        return Err(format!("{} bytes", v.len()));
    }
    let n = be32(0) as usize;
    if n > ACL_MAX_ENTRIES || v.len() != 4 + 12 * n {
        return Err(format!("{n} entries in {} bytes", v.len()));
    }
    let ents: Vec<(u32, u32, u16)> = (0..n)
        .map(|i| {
            let e = 4 + 12 * i;
            (
                be32(e),
                be32(e + 4),
                u16::from_be_bytes([v[e + 8], v[e + 9]]),
            )
        })
        .collect();
    let (mut user, mut group, mut other, mut mask, mut named) = (0, 0, 0, 0, false);
    for (i, &(tag, id, perm)) in ents.iter().enumerate() {
        if perm & !7 != 0 {
            return Err(format!("entry {i}: permissions {perm:#o}"));
        }
        match tag {
            ACL_USER_OBJ => user += 1,
            ACL_GROUP_OBJ => group += 1,
            ACL_OTHER => other += 1,
            ACL_MASK => mask += 1,
            ACL_USER | ACL_GROUP => {
                named = true;
                if ents[i + 1..].iter().any(|&(t, d, _)| t == tag && d == id) {
                    return Err(format!("entry {i}: id {id} appears twice"));
                }
            }
            _ => return Err(format!("entry {i}: tag {tag:#x}")),
        }
    }
    if user != 1 || group != 1 || other != 1 || mask > 1 || (named && mask == 0) {
        return Err("needs one user, group and other entry (and a mask with named entries)".into());
    }
    Ok(())
}

/// The shortform size of these attributes (header included), or `None` if they cannot be
/// shortform (a name or value of 255 bytes or more). The caller picks the fork offset from
/// it as `xfs_attr_shortform_bytesfit` does. An empty list gives the bare header (4); the
/// kernel removes the attribute fork instead when the last attribute goes (unless the data
/// fork is a btree).
pub fn short_size(attrs: &[RawAttr]) -> Option<usize> {
    let mut size = SF_HDR;
    for a in attrs {
        if a.name.len() >= SF_ENTSIZE_MAX || a.value.len() >= SF_ENTSIZE_MAX {
            return None;
        }
        size += 3 + a.name.len() + a.value.len();
    }
    // `count` is one byte.
    (attrs.len() <= 255).then_some(size)
}

/// The inode's data fork as [`shortform_forkoff`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFork {
    /// A device inode (its fork is the 4-byte device number, 8 bytes rounded).
    Dev,
    /// Shortform directory or local symlink: bytes in use (the inode's `di_size`).
    Local(usize),
    /// Extent list: bytes in use (16 per extent).
    Extents(usize),
    /// B+tree root: the space of the kernel's in-core root (`XFS_BMAP_BROOT_SPACE`:
    /// the long-form btree block header, 72 bytes on v5 and 24 on v4, plus 16 bytes per
    /// record of the root).
    Btree(usize),
}

/// `XFS_BMDR_SPACE_CALC`: an on-disk bmbt root of `n` records.
const fn bmdr_space(n: usize) -> usize {
    4 + 16 * n
}

/// The attribute fork offset (in 8-byte units, as `di_forkoff`) that XFS gives a shortform
/// attribute fork of `bytes` bytes ([`short_size`]), or `None` when it does not fit in the
/// inode (then the fork takes blocks): `xfs_attr_shortform_bytesfit` on an attr2 filesystem
/// (every v5 one). `inodesize`/`v5` give the literal area, `data` the data fork,
/// `cur_forkoff` the inode's fork offset now (0 without an attribute fork). The shortform
/// space to give [`encode`] is then `literal area - 8 * forkoff`.
pub fn shortform_forkoff(
    inodesize: u16,
    v5: bool,
    data: DataFork,
    cur_forkoff: u8,
    bytes: usize,
) -> Option<u8> {
    let litino = usize::from(inodesize).checked_sub(if v5 { 176 } else { 100 })?;
    if bytes > litino {
        return None;
    }
    let offset = (litino - bytes) >> 3;
    let fo = |v: usize| u8::try_from(v).ok();
    if data == DataFork::Dev {
        return (offset >= 1).then_some(1);
    }
    let cur = usize::from(cur_forkoff);
    if cur != 0 && bytes <= litino - 8 * cur {
        return Some(cur_forkoff);
    }
    let dsize = match data {
        DataFork::Dev => 0,
        DataFork::Local(b) => b,
        DataFork::Extents(b) => {
            // xfs_default_attroffset: where a new attribute fork starts by default.
            let default = if inodesize == 256 {
                litino - bmdr_space(2)
            } else {
                bmdr_space(12)
            };
            if cur == 0 && b > default {
                bmdr_space(3)
            } else {
                b
            }
        }
        DataFork::Btree(space) => {
            if cur != 0 {
                return (offset >= cur).then_some(cur_forkoff);
            }
            space
        }
    };
    let minforkoff = dsize.max(bmdr_space(3)).next_multiple_of(8) >> 3;
    let maxforkoff = (litino - bmdr_space(2)) >> 3;
    if offset >= maxforkoff {
        fo(maxforkoff)
    } else if offset >= minforkoff {
        fo(offset)
    } else {
        None
    }
}

/// Encode the attribute fork of inode `owner_ino` holding exactly `attrs`.
///
/// `fork_space`: bytes available for a shortform attr fork in the inode (the caller picks
/// forkoff). Returns the smallest form that holds them, the way XFS chooses: shortform when
/// [`short_size`] is `Some(n)` with `n <= fork_space`, else one leaf block when every entry
/// fits in it, else a node tree. An empty list is always `Short` (the bare header).
///
/// Errors (`XfsError::Invalid`): a name that is empty, over 255 bytes or holds a NUL, a value
/// over 64 KiB, flags other than one namespace (ROOT or SECURE; parent pointers and
/// incomplete entries are refused), a duplicate name in a namespace, an invalid XFS ACL in
/// `trusted.SGI_ACL_FILE`/`SGI_ACL_DEFAULT`. `XfsError::NoSpace` if the tree would need more
/// than 5 levels.
pub fn encode(
    g: &AttrGeom,
    owner_ino: u64,
    attrs: &[RawAttr],
    fork_space: usize,
) -> Result<AttrImage> {
    check(attrs)?;
    if attrs.is_empty() {
        return Ok(AttrImage::Short(shortform(attrs)));
    }
    if let Some(n) = short_size(attrs)
        && n <= fork_space
    {
        return Ok(AttrImage::Short(shortform(attrs)));
    }
    Ok(AttrImage::Blocks(blocks(g, owner_ino, attrs)?))
}

fn shortform(attrs: &[RawAttr]) -> Vec<u8> {
    let mut b = vec![0u8; SF_HDR];
    for a in attrs {
        b.push(a.name.len() as u8);
        b.push(a.value.len() as u8);
        b.push(a.flags & NS_MASK);
        b.extend_from_slice(&a.name);
        b.extend_from_slice(&a.value);
    }
    let total = b.len() as u16;
    b[0..2].copy_from_slice(&total.to_be_bytes());
    b[2] = attrs.len() as u8;
    b
}

/// One attribute as a leaf entry.
struct Ent<'a> {
    hash: u32,
    a: &'a RawAttr,
    /// Size of its name/value record.
    size: usize,
    local: bool,
    /// First remote value block (remote entries).
    valueblk: u32,
}

fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_be_bytes());
}

fn blocks(g: &AttrGeom, owner: u64, attrs: &[RawAttr]) -> Result<Vec<AttrBlockImage>> {
    let mut ents: Vec<Ent<'_>> = attrs
        .iter()
        .map(|a| {
            let (size, local) = g.leaf_entsize(a.name.len(), a.value.len());
            Ent {
                hash: da_hashname(&a.name),
                a,
                size,
                local,
                valueblk: 0,
            }
        })
        .collect();
    // Stable: attributes with equal hashes keep the order of the list.
    ents.sort_by_key(|e| e.hash);
    let leaves = pack_leaves(g, &ents);

    // Block numbers: node blocks (root first), then leaves, then remote values.
    let mut levels: Vec<usize> = Vec::new(); // node blocks per level, level 1 first
    if leaves.len() > 1 {
        let mut n = leaves.len();
        while n > 1 {
            n = n.div_ceil(g.node_max_ents());
            levels.push(n);
        }
    }
    if levels.len() + 1 > DA_MAXDEPTH {
        return Err(XfsError::NoSpace(format!(
            "{} attributes need a da-btree of {} levels (at most {DA_MAXDEPTH})",
            attrs.len(),
            levels.len() + 1
        )));
    }
    let nodes: usize = levels.iter().sum();
    let da_blocks = (nodes + leaves.len()) as u64;
    let mut next_rmt = da_blocks;
    for e in ents.iter_mut().filter(|e| !e.local) {
        e.valueblk = u32::try_from(next_rmt)
            .map_err(|_| XfsError::NoSpace("attribute fork past 2^32 blocks".into()))?;
        next_rmt += g.rmt_blocks(e.a.value.len());
    }

    let mut out = Vec::new();
    // Leaves at nodes.., in hash order; (last hash, lblk) per leaf.
    let first_leaf = nodes as u64;
    let nleaves = leaves.len() as u64;
    let mut children = Vec::with_capacity(leaves.len());
    let mut start = 0;
    for (i, &cnt) in leaves.iter().enumerate() {
        let group = &ents[start..start + cnt];
        start += cnt;
        let lblk = first_leaf + i as u64;
        let back = if i == 0 { 0 } else { lblk - 1 };
        let forw = if i as u64 + 1 == nleaves { 0 } else { lblk + 1 };
        out.push(AttrBlockImage {
            lblk,
            data: leaf_block(g, owner, group, forw as u32, back as u32),
            kind: AttrBlockKind::Leaf,
            v5: g.v5,
        });
        children.push((group.last().map_or(0, |e| e.hash), lblk));
    }
    // Node levels bottom-up; the top level's single block is the root at 0, the others are
    // numbered downwards from just before the leaves.
    let mut node_blocks = Vec::new();
    let mut next_free = first_leaf;
    for (li, &count) in levels.iter().enumerate() {
        let top = li + 1 == levels.len();
        let base = if top { 0 } else { next_free - count as u64 };
        next_free = base;
        let mut parents = Vec::with_capacity(count);
        let per = children.len() / count;
        let extra = children.len() % count;
        let mut at = 0;
        for j in 0..count {
            let n = per + usize::from(j < extra);
            let kids = &children[at..at + n];
            at += n;
            let lblk = base + j as u64;
            let back = if j == 0 { 0 } else { lblk - 1 };
            let forw = if j + 1 == count { 0 } else { lblk + 1 };
            node_blocks.push(AttrBlockImage {
                lblk,
                data: node_block(g, owner, (li + 1) as u16, kids, forw as u32, back as u32),
                kind: AttrBlockKind::Node,
                v5: g.v5,
            });
            parents.push((kids.last().map_or(0, |k| k.0), lblk));
        }
        children = parents;
    }
    out.extend(node_blocks);
    for e in ents.iter().filter(|e| !e.local) {
        out.extend(remote_blocks(g, owner, e));
    }
    out.sort_by_key(|b| b.lblk);
    Ok(out)
}

/// Split the hash-sorted entries into leaves (entry counts), each as full as it can be,
/// without splitting a run of equal hashes across two leaves when the run can start the
/// next leaf instead.
fn pack_leaves(g: &AttrGeom, ents: &[Ent<'_>]) -> Vec<usize> {
    let cap = g.bs() - g.leaf_hdr();
    let mut out = Vec::new();
    let mut start = 0;
    while start < ents.len() {
        let mut used = 0;
        let mut end = start;
        while end < ents.len() && used + ENTRY + ents[end].size <= cap {
            used += ENTRY + ents[end].size;
            end += 1;
        }
        // A single record always fits (records are under 3/4 of the block).
        end = end.max(start + 1);
        if end < ents.len() && ents[end].hash == ents[end - 1].hash {
            let h = ents[end].hash;
            let mut cut = end;
            while cut > start && ents[cut - 1].hash == h {
                cut -= 1;
            }
            if cut > start {
                end = cut;
            }
        }
        out.push(end - start);
        start = end;
    }
    out
}

fn da_header(
    g: &AttrGeom,
    b: &mut [u8],
    owner: u64,
    magic_v5: u16,
    magic_v4: u16,
    forw: u32,
    back: u32,
) {
    put32(b, 0, forw);
    put32(b, 4, back);
    put16(b, 8, if g.v5 { magic_v5 } else { magic_v4 });
    if g.v5 {
        put64(b, 48, owner);
    }
}

fn leaf_block(g: &AttrGeom, owner: u64, ents: &[Ent<'_>], forw: u32, back: u32) -> Vec<u8> {
    let bs = g.bs();
    let hdr = g.leaf_hdr();
    let mut b = vec![0u8; bs];
    da_header(g, &mut b, owner, LEAF_MAGIC_V5, LEAF_MAGIC_V4, forw, back);
    let mut pos = bs;
    let mut used = 0usize;
    for (i, e) in ents.iter().enumerate() {
        pos -= e.size;
        used += e.size;
        let a = e.a;
        let nl = a.name.len();
        if e.local {
            put16(&mut b, pos, a.value.len() as u16);
            b[pos + 2] = nl as u8;
            b[pos + 3..pos + 3 + nl].copy_from_slice(&a.name);
            b[pos + 3 + nl..pos + 3 + nl + a.value.len()].copy_from_slice(&a.value);
        } else {
            put32(&mut b, pos, e.valueblk);
            put32(&mut b, pos + 4, a.value.len() as u32);
            b[pos + 8] = nl as u8;
            b[pos + 9..pos + 9 + nl].copy_from_slice(&a.name);
        }
        let at = hdr + i * ENTRY;
        put32(&mut b, at, e.hash);
        put16(&mut b, at + 4, pos as u16);
        b[at + 6] = (a.flags & NS_MASK) | if e.local { flag::LOCAL } else { 0 };
    }
    let (count_off, map_off) = if g.v5 { (56, 64) } else { (12, 20) };
    put16(&mut b, count_off, ents.len() as u16);
    put16(&mut b, count_off + 2, used as u16);
    // firstused: a 64 KiB block's end does not fit in 16 bits (only an empty block has it).
    put16(
        &mut b,
        count_off + 4,
        if pos > 0xffff { 0 } else { pos as u16 },
    );
    // One free region, between the entry table and the records (as after compaction).
    let base = hdr + ents.len() * ENTRY;
    put16(&mut b, map_off, base as u16);
    put16(&mut b, map_off + 2, (pos - base) as u16);
    b
}

fn node_block(
    g: &AttrGeom,
    owner: u64,
    level: u16,
    kids: &[(u32, u64)],
    forw: u32,
    back: u32,
) -> Vec<u8> {
    let mut b = vec![0u8; g.bs()];
    da_header(g, &mut b, owner, NODE_MAGIC_V5, NODE_MAGIC_V4, forw, back);
    let count_off = if g.v5 { 56 } else { 12 };
    put16(&mut b, count_off, kids.len() as u16);
    put16(&mut b, count_off + 2, level);
    for (i, &(hash, lblk)) in kids.iter().enumerate() {
        let at = g.node_hdr() + i * ENTRY;
        put32(&mut b, at, hash);
        put32(&mut b, at + 4, lblk as u32);
    }
    b
}

fn remote_blocks(g: &AttrGeom, owner: u64, e: &Ent<'_>) -> Vec<AttrBlockImage> {
    let v = &e.a.value;
    let per = g.rmt_space();
    (0..g.rmt_blocks(v.len()) as usize)
        .map(|i| {
            let chunk = &v[i * per..((i + 1) * per).min(v.len())];
            let mut b = vec![0u8; g.bs()];
            let data_at = if g.v5 {
                b[0..4].copy_from_slice(RMT_MAGIC);
                put32(&mut b, 4, (i * per) as u32);
                put32(&mut b, 8, chunk.len() as u32);
                put64(&mut b, 32, owner);
                RMT_HDR
            } else {
                0
            };
            b[data_at..data_at + chunk.len()].copy_from_slice(chunk);
            AttrBlockImage {
                lblk: u64::from(e.valueblk) + i as u64,
                data: b,
                kind: AttrBlockKind::Remote,
                v5: g.v5,
            }
        })
        .collect()
}

/// Fill a v5 block's header — its own address `daddr` (512-byte units), the owner inode,
/// the metadata UUID and LSN of `stamp` — and its CRC. No-op on v4 blocks.
pub fn stamp(block: &mut AttrBlockImage, daddr: u64, owner: u64, stamp: &Stamp) {
    if !block.v5 || block.data.len() < RMT_HDR.max(64) {
        return;
    }
    let b = &mut block.data;
    match block.kind {
        AttrBlockKind::Leaf | AttrBlockKind::Node => {
            // xfs_da3_blkinfo: forw, back, magic, pad, crc, blkno, lsn, uuid, owner.
            put64(b, 16, daddr);
            put64(b, 24, stamp.lsn);
            b[32..48].copy_from_slice(&stamp.uuid);
            put64(b, 48, owner);
        }
        AttrBlockKind::Remote => {
            // xfs_attr3_rmt_hdr: magic, offset, bytes, crc, uuid, owner, blkno, lsn.
            b[16..32].copy_from_slice(&stamp.uuid);
            put64(b, 32, owner);
            put64(b, 40, daddr);
            put64(b, 48, stamp.lsn);
        }
    }
    let c = csum::compute(b, 12);
    b[12..16].copy_from_slice(&c.to_le_bytes());
}

/// The on-disk key (namespace flags, name) of a Linux xattr name: `user.x` → (0, `x`),
/// `trusted.x` → (ROOT, `x`), `security.x` → (SECURE, `x`), the POSIX ACLs →
/// (ROOT, `SGI_ACL_FILE`/`SGI_ACL_DEFAULT`). Anything else is an error naming it.
pub fn linux_key(name: &str) -> Result<(u8, Vec<u8>)> {
    let nb = name.as_bytes();
    if nb.len() > LINUX_NAME_MAX || nb.contains(&0) {
        return Err(invalid(format!(
            "extended attribute name `{name}` ({} bytes): at most {LINUX_NAME_MAX} bytes \
             without NUL",
            nb.len()
        )));
    }
    match name {
        "system.posix_acl_access" => return Ok((flag::ROOT, b"SGI_ACL_FILE".to_vec())),
        "system.posix_acl_default" => return Ok((flag::ROOT, b"SGI_ACL_DEFAULT".to_vec())),
        _ => {}
    }
    let (flags, rest) = if let Some(r) = name.strip_prefix("user.") {
        (0, r)
    } else if let Some(r) = name.strip_prefix("trusted.") {
        (flag::ROOT, r)
    } else if let Some(r) = name.strip_prefix("security.") {
        (flag::SECURE, r)
    } else {
        return Err(invalid(format!(
            "extended attribute `{name}`: unknown namespace (XFS keeps user., trusted., \
             security. and the POSIX ACLs system.posix_acl_access/_default)"
        )));
    };
    if rest.is_empty() {
        return Err(invalid(format!(
            "extended attribute `{name}`: empty name after the namespace prefix"
        )));
    }
    Ok((flags, rest.as_bytes().to_vec()))
}

/// A Linux xattr (full name with its namespace prefix, value) as XFS stores it.
///
/// `user.` → no namespace flag, `trusted.` → ROOT, `security.` → SECURE;
/// `system.posix_acl_access` / `system.posix_acl_default` (Linux's little-endian ACL xattr
/// format, version 2) → XFS's own ACL attributes `SGI_ACL_FILE` / `SGI_ACL_DEFAULT` with
/// ROOT, in XFS's big-endian ACL format (the inverse of [`crate::attr::acl_to_linux`]; ids
/// of entries other than named users and groups become `ACL_UNDEFINED_ID`, as the kernel
/// writes them).
///
/// Errors (`XfsError::Invalid`): an unknown namespace (other `system.` names included), an
/// empty name after the prefix, a full name over 255 bytes or with a NUL, a value over
/// 64 KiB, an ACL that the kernel would refuse (`posix_acl_valid`: bad version or size, no
/// entries, entries out of order, permissions other than rwx) or that `xfs_repair` would
/// (`xfs_acl_valid`: a named user or group twice), or one of more than
/// [`ACL_MAX_ENTRIES`] entries.
///
/// Note for callers: the kernel stores no access ACL that the mode bits express exactly
/// (only user/group/other entries) and sets the mode from an access ACL; that policy is the
/// caller's, this function only converts.
pub fn from_linux(name: &str, value: &[u8]) -> Result<RawAttr> {
    let (flags, key) = linux_key(name)?;
    if value.len() > VALUE_MAX {
        return Err(invalid(format!(
            "extended attribute `{name}`: value of {} bytes (at most {VALUE_MAX})",
            value.len()
        )));
    }
    if name.starts_with("system.posix_acl_") {
        return Ok(RawAttr {
            flags,
            name: key,
            value: acl_from_linux(value)
                .map_err(|e| invalid(format!("POSIX ACL `{name}`: {e}")))?,
        });
    }
    let a = RawAttr {
        flags,
        name: key,
        value: value.to_vec(),
    };
    check(std::slice::from_ref(&a))?;
    Ok(a)
}

/// Linux ACL xattr (`le32 version 2`, entries `le16 tag, le16 perm, le32 id`) to the XFS
/// on-disk ACL (`be32 count`, entries `be32 tag, be32 id, be16 perm, be16 pad`).
fn acl_from_linux(v: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let le32 = |o: usize| u32::from_le_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]);
    let le16 = |o: usize| u16::from_le_bytes([v[o], v[o + 1]]);
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) {
        return Err(format!("{} bytes is not a Linux ACL xattr", v.len()));
    }
    if le32(0) != 2 {
        return Err(format!("version {} (only 2 exists)", le32(0)));
    }
    let n = (v.len() - 4) / 8;
    if n == 0 {
        return Err("no entries (remove the attribute instead)".into());
    }
    if n > ACL_MAX_ENTRIES {
        return Err(format!("{n} entries (XFS keeps at most {ACL_MAX_ENTRIES})"));
    }
    // The kernel's posix_acl_valid: USER_OBJ, USERs, GROUP_OBJ, GROUPs, MASK, OTHER.
    let mut state = ACL_USER_OBJ;
    let mut needs_mask = false;
    let mut out = Vec::with_capacity(4 + 12 * n);
    out.extend_from_slice(&(n as u32).to_be_bytes());
    let mut named: Vec<(u32, u32)> = Vec::new();
    for i in 0..n {
        let e = 4 + 8 * i;
        let tag = u32::from(le16(e));
        let perm = le16(e + 2);
        let id = le32(e + 4);
        if perm & !7 != 0 {
            return Err(format!("entry {i}: permissions {perm:#o}"));
        }
        let bad = || format!("entry {i}: tag {tag:#x} out of order or repeated");
        match tag {
            ACL_USER_OBJ if state == ACL_USER_OBJ => state = ACL_USER,
            ACL_USER if state == ACL_USER => needs_mask = true,
            ACL_GROUP_OBJ if state == ACL_USER => state = ACL_GROUP,
            ACL_GROUP if state == ACL_GROUP => needs_mask = true,
            ACL_MASK if state == ACL_GROUP => state = ACL_OTHER,
            ACL_OTHER if state == ACL_OTHER || (state == ACL_GROUP && !needs_mask) => state = 0,
            _ => return Err(bad()),
        }
        let disk_id = match tag {
            ACL_USER | ACL_GROUP => {
                if named.contains(&(tag, id)) {
                    return Err(format!("entry {i}: id {id} appears twice"));
                }
                named.push((tag, id));
                id
            }
            _ => ACL_UNDEFINED_ID,
        };
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&disk_id.to_be_bytes());
        out.extend_from_slice(&perm.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    if state != 0 {
        return Err(
            "incomplete (needs user, group, other entries, and a mask with named ones)".into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::acl_to_linux;

    fn ra(flags: u8, name: &str, vlen: usize) -> RawAttr {
        RawAttr {
            flags,
            name: name.as_bytes().to_vec(),
            value: (0..vlen).map(|i| (i * 7 + name.len()) as u8).collect(),
        }
    }

    const G4: AttrGeom = AttrGeom {
        v5: true,
        blocksize: 4096,
    };
    const G1: AttrGeom = AttrGeom {
        v5: true,
        blocksize: 1024,
    };

    #[test]
    fn shortform_bytes_and_limits() {
        let a = vec![ra(0, "comment", 11), ra(flag::SECURE, "selinux", 3)];
        assert_eq!(short_size(&a), Some(4 + 3 + 7 + 11 + 3 + 7 + 3));
        let AttrImage::Short(b) = encode(&G4, 131, &a, 200).unwrap() else {
            panic!("not shortform")
        };
        assert_eq!(&b[..4], &[0, 38, 2, 0]);
        assert_eq!(&b[4..7], &[7, 11, 0]);
        assert_eq!(&b[7..14], b"comment");
        assert_eq!(b[25 + 2], flag::SECURE);
        // 254-byte values are shortform, 255 are not.
        assert!(short_size(&[ra(0, "x", 254)]).is_some());
        assert!(short_size(&[ra(0, "x", 255)]).is_none());
        assert!(short_size(&[ra(0, &"n".repeat(255), 0)]).is_none());
        // Too big for the fork: a leaf.
        let big = vec![ra(0, "a", 200), ra(0, "b", 200)];
        assert_eq!(encode(&G4, 131, &big, 300).unwrap().form(), AttrForm::Leaf);
        assert_eq!(encode(&G4, 131, &big, 411).unwrap().form(), AttrForm::Leaf);
        assert_eq!(
            encode(&G4, 131, &big, 412).unwrap().form(),
            AttrForm::Shortform
        );
        assert_eq!(
            encode(&G4, 131, &[], 0).unwrap(),
            AttrImage::Short(vec![0, 4, 0, 0])
        );
    }

    #[test]
    fn forkoff_like_bytesfit() {
        let f = |d, cur, b| shortform_forkoff(512, true, d, cur, b);
        assert_eq!(f(DataFork::Extents(0), 0, 280), Some(7));
        assert_eq!(f(DataFork::Extents(0), 0, 281), None);
        assert_eq!(f(DataFork::Extents(0), 0, 4), Some(37));
        assert_eq!(f(DataFork::Extents(0), 30, 96), Some(30));
        assert_eq!(f(DataFork::Dev, 0, 300), Some(1));
        assert_eq!(f(DataFork::Btree(200), 0, 100), Some(29));
        assert_eq!(f(DataFork::Btree(200), 30, 100), None);
        assert_eq!(f(DataFork::Local(100), 0, 100), Some(29));
        assert_eq!(f(DataFork::Local(240), 0, 100), None);
        assert_eq!(
            shortform_forkoff(512, true, DataFork::Extents(0), 0, 337),
            None
        );
    }

    #[test]
    fn local_remote_boundary() {
        // 3/4 of 4096 = 3072: a record of 3072 bytes or more goes remote.
        assert_eq!(G4.leaf_entsize(1, 3064), (3068, true));
        assert_eq!(G4.leaf_entsize(1, 3068), (12, false));
        assert_eq!(G4.leaf_entsize(5, 0), (8, true));
        assert_eq!(G4.leaf_entsize(255, 5000), (268, false));
        assert_eq!(G4.rmt_blocks(4040), 1);
        assert_eq!(G4.rmt_blocks(4041), 2);
        assert_eq!(G4.rmt_blocks(65536), 17);
        let v4 = AttrGeom {
            v5: false,
            blocksize: 4096,
        };
        assert_eq!(v4.rmt_blocks(4096), 1);
        assert_eq!(v4.rmt_blocks(65536), 16);
    }

    #[test]
    fn leaf_layout() {
        let a = vec![
            ra(0, "big", 5000),
            ra(0, "small", 1),
            ra(flag::ROOT, "t", 300),
        ];
        let AttrImage::Blocks(b) = encode(&G4, 99, &a, 100).unwrap() else {
            panic!()
        };
        assert_eq!(b.len(), 1 + 2);
        assert_eq!(b[0].kind, AttrBlockKind::Leaf);
        let l = &b[0].data;
        assert_eq!(u16::from_be_bytes([l[8], l[9]]), LEAF_MAGIC_V5);
        let count = u16::from_be_bytes([l[56], l[57]]) as usize;
        assert_eq!(count, 3);
        let used = u16::from_be_bytes([l[58], l[59]]) as usize;
        let first = u16::from_be_bytes([l[60], l[61]]) as usize;
        assert_eq!(first, 4096 - used);
        let (base, size) = (
            u16::from_be_bytes([l[64], l[65]]) as usize,
            u16::from_be_bytes([l[66], l[67]]) as usize,
        );
        assert_eq!((base, base + size), (80 + 3 * 8, first));
        let mut last = 0;
        for i in 0..count {
            let h = u32::from_be_bytes(l[80 + i * 8..84 + i * 8].try_into().unwrap());
            assert!(h >= last);
            last = h;
        }
        assert_eq!(b[1].lblk, 1);
        assert_eq!(&b[1].data[..4], b"XARM");
        assert_eq!(
            u32::from_be_bytes(b[2].data[4..8].try_into().unwrap()),
            4040
        );
        assert_eq!(
            u32::from_be_bytes(b[2].data[8..12].try_into().unwrap()),
            960
        );
    }

    #[test]
    fn node_tree_links() {
        let a: Vec<RawAttr> = (0..3000).map(|i| ra(0, &format!("attr-{i}"), 20)).collect();
        let AttrImage::Blocks(b) = encode(&G1, 7, &a, 100).unwrap() else {
            panic!()
        };
        assert_eq!(b[0].kind, AttrBlockKind::Node);
        assert_eq!(b[0].data[58..60], [0, 2]); // two node levels over 1 KiB leaves
        let lblks: Vec<u64> = b.iter().map(|x| x.lblk).collect();
        assert_eq!(lblks, (0..b.len() as u64).collect::<Vec<_>>());
        let leaves: Vec<&AttrBlockImage> =
            b.iter().filter(|x| x.kind == AttrBlockKind::Leaf).collect();
        let n: usize = leaves
            .iter()
            .map(|l| u16::from_be_bytes([l.data[56], l.data[57]]) as usize)
            .sum();
        assert_eq!(n, 3000);
        for w in leaves.windows(2) {
            assert_eq!(
                u32::from_be_bytes(w[0].data[0..4].try_into().unwrap()) as u64,
                w[1].lblk
            );
            assert_eq!(
                u32::from_be_bytes(w[1].data[4..8].try_into().unwrap()) as u64,
                w[0].lblk
            );
        }
    }

    #[test]
    fn equal_hashes_stay_in_one_leaf() {
        // Two names with one hash (found by search), same length: with equal records, leaf
        // capacity k, and the pair at hash-sorted positions p, p+1 with p+1 a multiple of k,
        // greedy packing would split them; the encoder moves the pair to the next leaf.
        let (a, b) = (b"c-200008", b"c-300000");
        assert_eq!(da_hashname(a), da_hashname(b));
        let h = da_hashname(a);
        let per = 8 + G1.leaf_entsize(8, 20).0;
        let k = (1024 - G1.leaf_hdr()) / per;
        let mut attrs = vec![ra(0, "c-200008", 20), ra(0, "c-300000", 20)];
        let mut below = 0;
        let mut i = 100_000;
        while attrs.len() < 3 * k {
            let n = format!("c-{i}");
            i += 1;
            let hn = da_hashname(n.as_bytes());
            if hn == h {
                continue;
            }
            if hn < h {
                if (below + 1) % k == 0 {
                    continue; // keep p + 1 = below + 1 a multiple of k
                }
                if below + 2 > k * 2 {
                    continue;
                }
                below += 1;
            }
            attrs.push(ra(0, &n, 20));
        }
        while (below + 1) % k != 0 {
            let n = format!("c-{i}");
            i += 1;
            if da_hashname(n.as_bytes()) < h {
                below += 1;
                attrs.push(ra(0, &n, 20));
            }
        }
        let AttrImage::Blocks(blocks) = encode(&G1, 1, &attrs, 0).unwrap() else {
            panic!()
        };
        let holder = |name: &[u8]| {
            blocks
                .iter()
                .position(|x| x.kind == AttrBlockKind::Leaf && x.data.windows(8).any(|w| w == name))
                .unwrap()
        };
        assert_eq!(holder(a), holder(b));
        // Without the rule the pair would have been split: the first is the last of a leaf.
        assert_eq!((below + 1) % k, 0);
    }

    #[test]
    fn stamp_sets_crc() {
        let a = vec![ra(0, "v", 3000)];
        let AttrImage::Blocks(mut b) = encode(&G4, 5, &a, 0).unwrap() else {
            panic!()
        };
        let s = Stamp {
            uuid: [7; 16],
            lsn: 0x1_0000_0002,
        };
        for (i, blk) in b.iter_mut().enumerate() {
            stamp(blk, 1000 + i as u64 * 8, 5, &s);
            csum::verify(&blk.data, 12, String::new).unwrap();
        }
        assert_eq!(&b[0].data[32..48], &[7; 16]);
    }

    #[test]
    fn linux_names_and_acls() {
        assert_eq!(from_linux("user.a", b"1").unwrap().flags, 0);
        assert_eq!(from_linux("trusted.a", b"1").unwrap().flags, flag::ROOT);
        let s = from_linux("security.selinux", b"system_u:object_r:etc_t:s0\0").unwrap();
        assert_eq!(
            (s.flags, s.name.as_slice()),
            (flag::SECURE, &b"selinux"[..])
        );
        for bad in [
            "system.foo",
            "os2.x",
            "user.",
            "user",
            &format!("user.{}", "x".repeat(251)),
        ] {
            assert!(from_linux(bad, b"").is_err(), "{bad}");
        }
        assert!(from_linux("user.x", &vec![0; VALUE_MAX + 1]).is_err());
        assert!(from_linux(&format!("user.{}", "x".repeat(250)), &[]).is_ok());
        // setfacl -m u:1000:r,g:100:rw on a 0644 file.
        let mut lin = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (8, 6, 100),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            lin.extend_from_slice(&tag.to_le_bytes());
            lin.extend_from_slice(&perm.to_le_bytes());
            lin.extend_from_slice(&id.to_le_bytes());
        }
        let a = from_linux("system.posix_acl_access", &lin).unwrap();
        assert_eq!(
            (a.flags, a.name.as_slice()),
            (flag::ROOT, &b"SGI_ACL_FILE"[..])
        );
        assert_eq!(a.value.len(), 4 + 6 * 12);
        assert_eq!(acl_to_linux(&a.value).unwrap(), lin);
        let d = from_linux("system.posix_acl_default", &lin).unwrap();
        assert_eq!(d.name, b"SGI_ACL_DEFAULT");
        // Out of order (mask before group), no mask with named entries, empty, bad version.
        let mut swapped = lin.clone();
        swapped[4 + 8 * 3..4 + 8 * 5].rotate_left(8);
        assert!(from_linux("system.posix_acl_access", &swapped).is_err());
        let mut nomask = lin[..4 + 8 * 4].to_vec();
        nomask.extend_from_slice(&lin[4 + 8 * 5..]);
        assert!(from_linux("system.posix_acl_access", &nomask).is_err());
        assert!(from_linux("system.posix_acl_access", &lin[..4]).is_err());
        let mut v1 = lin.clone();
        v1[0] = 1;
        assert!(from_linux("system.posix_acl_access", &v1).is_err());
    }

    #[test]
    fn refuses_bad_lists() {
        let dup = vec![ra(0, "a", 1), ra(0, "a", 2)];
        assert!(encode(&G4, 1, &dup, 100).is_err());
        let ok = vec![ra(0, "a", 1), ra(flag::ROOT, "a", 2)];
        assert!(encode(&G4, 1, &ok, 100).is_ok());
        assert!(encode(&G4, 1, &[ra(flag::PARENT, "p", 1)], 100).is_err());
        assert!(encode(&G4, 1, &[ra(flag::ROOT | flag::SECURE, "p", 1)], 100).is_err());
        assert!(encode(&G4, 1, &[ra(0, "a\0b", 1)], 100).is_err());
        assert!(encode(&G4, 1, &[ra(flag::ROOT, "SGI_ACL_FILE", 16)], 100).is_err());
    }
}
