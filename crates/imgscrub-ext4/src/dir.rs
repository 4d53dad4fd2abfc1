//! Directories: linear directory blocks, the `DirBlocks` access trait, and the directory
//! operations (lookup, list, add, remove, init, parent) that dispatch between linear and
//! hashed (htree, see [`crate::htree`]) directories. Owner: dirs.
//!
//! On-disk rules (kernel `Documentation/filesystems/ext4/directory.rst`):
//!
//! * A directory block is a chain of `ext4_dir_entry_2` records: `inode: le32`,
//!   `rec_len: le16`, `name_len: u8`, `file_type: u8`, then `name_len` bytes of name.
//!   Records cover the block exactly; `rec_len` is a multiple of 4 and at least
//!   `8 + name_len` rounded up to 4. `inode == 0` marks an unused record.
//! * `file_type` is meaningful only with the `filetype` feature (otherwise it is 0).
//! * With `metadata_csum`, the last 12 bytes of a leaf block are a fake entry
//!   (`ext4_dir_entry_tail`: inode 0, rec_len 12, name_len 0, file_type 0xDE) whose last 4
//!   bytes hold crc32c(per-inode seed, block bytes before the tail).
//! * Block 0 of every directory starts with "." (rec_len 12) and "..".
//! * With 64 KiB blocks, a rec_len of 65535 or 0 means 65536.

use crate::error::{Ext4Error, Result};

/// `EXT4_INDEX_FL`: the directory is hashed (htree).
pub const EXT4_INDEX_FL: u32 = 0x1000;
/// Size of the metadata_csum tail of a leaf directory block.
pub const DIRENT_TAIL_SIZE: usize = 12;
/// `file_type` byte of the checksum tail.
pub const DIRENT_TAIL_FT: u8 = 0xDE;
/// Longest file name.
pub const NAME_MAX: usize = 255;
/// `file_type` byte of a directory.
pub const FT_DIR: u8 = 2;

/// Parameters of the directory hash, from the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// `s_def_hash_version` (0 legacy, 1 half_md4, 2 tea): used for new htree roots.
    pub default_version: u8,
    /// `s_hash_seed` (all zero: the default seed is used).
    pub seed: [u32; 4],
    /// `s_flags & EXT2_FLAGS_UNSIGNED_HASH` (0x2): hash names as unsigned chars.
    pub unsigned: bool,
}

/// Access to one directory's blocks; implemented by core (`fs.rs`) and by test fakes.
///
/// The directory functions of this module only go through this trait. Blocks handed to
/// `write` are complete: checksum tails and dx tails are already set.
pub trait DirBlocks {
    /// Inode number of the directory (for error messages).
    fn ino(&self) -> u32;
    /// Filesystem block size in bytes.
    fn block_size(&self) -> u32;
    /// Number of logical blocks of the directory (`i_size / block_size`).
    fn num_blocks(&self) -> u32;
    /// Read logical block `lblk` (exactly `block_size` bytes).
    fn read(&mut self, lblk: u32) -> Result<Vec<u8>>;
    /// Write logical block `lblk` (exactly `block_size` bytes).
    fn write(&mut self, lblk: u32, data: &[u8]) -> Result<()>;
    /// Allocate and map a new zeroed block at the end of the directory, grow `i_size` by one
    /// block, and return its logical block number (the old `num_blocks`).
    fn append_block(&mut self) -> Result<u32>;
    /// Per-inode checksum seed (crc32c of fs seed, inode number, generation) when the
    /// filesystem has `metadata_csum`; `None` otherwise.
    fn csum_seed(&self) -> Option<u32>;
    /// Hash parameters from the superblock.
    fn hash(&self) -> HashParams;
    /// The `filetype` incompat feature.
    fn has_filetype(&self) -> bool;
    /// The `dir_index` compat feature.
    fn dir_index(&self) -> bool;
    /// The `large_dir` incompat feature (3-level htrees).
    fn large_dir(&self) -> bool;
    /// `EXT4_INDEX_FL` is set on the directory inode.
    fn is_indexed(&self) -> bool;
    /// Set or clear `EXT4_INDEX_FL` on the directory inode.
    fn set_indexed(&mut self, on: bool) -> Result<()>;
    /// `s_inodes_count`, to validate entries.
    fn inodes_count(&self) -> u32;
}

/// One directory entry as stored (including "." and ".." when `list_all` is used).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RawEntry {
    /// Name bytes (no NUL, no '/').
    pub name: Vec<u8>,
    /// Inode number.
    pub ino: u32,
    /// The dirent `file_type` byte (0 without the filetype feature).
    pub file_type: u8,
}

// ---------------------------------------------------------------------------------------
// Little-endian helpers (never panic: out of range reads give 0, writes are ignored).

pub(crate) fn rd16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off.saturating_add(2)) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}

pub(crate) fn rd32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off.saturating_add(4)) {
        Some(&[x, y, z, w]) => u32::from_le_bytes([x, y, z, w]),
        _ => 0,
    }
}

