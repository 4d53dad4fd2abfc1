//! XFS behind the [`Filesystem`] trait: a thin adapter over [`imgscrub_xfs::XfsFs`]. Reads
//! work on v4 and v5; edits on v5 filesystems opened writable (v4, and features the engine
//! cannot keep exact, are refused at open with the reason).

use crate::filesystem::{
    Entry, Filesystem, FreeRange, FsError, FsKind, Meta, NewAttr, NodeId, Result, SetAttr,
    Timestamp,
};
use imgscrub_disk::BlockDev;
use imgscrub_xfs::{OpenOptions, XfsError, XfsFs};

/// An XFS filesystem on a block device.
pub struct Xfs<D: BlockDev> {
    inner: XfsFs<D>,
}

/// Request errors become the generic [`FsError`] variants; errors about the filesystem keep
/// the engine's message, which names the structure.
fn map_err(e: XfsError) -> FsError {
    match e {
        XfsError::NotFound(s) => FsError::NotFound(s),
        XfsError::NotADirectory(s) => FsError::NotADirectory(s),
        XfsError::IsADirectory(s) => FsError::IsADirectory(s),
        XfsError::Exists(s) => FsError::Exists(s),
        XfsError::NotEmpty(s) => FsError::NotEmpty(s),
        other => FsError::Xfs(other),
    }
}

impl<D: BlockDev> Xfs<D> {
    /// Open the filesystem on `dev`; `writable` refuses (with the reason) what cannot be
    /// written.
    pub fn open(dev: D, writable: bool) -> Result<Self> {
        Ok(Xfs {
            inner: XfsFs::open(dev, OpenOptions { writable }).map_err(map_err)?,
        })
    }

    /// The engine, for XFS-specific calls.
    pub fn engine(&self) -> &XfsFs<D> {
        &self.inner
    }

    pub fn into_inner(self) -> D {
        self.inner.into_inner()
    }
}

impl<D: BlockDev> Filesystem for Xfs<D> {
    fn kind(&self) -> FsKind {
        FsKind::Xfs
    }

    fn root(&self) -> NodeId {
        self.inner.root()
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<Option<NodeId>> {
        self.inner.lookup(dir, name).map_err(map_err)
    }

    fn stat(&self, node: NodeId) -> Result<Meta> {
        let s = self.inner.stat(node).map_err(map_err)?;
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
            .read_dir(dir)
            .map_err(map_err)?
            .into_iter()
            .map(|e| Entry {
                name: e.name,
                node: e.ino,
                file_type: e.file_type,
            })
            .collect())
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.inner.read(node, offset, buf).map_err(map_err)
    }

    fn readlink(&self, node: NodeId) -> Result<Vec<u8>> {
        self.inner.readlink(node).map_err(map_err)
    }

    fn create(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        self.inner.create(dir, name, attr).map_err(map_err)
    }

    fn mkdir(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        self.inner.mkdir(dir, name, attr).map_err(map_err)
    }

    fn symlink(
        &mut self,
        dir: NodeId,
        name: &[u8],
        target: &[u8],
        attr: &NewAttr,
    ) -> Result<NodeId> {
        self.inner.symlink(dir, name, target, attr).map_err(map_err)
    }

    fn write(&mut self, node: NodeId, offset: u64, data: &[u8]) -> Result<()> {
        self.inner.write(node, offset, data).map_err(map_err)
    }

    fn truncate(&mut self, node: NodeId, size: u64) -> Result<()> {
        self.inner.truncate(node, size).map_err(map_err)
    }

    fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.inner.unlink(dir, name).map_err(map_err)
    }

    fn rmdir(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.inner.rmdir(dir, name).map_err(map_err)
    }

    fn rename(&mut self, fd: NodeId, f: &[u8], td: NodeId, t: &[u8]) -> Result<()> {
        self.inner.rename(fd, f, td, t).map_err(map_err)
    }

    fn set_attr(&mut self, node: NodeId, attr: &SetAttr) -> Result<()> {
        self.inner.set_attr(node, attr).map_err(map_err)
    }

    fn get_xattr(&self, node: NodeId, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_xattr(node, name).map_err(map_err)
    }

    fn list_xattrs(&self, node: NodeId) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.list_xattrs(node).map_err(map_err)
    }

    fn set_xattr(&mut self, node: NodeId, name: &str, value: &[u8]) -> Result<()> {
        self.inner.set_xattr(node, name, value).map_err(map_err)
    }

    fn remove_xattr(&mut self, node: NodeId, name: &str) -> Result<()> {
        self.inner.remove_xattr(node, name).map_err(map_err)
    }

    fn free_ranges(&self) -> Result<Vec<FreeRange>> {
        self.inner.free_ranges().map_err(map_err)
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(map_err)
    }

    fn set_clock(&mut self, t: Option<Timestamp>) -> Result<()> {
        self.inner.set_clock(t);
        Ok(())
    }
}

/// What `inspect` shows of an XFS filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsDetails {
    /// 4, or 5 for CRC-enabled filesystems.
    pub version: u16,
    /// Feature names as `mkfs.xfs` options call them (`crc`, `finobt`, `reflink`, …).
    pub features: Vec<String>,
    pub block_size: u32,
    pub sector_size: u32,
    pub inode_size: u32,
    pub dir_block_size: u32,
    pub ag_count: u32,
    pub ag_blocks: u32,
    /// `clean` or `zeroed`; an unusable log makes [`describe`] fail with the reason.
    pub log: String,
    /// Free bytes (free-space btrees and AG free lists).
    pub free_bytes: u64,
    /// Why imgscrub would refuse to edit it (v4, a realtime volume, quota accounting…);
    /// `None`: it can be edited.
    pub read_only_reason: Option<String>,
}

/// Open the XFS on `dev` read-only and describe it; the error says why it cannot be read
/// (dirty log, damage, unsupported feature).
pub fn describe(dev: &dyn BlockDev) -> Result<XfsDetails> {
    let fs = XfsFs::open(dev, OpenOptions { writable: false }).map_err(map_err)?;
    let sb = fs.superblock();
    let free_bytes = fs
        .free_ranges()
        .map_err(map_err)?
        .iter()
        .map(|r| r.len)
        .sum();
    Ok(XfsDetails {
        version: sb.version(),
        features: sb.feature_names(),
        block_size: sb.blocksize,
        sector_size: u32::from(sb.sectsize),
        inode_size: u32::from(sb.inodesize),
        dir_block_size: sb.dirblksize(),
        ag_count: sb.agcount,
        ag_blocks: sb.agblocks,
        log: fs.log_state().to_string(),
        free_bytes,
        read_only_reason: fs.writable_check().err().map(|e| match e {
            XfsError::ReadOnly(r) => r,
            other => other.to_string(),
        }),
    })
}
