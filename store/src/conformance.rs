//! The conformance suite every [`Persistence`] engine must pass: one set of
//! checks, as named cases, so another engine — in this crate or in its own —
//! is added without writing new tests.
//!
//! An engine is given as a constructor ([`MakeEngine`]): it opens a fresh,
//! empty store, keeping its files (if it has any) in the folder it is handed,
//! which lives as long as the case. [`conformance_tests!`](crate::conformance_tests)
//! turns every case into a `#[test]` of its own, named after the case:
//!
//! ```text
//! // In another engine's crate, with livebase-store's `conformance` feature:
//! mod conformance {
//!     livebase_store::conformance_tests!(|dir| MyEngine::open(dir).unwrap());
//! }
//! ```
//!
//! [`CASES`] lists the same cases by name, and [`run_all`] runs them in one go.

use std::path::Path;
use std::sync::Arc;

use livebase_schema::{obj, DocumentId, Timestamp, Value};

use crate::persistence::{Document, MutationOutcome, Order, Persistence};
use crate::readset::{DocumentWrite, WriteKind, WriteSet};

/// Opens a fresh, empty engine whose files live in the folder given.
pub type MakeEngine = dyn Fn(&Path) -> Box<dyn Persistence>;

/// One case of the suite.
pub type Case = fn(&MakeEngine);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = crate::__conformance_cases!(__conformance_case_list!());

/// Runs every case against fresh engines made by `make`.
pub fn run_all(make: &MakeEngine) {
    for (_name, case) in CASES {
        case(make);
    }
}

/// An engine constructor from a function returning any engine: what
/// [`conformance_tests!`](crate::conformance_tests) wraps its argument in.
pub fn engine<P: Persistence>(make: impl Fn(&Path) -> P) -> impl Fn(&Path) -> Box<dyn Persistence> {
    move |dir| Box::new(make(dir))
}

/// Expands to one `#[test]` per conformance case, each running it on engines
/// made by `$make` (a closure or function from the folder a store may keep
/// its files in to a fresh, empty engine). With `when: $ready` (a closure
/// returning `bool`), a case whose `$ready()` is false returns at once: for
/// an engine whose server may be absent on a developer's machine, `$ready`
/// says it was skipped (and fails where it must not be).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::__conformance_cases!(__conformance_tests!(($make, || true)));
    };
    ($make:expr, when: $ready:expr) => {
        $crate::__conformance_cases!(__conformance_tests!(($make, $ready)));
    };
}

/// The list of cases, handed to `$callback` (one list for [`CASES`] and for
/// the tests [`conformance_tests!`] expands to).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($callback:ident ! $args:tt) => {
        $crate::$callback! { $args
            an_empty_store_is_at_zero_and_readers_see_only_commits
            a_snapshot_does_not_move_while_later_commits_land
            scans_honour_bounds_order_and_limit
            a_whole_store_scan_pages_through_one_snapshot_in_id_order
            rollback_and_a_dropped_connection_discard_the_transaction
            inserting_an_existing_id_fails_and_keeps_the_stored_document
            savepoints_undo_or_keep_only_their_own_writes
            mutation_outcomes_are_found_by_caller_and_purged_oldest_first
            long_index_keys_are_ordered_replaced_and_deleted_like_short_ones
            kept_ranges_answer_as_a_fresh_connection_does
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_list {
    (() $($case:ident)*) => {
        &[$((stringify!($case), $crate::conformance::$case as $crate::conformance::Case)),*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ((($make:expr, $ready:expr)) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                if !($ready)() {
                    return;
                }
                $crate::conformance::$case(&$crate::conformance::engine($make));
            }
        )*
    };
}

/// A fresh engine in a temporary folder (dropped after the engine).
fn fresh(make: &MakeEngine) -> (tempfile::TempDir, Box<dyn Persistence>) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let p = make(dir.path());
    (dir, p)
}

fn doc(table: &str, n: f64) -> Document {
    let Value::Object(fields) = obj!("n" => n) else {
        unreachable!()
    };
    Document {
        id: DocumentId::generate(table),
        creation_time: n,
        fields: fields.into_fields(),
    }
}

