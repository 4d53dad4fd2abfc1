//! The one filesystem vocabulary: every backend (ext2/3/4, FAT, a host directory) implements
//! [`Filesystem`], and everything above (GuestTree, profiles, sparsify) speaks only this.
//! File types, timestamps, attributes and free ranges come from `imgscrub-vocab`, the crate
//! the engines share; they are re-exported here so that the layers above name no engine.

pub use imgscrub_vocab::{FileType, FreeRange, NewAttr, SetAttr, Timestamp};

/// Identifies a file within one filesystem (an inode number for ext4).
pub type NodeId = u64;

/// Metadata of one file, as every backend can report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub node: NodeId,
    pub file_type: FileType,
    /// Permission bits including setuid/setgid/sticky.
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: Option<(u32, u32)>,
}

/// One directory entry ("." and ".." are never listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub node: NodeId,
    pub file_type: FileType,
}

/// Which backend a filesystem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Fat,
    HostDir,
}

/// Errors of the filesystem layer. Backends map their own errors into these; `Backend`
/// keeps the backend's message (which names the damaged structure) intact.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("file exists: {0}")]
    Exists(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("is a directory: {0}")]
    IsADirectory(String),
    #[error("directory not empty: {0}")]
    NotEmpty(String),
    #[error("too many levels of symbolic links: {0}")]
    SymlinkLoop(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("not supported by this filesystem: {0}")]
    Unsupported(String),
    /// The volume asked for holds a filesystem imgscrub cannot open (Btrfs, LVM, LUKS…;
    /// [`crate::guest::OPENABLE`] lists what it opens): an unsupported input.
    #[error(
        "{volume} holds {fstype}, which imgscrub cannot open (it can open {})",
        crate::guest::openable_names()
    )]
    UnsupportedFilesystem {
        /// "partition 2" or "the whole disk".
        volume: String,
        /// What the probe found there.
        fstype: crate::probe::FsType,
    },
    /// No volume holds a root filesystem imgscrub can open, and some hold a filesystem that
    /// could be the root but that imgscrub cannot open: an unsupported input, not a missing
    /// file. The message names every volume found and the kinds imgscrub opens.
    #[error("{}", crate::guest::unsupported_root_message(found))]
    UnsupportedRoot {
        /// Every volume of the disk: ("partition 2" or "the whole disk", what it holds).
        found: Vec<(String, crate::probe::FsType)>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ext4(#[from] imgscrub_ext4::Ext4Error),
    #[error(transparent)]
    Xfs(#[from] imgscrub_xfs::XfsError),
    #[error(transparent)]
    Disk(#[from] imgscrub_disk::DiskError),
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// A filesystem we can read and edit. Reads take `&self`; edits take `&mut self` and reach
/// the device at the latest in [`Filesystem::flush`].
pub trait Filesystem {
    fn kind(&self) -> FsKind;
    fn root(&self) -> NodeId;
    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<Option<NodeId>>;
    fn stat(&self, node: NodeId) -> Result<Meta>;
    fn read_dir(&self, dir: NodeId) -> Result<Vec<Entry>>;
    /// Read up to `buf.len()` bytes at `offset`; returns the count (0 at end of file).
    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize>;
    fn readlink(&self, node: NodeId) -> Result<Vec<u8>>;

    fn create(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId>;
    fn mkdir(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId>;
    fn symlink(
        &mut self,
        dir: NodeId,
        name: &[u8],
        target: &[u8],
        attr: &NewAttr,
    ) -> Result<NodeId>;
    fn write(&mut self, node: NodeId, offset: u64, data: &[u8]) -> Result<()>;
    fn truncate(&mut self, node: NodeId, size: u64) -> Result<()>;
    /// Remove a non-directory entry.
    fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Result<()>;
    /// Remove an empty directory.
    fn rmdir(&mut self, dir: NodeId, name: &[u8]) -> Result<()>;
    fn rename(&mut self, from_dir: NodeId, from: &[u8], to_dir: NodeId, to: &[u8]) -> Result<()>;
    fn set_attr(&mut self, node: NodeId, attr: &SetAttr) -> Result<()>;

    fn get_xattr(&self, node: NodeId, name: &str) -> Result<Option<Vec<u8>>>;
    fn list_xattrs(&self, node: NodeId) -> Result<Vec<(String, Vec<u8>)>>;
    fn set_xattr(&mut self, node: NodeId, name: &str, value: &[u8]) -> Result<()>;
    fn remove_xattr(&mut self, node: NodeId, name: &str) -> Result<()>;

    /// Free space runs in bytes from the start of the filesystem (empty for a host dir).
    fn free_ranges(&self) -> Result<Vec<FreeRange>>;
    fn flush(&mut self) -> Result<()>;
    /// Stamp every later change (file and directory times, deletion times) with `t` instead
    /// of the current time, so that the same input and edits give the same bytes
    /// (`SOURCE_DATE_EPOCH`); `None` goes back to the current time. A host directory cannot
    /// (the host kernel stamps its own times) and ignores it.
    fn set_clock(&mut self, t: Option<Timestamp>) -> Result<()>;
    /// What opening it did beyond reading (journal replayed, orphans processed), one
    /// sentence each, for the user to see. Empty by default.
    fn recovery_notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// The whole content of a file.
    fn read_all(&self, node: NodeId) -> Result<Vec<u8>> {
        let size = self.stat(node)?.size;
        // Do not trust a huge size blindly: grow as data actually arrives.
        let mut out = Vec::with_capacity(size.min(1 << 20) as usize);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self.read(node, out.len() as u64, &mut buf)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
            if out.len() as u64 >= size {
                break;
            }
        }
        Ok(out)
    }

    /// Replace a file's content.
    fn set_content(&mut self, node: NodeId, data: &[u8]) -> Result<()> {
        self.truncate(node, 0)?;
        if !data.is_empty() {
            self.write(node, 0, data)?;
        }
        Ok(())
    }

    /// Remove `name` in `dir` and, if it is a directory, everything below it. Iterative, so a
    /// deep tree cannot overflow the stack. Returns the number of entries removed.
    fn remove_tree(&mut self, dir: NodeId, name: &[u8]) -> Result<u64> {
        let Some(top) = self.lookup(dir, name)? else {
            return Err(FsError::NotFound(
                String::from_utf8_lossy(name).into_owned(),
            ));
        };
        if self.stat(top)?.file_type != FileType::Directory {
            self.unlink(dir, name)?;
            return Ok(1);
        }
        let mut removed = 0u64;
        // Directories whose subdirectories were already pushed: meeting one again as a child
        // means a cycle (a damaged image), and still finding subdirectories in one when we come
        // back means they could not be removed. Either way stop instead of looping.
        let mut expanded = std::collections::HashSet::new();
        // Stack of (parent, name, node) directories still to empty.
        let mut stack: Vec<(NodeId, Vec<u8>, NodeId)> = vec![(dir, name.to_vec(), top)];
        while let Some((parent, dname, node)) = stack.pop() {
            let mut subdirs = Vec::new();
            for e in self.read_dir(node)? {
                if e.file_type == FileType::Directory {
                    if expanded.contains(&e.node) || e.node == node {
                        return Err(FsError::Unsupported(format!(
                            "directory cycle at {} (damaged filesystem)",
                            String::from_utf8_lossy(&e.name)
                        )));
                    }
                    subdirs.push((node, e.name, e.node));
                } else {
                    self.unlink(node, &e.name)?;
                    removed += 1;
                }
            }
            if subdirs.is_empty() {
                self.rmdir(parent, &dname)?;
                removed += 1;
            } else if !expanded.insert(node) {
                return Err(FsError::Unsupported(format!(
                    "cannot empty directory {}",
                    String::from_utf8_lossy(&dname)
                )));
            } else {
                // Come back to this directory once its subdirectories are gone.
                stack.push((parent, dname, node));
                stack.extend(subdirs);
            }
        }
        Ok(removed)
    }
}
