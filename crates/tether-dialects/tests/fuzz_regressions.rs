//! Replays the fuzz corpus seeds and every input that ever crashed the `dialects` fuzz
//! target (`fuzz/regressions/dialects/`) through the same harness the fuzzer runs: every
//! codec in the registry decodes them and encodes answers without panicking, and
//! everything it encodes is JSON.

#[path = "../../../fuzz/src/dialects.rs"]
mod harness;

use std::path::Path;

fn replay(dir: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(dir);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if name.ends_with(".md") || name.starts_with('.') {
            continue;
        }
        let input = std::fs::read(&path).unwrap();
        // A panic names the input it came from.
        let outcome = std::panic::catch_unwind(|| harness::run(&input));
        assert!(outcome.is_ok(), "{} panics", path.display());
        n += 1;
    }
    n
}

#[test]
fn every_seed_and_every_past_crash_passes() {
    assert!(replay("seeds/dialects") > 0, "the seeds are there");
    replay("regressions/dialects");
}

#[test]
fn every_dialect_survives_hostile_frames() {
    // A few classics, for every dialect, on one connection each.
    let nasty = [
        "",
        "null",
        "[]",
        "{}",
        "{\"type\":null}",
        "\u{0}",
        "{\"req\":1e999,\"type\":\"get\"}",
        "{\"id\":18446744073709551616}",
        "{\"data\":{\"id\":{\"nested\":[[[[[[[[]]]]]]]]}}}",
        &"[".repeat(10_000),
        &format!("{{\"type\":\"{}\"}}", "x".repeat(100_000)),
        "\"\\ud800\"",
    ];
    for dialect in 0..tether_dialects::registry().len() {
        let mut input = vec![dialect as u8];
        input.extend_from_slice(nasty.join("\0").as_bytes());
        harness::run(&input);
    }
}
