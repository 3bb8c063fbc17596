//! Backups: [`export`] writes every document of every table — the system
//! tables (users, sessions, scheduled jobs, crons, mutation outcomes…)
//! included — from one read snapshot to a JSON-lines file, and [`import`]
//! loads such a file into an empty store in one write transaction, rebuilding
//! every index entry from the schema. `livebase export` and `livebase import`
//! are these two functions behind a file.
//!
//! The format, version [`FORMAT_VERSION`]: a header line, then one line per
//! document, in id order, then one line per stored file's bytes (per
//! distinct SHA-256 the `_storage` rows name), in hash order:
//!
//! ```text
//! {"format":"livebase-export","version":2,"exportedAt":1718000000000.0,"snapshotTs":1718000000000123456}
//! {"table":"todos","_id":"todos_k3vq0h2m8x1c7rpa","_creationTime":1718000000000.5,"doc":{"text":"…","completed":false,…}}
//! {"blob":"b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9","bytes":"aGVsbG8gd29ybGQ="}
//! ```
//!
//! `doc` holds the user fields in Convex's JSON encoding (int64 as
//! `{"$integer": …}`, bytes as `{"$bytes": …}`), so every value comes back
//! exactly. Index entries are not exported: they are a function of the
//! documents and the schema. A `blob` line holds a file's bytes in standard
//! base64; the import recomputes their SHA-256 and refuses a line whose
//! bytes do not hash to its `blob`, writes them through the [`BlobStore`]
//! (synced, then renamed to their address) before the transaction commits,
//! and removes every blob it wrote if the import fails. In a version 2 file
//! every `_storage` row's bytes must be there, and every blob line must be
//! named by a row; version 1 files (written before files were exported)
//! still import, their `_storage` rows without bytes.
//!
//! **Not in the file: the token secret.** Session tokens are signed with the
//! key in the data folder's `jwt-secret` (or `LIVEBASE_JWT_SECRET`); the
//! sessions themselves are exported, but a token issued before the export
//! is accepted after the import only if that secret moves too — copy the
//! file beside the imported database (or set the same variable). Without it
//! everyone signs in again; nothing else is lost.
//!
//! **Invariant:** an import either loads every line or nothing: any bad line
//! rolls the one transaction back and removes the blobs already written,
//! and the error names the line.
//!
//! An import file is untrusted input: beyond the schema, it is refused for
//! timestamps and creation times more than [`MAX_FUTURE`] past this
//! machine's clock (near `u64::MAX` they would overflow the commit
//! timestamps), password hashes whose argon2 parameters would make a
//! sign-in costly (see [`crate::auth::passwords::check_stored_hash`]), and
//! emails or organization slugs that appear twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use livebase_schema::table::{CREATION_TIME_FIELD, ID_FIELD};
use livebase_schema::{DocumentId, Schema, Timestamp, Value};
use serde_json::{json, Value as Json};

use crate::auth::passwords::check_stored_hash;
use crate::auth::tables::{ORGANIZATIONS, USERS};
use crate::error::Error;
use crate::storage::{BlobHash, BlobStore, STORAGE};
use crate::store::{index_key, Document, Persistence, StoreConnection};
use crate::system::SCHEMA_CHECKS;

/// The `format` of the header line.
pub const FORMAT: &str = "livebase-export";
/// The version of the format this livebase writes (it reads this one and
/// version 1, which had no `blob` lines).
pub const FORMAT_VERSION: u64 = 2;
/// Documents read from the store per round trip while exporting.
const PAGE: usize = 512;
/// How far past this machine's clock an imported `snapshotTs` or
/// `_creationTime` may be: a day covers two machines' clocks disagreeing.
pub const MAX_FUTURE: Duration = Duration::from_secs(24 * 60 * 60);

/// Why an export or an import failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Writing the export (or reading the import) stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store failed underneath.
    #[error("store: {0}")]
    Store(#[from] Error),
    /// The import target already holds documents; an import only goes into an
    /// empty store, so it never merges with (or overwrites) data.
    #[error("the store is not empty (it holds {example} and maybe more); import only into a fresh data folder")]
    NotEmpty {
        /// One document found there.
        example: DocumentId,
    },
    /// A `_storage` row of the export's snapshot names bytes that are not
    /// in the blob store (deleted by a server after the snapshot was taken,
    /// or lost); the export is incomplete and was not finished.
    #[error("the bytes of stored file {sha256} are missing from the blob store; export again")]
    MissingBlob {
        /// The SHA-256 the row names.
        sha256: String,
    },
    /// A line of the import is malformed, names an unknown table, or holds a
    /// document the schema refuses. Nothing was imported.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based; line 1 is the header.
        line: usize,
        message: String,
    },
}

