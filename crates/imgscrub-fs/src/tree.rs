//! Several filesystems joined at mount points into one tree, the way the guest's kernel
//! mounts them from `/etc/fstab` (`/boot` on its own partition, the ESP at `/boot/efi`).
//!
//! Node ids carry the filesystem: the top 8 bits are its index, the low 56 bits its own node
//! id. Looking up a mount-point directory yields the mounted filesystem's root, so path
//! resolution (`resolve`), the prepare engine and `remove_tree` walk across mounts without
//! knowing about them. Like the kernel: renames across filesystems are refused (EXDEV), and a
//! mount point cannot be removed or renamed (EBUSY).

use crate::filesystem::{
    Entry, FileType, Filesystem, FreeRange, FsError, FsKind, Meta, NewAttr, NodeId, Result, SetAttr,
};
use std::collections::HashMap;

const SHIFT: u32 = 56;
const MASK: u64 = (1 << SHIFT) - 1;

/// Filesystems joined at mount points.
pub struct GuestTree {
    fss: Vec<Box<dyn Filesystem>>,
    /// (filesystem, mount-point directory in it) → mounted filesystem.
    mounts: HashMap<(usize, NodeId), usize>,
}

impl GuestTree {
    /// A tree whose root is `root`.
    pub fn new(root: Box<dyn Filesystem>) -> Self {
        GuestTree {
            fss: vec![root],
            mounts: HashMap::new(),
        }
    }

    /// Mount `fs` on the directory `at` (a node of this tree, e.g. from `resolve`).
    pub fn mount(&mut self, at: NodeId, fs: Box<dyn Filesystem>) -> Result<()> {
        if self.stat(at)?.file_type != FileType::Directory {
            return Err(FsError::NotADirectory(format!("mount point (node {at})")));
        }
        if self.fss.len() >= 255 {
            return Err(FsError::Unsupported(
                "more than 255 mounted filesystems".into(),
            ));
        }
        let (fi, n) = split(at);
        // `at` may be the root of an already mounted filesystem: mount over it, on the
        // directory the earlier mount covers, as a later fstab line shadows an earlier one.
        let key = self
            .mounts
            .iter()
            .find(|&(_, &child)| child == fi && self.fss[child].root() == n)
            .map(|(&k, _)| k)
            .unwrap_or((fi, n));
        self.fss.push(fs);
        self.mounts.insert(key, self.fss.len() - 1);
        Ok(())
    }

    /// How many filesystems the tree joins.
    pub fn len(&self) -> usize {
        self.fss.len()
    }

    /// Always false: a tree has its root filesystem.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn fs(&self, node: NodeId) -> Result<(&dyn Filesystem, NodeId)> {
        let (fi, n) = split(node);
        self.fss
            .get(fi)
            .map(|f| (f.as_ref(), n))
            .ok_or_else(|| FsError::NotFound(format!("node {node:#x}")))
    }

    fn fs_mut(&mut self, node: NodeId) -> Result<(&mut dyn Filesystem, usize, NodeId)> {
        let (fi, n) = split(node);
        match self.fss.get_mut(fi) {
            Some(f) => Ok((f.as_mut(), fi, n)),
            None => Err(FsError::NotFound(format!("node {node:#x}"))),
        }
    }

    /// The tree-wide id of node `n` of filesystem `fi`, crossing into a filesystem mounted
    /// there.
    fn outward(&self, fi: usize, n: NodeId) -> Result<NodeId> {
        if let Some(&child) = self.mounts.get(&(fi, n)) {
            let root = self.fss.get(child).map(|f| f.root()).unwrap_or(0);
            return join(child, root);
        }
        join(fi, n)
    }

    fn is_mount_point(&self, fi: usize, n: NodeId) -> bool {
        self.mounts.contains_key(&(fi, n))
    }

    /// Refuse to remove or rename `name` in `dir` when something is mounted on it.
    fn refuse_busy(&self, dir: NodeId, name: &[u8]) -> Result<()> {
        let (fi, n) = split(dir);
        let (fs, _) = self.fs(dir)?;
        if let Some(child) = fs.lookup(n, name)?
            && self.is_mount_point(fi, child)
        {
            return Err(FsError::Unsupported(format!(
                "{} is a mount point (busy)",
                String::from_utf8_lossy(name)
            )));
        }
        Ok(())
    }
}

fn split(node: NodeId) -> (usize, NodeId) {
    ((node >> SHIFT) as usize, node & MASK)
}

fn join(fi: usize, n: NodeId) -> Result<NodeId> {
    if n > MASK {
        return Err(FsError::Unsupported(format!(
            "node id {n} too large for a joined tree"
        )));
    }
    Ok(((fi as u64) << SHIFT) | n)
}

impl Filesystem for GuestTree {
    fn kind(&self) -> FsKind {
        self.fss.first().map_or(FsKind::Ext4, |f| f.kind())
    }

