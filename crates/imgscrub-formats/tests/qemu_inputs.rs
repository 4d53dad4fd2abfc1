#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Images made by `qemu-img convert -O vmdk|vpc|vhdx|vdi|qed|qcow|parallels` from our
//! fixtures: the formats imgscrub reads give exactly what `qemu-img convert -O raw` gives; the
//! others are detected by name and refused, never taken for raw.

use imgscrub_disk::{AllocKind, BlockDev, RawFile};
use imgscrub_formats::{Kind, Vhd, Vmdk, detect_file};
use imgscrub_testkit::{fixture, random_bytes, require_tools, run_ok, tool};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The sample guest disk as raw, and a synthetic disk of an odd size (not a whole grain or
/// block) with data, zero runs and holes.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let sample = dir.join("sample.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(fixture("sample.qcow2"))
            .arg(&sample),
    );
    let odd = dir.join("odd.raw");
    let len = (5 << 20) + 1536;
    let mut data = vec![0u8; len];
    for (i, at) in [0usize, 70_000, 2 << 20, (4 << 20) + 100, len - 5000]
        .iter()
        .enumerate()
    {
        let n = (40_000).min(len - at);
        data[*at..*at + n].copy_from_slice(&random_bytes(n, i as u64 + 1));
    }
    // Compressible text too.
    for (i, b) in data[3 << 20..(3 << 20) + 300_000].iter_mut().enumerate() {
        *b = b"the quick brown fox "[i % 20];
    }
    std::fs::write(&odd, &data).unwrap();
    vec![sample, odd]
}

fn qemu_convert(input: &Path, out: &Path, fmt: &str, sub: Option<&str>) {
    let mut c = tool("qemu-img");
    c.args(["convert", "-f", "raw", "-O", fmt]);
    if let Some(s) = sub {
        c.args(["-o", &format!("subformat={s}")]);
    }
    run_ok(c.arg(input).arg(out));
}

fn qemu_raw(image: &Path, fmt: &str, out: &Path) -> Vec<u8> {
    run_ok(
        tool("qemu-img")
            .args(["convert", "-f", fmt, "-O", "raw"])
            .arg(image)
            .arg(out),
    );
    std::fs::read(out).unwrap()
}

fn read_all(dev: &dyn BlockDev) -> Vec<u8> {
    let mut v = vec![0u8; dev.len() as usize];
    // Odd-sized reads across grain and block boundaries.
    let mut pos = 0usize;
    let mut step = 3 * 4096 + 512;
    while pos < v.len() {
        let n = step.min(v.len() - pos);
        dev.read_at(&mut v[pos..pos + n], pos as u64).unwrap();
        pos += n;
        step = if step > 1 << 20 { 4096 + 512 } else { step * 3 };
    }
    v
}

/// What `allocation()` calls unallocated reads as zeros.
fn check_allocation(dev: &dyn BlockDev, data: &[u8]) {
    for r in dev.allocation(0, dev.len()).unwrap() {
        if r.kind != AllocKind::Data {
            let s = &data[r.offset as usize..(r.offset + r.len) as usize];
            assert!(
                s.iter().all(|&b| b == 0),
                "unallocated range {r:?} is not zero"
            );
        }
    }
}