/// Commits `docs` in one write transaction at `ts`.
fn commit_docs(p: &dyn Persistence, docs: &[&Document], ts: u64) {
    let mut w = p.connect().unwrap();
    w.begin_write().unwrap();
    for d in docs {
        w.put_document(d).unwrap();
    }
    w.commit(Timestamp::new(ts)).unwrap();
}

/// An empty store is at timestamp zero; a reader does not see an
/// uncommitted write, the writer sees its own, and a commit is seen by the
/// next snapshot at its timestamp.
pub fn an_empty_store_is_at_zero_and_readers_see_only_commits(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let mut w = p.connect().unwrap();
    let mut r = p.connect().unwrap();
    assert_eq!(w.begin_write().unwrap(), Timestamp::ZERO);
    let a = doc("t", 1.0);
    let b = doc("t", 2.0);
    w.put_document(&a).unwrap();
    w.put_document(&b).unwrap();
    w.put_index_entry(b"k1", &a.id).unwrap();
    w.put_index_entry(b"k2", &b.id).unwrap();
    assert_eq!(r.begin_read().unwrap(), Timestamp::ZERO);
    assert_eq!(r.get(&a.id).unwrap(), None);
    r.end_read().unwrap();
    assert_eq!(w.get(&a.id).unwrap(), Some(a.clone()));
    w.commit(Timestamp::new(10)).unwrap();
    assert_eq!(r.begin_read().unwrap(), Timestamp::new(10));
    assert_eq!(r.get(&b.id).unwrap(), Some(b.clone()));
    r.end_read().unwrap();
}

/// A snapshot taken before a commit keeps seeing what it saw — by id and by
/// scan — until it ends; the next snapshot sees the commit.
pub fn a_snapshot_does_not_move_while_later_commits_land(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let mut w = p.connect().unwrap();
    let mut r = p.connect().unwrap();
    let (a, b) = (doc("t", 1.0), doc("t", 2.0));
    w.begin_write().unwrap();
    w.put_document(&a).unwrap();
    w.put_document(&b).unwrap();
    w.put_index_entry(b"k1", &a.id).unwrap();
    w.put_index_entry(b"k2", &b.id).unwrap();
    w.commit(Timestamp::new(10)).unwrap();

    assert_eq!(r.begin_read().unwrap(), Timestamp::new(10));
    assert_eq!(r.get(&b.id).unwrap(), Some(b.clone()));
    assert_eq!(w.begin_write().unwrap(), Timestamp::new(10));
    w.delete_document(&b.id).unwrap();
    w.delete_index_entry(b"k2").unwrap();
    w.commit(Timestamp::new(11)).unwrap();
    assert_eq!(
        r.get(&b.id).unwrap(),
        Some(b.clone()),
        "snapshot must not move"
    );
    let keys: Vec<_> = r
        .scan(b"k", b"l", Order::Asc, 10)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
    // The same reads as values.
    assert_eq!(r.get_value(&b.id).unwrap(), Some(b.to_value()));
    let values = r.scan_values(b"k", b"l", Order::Asc, 10).unwrap();
    assert_eq!(
        values.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        keys
    );
    assert_eq!(values[1].1, b.to_value());
    r.end_read().unwrap();
    assert_eq!(r.begin_read().unwrap(), Timestamp::new(11));
    assert_eq!(r.get(&b.id).unwrap(), None);
    assert_eq!(r.get_value(&b.id).unwrap(), None);
    let values = r.scan_values(b"k", b"l", Order::Asc, 10).unwrap();
    assert_eq!(values.len(), 1, "the deleted entry is gone");
    r.end_read().unwrap();
}

