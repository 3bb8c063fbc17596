//! Transactions: the document API functions use — `get`, `insert`, `patch`,
//! `replace`, `delete` and index queries — over one store snapshot. Reads are
//! recorded here and only here, as key intervals of the one index key space;
//! writes are recorded with the index keys of the old and new version of each
//! document.

use std::sync::Arc;

use livebase_schema::key::encode_value;
use livebase_schema::table::{TableDefinition, BY_CREATION_TIME};
use livebase_schema::{DocumentId, Object, Schema, Timestamp, Value};

use crate::error::{Error, Result};
use crate::pagination::{process_key, CursorKey, PaginationOpts, PaginationResult, SPLIT_FACTOR};
use crate::persistence::{
    index_key, index_prefix, Document, MutationOutcome, Order, StoreConnection,
};
use crate::readset::{DocumentWrite, KeyInterval, ReadSet, WriteKind, WriteSet};

/// Most documents one transaction may read (by id or by scanning).
pub const MAX_READS_PER_TRANSACTION: usize = 16_384;
/// Most documents one mutation may write.
pub const MAX_WRITES_PER_TRANSACTION: usize = 8_192;
/// Most bytes of documents (as [`Value::size`] counts them) one transaction
/// may read: the count of documents alone lets 16,384 reads of 1 MiB each
/// hold 16 GiB. Convex's limit.
pub const MAX_BYTES_READ_PER_TRANSACTION: usize = 16 << 20;
/// Most bytes of new document versions one mutation may write (Convex's
/// limit).
pub const MAX_BYTES_WRITTEN_PER_TRANSACTION: usize = 8 << 20;
/// How many index entries one store round trip fetches while scanning.
const SCAN_BATCH: usize = 128;

/// A read-only or read-write transaction over one snapshot of the store.
///
/// A write transaction commits only through [`crate::database::Database`]; one
/// that is dropped uncommitted is rolled back and leaves no trace.
pub struct Transaction<'a> {
    conn: &'a mut dyn StoreConnection,
    schema: &'a Schema,
    snapshot_ts: Timestamp,
    /// The commit timestamp, for a write transaction.
    commit_ts: Option<Timestamp>,
    reads: ReadSet,
    writes: WriteSet,
    docs_read: usize,
    bytes_read: usize,
    bytes_written: usize,
    /// Whether it wrote outside the documents (mutation outcomes), which must
    /// be committed even when no document changed.
    wrote_other: bool,
    /// What signs and checks pagination cursors.
    cursor_key: Arc<CursorKey>,
    /// The origin (`https://host[:port]`) stored files' URLs are built on;
    /// `None` gives paths.
    public_url: Option<Arc<str>>,
    /// The live query's journal (its page's end cursor) given to this run,
    /// and the one it leaves for the next (see [`crate::pagination`]).
    journal_in: Option<String>,
    journal_out: Option<String>,
    /// Whether `paginate` ran: a query may paginate once, as in Convex, for
    /// its journal holds one page end.
    paginated: bool,
}

