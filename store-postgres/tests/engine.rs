//! What the PostgreSQL engine promises beyond the conformance suite: one
//! writer at a time (a second waits for the first and starts from its
//! commit), a writer whose claim was taken over committing nothing, use from async code, a connection the server closed opened
//! again, tables made before opened by a user who may not create any, and TLS when the URL requires it — with a
//! certificate it trusts, never plain text instead. And the writer's
//! buffered writes: coalesced per key, seen by the transaction's own reads,
//! dropped by a rollback to a savepoint made before them, an insert of a
//! taken id refused at the call, and a write that fails to be sent failing
//! the call and the commit.

use livebase_schema::{DocumentId, Object, Timestamp, Value};
use livebase_store::persistence::{MutationOutcome, Order};
use livebase_store::{Document, Persistence, StoreError};
use livebase_store_postgres::PostgresPersistence;
use livebase_testkit::postgres::{server_ca, server_url, unique_name, TestDatabase};

fn open(test: &str) -> Option<PostgresPersistence> {
    let url = server_url(test)?;
    Some(PostgresPersistence::open_schema(&url, &unique_name("engine"), None).expect("opens"))
}

fn doc() -> Document {
    Document {
        id: DocumentId::generate("t"),
        creation_time: 1.0,
        fields: Object::new(),
    }
}

#[test]
fn a_second_writer_waits_for_the_first_and_starts_from_its_commit() {
    let Some(p) = open("a_second_writer_waits") else {
        return;
    };
    let mut first = p.connect().unwrap();
    assert_eq!(first.begin_write().unwrap(), Timestamp::ZERO);
    let d = doc();
    first.put_document(&d).unwrap();
    let second = std::thread::spawn({
        let p = p.clone();
        move || {
            let mut second = p.connect().unwrap();
            // Blocks until the first writer ends; then sees its commit.
            let ts = second.begin_write().unwrap();
            let seen = second.get(&d.id).unwrap();
            second.rollback().unwrap();
            (ts, seen.is_some())
        }
    });
    first.commit(Timestamp::new(5)).unwrap();
    assert_eq!(second.join().unwrap(), (Timestamp::new(5), true));
}

#[tokio::test]
async fn the_engine_opens_reads_and_writes_from_async_code() {
    let Some(p) = open("the_engine_opens_from_async_code") else {
        return;
    };
    // As `Database::open` does on the server's runtime: connect, a snapshot,
    // and a write, on this async thread; then the connection is dropped here.
    let mut conn = p.connect().unwrap();
    assert_eq!(conn.begin_read().unwrap(), Timestamp::ZERO);
    conn.end_read().unwrap();
    conn.begin_write().unwrap();
    let d = doc();
    conn.put_document(&d).unwrap();
    conn.commit(Timestamp::new(3)).unwrap();
    assert_eq!(conn.begin_read().unwrap(), Timestamp::new(3));
    assert_eq!(conn.get(&d.id).unwrap(), Some(d));
    conn.end_read().unwrap();
    drop(conn);
}

#[test]
fn sslmode_require_connects_over_tls_to_a_certificate_it_trusts_and_to_no_other() {
    let test = "sslmode_require";
    let Some(url) = server_url(test) else {
        return;
    };
    let Some(ca) = server_ca(test) else {
        // A server given from outside may have no TLS; the one .ci/run and
        // the tests start have it wherever openssl is installed.
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI the tests' PostgreSQL speaks TLS"
        );
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let required = format!("{url}{sep}sslmode=require");
    // The tests' CA signed the server's certificate for 127.0.0.1.
    let p = PostgresPersistence::open_schema(&required, &unique_name("tls"), Some(&ca))
        .expect("connects over TLS with the server's CA");
    let mut conn = p.connect().unwrap();
    assert_eq!(conn.begin_read().unwrap(), Timestamp::ZERO);
    conn.end_read().unwrap();
    // Mozilla's roots do not know that CA: refused, not plain text instead.
    let refused = PostgresPersistence::open_schema(&required, &unique_name("tls"), None);
    assert!(refused.is_err(), "connected without a trusted certificate");
}

