#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `GuestTree` joins filesystems at mount points like the kernel: lookups cross mounts,
//! renames across filesystems and removing a mount point are refused.

use imgscrub_fs::filesystem::{FileType, NewAttr};
use imgscrub_fs::{Filesystem, FsError, GuestTree, HostDir, resolve};

#[test]
fn mounts_are_crossed_and_guarded() {
    let t = tempfile::tempdir().unwrap();
    let (root, boot) = (t.path().join("root"), t.path().join("boot"));
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("boot/hidden"), b"under the mount").unwrap();
    std::fs::create_dir_all(boot.join("grub")).unwrap();
    std::fs::write(boot.join("grub/grub.cfg"), b"cfg").unwrap();

    let mut tree = GuestTree::new(Box::new(HostDir::open(&root).unwrap()));
    let at = resolve(&tree, b"/boot", true).unwrap();
    tree.mount(at, Box::new(HostDir::open(&boot).unwrap()))
        .unwrap();
    assert_eq!(tree.len(), 2);

    // Lookups and listings see the mounted filesystem, not what is under the mount point.
    let cfg = resolve(&tree, b"/boot/grub/grub.cfg", true).unwrap();
    assert_eq!(tree.read_all(cfg).unwrap(), b"cfg");
    assert!(resolve(&tree, b"/boot/hidden", true).is_err());
    let root_entries = tree.read_dir(tree.root()).unwrap();
    let b = root_entries.iter().find(|e| e.name == b"boot").unwrap();
    assert_eq!(b.file_type, FileType::Directory);
    assert_eq!(b.node, resolve(&tree, b"/boot", true).unwrap());
    // ".." from the mounted root goes back to the parent filesystem.
    let etc = resolve(&tree, b"/boot/../etc", true).unwrap();
    assert_eq!(tree.stat(etc).unwrap().file_type, FileType::Directory);

    // Creating in the mounted filesystem lands there.
    let grub = resolve(&tree, b"/boot/grub", true).unwrap();
    tree.create(grub, b"new", &NewAttr::default()).unwrap();
    assert!(boot.join("grub/new").exists());

    // Kernel rules: no rename across filesystems, no removing a mount point.
    let r = tree.root();
    assert!(matches!(
        tree.rename(grub, b"new", etc, b"new"),
        Err(FsError::Unsupported(_))
    ));
    assert!(matches!(
        tree.rmdir(r, b"boot"),
        Err(FsError::Unsupported(_))
    ));
    assert!(tree.remove_tree(r, b"boot").is_err());
    assert!(root.join("boot").exists());
}
