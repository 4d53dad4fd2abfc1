//! Progress reporting: a small trait the CLI implements (with indicatif); the library only
//! calls it from the thread that called `convert`/`sparsify`.

/// Receives progress of a long operation. All methods have empty defaults.
pub trait Progress {
    /// A phase starts (`"convert"`, `"sparsify"`…) with `total` units (bytes) of work.
    fn begin(&self, _phase: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// The phase is over.
    fn end(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
