//! A host directory as a [`Filesystem`]: cheap unit tests of everything above the
//! filesystem layer, and differential tests (apply a profile to a directory and to an image
//! made from it, then compare).
//!
//! Node ids are indexes into a table of paths relative to the root; nothing outside the root
//! is ever touched, and symlinks are never followed by the backend itself (path resolution
//! above does that, inside the guest root).

use crate::filesystem::{
    Entry, FileType, Filesystem, FreeRange, FsError, FsKind, Meta, NewAttr, NodeId, Result,
    SetAttr, Timestamp,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A directory on the host used as a filesystem.
#[derive(Debug)]
pub struct HostDir {
    root: PathBuf,
    // Relative paths by node id, and the reverse map. Behind a Mutex because lookups
    // (`&self`) hand out new ids.
    nodes: Mutex<(Vec<PathBuf>, HashMap<PathBuf, NodeId>)>,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FsError {
    let what = what.into();
    move |source| FsError::Io { what, source }
}

fn valid_name(name: &[u8]) -> Result<&OsStr> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(FsError::InvalidPath(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    Ok(OsStr::from_bytes(name))
}

fn ts(secs: i64, nsecs: i64) -> Timestamp {
    Timestamp::new(secs, nsecs.clamp(0, 999_999_999) as u32)
}

impl HostDir {
    /// Use `root` (an existing directory) as the filesystem.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let meta = fs::symlink_metadata(&root).map_err(io_err(format!("{}", root.display())))?;
        if !meta.is_dir() {
            return Err(FsError::NotADirectory(root.display().to_string()));
        }
        let mut by_path = HashMap::new();
        by_path.insert(PathBuf::new(), 0);
        Ok(HostDir {
            root,
            nodes: Mutex::new((vec![PathBuf::new()], by_path)),
        })
    }

    fn rel(&self, node: NodeId) -> Result<PathBuf> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .0
            .get(node as usize)
            .cloned()
            .ok_or_else(|| FsError::NotFound(format!("node {node}")))
    }

    fn abs(&self, node: NodeId) -> Result<PathBuf> {
        Ok(self.root.join(self.rel(node)?))
    }

    fn id_for(&self, rel: PathBuf) -> NodeId {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&id) = nodes.1.get(&rel) {
            return id;
        }
        let id = nodes.0.len() as NodeId;
        nodes.0.push(rel.clone());
        nodes.1.insert(rel, id);
        id
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Result<(PathBuf, PathBuf)> {
        let rel = self.rel(dir)?.join(valid_name(name)?);
        Ok((self.root.join(&rel), rel))
    }

    fn apply_new_attr(&self, path: &Path, attr: &NewAttr, is_link: bool) -> Result<()> {
        let shown = path.display().to_string();
        if !is_link {
            fs::set_permissions(
                path,
                fs::Permissions::from_mode(u32::from(attr.perm & 0o7777)),
            )
            .map_err(io_err(format!("chmod {shown}")))?;
        }
        std::os::unix::fs::lchown(path, Some(attr.uid), Some(attr.gid))
            .map_err(io_err(format!("chown {shown}")))?;
        if let (Some(t), false) = (attr.time, is_link) {
            set_times(path, Some(t), Some(t))?;
        }
        Ok(())
    }
}

fn systime(t: Timestamp) -> std::time::SystemTime {
    use std::time::{Duration, UNIX_EPOCH};
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nsecs)
    } else {
        UNIX_EPOCH - Duration::new(t.secs.unsigned_abs(), 0) + Duration::new(0, t.nsecs)
    }
}

fn set_times(path: &Path, atime: Option<Timestamp>, mtime: Option<Timestamp>) -> Result<()> {
    let f = File::options()
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .map_err(io_err(format!("open {}", path.display())))?;
    let mut times = fs::FileTimes::new();
    if let Some(a) = atime {
        times = times.set_accessed(systime(a));
    }
    if let Some(m) = mtime {
        times = times.set_modified(systime(m));
    }
    f.set_times(times)
        .map_err(io_err(format!("set times of {}", path.display())))
}

