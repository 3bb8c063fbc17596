//! A connection that keeps the index ranges it read answers every query as a
//! connection that reads everything from SQLite does: after each of many
//! random commits (inserts, changes, moves between index ranges, deletes),
//! across several commits at once, after writes it was not told of, and past
//! the commits it can be told of.

use std::sync::Arc;

use livebase_schema::table::define_table;
use livebase_schema::{obj, v, DocumentId, Schema, Value};
use livebase_store::database::{run_query, Database};
use livebase_store::persistence::ranges::RECENT_COMMITS;
use livebase_store::persistence::{index_key, Document};
use livebase_store::transaction::Transaction;
use livebase_store::{Order, Persistence, Result, SqlitePersistence, StoreConnection};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn schema() -> Schema {
    Schema::new().table(
        "notes",
        define_table([("group", v::string()), ("n", v::float64())])
            .index("by_group", ["group"])
            .index("by_group_n", ["group", "n"]),
    )
}

const GROUPS: [&str; 3] = ["a", "b", "c"];

/// Every query shape a live query makes of an index: whole ranges (read in
/// batches past 128 documents), both orders, limits, bounds, filters.
fn queries(tx: &mut Transaction) -> Result<Vec<Vec<Value>>> {
    let mut out = Vec::new();
    for g in GROUPS {
        out.push(
            tx.query("notes")
                .with_index("by_group", |q| q.eq("group", g))
                .collect()?,
        );
        out.push(
            tx.query("notes")
                .with_index("by_group", |q| q.eq("group", g))
                .order(Order::Desc)
                .take(7)?,
        );
        out.push(
            tx.query("notes")
                .with_index("by_group_n", |q| {
                    q.eq("group", g).gte("n", 10.0).lt("n", 40.0)
                })
                .collect()?,
        );
        out.push(
            tx.query("notes")
                .with_index("by_group_n", |q| q.eq("group", g).gt("n", 20.0))
                .order(Order::Desc)
                .take(3)?,
        );
        out.push(
            tx.query("notes")
                .with_index("by_group", |q| q.eq("group", g))
                .filter(|d| d.get("n").and_then(Value::as_f64).unwrap_or(0.0) > 25.0)
                .take(5)?,
        );
    }
    out.push(tx.query("notes").take(150)?);
    Ok(out)
}

/// What `conn` answers, and what a connection that has read nothing answers.
fn both(
    persistence: &SqlitePersistence,
    conn: &mut dyn StoreConnection,
) -> (Vec<Vec<Value>>, Vec<Vec<Value>>) {
    let schema = schema();
    let cached = run_query(conn, &schema, queries)
        .expect("the kept connection reads")
        .value;
    let mut fresh = persistence.connect().expect("a connection");
    let truth = run_query(fresh.as_mut(), &schema, queries)
        .expect("a fresh connection reads")
        .value;
    (cached, truth)
}

async fn random_commit(db: &Database, rng: &mut StdRng, ids: &mut Vec<DocumentId>) {
    let action = rng.random_range(0..10);
    let group = GROUPS[rng.random_range(0..GROUPS.len())];
    let n = f64::from(rng.random_range(0..50u8));
    let pick = (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())].clone());
    match (action, pick) {
        (0..=3, _) | (_, None) => {
            let id = db
                .mutate(move |tx| tx.insert("notes", obj! { "group" => group, "n" => n }))
                .await
                .expect("inserts")
                .value;
            ids.push(id);
        }
        (4..=6, Some(id)) => {
            db.mutate(move |tx| tx.patch(&id, obj! { "n" => n }))
                .await
                .expect("patches");
        }
        (7 | 8, Some(id)) => {
            // Moves the document to another range of both indexes.
            db.mutate(move |tx| tx.patch(&id, obj! { "group" => group }))
                .await
                .expect("moves");
        }
        (_, Some(id)) => {
            ids.retain(|i| *i != id);
            db.mutate(move |tx| tx.delete(&id)).await.expect("deletes");
        }
    }
}

