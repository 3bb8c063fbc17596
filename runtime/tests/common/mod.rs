//! Shared fixtures for the runtime's integration tests: the schema they run
//! against, a real SQLite database in a temporary folder, and the naive model of
//! index order that range scans are checked against.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;

use livebase_runtime::database::Database;
use livebase_runtime::store::sqlite::SqlitePersistence;
use livebase_runtime::store::Order;
use livebase_runtime::transaction::{IndexRange, Transaction};
use livebase_runtime::Error;
use livebase_schema::{define_table, obj, v, DocumentId, Schema, Value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tempfile::TempDir;

/// `items` is shaped like the seed's tables; `things` has an optional field of
/// any type (so index keys meet missing fields, null and every value type) and is
/// what the property tests fill with random documents.
pub fn schema() -> Schema {
    Schema::new()
        .table(
            "items",
            define_table([
                ("organizationId", v::string()),
                ("status", v::string()),
                ("name", v::string()),
                ("priority", v::optional(v::float64())),
            ])
            .index("by_organization", ["organizationId"])
            .index("by_organization_status", ["organizationId", "status"]),
        )
        .table(
            "things",
            define_table([
                ("organizationId", v::string()),
                ("status", v::optional(v::any())),
                ("note", v::string()),
            ])
            .index("by_organization", ["organizationId"])
            .index("by_organization_status", ["organizationId", "status"])
            .index("by_status", ["status"]),
        )
}

/// A database on a real SQLite file in a temporary folder, removed on drop.
pub struct TestDb {
    pub db: Database,
    pub dir: TempDir,
}

pub fn open_in(dir: &Path) -> Database {
    let persistence = SqlitePersistence::open(dir.join("livebase.sqlite3")).expect("open sqlite");
    Database::open(Arc::new(persistence), schema()).expect("open database")
}

pub fn test_db() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open_in(dir.path());
    TestDb { db, dir }
}

/// The `_id` of a document value.
pub fn id_of(doc: &Value) -> DocumentId {
    let s = doc
        .get("_id")
        .and_then(Value::as_str)
        .expect("document has an _id");
    DocumentId::parse(s).expect("_id parses")
}

/// The message of an application error (panics on an internal error, which a
/// caller mistake must never be).
pub fn app_message(err: &Error) -> String {
    match err {
        Error::App { message, .. } => message.clone(),
        other => panic!("expected an application error, got {other:?}"),
    }
}

/// The index key of `doc` as a tuple: each key field's value, `None` for a
/// missing field (which sorts before every value, null included).
pub fn key_tuple(doc: &Value, key_fields: &[&str]) -> Vec<Option<Value>> {
    key_fields.iter().map(|f| doc.get(f).cloned()).collect()
}

/// Compares two documents in the order of an index with these key fields.
pub fn index_cmp(a: &Value, b: &Value, key_fields: &[&str]) -> Ordering {
    key_tuple(a, key_fields).cmp(&key_tuple(b, key_fields))
}

/// The key fields of an index of `things` (declared fields, then
/// `_creationTime`, then `_id`), as the store orders by them.
pub fn things_key_fields(index: &str) -> Vec<&'static str> {
    match index {
        "by_id" => vec!["_id"],
        "by_creation_time" => vec!["_creationTime", "_id"],
        "by_organization" => vec!["organizationId", "_creationTime", "_id"],
        "by_organization_status" => vec!["organizationId", "status", "_creationTime", "_id"],
        "by_status" => vec!["status", "_creationTime", "_id"],
        other => panic!("no index {other}"),
    }
}

/// A proptest runner for `cases` cases that writes no regression files.
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------
// Random documents of `things` and random index ranges over them, with the
// naive model a range must agree with.

