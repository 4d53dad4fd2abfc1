//! CI's share of the fuzzing: every committed corpus input, seed and past crash, through the
//! very functions the cargo-fuzz targets call, on stable Rust. A panic (including a failed
//! invariant `assert!`) fails the test and names the file; a hang shows as the test timing
//! out. The corpora are the minimised output of the 10-minute campaigns
//! (`fuzz/campaign.sh`, docs/fuzzing.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

/// Run `body` on every file; collect the failures instead of stopping at the first.
fn replay(name: &str, body: fn(&[u8]), inputs: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in inputs {
        let data = fs::read(path).expect("read corpus file");
        let t = Instant::now();
        if panic::catch_unwind(|| body(&data)).is_err() {
            failures.push(format!("{name}: {} panicked", path.display()));
        }
        // Far above any input's real cost in a debug build; catches a would-be hang that
        // still terminates.
        let secs = t.elapsed().as_secs();
        if secs > 20 {
            failures.push(format!("{name}: {} took {secs} s", path.display()));
        }
    }
    failures
}

#[test]
fn every_target_has_a_committed_corpus() {
    for (name, _) in imgscrub_fuzzing::TARGETS {
        let dir = repo().join("fuzz/corpus").join(name);
        let n = files(&dir).len();
        assert!(
            n >= 5,
            "{}: only {n} corpus files; run fuzz/campaign.sh",
            dir.display()
        );
    }
}

#[test]
fn fuzz_targets_match_the_library() {
    // Each TARGETS row has its cargo-fuzz target and its [[bin]], and nothing else exists.
    let manifest = fs::read_to_string(repo().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut on_disk: Vec<String> = files(&repo().join("fuzz/fuzz_targets"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = imgscrub_fuzzing::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(on_disk, names);
    for n in &names {
        assert!(
            manifest.contains(&format!("name = \"{n}\"")),
            "no [[bin]] for {n}"
        );
        let src = fs::read_to_string(repo().join(format!("fuzz/fuzz_targets/{n}.rs"))).unwrap();
        assert!(
            src.contains(&format!("imgscrub_fuzzing::{n}(data)")),
            "{n}.rs"
        );
    }
}

#[test]
fn corpora_and_regressions_replay_cleanly() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (name, body) in imgscrub_fuzzing::TARGETS {
        let mut inputs = files(&repo().join("fuzz/corpus").join(name));
        inputs.extend(files(&repo().join("fuzz/seeds").join(name)));
        inputs.extend(files(&repo().join("fuzz/regressions").join(name)));
        total += inputs.len();
        failures.extend(replay(name, *body, &inputs));
    }
    assert!(total > 0, "no corpus at all");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The replay must be able to fail: an input that breaks an invariant is caught.
#[test]
fn replay_reports_a_panicking_input() {
    fn broken(data: &[u8]) {
        assert!(data.first() != Some(&0xff), "invariant");
    }
    let dir = tempdir();
    fs::write(dir.join("ok"), [1u8]).unwrap();
    fs::write(dir.join("bad"), [0xffu8]).unwrap();
    let failures = replay("broken", broken, &files(&dir));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("bad"));
    let _ = fs::remove_dir_all(&dir);
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("imgscrub-fuzz-replay-{}", std::process::id()));
    fs::create_dir_all(&d).unwrap();
    d
}
