#![allow(clippy::unwrap_used, clippy::expect_used)]
//! sparsify() and free_ranges_of_disk() on a dirty GPT disk (BIOS boot, FAT ESP, ext4 root,
//! swap, gaps full of garbage), checked with zerofree, e2fsck, fsck.vfat, blkid and
//! `qemu-img compare` against a twin zeroed by zerofree and by hand.

use imgscrub_disk::{BlockDev, RawFile, Slice};
use imgscrub_fs::fat::FatGeometry;
use imgscrub_fs::filesystem::FreeRange;
use imgscrub_shrink::{
    Action, ConvertOptions, ExtFreeRanges, NoProgress, SparsifyOptions, convert,
    free_ranges_of_disk, free_ranges_of_disk_with, sparsify,
};
use imgscrub_testkit::{find_tool, require_tools, run, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;
// Partition layout (bytes): BIOS boot 1..2 MiB, ESP 2..18, root 18..46, gap 46..48,
// swap 48..52, then an unpartitioned tail up to the backup GPT.
const DISK: u64 = 64 * MIB;
const ESP: (u64, u64) = (2 * MIB, 16 * MIB);
const ROOT: (u64, u64) = (18 * MIB, 28 * MIB);
const SWAP: (u64, u64) = (48 * MIB, 4 * MIB);
const BIOS: (u64, u64) = (MIB, MIB);

fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

fn random_file(path: &Path, len: u64, seed: u64) {
    let mut s = seed | 1;
    let v: Vec<u8> = (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    std::fs::write(path, v).unwrap();
}

fn dd_in(src: &Path, disk: &Path, at: u64) {
    let data = std::fs::read(src).unwrap();
    RawFile::open_rw(disk).unwrap().write_at(&data, at).unwrap();
}

fn extract(disk: &Path, (start, len): (u64, u64), out: &Path) {
    let mut buf = vec![0u8; len as usize];
    RawFile::open(disk)
        .unwrap()
        .read_at(&mut buf, start)
        .unwrap();
    std::fs::write(out, buf).unwrap();
}

/// ext free ranges from `dumpe2fs` (an independent reader of the block bitmaps).
struct Dumpe2fs(PathBuf);

impl ExtFreeRanges for Dumpe2fs {
    fn ext_free_ranges(&self, fs: &dyn BlockDev) -> imgscrub_fs::Result<Vec<FreeRange>> {
        let mut buf = vec![0u8; fs.len() as usize];
        fs.read_at(&mut buf, 0)?;
        let tmp = self.0.join(format!("dumpe2fs-{}.img", std::process::id()));
        std::fs::write(&tmp, buf).unwrap();
        let out = run_ok(Command::new(tool("dumpe2fs")).arg(&tmp));
        std::fs::remove_file(&tmp).ok();
        Ok(parse_dumpe2fs(&out)
            .into_iter()
            .map(|(offset, len)| FreeRange { offset, len })
            .collect())
    }
}

fn parse_dumpe2fs(out: &str) -> Vec<(u64, u64)> {
    let bs: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut v = Vec::new();
    for l in out.lines() {
        // Per-group lines are indented; the superblock summary is not.
        let Some(list) = l.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for item in list.split(", ").filter(|s| !s.is_empty()) {
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
                None => {
                    let a = item.parse::<u64>().unwrap();
                    (a, a)
                }
            };
            v.push((a * bs, (b - a + 1) * bs));
        }
    }
    v
}

/// Build the dirty disk; returns its path.
fn build_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    random_file(&disk, DISK, 1); // garbage everywhere, gaps included
    run_ok(
        Command::new(tool("sgdisk"))
            .args(["-n1:2048:4095", "-t1:EF02"])
            .args(["-n2:4096:36863", "-t2:EF00"])
            .args(["-n3:36864:94207", "-t3:8300"])
            .args(["-n4:98304:106495", "-t4:8200"])
            .arg(&disk),
    );

    // ESP: FAT16 over garbage, a file kept, a big one deleted.
    let esp = dir.join("esp.img");
    extract(&disk, ESP, &esp);
    run_ok(
        Command::new(tool("mkfs.vfat"))
            .args(["-n", "ESP", "-i", "12345678"])
            .arg(&esp),
    );
    let keep = dir.join("keep.txt");
    std::fs::write(&keep, b"systemd-boot random seed stand-in\n".repeat(100)).unwrap();
    let junk = dir.join("junk.bin");
    random_file(&junk, 3 * MIB, 2);
    let img = format!("{}", esp.display());
    run_ok(
        Command::new("mcopy")
            .args(["-i", &img])
            .arg(&junk)
            .arg("::/JUNK.BIN"),
    );
    run_ok(
        Command::new("mcopy")
            .args(["-i", &img])
            .arg(&keep)
            .arg("::/KEEP.TXT"),
    );
    run_ok(Command::new("mdel").args(["-i", &img, "::/JUNK.BIN"]));
    dd_in(&esp, &disk, ESP.0);

    // Root: ext4 over garbage (no discard), a file kept, a big one written then removed.
    let root = dir.join("root.img");
    extract(&disk, ROOT, &root);
    run_ok(
        Command::new(tool("mkfs.ext4"))
            .args(["-q", "-F", "-E", "nodiscard", "-L", "root"])
            .arg(&root),
    );
    let junk2 = dir.join("junk2.bin");
    random_file(&junk2, 6 * MIB, 3);
    run_ok(
        Command::new(tool("debugfs"))
            .args(["-w", "-R"])
            .arg(format!("write {} junk", junk2.display()))
            .arg(&root),
    );
    run_ok(
        Command::new(tool("debugfs"))
            .args(["-w", "-R"])
            .arg(format!("write {} keep", keep.display()))
            .arg(&root),
    );
    run_ok(
        Command::new(tool("debugfs"))
            .args(["-w", "-R", "rm junk"])
            .arg(&root),
    );
    dd_in(&root, &disk, ROOT.0);

    // Swap over garbage.
    let swap = dir.join("swap.img");
    extract(&disk, SWAP, &swap);
    run_ok(
        Command::new(tool("mkswap"))
            .args([
                "-L",
                "swaplbl",
                "-U",
                "0f0e0d0c-0b0a-4908-8706-050403020100",
            ])
            .arg(&swap),
    );
    dd_in(&swap, &disk, SWAP.0);
    disk
}

