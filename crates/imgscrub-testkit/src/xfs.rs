//! XFS fixtures and oracles: build images with `fixtures/mkxfs.sh` (the real mkfs.xfs, a
//! protofile, `xfs_db -x` edits) and ask the real tools — `xfs_repair -n` and `xfs_db -r` —
//! what is in them, so that engine tests compare against xfsprogs rather than against our own
//! reader.
//!
//! ```no_run
//! let tmp = tempfile::tempdir().unwrap();
//! for variant in imgscrub_testkit::xfs_variants() {
//!     let Some(fx) = imgscrub_testkit::make_xfs(&variant, tmp.path()) else { return };
//!     for entry in fx.manifest() { /* open fx.image with the engine, compare */ }
//!     imgscrub_testkit::assert_xfs_repair_clean(&fx.image);
//! }
//! ```
//!
//! Every helper that needs xfsprogs returns `None` (or is skipped) when a tool is missing on a
//! developer machine and panics under `CI=true`, like the ext4 helpers.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{fixture, repo_root, require_tool, run, run_ok, tool};

/// The variants `fixtures/mkxfs.sh --list` builds: the mkfs matrix every XFS test loops over.
/// None of them needs root.
pub fn xfs_variants() -> Vec<String> {
    mkxfs_list("--list")
}

/// [`xfs_variants`] plus the extra variants that need root and loop mounts (`kernel`,
/// `dirtylog`): see [`xfs_can_mount`].
pub fn xfs_variants_all() -> Vec<String> {
    mkxfs_list("--list-all")
}

/// Variants that the kernel makes with a loop mount (root only).
pub fn xfs_variant_needs_mount(variant: &str) -> bool {
    matches!(variant, "kernel" | "dirtylog")
}

fn mkxfs_list(flag: &str) -> Vec<String> {
    run_ok(Command::new("bash").arg(fixture("mkxfs.sh")).arg(flag))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// True when this process can build the loop-mount variants (root, xfs_io, mount). Outside
/// CI a false answer is printed as a skip.
pub fn xfs_can_mount() -> bool {
    let root = run(Command::new("id").arg("-u")).stdout.starts_with(b"0\n");
    let ok = root && crate::find_tool("xfs_io").is_some() && crate::find_tool("mount").is_some();
    if !ok {
        eprintln!("SKIP: the kernel/dirtylog XFS variants need root, xfs_io and mount -o loop");
    }
    ok
}

/// Paths of one image built by `fixtures/mkxfs.sh`.
#[derive(Debug, Clone)]
pub struct XfsFixture {
    /// The bare filesystem image (sparse file).
    pub image: PathBuf,
    /// The source tree it was made from (shared between fixtures: do not modify).
    pub src: PathBuf,
    /// `IMAGE.manifest.tsv`: every inode as it must read back ([`XfsFixture::manifest`]).
    pub manifest: PathBuf,
    /// `IMAGE.xattrs.tsv`: every extended attribute ([`XfsFixture::xattrs`]).
    pub xattrs: PathBuf,
}

/// Options for [`make_xfs_with`].
#[derive(Debug, Clone, Default)]
pub struct XfsOptions {
    /// Fill every free extent with pseudo-random bytes (`--dirty`).
    pub dirty: bool,
    /// Image size in MiB instead of the variant's default (64, or 128 for ag8/i1k/i2k).
    pub size_mb: Option<u32>,
    /// Build from this directory instead of the shared [`xfs_tree`].
    pub src: Option<PathBuf>,
}

/// Build `variant` into `dir` (as `dir/VARIANT.img` plus its manifest files) from the shared
/// source tree. `None` means skip: xfsprogs missing outside CI, or a loop-mount variant
/// without root.
pub fn make_xfs(variant: &str, dir: &Path) -> Option<XfsFixture> {
    make_xfs_with(variant, dir, &XfsOptions::default())
}

/// [`make_xfs`] with `--dirty`: free space is full of non-zero bytes.
pub fn make_xfs_dirty(variant: &str, dir: &Path) -> Option<XfsFixture> {
    make_xfs_with(
        variant,
        dir,
        &XfsOptions {
            dirty: true,
            ..XfsOptions::default()
        },
    )
}

/// [`make_xfs`] with options. The image is `dir/VARIANT.img` (`dir/VARIANT-dirty.img` when
/// dirty).
pub fn make_xfs_with(variant: &str, dir: &Path, opts: &XfsOptions) -> Option<XfsFixture> {
    for t in ["mkfs.xfs", "xfs_db", "xfs_repair"] {
        require_tool(t)?;
    }
    if xfs_variant_needs_mount(variant) && !xfs_can_mount() {
        return None;
    }
    let src = match &opts.src {
        Some(s) => s.clone(),
        None => xfs_tree()?,
    };
    let name = if opts.dirty {
        format!("{variant}-dirty.img")
    } else {
        format!("{variant}.img")
    };
    let image = dir.join(name);
    let mut cmd = Command::new("bash");
    cmd.arg(fixture("mkxfs.sh"));
    if opts.dirty {
        cmd.arg("--dirty");
    }
    if let Some(mb) = opts.size_mb {
        cmd.arg("--size").arg(mb.to_string());
    }
    cmd.arg(variant).arg(&image).arg(&src);
    run_script(&mut cmd, &format!("mkxfs.sh {variant}"));
    Some(XfsFixture {
        manifest: suffixed(&image, ".manifest.tsv"),
        xattrs: suffixed(&image, ".xattrs.tsv"),
        image,
        src,
    })
}

/// Run a fixture script that must succeed. On failure the panic message starts with what
/// failed and the script's stderr (the reason: a tool's complaint, an `xfs_repair -n`
/// report), then stdout, so that a failure seen once in a busy test run explains itself.
fn run_script(cmd: &mut Command, what: &str) {
    let o = run(cmd);
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        panic!(
            "{what} failed ({}); stderr:\n{}\nstdout:\n{}\ncommand: {cmd:?}",
            o.status,
            if err.trim().is_empty() {
                "(empty)"
            } else {
                err.trim_end()
            },
            String::from_utf8_lossy(&o.stdout).trim_end(),
        );
    }
}

fn suffixed(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The source tree of `fixtures/xfs-tree.sh`, generated once and cached under
/// `target/xfs-fixtures/` (keyed by the script's content, so editing the script makes a new
/// one). Creating ~12,000 files is slow on some disks; later runs reuse it. `None` when
/// xfsprogs is missing outside CI (there is nothing to build from it then).
pub fn xfs_tree() -> Option<PathBuf> {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    require_tool("mkfs.xfs")?;
    Some(TREE.get_or_init(build_tree).clone())
}

fn build_tree() -> PathBuf {
    let script = fixture("xfs-tree.sh");
    let text = fs::read(&script).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let key = text.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let base = target.join("xfs-fixtures");
    let done = base.join(format!("tree-{key:016x}"));
    if done.join("src").is_dir() {
        return done.join("src");
    }
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("{}: {e}", base.display()));
    // Build beside it, then rename into place: concurrent test processes race harmlessly.
    let tmp = tempfile::Builder::new()
        .prefix("tree-building-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("{}: {e}", base.display()));
    run_script(
        Command::new("bash")
            .arg(&script)
            .arg(tmp.path().join("src")),
        "xfs-tree.sh",
    );
    let built = tmp.keep();
    if fs::rename(&built, &done).is_err() {
        // Another process finished first; use its tree.
        let _ = fs::remove_dir_all(&built);
    }
    assert!(done.join("src").is_dir(), "{}: no tree", done.display());
    done.join("src")
}

// ---- manifest ---------------------------------------------------------------------------------

/// One line of `IMAGE.manifest.tsv`: what one path must read back as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsEntry {
    /// Absolute path in the filesystem ("/" for the root), as bytes (names may be non-UTF-8).
    pub path: Vec<u8>,
    /// "dir", "file", "symlink", "fifo", "chr" or "blk".
    pub kind: String,
    /// Permission bits including setuid/setgid/sticky (no file type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Byte size for files and symlinks (target length), 0 for devices and fifos, `None` for
    /// directories (it depends on the directory form).
    pub size: Option<u64>,
    pub nlink: u32,
    /// SHA-256 of the content (files only), lowercase hex.
    pub sha256: Option<String>,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// (major, minor) of devices.
    pub rdev: Option<(u32, u32)>,
    /// A host file with the expected content; `None` for directories etc. and for files whose
    /// content is all zeros (preallocated files, empty files the kernel made).
    pub host: Option<PathBuf>,
}

