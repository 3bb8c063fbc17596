//! A server does not serve stored documents its schema rejects: new code
//! whose schema narrowed a field refuses to start on the old data, naming
//! the table and the offending documents, and the old code starts again on
//! the same folder as if nothing happened.

mod support;

use std::net::SocketAddr;

use livebase_runtime::registry::Registry;
use livebase_runtime::schema_check::{check_documents, SHOWN_PER_TABLE};
use livebase_runtime::server::{serve, ServerOptions};
use livebase_runtime::store::sqlite::{SqlitePersistence, DATABASE_FILE};
use livebase_runtime::system::with_system_tables;
use livebase_schema::{define_table, obj, v, Schema, Value};
use livebase_testkit::TestServer;

/// The support application's `notes`, with `n` a string instead of a number.
fn narrowed() -> Schema {
    Schema::new().table(
        "notes",
        define_table([
            ("organizationId", v::string()),
            ("body", v::string()),
            ("n", v::string()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"])
        .index("by_organization_n", ["organizationId", "n"]),
    )
}

fn options(dir: &std::path::Path) -> ServerOptions {
    ServerOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_path_buf(),
        ..ServerOptions::default()
    }
}

#[tokio::test]
async fn new_code_whose_schema_rejects_stored_documents_does_not_serve_them() {
    let server = TestServer::start(support::registry()).await;
    let count = SHOWN_PER_TABLE + 2;
    let ids = server
        .database()
        .mutate(move |tx| {
            (0..count)
                .map(|i| {
                    tx.insert(
                        "notes",
                        obj! {
                            "organizationId" => "org",
                            "body" => "b",
                            "n" => Value::Float64(i as f64),
                            "createdBy" => "u",
                        },
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .expect("notes are written")
        .value;
    let dir = server.stop().await;

    // The check on its own: every note fails, the first few are named.
    let store = SqlitePersistence::open(dir.path().join(DATABASE_FILE)).unwrap();
    let mut schema_app = Registry::new(narrowed());
    schema_app.extend_schema(with_system_tables);
    let mismatch = check_documents(&store, schema_app.schema())
        .expect("the store is read")
        .expect_err("the narrowed schema rejects the notes");
    let tables: Vec<_> = mismatch.tables().collect();
    assert_eq!(tables.len(), 1, "{mismatch}");
    let (table, failures) = tables[0];
    assert_eq!(table, "notes");
    assert_eq!(failures.total, count);
    assert_eq!(failures.shown.len(), SHOWN_PER_TABLE);
    let mut sorted = ids.clone();
    sorted.sort();
    for (shown, expected) in failures.shown.iter().zip(&sorted) {
        assert_eq!(&shown.0, expected);
        assert!(shown.1.contains("notes.n"), "{}", shown.1);
    }
    // The same data passes the schema it was written with.
    let mut same = support::registry();
    same.extend_schema(with_system_tables);
    assert_eq!(check_documents(&store, same.schema()).unwrap(), Ok(()));
    drop(store);

    // The server refuses to start, naming the table and documents.
    let refused = serve(Registry::new(narrowed()), options(dir.path())).await;
    let message = match refused {
        Ok(_) => panic!("a server started on documents its schema rejects"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("table notes"), "{message}");
    assert!(message.contains(sorted[0].as_str()), "{message}");
    assert!(message.contains("and 2 more"), "{message}");

    // The old code serves the folder again: the refusal changed nothing.
    let again = TestServer::start_in(dir, support::registry(), |_| {}).await;
    assert_eq!(again.rows("notes").await.len(), count);
    again.shutdown().await;
}
