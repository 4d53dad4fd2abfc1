#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `imgscrub export` and `prepare --export-tar`, checked with GNU tar, bsdtar and getfattr:
//! an ext4 image made by `mkfs.ext4 -d` from a source tree with every kind of entry is
//! exported, extracted by GNU tar, and the extracted tree must equal the source tree (content,
//! mode, owner, mtime, symlink target, hard-link grouping, device numbers, xattrs and ACLs).

use imgscrub_testkit::{fixture, in_ci, make_ext4, require_tools, run, run_ok, tool};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{imgscrub, ok};

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).stdout.starts_with(b"0\n")
}

/// Device nodes, owners and security.* xattrs need root; outside CI the test is skipped.
fn need_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !in_ci(),
        "the export tests need root in CI (mknod, chown, security.* xattrs)"
    );
    eprintln!("SKIP: the export tests need root (mknod, chown, security.* xattrs)");
    false
}

fn sh(script: &str, dir: &Path) {
    run_ok(
        Command::new("bash")
            .arg("-euc")
            .arg(script)
            .current_dir(dir),
    );
}

/// The source tree: files, an empty file, a sparse file, hard links, symlinks (short, long),
/// a FIFO, devices, odd modes (setuid, setgid, sticky, 0000), owners other than root, a
/// long path, non-ASCII names, xattrs (user, security.selinux, security.capability, trusted)
/// and POSIX ACLs (access and default). All times are whole seconds (mke2fs -d drops
/// nanoseconds; the test adds one afterwards with debugfs).
fn source_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    sh(
        r#"
mkdir -p etc dir/sub dev long sticky naïve-ü
echo myhost > etc/hostname
: > empty
printf data > dir/file
head -c 300000 /dev/urandom > dir/sub/big
truncate -s 10M sparse
printf middle | dd of=sparse bs=1 seek=5000000 conv=notrunc status=none
head -c 70000 /dev/urandom | dd of=sparse bs=1 seek=9000000 conv=notrunc status=none
truncate -s 1M allzero
ln dir/file hl1
ln dir/file dir/sub/hl2
ln -s ../etc/hostname dir/link
ln -s "$(printf 'target-%.0s' {1..30})" longlink
mkfifo fifo
mknod dev/null c 1 3
mknod dev/sda b 8 0
mknod dev/big c 254 70000
touch setuid setgid zero
chmod 4755 setuid; chmod 2711 setgid; chmod 0000 zero; chmod 1777 sticky
echo deep > "long/$(printf 'n%.0s' {1..120})"
echo café > naïve-ü/crème
chown 1000:1001 dir/file
chown -h 7:8 dir/link
chown 2000:3000 etc
chown 65534:65534 empty
setfattr -n security.selinux -v 'system_u:object_r:etc_t:s0' etc/hostname
setfattr -h -n security.selinux -v 'system_u:object_r:bin_t:s0' dir/link
setfattr -n user.foo -v bar empty
setfattr -n user.bin -v 0x00ff0a3d00 empty
setfattr -n trusted.t -v secret dir/sub/big
setfattr -n security.capability -v 0sAQAAAgAgAAAAAAAAAAAAAAAAAAA= setuid
setfacl -m u:1234:rx,g:99:r dir
setfacl -d -m g:55:rwx dir
setfacl -m u:4321:rw dir/sub/big
find . -depth -exec touch -h -d @1600000000 {} +
touch -h -d @1500000000 etc/hostname dir/link
"#,
        &src,
    );
    src
}

#[derive(Debug, PartialEq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
    target: Option<PathBuf>,
    rdev: Option<(u64, u64)>,
}

fn major_minor(rdev: u64) -> (u64, u64) {
    (
        ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
        (rdev & 0xff) | ((rdev >> 12) & !0xff),
    )
}