fn file_type(ft: fs::FileType) -> FileType {
    if ft.is_dir() {
        FileType::Directory
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_char_device() {
        FileType::CharDevice
    } else if ft.is_block_device() {
        FileType::BlockDevice
    } else if ft.is_fifo() {
        FileType::Fifo
    } else if ft.is_socket() {
        FileType::Socket
    } else {
        FileType::Regular
    }
}

impl Filesystem for HostDir {
    fn kind(&self) -> FsKind {
        FsKind::HostDir
    }

    fn root(&self) -> NodeId {
        0
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<Option<NodeId>> {
        if name == b"." {
            return Ok(Some(dir));
        }
        let (abs, rel) = self.child(dir, name)?;
        match fs::symlink_metadata(&abs) {
            Ok(_) => Ok(Some(self.id_for(rel))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("{}", abs.display()))(e)),
        }
    }

    fn stat(&self, node: NodeId) -> Result<Meta> {
        let abs = self.abs(node)?;
        let m = fs::symlink_metadata(&abs).map_err(io_err(format!("{}", abs.display())))?;
        let ft = file_type(m.file_type());
        let rdev = matches!(ft, FileType::CharDevice | FileType::BlockDevice).then(|| {
            let d = m.rdev();
            (
                ((d >> 8) & 0xfff) as u32 | ((d >> 32) & !0xfff) as u32,
                (d & 0xff) as u32 | ((d >> 12) & !0xff) as u32,
            )
        });
        Ok(Meta {
            node,
            file_type: ft,
            perm: (m.mode() & 0o7777) as u16,
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            nlink: m.nlink() as u32,
            atime: ts(m.atime(), m.atime_nsec()),
            mtime: ts(m.mtime(), m.mtime_nsec()),
            ctime: ts(m.ctime(), m.ctime_nsec()),
            rdev,
        })
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<Entry>> {
        let abs = self.abs(dir)?;
        let rel = self.rel(dir)?;
        let mut out = Vec::new();
        for e in fs::read_dir(&abs).map_err(io_err(format!("read dir {}", abs.display())))? {
            let e = e.map_err(io_err(format!("read dir {}", abs.display())))?;
            let ft = e
                .file_type()
                .map_err(io_err(format!("stat {}", e.path().display())))?;
            let name = e.file_name().as_bytes().to_vec();
            let node = self.id_for(rel.join(e.file_name()));
            out.push(Entry {
                name,
                node,
                file_type: file_type(ft),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let abs = self.abs(node)?;
        let f = File::open(&abs).map_err(io_err(format!("open {}", abs.display())))?;
        let mut done = 0;
        while done < buf.len() {
            let n = f
                .read_at(&mut buf[done..], offset + done as u64)
                .map_err(io_err(format!("read {}", abs.display())))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn readlink(&self, node: NodeId) -> Result<Vec<u8>> {
        let abs = self.abs(node)?;
        Ok(fs::read_link(&abs)
            .map_err(io_err(format!("readlink {}", abs.display())))?
            .into_os_string()
            .into_vec())
    }

    fn create(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        let (abs, rel) = self.child(dir, name)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&abs)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    FsError::Exists(abs.display().to_string())
                } else {
                    io_err(format!("create {}", abs.display()))(e)
                }
            })?;
        self.apply_new_attr(&abs, attr, false)?;
        Ok(self.id_for(rel))
    }

    fn mkdir(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        let (abs, rel) = self.child(dir, name)?;
        fs::create_dir(&abs).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                FsError::Exists(abs.display().to_string())
            } else {
                io_err(format!("mkdir {}", abs.display()))(e)
            }
        })?;
        self.apply_new_attr(&abs, attr, false)?;
        Ok(self.id_for(rel))
    }

    fn symlink(
        &mut self,
        dir: NodeId,
        name: &[u8],
        target: &[u8],
        attr: &NewAttr,
    ) -> Result<NodeId> {
        let (abs, rel) = self.child(dir, name)?;
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &abs).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                FsError::Exists(abs.display().to_string())
            } else {
                io_err(format!("symlink {}", abs.display()))(e)
            }
        })?;
        self.apply_new_attr(&abs, attr, true)?;
        Ok(self.id_for(rel))
    }

    fn write(&mut self, node: NodeId, offset: u64, data: &[u8]) -> Result<()> {
        let abs = self.abs(node)?;
        let f = OpenOptions::new()
            .write(true)
            .open(&abs)
            .map_err(io_err(format!("open {}", abs.display())))?;
        f.write_all_at(data, offset)
            .map_err(io_err(format!("write {}", abs.display())))
    }

    fn truncate(&mut self, node: NodeId, size: u64) -> Result<()> {
        let abs = self.abs(node)?;
        let f = OpenOptions::new()
            .write(true)
            .open(&abs)
            .map_err(io_err(format!("open {}", abs.display())))?;
        f.set_len(size)
            .map_err(io_err(format!("truncate {}", abs.display())))
    }

    fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        let (abs, _) = self.child(dir, name)?;
        let m =
            fs::symlink_metadata(&abs).map_err(|_| FsError::NotFound(abs.display().to_string()))?;
        if m.is_dir() {
            return Err(FsError::IsADirectory(abs.display().to_string()));
        }
        fs::remove_file(&abs).map_err(io_err(format!("unlink {}", abs.display())))
    }

    fn rmdir(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        let (abs, _) = self.child(dir, name)?;
        let m =
            fs::symlink_metadata(&abs).map_err(|_| FsError::NotFound(abs.display().to_string()))?;
        if !m.is_dir() {
            return Err(FsError::NotADirectory(abs.display().to_string()));
        }
        fs::remove_dir(&abs).map_err(|e| {
            if e.kind() == std::io::ErrorKind::DirectoryNotEmpty {
                FsError::NotEmpty(abs.display().to_string())
            } else {
                io_err(format!("rmdir {}", abs.display()))(e)
            }
        })
    }

    fn rename(&mut self, from_dir: NodeId, from: &[u8], to_dir: NodeId, to: &[u8]) -> Result<()> {
        let (a, _) = self.child(from_dir, from)?;
        let (b, _) = self.child(to_dir, to)?;
        fs::rename(&a, &b).map_err(io_err(format!("rename {} to {}", a.display(), b.display())))?;
        // Ids of the old path (and below it) now point nowhere: forget them.
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let base = a.strip_prefix(&self.root).unwrap_or(&a).to_path_buf();
        nodes.1.retain(|p, _| !p.starts_with(&base));
        Ok(())
    }

    fn set_attr(&mut self, node: NodeId, attr: &SetAttr) -> Result<()> {
        let abs = self.abs(node)?;
        let shown = abs.display().to_string();
        let is_link = fs::symlink_metadata(&abs)
            .map_err(io_err(shown.clone()))?
            .file_type()
            .is_symlink();
        if let (Some(perm), false) = (attr.perm, is_link) {
            fs::set_permissions(&abs, fs::Permissions::from_mode(u32::from(perm & 0o7777)))
                .map_err(io_err(format!("chmod {shown}")))?;
        }
        if attr.uid.is_some() || attr.gid.is_some() {
            std::os::unix::fs::lchown(&abs, attr.uid, attr.gid)
                .map_err(io_err(format!("chown {shown}")))?;
        }
        if (attr.atime.is_some() || attr.mtime.is_some()) && !is_link {
            set_times(&abs, attr.atime, attr.mtime)?;
        }
        Ok(())
    }

    fn get_xattr(&self, _node: NodeId, _name: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn list_xattrs(&self, _node: NodeId) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }

    fn set_xattr(&mut self, _node: NodeId, name: &str, _value: &[u8]) -> Result<()> {
        Err(FsError::Unsupported(format!(
            "extended attribute {name} on a host directory"
        )))
    }

    fn remove_xattr(&mut self, _node: NodeId, _name: &str) -> Result<()> {
        Ok(())
    }

    fn free_ranges(&self) -> Result<Vec<FreeRange>> {
        Ok(Vec::new())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn set_clock(&mut self, _: Option<Timestamp>) -> Result<()> {
        Ok(())
    }
}
