//! Extent trees: lookup, insert, remove ranges, split, grow depth, checksum. Owner: mapping.

use crate::mapping::{AllocMode, Extent, FileMap, MapCtx, Mapping, NewRun};
use crate::{Ext4Error, Result};

/// Exclusive upper bound of extent logical block numbers (`ee_block` is 32-bit).
pub const MAX_LBLK: u64 = 1 << 32;

/// Write an empty depth-0 root header into `i_block`.
pub fn init_root(i_block: &mut [u8; 60]) {
    i_block.fill(0);
    i_block[0..2].copy_from_slice(&0xF30Au16.to_le_bytes());
    i_block[4..6].copy_from_slice(&4u16.to_le_bytes());
}

fn todo() -> Ext4Error {
    Ext4Error::Unsupported("extent trees: not implemented yet".into())
}

pub(crate) fn map(_: &mut dyn MapCtx, _: &mut FileMap<'_>, _: u64) -> Result<Mapping> {
    Err(todo())
}
pub(crate) fn extents(_: &mut dyn MapCtx, _: &mut FileMap<'_>) -> Result<Vec<Extent>> {
    Err(todo())
}
pub(crate) fn allocate(
    _: &mut dyn MapCtx,
    _: &mut FileMap<'_>,
    _: u64,
    _: u64,
    _: u64,
    _: AllocMode,
) -> Result<Vec<NewRun>> {
    Err(todo())
}
pub(crate) fn punch(_: &mut dyn MapCtx, _: &mut FileMap<'_>, _: u64, _: u64) -> Result<()> {
    Err(todo())
}
pub(crate) fn metadata_blocks(_: &mut dyn MapCtx, _: &mut FileMap<'_>) -> Result<Vec<u64>> {
    Err(todo())
}
