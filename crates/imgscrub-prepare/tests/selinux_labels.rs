#![allow(clippy::unwrap_used, clippy::expect_used)]
//! SELinux labels on a filesystem that has extended attributes: new files get their
//! parent directory's `security.selinux`, and no `/.autorelabel` is needed.

mod common;

use imgscrub_fs::filesystem::{FreeRange, NewAttr, SetAttr};
use imgscrub_fs::{Entry, Filesystem, FsKind, HostDir, Meta, NodeId, Result};
use imgscrub_prepare::{Options, Profile, execute, plan};
use std::collections::HashMap;

/// A host directory plus an in-memory xattr table, standing in for ext4's xattrs.
struct Labelled {
    inner: HostDir,
    xattrs: HashMap<(NodeId, String), Vec<u8>>,
}

impl Filesystem for Labelled {
    fn kind(&self) -> FsKind {
        self.inner.kind()
    }
    fn root(&self) -> NodeId {
        self.inner.root()
    }
    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<Option<NodeId>> {
        self.inner.lookup(dir, name)
    }
    fn stat(&self, node: NodeId) -> Result<Meta> {
        self.inner.stat(node)
    }
    fn read_dir(&self, dir: NodeId) -> Result<Vec<Entry>> {
        self.inner.read_dir(dir)
    }
    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.inner.read(node, offset, buf)
    }
    fn readlink(&self, node: NodeId) -> Result<Vec<u8>> {
        self.inner.readlink(node)
    }
    fn create(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        self.inner.create(dir, name, attr)
    }
    fn mkdir(&mut self, dir: NodeId, name: &[u8], attr: &NewAttr) -> Result<NodeId> {
        self.inner.mkdir(dir, name, attr)
    }
    fn symlink(
        &mut self,
        dir: NodeId,
        name: &[u8],
        target: &[u8],
        attr: &NewAttr,
    ) -> Result<NodeId> {
        self.inner.symlink(dir, name, target, attr)
    }
    fn write(&mut self, node: NodeId, offset: u64, data: &[u8]) -> Result<()> {
        self.inner.write(node, offset, data)
    }
    fn truncate(&mut self, node: NodeId, size: u64) -> Result<()> {
        self.inner.truncate(node, size)
    }
    fn unlink(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.inner.unlink(dir, name)
    }
    fn rmdir(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        self.inner.rmdir(dir, name)
    }
    fn rename(&mut self, a: NodeId, f: &[u8], b: NodeId, t: &[u8]) -> Result<()> {
        self.inner.rename(a, f, b, t)
    }
    fn set_attr(&mut self, node: NodeId, attr: &SetAttr) -> Result<()> {
        self.inner.set_attr(node, attr)
    }
    fn get_xattr(&self, node: NodeId, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.xattrs.get(&(node, name.to_string())).cloned())
    }
    fn list_xattrs(&self, node: NodeId) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .xattrs
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
    fn set_xattr(&mut self, node: NodeId, name: &str, value: &[u8]) -> Result<()> {
        self.xattrs.insert((node, name.to_string()), value.to_vec());
        Ok(())
    }
    fn remove_xattr(&mut self, node: NodeId, name: &str) -> Result<()> {
        self.xattrs.remove(&(node, name.to_string()));
        Ok(())
    }
    fn free_ranges(&self) -> Result<Vec<FreeRange>> {
        self.inner.free_ranges()
    }
    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
    fn set_clock(&mut self, t: Option<imgscrub_fs::filesystem::Timestamp>) -> Result<()> {
        self.inner.set_clock(t)
    }
}

fn label_all_dirs(fs: &mut Labelled, dir: NodeId, label: &[u8]) {
    fs.xattrs
        .insert((dir, "security.selinux".into()), label.to_vec());
    for e in fs.read_dir(dir).unwrap() {
        if e.file_type == imgscrub_fs::filesystem::FileType::Directory {
            label_all_dirs(fs, e.node, label);
        }
    }
}

#[test]
fn new_files_inherit_the_parent_label() {
    let dir = tempfile::tempdir().unwrap();
    common::distros::build("centos7", dir.path());
    let mut fs = Labelled {
        inner: HostDir::open(dir.path()).unwrap(),
        xattrs: HashMap::new(),
    };
    let root = fs.root();
    label_all_dirs(&mut fs, root, b"system_u:object_r:etc_t:s0\0");
    // A profile that keeps SELinux on and creates files: linux + a new file.
    let text = "extends = [\"linux\"]\n[[action]]\nkind = \"write_file\"\npath = \"/etc/motd\"\ncontent = \"hi\\n\"\n";
    let prof = Profile::from_toml("site", text, &Profile::builtin_resolver).unwrap();
    let p = plan(&fs, &prof, &Options::default()).unwrap();
    assert!(p.selinux_label);
    let r = execute(&mut fs, &p).unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("label of their parent")),
        "{:?}",
        r.notes
    );
    assert!(!dir.path().join(".autorelabel").exists());
    let etc = fs.lookup(root, b"etc").unwrap().unwrap();
    let motd = fs.lookup(etc, b"motd").unwrap().unwrap();
    assert_eq!(
        fs.get_xattr(motd, "security.selinux").unwrap().as_deref(),
        Some(&b"system_u:object_r:etc_t:s0\0"[..])
    );
}