#[test]
fn a_connection_the_server_closed_connects_again_at_the_next_transaction() {
    let Some(db) = TestDatabase::create("a_connection_the_server_closed") else {
        return;
    };
    let p = PostgresPersistence::open(&db.url).expect("opens");
    let mut conn = p.connect().unwrap();
    conn.begin_write().unwrap();
    let d = doc();
    conn.put_document(&d).unwrap();
    conn.commit(Timestamp::new(7)).unwrap();

    // As a restart of the server, or an administrator, would.
    let mut admin = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert_eq!(ended.len(), 1, "our one connection");

    assert_eq!(conn.begin_read().unwrap(), Timestamp::new(7));
    assert_eq!(conn.get(&d.id).unwrap(), Some(d));
    conn.end_read().unwrap();
}

#[test]
fn a_user_with_only_read_and_write_rights_opens_tables_made_before() {
    let Some(db) = TestDatabase::create("a_user_with_only_read_and_write_rights") else {
        return;
    };
    // Made by the database's owner, as on a first start.
    let owner = PostgresPersistence::open(&db.url).expect("the owner makes the tables");
    drop(owner);
    let role = unique_name("app");
    let mut admin = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'app';
             GRANT USAGE ON SCHEMA livebase TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA livebase TO {role};"
        ))
        .unwrap();
    let mut url = url::Url::parse(&db.url).expect("a postgres:// URL");
    url.set_username(&role).unwrap();
    url.set_password(Some("app")).unwrap();
    let app = PostgresPersistence::open(url.as_str()).expect("opens without the right to create");
    let mut conn = app.connect().unwrap();
    conn.begin_write().unwrap();
    let d = doc();
    conn.put_document(&d).unwrap();
    conn.commit(Timestamp::new(1)).unwrap();
    drop(conn);
    drop(app);
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .ok();
}

#[test]
fn a_writer_whose_epoch_was_taken_over_commits_nothing() {
    let Some(url) = server_url("a_writer_whose_epoch_was_taken_over") else {
        return;
    };
    let schema = unique_name("fenced");
    let node = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    node.claim_node().expect("the first node claims the schema");
    assert_eq!(node.epoch(), 1);
    let mut writer = node.connect().unwrap();
    writer.begin_write().unwrap();
    let kept = doc();
    writer.put_document(&kept).unwrap();
    writer
        .commit(Timestamp::new(1))
        .expect("its own epoch: the commit lands");

    // Another node took over (its claim moved the epoch on).
    let other = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    sql.batch_execute(&format!(
        "UPDATE \"{schema}\".meta SET value = value + 1 WHERE name = 'epoch'"
    ))
    .unwrap();

    writer.begin_write().unwrap();
    let lost = doc();
    writer.put_document(&lost).unwrap();
    let refused = writer
        .commit(Timestamp::new(2))
        .expect_err("a deposed writer");
    assert!(refused.to_string().contains("taken over"), "{refused}");

    let mut reader = other.connect().unwrap();
    assert_eq!(reader.begin_read().unwrap(), Timestamp::new(1));
    assert!(reader.get(&kept.id).unwrap().is_some());
    assert!(
        reader.get(&lost.id).unwrap().is_none(),
        "nothing of it landed"
    );
    reader.end_read().unwrap();
}

fn doc_at(creation_time: f64, n: i64) -> Document {
    let mut fields = Object::new();
    fields.insert("n".into(), Value::Int64(n));
    Document {
        id: DocumentId::generate("t"),
        creation_time,
        fields,
    }
}

fn outcome(request_id: u32, path: &str) -> MutationOutcome {
    MutationOutcome {
        session_id: "session".into(),
        request_id,
        fingerprint: vec![1; 32],
        ts: Timestamp::new(1),
        path: path.into(),
        value: Value::Int64(7),
    }
}

