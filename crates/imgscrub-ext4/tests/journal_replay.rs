#![allow(clippy::unwrap_used, clippy::expect_used)]
//! jbd2 replay against the real tools: journals written with debugfs (`jo`/`jw`/`jc`), replayed
//! by us on copy A and by `e2fsck -fy` on copy B; the replayed blocks and the journal
//! superblock must be byte-identical and `e2fsck -fn` clean on A.

use imgscrub_disk::{BlockDev, RawFile};
use imgscrub_ext4::Ext4Error;
use imgscrub_ext4::journal::{self, ReplayReport};
use imgscrub_testkit::{assert_e2fsck_clean, debugfs, make_ext4, require_tools, run, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;

const MAGIC: [u8; 4] = [0xC0, 0x3B, 0x39, 0x98];

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    image: PathBuf,
    block_size: u64,
}

/// A filesystem of `variant` with a few files.
fn fixture(variant: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("hello"), b"hello world\n").unwrap();
    std::fs::write(src.join("sub/big"), vec![0x5au8; 300_000]).unwrap();
    let image = dir.path().join("fs.img");
    if !make_ext4(variant, &src, &image, 32) {
        return None;
    }
    let block_size = dumpe2fs_field(&image, "Block size:").parse().unwrap();
    Some(Fixture {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        image,
        block_size,
    })
}

fn dumpe2fs_h(image: &Path) -> String {
    let o = run(Command::new("dumpe2fs").arg("-h").arg(image));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn dumpe2fs_field(image: &Path, field: &str) -> String {
    dumpe2fs_h(image)
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {field} in dumpe2fs -h"))
}

/// Free blocks (per debugfs `ffb`), to write journal copies to without breaking the fs.
fn free_blocks(image: &Path, n: usize) -> Vec<u64> {
    let out = debugfs(image, &format!("ffb {n} 100"));
    let list = out.split(':').nth(1).unwrap_or("");
    list.split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect()
}

/// Run debugfs -w with a command file.
fn debugfs_w(image: &Path, cmds: &str) {
    let dir = image.parent().unwrap();
    let f = dir.join("cmds");
    std::fs::write(&f, cmds).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&f)
            .arg(image),
    );
}

/// The journal inode's logical → physical map (from `debugfs stat <8>`, an independent reader).
fn journal_map(image: &Path, block_size: u64) -> Vec<u64> {
    let out = debugfs(image, "stat <8>");
    let size: u64 = out
        .split_whitespace()
        .skip_while(|w| *w != "Size:")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let len = (size / block_size) as usize;
    let mut map = vec![u64::MAX; len];
    let body = out
        .split("EXTENTS:")
        .nth(1)
        .or_else(|| out.split("BLOCKS:").nth(1))
        .unwrap();
    for item in body.split([',', '\n']) {
        let item = item.trim();
        let Some((l, p)) = item.split_once("):") else {
            continue;
        };
        let l = l.trim_start_matches('(');
        let parse_range = |s: &str| -> Option<(u64, u64)> {
            match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => {
                    let a = s.parse().ok()?;
                    Some((a, a))
                }
            }
        };
        let (Some((l0, l1)), Some((p0, _))) = (parse_range(l), parse_range(p)) else {
            continue; // (IND), (DIND) …
        };
        for i in l0..=l1 {
            map[i as usize] = p0 + (i - l0);
        }
    }
    assert!(map.iter().all(|&b| b != u64::MAX), "unmapped journal block");
    map
}

fn replay_ours(image: &Path, block_size: u64) -> Result<ReplayReport, Ext4Error> {
    let map = journal_map(image, block_size);
    let dev = RawFile::open_rw(image).unwrap();
    let len = map.len() as u64;
    let f = move |l: u64| -> imgscrub_ext4::Result<u64> {
        map.get(l as usize)
            .copied()
            .ok_or_else(|| Ext4Error::corrupt("journal", "unmapped"))
    };
    journal::replay(&dev, block_size as u32, &f, len)
}

fn read_block(image: &Path, bs: u64, b: u64) -> Vec<u8> {
    let dev = RawFile::open(image).unwrap();
    let mut buf = vec![0u8; bs as usize];
    dev.read_at(&mut buf, b * bs).unwrap();
    buf
}

