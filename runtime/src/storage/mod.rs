//! File storage, modelled on Convex's `ctx.storage`: a stored file is a
//! document of the system table [`STORAGE`] (`sha256`, `size`,
//! `contentType`) — so its id is a document id, and read sets, invalidation
//! and export cover it like any row — whose bytes live in a [`BlobStore`]
//! ([`blobs`]), content-addressed by their SHA-256.
//!
//! - In a mutation, [`StorageWriter::generate_upload_url`] writes a one-time
//!   upload token (its SHA-256 only, in [`STORAGE_UPLOADS`], with its caller
//!   and expiry) in the mutation's transaction and returns
//!   `<public url>/api/storage/upload?token=…` (absolute, as Convex's are:
//!   a page served from another origin `fetch`es it as is); the upload endpoint
//!   (`server/files.rs`) streams the body into the blob store and then, in
//!   one mutation, consumes the token and inserts the `_storage` row.
//! - In queries and mutations, [`StorageReader::get_url`] gives
//!   `<public url>/api/storage/<id>?sig=…`, signed under a key derived from the
//!   deployment's secret ([`UrlKey`]), and `get_metadata` the row.
//! - [`StorageWriter::delete`] removes the row and notes its hash in
//!   [`STORAGE_DELETIONS`] in the same transaction; after the commit the
//!   [`Files`] collector removes the blob if no other row has that hash.
//! - In actions, [`Files::store`] and [`Files::get`] move bytes directly.
//!
//! On a follower of several nodes, whose store is the writer's, a blob is
//! written into the shared store here and only its row is committed by the
//! writer ([`RowsOnWriter`]): an upload's bytes never pass through the
//! writer, and an action's `store` works on any node.
//!
//! **Invariant:** the store's transaction decides what exists. A blob is
//! written (synced, renamed to its address) *before* the row that names it
//! commits, and removed only *after* no committed row names it; a blob whose
//! row never committed (a crash, a refused token) is garbage that the
//! collector removes. The race between removing a blob and a new upload of
//! the same bytes is closed by pins: an upload pins its hash before it moves
//! the blob to its address and unpins after its row committed (or failed),
//! and the collector skips a pinned hash — both under one lock. The data
//! folder's store is opened by one process at a time (`datadir::lock`), so
//! pins in memory suffice there. A store shared between nodes also pins in
//! the store ([`BlobStore::pin`]), and the collector takes the store's mark
//! before it looks for rows and removes a blob only if no pin held it since
//! ([`BlobStore::delete_unpinned`]): an upload on another node that
//! committed its row after the look keeps its bytes.

pub mod blobs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use livebase_schema::{define_table, obj, v, DocumentId, Schema, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, Notify};

pub use blobs::{
    BlobHash, BlobMark, BlobPin, BlobReader, BlobStore, BlobWriter, DirBlobStore, StoredBlob,
};

use crate::database::Database;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::pagination::CursorKey;
use crate::transaction::Transaction;

/// Stored files: `sha256` (hex), `size` (bytes), `contentType` (as
/// uploaded, if given). A file's id is its row's id.
pub const STORAGE: &str = "_storage";

/// The `_storage` table as a type: `Id<StoredFile>` is a stored file's id
/// (Convex's `Id<"_storage">`).
pub enum StoredFile {}

impl livebase_schema::typed::Table for StoredFile {
    const NAME: &'static str = STORAGE;
}
/// Upload tokens not yet used: `tokenHash` (hex SHA-256 of the token in the
/// URL), `userId` of the caller that asked for it (absent: anonymous),
/// `expiresAt` (ms).
pub const STORAGE_UPLOADS: &str = "_storage_uploads";
/// Hashes of deleted files whose blob may now be garbage, for the
/// collector: `sha256`.
pub const STORAGE_DELETIONS: &str = "_storage_deletions";

/// How long an upload URL stays valid.
pub const UPLOAD_URL_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Largest file accepted by the upload endpoint unless
/// `--max-upload-bytes` says otherwise: 20 MiB.
pub const MAX_UPLOAD_BYTES: u64 = 20 << 20;
/// Bytes of the HMAC tag in a file URL's `sig`: 128 bits.
const SIG_LEN: usize = 16;
/// Deleted files' hashes the collector handles per round.
const COLLECT_BATCH: usize = 64;
/// `_storage` rows the start-up sweep reads per transaction.
const SWEEP_BATCH: usize = 1_000;