/// Every key written more than once in a transaction ends as its last
/// write left it: PostgreSQL refuses a multi-row statement that touches one
/// row twice, so the buffer keeps one state per key.
#[test]
fn writes_to_one_key_in_one_transaction_end_as_the_last_left_it() {
    let Some(p) = open("writes_to_one_key_in_one_transaction") else {
        return;
    };
    let mut w = p.connect().unwrap();
    let (kept, gone, replaced) = (doc_at(1.0, 1), doc_at(2.0, 2), doc_at(3.0, 3));
    w.begin_write().unwrap();
    w.put_document(&replaced).unwrap();
    w.commit(Timestamp::new(1)).unwrap();

    w.begin_write().unwrap();
    w.put_index_entry(b"k-put-then-delete", &kept.id).unwrap();
    w.delete_index_entry(b"k-put-then-delete").unwrap();
    w.delete_index_entry(b"k-delete-then-put").unwrap();
    w.put_index_entry(b"k-delete-then-put", &gone.id).unwrap();
    w.put_index_entry(b"k-delete-then-put", &kept.id).unwrap();
    w.insert_document(&kept).unwrap();
    let mut changed = kept.clone();
    changed.creation_time = 50.0;
    changed.fields.insert("n".into(), Value::Int64(10));
    // A put keeps a stored document's creation time, also when the store
    // has it only in this transaction.
    w.put_document(&changed).unwrap();
    w.put_document(&gone).unwrap();
    w.delete_document(&gone.id).unwrap();
    // Deleted, then written again: the new one whole, creation time too.
    w.delete_document(&replaced.id).unwrap();
    let mut again = replaced.clone();
    again.creation_time = 30.0;
    w.put_document(&again).unwrap();
    w.put_outcome(&outcome(1, "first")).unwrap();
    w.put_outcome(&outcome(1, "second")).unwrap();
    w.commit(Timestamp::new(2)).unwrap();

    let mut r = p.connect().unwrap();
    r.begin_read().unwrap();
    let mut expected = kept.clone();
    expected.fields = changed.fields.clone();
    assert_eq!(r.get(&kept.id).unwrap(), Some(expected.clone()));
    assert_eq!(r.get(&gone.id).unwrap(), None);
    assert_eq!(r.get(&replaced.id).unwrap(), Some(again));
    let entries = r.scan(b"k-", b"k.", Order::Asc, 10).unwrap();
    assert_eq!(
        entries,
        vec![(b"k-delete-then-put".to_vec(), expected)],
        "the put-then-deleted key is gone, the other points at the last id"
    );
    let stored = r
        .get_outcome("session", 1, &[1; 32])
        .unwrap()
        .expect("stored");
    assert_eq!(stored.path, "second");
    r.end_read().unwrap();
}

/// A write transaction reads its own writes, however they were buffered.
#[test]
fn a_read_after_buffered_writes_sees_them() {
    let Some(p) = open("a_read_after_buffered_writes") else {
        return;
    };
    let mut w = p.connect().unwrap();
    let (a, b) = (doc_at(1.0, 1), doc_at(2.0, 2));
    w.begin_write().unwrap();
    w.insert_document(&a).unwrap();
    w.put_index_entry(b"r-a", &a.id).unwrap();
    assert_eq!(w.get(&a.id).unwrap(), Some(a.clone()));
    w.put_document(&b).unwrap();
    w.put_index_entry(b"r-b", &b.id).unwrap();
    let keys: Vec<Vec<u8>> = w
        .scan(b"r-", b"r.", Order::Asc, 10)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"r-a".to_vec(), b"r-b".to_vec()]);
    w.delete_index_entry(b"r-a").unwrap();
    w.delete_document(&a.id).unwrap();
    assert_eq!(w.scan(b"r-", b"r.", Order::Desc, 10).unwrap().len(), 1);
    assert_eq!(w.get(&a.id).unwrap(), None);
    let all = w.scan_documents(None, 10).unwrap();
    assert_eq!(all, vec![b.clone()]);
    w.put_outcome(&outcome(3, "f")).unwrap();
    assert_eq!(w.count_outcomes().unwrap(), 1);
    assert!(w.get_outcome("session", 3, &[1; 32]).unwrap().is_some());
    w.rollback().unwrap();

    // A rollback discards the buffer: nothing of it reaches the next one.
    w.begin_write().unwrap();
    w.commit(Timestamp::new(1)).unwrap();
    let mut r = p.connect().unwrap();
    r.begin_read().unwrap();
    assert_eq!(r.get(&b.id).unwrap(), None);
    assert_eq!(r.count_outcomes().unwrap(), 0);
    r.end_read().unwrap();
}

