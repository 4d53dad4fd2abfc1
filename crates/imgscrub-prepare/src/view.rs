//! A read view of the guest tree with the planner's pending changes layered on top.
//!
//! The planner never writes: every action it plans is recorded here (a file's new content,
//! a removed path, a new directory or link), so later actions see the tree as it will be
//! after the earlier ones. Paths are kept canonical: absolute, without `.`/`..`, and with
//! every directory component resolved through guest symlinks *inside the guest root* (never
//! on the host), so two spellings of one file share one key.

use crate::error::{PrepareError, Result};
use imgscrub_fs::filesystem::FileType;
use imgscrub_fs::{Filesystem, resolve_entry};
use std::collections::BTreeMap;

/// Largest configuration file we read from a guest (16 MiB). Guest files are untrusted.
pub const MAX_CONFIG: u64 = 16 << 20;

/// Symlinks followed while canonicalising one path.
const MAX_LINKS: usize = 40;

/// What a path is, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// File type.
    pub file_type: FileType,
    /// Size in bytes (content length for staged files).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// A pending change to one canonical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Staged {
    /// The path (and everything below it) will be gone.
    Absent,
    /// A regular file with this content.
    File {
        content: Vec<u8>,
        perm: u16,
        uid: u32,
        gid: u32,
    },
    /// A directory.
    Dir { perm: u16, uid: u32, gid: u32 },
    /// A symbolic link.
    Symlink { target: Vec<u8> },
}

/// Display a guest path.
pub fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Join a canonical directory path and a name.
pub(crate) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Parent and last component of a canonical path ("/" has no parent).
pub(crate) fn split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let idx = path.iter().rposition(|&b| b == b'/')?;
    let name = path.get(idx + 1..)?;
    if name.is_empty() {
        return None;
    }
    let parent = if idx == 0 {
        &b"/"[..]
    } else {
        path.get(..idx)?
    };
    Some((parent, name))
}

/// The tree as the planner sees it: the filesystem plus pending changes.
pub struct View<'a> {
    fs: &'a dyn Filesystem,
    pub(crate) staged: BTreeMap<Vec<u8>, Staged>,
}

impl<'a> View<'a> {
    /// A view of `fs` with nothing pending.
    pub fn new(fs: &'a dyn Filesystem) -> Self {
        View {
            fs,
            staged: BTreeMap::new(),
        }
    }

