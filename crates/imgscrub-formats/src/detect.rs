//! What kind of image a file is, by the magic of each format (as `qemu-img info` probes).
//!
//! Only bytes of the file are looked at, never its name. A file that matches no magic is raw.

use crate::le::{be32, le32};
use crate::vmdk;
use imgscrub_disk::{DiskError, Result};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes read from the start of a file for detection (enough for a VMDK embedded descriptor).
pub const HEAD_BYTES: usize = 64 << 10;
/// Bytes read from the end of a file (VHD footer, DMG trailer).
pub const TAIL_BYTES: usize = 512;

/// An image format, named as qemu names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// No magic: byte N of the file is byte N of the disk.
    Raw,
    /// QEMU copy-on-write v2/v3 (`QFI\xfb`, version 2 or 3).
    Qcow2,
    /// QEMU copy-on-write v1 (`QFI\xfb`, version 1).
    Qcow,
    /// QEMU enhanced disk (`QED\0`).
    Qed,
    /// VMware VMDK: a hosted sparse extent (`KDMV`), an ESX sparse extent (`COWD`) or a
    /// descriptor text file.
    Vmdk,
    /// Microsoft VHD / Virtual PC (`conectix` footer; qemu calls it `vpc`).
    Vhd,
    /// Microsoft VHDX (`vhdxfile`).
    Vhdx,
    /// VirtualBox VDI (`0xbeda107f` at offset 0x40).
    Vdi,
    /// Parallels (`WithoutFreeSpace` / `WithouFreSpacExt`).
    Parallels,
    /// Apple disk image (`koly` trailer).
    Dmg,
    /// Linux compressed loop (a `#!/bin/sh` header naming cloop).
    Cloop,
    /// Bochs growing image (`Bochs Virtual HD Image`).
    Bochs,
    /// A LUKS header at offset 0. qemu has a `luks` format for it; imgscrub reads the file as
    /// a raw disk holding one LUKS volume, which `inspect` names and edits refuse.
    Luks,
}

impl Kind {
    /// The name `qemu-img` uses (`-f` / `-O`).
    pub fn qemu_name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Qcow2 => "qcow2",
            Kind::Qcow => "qcow",
            Kind::Qed => "qed",
            Kind::Vmdk => "vmdk",
            Kind::Vhd => "vpc",
            Kind::Vhdx => "vhdx",
            Kind::Vdi => "vdi",
            Kind::Parallels => "parallels",
            Kind::Dmg => "dmg",
            Kind::Cloop => "cloop",
            Kind::Bochs => "bochs",
            Kind::Luks => "luks",
        }
    }

    /// A name for people.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Qcow2 => "qcow2",
            Kind::Qcow => "qcow (version 1)",
            Kind::Qed => "QED",
            Kind::Vmdk => "VMDK",
            Kind::Vhd => "VHD",
            Kind::Vhdx => "VHDX",
            Kind::Vdi => "VDI (VirtualBox)",
            Kind::Parallels => "Parallels",
            Kind::Dmg => "DMG (Apple disk image)",
            Kind::Cloop => "cloop",
            Kind::Bochs => "Bochs",
            Kind::Luks => "LUKS",
        }
    }
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The format.
    pub kind: Kind,
    /// The variant, where the format has several: VMDK `createType` (`monolithicSparse`,
    /// `streamOptimized`, `monolithicFlat`, `twoGbMaxExtentSparse`…, `extent` for an extent
    /// file without descriptor), VHD `fixed` / `dynamic` / `differencing`.
    pub subformat: Option<String>,
}

impl fmt::Display for Detected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        if let Some(s) = &self.subformat {
            write!(f, " ({s})")?;
        }
        Ok(())
    }
}

impl Detected {
    fn new(kind: Kind) -> Self {
        Detected {
            kind,
            subformat: None,
        }
    }

    fn with(kind: Kind, sub: &str) -> Self {
        Detected {
            kind,
            subformat: Some(sub.to_string()),
        }
    }

