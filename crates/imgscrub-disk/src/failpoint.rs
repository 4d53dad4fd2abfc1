//! Failpoints: simulate a crash at a chosen step of an in-place commit.
//!
//! Every block write of the commit sequence (each write of the redo log, each write, hole
//! punch or resize of the image, and the removal of the log) is one *step*, numbered from 1
//! for the whole process. The environment selects what happens:
//!
//! - `IMGSCRUB_FAILPOINT=N` aborts the process (`std::process::abort`, like a crash: no
//!   destructors, no flush) right before step `N`.
//! - `IMGSCRUB_FAILPOINT=N:sleep=MS` sleeps `MS` milliseconds before step `N` instead.
//! - `IMGSCRUB_FAILPOINT=N:wait=PATH` waits before step `N` until the file `PATH` exists
//!   (tests use it to observe the image while imgscrub holds it, for as long as they need on
//!   a loaded machine, then create `PATH` to let it go on).
//! - `IMGSCRUB_FAILPOINT_TRACE=1` prints `imgscrub-failpoint: step N: what` on stderr before
//!   every step, so a test can count the steps of an uninterrupted run.
//!
//! Without these variables [`step`] only counts.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
enum Action {
    Abort,
    Sleep(u64),
    WaitFor(std::path::PathBuf),
}

#[derive(Debug, Clone, Default)]
struct Config {
    at: Option<(u64, Action)>,
    trace: bool,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let at = std::env::var("IMGSCRUB_FAILPOINT")
            .ok()
            .and_then(|v| parse(&v));
        let trace = std::env::var_os("IMGSCRUB_FAILPOINT_TRACE").is_some_and(|v| v == "1");
        Config { at, trace }
    })
}

fn parse(v: &str) -> Option<(u64, Action)> {
    let (n, rest) = match v.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (v, None),
    };
    let n: u64 = n.trim().parse().ok()?;
    let action = match rest.map(str::trim) {
        None => Action::Abort,
        Some(r) => match r.strip_prefix("wait=") {
            Some(path) if !path.is_empty() => Action::WaitFor(path.into()),
            Some(_) => return None,
            None => Action::Sleep(r.strip_prefix("sleep=")?.parse().ok()?),
        },
    };
    Some((n, action))
}

/// Count one step of a commit sequence; `what` names it for the trace. Aborts or sleeps
/// when the environment asks for it at this step (see the module documentation).
pub fn step(what: &str) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
    let c = config();
    if c.trace {
        eprintln!("imgscrub-failpoint: step {n}: {what}");
    }
    match &c.at {
        Some((at, Action::Abort)) if *at == n => std::process::abort(),
        Some((at, Action::Sleep(ms))) if *at == n => {
            std::thread::sleep(std::time::Duration::from_millis(*ms));
        }
        Some((at, Action::WaitFor(path))) if *at == n => {
            while !path.exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        _ => {}
    }
}

/// Steps counted so far in this process.
pub fn steps_so_far() -> u64 {
    COUNTER.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms() {
        assert!(matches!(parse("5"), Some((5, Action::Abort))));
        assert!(matches!(
            parse("7:sleep=200"),
            Some((7, Action::Sleep(200)))
        ));
        assert!(matches!(
            parse("1:wait=/tmp/go"),
            Some((1, Action::WaitFor(p))) if p == std::path::Path::new("/tmp/go")
        ));
        assert!(parse("1:wait=").is_none());
        assert!(parse("x").is_none());
        assert!(parse("3:nap").is_none());
    }
}
