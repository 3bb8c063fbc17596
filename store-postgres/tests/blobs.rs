//! The PostgreSQL blob store passes the blob stores' conformance suite and
//! what a store shared between nodes must add (pins), each in a schema of
//! its own on the tests' server; and a second handle on the same schema (a
//! second node) reads what the first wrote.

use std::io::Read;

use livebase_store::blobs::{self, BlobStore};
use livebase_store_postgres::{PostgresBlobs, PostgresPersistence, CHUNK};
use livebase_testkit::postgres::{drop_schema, server_url, unique_name};

/// A fresh schema, dropped when the test ends.
struct OwnSchema {
    engine: PostgresPersistence,
    url: String,
}

impl OwnSchema {
    fn create(test: &str) -> Option<OwnSchema> {
        let url = server_url(test)?;
        let engine = PostgresPersistence::open_schema(&url, &unique_name("blobs"), None)
            .expect("open a fresh schema");
        Some(OwnSchema { engine, url })
    }
}

impl Drop for OwnSchema {
    fn drop(&mut self) {
        drop_schema(&self.url, self.engine.schema());
    }
}

#[test]
fn the_postgres_blob_store_passes_the_conformance_suite() {
    let Some(schema) = OwnSchema::create("the blob store's conformance suite") else {
        return;
    };
    blobs::conformance(&PostgresBlobs::new(&schema.engine));
}

#[test]
fn the_postgres_blob_store_holds_pins_for_other_nodes() {
    let Some(schema) = OwnSchema::create("the blob store's pins") else {
        return;
    };
    blobs::shared_conformance(&PostgresBlobs::new(&schema.engine));
}

#[test]
fn another_node_reads_a_blob_and_an_abandoned_upload_is_left_to_its_node_until_it_is_stale() {
    let Some(schema) = OwnSchema::create("the blob store across nodes") else {
        return;
    };
    let one = PostgresBlobs::new(&schema.engine);
    let other_engine =
        PostgresPersistence::open_schema(&schema.url, schema.engine.schema(), None).unwrap();
    let other = PostgresBlobs::new(&other_engine);

    let bytes: Vec<u8> = (0..(CHUNK as u32 * 2 + 17))
        .map(|i| (i % 241) as u8)
        .collect();
    let mut w = one.begin().unwrap();
    w.write(&bytes).unwrap();
    let blob = w.finish().unwrap();
    let mut read = Vec::new();
    other
        .read(&blob.sha256, 0, u64::MAX)
        .unwrap()
        .expect("the other node finds it")
        .read_to_end(&mut read)
        .unwrap();
    assert!(read == bytes);

    // An upload in progress on one node survives another node's start.
    let mut half = one.begin().unwrap();
    half.write(&bytes[..CHUNK + 1]).unwrap();
    assert_eq!(other.remove_temporary().unwrap(), 0);
    half.write(&bytes[CHUNK + 1..]).unwrap();
    assert_eq!(half.finish().unwrap(), blob, "the same bytes: one blob");
    assert_eq!(other.list().unwrap(), vec![blob.sha256.clone()]);

    // A node that crashed mid-upload: its chunks stay until the upload has
    // written nothing for `ABANDONED`, then the next start removes them.
    let mut crashed = one.begin().unwrap();
    crashed.write(&bytes[..CHUNK + 5]).unwrap();
    std::mem::forget(crashed);
    assert_eq!(other.remove_temporary().unwrap(), 0);
    let mut sql = postgres::Client::connect(&schema.url, postgres::NoTls).unwrap();
    let in_schema = |table: &str| format!("\"{}\".{table}", schema.engine.schema());
    sql.execute(
        &format!(
            "UPDATE {} SET touched = touched - interval '2 hours'",
            in_schema("blob_uploads")
        ),
        &[],
    )
    .unwrap();
    assert_eq!(other.remove_temporary().unwrap(), 1);
    let chunks: i64 = sql
        .query_one(
            &format!("SELECT count(*) FROM {}", in_schema("blob_chunks")),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(chunks, 3, "only the finished blob's chunks are left");
}

#[test]
fn many_downloads_at_once_take_at_most_max_clients_connections() {
    use livebase_store_postgres::MAX_CLIENTS;
    use livebase_testkit::postgres::TestDatabase;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;

    let Some(db) = TestDatabase::create("the blob store's connections") else {
        return;
    };
    let engine = PostgresPersistence::open(&db.url).unwrap();
    let blobs = PostgresBlobs::new(&engine);
    let bytes: Vec<u8> = (0..(CHUNK as u32 * 3)).map(|i| (i % 239) as u8).collect();
    let mut w = blobs.begin().unwrap();
    w.write(&bytes).unwrap();
    let hash = w.finish().unwrap().sha256;

    // A watcher counts the database's sessions (its own among them) while
    // 24 threads read the blob a byte at a time, a query per chunk each.
    let (done, most) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicI64::new(0)),
    );
    let watcher = {
        let (url, done, most) = (db.url.clone(), done.clone(), most.clone());
        std::thread::spawn(move || {
            let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            while !done.load(Ordering::Relaxed) {
                let n: i64 = sql
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
                        &[],
                    )
                    .unwrap()
                    .get(0);
                most.fetch_max(n, Ordering::Relaxed);
            }
        })
    };
    let readers: Vec<_> = (0..24)
        .map(|_| {
            let (blobs, hash, bytes) = (blobs.clone(), hash.clone(), bytes.clone());
            std::thread::spawn(move || {
                let mut reader = blobs.read(&hash, 0, u64::MAX).unwrap().unwrap();
                let mut got = Vec::new();
                let mut byte = [0u8; 1];
                while reader.read(&mut byte).unwrap() == 1 {
                    got.push(byte[0]);
                }
                assert!(got == bytes);
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let most = most.load(Ordering::Relaxed);
    // The engine's own session from `open` is closed by now; the watcher's
    // is one.
    assert!(most >= 2, "the readers' sessions were seen: {most}");
    assert!(
        most <= MAX_CLIENTS as i64 + 1,
        "{most} sessions, at most {MAX_CLIENTS} of them the store's"
    );
}
