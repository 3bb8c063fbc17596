//! Several nodes on one schema: the commit log the writer appends to in
//! each commit and every node reads (in timestamp order, woken by the
//! commit's announcement, told of a gap when it fell behind the trimmed
//! part), the lease a standby takes over when the writer's session ends,
//! and the settings the nodes share (the writer's address, secrets).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use livebase_schema::{DocumentId, Object, Timestamp};
use livebase_store::persistence::{CommitLog, LogRead};
use livebase_store::readset::{Commit, DocumentWrite, WriteKind, WriteSet};
use livebase_store::{Document, Persistence};
use livebase_store_postgres::{
    lock_session_name, log_session_name, PostgresPersistence, LOG_RETENTION,
};
use livebase_testkit::postgres::{server_url, unique_name};

/// Two stores on one new schema, as two nodes would open it.
fn two_nodes(test: &str) -> Option<(String, PostgresPersistence, PostgresPersistence)> {
    let url = server_url(test)?;
    let schema = unique_name("nodes");
    let a = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    let b = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    Some((url, a, b))
}

fn doc() -> Document {
    Document {
        id: DocumentId::generate("t"),
        creation_time: 1.0,
        fields: Object::new(),
    }
}

fn writes(id: &str, key: &[u8]) -> WriteSet {
    let mut w = WriteSet::new();
    w.record(
        DocumentWrite {
            table: "t".into(),
            id: id.into(),
            kind: WriteKind::Insert,
        },
        &[],
        &[key.to_vec()],
    );
    w
}

fn commits(read: LogRead) -> Vec<Commit> {
    match read {
        LogRead::Commits(c) => c,
        gap => panic!("expected commits, read {gap:?}"),
    }
}

fn stamps(read: LogRead) -> Vec<u64> {
    commits(read).iter().map(|c| c.ts.get()).collect()
}

/// Runs `sql` as an administrator would, on a session of its own.
fn admin(url: &str, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> u64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.execute(sql, params).unwrap()
}

/// Polls `done` until it holds, failing only after a generous deadline.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn commits_are_logged_with_their_transaction_and_read_in_timestamp_order() {
    let Some((_, p, _)) = two_nodes("commits_are_logged") else {
        return;
    };
    let mut log = p.commit_log().unwrap().expect("PostgreSQL keeps a log");
    assert!(stamps(
        log.read_after(Timestamp::ZERO, 100, Duration::ZERO)
            .unwrap()
    )
    .is_empty());

    let mut w = p.connect().unwrap();
    // A group commit: two commits' write sets, one transaction.
    w.begin_write().unwrap();
    w.put_document(&doc()).unwrap();
    w.log_commit(Timestamp::new(10), &writes("t_1", b"k1"))
        .unwrap();
    w.log_commit(Timestamp::new(11), &writes("t_2", &[0xFF; 70_000]))
        .unwrap();
    w.commit(Timestamp::new(11)).unwrap();
    // Rolled back: nothing of it is logged.
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(12), &writes("t_3", b"lost"))
        .unwrap();
    w.rollback().unwrap();
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(13), &writes("t_4", b"k4"))
        .unwrap();
    w.commit(Timestamp::new(13)).unwrap();
    // A commit that logs nothing is not in the log.
    w.begin_write().unwrap();
    w.commit(Timestamp::new(14)).unwrap();

    let all = commits(
        log.read_after(Timestamp::ZERO, 100, Duration::ZERO)
            .unwrap(),
    );
    let ts: Vec<u64> = all.iter().map(|c| c.ts.get()).collect();
    assert_eq!(ts, [10, 11, 13]);
    assert_eq!(*all[0].writes, writes("t_1", b"k1"));
    assert_eq!(*all[1].writes, writes("t_2", &[0xFF; 70_000]));
    assert_eq!(*all[2].writes, writes("t_4", b"k4"));
    // Paged by `limit`, on from where the last page ended.
    let page = log.read_after(Timestamp::new(10), 1, Duration::ZERO);
    assert_eq!(stamps(page.unwrap()), [11]);
    let rest = log.read_after(Timestamp::new(11), 10, Duration::ZERO);
    assert_eq!(stamps(rest.unwrap()), [13]);
    let none = log.read_after(Timestamp::new(13), 10, Duration::from_millis(10));
    assert!(stamps(none.unwrap()).is_empty());
}

#[test]
fn a_fenced_commit_leaves_nothing_in_the_log() {
    let Some((url, p, _)) = two_nodes("a_fenced_commit_leaves_nothing") else {
        return;
    };
    p.claim_node().unwrap();
    let mut w = p.connect().unwrap();
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(1), &writes("t_1", b"k1"))
        .unwrap();
    w.commit(Timestamp::new(1)).unwrap();
    admin(
        &url,
        &format!(
            "UPDATE \"{}\".meta SET value = value + 1 WHERE name = 'epoch'",
            p.schema()
        ),
        &[],
    );
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(2), &writes("t_2", b"k2"))
        .unwrap();
    let refused = w.commit(Timestamp::new(2)).expect_err("fenced");
    assert!(refused.to_string().contains("taken over"), "{refused}");
    let mut log = p.commit_log().unwrap().unwrap();
    let read = log.read_after(Timestamp::ZERO, 10, Duration::ZERO).unwrap();
    assert_eq!(stamps(read), [1]);
}