/// Adds the storage tables to a schema.
pub fn with_storage_tables(schema: Schema) -> Schema {
    schema
        .system_table(
            STORAGE,
            define_table([
                ("sha256", v::string()),
                ("size", v::float64()),
                ("contentType", v::optional(v::string())),
            ])
            .index("by_sha256", ["sha256"]),
        )
        .system_table(
            STORAGE_UPLOADS,
            define_table([
                ("tokenHash", v::string()),
                ("userId", v::optional(v::string())),
                ("expiresAt", v::float64()),
            ])
            .index("by_token", ["tokenHash"])
            .index("by_expiry", ["expiresAt"]),
        )
        .system_table(STORAGE_DELETIONS, define_table([("sha256", v::string())]))
}

/// The key file URLs are signed with: derived from the deployment's key
/// (itself derived from the deployment's secret), so URLs outlive a restart
/// and a URL of one deployment means nothing to another.
pub struct UrlKey([u8; 32]);

impl UrlKey {
    pub fn from_cursor_key(key: &CursorKey) -> UrlKey {
        UrlKey(key.subkey("stored file urls"))
    }

    fn mac(&self, id: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(id.as_bytes());
        mac
    }

    /// The `sig` of file `id`'s URL.
    pub fn sign(&self, id: &str) -> String {
        let tag = self.mac(id).finalize().into_bytes();
        B64.encode(&tag[..SIG_LEN])
    }

    /// Whether `sig` is file `id`'s (compared in constant time).
    pub fn verify(&self, id: &str, sig: &str) -> bool {
        match B64.decode(sig) {
            Ok(tag) if tag.len() == SIG_LEN => self.mac(id).verify_truncated_left(&tag).is_ok(),
            _ => false,
        }
    }

    /// The path that serves file `id`.
    pub fn url(&self, id: &str) -> String {
        format!("/api/storage/{id}?sig={}", self.sign(id))
    }
}

/// The hex SHA-256 an upload token is stored as.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `id` as a stored file's id: `INVALID_ARGUMENT` if it names no `_storage`
/// document.
pub fn storage_id(id: &str) -> Result<DocumentId> {
    DocumentId::parse_in(id, STORAGE)
        .ok_or_else(|| Error::invalid(format!("`{id}` is not a stored file's id")))
}

/// A stored file's metadata as Convex's `getMetadata` returns it.
fn metadata(id: &DocumentId, row: &Value) -> Value {
    let mut meta = obj! {
        "storageId" => id.as_str(),
        "sha256" => row.get("sha256").cloned().unwrap_or(Value::Null),
        "size" => row.get("size").cloned().unwrap_or(Value::Null),
    };
    if let (Value::Object(o), Some(ct)) = (&mut meta, row.get("contentType")) {
        o.insert("contentType".into(), ct.clone());
    }
    meta
}

/// Storage as queries see it: URLs and metadata, each read recorded (a
/// query that asked for a file's URL re-runs when the file is deleted).
pub struct StorageReader<'t, 'a> {
    tx: &'t mut Transaction<'a>,
}

impl<'t, 'a> StorageReader<'t, 'a> {
    pub fn new(tx: &'t mut Transaction<'a>) -> StorageReader<'t, 'a> {
        StorageReader { tx }
    }

    /// A URL serving the file (on the server's public URL, with a signature
    /// that cannot be guessed), or `None` if there is no such file.
    pub fn get_url(&mut self, id: &DocumentId) -> Result<Option<String>> {
        get_url(self.tx, id)
    }

    /// `{storageId, sha256, size, contentType?}`, or `None`.
    pub fn get_metadata(&mut self, id: &DocumentId) -> Result<Option<Value>> {
        get_metadata(self.tx, id)
    }
}

fn checked(id: &DocumentId) -> Result<()> {
    if id.table() == STORAGE {
        Ok(())
    } else {
        Err(Error::invalid(format!("`{id}` is not a stored file's id")))
    }
}

fn get_url(tx: &mut Transaction, id: &DocumentId) -> Result<Option<String>> {
    checked(id)?;
    Ok(tx.get(id)?.map(|_| {
        let path = UrlKey::from_cursor_key(tx.cursor_key()).url(id.as_str());
        absolute(tx, &path)
    }))
}

