//! Stored files' bytes in the database ([`PostgresBlobs`]), so that every
//! node of a cluster serves the same bytes and a failover loses none (the
//! data folder's store, one file per blob, is one machine's).
//!
//! # Layout
//!
//! - `blob_uploads`: an upload in progress and when it last wrote.
//! - `blob_chunks`: its bytes, in chunks of [`CHUNK`] (`upload`, `n`), each
//!   committed as it fills, stored uncompressed (`STORAGE EXTERNAL`: files
//!   are mostly compressed already, and a range is then read without
//!   reading the whole chunk).
//! - `blobs`: a finished blob's address, the upload whose chunks hold it,
//!   its size, and `released`: when its last pin was let go.
//! - `blob_pins`: pins held now, and `blob_clock`, the sequence that orders
//!   pins let go against collectors' marks.
//!
//! Finishing moves an upload to its address in one transaction: its
//! `blob_uploads` row goes and its `blobs` row comes, or, if those bytes
//! are there already, its chunks go. A crash mid-upload leaves an upload
//! row and chunks that [`BlobStore::remove_temporary`] removes once
//! [`ABANDONED`] has passed since it last wrote — not at once, as the data
//! folder's store does, since another node may be uploading right now.
//!
//! # Pins
//!
//! Uploads may run on any node, and the collector on the writer. A pin is a
//! row; letting it go stamps the blob with the next value of `blob_clock`.
//! The collector takes a mark from the same sequence before it looks for
//! rows naming a blob, and removes the blob only if no pin is held and none
//! was let go after the mark. A pin older than [`ABANDONED`] is a crashed
//! node's and no longer holds.

use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use livebase_store::blobs::{
    BlobHash, BlobMark, BlobPin, BlobReader, BlobStore, BlobWriter, StoredBlob,
};
use postgres::Client;
use sha2::{Digest, Sha256};

use crate::{drop_client, off_runtime, PostgresPersistence};

/// Bytes per stored chunk: what an upload holds in memory before it
/// writes, and the most a download fetches at once.
pub const CHUNK: usize = 256 * 1024;

/// How long an upload that writes nothing more, or a pin never let go, is
/// taken for a live one; after that it is a crashed node's leftover.
pub const ABANDONED: std::time::Duration = std::time::Duration::from_secs(3600);

/// The most a download fetches at once and keeps between reads (more if
/// the caller asks for more in one read): a slow client holds this much.
pub const READ_PIECE: usize = 64 * 1024;

/// Connections to the database this store opens at most; a call beyond
/// them waits for one to be free (so many downloads at once never take
/// more of PostgreSQL's connections than this).
pub const MAX_CLIENTS: usize = 8;

/// The tables, made with the engine's others (see `SCHEMA_SQL`).
pub(crate) const BLOBS_SQL: &str = "
CREATE TABLE IF NOT EXISTS blob_uploads (
    upload TEXT PRIMARY KEY,
    touched TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS blob_chunks (
    upload TEXT NOT NULL,
    n INTEGER NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (upload, n)
);
ALTER TABLE blob_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    upload TEXT NOT NULL,
    size BIGINT NOT NULL,
    released BIGINT NOT NULL DEFAULT 0
);
CREATE SEQUENCE IF NOT EXISTS blob_clock;
CREATE TABLE IF NOT EXISTS blob_pins (
    pin TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    pinned_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS blob_pins_by_sha256 ON blob_pins (sha256);
";

/// The blobs of one schema of a PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PostgresBlobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: PostgresPersistence,
    pool: Mutex<Pool>,
    /// Told when a connection is given back or closed.
    freed: Condvar,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Client>,
    /// Connections open, idle or in use.
    open: usize,
}

impl std::fmt::Debug for PostgresBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBlobs")
            .field("store", &self.inner.store)
            .finish()
    }
}

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("PostgreSQL: {e}"))
}

fn random_name() -> String {
    let name: [u8; 16] = rand::random();
    name.iter().map(|b| format!("{b:02x}")).collect()
}

