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

    /// The write set as bytes, for the commit log other nodes read:
    /// [`WRITE_SET_FORMAT`], then the keys (a count, then each as its length
    /// and bytes, in key order), then the documents (a count, then each
    /// table and id as length and UTF-8 bytes, and its kind as one byte:
    /// 0 insert, 1 update, 2 delete). Counts and lengths are unsigned
    /// LEB128 varints, so a small commit costs a few bytes over its keys.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.keys.iter().map(|k| k.len() + 2).sum::<usize>()
            + self
                .documents
                .iter()
                .map(|d| d.table.len() + d.id.len() + 3)
                .sum::<usize>();
        let mut out = Vec::with_capacity(size + 11);
        out.push(WRITE_SET_FORMAT);
        put_varint(&mut out, self.keys.len() as u64);
        for key in &self.keys {
            put_bytes(&mut out, key);
        }
        put_varint(&mut out, self.documents.len() as u64);
        for d in &self.documents {
            put_bytes(&mut out, d.table.as_bytes());
            put_bytes(&mut out, d.id.as_bytes());
            out.push(match d.kind {
                WriteKind::Insert => 0,
                WriteKind::Update => 1,
                WriteKind::Delete => 2,
            });
        }
        out
    }

    /// A write set from [`WriteSet::encode`]'s bytes. Anything else — cut
    /// short, trailing bytes, another format version, keys out of order,
    /// text that is not UTF-8, an unknown kind — is an error naming what
    /// and where, never a panic; a count is never trusted to size memory
    /// beyond what the input could hold.
    pub fn decode(bytes: &[u8]) -> Result<WriteSet, String> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.byte("the format version")?;
        if version != WRITE_SET_FORMAT {
            return Err(format!(
                "write set: format version {version}, this livebase reads version {WRITE_SET_FORMAT}"
            ));
        }
        let mut keys = BTreeSet::new();
        let n = r.varint("the key count")?;
        for i in 0..n {
            let key = r.bytes("a key")?.to_vec();
            if keys.last().is_some_and(|last| *last >= key) {
                return Err(format!("write set: key {i} is out of order"));
            }
            keys.insert(key);
        }
        let n = r.varint("the document count")?;
        // Each document takes at least 3 bytes: no more can follow.
        let mut documents = Vec::with_capacity((n as usize).min(r.left() / 3));
        for _ in 0..n {
            let table = r.text("a document's table")?;
            let id = r.text("a document's id")?;
            let kind = match r.byte("a document's kind")? {
                0 => WriteKind::Insert,
                1 => WriteKind::Update,
                2 => WriteKind::Delete,
                k => {
                    return Err(format!(
                        "write set: unknown write kind {k} at byte {}",
                        r.at - 1
                    ))
                }
            };
            documents.push(DocumentWrite { table, id, kind });
        }
        if r.left() != 0 {
            return Err(format!(
                "write set: {} bytes past its end (at byte {})",
                r.left(),
                r.at
            ));
        }
        Ok(WriteSet { keys, documents })
    }
}