impl XfsEntry {
    /// The expected content of a file: the host file, or `size` zero bytes.
    pub fn content(&self) -> Option<Vec<u8>> {
        if self.kind != "file" {
            return None;
        }
        Some(match &self.host {
            Some(h) => fs::read(h).unwrap_or_else(|e| panic!("{}: {e}", h.display())),
            None => vec![0; usize::try_from(self.size.unwrap_or(0)).unwrap_or(0)],
        })
    }
}

/// One line of `IMAGE.xattrs.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsXattr {
    pub path: Vec<u8>,
    /// The Linux name: `user.x`, `trusted.x`, `security.selinux`, `system.posix_acl_access`.
    pub name: String,
    /// On-disk namespace: "user", "trusted" (root) or "secure".
    pub ns: String,
    /// The name stored on disk (without a namespace prefix; ACLs are `SGI_ACL_FILE` and
    /// `SGI_ACL_DEFAULT` in the trusted namespace).
    pub disk_name: Vec<u8>,
    /// Length of the stored value.
    pub len: usize,
    /// SHA-256 of the stored value (for ACLs: the on-disk `struct xfs_acl`, big-endian).
    pub sha256: String,
    /// The stored value when it is at most 256 bytes.
    pub value: Option<Vec<u8>>,
}

impl XfsFixture {
    /// The manifest, sorted by path.
    pub fn manifest(&self) -> Vec<XfsEntry> {
        read_xfs_manifest(&self.manifest)
    }

    /// The manifest as a map from path.
    pub fn manifest_map(&self) -> BTreeMap<Vec<u8>, XfsEntry> {
        self.manifest()
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect()
    }

    /// The extended attributes, sorted by path then name.
    pub fn xattrs(&self) -> Vec<XfsXattr> {
        read_xfs_xattrs(&self.xattrs)
    }
}

fn tsv_lines(path: &Path) -> Vec<Vec<Vec<u8>>> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.split(|b| *b == b'\t').map(<[u8]>::to_vec).collect())
        .collect()
}

fn text(f: &[u8]) -> String {
    String::from_utf8_lossy(f).into_owned()
}

fn opt(f: &[u8]) -> Option<&[u8]> {
    (f != b"-").then_some(f)
}

fn num<T: std::str::FromStr>(f: &[u8], what: &str) -> T {
    text(f)
        .parse()
        .unwrap_or_else(|_| panic!("manifest: bad {what} {:?}", text(f)))
}

/// Parse an `IMAGE.manifest.tsv` file.
pub fn read_xfs_manifest(path: &Path) -> Vec<XfsEntry> {
    tsv_lines(path)
        .into_iter()
        .map(|f| {
            assert_eq!(f.len(), 11, "{}: bad line {f:?}", path.display());
            XfsEntry {
                path: f[0].clone(),
                kind: text(&f[1]),
                mode: u32::from_str_radix(&text(&f[2]), 8)
                    .unwrap_or_else(|_| panic!("manifest: bad mode {:?}", text(&f[2]))),
                uid: num(&f[3], "uid"),
                gid: num(&f[4], "gid"),
                size: opt(&f[5]).map(|s| num(s, "size")),
                nlink: num(&f[6], "nlink"),
                sha256: opt(&f[7]).map(text),
                target: opt(&f[8]).map(<[u8]>::to_vec),
                rdev: opt(&f[9]).map(|r| {
                    let r = text(r);
                    let (a, b) = r.split_once(':').unwrap_or_else(|| panic!("bad rdev {r}"));
                    (num(a.as_bytes(), "major"), num(b.as_bytes(), "minor"))
                }),
                host: opt(&f[10]).map(|h| PathBuf::from(text(h))),
            }
        })
        .collect()
}

/// Parse an `IMAGE.xattrs.tsv` file.
pub fn read_xfs_xattrs(path: &Path) -> Vec<XfsXattr> {
    tsv_lines(path)
        .into_iter()
        .map(|f| {
            assert_eq!(f.len(), 7, "{}: bad line {f:?}", path.display());
            XfsXattr {
                path: f[0].clone(),
                name: text(&f[1]),
                ns: text(&f[2]),
                disk_name: f[3].clone(),
                len: num(&f[4], "len"),
                sha256: text(&f[5]),
                value: opt(&f[6]).map(|h| unhex(&text(h))),
            }
        })
        .collect()
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| {
            u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or_else(|_| panic!("bad hex {h}"))
        })
        .collect()
}

// ---- oracles: xfs_repair, xfs_db ------------------------------------------------------------

/// `xfs_repair -n` (with `-o force_geometry` on single-AG filesystems, which have no
/// secondary superblocks to check the geometry against). `Err(output)` when it reports any
/// problem, including a dirty log that would need replaying.
pub fn xfs_repair_check(image: &Path) -> Result<(), String> {
    let Some(repair) = require_tool("xfs_repair") else {
        return Ok(());
    };
    let mut cmd = Command::new(repair);
    cmd.arg("-n");
    if xfs_sb(image).agcount == 1 {
        cmd.args(["-o", "force_geometry"]);
    }
    let o = run(cmd.arg(image));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.success() && !out.contains("metadata changes in a log") {
        Ok(())
    } else {
        Err(format!("exit {}:\n{out}", o.status))
    }
}

/// Panics with xfs_repair's output unless `xfs_repair -n` is clean.
pub fn assert_xfs_repair_clean(image: &Path) {
    if let Err(out) = xfs_repair_check(image) {
        panic!("xfs_repair -n {} is not clean: {out}", image.display());
    }
}

/// Run `xfs_db -r -c CMD...` on `image` and return stdout. xfs_db reports most failing
/// commands on stderr but still exits 0: check the output (or use [`xfs_db_full`]).
/// Returns an empty string when xfs_db is missing outside CI.
pub fn xfs_db(image: &Path, cmds: &[&str]) -> String {
    xfs_db_full(image, cmds).0
}

/// [`xfs_db`] returning (stdout, stderr).
pub fn xfs_db_full(image: &Path, cmds: &[&str]) -> (String, String) {
    let (o, e) = xfs_db_bytes(image, cmds);
    (
        String::from_utf8_lossy(&o).into_owned(),
        String::from_utf8_lossy(&e).into_owned(),
    )
}