/// `path` on the server's public origin, if the transaction has one.
fn absolute(tx: &Transaction, path: &str) -> String {
    format!("{}{path}", tx.public_url().unwrap_or(""))
}

/// A server's public URL as `--public-url` takes it: `http(s)://host[:port]`
/// with no path, query, fragment or credentials, returned without a
/// trailing slash. What the upload and file URLs are built on.
pub fn parse_public_url(raw: &str) -> std::result::Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("`{raw}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{raw}` is not an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{raw}` carries credentials"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{raw}` must be an origin only (`https://host[:port]`), without a path, query or fragment"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn get_metadata(tx: &mut Transaction, id: &DocumentId) -> Result<Option<Value>> {
    checked(id)?;
    Ok(tx.get(id)?.map(|row| metadata(id, &row)))
}

/// Storage as mutations see it: a reader's calls, plus upload URLs and
/// deletion, written in the mutation's transaction.
pub struct StorageWriter<'t, 'a> {
    tx: &'t mut Transaction<'a>,
    identity: &'t Identity,
}

impl<'t, 'a> StorageWriter<'t, 'a> {
    pub fn new(tx: &'t mut Transaction<'a>, identity: &'t Identity) -> StorageWriter<'t, 'a> {
        StorageWriter { tx, identity }
    }

    /// See [`StorageReader::get_url`].
    pub fn get_url(&mut self, id: &DocumentId) -> Result<Option<String>> {
        get_url(self.tx, id)
    }

    /// See [`StorageReader::get_metadata`].
    pub fn get_metadata(&mut self, id: &DocumentId) -> Result<Option<Value>> {
        get_metadata(self.tx, id)
    }

    /// A URL the client `POST`s one file to, within
    /// [`UPLOAD_URL_LIFETIME`] and once:
    /// `<public url>/api/storage/upload?token=…`. The
    /// token exists if and only if this mutation commits; only its hash is
    /// stored, with the caller (whose upload budget the upload counts
    /// against).
    pub fn generate_upload_url(&mut self) -> Result<String> {
        let now = self
            .tx
            .commit_ts()
            .ok_or_else(|| Error::internal("only a mutation can generate an upload URL"))?
            .as_millis_f64();
        let token = B64.encode(rand::random::<[u8; 32]>());
        let mut row = obj! {
            "tokenHash" => token_hash(&token),
            "expiresAt" => now + UPLOAD_URL_LIFETIME.as_millis() as f64,
        };
        if let (Value::Object(o), Identity::User { user_id, .. }) = (&mut row, self.identity) {
            o.insert("userId".into(), Value::from(user_id.as_str()));
        }
        self.tx.insert(STORAGE_UPLOADS, row)?;
        Ok(absolute(
            self.tx,
            &format!("/api/storage/upload?token={token}"),
        ))
    }

    /// Deletes the file: its row now, its bytes after the commit (when no
    /// other file has the same bytes). Deleting a file that does not exist
    /// is `NOT_FOUND`.
    pub fn delete(&mut self, id: &DocumentId) -> Result<()> {
        checked(id)?;
        let Some(row) = self.tx.get(id)? else {
            return Err(Error::not_found(format!("there is no stored file {id}")));
        };
        self.tx.delete(id)?;
        let sha256 = row.get("sha256").cloned().unwrap_or(Value::Null);
        self.tx
            .insert(STORAGE_DELETIONS, obj! { "sha256" => sha256 })?;
        Ok(())
    }
}

/// Who asked for an upload URL, as its token row says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploader {
    pub user_id: Option<String>,
}

impl Uploader {
    /// The identity the upload is counted against.
    pub fn identity(&self) -> Identity {
        match &self.user_id {
            Some(user_id) => Identity::User {
                user_id: user_id.clone(),
                session_id: String::new(),
            },
            None => Identity::Anonymous,
        }
    }
}

fn bad_token() -> Error {
    Error::forbidden("the upload URL is not valid: unknown, expired or already used")
}

