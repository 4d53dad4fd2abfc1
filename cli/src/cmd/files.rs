//! File verbs on the guest tree: `ls`, `cat`, `stat`, `rm`, `write`, `mkdir`, `symlink`,
//! `chmod`. Paths are guest paths: symlinks resolve inside the guest root, never on the host.
//!
//! Edits are staged in a copy-on-write overlay and written to the image only when the whole
//! command succeeded, so a failing command leaves the image as it was. `--dry-run` stages,
//! reports, and throws the changes away.

use anyhow::{Context, Result, bail};
use imgscrub::fs::filesystem::{FileType, Meta, NewAttr, SetAttr, Timestamp};
use imgscrub::fs::{FsError, resolve, resolve_entry};
use imgscrub::{Format, Guest, Image, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Where to act: the image and, optionally, which partition.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The disk image (raw or qcow2).
    pub image: PathBuf,
    /// Act on this partition (as Linux numbers them; 0 = a disk without partition table)
    /// instead of the root filesystem found automatically.
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Do not detect the format: read the image as `raw`, `qcow2`, `vmdk` or `vhd`.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
}

/// Options shared by the verbs that modify the image.
#[derive(clap::Args, Debug)]
pub struct EditOpts {
    /// Show what would change and leave the image untouched.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

/// Open the image for a verb: `edit` verbs open the filesystem for editing; the image file
/// is opened writable only when `edit` and not `dry_run` (a dry run edits a staging overlay).
fn open(t: &Target, edit: bool, dry_run: bool) -> Result<Image> {
    super::open_image(
        &t.image,
        OpenOptions {
            write: edit && !dry_run,
            format: t.format,
        },
    )
}

fn guest<'a>(img: &'a Image, t: &Target, edit: bool) -> Result<Guest<'a>> {
    let g = img
        .guest(t.partition, edit)
        .with_context(|| format!("{}", t.image.display()))?;
    for w in g.warnings() {
        super::warn_later(w.clone());
    }
    Ok(g)
}

/// Write the staged changes to the image (or, for a dry run, only count them).
fn finish(g: Guest<'_>, dry_run: bool) -> Result<u64> {
    Ok(if dry_run { g.discard()? } else { g.commit()? })
}

fn guest_path(p: &str) -> Result<&[u8]> {
    if !p.starts_with('/') {
        return Err(super::usage(format!(
            "guest paths are absolute: {p:?} should start with '/'"
        )));
    }
    Ok(p.as_bytes())
}

fn type_char(t: FileType) -> char {
    match t {
        FileType::Regular => '-',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
    }
}

/// `drwxr-xr-x`-style mode string.
fn mode_string(m: &Meta) -> String {
    let p = m.perm;
    let mut s = String::with_capacity(10);
    s.push(type_char(m.file_type));
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let on = p & bit != 0;
        let special = match i {
            2 => (p & 0o4000 != 0).then_some(if on { 's' } else { 'S' }),
            5 => (p & 0o2000 != 0).then_some(if on { 's' } else { 'S' }),
            8 => (p & 0o1000 != 0).then_some(if on { 't' } else { 'T' }),
            _ => None,
        };
        s.push(special.unwrap_or(if on { *c } else { '-' }));
    }
    s
}

/// UTC `YYYY-MM-DD HH:MM:SS`.
fn utc(t: Timestamp) -> String {
    let (y, m, d, hh, mm, ss) = t.utc();
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

fn meta_json(name: &str, m: &Meta, target: Option<&[u8]>) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "type": format!("{:?}", m.file_type).to_lowercase(),
        "mode": format!("{:04o}", m.perm),
        "uid": m.uid,
        "gid": m.gid,
        "size": m.size,
        "nlink": m.nlink,
        "mtime": m.mtime.secs,
        "rdev": m.rdev.map(|(a, b)| [a, b]),
        "target": target.map(|t| String::from_utf8_lossy(t).into_owned()),
    })
}

// ---------------------------------------------------------------------------------------

/// Arguments of `imgscrub ls`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub ls disk.qcow2 /etc/ssh
  imgscrub ls -l disk.qcow2 /var/log
  imgscrub ls --json --partition 1 disk.img /EFI      the EFI system partition, as JSON")]
pub struct LsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Guest path of a directory (or file).
    #[arg(default_value = "/")]
    pub path: String,
    /// Long listing: mode, links, owner, size, modification time (UTC).
    #[arg(short = 'l')]
    pub long: bool,
    /// Print a JSON array of entries.
    #[arg(long)]
    pub json: bool,
}

