//! Progress bars for long jobs: shown on a terminal (stderr), silent otherwise or with -q.

use imgscrub::shrink::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// An indicatif bar per phase, and the Ctrl-C of a long job.
pub struct Bar {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
    interrupted: Arc<AtomicBool>,
}

impl Bar {
    /// A bar that draws only when stderr is a terminal and `quiet` is off.
    ///
    /// From now on the first SIGINT (Ctrl-C) or SIGTERM asks the job to stop at its next
    /// safe point ([`Progress::cancelled`]): `convert` and `prepare --output` remove their
    /// unfinished output, `sparsify` writes nothing. A second signal ends the process at once
    /// (exit status 130), as an impatient user expects.
    pub fn new(quiet: bool) -> Bar {
        let interrupted = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Registration order matters: the shutdown check runs first, so it sees the flag
            // set only from the second signal on. Failing to register leaves the default
            // action (the job dies at once), which is no worse than before.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, interrupted.clone());
            let _ = signal_hook::flag::register(sig, interrupted.clone());
        }
        Bar {
            enabled: !quiet && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            interrupted,
        }
    }
}

impl Progress for Bar {
    fn begin(&self, phase: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(phase.to_owned());
        *self.bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            b.inc(n);
        }
    }

    fn end(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
        }
    }

    fn cancelled(&self) -> bool {
        let stop = self.interrupted.load(Ordering::Relaxed);
        if stop {
            self.end();
        }
        stop
    }
}
