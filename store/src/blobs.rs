//! Where a stored file's bytes live: a [`BlobStore`], content-addressed by
//! SHA-256. The runtime's data-folder store keeps each blob as one file
//! under `<data>/files/`; the PostgreSQL engine keeps them in chunks in its
//! database (`livebase_store_postgres::PostgresBlobs`), so that every node of
//! a cluster reads the same bytes and a failover loses none.
//!
//! A blob is written in two steps so that a crash never leaves a half blob
//! under a real address: [`BlobStore::begin`] gives a [`BlobWriter`] under a
//! temporary name, and [`BlobWriter::finish`] makes it durable and only then
//! puts it at its address (the hash of what was written). A writer dropped
//! before `finish` — an upload over the size limit, a client that went away
//! — removes what it wrote. What a crash left half written is removed by
//! [`BlobStore::remove_temporary`] when the server starts.
//!
//! What *exists* is decided by the store's transaction, not here: a blob
//! without a `_storage` row is garbage, and the runtime's collector removes
//! it. An upload of bytes the collector is about to remove must not lose
//! them: the runtime *pins* the hash from before the blob is finished until
//! its row committed, and removes a blob only if no pin held it since the
//! collector looked for rows. A store that one process opens leaves pins to
//! that process (the defaults below do nothing); a store shared between
//! processes keeps them itself ([`BlobStore::pin`], [`BlobStore::mark`],
//! [`BlobStore::delete_unpinned`]).

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// A blob's address: the lowercase hex SHA-256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(String);

impl BlobHash {
    /// The address `hex` names, if it is 64 lowercase hex digits.
    pub fn parse(hex: &str) -> Option<BlobHash> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| BlobHash(hex.to_string()))
    }

    /// The address of the bytes `digest` has taken in.
    pub fn of(digest: Sha256) -> BlobHash {
        BlobHash(
            digest
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BlobHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob that is complete and at its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub sha256: BlobHash,
    pub size: u64,
}

/// Bytes of a blob being read: a part of it, or all.
pub type BlobReader = Box<dyn Read + Send>;

/// A pin a shared store handed out ([`BlobStore::pin`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobPin(pub String);

/// A moment in a shared store's own time ([`BlobStore::mark`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobMark(pub i64);

/// Where blobs live. Its calls block (files, or a database): async code
/// runs them on a blocking thread.
pub trait BlobStore: Send + Sync + 'static {
    /// Starts writing a new blob under a temporary name.
    fn begin(&self) -> io::Result<Box<dyn BlobWriter>>;
    /// The bytes `start..end` of blob `sha256` (clamped to its size), or
    /// `None` if there is no such blob.
    fn read(&self, sha256: &BlobHash, start: u64, end: u64) -> io::Result<Option<BlobReader>>;
    /// Removes blob `sha256`; removing a missing blob is not an error.
    fn delete(&self, sha256: &BlobHash) -> io::Result<()>;
    /// Every blob's address (to find blobs no row names, after a crash).
    fn list(&self) -> io::Result<Vec<BlobHash>>;
    /// Removes blobs left half written by a crash; returns how many.
    fn remove_temporary(&self) -> io::Result<usize>;

    /// Pins `sha256` for another process's collector to see, until
    /// [`BlobStore::unpin`]. `None`: this store is one process's, which
    /// keeps its pins itself.
    fn pin(&self, _sha256: &BlobHash) -> io::Result<Option<BlobPin>> {
        Ok(None)
    }
    /// Lets go of `pin`.
    fn unpin(&self, _pin: &BlobPin) -> io::Result<()> {
        Ok(())
    }
    /// Now, in the store's time, taken before the collector looks for rows
    /// naming a blob; `None` for a store one process opens.
    fn mark(&self) -> io::Result<Option<BlobMark>> {
        Ok(None)
    }
    /// Removes blob `sha256` unless a pin held it at any moment since
    /// `since` (so an upload that committed its row after the collector
    /// looked keeps its bytes); whether it was removed. A store one
    /// process opens removes it.
    fn delete_unpinned(&self, sha256: &BlobHash, _since: Option<BlobMark>) -> io::Result<bool> {
        self.delete(sha256).map(|()| true)
    }
}

