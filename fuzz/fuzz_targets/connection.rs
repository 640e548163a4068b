#![no_main]
//! The handshake and frame path of a real server (fuzz/src/connection.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_fuzz::connection::run(data));
