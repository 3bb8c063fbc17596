//! Target `cursor`: hostile pagination cursors through `Query::paginate`
//! (`runtime/src/transaction.rs`), on a real SQLite file holding documents
//! whose index keys meet every edge of the key encoding (strings that are
//! prefixes of others, `"b\0"`, missing fields, NaN, `-0`, `0xFF` bytes).
//!
//! Today a cursor is the URL-safe base64 (no padding) of the index key of the
//! last document passed. The input picks a query (index, range, order, page
//! size) and a cursor: raw text, or the base64 of raw bytes, of the range's
//! start or end or a document's key followed by fuzzer bytes.
//!
//! Invariants: paginate never panics; a cursor that is not base64 or lies
//! outside the query's key range is refused as an invalid argument; any
//! other cursor gives exactly the documents a naive model gives (those of
//! the range strictly after the cursor in the query's order, the first
//! `n`), `isDone` and the continue cursor as the model says; the read set
//! never leaves the query's range; following the continue cursor gives the
//! next page of the model.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use livebase_runtime::readset::KeyInterval;
use livebase_runtime::store::sqlite::SqlitePersistence;
use livebase_runtime::store::{
    index_key, index_prefix, Document, Order, Persistence, StoreConnection,
};
use livebase_runtime::transaction::{IndexRange, Transaction};
use livebase_runtime::{Error, ErrorCode};
use livebase_schema::key::encode_value;
use livebase_schema::{define_table, v, DocumentId, Object, Schema, Timestamp, Value};

use crate::Target;

pub const TARGET: Target = Target {
    name: "cursor",
    checks: "pagination cursors: no panic; outside the range refused; pages equal a naive model; reads stay in range",
    run,
    dictionary: &[&[0x00], &[0xFF], &[0x00, 0xFF], &[0x07, b'b', 0x00]],
};

const TABLE: &str = "things";
const ORGS: [&str; 5] = ["a", "b", "b\0", "bb", "c"];

/// The statuses documents hold (`None` = the field is missing), and the
/// bounds queries use.
fn statuses() -> Vec<Option<Value>> {
    vec![
        None,
        Some(Value::Null),
        Some(Value::Int64(-1)),
        Some(Value::Int64(5)),
        Some(Value::Float64(-0.0)),
        Some(Value::Float64(0.0)),
        Some(Value::Float64(f64::NAN)),
        Some(Value::String("x".into())),
        Some(Value::String("x\0".into())),
        Some(Value::Bytes(vec![0xFF])),
        Some(Value::Bytes(vec![])),
    ]
}

fn schema() -> Schema {
    Schema::new().table(
        TABLE,
        define_table([
            ("organizationId", v::string()),
            ("status", v::optional(v::any())),
        ])
        .index("by_organization", ["organizationId"])
        .index("by_organization_status", ["organizationId", "status"]),
    )
}

/// A store with the documents, made once per thread; the connection is taken
/// out for each run, so a run that panics mid-read leaves no open snapshot
/// behind (the next run opens a new connection).
struct Fixture {
    _dir: tempfile::TempDir,
    persistence: SqlitePersistence,
    schema: Schema,
    docs: Vec<Document>,
    conn: Option<Box<dyn StoreConnection>>,
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let persistence = SqlitePersistence::open(dir.path().join("cursor.sqlite3")).expect("open");
    let schema = schema();
    let def = schema.get(TABLE).expect("table");
    let mut docs = Vec::new();
    let mut conn = persistence.connect().expect("connect");
    let last = conn.begin_write().expect("begin");
    let mut i = 0;
    for org in ORGS {
        for status in statuses() {
            // Creation times tie in threes, so `_id` orders the ties.
            let mut fields = Object::new();
            fields.insert("organizationId".into(), Value::from(org));
            if let Some(s) = status {
                fields.insert("status".into(), s);
            }
            let doc = Document {
                id: DocumentId::parse(&format!("{TABLE}_{:016}", (i * 7919) % 1000)).expect("id"),
                creation_time: f64::from(i / 3),
                fields,
            };
            conn.put_document(&doc).expect("put");
            for index in def.all_indexes() {
                conn.put_index_entry(&index_key(TABLE, index, &doc), &doc.id)
                    .expect("index");
            }
            docs.push(doc);
            i += 1;
        }
    }
    conn.commit(last.next_after(1)).expect("commit");
    Fixture {
        _dir: dir,
        persistence,
        schema,
        docs,
        conn: None,
    }
}

