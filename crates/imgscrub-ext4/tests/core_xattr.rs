#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Extended attributes through `Ext4Fs`: in-inode and block placement, replace, remove,
//! POSIX ACL format conversion, freeing with the inode; e2fsck -fn and debugfs agree.

mod core_common;

use core_common::*;
use imgscrub_ext4::{Ext4Error, NewAttr};

fn acl() -> Vec<u8> {
    // VFS format: version 2, then (tag, perm, id): USER_OBJ rw-, GROUP_OBJ r--, OTHER r--.
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(1u16, 6u16), (4, 4), (0x20, 4)] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    v
}

#[test]
fn xattrs_on_every_variant() {
    imgscrub_testkit::require_tools!("mke2fs", "e2fsck", "debugfs");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    for variant in imgscrub_testkit::ext4_variants() {
        let Some(img) = image(&variant, &src, tmp.path(), 16) else {
            return;
        };
        let v = &variant;
        let mut fs = open_rw(&img);
        let host = fs.lookup_path(b"/etc/hostname").unwrap();
        let etc = fs.lookup_path(b"/etc").unwrap();
        let link = fs.lookup_path(b"/fastlink").unwrap();
        fs.set_xattr(host, "user.comment", b"hello").unwrap();
        fs.set_xattr(host, "security.selinux", b"system_u:object_r:etc_t:s0\0")
            .unwrap();
        fs.set_xattr(etc, "trusted.x", b"").unwrap();
        fs.set_xattr(link, "user.l", b"on a symlink").unwrap();
        let big = vec![b'v'; 600];
        fs.set_xattr(host, "user.big", &big).unwrap();
        fs.flush().unwrap();
        strict_fsck(&img, "");
        assert_eq!(
            fs.get_xattr(host, "user.comment").unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(fs.get_xattr(host, "user.big").unwrap(), Some(big.clone()));
        assert_eq!(fs.get_xattr(etc, "trusted.x").unwrap(), Some(Vec::new()));
        assert_eq!(fs.get_xattr(host, "user.none").unwrap(), None);
        let names: Vec<String> = fs
            .list_xattrs(host)
            .unwrap()
            .into_iter()
            .map(|x| x.0)
            .collect();
        for n in ["user.comment", "security.selinux", "user.big"] {
            assert!(names.iter().any(|x| x == n), "{v}: {n} not in {names:?}");
        }
        let ea = imgscrub_testkit::debugfs(&img, "ea_get /etc/hostname user.comment");
        assert!(ea.contains("hello"), "{v}: {ea}");
        assert!(fs.stat(host).unwrap().blocks_512 > 0, "{v}");

        // Replace, remove (the big one leaves the block), errors.
        fs.set_xattr(host, "user.comment", b"bye").unwrap();
        fs.remove_xattr(host, "user.big").unwrap();
        assert!(matches!(
            fs.remove_xattr(host, "user.big"),
            Err(Ext4Error::NotFound(_))
        ));
        assert!(fs.set_xattr(host, "nonsense.x", b"1").is_err());
        fs.flush().unwrap();
        strict_fsck(&img, "");
        assert_eq!(
            fs.get_xattr(host, "user.comment").unwrap().as_deref(),
            Some(&b"bye"[..])
        );

        // An inode with an xattr block is freed together with it.
        let f = fs
            .create(fs.root(), b"withblock", &NewAttr::default())
            .unwrap();
        fs.set_xattr(f, "user.big", &big).unwrap();
        fs.set_xattr(f, "user.big2", &big[..200]).unwrap();
        fs.flush().unwrap();
        strict_fsck(&img, "");
        let free_before = fs.superblock().free_blocks_count();
        fs.unlink(fs.root(), b"withblock").unwrap();
        fs.flush().unwrap();
        strict_fsck(&img, "");
        assert_eq!(fs.superblock().free_blocks_count(), free_before + 1, "{v}");
    }
}

#[test]
fn posix_acls() {
    imgscrub_testkit::require_tools!("mke2fs", "e2fsck");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    for variant in ["default", "i128"] {
        let Some(img) = image(variant, &src, tmp.path(), 16) else {
            return;
        };
        let mut fs = open_rw(&img);
        let host = fs.lookup_path(b"/etc/hostname").unwrap();
        fs.set_xattr(host, "system.posix_acl_access", &acl())
            .unwrap();
        fs.set_xattr(host, "user.after", b"1").unwrap();
        fs.flush().unwrap();
        strict_fsck(&img, "");
        assert_eq!(
            fs.get_xattr(host, "system.posix_acl_access").unwrap(),
            Some(acl())
        );
    }
}
