#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The damaged-image suite (docs/safety.md): the sample image with seeded byte corruption in
//! its GPT, ext4 metadata (superblock, group descriptors, bitmaps, inode table, extent
//! headers, directory blocks) and, for the qcow2 form, its header, L1, L2 and refcount
//! tables. Every command (`prepare --profile linux`, `rm`, `sparsify`, `inspect`, `ls`)
//! either succeeds — and then `e2fsck -fn` finds no more problems than before — or fails
//! with a one-line message and leaves the file byte-identical. Never a panic, never a hang.
//! A failure exits with the status of a refused input (1, 3 or 4; see `imgscrub --help`).

use imgscrub_testkit::{fixture, require_tools, run, run_ok, tool};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::ext4_partition;

const BIN: &str = env!("CARGO_BIN_EXE_imgscrub");
/// A command still running after this long is taken to hang. Generous (minutes), so that a
/// slow run on a loaded machine is not mistaken for a hang.
const TIMEOUT: Duration = imgscrub_testkit::PATIENCE;

struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// A named byte range of the image to corrupt.
struct Region {
    name: &'static str,
    start: u64,
    len: u64,
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn run_with_timeout(args: &[&str]) -> Outcome {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("IMGSCRUB_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Outcome {
                code: status.code(),
                stderr,
            };
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("imgscrub {args:?} hung (killed after {TIMEOUT:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `e2fsck -fn` on the ext4 root of a raw disk: (exit code, problems reported).
fn fsck_root(raw_disk: &[u8], root: (u64, u64), scratch: &Path) -> (i32, usize) {
    let (start, size) = (root.0 as usize, root.1 as usize);
    std::fs::write(scratch, &raw_disk[start..start + size]).unwrap();
    let o = run(tool("e2fsck").arg("-fn").arg(scratch));
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let problems = out.matches("? no").count() + out.matches("differences: ").count();
    (o.status.code().unwrap_or(-1), problems)
}

/// The raw disk bytes of an image (qcow2 via qemu-img convert), if readable.
fn raw_bytes(img: &Path, format: &str, scratch: &Path) -> Option<Vec<u8>> {
    if format == "raw" {
        return Some(std::fs::read(img).unwrap());
    }
    let o = run(tool("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(img)
        .arg(scratch));
    o.status.success().then(|| std::fs::read(scratch).unwrap())
}

/// `qemu-img check`: (exit code, errors found).
fn qemu_check(img: &Path) -> (i32, u64) {
    let o = run(tool("qemu-img").arg("check").arg(img));
    let out = String::from_utf8_lossy(&o.stdout);
    let errors = out
        .lines()
        .find_map(|l| l.strip_suffix(" errors were found on the image."))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (o.status.code().unwrap_or(-1), errors)
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Parse `dumpe2fs` and `debugfs` output of the pristine root filesystem into regions.
fn ext4_regions(root_fs: &Path, root_start: u64) -> Vec<Region> {
    let d = run_ok(tool("dumpe2fs").arg(root_fs));
    let field = |name: &str| -> u64 {
        d.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let bs = field("Block size");
    let num_after = |key: &str| -> u64 {
        let l = d.lines().find(|l| l.contains(key)).unwrap();
        let rest = &l[l.find(key).unwrap() + key.len()..];
        rest.trim()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let gdt = num_after("Group descriptors at ");
    let bb = num_after("Block bitmap at ");
    let it = num_after("Inode table at ");
    let dir_block = |path: &str| -> u64 {
        let o = run_ok(
            tool("debugfs")
                .arg("-R")
                .arg(format!("blocks {path}"))
                .arg(root_fs),
        );
        o.split_whitespace().next().unwrap().parse().unwrap()
    };
    let abs = |block: u64| root_start + block * bs;
    vec![
        Region {
            name: "ext4 superblock",
            start: root_start + 1024,
            len: 1024,
        },
        Region {
            name: "group descriptors",
            start: abs(gdt),
            len: 128,
        },
        Region {
            name: "bitmaps",
            start: abs(bb),
            len: 4 * bs,
        },
        Region {
            name: "inode table",
            start: abs(it),
            len: 64 * 256,
        },
        // The extent tree roots (i_block) of inodes 2 (/) and 12..27 (/boot, /etc, …).
        Region {
            name: "extent headers",
            start: abs(it) + 256 + 40,
            len: 60,
        },
        Region {
            name: "extent headers",
            start: abs(it) + 11 * 256 + 40,
            len: 16 * 256,
        },
        Region {
            name: "directory blocks",
            start: abs(dir_block("/")),
            len: bs,
        },
        Region {
            name: "directory blocks",
            start: abs(dir_block("/etc")),
            len: bs,
        },
    ]
}

fn qcow2_regions(q: &[u8]) -> Vec<Region> {
    let cluster = 1u64 << be32(q, 20);
    let l1_off = be64(q, 40);
    let l1_size = u64::from(be32(q, 36));
    let rt_off = be64(q, 48);
    let first_l2 = be64(q, l1_off as usize) & 0x00ff_ffff_ffff_fe00;
    let first_rb = be64(q, rt_off as usize);
    vec![
        Region {
            name: "qcow2 header",
            start: 0,
            len: 112,
        },
        Region {
            name: "qcow2 L1",
            start: l1_off,
            len: l1_size * 8,
        },
        Region {
            name: "qcow2 L2",
            start: first_l2,
            len: cluster.min(4096),
        },
        Region {
            name: "qcow2 refcount table",
            start: rt_off,
            len: 64,
        },
        Region {
            name: "qcow2 refcount block",
            start: first_rb,
            len: 256,
        },
        Region {
            name: "qcow2 refcounts in use",
            start: first_rb,
            len: 24,
        },
    ]
}

fn check_case(dir: &Path, damaged: &[u8], format: &str, root: (u64, u64), label: &str) {
    let img = dir.join(format!("case.{format}"));
    let scratch = dir.join("scratch.raw");
    let fs_scratch = dir.join("scratch.ext4");
    // e2fsck before (None when the disk cannot even be converted).
    std::fs::write(&img, damaged).unwrap();
    let before_img = dir.join(format!("before.{format}"));
    std::fs::write(&before_img, damaged).unwrap();
    let before = raw_bytes(&img, format, &scratch).map(|r| fsck_root(&r, root, &fs_scratch));
    let p = img.to_str().unwrap().to_owned();
    let cmds: [(&[&str], bool); 5] = [
        (&["prepare", "--profile", "linux"], true),
        (&["rm"], true),
        (&["sparsify"], true),
        (&["inspect", "--json"], false),
        (&["ls"], false),
    ];
    for (args, writes) in cmds {
        std::fs::write(&img, damaged).unwrap();
        let mut full: Vec<&str> = args.to_vec();
        full.push(&p);
        match args[0] {
            "rm" => full.push("/etc/hostname"),
            "ls" => full.push("/etc"),
            _ => {}
        }
        let o = run_with_timeout(&full);
        let what = format!("{label}: imgscrub {}", args.join(" "));
        assert_ne!(o.code, Some(101), "{what} panicked:\n{}", o.stderr);
        assert!(o.code.is_some(), "{what} died of a signal:\n{}", o.stderr);
        assert!(!o.stderr.contains("panicked"), "{what}:\n{}", o.stderr);
        let after = std::fs::read(&img).unwrap();
        if o.code != Some(0) {
            // Damaged (4) mostly; unsupported (3) when the damage sets a feature bit; 1 when
            // it leaves nothing recognisable ("no root filesystem"). Never usage or in use.
            assert!(
                matches!(o.code, Some(1 | 3 | 4)),
                "{what}: exit status {:?}, not one of a refused input:\n{}",
                o.code,
                o.stderr
            );
            let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(
                lines.len(),
                1,
                "{what}: not a one-line message:\n{}",
                o.stderr
            );
            assert!(
                after == damaged,
                "{what} failed and changed the file: {}",
                o.stderr
            );
            continue;
        }
        if !writes || after == damaged {
            continue;
        }
        // A successful edit: e2fsck no worse than before.
        let Some((b_code, b_problems)) = before else {
            continue;
        };
        let raw = raw_bytes(&img, format, &scratch)
            .unwrap_or_else(|| panic!("{what}: the image is unreadable after a successful edit"));
        let (a_code, a_problems) = fsck_root(&raw, root, &fs_scratch);
        assert!(
            a_code == 0 || (b_code != 0 && a_problems <= b_problems),
            "{what}: e2fsck worse after the edit (exit {b_code} → {a_code}, problems {b_problems} → {a_problems})"
        );
        if format == "qcow2" {
            let (b_code, b_errors) = qemu_check(&before_img);
            let (a_code, a_errors) = qemu_check(&img);
            assert!(
                a_code != 2 || (b_code == 2 && a_errors <= b_errors),
                "{what}: qemu-img check worse after the edit (exit {b_code} → {a_code}, errors {b_errors} → {a_errors})"
            );
        }
    }
}

fn suite(format: &str, cases: usize, seed: u64) {
    require_tools!("qemu-img", "e2fsck", "dumpe2fs", "debugfs");
    let t = tempfile::tempdir().unwrap();
    let q = t.path().join("sample.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &q).unwrap();
    let raw_path = t.path().join("sample.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&q)
            .arg(&raw_path),
    );
    let raw = std::fs::read(&raw_path).unwrap();
    // Root partition from the pristine image.
    let root = ext4_partition(&raw_path);
    let root_fs = t.path().join("root.ext4");
    std::fs::write(&root_fs, &raw[root.0 as usize..(root.0 + root.1) as usize]).unwrap();
    let (pristine, regions) = if format == "raw" {
        let mut r = vec![
            Region {
                name: "GPT header",
                start: 512,
                len: 92,
            },
            Region {
                name: "GPT entries",
                start: 1024,
                len: 256,
            },
        ];
        r.extend(ext4_regions(&root_fs, root.0));
        (raw, r)
    } else {
        let qb = std::fs::read(&q).unwrap();
        let r = qcow2_regions(&qb);
        (qb, r)
    };
    let mut rng = Rng(seed);
    let start = Instant::now();
    for i in 0..cases {
        let region = &regions[i % regions.len()];
        let mut damaged = pristine.clone();
        let n = 1 + rng.next(4);
        let mut at_list = Vec::new();
        for _ in 0..n {
            let at = region.start + rng.next(region.len);
            let Some(b) = damaged.get_mut(at as usize) else {
                continue;
            };
            *b ^= 1 + rng.next(255) as u8;
            at_list.push(at);
        }
        let label = format!("{format} case {i} ({}, bytes {at_list:?})", region.name);
        check_case(t.path(), &damaged, format, root, &label);
    }
    eprintln!(
        "{format}: {cases} damaged cases in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn damaged_raw_images_fail_cleanly_or_stay_consistent() {
    suite("raw", 160, 0xdead_beef_0001);
}

#[test]
fn damaged_qcow2_images_fail_cleanly_or_stay_consistent() {
    suite("qcow2", 60, 0xdead_beef_0002);
}
