//! The check a server makes before it serves: every stored document of a
//! table the schema declares must satisfy that table's validators.
//!
//! Writes are validated when they happen, so documents can fail the schema
//! only when the schema changed under them — new code with a new required
//! field, a narrowed type — which is what `livebase dev` does on every save.
//! Serving anyway would hand functions documents their types cannot read, so
//! [`check_documents`] reads the tables' documents from one snapshot, page by
//! page: all of them in one pass when every table is to be checked, else
//! each such table through its `by_id` index, the others not read; and
//! [`crate::server::serve`] refuses to start on a [`SchemaMismatch`], which
//! names each offending table with its first [`SHOWN_PER_TABLE`] document
//! ids and what is wrong with each. The
//! supervisor of `livebase dev` runs the same check on a new build before it
//! stops the old server (`livebase check-data`), so that the old code keeps
//! serving while the report is shown.
//!
//! Documents of a table the schema no longer declares are not checked: no
//! function can name that table any more.
//!
//! Nor are the documents of a table whose definition is the one they were
//! last checked against. A server that passed the check records each table's
//! [`fingerprint`] in `_schema_checks` before it serves ([`record`]), and
//! every write it then makes is validated against those same definitions, so
//! a restart with an unchanged schema reads nothing, and one that changed
//! one table reads only for that one: the scan is O(data) once per schema
//! change, not per start. The fingerprint covers the table's validators and
//! this livebase's version (whose validation the documents passed). A
//! server that is the store's sole writer records at start. Of several
//! nodes, which may run different code during a deploy, only the writer
//! records, and only what its own code makes true: on taking the lease it
//! first deletes every record that is not its own fingerprint
//! ([`forget_others`]) before it commits anything else, then checks the
//! tables left without one in the background and records them
//! ([`crate::server`]'s `take_over`). So a record says the documents
//! satisfied that definition when checked, and every writer since wrote
//! with it; a node starting with another schema reads those tables.
//! `livebase check-data` only reads. An older livebase, which knows nothing of `_schema_checks`,
//! leaves the records as they were: after running one with another schema
//! on the same data, delete the table's `_schema_checks` rows (or all) so
//! that the next start reads everything again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use livebase_schema::key::prefix_end;
use livebase_schema::{obj, DocumentId, Schema, TableDefinition, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{index_prefix, Document, Order, Persistence, StoreConnection};
use crate::system::{CHECKED_FINGERPRINT, CHECKED_TABLE, SCHEMA_CHECKS};
use crate::transaction::Transaction;

/// The failing documents a report names per table; the rest are counted.
pub const SHOWN_PER_TABLE: usize = 5;

/// Documents read per page of a table's scan.
const PAGE: usize = 500;

/// Documents that do not satisfy the schema, per table (in name order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaMismatch {
    tables: BTreeMap<String, TableFailures>,
}

/// One table's failures: the first few with the reason, and how many in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableFailures {
    /// The first [`SHOWN_PER_TABLE`] failing documents (in id order) and
    /// what is wrong with each (`todos.text: expected a string, got 3`).
    pub shown: Vec<(DocumentId, String)>,
    /// Every failing document of the table.
    pub total: usize,
}

impl SchemaMismatch {
    /// The offending tables, in name order.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableFailures)> {
        self.tables.iter().map(|(name, f)| (name.as_str(), f))
    }

    fn record(&mut self, doc: &Document, reason: String) {
        let failures = self.tables.entry(doc.table().to_string()).or_default();
        failures.total += 1;
        if failures.shown.len() < SHOWN_PER_TABLE {
            failures.shown.push((doc.id.clone(), reason));
        }
    }
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let documents: usize = self.tables.values().map(|t| t.total).sum();
        write!(
            f,
            "{documents} stored document{} do{} not satisfy the schema:",
            if documents == 1 { "" } else { "s" },
            if documents == 1 { "es" } else { "" },
        )?;
        for (table, failures) in &self.tables {
            write!(f, "\n  table {table}: {} document(s)", failures.total)?;
            for (id, reason) in &failures.shown {
                write!(f, "\n    {id}: {reason}")?;
            }
            let hidden = failures.total - failures.shown.len();
            if hidden > 0 {
                write!(f, "\n    … and {hidden} more")?;
            }
        }
        write!(
            f,
            "\nchange the schema to accept them, or change the documents with the code that accepts them first"
        )
    }
}

impl std::error::Error for SchemaMismatch {}

/// What a check that passed did: the tables it read, each with its
/// [`fingerprint`] (those whose definitions were not the ones last checked),
/// and how many documents it read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub tables: Vec<(String, String)>,
    pub documents: usize,
}

