#![allow(clippy::unwrap_used, clippy::expect_used)]
//! FAT12/16/32 through `FatFs`, checked with the real tools: mkfs.vfat builds the volume,
//! mtools populates and reads back, `fsck.vfat -n` must stay clean after our edits, and our
//! free-cluster map must agree with fsck's count.

use imgscrub_disk::{BlockDev, RawFile};
use imgscrub_fs::filesystem::{FileType, NewAttr};
use imgscrub_fs::{FatFs, Filesystem, resolve, resolve_entry};
use imgscrub_testkit::{require_tools, run, run_ok};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn mkfat(dir: &Path, bits: u8, size_mb: u32) -> std::path::PathBuf {
    let img = dir.join(format!("fat{bits}.img"));
    run_ok(
        Command::new("truncate")
            .arg(format!("-s{size_mb}M"))
            .arg(&img),
    );
    run_ok(
        Command::new("mkfs.vfat")
            .args(["-F", &bits.to_string(), "-n", "ESP", "-i", "12345678"])
            .arg(&img),
    );
    let src = dir.join("seed.txt");
    std::fs::write(&src, b"hello from mtools\n").unwrap();
    let i = img.to_str().unwrap();
    run_ok(Command::new("mmd").args(["-i", i, "::/EFI", "::/EFI/debian", "::/loader"]));
    run_ok(
        Command::new("mcopy")
            .args(["-i", i])
            .arg(&src)
            .arg("::/EFI/debian/grub.cfg"),
    );
    run_ok(
        Command::new("mcopy")
            .args(["-i", i])
            .arg(&src)
            .arg("::/loader/A Long File Name.conf"),
    );
    img
}

fn fsck_clean(img: &Path) -> (u64, u64) {
    let o = run(Command::new("fsck.vfat").arg("-n").arg("-v").arg(img));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "fsck.vfat -n not clean:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Last line: "<img>: N files, USED/TOTAL clusters"
    let line = out.lines().rev().find(|l| l.contains(" clusters")).unwrap();
    let frac = line.split_whitespace().rev().nth(1).unwrap();
    let (used, total) = frac.split_once('/').unwrap();
    (used.parse().unwrap(), total.parse().unwrap())
}

