//! The conformance suite every [`BlobStore`] must pass, as
//! [`crate::store`]'s engines pass theirs: a store that keeps blobs elsewhere
//! (chunks in PostgreSQL) is checked by the same calls.

use std::io::Read;

use super::blobs::{self, BlobHash, BlobStore};

fn read_all(store: &dyn BlobStore, hash: &BlobHash, start: u64, end: u64) -> Option<Vec<u8>> {
    let mut reader = store.read(hash, start, end).unwrap()?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).unwrap();
    Some(bytes)
}

/// Runs every check against a fresh, empty store.
pub fn run(store: &dyn BlobStore) {
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

    // Deleted, and deleting again is no error.
    store.delete(&blob.sha256).unwrap();
    assert!(read_all(store, &blob.sha256, 0, 11).is_none());
    store.delete(&blob.sha256).unwrap();
    assert!(store.list().unwrap().is_empty());

    // An empty blob is a blob.
    let empty = store.begin().unwrap().finish().unwrap();
    assert_eq!(empty.size, 0);
    assert_eq!(
        read_all(store, &empty.sha256, 0, 0).as_deref(),
        Some(&b""[..])
    );
}

#[cfg(test)]
mod tests {
    use super::blobs::{DirBlobStore, FILES_DIR};

    #[test]
    fn the_data_folder_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        super::run(&DirBlobStore::open(dir.path()).unwrap());
        // Only the empty blob (sha256 e3b0…) is left, temporary files none.
        let files = dir.path().join(FILES_DIR);
        assert_eq!(std::fs::read_dir(files.join("tmp")).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(files.join("e3")).unwrap().count(), 1);
    }
}
