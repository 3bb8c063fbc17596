//! The check a server makes before it serves: every stored document of a
//! table the schema declares must satisfy that table's validators.
//!
//! Writes are validated when they happen, so documents can fail the schema
//! only when the schema changed under them — new code with a new required
//! field, a narrowed type — which is what `livebase dev` does on every save.
//! Serving anyway would hand functions documents their types cannot read, so
//! [`check_documents`] reads the whole store from one snapshot (page by page,
//! as an export does) and [`crate::server::serve`] refuses to start on a
//! [`SchemaMismatch`], which names each offending table with its first
//! [`SHOWN_PER_TABLE`] document ids and what is wrong with each. The
//! supervisor of `livebase dev` runs the same check on a new build before it
//! stops the old server (`livebase check-data`), so that the old code keeps
//! serving while the report is shown.
//!
//! Documents of a table the schema no longer declares are not checked: no
//! function can name that table any more.

use std::collections::BTreeMap;
use std::fmt;

use livebase_schema::{DocumentId, Schema};

use crate::error::Result;
use crate::store::{Document, Persistence};

/// The failing documents a report names per table; the rest are counted.
pub const SHOWN_PER_TABLE: usize = 5;

/// Documents read per page of the scan.
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

/// Reads every document from one snapshot and checks those of the tables
/// `schema` declares against their validators. `Ok(Err(mismatch))` when some
/// fail; `Err` when the store could not be read.
pub fn check_documents(
    persistence: &dyn Persistence,
    schema: &Schema,
) -> Result<std::result::Result<(), SchemaMismatch>> {
    let mut conn = persistence.connect()?;
    conn.begin_read()?;
    let mut mismatch = SchemaMismatch::default();
    let mut after: Option<DocumentId> = None;
    let scanned = loop {
        let page = match conn.scan_documents(after.as_ref(), PAGE) {
            Ok(page) => page,
            Err(e) => break Err(e),
        };
        for doc in &page {
            if let Some(table) = schema.get(doc.table()) {
                if let Err(e) = table.validate_document(doc.table(), &doc.fields) {
                    mismatch.record(doc, e.to_string());
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
            _ => break Ok(()),
        }
    };
    conn.end_read()?;
    scanned?;
    Ok(if mismatch.tables.is_empty() {
        Ok(())
    } else {
        Err(mismatch)
    })
}