pub(crate) fn wr16(b: &mut [u8], off: usize, v: u16) {
    if let Some(s) = b.get_mut(off..off.saturating_add(2)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn wr32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off.saturating_add(4)) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Minimal record length of an entry with a name of `name_len` bytes:
/// `8 + name_len` rounded up to 4 (`EXT4_DIR_REC_LEN`).
pub fn rec_len_for(name_len: usize) -> usize {
    (name_len + 8 + 3) & !3
}

/// Decode an on-disk rec_len (64 KiB blocks encode 65536 as 65535 or 0).
fn rec_len_from_disk(v: u16, block_size: usize) -> usize {
    if block_size < 65536 {
        v as usize
    } else if v == 65535 || v == 0 {
        65536
    } else {
        v as usize
    }
}

/// Encode a rec_len for disk.
fn rec_len_to_disk(len: usize, block_size: usize) -> u16 {
    if block_size >= 65536 && len >= 65536 {
        65535
    } else {
        u16::try_from(len).unwrap_or(u16::MAX)
    }
}

/// One record of a parsed directory block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Byte offset of the record in the block.
    pub off: usize,
    /// Decoded rec_len.
    pub rec_len: usize,
    /// Inode number (0: unused record).
    pub ino: u32,
    /// Length of the name.
    pub name_len: usize,
    /// The file_type byte (0 without the filetype feature).
    pub file_type: u8,
}

impl Slot {
    /// Bytes this record needs for its own name (0 for an unused record).
    pub fn used_len(&self) -> usize {
        if self.ino == 0 {
            0
        } else {
            rec_len_for(self.name_len)
        }
    }

    /// The entry's name bytes in `block`.
    pub fn name<'a>(&self, block: &'a [u8]) -> &'a [u8] {
        let start = self.off.saturating_add(8);
        block
            .get(start..start.saturating_add(self.name_len))
            .unwrap_or(&[])
    }
}

/// Context for validating a directory block: which directory, which block, which features.
#[derive(Debug, Clone, Copy)]
pub struct BlockCtx {
    /// Directory inode (for error messages).
    pub dir_ino: u32,
    /// Logical block (for error messages).
    pub lblk: u32,
    /// Per-inode checksum seed: `Some` when metadata_csum (a tail is required).
    pub csum_seed: Option<u32>,
    /// `s_inodes_count`: larger inode numbers are corrupt.
    pub inodes_count: u32,
    /// The filetype feature (otherwise file_type bytes read as 0).
    pub filetype: bool,
}

impl BlockCtx {
    /// Build from a `DirBlocks` for block `lblk`.
    pub fn of(d: &dyn DirBlocks, lblk: u32) -> Self {
        BlockCtx {
            dir_ino: d.ino(),
            lblk,
            csum_seed: d.csum_seed(),
            inodes_count: d.inodes_count(),
            filetype: d.has_filetype(),
        }
    }

    pub(crate) fn structure(&self) -> String {
        format!("directory block {} of inode {}", self.lblk, self.dir_ino)
    }

    fn corrupt(&self, detail: impl Into<String>) -> Ext4Error {
        Ext4Error::corrupt(self.structure(), detail)
    }
}

/// End of the entry area of a leaf block (block size minus the tail when metadata_csum).
pub fn entries_end(block_size: usize, csum: bool) -> usize {
    if csum {
        block_size.saturating_sub(DIRENT_TAIL_SIZE)
    } else {
        block_size
    }
}

/// Checksum of a leaf directory block: crc32c(seed, block[..size-12]).
pub fn leaf_csum(seed: u32, block: &[u8]) -> u32 {
    let end = block.len().saturating_sub(DIRENT_TAIL_SIZE);
    crate::csum::crc32c_raw(seed, block.get(..end).unwrap_or(&[]))
}

/// True when the last 12 bytes of `block` are a well-formed checksum tail.
pub fn has_tail(block: &[u8]) -> bool {
    let t = block.len().saturating_sub(DIRENT_TAIL_SIZE);
    block.len() >= DIRENT_TAIL_SIZE
        && rd32(block, t) == 0
        && rd16(block, t + 4) == DIRENT_TAIL_SIZE as u16
        && block.get(t + 6) == Some(&0)
        && block.get(t + 7) == Some(&DIRENT_TAIL_FT)
}

/// Write the checksum tail (when `seed` is `Some`) of a leaf block.
pub fn set_tail(block: &mut [u8], seed: Option<u32>) {
    let Some(seed) = seed else { return };
    let t = block.len().saturating_sub(DIRENT_TAIL_SIZE);
    wr32(block, t, 0);
    wr16(block, t + 4, DIRENT_TAIL_SIZE as u16);
    if let Some(s) = block.get_mut(t + 6..t + 8) {
        s.copy_from_slice(&[0, DIRENT_TAIL_FT]);
    }
    let c = leaf_csum(seed, block);
    wr32(block, t + 8, c);
}

/// Parse and validate a linear (leaf) directory block.
///
/// Checks every record (alignment, minimal length, bounds, name length, inode number) and,
/// with metadata_csum, the tail and its checksum. Returns the records in block order,
/// unused ones included.
pub fn parse_block(block: &[u8], ctx: &BlockCtx) -> Result<Vec<Slot>> {
    let bs = block.len();
    if bs < 1024 || !bs.is_multiple_of(4) {
        return Err(ctx.corrupt(format!("bad block length {bs}")));
    }
    if let Some(seed) = ctx.csum_seed {
        if !has_tail(block) {
            return Err(ctx.corrupt("missing metadata_csum directory tail (run e2fsck -fD)"));
        }
        let stored = rd32(block, bs - 4);
        let computed = leaf_csum(seed, block);
        if stored != computed {
            return Err(Ext4Error::Checksum {
                structure: ctx.structure(),
                stored,
                computed,
            });
        }
    }
    parse_records(block, entries_end(bs, ctx.csum_seed.is_some()), ctx)
}