    fn root(&self) -> NodeId {
        self.fss.first().map_or(0, |f| f.root())
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<Option<NodeId>> {
        let (fs, n) = self.fs(dir)?;
        let (fi, _) = split(dir);
        match fs.lookup(n, name)? {
            Some(c) => Ok(Some(self.outward(fi, c)?)),
            None => Ok(None),
        }
    }

    fn stat(&self, node: NodeId) -> Result<Meta> {
        let (fs, n) = self.fs(node)?;
        let mut m = fs.stat(n)?;
        m.node = node;
        Ok(m)
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<Entry>> {
        let (fs, n) = self.fs(dir)?;
        let (fi, _) = split(dir);
        fs.read_dir(n)?
            .into_iter()
            .map(|mut e| {
                if self.is_mount_point(fi, e.node) {
                    e.file_type = FileType::Directory;
                }
                e.node = self.outward(fi, e.node)?;
                Ok(e)
            })
            .collect()
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (fs, n) = self.fs(node)?;
        fs.read(n, offset, buf)
    }

    fn readlink(&self, node: NodeId) -> Result<Vec<u8>> {
        let (fs, n) = self.fs(node)?;
        fs.readlink(n)
    }

    fn create(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        let (fs, fi, n) = self.fs_mut(dir)?;
        let c = fs.create(n, name, attr)?;
        join(fi, c)
    }

    fn mkdir(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        let (fs, fi, n) = self.fs_mut(dir)?;
        let c = fs.mkdir(n, name, attr)?;
        join(fi, c)
    }

    fn symlink(
        &mut self,
        dir: NodeId,
        name: &[u8],
        target: &[u8],
        attr: &NewAttr,
    ) -> Result<NodeId> {
        let (fs, fi, n) = self.fs_mut(dir)?;
        let c = fs.symlink(n, name, target, attr)?;
        join(fi, c)
    }

    fn write(&mut self, node: NodeId, offset: u64, data: &[u8]) -> Result<()> {
        let (fs, _, n) = self.fs_mut(node)?;
        fs.write(n, offset, data)
    }

    fn truncate(&mut self, node: NodeId, size: u64) -> Result<()> {
        let (fs, _, n) = self.fs_mut(node)?;
        fs.truncate(n, size)
    }

    fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.refuse_busy(dir, name)?;
        let (fs, _, n) = self.fs_mut(dir)?;
        fs.unlink(n, name)
    }

    fn rmdir(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.refuse_busy(dir, name)?;
        let (fs, _, n) = self.fs_mut(dir)?;
        fs.rmdir(n, name)
    }

    fn rename(&mut self, from_dir: NodeId, from: &[u8], to_dir: NodeId, to: &[u8]) -> Result<()> {
        let (a, b) = (split(from_dir).0, split(to_dir).0);
        if a != b {
            return Err(FsError::Unsupported(
                "rename across filesystems (EXDEV): copy and remove instead".into(),
            ));
        }
        self.refuse_busy(from_dir, from)?;
        self.refuse_busy(to_dir, to)?;
        let (fs, _, n) = self.fs_mut(from_dir)?;
        fs.rename(n, from, split(to_dir).1, to)
    }

    fn set_attr(&mut self, node: NodeId, attr: &SetAttr) -> Result<()> {
        let (fs, _, n) = self.fs_mut(node)?;
        fs.set_attr(n, attr)
    }

    fn get_xattr(&self, node: NodeId, name: &str) -> Result<Option<Vec<u8>>> {
        let (fs, n) = self.fs(node)?;
        fs.get_xattr(n, name)
    }

    fn list_xattrs(&self, node: NodeId) -> Result<Vec<(String, Vec<u8>)>> {
        let (fs, n) = self.fs(node)?;
        fs.list_xattrs(n)
    }

    fn set_xattr(&mut self, node: NodeId, name: &str, value: &[u8]) -> Result<()> {
        let (fs, _, n) = self.fs_mut(node)?;
        fs.set_xattr(n, name, value)
    }

    fn remove_xattr(&mut self, node: NodeId, name: &str) -> Result<()> {
        let (fs, _, n) = self.fs_mut(node)?;
        fs.remove_xattr(n, name)
    }

    /// Free space is per filesystem (offsets are relative to each one): ask each filesystem.
    fn free_ranges(&self) -> Result<Vec<FreeRange>> {
        Err(FsError::Unsupported(
            "free ranges of a joined tree: ask each filesystem".into(),
        ))
    }

    fn flush(&mut self) -> Result<()> {
        for fs in &mut self.fss {
            fs.flush()?;
        }
        Ok(())
    }
    fn recovery_notes(&self) -> Vec<String> {
        self.fss.iter().flat_map(|fs| fs.recovery_notes()).collect()
    }
    fn set_clock(&mut self, t: Option<crate::filesystem::Timestamp>) -> Result<()> {
        for fs in &mut self.fss {
            fs.set_clock(t)?;
        }
        Ok(())
    }
}
