//! What the PostgreSQL engine promises beyond the conformance suite: one
//! writer at a time (a second waits for the first and starts from its
//! commit), use from async code, and no silent plain-text fallback when TLS
//! is required.

use livebase_schema::{DocumentId, Object, Timestamp};
use livebase_store::{Document, Persistence};
use livebase_store_postgres::PostgresPersistence;
use livebase_testkit::postgres::{server_url, unique_name};

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
fn sslmode_require_fails_against_a_server_without_tls_instead_of_going_plain() {
    let Some(url) = server_url("sslmode_require_fails") else {
        return;
    };
    // The tests' server has no TLS.
    let sep = if url.contains('?') { '&' } else { '?' };
    let required = format!("{url}{sep}sslmode=require");
    let refused = PostgresPersistence::open_schema(&required, &unique_name("tls"), None);
    assert!(refused.is_err(), "connected without TLS");
    // The same URL without the requirement connects.
    assert!(PostgresPersistence::open_schema(&url, &unique_name("tls"), None).is_ok());
}