/// Every path below `root` (relative, "" for the root) with what the test compares, and the
/// hard-link groups (sets of paths sharing an inode).
fn scan(root: &Path, skip: &[&str]) -> (BTreeMap<PathBuf, Node>, Vec<Vec<PathBuf>>) {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        if skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "chr"
        } else if ft.is_block_device() {
            "blk"
        } else {
            "other"
        };
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        if ft.is_file() && m.nlink() > 1 {
            inodes.entry(m.ino()).or_default().push(rel.clone());
        }
        let node = Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            content: ft.is_file().then(|| std::fs::read(&p).unwrap()),
            target: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
            rdev: (ft.is_char_device() || ft.is_block_device()).then(|| major_minor(m.rdev())),
        };
        out.insert(rel, node);
    }
    let mut groups: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    groups.sort();
    (out, groups)
}

/// `getfattr -h -d -m - -e hex -R .` in `root`, as path → (name → hex value).
fn xattrs(root: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let o = run_ok(
        tool("getfattr")
            .args(["-h", "-d", "-m", "-", "-e", "hex", "-R", "."])
            .current_dir(root),
    );
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = String::new();
    for line in o.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            cur = f.trim_start_matches("./").to_owned();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(cur.clone())
                .or_default()
                .insert(k.to_owned(), v.to_owned());
        }
    }
    out
}

/// Every `SCHILY.xattr.*` record of the archive, read by Python's tarfile:
/// (path without "./" and trailing "/", name) → value.
fn pax_xattrs(tar: &Path) -> BTreeMap<(Vec<u8>, String), Vec<u8>> {
    let script = r#"
import sys, tarfile
out = sys.stdout.buffer
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        name = m.name.encode("utf-8", "surrogateescape")
        for k, v in m.pax_headers.items():
            if k.startswith("SCHILY.xattr."):
                out.write(name.hex().encode() + b" " + k[13:].encode("utf-8", "surrogateescape").hex().encode()
                          + b" " + v.encode("utf-8", "surrogateescape").hex().encode() + b"\n")
"#;
    let o = run_ok(Command::new("python3").arg("-c").arg(script).arg(tar));
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut out = BTreeMap::new();
    for line in o.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let mut path = unhex(f[0]);
        if path.starts_with(b"./") {
            path.drain(..2);
        }
        if path.ends_with(b"/") {
            path.pop();
        }
        let name = String::from_utf8(unhex(f[1])).unwrap();
        out.insert((path, name), unhex(f.get(2).copied().unwrap_or("")));
    }
    out
}

fn gnu_extract(tar: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run_ok(
        tool("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(into),
    );
}

/// The tree of `x` equals the source tree `src`, entry by entry.
fn assert_same_tree(src: &Path, x: &Path) {
    let (a, ga) = scan(src, &[]);
    let (mut b, gb) = scan(x, &["lost+found"]);
    // The extraction directory itself gets the archive's "./" entry; its mtime is that of
    // the image's root (mke2fs sets it), not of the source directory.
    let ra = a.get(Path::new("")).unwrap();
    let rb = b.get_mut(Path::new("")).unwrap();
    rb.mtime = ra.mtime;
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "paths differ");
    for (p, na) in &a {
        let nb = &b[p];
        assert_eq!(
            (
                na.kind, na.mode, na.uid, na.gid, na.mtime, &na.target, na.rdev
            ),
            (
                nb.kind, nb.mode, nb.uid, nb.gid, nb.mtime, &nb.target, nb.rdev
            ),
            "{}",
            p.display()
        );
        assert!(na.content == nb.content, "{}: content differs", p.display());
    }
    assert_eq!(ga, gb, "hard-link groups differ");
    assert!(!ga.is_empty());
    let (xa, mut xb) = (xattrs(src), xattrs(x));
    xb.remove("lost+found");
    assert_eq!(xa, xb, "xattrs differ");
}

fn ext4_image(t: &Path) -> Option<(PathBuf, PathBuf)> {
    let src = source_tree(t);
    let img = t.join("fs.img");
    if !make_ext4("default", &src, &img, 64) {
        return None;
    }
    // mke2fs -d drops nanoseconds: give one file a sub-second mtime in the image and the
    // source alike (debugfs stores nsec << 2 in mtime_extra).
    run_ok(
        tool("debugfs")
            .arg("-w")
            .arg("-R")
            .arg(format!(
                "sif /naïve-ü/crème mtime_extra {}",
                123_456_789u64 << 2
            ))
            .arg(&img),
    );
    sh("touch -d '@1600000000.123456789' naïve-ü/crème", &src);
    Some((src, img))
}

