#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Extended attributes and inline directories against real images: attributes written by
//! debugfs (`ea_set`) are parsed exactly (`ea_get`), and attribute sets rewritten by
//! `xattr::layout` (in-inode area + block in place) leave `e2fsck -fn` clean and read back
//! with debugfs. Inodes are edited in the image file directly (location from `imap`).

use imgscrub_ext4::csum::crc32c_raw;
use imgscrub_ext4::dir::InlineDir;
use imgscrub_ext4::xattr::{self, Xattr};
use imgscrub_testkit as tk;
use std::path::Path;
use std::process::Command;

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

struct Fs {
    bs: usize,
    inode_size: usize,
    fs_seed: Option<u32>,
    inodes_count: u32,
    filetype: bool,
}

fn read_fs(img: &[u8]) -> Fs {
    let s = &img[1024..2048];
    let incompat = le32(s, 0x60);
    let csum = le32(s, 0x64) & 0x400 != 0;
    let rev = le32(s, 0x4c);
    Fs {
        bs: 1024 << le32(s, 24),
        inode_size: if rev == 0 {
            128
        } else {
            le16(s, 0x58) as usize
        },
        fs_seed: csum.then(|| {
            if incompat & 0x2000 != 0 {
                le32(s, 0x270)
            } else {
                crc32c_raw(!0, &s[0x68..0x78])
            }
        }),
        inodes_count: le32(s, 0),
        filetype: incompat & 2 != 0,
    }
}

fn debugfs_w(image: &Path, req: &str) {
    let d = tk::find_tool("debugfs").unwrap();
    let out = tk::run_ok(Command::new(d).arg("-w").arg("-R").arg(req).arg(image));
    assert!(!out.contains("rror"), "{req}: {out}");
}