/// The live token row with hash `hash` at time `now_ms`.
fn find_token(tx: &mut Transaction, hash: &str, now_ms: f64) -> Result<(DocumentId, Uploader)> {
    let row = tx
        .query(STORAGE_UPLOADS)
        .with_index("by_token", |r| r.eq("tokenHash", hash))
        .first()?
        .ok_or_else(bad_token)?;
    let expires = row.get("expiresAt").and_then(Value::as_f64).unwrap_or(0.0);
    if expires <= now_ms {
        return Err(bad_token());
    }
    let id = row
        .get("_id")
        .and_then(Value::as_str)
        .and_then(|s| DocumentId::parse_in(s, STORAGE_UPLOADS))
        .ok_or_else(|| Error::internal("an upload token row without an id"))?;
    let user_id = row
        .get("userId")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((id, Uploader { user_id }))
}

fn io(what: &str, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("{what}: {e}"))
}

/// Where a `_storage` row is committed when this process may not commit:
/// by the writer, another node ([`crate::node::Node`] implements it), which
/// reads the blob from the store both share.
pub trait RowsOnWriter: Send + Sync + 'static {
    /// Whether this process is the writer now (it commits rows itself).
    fn is_writer(&self) -> bool;
    /// Has the writer commit the row of `blob`, already in the shared
    /// store, after it consumed upload token `token` (if any) in the same
    /// transaction ([`Files::commit_stored`]): the new file's id.
    fn commit_file<'a>(
        &'a self,
        blob: &'a StoredBlob,
        content_type: Option<&'a str>,
        token: Option<&'a str>,
    ) -> futures::future::BoxFuture<'a, std::result::Result<DocumentId, NotCommitted>>;
}

/// Why a row the writer was asked to commit ([`RowsOnWriter`]) is not known
/// to be there.
#[derive(Debug)]
pub enum NotCommitted {
    /// Nothing was committed (the writer refused, or was never reached).
    Refused(Error),
    /// The request may have reached the writer, which may yet commit it:
    /// the blob must stay.
    Unknown(Error),
}

/// The files service: the blob store and what keeps it in step with the
/// `_storage` rows (pins, the collector). Cheap to clone.
#[derive(Clone)]
pub struct Files {
    inner: Arc<FilesInner>,
}

struct FilesInner {
    blobs: Arc<dyn BlobStore>,
    db: Database,
    max_upload_bytes: u64,
    /// Hashes of uploads between their blob's rename and their row's
    /// commit, with how many uploads hold each.
    pins: Mutex<HashMap<BlobHash, usize>>,
    /// Held while a pin is taken and while the collector decides about a
    /// blob and removes it (see the module docs).
    gc: tokio::sync::Mutex<()>,
    /// Poked by commits that delete files.
    wake: Notify,
    /// Set on one of several nodes: who commits rows while this one is not
    /// the writer.
    writer: Option<Arc<dyn RowsOnWriter>>,
}

/// A file's bytes and metadata, as an action reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct FileBytes {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub sha256: String,
}

