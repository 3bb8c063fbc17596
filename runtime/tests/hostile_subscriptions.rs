//! Hostile clients against the subscription worker (issue 11, items 1 and 4),
//! each sent against a real server: queries the worker must not keep
//! (functions that do not exist, invalid arguments, arguments past the
//! budgets), query-set and identity churn past a connection's budget, and one
//! identity's backlog of heavy queries that must not hold back another
//! identity's push.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use livebase_runtime::server::{serve_with, ServerOptions};
use livebase_runtime::subscriptions::{
    AUTHENTICATE_BURST, MAX_QUERY_ARGS_BYTES_PER_CONNECTION, MAX_REFUSED_QUERIES_PER_CONNECTION,
    QUERY_CHURN_BURST,
};
use livebase_schema::protocol::{AuthenticationToken, ClientMessage, ServerMessage, SessionId};
use livebase_schema::{obj, v, Value};
use livebase_testkit::{add, error_code, remove, Client, Frame, TestServer, Transition, PATIENCE};
use support::org;

/// How long the heavy tenant's hundreds of evaluations may take (a debug
/// build on a loaded machine); only waits, never asserted on.
const SLOW: std::time::Duration = std::time::Duration::from_secs(120);

/// Close code for a client past one of its budgets.
const CLOSE_POLICY: u16 = 1008;

fn live_queries(server: &TestServer) -> u64 {
    server.stats().live_queries.load(Ordering::SeqCst)
}

