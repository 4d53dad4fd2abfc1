//! Test-only helpers shared by every crate's tests: locate and run the external oracles and
//! the fixture scripts in `fixtures/`.
//!
//! Policy: when an oracle is missing, a test is skipped with a message on a developer machine,
//! but under `CI=true` a missing oracle fails the test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod lvm;
mod xfs;
pub use lvm::*;
pub use xfs::*;

/// The repository root (where `fixtures/` lives).
pub fn repo_root() -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    p.pop();
    p.pop();
    p
}

/// Path of a script or file in `fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures").join(name)
}

/// True when running in CI, where missing oracles are failures.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Find `tool` on PATH or in /sbin, /usr/sbin.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/sbin", "/usr/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// Returns the oracle's path, or `None` when the test should be skipped (developer machine,
/// oracle missing). Under `CI=true` a missing oracle panics: the test fails.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    match find_tool(tool) {
        Some(p) => Some(p),
        None if in_ci() => panic!("oracle `{tool}` is missing in CI (scripts/test installs it)"),
        None => {
            eprintln!("SKIP: oracle `{tool}` not installed (run scripts/test to install it)");
            None
        }
    }
}

/// Early-return from a test when any of the named oracles is missing (and not in CI).
#[macro_export]
macro_rules! require_tools {
    ($($t:expr),+ $(,)?) => {
        $( if $crate::require_tool($t).is_none() { return; } )+
    };
}

/// Run a command and return its output; panics with the full stderr when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

/// Run a command that must succeed; panics with its stdout/stderr otherwise. Returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    if !o.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `e2fsck -fn` on an image (or `image?offset=` via a partition offset is not supported: pass
/// a file holding just the filesystem). Panics with e2fsck's output unless it is clean.
pub fn assert_e2fsck_clean(image: &Path) {
    let Some(e2fsck) = require_tool("e2fsck") else {
        return;
    };
    let o = run(Command::new(e2fsck).arg("-fn").arg(image));
    if !o.status.success() {
        panic!(
            "e2fsck -fn {} is not clean (exit {}):\n{}{}",
            image.display(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Run one debugfs request (`-R`) read-only and return stdout.
pub fn debugfs(image: &Path, request: &str) -> String {
    let Some(debugfs) = require_tool("debugfs") else {
        return String::new();
    };
    run_ok(Command::new(debugfs).arg("-R").arg(request).arg(image))
}

/// The ext4 variants `fixtures/mkext4.sh` builds (`--list`): the mkfs matrix every ext4 test
/// loops over.
pub fn ext4_variants() -> Vec<String> {
    run_ok(Command::new("bash").arg(fixture("mkext4.sh")).arg("--list"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Build `variant` from the directory `src` into `out` (a bare filesystem image of `size_mb`
/// MiB) with `fixtures/mkext4.sh`. Returns false (skip) when mke2fs is missing outside CI.
pub fn make_ext4(variant: &str, src: &Path, out: &Path, size_mb: u32) -> bool {
    if require_tool("mke2fs").is_none() {
        return false;
    }
    run_ok(
        Command::new("bash")
            .arg(fixture("mkext4.sh"))
            .arg(variant)
            .arg(src)
            .arg(out)
            .arg(size_mb.to_string()),
    );
    true
}

/// A [`Command`] for `tool`, found on PATH or in the sbin directories (so tests also work for
/// users whose PATH lacks /sbin); the bare name when it is not found.
pub fn tool(tool: &str) -> Command {
    Command::new(find_tool(tool).unwrap_or_else(|| PathBuf::from(tool)))
}

/// `n` deterministic pseudo-random (incompressible) bytes from `seed` (xorshift64).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How long a test waits for an external process to give the sign it waits for (a prompt, a
/// line on a pipe, a file, a socket). Minutes, not seconds: on a busy 2-core machine running
/// two test suites and a build, any process can be held up for long. The limit only turns a
/// process that never gives the sign into a failure instead of a hung test; tests wait for
/// signs, never for a fixed time.
pub const PATIENCE: Duration = Duration::from_secs(600);

/// Read `from` (a child's piped stdout or stderr) until `needle` appears. Returns what was
/// read; `Err` with what was read when the stream ends first or [`PATIENCE`] runs out.
/// The stream is read on a thread of its own, which goes on draining it afterwards (so the
/// child never blocks on a full pipe) until the child closes it.
pub fn wait_for_output(from: impl Read + Send + 'static, needle: &str) -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.as_bytes().to_vec();
    std::thread::spawn(move || {
        let mut from = from;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let mut told = false;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if told {
                continue;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(needle.len().max(1)).any(|w| w == needle) {
                told = true;
                let _ = tx.send(Ok(String::from_utf8_lossy(&seen).into_owned()));
            }
        }
        if !told {
            let _ = tx.send(Err(String::from_utf8_lossy(&seen).into_owned()));
        }
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(r) => r,
        Err(_) => Err(format!("nothing after {PATIENCE:?}")),
    }
}

/// Poll `done` (every 20 ms) until it is true; panics with `what` after [`PATIENCE`].
/// `done` may itself panic, for example when the process that should bring the change has
/// exited.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: still not the case after {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