pub fn ls(a: &LsArgs) -> Result<()> {
    let img = open(&a.target, false, false)?;
    let g = guest(&img, &a.target, false)?;
    let fs = g.fs();
    let node = resolve(fs, guest_path(&a.path)?, true)?;
    let meta = fs.stat(node)?;
    let mut rows: Vec<(String, Meta, Option<Vec<u8>>)> = Vec::new();
    if meta.file_type == FileType::Directory {
        let mut entries = fs.read_dir(node)?;
        entries.sort_by(|x, y| x.name.cmp(&y.name));
        for e in entries {
            let m = fs.stat(e.node)?;
            let t = (m.file_type == FileType::Symlink)
                .then(|| fs.readlink(e.node))
                .transpose()?;
            rows.push((String::from_utf8_lossy(&e.name).into_owned(), m, t));
        }
    } else {
        rows.push((a.path.clone(), meta, None));
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, m, t)| meta_json(n, m, t.as_deref()))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else if a.long {
        for (n, m, t) in &rows {
            let size = match m.rdev {
                Some((ma, mi)) => format!("{ma}, {mi}"),
                None => m.size.to_string(),
            };
            let link = t
                .as_ref()
                .map(|t| format!(" -> {}", String::from_utf8_lossy(t)))
                .unwrap_or_default();
            writeln!(
                out,
                "{} {:>3} {:>5} {:>5} {:>10} {} {n}{link}",
                mode_string(m),
                m.nlink,
                m.uid,
                m.gid,
                size,
                utc(m.mtime)
            )?;
        }
    } else {
        for (n, _, _) in &rows {
            writeln!(out, "{n}")?;
        }
    }
    Ok(())
}

/// Arguments of `imgscrub cat`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub cat disk.qcow2 /etc/os-release
  imgscrub cat disk.qcow2 /etc/machine-id | od -c")]
pub struct CatArgs {
    #[command(flatten)]
    pub target: Target,
    /// Guest path of a file (symlinks are followed inside the guest).
    pub path: String,
}