#[test]
fn readable_formats_equal_qemu_img_raw() {
    require_tools!("qemu-img");
    let d = tempfile::tempdir().unwrap();
    for input in inputs(d.path()) {
        for (fmt, sub, kind, want_sub) in [
            (
                "vmdk",
                Some("monolithicSparse"),
                Kind::Vmdk,
                "monolithicSparse",
            ),
            (
                "vmdk",
                Some("streamOptimized"),
                Kind::Vmdk,
                "streamOptimized",
            ),
            ("vpc", Some("dynamic"), Kind::Vhd, "dynamic"),
            ("vpc", Some("fixed"), Kind::Vhd, "fixed"),
        ] {
            let img = d.path().join(format!("img.{fmt}"));
            qemu_convert(&input, &img, fmt, sub);
            let det = detect_file(&File::open(&img).unwrap(), &img).unwrap();
            assert_eq!(det.kind, kind, "{img:?}");
            assert_eq!(det.subformat.as_deref(), Some(want_sub), "{img:?}");
            assert!(det.readable());
            let want = qemu_raw(&img, fmt, &d.path().join("want.raw"));
            let dev: Box<dyn BlockDev> = match kind {
                Kind::Vmdk => Box::new(Vmdk::open(&img).unwrap()),
                _ => Box::new(Vhd::open(&img).unwrap()),
            };
            assert_eq!(dev.len(), want.len() as u64, "{input:?} as {fmt} {sub:?}");
            let got = read_all(dev.as_ref());
            assert!(
                got == want,
                "{input:?} as {fmt} {sub:?}: content differs from qemu-img"
            );
            check_allocation(dev.as_ref(), &got);
            assert!(dev.is_read_only());
            assert!(dev.write_at(b"x", 0).is_err());
        }
    }
}

#[test]
fn other_formats_are_named_and_refused() {
    require_tools!("qemu-img");
    let d = tempfile::tempdir().unwrap();
    let input = &inputs(d.path())[1];
    let cases: &[(&str, Option<&str>, Kind, Option<&str>)] = &[
        ("vhdx", Some("dynamic"), Kind::Vhdx, None),
        ("vhdx", Some("fixed"), Kind::Vhdx, None),
        ("vdi", None, Kind::Vdi, None),
        ("qed", None, Kind::Qed, None),
        ("qcow", None, Kind::Qcow, None),
        ("parallels", None, Kind::Parallels, None),
        (
            "vmdk",
            Some("monolithicFlat"),
            Kind::Vmdk,
            Some("monolithicFlat"),
        ),
        (
            "vmdk",
            Some("twoGbMaxExtentSparse"),
            Kind::Vmdk,
            Some("twoGbMaxExtentSparse"),
        ),
        (
            "vmdk",
            Some("twoGbMaxExtentFlat"),
            Kind::Vmdk,
            Some("twoGbMaxExtentFlat"),
        ),
    ];
    for (fmt, sub, kind, want_sub) in cases {
        let img = d.path().join(format!("img-{}.{fmt}", sub.unwrap_or("x")));
        qemu_convert(input, &img, fmt, *sub);
        let det = detect_file(&File::open(&img).unwrap(), &img).unwrap();
        assert_eq!(det.kind, *kind, "{img:?}");
        assert_eq!(det.subformat.as_deref(), *want_sub, "{img:?}");
        assert!(!det.readable(), "{img:?}");
        let msg = det.refusal(&img).unwrap();
        assert!(msg.contains(kind.describe()), "{msg}");
        assert!(
            msg.contains(&format!("qemu-img convert -f {}", kind.qemu_name())),
            "{msg}"
        );
        // What qemu-img itself calls it (fixed VHD aside, qemu probes the same magics).
        let info = run_ok(tool("qemu-img").args(["info", "--output=json"]).arg(&img));
        assert!(
            info.contains(&format!("\"format\": \"{}\"", kind.qemu_name())),
            "{info}"
        );
    }
    // The extents of a split sparse VMDK are refused on their own too.
    let extent = d.path().join("img-twoGbMaxExtentSparse-s001.vmdk");
    let det = detect_file(&File::open(&extent).unwrap(), &extent).unwrap();
    assert_eq!(
        (det.kind, det.subformat.as_deref()),
        (Kind::Vmdk, Some("extent"))
    );
    let e = Vmdk::open(&extent).unwrap_err().to_string();
    assert!(e.contains("without descriptor"), "{e}");
}