/// When the log reader of `schema` last began a statement.
fn reader_last_statement(c: &mut postgres::Client, schema: &str) -> String {
    c.query_one(
        "SELECT query_start::text FROM pg_stat_activity WHERE application_name = $1",
        &[&log_session_name(schema)],
    )
    .unwrap()
    .get(0)
}

/// A reader waiting for a commit is woken by its announcement, long before
/// its wait (an hour) is over.
fn woken_by_a_commit(url: &str, p: &PostgresPersistence, log: Box<dyn CommitLog>, ts: u64) {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let before = reader_last_statement(&mut admin, p.schema());
    let reader = std::thread::spawn(move || {
        let mut log = log;
        let read = log
            .read_after(Timestamp::new(ts - 1), 10, Duration::from_secs(3600))
            .unwrap();
        (stamps(read), log)
    });
    // The reader has read (found nothing) and sits idle: it waits, or is
    // about to (an announcement that comes first is kept for it).
    eventually("the reader waits", || {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1
                 AND state = 'idle' AND query_start > $2::text::timestamptz",
                &[&log_session_name(p.schema()), &before],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    let mut w = p.connect().unwrap();
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(ts), &writes("t_1", b"k"))
        .unwrap();
    w.commit(Timestamp::new(ts)).unwrap();
    // Woken, not timed out: the wait is far past this deadline.
    eventually("the reader is woken", || reader.is_finished());
    let (read, _) = reader.join().unwrap();
    assert_eq!(read, [ts]);
}

#[test]
fn a_waiting_reader_is_woken_by_a_commit_also_after_its_session_was_ended() {
    let Some((url, p, other)) = two_nodes("a_waiting_reader_is_woken") else {
        return;
    };
    // The reader is another node's.
    let log = other.commit_log().unwrap().unwrap();
    woken_by_a_commit(&url, &p, log, 5);

    // The reader's session ends (a restart of the server, an
    // administrator); its next read connects again and listens again.
    let mut log = other.commit_log().unwrap().unwrap();
    assert_eq!(
        stamps(
            log.read_after(Timestamp::new(4), 10, Duration::ZERO)
                .unwrap()
        ),
        [5]
    );
    let ended = admin(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&log_session_name(p.schema())],
    );
    assert!(ended >= 1);
    let read = log.read_after(Timestamp::new(5), 10, Duration::ZERO);
    assert!(stamps(read.unwrap()).is_empty());
    woken_by_a_commit(&url, &p, log, 6);
}

#[test]
fn a_reader_behind_the_trimmed_log_is_told_of_the_gap() {
    let Some((_, p, _)) = two_nodes("a_reader_behind_the_trimmed_log") else {
        return;
    };
    let retention = LOG_RETENTION.as_nanos() as u64;
    let t1 = 1_000;
    let t2 = t1 + retention + 1;
    let t3 = t2 + retention + 1;
    let mut w = p.connect().unwrap();
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(t1), &writes("t_1", b"k1"))
        .unwrap();
    w.commit(Timestamp::new(t1)).unwrap();
    drop(w);
    // A connection's first logged commit trims: t1 is past the retention.
    let mut w = p.connect().unwrap();
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(t2), &writes("t_2", b"k2"))
        .unwrap();
    w.commit(Timestamp::new(t2)).unwrap();
    // Its next does not (trims are spaced): t2 stays, past its retention.
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(t3), &writes("t_3", b"k3"))
        .unwrap();
    w.commit(Timestamp::new(t3)).unwrap();

    let mut log = p.commit_log().unwrap().unwrap();
    match log.read_after(Timestamp::ZERO, 10, Duration::ZERO).unwrap() {
        LogRead::Gap { through } => assert_eq!(through, Timestamp::new(t1)),
        read => panic!("expected a gap, read {read:?}"),
    }
    let read = log.read_after(Timestamp::new(t1 - 1), 10, Duration::ZERO);
    assert!(matches!(read.unwrap(), LogRead::Gap { through } if through.get() == t1));
    let read = log.read_after(Timestamp::new(t1), 10, Duration::ZERO);
    assert_eq!(stamps(read.unwrap()), [t2, t3]);
}

#[test]
fn a_schema_made_before_the_log_gets_it_on_open() {
    let Some((url, p, _)) = two_nodes("a_schema_made_before_the_log") else {
        return;
    };
    let schema = p.schema().to_string();
    drop(p);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(&format!(
        "DROP TABLE \"{schema}\".commit_log; DROP TABLE \"{schema}\".shared_settings;"
    ))
    .unwrap();
    let p = PostgresPersistence::open_schema(&url, &schema, None).expect("opens");
    let mut w = p.connect().unwrap();
    w.begin_write().unwrap();
    w.log_commit(Timestamp::new(3), &writes("t_1", b"k"))
        .unwrap();
    w.commit(Timestamp::new(3)).unwrap();
    let mut log = p.commit_log().unwrap().unwrap();
    let read = log.read_after(Timestamp::ZERO, 10, Duration::ZERO);
    assert_eq!(stamps(read.unwrap()), [3]);
    assert_eq!(p.shared_secret("s").unwrap().len(), 32);
}

