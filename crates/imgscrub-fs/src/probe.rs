//! Filesystem detection by magic numbers, the way `blkid -p` does it: ext2/3/4, FAT12/16/32,
//! XFS, Btrfs, Linux swap, LVM2 physical volumes, LUKS 1 and 2, ISO 9660.
//!
//! [`probe`] reads only through [`BlockDev`] and only ranges that exist on the device; every
//! field is range-checked. Anything unrecognised is [`FsType::Unknown`], not an error: errors
//! are I/O failures only.

use imgscrub_disk::{BlockDev, Result};

/// What a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    /// ext2 (no journal, no ext3/ext4-only features).
    Ext2,
    /// ext3 (journal, no ext4-only features).
    Ext3,
    /// ext4 (any feature beyond ext3's).
    Ext4,
    /// An external ext3/ext4 journal device.
    Jbd,
    /// FAT12, FAT16 or FAT32 ([`FsProbe::version`] says which).
    Vfat,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
    /// Linux swap space.
    Swap,
    /// An LVM2 physical volume.
    LvmPv,
    /// A LUKS (1 or 2) encrypted volume.
    Luks,
    /// An ISO 9660 (CD-ROM) filesystem.
    Iso9660,
    /// Nothing we recognise.
    Unknown,
}

impl FsType {
    /// The name `blkid` reports as `TYPE=` (`"unknown"` for [`FsType::Unknown`]).
    pub fn blkid_name(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Jbd => "jbd",
            FsType::Vfat => "vfat",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
            FsType::Swap => "swap",
            FsType::LvmPv => "LVM2_member",
            FsType::Luks => "crypto_LUKS",
            FsType::Iso9660 => "iso9660",
            FsType::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.blkid_name())
    }
}

/// ext2/3/4 feature flags, by the names e2fsprogs uses (`FEATURE_C12` style for unknown bits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtFeatures {
    /// `s_feature_compat` names.
    pub compat: Vec<String>,
    /// `s_feature_incompat` names.
    pub incompat: Vec<String>,
    /// `s_feature_ro_compat` names.
    pub ro_compat: Vec<String>,
}

/// The result of [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsProbe {
    /// What was found.
    pub fstype: FsType,
    /// The volume label, if the filesystem has a non-empty one.
    pub label: Option<String>,
    /// The UUID as `blkid` prints it (`XXXX-XXXX` for FAT, 8-4-4-4-12 for most others).
    pub uuid: Option<String>,
    /// Block (ext, XFS), sector (Btrfs), cluster (FAT) or page (swap) size in bytes.
    pub block_size: Option<u32>,
    /// `FAT12`/`FAT16`/`FAT32`, LUKS `1`/`2`, swap `1`, …: blkid's `VERSION`.
    pub version: Option<String>,
    /// Filesystem size in bytes, when the superblock says.
    pub size: Option<u64>,
    /// ext2/3/4 feature flags.
    pub ext_features: Option<ExtFeatures>,
}

impl FsProbe {
    pub(crate) fn new(fstype: FsType) -> Self {
        FsProbe {
            fstype,
            label: None,
            uuid: None,
            block_size: None,
            version: None,
            size: None,
            ext_features: None,
        }
    }
}

/// Read `len` bytes at `off`, or `None` when that range is not on the device.
fn read_opt(dev: &dyn BlockDev, off: u64, len: usize) -> Result<Option<Vec<u8>>> {
    match off.checked_add(len as u64) {
        Some(end) if end <= dev.len() => {
            let mut b = vec![0u8; len];
            dev.read_at(&mut b, off)?;
            Ok(Some(b))
        }
        _ => Ok(None),
    }
}