fn mtype(img: &Path, path: &str) -> Vec<u8> {
    let o = run(Command::new("mtype")
        .args(["-i", img.to_str().unwrap()])
        .arg(format!("::{path}")));
    assert!(
        o.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn free_clusters(fs: &FatFs<Arc<RawFile>>) -> u64 {
    let cs = u64::from(fs.geometry().cluster_size);
    fs.free_ranges().unwrap().iter().map(|r| r.len / cs).sum()
}

fn edit_cycle(bits: u8, size_mb: u32) {
    require_tools!("mkfs.vfat", "fsck.vfat", "mtype", "mcopy");
    let t = tempfile::tempdir().unwrap();
    let img = mkfat(t.path(), bits, size_mb);
    let (used0, total) = fsck_clean(&img);
    let dev = Arc::new(RawFile::open_rw(&img).unwrap());
    let mut fs = FatFs::open(dev.clone()).unwrap();
    assert_eq!(fs.geometry().bits, bits);
    assert_eq!(
        free_clusters(&fs),
        total - used0,
        "free map vs fsck before edits"
    );

    // Reads: names (long and case-insensitive), content.
    let n = resolve(&fs, b"/efi/DEBIAN/grub.cfg", true).unwrap();
    assert_eq!(fs.read_all(n).unwrap(), b"hello from mtools\n");
    let names: Vec<_> = fs
        .read_dir(resolve(&fs, b"/loader", true).unwrap())
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    assert_eq!(names, ["A Long File Name.conf"]);

    // Edits: the systemd-boot random seed, a bigger file, truncate, rename, remove a tree.
    let r = resolve_entry(&fs, b"/loader/random-seed", true).unwrap();
    let seed = fs.create(r.parent, &r.name, &NewAttr::default()).unwrap();
    fs.write(seed, 0, &[0xA5; 32]).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let root = fs.root();
    let b = fs.create(root, b"big.bin", &NewAttr::default()).unwrap();
    fs.write(b, 0, &big).unwrap();
    fs.write(b, 250_000, b"tail").unwrap(); // past the end: zero-filled gap
    fs.truncate(b, 100_000).unwrap();
    let efi = resolve(&fs, b"/EFI", true).unwrap();
    fs.mkdir(efi, b"BOOT", &NewAttr::default()).unwrap();
    fs.rename(root, b"big.bin", efi, b"moved.bin").unwrap();
    assert_eq!(fs.remove_tree(efi, b"debian").unwrap(), 2);
    let loader = resolve(&fs, b"/loader", true).unwrap();
    fs.unlink(loader, b"a long file name.conf").unwrap();
    assert!(fs.rmdir(root, b"EFI").is_err(), "EFI is not empty");
    assert!(fs.unlink(root, b"EFI").is_err(), "unlink of a directory");
    fs.flush().unwrap();

    let (used1, total1) = fsck_clean(&img);
    assert_eq!(total1, total);
    assert_eq!(
        free_clusters(&fs),
        total - used1,
        "free map vs fsck after edits"
    );
    assert_eq!(mtype(&img, "/loader/random-seed"), vec![0xA5; 32]);
    assert_eq!(mtype(&img, "/EFI/moved.bin"), big[..100_000].to_vec());
    let listing = run_ok(Command::new("mdir").args(["-i", img.to_str().unwrap(), "-b", "::/EFI"]));
    assert!(
        listing.contains("BOOT") && !listing.to_lowercase().contains("debian"),
        "{listing}"
    );
    // Reopening sees the same tree.
    drop(fs);
    let fs = FatFs::open(dev.clone()).unwrap();
    let m = fs
        .stat(resolve(&fs, b"/EFI/moved.bin", true).unwrap())
        .unwrap();
    assert_eq!((m.file_type, m.size), (FileType::Regular, 100_000));
    assert!(dev.len() > 0);
}

#[test]
fn fat12_edits_stay_clean() {
    edit_cycle(12, 4);
}

#[test]
fn fat16_edits_stay_clean() {
    edit_cycle(16, 32);
}

#[test]
fn fat32_edits_stay_clean() {
    edit_cycle(32, 64);
}

#[test]
fn garbage_is_refused_without_panic() {
    use imgscrub_disk::MemDev;
    for fill in [0u8, 0xFF, 0x55] {
        let dev = Arc::new(MemDev::from_vec(vec![fill; 1 << 20]));
        assert!(FatFs::open(dev).is_err());
    }
    // A boot sector signature with nonsense geometry.
    let mut v = vec![0u8; 1 << 20];
    v[510] = 0x55;
    v[511] = 0xAA;
    v[11] = 0x00;
    v[12] = 0x02;
    v[13] = 3; // sectors per cluster not a power of two
    assert!(FatFs::open(Arc::new(MemDev::from_vec(v))).is_err());
}

/// `set_clock`: files created afterwards carry the fixed time (what mtools lists too), and
/// the same edits give the same bytes.
#[test]
fn fixed_clock_stamps_new_entries() {
    require_tools!("mkfs.vfat", "fsck.vfat", "mtype", "mcopy", "mdir");
    let t = tempfile::tempdir().unwrap();
    let img = mkfat(t.path(), 16, 32);
    let twin = t.path().join("twin.img");
    std::fs::copy(&img, &twin).unwrap();
    let when = imgscrub_fs::filesystem::Timestamp::new(1_700_000_000, 0); // 2023-11-14 22:13:20
    for path in [&img, &twin] {
        let mut fs = FatFs::open(Arc::new(RawFile::open_rw(path).unwrap())).unwrap();
        fs.set_clock(Some(when)).unwrap();
        let root = fs.root();
        let f = fs
            .create(root, b"stamped.txt", &NewAttr::default())
            .unwrap();
        fs.write(f, 0, b"x").unwrap();
        fs.flush().unwrap();
        assert_eq!(fs.stat(f).unwrap().mtime.secs, when.secs);
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    fsck_clean(&img);
    assert!(std::fs::read(&img).unwrap() == std::fs::read(&twin).unwrap());
    let listing = run_ok(Command::new("mdir").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        img.to_str().unwrap(),
        "::/",
    ]));
    assert!(listing.contains("2023-11-14"), "{listing}");
}

/// A damaged FAT where a subdirectory points back at its parent's cluster (a directory loop;
/// found by the `fat_image` fuzz target as a hang): walks and `remove_tree` stop with an
/// error naming the loop instead of running for ever.
#[test]
fn directory_loop_is_an_error_not_a_hang() {
    require_tools!("mkfs.vfat", "mmd");
    let t = tempfile::tempdir().unwrap();
    let img = mkfat(t.path(), 16, 32);
    let i = img.to_str().unwrap();
    run_ok(
        Command::new("mmd")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", i, "::/A", "::/A/B"]),
    );
    // Find the 8.3 entries "A" (in the root) and "B" (in A), then point B at A's cluster.
    let mut raw = std::fs::read(&img).unwrap();
    let entry = |raw: &[u8], name: &[u8; 11]| {
        (0..raw.len() - 32)
            .step_by(32)
            .find(|&o| &raw[o..o + 11] == name && raw[o + 11] & 0x10 != 0)
            .unwrap()
    };
    let a = entry(&raw, b"A          ");
    let b = entry(&raw, b"B          ");
    let a_cluster = [raw[a + 26], raw[a + 27]];
    raw[b + 26..b + 28].copy_from_slice(&a_cluster);
    std::fs::write(&img, &raw).unwrap();

    let started = std::time::Instant::now();
    let mut fs = FatFs::open(Arc::new(RawFile::open_rw(&img).unwrap())).unwrap();
    let deep = "/A/B".to_string() + &"/B".repeat(100);
    assert!(resolve(&fs, deep.as_bytes(), true).is_err());
    let root = fs.root();
    let err = fs.remove_tree(root, b"A").unwrap_err();
    assert!(err.to_string().contains("loop"), "{err}");
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}

/// A cluster chain that loops (a directory whose last cluster points back to its first;
/// found by the `fat_image` fuzz target as a hang inside fatfs): the volume is refused at
/// open with a message naming the loop, in a single pass over the FAT.
#[test]
fn looping_cluster_chain_is_refused() {
    require_tools!("mkfs.vfat", "mmd", "mcopy");
    let t = tempfile::tempdir().unwrap();
    let img = mkfat(t.path(), 16, 32);
    let dev = Arc::new(RawFile::open_rw(&img).unwrap());
    let g = FatFs::open(dev.clone()).unwrap().geometry();
    drop(dev);
    // Cluster 2 is the first directory mtools made; make it point to itself.
    let mut raw = std::fs::read(&img).unwrap();
    let at = g.fat_offset as usize + 2 * 2;
    raw[at..at + 2].copy_from_slice(&2u16.to_le_bytes());
    std::fs::write(&img, &raw).unwrap();
    let err = FatFs::open(Arc::new(RawFile::open(&img).unwrap()))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("loops"), "{err}");
}