fn xfs_db_bytes(image: &Path, cmds: &[&str]) -> (Vec<u8>, Vec<u8>) {
    match xfs_db_try(image, cmds) {
        Ok(out) => out,
        Err(err) => panic!("xfs_db {cmds:?} {} failed: {err}", image.display()),
    }
}

/// Run xfs_db; `Err(stderr)` when it exits non-zero (e.g. `ls -i` of a missing path).
fn xfs_db_try(image: &Path, cmds: &[&str]) -> Result<(Vec<u8>, Vec<u8>), String> {
    if require_tool("xfs_db").is_none() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut cmd = tool("xfs_db");
    // xfs_db prints timestamps with ctime(3), in local time: UTC makes them comparable.
    cmd.env("TZ", "UTC").arg("-r");
    for c in cmds {
        cmd.arg("-c").arg(c);
    }
    let o = run(cmd.arg(image));
    if o.status.success() {
        Ok((o.stdout, o.stderr))
    } else {
        Err(format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// `name = value` lines of an xfs_db `print` into a map.
pub fn xfs_db_fields(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The primary superblock (`sb 0`) as xfs_db prints it.
#[derive(Debug, Clone)]
pub struct XfsSb {
    pub blocksize: u64,
    pub sectsize: u64,
    pub inodesize: u64,
    pub agblocks: u64,
    pub agcount: u64,
    pub dblocks: u64,
    pub rootino: u64,
    /// Directory block size in bytes (blocksize << dirblklog).
    pub dirblksize: u64,
    /// `versionnum & 0xf` == 5.
    pub v5: bool,
    /// xfs_db's `version` line, e.g. "V5,NLINK,DIRV2,...,FTYPE,FINOBT,SPARSE_INODES,REFLINK".
    pub features: String,
    /// Every field `print` shows, by name (numbers as xfs_db prints them).
    pub fields: BTreeMap<String, String>,
}

/// Read `sb 0` with xfs_db. Panics when xfs_db is missing (callers have built a fixture, so
/// it is there). Cached per image path, size and modification time.
pub fn xfs_sb(image: &Path) -> XfsSb {
    type Key = (PathBuf, Option<std::time::SystemTime>, u64);
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<Key, XfsSb>>> = OnceLock::new();
    let meta = fs::metadata(image).ok();
    let key = (
        image.to_path_buf(),
        meta.as_ref().and_then(|m| m.modified().ok()),
        meta.as_ref().map_or(0, fs::Metadata::len),
    );
    let cache = CACHE.get_or_init(Default::default);
    if let Some(sb) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return sb;
    }
    let sb = read_sb(image);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, sb.clone());
    }
    sb
}

fn read_sb(image: &Path) -> XfsSb {
    let out = xfs_db(image, &["sb 0", "print", "version"]);
    let fields = xfs_db_fields(&out);
    let n = |k: &str| -> u64 {
        let v = fields
            .get(k)
            .unwrap_or_else(|| panic!("sb 0 of {}: no {k} in\n{out}", image.display()));
        parse_num(v).unwrap_or_else(|| panic!("sb 0: bad {k} = {v}"))
    };
    let features = out
        .lines()
        .find_map(|l| l.strip_prefix("versionnum ["))
        .and_then(|l| l.split_once("] = "))
        .map(|(_, f)| f.trim().to_owned())
        .unwrap_or_default();
    XfsSb {
        blocksize: n("blocksize"),
        sectsize: n("sectsize"),
        inodesize: n("inodesize"),
        agblocks: n("agblocks"),
        agcount: n("agcount"),
        dblocks: n("dblocks"),
        rootino: n("rootino"),
        dirblksize: n("blocksize") << n("dirblklog"),
        v5: n("versionnum") & 0xf == 5,
        features,
        fields,
    }
}

fn parse_num(v: &str) -> Option<u64> {
    let v = v.split_whitespace().next()?;
    if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()
    } else if v.len() > 1 && v.starts_with('0') {
        u64::from_str_radix(&v[1..], 8).ok()
    } else {
        v.parse().ok()
    }
}

/// What `xfs_db -r -c 'freesp -d'` lists, as `(agno, agbno, len)` in filesystem blocks: the
/// records of the by-block free-space btrees **and** the active AGFL (free list) blocks, one
/// 1-block line each (xfs_db's freesp counts both; the AGFL blocks are the single-block lines
/// at agbno 6, 7, 8, ... of a fresh filesystem). Adjacent records are not merged. Its output
/// is a header `agno agbno len`, one line per record, then a histogram starting with
/// `from to extents blocks pct`. See [`xfs_free_ranges`] for the btrees alone.
pub fn xfs_freesp(image: &Path) -> Vec<(u64, u64, u64)> {
    parse_xfs_freesp(&xfs_db(image, &["freesp -d"]))
}

/// The active AGFL entries of every AG as `(agno, agbno)`: blocks that are in neither the
/// free-space btrees nor any file, held for btree growth (their content is garbage).
pub fn xfs_agfl(image: &Path) -> Vec<(u64, u64)> {
    let sb = xfs_sb(image);
    let mut v = Vec::new();
    for ag in 0..sb.agcount {
        let out = xfs_db(
            image,
            &[
                &format!("agf {ag}"),
                "print flfirst fllast flcount",
                &format!("agfl {ag}"),
                "print bno",
            ],
        );
        let f = xfs_db_fields(&out);
        let n = |k: &str| f.get(k).and_then(|v| parse_num(v)).unwrap_or(0);
        let (first, count) = (n("flfirst"), n("flcount"));
        let slots: BTreeMap<u64, u64> = out
            .lines()
            .filter(|l| l.starts_with("bno["))
            .flat_map(|l| {
                l.split_whitespace()
                    .skip(2)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|e| {
                let (i, b) = e.split_once(':')?;
                Some((i.parse().ok()?, b.parse().ok()?))
            })
            .collect();
        let size = out
            .lines()
            .find_map(|l| l.strip_prefix("bno[0-"))
            .and_then(|l| l.split(']').next())
            .and_then(|m| m.parse::<u64>().ok())
            .map_or(0, |m| m + 1);
        for k in 0..count {
            if size > 0
                && let Some(b) = slots.get(&((first + k) % size))
            {
                v.push((ag, *b));
            }
        }
    }
    v
}

/// Parse the per-record part of `freesp -d` output.
pub fn parse_xfs_freesp(out: &str) -> Vec<(u64, u64, u64)> {
    let mut v = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"from") {
            break; // the histogram
        }
        if let [a, b, c] = f[..]
            && let (Ok(a), Ok(b), Ok(c)) = (a.parse(), b.parse(), c.parse())
        {
            v.push((a, b, c));
        }
    }
    v
}

/// The free space recorded in the free-space btrees, as byte ranges `(offset, len)` from the
/// start of the filesystem (`(agno * agblocks + agbno) * blocksize`), sorted, adjacent
/// records merged. AGFL blocks are not included (see [`xfs_agfl`]); with them, the total
/// is what `freesp` reports.
pub fn xfs_free_ranges(image: &Path) -> Vec<(u64, u64)> {
    let sb = xfs_sb(image);
    let agfl: std::collections::BTreeSet<(u64, u64)> = xfs_agfl(image).into_iter().collect();
    let recs = xfs_freesp(image)
        .into_iter()
        .filter(|(ag, bno, len)| !(*len == 1 && agfl.contains(&(*ag, *bno))));
    merge_ranges(recs.map(|(ag, bno, len)| (ag_byte(&sb, ag, bno), len * sb.blocksize)))
}