/// A blob being written. Dropped without [`BlobWriter::finish`], it leaves
/// nothing behind.
pub trait BlobWriter: Send {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Bytes written so far.
    fn size(&self) -> u64;
    /// The address of the bytes written so far (where
    /// [`BlobWriter::finish`] will put them).
    fn sha256(&self) -> BlobHash;
    /// Makes the bytes durable and moves them to their address. A blob with
    /// the same bytes may already be there: then it is kept, and this one
    /// is dropped.
    fn finish(self: Box<Self>) -> io::Result<StoredBlob>;
}

/// The conformance suite every [`BlobStore`] must pass, as the engines pass
/// theirs ([`crate::conformance`]): run it against a fresh, empty store.
#[cfg(feature = "conformance")]
pub fn conformance(store: &dyn BlobStore) {
    fn read_all(store: &dyn BlobStore, hash: &BlobHash, start: u64, end: u64) -> Option<Vec<u8>> {
        let mut reader = store.read(hash, start, end).unwrap()?;
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        Some(bytes)
    }

    assert!(store.list().unwrap().is_empty());

    // Written in parts, addressed by the hash of the whole.
    let mut w = store.begin().unwrap();
    w.write(b"hello ").unwrap();
    w.write(b"world").unwrap();
    assert_eq!(w.size(), 11);
    let expected = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    assert_eq!(w.sha256().as_str(), expected);
    // Not there before it is finished.
    assert!(store.list().unwrap().is_empty());
    let blob = w.finish().unwrap();
    assert_eq!(blob.sha256.as_str(), expected);
    assert_eq!(blob.size, 11);
    assert_eq!(store.list().unwrap(), vec![blob.sha256.clone()]);

    // Ranges, clamped to the blob's end.
    let all = read_all(store, &blob.sha256, 0, u64::MAX);
    assert_eq!(all.as_deref(), Some(&b"hello world"[..]));
    let part = read_all(store, &blob.sha256, 6, 11);
    assert_eq!(part.as_deref(), Some(&b"world"[..]));
    let past = read_all(store, &blob.sha256, 6, 100);
    assert_eq!(past.as_deref(), Some(&b"world"[..]));

    // The same bytes again: one blob.
    let mut again = store.begin().unwrap();
    again.write(b"hello world").unwrap();
    assert_eq!(again.finish().unwrap(), blob);
    assert_eq!(store.list().unwrap().len(), 1);

    // A writer dropped unfinished leaves nothing.
    let mut dropped = store.begin().unwrap();
    dropped.write(b"half").unwrap();
    let half = dropped.sha256();
    drop(dropped);
    assert!(read_all(store, &half, 0, 4).is_none());
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(store.remove_temporary().unwrap(), 0);

    // A blob of several megabytes, written in uneven parts, reads back
    // whole and in ranges that cross whatever units the store keeps.
    let big: Vec<u8> = (0..3_500_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let mut w = store.begin().unwrap();
    for part in big.chunks(70_001) {
        w.write(part).unwrap();
    }
    let stored = w.finish().unwrap();
    assert_eq!(stored.size, big.len() as u64);
    let whole = read_all(store, &stored.sha256, 0, u64::MAX).unwrap();
    assert!(whole == big, "a big blob reads back whole");
    for (start, end) in [
        (0, 1),
        (1_048_575, 1_048_577),
        (999_999, 3_000_001),
        (3_499_990, 4_000_000),
    ] {
        let got = read_all(store, &stored.sha256, start, end).unwrap();
        let end = end.min(big.len() as u64);
        assert!(
            got == big[start as usize..end as usize],
            "bytes {start}..{end}"
        );
    }
    assert_eq!(
        read_all(store, &stored.sha256, 4_000_000, 4_000_010).as_deref(),
        Some(&b""[..])
    );
    store.delete(&stored.sha256).unwrap();

    // Deleted, and deleting again is no error.
    store.delete(&blob.sha256).unwrap();
    assert!(read_all(store, &blob.sha256, 0, 11).is_none());
    store.delete(&blob.sha256).unwrap();
    assert!(store.list().unwrap().is_empty());

    // Removed unless pinned: with no pin since the mark, it goes.
    let mut w = store.begin().unwrap();
    w.write(b"collected").unwrap();
    let collected = w.finish().unwrap();
    let mark = store.mark().unwrap();
    assert!(store.delete_unpinned(&collected.sha256, mark).unwrap());
    assert!(read_all(store, &collected.sha256, 0, 9).is_none());

    // An empty blob is a blob.
    let empty = store.begin().unwrap().finish().unwrap();
    assert_eq!(empty.size, 0);
    assert_eq!(
        read_all(store, &empty.sha256, 0, 0).as_deref(),
        Some(&b""[..])
    );
}

/// What a store shared between processes must add: pins that hold off
/// another process's collector ([`BlobStore::pin`]), for every moment since
/// its mark. Run against a fresh, empty store.
#[cfg(feature = "conformance")]
pub fn shared_conformance(store: &dyn BlobStore) {
    let finished = |bytes: &[u8]| {
        let mut w = store.begin().unwrap();
        w.write(bytes).unwrap();
        w.finish().unwrap().sha256
    };
    let hash = finished(b"pinned");

    // Without a mark nothing says which pins came after the look: kept.
    assert!(!store.delete_unpinned(&hash, None).unwrap());

    // Held now: not removed.
    let mark = store.mark().unwrap();
    assert!(mark.is_some(), "a shared store has a time of its own");
    let pin = store.pin(&hash).unwrap().expect("a shared store pins");
    assert!(!store.delete_unpinned(&hash, mark).unwrap());
    assert_eq!(store.list().unwrap(), vec![hash.clone()]);

    // Let go after the mark: the upload may have committed its row after
    // the collector looked, so the bytes stay.
    store.unpin(&pin).unwrap();
    assert!(!store.delete_unpinned(&hash, mark).unwrap());
    assert_eq!(store.list().unwrap(), vec![hash.clone()]);

    // Let go before a later mark: its row, if any, was there to be seen.
    let later = store.mark().unwrap();
    assert!(store.delete_unpinned(&hash, later).unwrap());
    assert!(store.list().unwrap().is_empty());

    // Two pins of one hash: held until both let go.
    let hash = finished(b"twice");
    let (one, two) = (
        store.pin(&hash).unwrap().unwrap(),
        store.pin(&hash).unwrap().unwrap(),
    );
    store.unpin(&one).unwrap();
    let mark = store.mark().unwrap();
    assert!(!store.delete_unpinned(&hash, mark).unwrap());
    store.unpin(&two).unwrap();
    let mark = store.mark().unwrap();
    assert!(store.delete_unpinned(&hash, mark).unwrap());
    assert!(store.list().unwrap().is_empty());
}

/// Copies into `to` every blob of `from` that `to` lacks (a deployment's
/// files moving to a store every node shares); how many it copied. A blob
/// whose bytes no longer hash to its address is not copied, and named in
/// the error.
pub fn copy_missing(from: &dyn BlobStore, to: &dyn BlobStore) -> io::Result<usize> {
    let there: std::collections::BTreeSet<BlobHash> = to.list()?.into_iter().collect();
    let mut copied = 0;
    for hash in from.list()? {
        if there.contains(&hash) {
            continue;
        }
        let Some(mut reader) = from.read(&hash, 0, u64::MAX)? else {
            continue;
        };
        let mut writer = to.begin()?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n])?;
        }
        if writer.sha256() != hash {
            return Err(io::Error::other(format!(
                "blob {hash} no longer holds the bytes it is named after (they hash to {}): \
                 not copied",
                writer.sha256()
            )));
        }
        writer.finish()?;
        copied += 1;
    }
    Ok(copied)
}