/// Scans: bounds are `[start, end)`, order and limit are honoured.
pub fn scans_honour_bounds_order_and_limit(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let mut w = p.connect().unwrap();
    let mut r = p.connect().unwrap();
    w.begin_write().unwrap();
    let docs: Vec<_> = (0..5).map(|i| doc("u", f64::from(i))).collect();
    for (i, d) in docs.iter().enumerate() {
        w.put_document(d).unwrap();
        w.put_index_entry(&[b'u', i as u8], &d.id).unwrap();
    }
    w.commit(Timestamp::new(12)).unwrap();
    r.begin_read().unwrap();
    let got = r.scan(&[b'u', 1], &[b'u', 4], Order::Asc, 10).unwrap();
    assert_eq!(
        got.iter().map(|(_, d)| d.creation_time).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0]
    );
    let got = r.scan(&[b'u', 0], b"v", Order::Desc, 2).unwrap();
    assert_eq!(
        got.iter().map(|(_, d)| d.creation_time).collect::<Vec<_>>(),
        [4.0, 3.0]
    );
    r.end_read().unwrap();
}

/// The whole store page by page, in id order, within one snapshot: a commit
/// between two pages (an insert, deletes of documents not yet read) does not
/// show in the later page.
pub fn a_whole_store_scan_pages_through_one_snapshot_in_id_order(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let a = doc("t", 1.0);
    let docs: Vec<_> = (0..5).map(|i| doc("u", f64::from(i))).collect();
    commit_docs(p.as_ref(), &docs.iter().chain([&a]).collect::<Vec<_>>(), 12);
    let mut w = p.connect().unwrap();
    let mut r = p.connect().unwrap();

    r.begin_read().unwrap();
    let first = r.scan_documents(None, 3).unwrap();
    assert_eq!(first.len(), 3);
    w.begin_write().unwrap();
    let late = doc("a", 9.0);
    w.put_document(&late).unwrap();
    let last_of_first = first.last().unwrap().id.clone();
    for d in docs.iter().chain([&a]) {
        w.delete_document(&d.id).unwrap();
    }
    w.commit(Timestamp::new(13)).unwrap();
    let rest = r.scan_documents(Some(&last_of_first), 100).unwrap();
    let all: Vec<Document> = first.into_iter().chain(rest).collect();
    r.end_read().unwrap();
    let mut expected: Vec<Document> = docs.iter().cloned().chain([a.clone()]).collect();
    expected.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        all, expected,
        "every document of the snapshot, once, in id order"
    );
    // After the commit: `a` and the `u` documents are gone, `late` is there.
    r.begin_read().unwrap();
    assert_eq!(r.scan_documents(None, 100).unwrap(), vec![late.clone()]);
    assert_eq!(r.scan_documents(Some(&late.id), 100).unwrap(), vec![]);
    r.end_read().unwrap();
    assert_eq!(w.begin_write().unwrap(), Timestamp::new(13));
    w.rollback().unwrap();
}

/// Rollback discards; so does dropping a connection mid-transaction.
pub fn rollback_and_a_dropped_connection_discard_the_transaction(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    commit_docs(p.as_ref(), &[&doc("t", 1.0)], 13);
    let mut w = p.connect().unwrap();
    w.begin_write().unwrap();
    let c = doc("t", 3.0);
    w.put_document(&c).unwrap();
    w.rollback().unwrap();
    w.begin_write().unwrap();
    w.put_document(&c).unwrap();
    drop(w);
    let mut w = p.connect().unwrap();
    assert_eq!(w.begin_write().unwrap(), Timestamp::new(13));
    assert_eq!(w.get(&c.id).unwrap(), None);
    w.rollback().unwrap();
}

/// Inserting a document whose id exists fails and keeps the stored one.
pub fn inserting_an_existing_id_fails_and_keeps_the_stored_document(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let mut w = p.connect().unwrap();
    let first = doc("i", 1.0);
    w.begin_write().unwrap();
    w.insert_document(&first).unwrap();
    let mut clash = first.clone();
    clash.creation_time = 99.0;
    assert!(w.insert_document(&clash).is_err());
    assert_eq!(w.get(&first.id).unwrap(), Some(first.clone()));
    w.rollback().unwrap();
}

