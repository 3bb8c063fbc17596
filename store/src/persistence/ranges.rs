//! Index ranges a connection has read, kept and brought up to date from the
//! commits' write sets, so that a live query's re-run over an unchanged range
//! reads nothing from the engine, and over a changed one reads only the keys
//! that changed.
//!
//! A [`CachedRange`] is every index entry of `[lo, hi)` as of one timestamp,
//! with its document's value. To answer a scan at a later snapshot, the range
//! is first brought to that snapshot: every commit in between is in
//! [`RecentWrites`] (the writer records a commit's write set there before it
//! commits, so a snapshot never sees a commit that is not recorded), each key
//! those commits wrote inside the range is dropped, and each is read again
//! from the snapshot, one point read each. When a commit in between is no
//! longer recorded, wrote what is unknown, or the range would have to move
//! back in time, the range is dropped and the scan goes to the engine.
//!
//! The result is the engine's own answer at the snapshot: the range held
//! every entry of `[lo, hi)` at its timestamp, and every entry that differs
//! at the snapshot is one some commit in between wrote, which was read again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use livebase_schema::{Timestamp, Value};

use super::Order;
use crate::error::StoreResult as Result;
use crate::readset::WriteSet;

/// Most commits [`RecentWrites`] keeps: at 10,000 commits a second, the last
/// 0.4 s. A range older than that is read from the engine again.
pub const RECENT_COMMITS: usize = 4096;

/// Most keys the kept commits may have written between them; past it the
/// oldest commits are forgotten (a mutation that deletes a large
/// organization writes tens of thousands).
pub const RECENT_KEYS: usize = 1 << 20;

/// Most bytes of ranges one connection keeps (counted as each document's
/// [`Value::size`] plus its key; the values are mostly shared with the
/// connection's decoded documents). Past it, the least recently used ranges
/// are dropped.
pub const RANGE_CACHE_BYTES: usize = 8 << 20;

/// Most ranges one connection keeps.
const MAX_RANGES: usize = 256;

/// The write sets of the latest commits, shared by every connection to one
/// store, in the order the writer recorded them.
///
/// Two more things say whether a snapshot may use kept ranges at all:
///
/// - **Writes not recorded** (an import, a write outside the writer's
///   mutations): `generation` is odd while such a commit is being made and
///   moves on to the next even number after it. A snapshot reads it before it
///   begins and again after; only one that read the same even number both
///   times is wholly before or wholly after each such commit, so only such a
///   snapshot uses and keeps ranges, and only ranges of its generation.
/// - **Other writers** (PostgreSQL, where other nodes and tools commit to the
///   same database): `through` is the latest commit up to which every commit
///   is known — this process's recorded commits once they committed, and
///   the last commit a write transaction found when it differed from
///   `through` ([`RecentWrites::restart_at`], which also drops every range).
///   A snapshot past `through` may hold another writer's commit: it uses
///   and keeps nothing.
#[derive(Debug, Default)]
pub struct RecentWrites {
    inner: Mutex<Recent>,
    generation: AtomicU64,
    /// Whether snapshots are checked against `through` (engines with other
    /// writers).
    other_writers: bool,
    through: AtomicU64,
}

#[derive(Debug, Default)]
struct Recent {
    commits: VecDeque<(Timestamp, Arc<WriteSet>)>,
    keys: usize,
    /// Every commit at or before this timestamp may have been forgotten.
    floor: Timestamp,
}

impl Recent {
    fn push(&mut self, ts: Timestamp, writes: Arc<WriteSet>) {
        self.keys += writes.keys().len();
        self.commits.push_back((ts, writes));
        while self.commits.len() > RECENT_COMMITS
            || (self.keys > RECENT_KEYS && self.commits.len() > 1)
        {
            let Some((old_ts, old)) = self.commits.pop_front() else {
                break;
            };
            self.keys -= old.keys().len();
            self.floor = self.floor.max(old_ts);
        }
    }
}

impl RecentWrites {
    /// For a store that other processes may commit to as well (see
    /// [`RecentWrites`]): snapshots past [`RecentWrites::through`] keep
    /// nothing.
    pub fn with_other_writers() -> RecentWrites {
        RecentWrites {
            other_writers: true,
            ..RecentWrites::default()
        }
    }

