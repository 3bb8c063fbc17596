//! The transaction API on every storage engine (a real SQLite file, and a
//! schema of its own on the tests' PostgreSQL — see
//! `livebase_testkit::postgres`; skipped where there is none, but not under
//! CI):
//! every document call, every query shape, commit ordering, rollback of failed
//! mutations, the errors a caller mistake gets, and a property test holding
//! index range scans to a naive filter-and-sort over all documents.
//!
//! Each case is a function of a fresh `Database`; `on_every_engine!` runs
//! each on each engine of `engines`, as `<engine>::<case>`.

mod common;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{
    app_message, arb_range, arb_thing, id_of, index_cmp, reset_things, runner, schema, TestDb,
};
use livebase_runtime::database::Database;
use livebase_runtime::store::Order;
use livebase_runtime::transaction::{IndexRange, Page, Transaction};
use livebase_runtime::{Error, ErrorCode};
use livebase_schema::{obj, DocumentId, Value};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// A range built for a table-driven case.
type RangeFn = Box<dyn FnOnce(IndexRange) -> IndexRange + Send>;
/// A handler that tries to write.
type WriteFn = Box<dyn FnOnce(&mut Transaction) -> livebase_runtime::Result<()> + Send>;

/// The storage engines the suite runs on: each opens a fresh, empty store in
/// a folder. A new engine is one more function here and one more name in
/// the `engines` list below.
mod engines {
    use std::path::Path;
    use std::sync::Arc;

    use livebase_runtime::error::StoreError;
    use livebase_runtime::store::sqlite::SqlitePersistence;
    use livebase_runtime::store::{Persistence, StoreConnection};
    use livebase_store_postgres::PostgresPersistence;
    use livebase_testkit::postgres::{drop_schema, server_url, unique_name};

    /// Opens a fresh, empty store in the folder given; `None`: the engine
    /// is not there (and the case is skipped, saying so).
    pub type Engine = fn(&Path) -> Option<Arc<dyn Persistence>>;

    pub fn sqlite(dir: &Path) -> Option<Arc<dyn Persistence>> {
        Some(Arc::new(
            SqlitePersistence::open(dir.join("livebase.sqlite3")).expect("open sqlite"),
        ))
    }

    pub fn postgres(_dir: &Path) -> Option<Arc<dyn Persistence>> {
        let url = server_url("the transaction suite on PostgreSQL")?;
        let engine = PostgresPersistence::open_schema(&url, &unique_name("store"), None)
            .expect("open a fresh schema");
        Some(Arc::new(OwnSchema { engine, url }))
    }

    /// A PostgreSQL store in a schema that is dropped with it.
    struct OwnSchema {
        engine: PostgresPersistence,
        url: String,
    }

    impl Persistence for OwnSchema {
        fn connect(&self) -> Result<Box<dyn StoreConnection>, StoreError> {
            self.engine.connect()
        }
    }

    impl Drop for OwnSchema {
        fn drop(&mut self) {
            drop_schema(&self.url, self.engine.schema());
        }
    }
}

/// A database over a fresh store of `engine`, in a temporary folder; `None`
/// when the engine is not there.
fn db_on(engine: engines::Engine) -> Option<TestDb> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open(engine(dir.path())?, schema()).expect("open database");
    Some(TestDb { db, dir })
}

/// One module of tests per engine, one test per case: `cases` on a
/// current-thread runtime, `threaded` ones on two worker threads, `blocking`
/// ones (which drive their own runtime) as plain tests.
macro_rules! on_every_engine {
    (
        engines: [$($engine:ident),* $(,)?],
        cases: $cases:tt,
        threaded: $threaded:tt,
        blocking: $blocking:tt $(,)?
    ) => {
        $(on_every_engine!(@engine $engine, $cases, $threaded, $blocking);)*
    };
    (
        @engine $engine:ident,
        [$($case:ident),* $(,)?],
        [$($threaded:ident),* $(,)?],
        [$($blocking:ident),* $(,)?]
    ) => {
        mod $engine {
            use super::{db_on, engines};
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(t) = db_on(engines::$engine) else { return };
                    super::$case(t.db.clone()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $threaded() {
                    let Some(t) = db_on(engines::$engine) else { return };
                    super::$threaded(t.db.clone()).await;
                }
            )*
            $(
                #[test]
                fn $blocking() {
                    let Some(t) = db_on(engines::$engine) else { return };
                    super::$blocking(t.db.clone());
                }
            )*
        }
    };
}