/// A failure of the store's engine is the store failing underneath.
impl From<crate::error::StoreError> for BackupError {
    fn from(e: crate::error::StoreError) -> Self {
        BackupError::Store(e.into())
    }
}

/// What an export or an import covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Documents per table.
    pub tables: BTreeMap<String, usize>,
    /// Distinct stored files' bytes (blob lines) written or loaded.
    pub blobs: usize,
    /// For an export, the snapshot read; for an import, its commit.
    pub ts: Timestamp,
}

impl Summary {
    pub fn documents(&self) -> usize {
        self.tables.values().sum()
    }

    fn count(&mut self, table: &str) {
        *self.tables.entry(table.to_string()).or_default() += 1;
    }
}

/// Writes every document in the store to `out`, read from one snapshot: a
/// server may keep committing meanwhile (SQLite's WAL lets a reader keep its
/// snapshot), and the export is exactly the store as of [`Summary::ts`] —
/// followed by the bytes, read from `blobs`, of every file its `_storage`
/// rows name.
pub fn export(
    persistence: &dyn Persistence,
    blobs: &dyn BlobStore,
    out: &mut dyn Write,
) -> Result<Summary, BackupError> {
    let mut conn = persistence.connect()?;
    let ts = conn.begin_read()?;
    let written = write_snapshot(conn.as_mut(), blobs, ts, out);
    conn.end_read()?;
    written
}

