#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Differential test: every distro tree gets each applicable profile twice — on a host
//! directory (`HostDir`) and on an ext4 image made from the same tree with `mkfs.ext4 -d`
//! (our ext4 engine). The two resulting trees must be identical (types, modes, owners,
//! contents, link targets), the two reports must list the same steps, and `e2fsck -fn` must
//! be clean on the image.

mod common;

use common::distros::{DISTROS, build};
use imgscrub_disk::RawFile;
use imgscrub_fs::filesystem::{FileType, Timestamp};
use imgscrub_fs::{Ext4, Filesystem, HostDir, NodeId};
use imgscrub_prepare::{Options, Profile, prepare};
use imgscrub_testkit::{assert_e2fsck_clean, make_ext4, require_tools};
use std::collections::BTreeMap;

/// path → "type perm uid:gid content-or-target"
fn walk(fs: &dyn Filesystem) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(String, NodeId)> = vec![(String::new(), fs.root())];
    while let Some((path, dir)) = stack.pop() {
        for e in fs.read_dir(dir).unwrap() {
            let name = String::from_utf8_lossy(&e.name).into_owned();
            let p = format!("{path}/{name}");
            if p == "/lost+found" {
                continue; // mkfs makes it; a host directory has none
            }
            let m = fs.stat(e.node).unwrap();
            let body = match m.file_type {
                FileType::Directory => {
                    stack.push((p.clone(), e.node));
                    "dir".to_string()
                }
                FileType::Symlink => {
                    format!(
                        "-> {}",
                        String::from_utf8_lossy(&fs.readlink(e.node).unwrap())
                    )
                }
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

fn profiles_for(distro: &str) -> Vec<&'static str> {
    let lx = match distro {
        d if d.starts_with("centos") => "lx-centos",
        d if d.starts_with("debian") => "lx-debian",
        d if d.starts_with("ubuntu") => "lx-ubuntu",
        "alpine" => "lx-alpine",
        _ => return vec!["linux"],
    };
    vec!["linux", lx]
}

#[test]
fn host_directory_and_ext4_image_end_identical() {
    require_tools!("mke2fs", "e2fsck");
    let opts = Options {
        fixed_time: Some(Timestamp::new(1_700_000_000, 0)),
        ..Options::default()
    };
    for &distro in DISTROS {
        for profile_name in profiles_for(distro) {
            let t = tempfile::tempdir().unwrap();
            let host = t.path().join("host");
            let src = t.path().join("src");
            std::fs::create_dir(&host).unwrap();
            std::fs::create_dir(&src).unwrap();
            build(distro, &host);
            build(distro, &src);
            let img = t.path().join("root.ext4");
            if !make_ext4("default", &src, &img, 64) {
                return;
            }
            let profile = Profile::builtin(profile_name).unwrap();

            let mut hfs = HostDir::open(&host).unwrap();
            let before_host = walk(&hfs);
            let hrep = prepare(&mut hfs, &profile, &opts).unwrap();

            let dev = RawFile::open_rw(&img).unwrap();
            let mut efs = Ext4::open(dev, true).unwrap();
            assert_eq!(
                walk(&efs),
                before_host,
                "{distro}: image differs before prepare"
            );
            let erep = prepare(&mut efs, &profile, &opts).unwrap();
            efs.flush().unwrap();
            drop(efs);
            assert_e2fsck_clean(&img);

            let steps = |r: &imgscrub_prepare::Report| {
                r.steps
                    .iter()
                    .map(|s| serde_json::to_string(s).unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                steps(&erep),
                steps(&hrep),
                "{distro}/{profile_name}: plans differ"
            );
            assert!(
                !hrep.steps.is_empty(),
                "{distro}/{profile_name}: nothing to do?"
            );

            let efs = Ext4::open(RawFile::open(&img).unwrap(), false).unwrap();
            let (a, b) = (walk(&hfs), walk(&efs));
            for (k, v) in &a {
                assert_eq!(b.get(k), Some(v), "{distro}/{profile_name}: {k} differs");
            }
            for k in b.keys() {
                assert!(
                    a.contains_key(k),
                    "{distro}/{profile_name}: {k} only in the image"
                );
            }
        }
    }
}
