//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the targets' logic, so
//! the fuzzers' invariants and their regressions run with plain `cargo test` on stable.

use std::fs;
use std::path::Path;

use parlor_fuzz_harness as fuzzing;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus")).join(target);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in &entries {
        let data = fs::read(path).unwrap();
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "{target}: {} fails", path.display());
    }
    entries.len()
}

#[test]
fn corpus_parse() {
    assert!(replay("parse", fuzzing::parse) > 0, "no corpus for parse");
}

#[test]
fn corpus_split() {
    assert!(replay("split", fuzzing::split) > 0, "no corpus for split");
}

#[test]
fn corpus_machine() {
    fn run(data: &[u8]) {
        // The harness picks the origin of its virtual clock; the core never reads it.
        #[allow(clippy::disallowed_methods)]
        fuzzing::machine(data, std::time::Instant::now());
    }
    assert!(replay("machine", run) > 0, "no corpus for machine");
}