    /// Records that commit `ts` wrote `writes`. Called before the commit is
    /// durable: a commit that then fails leaves a record of writes that did
    /// not happen, which only makes a range read some keys again.
    pub fn record(&self, ts: Timestamp, writes: Arc<WriteSet>) {
        if let Ok(mut recent) = self.inner.lock() {
            recent.push(ts, writes);
        }
    }

    /// Records commit `ts`, read from a log that holds every commit in
    /// order, as known (engines with other writers; every commit up to the
    /// one read before must be known). One already known is skipped. One
    /// that is not later than every record (a record of this process's own
    /// commit that failed, or has not been marked committed yet, is later)
    /// cannot be put in order: every range is dropped instead, and `ts`
    /// becomes [`RecentWrites::through`].
    pub fn learn(&self, ts: Timestamp, writes: Arc<WriteSet>) {
        if ts <= self.through() {
            return;
        }
        let appended = self.inner.lock().is_ok_and(|mut recent| {
            let in_order = recent.commits.back().is_none_or(|(last, _)| *last < ts);
            if in_order {
                recent.push(ts, writes);
            }
            in_order
        });
        if appended {
            self.committed(ts);
        } else {
            self.restart_at(ts);
        }
    }

    /// Says that a commit whose writes are not recorded (a write outside
    /// the writer's mutations, such as an import) is about to become
    /// visible: called before its `COMMIT`, and
    /// [`RecentWrites::unknown_write_ends`] after it, whether it committed or
    /// not. Such commits are made one at a time (each holds the store's
    /// write lock).
    pub fn unknown_write_begins(&self) {
        self.generation.fetch_add(1, AtomicOrdering::SeqCst);
    }

    /// See [`RecentWrites::unknown_write_begins`]: every range kept before
    /// is dropped when next used.
    pub fn unknown_write_ends(&self) {
        self.generation.fetch_add(1, AtomicOrdering::SeqCst);
    }

    /// Says that recorded commit `ts` committed (see [`RecentWrites`]).
    pub fn committed(&self, ts: Timestamp) {
        self.through.fetch_max(ts.get(), AtomicOrdering::SeqCst);
    }

    /// The latest commit up to which every commit is known (see
    /// [`RecentWrites`]).
    pub fn through(&self) -> Timestamp {
        Timestamp::new(self.through.load(AtomicOrdering::SeqCst))
    }

    /// Says that commits up to `ts` may have been made by another writer: a
    /// write transaction found `ts` as the last commit, not
    /// [`RecentWrites::through`]. Every range kept before is dropped, and
    /// `ts` is the new `through`. Called inside that write transaction, so
    /// no other commit is made meanwhile.
    pub fn restart_at(&self, ts: Timestamp) {
        self.unknown_write_begins();
        self.through.store(ts.get(), AtomicOrdering::SeqCst);
        self.unknown_write_ends();
    }

    /// To be read before a snapshot begins and handed to
    /// [`RecentWrites::snapshot`] once it has.
    pub fn generation(&self) -> u64 {
        self.generation.load(AtomicOrdering::SeqCst)
    }

    /// The snapshot at `ts` of a connection that read `before` from
    /// [`RecentWrites::generation`] before the snapshot began; to be called
    /// after it has. Its generation is `None` (it neither uses nor keeps
    /// ranges) when a write not recorded was being made or ended in between,
    /// or, with other writers, when `ts` is past what is known.
    pub fn snapshot(&self, ts: Timestamp, before: u64) -> Snapshot {
        let known = !self.other_writers || ts <= self.through();
        let after = self.generation();
        let generation = (before == after && before.is_multiple_of(2) && known).then_some(before);
        Snapshot { ts, generation }
    }

    /// The write sets of every commit after `after` and at or before
    /// `through`, or `None` if some of them may have been forgotten.
    ///
    /// `after` is a snapshot's timestamp: a commit's. Commits are recorded in
    /// the order they commit, at increasing timestamps; only a commit that
    /// failed may have a later timestamp than one recorded after it, and
    /// every record after a commit has a later timestamp than that commit.
    /// So the records after `after`'s are the last ones, read from the end
    /// up to the first at or before `after`.
    fn between(&self, after: Timestamp, through: Timestamp) -> Option<Vec<Arc<WriteSet>>> {
        let recent = self.inner.lock().ok()?;
        if after < recent.floor {
            return None;
        }
        Some(
            recent
                .commits
                .iter()
                .rev()
                .take_while(|(ts, _)| *ts > after)
                .filter(|(ts, _)| *ts <= through)
                .map(|(_, writes)| writes.clone())
                .collect(),
        )
    }
}

