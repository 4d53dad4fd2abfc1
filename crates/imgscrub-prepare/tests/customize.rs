#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Customization file options (virt-customize's `--write`, `--upload`, `--copy-in`, …) on
//! ext4 images of the distro layouts (Debian, Ubuntu, CentOS, Alpine), read back with
//! debugfs; e2fsck -fn must be clean after each run. Errors come before any change.

mod common;

use common::distros::build;
use imgscrub_disk::RawFile;
use imgscrub_fs::filesystem::Timestamp;
use imgscrub_fs::{Ext4, Filesystem};
use imgscrub_prepare::customize::{CustomizeItem, Origin, ParseContext, parse_option};
use imgscrub_prepare::{Options, Profile, execute, plan};
use imgscrub_testkit::{assert_e2fsck_clean, debugfs, make_ext4, require_tools};
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::Path;

const LAYOUTS: &[&str] = &["debian12", "ubuntu22", "centos7", "alpine"];

fn empty_profile() -> Profile {
    Profile {
        name: "customize".into(),
        description: String::new(),
        chain: Vec::new(),
        requires_family: Vec::new(),
        operations: None,
        actions: Vec::new(),
    }
}

fn items(host: &Path, opts: &[(&str, &str)]) -> Vec<CustomizeItem> {
    let pc = ParseContext {
        base_dir: host.to_path_buf(),
        home: None,
    };
    opts.iter()
        .flat_map(|(n, a)| parse_option(n, Some(a), &pc, Origin::CommandLine).unwrap())
        .collect()
}

/// Build `layout` as an ext4 image; None when mke2fs is missing (outside CI).
fn image(layout: &str, dir: &Path) -> Option<std::path::PathBuf> {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    build(layout, &src);
    let img = dir.join("root.ext4");
    make_ext4("default", &src, &img, 64).then_some(img)
}

fn customize(img: &Path, items: Vec<CustomizeItem>) -> Result<imgscrub_prepare::Report, String> {
    let opts = Options {
        fixed_time: Some(Timestamp::new(1_700_000_000, 0)),
        customize: items,
        ..Options::default()
    };
    let mut fs = Ext4::open(RawFile::open_rw(img).unwrap(), true).unwrap();
    let p = plan(&fs, &empty_profile(), &opts).map_err(|e| e.to_string())?;
    let r = execute(&mut fs, &p).map_err(|e| e.to_string())?;
    fs.flush().unwrap();
    Ok(r)
}

fn cat(img: &Path, path: &str) -> String {
    debugfs(img, &format!("cat {path}"))
}

/// (type, mode, uid, gid, link target) from debugfs `stat`; None if absent.
fn stat(img: &Path, path: &str) -> Option<(String, u32, u32, u32, Option<String>)> {
    let out = debugfs(img, &format!("stat {path}"));
    if !out.contains("Inode:") {
        return None;
    }
    let word_after = |key: &str| -> String {
        let i = out.find(key).unwrap() + key.len();
        out[i..].split_whitespace().next().unwrap().to_string()
    };
    let ty = word_after("Type:");
    let mode = u32::from_str_radix(&word_after("Mode:"), 8).unwrap();
    let uid = word_after("User:").parse().unwrap();
    let gid = word_after("Group:").parse().unwrap();
    let target = out.find("Fast link dest: \"").map(|i| {
        let rest = &out[i + 17..];
        rest[..rest.find('"').unwrap()].to_string()
    });
    Some((ty, mode, uid, gid, target))
}

