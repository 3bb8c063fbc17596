//! Live queries over the sync protocol, end to end (`docs/reference/invariants.md`, invariants 3–5):
//! a subscription's first result and its pushes, version chaining, read your
//! writes, selectivity across organizations, shared evaluations, unchanged
//! results not re-sent, and one consistent Transition per commit. Every
//! client checks on each Transition that `startVersion` is the previous
//! `endVersion` and that `ts` never goes back (see `livebase_testkit::Client`).

mod support;

use livebase_schema::protocol::StateVersion;
use livebase_schema::{obj, Value};
use livebase_testkit::{remove, TestServer, SILENCE};
use support::{docs, id_of, is_note_id, note, org};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gets_its_result_then_a_push_for_each_write_from_another_connection() {
    let server = TestServer::start(support::registry()).await;
    let mut reader = server.client().await;
    let mut writer = server.client().await;

    let first = reader.subscribe(&[(0, "notes:list", org("A"))]).await;
    assert_eq!(first.start, StateVersion::INITIAL);
    assert_eq!(first.end.query_set, 1);
    assert_eq!(first.end.identity, 0);
    assert_eq!(first.updated(0), Some(&Value::Array(vec![])));

    let added = writer
        .mutation("notes:add", note("A", "hello", 1.0))
        .await
        .expect("notes:add succeeds");
    assert!(is_note_id(&added.value), "{:?}", added.value);
    let pushed = reader.transition().await;
    assert_eq!(pushed.start, first.end);
    assert!(
        pushed.end.ts >= added.ts,
        "the push is at or after the commit"
    );
    assert_eq!(pushed.end.query_set, 1);
    let list = docs(pushed.updated(0).expect("the list is pushed"));
    assert_eq!(list.len(), 1);
    assert_eq!(Value::from(id_of(&list[0])), added.value);
    assert_eq!(list[0].get("body"), Some(&Value::from("hello")));

    let set = writer
        .mutation(
            "notes:set",
            obj! { "id" => added.value.clone(), "body" => "edited" },
        )
        .await
        .expect("notes:set succeeds");
    assert!(set.ts > added.ts, "commit timestamps strictly increase");
    let again = reader.transition().await;
    assert_eq!(again.start, pushed.end);
    assert!(again.end.ts >= set.ts);
    let list = docs(again.updated(0).expect("the list is pushed again"));
    assert_eq!(list[0].get("body"), Some(&Value::from("edited")));

    let removed = writer
        .mutation("notes:remove", obj! { "id" => added.value })
        .await
        .expect("notes:remove succeeds");
    let last = reader.transition().await;
    assert!(last.end.ts >= removed.ts);
    assert_eq!(last.updated(0), Some(&Value::Array(vec![])));
    reader.expect_silence(SILENCE).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_is_followed_by_a_transition_at_its_ts_even_when_nothing_changed() {
    let server = TestServer::start(support::registry()).await;

    // No queries at all.
    let mut bare = server.client().await;
    let done = bare
        .mutation("notes:add", note("A", "x", 1.0))
        .await
        .expect("notes:add succeeds");
    let seen = bare.transitions_until(done.ts).await;
    assert!(seen.iter().all(|t| t.modifications.is_empty()), "{seen:?}");
    assert_eq!(seen[0].start, StateVersion::INITIAL);

    // Queries that the write does not touch.
    let mut other = server.client().await;
    other.subscribe(&[(0, "notes:list", org("B"))]).await;
    let done = other
        .mutation("notes:add", note("A", "y", 2.0))
        .await
        .expect("notes:add succeeds");
    let seen = other.transitions_until(done.ts).await;
    assert!(seen.iter().all(|t| t.modifications.is_empty()), "{seen:?}");

    // A mutation that writes no document.
    let done = other
        .mutation("notes:noop", obj! {})
        .await
        .expect("notes:noop succeeds");
    let seen = other.transitions_until(done.ts).await;
    assert!(seen.iter().all(|t| t.modifications.is_empty()), "{seen:?}");

    // Several in a row: each answered in turn.
    for i in 0..5 {
        let done = bare
            .mutation("notes:add", note("C", "z", f64::from(i)))
            .await
            .expect("notes:add succeeds");
        bare.transitions_until(done.ts).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_one_organization_neither_reruns_nor_pushes_another_organizations_queries() {
    let server = TestServer::start(support::registry()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut writer = server.client().await;
    a.subscribe(&[(0, "notes:list", org("A"))]).await;
    b.subscribe(&[
        (0, "notes:list", org("B")),
        (1, "notes:count", org("B")),
        (
            2,
            "notes:range",
            obj! { "organizationId" => "B", "lo" => 0.0, "hi" => 100.0 },
        ),
    ])
    .await;

    let before = server.evaluations();
    let added = writer
        .mutation("notes:add", note("A", "only A", 1.0))
        .await
        .expect("notes:add succeeds");
    let pushed = a.transition().await;
    assert_eq!(docs(pushed.updated(0).expect("A's list")).len(), 1);
    let id = added.value;
    writer
        .mutation("notes:set", obj! { "id" => id.clone(), "n" => 50.0 })
        .await
        .expect("notes:set succeeds");
    a.transition().await;
    writer
        .mutation("notes:remove", obj! { "id" => id })
        .await
        .expect("notes:remove succeeds");
    a.transition().await;

    b.expect_silence(SILENCE).await;
    assert_eq!(
        server.evaluations() - before,
        3,
        "only A's query re-ran, once per write"
    );

    // The other way round: a write to B reaches B's three queries, not A's.
    let before = server.evaluations();
    writer
        .mutation("notes:add", note("B", "only B", 5.0))
        .await
        .expect("notes:add succeeds");
    let pushed = b.transition().await;
    assert_eq!(pushed.query_ids(), vec![0, 1, 2]);
    assert_eq!(pushed.updated(1), Some(&Value::Float64(1.0)));
    a.expect_silence(SILENCE).await;
    assert_eq!(server.evaluations() - before, 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_subscriptions_on_many_connections_share_one_evaluation() {
    let server = TestServer::start(support::registry()).await;
    let mut clients = Vec::new();
    for i in 0..4u32 {
        let mut c = server.client().await;
        // Different query ids on each connection: sharing is by (path, args,
        // identity), not by the client's numbering.
        let t = c.subscribe(&[(10 + i, "notes:list", org("A"))]).await;
        assert_eq!(t.updated(10 + i), Some(&Value::Array(vec![])));
        clients.push(c);
    }
    // The same query twice on one connection shares too.
    let t = clients[0].subscribe(&[(99, "notes:list", org("A"))]).await;
    assert_eq!(t.updated(99), Some(&Value::Array(vec![])));
    assert_eq!(server.evaluations(), 1, "four connections, one evaluation");

    let mut writer = server.client().await;
    for round in 1..=3u32 {
        let before = server.evaluations();
        let done = writer
            .mutation("notes:add", note("A", "shared", f64::from(round)))
            .await
            .expect("notes:add succeeds");
        for (i, c) in clients.iter_mut().enumerate() {
            let t = c.transition().await;
            assert!(t.end.ts >= done.ts);
            let qid = 10 + i as u32;
            let list = docs(t.updated(qid).expect("each connection gets the result"));
            assert_eq!(list.len(), round as usize);
            if i == 0 {
                assert_eq!(t.updated(99), t.updated(qid));
            }
        }
        assert_eq!(
            server.evaluations() - before,
            1,
            "one evaluation per write, not one per connection"
        );
    }

    // Other arguments are another query.
    let mut other = server.client().await;
    other.subscribe(&[(0, "notes:list", org("B"))]).await;
    assert_eq!(server.evaluations(), 5);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_that_leaves_the_result_unchanged_sends_nothing() {
    let server = TestServer::start(support::registry()).await;
    let mut counter = server.client().await;
    let mut lister = server.client().await;
    let mut both = server.client().await;
    let mut writer = server.client().await;
    let id = writer
        .mutation("notes:add", note("A", "first", 1.0))
        .await
        .expect("notes:add succeeds")
        .value;

    let t = counter.subscribe(&[(0, "notes:count", org("A"))]).await;
    assert_eq!(t.updated(0), Some(&Value::Float64(1.0)));
    lister.subscribe(&[(0, "notes:list", org("A"))]).await;
    both.subscribe(&[(0, "notes:count", org("A")), (1, "notes:list", org("A"))])
        .await;

    // Changing a field the count does not depend on: the count's read set is
    // hit (so it re-runs), its result is the same (so nobody is sent it).
    let before = server.evaluations();
    writer
        .mutation("notes:set", obj! { "id" => id.clone(), "body" => "second" })
        .await
        .expect("notes:set succeeds");
    let pushed = lister.transition().await;
    let list = docs(pushed.updated(0).expect("the list changed"));
    assert_eq!(list[0].get("body"), Some(&Value::from("second")));
    let pushed = both.transition().await;
    assert_eq!(
        pushed.query_ids(),
        vec![1],
        "only the changed result is sent"
    );
    counter.expect_silence(SILENCE).await;
    assert_eq!(
        server.evaluations() - before,
        2,
        "count and list both re-ran"
    );

    // A patch to the current values writes nothing: no re-run, no push.
    let before = server.evaluations();
    writer
        .mutation(
            "notes:set",
            obj! { "id" => id.clone(), "body" => "second", "n" => 1.0 },
        )
        .await
        .expect("notes:set succeeds");
    lister.expect_silence(SILENCE).await;
    counter.expect_silence(SILENCE).await;
    both.expect_silence(SILENCE).await;
    assert_eq!(server.evaluations(), before);

    // And a change the count does see still reaches it.
    writer
        .mutation("notes:add", note("A", "third", 3.0))
        .await
        .expect("notes:add succeeds");
    let pushed = counter.transition().await;
    assert_eq!(pushed.updated(0), Some(&Value::Float64(2.0)));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_changed_by_one_commit_arrive_together_in_one_transition() {
    let server = TestServer::start(support::registry()).await;
    let mut watcher = server.client().await;
    let mut writer = server.client().await;
    let id = writer
        .mutation("notes:add", note("A", "mover", 5.0))
        .await
        .expect("notes:add succeeds")
        .value;
    let range_a = obj! { "organizationId" => "A", "lo" => 0.0, "hi" => 10.0 };
    let queries = [
        (1, "notes:list", org("A")),
        (2, "notes:list", org("B")),
        (3, "notes:count", org("A")),
        (4, "notes:count", org("B")),
        (5, "notes:range", range_a.clone()),
    ];
    let first = watcher.subscribe(&queries).await;
    assert_eq!(first.query_ids(), vec![1, 2, 3, 4, 5]);
    assert_eq!(first.updated(3), Some(&Value::Float64(1.0)));
    assert_eq!(first.updated(4), Some(&Value::Float64(0.0)));

    // Moving the note from A to B changes all five at once: they arrive in one
    // Transition, so the client never sees it in both organizations or none.
    let moved = writer
        .mutation(
            "notes:set",
            obj! { "id" => id.clone(), "organizationId" => "B" },
        )
        .await
        .expect("notes:set succeeds");
    let t = watcher.transition().await;
    assert!(t.end.ts >= moved.ts);
    assert_eq!(t.query_ids(), vec![1, 2, 3, 4, 5]);
    assert_eq!(t.updated(1), Some(&Value::Array(vec![])));
    assert_eq!(docs(t.updated(2).expect("B's list")).len(), 1);
    assert_eq!(t.updated(3), Some(&Value::Float64(0.0)));
    assert_eq!(t.updated(4), Some(&Value::Float64(1.0)));
    assert_eq!(t.updated(5), Some(&Value::Array(vec![])));
    watcher.expect_silence(SILENCE).await;
    // Each pushed result is the fresh one.
    for (qid, path, fields) in &queries {
        let fresh = support::query(&server, path, fields.clone())
            .await
            .expect("fresh");
        assert_eq!(t.updated(*qid), Some(&fresh), "{path} {fields:?}");
    }

    // The same when the watcher writes itself: one Transition carries every
    // change (any other Transition before its ts carries none).
    let back = watcher
        .mutation("notes:set", obj! { "id" => id, "organizationId" => "A" })
        .await
        .expect("notes:set succeeds");
    let seen = watcher.transitions_until(back.ts).await;
    let with_changes: Vec<_> = seen
        .iter()
        .filter(|t| !t.modifications.is_empty())
        .collect();
    assert_eq!(with_changes.len(), 1, "{seen:?}");
    assert_eq!(with_changes[0].query_ids(), vec![1, 2, 3, 4, 5]);
    assert_eq!(with_changes[0].updated(3), Some(&Value::Float64(1.0)));
    assert_eq!(with_changes[0].updated(4), Some(&Value::Float64(0.0)));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_query_is_acknowledged_and_pushed_no_more() {
    let server = TestServer::start(support::registry()).await;
    let mut watcher = server.client().await;
    let mut writer = server.client().await;
    watcher
        .subscribe(&[(0, "notes:list", org("A")), (1, "notes:count", org("A"))])
        .await;
    let live = || {
        server
            .stats()
            .live_queries
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(live(), 2);

    let t = watcher.modify(vec![remove(0)]).await;
    assert_eq!(t.end.query_set, 2);
    assert_eq!(t.query_ids(), vec![0]);
    assert!(matches!(
        t.modifications[0],
        livebase_schema::protocol::StateModification::QueryRemoved { .. }
    ));
    assert_eq!(live(), 1);

    writer
        .mutation("notes:add", note("A", "after removal", 1.0))
        .await
        .expect("notes:add succeeds");
    let t = watcher.transition().await;
    assert_eq!(t.query_ids(), vec![1], "the removed query is not pushed");
    assert_eq!(t.updated(1), Some(&Value::Float64(1.0)));

    // Re-adding under the same id works and answers at once.
    let t = watcher.subscribe(&[(0, "notes:list", org("A"))]).await;
    assert_eq!(docs(t.updated(0).expect("the list")).len(), 1);

    // Closing the connection releases its queries.
    watcher.close().await;
    let deadline = tokio::time::Instant::now() + livebase_testkit::PATIENCE;
    while live() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queries outlived their connection"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_client_is_never_sent_a_ts_below_its_max_observed_timestamp() {
    let server = TestServer::start(support::registry()).await;
    let mut first = server.client().await;
    let mut last = None;
    for i in 0..3 {
        let done = first
            .mutation("notes:add", note("A", "before", f64::from(i)))
            .await
            .expect("notes:add succeeds");
        last = Some(done.ts);
    }
    let seen = first.transitions_until(last.expect("a ts")).await;
    let observed = seen.last().expect("a Transition").end.ts;
    let session = first.session.clone();
    first.close().await;

    // Resume on a restarted server, as the npm client does: same session, the
    // newest ts it saw, the whole query set re-added from version 0.
    let server = server.restart(support::registry()).await;
    let connect = livebase_schema::protocol::ClientMessage::Connect {
        session_id: session,
        connection_count: 1,
        last_close_reason: Some("ServerRestart".into()),
        max_observed_timestamp: Some(observed),
        client_ts: Some(0),
    };
    let mut resumed = livebase_testkit::Client::connect_with(&server.ws_url(), connect).await;
    let t = resumed.subscribe(&[(0, "notes:list", org("A"))]).await;
    assert_eq!(t.start, StateVersion::INITIAL);
    assert!(t.end.ts >= observed, "{:?} < {observed:?}", t.end.ts);
    assert_eq!(docs(t.updated(0).expect("the list")).len(), 3);
    server.shutdown().await;
}

/// On the server's clock, a test clock: the 15 s of idleness pass at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_sent_a_ping_and_stays_usable() {
    use livebase_runtime::clock::TestClock;
    use livebase_runtime::server::PING_INTERVAL;
    use std::time::Duration;
    let time = TestClock::new();
    let clock = time.clock();
    let server = TestServer::start_tuned(support::registry(), |o| o.clock = clock.clone()).await;
    let mut idle = server.client().await;
    idle.subscribe(&[(0, "notes:count", org("A"))]).await;
    let since = clock.now();
    // Not yet: two seconds short of the interval, nothing is sent.
    time.advance(PING_INTERVAL - Duration::from_secs(2));
    let early = idle.next_frame_with_pings(SILENCE).await;
    let frame = match early {
        Some(frame) => Some(frame),
        None => {
            time.advance(Duration::from_secs(2));
            idle.next_frame_with_pings(livebase_testkit::PATIENCE).await
        }
    };
    match frame {
        Some(livebase_testkit::Frame::Message(livebase_schema::protocol::ServerMessage::Ping)) => {}
        other => panic!("expected a Ping after {PING_INTERVAL:?} idle, got {other:?}"),
    }
    let waited = clock.now() - since;
    assert!(
        waited + Duration::from_millis(500) >= PING_INTERVAL,
        "pinged after only {waited:?}"
    );
    let done = idle
        .mutation("notes:add", note("A", "awake", 1.0))
        .await
        .expect("notes:add succeeds");
    let seen = idle.transitions_until(done.ts).await;
    assert!(seen
        .iter()
        .any(|t| t.updated(0) == Some(&Value::Float64(1.0))));
    server.shutdown().await;
}

/// The ping timer reads the server's clock: with pings an hour apart, moving
/// the clock an hour brings one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ping_timer_runs_on_the_servers_clock() {
    use livebase_runtime::clock::TestClock;
    use std::time::Duration;
    let time = TestClock::new();
    let clock = time.clock();
    let server = TestServer::start_tuned(support::registry(), |o| {
        o.clock = clock;
        o.edge.ping_interval = Duration::from_secs(3600);
        o.edge.pong_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut idle = server.client().await;
    idle.subscribe(&[(0, "notes:count", org("A"))]).await;
    // The handler notes when it last sent (the Transition just received) a
    // moment after the client has it; an advance made before that moment
    // only moves its next ping an hour on. So advance again, a few times:
    // on the wall clock none of these waits would bring a ping due in an
    // hour.
    let mut pinged = false;
    for _ in 0..5 {
        time.advance(Duration::from_secs(3600));
        match idle.next_frame_with_pings(Duration::from_secs(2)).await {
            Some(livebase_testkit::Frame::Message(
                livebase_schema::protocol::ServerMessage::Ping,
            )) => {
                pinged = true;
                break;
            }
            None => continue,
            other => panic!("expected a Ping once the clock moved an hour, got {other:?}"),
        }
    }
    assert!(pinged, "no Ping after moving the clock by hours");
    server.shutdown().await;
}

/// Shutdown closes every WebSocket with 1001 ("going away", which clients
/// take as "reconnect"), one holding live queries and one holding none: it
/// reaches each through its outbound queue. (Were it not to, the server
/// would stop its subscription worker after its grace period, and the
/// connections would be closed as too slow, 1013.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_with_going_away() {
    const GOING_AWAY: u16 = 1001;
    let server = TestServer::start(support::registry()).await;
    let mut subscribed = server.client().await;
    subscribed.subscribe(&[(0, "notes:list", org("A"))]).await;
    let mut idle = server.client().await;
    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(subscribed.expect_close().await, Some(GOING_AWAY));
    assert_eq!(idle.expect_close().await, Some(GOING_AWAY));
    stopping.await.expect("the server stops");
}