fn e2fsck_fy(image: &Path) {
    let o = run(Command::new("e2fsck").arg("-fy").arg(image));
    // 0 = clean, 1 = errors corrected (the replay itself counts).
    assert!(
        o.status.code().is_some_and(|c| c <= 1),
        "e2fsck -fy failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Replay with us on a copy and with e2fsck on another; compare.
fn compare_with_e2fsck(fx: &Fixture) -> ReplayReport {
    assert!(dumpe2fs_h(&fx.image).contains("needs_recovery"));
    let a = fx.dir.join("a.img");
    let b = fx.dir.join("b.img");
    std::fs::copy(&fx.image, &a).unwrap();
    std::fs::copy(&fx.image, &b).unwrap();
    let jmap = journal_map(&fx.image, fx.block_size);
    let report = replay_ours(&a, fx.block_size).unwrap();
    e2fsck_fy(&b);
    assert!(!dumpe2fs_h(&a).contains("needs_recovery"));
    assert_e2fsck_clean(&a);
    for &blk in &report.blocks_written {
        assert_eq!(
            read_block(&a, fx.block_size, blk),
            read_block(&b, fx.block_size, blk),
            "replayed block {blk} differs from e2fsck's replay"
        );
    }
    // The journal superblock: empty, same sequence as e2fsck leaves.
    let ja = read_block(&a, fx.block_size, jmap[0]);
    let jb = read_block(&b, fx.block_size, jmap[0]);
    assert_eq!(
        ja[..1024],
        jb[..1024],
        "journal superblock differs from e2fsck's"
    );
    // No other block differs except the superblock's (e2fsck updates counters in it).
    let sb_block = 1024 / fx.block_size;
    let len = std::fs::metadata(&a).unwrap().len() / fx.block_size;
    let da = std::fs::read(&a).unwrap();
    let db = std::fs::read(&b).unwrap();
    let bs = fx.block_size as usize;
    for blk in 0..len as usize {
        if blk as u64 == sb_block {
            continue;
        }
        assert!(
            da[blk * bs..(blk + 1) * bs] == db[blk * bs..(blk + 1) * bs],
            "block {blk} differs between our replay and e2fsck's"
        );
    }
    report
}

fn write_data(fx: &Fixture, name: &str, data: &[u8]) -> PathBuf {
    let p = fx.dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Several committed transactions over free blocks, an escaped block, multiple copies of one
/// block (the newest wins).
fn replay_variant(variant: &str, jo: &str) {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture(variant) else { return };
    let bs = fx.block_size as usize;
    let free = free_blocks(&fx.image, 6);
    let d1 = write_data(&fx, "d1", &pattern(1, 2 * bs));
    let d2 = write_data(&fx, "d2", &pattern(2, bs));
    let mut esc = pattern(3, bs);
    esc[..4].copy_from_slice(&MAGIC);
    let d3 = write_data(&fx, "d3", &esc);
    debugfs_w(
        &fx.image,
        &format!(
            "jo {jo}\njw -b {},{} {}\njw -b {} {}\njw -b {} {}\njw -b {} {}\njc\n",
            free[0],
            free[1],
            d1.display(),
            free[0],
            d2.display(),
            free[2],
            d3.display(),
            free[3],
            d2.display(),
        ),
    );
    let report = compare_with_e2fsck(&fx);
    assert!(report.log_was_dirty);
    assert_eq!(report.transactions, 4, "{report:?}");
    assert_eq!(report.blocks_written, {
        let mut v = vec![free[0], free[1], free[2], free[3]];
        v.sort();
        v
    });
    let a = fx.dir.join("a.img");
    assert_eq!(read_block(&a, fx.block_size, free[0]), pattern(2, bs));
    assert_eq!(
        read_block(&a, fx.block_size, free[2]),
        esc,
        "escaped block restored"
    );
}

#[test]
fn journal_replay_default_csum_v3() {
    replay_variant("default", "-c");
}

#[test]
fn journal_replay_csum_v2() {
    replay_variant("default", "-c -v 2");
}

#[test]
fn journal_replay_64bit_no_csum() {
    replay_variant("default", "");
}

#[test]
fn journal_replay_no64_csum_v3() {
    replay_variant("no64", "-c");
}

#[test]
fn journal_replay_ext3() {
    replay_variant("ext3", "");
}

#[test]
fn journal_replay_ext3_v1_checksum() {
    replay_variant("ext3", "-c");
}

#[test]
fn journal_replay_1k_blocks() {
    replay_variant("b1024", "-c");
}

#[test]
fn journal_replay_nocsum_fs() {
    replay_variant("nocsum", "");
}

/// A revoked block is not replayed from transactions up to the revoking one.
#[test]
fn journal_replay_revoke() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    let bs = fx.block_size as usize;
    let free = free_blocks(&fx.image, 3);
    let before = read_block(&fx.image, fx.block_size, free[0]);
    let d1 = write_data(&fx, "d1", &pattern(7, bs));
    debugfs_w(
        &fx.image,
        &format!(
            "jo -c\njw -b {} {}\njw -b {} -r {} {}\njc\n",
            free[0],
            d1.display(),
            free[1],
            free[0],
            d1.display()
        ),
    );
    let report = compare_with_e2fsck(&fx);
    assert_eq!(report.nr_revoke_hits, 1, "{report:?}");
    assert!(report.nr_revokes >= 1);
    assert_eq!(report.blocks_written, vec![free[1]]);
    let a = fx.dir.join("a.img");
    assert_eq!(read_block(&a, fx.block_size, free[0]), before);
}

/// A transaction without a commit block is not replayed.
#[test]
fn journal_replay_uncommitted_tail() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    let bs = fx.block_size as usize;
    let free = free_blocks(&fx.image, 3);
    let before = read_block(&fx.image, fx.block_size, free[1]);
    let d1 = write_data(&fx, "d1", &pattern(9, bs));
    debugfs_w(
        &fx.image,
        &format!(
            "jo -c\njw -b {} {}\njw -c -b {} {}\njc\n",
            free[0],
            d1.display(),
            free[1],
            d1.display()
        ),
    );
    let report = compare_with_e2fsck(&fx);
    assert_eq!(report.transactions, 1);
    assert_eq!(report.blocks_written, vec![free[0]]);
    let a = fx.dir.join("a.img");
    assert_eq!(read_block(&a, fx.block_size, free[1]), before);
}

/// A journalled copy of a file's data block: after replay the file reads the new contents.
#[test]
fn journal_replay_file_data_visible() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    let bs = fx.block_size as usize;
    let out = debugfs(&fx.image, "bmap /hello 0");
    let blk: u64 = out.trim().parse().unwrap();
    let mut new = vec![0u8; bs];
    new[..12].copy_from_slice(b"HELLO WORLD\n");
    let d = write_data(&fx, "d", &new);
    debugfs_w(
        &fx.image,
        &format!("jo -c\njw -b {blk} {}\njc\n", d.display()),
    );
    compare_with_e2fsck(&fx);
    let a = fx.dir.join("a.img");
    assert_eq!(debugfs(&a, "cat /hello"), "HELLO WORLD\n");
}