/// Parse the records in `block[..end]` (no checksum check).
pub(crate) fn parse_records(block: &[u8], end: usize, ctx: &BlockCtx) -> Result<Vec<Slot>> {
    let bs = block.len();
    let mut out = Vec::new();
    let mut off = 0usize;
    // Each record is at least 12 bytes, so this bounds the loop.
    while off < end {
        if end - off < 12 {
            return Err(ctx.corrupt(format!("record at offset {off} runs past the entries")));
        }
        let ino = rd32(block, off);
        let rec_len = rec_len_from_disk(rd16(block, off + 4), bs);
        let name_len = block.get(off + 6).copied().unwrap_or(0) as usize;
        let file_type = block.get(off + 7).copied().unwrap_or(0);
        if rec_len < 12 || !rec_len.is_multiple_of(4) {
            return Err(ctx.corrupt(format!("bad rec_len {rec_len} at offset {off}")));
        }
        if rec_len > end - off {
            return Err(ctx.corrupt(format!(
                "rec_len {rec_len} at offset {off} runs past the entries ({end})"
            )));
        }
        if ino != 0 {
            if name_len == 0 {
                return Err(ctx.corrupt(format!("empty name at offset {off}")));
            }
            if rec_len_for(name_len) > rec_len {
                return Err(ctx.corrupt(format!(
                    "name_len {name_len} does not fit rec_len {rec_len} at offset {off}"
                )));
            }
            if ino > ctx.inodes_count {
                return Err(ctx.corrupt(format!(
                    "inode {ino} at offset {off} is beyond s_inodes_count {}",
                    ctx.inodes_count
                )));
            }
        }
        out.push(Slot {
            off,
            rec_len,
            ino,
            name_len,
            file_type: if ctx.filetype { file_type } else { 0 },
        });
        off += rec_len;
    }
    Ok(out)
}

/// Live entries of a parsed block.
pub fn live_entries(block: &[u8], slots: &[Slot]) -> Vec<RawEntry> {
    slots
        .iter()
        .filter(|s| s.ino != 0)
        .map(|s| RawEntry {
            name: s.name(block).to_vec(),
            ino: s.ino,
            file_type: s.file_type,
        })
        .collect()
}

/// Write one record header + name at `off`.
fn put_record(block: &mut [u8], off: usize, ino: u32, rec_len: usize, name: &[u8], ft: u8) {
    let bs = block.len();
    wr32(block, off, ino);
    wr16(block, off + 4, rec_len_to_disk(rec_len, bs));
    let nl = u8::try_from(name.len()).unwrap_or(u8::MAX);
    if let Some(s) = block.get_mut(off + 6..off + 8) {
        s.copy_from_slice(&[nl, ft]);
    }
    if let Some(s) = block.get_mut(off + 8..off + 8 + name.len()) {
        s.copy_from_slice(name);
    }
}

/// An empty leaf block: one unused record covering the entry area, plus the tail.
pub fn empty_block(block_size: usize, csum_seed: Option<u32>) -> Vec<u8> {
    let mut b = vec![0u8; block_size];
    put_record(
        &mut b,
        0,
        0,
        entries_end(block_size, csum_seed.is_some()),
        &[],
        0,
    );
    set_tail(&mut b, csum_seed);
    b
}

/// Find the first record that can take an entry of `need` bytes: an unused record at least
/// that long, or a live record whose slack (`rec_len - used`) is at least that long.
fn find_space(slots: &[Slot], need: usize) -> Option<&Slot> {
    slots
        .iter()
        .find(|s| s.rec_len.saturating_sub(s.used_len()) >= need)
}

/// Insert an entry into a parsed block (first fit, as the kernel's `ext4_find_dest_de` +
/// `ext4_insert_dentry`). Returns false when it does not fit. Does not set the tail.
pub fn insert_into_block(block: &mut [u8], slots: &[Slot], name: &[u8], ino: u32, ft: u8) -> bool {
    let need = rec_len_for(name.len());
    let Some(s) = find_space(slots, need) else {
        return false;
    };
    if s.ino == 0 {
        put_record(block, s.off, ino, s.rec_len, name, ft);
    } else {
        let used = s.used_len();
        wr16(block, s.off + 4, rec_len_to_disk(used, block.len()));
        put_record(block, s.off + used, ino, s.rec_len - used, name, ft);
    }
    true
}

/// Remove the record at index `i` of `slots` from `block` (kernel
/// `ext4_generic_delete_entry`): merged into the previous record of the block, or, for the
/// first record, marked unused. Freed bytes are zeroed. Does not set the tail.
pub fn remove_from_block(block: &mut [u8], slots: &[Slot], i: usize) {
    let Some(s) = slots.get(i) else { return };
    if i > 0 {
        let Some(p) = slots.get(i - 1) else { return };
        let merged = p.rec_len + s.rec_len;
        wr16(block, p.off + 4, rec_len_to_disk(merged, block.len()));
        if let Some(r) = block.get_mut(s.off..s.off + s.rec_len) {
            r.fill(0);
        }
    } else {
        wr32(block, s.off, 0);
        if let Some(r) = block.get_mut(s.off + 6..s.off + s.rec_len) {
            r.fill(0);
        }
    }
}