fn args_bytes(server: &TestServer) -> u64 {
    server.stats().query_args_bytes.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_the_worker_cannot_run_are_refused_and_nothing_of_them_is_kept() {
    let server = TestServer::start(support::registry()).await;
    // The attack of the issue, scaled down: anonymous connections adding
    // queries with large arguments to a function that does not exist, to an
    // internal one, and to a real one with arguments its validator refuses.
    let blob = "x".repeat(150_000);
    let mut clients = Vec::new();
    for k in 0..3 {
        let mut c = server.client().await;
        let adds = (0..10u32)
            .map(|i| {
                let blob = format!("{k}-{i}-{blob}");
                match i % 3 {
                    0 => add(i, "nope:nothing", obj! { "blob" => blob.as_str() }),
                    1 => add(i, "notes:secret", obj! { "blob" => blob.as_str() }),
                    _ => add(
                        i,
                        "notes:list",
                        obj! { "organizationId" => "A", "blob" => blob.as_str() },
                    ),
                }
            })
            .collect();
        let t = c.modify(adds).await;
        for i in 0..10 {
            let err = t.failed(i).expect("every query is refused");
            assert_eq!(error_code(err), Some("INVALID_ARGUMENT"), "{err:?}");
            assert!(err.message.len() < 1000, "the error does not echo the args");
        }
        assert!(t.failed(0).unwrap().message.contains("nope:nothing"));
        assert!(t.failed(1).unwrap().message.contains("notes:secret"));
        assert!(t.failed(2).unwrap().message.contains("blob"));
        clients.push(c);
    }
    assert_eq!(live_queries(&server), 0, "no refused query is held");
    assert_eq!(
        args_bytes(&server),
        0,
        "no refused query's arguments are held"
    );
    assert_eq!(server.stats().refused_queries.load(Ordering::SeqCst), 30);

    // The client still holds the refused queries and removes them as any other.
    let c = &mut clients[0];
    let t = c.modify((0..10).map(remove).collect()).await;
    assert_eq!(t.query_ids(), (0..10).collect::<Vec<_>>());
    // A query id freed that way can be used again, for a query that runs.
    let t = c.subscribe(&[(0, "notes:count", org("A"))]).await;
    assert_eq!(t.updated(0), Some(&Value::Float64(0.0)));
    assert_eq!(live_queries(&server), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_past_a_connections_budget_are_refused_with_limit_exceeded() {
    let server = TestServer::start(support::registry()).await;
    // Valid arguments, a quarter of the budget each: the fourth is over it.
    let quarter = MAX_QUERY_ARGS_BYTES_PER_CONNECTION / 4;
    let mut clients = Vec::new();
    for k in 0..3 {
        let mut c = server.client().await;
        for i in 0..6u32 {
            let organization = format!("{k}-{i}-{}", "o".repeat(quarter));
            let t = c.subscribe(&[(i, "notes:list", org(&organization))]).await;
            if i < 3 {
                assert_eq!(t.updated(i), Some(&Value::Array(vec![])), "query {i}");
            } else {
                let err = t.failed(i).expect("past the budget");
                assert_eq!(error_code(err), Some("LIMIT_EXCEEDED"), "{err:?}");
                assert!(err.message.contains("bytes of arguments"), "{err:?}");
            }
        }
        clients.push(c);
    }
    assert_eq!(live_queries(&server), 9);
    let held = args_bytes(&server);
    assert!(
        held > 9 * quarter as u64,
        "the held arguments are counted: {held}"
    );
    assert!(
        held <= 3 * MAX_QUERY_ARGS_BYTES_PER_CONNECTION as u64,
        "{held}"
    );

    // Removing a query frees its share of the budget.
    let c = &mut clients[0];
    c.modify(vec![remove(0), remove(3)]).await;
    let organization = format!("0-9-{}", "o".repeat(quarter));
    let t = c.subscribe(&[(10, "notes:list", org(&organization))]).await;
    assert_eq!(t.updated(10), Some(&Value::Array(vec![])));
    assert_eq!(args_bytes(&server), held);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_piles_up_refused_queries_is_closed() {
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;
    let cap = MAX_REFUSED_QUERIES_PER_CONNECTION as u32;
    let adds = (0..=cap).map(|i| add(i, "nope:nothing", obj! {})).collect();
    c.send(&ClientMessage::ModifyQuerySet {
        base_version: 0,
        new_version: 1,
        modifications: adds,
    })
    .await;
    let (error, _) = c.expect_fatal_then_close().await;
    assert!(error.contains("refused queries"), "{error:?}");
    // The server goes on serving others.
    let mut other = server.client().await;
    let t = other.subscribe(&[(0, "notes:count", org("A"))]).await;
    assert_eq!(t.updated(0), Some(&Value::Float64(0.0)));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_churn_past_the_budget_is_refused() {
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;
    // Rounds of 1,000 adds and 1,000 removes of one shared query: far more
    // than the burst (plus what refills while the test runs).
    let mut refused = 0;
    let mut accepted = 0;
    let rounds = (2 * QUERY_CHURN_BURST / 1000) as usize + 2;
    for round in 0..rounds {
        let base = (round * 1000) as u32;
        let adds = (base..base + 1000)
            .map(|i| add(i, "notes:count", org("A")))
            .collect();
        let t = c.modify(adds).await;
        for i in base..base + 1000 {
            match t.failed(i) {
                Some(err) => {
                    assert_eq!(error_code(err), Some("LIMIT_EXCEEDED"), "{err:?}");
                    assert!(err.message.contains("a second"), "{err:?}");
                    refused += 1;
                }
                None => accepted += 1,
            }
        }
        c.modify((base..base + 1000).map(remove).collect()).await;
    }
    assert!(refused > 0, "the churn was never refused");
    assert!(
        accepted >= QUERY_CHURN_BURST as usize,
        "the burst is allowed"
    );
    assert_eq!(live_queries(&server), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_churn_past_the_budget_closes_the_connection() {
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;
    c.subscribe(&[(0, "notes:count", org("A"))]).await;
    // The burst is allowed, each answered ...
    for version in 0..AUTHENTICATE_BURST {
        c.send(&ClientMessage::Authenticate {
            base_version: version,
            token: AuthenticationToken::None,
        })
        .await;
        assert_eq!(c.transition().await.end.identity, version + 1);
    }
    // ... and a few more at once close the connection (the sends after the
    // close may fail).
    for version in AUTHENTICATE_BURST..AUTHENTICATE_BURST + 5 {
        let msg = ClientMessage::Authenticate {
            base_version: version,
            token: AuthenticationToken::None,
        };
        let frame = tokio_tungstenite::tungstenite::Message::text(msg.to_text());
        let _ = c.try_send_raw(frame).await;
    }
    let reason = loop {
        match c.next_frame(PATIENCE).await {
            Some(Frame::Message(_)) => {}
            Some(Frame::Close(Some((code, reason)))) => {
                assert_eq!(code, CLOSE_POLICY, "{reason}");
                break reason;
            }
            other => panic!("expected the connection to be closed, got {other:?}"),
        }
    };
    assert!(reason.contains("Authenticate"), "{reason:?}");
    server.shutdown().await;
}

/// Transitions until one ends at `ts` or later, waiting up to [`SLOW`] for
/// each.
async fn until(c: &mut Client, ts: livebase_schema::Timestamp) -> Vec<Transition> {
    // A Transition may come before the answer to the mutation that caused
    // it (the protocol allows either order): awaiting the answer stashed it.
    let mut seen = c.stashed_transitions();
    if seen.last().is_some_and(|t| t.end.ts >= ts) {
        return seen;
    }
    loop {
        match c.next_frame(SLOW).await {
            Some(Frame::Message(ServerMessage::Transition {
                start_version,
                end_version,
                modifications,
                ..
            })) => {
                seen.push(Transition {
                    start: start_version,
                    end: end_version,
                    modifications,
                });
                if end_version.ts >= ts {
                    return seen;
                }
            }
            Some(Frame::Message(_)) => {}
            other => panic!("expected a Transition, got {other:?}"),
        }
    }
}

async fn signed_in(url: &str, user: &str) -> Client {
    let mut c = Client::connect(url, SessionId::random()).await;
    c.send(&ClientMessage::Authenticate {
        base_version: 0,
        token: AuthenticationToken::User(format!("user:{user}")),
    })
    .await;
    let t = c.transition().await;
    assert_eq!(t.end.identity, 1);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identitys_backlog_of_heavy_queries_does_not_hold_back_anothers_push() {
    const NOTES: usize = 2_000;
    const HEAVY: u32 = 400;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options = ServerOptions {
        listen: "127.0.0.1:0".parse().expect("an address"),
        data_dir: dir.path().to_path_buf(),
        ..ServerOptions::default()
    };
    let mut app = support::registry();
    // Reads every note of the organization and returns only their number;
    // `tag` makes otherwise identical queries distinct.
    app.query(
        "notes:heavy",
        [("organizationId", v::string()), ("tag", v::float64())],
        |ctx, args| Ok(support::notes_of(ctx.db.reborrow(), &args)?.len() as f64),
    );
    let server = serve_with(app, options, Arc::new(support::NamedUsers))
        .await
        .expect("the server starts");
    let url = format!("ws://{}/api/sync", server.addr);
    let stats = server.state.subscriptions.stats().clone();

    // The heavy tenant: many distinct queries, each reading every one of its
    // organization's notes.
    let mut heavy = signed_in(&url, "heavy").await;
    let first = heavy
        .mutation(
            "notes:addMany",
            obj! { "organizationId" => "T", "body" => "b", "count" => NOTES as f64 },
        )
        .await
        .expect("notes:addMany succeeds");
    heavy.transitions_until(first.ts).await;
    let adds = (0..HEAVY)
        .map(|i| {
            let fields = obj! { "organizationId" => "T", "tag" => f64::from(i) };
            add(i, "notes:heavy", fields)
        })
        .collect();
    heavy
        .send(&ClientMessage::ModifyQuerySet {
            base_version: 0,
            new_version: 1,
            modifications: adds,
        })
        .await;
    heavy.query_set = 1;
    loop {
        match heavy.next_frame(SLOW).await {
            Some(Frame::Message(ServerMessage::Transition { end_version, .. }))
                if end_version.query_set == 1 =>
            {
                break
            }
            Some(Frame::Message(_)) => {}
            other => panic!("expected the heavy tenant's first results, got {other:?}"),
        }
    }

    let mut victim = signed_in(&url, "victim").await;
    victim.subscribe(&[(0, "notes:count", org("V"))]).await;

    // One write of the heavy tenant makes all its queries due; right after
    // it, the victim writes to its own organization.
    let before = stats.evaluations.load(Ordering::SeqCst);
    let storm = heavy
        .mutation("notes:add", support::note("T", "storm", 0.5))
        .await
        .expect("notes:add succeeds");
    let mine = victim
        .mutation("notes:add", support::note("V", "mine", 0.0))
        .await
        .expect("notes:add succeeds");
    let seen = until(&mut victim, mine.ts).await;
    let evaluated = stats.evaluations.load(Ordering::SeqCst) - before;
    assert_eq!(
        seen.iter().rev().find_map(|t| t.updated(0)),
        Some(&Value::Float64(1.0))
    );
    assert!(
        evaluated < u64::from(HEAVY),
        "the victim's push waited for {evaluated} of the heavy tenant's {HEAVY} evaluations"
    );

    // The heavy tenant still gets one consistent Transition with every query
    // re-run after its write.
    let seen = until(&mut heavy, storm.ts).await;
    let last = seen.last().expect("a Transition");
    for i in 0..HEAVY {
        let count = last.updated(i).expect("every query is in the Transition");
        assert_eq!(count, &Value::Float64((NOTES + 1) as f64), "query {i}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_reader_queue_answers_busy_instead_of_growing() {
    use futures::FutureExt;
    use livebase_runtime::database::{Database, READER_QUEUE, READER_THREADS};
    use livebase_runtime::store::sqlite::SqlitePersistence;
    use std::sync::Mutex;

    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = SqlitePersistence::open(dir.path().join("db.sqlite3")).expect("the store opens");
    let db = Database::open(Arc::new(store), support::schema()).expect("the database opens");

    // Every reader busy with a query that waits for the test's word ...
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
    let mut blocked = Vec::new();
    for _ in 0..READER_THREADS {
        let (db, released, started) = (db.clone(), released.clone(), started.clone());
        blocked.push(tokio::spawn(async move {
            db.query(move |_| {
                let _ = started.send(());
                let _ = released.lock().unwrap().recv();
                Ok(())
            })
            .await
        }));
    }
    for _ in 0..READER_THREADS {
        running.recv().await.expect("a reader started");
    }
    // ... and the queue behind them full (each query is queued when first
    // polled; its caller then gives up waiting, its job stays queued).
    for _ in 0..READER_QUEUE {
        assert!(db.query(|_| Ok(())).now_or_never().is_none());
    }
    // One more is answered at once, with a limit error, not queued.
    let busy = tokio::time::timeout(PATIENCE, db.query(|_| Ok(())))
        .await
        .expect("an answer while every reader is busy")
        .expect_err("the queue is full");
    assert_eq!(
        busy.code(),
        Some(&livebase_runtime::ErrorCode::LimitExceeded)
    );
    assert!(busy.to_string().contains("busy"), "{busy}");

    // Once the readers are free again, queries run: at once after the
    // abandoned jobs still queued have been drained, "busy" until then.
    for _ in 0..READER_THREADS {
        release.send(()).expect("a reader waits");
    }
    for b in blocked {
        b.await
            .expect("the task ends")
            .expect("the blocked query ends");
    }
    let ran = livebase_testkit::eventually("a query to run", PATIENCE, || {
        let db = db.clone();
        async move {
            match tokio::time::timeout(PATIENCE, db.query(|_| Ok(7))).await {
                Ok(Ok(ran)) => Ok(ran.value),
                Ok(Err(e)) if e.code() == Some(&livebase_runtime::ErrorCode::LimitExceeded) => {
                    Err(e.to_string())
                }
                Ok(Err(e)) => panic!("the query failed: {e}"),
                Err(_) => panic!("no answer within {PATIENCE:?}"),
            }
        }
    })
    .await;
    assert_eq!(ran, 7);
}