#[test]
fn ext4_export_extracts_to_the_source_tree() {
    require_tools!(
        "tar", "bsdtar", "getfattr", "setfattr", "setfacl", "mke2fs", "debugfs", "zstd", "gzip"
    );
    if !need_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let Some((src, img)) = ext4_image(t.path()) else {
        return;
    };
    let before = std::fs::read(&img).unwrap();
    let im = img.to_str().unwrap();
    for name in ["out.tar", "out.tar.gz", "out.tar.zst"] {
        let tar = t.path().join(name);
        let v: serde_json::Value =
            serde_json::from_str(&ok(&["export", "--json", im, tar.to_str().unwrap()])).unwrap();
        assert_eq!(v["hard_links"], 2, "{v}");
        assert_eq!(v["devices"], 3, "{v}");
        assert_eq!(v["fifos"], 1, "{v}");
        assert_eq!(v["sparse_files"], 2, "{v}");
        let x = t.path().join(format!("x-{name}"));
        gnu_extract(&tar, &x);
        assert_same_tree(&src, &x);
        // The sparse file is sparse again once extracted.
        let m = std::fs::metadata(x.join("sparse")).unwrap();
        assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());

        // Same bytes on a second run.
        let again = t.path().join(format!("again-{name}"));
        ok(&["export", "-q", im, again.to_str().unwrap()]);
        assert!(
            std::fs::read(&tar).unwrap() == std::fs::read(&again).unwrap(),
            "{name}: two runs differ"
        );
    }
    assert!(
        std::fs::read(&img).unwrap() == before,
        "export wrote to the image"
    );

    // The entries are in byte order of their paths, and bsdtar reads the archive too.
    let tar = t.path().join("out.tar");
    let list = run_ok(tool("tar").arg("-tf").arg(&tar));
    let paths: Vec<&str> = list.lines().collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    assert_eq!(paths[0], "./");
    let bsd = run_ok(tool("bsdtar").arg("-tvf").arg(&tar));
    assert_eq!(bsd.lines().count(), paths.len(), "{bsd}");
    let y = t.path().join("y");
    std::fs::create_dir(&y).unwrap();
    run_ok(tool("bsdtar").arg("-xpf").arg(&tar).arg("-C").arg(&y));
    for f in ["sparse", "allzero", "dir/sub/big", "naïve-ü/crème"] {
        assert!(
            std::fs::read(y.join(f)).unwrap() == std::fs::read(src.join(f)).unwrap(),
            "bsdtar: {f}"
        );
    }
    // bsdtar restores the ACLs from the SCHILY.acl records.
    let acl = |p: &Path| run_ok(tool("getfacl").args(["-n", "-p", "-c"]).arg(p));
    for d in ["dir", "dir/sub/big"] {
        assert_eq!(acl(&y.join(d)), acl(&src.join(d)), "bsdtar: ACL of {d}");
    }

    // --path: a subtree becomes ./ (hard links inside it still resolve).
    let sub = t.path().join("dir.tar");
    ok(&["export", "-q", "--path", "/dir", im, sub.to_str().unwrap()]);
    let z = t.path().join("z");
    gnu_extract(&sub, &z);
    assert_eq!(std::fs::read(z.join("sub/hl2")).unwrap(), b"data");
    assert_eq!(
        std::fs::metadata(z.join("file")).unwrap().ino(),
        std::fs::metadata(z.join("sub/hl2")).unwrap().ino()
    );
    assert!(!z.join("etc").exists());
}

