//! A server does not serve stored documents its schema rejects: new code
//! whose schema narrowed a field refuses to start on the old data, naming
//! the table and the offending documents, and the old code starts again on
//! the same folder as if nothing happened. A start whose tables' definitions
//! are the ones last checked reads no document; a table whose definition
//! changed is read again, whichever way it changed.

mod support;

use std::net::SocketAddr;

use livebase_runtime::registry::Registry;
use livebase_runtime::schema_check::{check_documents, fingerprint, SHOWN_PER_TABLE};
use livebase_runtime::server::{serve, ServerOptions};
use livebase_runtime::store::sqlite::{SqlitePersistence, DATABASE_FILE};
use livebase_runtime::system::with_system_tables;
use livebase_schema::{define_table, obj, v, Schema, Validator, Value};
use livebase_testkit::TestServer;

/// The support application's `notes`, with `n` of validator `n` and the
/// fields of `more` besides.
fn notes_with(n: Validator, more: Vec<(&str, Validator)>) -> Schema {
    let fields = [
        ("organizationId", v::string()),
        ("body", v::string()),
        ("n", n),
        ("createdBy", v::string()),
    ];
    Schema::new().table(
        "notes",
        define_table(fields.into_iter().chain(more))
            .index("by_organization", ["organizationId"])
            .index("by_organization_n", ["organizationId", "n"]),
    )
}

/// `notes` with `n` a string instead of a number.
fn narrowed() -> Schema {
    notes_with(v::string(), vec![])
}

/// `notes` with an optional `tag` besides.
fn widened() -> Schema {
    notes_with(v::float64(), vec![("tag", v::optional(v::string()))])
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
    // The same data passes the schema it was written with: the server
    // that wrote it recorded that check, so none is read again.
    let mut same = support::registry();
    same.extend_schema(with_system_tables);
    let checked = check_documents(&store, same.schema()).unwrap().unwrap();
    assert_eq!((checked.tables.len(), checked.documents), (0, 0));
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

fn note(n: f64) -> Value {
    obj! { "organizationId" => "org", "body" => "b", "n" => n, "createdBy" => "u" }
}

/// What a check of the folder with `schema` reads: the tables, and how many
/// documents; or the tables it rejects.
fn check(dir: &std::path::Path, schema: Schema) -> Result<(Vec<String>, usize), Vec<String>> {
    let store = SqlitePersistence::open(dir.join(DATABASE_FILE)).unwrap();
    let mut app = Registry::new(schema);
    app.extend_schema(with_system_tables);
    match check_documents(&store, app.schema()).expect("the store is read") {
        Ok(checked) => Ok((
            checked.tables.into_iter().map(|(t, _)| t).collect(),
            checked.documents,
        )),
        Err(mismatch) => Err(mismatch.tables().map(|(t, _)| t.to_string()).collect()),
    }
}

#[tokio::test]
async fn a_start_reads_only_the_tables_whose_definitions_changed_since_the_last_check() {
    let server = TestServer::start(support::registry()).await;
    server
        .database()
        .mutate(|tx| (0..3).try_for_each(|i| tx.insert("notes", note(f64::from(i))).map(drop)))
        .await
        .unwrap();
    let dir = server.stop().await;

    // Unchanged: nothing to read.
    assert_eq!(check(dir.path(), support::schema()), Ok((vec![], 0)));

    // `notes` widened: it alone is checked, its three documents alone read
    // (not the other tables', such as the records of the last check), and
    // it passes; the server that serves it records that, and writes a note
    // only it accepts.
    let (tables, read) = check(dir.path(), widened()).unwrap();
    assert_eq!(tables, ["notes"]);
    assert_eq!(read, 3, "the notes alone are read");
    let widened_server = TestServer::start_in(dir, Registry::new(widened()), |_| {}).await;
    let tagged = obj! {
        "organizationId" => "org", "body" => "b", "n" => 9.0, "createdBy" => "u", "tag" => "new",
    };
    widened_server
        .database()
        .mutate(move |tx| tx.insert("notes", tagged.clone()).map(drop))
        .await
        .unwrap();
    let dir = widened_server.stop().await;
    assert_eq!(check(dir.path(), widened()), Ok((vec![], 0)));

    // Back to the old definition: `notes` is read again, and the tagged
    // note is caught, though the old definition was checked before.
    assert_eq!(
        check(dir.path(), support::schema()),
        Err(vec!["notes".to_string()])
    );
    assert_ne!(
        fingerprint("notes", support::schema().get("notes").unwrap()),
        fingerprint("notes", widened().get("notes").unwrap())
    );
}
