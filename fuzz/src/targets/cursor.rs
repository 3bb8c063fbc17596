//! Target `cursor`: hostile pagination cursors through `Query::paginate`
//! (`store/src/transaction.rs`), on a real SQLite file holding documents
//! whose index keys meet every edge of the key encoding (strings that are
//! prefixes of others, `"b\0"`, missing fields, NaN, `-0`, `0xFF` bytes).
//!
//! A cursor is opaque and tamper-evident (`store/src/pagination.rs`): the
//! URL-safe base64 of an index key followed by a 16-byte HMAC-SHA-256 tag
//! over the key and the query's binding (table, index, key range, order)
//! under the deployment's `CursorKey`. The input picks a query (index,
//! range, order, page size) and what to hand it: no cursor (then every real
//! `continueCursor` in turn); a forged cursor (raw text, or the base64 of raw
//! bytes, of the range's start or end, or of a document's key, each followed
//! by fuzzer bytes); a real cursor with fuzzer-chosen bit flips, a truncation
//! or appended bytes; a real cursor of another query (index, range, order);
//! or a real cursor of this query signed under another deployment's key.
//!
//! Invariants: paginate never panics; a forged cursor, a real one edited
//! into other bytes, one of a query with another binding, or one of another
//! deployment is refused as an invalid argument, having read nothing; a
//! real cursor (byte-identical, or of a query with the same binding) gives
//! exactly the page a naive model gives (the range's documents strictly
//! after the cursor's key in the query's order, the first `n`), `isDone` and
//! the continue cursor's key as the model says; following the continue
//! cursors from the first page walks the model's pages to the end; the read
//! set never leaves the query's range.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use std::sync::Arc;

use livebase_runtime::pagination::{CursorKey, TAG_LEN};
use livebase_runtime::readset::KeyInterval;
use livebase_runtime::store::sqlite::SqlitePersistence;
use livebase_runtime::store::{
    index_key, index_prefix, Document, Order, Persistence, StoreConnection,
};
use livebase_runtime::transaction::{IndexRange, Page, Transaction};
use livebase_runtime::{Error, ErrorCode};
use livebase_schema::key::encode_value;
use livebase_schema::{define_table, v, DocumentId, Object, Schema, Timestamp, Value};

use crate::Target;