on_every_engine! {
    engines: [sqlite, postgres],
    cases: [
        insert_then_get_round_trips_with_id_naming_its_table_and_creation_time,
        patch_sets_the_given_fields_and_keeps_the_others,
        replace_swaps_every_user_field,
        delete_removes_the_document_from_get_and_every_index,
        with_index_eq_and_bounds_select_exactly_the_range,
        ranges_tell_a_string_from_the_same_string_followed_by_a_zero_byte,
        desc_order_reverses_the_index_order,
        filter_take_first_and_unique,
        unique_fails_when_two_documents_match,
        paginate_returns_every_document_exactly_once_in_index_order,
        a_page_of_crossed_bounds_is_empty_and_its_cursor_is_taken_back,
        commit_timestamps_strictly_increase,
        a_failed_mutation_writes_nothing_and_the_next_one_commits,
        a_query_cannot_write,
        unknown_tables_and_indexes_are_named_in_the_error,
        schema_violations_name_the_field_and_what_was_expected,
        system_fields_and_non_objects_cannot_be_written,
    ],
    threaded: [
        concurrent_mutations_commit_in_groups_each_on_its_own,
    ],
    blocking: [
        range_scans_return_exactly_what_a_naive_filter_and_sort_gives,
    ],
}

fn item(org: &str, status: &str, name: &str) -> Value {
    obj! { "organizationId" => org, "status" => status, "name" => name }
}

/// Inserts each document in its own mutation, so creation times increase in
/// the order given.
async fn insert_each(db: &Database, table: &'static str, docs: Vec<Value>) -> Vec<DocumentId> {
    let mut ids = Vec::new();
    for doc in docs {
        ids.push(
            db.mutate(move |tx| tx.insert(table, doc))
                .await
                .unwrap()
                .value,
        );
    }
    ids
}

async fn get(db: &Database, id: &DocumentId) -> Option<Value> {
    let id = id.clone();
    db.query(move |tx| tx.get(&id)).await.unwrap().value
}

/// Runs `with_index(index, range)` on `items` and collects, in `order`.
async fn range(
    db: &Database,
    index: &'static str,
    order: Order,
    range: impl FnOnce(IndexRange) -> IndexRange + Send + 'static,
) -> Vec<Value> {
    db.query(move |tx| {
        tx.query("items")
            .with_index(index, range)
            .order(order)
            .collect()
    })
    .await
    .unwrap()
    .value
}

fn names(docs: &[Value]) -> Vec<&str> {
    docs.iter()
        .map(|d| d.get("name").and_then(Value::as_str).expect("name"))
        .collect()
}

/// The error a mutation ends with (panics if it committed).
async fn mutation_error<T: Send + std::fmt::Debug + 'static>(
    db: &Database,
    f: impl FnOnce(&mut Transaction) -> livebase_runtime::Result<T> + Send + 'static,
) -> Error {
    db.mutate(f).await.expect_err("the mutation must fail")
}

/// Asserts `err` is an INVALID_ARGUMENT whose message contains every one of
/// `needles`, and returns the message.
fn assert_invalid(err: &Error, needles: &[&str]) -> String {
    assert_eq!(err.code(), Some(&ErrorCode::InvalidArgument), "{err}");
    let message = app_message(err);
    for needle in needles {
        assert!(
            message.contains(needle),
            "`{message}` should mention `{needle}`"
        );
    }
    message
}

async fn insert_then_get_round_trips_with_id_naming_its_table_and_creation_time(db: Database) {
    let before_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let fields = obj! {
        "organizationId" => "org1", "status" => "active", "name" => "Widget", "priority" => 2.5
    };
    let doc = fields.clone();
    let committed = db.mutate(move |tx| tx.insert("items", doc)).await.unwrap();
    let id = committed.value;
    assert_eq!(id.table(), "items");
    assert!(id.as_str().starts_with("items_"), "{id}");

    let got = get(&db, &id).await.expect("the inserted document is there");
    let mut expected = fields.as_object().unwrap().clone();
    expected.insert("_id".into(), Value::from(id.as_str()));
    expected.insert(
        "_creationTime".into(),
        Value::Float64(committed.ts.as_millis_f64()),
    );
    assert_eq!(got, Value::Object(expected.into()));
    let created = got.get("_creationTime").and_then(Value::as_f64).unwrap();
    assert!(
        created >= before_ms - 1.0 && created < before_ms + 60_000.0,
        "_creationTime {created} is not about now ({before_ms})"
    );
    assert_eq!(id_of(&got), id);

    // An id of a table that has no such document, and of an unknown table.
    assert_eq!(get(&db, &DocumentId::generate("items")).await, None);
    assert_eq!(get(&db, &DocumentId::generate("nowhere")).await, None);
}

async fn patch_sets_the_given_fields_and_keeps_the_others(db: Database) {
    let id = insert_each(&db, "items", vec![item("org1", "draft", "Widget")]).await[0].clone();
    let created = get(&db, &id).await.unwrap().get("_creationTime").cloned();
    let patch_id = id.clone();
    db.mutate(move |tx| tx.patch(&patch_id, obj! { "status" => "active", "priority" => 1.0 }))
        .await
        .unwrap();
    let got = get(&db, &id).await.unwrap();
    assert_eq!(got.get("status"), Some(&Value::from("active")));
    assert_eq!(got.get("priority"), Some(&Value::Float64(1.0)));
    assert_eq!(got.get("name"), Some(&Value::from("Widget")));
    assert_eq!(got.get("organizationId"), Some(&Value::from("org1")));
    assert_eq!(
        got.get("_creationTime").cloned(),
        created,
        "a patch keeps _creationTime"
    );
    assert_eq!(id_of(&got), id);
    // The index moved with the patched field.
    let active = range(&db, "by_organization_status", Order::Asc, |q| {
        q.eq("organizationId", "org1").eq("status", "active")
    })
    .await;
    assert_eq!(names(&active), ["Widget"]);
    let drafts = range(&db, "by_organization_status", Order::Asc, |q| {
        q.eq("organizationId", "org1").eq("status", "draft")
    })
    .await;
    assert!(drafts.is_empty(), "the old index entry is gone: {drafts:?}");
}