fn write_snapshot(
    conn: &mut dyn StoreConnection,
    blobs: &dyn BlobStore,
    ts: Timestamp,
    out: &mut dyn Write,
) -> Result<Summary, BackupError> {
    let header = json!({
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exportedAt": now_nanos() as f64 / 1e6,
        "snapshotTs": ts.get(),
    });
    writeln!(out, "{header}")?;
    let mut summary = Summary {
        ts,
        ..Summary::default()
    };
    let mut after: Option<DocumentId> = None;
    let mut hashes = BTreeSet::new();
    loop {
        let page = conn.scan_documents(after.as_ref(), PAGE)?;
        for doc in &page {
            // What this store's server last checked against which schema
            // (`schema_check`): not data, and only true of this store.
            if doc.table() == SCHEMA_CHECKS {
                continue;
            }
            if let Some(sha256) = stored_file_hash(doc) {
                hashes.insert(sha256.to_string());
            }
            let line = json!({
                "table": doc.table(),
                ID_FIELD: doc.id.as_str(),
                CREATION_TIME_FIELD: doc.creation_time,
                "doc": Value::Object(doc.fields.clone().into()).to_json(),
            });
            writeln!(out, "{line}")?;
            summary.count(doc.table());
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
            _ => break,
        }
    }
    for sha256 in hashes {
        let missing = || BackupError::MissingBlob {
            sha256: sha256.clone(),
        };
        let hash = BlobHash::parse(&sha256).ok_or_else(missing)?;
        let mut reader = blobs.read(&hash, 0, u64::MAX)?.ok_or_else(missing)?;
        // Streamed through the encoder: a file is never held whole here.
        write!(out, r#"{{"blob":"{hash}","bytes":""#)?;
        {
            let mut encoder = base64::write::EncoderWriter::new(&mut *out, &B64);
            std::io::copy(&mut reader, &mut encoder)?;
            encoder.finish()?;
        }
        writeln!(out, r#""}}"#)?;
        summary.blobs += 1;
    }
    out.flush()?;
    Ok(summary)
}

/// Refuses a store that holds documents, but for the records of a server's
/// schema checks (one that only started on the folder leaves them), which it
/// deletes: the documents imported are checked against the import's schema,
/// not theirs (`schema_check`).
fn forget_schema_checks(
    conn: &mut dyn StoreConnection,
    schema: &Schema,
) -> Result<(), BackupError> {
    let mut checks = Vec::new();
    let mut after: Option<DocumentId> = None;
    loop {
        let page = conn.scan_documents(after.as_ref(), PAGE)?;
        for doc in &page {
            if doc.table() != SCHEMA_CHECKS {
                return Err(BackupError::NotEmpty {
                    example: doc.id.clone(),
                });
            }
        }
        let full = page.len() == PAGE;
        after = page.last().map(|last| last.id.clone());
        checks.extend(page);
        if !full {
            break;
        }
    }
    if let Some(def) = schema.get(SCHEMA_CHECKS) {
        for doc in &checks {
            for index in def.all_indexes() {
                conn.delete_index_entry(&index_key(SCHEMA_CHECKS, index, doc))?;
            }
            conn.delete_document(&doc.id)?;
        }
    }
    Ok(())
}

/// The SHA-256 a `_storage` row names.
fn stored_file_hash(doc: &Document) -> Option<&str> {
    if doc.table() != STORAGE {
        return None;
    }
    doc.fields.get("sha256").and_then(Value::as_str)
}

/// Loads an export into the store, which must hold no document, checking
/// every line against `schema` (the application's, with the system tables)
/// and writing each document with its index entries — all in one write
/// transaction, committed only if every line is good. Files' bytes go to
/// `blobs` before that commit; if the import fails they are removed again.
pub fn import(
    persistence: &dyn Persistence,
    blobs: &dyn BlobStore,
    schema: &Schema,
    input: &mut dyn BufRead,
) -> Result<Summary, BackupError> {
    let mut conn = persistence.connect()?;
    let last_ts = conn.begin_write()?;
    let mut written = Vec::new();
    let result = match load(conn.as_mut(), blobs, &mut written, schema, input, last_ts) {
        Ok(summary) => conn
            .commit(summary.ts)
            .map(|()| summary)
            .map_err(Into::into),
        Err(e) => conn.rollback().map_err(Into::into).and(Err(e)),
    };
    if result.is_err() {
        // No row names these (the store was empty and nothing committed):
        // they are the import's own, and go with it.
        for hash in &written {
            if let Err(e) = blobs.delete(hash) {
                tracing::warn!(target: "livebase::backup", sha256 = %hash, "removing a blob of a failed import: {e}");
            }
        }
    }
    result
}

fn load(
    conn: &mut dyn StoreConnection,
    blobs: &dyn BlobStore,
    written: &mut Vec<BlobHash>,
    schema: &Schema,
    input: &mut dyn BufRead,
    last_ts: Timestamp,
) -> Result<Summary, BackupError> {
    forget_schema_checks(conn, schema)?;
    let mut lines = input.lines().enumerate().map(|(i, line)| {
        let n = i + 1;
        line.map(|text| (n, text)).map_err(|e| BackupError::Line {
            line: n,
            message: format!("cannot be read: {e}"),
        })
    });
    let (_, header) = lines.next().transpose()?.ok_or(BackupError::Line {
        line: 1,
        message: format!("the file is empty; expected the `{FORMAT}` header"),
    })?;
    let horizon_ns = now_nanos().saturating_add(MAX_FUTURE.as_nanos() as u64);
    let (version, snapshot_ts) = parse_header(&header, horizon_ns)
        .map_err(|message| BackupError::Line { line: 1, message })?;

    let mut summary = Summary::default();
    let mut seen: HashMap<DocumentId, usize> = HashMap::new();
    let mut unique: HashMap<(&str, &str, String), usize> = HashMap::new();
    let mut newest_ms: f64 = 0.0;
    // The hashes `_storage` rows name, and the blob lines, each with the
    // line it first appeared on.
    let mut named: BTreeMap<String, usize> = BTreeMap::new();
    let mut loaded: BTreeMap<String, usize> = BTreeMap::new();
    for line in lines {
        let (n, text) = line?;
        if text.trim().is_empty() {
            continue;
        }
        let at = |message: String| BackupError::Line { line: n, message };
        let json: Json =
            serde_json::from_str(&text).map_err(|e| at(format!("not valid JSON: {e}")))?;
        if json.get("blob").is_some() {
            let hash = load_blob(blobs, &json).map_err(|e| match e {
                BlobLineError::Line(message) => at(message),
                BlobLineError::Io(e) => BackupError::Io(e),
            })?;
            if let Some(first) = loaded.insert(hash.to_string(), n) {
                return Err(at(format!("blob {hash} already appeared on line {first}")));
            }
            written.push(hash);
            summary.blobs += 1;
            continue;
        }
        let doc = parse_document(schema, json, horizon_ns as f64 / 1e6).map_err(at)?;
        // Said of the store exported, not of what this import checked.
        if doc.table() == SCHEMA_CHECKS {
            continue;
        }
        if let Some(first) = seen.insert(doc.id.clone(), n) {
            return Err(at(format!(
                "`_id` {} already appeared on line {first}",
                doc.id
            )));
        }
        check_auth_row(&doc).map_err(at)?;
        if let Some((table, field, value)) = unique_field(&doc) {
            if let Some(first) = unique.insert((table, field, value.clone()), n) {
                return Err(at(format!(
                    "{table}.{field} `{value}` already appeared on line {first}"
                )));
            }
        }
        let def = schema
            .get(doc.table())
            .expect("parse_document checked the table");
        conn.put_document(&doc)?;
        for index in def.all_indexes() {
            conn.put_index_entry(&index_key(doc.table(), index, &doc), &doc.id)?;
        }
        if let Some(sha256) = stored_file_hash(&doc) {
            named.entry(sha256.to_string()).or_insert(n);
        }
        newest_ms = newest_ms.max(doc.creation_time);
        summary.count(doc.table());
    }
    if let Some((hash, n)) = loaded.iter().find(|(hash, _)| !named.contains_key(*hash)) {
        return Err(BackupError::Line {
            line: *n,
            message: format!("no `{STORAGE}` row names blob {hash}"),
        });
    }
    // Version 1 exports carried no bytes; from version 2 on, every file's
    // bytes must be in the file.
    if version >= 2 {
        if let Some((hash, n)) = named.iter().find(|(hash, _)| !loaded.contains_key(*hash)) {
            return Err(BackupError::Line {
                line: *n,
                message: format!(
                    "the bytes of this `{STORAGE}` row (blob {hash}) are not in the file"
                ),
            });
        }
    }
    // Commit after everything imported: after the export's snapshot and every
    // creation time in it, so timestamps keep increasing across the move.
    let floor = last_ts
        .max(Timestamp::new(snapshot_ts))
        .max(Timestamp::new((newest_ms * 1e6) as u64));
    summary.ts = floor.next_after(now_nanos());
    Ok(summary)
}

/// A field no two documents of the table may share (compared as the
/// server looks it up): a user's email, an organization's slug.
fn unique_field(doc: &Document) -> Option<(&'static str, &'static str, String)> {
    let (table, field) = match doc.table() {
        USERS => (USERS, "email"),
        ORGANIZATIONS => (ORGANIZATIONS, "slug"),
        _ => return None,
    };
    let value = doc.fields.get(field)?.as_str()?;
    let value = match table {
        USERS => value.to_lowercase(),
        _ => value.to_string(),
    };
    Some((table, field, value))
}

/// A user's password hash must be one sign-in can afford to check.
fn check_auth_row(doc: &Document) -> Result<(), String> {
    if doc.table() != USERS {
        return Ok(());
    }
    let hash = doc
        .fields
        .get("passwordHash")
        .and_then(Value::as_str)
        .unwrap_or_default();
    check_stored_hash(hash).map_err(|e| format!("{USERS}.passwordHash: {e}"))
}

/// Why a blob line was refused.
enum BlobLineError {
    /// The line is wrong (named in the error).
    Line(String),
    /// The blob store failed underneath.
    Io(std::io::Error),
}

impl From<std::io::Error> for BlobLineError {
    fn from(e: std::io::Error) -> Self {
        BlobLineError::Io(e)
    }
}

/// Writes a `{"blob", "bytes"}` line's bytes to `blobs`, if they hash to
/// its `blob`; returns their address. Bytes that do not are dropped with
/// their writer (no file is left).
fn load_blob(blobs: &dyn BlobStore, json: &Json) -> Result<BlobHash, BlobLineError> {
    let bad = |m: String| BlobLineError::Line(m);
    let Json::Object(line) = json else {
        return Err(bad("expected an object {\"blob\", \"bytes\"}".into()));
    };
    if let Some(key) = line
        .keys()
        .find(|k| !["blob", "bytes"].contains(&k.as_str()))
    {
        return Err(bad(format!("unexpected key `{key}` in a blob line")));
    }
    let hash = line
        .get("blob")
        .and_then(Json::as_str)
        .and_then(BlobHash::parse)
        .ok_or_else(|| bad("`blob` is not a SHA-256 (64 lowercase hex digits)".into()))?;
    let bytes = line
        .get("bytes")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("`bytes` is missing or not a string".into()))?;
    let bytes = B64
        .decode(bytes)
        .map_err(|e| bad(format!("`bytes` is not base64: {e}")))?;
    let mut writer = blobs.begin()?;
    writer.write(&bytes)?;
    let actual = writer.sha256();
    if actual != hash {
        return Err(bad(format!(
            "the bytes hash to {actual}, not to their `blob` {hash}: the file is corrupted"
        )));
    }
    Ok(writer.finish()?.sha256)
}

/// Checks the header line; returns the format version and the export's
/// snapshot timestamp, which may not pass `horizon_ns`.
fn parse_header(text: &str, horizon_ns: u64) -> Result<(u64, u64), String> {
    let json: Json = serde_json::from_str(text)
        .map_err(|e| format!("the `{FORMAT}` header is not valid JSON: {e}"))?;
    if json.get("format").and_then(Json::as_str) != Some(FORMAT) {
        return Err(format!(
            "expected the header {{\"format\": \"{FORMAT}\", …}}; is this a livebase export?"
        ));
    }
    let version = match json.get("version").and_then(Json::as_u64) {
        Some(v @ 1..=FORMAT_VERSION) => v,
        other => {
            return Err(format!(
                "format version {} is not supported (this livebase reads versions 1 to {FORMAT_VERSION})",
                other.map_or("(missing)".to_string(), |v| v.to_string())
            ))
        }
    };
    let ts = json
        .get("snapshotTs")
        .and_then(Json::as_u64)
        .ok_or_else(|| "the header has no `snapshotTs` (a whole number)".to_string())?;
    if ts > horizon_ns {
        return Err(format!(
            "`snapshotTs` {ts} is more than {} h past this machine's clock",
            MAX_FUTURE.as_secs() / 3600
        ));
    }
    Ok((version, ts))
}

/// One document line, checked against the schema as an insert would be;
/// its creation time may not pass `horizon_ms`.
fn parse_document(schema: &Schema, json: Json, horizon_ms: f64) -> Result<Document, String> {
    let Json::Object(line) = json else {
        return Err("expected an object {\"table\", \"_id\", \"_creationTime\", \"doc\"}".into());
    };
    if let Some(key) = line
        .keys()
        .find(|k| !["table", ID_FIELD, CREATION_TIME_FIELD, "doc"].contains(&k.as_str()))
    {
        return Err(format!("unexpected key `{key}`"));
    }
    let table = line
        .get("table")
        .and_then(Json::as_str)
        .ok_or("`table` is missing or not a string")?;
    let def = schema
        .get(table)
        .ok_or_else(|| format!("unknown table `{table}` (not in this application's schema)"))?;
    let id = line
        .get(ID_FIELD)
        .and_then(Json::as_str)
        .ok_or("`_id` is missing or not a string")?;
    let id = DocumentId::parse_in(id, table)
        .ok_or_else(|| format!("`_id` `{id}` is not an id of table `{table}`"))?;
    let creation_time = line
        .get(CREATION_TIME_FIELD)
        .and_then(Json::as_f64)
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or("`_creationTime` is missing or not a time in ms")?;
    if creation_time > horizon_ms {
        return Err(format!(
            "`_creationTime` {} is more than {} h past this machine's clock",
            line[CREATION_TIME_FIELD],
            MAX_FUTURE.as_secs() / 3600
        ));
    }
    let doc = line.get("doc").ok_or("`doc` is missing")?;
    let fields = match Value::from_json(doc, "doc").map_err(|e| e.to_string())? {
        Value::Object(fields) => fields,
        other => {
            return Err(format!(
                "`doc` must be an object, not {}",
                other.value_type()
            ))
        }
    };
    if let Some(name) = fields.keys().find(|k| k.starts_with('_')) {
        return Err(format!(
            "doc.{name}: fields starting with `_` are system fields"
        ));
    }
    def.validate_document(table, &fields)
        .map_err(|e| format!("does not match the schema: {e}"))?;
    Value::Object(fields.clone())
        .check_limits(table)
        .map_err(|e| e.to_string())?;
    Ok(Document {
        id,
        creation_time,
        fields: fields.into_fields(),
    })
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use livebase_schema::{define_table, obj, v};

    use super::*;
    use crate::database::Database;
    use crate::storage::{with_storage_tables, DirBlobStore};
    use crate::store::sqlite::SqlitePersistence;
    use crate::transaction::Transaction;

    fn schema() -> Schema {
        Schema::new().table(
            "notes",
            define_table([
                ("text", v::string()),
                ("n", v::int64()),
                ("tag", v::optional(v::string())),
            ])
            .index("by_tag", ["tag"]),
        )
    }

    fn store(dir: &tempfile::TempDir, name: &str) -> Arc<SqlitePersistence> {
        Arc::new(SqlitePersistence::open(dir.path().join(name)).unwrap())
    }

    /// A blob store of its own (these tests' stores hold no files).
    fn scratch_blobs() -> (tempfile::TempDir, DirBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DirBlobStore::open(dir.path()).unwrap();
        (dir, blobs)
    }

    fn export_to_string(p: &dyn Persistence) -> String {
        let (_dir, blobs) = scratch_blobs();
        let mut out = Vec::new();
        export(p, &blobs, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn import_str(p: &dyn Persistence, text: &str) -> Result<Summary, BackupError> {
        let (_dir, blobs) = scratch_blobs();
        import(p, &blobs, &schema(), &mut text.as_bytes())
    }

    /// Every document of the store, through the documents scan.
    fn all(p: &dyn Persistence) -> Vec<Document> {
        let mut c = p.connect().unwrap();
        c.begin_read().unwrap();
        let docs = c.scan_documents(None, usize::MAX >> 1).unwrap();
        c.end_read().unwrap();
        docs
    }

    const HEADER: &str =
        r#"{"format":"livebase-export","version":1,"exportedAt":1.0,"snapshotTs":5}"#;

    fn line_error(e: BackupError) -> (usize, String) {
        match e {
            BackupError::Line { line, message } => (line, message),
            other => panic!("expected a line error, got {other}"),
        }
    }

    #[tokio::test]
    async fn a_round_trip_keeps_ids_times_fields_and_index_order() {
        let dir = tempfile::tempdir().unwrap();
        let source = store(&dir, "a.sqlite3");
        let db = Database::open(source.clone(), schema()).unwrap();
        db.mutate(|tx| {
            // More than one export page, and values JSON alone cannot carry.
            for i in 0..(PAGE as i64 + 10) {
                let tag = ["b", "a", "c"][i as usize % 3];
                tx.insert(
                    "notes",
                    obj! {"text" => format!("n{i}"), "n" => i, "tag" => tag},
                )?;
            }
            tx.insert("notes", obj! {"text" => "big", "n" => i64::MAX})
        })
        .await
        .unwrap();
        let text = export_to_string(source.as_ref());
        assert_eq!(text.lines().count(), 1 + PAGE + 11);

        let target = store(&dir, "b.sqlite3");
        let summary = import_str(target.as_ref(), &text).unwrap();
        assert_eq!(summary.documents(), PAGE + 11);
        assert_eq!(all(target.as_ref()), all(source.as_ref()));
        assert!(summary.ts > db.last_ts().await.unwrap(), "time moves on");

        // The indexes were rebuilt: the same query answers the same.
        let by_tag = |p: Arc<SqlitePersistence>| async move {
            Database::open(p, schema())
                .unwrap()
                .query(|tx: &mut Transaction| {
                    tx.query("notes")
                        .with_index("by_tag", |r| r.eq("tag", "a"))
                        .collect()
                })
                .await
                .unwrap()
                .value
        };
        let expected = by_tag(source).await;
        assert_eq!(expected.len(), (PAGE + 10) / 3);
        assert_eq!(by_tag(target.clone()).await, expected);
        // And the export of the import is the same file, but for its header.
        let again = export_to_string(target.as_ref());
        assert_eq!(
            again.lines().skip(1).collect::<Vec<_>>(),
            text.lines().skip(1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn import_refuses_a_store_that_holds_documents() {
        let dir = tempfile::tempdir().unwrap();
        let p = store(&dir, "db.sqlite3");
        let line = r#"{"table":"notes","_id":"notes_0000000000000000","_creationTime":1,"doc":{"text":"x","n":{"$integer":"AQAAAAAAAAA="}}}"#;
        import_str(p.as_ref(), &format!("{HEADER}\n{line}\n")).unwrap();
        let again = import_str(p.as_ref(), &format!("{HEADER}\n"));
        assert!(
            matches!(again, Err(BackupError::NotEmpty { .. })),
            "{again:?}"
        );
        assert_eq!(all(p.as_ref()).len(), 1);
    }

    #[test]
    fn a_bad_line_is_named_and_nothing_is_imported() {
        let good = r#"{"table":"notes","_id":"notes_0000000000000000","_creationTime":1,"doc":{"text":"x","n":{"$integer":"AQAAAAAAAAA="}}}"#;
        let cases = [
            ("{not json", "not valid JSON"),
            (
                r#"{"table":"ghosts","_id":"ghosts_0000000000000001","_creationTime":1,"doc":{}}"#,
                "unknown table `ghosts`",
            ),
            (
                r#"{"table":"notes","_id":"notes_0000000000000001","_creationTime":1,"doc":{"text":3,"n":{"$integer":"AQAAAAAAAAA="}}}"#,
                "does not match the schema: notes.text",
            ),
            (
                r#"{"table":"notes","_id":"notes_0000000000000001","_creationTime":1,"doc":{"text":"x"}}"#,
                "does not match the schema",
            ),
            (
                r#"{"table":"notes","_id":"todos_0000000000000001","_creationTime":1,"doc":{"text":"x","n":{"$integer":"AQAAAAAAAAA="}}}"#,
                "is not an id of table `notes`",
            ),
            (
                r#"{"table":"notes","_id":"notes_0000000000000001","doc":{"text":"x","n":{"$integer":"AQAAAAAAAAA="}}}"#,
                "`_creationTime` is missing",
            ),
            (
                r#"{"table":"notes","_id":"notes_0000000000000001","_creationTime":1e300,"doc":{"text":"x","n":{"$integer":"AQAAAAAAAAA="}}}"#,
                "`_creationTime` 1e+300 is more than 24 h past",
            ),
            (good, "already appeared on line 2"),
        ];
        for (bad, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let p = store(&dir, "db.sqlite3");
            let e = import_str(p.as_ref(), &format!("{HEADER}\n{good}\n{bad}\n")).unwrap_err();
            let (line, message) = line_error(e);
            assert_eq!(line, 3, "{message}");
            assert!(message.contains(expected), "{bad}: {message}");
            assert_eq!(all(p.as_ref()), vec![], "nothing imported for {bad}");
        }
    }

    #[test]
    fn hostile_times_hashes_and_duplicates_are_named_and_nothing_is_imported() {
        let schema = crate::system::with_system_tables(schema());
        let hash = |params: &str| {
            format!("$argon2id$v=19${params}$gZiV/M1gPc22ElAH/Jh1Hw$CWOrkoo7oJBQ/iyh7uJ0LO2aLEfrHwTWllSAxT0zRno")
        };
        let user = |n: u8, email: &str, params: &str| {
            json!({"table": "users", "_id": format!("users_000000000000000{n}"), "_creationTime": 1.0,
                   "doc": {"email": email, "name": "A", "passwordHash": hash(params)}})
            .to_string()
        };
        let org = |n: u8, slug: &str| {
            json!({"table": "organizations", "_id": format!("organizations_000000000000000{n}"),
                   "_creationTime": 1.0,
                   "doc": {"name": "Acme", "slug": slug, "createdBy": "users_0000000000000001"}})
            .to_string()
        };
        let ours = "m=19456,t=2,p=1";
        let note_at = |t: &str| {
            format!(
                r#"{{"table":"notes","_id":"notes_0000000000000001","_creationTime":{t},"doc":{{"text":"x","n":{{"$integer":"AQAAAAAAAAA="}}}}}}"#
            )
        };
        let good = format!("{}\n{}", user(1, "ada@example.com", ours), org(1, "acme"));
        let cases = [
            (
                note_at("1e300"),
                "`_creationTime` 1e+300 is more than 24 h past",
            ),
            (note_at("18446744073709551615"), "`_creationTime`"),
            (
                user(2, "Ada@Example.com", ours),
                "users.email `ada@example.com` already appeared on line 2",
            ),
            (
                org(2, "acme"),
                "organizations.slug `acme` already appeared on line 3",
            ),
            (
                user(2, "bob@example.com", "m=4194304,t=2,p=1"),
                "users.passwordHash: the argon2 memory cost m=4194304",
            ),
            (
                user(2, "bob@example.com", "m=19456,t=100000,p=1"),
                "users.passwordHash: the argon2 time cost",
            ),
            (
                user(2, "bob@example.com", "m=19456,t=2,p=255"),
                "users.passwordHash: the argon2 parallelism",
            ),
        ];
        for (bad, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let p = store(&dir, "db.sqlite3");
            let text = format!("{HEADER}\n{good}\n{bad}\n");
            let (_blob_dir, blobs) = scratch_blobs();
            let e = import(p.as_ref(), &blobs, &schema, &mut text.as_bytes()).unwrap_err();
            let (line, message) = line_error(e);
            assert_eq!(line, 4, "{message}");
            assert!(message.contains(expected), "{bad}: {message}");
            assert_eq!(all(p.as_ref()), vec![], "nothing imported for {bad}");
        }
        // The same lines without the bad one import.
        let dir = tempfile::tempdir().unwrap();
        let p = store(&dir, "db.sqlite3");
        let text = format!("{HEADER}\n{good}\n");
        let (_blob_dir, blobs) = scratch_blobs();
        import(p.as_ref(), &blobs, &schema, &mut text.as_bytes()).unwrap();
        assert_eq!(all(p.as_ref()).len(), 2);
    }

    #[test]
    fn the_header_is_checked() {
        for (text, expected) in [
            ("", "the file is empty"),
            ("{}", "is this a livebase export?"),
            (
                r#"{"format":"livebase-export","version":3,"snapshotTs":1}"#,
                "version 3 is not supported",
            ),
            (
                r#"{"format":"livebase-export","version":1}"#,
                "no `snapshotTs`",
            ),
            (
                r#"{"format":"livebase-export","version":1,"snapshotTs":18446744073709551615}"#,
                "`snapshotTs` 18446744073709551615 is more than 24 h past",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let p = store(&dir, "db.sqlite3");
            let (line, message) = line_error(import_str(p.as_ref(), text).unwrap_err());
            assert_eq!(line, 1);
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn blob_lines_are_checked_and_a_failed_import_leaves_no_blob() {
        let schema = with_storage_tables(schema());
        let bytes = b"hello world";
        let hash = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
        let row = format!(
            r#"{{"table":"_storage","_id":"_storage_0000000000000001","_creationTime":1.0,"doc":{{"sha256":"{hash}","size":11.0}}}}"#
        );
        let blob = json!({"blob": hash, "bytes": B64.encode(bytes)}).to_string();
        let v1 = HEADER;
        let v2 = HEADER.replace(r#""version":1"#, r#""version":2"#);
        // sha256("")
        let other = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases = [
            // The bytes do not hash to their `blob`.
            (
                format!(
                    "{v2}\n{row}\n{}\n",
                    json!({"blob": hash, "bytes": B64.encode(b"hello worle")})
                ),
                3,
                "not to their `blob`",
            ),
            // A row whose bytes are not in a version 2 file.
            (format!("{v2}\n{row}\n"), 2, "are not in the file"),
            // Bytes no row names (written, then removed with the import).
            (
                format!(
                    "{v2}\n{row}\n{blob}\n{}\n",
                    json!({"blob": other, "bytes": ""})
                ),
                4,
                "no `_storage` row names blob",
            ),
            (
                format!("{v2}\n{row}\n{blob}\n{blob}\n"),
                4,
                "already appeared on line 3",
            ),
            (
                format!("{v2}\n{row}\n{}\n", json!({"blob": hash, "bytes": "!!"})),
                3,
                "not base64",
            ),
        ];
        for (text, line, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let p = store(&dir, "db.sqlite3");
            let blobs = DirBlobStore::open(dir.path()).unwrap();
            let e = import(p.as_ref(), &blobs, &schema, &mut text.as_bytes()).unwrap_err();
            let (at, message) = line_error(e);
            assert_eq!(at, line, "{message}");
            assert!(message.contains(expected), "{text}: {message}");
            assert_eq!(all(p.as_ref()), vec![], "nothing imported: {text}");
            assert_eq!(blobs.list().unwrap(), vec![], "no blob left: {text}");
            assert_eq!(blobs.remove_temporary().unwrap(), 0, "no temporary file");
        }

        // A version 1 file (no bytes in it) still imports, rows alone.
        let dir = tempfile::tempdir().unwrap();
        let p = store(&dir, "db.sqlite3");
        let blobs = DirBlobStore::open(dir.path()).unwrap();
        let text = format!("{v1}\n{row}\n");
        let summary = import(p.as_ref(), &blobs, &schema, &mut text.as_bytes()).unwrap();
        assert_eq!((summary.documents(), summary.blobs), (1, 0));

        // A good version 2 file brings the bytes, and exports them again.
        let dir = tempfile::tempdir().unwrap();
        let p = store(&dir, "db.sqlite3");
        let blobs = DirBlobStore::open(dir.path()).unwrap();
        let text = format!("{v2}\n{row}\n{blob}\n");
        let summary = import(p.as_ref(), &blobs, &schema, &mut text.as_bytes()).unwrap();
        assert_eq!((summary.documents(), summary.blobs), (1, 1));
        let mut read = String::new();
        blobs
            .read(&BlobHash::parse(hash).unwrap(), 0, u64::MAX)
            .unwrap()
            .unwrap()
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read, "hello world");
        let mut out = Vec::new();
        export(p.as_ref(), &blobs, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<Json> = out
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let expected: Vec<Json> = [&row, &blob]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, expected);
    }
}