/// The query's range: which index, equalities, bounds.
struct Spec {
    index: &'static str,
    eqs: Vec<(&'static str, Value)>,
    lower: Option<(&'static str, Value, bool)>,
    upper: Option<(&'static str, Value, bool)>,
}

impl Spec {
    fn from_byte(b: u8, bound: &mut impl FnMut() -> Value) -> Spec {
        let plain = |index| Spec {
            index,
            eqs: vec![],
            lower: None,
            upper: None,
        };
        match b % 6 {
            0 => plain("by_creation_time"),
            1 => plain("by_id"),
            2 => Spec {
                eqs: vec![("organizationId", Value::from("b"))],
                ..plain("by_organization")
            },
            3 => Spec {
                eqs: vec![("organizationId", Value::from("b"))],
                lower: Some(("status", bound(), b & 0x40 != 0)),
                ..plain("by_organization_status")
            },
            4 => Spec {
                eqs: vec![("organizationId", Value::from("b"))],
                lower: Some(("status", bound(), b & 0x40 != 0)),
                upper: Some(("status", bound(), b & 0x80 != 0)),
                ..plain("by_organization_status")
            },
            _ => Spec {
                lower: Some(("organizationId", Value::from("a"), false)),
                upper: Some(("organizationId", Value::from("b"), b & 0x80 != 0)),
                ..plain("by_organization")
            },
        }
    }

    fn range(&self) -> IndexRange {
        let mut r = IndexRange::default();
        for (f, v) in &self.eqs {
            r = r.eq(f, v.clone());
        }
        if let Some((f, v, inclusive)) = &self.lower {
            r = if *inclusive {
                r.gte(f, v.clone())
            } else {
                r.gt(f, v.clone())
            };
        }
        if let Some((f, v, inclusive)) = &self.upper {
            r = if *inclusive {
                r.lte(f, v.clone())
            } else {
                r.lt(f, v.clone())
            };
        }
        r
    }

    /// The key interval `[start, end)` the range covers, as the query
    /// planner documents it: equal leading values are `[p, p ++ FF)`.
    fn interval(&self) -> KeyInterval {
        let mut prefix = index_prefix(TABLE, self.index);
        for (_, v) in &self.eqs {
            encode_value(&mut prefix, Some(v));
        }
        let with = |v: &Value| {
            let mut k = prefix.clone();
            encode_value(&mut k, Some(v));
            k
        };
        let past = |k: Vec<u8>| [k.as_slice(), &[0xFF]].concat();
        let start = match &self.lower {
            None => prefix.clone(),
            Some((_, v, true)) => with(v),
            Some((_, v, false)) => past(with(v)),
        };
        let end = match &self.upper {
            None => past(prefix.clone()),
            Some((_, v, true)) => past(with(v)),
            Some((_, v, false)) => with(v),
        };
        KeyInterval::new(start, end)
    }
}

fn run(data: &[u8]) -> String {
    let mut f = FIXTURE
        .with(|cell| cell.borrow_mut().take())
        .unwrap_or_else(fixture);
    let conn = match f.conn.take() {
        Some(c) => c,
        None => f.persistence.connect().expect("connect"),
    };
    let (label, conn) = run_with(&f, conn, data);
    f.conn = Some(conn);
    FIXTURE.with(|cell| *cell.borrow_mut() = Some(f));
    label
}

fn run_with(
    f: &Fixture,
    mut conn: Box<dyn StoreConnection>,
    data: &[u8],
) -> (String, Box<dyn StoreConnection>) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let statuses = statuses();
    let mut next_bound = 3;
    let mut bound = || {
        next_bound += 1;
        statuses[usize::from(byte(next_bound)) % statuses.len()]
            .clone()
            .unwrap_or(Value::Null)
    };
    let spec = Spec::from_byte(byte(0), &mut bound);
    let order = if byte(1) % 2 == 0 {
        Order::Asc
    } else {
        Order::Desc
    };
    let num_items = usize::from(byte(2) % 24);
    let payload = data.get(6..).unwrap_or(&[]);
    let interval = spec.interval();
    let def = f.schema.get(TABLE).expect("table");
    let index = def.get_index(spec.index).expect("index");
    let mut keyed: Vec<(Vec<u8>, Value)> = f
        .docs
        .iter()
        .map(|d| (index_key(TABLE, index, d), d.to_value()))
        .filter(|(k, _)| interval.contains(k))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));

