//! Exact invalidation (`docs/reference/invariants.md`, invariant 3), checked at random: a commit's
//! write set overlaps a query's read set exactly when the commit changed that
//! query's result. Random documents, random index-range queries (with and
//! without `take`), reads by id, and random inserts, patches (of indexed fields,
//! of other fields, and no-ops), replaces and deletes.

mod common;

use common::{
    arb_range, arb_status, arb_thing, id_of, reset_things, runner, test_db, Range, RangeSpec,
    TestDb, ThingSpec,
};
use livebase_runtime::database::Database;
use livebase_runtime::readset::ReadSet;
use livebase_runtime::store::Order;
use livebase_schema::{obj, DocumentId, Value};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[derive(Clone, Debug)]
enum QuerySpec {
    Range(RangeSpec),
    /// `get` of one of the initial documents (which a write may delete).
    Get(usize),
}

#[derive(Clone, Debug)]
enum Query {
    Range(Range),
    Get(DocumentId),
}

impl Query {
    /// Runs the query on a fresh snapshot: its result and its read set.
    async fn run(&self, db: &Database) -> Result<(Value, ReadSet), TestCaseError> {
        let q = self.clone();
        let outcome = db
            .query(move |tx| match &q {
                Query::Range(r) => r.run(tx).map(Value::Array),
                Query::Get(id) => tx.get(id).map(Value::from),
            })
            .await
            .map_err(|e| TestCaseError::fail(format!("{self:?}: {e}")))?;
        Ok((outcome.value, outcome.reads))
    }
}

/// A write to one of the live documents (`target` picks it), or an insert.
#[derive(Clone, Debug)]
enum WriteSpec {
    Insert(ThingSpec),
    /// Sets the fields that are `Some`; all `None` (or the current values) is a
    /// patch that changes nothing.
    Patch {
        target: usize,
        org: Option<&'static str>,
        status: Option<Value>,
        note: Option<&'static str>,
    },
    Replace {
        target: usize,
        with: ThingSpec,
    },
    Delete {
        target: usize,
    },
}

fn arb_write() -> impl Strategy<Value = WriteSpec> {
    let org = prop::sample::select(vec!["o1", "o2", "o3"]);
    let note = prop::sample::select(vec!["x", "y"]);
    prop_oneof![
        1 => arb_thing().prop_map(WriteSpec::Insert),
        3 => (
            any::<usize>(),
            prop::option::of(org),
            arb_status(),
            prop::option::of(note),
        )
            .prop_map(|(target, org, status, note)| WriteSpec::Patch { target, org, status, note }),
        1 => (any::<usize>(), arb_thing()).prop_map(|(target, with)| WriteSpec::Replace { target, with }),
        1 => any::<usize>().prop_map(|target| WriteSpec::Delete { target }),
    ]
}

fn arb_query() -> impl Strategy<Value = QuerySpec> {
    prop_oneof![
        4 => arb_range().prop_map(QuerySpec::Range),
        1 => any::<usize>().prop_map(QuerySpec::Get),
    ]
}

/// Applies `write` in a mutation, keeping `live` (the ids that exist) current.
/// Returns what was done, for failure messages, and the commit's write set.
async fn apply(
    db: &Database,
    write: &WriteSpec,
    live: &mut Vec<DocumentId>,
) -> (String, std::sync::Arc<livebase_runtime::readset::WriteSet>) {
    let target = |t: usize| live[t % live.len()].clone();
    let write = match write {
        WriteSpec::Insert(_) => write.clone(),
        _ if live.is_empty() => WriteSpec::Insert(ThingSpec {
            org: "o1",
            status: None,
            note: "x",
            batch: 0,
        }),
        _ => write.clone(),
    };
    let what = format!("{write:?}");
    let committed = match write {
        WriteSpec::Insert(thing) => {
            let fields = thing.fields();
            let c = db
                .mutate(move |tx| tx.insert("things", fields))
                .await
                .unwrap();
            live.push(c.value.clone());
            (format!("{what} -> {}", c.value), c.writes)
        }
        WriteSpec::Patch {
            target: t,
            org,
            status,
            note,
        } => {
            let id = target(t);
            let mut fields = obj! {};
            if let Value::Object(o) = &mut fields {
                if let Some(org) = org {
                    o.insert("organizationId".into(), Value::from(org));
                }
                if let Some(status) = status {
                    o.insert("status".into(), status);
                }
                if let Some(note) = note {
                    o.insert("note".into(), Value::from(note));
                }
            }
            let i = id.clone();
            let c = db.mutate(move |tx| tx.patch(&i, fields)).await.unwrap();
            (format!("{what} on {id}"), c.writes)
        }
        WriteSpec::Replace { target: t, with } => {
            let id = target(t);
            let (i, fields) = (id.clone(), with.fields());
            let c = db.mutate(move |tx| tx.replace(&i, fields)).await.unwrap();
            (format!("{what} on {id}"), c.writes)
        }
        WriteSpec::Delete { target: t } => {
            let id = target(t);
            live.retain(|l| *l != id);
            let i = id.clone();
            let c = db.mutate(move |tx| tx.delete(&i)).await.unwrap();
            (format!("{what} on {id}"), c.writes)
        }
    };
    committed
}

