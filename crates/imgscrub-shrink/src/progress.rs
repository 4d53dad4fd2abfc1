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
    /// True when the caller wants the operation stopped (Ctrl-C in the CLI). Long loops ask
    /// between units of work and return [`ShrinkError::Cancelled`](crate::ShrinkError::Cancelled):
    /// `convert` removes its unfinished output, an in-place `sparsify` on a staged image
    /// writes nothing.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