/// The twin: ext4 zeroed by zerofree, FAT free clusters, swap data and gaps zeroed by hand.
fn build_twin(dir: &Path, disk: &Path) -> PathBuf {
    let twin = dir.join("twin.img");
    std::fs::copy(disk, &twin).unwrap();
    let root = dir.join("twin-root.img");
    extract(&twin, ROOT, &root);
    let mut sb = vec![0u8; 1024];
    RawFile::open(&root)
        .unwrap()
        .read_at(&mut sb, 1024)
        .unwrap();
    run_ok(Command::new(tool("zerofree")).arg(&root));
    // zerofree closes the filesystem read-write, which rewrites the superblock (write time,
    // checksum): put the original back, only the free blocks are the point of comparison.
    RawFile::open_rw(&root)
        .unwrap()
        .write_at(&sb, 1024)
        .unwrap();
    dd_in(&root, &twin, ROOT.0);
    let dev = RawFile::open_rw(&twin).unwrap();
    let zero = |s: u64, l: u64| dev.write_at(&vec![0u8; l as usize], s).unwrap();
    let esp = Slice::new(&dev, ESP.0, ESP.1).unwrap();
    for r in FatGeometry::read(&esp).unwrap().free_ranges(&esp).unwrap() {
        zero(ESP.0 + r.offset, r.len);
    }
    zero(SWAP.0 + 4096, SWAP.1 - 4096);
    zero(46 * MIB, 2 * MIB); // gap between root and swap
    let tail_end = DISK - 33 * 512; // backup entries + header
    zero(52 * MIB, tail_end - 52 * MIB);
    twin
}

fn zerofree_nonzero(fs: &Path) -> u64 {
    let out = run_ok(Command::new(tool("zerofree")).args(["-n", "-v"]).arg(fs));
    let line = out.lines().rev().find(|l| l.contains('/')).unwrap();
    line.trim().split('/').next().unwrap().parse().unwrap()
}

fn compare(a: &Path, b: &Path, fmt_b: &str) -> bool {
    let o = run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", fmt_b])
        .arg(a)
        .arg(b));
    if !o.status.success() {
        eprintln!("qemu-img compare: {}", String::from_utf8_lossy(&o.stdout));
    }
    o.status.success()
}