fn abandoned_secs() -> f64 {
    ABANDONED.as_secs_f64()
}

impl PostgresBlobs {
    /// The blobs beside `store`'s documents, in its schema.
    pub fn new(store: &PostgresPersistence) -> PostgresBlobs {
        PostgresBlobs {
            inner: Arc::new(Inner {
                store: store.clone(),
                pool: Mutex::default(),
                freed: Condvar::new(),
            }),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on a connection (an idle one, a new one, or, when
    /// [`MAX_CLIENTS`] are in use, the next one given back), off any async
    /// runtime; a connection that broke is closed.
    fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
    ) -> io::Result<T> {
        let mut closed = Vec::new();
        let taken = {
            let mut pool = self.pool();
            loop {
                match pool.idle.pop() {
                    Some(c) if !c.is_closed() => break Some(c),
                    Some(c) => {
                        pool.open -= 1;
                        closed.push(c);
                    }
                    None if pool.open < MAX_CLIENTS => {
                        pool.open += 1;
                        break None;
                    }
                    None => {
                        pool = self
                            .inner
                            .freed
                            .wait(pool)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                }
            }
        };
        for c in closed {
            drop_client(Some(c));
        }
        let mut client = match taken {
            Some(c) => c,
            None => match self.inner.store.client() {
                Ok(c) => c,
                Err(e) => {
                    self.pool().open -= 1;
                    self.inner.freed.notify_one();
                    return Err(io_error(e));
                }
            },
        };
        let done = off_runtime(|| f(&mut client));
        let broken = if client.is_closed() {
            self.pool().open -= 1;
            Some(client)
        } else {
            self.pool().idle.push(client);
            None
        };
        self.inner.freed.notify_one();
        drop_client(broken);
        done.map_err(io_error)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(pool) = self.pool.get_mut() {
            for client in pool.idle.drain(..) {
                drop_client(Some(client));
            }
        }
    }
}

impl BlobStore for PostgresBlobs {
    fn begin(&self) -> io::Result<Box<dyn BlobWriter>> {
        let upload = random_name();
        self.with(|c| {
            c.execute("INSERT INTO blob_uploads (upload) VALUES ($1)", &[&upload])
                .map(drop)
        })?;
        Ok(Box::new(PostgresBlobWriter {
            blobs: self.clone(),
            upload,
            pending: Vec::new(),
            chunks: 0,
            hash: Sha256::new(),
            size: 0,
            finished: false,
        }))
    }

    fn read(&self, sha256: &BlobHash, start: u64, end: u64) -> io::Result<Option<BlobReader>> {
        let hex = sha256.as_str();
        let found = self.with(|c| {
            c.query_opt("SELECT upload, size FROM blobs WHERE sha256 = $1", &[&hex])
                .map(|row| row.map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))))
        })?;
        let Some((upload, size)) = found else {
            return Ok(None);
        };
        let end = end.min(u64::try_from(size).unwrap_or(0));
        Ok(Some(Box::new(PostgresBlobReader {
            blobs: self.clone(),
            upload,
            pos: start.min(end),
            end,
            buffer: Vec::new(),
            at: 0,
        })))
    }

    fn delete(&self, sha256: &BlobHash) -> io::Result<()> {
        let hex = sha256.as_str();
        self.with(|c| {
            let mut tx = c.transaction()?;
            if let Some(row) = tx.query_opt(
                "DELETE FROM blobs WHERE sha256 = $1 RETURNING upload",
                &[&hex],
            )? {
                let upload: String = row.get(0);
                tx.execute("DELETE FROM blob_chunks WHERE upload = $1", &[&upload])?;
            }
            tx.commit()
        })
    }

    fn list(&self) -> io::Result<Vec<BlobHash>> {
        let rows = self.with(|c| c.query("SELECT sha256 FROM blobs ORDER BY sha256", &[]))?;
        Ok(rows
            .iter()
            .filter_map(|r| BlobHash::parse(r.get::<_, &str>(0)))
            .collect())
    }