/// The version byte [`WriteSet::encode`] starts with; [`WriteSet::decode`]
/// reads only this one.
pub const WRITE_SET_FORMAT: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// [`WriteSet::decode`]'s cursor over its input.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn cut_short(&self, what: &str) -> String {
        format!(
            "write set: cut short reading {what} at byte {} of {}",
            self.at,
            self.bytes.len()
        )
    }

    fn byte(&mut self, what: &str) -> Result<u8, String> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.cut_short(what))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self, what: &str) -> Result<u64, String> {
        let start = self.at;
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7F);
            if shift == 63 && bits > 1 {
                break;
            }
            n |= bits << shift;
            if b & 0x80 == 0 {
                // One way to write each number: a last byte of 0 after the
                // first is padding `encode` never writes.
                if b == 0 && shift > 0 {
                    break;
                }
                return Ok(n);
            }
        }
        Err(format!(
            "write set: {what} at byte {start} is not a 64-bit varint in its shortest form"
        ))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let len = self.varint(what)?;
        if len > self.left() as u64 {
            return Err(format!(
                "write set: {what} of {len} bytes at byte {} runs past the end ({} left)",
                self.at,
                self.left()
            ));
        }
        let bytes = &self.bytes[self.at..self.at + len as usize];
        self.at += len as usize;
        Ok(bytes)
    }

    fn text(&mut self, what: &str) -> Result<String, String> {
        let at = self.at;
        let bytes = self.bytes(what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("write set: {what} at byte {at} is not UTF-8"))
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
    // The write set's bytes, as the commit log keeps them.

    fn sample_writes() -> WriteSet {
        let mut writes = WriteSet::new();
        for (i, kind) in [WriteKind::Insert, WriteKind::Update, WriteKind::Delete]
            .into_iter()
            .enumerate()
        {
            writes.record(
                DocumentWrite {
                    table: "tâble".into(),
                    id: format!("tâble_{i}"),
                    kind,
                },
                &[vec![i as u8, 0xFF], vec![]],
                &[vec![7; 200 + i]],
            );
        }
        writes
    }

    #[test]
    fn a_write_set_round_trips_through_its_bytes() {
        let empty = WriteSet::new();
        let bytes = empty.encode();
        assert_eq!(bytes, [WRITE_SET_FORMAT, 0, 0]);
        assert_eq!(WriteSet::decode(&bytes).unwrap(), empty);

        let writes = sample_writes();
        assert_eq!(WriteSet::decode(&writes.encode()).unwrap(), writes);

        // A key past 64 KiB (its length takes three varint bytes).
        let mut long = WriteSet::new();
        let key: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        long.record(
            DocumentWrite {
                table: "t".into(),
                id: "t_1".into(),
                kind: WriteKind::Update,
            },
            std::slice::from_ref(&key),
            &[[key.as_slice(), b"x"].concat()],
        );
        let decoded = WriteSet::decode(&long.encode()).unwrap();
        assert_eq!(decoded, long);
        assert!(decoded.keys().contains(&key));

        // Many documents (past the 1- and 2-byte varint counts).
        let mut many = WriteSet::new();
        for i in 0..20_000u32 {
            many.record(
                DocumentWrite {
                    table: "items".into(),
                    id: format!("items_{i}"),
                    kind: WriteKind::Delete,
                },
                &[i.to_be_bytes().to_vec(), b"org".to_vec()],
                &[],
            );
        }
        let decoded = WriteSet::decode(&many.encode()).unwrap();
        assert_eq!(decoded.documents().len(), 20_000);
        assert_eq!(decoded, many);
    }

    #[test]
    fn a_write_set_cut_short_anywhere_is_an_error() {
        let bytes = sample_writes().encode();
        for len in 0..bytes.len() {
            let e = WriteSet::decode(&bytes[..len]).expect_err("cut short");
            assert!(e.starts_with("write set: "), "{e}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(WriteSet::decode(&long)
            .unwrap_err()
            .contains("past its end"));
    }

    #[test]
    fn garbage_is_an_error_that_says_what_is_wrong() {
        let version = WriteSet::decode(&[9, 0, 0]).unwrap_err();
        assert!(version.contains("format version 9"), "{version}");
        // Keys must come in order, each once.
        let twice = WriteSet::decode(&[WRITE_SET_FORMAT, 2, 1, b'a', 1, b'a', 0]).unwrap_err();
        assert!(twice.contains("out of order"), "{twice}");
        // A count far past the input does not allocate for it.
        let huge = [
            WRITE_SET_FORMAT,
            0,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x7F,
        ];
        assert!(WriteSet::decode(&huge).unwrap_err().contains("cut short"));
        let overlong = [
            WRITE_SET_FORMAT,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x7F,
        ];
        assert!(WriteSet::decode(&overlong).unwrap_err().contains("varint"));
        let padded = WriteSet::decode(&[WRITE_SET_FORMAT, 0x80, 0x00, 0]).unwrap_err();
        assert!(padded.contains("varint"), "{padded}");
        let kind = WriteSet::decode(&[WRITE_SET_FORMAT, 0, 1, 1, b't', 1, b'i', 3]).unwrap_err();
        assert!(kind.contains("kind 3"), "{kind}");
        let utf8 = WriteSet::decode(&[WRITE_SET_FORMAT, 0, 1, 1, 0xFF, 1, b'i', 0]).unwrap_err();
        assert!(utf8.contains("not UTF-8"), "{utf8}");
    }

    proptest! {
        /// Whatever the bytes, decoding answers (no panic), and whatever it
        /// accepts encodes back to the same bytes.
        #[test]
        fn decoding_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut input = vec![WRITE_SET_FORMAT];
            input.extend(bytes);
            if let Ok(writes) = WriteSet::decode(&input) {
                prop_assert_eq!(writes.encode(), input);
            }
        }
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