async fn replace_swaps_every_user_field(db: Database) {
    let first = obj! { "organizationId" => "org1", "status" => "draft", "name" => "Old", "priority" => 3.0 };
    let id = insert_each(&db, "items", vec![first]).await[0].clone();
    let created = get(&db, &id).await.unwrap().get("_creationTime").cloned();
    let replace_id = id.clone();
    db.mutate(move |tx| tx.replace(&replace_id, item("org2", "active", "New")))
        .await
        .unwrap();
    let got = get(&db, &id).await.unwrap();
    let mut expected = item("org2", "active", "New").as_object().unwrap().clone();
    expected.insert("_id".into(), Value::from(id.as_str()));
    expected.insert("_creationTime".into(), created.unwrap());
    assert_eq!(
        got,
        Value::Object(expected.into()),
        "`priority` is gone, the rest replaced"
    );
    assert!(range(&db, "by_organization", Order::Asc, |q| q
        .eq("organizationId", "org1"))
    .await
    .is_empty());
    assert_eq!(
        names(
            &range(&db, "by_organization", Order::Asc, |q| q
                .eq("organizationId", "org2"))
            .await
        ),
        ["New"]
    );
}

async fn delete_removes_the_document_from_get_and_every_index(db: Database) {
    let ids = insert_each(
        &db,
        "items",
        vec![item("org1", "a", "Gone"), item("org1", "a", "Kept")],
    )
    .await;
    let gone = ids[0].clone();
    db.mutate(move |tx| tx.delete(&gone)).await.unwrap();
    assert_eq!(get(&db, &ids[0]).await, None);
    assert!(get(&db, &ids[1]).await.is_some());
    for index in [
        "by_creation_time",
        "by_id",
        "by_organization",
        "by_organization_status",
    ] {
        assert_eq!(
            names(&range(&db, index, Order::Asc, |q| q).await),
            ["Kept"],
            "{index}"
        );
    }
    // Deleting it again is NOT_FOUND, and names the id.
    let again = ids[0].clone();
    let err = mutation_error(&db, move |tx| tx.delete(&again)).await;
    assert_eq!(err.code(), Some(&ErrorCode::NotFound));
    assert!(app_message(&err).contains(ids[0].as_str()), "{err}");
}

/// Seven items in two organizations, inserted in this order.
async fn seed_ranges(db: &Database) {
    insert_each(
        db,
        "items",
        vec![
            item("a", "active", "active1"),
            item("a", "draft", "draft"),
            item("b", "active", "b-active"),
            item("a", "archived", "archived"),
            item("a", "active", "active2"),
            item("a", "done", "done"),
            item("c", "zzz", "c-zzz"),
        ],
    )
    .await;
}

async fn with_index_eq_and_bounds_select_exactly_the_range(db: Database) {
    seed_ranges(&db).await;
    let by_os = "by_organization_status";
    let asc = Order::Asc;
    let cases: Vec<(&str, RangeFn, Vec<&str>)> = vec![
        (
            "eq org",
            Box::new(|q| q.eq("organizationId", "a")),
            vec!["active1", "active2", "archived", "done", "draft"],
        ),
        (
            "eq org, eq status",
            Box::new(|q| q.eq("organizationId", "a").eq("status", "active")),
            vec!["active1", "active2"],
        ),
        (
            "gt",
            Box::new(|q| q.eq("organizationId", "a").gt("status", "archived")),
            vec!["done", "draft"],
        ),
        (
            "gte",
            Box::new(|q| q.eq("organizationId", "a").gte("status", "archived")),
            vec!["archived", "done", "draft"],
        ),
        (
            "lt",
            Box::new(|q| q.eq("organizationId", "a").lt("status", "done")),
            vec!["active1", "active2", "archived"],
        ),
        (
            "lte",
            Box::new(|q| q.eq("organizationId", "a").lte("status", "done")),
            vec!["active1", "active2", "archived", "done"],
        ),
        (
            "gt and lt",
            Box::new(|q| {
                q.eq("organizationId", "a")
                    .gt("status", "active")
                    .lt("status", "draft")
            }),
            vec!["archived", "done"],
        ),
        (
            "gte and lte on a missing value",
            Box::new(|q| {
                q.eq("organizationId", "a")
                    .gte("status", "b")
                    .lte("status", "c")
            }),
            vec![],
        ),
        (
            "bounds on the first field",
            Box::new(|q| q.gt("organizationId", "a").lte("organizationId", "b")),
            vec!["b-active"],
        ),
        (
            "whole index",
            Box::new(|q| q),
            vec![
                "active1", "active2", "archived", "done", "draft", "b-active", "c-zzz",
            ],
        ),
        (
            "empty: lower above upper",
            Box::new(|q| q.gt("organizationId", "b").lt("organizationId", "a")),
            vec![],
        ),
    ];
    for (what, r, expected) in cases {
        let got = range(&db, by_os, asc, r).await;
        assert_eq!(names(&got), expected, "{what}");
    }
    // A one-field index, and bounds on `_creationTime` after the equalities.
    let b = range(&db, "by_organization", asc, |q| q.eq("organizationId", "b")).await;
    assert_eq!(names(&b), ["b-active"]);
    let all = range(&db, "by_creation_time", asc, |q| q).await;
    assert_eq!(
        names(&all),
        ["active1", "draft", "b-active", "archived", "active2", "done", "c-zzz"],
        "by_creation_time is insertion order"
    );
    let third = all[2].get("_creationTime").cloned().unwrap();
    let since = range(&db, "by_organization", asc, move |q| {
        q.eq("organizationId", "a").gte("_creationTime", third)
    })
    .await;
    assert_eq!(names(&since), ["archived", "active2", "done"]);
}