/// Index entries, each with its document's value, as a scan returns them.
pub type Rows = Vec<(Vec<u8>, Value)>;

/// An engine's scan of `[start, end)` in an order, up to a limit.
pub type ReadRange<'a> = dyn FnMut(&[u8], &[u8], Order, usize) -> Result<Rows> + 'a;

/// A read snapshot: its timestamp, and the generation of the ranges it may
/// use and keep (`None`: none; see [`RecentWrites::snapshot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub ts: Timestamp,
    pub generation: Option<u64>,
}

/// Every index entry of `[lo, hi)` as of `ts`.
struct CachedRange {
    lo: Vec<u8>,
    hi: Vec<u8>,
    ts: Timestamp,
    generation: u64,
    rows: BTreeMap<Vec<u8>, Value>,
    bytes: usize,
    used: u64,
}

fn row_bytes(key: &[u8], value: &Value) -> usize {
    key.len() + value.size()
}

impl CachedRange {
    fn new(
        lo: Vec<u8>,
        hi: Vec<u8>,
        ts: Timestamp,
        generation: u64,
        rows: BTreeMap<Vec<u8>, Value>,
    ) -> Self {
        let bytes = rows.iter().map(|(k, v)| row_bytes(k, v)).sum();
        CachedRange {
            lo,
            hi,
            ts,
            generation,
            rows,
            bytes,
            used: 0,
        }
    }

    /// Whether the range holds the first `limit` entries of `[start, end)`
    /// in `order`.
    fn answers(&self, start: &[u8], end: &[u8], order: Order, limit: usize) -> bool {
        let inside = |from: &[u8], to: &[u8]| {
            self.rows
                .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
                .take(limit)
                .count()
                >= limit
        };
        match order {
            Order::Asc => {
                *self.lo <= *start
                    && (*end <= *self.hi || (*start < *self.hi && inside(start, &self.hi)))
            }
            Order::Desc => {
                *end <= *self.hi
                    && (*self.lo <= *start || (*self.lo < *end && inside(&self.lo, end)))
            }
        }
    }

    fn answer(
        &self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Vec<(Vec<u8>, Value)> {
        let rows = self
            .rows
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)));
        let copy = |(k, v): (&Vec<u8>, &Value)| (k.clone(), v.clone());
        match order {
            Order::Asc => rows.take(limit).map(copy).collect(),
            Order::Desc => rows.rev().take(limit).map(copy).collect(),
        }
    }

    /// Brings the range from its timestamp to `ts`, reading each key the
    /// commits in between wrote inside it with `read_key`. `false` when that
    /// cannot be done (the range must be dropped).
    fn advance(
        &mut self,
        ts: Timestamp,
        generation: u64,
        recent: &RecentWrites,
        read_key: &mut dyn FnMut(&[u8]) -> Result<Option<Value>>,
    ) -> Result<bool> {
        if self.generation != generation || self.ts > ts {
            return Ok(false);
        }
        if self.ts == ts {
            return Ok(true);
        }
        let Some(commits) = recent.between(self.ts, ts) else {
            return Ok(false);
        };
        let mut written = BTreeSet::new();
        for writes in &commits {
            if writes.is_everything() {
                return Ok(false);
            }
            let inside = writes
                .keys()
                .range::<[u8], _>((Bound::Included(&self.lo[..]), Bound::Excluded(&self.hi[..])));
            written.extend(inside.cloned());
        }
        for key in written {
            if let Some(old) = self.rows.remove(&key) {
                self.bytes -= row_bytes(&key, &old);
            }
            if let Some(value) = read_key(&key)? {
                self.bytes += row_bytes(&key, &value);
                self.rows.insert(key, value);
            }
        }
        self.ts = ts;
        Ok(true)
    }
}

/// One connection's ranges.
pub struct RangeCache {
    recent: Arc<RecentWrites>,
    ranges: Vec<CachedRange>,
    bytes: usize,
    clock: u64,
}

impl RangeCache {
    pub fn new(recent: Arc<RecentWrites>) -> RangeCache {
        RangeCache {
            recent,
            ranges: Vec::new(),
            bytes: 0,
            clock: 0,
        }
    }

