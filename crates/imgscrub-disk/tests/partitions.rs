#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Partition discovery against the real tools: images made with sgdisk, sfdisk and fdisk,
//! results compared with `sfdisk --json` / `sgdisk -p` / `fdisk -l`; damaged inputs never
//! panic.

use imgscrub_disk::partition::{Partition, PartitionType, TableKind, discover};
use imgscrub_disk::{BlockDev, MemDev, RawFile};
use imgscrub_testkit::{require_tools, run_ok, tool};
use std::path::Path;

fn mkfile(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn sfdisk_json(img: &Path) -> serde_json::Value {
    let out = run_ok(tool("sfdisk").arg("--json").arg(img));
    serde_json::from_str(&out).unwrap()
}

/// The partition number at the end of an sfdisk node name (`/tmp/x/disk.img12` → 12).
fn node_index(node: &str) -> u32 {
    let digits: String = node
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap()
}

fn make_gpt(dir: &Path) -> std::path::PathBuf {
    let img = mkfile(dir, "gpt.img", 64 << 20);
    run_ok(
        tool("sgdisk")
            .args(["-n", "1:2048:+1M", "-t", "1:ef00", "-c", "1:EFI system"])
            .args(["-n", "2:0:+20M", "-t", "2:8300", "-c", "2:root ✓"])
            .args(["-n", "4:0:+8M", "-t", "4:8200", "-c", "4:swap"])
            .args(["-n", "3:0:0", "-t", "3:8e00", "-A", "3:set:2"])
            .arg(&img),
    );
    img
}

fn assert_same_as_sfdisk(img: &Path, parts: &[Partition], sector: u64) {
    let j = sfdisk_json(img);
    let want = j["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(want.len(), parts.len(), "{j}");
    for w in want {
        let idx = node_index(w["node"].as_str().unwrap());
        let p = parts.iter().find(|p| p.index == idx).unwrap();
        assert_eq!(
            p.start,
            w["start"].as_u64().unwrap() * sector,
            "partition {idx}"
        );
        assert_eq!(
            p.size,
            w["size"].as_u64().unwrap() * sector,
            "partition {idx}"
        );
        match p.ptype {
            PartitionType::Gpt(g) => {
                assert_eq!(
                    g.to_string(),
                    w["type"].as_str().unwrap().to_lowercase(),
                    "partition {idx}"
                );
                assert_eq!(
                    p.part_uuid,
                    w["uuid"].as_str().unwrap().to_lowercase(),
                    "partition {idx}"
                );
                assert_eq!(p.name, w["name"].as_str().unwrap_or(""), "partition {idx}");
            }
            PartitionType::Mbr(t) => {
                let wt = u8::from_str_radix(w["type"].as_str().unwrap(), 16).unwrap();
                assert_eq!(t, wt, "partition {idx}");
                assert_eq!(
                    p.bootable,
                    w["bootable"].as_bool().unwrap_or(false),
                    "partition {idx}"
                );
            }
            PartitionType::WholeDisk => panic!("whole disk in a table"),
        }
    }
}

#[test]
fn gpt_matches_sfdisk_and_sgdisk() {
    require_tools!("sgdisk", "sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = make_gpt(dir.path());
    let t = discover(&RawFile::open(&img).unwrap()).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert!(!t.read_only);
    let TableKind::Gpt {
        disk_guid,
        sector_size,
    } = t.kind
    else {
        panic!("{:?}", t.kind)
    };
    assert_eq!(sector_size, 512);
    let j = sfdisk_json(&img);
    assert_eq!(
        disk_guid.to_string(),
        j["partitiontable"]["id"].as_str().unwrap().to_lowercase()
    );
    assert_same_as_sfdisk(&img, &t.partitions, 512);
    let idx: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
    assert_eq!(idx, [1, 2, 3, 4]);
    assert_eq!(t.partitions[1].name, "root ✓");
    assert!(t.partitions[2].bootable, "legacy BIOS bootable attribute");
    assert_eq!(t.partitions[0].ptype.name(), Some("EFI System"));

    // sgdisk -p: "   1            2048            4095   1024.0 KiB  EF00  EFI system"
    let p = run_ok(tool("sgdisk").arg("-p").arg(&img));
    let rows: Vec<Vec<&str>> = p
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 4);
    for r in rows {
        let n: u32 = r[0].parse().unwrap();
        let start: u64 = r[1].parse().unwrap();
        let end: u64 = r[2].parse().unwrap();
        let part = t.partitions.iter().find(|p| p.index == n).unwrap();
        assert_eq!(part.start, start * 512);
        assert_eq!(part.end(), (end + 1) * 512);
    }
}

#[test]
fn gpt_with_4096_byte_sectors() {
    require_tools!("fdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = mkfile(dir.path(), "4k.img", 64 << 20);
    let mut child = tool("fdisk")
        .args(["-b", "4096"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"g\nn\n1\n\n+8M\nn\n2\n\n+4M\nt\n2\n19\nw\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let t = discover(&RawFile::open(&img).unwrap()).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert!(matches!(
        t.kind,
        TableKind::Gpt {
            sector_size: 4096,
            ..
        }
    ));
    // fdisk -l: "/path/4k.img1   256  2303  2048   8M Linux filesystem"
    let l = run_ok(
        tool("fdisk")
            .args(["-b", "4096", "-l", "-o", "Device,Start,Sectors"])
            .arg(&img),
    );
    let rows: Vec<(u32, u64, u64)> = l
        .lines()
        .filter(|l| l.starts_with(img.to_str().unwrap()))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                node_index(f[0]),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(t.partitions.len(), 2);
    for (n, start, sectors) in rows {
        let p = t.partitions.iter().find(|p| p.index == n).unwrap();
        assert_eq!(p.start, start * 4096);
        assert_eq!(p.size, sectors * 4096);
    }
    assert_eq!(t.partitions[0].size, 8 << 20);
    assert_eq!(t.partitions[1].ptype.name(), Some("Linux swap"));

    // Damaged primary header: the backup in the last 4 KiB sector is used.
    let mut d = std::fs::read(&img).unwrap();
    d[4096 + 60] ^= 0xff;
    let b = discover(&MemDev::from_vec(d)).unwrap();
    assert!(b.read_only);
    assert_eq!(b.kind, t.kind);
    assert_eq!(b.partitions, t.partitions);
}

const MBR_SCRIPT: &str = "label: dos
label-id: 0x1234abcd
start=2048, size=4096, type=83, bootable
start=6144, size=40960, type=5
start=10240, size=2048, type=83
start=14336, size=4096, type=82
start=20480, size=8192, type=8e
start=47104, size=8192, type=c
";

fn make_mbr(dir: &Path) -> std::path::PathBuf {
    let img = mkfile(dir, "mbr.img", 32 << 20);
    let mut child = tool("sfdisk")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(MBR_SCRIPT.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    img
}

#[test]
fn mbr_with_logical_partitions_matches_sfdisk() {
    require_tools!("sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = make_mbr(dir.path());
    let t = discover(&RawFile::open(&img).unwrap()).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(
        t.kind,
        TableKind::Mbr {
            disk_signature: 0x1234abcd
        }
    );
    assert_same_as_sfdisk(&img, &t.partitions, 512);
    let idx: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
    assert_eq!(idx, [1, 2, 3, 5, 6, 7]);
    assert!(t.partitions[1].is_extended());
    assert_eq!(t.partitions[4].part_uuid, "1234abcd-06");
    assert!(t.partitions[0].bootable);
}

#[test]
fn corrupt_primary_gpt_uses_backup() {
    require_tools!("sgdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = make_gpt(dir.path());
    let good = discover(&RawFile::open(&img).unwrap()).unwrap();
    let data = std::fs::read(&img).unwrap();
    // Damage the header (disk GUID byte), then the entry array (a name byte).
    for pos in [512 + 60, 1024 + 60] {
        let mut d = data.clone();
        d[pos] ^= 0x5a;
        let t = discover(&MemDev::from_vec(d)).unwrap();
        assert!(t.read_only, "pos {pos}");
        assert_eq!(t.partitions, good.partitions, "pos {pos}");
        assert_eq!(t.kind, good.kind);
        assert!(
            t.warnings.iter().any(|w| w.contains("backup")),
            "{:?}",
            t.warnings
        );
    }
    // Backup damaged: primary used, a warning.
    let mut d = data.clone();
    let n = d.len();
    d[n - 512 + 60] ^= 1;
    let t = discover(&MemDev::from_vec(d)).unwrap();
    assert!(!t.read_only);
    assert_eq!(t.partitions, good.partitions);
    assert!(t.warnings.iter().any(|w| w.contains("backup")));
    // Both damaged: a clean error.
    let mut d = data;
    d[512 + 60] ^= 1;
    d[n - 512 + 60] ^= 1;
    let e = discover(&MemDev::from_vec(d)).unwrap_err();
    assert!(e.to_string().contains("GPT"), "{e}");
}

/// A small GPT (4 MiB) for the corruption loops.
fn small_gpt(dir: &Path) -> Vec<u8> {
    let img = mkfile(dir, "small.img", 4 << 20);
    run_ok(
        tool("sgdisk")
            .args(["-n", "1:34:+1M", "-n", "2:0:+1M", "-n", "3:0:0"])
            .arg(&img),
    );
    std::fs::read(&img).unwrap()
}

/// xorshift: reproducible noise without a dependency.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn garbage_in_every_table_byte_never_panics() {
    require_tools!("sgdisk", "sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let gpt = small_gpt(dir.path());
    let n = gpt.len();
    let dev = MemDev::from_vec(gpt.clone());
    // Every byte of MBR, both headers and both entry arrays (first 34 and last 33 sectors).
    let positions: Vec<usize> = (0..34 * 512).chain(n - 33 * 512..n).collect();
    for &pos in &positions {
        let orig = gpt[pos];
        let v = (rng(&mut seed) as u8) | 1;
        dev.write_at(&[orig ^ v], pos as u64).unwrap();
        let _ = discover(&dev);
        dev.write_at(&[orig], pos as u64).unwrap();
    }
    // MBR + EBRs: sectors 0 and the EBRs of the sfdisk image.
    let mbr = std::fs::read(make_mbr(dir.path())).unwrap();
    let dev = MemDev::from_vec(mbr.clone());
    let ebrs = [0usize, 6144, 12288, 18432, 45056];
    for s in ebrs {
        for (pos, &orig) in mbr.iter().enumerate().skip(s * 512).take(512) {
            let v = (rng(&mut seed) as u8) | 1;
            dev.write_at(&[orig ^ v], pos as u64).unwrap();
            let _ = discover(&dev);
            dev.write_at(&[orig], pos as u64).unwrap();
        }
    }
    // Random multi-byte damage.
    for _ in 0..2000 {
        let mut d = gpt.clone();
        for _ in 0..8 {
            let pos = positions[(rng(&mut seed) % positions.len() as u64) as usize];
            d[pos] = rng(&mut seed) as u8;
        }
        let _ = discover(&MemDev::from_vec(d));
    }
}

#[test]
fn truncated_images() {
    require_tools!("sgdisk");
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read(make_gpt(dir.path())).unwrap();
    // Cut in the middle of partition 2: partitions 1 and 2.. survive, the rest warn.
    let cut = 16 << 20;
    let t = discover(&MemDev::from_vec(data[..cut].to_vec())).unwrap();
    assert_eq!(t.partitions.len(), 1, "{t:?}");
    assert!(t.warnings.iter().any(|w| w.contains("past the end")));
    for len in [0, 1, 511, 512, 513, 1024, 4096, 17 * 512, 34 * 512, 100_000] {
        let _ = discover(&MemDev::from_vec(data[..len].to_vec()));
    }
    assert!(
        discover(&MemDev::from_vec(Vec::new()))
            .unwrap()
            .partitions
            .is_empty()
    );
}

fn put_entry(s: &mut [u8], i: usize, boot: u8, ptype: u8, start: u32, sectors: u32) {
    let o = 446 + 16 * i;
    s[o] = boot;
    s[o + 4] = ptype;
    s[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
    s[o + 12..o + 16].copy_from_slice(&sectors.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
}

#[test]
fn ebr_loop_is_detected() {
    let mut d = vec![0u8; 8 << 20];
    put_entry(&mut d[..512], 0, 0, 0x05, 2048, 8192);
    // EBR at 2048: a logical partition, link to the second EBR at +4096.
    put_entry(&mut d[2048 * 512..2049 * 512], 0, 0, 0x83, 2048, 1024);
    put_entry(&mut d[2048 * 512..2049 * 512], 1, 0, 0x05, 4096, 4096);
    // Second EBR links back to the first.
    put_entry(&mut d[6144 * 512..6145 * 512], 0, 0, 0x83, 100, 1000);
    put_entry(&mut d[6144 * 512..6145 * 512], 1, 0, 0x05, 0, 8192);
    let t = discover(&MemDev::from_vec(d)).unwrap();
    let idx: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
    assert_eq!(idx, [1, 5, 6]);
    assert!(t.warnings.iter().any(|w| w.contains("loops")), "{t:?}");
}

#[test]
fn overlap_and_out_of_disk_warn() {
    let mut d = vec![0u8; 4 << 20];
    put_entry(&mut d[..512], 0, 0x80, 0x83, 2048, 2048);
    put_entry(&mut d[..512], 1, 0, 0x83, 3000, 2048);
    put_entry(&mut d[..512], 2, 0, 0x83, 6000, 1 << 30);
    let t = discover(&MemDev::from_vec(d)).unwrap();
    assert_eq!(t.partitions.len(), 2);
    assert!(t.warnings.iter().any(|w| w.contains("overlap")), "{t:?}");
    assert!(
        t.warnings.iter().any(|w| w.contains("past the end")),
        "{t:?}"
    );
}

#[test]
fn whole_disk_filesystems_have_no_table() {
    require_tools!("mkfs.ext4", "mkfs.vfat");
    let dir = tempfile::tempdir().unwrap();
    let ext4 = mkfile(dir.path(), "ext4.img", 8 << 20);
    run_ok(tool("mkfs.ext4").arg("-q").arg(&ext4));
    let vfat = mkfile(dir.path(), "vfat.img", 8 << 20);
    run_ok(tool("mkfs.vfat").arg(&vfat));
    for img in [ext4, vfat] {
        let dev = RawFile::open(&img).unwrap();
        let t = discover(&dev).unwrap();
        assert_eq!(t.kind, TableKind::None, "{}", img.display());
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.partitions[0].index, 0);
        assert_eq!(t.partitions[0].size, dev.len());
    }
}

#[test]
fn hybrid_mbr_and_gpt_without_protective_mbr() {
    require_tools!("sgdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = make_gpt(dir.path());
    let good = discover(&RawFile::open(&img).unwrap()).unwrap();
    let data = std::fs::read(&img).unwrap();

    // Hybrid: sgdisk -h puts partition 1 into the MBR beside the 0xEE entry.
    run_ok(tool("sgdisk").args(["-h", "1"]).arg(&img));
    let t = discover(&RawFile::open(&img).unwrap()).unwrap();
    assert_eq!(t.partitions, good.partitions);
    assert!(
        t.warnings.iter().any(|w| w.contains("hybrid")),
        "{:?}",
        t.warnings
    );

    // No MBR at all: the GPT is still found, with a warning.
    let mut d = data.clone();
    d[..512].fill(0);
    let t = discover(&MemDev::from_vec(d)).unwrap();
    assert_eq!(t.partitions, good.partitions);
    assert!(
        t.warnings.iter().any(|w| w.contains("protective")),
        "{:?}",
        t.warnings
    );

    // A valid non-protective MBR wins over a GPT header, as in Linux.
    let mut d = data;
    d[446..510].fill(0);
    put_entry(&mut d[..512], 0, 0, 0x83, 2048, 4096);
    let t = discover(&MemDev::from_vec(d)).unwrap();
    assert!(matches!(t.kind, TableKind::Mbr { .. }));
    assert_eq!(t.partitions.len(), 1);
    assert!(
        t.warnings.iter().any(|w| w.contains("GPT header")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn partitions_are_slices() {
    // Partitions are slices: the bytes of partition 2 read through Slice match the file.
    require_tools!("sgdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = make_gpt(dir.path());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"hello partition 2", 3 << 20)
        })
        .unwrap();
    let dev = RawFile::open(&img).unwrap();
    let t = discover(&dev).unwrap();
    let p2 = t.partitions.iter().find(|p| p.index == 2).unwrap();
    let s = p2.slice(&dev).unwrap();
    let mut b = [0u8; 17];
    s.read_at(&mut b, (3 << 20) - p2.start).unwrap();
    assert_eq!(&b, b"hello partition 2");
    assert_eq!(s.len(), p2.size);
}

#[test]
fn random_gpt_layouts_match_sfdisk() {
    require_tools!("sgdisk", "sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x1234_5678_9abc_def1u64;
    let types = ["8300", "ef00", "8200", "8e00", "0700", "fd00", "ef02"];
    for round in 0..8 {
        let img = mkfile(dir.path(), &format!("r{round}.img"), 64 << 20);
        let mut cmd = tool("sgdisk");
        cmd.args(["-a", "1"]); // no 1 MiB alignment: starts exactly as asked
        let n = 1 + rng(&mut seed) % 8;
        let mut slots: Vec<u64> = Vec::new();
        while (slots.len() as u64) < n {
            let s = 1 + rng(&mut seed) % 128;
            if !slots.contains(&s) {
                slots.push(s);
            }
        }
        let mut sector = 2048u64;
        for s in &slots {
            let size = 8 + rng(&mut seed) % 8192;
            let gap = rng(&mut seed) % 4096;
            let start = sector + gap;
            let end = start + size - 1;
            let ty = types[(rng(&mut seed) % types.len() as u64) as usize];
            cmd.args([
                "-n",
                &format!("{s}:{start}:{end}"),
                "-t",
                &format!("{s}:{ty}"),
            ]);
            cmd.args(["-c", &format!("{s}:part {s} of round {round}")]);
            sector = end + 1;
        }
        run_ok(cmd.arg(&img));
        let t = discover(&RawFile::open(&img).unwrap()).unwrap();
        assert!(t.warnings.is_empty(), "round {round}: {:?}", t.warnings);
        assert_same_as_sfdisk(&img, &t.partitions, 512);
        let mut want: Vec<u32> = slots.iter().map(|&s| s as u32).collect();
        want.sort_unstable();
        let got: Vec<u32> = t.partitions.iter().map(|p| p.index).collect();
        assert_eq!(got, want, "round {round}");
    }
}

#[test]
fn random_mbr_layouts_match_sfdisk() {
    require_tools!("sfdisk");
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0xdead_beef_cafe_f00du64;
    for round in 0..10 {
        let img = mkfile(dir.path(), &format!("m{round}.img"), 64 << 20);
        let mut script = format!("label: dos\nlabel-id: 0x{:08x}\n", rng(&mut seed) as u32);
        let primaries = 1 + rng(&mut seed) % 3;
        let mut sector = 2048u64;
        for _ in 0..primaries {
            let size = 2048 + rng(&mut seed) % 8192;
            let boot = if rng(&mut seed) & 3 == 0 {
                ", bootable"
            } else {
                ""
            };
            script += &format!("start={sector}, size={size}, type=83{boot}\n");
            sector += size + rng(&mut seed) % 2048;
        }
        let logicals = rng(&mut seed) % 12;
        if logicals > 0 {
            script += &format!("start={sector}, type=5\n");
            let mut l = sector + 2048;
            for _ in 0..logicals {
                let size = 2048 + rng(&mut seed) % 4096;
                let ty = ["83", "82", "8e", "c"][(rng(&mut seed) % 4) as usize];
                script += &format!("start={l}, size={size}, type={ty}\n");
                l += size + 2048;
            }
        }
        let mut child = tool("sfdisk")
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{script}");
        let t = discover(&RawFile::open(&img).unwrap()).unwrap();
        assert!(
            t.warnings.is_empty(),
            "round {round}: {:?}\n{script}",
            t.warnings
        );
        assert_same_as_sfdisk(&img, &t.partitions, 512);
        assert_eq!(
            t.partitions.iter().filter(|p| p.index >= 5).count() as u64,
            logicals,
            "{script}"
        );
    }
}

/// Recompute the CRCs of the GPT header at `hdr` (512-byte sectors) and of its entry array,
/// so that damage reaches the validation behind the CRC checks.
fn fix_gpt_crcs(d: &mut [u8], hdr: usize) {
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let le64 = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let entries_lba = le64(d, hdr + 72);
    let n = u64::from(le32(d, hdr + 80));
    let size = u64::from(le32(d, hdr + 84));
    if let Some(bytes) = n.checked_mul(size).filter(|b| *b <= 1 << 20)
        && let Some(off) = entries_lba.checked_mul(512)
        && off + bytes <= d.len() as u64
    {
        let crc = crc32fast::hash(&d[off as usize..(off + bytes) as usize]);
        d[hdr + 88..hdr + 92].copy_from_slice(&crc.to_le_bytes());
    }
    let hsize = (le32(d, hdr + 12) as usize).clamp(92, 512);
    d[hdr + 16..hdr + 20].fill(0);
    let crc = crc32fast::hash(&d[hdr..hdr + hsize]);
    d[hdr + 16..hdr + 20].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn damage_behind_valid_crcs_never_panics() {
    require_tools!("sgdisk");
    let dir = tempfile::tempdir().unwrap();
    let gpt = small_gpt(dir.path());
    let n = gpt.len();
    let mut seed = 0x0123_4567_89ab_cdefu64;
    let mut accepted = 0;
    for i in 0..4000 {
        let mut d = gpt.clone();
        let hdr = if i % 2 == 0 { 512 } else { n - 512 };
        for _ in 0..1 + rng(&mut seed) % 3 {
            // Header fields (first 92 bytes) or an entry's LBAs / type.
            let pos = if rng(&mut seed) & 1 == 0 {
                hdr + (rng(&mut seed) % 92) as usize
            } else {
                let entries = if hdr == 512 { 1024 } else { n - 33 * 512 };
                entries + (rng(&mut seed) % (4 * 128)) as usize
            };
            d[pos] = rng(&mut seed) as u8;
        }
        fix_gpt_crcs(&mut d, hdr);
        let dev = MemDev::from_vec(d);
        if let Ok(t) = discover(&dev) {
            accepted += 1;
            for p in &t.partitions {
                assert!(p.end() <= dev.len(), "{t:?}");
                assert!(p.slice(&dev).is_ok());
            }
        }
    }
    assert!(
        accepted > 1000,
        "only {accepted} damaged tables were read at all"
    );
}
