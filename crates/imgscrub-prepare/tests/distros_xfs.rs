#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Profiles on XFS roots (issue 12): the `centos7` distro tree as a CentOS-7-shaped XFS
//! (mkxfs.sh `centos7`: v5 without finobt) and an EL9-shaped one (`el9`: finobt, reflink,
//! bigtime, inobtcount), each prepared with `lx-centos` and with `linux` through
//! `imgscrub_fs::Xfs` opened writable. For every pair:
//! - before: the image reads back exactly the host tree (our read side; the fixture check);
//! - a dry run (`Options::dry_run`) + flush leaves the image byte-identical;
//! - the run plans the same steps as on a host directory, and the image then reads back
//!   exactly what the host directory became;
//! - `xfs_repair -n` is clean;
//! - the kernel's view (a plain read-only loop mount) meets every row of the spec that
//!   `distros.rs` checks on host directories (common/rows.rs);
//! - a second run plans nothing and leaves the image byte-identical (idempotent);
//! - a second run from the same input with the same fixed time gives the same bytes
//!   (reproducible output, what SOURCE_DATE_EPOCH sets in the CLI).

mod common;

use common::distros::build;
use common::rows::*;
use imgscrub_disk::RawFile;
use imgscrub_fs::filesystem::{FileType, Timestamp};
use imgscrub_fs::{Filesystem, HostDir, NodeId, Xfs};
use imgscrub_prepare::{Options, Profile, Report, prepare};
use imgscrub_testkit::{self as tk, XfsOptions};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// path → "type perm uid:gid content-or-target" (as differential.rs).
fn walk(fs: &dyn Filesystem) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(String, NodeId)> = vec![(String::new(), fs.root())];
    while let Some((path, dir)) = stack.pop() {
        for e in fs.read_dir(dir).unwrap() {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let p = format!("{path}/{name}");
            let m = fs.stat(e.node).unwrap();
            let body = match m.file_type {
                FileType::Directory => {
                    stack.push((p.clone(), e.node));
                    "dir".to_string()
                }
                FileType::Symlink => format!(
                    "-> {}",
                    String::from_utf8_lossy(&fs.readlink(e.node).unwrap())
                ),
                FileType::Regular => {
                    let data = fs.read_all(e.node).unwrap();
                    format!("{} bytes {:?}", data.len(), String::from_utf8_lossy(&data))
                }
                other => format!("{other:?} {:?}", m.rdev),
            };
            out.insert(
                p,
                format!(
                    "{:?} {:04o} {}:{} {body}",
                    m.file_type, m.perm, m.uid, m.gid
                ),
            );
        }
    }
    out
}

/// The host tree `a` and the image `b` hold the same paths with the same contents.
fn same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            Some(w) if w == v => {}
            Some(w) => diffs.push(format!("{k}: host {v:.120} / image {w:.120}")),
            None => diffs.push(format!("{k}: only on the host")),
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        diffs.push(format!("{k}: only in the image"));
    }
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

fn opts() -> Options {
    Options {
        fixed_time: Some(Timestamp::new(1_700_000_000, 0)),
        ..Options::default()
    }
}

fn steps(r: &Report) -> Vec<String> {
    r.steps
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect()
}

/// The distro tree `centos7` as an XFS image of `variant`, and the same tree on the host.
struct Case {
    _t: tempfile::TempDir,
    host: PathBuf,
    image: PathBuf,
}

fn case(variant: &str) -> Option<Case> {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("host");
    let src = t.path().join("src");
    std::fs::create_dir(&host).unwrap();
    std::fs::create_dir(&src).unwrap();
    build("centos7", &host);
    build("centos7", &src);
    // mkxfs.sh makes /tmp 1777, as on a real system: the host tree too.
    for root in [&host, &src] {
        let tmp = root.join("tmp");
        if tmp.is_dir() {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        }
    }
    let fx = tk::make_xfs_with(
        variant,
        &t.path().join("img"),
        &XfsOptions {
            dirty: false,
            size_mb: Some(64),
            src: Some(src),
        },
    )?;
    Some(Case {
        image: fx.image,
        host,
        _t: t,
    })
}

/// Prepare the image in place through the Filesystem trait (writable open, prepare, flush).
fn prepare_image(image: &Path, profile: &Profile, opts: &Options, what: &str) -> Report {
    let dev = RawFile::open_rw(image).unwrap();
    let mut fs = Xfs::open(dev, true).unwrap_or_else(|e| {
        panic!("{what}: the writable open is refused: {e} (the XFS write side, issue 12)")
    });
    let r = prepare(&mut fs, profile, opts).unwrap_or_else(|e| panic!("{what}: prepare: {e}"));
    fs.flush().unwrap_or_else(|e| panic!("{what}: flush: {e}"));
    r
}

fn rows(root: &Path, profile: &str, what: &str) {
    match profile {
        "lx-centos" => {
            assert_lx_checklist(root, what, true);
            assert_lx_centos7_rows(root);
        }
        _ => {
            assert_linux_rows(root, what);
            assert_linux_fstab(root, what);
            assert_linux_centos7_rows(root);
        }
    }
}