/// `"b"`'s key is a prefix of `"b\0"`'s (07 62 00 and 07 62 00 FF 00): an
/// equality or a bound on `"b"` must still tell them apart.
async fn ranges_tell_a_string_from_the_same_string_followed_by_a_zero_byte(db: Database) {
    let statuses = ["a", "b", "b\0", "b\0\0", "b\0x", "b\x01", "c"];
    insert_each(
        &db,
        "items",
        statuses.iter().map(|s| item("o", s, s)).collect(),
    )
    .await;
    let by_os = "by_organization_status";
    let cases: Vec<(RangeFn, Vec<&str>)> = vec![
        (
            Box::new(|q| q.eq("organizationId", "o").eq("status", "b")),
            vec!["b"],
        ),
        (
            Box::new(|q| q.eq("organizationId", "o").eq("status", "b\0")),
            vec!["b\0"],
        ),
        (
            Box::new(|q| q.eq("organizationId", "o").gt("status", "b")),
            vec!["b\0", "b\0\0", "b\0x", "b\x01", "c"],
        ),
        (
            Box::new(|q| q.eq("organizationId", "o").gt("status", "b\0")),
            vec!["b\0\0", "b\0x", "b\x01", "c"],
        ),
        (
            Box::new(|q| q.eq("organizationId", "o").lte("status", "b")),
            vec!["a", "b"],
        ),
        (
            Box::new(|q| q.eq("organizationId", "o").lte("status", "b\0")),
            vec!["a", "b", "b\0"],
        ),
        (
            Box::new(|q| {
                q.eq("organizationId", "o")
                    .gte("status", "b\0")
                    .lt("status", "b\x01")
            }),
            vec!["b\0", "b\0\0", "b\0x"],
        ),
    ];
    for (i, (r, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            names(&range(&db, by_os, Order::Asc, r).await),
            expected,
            "case {i}"
        );
    }
}

async fn desc_order_reverses_the_index_order(db: Database) {
    seed_ranges(&db).await;
    let got = range(&db, "by_organization_status", Order::Desc, |q| {
        q.eq("organizationId", "a")
    })
    .await;
    assert_eq!(
        names(&got),
        ["draft", "done", "archived", "active2", "active1"]
    );
    let got = range(&db, "by_organization_status", Order::Desc, |q| {
        q.eq("organizationId", "a")
            .gte("status", "archived")
            .lt("status", "draft")
    })
    .await;
    assert_eq!(names(&got), ["done", "archived"]);
    let newest_first = range(&db, "by_creation_time", Order::Desc, |q| q).await;
    assert_eq!(
        names(&newest_first),
        ["c-zzz", "done", "active2", "archived", "b-active", "draft", "active1"]
    );
}