pub const TARGET: Target = Target {
    name: "cursor",
    checks: "pagination cursors: no panic; forged, edited or foreign cursors refused; real ones give a naive model's pages; reads stay in range",
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
    /// The deployment's cursor key, and another deployment's.
    key: Arc<CursorKey>,
    other_key: Arc<CursorKey>,
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
        key: Arc::new(CursorKey::derive(b"the fuzz deployment's secret....")),
        other_key: Arc::new(CursorKey::derive(b"another deployment's secret.....")),
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
        // Crossed bounds: the empty interval at `start`.
        let end = end.max(start.clone());
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

/// One query: its range, order and page size, and the model's view of it.
struct Query {
    spec: Spec,
    order: Order,
    num_items: usize,
    interval: KeyInterval,
    /// The range's documents by index key, ascending.
    keyed: Vec<(Vec<u8>, Value)>,
}

impl Query {
    fn new(f: &Fixture, spec: Spec, order: Order, num_items: usize) -> Query {
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
        Query {
            spec,
            order,
            num_items,
            interval,
            keyed,
        }
    }

    /// What the runtime binds a cursor to: table (always the same here),
    /// index, key range and order.
    fn same_binding(&self, other: &Query) -> bool {
        self.spec.index == other.spec.index
            && self.interval == other.interval
            && self.order == other.order
    }

    /// One page from `cursor` in a fresh transaction under `key`, and the
    /// intervals it read.
    fn paginate(
        &self,
        f: &Fixture,
        conn: &mut dyn StoreConnection,
        ts: Timestamp,
        key: &Arc<CursorKey>,
        cursor: Option<&str>,
    ) -> (Result<Page, Error>, Vec<KeyInterval>) {
        let mut tx = Transaction::read_only(conn, &f.schema, ts);
        tx.set_cursor_key(key.clone());
        let result = tx
            .query(TABLE)
            .with_index(self.spec.index, |_| self.spec.range())
            .order(self.order)
            .paginate(cursor, self.num_items);
        let reads = tx.read_set().intervals().to_vec();
        (result, reads)
    }

    /// Checks an accepted page against the model's page after `after`;
    /// returns the page and the model's next position.
    fn expect_page(
        &self,
        what: &str,
        got: Result<Page, Error>,
        reads: &[KeyInterval],
        after: Option<&[u8]>,
    ) -> (Page, Vec<u8>) {
        let page = got.unwrap_or_else(|e| panic!("{what}: a real cursor was refused: {e:?}"));
        let (docs, is_done, next) = model(
            &self.keyed,
            &self.interval,
            self.order,
            after,
            self.num_items,
        );
        assert_eq!(page.page, docs, "{what}: not the model's documents");
        assert_eq!(page.is_done, is_done, "{what}: isDone");
        assert_eq!(
            position(&page.continue_cursor),
            next,
            "{what}: the continue cursor's key"
        );
        for r in reads {
            assert!(
                self.interval.start <= r.start && r.end <= self.interval.end && r.start <= r.end,
                "{what}: read {r:?} outside the query's range {:?}",
                self.interval
            );
        }
        (page, next)
    }
}

/// The key a cursor the runtime issued names: its bytes without the tag.
fn position(cursor: &str) -> Vec<u8> {
    let bytes = B64
        .decode(cursor)
        .unwrap_or_else(|e| panic!("an issued cursor is not base64: {e}"));
    assert!(bytes.len() >= TAG_LEN, "an issued cursor has no tag");
    bytes[..bytes.len() - TAG_LEN].to_vec()
}

/// A refusal must be `INVALID_ARGUMENT` about the cursor, having read
/// nothing.
fn expect_refused(what: &str, got: Result<Page, Error>, reads: &[KeyInterval]) {
    match got {
        Err(Error::App {
            code: ErrorCode::InvalidArgument,
            message,
            ..
        }) if message.contains("pagination cursor") => {}
        other => panic!("{what}: expected a refused cursor, got {other:?}"),
    }
    assert!(reads.is_empty(), "{what}: a refused cursor read {reads:?}");
}

fn run_with(
    f: &Fixture,
    mut conn: Box<dyn StoreConnection>,
    data: &[u8],
) -> (String, Box<dyn StoreConnection>) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let statuses = statuses();
    let payload = data.get(6..).unwrap_or(&[]);
    let pick = |b: u8| {
        statuses[usize::from(b) % statuses.len()]
            .clone()
            .unwrap_or(Value::Null)
    };
    let order_of = |b: u8| {
        if b.is_multiple_of(2) {
            Order::Asc
        } else {
            Order::Desc
        }
    };
    let mut next_bound = 3;
    let spec = Spec::from_byte(byte(0), &mut || {
        next_bound += 1;
        pick(byte(next_bound))
    });
    let q = Query::new(f, spec, order_of(byte(1)), usize::from(byte(2) % 24));
    let ts: Timestamp = conn.begin_read().expect("begin read");
    let c = conn.as_mut();
    let mut label = String::new();
    match byte(3) % 9 {
        0 => {
            // Every page from the first, following the continue cursors; the
            // label names the first two.
            let mut cursor: Option<String> = None;
            let mut after: Option<Vec<u8>> = None;
            for page_no in 0..=q.keyed.len() + 1 {
                let (got, reads) = q.paginate(f, c, ts, &f.key, cursor.as_deref());
                let what = format!("page {page_no}");
                let (page, next) = q.expect_page(&what, got, &reads, after.as_deref());
                if page_no < 2 {
                    label.push_str(if page.is_done { " done" } else { " more" });
                }
                if page.is_done {
                    break;
                }
                assert!(
                    page_no <= q.keyed.len(),
                    "more pages than documents in the range"
                );
                cursor = Some(page.continue_cursor);
                after = Some(next);
            }
        }
        mode @ 1..=5 => {
            let (kind, text) = match mode {
                1 => ("raw", String::from_utf8_lossy(payload).into_owned()),
                2 => ("bytes", B64.encode(payload)),
                3 => (
                    "start",
                    B64.encode([q.interval.start.as_slice(), payload].concat()),
                ),
                4 => (
                    "end",
                    B64.encode([q.interval.end.as_slice(), payload].concat()),
                ),
                _ => {
                    let def = f.schema.get(TABLE).expect("table");
                    let index = def.get_index(q.spec.index).expect("index");
                    let d = &f.docs[usize::from(byte(4)) % f.docs.len()];
                    let k = index_key(TABLE, index, d);
                    let cut = k.len().saturating_sub(usize::from(byte(5) % 4));
                    ("doc", B64.encode([&k[..cut], payload].concat()))
                }
            };
            let (got, reads) = q.paginate(f, c, ts, &f.key, Some(&text));
            expect_refused(&format!("a forged {kind} cursor"), got, &reads);
            label.push_str(" forged ");
            label.push_str(kind);
            label.push_str(match B64.decode(&text) {
                Err(_) => " not base64",
                Ok(b) if b.len() < TAG_LEN => " short",
                Ok(_) => " refused",
            });
        }
        6 => {
            // The first page's continue cursor, edited.
            let (got, reads) = q.paginate(f, c, ts, &f.key, None);
            let (first, next) = q.expect_page("the first page", got, &reads, None);
            let real = B64.decode(&first.continue_cursor).expect("base64");
            let mut bytes = real.clone();
            let op = match byte(4) % 3 {
                0 => {
                    for pair in payload.chunks(2) {
                        let at = usize::from(pair[0]) % bytes.len();
                        bytes[at] ^= pair.get(1).copied().unwrap_or(1);
                    }
                    "flipped"
                }
                1 => {
                    let cut = usize::from(byte(5)) % (bytes.len() + 1);
                    bytes.truncate(bytes.len() - cut);
                    "truncated"
                }
                _ => {
                    bytes.extend_from_slice(payload);
                    "appended"
                }
            };
            let (got, reads) = q.paginate(f, c, ts, &f.key, Some(&B64.encode(&bytes)));
            label.push_str(" edited ");
            label.push_str(op);
            if bytes == real {
                let (page, _) =
                    q.expect_page("after the unedited cursor", got, &reads, Some(&next));
                label.push_str(if page.is_done {
                    " same done"
                } else {
                    " same more"
                });
            } else {
                expect_refused(&format!("a {op} cursor"), got, &reads);
                label.push_str(" refused");
            }
        }
        7 => {
            // The first page's continue cursor of another query.
            let mut bounds = payload.iter().copied().chain(std::iter::repeat(0));
            let spec = Spec::from_byte(byte(4), &mut || pick(bounds.next().unwrap_or(0)));
            let other = Query::new(f, spec, order_of(byte(5)), usize::from(byte(2) % 24));
            let (got, reads) = other.paginate(f, c, ts, &f.key, None);
            let (first, next) =
                other.expect_page("the other query's first page", got, &reads, None);
            let (got, reads) = q.paginate(f, c, ts, &f.key, Some(&first.continue_cursor));
            label.push_str(" other query");
            if q.same_binding(&other) {
                let (page, _) =
                    q.expect_page("after a same-binding cursor", got, &reads, Some(&next));
                label.push_str(if page.is_done {
                    " same done"
                } else {
                    " same more"
                });
            } else {
                expect_refused("another query's cursor", got, &reads);
                label.push_str(" refused");
            }
        }
        _ => {
            // This query's first continue cursor, from another deployment.
            let (got, reads) = q.paginate(f, c, ts, &f.other_key, None);
            let (first, _) = q.expect_page("the other deployment's first page", got, &reads, None);
            let (got, reads) = q.paginate(f, c, ts, &f.key, Some(&first.continue_cursor));
            expect_refused("another deployment's cursor", got, &reads);
            label.push_str(" other deployment refused");
        }
    }
    conn.end_read().expect("end read");
    (format!("{}{label}", q.spec.index), conn)
}