/// Block 0 of a new directory: "." and "..", the rest of the block owned by "..".
pub fn dot_block(
    block_size: usize,
    self_ino: u32,
    parent_ino: u32,
    filetype: bool,
    csum_seed: Option<u32>,
) -> Vec<u8> {
    let mut b = vec![0u8; block_size];
    let ft = if filetype { FT_DIR } else { 0 };
    put_record(&mut b, 0, self_ino, 12, b".", ft);
    let end = entries_end(block_size, csum_seed.is_some());
    put_record(&mut b, 12, parent_ino, end - 12, b"..", ft);
    set_tail(&mut b, csum_seed);
    b
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Ext4Error::InvalidArgument(format!(
            "invalid file name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    if name.len() > NAME_MAX {
        return Err(Ext4Error::NameTooLong(name.len()));
    }
    Ok(())
}

fn name_str(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// How a directory is handled: hashed when both the inode flag and the feature are set.
fn use_htree(d: &dyn DirBlocks) -> bool {
    d.is_indexed() && d.dir_index()
}

/// A directory with the INDEX flag but without the dir_index feature is treated as linear
/// (and the flag cleared on modification, like the kernel). With metadata_csum its root has
/// no dirent tail, so we cannot do that safely: refuse.
fn check_linear_fallback(d: &mut dyn DirBlocks, modifying: bool) -> Result<()> {
    if d.is_indexed() && !d.dir_index() {
        if d.csum_seed().is_some() {
            return Err(Ext4Error::Unsupported(format!(
                "directory inode {} is indexed but the filesystem lacks dir_index \
                 (metadata_csum): run e2fsck -fD",
                d.ino()
            )));
        }
        if modifying {
            d.set_indexed(false)?;
        }
    }
    Ok(())
}

fn read_leaf(d: &mut dyn DirBlocks, lblk: u32) -> Result<(Vec<u8>, Vec<Slot>)> {
    let b = d.read(lblk)?;
    if b.len() != d.block_size() as usize {
        return Err(Ext4Error::corrupt(
            BlockCtx::of(d, lblk).structure(),
            format!("read {} bytes, expected {}", b.len(), d.block_size()),
        ));
    }
    let slots = parse_block(&b, &BlockCtx::of(d, lblk))?;
    Ok((b, slots))
}

/// Look `name` up in a linear block list; returns (lblk, block, slots, index).
pub(crate) type Found = (u32, Vec<u8>, Vec<Slot>, usize);

fn linear_find(d: &mut dyn DirBlocks, name: &[u8]) -> Result<Option<Found>> {
    for lblk in 0..d.num_blocks() {
        let (b, slots) = read_leaf(d, lblk)?;
        if let Some(i) = slots.iter().position(|s| s.ino != 0 && s.name(&b) == name) {
            return Ok(Some((lblk, b, slots, i)));
        }
    }
    Ok(None)
}

/// Look `name` up. Returns `(inode, file_type byte)`.
///
/// Hashed directories walk the index and read one leaf (plus continuation leaves for hash
/// collisions); linear directories are scanned.
pub fn lookup(d: &mut dyn DirBlocks, name: &[u8]) -> Result<Option<(u32, u8)>> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Ok(None);
    }
    if use_htree(d) {
        return crate::htree::lookup(d, name);
    }
    check_linear_fallback(d, false)?;
    Ok(linear_find(d, name)?
        .and_then(|(_, _, slots, i)| slots.get(i).map(|s| (s.ino, s.file_type))))
}

/// All entries, "." and ".." included, in on-disk order (hashed directories: leaf order).
pub fn list_all(d: &mut dyn DirBlocks) -> Result<Vec<RawEntry>> {
    if use_htree(d) {
        return crate::htree::list_all(d);
    }
    check_linear_fallback(d, false)?;
    let mut out = Vec::new();
    for lblk in 0..d.num_blocks() {
        let (b, slots) = read_leaf(d, lblk)?;
        out.extend(live_entries(&b, &slots));
    }
    Ok(out)
}

/// All entries except "." and "..".
pub fn list(d: &mut dyn DirBlocks) -> Result<Vec<RawEntry>> {
    Ok(list_all(d)?
        .into_iter()
        .filter(|e| e.name != b"." && e.name != b"..")
        .collect())
}

/// True when the directory holds nothing but "." and "..".
pub fn is_empty(d: &mut dyn DirBlocks) -> Result<bool> {
    Ok(list(d)?.is_empty())
}

/// Add an entry. `file_type` is the dirent type byte (see `FileType::dirent_type`); it is
/// stored only with the filetype feature. Errors: `Exists` when the name is present,
/// `NameTooLong`, `InvalidArgument` (empty, "/", NUL, "." or ".."), `NoSpace` when a full
/// htree reached its depth limit.
pub fn add(d: &mut dyn DirBlocks, name: &[u8], ino: u32, file_type: u8) -> Result<()> {
    check_name(name)?;
    if name == b"." || name == b".." {
        return Err(Ext4Error::InvalidArgument(format!(
            "cannot add {:?}",
            name_str(name)
        )));
    }
    if ino == 0 || ino > d.inodes_count() {
        return Err(Ext4Error::InvalidArgument(format!(
            "bad inode number {ino}"
        )));
    }
    let ft = if d.has_filetype() { file_type } else { 0 };
    if use_htree(d) {
        return crate::htree::add(d, name, ino, ft);
    }
    check_linear_fallback(d, true)?;
    if linear_find(d, name)?.is_some() {
        return Err(Ext4Error::Exists(name_str(name)));
    }
    let n = d.num_blocks();
    let seed = d.csum_seed();
    for lblk in 0..n {
        let (mut b, slots) = read_leaf(d, lblk)?;
        if insert_into_block(&mut b, &slots, name, ino, ft) {
            set_tail(&mut b, seed);
            return d.write(lblk, &b);
        }
        // Like the kernel: a full one-block directory becomes hashed.
        if n == 1 && d.dir_index() && !d.is_indexed() {
            return crate::htree::make_indexed(d, b, name, ino, ft);
        }
    }
    let lblk = d.append_block()?;
    let bs = d.block_size() as usize;
    let mut b = empty_block(bs, seed);
    let slots = parse_block(&b, &BlockCtx::of(d, lblk))?;
    if !insert_into_block(&mut b, &slots, name, ino, ft) {
        return Err(Ext4Error::corrupt(
            BlockCtx::of(d, lblk).structure(),
            "new block cannot hold one entry",
        ));
    }
    set_tail(&mut b, seed);
    d.write(lblk, &b)
}

