//! Replays every checked-in corpus input through its target (a panic fails
//! the test), and checks that the fuzzer itself finds and saves a planted
//! crash.

use livebase_fuzz::driver::{fuzz, Budget};
use livebase_fuzz::{load_corpus, target, Target, TARGETS};

#[test]
fn every_corpus_input_keeps_its_targets_invariants() {
    for t in TARGETS {
        let files = load_corpus(t.name).unwrap();
        assert!(!files.is_empty(), "{} has no corpus", t.name);
        for (path, bytes) in files {
            let label = (t.run)(&bytes);
            assert!(!label.is_empty(), "{}: no outcome", path.display());
        }
    }
}

/// The seeds reach past the first check: the pinned frames decode, the valid
/// export imports, real keys decode, a real first page is served.
#[test]
fn the_seeds_reach_the_success_paths() {
    let label = |name: &str, file: &str| {
        let t = target(name).unwrap();
        let (_, bytes) = load_corpus(name)
            .unwrap()
            .into_iter()
            .find(|(p, _)| p.file_name().unwrap() == file)
            .unwrap_or_else(|| panic!("no {file} in {name}"));
        (t.run)(&bytes)
    };
    assert_eq!(label("import", "ok-app.jsonl"), "ok");
    assert_eq!(label("import", "crlf.jsonl"), "ok");
    assert!(label("import", "bad-line-3.jsonl").starts_with("line 3 unknown table"));
    assert!(label("frame", "00-Connect.json").starts_with("client ok Connect"));
    assert!(label("frame", "11-Transition.json").ends_with("server ok Transition"));
    assert!(label("value_json", "object.json").starts_with("ok object"));
    assert!(label("index_key", "key-mixed.bin").starts_with("raw key of 4"));
    assert_eq!(
        label("cursor", "first-page.bin"),
        "by_organization more more"
    );
    assert!(label("cursor", "raw-text.bin").ends_with("not base64"));
}

fn explodes(data: &[u8]) -> String {
    if data.windows(4).any(|w| w == b"boom") {
        panic!("found the bomb");
    }
    format!("{}", data.len().min(3))
}

#[test]
fn the_fuzzer_finds_and_saves_a_planted_crash() {
    let planted = Target {
        name: "planted-no-corpus",
        checks: "panics on `boom`",
        run: explodes,
        dictionary: &[b"boom"],
    };
    let artifacts = tempfile::tempdir().unwrap();
    let stats = fuzz(&planted, Budget::Executions(5_000), 42, artifacts.path());
    assert_eq!(stats.executions, 5_000);
    assert_eq!(
        stats.crashes.len(),
        1,
        "one distinct panic: {:?}",
        stats.crashes
    );
    let (what, path) = &stats.crashes[0];
    assert!(what.contains("found the bomb"), "{what}");
    let saved = std::fs::read(path).unwrap();
    assert!(saved.windows(4).any(|w| w == b"boom"));
    assert!(stats.outcomes >= 2, "outcome labels are collected");
}