async fn filter_take_first_and_unique(db: Database) {
    seed_ranges(&db).await;
    let filtered = db
        .query(|tx| {
            tx.query("items")
                .with_index("by_organization_status", |q| q.eq("organizationId", "a"))
                .filter(|d| {
                    d.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with('a'))
                })
                .collect()
        })
        .await
        .unwrap()
        .value;
    assert_eq!(names(&filtered), ["active1", "active2", "archived"]);

    let taken = db
        .query(|tx| {
            tx.query("items")
                .with_index("by_organization_status", |q| q.eq("organizationId", "a"))
                .order(Order::Desc)
                .take(2)
        })
        .await
        .unwrap()
        .value;
    assert_eq!(names(&taken), ["draft", "done"]);
    let filtered_take = db
        .query(|tx| {
            tx.query("items")
                .filter(|d| d.get("status") == Some(&Value::from("active")))
                .take(2)
        })
        .await
        .unwrap()
        .value;
    assert_eq!(
        names(&filtered_take),
        ["active1", "b-active"],
        "take counts matches, not scanned"
    );
    let more_than_there_are = db
        .query(|tx| {
            tx.query("items")
                .with_index("by_organization", |q| q.eq("organizationId", "a"))
                .take(50)
        })
        .await
        .unwrap()
        .value;
    assert_eq!(more_than_there_are.len(), 5);

    let first = db
        .query(|tx| {
            let newest = tx.query("items").order(Order::Desc).first()?;
            let none = tx
                .query("items")
                .with_index("by_organization", |q| q.eq("organizationId", "nobody"))
                .first()?;
            Ok((newest, none))
        })
        .await
        .unwrap()
        .value;
    assert_eq!(
        first.0.as_ref().map(|d| names(std::slice::from_ref(d))[0]),
        Some("c-zzz")
    );
    assert_eq!(first.1, None);

    let unique = db
        .query(|tx| {
            let one = tx
                .query("items")
                .with_index("by_organization_status", |q| {
                    q.eq("organizationId", "a").eq("status", "done")
                })
                .unique()?;
            let none = tx
                .query("items")
                .with_index("by_organization_status", |q| {
                    q.eq("organizationId", "a").eq("status", "nope")
                })
                .unique()?;
            Ok((one, none))
        })
        .await
        .unwrap()
        .value;
    assert_eq!(
        unique.0.as_ref().map(|d| names(std::slice::from_ref(d))[0]),
        Some("done")
    );
    assert_eq!(unique.1, None);
}

async fn unique_fails_when_two_documents_match(db: Database) {
    seed_ranges(&db).await;
    let err = db
        .query(|tx| {
            tx.query("items")
                .with_index("by_organization_status", |q| {
                    q.eq("organizationId", "a").eq("status", "active")
                })
                .unique()
        })
        .await
        .expect_err("two documents match");
    assert_invalid(
        &err,
        &["unique()", "more than one", "items.by_organization_status"],
    );
}

/// Pages through the whole query with `page_size`, returning the pages.
async fn all_pages(db: &Database, order: Order, page_size: usize, even_only: bool) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let c = cursor.clone();
        let page = db
            .query(move |tx| {
                let mut q = tx
                    .query("items")
                    .with_index("by_organization", |q| q.eq("organizationId", "p"))
                    .order(order);
                if even_only {
                    q = q.filter(|d| {
                        d.get("priority")
                            .and_then(Value::as_f64)
                            .is_some_and(|p| p % 2.0 == 0.0)
                    });
                }
                q.paginate(c.as_deref(), page_size)
            })
            .await
            .unwrap()
            .value;
        let done = page.is_done;
        cursor = Some(page.continue_cursor.clone());
        pages.push(page);
        assert!(pages.len() < 1000, "pagination does not end");
        if done {
            return pages;
        }
    }
}

async fn paginate_returns_every_document_exactly_once_in_index_order(db: Database) {
    // More documents than one store scan batch; several commits, so creation
    // times both differ and tie (ties are ordered by `_id`).
    const N: usize = 300;
    for chunk in 0..3 {
        db.mutate(move |tx| {
            for i in (chunk * N / 3)..((chunk + 1) * N / 3) {
                let status = if i % 3 == 0 { "x" } else { "y" };
                let doc = obj! {
                    "organizationId" => "p", "status" => status,
                    "name" => format!("n{i}"), "priority" => i as f64
                };
                tx.insert("items", doc)?;
            }
            // Noise in another organization, before and after in key order.
            tx.insert("items", item("a", "x", "other"))?;
            tx.insert("items", item("q", "x", "other"))?;
            Ok(())
        })
        .await
        .unwrap();
    }
    let keys = ["organizationId", "_creationTime", "_id"];
    let all = range(&db, "by_organization", Order::Asc, |q| {
        q.eq("organizationId", "p")
    })
    .await;
    assert_eq!(all.len(), N);
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| index_cmp(a, b, &keys));
    assert_eq!(
        all, sorted,
        "collect() returns index order across scan batches"
    );

    for (order, size, even_only) in [
        (Order::Asc, 7, false),
        (Order::Desc, 7, false),
        (Order::Asc, 128, false),
        (Order::Desc, 1, false),
        (Order::Asc, 11, true),
        (Order::Desc, 300, false),
    ] {
        let pages = all_pages(&db, order, size, even_only).await;
        let mut expected: Vec<Value> = all
            .iter()
            .filter(|d| {
                !even_only || d.get("priority").and_then(Value::as_f64).unwrap() % 2.0 == 0.0
            })
            .cloned()
            .collect();
        if order == Order::Desc {
            expected.reverse();
        }
        let got: Vec<Value> = pages.iter().flat_map(|p| p.page.clone()).collect();
        assert_eq!(got.len(), expected.len(), "{order:?} size {size}");
        assert_eq!(
            got, expected,
            "{order:?} size {size}: every document once, in order"
        );
        let ids: HashSet<DocumentId> = got.iter().map(id_of).collect();
        assert_eq!(ids.len(), expected.len());
        for page in &pages[..pages.len() - 1] {
            assert_eq!(page.page.len(), size, "only the last page may be short");
            assert!(!page.is_done);
        }
        assert!(pages.last().unwrap().is_done);
    }

    // A cursor that is not one, and one from another query, are refused.
    let err = db
        .query(|tx| tx.query("items").paginate(Some("not a cursor!"), 5))
        .await
        .unwrap_err();
    assert_invalid(&err, &["not one this query issued"]);
    let first_page = all_pages(&db, Order::Asc, 5, false).await.remove(0);
    let foreign = first_page.continue_cursor.clone();
    let err = db
        .query(move |tx| {
            tx.query("items")
                .with_index("by_organization", |q| q.eq("organizationId", "a"))
                .paginate(Some(&foreign), 5)
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["not one this query issued"]);
}

