//! Index ranges a node's connections keep stay exact when other nodes and
//! tools commit to the same database: a node knows its own commits and those
//! its commit log reader has read, so a snapshot past them keeps nothing, and
//! the node's next write transaction, finding a commit it did not make,
//! drops every range kept before it. (The conformance suite checks the
//! ranges against this node's own commits, told and not told of.)

use std::sync::Arc;
use std::time::Duration;

use livebase_schema::{DocumentId, Object, Timestamp};
use livebase_store::persistence::{LogRead, Order};
use livebase_store::readset::{DocumentWrite, WriteKind, WriteSet};
use livebase_store::{Document, Persistence, StoreConnection};
use livebase_store_postgres::PostgresPersistence;
use livebase_testkit::postgres::{drop_schema, server_url, unique_name};

/// Commits one new document with index key `key` through `w`, telling its
/// node what it wrote and logging it for the other nodes, as the writer
/// does; the commit's timestamp.
fn commit_one(w: &mut dyn StoreConnection, key: &[u8]) -> Timestamp {
    let ts = w.begin_write().unwrap().next_after(0);
    let doc = Document {
        id: DocumentId::generate("r"),
        creation_time: ts.get() as f64,
        fields: Object::new(),
    };
    w.insert_document(&doc).unwrap();
    w.put_index_entry(key, &doc.id).unwrap();
    let mut writes = WriteSet::new();
    let write = DocumentWrite {
        table: "r".into(),
        id: doc.id.as_str().to_string(),
        kind: WriteKind::Insert,
    };
    writes.record(write, &[], &[key.to_vec()]);
    let writes = Arc::new(writes);
    w.will_commit(ts, &writes);
    w.log_commit(ts, &writes).unwrap();
    w.commit(ts).unwrap();
    ts
}

/// The keys of `[a, b)` on `kept`, checked against a fresh connection of
/// the same node.
fn keys(node: &PostgresPersistence, kept: &mut dyn StoreConnection) -> Vec<Vec<u8>> {
    let mut truth = node.connect().unwrap();
    let at = kept.begin_read().unwrap();
    assert_eq!(truth.begin_read().unwrap(), at);
    let got = kept.scan_values(b"a", b"b", Order::Asc, 100).unwrap();
    assert_eq!(got, truth.scan_values(b"a", b"b", Order::Asc, 100).unwrap());
    kept.end_read().unwrap();
    truth.end_read().unwrap();
    got.into_iter().map(|(k, _)| k).collect()
}

#[test]
fn another_nodes_commit_is_never_missed_by_a_nodes_kept_ranges() {
    let Some(url) = server_url("another_nodes_commit_is_never_missed") else {
        return;
    };
    let schema = unique_name("ranges");
    let node = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    let other = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    let (mut w, mut kept) = (node.connect().unwrap(), node.connect().unwrap());
    let mut w_other = other.connect().unwrap();

    commit_one(w.as_mut(), b"a1");
    assert_eq!(keys(&node, kept.as_mut()), vec![b"a1".to_vec()]);
    // Another node commits into the kept range.
    commit_one(w_other.as_mut(), b"a2");
    assert_eq!(keys(&node, kept.as_mut()).len(), 2);
    // This node commits again, outside the range: its snapshot is then one
    // this node knows, yet the range from before must not be used.
    commit_one(w.as_mut(), b"c1");
    assert_eq!(keys(&node, kept.as_mut()).len(), 2);
    // Both again, alternating, each into the range.
    for i in 3..9u8 {
        let key = [b'a', b'0' + i];
        if i % 2 == 0 {
            commit_one(w.as_mut(), &key);
        } else {
            commit_one(w_other.as_mut(), &key);
        }
        assert_eq!(keys(&node, kept.as_mut()).len(), usize::from(i));
    }
    drop((w, kept, w_other, node, other));
    drop_schema(&url, &schema);
}

#[test]
fn a_follower_keeps_ranges_from_the_commits_its_log_reader_reads() {
    let Some(url) = server_url("a_follower_keeps_ranges") else {
        return;
    };
    let schema = unique_name("follow");
    let writer = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    let follower = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    let mut w = writer.connect().unwrap();
    let mut kept = follower.connect().unwrap();
    let mut log = follower.commit_log().unwrap().expect("a commit log");
    let mut after = Timestamp::new(0);
    let mut read_log = |log: &mut Box<dyn livebase_store::persistence::CommitLog>| match log
        .read_after(after, 100, Duration::ZERO)
        .unwrap()
    {
        LogRead::Commits(commits) => {
            if let Some(last) = commits.last() {
                after = last.ts;
            }
        }
        LogRead::Gap { through } => after = through,
    };
    let mut expected = 0;
    for i in 0..30u8 {
        // Into the range and out of it, by turns.
        let inside = i % 3 != 2;
        let key = [if inside { b'a' } else { b'c' }, i];
        commit_one(w.as_mut(), &key);
        expected += usize::from(inside);
        // Read before the log reader has the commit, and after.
        assert_eq!(keys(&follower, kept.as_mut()).len(), expected);
        read_log(&mut log);
        assert_eq!(keys(&follower, kept.as_mut()).len(), expected);
    }
    drop((w, kept, log, writer, follower));
    drop_schema(&url, &schema);
}