/// Remove the entry `name`; returns its inode number. `NotFound` when absent;
/// "." and ".." cannot be removed.
pub fn remove(d: &mut dyn DirBlocks, name: &[u8]) -> Result<u32> {
    if name == b"." || name == b".." {
        return Err(Ext4Error::InvalidArgument(format!(
            "cannot remove {:?}",
            name_str(name)
        )));
    }
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(Ext4Error::NotFound(name_str(name)));
    }
    if use_htree(d) {
        return crate::htree::remove(d, name);
    }
    check_linear_fallback(d, true)?;
    let Some((lblk, mut b, slots, i)) = linear_find(d, name)? else {
        return Err(Ext4Error::NotFound(name_str(name)));
    };
    let ino = slots.get(i).map(|s| s.ino).unwrap_or(0);
    remove_from_block(&mut b, &slots, i);
    set_tail(&mut b, d.csum_seed());
    d.write(lblk, &b)?;
    Ok(ino)
}

/// Point the existing entry `name` at another inode (rename over an existing target, as the
/// kernel's `ext4_setent`): the record stays where it is. Returns the previous inode.
/// `NotFound` when absent; "." and ".." are refused (use `set_parent`).
pub fn replace(d: &mut dyn DirBlocks, name: &[u8], ino: u32, file_type: u8) -> Result<u32> {
    if name == b"." || name == b".." {
        return Err(Ext4Error::InvalidArgument(format!(
            "cannot replace {:?}",
            name_str(name)
        )));
    }
    if ino == 0 || ino > d.inodes_count() {
        return Err(Ext4Error::InvalidArgument(format!(
            "bad inode number {ino}"
        )));
    }
    let found = if use_htree(d) {
        crate::htree::find_entry(d, name)?
    } else {
        check_linear_fallback(d, true)?;
        linear_find(d, name)?
    };
    let Some((lblk, mut b, slots, i)) = found else {
        return Err(Ext4Error::NotFound(name_str(name)));
    };
    let Some(s) = slots.get(i) else {
        return Err(Ext4Error::NotFound(name_str(name)));
    };
    let old = s.ino;
    wr32(&mut b, s.off, ino);
    if let Some(x) = b.get_mut(s.off + 7) {
        *x = if d.has_filetype() { file_type } else { 0 };
    }
    set_tail(&mut b, d.csum_seed());
    d.write(lblk, &b)?;
    Ok(old)
}

/// Write block 0 of a new, empty directory ("." and ".."). Appends the block when the
/// directory has none. The directory must not be indexed.
pub fn init(d: &mut dyn DirBlocks, self_ino: u32, parent_ino: u32) -> Result<()> {
    let lblk = if d.num_blocks() == 0 {
        d.append_block()?
    } else {
        0
    };
    if lblk != 0 {
        return Err(Ext4Error::corrupt(
            BlockCtx::of(d, lblk).structure(),
            "first block of a new directory is not logical block 0",
        ));
    }
    if d.is_indexed() {
        d.set_indexed(false)?;
    }
    let b = dot_block(
        d.block_size() as usize,
        self_ino,
        parent_ino,
        d.has_filetype(),
        d.csum_seed(),
    );
    d.write(0, &b)
}

fn check_dots(d: &dyn DirBlocks, b: &[u8], slots: &[Slot]) -> Result<()> {
    let ok = slots.len() >= 2
        && slots[0].ino != 0
        && slots[0].name(b) == b"."
        && slots[1].ino != 0
        && slots[1].name(b) == b"..";
    if ok {
        Ok(())
    } else {
        Err(Ext4Error::corrupt(
            BlockCtx::of(d, 0).structure(),
            "does not start with \".\" and \"..\"",
        ))
    }
}

/// The parent directory (the ".." entry).
pub fn parent(d: &mut dyn DirBlocks) -> Result<u32> {
    if use_htree(d) {
        return crate::htree::parent(d);
    }
    check_linear_fallback(d, false)?;
    let (b, slots) = read_leaf(d, 0)?;
    check_dots(d, &b, &slots)?;
    Ok(slots[1].ino)
}

/// Point ".." at `parent` (after a rename across directories).
pub fn set_parent(d: &mut dyn DirBlocks, parent: u32) -> Result<()> {
    if use_htree(d) {
        return crate::htree::set_parent(d, parent);
    }
    check_linear_fallback(d, true)?;
    let (mut b, slots) = read_leaf(d, 0)?;
    check_dots(d, &b, &slots)?;
    wr32(&mut b, slots[1].off, parent);
    set_tail(&mut b, d.csum_seed());
    d.write(0, &b)
}

// ---------------------------------------------------------------------------------------
// Inline-data directories (inline_data feature, EXT4_INLINE_DATA_FL on the inode).
//
// Layout (kernel `Documentation/filesystems/ext4/inlinedata.rst`): `i_block` (60 bytes)
// holds the parent inode number (le32) and then directory records covering the remaining
// 56 bytes; the value of the `system.data` xattr, when not empty, holds more records
// covering it exactly. There are no "." / ".." records and no checksum tails (the inode
// checksum covers them). Each of the two areas is a separate "block" for record merging.