/// RECOVER set on an empty journal: only the flags change.
#[test]
fn journal_replay_empty_log() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    debugfs_w(&fx.image, "ssv feature_incompat 0x2c6\n");
    // Not all debugfs versions accept that; set the flag with `feature needs_recovery`.
    debugfs_w(&fx.image, "feature needs_recovery\n");
    assert!(dumpe2fs_h(&fx.image).contains("needs_recovery"));
    let report = compare_with_e2fsck(&fx);
    assert!(!report.log_was_dirty);
    assert!(report.blocks_written.is_empty());
}

fn flip_and_expect_refusal(fx: &Fixture, journal_lblk: u64, byte: usize) {
    let map = journal_map(&fx.image, fx.block_size);
    let off = map[journal_lblk as usize] * fx.block_size + byte as u64;
    let dev = RawFile::open_rw(&fx.image).unwrap();
    let mut b = [0u8; 1];
    dev.read_at(&mut b, off).unwrap();
    b[0] ^= 0x55;
    dev.write_at(&b, off).unwrap();
    drop(dev);
    let before = std::fs::read(&fx.image).unwrap();
    let err = replay_ours(&fx.image, fx.block_size).unwrap_err();
    assert!(
        matches!(
            err,
            Ext4Error::NeedsRecovery(_) | Ext4Error::Checksum { .. } | Ext4Error::Corrupt { .. }
        ),
        "{err}"
    );
    eprintln!("refused as expected: {err}");
    assert_eq!(std::fs::read(&fx.image).unwrap(), before, "image modified");
}