    fn remove_temporary(&self) -> io::Result<usize> {
        let secs = abandoned_secs();
        self.with(|c| {
            let mut tx = c.transaction()?;
            let gone = tx.query(
                "DELETE FROM blob_uploads
                 WHERE touched < clock_timestamp() - make_interval(secs => $1)
                 RETURNING upload",
                &[&secs],
            )?;
            for row in &gone {
                let upload: &str = row.get(0);
                tx.execute("DELETE FROM blob_chunks WHERE upload = $1", &[&upload])?;
            }
            tx.execute(
                "DELETE FROM blob_pins WHERE pinned_at < clock_timestamp() - make_interval(secs => $1)",
                &[&secs],
            )?;
            tx.commit()?;
            Ok(gone.len())
        })
    }

    fn pin(&self, sha256: &BlobHash) -> io::Result<Option<BlobPin>> {
        let (pin, hex) = (random_name(), sha256.as_str());
        self.with(|c| {
            c.execute(
                "INSERT INTO blob_pins (pin, sha256) VALUES ($1, $2)",
                &[&pin, &hex],
            )
        })?;
        Ok(Some(BlobPin(pin)))
    }

    fn unpin(&self, pin: &BlobPin) -> io::Result<()> {
        self.with(|c| {
            c.execute(
                "WITH gone AS (DELETE FROM blob_pins WHERE pin = $1 RETURNING sha256)
                 UPDATE blobs SET released = nextval('blob_clock')
                 FROM gone WHERE blobs.sha256 = gone.sha256",
                &[&pin.0],
            )
            .map(drop)
        })
    }

    fn mark(&self) -> io::Result<Option<BlobMark>> {
        let mark = self.with(|c| c.query_one("SELECT nextval('blob_clock')", &[]))?;
        Ok(Some(BlobMark(mark.get(0))))
    }

    fn delete_unpinned(&self, sha256: &BlobHash, since: Option<BlobMark>) -> io::Result<bool> {
        // Without a mark nothing says which pins came after the look for
        // rows: nothing is removed.
        let Some(BlobMark(since)) = since else {
            return Ok(false);
        };
        let (hex, secs) = (sha256.as_str(), abandoned_secs());
        self.with(|c| {
            let mut tx = c.transaction()?;
            let gone = tx.query_opt(
                "DELETE FROM blobs WHERE sha256 = $1 AND released <= $2
                   AND NOT EXISTS (SELECT 1 FROM blob_pins WHERE sha256 = $1
                       AND pinned_at >= clock_timestamp() - make_interval(secs => $3))
                 RETURNING upload",
                &[&hex, &since, &secs],
            )?;
            if let Some(row) = &gone {
                let upload: &str = row.get(0);
                tx.execute("DELETE FROM blob_chunks WHERE upload = $1", &[&upload])?;
            }
            tx.commit()?;
            Ok(gone.is_some())
        })
    }
}

struct PostgresBlobWriter {
    blobs: PostgresBlobs,
    upload: String,
    /// Bytes not yet in a chunk (less than [`CHUNK`]).
    pending: Vec<u8>,
    /// Chunks written.
    chunks: i32,
    hash: Sha256,
    size: u64,
    finished: bool,
}

impl PostgresBlobWriter {
    /// Writes `bytes` as the next chunk, and notes that the upload lives.
    fn write_chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (upload, n) = (&self.upload, self.chunks);
        let written = self.blobs.with(|c| {
            c.execute(
                "WITH alive AS (UPDATE blob_uploads SET touched = clock_timestamp()
                                WHERE upload = $1 RETURNING upload)
                 INSERT INTO blob_chunks (upload, n, bytes) SELECT upload, $2, $3 FROM alive",
                &[upload, &n, &bytes],
            )
        })?;
        if written == 0 {
            return Err(abandoned(upload));
        }
        self.chunks += 1;
        Ok(())
    }
}

