//! ext2/ext3 block maps: 12 direct, single, double, triple indirect. Owner: mapping.

use crate::mapping::{AllocMode, Extent, FileMap, MapCtx, Mapping, NewRun};
use crate::{Ext4Error, Result};

/// Exclusive upper bound of the logical blocks a block map addresses: `12 + p + p² + p³`
/// with `p = block_size / 4`, capped at 2^32 (block numbers in the map are 32-bit).
pub fn max_lblk(block_size: u32) -> u64 {
    let p = u64::from(block_size / 4);
    (12 + p + p * p + p * p * p).min(1 << 32)
}

fn todo() -> Ext4Error {
    Ext4Error::Unsupported("block maps: not implemented yet".into())
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