/// Bounds that cross (`gte("m").lt("c")`) select nothing; the cursor that
/// such a page ends at must still be accepted by the same query (a fuzzed
/// range once found it refused as "another query's").
async fn a_page_of_crossed_bounds_is_empty_and_its_cursor_is_taken_back(db: Database) {
    seed_ranges(&db).await;
    for order in [Order::Asc, Order::Desc] {
        let crossed = move |tx: &mut Transaction<'_>, cursor: Option<String>| {
            tx.query("items")
                .with_index("by_organization_status", |q| {
                    q.eq("organizationId", "a")
                        .gte("status", "m")
                        .lt("status", "c")
                })
                .order(order)
                .paginate(cursor.as_deref(), 5)
        };
        let first = db
            .query(move |tx| crossed(tx, None))
            .await
            .expect("a page")
            .value;
        assert!(first.page.is_empty(), "{order:?}: {:?}", first.page);
        assert!(first.is_done);
        let cursor = first.continue_cursor.clone();
        let again = db
            .query(move |tx| crossed(tx, Some(cursor)))
            .await
            .unwrap_or_else(|e| panic!("{order:?}: its own cursor was refused: {e}"))
            .value;
        assert!(again.page.is_empty() && again.is_done);
    }
}

async fn commit_timestamps_strictly_increase(db: Database) {
    let mut last = db.last_ts().await.unwrap();
    let mut created = f64::NEG_INFINITY;
    for i in 0..20 {
        let committed = db
            .mutate(move |tx| tx.insert("items", item("o", "s", &format!("n{i}"))))
            .await
            .unwrap();
        assert!(
            committed.ts > last,
            "commit {i}: {} after {last}",
            committed.ts
        );
        last = committed.ts;
        let doc = get(&db, &committed.value).await.unwrap();
        let t = doc.get("_creationTime").and_then(Value::as_f64).unwrap();
        assert!(t >= created, "creation times never go back");
        created = t;
        // A query started after the commit reads at (at least) its timestamp.
        let seen = db.query(|tx| Ok(tx.snapshot_ts())).await.unwrap();
        assert_eq!(seen.ts, committed.ts);
        assert_eq!(seen.value, committed.ts);
    }
    // A mutation that writes nothing does not commit, so it takes no new timestamp.
    let idle = db.mutate(|tx| tx.query("items").first()).await.unwrap();
    assert_eq!(idle.ts, last);
    assert!(idle.writes.is_empty());
    let next = db
        .mutate(|tx| tx.insert("items", item("o", "s", "last")))
        .await
        .unwrap();
    assert!(next.ts > last);
    assert_eq!(db.last_ts().await.unwrap(), next.ts);
}

async fn a_failed_mutation_writes_nothing_and_the_next_one_commits(db: Database) {
    let kept = insert_each(&db, "items", vec![item("o", "before", "kept")]).await[0].clone();
    let before = db.last_ts().await.unwrap();
    let snapshot = range(&db, "by_creation_time", Order::Asc, |q| q).await;

    // Writes, then returns an error.
    let k = kept.clone();
    let err = mutation_error(&db, move |tx| {
        tx.insert("items", item("o", "s", "doomed"))?;
        tx.patch(&k, obj! { "status" => "changed" })?;
        tx.delete(&k)?;
        Err::<(), _>(Error::conflict("changed my mind"))
    })
    .await;
    assert_eq!(err.code(), Some(&ErrorCode::Conflict));
    assert_eq!(app_message(&err), "changed my mind");

    // Writes, then panics.
    let k = kept.clone();
    let err = mutation_error(&db, move |tx| {
        tx.insert("items", item("o", "s", "doomed too"))?;
        tx.patch(&k, obj! { "status" => "changed" })?;
        if tx.snapshot_ts() > livebase_schema::Timestamp::ZERO {
            panic!("handler blew up");
        }
        Ok(())
    })
    .await;
    match &err {
        Error::Internal(m) => assert!(m.contains("handler blew up"), "{m}"),
        other => panic!("a panic is an internal error, got {other:?}"),
    }

    // A write the store refuses, after a good one.
    let err = mutation_error(&db, |tx| {
        tx.insert("items", item("o", "s", "doomed three"))?;
        tx.insert("items", obj! { "organizationId" => 1.0 })
    })
    .await;
    assert_eq!(err.code(), Some(&ErrorCode::InvalidArgument));

    assert_eq!(
        range(&db, "by_creation_time", Order::Asc, |q| q).await,
        snapshot,
        "nothing was written"
    );
    for index in ["by_organization", "by_organization_status", "by_id"] {
        assert_eq!(
            names(&range(&db, index, Order::Asc, |q| q).await),
            ["kept"],
            "{index}"
        );
    }
    assert_eq!(db.last_ts().await.unwrap(), before, "no commit happened");

    let next = db
        .mutate(|tx| tx.insert("items", item("o", "s", "after")))
        .await
        .unwrap();
    assert!(next.ts > before);
    assert_eq!(
        names(&range(&db, "by_creation_time", Order::Asc, |q| q).await),
        ["kept", "after"]
    );
}

