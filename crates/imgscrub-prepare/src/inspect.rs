//! OS inspection of a guest tree: distribution family and version, init system, SELinux
//! mode, cloud-init, and the guest's `/etc/fstab`.
//!
//! Detection follows the LX brand's own order (spec §2.1, §5.4–5.7): `/etc/redhat-release`
//! first, then `/etc/lsb-release` containing "Ubuntu", then `/etc/debian_version`, then
//! `/etc/alpine-release`, then `/etc/SuSE-release`; a guest with none of these is classified
//! from `/etc/os-release` alone (family [`Family::Other`]). Every file is read through the
//! guest root with a size bound; nothing is executed.

use crate::error::Result;
use crate::view::View;
use imgscrub_fs::Filesystem;
use imgscrub_fs::filesystem::FileType;
use serde::{Deserialize, Serialize};

/// Distribution family, as the LX brand classifies guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `/etc/redhat-release`: CentOS, RHEL, Fedora, Rocky, Alma, …
    Redhat,
    /// `/etc/debian_version` without an Ubuntu `/etc/lsb-release`.
    Debian,
    /// `/etc/lsb-release` mentioning Ubuntu.
    Ubuntu,
    /// `/etc/alpine-release` (the LX brand calls it "busybox").
    Alpine,
    /// `/etc/SuSE-release`.
    Suse,
    /// Anything else (see [`OsInfo::id`]).
    Other,
}

impl Family {
    /// Lower-case name, as used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            Family::Redhat => "redhat",
            Family::Debian => "debian",
            Family::Ubuntu => "ubuntu",
            Family::Alpine => "alpine",
            Family::Suse => "suse",
            Family::Other => "other",
        }
    }
}

/// The guest's init system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitSystem {
    /// systemd.
    Systemd,
    /// Upstart (CentOS 6, Ubuntu ≤ 14.10).
    Upstart,
    /// SysV init with `/etc/inittab` and rc links.
    Sysvinit,
    /// OpenRC (Alpine, Gentoo).
    Openrc,
    /// Could not tell.
    Unknown,
}

/// SELinux mode from `/etc/selinux/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SelinuxMode {
    /// `SELINUX=enforcing`.
    Enforcing,
    /// `SELINUX=permissive`.
    Permissive,
    /// `SELINUX=disabled`.
    Disabled,
}

/// What inspection found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// Distribution family.
    pub family: Family,
    /// os-release `ID` (e.g. `centos`, `debian`), or a name derived from the release file.
    pub id: Option<String>,
    /// Version string (os-release `VERSION_ID`, `DISTRIB_RELEASE`, a release file's number).
    pub version: Option<String>,
    /// os-release `PRETTY_NAME` or the release file's first line.
    pub pretty_name: Option<String>,
    /// Init system.
    pub init: InitSystem,
    /// SELinux mode; `None` when `/etc/selinux/config` is absent or has no `SELINUX=`.
    pub selinux: Option<SelinuxMode>,
    /// `SELINUXTYPE=` (e.g. `targeted`).
    pub selinux_type: Option<String>,
    /// `/usr/bin/cloud-init` exists.
    pub cloud_init: bool,
    /// Parsed `/etc/fstab` (empty if absent).
    pub fstab: Vec<FstabEntry>,
    /// This filesystem looks like a Linux root: `/etc` is a directory with `os-release`,
    /// `passwd` or `fstab` in it (use it to pick the root among a disk's filesystems).
    pub linux_root: bool,
}

impl OsInfo {
    /// A short human description, e.g. `redhat (centos 7)`.
    pub fn describe(&self) -> String {
        let mut s = self.family.name().to_string();
        if let Some(id) = &self.id {
            s.push_str(&format!(" ({id}"));
            if let Some(v) = &self.version {
                s.push_str(&format!(" {v}"));
            }
            s.push(')');
        }
        s
    }