/// [`xfs_free_ranges`] plus the AGFL blocks: everything whose content does not matter.
pub fn xfs_free_ranges_with_agfl(image: &Path) -> Vec<(u64, u64)> {
    let sb = xfs_sb(image);
    merge_ranges(
        xfs_freesp(image)
            .into_iter()
            .map(|(ag, bno, len)| (ag_byte(&sb, ag, bno), len * sb.blocksize)),
    )
}

fn merge_ranges(v: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = v.collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (off, len) in v {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == off => last.1 += len,
            _ => out.push((off, len)),
        }
    }
    out
}

/// Byte offset from the start of the filesystem of a filesystem block number as xfs_db
/// prints it in `bmap` output: `(agno/agbno)`.
fn ag_byte(sb: &XfsSb, agno: u64, agbno: u64) -> u64 {
    (agno * sb.agblocks + agbno) * sb.blocksize
}

/// The inode number of `path` (`xfs_db -c 'ls -i PATH'`), `None` when it does not exist.
pub fn xfs_ino(image: &Path, path: &str) -> Option<u64> {
    let (out, _) = xfs_db_try(image, &[&format!("ls -i {path}")]).ok()?;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

/// One directory entry as xfs_db `ls` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsDirent {
    pub name: Vec<u8>,
    pub ino: u64,
    /// xfs_db's word for the file type: directory, regular, symlink, fifo, chardev, blkdev,
    /// socket, or unknown (no ftype feature).
    pub kind: String,
    /// The directory cookie (offset) xfs_db shows.
    pub cookie: u64,
}

/// The entries of directory `path` (including `.` and `..`), from `xfs_db -c 'ls PATH'`.
pub fn xfs_ls(image: &Path, path: &str) -> Vec<XfsDirent> {
    let (out, _) = xfs_db_bytes(image, &[&format!("ls {path}")]);
    let mut v = Vec::new();
    for line in out.split(|b| *b == b'\n') {
        // cookie ino type hash namelen name (good)
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            let s = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
            rest = &rest[s..];
            let e = rest.iter().position(|b| *b == b' ').unwrap_or(rest.len());
            fields.push(String::from_utf8_lossy(&rest[..e]).into_owned());
            rest = &rest[e..];
        }
        let (Ok(cookie), Ok(ino), Ok(namelen)) = (
            fields[0].parse::<u64>(),
            fields[1].parse::<u64>(),
            fields[4].parse::<usize>(),
        ) else {
            continue;
        };
        let rest = &rest[1.min(rest.len())..];
        if rest.len() < namelen {
            continue;
        }
        v.push(XfsDirent {
            name: rest[..namelen].to_vec(),
            ino,
            kind: fields[2].clone(),
            cookie,
        });
    }
    v
}

/// What xfs_db says about an inode's core (`inode N`, `print core`).
#[derive(Debug, Clone)]
pub struct XfsStat {
    pub ino: u64,
    /// Full mode, file type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub nblocks: u64,
    /// Data fork format: 0 dev, 1 local, 2 extents, 3 btree.
    pub format: u32,
    pub nextents: u64,
    /// Attribute fork format (meaningful when `forkoff` != 0).
    pub aformat: u32,
    pub naextents: u64,
    /// Attribute fork offset in 8-byte units; 0 = no attribute fork.
    pub forkoff: u32,
    /// All `core.*` fields by name (timestamps as xfs_db prints them).
    pub fields: BTreeMap<String, String>,
}

/// `stat`-like information on `path` (or an inode number given as "#123") from xfs_db.
/// `None` when the path does not exist.
pub fn xfs_stat(image: &Path, path: &str) -> Option<XfsStat> {
    inode_info(image, path, &[]).map(|(st, _)| st)
}

/// One xfs_db run: go to `path` (or "#INO"), print the inode core, then run `extra`.
/// Returns the stat and the whole output (the extra commands' output follows the core).
fn inode_info(image: &Path, path: &str, extra: &[&str]) -> Option<(XfsStat, String)> {
    let go = match path.strip_prefix('#') {
        Some(n) => format!("inode {}", n.parse::<u64>().ok()?),
        None => format!("path {path}"),
    };
    let mut cmds = vec![go.as_str(), "inode", "print core"];
    cmds.extend_from_slice(extra);
    let (out, _) = xfs_db_try(image, &cmds).ok()?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let rest = out.split_once("current inode number is ")?.1;
    let (ino, rest) = rest.split_once('\n')?;
    let st = stat_from_fields(ino.trim().parse().ok()?, xfs_db_fields(rest))?;
    Some((st, out))
}

fn stat_from_fields(ino: u64, fields: BTreeMap<String, String>) -> Option<XfsStat> {
    let n = |k: &str| fields.get(k).and_then(|v| parse_num(v));
    let small = |k: &str| n(k).and_then(|v| u32::try_from(v).ok());
    Some(XfsStat {
        ino,
        mode: small("core.mode")?,
        uid: small("core.uid")?,
        gid: small("core.gid")?,
        size: n("core.size")?,
        nlink: small("core.nlinkv2").or_else(|| small("core.onlink"))?,
        nblocks: n("core.nblocks")?,
        format: small("core.format")?,
        nextents: n("core.nextents").or_else(|| n("core.big_nextents"))?,
        aformat: small("core.aformat")?,
        naextents: n("core.naextents").or_else(|| n("core.big_anextents"))?,
        forkoff: small("core.forkoff")?,
        fields,
    })
}

/// [`xfs_stat`] of many paths (absolute, as bytes) in one xfs_db run, in order. Panics when
/// xfs_db complains about any of them (a missing path, for instance).
pub fn xfs_stat_many(image: &Path, paths: &[&[u8]]) -> Vec<XfsStat> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    if require_tool("xfs_db").is_none() || paths.is_empty() {
        return Vec::new();
    }
    let mut cmd = tool("xfs_db");
    // xfs_db prints timestamps with ctime(3), in local time: UTC makes them comparable.
    cmd.env("TZ", "UTC").arg("-r");
    for p in paths {
        let mut c = b"path ".to_vec();
        c.extend_from_slice(p);
        cmd.arg("-c").arg(OsStr::from_bytes(&c));
        cmd.args(["-c", "inode", "-c", "print core"]);
    }
    let o = run(cmd.arg(image));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "xfs_db on {} ({} paths): {err}",
        image.display(),
        paths.len()
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let mut stats = Vec::with_capacity(paths.len());
    for chunk in out.split("current inode number is ").skip(1) {
        let (ino, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let ino = ino
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad inode number {ino}"));
        let st = stat_from_fields(ino, xfs_db_fields(rest))
            .unwrap_or_else(|| panic!("inode {ino}: incomplete core in\n{rest}"));
        stats.push(st);
    }
    assert_eq!(
        stats.len(),
        paths.len(),
        "xfs_db output on {}",
        image.display()
    );
    stats
}

/// One extent as xfs_db `bmap` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XfsExtent {
    /// Offset in the file, in filesystem blocks.
    pub file_block: u64,
    /// Byte offset of the first block from the start of the filesystem.
    pub byte: u64,
    /// Length in filesystem blocks.
    pub blocks: u64,
    /// Unwritten (preallocated) extent: reads as zeros.
    pub unwritten: bool,
}

