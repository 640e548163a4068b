//! Replays the fuzz corpus seeds and every input that ever crashed the `connection`
//! fuzz target (`fuzz/regressions/connection/`) through the same harness the fuzzer
//! runs: raw bytes of a client connection served by a real server. Nothing may panic,
//! in this thread or in any task the server runs, and every connection must end.

#[path = "../../../fuzz/src/connection.rs"]
mod harness;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn every_seed_and_every_past_crash_passes() {
    // A panic in a server task would be swallowed by tokio; count them instead.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for dir in ["seeds/connection", "regressions/connection"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if name.ends_with(".md") || name.starts_with('.') {
                continue;
            }
            harness::run(&std::fs::read(&path).unwrap());
            assert_eq!(
                PANICS.load(Ordering::SeqCst),
                0,
                "{} panics",
                path.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed > 0);
}