/// Values the optional `things.status` field takes: few, so that equal values
/// and ties are common, across every type and the float edge cases.
pub fn arb_status() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        1 => Just(None),
        4 => prop::sample::select(vec![
            Value::Null,
            Value::Int64(-1),
            Value::Int64(0),
            Value::Int64(2),
            Value::Float64(-0.0),
            Value::Float64(0.0),
            Value::Float64(1.5),
            Value::Float64(f64::NAN),
            Value::Float64(f64::NEG_INFINITY),
            Value::Boolean(false),
            Value::Boolean(true),
            Value::from(""),
            Value::from("a"),
            Value::from("b"),
            Value::from("b\0"),
            Value::Bytes(vec![0]),
            Value::Array(vec![Value::Int64(1)]),
            obj! { "k" => "v" },
        ])
        .prop_map(Some),
    ]
}

#[derive(Clone, Debug)]
pub struct ThingSpec {
    pub org: &'static str,
    pub status: Option<Value>,
    pub note: &'static str,
    /// Which of up to three insert commits the document belongs to.
    pub batch: u8,
}

impl ThingSpec {
    pub fn fields(&self) -> Value {
        let mut doc = obj! { "organizationId" => self.org, "note" => self.note };
        if let (Value::Object(o), Some(s)) = (&mut doc, &self.status) {
            o.insert("status".into(), s.clone());
        }
        doc
    }
}

pub fn arb_thing() -> impl Strategy<Value = ThingSpec> {
    (
        prop::sample::select(vec!["o1", "o2", "o3"]),
        arb_status(),
        prop::sample::select(vec!["x", "y"]),
        0u8..3,
    )
        .prop_map(|(org, status, note, batch)| ThingSpec {
            org,
            status,
            note,
            batch,
        })
}

/// A value for a range: a fixed one, or the value some document has in the
/// field (so ranges often hit documents exactly).
#[derive(Clone, Debug)]
pub enum Pick {
    Literal(Option<Value>),
    FromDoc(usize),
}

impl Pick {
    fn resolve(&self, field: &str, docs: &[Value]) -> Value {
        match self {
            Pick::Literal(v) => v.clone().unwrap_or(Value::Null),
            Pick::FromDoc(_) if docs.is_empty() => Value::Null,
            Pick::FromDoc(i) => docs[i % docs.len()]
                .get(field)
                .cloned()
                .unwrap_or(Value::Null),
        }
    }
}

fn arb_pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        1 => arb_status().prop_map(Pick::Literal),
        1 => prop::sample::select(vec!["o1", "o2", "o3", "o0", "o4"])
            .prop_map(|s| Pick::Literal(Some(Value::from(s)))),
        3 => any::<usize>().prop_map(Pick::FromDoc),
    ]
}

/// A random `with_index` range over `things`, before it is resolved against
/// the documents.
#[derive(Clone, Debug)]
pub struct RangeSpec {
    pub index: &'static str,
    /// How many of the key fields get an equality (clamped to the index).
    pub eq_len: usize,
    /// The document whose values the equalities take, unless overridden.
    pub anchor: usize,
    pub eq_overrides: Vec<Option<Pick>>,
    pub lower: Option<(Pick, bool)>,
    pub upper: Option<(Pick, bool)>,
    pub order: Order,
    pub take: Option<usize>,
}

pub fn arb_range() -> impl Strategy<Value = RangeSpec> {
    (
        prop::sample::select(vec![
            "by_id",
            "by_creation_time",
            "by_organization",
            "by_organization_status",
            "by_status",
        ]),
        0usize..5,
        any::<usize>(),
        prop::collection::vec(prop::option::weighted(0.2, arb_pick()), 4),
        prop::option::of((arb_pick(), any::<bool>())),
        prop::option::of((arb_pick(), any::<bool>())),
        prop::sample::select(vec![Order::Asc, Order::Desc]),
        prop::option::weighted(0.4, 0usize..5),
    )
        .prop_map(
            |(index, eq_len, anchor, eq_overrides, lower, upper, order, take)| RangeSpec {
                index,
                eq_len,
                anchor,
                eq_overrides,
                lower,
                upper,
                order,
                take,
            },
        )
}