fn host_inputs(host: &Path) {
    std::fs::write(host.join("tool.sh"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(host.join("tool.sh"), PermissionsExt::from_mode(0o750)).unwrap();
    let t = host.join("bundle");
    std::fs::create_dir_all(t.join("sub")).unwrap();
    std::fs::write(t.join("sub/data.txt"), "data\n").unwrap();
    std::fs::set_permissions(t.join("sub/data.txt"), PermissionsExt::from_mode(0o640)).unwrap();
    std::fs::set_permissions(t.join("sub"), PermissionsExt::from_mode(0o700)).unwrap();
    symlink("sub/data.txt", t.join("latest")).unwrap();
    // Owners are kept (as virt-customize's tar-based copy-in does); we run as root in CI.
    let _ = lchown(t.join("sub/data.txt"), Some(1), Some(1));
}

#[test]
fn file_options_on_distro_layouts() {
    require_tools!("mke2fs", "e2fsck", "debugfs");
    for &layout in LAYOUTS {
        let t = tempfile::tempdir().unwrap();
        let Some(img) = image(layout, t.path()) else {
            return;
        };
        let host = t.path().join("host");
        std::fs::create_dir(&host).unwrap();
        host_inputs(&host);
        let data_owner = std::fs::symlink_metadata(host.join("bundle/sub/data.txt")).unwrap();
        let list = items(
            &host,
            &[
                ("mkdir", "/srv/app/conf"),
                ("write", "/srv/app/conf/app.ini:key=value: x"),
                ("upload", "tool.sh:/srv/app/"),
                ("upload", "tool.sh:/srv/app/renamed.sh"),
                ("copy-in", "bundle:/srv/app"),
                ("copy", "/etc/hosts:/srv/app/hosts.copy"),
                ("copy", "/srv/app/bundle:/srv/app/bundle2"),
                ("move", "/srv/app/conf/app.ini:/srv/app/app.ini"),
                ("append-line", "/etc/hosts:10.9.8.7 db"),
                ("write", "/srv/app/win.txt:a\r\nb"),
                ("append-line", "/srv/app/win.txt:c"),
                ("append-line", "/srv/app/new.txt:first"),
                ("edit", "/etc/ssh/sshd_config:s/^Port (\\d+)$/Port 2$1/"),
                ("edit", "/etc/ssh/sshd_config:s/sandbox/yes/g"),
                ("link", "/srv/app/app.ini:/srv/app/l1:/srv/app/l2"),
                ("link", "../app.ini:/srv/app/bundle/rel"),
                ("delete", "/srv/app/conf"),
                ("delete", "/root/.less*"),
                ("scrub", "/root/.viminfo"),
                ("touch", "/srv/app/empty"),
                ("touch", "/etc/hosts"),
                ("truncate", "/etc/ssh/ssh_config"),
                ("truncate-recursive", "/root/.ssh"),
                ("chmod", "0600:/srv/app/app.ini"),
                ("chown", "1.0:/srv/app/hosts.copy"),
                ("chown", "1:0:/srv/app/bundle2"),
            ],
        );
        let r = customize(&img, list).unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert!(
            // SELinux guests (CentOS) without labels in the image also get /.autorelabel.
            r.steps
                .iter()
                .all(|s| s.source.starts_with("customize:--") || s.source == "selinux"),
            "{layout}: {:?}",
            r.steps.iter().map(|s| &s.source).collect::<Vec<_>>()
        );
        assert_e2fsck_clean(&img);

        let ctx = |what: &str| format!("{layout}: {what}");
        // write + move + chmod
        assert_eq!(
            cat(&img, "/srv/app/app.ini"),
            "key=value: x",
            "{}",
            ctx("app.ini")
        );
        assert_eq!(stat(&img, "/srv/app/app.ini").unwrap().1, 0o600);
        assert!(
            stat(&img, "/srv/app/conf").is_none(),
            "{}",
            ctx("conf deleted")
        );
        // upload keeps mode and name
        for p in ["/srv/app/tool.sh", "/srv/app/renamed.sh"] {
            assert_eq!(cat(&img, p), "#!/bin/sh\necho tool\n", "{}", ctx(p));
            assert_eq!(stat(&img, p).unwrap().1, 0o750, "{}", ctx(p));
        }
        // copy-in: tree, modes, owners, symlink
        assert_eq!(cat(&img, "/srv/app/bundle/sub/data.txt"), "data\n");
        let (ty, mode, uid, gid, _) = stat(&img, "/srv/app/bundle/sub/data.txt").unwrap();
        assert_eq!((ty.as_str(), mode), ("regular", 0o640));
        assert_eq!(
            (uid, gid),
            (
                std::os::unix::fs::MetadataExt::uid(&data_owner),
                std::os::unix::fs::MetadataExt::gid(&data_owner)
            )
        );
        assert_eq!(stat(&img, "/srv/app/bundle/sub").unwrap().1, 0o700);
        assert_eq!(
            stat(&img, "/srv/app/bundle/latest").unwrap().4.as_deref(),
            Some("sub/data.txt")
        );
        // guest copy of a tree keeps modes and links; chown on it
        assert_eq!(cat(&img, "/srv/app/bundle2/sub/data.txt"), "data\n");
        assert_eq!(stat(&img, "/srv/app/bundle2/sub").unwrap().1, 0o700);
        assert_eq!(
            stat(&img, "/srv/app/bundle2/latest").unwrap().4.as_deref(),
            Some("sub/data.txt")
        );
        assert_eq!(stat(&img, "/srv/app/bundle2").unwrap().2, 1);
        // copy + chown UID.GID
        let hosts = cat(&img, "/etc/hosts");
        assert!(hosts.ends_with("\n10.9.8.7 db\n"), "{hosts:?}");
        let copy = cat(&img, "/srv/app/hosts.copy");
        assert!(
            !copy.contains("10.9.8.7"),
            "{}: {copy:?} / {hosts:?}",
            ctx("hosts.copy")
        );
        assert_eq!(format!("{copy}10.9.8.7 db\n"), hosts, "{}", ctx("hosts"));
        let (_, _, uid, gid, _) = stat(&img, "/srv/app/hosts.copy").unwrap();
        assert_eq!((uid, gid), (1, 0));
        // append-line: CRLF kept, missing newline added first; new file created
        assert_eq!(cat(&img, "/srv/app/win.txt"), "a\r\nb\r\nc\r\n");
        assert_eq!(cat(&img, "/srv/app/new.txt"), "first\n");
        // edit with a group
        let sshd = cat(&img, "/etc/ssh/sshd_config");
        assert!(sshd.contains("\nPort 222\n"), "{sshd}");
        assert!(sshd.contains("UsePrivilegeSeparation yes\n"), "{sshd}");
        // links
        for l in ["/srv/app/l1", "/srv/app/l2"] {
            let s = stat(&img, l).unwrap();
            assert_eq!(
                (s.0.as_str(), s.4.as_deref()),
                ("symlink", Some("/srv/app/app.ini"))
            );
        }
        assert_eq!(
            stat(&img, "/srv/app/bundle/rel").unwrap().4.as_deref(),
            Some("../app.ini")
        );
        // delete with a glob, scrub
        assert!(stat(&img, "/root/.lesshst").is_none());
        assert!(stat(&img, "/root/.viminfo").is_none());
        // touch: new empty file 0644 root; an existing file is left as it is
        let s = stat(&img, "/srv/app/empty").unwrap();
        assert_eq!((s.0.as_str(), s.1, s.2, s.3), ("regular", 0o644, 0, 0));
        assert_eq!(cat(&img, "/srv/app/empty"), "");
        // truncate, truncate-recursive (mode kept)
        assert_eq!(cat(&img, "/etc/ssh/ssh_config"), "");
        assert_eq!(cat(&img, "/root/.ssh/authorized_keys"), "");
        assert_eq!(cat(&img, "/root/.ssh/known_hosts"), "");
        assert_eq!(stat(&img, "/root/.ssh/authorized_keys").unwrap().1, 0o600);
    }
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn errors_come_before_any_change() {
    require_tools!("mke2fs", "e2fsck", "debugfs");
    let t = tempfile::tempdir().unwrap();
    let Some(img) = image("debian12", t.path()) else {
        return;
    };
    let before = bytes(&img);
    for (opts, want) in [
        (
            vec![("write", "/etc/motd:ok"), ("chown", "4242:0:/etc/motd")],
            "--chown: no user with UID 4242 in the guest's /etc/passwd",
        ),
        (
            vec![("write", "/etc/motd:ok"), ("chown", "0:4242:/etc/motd")],
            "no group with GID 4242",
        ),
        (
            vec![("truncate", "/etc/nope")],
            "--truncate: /etc/nope: no such file",
        ),
        (
            vec![("write", "/nodir/x:1")],
            "directory /nodir does not exist (create it first with --mkdir)",
        ),
        (
            vec![("edit", "/etc/nope:s/a/b/")],
            "--edit: /etc/nope: no such file",
        ),
        (
            vec![("copy-in", ".:/nodir")],
            "--copy-in: /nodir: no such directory",
        ),
        (
            vec![("mkdir", "/etc/hosts")],
            "exists and is not a directory",
        ),
        (
            vec![("move", "/etc/nope:/tmp")],
            "no such file or directory",
        ),
        (vec![("copy", "/etc:/etc/x")], "inside itself"),
        (
            vec![("timezone", "Nowhere/City")],
            "does not exist in the guest",
        ),
    ] {
        let host = t.path().join("host");
        let _ = std::fs::create_dir(&host);
        let e = customize(&img, items(&host, &opts)).unwrap_err();
        assert!(e.contains(want), "{opts:?}: {e}");
        assert!(bytes(&img) == before, "{opts:?}: the image changed");
    }
    assert_e2fsck_clean(&img);
}

#[test]
fn dry_run_lists_every_step_with_its_option() {
    require_tools!("mke2fs");
    let t = tempfile::tempdir().unwrap();
    let Some(img) = image("alpine", t.path()) else {
        return;
    };
    let before = bytes(&img);
    let opts = Options {
        dry_run: true,
        customize: items(
            t.path(),
            &[
                ("mkdir", "/opt/a/b"),
                ("write", "/opt/a/b/c:1"),
                ("link", "/opt/a/b/c:/opt/l"),
                ("chmod", "0700:/opt/a"),
            ],
        ),
        ..Options::default()
    };
    let mut fs = Ext4::open(RawFile::open_rw(&img).unwrap(), true).unwrap();
    let p = plan(&fs, &empty_profile(), &opts).unwrap();
    let got: Vec<(String, String)> = p
        .steps
        .iter()
        .map(|s| (s.source.clone(), s.path.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        ("customize:--mkdir", "/opt"),
        ("customize:--mkdir", "/opt/a"),
        ("customize:--mkdir", "/opt/a/b"),
        ("customize:--write", "/opt/a/b/c"),
        ("customize:--link", "/opt/l"),
        ("customize:--chmod", "/opt/a"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    execute(&mut fs, &p).unwrap();
    drop(fs);
    assert!(bytes(&img) == before);
}

/// The same file options on an XFS root (the `centos7` tree, mkxfs.sh `centos7`), read back
/// with xfs_db; `xfs_repair -n` clean.
#[test]
fn file_options_on_an_xfs_root() {
    imgscrub_testkit::require_tools!("mkfs.xfs", "xfs_db", "xfs_repair");
    use imgscrub_testkit::{self as tk, XfsOptions};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build("centos7", &src);
    let Some(fx) = tk::make_xfs_with(
        "centos7",
        &t.path().join("img"),
        &XfsOptions {
            dirty: false,
            size_mb: Some(64),
            src: Some(src),
        },
    ) else {
        return;
    };
    let host = t.path().join("host");
    std::fs::create_dir(&host).unwrap();
    host_inputs(&host);
    let list = items(
        &host,
        &[
            ("mkdir", "/srv/app"),
            ("upload", "tool.sh:/srv/app/"),
            ("copy-in", "bundle:/srv/app"),
            ("write", "/srv/app/a.txt:x\r\ny"),
            ("append-line", "/srv/app/a.txt:z"),
            ("edit", "/etc/ssh/sshd_config:s/^Port 22$/Port 2222/"),
            ("link", "/srv/app/a.txt:/srv/app/l"),
            ("move", "/srv/app/bundle:/srv/bundle"),
            ("chmod", "0700:/srv/app"),
            ("chown", "1:0:/srv/app/a.txt"),
            ("truncate", "/etc/ssh/ssh_config"),
            ("delete", "/root/.less*"),
        ],
    );
    let opts = Options {
        fixed_time: Some(Timestamp::new(1_700_000_000, 0)),
        customize: list,
        ..Options::default()
    };
    let mut fs = imgscrub_fs::Xfs::open(RawFile::open_rw(&fx.image).unwrap(), true).unwrap();
    let p = plan(&fs, &empty_profile(), &opts).unwrap();
    execute(&mut fs, &p).unwrap();
    fs.flush().unwrap();
    drop(fs);
    tk::assert_xfs_repair_clean(&fx.image);
    let cat = |p: &str| String::from_utf8(tk::xfs_cat(&fx.image, p).unwrap()).unwrap();
    let st = |p: &str| tk::xfs_stat(&fx.image, p).unwrap();
    assert_eq!(cat("/srv/app/tool.sh"), "#!/bin/sh\necho tool\n");
    assert_eq!(st("/srv/app/tool.sh").mode & 0o7777, 0o750);
    assert_eq!(cat("/srv/app/a.txt"), "x\r\ny\r\nz\r\n");
    assert_eq!((st("/srv/app/a.txt").uid, st("/srv/app/a.txt").gid), (1, 0));
    assert_eq!(st("/srv/app").mode & 0o7777, 0o700);
    assert!(cat("/etc/ssh/sshd_config").contains("\nPort 2222\n"));
    assert_eq!(cat("/etc/ssh/ssh_config"), "");
    assert_eq!(cat("/srv/bundle/sub/data.txt"), "data\n");
    assert_eq!(st("/srv/bundle/sub").mode & 0o7777, 0o700);
    assert!(tk::xfs_stat(&fx.image, "/srv/app/bundle").is_none());
    assert!(tk::xfs_stat(&fx.image, "/root/.lesshst").is_none());
    assert_eq!(st("/srv/app/l").mode & 0o170_000, 0o120_000);
}