    /// The underlying filesystem.
    pub fn fs(&self) -> &'a dyn Filesystem {
        self.fs
    }

    /// The pending state of `path` itself or of its nearest ancestor that has one, if that
    /// makes the path absent.
    fn staged_state(&self, path: &[u8]) -> Option<&Staged> {
        if let Some(s) = self.staged.get(path) {
            return Some(s);
        }
        let mut p = path;
        while let Some((parent, _)) = split(p) {
            if let Some(Staged::Absent) = self.staged.get(parent) {
                return Some(&Staged::Absent);
            }
            if let Some(Staged::File { .. } | Staged::Symlink { .. }) = self.staged.get(parent) {
                return Some(&Staged::Absent);
            }
            p = parent;
        }
        None
    }

    /// Look a canonical path up without following a final symlink.
    pub fn node(&self, path: &[u8]) -> Result<Option<NodeInfo>> {
        match self.staged_state(path) {
            Some(Staged::Absent) => return Ok(None),
            Some(Staged::File {
                content,
                perm,
                uid,
                gid,
            }) => {
                return Ok(Some(NodeInfo {
                    file_type: FileType::Regular,
                    size: content.len() as u64,
                    perm: *perm,
                    uid: *uid,
                    gid: *gid,
                }));
            }
            Some(Staged::Dir { perm, uid, gid }) => {
                return Ok(Some(NodeInfo {
                    file_type: FileType::Directory,
                    size: 0,
                    perm: *perm,
                    uid: *uid,
                    gid: *gid,
                }));
            }
            Some(Staged::Symlink { target }) => {
                return Ok(Some(NodeInfo {
                    file_type: FileType::Symlink,
                    size: target.len() as u64,
                    perm: 0o777,
                    uid: 0,
                    gid: 0,
                }));
            }
            None => {}
        }
        let Some(node) = self.fs_node(path)? else {
            return Ok(None);
        };
        let m = self.fs.stat(node)?;
        Ok(Some(NodeInfo {
            file_type: m.file_type,
            size: m.size,
            perm: m.perm,
            uid: m.uid,
            gid: m.gid,
        }))
    }

    /// The filesystem node of a canonical path (pending changes ignored).
    pub(crate) fn fs_node(&self, path: &[u8]) -> Result<Option<u64>> {
        match resolve_entry(self.fs, path, false) {
            Ok(r) => Ok(r.node),
            Err(imgscrub_fs::FsError::NotFound(_) | imgscrub_fs::FsError::NotADirectory(_)) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The target of a symlink.
    pub fn readlink(&self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.staged_state(path) {
            Some(Staged::Symlink { target }) => return Ok(Some(target.clone())),
            Some(_) => return Ok(None),
            None => {}
        }
        let Some(node) = self.fs_node(path)? else {
            return Ok(None);
        };
        if self.fs.stat(node)?.file_type != FileType::Symlink {
            return Ok(None);
        }
        Ok(Some(self.fs.readlink(node)?))
    }

    /// Content of a regular file (no final symlink followed), bounded by [`MAX_CONFIG`].
    pub fn read(&self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.staged_state(path) {
            Some(Staged::File { content, .. }) => return Ok(Some(content.clone())),
            Some(_) => return Ok(None),
            None => {}
        }
        let Some(node) = self.fs_node(path)? else {
            return Ok(None);
        };
        let m = self.fs.stat(node)?;
        if m.file_type != FileType::Regular {
            return Ok(None);
        }
        if m.size > MAX_CONFIG {
            return Err(PrepareError::TooLarge {
                path: show(path),
                size: m.size,
                limit: MAX_CONFIG,
            });
        }
        let mut data = self.fs.read_all(node)?;
        data.truncate(MAX_CONFIG as usize);
        Ok(Some(data))
    }

    /// Read a file following symlinks (inside the guest), bounded; `None` if absent or not a
    /// regular file.
    pub fn read_follow(&self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.canon(path, true)? {
            Some(c) => self.read(&c),
            None => Ok(None),
        }
    }

    /// Node info following a final symlink.
    pub fn node_follow(&self, path: &[u8]) -> Result<Option<NodeInfo>> {
        match self.canon(path, true)? {
            Some(c) => self.node(&c),
            None => Ok(None),
        }
    }

    /// Whether anything (any type, the final link not followed) exists at `path`.
    pub fn exists(&self, path: &[u8]) -> Result<bool> {
        Ok(match self.canon(path, false)? {
            Some(c) => self.node(&c)?.is_some(),
            None => false,
        })
    }

    /// Children of a canonical directory: (name, type), sorted by name.
    pub fn list(&self, dir: &[u8]) -> Result<Vec<(Vec<u8>, FileType)>> {
        let mut out: BTreeMap<Vec<u8>, FileType> = BTreeMap::new();
        let here = self.node(dir)?;
        if here.as_ref().map(|n| n.file_type) != Some(FileType::Directory) {
            return Ok(Vec::new());
        }
        let fresh = matches!(self.staged.get(dir), Some(Staged::Dir { .. }))
            && self.fs_node(dir)?.is_none();
        if !fresh
            && let Some(node) = self.fs_node(dir)?
            && self.fs.stat(node)?.file_type == FileType::Directory
        {
            for e in self.fs.read_dir(node)? {
                out.insert(e.name, e.file_type);
            }
        }
        // Pending changes directly below `dir`.
        let mut prefix = dir.to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        for (p, s) in self.staged.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            let Some(rest) = p.get(prefix.len()..) else {
                continue;
            };
            if rest.is_empty() || rest.contains(&b'/') {
                continue;
            }
            match s {
                Staged::Absent => {
                    out.remove(rest);
                }
                Staged::File { .. } => {
                    out.insert(rest.to_vec(), FileType::Regular);
                }
                Staged::Dir { .. } => {
                    out.insert(rest.to_vec(), FileType::Directory);
                }
                Staged::Symlink { .. } => {
                    out.insert(rest.to_vec(), FileType::Symlink);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Canonicalise a guest path: resolve `.`/`..` and every symlink in directory components
    /// inside the guest root (absolute targets restart at the guest root), and the final one
    /// too with `follow_last`. Components that do not exist are kept literally. `None` if a
    /// directory component is not a directory, or too many links are followed.
    pub fn canon(&self, path: &[u8], follow_last: bool) -> Result<Option<Vec<u8>>> {
        let mut pending: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut chain: Vec<Vec<u8>> = Vec::new();
        let mut links = 0usize;
        let cur = |chain: &Vec<Vec<u8>>| -> Vec<u8> {
            if chain.is_empty() {
                b"/".to_vec()
            } else {
                let mut p = Vec::new();
                for c in chain {
                    p.push(b'/');
                    p.extend_from_slice(c);
                }
                p
            }
        };
        while let Some(comp) = pending.pop() {
            if comp == b".." {
                chain.pop();
                continue;
            }
            let last = pending.is_empty();
            let here = join(&cur(&chain), &comp);
            let info = self.node(&here)?;
            match info.map(|i| i.file_type) {
                Some(FileType::Symlink) if !last || follow_last => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Ok(None);
                    }
                    let Some(target) = self.readlink(&here)? else {
                        return Ok(None);
                    };
                    if target.is_empty() || target.len() > 4096 {
                        return Ok(None);
                    }
                    if target.first() == Some(&b'/') {
                        chain.clear();
                    }
                    for c in target
                        .split(|&b| b == b'/')
                        .filter(|c| !c.is_empty() && *c != b".")
                        .rev()
                    {
                        pending.push(c.to_vec());
                    }
                }
                Some(FileType::Directory) | None => chain.push(comp),
                Some(_) if last => chain.push(comp),
                Some(_) => return Ok(None),
            }
        }
        Ok(Some(cur(&chain)))
    }

    /// Record a pending change.
    pub(crate) fn stage(&mut self, path: Vec<u8>, s: Staged) {
        if matches!(s, Staged::Absent) {
            // Drop pending changes below a removed path.
            let mut prefix = path.clone();
            prefix.push(b'/');
            let below: Vec<Vec<u8>> = self
                .staged
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                self.staged.remove(&p);
            }
        }
        self.staged.insert(path, s);
    }
}
