//! Inline data (`EXT4_INLINE_DATA_FL`, feature `inline_data`). Owner: mapping.
//!
//! On-disk rule: an inline file's first 60 bytes live in `i_block`, the rest (if any) in the
//! value of the extended attribute `system.data` (name index 7, name `"data"`), which must be
//! in the inode body (never in an xattr block). The attribute exists even when empty. `i_size`
//! says how many bytes are valid. An inline file has no data blocks (`i_blocks` counts only
//! an xattr block, if any).
//!
//! Parsing and writing the xattr itself belongs to [`crate::xattr`] (dirs); this module only
//! splits and joins the contents and converts an inline file to a block-mapped one when it
//! grows beyond what fits.
//!
//! Inline *directories* have a different layout (a 4-byte parent inode number, then
//! `ext4_dir_entry_2` records without "." and ".."): converting them is the directory code's
//! job; [`convert_to_blocks`] only moves bytes.

use crate::mapping::{self, AllocMode, FileMap, MapCtx, MapKind, NewRun};
use crate::{Ext4Error, Result};

/// Bytes of inline data stored in `i_block`.
pub const I_BLOCK_BYTES: usize = 60;
/// Name index of `system.data` in the xattr entry (`EXT4_XATTR_INDEX_SYSTEM`).
pub const SYSTEM_DATA_INDEX: u8 = 7;
/// Name (without prefix) of the inline-data xattr.
pub const SYSTEM_DATA_NAME: &[u8] = b"data";

/// The contents of an inline file of `size` bytes: `i_block` followed by the `system.data`
/// value. `Corrupt` when `size` exceeds what both hold.
pub fn read(ino: u32, i_block: &[u8; 60], system_data: &[u8], size: u64) -> Result<Vec<u8>> {
    let avail = I_BLOCK_BYTES.saturating_add(system_data.len());
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s <= avail)
        .ok_or_else(|| {
            Ext4Error::corrupt(
                format!("inline data of inode {ino}"),
                format!("i_size {size} exceeds the {avail} bytes stored inline"),
            )
        })?;
    let mut out = Vec::with_capacity(size);
    let head = size.min(I_BLOCK_BYTES);
    out.extend_from_slice(&i_block[..head]);
    let tail = size.saturating_sub(I_BLOCK_BYTES);
    out.extend_from_slice(system_data.get(..tail).unwrap_or(&[]));
    Ok(out)
}

/// Split `data` into the new `i_block` (zero-padded) and the `system.data` value (empty when
/// `data` fits in 60 bytes). Core stores both and sets `i_size = data.len()`; whether the value
/// fits in the inode body is for the xattr code to say (see [`crate::xattr`]).
pub fn split(data: &[u8]) -> ([u8; 60], Vec<u8>) {
    let mut i_block = [0u8; 60];
    let head = data.len().min(I_BLOCK_BYTES);
    i_block[..head].copy_from_slice(&data[..head]);
    let tail = data.get(I_BLOCK_BYTES..).unwrap_or(&[]).to_vec();
    (i_block, tail)
}

/// Convert an inline file whose contents are `data` (from [`read`]) into a block-mapped file
/// of kind `to` (`Extents` on ext4, `BlockMap` without the extents feature): `i_block` is
/// re-initialised, `ceil(len / block_size)` blocks are allocated near `goal` and `data` is
/// written to them, zero-padded. `fm.kind` becomes `to`.
///
/// Core then clears `EXT4_INLINE_DATA_FL`, sets `EXT4_EXTENTS_FL` for `Extents`, removes the
/// `system.data` xattr and adds `fm.blocks_delta` to `i_blocks`. Empty `data` allocates
/// nothing.
pub fn convert_to_blocks(
    ctx: &mut dyn MapCtx,
    fm: &mut FileMap<'_>,
    data: &[u8],
    to: MapKind,
    goal: u64,
) -> Result<Vec<NewRun>> {
    if fm.kind != MapKind::Inline {
        return Err(Ext4Error::InvalidArgument(format!(
            "inode {} is not an inline-data inode",
            fm.ino
        )));
    }
    match to {
        MapKind::Extents => mapping::init_extents(fm.i_block),
        MapKind::BlockMap => mapping::init_blockmap(fm.i_block),
        MapKind::Inline => {
            return Err(Ext4Error::InvalidArgument(
                "convert_to_blocks: target must be Extents or BlockMap".into(),
            ));
        }
    }
    fm.kind = to;
    fm.i_block_dirty = true;
    let bs = ctx.block_size() as usize;
    if bs == 0 {
        return Err(Ext4Error::InvalidArgument("block size 0".into()));
    }
    let nblocks = data.len().div_ceil(bs) as u64;
    if nblocks == 0 {
        return Ok(Vec::new());
    }
    let runs = mapping::allocate(ctx, fm, 0, nblocks, goal, AllocMode::Write)?;
    let mut buf = vec![0u8; bs];
    for run in &runs {
        for i in 0..run.len {
            let lblk = run.lblk.saturating_add(i);
            let off = usize::try_from(lblk)
                .unwrap_or(usize::MAX)
                .saturating_mul(bs);
            buf.fill(0);
            if let Some(src) = data.get(off..) {
                let n = src.len().min(bs);
                buf[..n].copy_from_slice(&src[..n]);
            }
            ctx.write_block(run.pblk.saturating_add(i), &buf)?;
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_read_roundtrip() {
        for len in [0usize, 1, 59, 60, 61, 200] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (ib, tail) = split(&data);
            assert_eq!(tail.len(), len.saturating_sub(60));
            assert_eq!(read(12, &ib, &tail, len as u64).unwrap(), data);
        }
        let (ib, tail) = split(&[1; 70]);
        assert!(read(12, &ib, &tail, 71).is_err());
    }
}