/// Savepoints: a rolled-back savepoint undoes only its own writes, a
/// released one keeps them, and the transaction commits the rest.
pub fn savepoints_undo_or_keep_only_their_own_writes(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let mut w = p.connect().unwrap();
    let mut r = p.connect().unwrap();
    let (kept, undone, later) = (doc("s", 1.0), doc("s", 2.0), doc("s", 3.0));
    w.begin_write().unwrap();
    w.put_document(&kept).unwrap();
    w.savepoint().unwrap();
    w.put_document(&undone).unwrap();
    w.put_index_entry(b"s-undone", &undone.id).unwrap();
    w.rollback_to_savepoint().unwrap();
    w.savepoint().unwrap();
    w.put_document(&later).unwrap();
    w.release_savepoint().unwrap();
    w.commit(Timestamp::new(14)).unwrap();
    r.begin_read().unwrap();
    assert_eq!(r.get(&kept.id).unwrap(), Some(kept));
    assert_eq!(r.get(&undone.id).unwrap(), None);
    assert_eq!(r.get(&later.id).unwrap(), Some(later));
    assert!(r.scan(b"s-", b"s.", Order::Asc, 10).unwrap().is_empty());
    r.end_read().unwrap();
}

/// Mutation outcomes: stored with the transaction (a rolled-back savepoint
/// takes its outcome with it), found by session, request and fingerprint
/// (another fingerprint under the same session and request is another
/// caller's, kept apart), values exact, purged oldest first within the
/// limit.
pub fn mutation_outcomes_are_found_by_caller_and_purged_oldest_first(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let mut w = p.connect().unwrap();
    let mut r = p.connect().unwrap();
    let outcome = |request_id: u32, fingerprint: &[u8], ts: u64, value| MutationOutcome {
        session_id: "5d1b2c7e-0000-4000-8000-000000000000".into(),
        request_id,
        fingerprint: fingerprint.to_vec(),
        ts: Timestamp::new(ts),
        path: "todos:create".into(),
        value,
    };
    let (mine, theirs) = (&[1u8; 32][..], &[2u8; 32][..]);
    let ok = outcome(1, mine, 100, obj!("n" => i64::MAX, "b" => vec![0u8, 255]));
    let other = outcome(1, theirs, 200, Value::from("theirs"));
    let undone = outcome(3, mine, 300, Value::Null);
    let plain = outcome(4, mine, 400, Value::Null);
    w.begin_write().unwrap();
    w.put_outcome(&ok).unwrap();
    w.put_outcome(&other).unwrap();
    w.savepoint().unwrap();
    w.put_outcome(&undone).unwrap();
    w.rollback_to_savepoint().unwrap();
    w.put_outcome(&plain).unwrap();
    assert_eq!(
        w.get_outcome(&ok.session_id, 1, mine).unwrap(),
        Some(ok.clone())
    );
    w.commit(Timestamp::new(15)).unwrap();
    r.begin_read().unwrap();
    assert_eq!(
        r.get_outcome(&ok.session_id, 1, mine).unwrap(),
        Some(ok.clone())
    );
    assert_eq!(
        r.get_outcome(&ok.session_id, 1, theirs).unwrap(),
        Some(other.clone())
    );
    assert_eq!(r.get_outcome(&ok.session_id, 1, &[3u8; 32]).unwrap(), None);
    assert_eq!(r.get_outcome(&ok.session_id, 3, mine).unwrap(), None);
    assert_eq!(r.get_outcome(&ok.session_id, 4, theirs).unwrap(), None);
    assert_eq!(
        r.get_outcome(&ok.session_id, 4, mine).unwrap(),
        Some(plain.clone())
    );
    assert_eq!(r.get_outcome("another-session", 1, mine).unwrap(), None);
    assert_eq!(r.count_outcomes().unwrap(), 3);
    r.end_read().unwrap();
    w.begin_write().unwrap();
    // Before ts 400: outcomes at 100 and 200 qualify; the limit takes the older.
    assert_eq!(w.purge_outcomes(Timestamp::new(400), 1).unwrap(), 1);
    assert_eq!(w.get_outcome(&ok.session_id, 1, mine).unwrap(), None);
    assert_eq!(w.purge_outcomes(Timestamp::new(400), 10).unwrap(), 1);
    assert_eq!(w.purge_outcomes(Timestamp::new(400), 10).unwrap(), 0);
    w.commit(Timestamp::new(16)).unwrap();
    r.begin_read().unwrap();
    assert_eq!(r.count_outcomes().unwrap(), 1);
    assert_eq!(r.get_outcome(&ok.session_id, 4, mine).unwrap(), Some(plain));
    r.end_read().unwrap();
}