#[test]
fn a_standby_takes_over_when_the_writers_lock_session_is_ended() {
    let Some((url, first, second)) = two_nodes("a_standby_takes_over") else {
        return;
    };
    assert!(first.try_claim_node().unwrap());
    assert!(first.try_claim_node().unwrap(), "held already");
    assert_eq!(first.epoch(), 1);
    assert!(!second.try_claim_node().unwrap(), "held by the first");
    assert!(!first.lease_lost());
    let mut writer = first.connect().unwrap();
    writer.begin_write().unwrap();
    writer.put_document(&doc()).unwrap();
    writer.commit(Timestamp::new(1)).unwrap();

    let ended = admin(
        &url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&lock_session_name(first.schema())],
    );
    assert_eq!(ended, 1, "the first's lock session");
    eventually("the standby claims", || second.try_claim_node().unwrap());
    assert_eq!(second.epoch(), 2);

    writer.begin_write().unwrap();
    let lost = doc();
    writer.put_document(&lost).unwrap();
    writer
        .commit(Timestamp::new(2))
        .expect_err("the deposed writer's commit is refused");
    eventually("the first learns its lease was lost", || first.lease_lost());
    assert!(first.lease_lost(), "and stays lost");
    assert!(
        first.try_claim_node().is_err(),
        "a lost lease claims no more"
    );

    let mut reader = second.connect().unwrap();
    assert_eq!(reader.begin_read().unwrap(), Timestamp::new(1));
    assert!(reader.get(&lost.id).unwrap().is_none());
    reader.end_read().unwrap();
    let mut w = second.connect().unwrap();
    w.begin_write().unwrap();
    w.commit(Timestamp::new(3)).expect("the new writer commits");
    assert!(!second.lease_lost());
}

#[test]
fn a_standby_takes_over_when_the_writer_is_dropped() {
    let Some((_, first, second)) = two_nodes("a_standby_takes_over_when_dropped") else {
        return;
    };
    first.claim_node().unwrap();
    let clone = first.clone();
    assert!(!second.try_claim_node().unwrap());
    let refused = second.claim_node().expect_err("held by the first");
    assert!(
        refused.to_string().contains("another livebase node"),
        "{refused}"
    );
    drop(first);
    assert!(!second.try_claim_node().unwrap(), "a clone still holds it");
    drop(clone);
    eventually("the standby claims", || second.try_claim_node().unwrap());
    assert_eq!(second.epoch(), 2);
}

#[test]
fn the_writers_address_is_fenced_by_its_epoch() {
    let Some((url, first, second)) = two_nodes("the_writers_address") else {
        return;
    };
    assert_eq!(first.writer_url().unwrap(), None);
    assert!(
        first.advertise_writer("http://a").is_err(),
        "not claimed yet"
    );
    first.claim_node().unwrap();
    first.advertise_writer("http://a").unwrap();
    assert_eq!(
        second.writer_url().unwrap(),
        Some(("http://a".to_string(), 1))
    );
    first.advertise_writer("http://a2").unwrap();
    assert_eq!(
        second.writer_url().unwrap(),
        Some(("http://a2".to_string(), 1))
    );
    // Another node moved the epoch on: the first may not advertise itself.
    admin(
        &url,
        &format!(
            "UPDATE \"{}\".meta SET value = value + 1 WHERE name = 'epoch'",
            first.schema()
        ),
        &[],
    );
    let refused = first.advertise_writer("http://old").expect_err("deposed");
    assert!(refused.to_string().contains("taken over"), "{refused}");
    assert_eq!(
        second.writer_url().unwrap(),
        Some(("http://a2".to_string(), 1))
    );
    drop(first);
    eventually("the second claims", || second.try_claim_node().unwrap());
    assert_eq!(second.epoch(), 3);
    second.advertise_writer("http://b").unwrap();
    assert_eq!(
        second.writer_url().unwrap(),
        Some(("http://b".to_string(), 3))
    );
}

#[test]
fn nodes_asking_for_a_secret_at_once_agree_on_it() {
    let Some((_, first, second)) = two_nodes("nodes_asking_for_a_secret") else {
        return;
    };
    let barrier = Arc::new(Barrier::new(2));
    let ask = |p: PostgresPersistence| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            barrier.wait();
            p.shared_secret("signing").unwrap()
        })
    };
    let (a, b) = (ask(first.clone()), ask(second.clone()));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a.len(), 32);
    assert_eq!(a, b);
    assert_eq!(first.shared_secret("signing").unwrap(), a, "kept");
    let other = second.shared_secret("other").unwrap();
    assert_eq!(other.len(), 32);
    assert_ne!(other, a, "each name its own");
    assert!(first.shared_secret("").is_err());
}