/// The data (`attr == false`) or attribute fork extents of `path`, from `xfs_db bmap`.
pub fn xfs_bmap(image: &Path, path: &str, attr: bool) -> Vec<XfsExtent> {
    // Plain `bmap` lists both forks; `-d` only the data fork.
    let cmd = if attr { "bmap -a" } else { "bmap -d" };
    inode_info(image, path, &[cmd])
        .map_or_else(Vec::new, |(_, out)| parse_bmap(&xfs_sb(image), &out, attr))
}

/// Lines like "data offset 0 startblock 6616 (1/2520) count 8 flag 0" of the data fork, or
/// the "attr ..." lines of the attribute fork (`bmap` without `-a` prints both).
fn parse_bmap(sb: &XfsSb, out: &str, attr: bool) -> Vec<XfsExtent> {
    let fork = if attr { "attr" } else { "data" };
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[0] != fork || f[1] != "offset" || f[3] != "startblock" {
                return None;
            }
            let (ag, bno) = f[5]
                .trim_matches(|c| c == '(' || c == ')')
                .split_once('/')?;
            Some(XfsExtent {
                file_block: f[2].parse().ok()?,
                byte: ag_byte(sb, ag.parse().ok()?, bno.parse().ok()?),
                blocks: f[7].parse().ok()?,
                unwritten: f[9] == "1",
            })
        })
        .collect()
}

fn read_at(image: &Path, byte: u64, buf: &mut [u8]) {
    let mut f = fs::File::open(image).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    f.seek(SeekFrom::Start(byte))
        .and_then(|_| f.read_exact(buf))
        .unwrap_or_else(|e| panic!("{} at {byte}: {e}", image.display()));
}

/// The content of regular file `path`, read from the image through the extent map xfs_db
/// reports (holes and unwritten extents read as zeros), cut at the inode size. `None` when
/// the path does not exist or is not a regular file.
pub fn xfs_cat(image: &Path, path: &str) -> Option<Vec<u8>> {
    let (st, out) = inode_info(image, path, &["bmap -d"])?;
    if st.mode & 0o170_000 != 0o100_000 {
        return None;
    }
    let sb = xfs_sb(image);
    let size = usize::try_from(st.size).ok()?;
    let mut data = vec![0u8; size];
    for ext in parse_bmap(&sb, &out, false) {
        let Ok(start) = usize::try_from(ext.file_block * sb.blocksize) else {
            continue;
        };
        if ext.unwritten || start >= size {
            continue;
        }
        let len = usize::try_from(ext.blocks * sb.blocksize)
            .ok()?
            .min(size - start);
        read_at(image, ext.byte, &mut data[start..start + len]);
    }
    Some(data)
}

/// The target of symlink `path`: from the inode (local) or from its blocks (remote; on v5
/// each extent starts with a 56-byte header, as the kernel writes it). `None` when it is not
/// a symlink.
pub fn xfs_readlink(image: &Path, path: &str) -> Option<Vec<u8>> {
    let sb = xfs_sb(image);
    let field = if sb.v5 {
        "print u3.symlink"
    } else {
        "print u.symlink"
    };
    let (st, out) = inode_info(image, path, &["bmap -d"])?;
    if st.mode & 0o170_000 != 0o120_000 {
        return None;
    }
    let size = usize::try_from(st.size).ok()?;
    if st.format == 1 {
        let (out, _) = xfs_db_bytes(image, &[&format!("path {path}"), field]);
        let start = out.iter().position(|b| *b == b'"')? + 1;
        let end = out.iter().rposition(|b| *b == b'"')?;
        return Some(xfs_db_unescape(&out[start..end]));
    }
    let mut target = Vec::with_capacity(size);
    for ext in parse_bmap(&sb, &out, false) {
        let mut buf = vec![0u8; usize::try_from(ext.blocks * sb.blocksize).ok()?];
        read_at(image, ext.byte, &mut buf);
        let body = if sb.v5 { &buf[56..] } else { &buf[..] };
        let want = (size - target.len()).min(body.len());
        target.extend_from_slice(&body[..want]);
    }
    Some(target)
}

/// Undo xfs_db's C-style escapes in a printed string (`\ooo` octal, `\n`, `\\`, `\"`...).
pub fn xfs_db_unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 == s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let c = s[i + 1];
        if c.is_ascii_digit() {
            let mut v = 0u32;
            let mut j = i + 1;
            while j < s.len() && j < i + 4 && (b'0'..=b'7').contains(&s[j]) {
                v = v * 8 + u32::from(s[j] - b'0');
                j += 1;
            }
            out.push(u8::try_from(v & 0xff).unwrap_or(0));
            i = j;
            continue;
        }
        // xfs_db writes the control bytes 7..=13 as \a..\g (so \c is a tab, \d a newline).
        out.push(match c {
            b'a'..=b'g' => c - b'a' + 7,
            other => other,
        });
        i += 2;
    }
    out
}

/// One extended attribute as xfs_db prints it (shortform list or leaf blocks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsDbAttr {
    /// "user", "trusted" (root) or "secure".
    pub ns: String,
    pub name: Vec<u8>,
    /// The value when stored locally (in the inode or leaf block); `None` when it is in
    /// remote value blocks.
    pub value: Option<Vec<u8>>,
    pub value_len: usize,
    /// For a remote value: its first block in the attribute fork (`valueblk`).
    pub value_block: Option<u64>,
}

/// The extended attributes of `path` as xfs_db shows them: the shortform list in the inode,
/// or the entries of every leaf block of the attribute fork (node and btree forms
/// included). Sorted by (ns, name).
pub fn xfs_attrs(image: &Path, path: &str) -> Vec<XfsDbAttr> {
    let Some((st, out)) = inode_info(image, path, &["print a.sfattr", "bmap -a"]) else {
        return Vec::new();
    };
    if st.forkoff == 0 {
        return Vec::new();
    }
    let mut attrs = Vec::new();
    if st.aformat == 1 {
        let (out, _) = xfs_db_bytes(image, &[&go_to(path), "print a.sfattr"]);
        let mut cur: BTreeMap<usize, RawAttr> = BTreeMap::new();
        for line in out.split(|b| *b == b'\n') {
            let Some((k, v)) = split_field(line) else {
                continue;
            };
            let Some(rest) = k.strip_prefix("a.sfattr.list[") else {
                continue;
            };
            let Some((idx, field)) = rest.split_once("].") else {
                continue;
            };
            let Ok(idx) = idx.parse::<usize>() else {
                continue;
            };
            let e = cur.entry(idx).or_default();
            match field {
                "name" => e.name = quoted(v),
                "value" => e.value = Some(quoted(v)),
                "root" => e.root = v == b"1",
                "secure" => e.secure = v == b"1",
                "valuelen" => e.len = String::from_utf8_lossy(v).parse().unwrap_or(0),
                _ => {}
            }
        }
        attrs.extend(cur.into_values().map(RawAttr::finish));
    } else {
        // Every attribute block in one run: `ablock` works from the inode, so go back to it
        // each time; `inode` (no argument) prints a separator.
        let mut cmds = Vec::new();
        for ext in parse_bmap(&xfs_sb(image), &out, true) {
            for b in ext.file_block..ext.file_block + ext.blocks {
                cmds.push(format!("inode {}", st.ino));
                cmds.push(format!("ablock {b}"));
                cmds.push("print".to_owned());
                cmds.push("inode".to_owned());
            }
        }
        let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
        let (out, _) = xfs_db_bytes(image, &cmds);
        let sep = b"current inode number is ";
        let mut rest: &[u8] = &out;
        while !rest.is_empty() {
            let end = rest
                .windows(sep.len())
                .position(|w| w == sep)
                .unwrap_or(rest.len());
            let block = &rest[..end];
            let txt = String::from_utf8_lossy(block);
            // Leaf blocks only (not node blocks or remote value blocks).
            if txt.contains("hdr.info.hdr.magic = 0x3bee")
                || txt.contains("hdr.info.magic = 0xfbee")
            {
                attrs.extend(parse_leaf(block));
            }
            rest = &rest[end..];
            rest = match rest.iter().position(|b| *b == b'\n') {
                Some(nl) => &rest[nl + 1..],
                None => &[],
            };
        }
    }
    attrs.sort_by(|a, b| (&a.ns, &a.name).cmp(&(&b.ns, &b.name)));
    attrs
}