impl Files {
    /// Files over `blobs` and `db`, accepting uploads of at most
    /// `max_upload_bytes`; on one of several nodes, `writer` commits the
    /// rows while this one is not the writer (its `blobs` must be the
    /// store the nodes share). Removes what a crash left half written.
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        db: Database,
        max_upload_bytes: u64,
        writer: Option<Arc<dyn RowsOnWriter>>,
    ) -> Result<Files> {
        let removed = blobs
            .remove_temporary()
            .map_err(|e| io("removing unfinished blobs", e))?;
        if removed > 0 {
            tracing::warn!(target: "livebase::storage", count = removed, "removed blobs a crash left half written");
        }
        Ok(Files {
            inner: Arc::new(FilesInner {
                blobs,
                db,
                max_upload_bytes,
                pins: Mutex::default(),
                gc: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
                writer,
            }),
        })
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.inner.max_upload_bytes
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    /// Checks an upload token before any byte is read: who it belongs to,
    /// or `FORBIDDEN` for a token that is unknown, expired or used.
    pub async fn check_token(&self, token: &str) -> Result<Uploader> {
        let hash = token_hash(token);
        let now = self.inner.db.clock().now_ms();
        self.inner
            .db
            .query(move |tx| find_token(tx, &hash, now).map(|(_, who)| who))
            .await
            .map(|o| o.value)
    }

    /// Starts a blob (on a blocking thread).
    pub async fn begin(&self) -> Result<Box<dyn BlobWriter>> {
        let blobs = self.inner.blobs.clone();
        blocking(move || blobs.begin())
            .await
            .map_err(|e| io("starting a blob", e))
    }

    /// Appends `bytes` to `writer` (on a blocking thread).
    pub async fn write(
        &self,
        mut writer: Box<dyn BlobWriter>,
        bytes: axum::body::Bytes,
    ) -> Result<Box<dyn BlobWriter>> {
        blocking(move || writer.write(&bytes).map(|()| writer))
            .await
            .map_err(|e| io("writing a blob", e))
    }

    /// Finishes `writer` and commits the `_storage` row naming it, after
    /// consuming upload token `token` (if any) in the same transaction — on
    /// a follower, through the writer ([`RowsOnWriter`]). Returns the new
    /// file's id. If the row does not commit, the blob is collected unless
    /// another row names it.
    pub async fn commit(
        &self,
        writer: Box<dyn BlobWriter>,
        content_type: Option<String>,
        token: Option<String>,
    ) -> Result<DocumentId> {
        let sha256 = writer.sha256();
        self.pin(&sha256).await;
        // A store shared with other nodes pins it where their collectors
        // look, too.
        let blobs = self.inner.blobs.clone();
        let hash = sha256.clone();
        let shared_pin = blocking(move || blobs.pin(&hash)).await;
        let (shared_pin, finished) = match shared_pin {
            Ok(pin) => (pin, blocking(move || writer.finish()).await),
            Err(e) => (None, Err(e)),
        };
        let mut collect = true;
        let result = match finished {
            Ok(blob) => match &self.inner.writer {
                Some(writer) if !writer.is_writer() => writer
                    .commit_file(&blob, content_type.as_deref(), token.as_deref())
                    .await
                    .map_err(|e| match e {
                        NotCommitted::Refused(e) => e,
                        NotCommitted::Unknown(e) => {
                            // Left for the writer's sweep of unnamed blobs.
                            collect = false;
                            e
                        }
                    }),
                _ => self.insert_row(blob, content_type, token).await,
            },
            Err(e) => Err(io("storing a blob", e)),
        };
        if let Some(pin) = shared_pin {
            let blobs = self.inner.blobs.clone();
            if let Err(e) = blocking(move || blobs.unpin(&pin)).await {
                // Held until it is stale (see the store): the blob stays
                // until a later sweep, nothing is lost.
                tracing::warn!(target: "livebase::storage", sha256 = %sha256, "letting go of a pin: {e}");
            }
        }
        self.unpin(&sha256);
        if result.is_err() && collect {
            self.collect(&sha256).await;
        }
        result
    }

    /// The writer's end of [`RowsOnWriter::commit_file`]: commits the row
    /// of `blob`, which another node wrote into the shared store and pins
    /// there until this answers, after consuming `token` (if any). A blob
    /// that is not in the store is an error, and nothing is committed.
    pub async fn commit_stored(
        &self,
        blob: StoredBlob,
        content_type: Option<String>,
        token: Option<String>,
    ) -> Result<DocumentId> {
        let blobs = self.inner.blobs.clone();
        let hash = blob.sha256.clone();
        let present = blocking(move || blobs.read(&hash, 0, 0).map(|r| r.is_some()))
            .await
            .map_err(|e| io("looking for a blob", e))?;
        if !present {
            return Err(Error::internal(format!(
                "the bytes of blob {} are not in the store",
                blob.sha256
            )));
        }
        // If the row does not commit, the other node collects the bytes
        // once it has let go of its pin (a collect here would find them
        // pinned by it, and keep them).
        self.insert_row(blob, content_type, token).await
    }

    /// Commits the `_storage` row of `blob`, after consuming `token`.
    async fn insert_row(
        &self,
        blob: StoredBlob,
        content_type: Option<String>,
        token: Option<String>,
    ) -> Result<DocumentId> {
        let mut row = obj! {
            "sha256" => blob.sha256.as_str(),
            "size" => blob.size as f64,
        };
        if let (Value::Object(o), Some(ct)) = (&mut row, content_type) {
            o.insert("contentType".into(), Value::from(ct));
        }
        self.inner
            .db
            .mutate(move |tx| {
                if let Some(token) = &token {
                    Files::consume_token(tx, token)?;
                }
                tx.insert(STORAGE, row)
            })
            .await
            .map(|c| c.value)
    }

    /// Consumes upload token `token` in `tx`: it must be live; it is
    /// deleted, so a second upload with it is refused.
    fn consume_token(tx: &mut Transaction, token: &str) -> Result<()> {
        let now = tx
            .commit_ts()
            .ok_or_else(|| Error::internal("an upload is consumed in a mutation"))?
            .as_millis_f64();
        let (id, _) = find_token(tx, &token_hash(token), now)?;
        tx.delete(&id)
    }

    /// Stores `bytes` as a new file (an action's `ctx.storage.store`).
    pub async fn store(&self, bytes: Vec<u8>, content_type: Option<String>) -> Result<DocumentId> {
        let writer = self.begin().await?;
        let writer = self.write(writer, bytes.into()).await?;
        self.commit(writer, content_type, None).await
    }

    /// A stored file's row, read at the newest snapshot.
    pub async fn row(&self, id: &DocumentId) -> Result<Option<Value>> {
        checked(id)?;
        let id = id.clone();
        self.inner
            .db
            .query(move |tx| tx.get(&id))
            .await
            .map(|o| o.value)
    }

    /// A stored file's bytes (an action's `ctx.storage.get`), or `None`.
    pub async fn get(&self, id: &DocumentId) -> Result<Option<FileBytes>> {
        let Some(row) = self.row(id).await? else {
            return Ok(None);
        };
        let sha256 = row.get("sha256").and_then(Value::as_str).unwrap_or("");
        let Some(hash) = BlobHash::parse(sha256) else {
            return Err(Error::internal(format!("file {id} has no valid sha256")));
        };
        let blobs = self.inner.blobs.clone();
        let bytes = blocking(move || {
            let Some(mut reader) = blobs.read(&hash, 0, u64::MAX)? else {
                return Ok(None);
            };
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes)?;
            Ok(Some(bytes))
        })
        .await
        .map_err(|e| io("reading a blob", e))?;
        let Some(bytes) = bytes else {
            return Err(Error::internal(format!(
                "the bytes of file {id} are missing"
            )));
        };
        Ok(Some(FileBytes {
            bytes,
            content_type: row
                .get("contentType")
                .and_then(Value::as_str)
                .map(str::to_string),
            sha256: sha256.to_string(),
        }))
    }

    async fn pin(&self, sha256: &BlobHash) {
        let _gc = self.inner.gc.lock().await;
        if let Ok(mut pins) = self.inner.pins.lock() {
            *pins.entry(sha256.clone()).or_default() += 1;
        }
    }

    fn unpin(&self, sha256: &BlobHash) {
        if let Ok(mut pins) = self.inner.pins.lock() {
            if let Some(n) = pins.get_mut(sha256) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(sha256);
                }
            }
        }
    }

    fn pinned(&self, sha256: &BlobHash) -> bool {
        self.inner
            .pins
            .lock()
            .map(|p| p.contains_key(sha256))
            .unwrap_or(true)
    }

    /// Removes blob `sha256` if no upload holds it and no committed row
    /// names it. Failures are logged: a blob left behind is collected later.
    pub async fn collect(&self, sha256: &BlobHash) {
        let _gc = self.inner.gc.lock().await;
        if self.pinned(sha256) {
            return;
        }
        // Taken before the rows are looked at: a pin another node held at
        // any moment since keeps the blob (its row may have committed after
        // the look).
        let blobs = self.inner.blobs.clone();
        let mark = match blocking(move || blobs.mark()).await {
            Ok(mark) => mark,
            Err(e) => {
                tracing::warn!(target: "livebase::storage", sha256 = %sha256, "checking a blob: {e}");
                return;
            }
        };
        let hex = sha256.as_str().to_string();
        let named = self
            .inner
            .db
            .query(move |tx| {
                tx.query(STORAGE)
                    .with_index("by_sha256", |r| r.eq("sha256", hex.as_str()))
                    .first()
                    .map(|row| row.is_some())
            })
            .await;
        match named {
            Ok(o) if o.value => {}
            Ok(_) => {
                let blobs = self.inner.blobs.clone();
                let hash = sha256.clone();
                if let Err(e) = blocking(move || blobs.delete_unpinned(&hash, mark)).await {
                    tracing::warn!(target: "livebase::storage", sha256 = %sha256, "removing a blob: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(target: "livebase::storage", sha256 = %sha256, "checking a blob: {e}")
            }
        }
    }

    /// Starts the collector: it removes the blobs of deleted files after
    /// their deletion commits (woken by commits that write
    /// [`STORAGE_DELETIONS`]), and at start blobs no row names (an upload a
    /// crash cut between its blob and its row). Runs until `shutdown`.
    pub async fn start_collector(
        &self,
        mut shutdown: broadcast::Receiver<()>,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let files = self.clone();
        let poke = self.clone();
        self.inner
            .db
            .on_commit(Box::new(move |commit| {
                let deletes = commit.writes.is_everything()
                    || commit
                        .writes
                        .documents()
                        .iter()
                        .any(|w| w.table == STORAGE_DELETIONS);
                if deletes {
                    poke.inner.wake.notify_one();
                }
            }))
            .await?;
        Ok(tokio::spawn(async move {
            tokio::select! {
                _ = files.sweep() => {}
                _ = shutdown.recv() => return,
            }
            let mut purge = tokio::time::interval(UPLOAD_URL_LIFETIME);
            loop {
                tokio::select! {
                    _ = files.collect_deleted() => {}
                    _ = shutdown.recv() => return,
                }
                tokio::select! {
                    _ = files.inner.wake.notified() => {}
                    _ = purge.tick() => {
                        tokio::select! {
                            _ = files.purge_expired_tokens() => {}
                            _ = shutdown.recv() => return,
                        }
                    }
                    _ = shutdown.recv() => return,
                }
            }
        }))
    }

    /// Collects every blob no row names: the blobs' addresses, sorted, are
    /// walked beside the `_storage` rows in `by_sha256` order, read
    /// [`SWEEP_BATCH`] at a time, so a store of many files costs a read per
    /// batch, not a look-up per blob; only an address no row named gets the
    /// careful look of [`Files::collect`] (the rows are read on several
    /// snapshots, so a candidate is only a candidate).
    async fn sweep(&self) {
        let candidates = self.sweep_in_batches(SWEEP_BATCH).await;
        if candidates > 0 {
            tracing::info!(target: "livebase::storage", candidates, "swept blobs no row named");
        }
    }

    /// [`Files::sweep`], reading `batch` rows at a time; how many blobs
    /// were looked at as no row's.
    async fn sweep_in_batches(&self, batch: usize) -> usize {
        let blobs = self.inner.blobs.clone();
        let mut all = match blocking(move || blobs.list()).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(target: "livebase::storage", "listing blobs: {e}");
                return 0;
            }
        };
        all.sort();
        all.dedup();
        // The named addresses read so far and not yet passed, in order;
        // `after` is the last one read.
        let mut named = std::collections::VecDeque::new();
        let (mut after, mut exhausted) = (None::<String>, false);
        let mut unnamed = Vec::new();
        for hash in all {
            loop {
                while named
                    .front()
                    .is_some_and(|h: &String| h.as_str() < hash.as_str())
                {
                    named.pop_front();
                }
                if !named.is_empty() || exhausted {
                    break;
                }
                let from = after.clone();
                let read = self
                    .inner
                    .db
                    .query(move |tx| {
                        tx.query(STORAGE)
                            .with_index("by_sha256", |r| match &from {
                                Some(from) => r.gt("sha256", from.as_str()),
                                None => r,
                            })
                            .take(batch)
                    })
                    .await;
                let rows = match read {
                    Ok(o) => o.value,
                    Err(e) => {
                        tracing::warn!(target: "livebase::storage", "reading stored files: {e}");
                        return 0;
                    }
                };
                exhausted = rows.len() < batch;
                for sha256 in rows
                    .iter()
                    .filter_map(|r| r.get("sha256").and_then(Value::as_str))
                {
                    // Rows of one address past the batch's end are skipped
                    // by the next read (`gt`): one is enough.
                    if named.back().map(String::as_str) != Some(sha256) {
                        named.push_back(sha256.to_string());
                    }
                    after = Some(sha256.to_string());
                }
            }
            if named.front().map(String::as_str) != Some(hash.as_str()) {
                unnamed.push(hash);
            }
        }
        for hash in &unnamed {
            self.collect(hash).await;
        }
        unnamed.len()
    }

    /// Deletes upload tokens past their expiry (a URL asked for and never
    /// used), a batch per transaction.
    async fn purge_expired_tokens(&self) {
        loop {
            let now = self.inner.db.clock().now_ms();
            let purged = self
                .inner
                .db
                .mutate(move |tx| {
                    let expired = tx
                        .query(STORAGE_UPLOADS)
                        .with_index("by_expiry", |r| r.lt("expiresAt", now))
                        .take(COLLECT_BATCH)?;
                    for row in &expired {
                        if let Some(id) = row
                            .get("_id")
                            .and_then(Value::as_str)
                            .and_then(DocumentId::parse)
                        {
                            tx.delete(&id)?;
                        }
                    }
                    Ok(expired.len())
                })
                .await;
            match purged {
                Ok(c) if c.value == COLLECT_BATCH => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(target: "livebase::storage", "purging expired upload tokens: {e}");
                    return;
                }
            }
        }
    }

    /// Handles [`STORAGE_DELETIONS`] until there are none.
    async fn collect_deleted(&self) {
        loop {
            let batch = self
                .inner
                .db
                .query(|tx| tx.query(STORAGE_DELETIONS).take(COLLECT_BATCH))
                .await;
            let rows = match batch {
                Ok(o) => o.value,
                Err(e) => {
                    tracing::warn!(target: "livebase::storage", "reading deleted files: {e}");
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            let mut ids = Vec::new();
            for row in &rows {
                if let Some(hash) = row
                    .get("sha256")
                    .and_then(Value::as_str)
                    .and_then(BlobHash::parse)
                {
                    self.collect(&hash).await;
                }
                if let Some(id) = row
                    .get("_id")
                    .and_then(Value::as_str)
                    .and_then(DocumentId::parse)
                {
                    ids.push(id);
                }
            }
            let done = self
                .inner
                .db
                .mutate(move |tx| ids.iter().try_for_each(|id| tx.delete(id)))
                .await;
            if let Err(e) = done {
                tracing::warn!(target: "livebase::storage", "clearing deleted files: {e}");
                return;
            }
        }
    }
}

/// Runs blocking blob I/O off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("a blob task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqlitePersistence;

    /// Files over a fresh data folder, its database and its blobs.
    fn files_in(dir: &std::path::Path) -> (Files, Database) {
        let store = Arc::new(SqlitePersistence::open(dir.join("db.sqlite3")).unwrap());
        let db = Database::open(store, with_storage_tables(Schema::new())).unwrap();
        let blobs = Arc::new(DirBlobStore::open(dir).unwrap());
        (
            Files::new(blobs, db.clone(), MAX_UPLOAD_BYTES, None).unwrap(),
            db,
        )
    }

    /// Writes a blob of `bytes`; its address.
    fn put(files: &Files, bytes: &[u8]) -> BlobHash {
        let mut writer = files.blobs().begin().unwrap();
        writer.write(bytes).unwrap();
        writer.finish().unwrap().sha256
    }

    #[tokio::test]
    async fn the_sweep_removes_exactly_the_blobs_no_row_names_batch_after_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (files, db) = files_in(dir.path());
        // 120 named blobs, every third named by two or three rows (so rows
        // of one address straddle the batches' ends), and 60 no row names,
        // their addresses interleaved at random with the named ones'.
        let mut named = Vec::new();
        let mut rows = Vec::new();
        for i in 0..120 {
            let hash = put(&files, format!("named {i}").as_bytes());
            for _ in 0..(1 + usize::from(i % 3 == 0) * (1 + i % 2)) {
                rows.push(hash.as_str().to_string());
            }
            named.push(hash);
        }
        let unnamed = |files: &Files| {
            for i in 0..60 {
                put(files, format!("unnamed {i}").as_bytes());
            }
        };
        db.mutate(move |tx| {
            rows.iter().try_for_each(|sha256| {
                tx.insert(STORAGE, obj! { "sha256" => sha256.as_str(), "size" => 1.0 })
                    .map(|_| ())
            })
        })
        .await
        .unwrap();
        let mut want = named.clone();
        want.sort();

        // Batches of 7, 1 and 2 rows, and the real size: each sweep looks
        // at the unnamed blobs only, keeps every named one and removes
        // every unnamed one.
        for batch in [7, 1, 2, SWEEP_BATCH] {
            unnamed(&files);
            assert_eq!(files.blobs().list().unwrap().len(), 180);
            let candidates = files.sweep_in_batches(batch).await;
            assert_eq!(candidates, 60, "blobs looked at, in batches of {batch}");
            let mut left = files.blobs().list().unwrap();
            left.sort();
            assert_eq!(left, want, "after a sweep in batches of {batch}");
        }
    }
}
