//! The data folder's [`BlobStore`] (the trait and its types are the store
//! crate's, `livebase_store::blobs`, so that an engine in another crate
//! implements it): [`DirBlobStore`] keeps each blob as one file under
//! `<data>/files/`, written under `files/tmp/`, synced, then renamed to its
//! address. The folder is one process's (`datadir::lock`), so it leaves
//! pins to that process ([`super::Files`]).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use livebase_store::blobs::{
    BlobHash, BlobMark, BlobPin, BlobReader, BlobStore, BlobWriter, StoredBlob,
};

use crate::private_files::{create_private_dir, create_private_file};

/// The folder of the data folder that holds blobs.
pub const FILES_DIR: &str = "files";
/// The folder of [`FILES_DIR`] where blobs are written before they are
/// complete.
const TEMP_DIR: &str = "tmp";

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
        self.root.join(&sha256.as_str()[..2]).join(sha256.as_str())
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
        let fan = self.root.join(&sha256.as_str()[..2]);
        if !fan.exists() {
            create_private_dir(&fan)?;
            sync_dir(&self.root)?;
        }
        fs::rename(&self.temp, fan.join(sha256.as_str()))?;
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

    #[test]
    fn the_data_folder_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        livebase_store::blobs::conformance(&DirBlobStore::open(dir.path()).unwrap());
        // Only the empty blob (sha256 e3b0…) is left, temporary files none.
        let files = dir.path().join(FILES_DIR);
        assert_eq!(fs::read_dir(files.join(TEMP_DIR)).unwrap().count(), 0);
        assert_eq!(fs::read_dir(files.join("e3")).unwrap().count(), 1);
    }

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
