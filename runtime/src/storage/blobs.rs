//! Where a stored file's bytes live: a [`BlobStore`], content-addressed by
//! SHA-256. The data folder's store, [`DirBlobStore`], keeps each blob as one
//! file under `<data>/files/`; an engine that shares its store between nodes
//! (PostgreSQL) can keep them elsewhere — chunks in the database — behind the
//! same trait.
//!
//! A blob is written in two steps so that a crash never leaves a half file
//! under a real address: [`BlobStore::begin`] gives a [`BlobWriter`] over a
//! temporary name, and [`BlobWriter::finish`] syncs it and only then moves it
//! to its address (the hash of what was written). A writer dropped before
//! `finish` — an upload over the size limit, a client that went away —
//! removes its temporary file. Temporary files a crash left behind are
//! removed by [`BlobStore::remove_temporary`] when the server starts.
//!
//! What *exists* is decided by the store's transaction, not here: a blob
//! without a `_storage` row is garbage (see [`super::Files`]).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::private_files::{create_private_dir, create_private_file};

/// The folder of the data folder that holds blobs.
pub const FILES_DIR: &str = "files";
/// The folder of [`FILES_DIR`] where blobs are written before they are
/// complete.
const TEMP_DIR: &str = "tmp";

/// A blob's address: the lowercase hex SHA-256 of its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(String);

impl BlobHash {
    /// The address `hex` names, if it is 64 lowercase hex digits.
    pub fn parse(hex: &str) -> Option<BlobHash> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| BlobHash(hex.to_string()))
    }

    fn of(digest: Sha256) -> BlobHash {
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

/// Blobs as files in a folder: `<root>/<first two hex digits>/<sha256>`,
/// written to `<root>/tmp/` first. Folders and files are private
/// ([`crate::private_files`]).
pub struct DirBlobStore {
    root: PathBuf,
}

impl DirBlobStore {
    /// The store of data folder `data_dir`: `<data_dir>/files/`, created if
    /// missing.
    pub fn open(data_dir: &Path) -> io::Result<DirBlobStore> {
        let root = data_dir.join(FILES_DIR);
        create_private_dir(&root.join(TEMP_DIR))?;
        sync_dir(&root)?;
        sync_dir(data_dir)?;
        Ok(DirBlobStore { root })
    }

    fn path(&self, sha256: &BlobHash) -> PathBuf {
        self.root.join(&sha256.0[..2]).join(&sha256.0)
    }
}

/// Syncs a folder, so that a rename or a new entry in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

impl BlobStore for DirBlobStore {
    fn begin(&self) -> io::Result<Box<dyn BlobWriter>> {
        let name: [u8; 16] = rand::random();
        let name: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let temp = self.root.join(TEMP_DIR).join(name);
        let file = create_private_file(&temp)?;
        Ok(Box::new(DirBlobWriter {
            root: self.root.clone(),
            temp,
            file: Some(file),
            hash: Sha256::new(),
            size: 0,
        }))
    }

    fn read(&self, sha256: &BlobHash, start: u64, end: u64) -> io::Result<Option<BlobReader>> {
        let mut file = match File::open(self.path(sha256)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(start))?;
        Ok(Some(Box::new(file.take(end.saturating_sub(start)))))
    }

    fn delete(&self, sha256: &BlobHash) -> io::Result<()> {
        let path = self.path(sha256);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> io::Result<Vec<BlobHash>> {
        let mut found = Vec::new();
        for fan in fs::read_dir(&self.root)? {
            let fan = fan?;
            if fan.file_name() == TEMP_DIR || !fan.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(fan.path())? {
                if let Some(hash) = entry?.file_name().to_str().and_then(BlobHash::parse) {
                    found.push(hash);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn remove_temporary(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join(TEMP_DIR))? {
            fs::remove_file(entry?.path())?;
            removed += 1;
        }
        Ok(removed)
    }
}

struct DirBlobWriter {
    root: PathBuf,
    temp: PathBuf,
    /// `None` once finished (then there is no temporary file to remove).
    file: Option<File>,
    hash: Sha256,
    size: u64,
}

impl BlobWriter for DirBlobWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("finished"))?;
        file.write_all(bytes)?;
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn sha256(&self) -> BlobHash {
        BlobHash::of(self.hash.clone())
    }

    fn finish(mut self: Box<Self>) -> io::Result<StoredBlob> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("finished"))?;
        // The bytes first, then the name: a crash between the two leaves a
        // temporary file (removed at the next start), never a short blob
        // under a real address.
        file.sync_all()?;
        drop(file);
        let sha256 = BlobHash::of(std::mem::take(&mut self.hash));
        let fan = self.root.join(&sha256.0[..2]);
        if !fan.exists() {
            create_private_dir(&fan)?;
            sync_dir(&self.root)?;
        }
        fs::rename(&self.temp, fan.join(&sha256.0))?;
        sync_dir(&fan)?;
        sync_dir(&self.root.join(TEMP_DIR))?;
        Ok(StoredBlob {
            sha256,
            size: self.size,
        })
    }
}

impl Drop for DirBlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            if let Err(e) = fs::remove_file(&self.temp) {
                tracing::warn!(target: "livebase::storage", path = %self.temp.display(), "removing an unfinished blob: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_in(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn a_temporary_file_a_crash_left_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirBlobStore::open(dir.path()).unwrap();
        fs::write(dir.path().join(FILES_DIR).join(TEMP_DIR).join("x"), b"half").unwrap();
        assert_eq!(store.remove_temporary().unwrap(), 1);
        assert!(files_in(&dir.path().join(FILES_DIR)).is_empty());
    }

    #[test]
    fn a_finished_blob_is_at_its_hash_and_reads_back_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirBlobStore::open(dir.path()).unwrap();
        let mut w = store.begin().unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        let blob = w.finish().unwrap();
        // sha256("hello world")
        assert_eq!(
            blob.sha256.as_str(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(blob.size, 11);
        let mut part = String::new();
        store
            .read(&blob.sha256, 6, 11)
            .unwrap()
            .unwrap()
            .read_to_string(&mut part)
            .unwrap();
        assert_eq!(part, "world");
        assert_eq!(store.list().unwrap(), vec![blob.sha256.clone()]);
        store.delete(&blob.sha256).unwrap();
        assert!(store.read(&blob.sha256, 0, 11).unwrap().is_none());
        assert!(files_in(&dir.path().join(FILES_DIR)).is_empty());
    }

    #[test]
    fn a_dropped_writer_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirBlobStore::open(dir.path()).unwrap();
        let mut w = store.begin().unwrap();
        w.write(b"half").unwrap();
        assert_eq!(files_in(&dir.path().join(FILES_DIR)).len(), 1);
        drop(w);
        assert!(files_in(&dir.path().join(FILES_DIR)).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn blobs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = DirBlobStore::open(dir.path()).unwrap();
        let mut w = store.begin().unwrap();
        w.write(b"secret").unwrap();
        let blob = w.finish().unwrap();
        let mode = fs::metadata(store.path(&blob.sha256))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let fan = store.path(&blob.sha256).parent().unwrap().to_path_buf();
        assert_eq!(
            fs::metadata(fan).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