/// A rollback to a savepoint drops the writes buffered after it, and those
/// sent after it (a read made them go), but none from before it.
#[test]
fn a_rollback_to_a_savepoint_drops_the_writes_buffered_after_it() {
    let Some(p) = open("a_rollback_to_a_savepoint_drops") else {
        return;
    };
    let mut w = p.connect().unwrap();
    let docs: Vec<Document> = (0..6).map(|n| doc_at(1.0, n)).collect();
    w.begin_write().unwrap();
    w.put_document(&docs[0]).unwrap();
    w.savepoint().unwrap();
    w.put_document(&docs[1]).unwrap();
    w.put_index_entry(b"s-1", &docs[1].id).unwrap();
    w.rollback_to_savepoint().unwrap();

    w.savepoint().unwrap();
    w.put_document(&docs[2]).unwrap();
    // Reading its own write sends it, and the savepoint before it.
    assert!(w.get(&docs[2].id).unwrap().is_some());
    w.put_document(&docs[3]).unwrap();
    w.put_outcome(&outcome(1, "undone")).unwrap();
    w.rollback_to_savepoint().unwrap();
    assert_eq!(w.get(&docs[2].id).unwrap(), None);

    w.savepoint().unwrap();
    w.put_document(&docs[4]).unwrap();
    w.release_savepoint().unwrap();
    w.savepoint().unwrap();
    w.insert_document(&docs[5]).unwrap();
    assert!(w.get(&docs[5].id).unwrap().is_some());
    w.release_savepoint().unwrap();
    w.commit(Timestamp::new(1)).unwrap();

    let mut r = p.connect().unwrap();
    r.begin_read().unwrap();
    let present: Vec<bool> = docs
        .iter()
        .map(|d| r.get(&d.id).unwrap().is_some())
        .collect();
    assert_eq!(present, [true, false, false, false, true, true]);
    assert!(r.scan(b"s-", b"s.", Order::Asc, 10).unwrap().is_empty());
    assert_eq!(r.count_outcomes().unwrap(), 0);
    r.end_read().unwrap();
}

/// Inserting a document whose id is taken — stored, or written earlier in
/// the transaction and still buffered — fails at the call.
#[test]
fn inserting_a_taken_id_fails_at_the_call_with_buffered_writes_pending() {
    let Some(p) = open("inserting_a_taken_id_fails_at_the_call") else {
        return;
    };
    let mut w = p.connect().unwrap();
    let (stored, pending) = (doc_at(1.0, 1), doc_at(2.0, 2));
    w.begin_write().unwrap();
    w.insert_document(&stored).unwrap();
    w.commit(Timestamp::new(1)).unwrap();

    w.begin_write().unwrap();
    w.put_document(&pending).unwrap();
    w.put_index_entry(b"i-pending", &pending.id).unwrap();
    let mut clash = stored.clone();
    clash.creation_time = 99.0;
    assert!(matches!(
        w.insert_document(&clash),
        Err(StoreError::IdTaken(id)) if id == stored.id
    ));
    assert!(matches!(
        w.insert_document(&pending),
        Err(StoreError::IdTaken(id)) if id == pending.id
    ));
    // Deleted in this transaction: its id is free again.
    w.delete_document(&stored.id).unwrap();
    w.insert_document(&clash).unwrap();
    w.commit(Timestamp::new(2)).unwrap();

    let mut r = p.connect().unwrap();
    r.begin_read().unwrap();
    assert_eq!(r.get(&stored.id).unwrap(), Some(clash));
    assert_eq!(r.get(&pending.id).unwrap(), Some(pending));
    r.end_read().unwrap();
}

/// A buffered write the server refuses fails the call that sent it, and
/// the transaction commits nothing — never a silent loss.
#[test]
fn a_buffered_write_the_server_refuses_fails_the_call_and_the_commit() {
    let Some(p) = open("a_buffered_write_the_server_refuses") else {
        return;
    };
    let mut w = p.connect().unwrap();
    let d = doc_at(1.0, 1);
    w.begin_write().unwrap();
    w.put_document(&d).unwrap();
    // PostgreSQL's text holds no NUL character.
    w.put_outcome(&outcome(1, "a\0b")).unwrap();
    assert!(w.get_outcome("session", 1, &[1; 32]).is_err());
    assert!(w.commit(Timestamp::new(1)).is_err());

    // Refused at the commit's own statement: the same.
    w.begin_write().unwrap();
    w.put_document(&d).unwrap();
    w.put_outcome(&outcome(1, "a\0b")).unwrap();
    assert!(w.commit(Timestamp::new(2)).is_err());

    let mut r = p.connect().unwrap();
    assert_eq!(r.begin_read().unwrap(), Timestamp::ZERO);
    assert_eq!(r.get(&d.id).unwrap(), None);
    r.end_read().unwrap();
}