impl<'a> Transaction<'a> {
    /// A read-only transaction on a snapshot the caller has begun.
    pub fn read_only(
        conn: &'a mut dyn StoreConnection,
        schema: &'a Schema,
        snapshot_ts: Timestamp,
    ) -> Transaction<'a> {
        Transaction {
            conn,
            schema,
            snapshot_ts,
            commit_ts: None,
            reads: ReadSet::new(),
            writes: WriteSet::new(),
            docs_read: 0,
            bytes_read: 0,
            bytes_written: 0,
            wrote_other: false,
            cursor_key: process_key(),
            public_url: None,
            journal_in: None,
            journal_out: None,
            paginated: false,
        }
    }

    /// Signs and checks pagination cursors with the deployment's `key`.
    pub fn set_cursor_key(&mut self, key: Arc<CursorKey>) {
        self.cursor_key = key;
    }

    /// The deployment's key this transaction signs with (stored files' URLs
    /// are signed under a key derived from it, [`CursorKey::subkey`]).
    pub fn cursor_key(&self) -> &Arc<CursorKey> {
        &self.cursor_key
    }

    /// Builds stored files' URLs on `url`, the server's public origin
    /// (`https://host[:port]`, no trailing slash).
    pub fn set_public_url(&mut self, url: Option<Arc<str>>) {
        self.public_url = url;
    }

    /// The origin stored files' URLs are built on, if the server gave one.
    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// Runs a live query's page to the end its journal records (a journal
    /// this deployment issued for this query; anything else fails the
    /// query's `paginate` with `INVALID_ARGUMENT`).
    pub fn set_journal(&mut self, journal: Option<String>) {
        self.journal_in = journal;
    }

    /// The journal this run leaves: where its page ends, if it paginated.
    pub fn journal(&self) -> Option<&str> {
        self.journal_out.as_deref()
    }

    /// A write transaction that will commit at `commit_ts`, inside a store write
    /// transaction the caller has begun.
    pub fn writable(
        conn: &'a mut dyn StoreConnection,
        schema: &'a Schema,
        snapshot_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> Transaction<'a> {
        let mut tx = Transaction::read_only(conn, schema, snapshot_ts);
        tx.commit_ts = Some(commit_ts);
        tx
    }

    /// The timestamp of the snapshot this transaction reads.
    pub fn snapshot_ts(&self) -> Timestamp {
        self.snapshot_ts
    }

    /// The timestamp this transaction will commit at (`None` for a query).
    pub fn commit_ts(&self) -> Option<Timestamp> {
        self.commit_ts
    }

    pub fn schema(&self) -> &Schema {
        self.schema
    }

    pub fn read_set(&self) -> &ReadSet {
        &self.reads
    }

    pub fn write_set(&self) -> &WriteSet {
        &self.writes
    }

    pub fn into_sets(self) -> (ReadSet, WriteSet) {
        (self.reads, self.writes)
    }

    /// Whether this transaction has anything to commit: document writes, or
    /// rows outside the documents such as mutation outcomes.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty() || self.wrote_other
    }

    /// The stored outcome of a client's request with this fingerprint (the
    /// same caller, function and arguments), if its mutation already ran (the
    /// runtime's executor looks it up). Not part of the read set: outcomes
    /// are not documents, and no query can read them.
    pub fn mutation_outcome(
        &mut self,
        session_id: &str,
        request_id: u32,
        fingerprint: &[u8],
    ) -> Result<Option<MutationOutcome>> {
        Ok(self.conn.get_outcome(session_id, request_id, fingerprint)?)
    }

    /// Stores a client mutation's outcome, committed with this transaction.
    pub fn store_mutation_outcome(&mut self, outcome: &MutationOutcome) -> Result<()> {
        self.writable_ts()?;
        self.conn.put_outcome(outcome)?;
        self.wrote_other = true;
        Ok(())
    }

    /// Deletes at most `limit` stored mutation outcomes older than `before`,
    /// oldest first, and returns how many (`upkeep`'s purge).
    pub fn purge_mutation_outcomes(&mut self, before: Timestamp, limit: usize) -> Result<usize> {
        self.writable_ts()?;
        let n = self.conn.purge_outcomes(before, limit)?;
        self.wrote_other |= n > 0;
        Ok(n)
    }

    /// How many mutation outcomes are stored.
    pub fn count_mutation_outcomes(&mut self) -> Result<usize> {
        Ok(self.conn.count_outcomes()?)
    }

    fn table(&self, table: &str) -> Result<&'a TableDefinition> {
        self.schema
            .get(table)
            .ok_or_else(|| Error::invalid(format!("there is no table `{table}`")))
    }

    fn count_reads(&mut self, n: usize) -> Result<()> {
        self.docs_read += n;
        if self.docs_read > MAX_READS_PER_TRANSACTION {
            return Err(Error::limit(format!(
                "a transaction may read at most {MAX_READS_PER_TRANSACTION} documents"
            )));
        }
        Ok(())
    }

    /// Counts the bytes of a document just read, failing once the total passes
    /// [`MAX_BYTES_READ_PER_TRANSACTION`]: a scan stops there instead of
    /// building a result of any size.
    fn count_bytes_read(&mut self, n: usize) -> Result<()> {
        self.bytes_read += n;
        if self.bytes_read > MAX_BYTES_READ_PER_TRANSACTION {
            return Err(Error::limit(format!(
                "a transaction may read at most {MAX_BYTES_READ_PER_TRANSACTION} bytes of documents"
            )));
        }
        Ok(())
    }

    /// How many documents a scan may fetch in its next round trip: a full
    /// batch at first, then no more than the byte budget left holds at the
    /// average size read so far, so one round trip of large documents does
    /// not overshoot the budget many times over.
    fn scan_batch(&self, want: usize) -> usize {
        if self.bytes_read == 0 || self.docs_read == 0 {
            return want;
        }
        let average = (self.bytes_read / self.docs_read).max(1);
        let left = MAX_BYTES_READ_PER_TRANSACTION.saturating_sub(self.bytes_read);
        want.min(left / average + 1)
    }

    /// The document with this id, or `None`.
    pub fn get(&mut self, id: &DocumentId) -> Result<Option<Value>> {
        if !self.read_by_id(id)? {
            return Ok(None);
        }
        let value = self.conn.get_value(id)?;
        if let Some(value) = &value {
            self.count_bytes_read(value.size())?;
        }
        Ok(value)
    }

    fn get_document(&mut self, id: &DocumentId) -> Result<Option<Document>> {
        if !self.read_by_id(id)? {
            return Ok(None);
        }
        let doc = self.conn.get(id)?;
        if let Some(doc) = &doc {
            self.count_bytes_read(document_size(doc))?;
        }
        Ok(doc)
    }

    /// Records a read of `id` (its `by_id` key) and counts it; `false` if
    /// its table does not exist, so there is nothing to read.
    fn read_by_id(&mut self, id: &DocumentId) -> Result<bool> {
        let table = id.table();
        let Some(def) = self.schema.get(table) else {
            return Ok(false);
        };
        let by_id = def.all_indexes().next().expect("by_id is first");
        let mut key = index_prefix(table, by_id.name());
        encode_value(&mut key, Some(&Value::from(id.as_str())));
        self.reads.record(KeyInterval::point(&key));
        self.count_reads(1)?;
        Ok(true)
    }

    /// Starts a query over `table` (by default in creation order over all
    /// documents; narrow it with [`Query::with_index`]).
    pub fn query<'t>(&'t mut self, table: &str) -> Query<'t, 'a> {
        Query {
            tx: self,
            table: table.to_string(),
            index: BY_CREATION_TIME.to_string(),
            range: IndexRange::default(),
            order: Order::Asc,
            filters: Vec::new(),
        }
    }

    fn writable_ts(&self) -> Result<Timestamp> {
        self.commit_ts
            .ok_or_else(|| Error::internal("a query cannot write; use a mutation"))
    }

    fn check_fields(&self, table: &str, fields: Value) -> Result<Object> {
        let Value::Object(object) = &fields else {
            return Err(Error::invalid(format!(
                "a `{table}` document must be an object, not {}",
                fields.value_type()
            )));
        };
        if let Some(name) = object.keys().find(|k| k.starts_with('_')) {
            return Err(Error::invalid(format!(
                "{table}.{name}: fields starting with `_` are system fields and cannot be written"
            )));
        }
        let def = self.table(table)?;
        def.validate_document(table, object)
            .map_err(|e| Error::invalid(e.to_string()))?;
        fields
            .check_limits(table)
            .map_err(|e| Error::limit(e.to_string()))?;
        match fields {
            Value::Object(object) => Ok(object.into_fields()),
            _ => unreachable!("checked to be an object above"),
        }
    }

    fn keys_of(&self, def: &TableDefinition, doc: &Document) -> Vec<Vec<u8>> {
        def.all_indexes()
            .map(|index| index_key(doc.table(), index, doc))
            .collect()
    }

    fn write(&mut self, old: Option<&Document>, new: Option<&Document>) -> Result<()> {
        if self.writes.documents().len() >= MAX_WRITES_PER_TRANSACTION {
            return Err(Error::limit(format!(
                "a mutation may write at most {MAX_WRITES_PER_TRANSACTION} documents"
            )));
        }
        if let Some(new) = new {
            self.bytes_written += document_size(new);
            if self.bytes_written > MAX_BYTES_WRITTEN_PER_TRANSACTION {
                return Err(Error::limit(format!(
                    "a mutation may write at most {MAX_BYTES_WRITTEN_PER_TRANSACTION} bytes of documents"
                )));
            }
        }
        let doc = new.or(old).expect("a write has a version");
        let table = doc.table().to_string();
        let def = self.table(&table)?;
        let old_keys = old.map(|d| self.keys_of(def, d)).unwrap_or_default();
        let new_keys = new.map(|d| self.keys_of(def, d)).unwrap_or_default();
        for key in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            self.conn.delete_index_entry(key)?;
        }
        match new {
            Some(d) if old.is_none() => {
                self.conn.insert_document(d)?;
                for key in &new_keys {
                    self.conn.put_index_entry(key, &d.id)?;
                }
            }
            Some(d) => {
                self.conn.put_document(d)?;
                for key in new_keys.iter().filter(|k| !old_keys.contains(k)) {
                    self.conn.put_index_entry(key, &d.id)?;
                }
            }
            None => self.conn.delete_document(&doc.id)?,
        }
        let kind = match (old, new) {
            (None, _) => WriteKind::Insert,
            (Some(_), Some(_)) => WriteKind::Update,
            (Some(_), None) => WriteKind::Delete,
        };
        let write = DocumentWrite {
            table,
            id: doc.id.as_str().to_string(),
            kind,
        };
        self.writes.record(write, &old_keys, &new_keys);
        Ok(())
    }

    /// Inserts a document (an object of user fields) and returns its new id.
    pub fn insert(&mut self, table: &str, fields: impl Into<Value>) -> Result<DocumentId> {
        let ts = self.writable_ts()?;
        let fields = self.check_fields(table, fields.into())?;
        let doc = Document {
            id: DocumentId::generate(table),
            creation_time: ts.as_millis_f64(),
            fields,
        };
        self.write(None, Some(&doc))?;
        Ok(doc.id)
    }

    fn existing(&mut self, id: &DocumentId) -> Result<Document> {
        self.get_document(id)?
            .ok_or_else(|| Error::not_found(format!("document {id} does not exist")))
    }

    /// Sets the given fields of a document, keeping the others.
    pub fn patch(&mut self, id: &DocumentId, fields: impl Into<Value>) -> Result<()> {
        self.writable_ts()?;
        let old = self.existing(id)?;
        let patch = match fields.into() {
            Value::Object(o) => o,
            other => {
                return Err(Error::invalid(format!(
                    "a patch must be an object, not {}",
                    other.value_type()
                )))
            }
        };
        let mut merged = old.fields.clone();
        merged.extend(patch);
        self.replace_fields(old, merged)
    }

    /// Replaces all user fields of a document.
    pub fn replace(&mut self, id: &DocumentId, fields: impl Into<Value>) -> Result<()> {
        self.writable_ts()?;
        let old = self.existing(id)?;
        match fields.into() {
            Value::Object(o) => self.replace_fields(old, o.into_fields()),
            other => Err(Error::invalid(format!(
                "a document must be an object, not {}",
                other.value_type()
            ))),
        }
    }

    fn replace_fields(&mut self, old: Document, fields: Object) -> Result<()> {
        let fields = self.check_fields(old.table(), Value::Object(fields.into()))?;
        if fields == old.fields {
            return Ok(()); // Nothing changes, so nothing is written or invalidated.
        }
        let new = Document {
            fields,
            ..old.clone()
        };
        self.write(Some(&old), Some(&new))
    }

    /// Deletes a document.
    pub fn delete(&mut self, id: &DocumentId) -> Result<()> {
        self.writable_ts()?;
        let old = self.existing(id)?;
        self.write(Some(&old), None)
    }
}