/// Size of `i_block`.
pub const INLINE_IBLOCK: usize = 60;

fn inline_ctx(dir_ino: u32, inodes_count: u32, filetype: bool, area: u32) -> BlockCtx {
    BlockCtx {
        dir_ino,
        lblk: area,
        csum_seed: None,
        inodes_count,
        filetype,
    }
}

fn inline_err(dir_ino: u32, e: Ext4Error) -> Ext4Error {
    match e {
        Ext4Error::Corrupt { detail, .. } => {
            Ext4Error::corrupt(format!("inline directory data of inode {dir_ino}"), detail)
        }
        other => other,
    }
}

/// The two record areas of an inline directory: `i_block[4..60]` and the system.data value.
fn inline_areas<'a>(i_block: &'a [u8], data: &'a [u8]) -> Result<[&'a [u8]; 2]> {
    let ib = i_block
        .get(4..INLINE_IBLOCK)
        .ok_or_else(|| Ext4Error::InvalidArgument("i_block shorter than 60 bytes".into()))?;
    Ok([ib, data])
}

/// Parameters of an inline directory for the `inline_*` functions.
#[derive(Debug, Clone, Copy)]
pub struct InlineDir {
    /// Directory inode (for error messages).
    pub dir_ino: u32,
    /// `s_inodes_count`.
    pub inodes_count: u32,
    /// The filetype feature.
    pub filetype: bool,
}

impl InlineDir {
    fn parse(&self, area: &[u8], idx: u32) -> Result<Vec<Slot>> {
        let ctx = inline_ctx(self.dir_ino, self.inodes_count, self.filetype, idx);
        parse_records(area, area.len(), &ctx).map_err(|e| inline_err(self.dir_ino, e))
    }

    /// Parent inode and entries (without "." and "..") of an inline directory.
    /// `i_block` is the inode's 60-byte `i_block`; `data` the `system.data` value.
    pub fn list(&self, i_block: &[u8], data: &[u8]) -> Result<(u32, Vec<RawEntry>)> {
        let mut out = Vec::new();
        for (idx, area) in inline_areas(i_block, data)?.into_iter().enumerate() {
            let slots = self.parse(area, idx as u32)?;
            out.extend(live_entries(area, &slots));
        }
        Ok((rd32(i_block, 0), out))
    }

    /// Look `name` up in an inline directory.
    pub fn lookup(&self, i_block: &[u8], data: &[u8], name: &[u8]) -> Result<Option<(u32, u8)>> {
        Ok(self
            .list(i_block, data)?
            .1
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| (e.ino, e.file_type)))
    }

    /// Add an entry in place. Returns `Ok(false)` when there is no room: core then converts
    /// the directory to a block directory (`list`, then `init` + `add` of each entry and of
    /// the new one on a `DirBlocks`), clears EXT4_INLINE_DATA_FL and removes system.data.
    pub fn add(
        &self,
        i_block: &mut [u8],
        data: &mut [u8],
        name: &[u8],
        ino: u32,
        file_type: u8,
    ) -> Result<bool> {
        check_name(name)?;
        if name == b"." || name == b".." || ino == 0 || ino > self.inodes_count {
            return Err(Ext4Error::InvalidArgument(format!(
                "cannot add {:?} -> {ino}",
                name_str(name)
            )));
        }
        if self.lookup(i_block, data, name)?.is_some() {
            return Err(Ext4Error::Exists(name_str(name)));
        }
        let ft = if self.filetype { file_type } else { 0 };
        {
            let area = i_block
                .get_mut(4..INLINE_IBLOCK)
                .ok_or_else(|| Ext4Error::InvalidArgument("short i_block".into()))?;
            let slots = self.parse(area, 0)?;
            if insert_into_block(area, &slots, name, ino, ft) {
                return Ok(true);
            }
        }
        let slots = self.parse(data, 1)?;
        Ok(insert_into_block(data, &slots, name, ino, ft))
    }

    /// Remove an entry in place; returns its inode. `NotFound` when absent.
    pub fn remove(&self, i_block: &mut [u8], data: &mut [u8], name: &[u8]) -> Result<u32> {
        {
            let area = i_block
                .get_mut(4..INLINE_IBLOCK)
                .ok_or_else(|| Ext4Error::InvalidArgument("short i_block".into()))?;
            let slots = self.parse(area, 0)?;
            if let Some(i) = slots
                .iter()
                .position(|s| s.ino != 0 && s.name(area) == name)
            {
                let ino = slots[i].ino;
                remove_from_block(area, &slots, i);
                return Ok(ino);
            }
        }
        let slots = self.parse(data, 1)?;
        if let Some(i) = slots
            .iter()
            .position(|s| s.ino != 0 && s.name(data) == name)
        {
            let ino = slots[i].ino;
            remove_from_block(data, &slots, i);
            return Ok(ino);
        }
        Err(Ext4Error::NotFound(name_str(name)))
    }

    /// `i_block` of a new, empty inline directory (parent + one unused record).
    pub fn new_iblock(parent: u32) -> [u8; INLINE_IBLOCK] {
        let mut b = [0u8; INLINE_IBLOCK];
        wr32(&mut b, 0, parent);
        wr16(&mut b, 8, (INLINE_IBLOCK - 4) as u16);
        b
    }

    /// Point the parent of an inline directory at `parent`.
    pub fn set_parent(i_block: &mut [u8], parent: u32) {
        wr32(i_block, 0, parent);
    }
}

