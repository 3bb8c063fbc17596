//! Target `import`: a hostile export file through `livebase import`'s reader
//! (`livebase_runtime::backup::import`), into an empty real SQLite store,
//! against the real application schema with the system tables.
//!
//! Invariants: the import never panics; it fails only with a line error whose
//! line exists in the file (1-based; an empty file is line 1) and whose
//! message is not empty, and then leaves the store (and its blob store)
//! empty; when it succeeds,
//! the store holds exactly the documents it counted, and its commit
//! timestamp is after the export's snapshot and every creation time in it
//! (time never goes back across a move).

use std::cell::RefCell;

use livebase_runtime::backup::{import, BackupError};
use livebase_runtime::storage::{BlobStore, DirBlobStore};
use livebase_runtime::store::sqlite::SqlitePersistence;
use livebase_runtime::store::Persistence;
use livebase_runtime::system::with_system_tables;
use livebase_schema::Schema;
use serde_json::Value as Json;

use crate::{error_label, Target};

pub const TARGET: Target = Target {
    name: "import",
    checks: "export files: no panic; all or nothing; errors name a line of the file; time moves on",
    run,
    dictionary: &[
        br#"{"format":"livebase-export","version":1,"exportedAt":1.0,"snapshotTs":5}"#,
        br#"{"format":"livebase-export","version":2,"exportedAt":1.0,"snapshotTs":5}"#,
        br#"{"blob":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","bytes":""}"#,
        br#""table":"_storage""#,
        br#""sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855""#,
        br#""snapshotTs":18446744073709551615"#,
        br#""_creationTime":1e300"#,
        br#""_creationTime":-1"#,
        br#""table":"users""#,
        br#""table":"items""#,
        br#""table":"_crons""#,
        br#""_id":"items_0000000000000001""#,
        br#""_id":"users_0000000000000001""#,
        br#""doc":{}"#,
        br#"{"$integer":"AQAAAAAAAAA="}"#,
        br#"{"$bytes":"AQI="}"#,
        b"\n",
        b"\r\n",
        b"\n\n",
        b"\xFF",
    ],
};

struct Store {
    dir: tempfile::TempDir,
    persistence: SqlitePersistence,
    blobs: DirBlobStore,
    schema: Schema,
    /// Imports that succeeded into this folder so far (each gets a new file).
    used: usize,
}

thread_local! {
    static STORE: RefCell<Option<Store>> = const { RefCell::new(None) };
}

fn fresh_store() -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    let persistence = SqlitePersistence::open(dir.path().join("0.sqlite3")).expect("open");
    let blobs = DirBlobStore::open(&dir.path().join("0")).expect("open");
    Store {
        dir,
        persistence,
        blobs,
        schema: with_system_tables(livebase_functions::schema()),
        used: 0,
    }
}

fn run(data: &[u8]) -> String {
    // Taken out for the run: a run that panics drops the store, and the
    // next one starts from a fresh folder.
    let mut store = STORE
        .with(|c| c.borrow_mut().take())
        .unwrap_or_else(fresh_store);
    let label = run_in(&store, data);
    if label == "ok" {
        // The store is no longer empty; the next import needs a new one.
        store.used += 1;
        let path = store.dir.path().join(format!("{}.sqlite3", store.used));
        store.persistence = SqlitePersistence::open(path).expect("open");
        let blobs = store.dir.path().join(store.used.to_string());
        store.blobs = DirBlobStore::open(&blobs).expect("open");
    }
    STORE.with(|c| *c.borrow_mut() = Some(store));
    label
}

fn run_in(store: &Store, data: &[u8]) -> String {
    let result = import(
        &store.persistence,
        &store.blobs,
        &store.schema,
        &mut &data[..],
    );
    let held = documents(&store.persistence);
    match result {
        Ok(summary) => {
            assert_eq!(
                held,
                summary.documents(),
                "the store holds what was counted"
            );
            let header = data.split(|b| *b == b'\n').next().unwrap_or_default();
            let header: Json = serde_json::from_slice(header).expect("an accepted header is JSON");
            let snapshot = header["snapshotTs"].as_u64().expect("snapshotTs");
            assert!(
                summary.ts.get() > snapshot,
                "the import commits at {} , not after the export's snapshot {snapshot}",
                summary.ts
            );
            let newest = data
                .split(|b| *b == b'\n')
                .skip(1)
                .filter_map(|line| serde_json::from_slice::<Json>(line).ok())
                .filter_map(|line| line["_creationTime"].as_f64())
                .fold(0.0, f64::max);
            assert!(
                summary.ts.get() as f64 >= newest * 1e6,
                "the import commits at {} ns, before a creation time of {newest} ms",
                summary.ts
            );
            "ok".into()
        }
        Err(BackupError::Line { line, message }) => {
            assert_eq!(held, 0, "a failed import left documents behind");
            let blobs = store.blobs.list().expect("list");
            assert!(blobs.is_empty(), "a failed import left blobs behind");
            let lines = data.split(|b| *b == b'\n').count();
            assert!(
                (1..=lines).contains(&line),
                "line {line} named in a file of {lines} lines: {message}"
            );
            assert!(!message.is_empty(), "an empty message for line {line}");
            format!("line {} {}", line.min(3), error_label(&message))
        }
        Err(other) => panic!("an import failed without naming a line: {other}"),
    }
}

fn documents(p: &SqlitePersistence) -> usize {
    let mut c = p.connect().expect("connect");
    c.begin_read().expect("begin read");
    let n = c.scan_documents(None, usize::MAX >> 1).expect("scan").len();
    c.end_read().expect("end read");
    n
}