fn two_transactions(fx: &Fixture) -> Vec<u64> {
    let bs = fx.block_size as usize;
    let free = free_blocks(&fx.image, 3);
    let d1 = write_data(fx, "d1", &pattern(11, bs));
    debugfs_w(
        &fx.image,
        &format!(
            "jo -c\njw -b {} {}\njw -b {} {}\njc\n",
            free[0],
            d1.display(),
            free[1],
            d1.display()
        ),
    );
    free
}

// Log layout of `two_transactions` (s_first = 1): 1 descriptor, 2 data, 3 commit,
// 4 descriptor, 5 data, 6 commit.

#[test]
fn journal_bad_data_checksum_refused() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    two_transactions(&fx);
    flip_and_expect_refusal(&fx, 2, 100);
}

#[test]
fn journal_bad_descriptor_checksum_refused() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    two_transactions(&fx);
    // Byte 300 of the first descriptor is in the unused tag area: only the tail csum breaks.
    flip_and_expect_refusal(&fx, 1, 300);
}

#[test]
fn journal_bad_commit_checksum_refused() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    two_transactions(&fx);
    flip_and_expect_refusal(&fx, 6, 200);
}

#[test]
fn journal_bad_superblock_checksum_refused() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    two_transactions(&fx);
    flip_and_expect_refusal(&fx, 0, 0x60);
}

#[test]
fn journal_bad_superblock_magic_refused() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("ext3") else { return };
    two_transactions(&fx);
    flip_and_expect_refusal(&fx, 0, 1);
}

// ---------------------------------------------------------------------------------------
// A journal crafted by hand (csum v3, 64bit): the log wraps around the end of the journal,
// a revoke in a later transaction cancels a block of an earlier one, an escaped block gets its
// magic back. Checked against e2fsck's replay.

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

fn crc(seed: u32, data: &[u8]) -> u32 {
    imgscrub_ext4::csum::crc32c_raw(seed, data)
}

fn header(bs: usize, kind: u32, seq: u32) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    b[..4].copy_from_slice(&MAGIC);
    put32(&mut b, 4, kind);
    put32(&mut b, 8, seq);
    b
}

fn set_tail(b: &mut [u8], seed: u32) {
    let n = b.len();
    put32(b, n - 4, 0);
    let c = crc(seed, b);
    put32(b, n - 4, c);
}

/// A descriptor block: one tag3 per (fs block, flags, data).
fn descriptor(bs: usize, seq: u32, seed: u32, tags: &[(u64, u32, &[u8])]) -> Vec<u8> {
    let mut b = header(bs, 1, seq);
    let mut off = 12;
    for (i, (blk, flags, data)) in tags.iter().enumerate() {
        let mut flags = *flags;
        if i > 0 {
            flags |= 2; // SAME_UUID
        }
        if i + 1 == tags.len() {
            flags |= 8; // LAST_TAG
        }
        put32(&mut b, off, *blk as u32);
        put32(&mut b, off + 4, flags);
        put32(&mut b, off + 8, (*blk >> 32) as u32);
        let c = crc(crc(seed, &seq.to_be_bytes()), data);
        put32(&mut b, off + 12, c);
        off += 16;
        if flags & 2 == 0 {
            off += 16; // UUID (left zero)
        }
    }
    set_tail(&mut b, seed);
    b
}

fn commit(bs: usize, seq: u32, seed: u32, secs: u64) -> Vec<u8> {
    let mut b = header(bs, 2, seq);
    b[0x30..0x38].copy_from_slice(&secs.to_be_bytes());
    let c = crc(seed, &b);
    put32(&mut b, 0x10, c);
    b
}

fn revoke(bs: usize, seq: u32, seed: u32, blocks: &[u64]) -> Vec<u8> {
    let mut b = header(bs, 5, seq);
    let mut off = 16;
    for blk in blocks {
        b[off..off + 8].copy_from_slice(&blk.to_be_bytes());
        off += 8;
    }
    put32(&mut b, 12, off as u32);
    set_tail(&mut b, seed);
    b
}