    let cursor: Option<String> = match byte(3) % 6 {
        0 => None,
        1 => Some(String::from_utf8_lossy(payload).into_owned()),
        2 => Some(B64.encode(payload)),
        3 => Some(B64.encode([interval.start.as_slice(), payload].concat())),
        4 => Some(B64.encode([interval.end.as_slice(), payload].concat())),
        _ => {
            let all: Vec<Vec<u8>> = f.docs.iter().map(|d| index_key(TABLE, index, d)).collect();
            let k = &all[usize::from(byte(4)) % all.len()];
            let cut = k.len().saturating_sub(usize::from(byte(5) % 4));
            Some(B64.encode([&k[..cut], payload].concat()))
        }
    };

    let ts: Timestamp = conn.begin_read().expect("begin read");
    let mut label = String::new();
    let mut cursor = cursor;
    // The first page from the fuzzed cursor, then the page after it.
    for page_no in 0..2 {
        let mut tx = Transaction::read_only(conn.as_mut(), &f.schema, ts);
        let result = tx
            .query(TABLE)
            .with_index(spec.index, |_| spec.range())
            .order(order)
            .paginate(cursor.as_deref(), num_items);
        let reads = tx.read_set().intervals().to_vec();
        drop(tx);
        let expected = model(&keyed, &interval, order, cursor.as_deref(), num_items);
        match (result, expected) {
            (Ok(page), Ok((docs, is_done, next))) => {
                assert_eq!(page.page, docs, "page {page_no}: not the model's documents");
                assert_eq!(page.is_done, is_done, "page {page_no}: isDone");
                assert_eq!(
                    B64.decode(&page.continue_cursor).ok(),
                    Some(next),
                    "page {page_no}: the continue cursor"
                );
                for r in &reads {
                    assert!(
                        interval.start <= r.start && r.end <= interval.end && r.start <= r.end,
                        "page {page_no}: read {r:?} outside the query's range {interval:?}"
                    );
                }
                label.push_str(if is_done { " done" } else { " more" });
                if is_done {
                    break;
                }
                cursor = Some(page.continue_cursor);
            }
            (Err(e), Err(why)) => {
                match &e {
                    Error::App {
                        code: ErrorCode::InvalidArgument,
                        message,
                        ..
                    } if message.contains("pagination cursor") => {}
                    other => panic!("a bad cursor failed as {other:?}"),
                }
                label.push_str(why);
                break;
            }
            (got, expected) => {
                panic!("page {page_no}: paginate gave {got:?}, the model {expected:?}")
            }
        }
    }
    conn.end_read().expect("end read");
    (format!("{}{label}", spec.index), conn)
}

type ModelPage = (Vec<Value>, bool, Vec<u8>);

/// What a page must be: the range's documents strictly after the cursor in
/// `order`, the first `max(n, 1)`; done when fewer remained; the continue
/// cursor is the last key returned, or the range's far end when done.
fn model(
    keyed: &[(Vec<u8>, Value)],
    interval: &KeyInterval,
    order: Order,
    cursor: Option<&str>,
    n: usize,
) -> Result<ModelPage, &'static str> {
    let n = n.max(1);
    let c = match cursor {
        None => None,
        Some(text) => Some(B64.decode(text).map_err(|_| " not base64")?),
    };
    if let Some(c) = &c {
        if !(interval.start <= *c && *c <= interval.end) {
            return Err(" outside the range");
        }
    }
    let remaining: Vec<&(Vec<u8>, Value)> = match order {
        Order::Asc => keyed
            .iter()
            .filter(|(k, _)| c.as_ref().is_none_or(|c| k > c))
            .collect(),
        Order::Desc => keyed
            .iter()
            .rev()
            .filter(|(k, _)| c.as_ref().is_none_or(|c| k < c))
            .collect(),
    };
    let is_done = remaining.len() < n;
    let page: Vec<&(Vec<u8>, Value)> = remaining.into_iter().take(n).collect();
    let next = match (is_done, order, page.last()) {
        (false, _, Some((k, _))) => k.clone(),
        (_, Order::Asc, _) => interval.end.clone(),
        (_, Order::Desc, _) => interval.start.clone(),
    };
    Ok((
        page.into_iter().map(|(_, v)| v.clone()).collect(),
        is_done,
        next,
    ))
}