/// Index keys far longer than a B-tree entry may be (PostgreSQL's is about
/// 2.7 KB; an indexed string may be 1 MiB) are stored, ordered, bounded,
/// replaced and deleted exactly as short ones — keys that share their first
/// thousands of bytes and differ only past them too.
pub fn long_index_keys_are_ordered_replaced_and_deleted_like_short_ones(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let mut w = p.connect().unwrap();
    let mut r = p.connect().unwrap();
    let long = |len: usize, tail: &[u8]| -> Vec<u8> {
        let mut key = vec![b'L'; len];
        key.extend_from_slice(tail);
        key
    };
    let keys: Vec<Vec<u8>> = vec![
        b"L".to_vec(),
        long(2_000, &[0]),
        long(5_000, &[1]),
        long(5_000, &[2, 7])
            .into_iter()
            .chain(vec![7u8; 100_000])
            .collect(),
        long(5_000, &[2, 8]),
        long(3_000, b"M"),
        long(1_024, &[]),
        long(1_023, &[0xFF]),
    ];
    let docs: Vec<Document> = (0..keys.len()).map(|i| doc("k", i as f64)).collect();
    w.begin_write().unwrap();
    for (key, d) in keys.iter().zip(&docs) {
        w.put_document(d).unwrap();
        w.put_index_entry(key, &d.id).unwrap();
    }
    w.commit(Timestamp::new(17)).unwrap();

    let mut sorted: Vec<(Vec<u8>, Document)> = keys.iter().cloned().zip(docs.clone()).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    r.begin_read().unwrap();
    assert_eq!(r.scan(b"L", b"M", Order::Asc, 100).unwrap(), sorted);
    let mut reversed = sorted.clone();
    reversed.reverse();
    assert_eq!(r.scan(b"L", b"M", Order::Desc, 100).unwrap(), reversed);
    // Bounds and limits that fall inside the shared 5,000 bytes.
    let (from, to) = (long(5_000, &[2]), long(5_000, &[2, 0xFF]));
    let got: Vec<Vec<u8>> = r
        .scan(&from, &to, Order::Asc, 10)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, vec![keys[3].clone(), keys[4].clone()]);
    // A limit that cuts between keys sharing their first 5,000 bytes keeps
    // the smallest (or largest) of them, whatever else orders them.
    let got = r.scan(&from, &to, Order::Desc, 1).unwrap();
    assert_eq!(got, vec![(keys[4].clone(), docs[4].clone())]);
    let got = r.scan(&from, &to, Order::Asc, 1).unwrap();
    assert_eq!(got, vec![(keys[3].clone(), docs[3].clone())]);
    let got = r.scan(&long(5_000, &[]), b"M", Order::Asc, 2).unwrap();
    assert_eq!(
        got.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
        vec![keys[2].clone(), keys[3].clone()]
    );
    // The exclusive end is exclusive for a long key too.
    let got = r.scan(&keys[2], &keys[4], Order::Asc, 10).unwrap();
    assert_eq!(
        got.into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
        vec![keys[2].clone(), keys[3].clone()]
    );
    r.end_read().unwrap();

    // A long key written again points at its new document, still once; a
    // deleted one is gone and its neighbours sharing its prefix are not.
    w.begin_write().unwrap();
    w.put_index_entry(&keys[3], &docs[0].id).unwrap();
    w.delete_index_entry(&keys[4]).unwrap();
    w.commit(Timestamp::new(18)).unwrap();
    r.begin_read().unwrap();
    let got = r
        .scan(&long(5_000, &[]), &long(5_000, &[0xFF]), Order::Asc, 10)
        .unwrap();
    assert_eq!(
        got,
        vec![
            (keys[2].clone(), docs[2].clone()),
            (keys[3].clone(), docs[0].clone())
        ]
    );
    assert_eq!(
        r.scan(b"L", b"M", Order::Asc, 100).unwrap().len(),
        keys.len() - 1
    );
    r.end_read().unwrap();
}

