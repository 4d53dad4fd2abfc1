//! Reading host-side inputs (`--upload`, `--copy-in`) once, at parse time.

use serde::Serialize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest host tree `--copy-in` reads into memory (bytes of file data).
pub const MAX_HOST_BYTES: u64 = 4 << 30;

/// A regular host file with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFile {
    /// Host path (absolute).
    pub path: PathBuf,
    /// Base name (raw bytes).
    #[serde(skip)]
    pub name: Vec<u8>,
    /// Content.
    #[serde(skip)]
    pub data: Vec<u8>,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u16,
    /// Host owner.
    pub uid: u32,
    /// Host group.
    pub gid: u32,
}

/// What a host tree entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostEntryKind {
    /// A directory (its entries follow it in [`HostTree::entries`]).
    Dir,
    /// A regular file with its content.
    File(#[serde(skip)] Vec<u8>),
    /// A symbolic link with its target (stored verbatim).
    Symlink(#[serde(skip)] Vec<u8>),
}

/// One entry of a host tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostEntry {
    /// Path relative to the tree's parent: the first entry is the tree's own base name,
    /// the others are `name/sub/…` (raw bytes, `/`-separated).
    #[serde(skip)]
    pub rel: Vec<u8>,
    /// Kind and data.
    pub kind: HostEntryKind,
    /// Permission bits.
    pub mode: u16,
    /// Host owner.
    pub uid: u32,
    /// Host group.
    pub gid: u32,
}

/// A host file or directory tree, read completely, parents before children, names sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostTree {
    /// Host path (absolute).
    pub path: PathBuf,
    /// Entries, the root first.
    pub entries: Vec<HostEntry>,
}

fn name_of(path: &Path) -> std::io::Result<Vec<u8>> {
    match path.file_name() {
        Some(n) => Ok(n.as_bytes().to_vec()),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path has no file name",
        )),
    }
}

/// Read one regular host file (symlinks followed, as virt-customize's upload does).
pub(crate) fn read_host_file(path: &Path) -> std::io::Result<HostFile> {
    let md = std::fs::metadata(path)?;
    if !md.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let data = std::fs::read(path)?;
    Ok(HostFile {
        path: path.to_path_buf(),
        name: name_of(path)?,
        data,
        mode: (md.mode() & 0o7777) as u16,
        uid: md.uid(),
        gid: md.gid(),
    })
}

/// Read a host file or directory tree (the top path's symlink is followed; symlinks
/// below it are kept as links).
pub(crate) fn read_host_tree(path: &Path) -> std::io::Result<HostTree> {
    let mut entries = Vec::new();
    let mut total = 0u64;
    let md = std::fs::metadata(path)?;
    walk(path, name_of(path)?, &md, &mut entries, &mut total)?;
    Ok(HostTree {
        path: path.to_path_buf(),
        entries,
    })
}

fn walk(
    path: &Path,
    rel: Vec<u8>,
    md: &std::fs::Metadata,
    out: &mut Vec<HostEntry>,
    total: &mut u64,
) -> std::io::Result<()> {
    let ft = md.file_type();
    let mode = (md.mode() & 0o7777) as u16;
    let kind = if ft.is_dir() {
        HostEntryKind::Dir
    } else if ft.is_symlink() {
        HostEntryKind::Symlink(std::fs::read_link(path)?.as_os_str().as_bytes().to_vec())
    } else if ft.is_file() {
        *total += md.len();
        if *total > MAX_HOST_BYTES {
            return Err(std::io::Error::other(format!(
                "more than {MAX_HOST_BYTES} bytes of file data"
            )));
        }
        HostEntryKind::File(std::fs::read(path)?)
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{}: only regular files, directories and symlinks can be copied in",
                path.display()
            ),
        ));
    };
    let is_dir = matches!(kind, HostEntryKind::Dir);
    out.push(HostEntry {
        rel: rel.clone(),
        kind,
        mode,
        uid: md.uid(),
        gid: md.gid(),
    });
    if is_dir {
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let child = path.join(&n);
            let cmd = std::fs::symlink_metadata(&child)?;
            let mut crel = rel.clone();
            crel.push(b'/');
            crel.extend_from_slice(n.as_bytes());
            walk(&child, crel, &cmd, out, total)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_sorted_parents_first_with_links() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("top");
        std::fs::create_dir_all(top.join("b/c")).unwrap();
        std::fs::write(top.join("a.txt"), b"hello").unwrap();
        std::fs::write(top.join("b/c/x"), b"x").unwrap();
        std::os::unix::fs::symlink("a.txt", top.join("l")).unwrap();
        let t = read_host_tree(&top).unwrap();
        let rels: Vec<String> = t
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.rel).into_owned())
            .collect();
        assert_eq!(
            rels,
            ["top", "top/a.txt", "top/b", "top/b/c", "top/b/c/x", "top/l"]
        );
        assert_eq!(t.entries[1].kind, HostEntryKind::File(b"hello".to_vec()));
        assert_eq!(t.entries[5].kind, HostEntryKind::Symlink(b"a.txt".to_vec()));
    }

    #[test]
    fn fifo_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let top = d.path().join("top");
        std::fs::create_dir(&top).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(top.join("p"))
            .status()
            .unwrap();
        assert!(st.success());
        let e = read_host_tree(&top).unwrap_err();
        assert!(e.to_string().contains("only regular files"), "{e}");
    }
}