#[test]
fn journal_replay_crafted_wrap_revoke_escape() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    let bs = fx.block_size as usize;
    let map = journal_map(&fx.image, fx.block_size);
    let free = free_blocks(&fx.image, 3);
    let (a, b, c) = (free[0], free[1], free[2]);
    let mut img = std::fs::read(&fx.image).unwrap();
    let jblk = |l: usize| map[l] as usize * bs;

    // Journal superblock: csum v3 + 64bit + revoke, log starting 3 blocks before the end.
    let j0 = jblk(0);
    let maxlen = u32::from_be_bytes(img[j0 + 0x10..j0 + 0x14].try_into().unwrap()) as usize;
    let first = u32::from_be_bytes(img[j0 + 0x14..j0 + 0x18].try_into().unwrap()) as usize;
    let seq = 100u32;
    put32(&mut img[j0..j0 + bs], 0x18, seq);
    put32(&mut img[j0..j0 + bs], 0x1C, (maxlen - 3) as u32);
    put32(&mut img[j0..j0 + bs], 0x28, 0x1 | 0x2 | 0x10);
    img[j0 + 0x50] = 4;
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&img[j0 + 0x30..j0 + 0x40]);
    let seed = crc(!0, &uuid);
    put32(&mut img[j0..j0 + bs], 0xFC, 0);
    let sc = crc(!0, &img[j0..j0 + 1024]);
    put32(&mut img[j0..j0 + bs], 0xFC, sc);

    let da = pattern(21, bs);
    let db = pattern(22, bs);
    let mut dc = pattern(23, bs);
    dc[..4].copy_from_slice(&MAGIC);
    let mut dc_log = dc.clone();
    dc_log[..4].fill(0); // escaped in the log
    let log: Vec<(usize, Vec<u8>)> = vec![
        (
            maxlen - 3,
            descriptor(bs, seq, seed, &[(a, 0, &da), (b, 0, &db)]),
        ),
        (maxlen - 2, da.clone()),
        (maxlen - 1, db.clone()),
        (first, commit(bs, seq, seed, 1_700_000_100)),
        (first + 1, revoke(bs, seq + 1, seed, &[b])),
        (first + 2, descriptor(bs, seq + 1, seed, &[(c, 1, &dc_log)])),
        (first + 3, dc_log.clone()),
        (first + 4, commit(bs, seq + 1, seed, 1_700_000_200)),
        (first + 5, vec![0u8; bs]),
    ];
    for (l, data) in &log {
        img[jblk(*l)..jblk(*l) + bs].copy_from_slice(data);
    }
    std::fs::write(&fx.image, &img).unwrap();
    debugfs_w(&fx.image, "feature needs_recovery\n");
    let before_b = read_block(&fx.image, fx.block_size, b);

    let report = compare_with_e2fsck(&fx);
    assert_eq!(report.transactions, 2, "{report:?}");
    assert_eq!(report.nr_revoke_hits, 1);
    let mut want = vec![a, c];
    want.sort();
    assert_eq!(report.blocks_written, want);
    let ai = fx.dir.join("a.img");
    assert_eq!(read_block(&ai, fx.block_size, a), da);
    assert_eq!(
        read_block(&ai, fx.block_size, b),
        before_b,
        "revoked block written"
    );
    assert_eq!(
        read_block(&ai, fx.block_size, c),
        dc,
        "escaped block not restored"
    );
}

/// A journal on an external device cannot be replayed: a clear `NeedsRecovery` naming the
/// reason, from `journal::replay` and from `Ext4Fs::open`, and the image untouched.
#[test]
fn journal_external_device_refused() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let Some(fx) = fixture("default") else { return };
    debugfs_w(
        &fx.image,
        "ssv journal_inum 0\nssv journal_dev 0x801\nfeature needs_recovery\n",
    );
    let before = std::fs::read(&fx.image).unwrap();
    let dev = RawFile::open_rw(&fx.image).unwrap();
    let f = |_: u64| -> imgscrub_ext4::Result<u64> { Err(Ext4Error::corrupt("journal", "none")) };
    let err = journal::replay(&dev, fx.block_size as u32, &f, 1024).unwrap_err();
    assert!(
        matches!(&err, Ext4Error::NeedsRecovery(m) if m.contains("external")),
        "{err:?}"
    );
    drop(dev);
    let err = imgscrub_ext4::fs::Ext4Fs::open(
        RawFile::open_rw(&fx.image).unwrap(),
        imgscrub_ext4::fs::OpenOptions { writable: true },
    )
    .unwrap_err();
    assert!(
        matches!(&err, Ext4Error::NeedsRecovery(m) if m.contains("external")),
        "{err:?}"
    );
    assert!(
        std::fs::read(&fx.image).unwrap() == before,
        "image modified"
    );
}