#[test]
fn a_write_set_overlaps_a_read_set_exactly_when_the_result_changes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let TestDb { db, .. } = test_db();
    let strategy = (
        prop::collection::vec(arb_thing(), 0..10),
        prop::collection::vec(arb_query(), 1..8),
        prop::collection::vec(arb_write(), 1..6),
    );
    runner(200)
        .run(&strategy, |(things, queries, writes)| {
            rt.block_on(async {
                let docs = reset_things(&db, &things).await;
                let mut live: Vec<DocumentId> = docs.iter().map(id_of).collect();
                let queries: Vec<Query> = queries
                    .iter()
                    .map(|q| match q {
                        QuerySpec::Range(r) => Query::Range(r.resolve(&docs)),
                        QuerySpec::Get(i) if live.is_empty() => Query::Get(DocumentId::generate("things")),
                        QuerySpec::Get(i) => Query::Get(live[i % live.len()].clone()),
                    })
                    .collect();
                for write in &writes {
                    let mut before = Vec::new();
                    for q in &queries {
                        before.push(q.run(&db).await?);
                    }
                    let (what, write_set) = apply(&db, write, &mut live).await;
                    for (q, (result_before, reads)) in queries.iter().zip(before) {
                        let (result_after, _) = q.run(&db).await?;
                        let changed = result_before != result_after;
                        prop_assert_eq!(
                            reads.overlaps(&write_set),
                            changed,
                            "query {:?}\nwrite {}\nbefore {:?}\nafter {:?}\nreads {:?}\nwrites {:?}",
                            q,
                            what,
                            result_before,
                            result_after,
                            reads,
                            write_set
                        );
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

/// The same property on hand-picked cases whose answers are known, so a
/// regression shows up with a readable name as well as in the random test.
#[tokio::test]
async fn take_reads_only_up_to_its_last_document() {
    let TestDb { db, .. } = test_db();
    let mut ids = Vec::new();
    for status in ["a", "b", "c", "d"] {
        let c = db
            .mutate(move |tx| {
                tx.insert(
                    "things",
                    obj! { "organizationId" => "o1", "status" => status, "note" => "x" },
                )
            })
            .await
            .unwrap();
        ids.push(c.value);
    }
    let first_two = db
        .query(|tx| {
            tx.query("things")
                .with_index("by_organization_status", |q| q.eq("organizationId", "o1"))
                .take(2)
        })
        .await
        .unwrap();
    let last_two = db
        .query(|tx| {
            tx.query("things")
                .with_index("by_organization_status", |q| q.eq("organizationId", "o1"))
                .order(Order::Desc)
                .take(2)
        })
        .await
        .unwrap();
    let get_c = {
        let id = ids[2].clone();
        db.query(move |tx| tx.get(&id)).await.unwrap()
    };
    // A note change on `d` is past the first two, inside the last two, and not `c`.
    let d = ids[3].clone();
    let c = db
        .mutate(move |tx| tx.patch(&d, obj! { "note" => "y" }))
        .await
        .unwrap();
    assert!(!first_two.reads.overlaps(&c.writes));
    assert!(last_two.reads.overlaps(&c.writes));
    assert!(!get_c.reads.overlaps(&c.writes));
    // Moving `d` to status "0" puts it before `a`: now the first two change.
    let d = ids[3].clone();
    let c = db
        .mutate(move |tx| tx.patch(&d, obj! { "status" => "0" }))
        .await
        .unwrap();
    assert!(first_two.reads.overlaps(&c.writes));
    assert!(last_two.reads.overlaps(&c.writes));
    // A patch that changes nothing writes nothing.
    let cid = ids[2].clone();
    let c = db
        .mutate(move |tx| tx.patch(&cid, obj! { "status" => "c" }))
        .await
        .unwrap();
    assert!(c.writes.is_empty());
    assert!(!get_c.reads.overlaps(&c.writes));
    // Another organization is outside every read.
    let c = db
        .mutate(|tx| {
            tx.insert(
                "things",
                obj! { "organizationId" => "o2", "status" => "a", "note" => "x" },
            )
        })
        .await
        .unwrap();
    for reads in [&first_two.reads, &last_two.reads, &get_c.reads] {
        assert!(!reads.overlaps(&c.writes));
    }
}