#[test]
fn sparsify_gpt_disk_matches_zerofree_twin() {
    require_tools!(
        "qemu-img",
        "sgdisk",
        "mkfs.vfat",
        "mcopy",
        "mdel",
        "mkfs.ext4",
        "debugfs",
        "dumpe2fs",
        "zerofree",
        "e2fsck",
        "fsck.vfat",
        "mkswap",
        "blkid"
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path());
    let twin = build_twin(dir.path(), &disk);
    let root_before = dir.path().join("root-before.img");
    extract(&disk, ROOT, &root_before);
    assert!(zerofree_nonzero(&root_before) > 0, "fixture is not dirty");
    assert!(!compare(&twin, &disk, "raw"));

    // The built-in ext4 engine supplies the ext4 free ranges.
    let opts = SparsifyOptions::default();
    // Single pass: convert with the free map as `skip` gives the twin, input untouched.
    let input_bytes = std::fs::read(&disk).unwrap();
    {
        let dev = RawFile::open(&disk).unwrap();
        let free = free_ranges_of_disk_with(&dev, &opts).unwrap();
        let out = dir.path().join("single-pass.qcow2");
        let skip_opts = ConvertOptions {
            skip: Some(&free),
            ..ConvertOptions::default()
        };
        let rep = convert(&dev, &out, &skip_opts, &NoProgress).unwrap();
        assert!(rep.bytes_skipped >= free.total());
        run_ok(Command::new("qemu-img").args(["check"]).arg(&out));
        assert!(
            compare(&twin, &out, "qcow2"),
            "convert --sparsify differs from the twin"
        );
    }
    assert!(
        std::fs::read(&disk).unwrap() == input_bytes,
        "input modified"
    );

    let dev = RawFile::open_rw(&disk).unwrap();
    let rep = sparsify(&dev, &opts, &NoProgress).unwrap();
    drop(dev);
    assert!(rep.zeroed > 0, "{rep:#?}");
    let skipped: Vec<_> = rep
        .areas
        .iter()
        .filter(|a| matches!(a.action, Action::Skipped(_)))
        .map(|a| a.content.as_str())
        .collect();
    assert_eq!(skipped, ["bios-boot"], "{rep:#?}");
    let root_area = rep.areas.iter().find(|a| a.index == 3).unwrap();
    assert!(root_area.zeroed > 0, "{root_area:?}");

    // The tables, the area before the first partition and the BIOS boot partition are
    // untouched (garbage included).
    let after = std::fs::read(&disk).unwrap();
    let keep_end = (BIOS.0 + BIOS.1) as usize;
    assert!(after[..keep_end] == input_bytes[..keep_end]);
    let backup = (DISK - 33 * 512) as usize;
    assert!(after[backup..] == input_bytes[backup..]);

    // Oracles.
    let root = dir.path().join("root-after.img");
    extract(&disk, ROOT, &root);
    assert_eq!(zerofree_nonzero(&root), 0);
    imgscrub_testkit::assert_e2fsck_clean(&root);
    let esp = dir.path().join("esp-after.img");
    extract(&disk, ESP, &esp);
    run_ok(Command::new(tool("fsck.vfat")).arg("-n").arg(&esp));
    let kept =
        run_ok(Command::new("mtype").args(["-i", &esp.display().to_string(), "::/KEEP.TXT"]));
    assert!(kept.starts_with("systemd-boot random seed"));
    let swap = dir.path().join("swap-after.img");
    extract(&disk, SWAP, &swap);
    let blkid = run_ok(
        Command::new(tool("blkid"))
            .args(["-p", "-o", "export"])
            .arg(&swap),
    );
    assert!(blkid.contains("TYPE=swap"), "{blkid}");
    assert!(blkid.contains("LABEL=swaplbl"), "{blkid}");
    assert!(
        blkid.contains("UUID=0f0e0d0c-0b0a-4908-8706-050403020100"),
        "{blkid}"
    );
    run_ok(Command::new(tool("sgdisk")).arg("-v").arg(&disk));
    assert!(
        compare(&twin, &disk, "raw"),
        "sparsified disk differs from the twin"
    );

    // Idempotent: a second run finds everything zero and writes nothing.
    let dev = RawFile::open_rw(&disk).unwrap();
    let again = sparsify(&dev, &opts, &NoProgress).unwrap();
    assert_eq!(again.zeroed, 0);
    assert_eq!(again.already_zero, again.examined);
    // Whole free blocks became holes.
    let holes: u64 = dev
        .allocation(0, DISK)
        .unwrap()
        .iter()
        .filter(|r| r.kind.reads_as_zero())
        .map(|r| r.len)
        .sum();
    assert!(
        holes >= rep.zeroed / 2,
        "holes {holes}, zeroed {}",
        rep.zeroed
    );
}