#[test]
fn export_refuses_its_input_and_unknown_suffixes() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("sample.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &img).unwrap();
    let before = std::fs::read(&img).unwrap();
    let im = img.to_str().unwrap();
    let o = imgscrub(&["export", "--compress", "none", im, im]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("same file"));
    let link = t.path().join("link.tar");
    std::fs::hard_link(&img, &link).unwrap();
    let o = imgscrub(&["export", im, link.to_str().unwrap()]);
    assert!(!o.status.success());
    let o = imgscrub(&["export", im, t.path().join("x.bin").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(".tar.zst"),
        "unknown suffix"
    );
    assert!(std::fs::read(&img).unwrap() == before);
    assert!(!t.path().join("x.bin").exists());
}

/// `prepare --export-tar`: the scrubbed files are not in the tarball, the files prepare
/// writes are, the ESP mounted at /boot/efi by the guest's fstab is in it, and the image is
/// byte-identical afterwards.
#[test]
fn prepare_export_tar_is_one_pass_and_reads_only() {
    require_tools!("tar", "zstd");
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("sample.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &img).unwrap();
    let before = std::fs::read(&img).unwrap();
    let im = img.to_str().unwrap();

    let plain = t.path().join("plain.tar.zst");
    ok(&["export", "-q", im, plain.to_str().unwrap()]);
    // To standard output: the same bytes as the file.
    let o = imgscrub(&["export", "-q", "--compress", "zstd", im, "-"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout == std::fs::read(&plain).unwrap(),
        "export to - differs"
    );
    let list = |p: &Path| run_ok(tool("tar").arg("--zstd").arg("-tf").arg(p));
    let l = list(&plain);
    assert!(l.contains("./etc/ssh/ssh_host_rsa_key\n"), "{l}");
    assert!(l.contains("./boot/efi/EFI/"), "{l}");

    let out = t.path().join("rootfs.tar.zst");
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "prepare",
        im,
        "--profile",
        "linux",
        "--export-tar",
        out.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert!(v["prepare"]["bytes_changed"].as_u64().unwrap() > 0, "{v}");
    assert!(v["export"]["entries"].as_u64().unwrap() > 10, "{v}");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "prepare --export-tar wrote the image"
    );
    let l = list(&out);
    assert!(!l.contains("ssh_host_rsa_key"), "{l}");
    assert!(l.contains("./boot/efi/EFI/"), "{l}");
    assert!(
        l.contains("./etc/systemd/system/imgscrub-firstboot.service\n")
            && l.contains("./usr/lib/imgscrub/firstboot.d/0000-ssh-keygen\n"),
        "{l}"
    );
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    run_ok(
        tool("tar")
            .args(["--zstd", "--numeric-owner", "-xpf"])
            .arg(&out)
            .arg("-C")
            .arg(&x),
    );
    assert_eq!(std::fs::read(x.join("etc/machine-id")).unwrap(), b"");

    // Same bytes again (with a fixed clock for the files prepare writes).
    let out2 = t.path().join("again.tar.zst");
    for o in [&out, &out2] {
        ok(&[
            "prepare",
            im,
            "-q",
            "--timestamp",
            "1700000000",
            "--export-tar",
            o.to_str().unwrap(),
        ]);
    }
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&out2).unwrap());
    let o = imgscrub(&["prepare", im, "--export-tar", "a.tar", "--dry-run"]);
    assert_eq!(o.status.code(), Some(2));
}

