//! cargo-fuzz target `lvm`: the body is [`imgscrub_fuzzing::lvm`], which CI also runs on
//! the committed corpus (`crates/imgscrub-fuzzing/tests/corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgscrub_fuzzing::lvm(data));