/// A range with concrete values: what the query asks for and the model checks.
#[derive(Clone, Debug)]
pub struct Range {
    pub index: &'static str,
    pub eqs: Vec<(&'static str, Value)>,
    pub lower: Option<(&'static str, Value, bool)>,
    pub upper: Option<(&'static str, Value, bool)>,
    pub order: Order,
    pub take: Option<usize>,
}

impl RangeSpec {
    pub fn resolve(&self, docs: &[Value]) -> Range {
        let keys = things_key_fields(self.index);
        // Equalities on a prefix of the key fields, from none up to all of them
        // (`_creationTime` and `_id` included); bounds on the field after it.
        let eq_len = self.eq_len % (keys.len() + 1);
        let anchor = Pick::FromDoc(self.anchor);
        let eqs = keys[..eq_len]
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let pick = self.eq_overrides[i].as_ref().unwrap_or(&anchor);
                (*f, pick.resolve(f, docs))
            })
            .collect();
        let next = keys.get(eq_len).copied();
        let bound = |b: &Option<(Pick, bool)>| {
            let field = next?;
            b.as_ref()
                .map(|(p, inclusive)| (field, p.resolve(field, docs), *inclusive))
        };
        Range {
            index: self.index,
            eqs,
            lower: bound(&self.lower),
            upper: bound(&self.upper),
            order: self.order,
            take: self.take,
        }
    }
}

impl Range {
    pub fn apply(&self, mut q: IndexRange) -> IndexRange {
        for (f, v) in &self.eqs {
            q = q.eq(f, v.clone());
        }
        if let Some((f, v, inclusive)) = &self.lower {
            q = if *inclusive {
                q.gte(f, v.clone())
            } else {
                q.gt(f, v.clone())
            };
        }
        if let Some((f, v, inclusive)) = &self.upper {
            q = if *inclusive {
                q.lte(f, v.clone())
            } else {
                q.lt(f, v.clone())
            };
        }
        q
    }

    /// Runs the range as a query on `things`.
    pub fn run(&self, tx: &mut Transaction) -> livebase_runtime::Result<Vec<Value>> {
        let q = tx
            .query("things")
            .with_index(self.index, |q| self.apply(q))
            .order(self.order);
        match self.take {
            Some(n) => q.take(n),
            None => q.collect(),
        }
    }

    /// The model: every document, filtered by the range, sorted by the index's
    /// key fields (a missing field before every value), reversed for `Desc`.
    pub fn naive(&self, docs: &[Value]) -> Vec<Value> {
        let keys = things_key_fields(self.index);
        let mut out: Vec<Value> = docs
            .iter()
            .filter(|d| {
                self.eqs.iter().all(|(f, v)| d.get(f) == Some(v))
                    && self
                        .lower
                        .as_ref()
                        .is_none_or(|(f, v, inclusive)| match d.get(f) {
                            None => false,
                            Some(x) => x > v || (*inclusive && x == v),
                        })
                    && self
                        .upper
                        .as_ref()
                        .is_none_or(|(f, v, inclusive)| match d.get(f) {
                            None => true,
                            Some(x) => x < v || (*inclusive && x == v),
                        })
            })
            .cloned()
            .collect();
        out.sort_by(|a, b| index_cmp(a, b, &keys));
        if self.order == Order::Desc {
            out.reverse();
        }
        if let Some(n) = self.take {
            out.truncate(n);
        }
        out
    }
}

/// Deletes every `things` document, then inserts `things` in up to three
/// commits (one per batch number), returning all documents as stored.
pub async fn reset_things(db: &Database, things: &[ThingSpec]) -> Vec<Value> {
    db.mutate(|tx| {
        for doc in tx.query("things").collect()? {
            tx.delete(&id_of(&doc))?;
        }
        Ok(())
    })
    .await
    .unwrap();
    for batch in 0..3 {
        let fields: Vec<Value> = things
            .iter()
            .filter(|t| t.batch == batch)
            .map(ThingSpec::fields)
            .collect();
        if !fields.is_empty() {
            db.mutate(move |tx| {
                fields
                    .into_iter()
                    .try_for_each(|f| tx.insert("things", f).map(|_| ()))
            })
            .await
            .unwrap();
        }
    }
    db.query(|tx| tx.query("things").collect())
        .await
        .unwrap()
        .value
}