/// A document's size as [`Value::size`] counts it, without building the value.
fn document_size(doc: &Document) -> usize {
    // The object, `_id` and `_creationTime` with their names.
    let system = 1 + (3 + 1 + 1 + doc.id.as_str().len()) + (13 + 1 + 9);
    system
        + doc
            .fields
            .iter()
            .map(|(k, v)| k.len() + 1 + v.size())
            .sum::<usize>()
}

/// A range over an index: equalities on a prefix of its fields, then at most a
/// lower and an upper bound on the next field — as Convex's `withIndex`.
#[derive(Clone, Debug, Default)]
pub struct IndexRange {
    eqs: Vec<(String, Value)>,
    lower: Option<(String, Value, bool)>,
    upper: Option<(String, Value, bool)>,
}

impl IndexRange {
    pub fn eq(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.eqs.push((field.to_string(), value.into()));
        self
    }
    pub fn gt(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.lower = Some((field.to_string(), value.into(), false));
        self
    }
    pub fn gte(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.lower = Some((field.to_string(), value.into(), true));
        self
    }
    pub fn lt(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.upper = Some((field.to_string(), value.into(), false));
        self
    }
    pub fn lte(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.upper = Some((field.to_string(), value.into(), true));
        self
    }

    /// The key interval this range covers in `index` of `table`.
    fn interval(&self, table: &str, def: &TableDefinition, index: &str) -> Result<KeyInterval> {
        let index_def = def.get_index(index).ok_or_else(|| {
            let names: Vec<&str> = def.all_indexes().map(|i| i.name()).collect();
            Error::invalid(format!(
                "table `{table}` has no index `{index}` (its indexes: {})",
                names.join(", ")
            ))
        })?;
        let fields = index_def.key_fields();
        let mut prefix = index_prefix(table, index);
        for (i, (field, value)) in self.eqs.iter().enumerate() {
            if fields.get(i).copied() != Some(field.as_str()) {
                return Err(Error::invalid(format!(
                    "index `{table}.{index}` on ({}): `eq(\"{field}\")` is not its field #{}",
                    fields.join(", "),
                    i + 1
                )));
            }
            encode_value(&mut prefix, Some(value));
        }
        let next = fields.get(self.eqs.len()).copied();
        for (field, _, _) in self.lower.iter().chain(&self.upper) {
            if next != Some(field.as_str()) {
                return Err(Error::invalid(format!(
                    "index `{table}.{index}` on ({}): a bound on `{field}` must be on the field after the equalities ({})",
                    fields.join(", "),
                    next.unwrap_or("none left")
                )));
            }
        }
        // Just past every key whose leading values are exactly those encoded in
        // `p`. Not `prefix_end(p)`: a string's encoding is a prefix of the
        // encoding of that string followed by "\0" (`"b"` = 07 62 00, `"b\0"` =
        // 07 62 00 FF 00), a different and greater value. After a whole value a
        // key goes on with the next field's tag byte (below 0xFF) or ends, and
        // such a longer string with an escaped 0xFF, so `p ++ [0xFF]` splits
        // them.
        let end_of = |p: &[u8]| [p, &[0xFF]].concat();
        let with = |value: &Value| {
            let mut k = prefix.clone();
            encode_value(&mut k, Some(value));
            k
        };
        let start = match &self.lower {
            None => prefix.clone(),
            Some((_, v, true)) => with(v),
            Some((_, v, false)) => end_of(&with(v)),
        };
        let end = match &self.upper {
            None => end_of(&prefix),
            Some((_, v, true)) => end_of(&with(v)),
            Some((_, v, false)) => with(v),
        };
        // Bounds that cross (`gte(5).lt(3)`) hold no key: the empty interval
        // at `start`, so that the cursor a page of it ends at lies inside it
        // and is accepted back.
        let end = end.max(start.clone());
        Ok(KeyInterval::new(start, end))
    }
}