fn abandoned(upload: &str) -> io::Error {
    io::Error::other(format!(
        "upload {upload} was removed as abandoned (nothing written for {}s)",
        ABANDONED.as_secs()
    ))
}

impl BlobWriter for PostgresBlobWriter {
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = (CHUNK - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == CHUNK {
                let full = std::mem::take(&mut self.pending);
                self.write_chunk(&full)?;
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn sha256(&self) -> BlobHash {
        BlobHash::of(self.hash.clone())
    }

    fn finish(mut self: Box<Self>) -> io::Result<StoredBlob> {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.write_chunk(&last)?;
        }
        let sha256 = BlobHash::of(std::mem::take(&mut self.hash));
        let size = i64::try_from(self.size).map_err(io_error)?;
        let (upload, hex) = (self.upload.clone(), sha256.as_str().to_string());
        let moved = self.blobs.with(|c| {
            let mut tx = c.transaction()?;
            let live = tx.execute("DELETE FROM blob_uploads WHERE upload = $1", &[&upload])?;
            if live == 0 {
                return Ok(false);
            }
            let placed = tx.execute(
                "INSERT INTO blobs (sha256, upload, size) VALUES ($1, $2, $3)
                 ON CONFLICT (sha256) DO NOTHING",
                &[&hex, &upload, &size],
            )?;
            if placed == 0 {
                // Those bytes are there already: this copy goes.
                tx.execute("DELETE FROM blob_chunks WHERE upload = $1", &[&upload])?;
            }
            tx.commit()?;
            Ok(true)
        })?;
        self.finished = true;
        if !moved {
            return Err(abandoned(&upload));
        }
        Ok(StoredBlob {
            sha256,
            size: self.size,
        })
    }
}

impl Drop for PostgresBlobWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let upload = &self.upload;
        let removed = self.blobs.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute("DELETE FROM blob_chunks WHERE upload = $1", &[upload])?;
            tx.execute("DELETE FROM blob_uploads WHERE upload = $1", &[upload])?;
            tx.commit()
        });
        if let Err(e) = removed {
            // Left for `remove_temporary` once it is abandoned.
            tracing::warn!(target: "livebase::storage", upload = %upload, "removing an unfinished upload: {e}");
        }
    }
}

struct PostgresBlobReader {
    blobs: PostgresBlobs,
    upload: String,
    /// The next byte of the blob to fetch, and where to stop.
    pos: u64,
    end: u64,
    /// Fetched bytes not yet read, from `at`.
    buffer: Vec<u8>,
    at: usize,
}

impl Read for PostgresBlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buffer.len() {
            if self.pos >= self.end || out.is_empty() {
                return Ok(0);
            }
            let chunk = CHUNK as u64;
            let n = i32::try_from(self.pos / chunk).map_err(io_error)?;
            let offset = self.pos % chunk;
            let want = out.len().max(READ_PIECE) as u64;
            let len = (chunk - offset).min(self.end - self.pos).min(want);
            // `substring` counts from 1.
            let (from, count) = (
                i32::try_from(offset + 1).map_err(io_error)?,
                i32::try_from(len).map_err(io_error)?,
            );
            let upload = &self.upload;
            let row = self.blobs.with(|c| {
                c.query_opt(
                    "SELECT substring(bytes FROM $3 FOR $4) FROM blob_chunks
                     WHERE upload = $1 AND n = $2",
                    &[upload, &n, &from, &count],
                )
            })?;
            let bytes: Vec<u8> = row
                .ok_or_else(|| {
                    io::Error::other(format!("chunk {n} of upload {upload} is missing"))
                })?
                .get(0);
            if bytes.len() as u64 != len {
                return Err(io::Error::other(format!(
                    "chunk {n} of upload {upload} is shorter than its blob says"
                )));
            }
            self.pos += len;
            self.buffer = bytes;
            self.at = 0;
        }
        let n = out.len().min(self.buffer.len() - self.at);
        out[..n].copy_from_slice(&self.buffer[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