fn profile_on_xfs(variant: &str, profile_name: &str) {
    tk::require_tools!("mkfs.xfs", "xfs_db", "xfs_repair");
    let what = format!("{variant}/{profile_name}");
    let Some(c) = case(variant) else { return };
    let profile = Profile::builtin(profile_name).unwrap();
    let orig = std::fs::read(&c.image).unwrap();

    // The host directory: the reference result.
    let mut hfs = HostDir::open(&c.host).unwrap();
    let before = walk(&hfs);
    {
        let xfs = Xfs::open(RawFile::open(&c.image).unwrap(), false).unwrap();
        same(&before, &walk(&xfs), &format!("{what}: before prepare"));
    }
    let hrep = prepare(&mut hfs, &profile, &opts()).unwrap();
    assert!(!hrep.steps.is_empty(), "{what}: nothing to do on the host?");

    // Dry run: plans, writes nothing.
    let dry = Options {
        dry_run: true,
        ..opts()
    };
    let drep = prepare_image(&c.image, &profile, &dry, &format!("{what} (dry run)"));
    assert_eq!(
        steps(&drep),
        steps(&hrep),
        "{what}: the dry run plans differ"
    );
    assert!(
        std::fs::read(&c.image).unwrap() == orig,
        "{what}: the dry run changed the image"
    );

    // The run.
    let erep = prepare_image(&c.image, &profile, &opts(), &what);
    assert_eq!(steps(&erep), steps(&hrep), "{what}: plans differ");
    tk::assert_xfs_repair_clean(&c.image);
    {
        let xfs = Xfs::open(RawFile::open(&c.image).unwrap(), false).unwrap();
        same(&walk(&hfs), &walk(&xfs), &format!("{what}: after prepare"));
    }
    // Every row, as the kernel sees the prepared image.
    if let Some(mnt) = tk::xfs_mount_ro(&c.image) {
        rows(mnt.path(), profile_name, &what);
    }
    let prepared = std::fs::read(&c.image).unwrap();

    // Idempotent: nothing planned, not a byte changed.
    let again = prepare_image(&c.image, &profile, &opts(), &format!("{what} (second run)"));
    assert!(
        again.is_empty(),
        "{what}: second run planned:\n{}",
        again.to_text()
    );
    assert!(
        std::fs::read(&c.image).unwrap() == prepared,
        "{what}: the second run changed the image"
    );

    // Reproducible: the same input and fixed time give the same bytes.
    std::fs::write(&c.image, &orig).unwrap();
    prepare_image(&c.image, &profile, &opts(), &format!("{what} (rerun)"));
    assert!(
        std::fs::read(&c.image).unwrap() == prepared,
        "{what}: two runs from the same input differ"
    );
}

#[test]
fn lx_centos_on_centos7_xfs() {
    profile_on_xfs("centos7", "lx-centos");
}

#[test]
fn linux_on_centos7_xfs() {
    profile_on_xfs("centos7", "linux");
}

#[test]
fn lx_centos_on_el9_xfs() {
    profile_on_xfs("el9", "lx-centos");
}

#[test]
fn linux_on_el9_xfs() {
    profile_on_xfs("el9", "linux");
}

/// SELinux labels on XFS as on ext4: a file the profile creates gets its parent directory's
/// `security.selinux`, read back by xfs_db from the image.
#[test]
fn new_files_on_xfs_get_the_parent_selinux_label() {
    tk::require_tools!("mkfs.xfs", "xfs_db", "xfs_repair");
    let Some(c) = case("el9") else { return };
    let label = b"system_u:object_r:etc_t:s0\0".to_vec();
    let unit = b"system_u:object_r:systemd_unit_file_t:s0\0".to_vec();
    {
        // Label the directories the way a SELinux guest has them.
        let mut fs = Xfs::open(RawFile::open_rw(&c.image).unwrap(), true).unwrap();
        let walk_to = |path: &str| {
            let mut n = fs.root();
            for p in path.split('/').filter(|p| !p.is_empty()) {
                n = fs.lookup(n, p.as_bytes()).unwrap().unwrap();
            }
            n
        };
        let etc = walk_to("/etc");
        let sys = walk_to("/etc/systemd/system");
        let root = fs.root();
        fs.set_xattr(root, "security.selinux", b"system_u:object_r:root_t:s0\0")
            .unwrap();
        fs.set_xattr(etc, "security.selinux", &label).unwrap();
        fs.set_xattr(sys, "security.selinux", &unit).unwrap();
        fs.flush().unwrap();
    }
    tk::assert_xfs_repair_clean(&c.image);
    // A profile that keeps SELinux on and creates files: linux + a new file and directory.
    let text = "extends = [\"linux\"]\n\
        [[action]]\nkind = \"write_file\"\npath = \"/etc/imgscrub-prepared\"\ncontent = \"hi\\n\"\n\
        [[action]]\nkind = \"mkdir\"\npath = \"/etc/systemd/system/httpd.service.d\"\n\
        [[action]]\nkind = \"symlink\"\npath = \"/etc/systemd/system/auditd.service\"\ntarget = \"/dev/null\"\n";
    let profile = Profile::from_toml("site", text, &Profile::builtin_resolver).unwrap();
    prepare_image(&c.image, &profile, &opts(), "el9/linux+site with labels");
    tk::assert_xfs_repair_clean(&c.image);
    let selinux_of = |path: &str| {
        tk::xfs_attrs(&c.image, path)
            .into_iter()
            .find(|a| a.ns == "secure" && a.name == b"selinux")
            .and_then(|a| a.value)
    };
    assert_eq!(selinux_of("/etc/imgscrub-prepared"), Some(label.clone()));
    assert_eq!(
        selinux_of("/etc/systemd/system/httpd.service.d"),
        Some(unit.clone())
    );
    assert_eq!(selinux_of("/etc/systemd/system/auditd.service"), Some(unit));
}