type ModelPage = (Vec<Value>, bool, Vec<u8>);

/// What a page must be: the range's documents strictly after `after` in
/// `order`, the first `max(n, 1)`; done when fewer remained; the continue
/// cursor names the last key returned, or the range's far end when done.
fn model(
    keyed: &[(Vec<u8>, Value)],
    interval: &KeyInterval,
    order: Order,
    after: Option<&[u8]>,
    n: usize,
) -> ModelPage {
    let n = n.max(1);
    let remaining: Vec<&(Vec<u8>, Value)> = match order {
        Order::Asc => keyed
            .iter()
            .filter(|(k, _)| after.is_none_or(|c| k.as_slice() > c))
            .collect(),
        Order::Desc => keyed
            .iter()
            .rev()
            .filter(|(k, _)| after.is_none_or(|c| k.as_slice() < c))
            .collect(),
    };
    let is_done = remaining.len() < n;
    let page: Vec<&(Vec<u8>, Value)> = remaining.into_iter().take(n).collect();
    let next = match (is_done, order, page.last()) {
        (false, _, Some((k, _))) => k.clone(),
        (_, Order::Asc, _) => interval.end.clone(),
        (_, Order::Desc, _) => interval.start.clone(),
    };
    (
        page.into_iter().map(|(_, v)| v.clone()).collect(),
        is_done,
        next,
    )
}