    /// The first `limit` entries of `[start, end)` in `order` at snapshot
    /// `at`, if a kept range holds them (brought to `ts` first, reading the
    /// keys written since with `read_key`); `None` sends the scan to the
    /// engine.
    pub fn scan(
        &mut self,
        at: Snapshot,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
        read_key: &mut dyn FnMut(&[u8]) -> Result<Option<Value>>,
    ) -> Result<Option<Rows>> {
        let Some(generation) = at.generation else {
            return Ok(None);
        };
        self.clock += 1;
        let mut i = 0;
        while i < self.ranges.len() {
            let covers = match order {
                Order::Asc => *self.ranges[i].lo <= *start && *start < *self.ranges[i].hi,
                Order::Desc => *self.ranges[i].lo < *end && *end <= *self.ranges[i].hi,
            };
            if !covers {
                i += 1;
                continue;
            }
            let before = self.ranges[i].bytes;
            let advanced = self.ranges[i].advance(at.ts, generation, &self.recent, read_key);
            self.bytes = self.bytes - before + self.ranges[i].bytes;
            match advanced {
                Ok(true) => {}
                Ok(false) => {
                    self.drop_range(i);
                    continue;
                }
                Err(e) => {
                    // Part of it may be at `at` and part not: dropped.
                    self.drop_range(i);
                    return Err(e);
                }
            }
            let range = &mut self.ranges[i];
            if range.answers(start, end, order, limit) {
                range.used = self.clock;
                return Ok(Some(range.answer(start, end, order, limit)));
            }
            i += 1;
        }
        Ok(None)
    }

    /// The first `limit` entries of `[start, end)` in `order` at snapshot
    /// `at`: from a kept range when one holds them, else from `read` (the
    /// engine's scan), whose answer is then kept. A kept range is brought
    /// up to date with `read` too, one written key at a time.
    pub fn scan_or_read(
        &mut self,
        at: Snapshot,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
        read: &mut ReadRange<'_>,
    ) -> Result<Rows> {
        let kept = {
            let mut read_key = |key: &[u8]| -> Result<Option<Value>> {
                let past = [key, &[0]].concat();
                let found = read(key, &past, Order::Asc, 1)?;
                Ok(found.into_iter().next().map(|(_, value)| value))
            };
            self.scan(at, start, end, order, limit, &mut read_key)?
        };
        if let Some(rows) = kept {
            return Ok(rows);
        }
        let found = read(start, end, order, limit)?;
        self.learn(at, start, end, order, limit, &found);
        Ok(found)
    }

    /// Keeps what the engine answered for the first `limit` entries of
    /// `[start, end)` in `order` at snapshot `at`: all of `[start, end)` when
    /// it returned fewer, else the part up to its last entry. Joined with a
    /// kept range of the same snapshot that it touches or overlaps; a kept
    /// range of another snapshot that it overlaps is dropped.
    pub fn learn(
        &mut self,
        at: Snapshot,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
        found: &[(Vec<u8>, Value)],
    ) {
        let Some(generation) = at.generation else {
            return;
        };
        if limit == 0 {
            return;
        }
        self.clock += 1;
        let (lo, hi) = match (found.last(), found.len() < limit, order) {
            (Some((last, _)), false, Order::Asc) => {
                (start.to_vec(), [last.as_slice(), &[0]].concat())
            }
            (Some((last, _)), false, Order::Desc) => (last.clone(), end.to_vec()),
            _ => (start.to_vec(), end.to_vec()),
        };
        if lo >= hi {
            return;
        }
        let rows: BTreeMap<Vec<u8>, Value> = found.iter().cloned().collect();
        let mut range = CachedRange::new(lo, hi, at.ts, generation, rows);
        let mut i = 0;
        while i < self.ranges.len() {
            let other = &self.ranges[i];
            let touches = other.lo <= range.hi && range.lo <= other.hi;
            if !touches {
                i += 1;
                continue;
            }
            if other.ts == at.ts && other.generation == generation {
                let other = self.take_range(i);
                range.lo = range.lo.min(other.lo);
                range.hi = range.hi.max(other.hi);
                for (k, v) in other.rows {
                    range.rows.entry(k).or_insert(v);
                }
                range.bytes = range.rows.iter().map(|(k, v)| row_bytes(k, v)).sum();
            } else if other.lo < range.hi && range.lo < other.hi {
                self.drop_range(i);
            } else {
                i += 1;
            }
        }
        if range.bytes > RANGE_CACHE_BYTES / 2 {
            return;
        }
        range.used = self.clock;
        self.bytes += range.bytes;
        self.ranges.push(range);
        while self.bytes > RANGE_CACHE_BYTES || self.ranges.len() > MAX_RANGES {
            let oldest = (0..self.ranges.len())
                .min_by_key(|&i| self.ranges[i].used)
                .expect("a range is kept");
            self.drop_range(oldest);
        }
    }