/// An in-memory directory: a `DirBlocks` for tests, fuzzing and tools.
#[derive(Debug, Clone)]
pub struct MemDir {
    /// Directory inode number.
    pub ino: u32,
    /// Block size.
    pub block_size: u32,
    /// The directory's blocks by logical number.
    pub blocks: Vec<Vec<u8>>,
    /// Per-inode checksum seed (metadata_csum).
    pub csum_seed: Option<u32>,
    /// Hash parameters.
    pub hash: HashParams,
    /// filetype feature.
    pub filetype: bool,
    /// dir_index feature.
    pub dir_index: bool,
    /// large_dir feature.
    pub large_dir: bool,
    /// EXT4_INDEX_FL.
    pub indexed: bool,
    /// s_inodes_count.
    pub inodes_count: u32,
    /// `append_block` fails with `NoSpace` beyond this many blocks.
    pub max_blocks: u32,
}

impl MemDir {
    /// An empty directory (no blocks) with metadata_csum-like settings when `csum_seed` is
    /// `Some`, half_md4 hashing and the filetype and dir_index features.
    pub fn new(ino: u32, block_size: u32, csum_seed: Option<u32>) -> Self {
        MemDir {
            ino,
            block_size,
            blocks: Vec::new(),
            csum_seed,
            hash: HashParams {
                default_version: 1,
                seed: [0x0a1b_2c3d, 0x4e5f_4061, 0x8293_a4b5, 0xc6d7_e8f9],
                unsigned: false,
            },
            filetype: true,
            dir_index: true,
            large_dir: false,
            indexed: false,
            inodes_count: 1 << 20,
            max_blocks: 1 << 20,
        }
    }
}

