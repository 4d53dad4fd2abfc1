//! STUB (replaced by the xfs-space helper's module).
#![allow(dead_code, unused_variables)]
use crate::error::{Result, XfsError};
use crate::reader::Reader;
use crate::superblock::Superblock;
pub use crate::meta::Stamp;
use imgscrub_disk::BlockDev;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    File { ino: u64, attr: bool, offset: u64 },
    Bmbt { ino: u64, attr: bool },
}
pub struct Space;
fn no() -> XfsError { XfsError::ReadOnly("stub".into()) }
impl Space {
    pub fn load(r: &Reader<'_>) -> Result<Space> { Err(no()) }
    pub fn alloc(&mut self, near: u64, len: u64, min_len: u64, owner: Owner) -> Result<(u64, u64)> { Err(no()) }
    pub fn free(&mut self, fsb: u64, len: u64, owner: Owner) -> Result<()> { Err(no()) }
    pub fn alloc_inode(&mut self, dev: &dyn BlockDev, sb: &Superblock, stamp: &Stamp, near_ino: u64) -> Result<u64> { Err(no()) }
    pub fn free_inode(&mut self, ino: u64) -> Result<()> { Err(no()) }
    pub fn icount(&self) -> u64 { 0 }
    pub fn ifree(&self) -> u64 { 0 }
    pub fn fdblocks(&self) -> u64 { 0 }
    pub fn flush(&mut self, dev: &dyn BlockDev, sb: &Superblock, stamp: &Stamp) -> Result<()> { Err(no()) }
}
