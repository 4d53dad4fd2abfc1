//! Reading blocks by XFS address: filesystem blocks, AG blocks, AG header sectors. Every
//! address is checked against the geometry before the device is touched.

use crate::error::{Result, corrupt};
use crate::superblock::Superblock;
use imgscrub_disk::BlockDev;

/// The device and the geometry, borrowed together by every structure's reader.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    pub dev: &'a dyn BlockDev,
    pub sb: &'a Superblock,
}

impl<'a> Reader<'a> {
    pub fn new(dev: &'a dyn BlockDev, sb: &'a Superblock) -> Self {
        Reader { dev, sb }
    }

    /// `count` filesystem blocks from filesystem block `fsb` (one AG, inside the device).
    pub fn fsb(&self, fsb: u64, count: u32, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if count == 0 || !self.sb.fsb_valid(fsb, u64::from(count)) {
            return Err(corrupt(
                what(),
                format!("block {fsb:#x} (+{count}) is outside the filesystem"),
            ));
        }
        self.bytes(
            self.sb.fsb_to_byte(fsb),
            (count as usize) << self.sb.blocklog,
        )
    }

    /// `count` blocks from block `bno` of AG `ag`.
    pub fn agb(&self, ag: u32, bno: u32, count: u32, what: &dyn Fn() -> String) -> Result<Vec<u8>> {
        if ag >= self.sb.agcount
            || count == 0
            || u64::from(bno) + u64::from(count) > u64::from(self.sb.ag_len(ag))
        {
            return Err(corrupt(
                what(),
                format!("AG {ag} block {bno:#x} (+{count}) is outside the AG"),
            ));
        }
        self.bytes(
            self.sb.agb_to_byte(ag, bno),
            (count as usize) << self.sb.blocklog,
        )
    }

    /// Sector `idx` of AG `ag` (0 superblock, 1 AGF, 2 AGI, 3 AGFL).
    pub fn ag_sector(&self, ag: u32, idx: u64) -> Result<Vec<u8>> {
        let ss = u64::from(self.sb.sectsize);
        self.bytes(self.sb.agb_to_byte(ag, 0) + idx * ss, ss as usize)
    }

    /// Raw bytes; past the end of the device is an error from the device layer.
    pub fn bytes(&self, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        self.dev.read_at(&mut b, off)?;
        Ok(b)
    }

    /// The 512-byte "daddr" of a filesystem block, as stored in v5 block headers.
    pub fn fsb_daddr(&self, fsb: u64) -> u64 {
        self.sb.fsb_to_byte(fsb) >> 9
    }

    pub fn agb_daddr(&self, ag: u32, bno: u32) -> u64 {
        self.sb.agb_to_byte(ag, bno) >> 9
    }
}
