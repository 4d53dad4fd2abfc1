//! One module per subcommand: `Args` (clap) and `run`.

pub mod customize;
pub mod export;
pub mod files;
pub mod inspect;
pub mod prepare;
pub mod shrink;

/// A mistake in the command line found after clap parsed it (options that do not go
/// together, a value of the wrong form): `main` exits with status 2, as for clap's own
/// usage errors, and prints the message like any other error.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error: `return Err(usage("--a and --b do not go together"))`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// Open an image and report on stderr what opening it had to say (for example that an
/// interrupted change was finished or rolled back, docs/safety.md).
pub fn open_image(
    path: &std::path::Path,
    opts: imgscrub::OpenOptions,
) -> anyhow::Result<imgscrub::Image> {
    let img = imgscrub::Image::open(path, opts)?;
    for w in img.warnings() {
        eprintln!("imgscrub: warning: {w}");
    }
    Ok(img)
}

static LATER: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A warning to print once the command has succeeded (a failing command prints its one-line
/// error and nothing else).
pub fn warn_later(w: impl Into<String>) {
    LATER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(w.into());
}

/// Take the deferred warnings (called by `main` on success).
pub fn take_warnings() -> Vec<String> {
    std::mem::take(&mut *LATER.lock().unwrap_or_else(|p| p.into_inner()))
}

/// `1536` → `1.5 KiB`; exact bytes under 1 KiB.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human_size(0), "0 B");
        assert_eq!(super::human_size(1536), "1.5 KiB");
        assert_eq!(super::human_size(16 << 20), "16.0 MiB");
        assert_eq!(super::human_size(u64::MAX), "16.0 EiB");
    }
}
