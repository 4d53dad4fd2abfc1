//! cargo-fuzz target `formats_open`: the body is [`imgscrub_fuzzing::formats_open`], which CI also runs on
//! the committed corpus (`crates/imgscrub-fuzzing/tests/corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imgscrub_fuzzing::formats_open(data));