#[tokio::test]
async fn kept_ranges_answer_as_the_engine_does_after_random_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    let persistence = SqlitePersistence::open(&path).unwrap();
    let db = Database::open(Arc::new(persistence.clone()), schema()).unwrap();
    let mut reader = persistence.connect().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut ids = Vec::new();
    // More than one scan batch (128) in a range.
    for i in 0..300 {
        let id = db
            .mutate(move |tx| tx.insert("notes", obj! { "group" => "a", "n" => f64::from(i % 50) }))
            .await
            .unwrap()
            .value;
        ids.push(id);
    }
    for round in 0..400 {
        // Sometimes several commits between two reads.
        for _ in 0..rng.random_range(1..4) {
            random_commit(&db, &mut rng, &mut ids).await;
        }
        if rng.random_bool(0.7) {
            let (cached, truth) = both(&persistence, reader.as_mut());
            assert_eq!(cached, truth, "round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_ranges_answer_as_the_engine_does_after_groups_with_failed_mutations() {
    // Mutations sent together share one commit (each in a savepoint); one
    // that fails after writing is undone alone, and what it wrote must not
    // be taken for written.
    let dir = tempfile::tempdir().unwrap();
    let persistence = SqlitePersistence::open(dir.path().join("db.sqlite3")).unwrap();
    let db = Database::open(Arc::new(persistence.clone()), schema()).unwrap();
    let mut reader = persistence.connect().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..150 {
        let mut sent = Vec::new();
        for _ in 0..rng.random_range(1..8) {
            let group = GROUPS[rng.random_range(0..GROUPS.len())];
            let n = f64::from(rng.random_range(0..50u8));
            let fail = rng.random_bool(0.3);
            let db = db.clone();
            sent.push(tokio::spawn(async move {
                db.mutate(move |tx| {
                    tx.insert("notes", obj! { "group" => group, "n" => n })?;
                    if fail {
                        return Err(livebase_store::Error::invalid("undone"));
                    }
                    Ok(())
                })
                .await
            }));
        }
        for m in sent {
            let _ = m.await.expect("the mutation's task");
        }
        let (cached, truth) = both(&persistence, reader.as_mut());
        assert_eq!(cached, truth, "round {round}");
    }
}

/// A store holding one note in group `a`, and a connection that has read
/// every query once (and kept its ranges).
async fn one_note_read() -> (
    tempfile::TempDir,
    SqlitePersistence,
    Database,
    Box<dyn StoreConnection>,
    DocumentId,
) {
    let dir = tempfile::tempdir().unwrap();
    let persistence = SqlitePersistence::open(dir.path().join("db.sqlite3")).unwrap();
    let db = Database::open(Arc::new(persistence.clone()), schema()).unwrap();
    let mut reader = persistence.connect().unwrap();
    let id = db
        .mutate(|tx| tx.insert("notes", obj! { "group" => "a", "n" => 1.0 }))
        .await
        .unwrap()
        .value;
    let (cached, truth) = both(&persistence, reader.as_mut());
    assert_eq!(cached, truth);
    (dir, persistence, db, reader, id)
}

#[tokio::test]
async fn a_write_the_ranges_were_not_told_of_is_read() {
    let (dir, persistence, db, mut reader, _) = one_note_read().await;
    let path = dir.path().join("db.sqlite3");

    // Another opening of the same file writes a document straight into the
    // engine (as an import does), without saying what it wrote.
    let other = SqlitePersistence::open(&path).unwrap();
    let mut w = other.connect().unwrap();
    let ts = w.begin_write().unwrap().next_after(0);
    let def = schema();
    let table = def.get("notes").unwrap();
    let value = obj! { "group" => "a", "n" => 2.0 };
    let Value::Object(fields) = value else {
        unreachable!()
    };
    let doc = Document {
        id: DocumentId::generate("notes"),
        creation_time: 2.0,
        fields: fields.into_fields(),
    };
    w.insert_document(&doc).unwrap();
    for index in table.all_indexes() {
        w.put_index_entry(&index_key("notes", index, &doc), &doc.id)
            .unwrap();
    }
    w.commit(ts).unwrap();

    let (cached, truth) = both(&persistence, reader.as_mut());
    assert_eq!(cached, truth);
    assert_eq!(cached[0].len(), 2, "the new document is in group a");
    drop(db);
}

#[tokio::test]
async fn a_range_older_than_the_commits_kept_is_read_again() {
    let (_dir, persistence, db, mut reader, first) = one_note_read().await;
    // More commits than are kept, the first of them into the kept range;
    // the rest elsewhere.
    db.mutate(move |tx| tx.patch(&first, obj! { "n" => 2.0 }))
        .await
        .unwrap();
    for _ in 0..RECENT_COMMITS {
        db.mutate(|tx| tx.insert("notes", obj! { "group" => "c", "n" => 0.0 }))
            .await
            .unwrap();
    }
    let (cached, truth) = both(&persistence, reader.as_mut());
    assert_eq!(cached, truth);
    assert_eq!(cached[0][0].get("n"), Some(&Value::Float64(2.0)));
}