/// Fields of one attribute collected from xfs_db's print lines.
#[derive(Default)]
struct RawAttr {
    name: Vec<u8>,
    value: Option<Vec<u8>>,
    root: bool,
    secure: bool,
    len: usize,
    blk: Option<u64>,
}

impl RawAttr {
    fn finish(self) -> XfsDbAttr {
        XfsDbAttr {
            ns: ns_name(self.root, self.secure),
            name: self.name,
            value: self.value.map(|v| v[..self.len.min(v.len())].to_vec()),
            value_len: self.len,
            value_block: self.blk,
        }
    }
}

fn ns_name(root: bool, secure: bool) -> String {
    match (root, secure) {
        (true, _) => "trusted",
        (_, true) => "secure",
        _ => "user",
    }
    .to_owned()
}

fn split_field(line: &[u8]) -> Option<(&str, &[u8])> {
    let p = line.windows(3).position(|w| w == b" = ")?;
    Some((std::str::from_utf8(&line[..p]).ok()?.trim(), &line[p + 3..]))
}

fn quoted(v: &[u8]) -> Vec<u8> {
    let v = v.strip_prefix(b"\"").unwrap_or(v);
    let v = v.strip_suffix(b"\"").unwrap_or(v);
    xfs_db_unescape(v)
}

/// Entries of one attribute leaf block as printed by xfs_db: `entries[...]` lines
/// `i:[hashval,nameidx,incomplete,root,secure,local]` and `nvlist[i].name/value/valuelen`.
fn parse_leaf(out: &[u8]) -> Vec<XfsDbAttr> {
    let mut flags: BTreeMap<usize, (bool, bool)> = BTreeMap::new();
    let mut nv: BTreeMap<usize, RawAttr> = BTreeMap::new();
    let mut in_entries = false;
    for line in out.split(|b| *b == b'\n') {
        let l = String::from_utf8_lossy(line);
        if l.starts_with("entries[") {
            in_entries = true;
            continue;
        }
        if l.starts_with("nvlist[") {
            in_entries = false;
        }
        if in_entries {
            for item in l.split_whitespace() {
                let Some((i, rest)) = item.split_once(":[") else {
                    continue;
                };
                let f: Vec<&str> = rest.trim_end_matches(']').split(',').collect();
                if let (Ok(i), [_, _, _, root, secure, _]) = (i.parse::<usize>(), &f[..]) {
                    flags.insert(i, (*root == "1", *secure == "1"));
                }
            }
            continue;
        }
        let Some((k, v)) = split_field(line) else {
            continue;
        };
        let Some(rest) = k.strip_prefix("nvlist[") else {
            continue;
        };
        let Some((idx, field)) = rest.split_once("].") else {
            continue;
        };
        let Ok(idx) = idx.parse::<usize>() else {
            continue;
        };
        let e = nv.entry(idx).or_default();
        match field {
            "name" => e.name = quoted(v),
            "value" => e.value = Some(quoted(v)),
            "valuelen" => e.len = String::from_utf8_lossy(v).parse().unwrap_or(0),
            "valueblk" => e.blk = parse_num(&String::from_utf8_lossy(v)),
            _ => {}
        }
    }
    nv.into_iter()
        .map(|(i, mut a)| {
            (a.root, a.secure) = flags.get(&i).copied().unwrap_or((false, false));
            a.finish()
        })
        .collect()
}

/// The directory form of `path`, as the engine must recognise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfsDirForm {
    /// Entries in the inode (data fork format local).
    Shortform,
    /// One directory block holding entries and their hash index.
    Block,
    /// Data blocks plus a single leaf block.
    Leaf,
    /// Data blocks, a da-btree of leaf blocks and free-index blocks.
    Node,
}

/// Which form directory `path` is in (from the magic numbers of its blocks), and whether
/// its data fork is a B+tree (`core.format` btree) rather than an extent list.
pub fn xfs_dir_form(image: &Path, path: &str) -> Option<(XfsDirForm, bool)> {
    let sb = xfs_sb(image);
    // The leaf/node blocks start at 32 GiB into the directory (XFS_DIR2_LEAF_OFFSET).
    let leaf = format!("dblock {}", (32u64 << 30) / sb.blocksize);
    let (st, out) = inode_info(image, path, &["dblock 0", "print", &leaf, "print"])
        .or_else(|| inode_info(image, path, &[]))?;
    if st.mode & 0o170_000 != 0o040_000 {
        return None;
    }
    if st.format == 1 {
        return Some((XfsDirForm::Shortform, false));
    }
    let btree = st.format == 3;
    let magics: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with("core."))
        .filter_map(|l| l.split_once("magic = ").map(|(_, m)| m.trim().to_owned()))
        .collect();
    let has = |m: &str| magics.iter().any(|x| x == m);
    let form = if has("0x58444233") || has("0x58443242") {
        XfsDirForm::Block // XDB3 / XD2B
    } else if has("0x3df1") || has("0xd2f1") {
        XfsDirForm::Leaf // LEAF1 (v5 / v4)
    } else if has("0x3ebe") || has("0xfebe") || has("0x3dff") || has("0xd2ff") {
        // A da-btree node (v5 / v4), or a lone LEAFN block at the leaf offset: node form
        // with one leaf block, as the kernel's leaf-to-node conversion leaves it.
        XfsDirForm::Node
    } else {
        panic!(
            "{path} in {}: no directory form in magics {magics:?}",
            image.display()
        );
    };
    Some((form, btree))
}

/// The attribute fork form of `path`: `None` without an attribute fork, otherwise
/// ("shortform" | "leaf" | "node", data in btree format).
pub fn xfs_attr_form(image: &Path, path: &str) -> Option<(&'static str, bool)> {
    let st = xfs_stat(image, path)?;
    if st.forkoff == 0 {
        return None;
    }
    if st.aformat == 1 {
        return Some(("shortform", false));
    }
    let out = xfs_db(image, &[&format!("path {path}"), "ablock 0", "print"]);
    let form = if out.contains("magic = 0x3ebe") || out.contains("magic = 0xfebe") {
        "node"
    } else {
        "leaf"
    };
    Some((form, st.aformat == 3))
}

// ---------------------------------------------------------------------------------------
// Whole-tree oracles for the write-side tests: few xfs_db runs for many inodes.