#[test]
fn ext4_engine_free_ranges_match_dumpe2fs() {
    require_tools!(
        "sgdisk",
        "mkfs.vfat",
        "mcopy",
        "mdel",
        "mkfs.ext4",
        "debugfs",
        "mkswap",
        "dumpe2fs"
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path());
    let dev = RawFile::open(&disk).unwrap();
    let ext = Dumpe2fs(dir.path().to_path_buf());
    let with_dumpe2fs = SparsifyOptions {
        ext: Some(&ext),
        ..SparsifyOptions::default()
    };
    let a = free_ranges_of_disk_with(&dev, &with_dumpe2fs).unwrap();
    let b = free_ranges_of_disk(&dev).unwrap();
    assert_eq!(a, b);
    // Swap keeps its first page, gaps are included.
    assert!(b.covers(SWAP.0 + 4096, SWAP.1 - 4096));
    assert!(!b.covers(SWAP.0, 1));
    assert!(b.covers(46 * MIB, 2 * MIB));
    assert!(!b.covers(BIOS.0, 1));
    assert!(!b.covers(0, 1));
}

#[test]
fn sparsify_a_qcow2_image_in_place() {
    require_tools!(
        "qemu-img",
        "sgdisk",
        "mkfs.vfat",
        "mcopy",
        "mdel",
        "mkfs.ext4",
        "debugfs",
        "zerofree",
        "mkswap"
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = build_disk(dir.path());
    let twin = build_twin(dir.path(), &disk);
    let q = dir.path().join("disk.qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&disk)
            .arg(&q),
    );
    let img = imgscrub_qcow2::Qcow2::open(&q, &imgscrub_qcow2::OpenOptions::read_write()).unwrap();
    let rep = sparsify(&img, &SparsifyOptions::default(), &NoProgress).unwrap();
    drop(img);
    assert!(rep.zeroed > 0);
    run_ok(Command::new("qemu-img").arg("check").arg(&q));
    assert!(
        compare(&twin, &q, "qcow2"),
        "sparsified qcow2 differs from the twin"
    );
    // Reading it back through the qcow2 reader and converting gives the same image.
    let img = imgscrub_qcow2::Qcow2::open(&q, &imgscrub_qcow2::OpenOptions::read_only()).unwrap();
    let out = dir.path().join("out.qcow2");
    let r = convert(&img, &out, &ConvertOptions::default(), &NoProgress).unwrap();
    assert!(r.bytes_skipped > 0);
    run_ok(Command::new("qemu-img").arg("check").arg(&out));
    assert!(compare(&twin, &out, "qcow2"));
}

#[test]
fn mbr_gaps_spare_the_extended_partition_and_the_boot_area() {
    require_tools!("sfdisk", "mkswap", "blkid");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("mbr.img");
    random_file(&disk, 32 * MIB, 9);
    // p1 1..9 MiB (type c, garbage: unknown content), gap 9..10, extended 10..30 MiB with a
    // logical swap 11..20 MiB (EBR at 10 MiB, slack 20..30 inside the extended one),
    // unpartitioned tail 30..32 MiB.
    let mut child = Command::new(tool("sfdisk"))
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"label: dos\nstart=2048, size=16384, type=c\nstart=20480, size=40960, type=5\n\
              start=22528, size=18432, type=82\n",
        )
        .unwrap();
    assert!(child.wait().unwrap().success());
    let swap = dir.path().join("swap.img");
    extract(&disk, (11 * MIB, 9 * MIB), &swap);
    run_ok(
        Command::new(tool("mkswap"))
            .arg("-L")
            .arg("mbrswap")
            .arg(&swap),
    );
    dd_in(&swap, &disk, 11 * MIB);
    let before = std::fs::read(&disk).unwrap();

    let dev = RawFile::open_rw(&disk).unwrap();
    let rep = sparsify(&dev, &SparsifyOptions::default(), &NoProgress).unwrap();
    drop(dev);
    let after = std::fs::read(&disk).unwrap();
    let m = MIB as usize;
    // Untouched: MBR + boot area, p1 (unknown content), the extended partition's EBR and
    // slack, the swap header page.
    assert!(after[..9 * m] == before[..9 * m]);
    assert!(after[10 * m..11 * m + 4096] == before[10 * m..11 * m + 4096]);
    assert!(after[20 * m..30 * m] == before[20 * m..30 * m]);
    // Zeroed: the gap before the extended partition, swap data pages, the tail.
    assert!(after[9 * m..10 * m].iter().all(|&b| b == 0));
    assert!(after[11 * m + 4096..20 * m].iter().all(|&b| b == 0));
    assert!(after[30 * m..].iter().all(|&b| b == 0));
    let gaps: Vec<_> = rep.areas.iter().filter(|a| a.content == "gap").collect();
    assert_eq!(gaps.len(), 2, "{rep:#?}");
    let blkid = run_ok(
        Command::new(tool("blkid"))
            .args(["-p", "-o", "export"])
            .arg({
                extract(&disk, (11 * MIB, 9 * MIB), &swap);
                &swap
            }),
    );
    assert!(blkid.contains("LABEL=mbrswap"), "{blkid}");
}