/// An XFS image (fixtures/mkxfs.sh): every inode of the manifest is extracted with its
/// type, mode, owner, size, content, target, device number and link count, and every
/// extended attribute with its value.
#[test]
fn xfs_export_matches_the_manifest() {
    require_tools!("tar", "python3", "sha256sum");
    if !need_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let variant = imgscrub_testkit::xfs_variants()[0].clone();
    let Some(fx) = imgscrub_testkit::make_xfs(&variant, t.path()) else {
        return;
    };
    let tar = t.path().join("xfs.tar");
    ok(&[
        "export",
        "-q",
        fx.image.to_str().unwrap(),
        tar.to_str().unwrap(),
    ]);
    let x = t.path().join("x");
    gnu_extract(&tar, &x);
    let manifest = fx.manifest();
    assert!(manifest.len() > 100);
    use std::os::unix::ffi::OsStrExt;
    let host = |p: &[u8]| {
        x.join(std::ffi::OsStr::from_bytes(
            p.strip_prefix(b"/").unwrap_or(p),
        ))
    };
    for e in &manifest {
        let p = host(&e.path);
        let name = String::from_utf8_lossy(&e.path);
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{name}: {err}"));
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = match () {
            _ if ft.is_dir() => "dir",
            _ if ft.is_symlink() => "symlink",
            _ if ft.is_file() => "file",
            _ if ft.is_fifo() => "fifo",
            _ if ft.is_char_device() => "chr",
            _ if ft.is_block_device() => "blk",
            _ => "other",
        };
        assert_eq!(kind, e.kind, "{name}");
        if e.path != b"/" {
            assert_eq!(m.mode() & 0o7777, e.mode, "{name}");
        }
        assert_eq!((m.uid(), m.gid()), (e.uid, e.gid), "{name}");
        if kind != "dir" {
            assert_eq!(m.nlink(), u64::from(e.nlink), "{name}");
        }
        if kind == "file" {
            match &e.host {
                Some(h) if !h.exists() => {
                    // A host name the manifest could not spell (non-UTF-8): compare hashes.
                    let sum = run_ok(tool("sha256sum").arg(&p));
                    assert_eq!(Some(&sum[..64]), e.sha256.as_deref(), "{name}: content");
                }
                _ => assert!(
                    std::fs::read(&p).unwrap() == e.content().unwrap(),
                    "{name}: content"
                ),
            }
        }
        if let Some(target) = &e.target {
            assert_eq!(
                std::fs::read_link(&p).unwrap().as_os_str().as_bytes(),
                &target[..]
            );
        }
        if let Some((ma, mi)) = e.rdev {
            assert_eq!(
                major_minor(m.rdev()),
                (u64::from(ma), u64::from(mi)),
                "{name}"
            );
        }
    }
    // Some files hold more attributes than the host filesystem can (an XFS attribute btree
    // of thousands): read the archive's pax records with Python's tarfile instead.
    let got = pax_xattrs(&tar);
    let mut n = 0;
    for a in fx.xattrs() {
        let path = a.path.strip_prefix(b"/").unwrap_or(&a.path).to_vec();
        let have = got.get(&(path.clone(), a.name.clone()));
        let have = have.unwrap_or_else(|| {
            panic!(
                "{}: xattr {} missing",
                String::from_utf8_lossy(&path),
                a.name
            )
        });
        if a.name.starts_with("system.posix_acl") {
            // Stored on disk as struct xfs_acl; archived in Linux's xattr format (version 2).
            assert_eq!(have.get(..4), Some(&[2u8, 0, 0, 0][..]), "{}", a.name);
        } else if let Some(v) = &a.value {
            assert_eq!(have, v, "{}: {}", String::from_utf8_lossy(&path), a.name);
        } else {
            assert_eq!(have.len(), a.len);
        }
        n += 1;
    }
    assert_eq!(n, got.len(), "the archive has xattrs the manifest does not");
    assert!(n > 0);
}

/// Ctrl-C during an export: exit status 130, and neither the archive nor its temporary file
/// is left behind.
#[test]
fn an_interrupted_export_leaves_nothing() {
    require_tools!("mke2fs");
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    {
        use std::io::Write;
        // 192 MiB of compressible text: gzip level 9 takes seconds on it.
        let chunk: Vec<u8> = (0..1u32 << 20)
            .flat_map(|i| format!("{:08x} ", i.wrapping_mul(2_654_435_761) % 9973).into_bytes())
            .take(4 << 20)
            .collect();
        let mut f = std::fs::File::create(src.join("big")).unwrap();
        for _ in 0..48 {
            f.write_all(&chunk).unwrap();
        }
    }
    let img = t.path().join("fs.img");
    if !make_ext4("default", &src, &img, 256) {
        return;
    }
    std::fs::remove_dir_all(&src).unwrap();
    let out = t.path().join("out.tar.gz");
    let mut child = Command::new(common::BIN)
        .args(["export", "-q", "--tar-level", "9"])
        .arg(&img)
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    imgscrub_testkit::wait_until("export created its temporary output", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("export ended before it was interrupted: {status}");
        }
        std::fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains(".imgscrub-"))
    });
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    let names: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["fs.img"]);
}