fn u16le(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32le(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u32be(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64be(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_be_bytes(a)
    })
}
fn u64le(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}
fn bytes(b: &[u8], o: usize, n: usize) -> &[u8] {
    b.get(o..o + n).unwrap_or(&[])
}

/// A label: up to the first NUL, trailing spaces trimmed; `None` when empty.
fn label(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    let s = String::from_utf8_lossy(raw.get(..end).unwrap_or(&[]))
        .trim_end_matches(' ')
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// 16 bytes as 8-4-4-4-12 hex (byte order as stored); `None` when all zero or too short.
fn uuid(raw: &[u8]) -> Option<String> {
    if raw.len() != 16 || raw.iter().all(|&b| b == 0) {
        return None;
    }
    let h: Vec<String> = raw.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// Identify what `dev` holds. Errors are I/O errors only.
pub fn probe(dev: &dyn BlockDev) -> Result<FsProbe> {
    type Prober = fn(&dyn BlockDev) -> Result<Option<FsProbe>>;
    // Strong, fixed-offset magics first; FAT (heuristic) last.
    const PROBERS: [Prober; 9] = [
        probe_luks,
        probe_lvm,
        probe_xfs,
        probe_ext,
        probe_btrfs,
        probe_swap,
        probe_iso9660,
        probe_fat,
        probe_none,
    ];
    for p in PROBERS {
        if let Some(r) = p(dev)? {
            return Ok(r);
        }
    }
    Ok(FsProbe::new(FsType::Unknown))
}

fn probe_none(_: &dyn BlockDev) -> Result<Option<FsProbe>> {
    Ok(None)
}

// ---- ext2/3/4 ----------------------------------------------------------------------------

const EXT_COMPAT: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x40, "lazy_bg"),
    (0x100, "snapshot_bitmap"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const EXT_INCOMPAT: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const EXT_RO_COMPAT: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x4, "btree_dir"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x80, "snapshot"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x800, "replica"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

fn feature_names(bits: u32, table: &[(u32, &str)], prefix: char) -> Vec<String> {
    (0..32)
        .map(|i| 1u32 << i)
        .filter(|b| bits & b != 0)
        .map(|b| match table.iter().find(|(v, _)| *v == b) {
            Some((_, n)) => (*n).to_string(),
            None => format!("FEATURE_{prefix}{}", b.trailing_zeros()),
        })
        .collect()
}

const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
const EXT_INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const EXT_INCOMPAT_64BIT: u32 = 0x80;
/// Features an ext3 driver supports: ro_compat sparse_super|large_file|btree_dir; incompat
/// filetype|needs_recovery|meta_bg. Anything more makes it ext4 (libblkid's rule).
const EXT3_RO_COMPAT_SUPP: u32 = 0x7;
const EXT3_INCOMPAT_SUPP: u32 = 0x2 | 0x4 | 0x10;

fn probe_ext(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    let Some(sb) = read_opt(dev, 1024, 1024)? else {
        return Ok(None);
    };
    if u16le(&sb, 56) != 0xef53 {
        return Ok(None);
    }
    let log_bs = u32le(&sb, 24);
    if log_bs > 6 {
        return Ok(None); // block size over 64 KiB: not a real superblock
    }
    let block_size = 1024u32 << log_bs;
    let compat = u32le(&sb, 92);
    let incompat = u32le(&sb, 96);
    let ro_compat = u32le(&sb, 100);
    let fstype = if incompat & EXT_INCOMPAT_JOURNAL_DEV != 0 {
        FsType::Jbd
    } else if ro_compat & !EXT3_RO_COMPAT_SUPP != 0 || incompat & !EXT3_INCOMPAT_SUPP != 0 {
        FsType::Ext4
    } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
        FsType::Ext3
    } else {
        FsType::Ext2
    };
    let mut blocks = u64::from(u32le(&sb, 4));
    if incompat & EXT_INCOMPAT_64BIT != 0 {
        blocks |= u64::from(u32le(&sb, 0x150)) << 32;
    }
    let mut p = FsProbe::new(fstype);
    p.label = label(bytes(&sb, 120, 16));
    p.uuid = uuid(bytes(&sb, 104, 16));
    p.block_size = Some(block_size);
    p.version = Some(format!("{}.{}", u32le(&sb, 76), u16le(&sb, 62)));
    p.size = blocks.checked_mul(u64::from(block_size));
    p.ext_features = Some(ExtFeatures {
        compat: feature_names(compat, EXT_COMPAT, 'C'),
        incompat: feature_names(incompat, EXT_INCOMPAT, 'I'),
        ro_compat: feature_names(ro_compat, EXT_RO_COMPAT, 'R'),
    });
    Ok(Some(p))
}

// ---- FAT -----------------------------------------------------------------------------------

fn probe_fat(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    let Some(bs) = read_opt(dev, 0, 512)? else {
        return Ok(None);
    };
    let jump = bs.first().copied().unwrap_or(0);
    let jump_ok = jump == 0xe9 || (jump == 0xeb && bs.get(2) == Some(&0x90));
    if !jump_ok || bs.get(510..512) != Some([0x55u8, 0xaa].as_slice()) {
        return Ok(None);
    }
    let bps = u16le(&bs, 11);
    let spc = bs.get(13).copied().unwrap_or(0);
    let reserved = u16le(&bs, 14);
    let fats = bs.get(16).copied().unwrap_or(0);
    let root_entries = u16le(&bs, 17);
    let total16 = u16le(&bs, 19);
    let media = bs.get(21).copied().unwrap_or(0);
    let fat16_len = u16le(&bs, 22);
    let total32 = u32le(&bs, 32);
    let fat32_len = u32le(&bs, 36);
    if !matches!(bps, 512 | 1024 | 2048 | 4096)
        || spc == 0
        || !spc.is_power_of_two()
        || reserved == 0
        || !(1..=4).contains(&fats)
        || !(media >= 0xf8 || media == 0xf0)
    {
        return Ok(None);
    }
    let total = if total16 != 0 {
        u64::from(total16)
    } else {
        u64::from(total32)
    };
    let fat_len = if fat16_len != 0 {
        u64::from(fat16_len)
    } else {
        u64::from(fat32_len)
    };
    if total == 0 || fat_len == 0 {
        return Ok(None);
    }
    let bps64 = u64::from(bps);
    let root_sectors = (u64::from(root_entries) * 32).div_ceil(bps64);
    let meta = u64::from(reserved) + u64::from(fats) * fat_len + root_sectors;
    let Some(data) = total.checked_sub(meta) else {
        return Ok(None);
    };
    let clusters = data / u64::from(spc);
    let is32 = fat16_len == 0;
    let version = if is32 {
        "FAT32"
    } else if clusters < 4085 {
        "FAT12"
    } else {
        "FAT16"
    };
    let (id_off, label_off) = if is32 { (67, 71) } else { (39, 43) };
    // The extended boot signature (0x29, or 0x28 without label) says the fields exist.
    let ext_sig = bs.get(id_off - 1).copied().unwrap_or(0);
    let mut p = FsProbe::new(FsType::Vfat);
    p.version = Some(version.to_string());
    p.block_size = Some(u32::from(bps) * u32::from(spc));
    p.size = total.checked_mul(bps64);
    if ext_sig == 0x29 || ext_sig == 0x28 {
        let id = u32le(&bs, id_off);
        p.uuid = Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff));
    }
    if ext_sig == 0x29 {
        p.label = label(bytes(&bs, label_off, 11)).filter(|l| l != "NO NAME");
    }
    // The root directory's volume-label entry wins over the boot sector (as in blkid).
    if let Some(l) = fat_root_label(dev, &bs, is32, meta - root_sectors, root_entries)? {
        p.label = Some(l);
    }
    Ok(Some(p))
}

