//! Property tests over the same targets: arbitrary bytes, and mutants of
//! each target's corpus made by the fuzzer's own mutator, must keep every
//! invariant. These run in `cargo test` with a fixed budget; the fuzzer
//! binary runs the same targets for as long as one likes.

use livebase_fuzz::mutate::{mutate, Rng};
use livebase_fuzz::{load_corpus, target};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn check_target(name: &str, cases: u32) {
    let t = target(name).unwrap();
    let corpus: Vec<Vec<u8>> = load_corpus(name)
        .unwrap()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|b| (b, None)),
        (0..corpus.len(), any::<u64>()).prop_map(|(i, seed)| (Vec::new(), Some((i, seed)))),
    ];
    runner
        .run(&strategy, |(bytes, mutant)| {
            let input = match mutant {
                None => bytes,
                Some((i, seed)) => {
                    let mut rng = Rng::new(seed);
                    let mut input = corpus[i].clone();
                    mutate(&mut rng, &mut input, &corpus, t.dictionary);
                    input
                }
            };
            (t.run)(&input);
            Ok(())
        })
        .unwrap();
}

#[test]
fn frames_keep_their_invariants() {
    check_target("frame", 2_000);
}

#[test]
fn value_json_keeps_its_invariants() {
    check_target("value_json", 2_000);
}

#[test]
fn index_keys_keep_their_invariants() {
    check_target("index_key", 2_000);
}

#[test]
fn cursors_keep_their_invariants() {
    check_target("cursor", 500);
}

#[test]
fn imports_keep_their_invariants() {
    check_target("import", 200);
}