    /// The version as numbers (`"14.04"` → `[14, 4]`); leading digits of each dot-separated
    /// part, stopping at the first part without digits.
    pub fn version_numbers(&self) -> Vec<u64> {
        self.version
            .as_deref()
            .map(version_numbers)
            .unwrap_or_default()
    }
}

/// Parse a version string into numbers (`"7.11"` → `[7, 11]`, `"bookworm/sid"` → `[]`).
pub fn version_numbers(v: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for part in v.trim().split(['.', '-', '_']) {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u64>() {
            Ok(n) if !digits.is_empty() => out.push(n),
            _ => break,
        }
    }
    out
}

/// How an fstab entry names its device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "by", content = "value")]
pub enum DeviceSpec {
    /// `UUID=…` (lower-cased).
    Uuid(String),
    /// `LABEL=…`.
    Label(String),
    /// `PARTUUID=…` (lower-cased).
    Partuuid(String),
    /// `PARTLABEL=…`.
    Partlabel(String),
    /// A `/dev/…` path.
    Path(String),
    /// Anything else (`tmpfs`, `proc`, `none`, a network share…).
    Other(String),
}

/// One mount line of `/etc/fstab`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FstabEntry {
    /// The device.
    pub device: DeviceSpec,
    /// Mount point (`none` for swap).
    pub mount_point: String,
    /// Filesystem type (`ext4`, `vfat`, `swap`, `xfs`, `auto`…).
    pub fs_type: String,
    /// Mount options, split at commas.
    pub options: Vec<String>,
    /// Dump frequency (field 5, 0 if missing).
    pub dump: u32,
    /// fsck pass (field 6, 0 if missing).
    pub pass: u32,
    /// 1-based line number in the file.
    pub line: usize,
}

impl FstabEntry {
    /// Whether this is a swap entry.
    pub fn is_swap(&self) -> bool {
        self.fs_type == "swap"
    }

    /// Whether this mounts a local block device (by UUID, LABEL, PARTUUID, PARTLABEL or a
    /// `/dev` path) at an absolute mount point: what joins partitions into one guest tree.
    /// Swap, pseudo filesystems, network shares and `noauto` entries are not.
    pub fn is_block_mount(&self) -> bool {
        const VIRTUAL: &[&str] = &[
            "swap",
            "proc",
            "sysfs",
            "tmpfs",
            "devpts",
            "devtmpfs",
            "nfs",
            "nfs4",
            "cifs",
            "smbfs",
            "fuse",
            "none",
            "bind",
            "cgroup",
            "cgroup2",
            "debugfs",
            "securityfs",
            "hugetlbfs",
            "mqueue",
            "9p",
            "overlay",
            "zfs",
        ];
        !matches!(self.device, DeviceSpec::Other(_))
            && self.mount_point.starts_with('/')
            && !VIRTUAL.contains(&self.fs_type.as_str())
            && !self.options.iter().any(|o| o == "noauto")
    }
}

/// The block-device mounts of an fstab, parents before children (`/` first, then `/boot`,
/// then `/boot/efi`…), the order in which to join them into one tree.
pub fn block_mounts(entries: &[FstabEntry]) -> Vec<&FstabEntry> {
    let mut m: Vec<&FstabEntry> = entries.iter().filter(|e| e.is_block_mount()).collect();
    m.sort_by_key(|e| {
        let depth = e.mount_point.split('/').filter(|c| !c.is_empty()).count();
        (depth, e.mount_point.clone())
    });
    m
}