/// The volume label entry of the root directory (first cluster only for FAT32).
fn fat_root_label(
    dev: &dyn BlockDev,
    bs: &[u8],
    is32: bool,
    root_start_sector: u64,
    root_entries: u16,
) -> Result<Option<String>> {
    let bps = u64::from(u16le(bs, 11));
    let spc = u64::from(bs.get(13).copied().unwrap_or(1));
    let (off, len) = if is32 {
        let root_cluster = u64::from(u32le(bs, 44));
        let Some(c) = root_cluster.checked_sub(2) else {
            return Ok(None);
        };
        let sector = c
            .checked_mul(spc)
            .and_then(|s| s.checked_add(root_start_sector));
        (sector.and_then(|s| s.checked_mul(bps)), spc * bps)
    } else {
        (
            root_start_sector.checked_mul(bps),
            u64::from(root_entries) * 32,
        )
    };
    let Some(off) = off else { return Ok(None) };
    let len = len.min(64 * 1024) as usize;
    let Some(dir) = read_opt(dev, off, len)? else {
        return Ok(None);
    };
    for e in dir.chunks_exact(32) {
        match e.first() {
            Some(0) => break,
            Some(0xe5) => continue,
            _ => {}
        }
        let attr = e.get(11).copied().unwrap_or(0);
        if attr & 0x0f == 0x08 {
            return Ok(label(bytes(e, 0, 11)).filter(|l| l != "NO NAME"));
        }
    }
    Ok(None)
}

// ---- XFS, Btrfs ----------------------------------------------------------------------------

fn probe_xfs(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    let Some(sb) = read_opt(dev, 0, 512)? else {
        return Ok(None);
    };
    if bytes(&sb, 0, 4) != b"XFSB" {
        return Ok(None);
    }
    let bsize = u32be(&sb, 4);
    if !(512..=65536).contains(&bsize) || !bsize.is_power_of_two() {
        return Ok(None);
    }
    let mut p = FsProbe::new(FsType::Xfs);
    p.block_size = Some(bsize);
    p.uuid = uuid(bytes(&sb, 32, 16));
    p.label = label(bytes(&sb, 108, 12));
    p.size = u64be(&sb, 8).checked_mul(u64::from(bsize));
    Ok(Some(p))
}

