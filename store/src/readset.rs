//! Read sets and write sets: what a transaction observed and what a commit
//! changed, as byte intervals and byte keys over the one index key space (see
//! [`crate::persistence::index_key`]), and the [`InvalidationIndex`] that
//! files live queries' read sets.
//!
//! Invalidation has one definition, [`ReadSet::overlaps`]: a commit
//! invalidates a query exactly when it wrote a key inside the query's read
//! set. The index is how the subscription manager finds those queries
//! without testing every one; its `hits` is held to `overlaps` by a property
//! test below.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

    /// Adds an interval. Crate-private: only [`crate::transaction::Transaction`]'s
    /// read methods record, so a read set says exactly what was read.
    pub(crate) fn record(&mut self, interval: KeyInterval) {
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
        writes.is_everything()
            || writes
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
    /// What was written is unknown: any key, any document
    /// ([`WriteSet::everything`]).
    everything: bool,
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
        self.documents.is_empty() && !self.everything
    }

    /// The write set of commits whose writes are unknown (a node that fell
    /// behind the commit log's retention): it overlaps every read set, and
    /// whoever looks at its keys or documents must check
    /// [`WriteSet::is_everything`] first.
    pub fn everything() -> WriteSet {
        WriteSet {
            everything: true,
            ..WriteSet::default()
        }
    }

    /// Whether this stands for writes that may have touched anything.
    pub fn is_everything(&self) -> bool {
        self.everything
    }
}

/// Where live queries' read intervals are filed, by their common prefix.
///
/// **Invariant:** a key `k` lies inside interval `i` only if `k` starts with
/// `i.common_prefix()`, so looking up `k`'s prefixes — one hash lookup per
/// distinct prefix length in use — finds every candidate, and a commit touching
/// one organization's rows never visits another organization's queries.
///
/// **Invariant:** [`InvalidationIndex::hits`] finds exactly the queries whose
/// read set [`ReadSet::overlaps`] a write of the key — the index is a faster
/// way to ask the same question, never a second definition.
#[derive(Default)]
pub struct InvalidationIndex {
    by_prefix: HashMap<Vec<u8>, HashMap<u64, Vec<KeyInterval>>>,
    /// How many prefixes of each length are filed (lengths to probe).
    lengths: BTreeMap<usize, usize>,
}

impl InvalidationIndex {
    /// Files the read set of query `handle` (which holds no other).
    pub fn insert(&mut self, handle: u64, reads: &ReadSet) {
        for interval in reads.intervals() {
            let prefix = interval.common_prefix().to_vec();
            let len = prefix.len();
            let bucket = self.by_prefix.entry(prefix).or_default();
            if bucket.is_empty() {
                *self.lengths.entry(len).or_default() += 1;
            }
            bucket.entry(handle).or_default().push(interval.clone());
        }
    }

    /// Forgets query `handle`, filed with `reads`.
    pub fn remove(&mut self, handle: u64, reads: &ReadSet) {
        for interval in reads.intervals() {
            let prefix = interval.common_prefix();
            let Some(bucket) = self.by_prefix.get_mut(prefix) else {
                continue;
            };
            bucket.remove(&handle);
            if bucket.is_empty() {
                let len = prefix.len();
                self.by_prefix.remove(prefix);
                if let Some(n) = self.lengths.get_mut(&len) {
                    *n -= 1;
                    if *n == 0 {
                        self.lengths.remove(&len);
                    }
                }
            }
        }
    }

    /// Adds to `hits` every query with a read interval holding `key`.
    pub fn hits(&self, key: &[u8], hits: &mut HashSet<u64>) {
        for &len in self.lengths.keys() {
            if len > key.len() {
                break;
            }
            if let Some(bucket) = self.by_prefix.get(&key[..len]) {
                for (handle, intervals) in bucket {
                    if intervals.iter().any(|i| i.contains(key)) {
                        hits.insert(*handle);
                    }
                }
            }
        }
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

    // -----------------------------------------------------------------------
    // Property: the index finds exactly the queries `overlaps` names.

    use proptest::prelude::*;

    /// Short keys over few byte values (0xFF included, the byte range ends
    /// append), so intervals share prefixes, nest, touch and cross.
    fn arb_key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0xFF]), 0..4)
    }

    fn arb_interval() -> impl Strategy<Value = KeyInterval> {
        prop_oneof![
            (arb_key(), arb_key()).prop_map(|(a, b)| KeyInterval::new(a, b)),
            arb_key().prop_map(|k| KeyInterval::point(&k)),
            // A prefix range, as an index equality scans one.
            arb_key().prop_map(|k| KeyInterval::new(k.clone(), [k.as_slice(), &[0xFF]].concat())),
        ]
    }

    fn arb_read_set() -> impl Strategy<Value = ReadSet> {
        prop::collection::vec(arb_interval(), 0..5).prop_map(|intervals| {
            let mut reads = ReadSet::new();
            for i in intervals {
                reads.record(i);
            }
            reads
        })
    }

    fn write_of(key: &[u8]) -> WriteSet {
        let mut writes = WriteSet::new();
        let write = DocumentWrite {
            table: "t".into(),
            id: "t_1".into(),
            kind: WriteKind::Update,
        };
        writes.record(write, &[], &[key.to_vec()]);
        writes
    }

    proptest! {
        /// Queries are filed, some re-filed with a new read set (a re-run)
        /// and some removed, as the worker does; then every key's hits are
        /// the queries whose current read set overlaps a write of the key.
        #[test]
        fn hits_are_exactly_the_queries_whose_read_set_overlaps_the_write(
            first in prop::collection::vec(arb_read_set(), 0..8),
            rerun in prop::collection::vec(prop::option::of(arb_read_set()), 8),
            removed in prop::collection::vec(any::<bool>(), 8),
            keys in prop::collection::vec(arb_key(), 1..16),
        ) {
            let mut index = InvalidationIndex::default();
            let mut live: HashMap<u64, ReadSet> = HashMap::new();
            for (h, reads) in first.into_iter().enumerate() {
                index.insert(h as u64, &reads);
                live.insert(h as u64, reads);
            }
            for h in 0..live.len() as u64 {
                if let Some(new) = &rerun[h as usize] {
                    index.remove(h, &live[&h]);
                    index.insert(h, new);
                    live.insert(h, new.clone());
                }
                if removed[h as usize] {
                    index.remove(h, &live[&h]);
                    live.remove(&h);
                }
            }
            for key in keys {
                let mut hits = HashSet::new();
                index.hits(&key, &mut hits);
                let writes = write_of(&key);
                let expected: HashSet<u64> = live
                    .iter()
                    .filter(|(_, reads)| reads.overlaps(&writes))
                    .map(|(h, _)| *h)
                    .collect();
                prop_assert_eq!(hits, expected, "key {:?}", key);
            }
        }
    }
}
