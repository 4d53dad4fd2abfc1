#![allow(clippy::unwrap_used, clippy::expect_used)]
//! VMDK and VHD in and out (issue 14, parts 1, 2 and 4), against qemu-img: inputs made by
//! `qemu-img convert` read exactly as qemu reads them, other formats are refused by name and
//! never read as raw; outputs are named by `qemu-img info`, equal the input for
//! `qemu-img compare`, pass `qemu-img check`, and are byte-identical run after run.

use imgscrub_testkit::{fixture, require_tools, run, run_ok, tool};
use std::path::{Path, PathBuf};

mod common;
use common::{imgscrub, ok};

fn sample(dir: &Path) -> PathBuf {
    let p = dir.join("sample.qcow2");
    std::fs::copy(fixture("sample.qcow2"), &p).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn info(img: &Path, fmt: Option<&str>) -> serde_json::Value {
    let mut c = tool("qemu-img");
    c.args(["info", "--output=json"]);
    if let Some(f) = fmt {
        c.args(["-f", f]);
    }
    serde_json::from_str(&run_ok(c.arg(img))).unwrap()
}

/// `qemu-img compare A B` (B read as `fmt`) must say identical.
fn assert_same(a: &Path, b: &Path, fmt: &str) {
    let o = run(tool("qemu-img").args(["compare", "-F", fmt]).arg(a).arg(b));
    assert!(
        o.status.success(),
        "{a:?} vs {b:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A disk of an odd size (5 MiB + 1.5 KiB) with data, text and zero runs.
fn odd_raw(dir: &Path) -> PathBuf {
    let len = (5 << 20) + 1536;
    let mut data = vec![0u8; len];
    for (i, at) in [0usize, 70_000, 2 << 20, len - 5000].iter().enumerate() {
        let n = 40_000.min(len - at);
        data[*at..*at + n].copy_from_slice(&imgscrub_testkit::random_bytes(n, i as u64 + 9));
    }
    for (i, b) in data[3 << 20..(3 << 20) + 300_000].iter_mut().enumerate() {
        *b = b"imgscrub formats "[i % 17];
    }
    let p = dir.join("odd.raw");
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn vmdk_and_vhd_outputs_are_exact_named_checked_and_deterministic() {
    require_tools!("qemu-img");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let odd = odd_raw(t.path());
    for input in [&img, &odd] {
        for (args, name, qfmt) in [
            (vec![], "out.vmdk", "vmdk"),
            (vec!["--output-format", "vmdk"], "out-vmdk.img", "vmdk"),
            (vec![], "out.vhd", "vpc"),
            (vec!["--vhd-subformat", "dynamic"], "dyn.vhd", "vpc"),
            (
                vec!["-O", "vhd", "--vhd-subformat", "dynamic"],
                "dyn2.img",
                "vpc",
            ),
        ] {
            // The same name in two directories (a VMDK descriptor names its own file).
            for d in ["a", "b"] {
                std::fs::create_dir_all(t.path().join(d)).unwrap();
            }
            let a = t.path().join("a").join(name);
            let b = t.path().join("b").join(name);
            for out in [&a, &b] {
                let mut v = vec!["convert", "-q"];
                v.extend(&args);
                v.extend([s(input), s(out)]);
                ok(&v);
            }
            assert!(
                std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
                "{name}: two runs differ"
            );
            let i = info(&a, Some(qfmt));
            assert_eq!(i["format"], qfmt, "{i}");
            let vsize = i["virtual-size"].as_u64().unwrap();
            let in_len = if input == &img {
                16 << 20
            } else {
                std::fs::metadata(input).unwrap().len()
            };
            let file_len = std::fs::metadata(&a).unwrap().len();
            if qfmt == "vmdk" {
                assert_eq!(
                    i["format-specific"]["data"]["create-type"],
                    "streamOptimized"
                );
                assert_eq!(
                    i["format-specific"]["data"]["extents"][0]["compressed"], true,
                    "{i}"
                );
                assert_eq!(vsize, in_len.next_multiple_of(512));
                let c = run_ok(tool("qemu-img").args(["check", "-f", "vmdk"]).arg(&a));
                assert!(c.contains("No errors"), "{c}");
            } else {
                // qemu shows the block size of a dynamic VHD as its cluster size, none for
                // a fixed one.
                let dynamic = args.contains(&"dynamic");
                assert_eq!(i.get("cluster-size").is_some(), dynamic, "{i}");
                assert_eq!(vsize % (1 << 20), 0, "VHD size not whole MiB: {vsize}");
                assert_eq!(vsize, in_len.next_multiple_of(1 << 20));
                if !dynamic {
                    assert_eq!(file_len, vsize + 512, "fixed VHD: file = virtual + 512");
                }
            }
            assert_same(input, &a, qfmt);
            // And our own reader takes it back.
            let back = t.path().join("back.raw");
            ok(&["convert", "-q", "-O", "raw", s(&a), s(&back)]);
            assert_same(input, &back, "raw");
        }
    }
    // The JSON summary.
    let out = t.path().join("j.vmdk");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["convert", "--json", s(&img), s(&out)])).unwrap();
    assert_eq!(v["output_size"], std::fs::metadata(&out).unwrap().len());
    assert!(v["clusters_compressed"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["clusters_raw"], 0, "{v}");
    assert_eq!(v["output_format"], "vmdk", "{v}");
}

#[test]
fn sparsified_vmdk_and_vhd_equal_the_sparsified_disk() {
    require_tools!("qemu-img");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let raw = t.path().join("sparse.raw");
    ok(&["convert", "-q", "-O", "raw", s(&img), s(&raw)]);
    ok(&["sparsify", "-q", s(&raw)]);
    for (name, fmt) in [("s.vmdk", "vmdk"), ("s.vhd", "vpc")] {
        let out = t.path().join(name);
        ok(&["convert", "-q", "--sparsify", s(&img), s(&out)]);
        assert_same(&raw, &out, fmt);
    }
}

#[test]
fn prepare_writes_a_vmdk_that_imgscrub_and_qemu_read() {
    require_tools!("qemu-img", "e2fsck");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    let before = std::fs::read(&img).unwrap();
    let out = t.path().join("prepared.vmdk");
    // Reproducible runs, so that the VMDK and the VHD below hold the same guest.
    let prepare = |args: &[&str]| {
        let o = std::process::Command::new(common::BIN)
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    prepare(&[
        "prepare",
        "-q",
        s(&img),
        "--profile",
        "linux",
        "--output",
        s(&out),
    ]);
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "the input was written"
    );
    let c = run_ok(tool("qemu-img").args(["check"]).arg(&out));
    assert!(c.contains("No errors"), "{c}");
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json", s(&out)])).unwrap();
    assert_eq!(v["format"], "vmdk", "{v}");
    assert_eq!(v["os"]["family"], "debian", "{v}");
    let fs = common::root_fs(t.path(), &out);
    imgscrub_testkit::assert_e2fsck_clean(&fs);
    let ssh = imgscrub_testkit::debugfs(&fs, "ls /etc/ssh");
    assert!(!ssh.contains("ssh_host_rsa_key"), "{ssh}");
    // A VHD output of prepare, dynamic.
    let vhd = t.path().join("prepared.vhd");
    prepare(&[
        "prepare",
        "-q",
        s(&img),
        "--profile",
        "linux",
        "--output",
        s(&vhd),
        "--output-format",
        "vhd",
        "--vhd-subformat",
        "dynamic",
    ]);
    let back = t.path().join("from-vmdk.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&out)
            .arg(&back),
    );
    assert_same(&back, &vhd, "vpc");
}

#[test]
fn qemu_made_inputs_read_as_qemu_reads_them_and_others_are_refused() {
    require_tools!("qemu-img");
    let t = tempfile::tempdir().unwrap();
    let img = sample(t.path());
    for (fmt, sub, ours) in [
        ("vmdk", "monolithicSparse", "vmdk"),
        ("vmdk", "streamOptimized", "vmdk"),
        ("vpc", "fixed", "vhd"),
        ("vpc", "dynamic", "vhd"),
    ] {
        let x = t.path().join(format!("in-{sub}.{fmt}"));
        run_ok(
            tool("qemu-img")
                .args(["convert", "-O", fmt, "-o", &format!("subformat={sub}")])
                .arg(&img)
                .arg(&x),
        );
        let v: serde_json::Value =
            serde_json::from_str(&ok(&["inspect", "--json", s(&x)])).unwrap();
        assert_eq!(v["format"], ours, "{sub}: {v}");
        assert_eq!(v["os"]["family"], "debian", "{sub}: {v}");
        let want = t.path().join("want.raw");
        run_ok(
            tool("qemu-img")
                .args(["convert", "-f", fmt, "-O", "raw"])
                .arg(&x)
                .arg(&want),
        );
        let got = t.path().join("got.raw");
        ok(&["convert", "-q", "-O", "raw", s(&x), s(&got)]);
        assert!(
            std::fs::read(&want).unwrap() == std::fs::read(&got).unwrap(),
            "{sub}: differs from qemu-img convert -O raw"
        );
        assert!(!ok(&["cat", s(&x), "/etc/hostname"]).is_empty());
        // Read-only formats: in-place edits are refused (exit 3), the file is untouched.
        let before = std::fs::read(&x).unwrap();
        let o = imgscrub(&["sparsify", "-q", s(&x)]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("read-only") && e.contains("--output"), "{e}");
        assert!(std::fs::read(&x).unwrap() == before);
        // A qcow2 over it is refused (never read through as raw).
        let over = t.path().join("over.qcow2");
        run_ok(
            tool("qemu-img")
                .args(["create", "-f", "qcow2", "-F", fmt, "-b"])
                .arg(&x)
                .arg(&over),
        );
        let o = imgscrub(&["inspect", s(&over)]);
        assert_eq!(o.status.code(), Some(3), "{o:?}");
        // An output that is the input is refused.
        let o = imgscrub(&["convert", "-q", s(&x), s(&x)]);
        assert!(!o.status.success());
        assert!(std::fs::read(&x).unwrap() == before);
    }
    for (fmt, sub, name) in [
        ("vhdx", None, "VHDX"),
        ("vdi", None, "VDI"),
        ("qed", None, "QED"),
        ("qcow", None, "qcow (version 1)"),
        ("parallels", None, "Parallels"),
        ("vmdk", Some("monolithicFlat"), "VMDK (monolithicFlat)"),
        (
            "vmdk",
            Some("twoGbMaxExtentSparse"),
            "VMDK (twoGbMaxExtentSparse)",
        ),
    ] {
        let x = t.path().join(format!("other-{}.{fmt}", sub.unwrap_or("x")));
        let mut c = tool("qemu-img");
        c.args(["convert", "-O", fmt]);
        if let Some(sub) = sub {
            c.args(["-o", &format!("subformat={sub}")]);
        }
        run_ok(c.arg(&img).arg(&x));
        for cmd in ["inspect", "sparsify"] {
            let o = imgscrub(&[cmd, s(&x)]);
            assert_eq!(o.status.code(), Some(3), "{fmt}: {o:?}");
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains(name), "{fmt}: {e}");
            assert!(
                e.contains(&format!("qemu-img convert -f {fmt} -O qcow2")),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // `--format raw` is the explicit override: read byte for byte, with a warning.
        let o = imgscrub(&["inspect", "--format", "raw", s(&x)]);
        assert!(o.status.success(), "{o:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(all.contains("read as raw"), "{o:?}");
        // Asking for another format than the file's is refused.
        let o = imgscrub(&["inspect", "--format", "vmdk", s(&x)]);
        if fmt != "vmdk" {
            assert!(!o.status.success());
        }
    }
}