fn probe_btrfs(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    let Some(sb) = read_opt(dev, 0x10000, 4096)? else {
        return Ok(None);
    };
    if bytes(&sb, 0x40, 8) != b"_BHRfS_M" {
        return Ok(None);
    }
    let mut p = FsProbe::new(FsType::Btrfs);
    p.uuid = uuid(bytes(&sb, 0x20, 16));
    p.label = label(bytes(&sb, 0x12b, 256));
    p.block_size = Some(u32le(&sb, 0x90)).filter(|b| *b != 0);
    p.size = Some(u64le(&sb, 0x70));
    Ok(Some(p))
}

// ---- swap ----------------------------------------------------------------------------------

fn probe_swap(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    for page in [4096u64, 8192, 16384, 32768, 65536] {
        let Some(magic) = read_opt(dev, page - 10, 10)? else {
            return Ok(None);
        };
        let v2 = magic == b"SWAPSPACE2";
        if !v2 && magic != b"SWAP-SPACE" {
            continue;
        }
        let mut p = FsProbe::new(FsType::Swap);
        p.block_size = u32::try_from(page).ok();
        if v2 {
            p.version = Some("1".to_string());
            if let Some(h) = read_opt(dev, 1024, 44)? {
                let last_page = u64::from(u32le(&h, 4));
                p.size = last_page.checked_add(1).and_then(|n| n.checked_mul(page));
                p.uuid = uuid(bytes(&h, 12, 16));
                p.label = label(bytes(&h, 28, 16));
            }
        } else {
            p.version = Some("0".to_string());
        }
        return Ok(Some(p));
    }
    Ok(None)
}

// ---- LVM2, LUKS ----------------------------------------------------------------------------

fn probe_lvm(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    // The label may be in any of the first four sectors.
    for sector in 0..4u64 {
        let Some(s) = read_opt(dev, sector * 512, 512)? else {
            return Ok(None);
        };
        if bytes(&s, 0, 8) != b"LABELONE" || bytes(&s, 24, 8) != b"LVM2 001" {
            continue;
        }
        let raw = bytes(&s, 32, 32);
        let mut p = FsProbe::new(FsType::LvmPv);
        p.version = Some("LVM2 001".to_string());
        if raw.iter().all(u8::is_ascii_alphanumeric) && raw.len() == 32 {
            // blkid prints it 6-4-4-4-4-4-6.
            let s = String::from_utf8_lossy(raw);
            let cuts = [0, 6, 10, 14, 18, 22, 26, 32];
            let parts: Vec<&str> = cuts.windows(2).filter_map(|w| s.get(w[0]..w[1])).collect();
            p.uuid = Some(parts.join("-"));
        }
        return Ok(Some(p));
    }
    Ok(None)
}

fn probe_luks(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    let Some(h) = read_opt(dev, 0, 512)? else {
        return Ok(None);
    };
    if bytes(&h, 0, 6) != b"LUKS\xba\xbe" {
        return Ok(None);
    }
    let version = u16::from_be_bytes([
        h.get(6).copied().unwrap_or(0),
        h.get(7).copied().unwrap_or(0),
    ]);
    let mut p = FsProbe::new(FsType::Luks);
    p.version = Some(version.to_string());
    p.uuid = label(bytes(&h, 168, 40));
    if version == 2 {
        p.label = label(bytes(&h, 24, 48));
    }
    Ok(Some(p))
}

// ---- ISO 9660 ------------------------------------------------------------------------------