/// A digest of what a document of `table` must satisfy under `definition`,
/// as this build of livebase validates it: equal digests, equal verdicts.
pub fn fingerprint(table: &str, definition: &TableDefinition) -> String {
    let mut digest = Sha256::new();
    digest.update(env!("CARGO_PKG_VERSION"));
    digest.update([0]);
    digest.update(table);
    digest.update([0]);
    digest.update(format!("{:?}", definition.fields()));
    digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks, from one snapshot, the stored documents of the tables `schema`
/// declares whose definitions are not the ones they were last checked
/// against (see the module's comment); when there are none, reads no
/// document. `Ok(Err(mismatch))` when some fail; `Err` when the store could
/// not be read.
pub fn check_documents(
    persistence: &dyn Persistence,
    schema: &Schema,
) -> Result<std::result::Result<Checked, SchemaMismatch>> {
    let mut conn = persistence.connect()?;
    conn.begin_read()?;
    let checked = checked_on(conn.as_mut(), schema);
    conn.end_read()?;
    checked
}

fn checked_on(
    conn: &mut dyn StoreConnection,
    schema: &Schema,
) -> Result<std::result::Result<Checked, SchemaMismatch>> {
    let before = recorded(conn)?;
    let tables: Vec<(String, String)> = schema
        .tables()
        .map(|(name, def)| (name.to_string(), fingerprint(name, def)))
        .filter(|(name, print)| before.get(name) != Some(print))
        .collect();
    let mut checked = Checked {
        tables,
        documents: 0,
    };
    if checked.tables.is_empty() {
        return Ok(Ok(checked));
    }
    let mut mismatch = SchemaMismatch::default();
    if checked.tables.len() == schema.tables().count() {
        // Every table (a first start): one pass over the documents.
        let mut after: Option<DocumentId> = None;
        loop {
            let page = conn.scan_documents(after.as_ref(), PAGE)?;
            checked.documents += page.len();
            for doc in &page {
                if let Some(table) = schema.get(doc.table()) {
                    if let Err(e) = table.validate_document(doc.table(), &doc.fields) {
                        mismatch.record(doc, e.to_string());
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                _ => break,
            }
        }
    } else {
        // Some tables: each through its `by_id` index, the others' documents
        // not read.
        for (name, _) in &checked.tables {
            let Some(table) = schema.get(name) else {
                continue;
            };
            let prefix = index_prefix(name, "by_id");
            let end =
                prefix_end(&prefix).ok_or_else(|| Error::internal("an index prefix has no end"))?;
            let mut start = prefix;
            loop {
                let page = conn.scan(&start, &end, Order::Asc, PAGE)?;
                checked.documents += page.len();
                for (_, doc) in &page {
                    if let Err(e) = table.validate_document(name, &doc.fields) {
                        mismatch.record(doc, e.to_string());
                    }
                }
                match page.last() {
                    Some((key, _)) if page.len() == PAGE => {
                        // The first key after it.
                        start = key.clone();
                        start.push(0);
                    }
                    _ => break,
                }
            }
        }
    }
    Ok(if mismatch.tables.is_empty() {
        Ok(checked)
    } else {
        Err(mismatch)
    })
}

/// Each table's fingerprint as `_schema_checks` records it.
fn recorded(conn: &mut dyn StoreConnection) -> Result<HashMap<String, String>> {
    let prefix = index_prefix(SCHEMA_CHECKS, "by_id");
    let end = prefix_end(&prefix).ok_or_else(|| Error::internal("an index prefix has no end"))?;
    let rows = conn.scan(&prefix, &end, Order::Asc, MAX_RECORDS)?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, doc)| {
            let table = doc.fields.get(CHECKED_TABLE)?.as_str()?.to_string();
            let print = doc.fields.get(CHECKED_FINGERPRINT)?.as_str()?.to_string();
            Some((table, print))
        })
        .collect())
}

/// Records that the documents of `checked`'s tables satisfy the definitions
/// of its fingerprints, replacing what `_schema_checks` said of them.
pub fn record(tx: &mut Transaction, checked: &Checked) -> Result<()> {
    let rows = tx.query(SCHEMA_CHECKS).collect()?;
    for (table, print) in &checked.tables {
        for row in &rows {
            if row.get(CHECKED_TABLE).and_then(Value::as_str) == Some(table) {
                delete_record(tx, row)?;
            }
        }
        tx.insert(
            SCHEMA_CHECKS,
            obj! { CHECKED_TABLE => table.as_str(), CHECKED_FINGERPRINT => print.as_str() },
        )?;
    }
    Ok(())
}

fn delete_record(tx: &mut Transaction, row: &Value) -> Result<()> {
    let id = row
        .get("_id")
        .and_then(Value::as_str)
        .and_then(DocumentId::parse)
        .ok_or_else(|| Error::internal("a _schema_checks row without its id"))?;
    tx.delete(&id)
}

/// Deletes the records of every table whose fingerprint under `schema` is
/// not the recorded one (or that `schema` does not declare): what a writer
/// with this schema commits first, so that no record it did not make says
/// its writes were checked. Returns how many it deleted.
pub fn forget_others(tx: &mut Transaction, schema: &Schema) -> Result<usize> {
    let rows = tx.query(SCHEMA_CHECKS).collect()?;
    let mut forgotten = 0;
    for row in &rows {
        let table = row.get(CHECKED_TABLE).and_then(Value::as_str);
        let print = row.get(CHECKED_FINGERPRINT).and_then(Value::as_str);
        let ours = table
            .and_then(|t| schema.get(t).map(|def| fingerprint(t, def)))
            .is_some_and(|own| Some(own.as_str()) == print);
        if !ours {
            delete_record(tx, row)?;
            forgotten += 1;
        }
    }
    Ok(forgotten)
}

/// Most `_schema_checks` rows read: one per table ever checked.
const MAX_RECORDS: usize = 100_000;