/// Random hand-made journals (csum v3, 64bit): 1–5 transactions over a pool of blocks, random
/// revokes and escaped blocks, the log starting a few blocks before the end so that it wraps.
/// Our replay must equal e2fsck's, byte for byte.
#[test]
fn journal_replay_random_vs_e2fsck() {
    require_tools!("mke2fs", "debugfs", "e2fsck", "dumpe2fs");
    let seeds: u64 = std::env::var("IMGSCRUB_JOURNAL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    for seed in 1..=seeds {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let Some(fx) = fixture(if seed % 2 == 0 { "default" } else { "b1024" }) else {
            return;
        };
        let bs = fx.block_size as usize;
        let map = journal_map(&fx.image, fx.block_size);
        let pool = free_blocks(&fx.image, 6);
        let mut img = std::fs::read(&fx.image).unwrap();
        let jblk = |l: usize| map[l] as usize * bs;
        let j0 = jblk(0);
        let maxlen = u32::from_be_bytes(img[j0 + 0x10..j0 + 0x14].try_into().unwrap()) as usize;
        let first = u32::from_be_bytes(img[j0 + 0x14..j0 + 0x18].try_into().unwrap()) as usize;
        let seq0 = 1000 + rnd(1000) as u32;
        let start = maxlen - 1 - rnd(8) as usize;
        put32(&mut img[j0..j0 + bs], 0x18, seq0);
        put32(&mut img[j0..j0 + bs], 0x1C, start as u32);
        put32(&mut img[j0..j0 + bs], 0x28, 0x1 | 0x2 | 0x10);
        img[j0 + 0x50] = 4;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&img[j0 + 0x30..j0 + 0x40]);
        let jseed = crc(!0, &uuid);
        put32(&mut img[j0..j0 + bs], 0xFC, 0);
        let sc = crc(!0, &img[j0..j0 + 1024]);
        put32(&mut img[j0..j0 + bs], 0xFC, sc);

        let wrap = |p: usize| if p >= maxlen { p - (maxlen - first) } else { p };
        let mut pos = start;
        let mut put = |img: &mut Vec<u8>, data: &[u8]| {
            let at = jblk(pos);
            img[at..at + bs].copy_from_slice(data);
            pos = wrap(pos + 1);
        };
        let ntx = 1 + rnd(5) as u32;
        for t in 0..ntx {
            let seq = seq0 + t;
            if t > 0 && rnd(100) < 40 {
                let r: Vec<u64> = (0..1 + rnd(2)).map(|_| pool[rnd(6) as usize]).collect();
                put(&mut img, &revoke(bs, seq, jseed, &r));
            }
            let n = 1 + rnd(4) as usize;
            let mut blocks: Vec<u64> = Vec::new();
            while blocks.len() < n {
                let b = pool[rnd(6) as usize];
                if !blocks.contains(&b) {
                    blocks.push(b);
                }
            }
            let mut datas = Vec::new();
            for (i, _) in blocks.iter().enumerate() {
                let mut d = pattern(
                    (seed as u8)
                        .wrapping_mul(7)
                        .wrapping_add((t * 5) as u8 + i as u8),
                    bs,
                );
                let escaped = rnd(100) < 25;
                if escaped {
                    d[..4].fill(0); // the log copy of a block that began with the magic
                }
                datas.push((d, if escaped { 1u32 } else { 0 }));
            }
            let tags: Vec<(u64, u32, &[u8])> = blocks
                .iter()
                .zip(&datas)
                .map(|(b, (d, f))| (*b, *f, d.as_slice()))
                .collect();
            put(&mut img, &descriptor(bs, seq, jseed, &tags));
            for (d, _) in &datas {
                put(&mut img, d);
            }
            put(
                &mut img,
                &commit(bs, seq, jseed, 1_700_000_000 + u64::from(t)),
            );
        }
        put(&mut img, &vec![0u8; bs]);
        std::fs::write(&fx.image, &img).unwrap();
        debugfs_w(&fx.image, "feature needs_recovery\n");
        let report = compare_with_e2fsck(&fx);
        eprintln!(
            "seed {seed}: start {start}/{maxlen}, {ntx} transactions, {} blocks written, {} revoke hits",
            report.blocks_written.len(),
            report.nr_revoke_hits
        );
        assert_eq!(report.transactions, ntx, "seed {seed}: {report:?}");
    }
}
