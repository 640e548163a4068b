#![no_main]
//! Every dialect codec: decode arbitrary frames, encode answers (fuzz/src/dialects.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_fuzz::dialects::run(data));