/// Byte offset of inode `path` in the image.
fn inode_offset(image: &Path, fs: &Fs, path: &str) -> (u32, usize) {
    let st = tk::debugfs(image, &format!("stat {path}"));
    let ino: u32 = st["Inode:".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let im = tk::debugfs(image, &format!("imap {path}"));
    let blk: usize = im
        .split("located at block ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let off = usize::from_str_radix(im.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
    (ino, blk * fs.bs + off)
}

/// ext4_inode_csum: crc32c over the inode with both checksum fields zeroed.
fn set_inode_csum(fs: &Fs, ino: u32, inode: &mut [u8]) {
    let Some(fs_seed) = fs.fs_seed else { return };
    let generation = le32(inode, 0x64);
    let seed = crc32c_raw(
        crc32c_raw(fs_seed, &ino.to_le_bytes()),
        &generation.to_le_bytes(),
    );
    let has_hi = inode.len() > 128 && le16(inode, 0x80) >= 4;
    inode[0x7c..0x7e].fill(0);
    if has_hi {
        inode[0x82..0x84].fill(0);
    }
    let c = crc32c_raw(seed, inode);
    inode[0x7c..0x7e].copy_from_slice(&(c as u16).to_le_bytes());
    if has_hi {
        inode[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
    }
}

fn file_acl(inode: &[u8]) -> u64 {
    u64::from(le32(inode, 0x68)) | (u64::from(le16(inode, 0x76)) << 32)
}

fn ibody_range(fs: &Fs, inode: &[u8]) -> std::ops::Range<usize> {
    if fs.inode_size <= 128 {
        return 128..128;
    }
    let extra = le16(inode, 0x80) as usize;
    (128 + extra).min(fs.inode_size)..fs.inode_size
}

/// All attributes of an inode as we parse them.
fn our_attrs(img: &[u8], fs: &Fs, ino: u32, at: usize) -> Vec<Xattr> {
    let inode = &img[at..at + fs.inode_size];
    let mut v = xattr::parse_ibody(&inode[ibody_range(fs, inode)], ino).unwrap();
    let acl = file_acl(inode);
    if acl != 0 {
        let b = &img[acl as usize * fs.bs..(acl as usize + 1) * fs.bs];
        v.extend(xattr::parse_block(b, acl, fs.fs_seed).unwrap());
    }
    v
}

fn debugfs_get(image: &Path, path: &str, name: &str) -> Option<Vec<u8>> {
    let out = image.with_extension("val");
    let _ = std::fs::remove_file(&out);
    let d = tk::find_tool("debugfs").unwrap();
    tk::run(
        Command::new(d)
            .arg("-R")
            .arg(format!("ea_get -f {} {path} {name}", out.display()))
            .arg(image),
    );
    std::fs::read(&out).ok()
}

fn names_of(image: &Path, path: &str) -> Vec<String> {
    let mut v: Vec<String> = tk::debugfs(image, &format!("ea_list {path}"))
        .lines()
        .filter_map(|l| l.trim().split(" (").next())
        .filter(|n| n.contains('.'))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// (attribute name, new value or None to remove).
type Edit<'a> = (&'a str, Option<&'a [u8]>);

fn check_variant(variant: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("small")).unwrap();
    for i in 0..4 {
        std::fs::write(src.join(format!("f{i}")), b"data").unwrap();
    }
    for i in 0..3 {
        std::fs::write(src.join("small").join(format!("s{i}")), b"x").unwrap();
    }
    let image = tmp.path().join("img");
    if !tk::make_ext4(variant, &src, &image, 16) {
        return;
    }
    let big: Vec<u8> = (0..700u32).map(|i| b'a' + (i % 26) as u8).collect();
    let bigf = tmp.path().join("big");
    std::fs::write(&bigf, &big).unwrap();
    debugfs_w(&image, "ea_set /f0 user.small hello");
    debugfs_w(
        &image,
        "ea_set /f0 security.selinux system_u:object_r:etc_t:s0",
    );
    debugfs_w(
        &image,
        &format!("ea_set -f {} /f1 user.big", bigf.display()),
    );
    debugfs_w(&image, "ea_set /f1 user.a 1");
    debugfs_w(&image, "ea_set /f1 trusted.t value-t");
    debugfs_w(&image, "ea_set /f2 user.x 0123456789");
    tk::assert_e2fsck_clean(&image);

    let mut img = std::fs::read(&image).unwrap();
    let fs = read_fs(&img);
    // Parse: equal to debugfs.
    for f in ["/f0", "/f1", "/f2", "/f3"] {
        let (ino, at) = inode_offset(&image, &fs, f);
        let ours = our_attrs(&img, &fs, ino, at);
        let mut names: Vec<String> = ours
            .iter()
            .map(|a| String::from_utf8(a.full_name()).unwrap())
            .collect();
        names.sort();
        assert_eq!(names, names_of(&image, f), "{variant} {f}");
        for a in &ours {
            let n = String::from_utf8(a.full_name()).unwrap();
            assert_eq!(
                Some(a.value.clone()),
                debugfs_get(&image, f, &n),
                "{variant} {f} {n}"
            );
        }
    }

    // Rewrite: f1 (block stays, in place), f0 (in-inode only unless i128), f2 (new value).
    let edits: [(&str, &[Edit]); 3] = [
        (
            "/f1",
            &[
                ("user.a", Some(b"22")),
                ("user.new", Some(b"v")),
                ("trusted.t", None),
            ],
        ),
        ("/f0", &[("user.small", None), ("user.other", Some(b"o"))]),
        ("/f2", &[("user.x", Some(b"changed"))]),
    ];
    let mut expect = Vec::new();
    for (f, ops) in edits {
        let (ino, at) = inode_offset(&image, &fs, f);
        let mut attrs = our_attrs(&img, &fs, ino, at);
        for (n, v) in ops {
            match v {
                Some(v) => xattr::set(&mut attrs, n.as_bytes(), v).unwrap(),
                None => {
                    xattr::remove(&mut attrs, n.as_bytes()).unwrap();
                }
            }
        }
        let mut inode = img[at..at + fs.inode_size].to_vec();
        let r = ibody_range(&fs, &inode);
        let (ibody, block) = xattr::layout(&attrs, r.len(), fs.bs).unwrap();
        inode[r].copy_from_slice(&ibody);
        let acl = file_acl(&inode);
        match block {
            Some(mut b) => {
                // Tests keep the old block (refcount 1): rewrite it in place.
                assert_ne!(
                    acl, 0,
                    "{variant} {f}: new block needed; this test cannot allocate"
                );
                let old = &img[acl as usize * fs.bs..(acl as usize + 1) * fs.bs];
                assert_eq!(xattr::block_refcount(old), 1);
                xattr::finish_block(&mut b, acl, fs.fs_seed);
                img[acl as usize * fs.bs..(acl as usize + 1) * fs.bs].copy_from_slice(&b);
            }
            None => assert_eq!(acl, 0, "{variant} {f}: block would be freed"),
        }
        set_inode_csum(&fs, ino, &mut inode);
        img[at..at + fs.inode_size].copy_from_slice(&inode);
        expect.push((f, attrs));
    }
    // Inline directory (inline variant: mke2fs makes small directories inline).
    let st = tk::debugfs(&image, "stat /small");
    if st.contains("Flags: 0x10000000") {
        let (ino, at) = inode_offset(&image, &fs, "/small");
        let il = InlineDir {
            dir_ino: ino,
            inodes_count: fs.inodes_count,
            filetype: fs.filetype,
        };
        let mut inode = img[at..at + fs.inode_size].to_vec();
        let attrs = xattr::parse_ibody(&inode[ibody_range(&fs, &inode)], ino).unwrap();
        let data = xattr::get(&attrs, b"system.data").unwrap().value.clone();
        let mut ib = inode[0x28..0x28 + 60].to_vec();
        let (parent, entries) = il.list(&ib, &data).unwrap();
        assert_eq!(parent, 2);
        let mut names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
        names.sort();
        assert_eq!(names, vec![b"s0".to_vec(), b"s1".to_vec(), b"s2".to_vec()]);
        // Swap two names (link counts stay right).
        let mut data2 = data.clone();
        let a = il.remove(&mut ib, &mut data2, b"s0").unwrap();
        let b = il.remove(&mut ib, &mut data2, b"s1").unwrap();
        assert!(il.add(&mut ib, &mut data2, b"s1", a, 1).unwrap());
        assert!(il.add(&mut ib, &mut data2, b"s0-new", b, 1).unwrap());
        inode[0x28..0x28 + 60].copy_from_slice(&ib);
        set_inode_csum(&fs, ino, &mut inode);
        img[at..at + fs.inode_size].copy_from_slice(&inode);
    }
    std::fs::write(&image, &img).unwrap();
    tk::assert_e2fsck_clean(&image);
    for (f, attrs) in expect {
        let mut want: Vec<String> = attrs
            .iter()
            .map(|a| String::from_utf8(a.full_name()).unwrap())
            .collect();
        want.sort();
        assert_eq!(names_of(&image, f), want, "{variant} {f}");
        for a in &attrs {
            let n = String::from_utf8(a.full_name()).unwrap();
            assert_eq!(
                debugfs_get(&image, f, &n),
                Some(a.value.clone()),
                "{variant} {f} {n}"
            );
        }
    }
    if st.contains("Flags: 0x10000000") {
        let ls = tk::debugfs(&image, "ls /small");
        assert!(
            ls.contains("s0-new") && ls.contains("s1") && !ls.contains(" s0 "),
            "{ls}"
        );
    }
}

#[test]
fn dirs_xattr_image_variants() {
    tk::require_tools!("mke2fs", "e2fsck", "debugfs");
    for v in [
        "default", "nocsum", "b1024", "csumseed", "ext2", "inline", "noextra", "i128",
    ] {
        check_variant(v);
    }
}