fn probe_iso9660(dev: &dyn BlockDev) -> Result<Option<FsProbe>> {
    let Some(pvd) = read_opt(dev, 0x8000, 2048)? else {
        return Ok(None);
    };
    if bytes(&pvd, 1, 5) != b"CD001" || pvd.first() != Some(&1) {
        return Ok(None);
    }
    let mut p = FsProbe::new(FsType::Iso9660);
    p.label = label(bytes(&pvd, 40, 32));
    p.block_size = Some(u32::from(u16le(&pvd, 128))).filter(|b| *b != 0);
    // blkid's UUID: the creation (else modification) time "YYYY-MM-DD-HH-MM-SS-cc".
    for off in [813usize, 830] {
        let t = bytes(&pvd, off, 16);
        if t.len() == 16 && t.iter().all(u8::is_ascii_digit) && t.iter().any(|&c| c != b'0') {
            let s = String::from_utf8_lossy(t);
            p.uuid = Some(format!(
                "{}-{}-{}-{}-{}-{}-{}",
                &s[0..4],
                &s[4..6],
                &s[6..8],
                &s[8..10],
                &s[10..12],
                &s[12..14],
                &s[14..16]
            ));
            break;
        }
    }
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgscrub_disk::MemDev;

    fn dev_with(len: usize, at: usize, data: &[u8]) -> MemDev {
        let mut v = vec![0u8; len];
        v[at..at + data.len()].copy_from_slice(data);
        MemDev::from_vec(v)
    }

    #[test]
    fn tiny_and_empty_devices_are_unknown() {
        for len in [0usize, 1, 511, 512, 1500, 4095] {
            let d = MemDev::zeroed(len);
            assert_eq!(probe(&d).unwrap().fstype, FsType::Unknown);
        }
    }

    #[test]
    fn luks2_header() {
        let mut h = vec![0u8; 4096];
        h[0..6].copy_from_slice(b"LUKS\xba\xbe");
        h[7] = 2;
        h[24..29].copy_from_slice(b"crypt");
        h[168..204].copy_from_slice(b"6b1b5a2e-0c5e-4f5b-9d56-0e4f7a1d2c3b");
        let p = probe(&MemDev::from_vec(h)).unwrap();
        assert_eq!(p.fstype, FsType::Luks);
        assert_eq!(p.version.as_deref(), Some("2"));
        assert_eq!(p.label.as_deref(), Some("crypt"));
        assert_eq!(
            p.uuid.as_deref(),
            Some("6b1b5a2e-0c5e-4f5b-9d56-0e4f7a1d2c3b")
        );
    }

    #[test]
    fn lvm_label_in_second_sector() {
        let mut s = vec![0u8; 8192];
        s[512..520].copy_from_slice(b"LABELONE");
        s[536..544].copy_from_slice(b"LVM2 001");
        s[544..576].copy_from_slice(b"abcdefABCDEF0123456789abcdefABCD");
        let p = probe(&MemDev::from_vec(s)).unwrap();
        assert_eq!(p.fstype, FsType::LvmPv);
        assert_eq!(
            p.uuid.as_deref(),
            Some("abcdef-ABCD-EF01-2345-6789-abcd-efABCD")
        );
    }

    #[test]
    fn xfs_btrfs_iso_magics() {
        let mut x = vec![0u8; 4096];
        x[0..4].copy_from_slice(b"XFSB");
        x[4..8].copy_from_slice(&4096u32.to_be_bytes());
        x[108..112].copy_from_slice(b"root");
        let p = probe(&MemDev::from_vec(x)).unwrap();
        assert_eq!((p.fstype, p.label.as_deref()), (FsType::Xfs, Some("root")));

        let b = dev_with(0x20000, 0x10040, b"_BHRfS_M");
        assert_eq!(probe(&b).unwrap().fstype, FsType::Btrfs);
        // The magic past the end of a short device is not read.
        assert_eq!(
            probe(&MemDev::zeroed(0x10040)).unwrap().fstype,
            FsType::Unknown
        );

        let mut iso = vec![0u8; 0x9000];
        iso[0x8000] = 1;
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        iso[0x8028..0x8030].copy_from_slice(b"MYDISC  ");
        iso[0x8000 + 813..0x8000 + 829].copy_from_slice(b"2024010203040500");
        let p = probe(&MemDev::from_vec(iso)).unwrap();
        assert_eq!(p.fstype, FsType::Iso9660);
        assert_eq!(p.label.as_deref(), Some("MYDISC"));
        assert_eq!(p.uuid.as_deref(), Some("2024-01-02-03-04-05-00"));
    }

    #[test]
    fn swap_with_64k_pages() {
        let s = dev_with(1 << 17, 65536 - 10, b"SWAPSPACE2");
        let p = probe(&s).unwrap();
        assert_eq!(p.fstype, FsType::Swap);
        assert_eq!(p.block_size, Some(65536));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545f4914f6cdd1du64;
        for _ in 0..300 {
            let mut v = vec![0u8; 70_000];
            for b in v.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            // Plant magics so the parsers get past their first check.
            v[1024 + 56] = 0x53;
            v[1024 + 57] = 0xef;
            let _ = probe(&MemDev::from_vec(v.clone()));
            v[1024 + 56] = 0;
            v[0] = 0xeb;
            v[2] = 0x90;
            v[510] = 0x55;
            v[511] = 0xaa;
            v[11] = 0;
            v[12] = 2;
            let _ = probe(&MemDev::from_vec(v));
        }
    }
}