/// Undo fstab's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'\\')
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = oct
                .iter()
                .fold(0u32, |acc, &c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        if let Some(&c) = b.get(i) {
            out.push(c);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse the text of an fstab. Comments, blank lines, malformed lines (fewer than three
/// fields) and bind mounts are skipped.
pub fn parse_fstab(text: &[u8]) -> Vec<FstabEntry> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dev), Some(mp), Some(ty)) = (fields.first(), fields.get(1), fields.get(2)) else {
            continue;
        };
        let options: Vec<String> = fields
            .get(3)
            .map(|o| o.split(',').map(str::to_string).collect())
            .unwrap_or_else(|| vec!["defaults".to_string()]);
        if options.iter().any(|o| o == "bind" || o == "rbind") || *ty == "bind" {
            continue;
        }
        let dev = unescape(dev);
        let device = if let Some(v) = dev.strip_prefix("UUID=") {
            DeviceSpec::Uuid(v.trim_matches('"').to_ascii_lowercase())
        } else if let Some(v) = dev.strip_prefix("LABEL=") {
            DeviceSpec::Label(v.trim_matches('"').to_string())
        } else if let Some(v) = dev.strip_prefix("PARTUUID=") {
            DeviceSpec::Partuuid(v.trim_matches('"').to_ascii_lowercase())
        } else if let Some(v) = dev.strip_prefix("PARTLABEL=") {
            DeviceSpec::Partlabel(v.trim_matches('"').to_string())
        } else if dev.starts_with("/dev/") {
            DeviceSpec::Path(dev)
        } else {
            DeviceSpec::Other(dev)
        };
        out.push(FstabEntry {
            device,
            mount_point: unescape(mp),
            fs_type: ty.to_string(),
            options,
            dump: fields.get(4).and_then(|v| v.parse().ok()).unwrap_or(0),
            pass: fields.get(5).and_then(|v| v.parse().ok()).unwrap_or(0),
            line: idx + 1,
        });
    }
    out
}