pub fn cat(a: &CatArgs) -> Result<()> {
    let img = open(&a.target, false, false)?;
    let g = guest(&img, &a.target, false)?;
    let fs = g.fs();
    let node = resolve(fs, guest_path(&a.path)?, true)?;
    let m = fs.stat(node)?;
    if m.file_type == FileType::Directory {
        bail!("{}: is a directory", a.path);
    }
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < m.size {
        let n = fs.read(node, off, &mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Arguments of `imgscrub stat`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub stat disk.qcow2 /etc/shadow
  imgscrub stat --json disk.qcow2 /etc/localtime")]
pub struct StatArgs {
    #[command(flatten)]
    pub target: Target,
    /// Guest path (a final symlink is reported, not followed).
    pub path: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn stat(a: &StatArgs) -> Result<()> {
    let img = open(&a.target, false, false)?;
    let g = guest(&img, &a.target, false)?;
    let fs = g.fs();
    let node = resolve(fs, guest_path(&a.path)?, false)?;
    let m = fs.stat(node)?;
    let target = (m.file_type == FileType::Symlink)
        .then(|| fs.readlink(node))
        .transpose()?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut v = meta_json(&a.path, &m, target.as_deref());
        v["node"] = m.node.into();
        v["atime"] = m.atime.secs.into();
        v["ctime"] = m.ctime.secs.into();
        v["filesystem"] = g.volume().probe.fstype.blkid_name().into();
        v["partition"] = g.volume().partition.into();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let link = target
        .map(|t| format!(" -> {}", String::from_utf8_lossy(&t)))
        .unwrap_or_default();
    writeln!(out, "  File: {}{link}", a.path)?;
    writeln!(
        out,
        "  Type: {:?}  Size: {}  Links: {}  Inode: {}",
        m.file_type, m.size, m.nlink, m.node
    )?;
    writeln!(
        out,
        "Access: ({:04o}/{})  Uid: {}  Gid: {}",
        m.perm,
        mode_string(&m),
        m.uid,
        m.gid
    )?;
    if let Some((ma, mi)) = m.rdev {
        writeln!(out, "Device: {ma},{mi}")?;
    }
    writeln!(out, "Access: {} UTC", utc(m.atime))?;
    writeln!(out, "Modify: {} UTC", utc(m.mtime))?;
    writeln!(out, "Change: {} UTC", utc(m.ctime))?;
    Ok(())
}

fn report_edit(changed: u64, dry_run: bool, what: &str) {
    if dry_run {
        eprintln!(
            "dry run: would {what} ({changed} bytes of the image would change); nothing written"
        );
    }
}

/// Arguments of `imgscrub rm`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub rm disk.qcow2 /etc/ssh/ssh_host_rsa_key
  imgscrub rm -r disk.qcow2 /var/lib/cloud
  imgscrub rm -rf --dry-run disk.qcow2 /tmp/build-leftovers

Like rm(1): a directory needs -r; -f ignores a missing path. A final symlink is removed
itself, never its target.")]
pub struct RmArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub edit: EditOpts,
    /// Guest path to remove.
    pub path: String,
    /// Remove directories and their contents.
    #[arg(short = 'r', short_alias = 'R', long)]
    pub recursive: bool,
    /// Ignore a missing path.
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn rm(a: &RmArgs) -> Result<()> {
    let img = open(&a.target, true, a.edit.dry_run)?;
    let mut g = guest(&img, &a.target, true)?;
    let r = match resolve_entry(g.fs(), guest_path(&a.path)?, false) {
        Err(FsError::NotFound(_)) if a.force => return Ok(()),
        other => other?,
    };
    let Some(node) = r.node else {
        if a.force {
            return Ok(());
        }
        bail!("{}: no such file or directory", a.path);
    };
    if r.name.is_empty() {
        bail!("refusing to remove the root directory");
    }
    let fs = g.fs_mut();
    if fs.stat(node)?.file_type == FileType::Directory {
        if !a.recursive {
            bail!("{}: is a directory (use -r)", a.path);
        }
        fs.remove_tree(r.parent, &r.name)?;
    } else {
        fs.unlink(r.parent, &r.name)?;
    }
    let changed = finish(g, a.edit.dry_run)?;
    report_edit(changed, a.edit.dry_run, &format!("remove {}", a.path));
    Ok(())
}

fn parse_mode(s: &str) -> Result<u16> {
    let m = u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .with_context(|| format!("mode {s:?} is not an octal number like 0644"))?;
    if m > 0o7777 {
        bail!("mode {s:?} is larger than 07777");
    }
    Ok(m)
}

fn parse_owner(s: &str) -> Result<(u32, u32)> {
    let (u, g) = s
        .split_once(':')
        .with_context(|| format!("owner {s:?} must be UID:GID (numbers)"))?;
    Ok((
        u.parse()
            .with_context(|| format!("uid {u:?} is not a number"))?,
        g.parse()
            .with_context(|| format!("gid {g:?} is not a number"))?,
    ))
}

/// Arguments of `imgscrub write`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  echo 'nameserver 10.0.0.1' | imgscrub write disk.qcow2 /etc/resolv.conf
  imgscrub write --mode 0600 --owner 0:0 disk.qcow2 /root/.ssh/authorized_keys < key.pub

The content comes from standard input. An existing file keeps its mode and owner unless
--mode/--owner are given; a new file gets 0644 root:root by default.")]
pub struct WriteArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub edit: EditOpts,
    /// Guest path of the file to write (created if missing; the directory must exist).
    pub path: String,
    /// Permission bits, octal.
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<u16>,
    /// Owner as numeric UID:GID.
    #[arg(long, value_parser = parse_owner)]
    pub owner: Option<(u32, u32)>,
}

pub fn write(a: &WriteArgs) -> Result<()> {
    let mut data = Vec::new();
    std::io::stdin()
        .read_to_end(&mut data)
        .context("reading the new content from standard input")?;
    let img = open(&a.target, true, a.edit.dry_run)?;
    let mut g = guest(&img, &a.target, true)?;
    let r = resolve_entry(g.fs(), guest_path(&a.path)?, true)?;
    if r.name.is_empty() {
        bail!("{}: is a directory", a.path);
    }
    let fs = g.fs_mut();
    let node = match r.node {
        Some(n) => {
            if fs.stat(n)?.file_type != FileType::Regular {
                bail!("{}: not a regular file", a.path);
            }
            n
        }
        None => {
            let (uid, gid) = a.owner.unwrap_or((0, 0));
            fs.create(
                r.parent,
                &r.name,
                &NewAttr {
                    perm: a.mode.unwrap_or(0o644),
                    uid,
                    gid,
                    time: None,
                },
            )?
        }
    };
    fs.set_content(node, &data)?;
    if a.mode.is_some() || a.owner.is_some() {
        fs.set_attr(
            node,
            &SetAttr {
                perm: a.mode,
                uid: a.owner.map(|o| o.0),
                gid: a.owner.map(|o| o.1),
                ..SetAttr::default()
            },
        )?;
    }
    let changed = finish(g, a.edit.dry_run)?;
    report_edit(changed, a.edit.dry_run, &format!("write {}", a.path));
    Ok(())
}

/// Arguments of `imgscrub mkdir`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub mkdir disk.qcow2 /etc/cloud/cloud.cfg.d
  imgscrub mkdir -p --mode 0700 disk.qcow2 /root/.ssh")]
pub struct MkdirArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub edit: EditOpts,
    /// Guest path of the new directory.
    pub path: String,
    /// Create missing parents; no error if the directory exists.
    #[arg(short = 'p', long)]
    pub parents: bool,
    /// Permission bits of the new directories, octal (default 0755).
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<u16>,
}

pub fn mkdir(a: &MkdirArgs) -> Result<()> {
    let img = open(&a.target, true, a.edit.dry_run)?;
    let mut g = guest(&img, &a.target, true)?;
    let attr = NewAttr {
        perm: a.mode.unwrap_or(0o755),
        ..NewAttr::default()
    };
    let path = guest_path(&a.path)?;
    if a.parents {
        let mut done: Vec<u8> = Vec::new();
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            done.push(b'/');
            done.extend_from_slice(comp);
            let r = resolve_entry(g.fs(), &done, true)?;
            match r.node {
                Some(n) if g.fs().stat(n)?.file_type == FileType::Directory => {}
                Some(_) => bail!("{}: not a directory", String::from_utf8_lossy(&done)),
                None => {
                    g.fs_mut().mkdir(r.parent, &r.name, &attr)?;
                }
            }
        }
    } else {
        let r = resolve_entry(g.fs(), path, false)?;
        if r.node.is_some() {
            bail!("{}: file exists", a.path);
        }
        g.fs_mut().mkdir(r.parent, &r.name, &attr)?;
    }
    let changed = finish(g, a.edit.dry_run)?;
    report_edit(changed, a.edit.dry_run, &format!("create {}", a.path));
    Ok(())
}

/// Arguments of `imgscrub symlink`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub symlink disk.qcow2 /etc/localtime /usr/share/zoneinfo/UTC
  imgscrub symlink disk.qcow2 /var/lib/dbus/machine-id /etc/machine-id")]
pub struct SymlinkArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub edit: EditOpts,
    /// Guest path of the new link.
    pub link: String,
    /// What the link points to (stored as given; it need not exist).
    pub to: String,
    /// Replace an existing non-directory at LINK.
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn symlink(a: &SymlinkArgs) -> Result<()> {
    if a.to.is_empty() {
        return Err(super::usage("the link target is empty"));
    }
    let img = open(&a.target, true, a.edit.dry_run)?;
    let mut g = guest(&img, &a.target, true)?;
    let r = resolve_entry(g.fs(), guest_path(&a.link)?, false)?;
    if r.name.is_empty() {
        bail!("{}: is a directory", a.link);
    }
    if let Some(n) = r.node {
        if !a.force {
            bail!("{}: file exists (use -f to replace it)", a.link);
        }
        if g.fs().stat(n)?.file_type == FileType::Directory {
            bail!("{}: is a directory", a.link);
        }
        g.fs_mut().unlink(r.parent, &r.name)?;
    }
    g.fs_mut().symlink(
        r.parent,
        &r.name,
        a.to.as_bytes(),
        &NewAttr {
            perm: 0o777,
            ..NewAttr::default()
        },
    )?;
    let changed = finish(g, a.edit.dry_run)?;
    report_edit(
        changed,
        a.edit.dry_run,
        &format!("link {} -> {}", a.link, a.to),
    );
    Ok(())
}

/// Arguments of `imgscrub chmod`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  imgscrub chmod disk.qcow2 0600 /etc/ssh/sshd_config
  imgscrub chmod disk.qcow2 4755 /usr/bin/sudo")]
pub struct ChmodArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub edit: EditOpts,
    /// Octal permission bits (e.g. 0644, 4755).
    #[arg(value_parser = parse_mode)]
    pub mode: u16,
    /// Guest path (symlinks are followed, like chmod(1)).
    pub path: String,
}

pub fn chmod(a: &ChmodArgs) -> Result<()> {
    let img = open(&a.target, true, a.edit.dry_run)?;
    let mut g = guest(&img, &a.target, true)?;
    let node = resolve(g.fs(), guest_path(&a.path)?, true)?;
    g.fs_mut().set_attr(
        node,
        &SetAttr {
            perm: Some(a.mode),
            ..SetAttr::default()
        },
    )?;
    let changed = finish(g, a.edit.dry_run)?;
    report_edit(
        changed,
        a.edit.dry_run,
        &format!("chmod {:04o} {}", a.mode, a.path),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc(Timestamp::new(0, 0)), "1970-01-01 00:00:00");
        assert_eq!(utc(Timestamp::new(1_700_000_000, 0)), "2023-11-14 22:13:20");
        assert_eq!(utc(Timestamp::new(951_782_400, 0)), "2000-02-29 00:00:00");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("4755").unwrap(), 0o4755);
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("77777").is_err());
        assert_eq!(parse_owner("0:0").unwrap(), (0, 0));
        assert!(parse_owner("root:root").is_err());
    }
}