/// The xfs_db command that makes `path` (or `#INO`) the current inode.
fn go_to(path: &str) -> String {
    match path.strip_prefix('#') {
        Some(n) => format!("inode {n}"),
        None => format!("path {path}"),
    }
}

/// Split xfs_db output at `@@MARK N` lines (printed by `echo @@MARK N`) into sections keyed
/// by N, in order.
fn sections<'a>(out: &'a [u8], mark: &str) -> Vec<(u64, &'a [u8])> {
    let needle = format!("@@{mark} ");
    let needle = needle.as_bytes();
    let mut v = Vec::new();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + needle.len() <= out.len() {
        if (i == 0 || out[i - 1] == b'\n') && out[i..].starts_with(needle) {
            starts.push(i);
        }
        i += 1;
    }
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(out.len());
        let line_end = out[s..end]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(end, |p| s + p);
        let key = String::from_utf8_lossy(&out[s + needle.len()..line_end])
            .trim()
            .parse()
            .unwrap_or(u64::MAX);
        v.push((key, &out[(line_end + 1).min(end)..end]));
    }
    v
}

/// One xfs_db run of many commands (no stderr allowed: a complaint is a failed oracle).
fn xfs_db_batch(image: &Path, cmds: &[String]) -> Vec<u8> {
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let (out, err) = xfs_db_bytes(image, &refs);
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.trim().is_empty(),
        "xfs_db on {} ({} commands) complained: {err}",
        image.display(),
        cmds.len()
    );
    out
}

/// One entry of the whole tree as xfs_db lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsTreeEntry {
    /// Absolute path ("/a/b"); the root itself is not listed.
    pub path: Vec<u8>,
    pub ino: u64,
    /// The parent directory's inode.
    pub parent: u64,
    /// xfs_db's word for the type in the directory entry (see [`XfsDirent::kind`]).
    pub kind: String,
}

/// Every path of the filesystem, from the root down, with `xfs_db ls`: one xfs_db run per
/// directory depth (directories are visited by inode number, so names need no quoting).
/// Directories are recognised by their entry type, so this needs the ftype feature (every
/// v5 filesystem has it). Panics on a directory cycle deeper than 4096 levels.
pub fn xfs_walk(image: &Path) -> Vec<XfsTreeEntry> {
    let root = xfs_sb(image).rootino;
    let mut all = Vec::new();
    let mut level: Vec<(u64, Vec<u8>)> = vec![(root, Vec::new())];
    for _ in 0..4096 {
        if level.is_empty() {
            return all;
        }
        let mut cmds = Vec::new();
        for (ino, _) in &level {
            cmds.push(format!("echo @@DIR {ino}"));
            cmds.push(format!("inode {ino}"));
            cmds.push("ls".to_owned());
        }
        let out = xfs_db_batch(image, &cmds);
        let secs = sections(&out, "DIR");
        assert_eq!(
            secs.len(),
            level.len(),
            "xfs_db ls output of {}",
            image.display()
        );
        let mut next = Vec::new();
        for ((dir, dpath), (_, body)) in level.iter().zip(secs) {
            for e in parse_ls(body) {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let mut p = dpath.clone();
                p.push(b'/');
                p.extend_from_slice(&e.name);
                if e.kind == "directory" {
                    next.push((e.ino, p.clone()));
                }
                all.push(XfsTreeEntry {
                    path: p,
                    ino: e.ino,
                    parent: *dir,
                    kind: e.kind,
                });
            }
        }
        level = next;
    }
    panic!(
        "{}: directory tree deeper than 4096 levels",
        image.display()
    );
}

/// Parse `ls` output lines "cookie ino type hash namelen name (good)".
fn parse_ls(out: &[u8]) -> Vec<XfsDirent> {
    let mut v = Vec::new();
    for line in out.split(|b| *b == b'\n') {
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            let s = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
            rest = &rest[s..];
            let e = rest.iter().position(|b| *b == b' ').unwrap_or(rest.len());
            fields.push(String::from_utf8_lossy(&rest[..e]).into_owned());
            rest = &rest[e..];
        }
        let (Ok(cookie), Ok(ino), Ok(namelen)) = (
            fields[0].parse::<u64>(),
            fields[1].parse::<u64>(),
            fields[4].parse::<usize>(),
        ) else {
            continue;
        };
        let rest = &rest[1.min(rest.len())..];
        if rest.len() < namelen {
            continue;
        }
        v.push(XfsDirent {
            name: rest[..namelen].to_vec(),
            ino,
            kind: fields[2].clone(),
            cookie,
        });
    }
    v
}

/// [`xfs_stat`] of many inodes in one xfs_db run, keyed by inode number.
pub fn xfs_stat_inos(image: &Path, inos: &[u64]) -> BTreeMap<u64, XfsStat> {
    let mut cmds = Vec::new();
    for ino in inos {
        cmds.push(format!("echo @@INO {ino}"));
        cmds.push(format!("inode {ino}"));
        cmds.push("print core".to_owned());
    }
    let out = xfs_db_batch(image, &cmds);
    let mut m = BTreeMap::new();
    for (ino, body) in sections(&out, "INO") {
        let st = stat_from_fields(ino, xfs_db_fields(&String::from_utf8_lossy(body)))
            .unwrap_or_else(|| panic!("inode {ino}: incomplete core"));
        m.insert(ino, st);
    }
    assert_eq!(
        m.len(),
        inos.len(),
        "xfs_db print core of {}",
        image.display()
    );
    m
}

/// The contents of many regular files and symlinks (by inode number) in one xfs_db run:
/// files through their extent map (`bmap`; holes and unwritten extents read as zeros), cut
/// at the inode size; symlink targets from the inode (local) or their blocks (remote, a
/// 56-byte header per extent on v5, as the kernel writes it). Keyed by inode number.
pub fn xfs_contents(image: &Path, inos: &[u64]) -> BTreeMap<u64, Vec<u8>> {
    let sb = xfs_sb(image);
    let link_field = if sb.v5 {
        "print u3.symlink"
    } else {
        "print u.symlink"
    };
    let mut cmds = Vec::new();
    for ino in inos {
        cmds.push(format!("echo @@INO {ino}"));
        cmds.push(format!("inode {ino}"));
        cmds.push("print core.mode core.size core.format".to_owned());
        cmds.push("bmap".to_owned());
    }
    let out = xfs_db_batch(image, &cmds);
    let mut local_links = Vec::new();
    let mut m = BTreeMap::new();
    for (ino, body) in sections(&out, "INO") {
        let txt = String::from_utf8_lossy(body);
        let f = xfs_db_fields(&txt);
        let num = |k: &str| {
            f.get(k)
                .and_then(|v| parse_num(v))
                .unwrap_or_else(|| panic!("inode {ino}: no {k} in {txt}"))
        };
        let (mode, size, format) = (num("core.mode"), num("core.size"), num("core.format"));
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let exts = parse_bmap(&sb, &txt, false);
        match mode & 0o170_000 {
            0o100_000 => {
                assert!(size < 1 << 31, "inode {ino}: size {size} too big to read");
                let mut data = vec![0u8; size];
                for ext in exts {
                    let start = (ext.file_block * sb.blocksize) as usize;
                    if ext.unwritten || start >= size {
                        continue;
                    }
                    let len = ((ext.blocks * sb.blocksize) as usize).min(size - start);
                    read_at(image, ext.byte, &mut data[start..start + len]);
                }
                m.insert(ino, data);
            }
            0o120_000 if format == 1 => local_links.push(ino),
            0o120_000 => {
                // One header per extent (the kernel reads an extent as one buffer).
                let mut target = Vec::with_capacity(size);
                for ext in exts {
                    let mut buf = vec![0u8; (ext.blocks * sb.blocksize) as usize];
                    read_at(image, ext.byte, &mut buf);
                    let body = if sb.v5 { &buf[56..] } else { &buf[..] };
                    let want = (size - target.len()).min(body.len());
                    target.extend_from_slice(&body[..want]);
                }
                m.insert(ino, target);
            }
            _ => panic!("inode {ino}: mode {mode:o} is neither a file nor a symlink"),
        }
    }
    if !local_links.is_empty() {
        let mut cmds = Vec::new();
        for ino in &local_links {
            cmds.push(format!("echo @@INO {ino}"));
            cmds.push(format!("inode {ino}"));
            cmds.push(link_field.to_owned());
        }
        let out = xfs_db_batch(image, &cmds);
        for (ino, body) in sections(&out, "INO") {
            let start = body.iter().position(|b| *b == b'"').map_or(0, |p| p + 1);
            let end = body.iter().rposition(|b| *b == b'"').unwrap_or(body.len());
            m.insert(ino, xfs_db_unescape(&body[start..end.max(start)]));
        }
    }
    assert_eq!(m.len(), inos.len(), "contents of {}", image.display());
    m
}

