//! File block mapping: the `MapCtx` trait and dispatch to extents / block maps / inline data. Owner: mapping.