    /// True when imgscrub reads this natively: raw, qcow2 (v2/v3), VMDK monolithicSparse and
    /// streamOptimized, VHD fixed and dynamic (and a LUKS disk, as raw).
    pub fn readable(&self) -> bool {
        let sub = self.subformat.as_deref();
        match self.kind {
            Kind::Raw | Kind::Qcow2 | Kind::Luks => true,
            Kind::Vmdk => matches!(sub, Some("monolithicSparse" | "streamOptimized")),
            Kind::Vhd => matches!(sub, Some("fixed" | "dynamic")),
            _ => false,
        }
    }

    /// The one-line refusal for a format imgscrub does not read: names the format and gives
    /// the `qemu-img convert` line that makes a qcow2 of it. `None` when it is readable.
    pub fn refusal(&self, path: &Path) -> Option<String> {
        if self.readable() {
            return None;
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "disk".into());
        let why = match (self.kind, self.subformat.as_deref()) {
            (Kind::Vhd, Some("differencing")) => {
                " (a differencing disk: its data is in its parent)".to_string()
            }
            (Kind::Vmdk, Some("extent")) => {
                " (an extent of a split VMDK, without its descriptor: convert the descriptor file)"
                    .to_string()
            }
            (Kind::Vmdk, Some(s)) => format!(" ({s}: data in separate extent files)"),
            _ => String::new(),
        };
        Some(format!(
            "a {self} image{why}; imgscrub reads raw, qcow2, VMDK (monolithicSparse, \
             streamOptimized) and VHD (fixed, dynamic): convert it first with \
             `qemu-img convert -f {} -O qcow2 {} {stem}.qcow2`",
            self.kind.qemu_name(),
            path.display()
        ))
    }
}

