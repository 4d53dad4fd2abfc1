//! Path resolution inside a guest root.
//!
//! Guest paths are resolved the way the guest's kernel would, but confined to the guest:
//! absolute symlink targets restart at the guest root (never the host's), `..` at the root
//! stays at the root, and at most [`MAX_SYMLINKS`] links are followed (like Linux's 40).

use crate::filesystem::{FileType, Filesystem, FsError, NodeId, Result};

/// Symlinks followed in one resolution before giving up (Linux: 40).
pub const MAX_SYMLINKS: usize = 40;

/// Longest symlink target we follow (PATH_MAX).
const MAX_TARGET: usize = 4096;

/// Where a path leads: the directory holding the last component, its name, and the node if
/// it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub parent: NodeId,
    pub name: Vec<u8>,
    pub node: Option<NodeId>,
}

fn display(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Split into components, dropping empty ones and ".".
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Resolve `path` (absolute or relative to the root) to an existing node. With
/// `follow_last`, a symlink as the last component is followed too.
pub fn resolve(fs: &dyn Filesystem, path: &[u8], follow_last: bool) -> Result<NodeId> {
    let r = resolve_entry(fs, path, follow_last)?;
    r.node.ok_or_else(|| FsError::NotFound(display(path)))
}

/// Resolve every component but the last (following symlinks), then look the last one up.
/// The last component may be missing (`node: None`), which is what create/mkdir need.
/// With `follow_last`, a final symlink is followed, and its target's parent and name are
/// returned.
pub fn resolve_entry(fs: &dyn Filesystem, path: &[u8], follow_last: bool) -> Result<Resolved> {
    let mut links = 0usize;
    // Pending components, processed from the back of the vector (so we can push a symlink
    // target's components in front of the rest).
    let mut pending: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
    // The chain of directories from the root to where we are, for "..".
    let root = fs.root();
    let mut chain: Vec<NodeId> = vec![root];
    if pending.is_empty() {
        return Ok(Resolved {
            parent: root,
            name: Vec::new(),
            node: Some(root),
        });
    }
    loop {
        let Some(comp) = pending.pop() else {
            // Only reachable when a symlink target resolved to the root itself.
            let node = *chain.last().unwrap_or(&root);
            return Ok(Resolved {
                parent: node,
                name: Vec::new(),
                node: Some(node),
            });
        };
        let here = *chain.last().unwrap_or(&root);
        if comp == b".." {
            if chain.len() > 1 {
                chain.pop();
            }
            if pending.is_empty() {
                let node = *chain.last().unwrap_or(&root);
                return Ok(Resolved {
                    parent: node,
                    name: Vec::new(),
                    node: Some(node),
                });
            }
            continue;
        }
        let last = pending.is_empty();
        let found = fs.lookup(here, &comp)?;
        let Some(node) = found else {
            if last {
                return Ok(Resolved {
                    parent: here,
                    name: comp,
                    node: None,
                });
            }
            return Err(FsError::NotFound(display(path)));
        };
        let meta = fs.stat(node)?;
        match meta.file_type {
            FileType::Symlink if !last || follow_last => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(FsError::SymlinkLoop(display(path)));
                }
                let target = fs.readlink(node)?;
                if target.is_empty() || target.len() > MAX_TARGET {
                    return Err(FsError::InvalidPath(format!(
                        "symlink {} has an unusable target",
                        display(&comp)
                    )));
                }
                if target.first() == Some(&b'/') {
                    chain.truncate(1);
                }
                let target_comps: Vec<Vec<u8>> = components(&target).map(<[u8]>::to_vec).collect();
                if target_comps.is_empty() {
                    // "/" (or "/./"): the link points at the root.
                    if last {
                        return Ok(Resolved {
                            parent: root,
                            name: Vec::new(),
                            node: Some(root),
                        });
                    }
                    continue;
                }
                pending.extend(target_comps.into_iter().rev());
            }
            _ if last => {
                return Ok(Resolved {
                    parent: here,
                    name: comp,
                    node: Some(node),
                });
            }
            FileType::Directory => chain.push(node),
            _ => return Err(FsError::NotADirectory(display(path))),
        }
    }
}
