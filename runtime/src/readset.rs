//! Read sets and write sets: what a transaction observed and what a commit
//! changed, as byte intervals and byte keys over the one index key space (see
//! [`crate::store::index_key`]). The subscription manager decides invalidation
//! with exactly one test, [`ReadSet::overlaps`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

/// A half-open interval `[start, end)` of index keys.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyInterval {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyInterval {
    pub fn new(start: Vec<u8>, end: Vec<u8>) -> KeyInterval {
        KeyInterval { start, end }
    }

    /// The interval holding exactly `key`.
    pub fn point(key: &[u8]) -> KeyInterval {
        let mut end = key.to_vec();
        end.push(0);
        KeyInterval {
            start: key.to_vec(),
            end,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && key < self.end.as_slice()
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// The longest prefix shared by every key in the interval. The subscription
    /// manager files intervals under it: a key can only fall inside an interval
    /// whose common prefix it starts with.
    pub fn common_prefix(&self) -> &[u8] {
        let n = self
            .start
            .iter()
            .zip(&self.end)
            .take_while(|(a, b)| a == b)
            .count();
        &self.start[..n]
    }
}

impl fmt::Debug for KeyInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", hex(&self.start), hex(&self.end))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything a transaction read: the key intervals its index scans covered and
/// the `by_id` points of the documents it fetched by id.
///
/// **Invariant:** only the transaction's read methods add to a read set, and they
/// add exactly the keys whose change could change what they returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSet {
    intervals: Vec<KeyInterval>,
}

impl ReadSet {
    pub fn new() -> ReadSet {
        ReadSet::default()
    }

    pub fn record(&mut self, interval: KeyInterval) {
        if !interval.is_empty() {
            self.intervals.push(interval);
        }
    }

    pub fn intervals(&self) -> &[KeyInterval] {
        &self.intervals
    }

    pub fn len(&self) -> usize {
        self.intervals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// True exactly when the commit wrote a key inside this read set: then the
    /// result of the reads may have changed and must be recomputed. A write
    /// outside every interval cannot change what was read.
    pub fn overlaps(&self, writes: &WriteSet) -> bool {
        writes
            .keys()
            .iter()
            .any(|k| self.intervals.iter().any(|i| i.contains(k)))
    }
}

/// One committed change of one document: its table, id, and the index keys
/// (every index of the table) of the old and the new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentWrite {
    pub table: String,
    pub id: String,
    pub kind: WriteKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Insert,
    Update,
    Delete,
}

/// Everything a commit changed: for each written document, the index keys of
/// its old and new versions (deduplicated, in key order). A set, so that
/// recording stays linear in the keys: a mutation writing thousands of
/// documents (deleting an organization) records tens of thousands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSet {
    keys: BTreeSet<Vec<u8>>,
    documents: Vec<DocumentWrite>,
}

impl WriteSet {
    pub fn new() -> WriteSet {
        WriteSet::default()
    }

    /// Records one document write with the index keys of both versions.
    pub fn record(&mut self, write: DocumentWrite, old_keys: &[Vec<u8>], new_keys: &[Vec<u8>]) {
        for k in old_keys.iter().chain(new_keys) {
            if !self.keys.contains(k) {
                self.keys.insert(k.clone());
            }
        }
        self.documents.push(write);
    }

    pub fn keys(&self) -> &BTreeSet<Vec<u8>> {
        &self.keys
    }

    pub fn documents(&self) -> &[DocumentWrite] {
        &self.documents
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}

/// A commit as the subscription manager sees it.
#[derive(Clone, Debug)]
pub struct Commit {
    pub ts: livebase_schema::Timestamp,
    pub writes: Arc<WriteSet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_half_open_and_points_hold_one_key() {
        let i = KeyInterval::new(b"b".to_vec(), b"d".to_vec());
        assert!(i.contains(b"b") && i.contains(b"c\xff") && !i.contains(b"d") && !i.contains(b"a"));
        let p = KeyInterval::point(b"k1");
        assert!(p.contains(b"k1") && !p.contains(b"k1\x00") && !p.contains(b"k"));
        assert_eq!(
            KeyInterval::new(b"org1a".to_vec(), b"org1b".to_vec()).common_prefix(),
            b"org1"
        );
    }

    #[test]
    fn overlaps_only_when_a_written_key_is_inside() {
        let mut reads = ReadSet::new();
        reads.record(KeyInterval::new(b"b".to_vec(), b"d".to_vec()));
        let mut hit = WriteSet::new();
        let w = DocumentWrite {
            table: "t".into(),
            id: "t_1".into(),
            kind: WriteKind::Insert,
        };
        hit.record(w.clone(), &[], &[b"c".to_vec()]);
        let mut miss = WriteSet::new();
        miss.record(w, &[b"a".to_vec()], &[b"d".to_vec()]);
        assert!(reads.overlaps(&hit));
        assert!(!reads.overlaps(&miss));
    }

    #[test]
    fn a_large_write_set_holds_each_key_once() {
        // Deleting an organization: every document shares the org's key with
        // the others and has keys of its own.
        let mut writes = WriteSet::new();
        let n = 20_000u32;
        for i in 0..n {
            let own = |index: u8| [&[index][..], &i.to_be_bytes()].concat();
            writes.record(
                DocumentWrite {
                    table: "items".into(),
                    id: format!("items_{i}"),
                    kind: WriteKind::Delete,
                },
                &[own(1), own(2), b"org".to_vec()],
                &[],
            );
        }
        assert_eq!(writes.documents().len(), n as usize);
        assert_eq!(writes.keys().len(), 2 * n as usize + 1);
        assert!(writes.keys().contains(&b"org".to_vec()));
        let mut reads = ReadSet::new();
        reads.record(KeyInterval::point(&[2, 0, 0, 0x4e, 0x1f]));
        assert!(reads.overlaps(&writes), "key 2/19999 is in the set");
    }
}