async fn a_query_cannot_write(db: Database) {
    let id = insert_each(&db, "items", vec![item("o", "s", "only")]).await[0].clone();
    let before = range(&db, "by_creation_time", Order::Asc, |q| q).await;
    let i = id.clone();
    let attempts: Vec<WriteFn> = vec![
        Box::new(|tx| tx.insert("items", item("o", "s", "sneaky")).map(|_| ())),
        Box::new({
            let i = i.clone();
            move |tx| tx.patch(&i, obj! { "name" => "sneaky" })
        }),
        Box::new({
            let i = i.clone();
            move |tx| tx.replace(&i, item("o", "s", "sneaky"))
        }),
        Box::new(move |tx| tx.delete(&i)),
    ];
    for attempt in attempts {
        let err = db.query(attempt).await.expect_err("a query cannot write");
        assert!(err.to_string().contains("a query cannot write"), "{err}");
    }
    assert_eq!(
        range(&db, "by_creation_time", Order::Asc, |q| q).await,
        before
    );
    assert!(get(&db, &id).await.is_some());
}

async fn unknown_tables_and_indexes_are_named_in_the_error(db: Database) {
    let err = mutation_error(&db, |tx| tx.insert("nope", obj! { "a" => 1.0 })).await;
    assert_invalid(&err, &["no table `nope`"]);
    let err = db.query(|tx| tx.query("nope").collect()).await.unwrap_err();
    assert_invalid(&err, &["no table `nope`"]);

    let err = db
        .query(|tx| tx.query("items").with_index("by_nothing", |q| q).collect())
        .await
        .unwrap_err();
    assert_invalid(
        &err,
        &[
            "`items`",
            "no index `by_nothing`",
            "by_id",
            "by_creation_time",
            "by_organization",
            "by_organization_status",
        ],
    );

    // eq on a field that is not the index's next field.
    let err = db
        .query(|tx| {
            tx.query("items")
                .with_index("by_organization_status", |q| q.eq("status", "x"))
                .collect()
        })
        .await
        .unwrap_err();
    assert_invalid(
        &err,
        &["by_organization_status", "eq(\"status\")", "organizationId"],
    );
    let err = db
        .query(|tx| {
            tx.query("items")
                .with_index("by_organization", |q| {
                    q.eq("organizationId", "a").eq("name", "x")
                })
                .collect()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["eq(\"name\")"]);
    // A bound on a field that is not the one after the equalities.
    let err = db
        .query(|tx| {
            tx.query("items")
                .with_index("by_organization_status", |q| {
                    q.eq("organizationId", "a").gt("name", "x")
                })
                .collect()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["`name`", "(status)"]);
    let err = db
        .query(|tx| {
            tx.query("items")
                .with_index("by_organization_status", |q| q.lt("status", "x"))
                .collect()
        })
        .await
        .unwrap_err();
    assert_invalid(&err, &["`status`", "(organizationId)"]);
}

async fn schema_violations_name_the_field_and_what_was_expected(db: Database) {
    let wrong_type = obj! { "organizationId" => 5.0, "status" => "s", "name" => "n" };
    let err = mutation_error(&db, move |tx| tx.insert("items", wrong_type)).await;
    assert_invalid(
        &err,
        &["items.organizationId", "expected string", "float64 5"],
    );

    let wrong_optional =
        obj! { "organizationId" => "o", "status" => "s", "name" => "n", "priority" => "high" };
    let err = mutation_error(&db, move |tx| tx.insert("items", wrong_optional)).await;
    assert_invalid(
        &err,
        &["items.priority", "expected float64", "string \"high\""],
    );

    let unknown =
        obj! { "organizationId" => "o", "status" => "s", "name" => "n", "colour" => "red" };
    let err = mutation_error(&db, move |tx| tx.insert("items", unknown)).await;
    assert_invalid(&err, &["unknown field `colour`", "organizationId"]);

    let missing = obj! { "organizationId" => "o", "status" => "s" };
    let err = mutation_error(&db, move |tx| tx.insert("items", missing)).await;
    assert_invalid(&err, &["items", "missing required field `name`"]);

    // Patches and replaces are validated as the whole new document.
    let id = insert_each(&db, "items", vec![item("o", "s", "n")]).await[0].clone();
    let i = id.clone();
    let err = mutation_error(&db, move |tx| tx.patch(&i, obj! { "status" => 3.0 })).await;
    assert_invalid(&err, &["items.status", "expected string"]);
    let i = id.clone();
    let err = mutation_error(&db, move |tx| tx.patch(&i, obj! { "colour" => "red" })).await;
    assert_invalid(&err, &["unknown field `colour`"]);
    let i = id.clone();
    let err = mutation_error(&db, move |tx| {
        tx.replace(&i, obj! { "organizationId" => "o" })
    })
    .await;
    assert_invalid(&err, &["missing required field"]);
    assert_eq!(
        get(&db, &id).await.unwrap().get("status"),
        Some(&Value::from("s"))
    );
}

async fn system_fields_and_non_objects_cannot_be_written(db: Database) {
    for field in ["_id", "_creationTime", "_secret"] {
        let mut doc = item("o", "s", "n").as_object().unwrap().clone();
        doc.insert(field.into(), Value::from("x"));
        let err = mutation_error(&db, move |tx| tx.insert("items", doc)).await;
        assert_invalid(&err, &[&format!("items.{field}"), "system fields"]);
    }
    let id = insert_each(&db, "items", vec![item("o", "s", "n")]).await[0].clone();
    let i = id.clone();
    let err = mutation_error(&db, move |tx| tx.patch(&i, obj! { "_creationTime" => 0.0 })).await;
    assert_invalid(&err, &["_creationTime", "system fields"]);
    let i = id.clone();
    let err = mutation_error(&db, move |tx| {
        tx.replace(&i, obj! { "_id" => "items_x", "name" => "n" })
    })
    .await;
    assert_invalid(&err, &["_id", "system fields"]);

    let err = mutation_error(&db, |tx| tx.insert("items", "just a string")).await;
    assert_invalid(&err, &["must be an object", "string"]);
    let err = mutation_error(&db, |tx| tx.insert("items", Value::Array(vec![]))).await;
    assert_invalid(&err, &["must be an object", "array"]);
    let i = id.clone();
    let err = mutation_error(&db, move |tx| tx.patch(&i, 5_i64)).await;
    assert_invalid(&err, &["patch must be an object", "int64"]);
    let i = id.clone();
    let err = mutation_error(&db, move |tx| tx.replace(&i, Value::Null)).await;
    assert_invalid(&err, &["must be an object", "null"]);

    let doc = get(&db, &id).await.unwrap();
    assert_eq!(
        doc.get("name"),
        Some(&Value::from("n")),
        "the document is untouched"
    );
}

// ---------------------------------------------------------------------------
// Property: a range scan returns exactly what a naive filter and sort gives.

fn range_scans_return_exactly_what_a_naive_filter_and_sort_gives(db: Database) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let strategy = (
        prop::collection::vec(arb_thing(), 0..14),
        prop::collection::vec(arb_range(), 1..12),
    );
    runner(300)
        .run(&strategy, |(things, ranges)| {
            rt.block_on(async {
                let docs = reset_things(&db, &things).await;
                prop_assert_eq!(docs.len(), things.len());
                for spec in ranges {
                    let range = spec.resolve(&docs);
                    let r = range.clone();
                    let got = db.query(move |tx| r.run(tx)).await;
                    let got = got
                        .map_err(|e| TestCaseError::fail(format!("{range:?}: {e}")))?
                        .value;
                    prop_assert_eq!(&got, &range.naive(&docs), "{:?}", range);
                }
                Ok(())
            })
        })
        .unwrap();
}

/// Many mutations at once are committed in groups sharing one sync: each still
/// gets its own strictly increasing timestamp, a failing one is undone alone,
/// and commits reach listeners in timestamp order.
async fn concurrent_mutations_commit_in_groups_each_on_its_own(db: Database) {
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = heard.clone();
    db.on_commit(Box::new(move |c| sink.lock().unwrap().push(c.ts)))
        .await
        .unwrap();
    let calls = (0..60).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            db.mutate(move |tx| {
                tx.insert("items", item("o", "s", &format!("n{i}")))?;
                if i % 5 == 0 {
                    return Err(Error::conflict(format!("call {i} fails after writing")));
                }
                Ok(i)
            })
            .await
        })
    });
    let mut ok_ts = Vec::new();
    let mut failed = 0;
    for call in futures::future::join_all(calls).await {
        match call.unwrap() {
            Ok(c) => ok_ts.push(c.ts),
            Err(e) => {
                assert_eq!(e.code(), Some(&ErrorCode::Conflict));
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 12);
    let docs = range(&db, "by_creation_time", Order::Asc, |q| q).await;
    assert_eq!(
        docs.len(),
        48,
        "exactly the successful mutations' writes remain"
    );
    let mut sorted = ok_ts.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 48, "every commit has its own timestamp");
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 48, "one commit notice per successful mutation");
    assert!(
        heard.windows(2).all(|w| w[0] < w[1]),
        "notices in timestamp order"
    );
    assert_eq!(db.last_ts().await.unwrap(), *sorted.last().unwrap());
}
