#![allow(clippy::unwrap_used, clippy::expect_used)]
//! POSIX ACLs written by the real tools: `setfacl` on a source tree, `mke2fs -d` copies them
//! into the image (kernel on-disk format: name index 2/3 with an empty name). We must read
//! exactly what `getfacl` reports, and editing other attributes of such an inode must keep
//! `e2fsck -fn` clean.

use imgscrub_disk::RawFile;
use imgscrub_ext4::{Ext4Fs, OpenOptions};
use imgscrub_testkit::{assert_e2fsck_clean, make_ext4, require_tools, run_ok, tool};

/// VFS ACL value → getfacl's lines ("user::rw-", "user:1000:r-x", …), numeric ids.
fn acl_text(v: &[u8]) -> Vec<String> {
    assert_eq!(
        u32::from_le_bytes(v[..4].try_into().unwrap()),
        2,
        "ACL version"
    );
    v[4..]
        .chunks(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let rwx: String = [(4, 'r'), (2, 'w'), (1, 'x')]
                .iter()
                .map(|&(b, c)| if perm & b != 0 { c } else { '-' })
                .collect();
            match tag {
                0x01 => format!("user::{rwx}"),
                0x02 => format!("user:{id}:{rwx}"),
                0x04 => format!("group::{rwx}"),
                0x08 => format!("group:{id}:{rwx}"),
                0x10 => format!("mask::{rwx}"),
                0x20 => format!("other::{rwx}"),
                t => panic!("unknown ACL tag {t:#x}"),
            }
        })
        .collect()
}

fn getfacl(path: &std::path::Path, default: bool) -> Vec<String> {
    let mut cmd = tool("getfacl");
    cmd.args(["-n", "--omit-header", "--absolute-names"]);
    cmd.arg(if default { "--default" } else { "--access" });
    run_ok(cmd.arg(path))
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn acls_from_mke2fs_read_back_like_getfacl() {
    require_tools!("setfacl", "getfacl", "mke2fs", "e2fsck");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("var/log/journal")).unwrap();
    std::fs::write(src.join("var/log/syslog"), b"log").unwrap();
    // What systemd-journald sets up, plus a file ACL with a named user.
    let journal = src.join("var/log/journal");
    let syslog = src.join("var/log/syslog");
    run_ok(
        tool("setfacl")
            .args(["-m", "g:4:r-x,u:1000:rwx"])
            .arg(&journal),
    );
    run_ok(tool("setfacl").args(["-d", "-m", "g:4:r-x"]).arg(&journal));
    run_ok(tool("setfacl").args(["-m", "u:1000:r--"]).arg(&syslog));
    let want_access = getfacl(&journal, false);
    let want_default = getfacl(&journal, true);
    let want_file = getfacl(&syslog, false);
    assert!(
        want_access.iter().any(|l| l == "user:1000:rwx"),
        "{want_access:?}"
    );

    for variant in ["default", "i128"] {
        let img = t.path().join(format!("{variant}.img"));
        if !make_ext4(variant, &src, &img, 16) {
            return;
        }
        let mut fs = Ext4Fs::open(
            RawFile::open_rw(&img).unwrap(),
            OpenOptions { writable: true },
        )
        .unwrap();
        let j = fs.lookup_path(b"/var/log/journal").unwrap();
        let s = fs.lookup_path(b"/var/log/syslog").unwrap();
        let got =
            |fs: &Ext4Fs<RawFile>, ino, name| acl_text(&fs.get_xattr(ino, name).unwrap().unwrap());
        assert_eq!(
            got(&fs, j, "system.posix_acl_access"),
            want_access,
            "{variant}"
        );
        assert_eq!(
            got(&fs, j, "system.posix_acl_default"),
            want_default,
            "{variant}"
        );
        assert_eq!(
            got(&fs, s, "system.posix_acl_access"),
            want_file,
            "{variant}"
        );
        // Editing another attribute of an inode with ACLs keeps everything valid.
        fs.set_xattr(j, "user.note", b"kept").unwrap();
        fs.remove_xattr(s, "system.posix_acl_access").unwrap();
        fs.flush().unwrap();
        drop(fs);
        assert_e2fsck_clean(&img);
        let fs = Ext4Fs::open(
            RawFile::open(&img).unwrap(),
            OpenOptions { writable: false },
        )
        .unwrap();
        assert_eq!(
            got(&fs, j, "system.posix_acl_access"),
            want_access,
            "{variant}"
        );
        assert_eq!(
            fs.get_xattr(j, "user.note").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(fs.get_xattr(s, "system.posix_acl_access").unwrap(), None);
    }
}