    fn take_range(&mut self, i: usize) -> CachedRange {
        let range = self.ranges.swap_remove(i);
        self.bytes -= range.bytes;
        range
    }

    fn drop_range(&mut self, i: usize) {
        self.take_range(i);
    }

    /// Bytes kept, as counted against [`RANGE_CACHE_BYTES`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use livebase_schema::obj;

    use super::*;
    use crate::readset::{DocumentWrite, WriteKind};

    fn key(i: u8) -> Vec<u8> {
        vec![b'k', i]
    }

    fn rows(keys: impl IntoIterator<Item = u8>) -> Rows {
        keys.into_iter()
            .map(|i| (key(i), obj! { "i" => f64::from(i) }))
            .collect()
    }

    fn wrote(keys: &[u8]) -> Arc<WriteSet> {
        let mut writes = WriteSet::new();
        let keys: Vec<Vec<u8>> = keys.iter().map(|&i| key(i)).collect();
        let write = DocumentWrite {
            table: "t".into(),
            id: "t_1".into(),
            kind: WriteKind::Update,
        };
        writes.record(write, &keys, &keys);
        Arc::new(writes)
    }

    fn at(ts: u64) -> Snapshot {
        Snapshot {
            ts: Timestamp::new(ts),
            generation: Some(0),
        }
    }