/// Parse `KEY=value` lines (os-release, lsb-release), unquoting values.
pub fn parse_kv(text: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    out
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn first_line(data: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(data);
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// The first number-like word of a release line (`CentOS release 6.10 (Final)` → `6.10`).
fn release_number(line: &str) -> Option<String> {
    line.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// Inspect the guest mounted as `fs`.
pub fn inspect(fs: &dyn Filesystem) -> Result<OsInfo> {
    inspect_view(&View::new(fs))
}

/// Inspect through a planner view (sees pending changes).
pub(crate) fn inspect_view(v: &View<'_>) -> Result<OsInfo> {
    let os_release = match v.read_follow(b"/etc/os-release")? {
        Some(d) => Some(d),
        None => v.read_follow(b"/usr/lib/os-release")?,
    };
    let osr = os_release.as_deref().map(parse_kv).unwrap_or_default();
    let lsb = v.read_follow(b"/etc/lsb-release")?;
    let lsb_kv = lsb.as_deref().map(parse_kv).unwrap_or_default();
    let redhat = v.read_follow(b"/etc/redhat-release")?;
    let debian_version = v.read_follow(b"/etc/debian_version")?;
    let alpine = v.read_follow(b"/etc/alpine-release")?;
    let lsb_ubuntu = lsb
        .as_deref()
        .is_some_and(|d| String::from_utf8_lossy(d).contains("Ubuntu"));

    let os_id = get(&osr, "ID").map(str::to_ascii_lowercase);
    let os_ver = get(&osr, "VERSION_ID").map(str::to_string);
    let pretty = get(&osr, "PRETTY_NAME").map(str::to_string);

    let (family, id, version, pretty_name) = if let Some(rr) = redhat {
        let line = first_line(&rr);
        let id = os_id.clone().or_else(|| {
            line.as_deref()
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_ascii_lowercase)
        });
        let version = os_ver
            .clone()
            .or_else(|| line.as_deref().and_then(release_number));
        (Family::Redhat, id, version, pretty.clone().or(line))
    } else if lsb.is_some() && lsb_ubuntu {
        let version = get(&lsb_kv, "DISTRIB_RELEASE")
            .map(str::to_string)
            .or(os_ver.clone());
        let pretty_name = pretty
            .clone()
            .or_else(|| get(&lsb_kv, "DISTRIB_DESCRIPTION").map(str::to_string));
        (
            Family::Ubuntu,
            Some(os_id.clone().unwrap_or_else(|| "ubuntu".into())),
            version,
            pretty_name,
        )
    } else if let Some(dv) = debian_version {
        let version = os_ver.clone().or_else(|| first_line(&dv));
        (
            Family::Debian,
            Some(os_id.clone().unwrap_or_else(|| "debian".into())),
            version,
            pretty.clone(),
        )
    } else if let Some(a) = alpine {
        let version = os_ver.clone().or_else(|| first_line(&a));
        (
            Family::Alpine,
            Some(os_id.clone().unwrap_or_else(|| "alpine".into())),
            version,
            pretty.clone(),
        )
    } else if v.exists(b"/etc/SuSE-release")? {
        (
            Family::Suse,
            os_id.clone().or(Some("suse".into())),
            os_ver.clone(),
            pretty.clone(),
        )
    } else {
        (Family::Other, os_id, os_ver, pretty)
    };

    let mut info = OsInfo {
        family,
        id,
        version,
        pretty_name,
        init: InitSystem::Unknown,
        selinux: None,
        selinux_type: None,
        cloud_init: v.exists(b"/usr/bin/cloud-init")?,
        fstab: v
            .read_follow(b"/etc/fstab")?
            .as_deref()
            .map(parse_fstab)
            .unwrap_or_default(),
        linux_root: is_dir(v, b"/etc")?
            && (v.exists(b"/etc/os-release")?
                || v.exists(b"/usr/lib/os-release")?
                || v.exists(b"/etc/passwd")?
                || v.exists(b"/etc/fstab")?),
    };
    info.init = detect_init(v, &info)?;
    if let Some(cfg) = v.read_follow(b"/etc/selinux/config")? {
        let kv = parse_kv(&cfg);
        info.selinux = get(&kv, "SELINUX").and_then(|m| match m.to_ascii_lowercase().as_str() {
            "enforcing" => Some(SelinuxMode::Enforcing),
            "permissive" => Some(SelinuxMode::Permissive),
            "disabled" => Some(SelinuxMode::Disabled),
            _ => None,
        });
        info.selinux_type = get(&kv, "SELINUXTYPE").map(str::to_string);
    }
    Ok(info)
}

fn is_dir(v: &View<'_>, p: &[u8]) -> Result<bool> {
    Ok(v.node_follow(p)?.map(|n| n.file_type) == Some(FileType::Directory))
}

/// `/sbin/init` is a symlink whose target (followed inside the guest) mentions systemd.
fn init_links_to_systemd(v: &View<'_>) -> Result<bool> {
    let Some(c) = v.canon(b"/sbin/init", false)? else {
        return Ok(false);
    };
    if v.readlink(&c)?.is_none() {
        return Ok(false);
    }
    let resolved = v.canon(b"/sbin/init", true)?.unwrap_or_default();
    let link = v.readlink(&c)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&resolved).contains("systemd")
        || String::from_utf8_lossy(&link).contains("systemd"))
}

fn has_upstart_jobs(v: &View<'_>) -> Result<bool> {
    let Some(dir) = v.canon(b"/etc/init", true)? else {
        return Ok(false);
    };
    Ok(v.list(&dir)?.iter().any(|(n, _)| n.ends_with(b".conf")))
}