/// A connection that keeps the index ranges it reads (an engine that keeps
/// none passes as well) answers every scan as a fresh connection does: after
/// commits whose writes it was told of before they committed, as the
/// writer tells them ([`crate::persistence::StoreConnection::will_commit`]),
/// several of them between two reads, and after commits it was not told of
/// (an import). Documents are inserted, changed, moved to another range and
/// deleted at random (a fixed seed).
pub fn kept_ranges_answer_as_a_fresh_connection_does(make: &MakeEngine) {
    let (_dir, p) = fresh(make);
    let mut w = p.connect().unwrap();
    let mut kept = p.connect().unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    // Each document has one index entry: `g`, its group, its number.
    let key_of = |group: u64, n: u64, d: &Document| -> Vec<u8> {
        let mut key = vec![b'g', b'a' + group as u8, n as u8];
        key.extend_from_slice(d.id.as_str().as_bytes());
        key
    };
    let mut stored: Vec<(Document, Vec<u8>)> = Vec::new();
    let mut ts = 0;
    let ranges: [(&[u8], &[u8]); 4] = [
        (b"ga", b"gb"),
        (b"gb", b"gc"),
        (b"gb\x10", b"gb\x30"),
        (b"g", b"h"),
    ];
    for round in 0..150 {
        for _ in 0..=random(3) {
            ts += 1;
            let told = random(5) != 0;
            let mut writes = WriteSet::new();
            w.begin_write().unwrap();
            for _ in 0..=random(2) {
                let pick = (!stored.is_empty()).then(|| random(stored.len() as u64) as usize);
                let write = |kind, d: &Document| DocumentWrite {
                    table: "r".into(),
                    id: d.id.as_str().to_string(),
                    kind,
                };
                match (random(10), pick) {
                    (0..=3, _) | (_, None) => {
                        let d = doc("r", ts as f64);
                        let key = key_of(random(3), random(64), &d);
                        w.insert_document(&d).unwrap();
                        w.put_index_entry(&key, &d.id).unwrap();
                        writes.record(
                            write(WriteKind::Insert, &d),
                            &[],
                            std::slice::from_ref(&key),
                        );
                        stored.push((d, key));
                    }
                    (4..=7, Some(i)) => {
                        // A new body, and a new place in the index.
                        let (old, old_key) = stored[i].clone();
                        let mut d = doc("r", ts as f64);
                        d.id = old.id.clone();
                        d.creation_time = old.creation_time;
                        let key = key_of(random(3), random(64), &d);
                        w.put_document(&d).unwrap();
                        if key != old_key {
                            w.delete_index_entry(&old_key).unwrap();
                        }
                        w.put_index_entry(&key, &d.id).unwrap();
                        let keys = [old_key, key.clone()];
                        writes.record(write(WriteKind::Update, &d), &keys[..1], &keys[1..]);
                        stored[i] = (d, key);
                    }
                    (_, Some(i)) => {
                        let (d, key) = stored.swap_remove(i);
                        w.delete_document(&d.id).unwrap();
                        w.delete_index_entry(&key).unwrap();
                        writes.record(
                            write(WriteKind::Delete, &d),
                            std::slice::from_ref(&key),
                            &[],
                        );
                    }
                }
            }
            if told {
                w.will_commit(Timestamp::new(ts), &Arc::new(writes));
            }
            w.commit(Timestamp::new(ts)).unwrap();
        }
        let mut truth = p.connect().unwrap();
        assert_eq!(kept.begin_read().unwrap(), Timestamp::new(ts));
        truth.begin_read().unwrap();
        for (start, end) in ranges {
            for order in [Order::Asc, Order::Desc] {
                for limit in [1, 5, 1_000] {
                    assert_eq!(
                        kept.scan_values(start, end, order, limit).unwrap(),
                        truth.scan_values(start, end, order, limit).unwrap(),
                        "round {round}: {start:?}..{end:?} {order:?}, {limit}"
                    );
                }
            }
        }
        kept.end_read().unwrap();
        truth.end_read().unwrap();
    }
}
