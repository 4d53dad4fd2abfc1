//! ext2/3/4 behind the [`Filesystem`] trait: a thin adapter over
//! [`imgscrub_ext4::fs::Ext4Fs`], which does all the work.

use crate::filesystem::{
    Entry, Filesystem, FreeRange, FsError, FsKind, Meta, NewAttr, NodeId, Result, SetAttr,
};
use imgscrub_disk::BlockDev;
use imgscrub_ext4::Ext4Error;
use imgscrub_ext4::fs::{Ext4Fs, OpenOptions};
use imgscrub_ext4::superblock::{compat, incompat, ro_compat};

/// An ext2/3/4 filesystem on a block device.
pub struct Ext4<D: BlockDev> {
    inner: Ext4Fs<D>,
    kind: FsKind,
}

/// Request errors become the generic [`FsError`] variants (callers match on those); errors
/// about the filesystem itself keep the engine's message, which names the structure.
fn map_err(e: Ext4Error) -> FsError {
    match e {
        Ext4Error::NotFound(s) => FsError::NotFound(s),
        Ext4Error::Exists(s) => FsError::Exists(s),
        Ext4Error::NotADirectory(s) => FsError::NotADirectory(s),
        Ext4Error::IsADirectory(s) => FsError::IsADirectory(s),
        Ext4Error::NotEmpty(s) => FsError::NotEmpty(s),
        other => FsError::Ext4(other),
    }
}

fn ino(node: NodeId) -> Result<u32> {
    u32::try_from(node).map_err(|_| FsError::NotFound(format!("inode {node}")))
}

impl<D: BlockDev> Ext4<D> {
    /// Open the filesystem on `dev`; `writable` refuses filesystems we cannot edit safely
    /// (the engine says why).
    pub fn open(dev: D, writable: bool) -> Result<Self> {
        let inner = Ext4Fs::open(dev, OpenOptions { writable }).map_err(map_err)?;
        let sb = inner.superblock();
        // As blkid decides: any ext4-only feature makes it ext4; else a journal makes ext3.
        let ext4_incompat = incompat::EXTENTS | incompat::BIT64 | incompat::FLEX_BG;
        let ext4_ro = ro_compat::HUGE_FILE | ro_compat::GDT_CSUM | ro_compat::DIR_NLINK;
        let kind = if sb.has_incompat(ext4_incompat) || sb.has_ro_compat(ext4_ro) {
            FsKind::Ext4
        } else if sb.has_compat(compat::HAS_JOURNAL) {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        };
        Ok(Ext4 { inner, kind })
    }

    /// The engine, for ext4-specific calls.
    pub fn engine(&self) -> &Ext4Fs<D> {
        &self.inner
    }

    pub fn engine_mut(&mut self) -> &mut Ext4Fs<D> {
        &mut self.inner
    }

    pub fn into_inner(self) -> D {
        self.inner.into_inner()
    }
}

impl<D: BlockDev> Filesystem for Ext4<D> {
    fn kind(&self) -> FsKind {
        self.kind
    }

    fn root(&self) -> NodeId {
        NodeId::from(self.inner.root())
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<Option<NodeId>> {
        Ok(self
            .inner
            .lookup(ino(dir)?, name)
            .map_err(map_err)?
            .map(NodeId::from))
    }

    fn stat(&self, node: NodeId) -> Result<Meta> {
        let s = self.inner.stat(ino(node)?).map_err(map_err)?;
        Ok(Meta {
            node,
            file_type: s.file_type,
            perm: s.perm,
            uid: s.uid,
            gid: s.gid,
            size: s.size,
            nlink: s.nlink,
            atime: s.atime,
            mtime: s.mtime,
            ctime: s.ctime,
            rdev: s.rdev,
        })
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<Entry>> {
        Ok(self
            .inner
            .read_dir(ino(dir)?)
            .map_err(map_err)?
            .into_iter()
            .map(|e| Entry {
                name: e.name,
                node: NodeId::from(e.ino),
                file_type: e.file_type,
            })
            .collect())
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.inner.read(ino(node)?, offset, buf).map_err(map_err)
    }

    fn readlink(&self, node: NodeId) -> Result<Vec<u8>> {
        self.inner.readlink(ino(node)?).map_err(map_err)
    }

    fn create(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        Ok(NodeId::from(
            self.inner.create(ino(dir)?, name, attr).map_err(map_err)?,
        ))
    }

    fn mkdir(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        Ok(NodeId::from(
            self.inner.mkdir(ino(dir)?, name, attr).map_err(map_err)?,
        ))
    }

    fn symlink(
        &mut self,
        dir: NodeId,
        name: &[u8],
        target: &[u8],
        attr: &NewAttr,
    ) -> Result<NodeId> {
        Ok(NodeId::from(
            self.inner
                .symlink(ino(dir)?, name, target, attr)
                .map_err(map_err)?,
        ))
    }

    fn write(&mut self, node: NodeId, offset: u64, data: &[u8]) -> Result<()> {
        self.inner.write(ino(node)?, offset, data).map_err(map_err)
    }

    fn truncate(&mut self, node: NodeId, size: u64) -> Result<()> {
        self.inner.truncate(ino(node)?, size).map_err(map_err)
    }

    fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.inner.unlink(ino(dir)?, name).map_err(map_err)
    }

    fn rmdir(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.inner.rmdir(ino(dir)?, name).map_err(map_err)
    }

    fn rename(&mut self, from_dir: NodeId, from: &[u8], to_dir: NodeId, to: &[u8]) -> Result<()> {
        self.inner
            .rename(ino(from_dir)?, from, ino(to_dir)?, to)
            .map_err(map_err)
    }

    fn set_attr(&mut self, node: NodeId, attr: &SetAttr) -> Result<()> {
        self.inner.set_attr(ino(node)?, attr).map_err(map_err)
    }

    fn get_xattr(&self, node: NodeId, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_xattr(ino(node)?, name).map_err(map_err)
    }

    fn list_xattrs(&self, node: NodeId) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.list_xattrs(ino(node)?).map_err(map_err)
    }

    fn set_xattr(&mut self, node: NodeId, name: &str, value: &[u8]) -> Result<()> {
        self.inner
            .set_xattr(ino(node)?, name, value)
            .map_err(map_err)
    }

    fn remove_xattr(&mut self, node: NodeId, name: &str) -> Result<()> {
        self.inner.remove_xattr(ino(node)?, name).map_err(map_err)
    }

    fn free_ranges(&self) -> Result<Vec<FreeRange>> {
        self.inner.free_ranges().map_err(map_err)
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(map_err)
    }
    fn recovery_notes(&self) -> Vec<String> {
        self.inner.recovery_notes().to_vec()
    }
    fn set_clock(&mut self, t: Option<crate::filesystem::Timestamp>) -> Result<()> {
        self.inner.set_clock(t);
        Ok(())
    }
}