fn detect_init(v: &View<'_>, info: &OsInfo) -> Result<InitSystem> {
    let systemd_bin =
        v.exists(b"/lib/systemd/systemd")? || v.exists(b"/usr/lib/systemd/systemd")?;
    Ok(match info.family {
        // §5.4: /etc/init means upstart (6), /etc/systemd/system means systemd (7+).
        Family::Redhat => {
            let major = info.version_numbers().first().copied();
            if is_dir(v, b"/etc/systemd/system")?
                && (major.is_none_or(|m| m >= 7) || !is_dir(v, b"/etc/init")?)
            {
                InitSystem::Systemd
            } else if is_dir(v, b"/etc/init")? {
                InitSystem::Upstart
            } else {
                InitSystem::Sysvinit
            }
        }
        // §5.6: upstart if /etc/init/*.conf exists and /sbin/init is not a systemd link.
        Family::Ubuntu => {
            if has_upstart_jobs(v)? && !init_links_to_systemd(v)? {
                InitSystem::Upstart
            } else {
                InitSystem::Systemd
            }
        }
        Family::Alpine => {
            if v.exists(b"/sbin/openrc")? || is_dir(v, b"/etc/runlevels")? {
                InitSystem::Openrc
            } else {
                InitSystem::Sysvinit
            }
        }
        _ => {
            if init_links_to_systemd(v)? {
                InitSystem::Systemd
            } else if v.exists(b"/sbin/openrc")? {
                InitSystem::Openrc
            } else if has_upstart_jobs(v)? && v.exists(b"/sbin/initctl")? {
                InitSystem::Upstart
            } else if v.exists(b"/etc/inittab")? {
                InitSystem::Sysvinit
            } else if systemd_bin {
                InitSystem::Systemd
            } else {
                InitSystem::Unknown
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_lines() {
        let t = b"# comment\n\nUUID=ABCD-1234 / ext4 defaults,noatime 1 1\n\
LABEL=boot /boot ext2 defaults 1 2\nPARTUUID=0aF1-02 /boot/efi vfat umask=0077 0 1\n\
/dev/vdb /data xfs defaults\n/srv /mnt/srv none bind 0 0\n\
/dev/mapper/swap none swap sw 0 0\ntmpfs /tmp tmpfs defaults 0 0\n\
/dev/sda3 /my\\040dir ext4\nbroken line\n";
        let e = parse_fstab(t);
        assert_eq!(e.len(), 7);
        assert_eq!(e[0].device, DeviceSpec::Uuid("abcd-1234".into()));
        assert_eq!(e[0].options, vec!["defaults", "noatime"]);
        assert_eq!((e[0].dump, e[0].pass, e[0].line), (1, 1, 3));
        assert_eq!(e[1].device, DeviceSpec::Label("boot".into()));
        assert_eq!(e[2].device, DeviceSpec::Partuuid("0af1-02".into()));
        assert_eq!(e[3].device, DeviceSpec::Path("/dev/vdb".into()));
        assert!(e[4].is_swap());
        assert_eq!(e[5].device, DeviceSpec::Other("tmpfs".into()));
        assert_eq!(e[6].mount_point, "/my dir");
        assert_eq!(e[6].options, vec!["defaults"]);
    }

    #[test]
    fn block_mount_order() {
        let t = b"proc /proc proc defaults 0 0\nUUID=b /boot/efi vfat umask=0077 0 1\n\
LABEL=r / ext4 defaults 1 1\n/dev/sdb1 /srv xfs noauto 0 0\nUUID=a /boot ext4 defaults 1 2\n\
/dev/sda2 none swap sw 0 0\nserver:/x /mnt/nfs nfs defaults 0 0\n";
        let e = parse_fstab(t);
        let m: Vec<&str> = block_mounts(&e)
            .iter()
            .map(|e| e.mount_point.as_str())
            .collect();
        assert_eq!(m, vec!["/", "/boot", "/boot/efi"]);
    }

    #[test]
    fn versions() {
        assert_eq!(version_numbers("14.04"), vec![14, 4]);
        assert_eq!(version_numbers("7"), vec![7]);
        assert_eq!(version_numbers("bookworm/sid"), Vec::<u64>::new());
        assert_eq!(version_numbers("3.18.4"), vec![3, 18, 4]);
    }

    #[test]
    fn kv() {
        let kv = parse_kv(b"ID=\"centos\"\nVERSION_ID='7'\n# x\nNAME=CentOS Linux\n");
        assert_eq!(get(&kv, "ID"), Some("centos"));
        assert_eq!(get(&kv, "VERSION_ID"), Some("7"));
        assert_eq!(get(&kv, "NAME"), Some("CentOS Linux"));
    }
}