#[test]
fn damaged_headers_are_errors_not_panics() {
    require_tools!("qemu-img");
    let d = tempfile::tempdir().unwrap();
    let input = &inputs(d.path())[1];
    for (fmt, sub) in [
        ("vmdk", "streamOptimized"),
        ("vmdk", "monolithicSparse"),
        ("vpc", "dynamic"),
    ] {
        let img = d.path().join(format!("img.{fmt}"));
        qemu_convert(input, &img, fmt, Some(sub));
        let good = std::fs::read(&img).unwrap();
        // Flip bytes of the first 2 KiB and the last 1.5 KiB one at a time.
        let n = good.len();
        let spots: Vec<usize> = (0..2048)
            .step_by(7)
            .chain((n - 1536..n).step_by(5))
            .collect();
        for at in spots {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            let p = d.path().join("bad.img");
            std::fs::write(&p, &bad).unwrap();
            let dev: Result<Box<dyn BlockDev>, _> = if fmt == "vmdk" {
                Vmdk::open(&p).map(|v| Box::new(v) as Box<dyn BlockDev>)
            } else {
                Vhd::open(&p).map(|v| Box::new(v) as Box<dyn BlockDev>)
            };
            if let Ok(dev) = dev {
                let mut buf = vec![0u8; 1 << 20];
                let mut pos = 0;
                while pos < dev.len() {
                    let k = (buf.len() as u64).min(dev.len() - pos) as usize;
                    if dev.read_at(&mut buf[..k], pos).is_err() {
                        break;
                    }
                    pos += k as u64;
                }
            }
        }
        // A truncated file is refused.
        let p = d.path().join("short.img");
        std::fs::write(&p, &good[..n / 2]).unwrap();
        let r = if fmt == "vmdk" {
            Vmdk::open(&p).map(|_| ())
        } else {
            Vhd::open(&p).map(|_| ())
        };
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
        }
    }
    // A raw file is raw.
    let raw = RawFile::open(input).unwrap();
    assert!(raw.len() > 0);
    let det = detect_file(&File::open(input).unwrap(), input).unwrap();
    assert_eq!(det.kind, Kind::Raw);
}

/// A dynamic VHD's sector bitmap is honoured (a clear bit reads as zeros, as the
/// specification says), and a differencing disk is refused by name.
#[test]
fn vhd_sector_bitmaps_and_differencing_disks() {
    require_tools!("qemu-img");
    let d = tempfile::tempdir().unwrap();
    let input = &inputs(d.path())[1];
    let img = d.path().join("dyn.vhd");
    qemu_convert(input, &img, "vpc", Some("dynamic"));
    let mut file = std::fs::read(&img).unwrap();
    let bat0 = u32::from_be_bytes(file[1536..1540].try_into().unwrap());
    assert_ne!(bat0, u32::MAX, "block 0 holds data");
    let bitmap = bat0 as usize * 512;
    // Clear the bit of sector 1 (bit 6 of the first byte, most significant bit first).
    file[bitmap] &= !0x40;
    std::fs::write(&img, &file).unwrap();
    let v = Vhd::open(&img).unwrap();
    let mut got = vec![0u8; 3 * 512];
    v.read_at(&mut got, 0).unwrap();
    let want = std::fs::read(input).unwrap();
    assert_eq!(&got[..512], &want[..512]);
    assert!(
        got[512..1024].iter().all(|&b| b == 0),
        "sector 1 is not stored"
    );
    assert_eq!(&got[1024..], &want[1024..1536]);

    // Differencing: the same footer with disk type 4 (checksum fixed up), at both ends.
    let mut diff = std::fs::read(&img).unwrap();
    let n = diff.len();
    for at in [0, n - 512] {
        diff[at + 60..at + 64].copy_from_slice(&4u32.to_be_bytes());
        diff[at + 64..at + 68].fill(0);
        let sum = !diff[at..at + 512]
            .iter()
            .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        diff[at + 64..at + 68].copy_from_slice(&sum.to_be_bytes());
    }
    let p = d.path().join("diff.vhd");
    std::fs::write(&p, &diff).unwrap();
    let det = detect_file(&File::open(&p).unwrap(), &p).unwrap();
    assert_eq!(
        (det.kind, det.subformat.as_deref()),
        (Kind::Vhd, Some("differencing"))
    );
    assert!(det.refusal(&p).unwrap().contains("differencing"));
    let e = Vhd::open(&p).unwrap_err().to_string();
    assert!(e.contains("differencing"), "{e}");
}