impl DirBlocks for MemDir {
    fn ino(&self) -> u32 {
        self.ino
    }
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn num_blocks(&self) -> u32 {
        u32::try_from(self.blocks.len()).unwrap_or(u32::MAX)
    }
    fn read(&mut self, lblk: u32) -> Result<Vec<u8>> {
        self.blocks
            .get(lblk as usize)
            .cloned()
            .ok_or_else(|| Ext4Error::corrupt(format!("directory {}", self.ino), "hole"))
    }
    fn write(&mut self, lblk: u32, data: &[u8]) -> Result<()> {
        match self.blocks.get_mut(lblk as usize) {
            Some(b) if data.len() == b.len() => {
                b.copy_from_slice(data);
                Ok(())
            }
            _ => Err(Ext4Error::InvalidArgument(format!("write to block {lblk}"))),
        }
    }
    fn append_block(&mut self) -> Result<u32> {
        if self.num_blocks() >= self.max_blocks {
            return Err(Ext4Error::NoSpace("test directory size limit"));
        }
        self.blocks.push(vec![0; self.block_size as usize]);
        Ok(self.num_blocks() - 1)
    }
    fn csum_seed(&self) -> Option<u32> {
        self.csum_seed
    }
    fn hash(&self) -> HashParams {
        self.hash
    }
    fn has_filetype(&self) -> bool {
        self.filetype
    }
    fn dir_index(&self) -> bool {
        self.dir_index
    }
    fn large_dir(&self) -> bool {
        self.large_dir
    }
    fn is_indexed(&self) -> bool {
        self.indexed
    }
    fn set_indexed(&mut self, on: bool) -> Result<()> {
        self.indexed = on;
        Ok(())
    }
    fn inodes_count(&self) -> u32 {
        self.inodes_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(d: &mut MemDir) -> Vec<Vec<u8>> {
        let mut v: Vec<_> = list(d).unwrap().into_iter().map(|e| e.name).collect();
        v.sort();
        v
    }

    #[test]
    fn dirs_linear_add_remove_lookup() {
        for seed in [None, Some(0x1234_5678)] {
            let mut d = MemDir::new(12, 1024, seed);
            d.dir_index = false;
            init(&mut d, 12, 2).unwrap();
            assert!(is_empty(&mut d).unwrap());
            assert_eq!(parent(&mut d).unwrap(), 2);
            for i in 0..100u32 {
                add(&mut d, format!("file{i}").as_bytes(), 100 + i, 1).unwrap();
            }
            assert!(d.blocks.len() > 1);
            assert!(!d.indexed);
            assert!(matches!(
                add(&mut d, b"file7", 5, 1),
                Err(Ext4Error::Exists(_))
            ));
            assert_eq!(lookup(&mut d, b"file42").unwrap(), Some((142, 1)));
            assert_eq!(remove(&mut d, b"file42").unwrap(), 142);
            assert_eq!(lookup(&mut d, b"file42").unwrap(), None);
            assert_eq!(replace(&mut d, b"file43", 7, 2).unwrap(), 143);
            assert_eq!(lookup(&mut d, b"file43").unwrap(), Some((7, 2)));
            assert!(matches!(
                remove(&mut d, b"file42"),
                Err(Ext4Error::NotFound(_))
            ));
            assert_eq!(names(&mut d).len(), 99);
            set_parent(&mut d, 77).unwrap();
            assert_eq!(parent(&mut d).unwrap(), 77);
        }
    }

    #[test]
    fn dirs_block_checksum_detected() {
        let mut d = MemDir::new(12, 1024, Some(7));
        init(&mut d, 12, 2).unwrap();
        d.blocks[0][30] ^= 1;
        assert!(matches!(list(&mut d), Err(Ext4Error::Checksum { .. })));
    }

    #[test]
    fn dirs_bad_rec_len_is_corrupt() {
        let mut d = MemDir::new(12, 1024, None);
        init(&mut d, 12, 2).unwrap();
        wr16(&mut d.blocks[0], 16, 2000);
        let e = list(&mut d).unwrap_err();
        assert!(
            e.to_string().contains("directory block 0 of inode 12"),
            "{e}"
        );
    }

    #[test]
    fn dirs_first_entry_removal_keeps_block_valid() {
        let mut b = empty_block(1024, None);
        let ctx = BlockCtx {
            dir_ino: 5,
            lblk: 1,
            csum_seed: None,
            inodes_count: 100,
            filetype: true,
        };
        let s = parse_block(&b, &ctx).unwrap();
        assert!(insert_into_block(&mut b, &s, b"a", 11, 1));
        let s = parse_block(&b, &ctx).unwrap();
        assert!(insert_into_block(&mut b, &s, b"b", 12, 1));
        let s = parse_block(&b, &ctx).unwrap();
        remove_from_block(&mut b, &s, 0);
        let s = parse_block(&b, &ctx).unwrap();
        assert_eq!(s[0].ino, 0);
        assert_eq!(live_entries(&b, &s).len(), 1);
        assert!(insert_into_block(&mut b, &s, b"c", 13, 1));
        let s = parse_block(&b, &ctx).unwrap();
        assert_eq!(s[0].ino, 13);
    }

    #[test]
    fn dirs_inline_add_remove() {
        let il = InlineDir {
            dir_ino: 30,
            inodes_count: 1000,
            filetype: true,
        };
        let mut ib = InlineDir::new_iblock(2);
        let mut data = vec![0u8; 0];
        assert_eq!(il.list(&ib, &data).unwrap(), (2, vec![]));
        let mut added = 0;
        for i in 0..10u32 {
            if il
                .add(&mut ib, &mut data, format!("n{i}").as_bytes(), 40 + i, 1)
                .unwrap()
            {
                added += 1;
            } else {
                break;
            }
        }
        assert_eq!(added, 4); // 56 bytes / 12
        assert_eq!(il.lookup(&ib, &data, b"n2").unwrap(), Some((42, 1)));
        assert_eq!(il.remove(&mut ib, &mut data, b"n0").unwrap(), 40);
        assert!(il.add(&mut ib, &mut data, b"zz", 99, 2).unwrap());
        let (p, e) = il.list(&ib, &data).unwrap();
        assert_eq!(p, 2);
        assert_eq!(e.len(), 4);
        // A system.data area with one empty record takes more.
        let mut data = vec![0u8; 24];
        wr16(&mut data, 4, 24);
        assert!(il.add(&mut ib, &mut data, b"more", 77, 1).unwrap());
        assert_eq!(il.list(&ib, &data).unwrap().1.len(), 5);
        InlineDir::set_parent(&mut ib, 9);
        assert_eq!(il.list(&ib, &data).unwrap().0, 9);
    }

    #[test]
    fn dirs_indexed_without_dir_index_is_linear() {
        let mut d = MemDir::new(12, 1024, None);
        init(&mut d, 12, 2).unwrap();
        for i in 0..300u32 {
            add(&mut d, format!("e{i}").as_bytes(), 100 + i, 1).unwrap();
        }
        assert!(d.indexed);
        d.dir_index = false;
        assert_eq!(names(&mut d).len(), 300);
        assert_eq!(lookup(&mut d, b"e77").unwrap(), Some((177, 1)));
        add(&mut d, b"new", 999, 1).unwrap();
        assert!(!d.indexed, "the INDEX flag is cleared on modification");
        assert_eq!(remove(&mut d, b"e5").unwrap(), 105);
        assert_eq!(names(&mut d).len(), 300);
        // With metadata_csum this is refused (the root has no dirent tail).
        let mut c = MemDir::new(12, 1024, Some(3));
        init(&mut c, 12, 2).unwrap();
        for i in 0..300u32 {
            add(&mut c, format!("e{i}").as_bytes(), 100 + i, 1).unwrap();
        }
        c.dir_index = false;
        assert!(matches!(
            add(&mut c, b"x", 5, 1),
            Err(Ext4Error::Unsupported(_))
        ));
    }

    #[test]
    fn dirs_htree_grows_and_shrinks() {
        for (bs, seed) in [(1024, Some(99)), (4096, None), (1024, None)] {
            let mut d = MemDir::new(12, bs, seed);
            init(&mut d, 12, 2).unwrap();
            for i in 0..3000u32 {
                add(&mut d, format!("name-{i:05}-xx").as_bytes(), 100 + i, 1).unwrap();
            }
            assert!(d.indexed);
            crate::htree::check(&mut d).unwrap();
            for i in 0..3000u32 {
                let n = format!("name-{i:05}-xx");
                assert_eq!(
                    lookup(&mut d, n.as_bytes()).unwrap(),
                    Some((100 + i, 1)),
                    "{n}"
                );
            }
            for i in (0..3000u32).step_by(3) {
                remove(&mut d, format!("name-{i:05}-xx").as_bytes()).unwrap();
            }
            crate::htree::check(&mut d).unwrap();
            assert_eq!(names(&mut d).len(), 2000);
            assert_eq!(replace(&mut d, b"name-00001-xx", 4242, 2).unwrap(), 101);
            assert_eq!(lookup(&mut d, b"name-00001-xx").unwrap(), Some((4242, 2)));
            assert!(matches!(
                replace(&mut d, b"name-00000-xx", 5, 1),
                Err(Ext4Error::NotFound(_))
            ));
            assert_eq!(parent(&mut d).unwrap(), 2);
            set_parent(&mut d, 3).unwrap();
            assert_eq!(parent(&mut d).unwrap(), 3);
            crate::htree::check(&mut d).unwrap();
        }
    }
}