    #[test]
    fn a_later_snapshot_reads_only_the_keys_written_since() {
        let recent = Arc::new(RecentWrites::default());
        let mut cache = RangeCache::new(recent.clone());
        let (start, end) = (key(0), key(100));
        cache.learn(at(1), &start, &end, Order::Asc, 128, &rows(1..=20));
        let reads = std::cell::RefCell::new(Vec::new());
        let mut read_key = |k: &[u8]| -> Result<Option<Value>> {
            reads.borrow_mut().push(k.to_vec());
            Ok((k != key(5)).then(|| obj! { "new" => true }))
        };
        // Nothing written since: answered without a read.
        let same = cache.scan(at(1), &start, &end, Order::Asc, 128, &mut read_key);
        assert_eq!(same.unwrap().unwrap(), rows(1..=20));
        // Key 5 deleted, 7 changed, 50 inserted (and 200, outside the range).
        recent.record(Timestamp::new(2), wrote(&[5, 7]));
        recent.record(Timestamp::new(3), wrote(&[50, 200]));
        let got = cache
            .scan(at(3), &start, &end, Order::Asc, 128, &mut read_key)
            .unwrap()
            .unwrap();
        assert_eq!(
            *reads.borrow(),
            vec![key(5), key(7), key(50)],
            "only the written keys inside"
        );
        let keys: Vec<Vec<u8>> = got.iter().map(|(k, _)| k.clone()).collect();
        let mut want: Vec<Vec<u8>> = (1..=20).filter(|&i| i != 5).map(key).collect();
        want.push(key(50));
        assert_eq!(keys, want);
        assert_eq!(got[5].1, obj! { "new" => true }, "key 7 read again");
        // Descending, and a limit within what is kept.
        let last3 = cache
            .scan(at(3), &start, &end, Order::Desc, 3, &mut read_key)
            .unwrap()
            .unwrap();
        let keys: Vec<Vec<u8>> = last3.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![key(50), key(20), key(19)]);
    }

    #[test]
    fn what_cannot_be_brought_up_to_date_goes_to_the_engine() {
        let recent = Arc::new(RecentWrites::default());
        let mut cache = RangeCache::new(recent.clone());
        let (start, end) = (key(0), key(100));
        let mut no_read = |_: &[u8]| -> Result<Option<Value>> { panic!("no key is read") };
        // A scan cut short by its limit knows only up to its last key.
        cache.learn(at(1), &start, &end, Order::Asc, 10, &rows(1..=10));
        let more = cache.scan(at(1), &start, &end, Order::Asc, 11, &mut no_read);
        assert!(more.unwrap().is_none(), "the 11th entry is not known");
        let fewer = cache.scan(at(1), &start, &end, Order::Asc, 10, &mut no_read);
        assert_eq!(fewer.unwrap().unwrap().len(), 10);
        // An older snapshot than the range's.
        let older = cache.scan(at(0), &start, &end, Order::Asc, 10, &mut no_read);
        assert!(older.unwrap().is_none());
        // A write of unknown keys.
        cache.learn(at(1), &start, &end, Order::Asc, 128, &rows(1..=10));
        recent.unknown_write_begins();
        recent.unknown_write_ends();
        let later = recent.snapshot(Timestamp::new(2), recent.generation());
        let after = cache.scan(later, &start, &end, Order::Asc, 128, &mut no_read);
        assert!(after.unwrap().is_none());
        assert_eq!(cache.bytes(), 0, "the range was dropped");
    }

    #[test]
    fn a_snapshot_begun_around_a_write_not_recorded_neither_uses_nor_keeps_ranges() {
        let recent = Arc::new(RecentWrites::default());
        let mut cache = RangeCache::new(recent.clone());
        let (start, end) = (key(0), key(100));
        let mut no_read = |_: &[u8]| -> Result<Option<Value>> { panic!("no key is read") };
        let first = recent.snapshot(Timestamp::new(1), recent.generation());
        cache.learn(first, &start, &end, Order::Asc, 128, &rows(1..=10));
        // The generation is read, then an import commits, then the snapshot
        // begins: it sees the import, which the kept range does not.
        let before = recent.generation();
        recent.unknown_write_begins();
        recent.unknown_write_ends();
        let around = recent.snapshot(Timestamp::new(2), before);
        assert_eq!(around.generation, None);
        let answer = cache.scan(around, &start, &end, Order::Asc, 128, &mut no_read);
        assert!(
            answer.unwrap().is_none(),
            "the range from before the import"
        );
        cache.learn(around, &start, &end, Order::Asc, 128, &rows(1..=3));
        // Begun while one is being made: it may or may not see it.
        recent.unknown_write_begins();
        let during = recent.snapshot(Timestamp::new(3), recent.generation());
        assert_eq!(during.generation, None);
        recent.unknown_write_ends();
        // After: ranges are kept again, from this snapshot on.
        let after = recent.snapshot(Timestamp::new(3), recent.generation());
        assert!(after.generation.is_some());
        assert!(cache
            .scan(after, &start, &end, Order::Asc, 128, &mut no_read)
            .unwrap()
            .is_none());
        cache.learn(after, &start, &end, Order::Asc, 128, &rows(1..=4));
        let again = cache.scan(after, &start, &end, Order::Asc, 128, &mut no_read);
        assert_eq!(again.unwrap().unwrap(), rows(1..=4));
    }

    #[test]
    fn commits_learned_from_a_log_are_kept_in_order_or_drop_every_range() {
        let recent = Arc::new(RecentWrites::with_other_writers());
        let mut cache = RangeCache::new(recent.clone());
        let (start, end) = (key(0), key(100));
        recent.restart_at(Timestamp::new(1));
        let one = recent.snapshot(Timestamp::new(1), recent.generation());
        cache.learn(one, &start, &end, Order::Asc, 128, &rows(1..=10));
        // Read from the log: 2 and 3, in order.
        recent.learn(Timestamp::new(2), wrote(&[2]));
        recent.learn(Timestamp::new(3), wrote(&[3]));
        recent.learn(Timestamp::new(2), wrote(&[2]));
        assert_eq!(recent.through(), Timestamp::new(3));
        let reads = std::cell::RefCell::new(Vec::new());
        let mut read_key = |k: &[u8]| -> Result<Option<Value>> {
            reads.borrow_mut().push(k.to_vec());
            Ok(Some(obj! { "new" => true }))
        };
        let three = recent.snapshot(Timestamp::new(3), recent.generation());
        let got = cache.scan(three, &start, &end, Order::Asc, 128, &mut read_key);
        assert_eq!(got.unwrap().unwrap().len(), 10);
        assert_eq!(*reads.borrow(), vec![key(2), key(3)]);
        // This process recorded 9 for a commit that then failed; another
        // writer's 5 comes after it in the record: it cannot be put in
        // order, so every range goes.
        recent.record(Timestamp::new(9), wrote(&[9]));
        recent.learn(Timestamp::new(5), wrote(&[4]));
        assert_eq!(recent.through(), Timestamp::new(5));
        let five = recent.snapshot(Timestamp::new(5), recent.generation());
        let got = cache.scan(five, &start, &end, Order::Asc, 128, &mut read_key);
        assert!(got.unwrap().is_none(), "the range was dropped");
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn with_other_writers_a_snapshot_past_what_is_known_keeps_nothing() {
        let recent = Arc::new(RecentWrites::with_other_writers());
        let mut cache = RangeCache::new(recent.clone());
        let (start, end) = (key(0), key(100));
        let mut no_read = |_: &[u8]| -> Result<Option<Value>> { panic!("no key is read") };
        // This process recorded and committed 1.
        recent.record(Timestamp::new(1), wrote(&[1]));
        recent.committed(Timestamp::new(1));
        let one = recent.snapshot(Timestamp::new(1), recent.generation());
        assert!(one.generation.is_some());
        cache.learn(one, &start, &end, Order::Asc, 128, &rows(1..=10));
        // Another node commits 2: a snapshot at 2 may see it.
        let two = recent.snapshot(Timestamp::new(2), recent.generation());
        assert_eq!(two.generation, None);
        assert!(cache
            .scan(two, &start, &end, Order::Asc, 128, &mut no_read)
            .unwrap()
            .is_none());
        // This node's next write transaction finds 2 as the last commit.
        recent.restart_at(Timestamp::new(2));
        let two = recent.snapshot(Timestamp::new(2), recent.generation());
        assert!(two.generation.is_some());
        assert!(
            cache
                .scan(two, &start, &end, Order::Asc, 128, &mut no_read)
                .unwrap()
                .is_none(),
            "the range from before the other node's commit is dropped"
        );
        assert_eq!(cache.bytes(), 0);
        // A commit recorded but not (yet) committed is not known either.
        recent.record(Timestamp::new(3), wrote(&[2]));
        let three = recent.snapshot(Timestamp::new(3), recent.generation());
        assert_eq!(three.generation, None);
        recent.committed(Timestamp::new(3));
        let three = recent.snapshot(Timestamp::new(3), recent.generation());
        assert!(three.generation.is_some());
    }

    #[test]
    fn a_range_that_failed_to_come_up_to_date_is_dropped() {
        let recent = Arc::new(RecentWrites::default());
        let mut cache = RangeCache::new(recent.clone());
        let (start, end) = (key(0), key(100));
        cache.learn(at(1), &start, &end, Order::Asc, 128, &rows(1..=20));
        recent.record(Timestamp::new(2), wrote(&[3, 4]));
        let mut failing = |k: &[u8]| -> Result<Option<Value>> {
            if k == key(4) {
                Err(crate::error::StoreError::Misuse("a failed read"))
            } else {
                Ok(None)
            }
        };
        assert!(cache
            .scan(at(2), &start, &end, Order::Asc, 128, &mut failing)
            .is_err());
        assert_eq!(cache.bytes(), 0, "nothing half brought up to date is kept");
        let mut no_read = |_: &[u8]| -> Result<Option<Value>> { panic!("no range is kept") };
        let again = cache.scan(at(2), &start, &end, Order::Asc, 128, &mut no_read);
        assert!(again.unwrap().is_none());
    }

    #[test]
    fn the_commits_after_a_snapshot_are_found_past_a_failed_group() {
        let recent = RecentWrites::default();
        // 100 committed; a group at 110 and 120 failed; the writer went
        // on from 100 and committed 115, then 130.
        for ts in [100, 110, 120, 115, 130] {
            recent.record(Timestamp::new(ts), wrote(&[1]));
        }
        let count = |after: u64, through: u64| {
            recent
                .between(Timestamp::new(after), Timestamp::new(through))
                .map(|c| c.len())
        };
        assert_eq!(count(100, 130), Some(4), "the failed records too");
        assert_eq!(count(115, 130), Some(1));
        assert_eq!(count(100, 115), Some(2), "not past the snapshot");
        assert_eq!(count(130, 130), Some(0));
    }

    #[test]
    fn commits_past_what_is_kept_are_not_assumed_empty() {
        let recent = RecentWrites::default();
        for ts in 1..=(RECENT_COMMITS as u64 + 1) {
            recent.record(Timestamp::new(ts), wrote(&[1]));
        }
        assert!(recent
            .between(Timestamp::new(0), Timestamp::new(5))
            .is_none());
        let kept = recent.between(Timestamp::new(1), Timestamp::new(3));
        assert_eq!(kept.map(|c| c.len()), Some(2));
    }
}