/// Detect the format from the first bytes of a file (`head`, up to [`HEAD_BYTES`]), its last
/// bytes (`tail`, up to [`TAIL_BYTES`]; empty when the file is no longer than `head`, then
/// the end of `head` is used) and its length.
pub fn detect(head: &[u8], tail: &[u8], len: u64) -> Detected {
    let starts = |m: &[u8]| head.starts_with(m);
    if starts(b"QFI\xfb") {
        return match be32(head, 4) {
            1 => Detected::new(Kind::Qcow),
            _ => Detected::new(Kind::Qcow2),
        };
    }
    if starts(b"QED\0") {
        return Detected::new(Kind::Qed);
    }
    if starts(b"KDMV") {
        return Detected::with(Kind::Vmdk, &vmdk::sparse_subformat(head));
    }
    if starts(b"COWD") {
        return Detected::with(Kind::Vmdk, "vmfsSparse");
    }
    if let Some(create) = vmdk::descriptor_create_type(head) {
        return Detected::with(Kind::Vmdk, &create);
    }
    if starts(b"vhdxfile") {
        return Detected::new(Kind::Vhdx);
    }
    if starts(b"conectix") {
        let sub = match be32(head, 60) {
            2 => "fixed",
            3 => "dynamic",
            4 => "differencing",
            _ => "unknown type",
        };
        return Detected::with(Kind::Vhd, sub);
    }
    if le32(head, 0x40) == 0xbeda_107f {
        return Detected::new(Kind::Vdi);
    }
    if starts(b"WithoutFreeSpace") || starts(b"WithouFreSpacExt") {
        return Detected::new(Kind::Parallels);
    }
    if starts(b"Bochs Virtual HD Image") {
        return Detected::new(Kind::Bochs);
    }
    if starts(b"#!/bin/sh") && head.get(..128).is_some_and(|h| contains(h, b"cloop")) {
        return Detected::new(Kind::Cloop);
    }
    if starts(b"LUKS\xba\xbe") {
        return Detected::new(Kind::Luks);
    }
    // Formats known by their last sector.
    let tail = if tail.is_empty() && len as usize == head.len() {
        head.get(head.len().saturating_sub(TAIL_BYTES)..)
            .unwrap_or_default()
    } else {
        tail
    };
    if len >= 1024 && tail.len() >= 512 {
        let last = tail.get(tail.len() - 512..).unwrap_or_default();
        if last.starts_with(b"conectix") {
            let sub = match be32(last, 60) {
                2 => "fixed",
                3 => "dynamic",
                4 => "differencing",
                _ => "unknown type",
            };
            return Detected::with(Kind::Vhd, sub);
        }
        if last.starts_with(b"koly") {
            return Detected::new(Kind::Dmg);
        }
    }
    Detected::new(Kind::Raw)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Read the head and tail of an open file and [`detect`] its format.
pub fn detect_file(file: &File, name: &Path) -> Result<Detected> {
    let len = file
        .metadata()
        .map_err(|e| DiskError::io(format!("stat {}", name.display()), e))?
        .len();
    let mut head = vec![0u8; (HEAD_BYTES as u64).min(len) as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| DiskError::io(format!("read the start of {}", name.display()), e))?;
    let mut tail = Vec::new();
    if len > head.len() as u64 {
        let n = (TAIL_BYTES as u64).min(len);
        tail = vec![0u8; n as usize];
        file.read_exact_at(&mut tail, len - n)
            .map_err(|e| DiskError::io(format!("read the end of {}", name.display()), e))?;
    }
    Ok(detect(&head, &tail, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        let mut h = vec![0u8; 4096];
        assert_eq!(detect(&h, &[], 4096).kind, Kind::Raw);
        h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
        assert_eq!(detect(&h, &[], 4096).kind, Kind::Qcow2);
        h[7] = 1;
        assert_eq!(detect(&h, &[], 4096).kind, Kind::Qcow);
        h[..8].copy_from_slice(b"vhdxfile");
        assert_eq!(detect(&h, &[], 4096).kind, Kind::Vhdx);
        let mut h = vec![0u8; 4096];
        h[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        assert_eq!(detect(&h, &[], 4096).kind, Kind::Vdi);
        let mut h = vec![0u8; 4096];
        h[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        h[4096 - 512 + 63] = 2;
        let d = detect(&h, &[], 4096);
        assert_eq!((d.kind, d.subformat.as_deref()), (Kind::Vhd, Some("fixed")));
        assert!(d.readable());
        // Short files never panic.
        for n in 0..16 {
            detect(&h[..n], &[], n as u64);
        }
    }

    #[test]
    fn formats_qemu_img_cannot_create_are_known_by_their_magic() {
        let at0 = |m: &[u8]| {
            let mut h = vec![0u8; 4096];
            h[..m.len()].copy_from_slice(m);
            detect(&h, &[], 4096)
        };
        assert_eq!(at0(b"Bochs Virtual HD Image").kind, Kind::Bochs);
        let cloop = b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
        assert_eq!(at0(cloop).kind, Kind::Cloop);
        assert_eq!(at0(b"WithoutFreeSpace").kind, Kind::Parallels);
        assert_eq!(at0(b"QED\0").kind, Kind::Qed);
        assert_eq!(at0(b"COWD").subformat.as_deref(), Some("vmfsSparse"));
        assert_eq!(at0(b"LUKS\xba\xbe").kind, Kind::Luks);
        assert!(at0(b"LUKS\xba\xbe").readable());
        let desc = b"# Disk DescriptorFile\nversion=1\ncreateType=\"vmfs\"\n";
        let d = at0(desc);
        assert_eq!((d.kind, d.subformat.as_deref()), (Kind::Vmdk, Some("vmfs")));
        assert!(!d.readable());
        // DMG: the koly trailer in the last sector.
        let mut dmg = vec![0u8; 8192];
        dmg[8192 - 512..8192 - 508].copy_from_slice(b"koly");
        assert_eq!(
            detect(&dmg[..4096], &dmg[8192 - 512..], 8192).kind,
            Kind::Dmg
        );
        // A dynamic VHD's footer copy at the start.
        let mut vhd = vec![0u8; 4096];
        vhd[..8].copy_from_slice(b"conectix");
        vhd[63] = 3;
        assert_eq!(
            detect(&vhd, &[], 4096).subformat.as_deref(),
            Some("dynamic")
        );
    }

    #[test]
    fn refusal_names_the_format_and_the_command() {
        let d = Detected::new(Kind::Vdi);
        let m = d.refusal(Path::new("/x/disk.vdi")).unwrap();
        assert!(m.contains("VDI"), "{m}");
        assert!(
            m.contains("qemu-img convert -f vdi -O qcow2 /x/disk.vdi disk.qcow2"),
            "{m}"
        );
        assert!(Detected::new(Kind::Raw).refusal(Path::new("a")).is_none());
    }
}
