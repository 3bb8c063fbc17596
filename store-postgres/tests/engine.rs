//! What the PostgreSQL engine promises beyond the conformance suite: one
//! writer at a time (a second waits for the first and starts from its
//! commit), a writer whose claim was taken over committing nothing, use from async code, a connection the server closed opened
//! again, tables made before opened by a user who may not create any, and TLS when the URL requires it — with a
//! certificate it trusts, never plain text instead.

use livebase_schema::{DocumentId, Object, Timestamp};
use livebase_store::{Document, Persistence};
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