/// One page of a paginated query (the short form of [`PaginationResult`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub page: Vec<Value>,
    pub is_done: bool,
    /// Pass this back to get the next page.
    pub continue_cursor: String,
}

/// What [`Query::run`] found: the matching documents with their keys,
/// whether the range was exhausted, and the cursor key (the last key passed,
/// or the range's far end when exhausted).
struct Scan {
    docs: Vec<(Vec<u8>, Value)>,
    exhausted: bool,
    last: Vec<u8>,
}

type Filter = Box<dyn Fn(&Value) -> bool>;

/// A query being built: `tx.query("items").with_index(..).order(..).filter(..)`,
/// ended by `collect`, `take`, `first`, `unique` or `paginate`.
pub struct Query<'t, 'a> {
    tx: &'t mut Transaction<'a>,
    table: String,
    index: String,
    range: IndexRange,
    order: Order,
    filters: Vec<Filter>,
}

impl Query<'_, '_> {
    pub fn with_index(mut self, index: &str, range: impl FnOnce(IndexRange) -> IndexRange) -> Self {
        self.index = index.to_string();
        self.range = range(IndexRange::default());
        self
    }

    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Keeps only documents for which `keep` is true. The scan still reads (and
    /// the read set still covers) every document of the range it passes.
    pub fn filter(mut self, keep: impl Fn(&Value) -> bool + 'static) -> Self {
        self.filters.push(Box::new(keep));
        self
    }

    pub fn collect(mut self) -> Result<Vec<Value>> {
        Ok(values(self.run(None, None, None, None)?.docs))
    }

    pub fn take(mut self, n: usize) -> Result<Vec<Value>> {
        Ok(values(self.run(Some(n), None, None, None)?.docs))
    }

    pub fn first(self) -> Result<Option<Value>> {
        Ok(self.take(1)?.into_iter().next())
    }

    /// The single matching document, `None` if there is none, an error if there
    /// are several.
    pub fn unique(self) -> Result<Option<Value>> {
        let what = format!("{}.{}", self.table, self.index);
        let mut docs = self.take(2)?;
        if docs.len() > 1 {
            return Err(Error::invalid(format!(
                "unique() on `{what}` found more than one document"
            )));
        }
        Ok(docs.pop())
    }

    /// Up to `num_items` documents after `cursor` (`None` = from the start).
    pub fn paginate(self, cursor: Option<&str>, num_items: usize) -> Result<Page> {
        let opts = PaginationOpts {
            num_items,
            cursor: cursor.map(str::to_string),
            ..PaginationOpts::default()
        };
        let r = self.paginate_with(&opts)?;
        Ok(Page {
            page: r.page,
            is_done: r.is_done,
            continue_cursor: r.continue_cursor,
        })
    }

    /// What the query's binding is for cursors: table, index, the range's
    /// key interval and the order, so a cursor from any other query fails.
    fn binding(&self, full: &KeyInterval) -> Vec<u8> {
        let mut b = Vec::new();
        for part in [
            self.table.as_bytes(),
            self.index.as_bytes(),
            &full.start,
            &full.end,
        ] {
            b.extend_from_slice(&(part.len() as u64).to_le_bytes());
            b.extend_from_slice(part);
        }
        b.push(matches!(self.order, Order::Asc) as u8);
        b
    }

    /// A page as Convex's paginated clients ask for it. Without `endCursor`
    /// the page ends after `numItems` documents — or, in a live query that
    /// ran before, where its journal says — and that end becomes the journal;
    /// with `endCursor` it runs exactly from `cursor` to `endCursor`. A page
    /// with a fixed end that grew to [`SPLIT_FACTOR`] times `numItems`
    /// recommends a split at its middle; one that would read more than
    /// `maximumRowsRead` rows or `maximumBytesRead` bytes of documents stops
    /// there and requires one. Records exactly the range it covers.
    pub fn paginate_with(mut self, opts: &PaginationOpts) -> Result<PaginationResult> {
        if self.tx.paginated {
            return Err(Error::invalid(
                "a query may call paginate() only once: its journal holds one page end",
            ));
        }
        self.tx.paginated = true;
        let def = self.tx.table(&self.table)?;
        let full = self.range.interval(&self.table, def, &self.index)?;
        let binding = self.binding(&full);
        let key = self.tx.cursor_key.clone();
        let cursor = match &opts.cursor {
            Some(c) => Some(key.decode(&binding, c)?),
            None => None,
        };
        // An explicit end wins; else the journal of an earlier run.
        let fixed_end = match opts.end_cursor.as_ref().or(self.tx.journal_in.as_ref()) {
            Some(c) => Some(key.decode(&binding, c)?),
            None => None,
        };
        let far_end = match self.order {
            Order::Asc => full.end.clone(),
            Order::Desc => full.start.clone(),
        };
        let num_items = opts.num_items.max(1);
        // At least one document per page, so every page makes progress.
        let max_bytes = opts.maximum_bytes_read.map(|m| m.max(1));
        let journal;
        let result = match fixed_end {
            Some(end) => {
                // Past `maximumRowsRead` or `maximumBytesRead` the page
                // cannot be served whole: it stops there and says
                // `SplitRequired`.
                let max_rows = opts.maximum_rows_read.map(|m| m.max(1));
                let scan = self.run(max_rows, cursor, Some(end.clone()), max_bytes)?;
                let continue_cursor = key.encode(&binding, &end);
                journal = continue_cursor.clone();
                let required = !scan.exhausted && (max_rows.is_some() || max_bytes.is_some());
                let status = if required {
                    Some("SplitRequired")
                } else if scan.docs.len() >= SPLIT_FACTOR * num_items {
                    Some("SplitRecommended")
                } else {
                    None
                };
                let split = status.map(|_| {
                    let at = (scan.docs.len() / 2).max(1) - 1;
                    let k = scan.docs.get(at).map_or(&scan.last, |(k, _)| k);
                    key.encode(&binding, k)
                });
                PaginationResult {
                    page: values(scan.docs),
                    is_done: end == far_end,
                    continue_cursor,
                    split_cursor: split,
                    page_status: status,
                }
            }
            None => {
                let limit = opts
                    .maximum_rows_read
                    .map_or(num_items, |m| m.clamp(1, num_items));
                // A page without a fixed end that reaches `maximumBytesRead`
                // simply ends there, as one that reaches `maximumRowsRead`.
                let scan = self.run(Some(limit), cursor, None, max_bytes)?;
                let continue_cursor = key.encode(&binding, &scan.last);
                journal = continue_cursor.clone();
                PaginationResult {
                    page: values(scan.docs),
                    is_done: scan.exhausted,
                    continue_cursor,
                    split_cursor: None,
                    page_status: None,
                }
            }
        };
        self.tx.journal_out = Some(journal);
        Ok(result)
    }

    /// Scans the range in batches, applying filters, until `limit` documents
    /// matched or the range ends — after `cursor` and through `end` (keys of
    /// the range, in scan order), when given. Records exactly the part of the
    /// range it passed. With `max_bytes` it also stops (not exhausted) after
    /// the document that brings the bytes it read to `max_bytes`, filtered
    /// out or not.
    ///
    /// In three steps: [`Query::bounds`] (where to scan), [`Query::scan`]
    /// (what the scan keeps and where it stopped), [`passed`] (what it read).
    fn run(
        &mut self,
        limit: Option<usize>,
        cursor: Option<Vec<u8>>,
        through: Option<Vec<u8>>,
        max_bytes: Option<usize>,
    ) -> Result<Scan> {
        let def = self.tx.table(&self.table)?;
        let full = self.range.interval(&self.table, def, &self.index)?;
        let (start, end) = self.bounds(&full, cursor, through)?;
        if limit == Some(0) {
            // `take(0)` passes no key, so it reads (and records) nothing: a
            // commit anywhere in the range cannot change its empty result.
            return Ok(Scan {
                docs: Vec::new(),
                exhausted: false,
                last: start,
            });
        }
        let found = self.scan(&start, &end, limit, max_bytes)?;
        let (read, last) = passed(self.order, start, end, found.exhausted, found.last_key);
        self.tx.reads.record(read);
        Ok(Scan {
            docs: found.docs,
            exhausted: found.exhausted,
            last,
        })
    }

    /// The keys to scan, `[start, end)`: the range `full`, after `cursor` and
    /// through `through` (keys of the range, in scan order) when given. A key
    /// outside the range is refused: no cursor moves a scan out of its range.
    fn bounds(
        &self,
        full: &KeyInterval,
        cursor: Option<Vec<u8>>,
        through: Option<Vec<u8>>,
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let (mut start, mut end) = (full.start.clone(), full.end.clone());
        let inside = |c: &Vec<u8>| full.start <= *c && *c <= full.end;
        if let Some(c) = cursor {
            if !inside(&c) {
                return Err(Error::invalid(
                    "the pagination cursor belongs to another query",
                ));
            }
            match self.order {
                Order::Asc => start = [c.as_slice(), &[0]].concat().min(full.end.clone()),
                Order::Desc => end = c,
            }
        }
        if let Some(e) = through {
            if !inside(&e) {
                return Err(Error::invalid(
                    "the pagination end cursor belongs to another query",
                ));
            }
            // The page includes the row at `e` itself: it ended there.
            match self.order {
                Order::Asc => end = [e.as_slice(), &[0]].concat().min(full.end.clone()),
                Order::Desc => start = e,
            }
            if start > end {
                // A cursor past its end: an empty page at one point.
                end = start.clone();
            }
        }
        Ok((start, end))
    }

    /// Fetches `[scan_start, scan_end)` in batches, in the query's order,
    /// keeping the documents the filters pass, until `limit` are kept, the
    /// bytes read reach `max_bytes`, or the range ends. Records nothing
    /// unless a read limit fails the query (see [`Query::count_read`]).
    fn scan(
        &mut self,
        scan_start: &[u8],
        scan_end: &[u8],
        limit: Option<usize>,
        max_bytes: Option<usize>,
    ) -> Result<Found> {
        let (mut start, mut end) = (scan_start.to_vec(), scan_end.to_vec());
        let mut out = Vec::new();
        let mut last_key: Option<Vec<u8>> = None;
        let mut exhausted = false;
        let mut bytes = 0usize;
        let mut over_bytes = false;
        while !over_bytes && limit.is_none_or(|n| out.len() < n) {
            if start >= end {
                exhausted = true;
                break;
            }
            // Without filters every fetched document counts toward the limit,
            // so fetch no more than are still wanted (and decoded).
            let want = match limit {
                Some(n) if self.filters.is_empty() => (n - out.len()).min(SCAN_BATCH),
                _ => SCAN_BATCH,
            };
            let want = self.tx.scan_batch(want);
            let batch = self.tx.conn.scan_values(&start, &end, self.order, want)?;
            let fetched = batch.len();
            // Whether the last key passed in this batch is the last kept
            // one (else it is `skipped`, a key the filters left out).
            let mut last_kept = false;
            let mut skipped = None;
            for (key, value) in batch {
                let size = value.size();
                self.count_read(scan_start, scan_end, &key, size)?;
                bytes += size;
                over_bytes = max_bytes.is_some_and(|m| bytes >= m);
                last_kept = self.filters.iter().all(|keep| keep(&value));
                if last_kept {
                    out.push((key, value));
                    if limit.is_some_and(|n| out.len() >= n) {
                        break;
                    }
                } else {
                    skipped = Some(key);
                }
                if over_bytes {
                    break;
                }
            }
            if fetched > 0 {
                let key = match (last_kept, skipped) {
                    (false, Some(key)) => key,
                    _ => out.last().expect("a kept document").0.clone(),
                };
                match self.order {
                    Order::Asc => start = [key.as_slice(), &[0]].concat(),
                    Order::Desc => end = key.clone(),
                }
                last_key = Some(key);
            }
            if !over_bytes && fetched < want && limit.is_none_or(|n| out.len() < n) {
                exhausted = true;
                break;
            }
        }
        Ok(Found {
            docs: out,
            exhausted,
            last_key,
        })
    }

    /// Counts one fetched document (at `key`, of `size` bytes) against the
    /// transaction's read limits. Past them the query fails — and the
    /// failure depends on every key passed so far, this one included:
    /// recorded, a delete there re-runs a live query that failed here, which
    /// may then fit.
    fn count_read(
        &mut self,
        scan_start: &[u8],
        scan_end: &[u8],
        key: &[u8],
        size: usize,
    ) -> Result<()> {
        let tx = &mut *self.tx;
        let counted = tx.count_reads(1).and_then(|()| tx.count_bytes_read(size));
        if counted.is_err() {
            tx.reads.record(match self.order {
                Order::Asc => KeyInterval::new(scan_start.to_vec(), [key, &[0]].concat()),
                Order::Desc => KeyInterval::new(key.to_vec(), scan_end.to_vec()),
            });
        }
        counted
    }
}

/// What [`Query::scan`] kept, whether it ran to the end of its keys, and the
/// last key it passed.
struct Found {
    docs: Vec<(Vec<u8>, Value)>,
    exhausted: bool,
    last_key: Option<Vec<u8>>,
}

/// What a scan of `[start, end)` in `order` read, and the key its cursor
/// names: through its last key when it stopped early, the whole of
/// `[start, end)` — cursor at the far end — when it was exhausted (or
/// passed no key).
fn passed(
    order: Order,
    start: Vec<u8>,
    end: Vec<u8>,
    exhausted: bool,
    last_key: Option<Vec<u8>>,
) -> (KeyInterval, Vec<u8>) {
    match (exhausted, order, last_key) {
        (false, Order::Asc, Some(k)) => (KeyInterval::new(start, [k.as_slice(), &[0]].concat()), k),
        (false, Order::Desc, Some(k)) => (KeyInterval::new(k.clone(), end), k),
        (_, Order::Asc, _) => (KeyInterval::new(start, end.clone()), end),
        (_, Order::Desc, _) => (KeyInterval::new(start.clone(), end), start),
    }
}

fn values(docs: Vec<(Vec<u8>, Value)>) -> Vec<Value> {
    docs.into_iter().map(|(_, v)| v).collect()
}