/// [`xfs_attrs`] with the values of remote attributes read from their blocks (a 56-byte
/// header per block on v5), so that every returned attribute has its value.
pub fn xfs_attrs_full(image: &Path, path: &str) -> Vec<XfsDbAttr> {
    let mut attrs = xfs_attrs(image, path);
    if attrs.iter().all(|a| a.value.is_some()) {
        return attrs;
    }
    let sb = xfs_sb(image);
    let Some((_, out)) = inode_info(image, path, &["bmap -a"]) else {
        return attrs;
    };
    let exts = parse_bmap(&sb, &out, true);
    let per_block = if sb.v5 {
        sb.blocksize - 56
    } else {
        sb.blocksize
    } as usize;
    let block_byte = |fb: u64| -> Option<u64> {
        exts.iter()
            .find(|e| (e.file_block..e.file_block + e.blocks).contains(&fb))
            .map(|e| e.byte + (fb - e.file_block) * sb.blocksize)
    };
    for a in &mut attrs {
        let (None, Some(first)) = (&a.value, a.value_block) else {
            continue;
        };
        let mut v = Vec::with_capacity(a.value_len);
        let mut fb = first;
        while v.len() < a.value_len {
            let Some(byte) = block_byte(fb) else {
                panic!(
                    "{path}: remote value of {:?} at attribute block {fb} is not mapped",
                    String::from_utf8_lossy(&a.name)
                );
            };
            let mut buf = vec![0u8; sb.blocksize as usize];
            read_at(image, byte, &mut buf);
            let body = if sb.v5 { &buf[56..] } else { &buf[..] };
            let want = (a.value_len - v.len()).min(per_block);
            v.extend_from_slice(&body[..want]);
            fb += 1;
        }
        a.value = Some(v);
    }
    attrs
}

/// The space and inode counters: the superblock's and every AG's, as xfs_db prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfsCounters {
    pub sb_fdblocks: u64,
    pub sb_icount: u64,
    pub sb_ifree: u64,
    /// Per AG: (agf freeblks, agf flcount, agf btreeblks, agi count, agi freecount).
    pub ags: Vec<(u64, u64, u64, u64, u64)>,
}

/// Read [`XfsCounters`] in one xfs_db run.
pub fn xfs_counters(image: &Path) -> XfsCounters {
    let sb = xfs_sb(image);
    let mut cmds = vec![
        "echo @@AG 999999".to_owned(),
        "sb 0".to_owned(),
        "print fdblocks icount ifree".to_owned(),
    ];
    for ag in 0..sb.agcount {
        cmds.push(format!("echo @@AG {ag}"));
        cmds.push(format!("agf {ag}"));
        cmds.push("print freeblks flcount btreeblks".to_owned());
        cmds.push(format!("agi {ag}"));
        cmds.push("print count freecount".to_owned());
    }
    let out = xfs_db_batch(image, &cmds);
    let mut c = XfsCounters {
        sb_fdblocks: 0,
        sb_icount: 0,
        sb_ifree: 0,
        ags: Vec::new(),
    };
    for (key, body) in sections(&out, "AG") {
        let f = xfs_db_fields(&String::from_utf8_lossy(body));
        // btreeblks is absent without lazy-count.
        let n = |k: &str| f.get(k).and_then(|v| parse_num(v)).unwrap_or(0);
        if key == 999_999 {
            (c.sb_fdblocks, c.sb_icount, c.sb_ifree) = (n("fdblocks"), n("icount"), n("ifree"));
        } else {
            c.ags.push((
                n("freeblks"),
                n("flcount"),
                n("btreeblks"),
                n("count"),
                n("freecount"),
            ));
        }
    }
    c
}

/// A read-only loop mount by the kernel (`mount -o ro,loop,nouuid`: the log is not
/// replayed because it must be clean; `nouuid` because every fixture has the same UUID);
/// unmounted on drop.
pub struct XfsMount {
    dir: tempfile::TempDir,
}

impl XfsMount {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Mount `image` read-only with the kernel. `None` (with a message) when this process cannot
/// mount (not root, no loop devices, no XFS in the kernel) outside CI; in CI that is a
/// failure. A mount that fails for any other reason (the kernel rejects the filesystem)
/// panics with the kernel's complaint.
pub fn xfs_mount_ro(image: &Path) -> Option<XfsMount> {
    mount_ro_as(image, "xfs")
}

/// [`xfs_mount_ro`] for any filesystem type the kernel knows (`ext4`: plain `ro,loop`).
pub fn mount_ro_as(image: &Path, fstype: &str) -> Option<XfsMount> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || require_tool("mount").is_none() {
        assert!(
            !crate::in_ci(),
            "the kernel's view of XFS needs root (mount -o loop) in CI"
        );
        eprintln!("skipping the kernel check: mounting needs root");
        return None;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let opts = if fstype == "xfs" {
        "ro,loop,nouuid"
    } else {
        "ro,loop"
    };
    let o = run(Command::new("mount")
        .args(["-t", fstype, "-o", opts])
        .arg(image)
        .arg(dir.path()));
    if o.status.success() {
        return Some(XfsMount { dir });
    }
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let dmesg = Command::new("dmesg")
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let lines: Vec<&str> = s
                .lines()
                .filter(|l| l.contains("XFS") || l.contains("EXT4"))
                .collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        })
        .unwrap_or_default();
    // No loop device or no permission (a container): an environment limit, not a verdict.
    let env_limit = err.contains("failed to setup loop device")
        || err.contains("permission denied")
        || err.contains("only root")
        || err.contains("unknown filesystem type");
    if env_limit && !crate::in_ci() {
        eprintln!("skipping the kernel check: mount failed: {err}");
        return None;
    }
    panic!(
        "the kernel refuses to mount {} read-only: {err}\nkernel log:\n{dmesg}",
        image.display()
    );
}
