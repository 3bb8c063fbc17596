//! Hostile clients against the calls in flight, the connections one caller
//! holds and the results queued for all connections (issue 11, "per
//! identity" and "in total" budgets), each sent against a real server: one
//! connection starting actions without waiting for their answers, one client
//! address or one signed-in user doing so from many connections (and over
//! HTTP), one user opening connections without end, and many connections
//! that stop reading while large results change.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use livebase_runtime::registry::Identity;
use livebase_runtime::server::inflight::CallerKey;
use livebase_runtime::server::{
    serve_with, RunningServer, ServerOptions, MAX_ACTIONS_PER_CONNECTION,
    MAX_CALLS_IN_FLIGHT_PER_CALLER, MAX_CONNECTIONS_PER_USER,
};
use livebase_runtime::subscriptions::LAGGING_MESSAGES;
use livebase_schema::protocol::{
    AuthenticationToken, ClientMessage, RequestId, ServerMessage, SessionId,
};
use livebase_schema::{obj, Value};
use livebase_testkit::http::http;
use livebase_testkit::{add, error_code, Client, Frame, PATIENCE as RECV_TIMEOUT};
use support::{args, org};
use tokio::sync::Semaphore;
use tokio::time::{sleep, timeout, Instant};

/// Close code for a client past one of its budgets.
const CLOSE_POLICY: u16 = 1008;

/// A server whose `slow:hold` action waits until the test opens `gate`,
/// counting the actions running at once.
struct Held {
    server: RunningServer,
    _dir: tempfile::TempDir,
    gate: Arc<Semaphore>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    /// How many `slow:hold` runs got past the gate.
    finished: Arc<AtomicUsize>,
    writes: Arc<WriteGate>,
}

/// What the `slow:write` mutation waits on, holding the writer thread: it
/// counts the runs that reached it and waits until it opens (or a minute
/// has passed, so a failed test does not hang).
#[derive(Default)]
struct WriteGate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    reached: AtomicUsize,
}

impl Held {
    async fn start() -> Held {
        Held::start_tuned(|_| {}).await
    }

    async fn start_tuned(tune: impl FnOnce(&mut ServerOptions)) -> Held {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut options = ServerOptions {
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: dir.path().to_path_buf(),
            ..ServerOptions::default()
        };
        tune(&mut options);
        let gate = Arc::new(Semaphore::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut app = support::registry();
        let finished = Arc::new(AtomicUsize::new(0));
        let (g, r, p, f) = (
            gate.clone(),
            running.clone(),
            peak.clone(),
            finished.clone(),
        );
        app.action("slow:hold", [], move |_ctx, _args| {
            let (gate, running, peak, finished) = (g.clone(), r.clone(), p.clone(), f.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let permit = gate.acquire().await;
                running.fetch_sub(1, Ordering::SeqCst);
                finished.fetch_add(1, Ordering::SeqCst);
                drop(permit);
                Ok(Value::from("done"))
            }
        });
        let writes = Arc::new(WriteGate::default());
        let w = writes.clone();
        app.mutation("slow:write", [], move |ctx, _args| {
            w.reached.fetch_add(1, Ordering::SeqCst);
            let mut open = w.open.lock().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !*open && std::time::Instant::now() < deadline {
                open = w
                    .opened
                    .wait_timeout(open, Duration::from_millis(100))
                    .unwrap()
                    .0;
            }
            ctx.db.insert(
                "notes",
                obj! { "organizationId" => "W", "body" => "slow", "n" => 0.0, "createdBy" => "tester" },
            )?;
            Ok(Value::Null)
        });
        let server = serve_with(app, options, Arc::new(support::NamedUsers))
            .await
            .expect("the server starts");
        Held {
            server,
            _dir: dir,
            gate,
            running,
            peak,
            finished,
            writes,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/api/sync", self.server.addr)
    }

    async fn client(&self, user: Option<&str>) -> Client {
        let mut c = Client::connect(&self.url(), SessionId::random()).await;
        if let Some(user) = user {
            c.send(&ClientMessage::Authenticate {
                base_version: 0,
                token: AuthenticationToken::User(format!("user:{user}")),
            })
            .await;
        }
        c
    }

    /// Waits until `n` actions are running at once.
    async fn until_running(&self, n: usize) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while self.running.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} actions started",
                self.running.load(Ordering::SeqCst)
            );
            sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lets every held action and `slow:write` finish.
    fn release(&self) {
        self.gate.add_permits(1 << 20);
        *self.writes.open.lock().unwrap() = true;
        self.writes.opened.notify_all();
    }

    async fn shutdown(self) {
        self.release();
        timeout(Duration::from_secs(20), self.server.shutdown())
            .await
            .expect("the server shuts down in time");
    }
}

/// `POST /api/query` of `notes:list` for organization A, as `user`: the
/// response's JSON.
async fn list_over_http(held: &Held, user: &str) -> serde_json::Value {
    let body = serde_json::json!({"path": "notes:list", "args": [org("A").to_json()]});
    let body = serde_json::to_vec(&body).unwrap();
    let bearer = format!("Bearer user:{user}");
    http(
        held.server.addr,
        "POST",
        "/api/query",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        &body,
    )
    .await
    .json()
}

/// Sends `count` `slow:hold` actions with request ids from `first` on.
async fn start_actions(c: &mut Client, first: u32, count: u32) {
    for id in first..first + count {
        c.send(&ClientMessage::Action {
            request_id: RequestId(id),
            udf_path: "slow:hold".into(),
            args: args(obj! {}),
            component_path: None,
        })
        .await;
    }
}

/// The next `count` action responses: `(request id, error code or None)`.
async fn responses(c: &mut Client, count: usize) -> Vec<(u32, Option<String>)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match c.next_frame(RECV_TIMEOUT).await {
            Some(Frame::Message(ServerMessage::ActionResponse {
                request_id, result, ..
            })) => seen.push((
                request_id.0,
                result
                    .err()
                    .and_then(|e| error_code(&e).map(str::to_string)),
            )),
            Some(Frame::Message(_)) => {}
            other => panic!(
                "expected {count} action responses, got {} then {other:?}",
                seen.len()
            ),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_runs_a_bounded_number_of_actions_at_once() {
    let held = Held::start().await;
    let mut c = held.client(None).await;
    let cap = MAX_ACTIONS_PER_CONNECTION as u32;
    let extra = 20;
    // The attack: actions sent without waiting for their answers, each
    // holding a task (and whatever it reads) until it ends.
    start_actions(&mut c, 0, cap + extra).await;

    let refused = responses(&mut c, extra as usize).await;
    for (id, code) in &refused {
        assert_eq!(code.as_deref(), Some("LIMIT_EXCEEDED"), "action {id}");
        assert!(*id >= cap, "action {id} was refused, not a later one");
    }
    held.until_running(cap as usize).await;
    sleep(Duration::from_millis(50)).await;
    assert_eq!(
        held.peak.load(Ordering::SeqCst),
        cap as usize,
        "no more than the cap ran at once"
    );

    held.release();
    let done = responses(&mut c, cap as usize).await;
    assert!(done.iter().all(|(_, code)| code.is_none()), "{done:?}");
    // The slots came back: the connection may start actions again.
    held.gate.forget_permits(1 << 20);
    start_actions(&mut c, 1000, cap).await;
    held.until_running(cap as usize).await;
    held.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_runs_a_bounded_number_of_calls_across_its_connections() {
    let held = Held::start().await;
    let per_connection = MAX_ACTIONS_PER_CONNECTION as u32;
    let connections = (MAX_CALLS_IN_FLIGHT_PER_CALLER as u32).div_ceil(per_connection) + 1;
    let total = connections * per_connection;
    let mut clients = Vec::new();
    for k in 0..connections {
        let mut c = held.client(None).await;
        start_actions(&mut c, k * 1000, per_connection).await;
        clients.push(c);
    }
    held.until_running(MAX_CALLS_IN_FLIGHT_PER_CALLER).await;
    // Every call past the caller's budget is answered at once.
    let mut refused = 0;
    for c in &mut clients {
        loop {
            match c.next_frame(Duration::from_millis(300)).await {
                Some(Frame::Message(ServerMessage::ActionResponse { result, .. })) => {
                    let err = result.expect_err("no held action ends before the release");
                    assert_eq!(error_code(&err), Some("LIMIT_EXCEEDED"));
                    refused += 1;
                }
                Some(Frame::Message(_)) => {}
                None => break,
                other => panic!("the connection ended: {other:?}"),
            }
        }
    }
    assert_eq!(refused, total as usize - MAX_CALLS_IN_FLIGHT_PER_CALLER);
    assert_eq!(
        held.peak.load(Ordering::SeqCst),
        MAX_CALLS_IN_FLIGHT_PER_CALLER
    );

    // A signed-in user is another caller, with a budget of its own.
    let mut user = held.client(Some("alice")).await;
    start_actions(&mut user, 0, 1).await;
    held.until_running(MAX_CALLS_IN_FLIGHT_PER_CALLER + 1).await;
    held.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_runs_a_bounded_number_of_calls_across_connections_and_http() {
    let held = Held::start().await;
    let per_connection = MAX_ACTIONS_PER_CONNECTION as u32;
    let connections = MAX_CALLS_IN_FLIGHT_PER_CALLER as u32 / per_connection;
    let mut clients = Vec::new();
    for k in 0..connections {
        let mut c = held.client(Some("mallory")).await;
        start_actions(&mut c, k * 1000, per_connection).await;
        clients.push(c);
    }
    held.until_running(MAX_CALLS_IN_FLIGHT_PER_CALLER).await;

    // Her budget is spent: one more call, on a new connection from another
    // of her devices or over HTTP, is refused at once.
    let mut more = held.client(Some("mallory")).await;
    start_actions(&mut more, 0, 1).await;
    let refused = responses(&mut more, 1).await;
    assert_eq!(refused[0].1.as_deref(), Some("LIMIT_EXCEEDED"));
    let json = list_over_http(&held, "mallory").await;
    assert_eq!(json["status"], "error", "{json}");
    assert_eq!(json["errorData"]["code"], "LIMIT_EXCEEDED", "{json}");

    // Another user is not affected.
    assert_eq!(list_over_http(&held, "bob").await["status"], "success");

    // Once her actions end, her budget is whole again.
    held.release();
    for c in &mut clients {
        let done = responses(c, per_connection as usize).await;
        assert!(done.iter().all(|(_, code)| code.is_none()), "{done:?}");
    }
    assert_eq!(list_over_http(&held, "mallory").await["status"], "success");
    held.shutdown().await;
}

/// Authenticates `c` as `user` and waits for the Transition of a query added
/// after it: the sign-in has been taken.
async fn signed_in(c: &mut Client, user: &str, query_id: u32) -> Option<(u16, String)> {
    c.send(&ClientMessage::Authenticate {
        base_version: 0,
        token: AuthenticationToken::User(format!("user:{user}")),
    })
    .await;
    c.send(&ClientMessage::ModifyQuerySet {
        base_version: 0,
        new_version: 1,
        modifications: vec![add(query_id, "notes:list", org("A"))],
    })
    .await;
    loop {
        match c.next_frame(RECV_TIMEOUT).await {
            Some(Frame::Message(ServerMessage::Transition { .. })) => return None,
            Some(Frame::Message(_)) => {}
            Some(Frame::Close(Some((code, reason)))) => return Some((code, reason)),
            other => panic!("expected a Transition or a close, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_holds_a_bounded_number_of_connections() {
    let held = Held::start().await;
    let mut clients = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_USER {
        let mut c = held.client(None).await;
        assert_eq!(signed_in(&mut c, "mallory", 1).await, None);
        clients.push(c);
    }
    // One more of her connections is closed when it signs in as her ...
    let mut extra = held.client(None).await;
    let (code, reason) = signed_in(&mut extra, "mallory", 1)
        .await
        .expect("the connection past the cap is closed");
    assert_eq!(code, CLOSE_POLICY);
    assert!(reason.contains("connections"), "{reason}");
    // ... while another user signs in as usual.
    let mut bob = held.client(None).await;
    assert_eq!(signed_in(&mut bob, "bob", 1).await, None);

    // A connection that ends, or signs out, gives its place back.
    clients.pop().unwrap().close().await;
    let signed_out = clients.last_mut().unwrap();
    signed_out
        .send(&ClientMessage::Authenticate {
            base_version: 1,
            token: AuthenticationToken::None,
        })
        .await;
    sleep(Duration::from_millis(200)).await;
    for _ in 0..2 {
        let mut again = held.client(None).await;
        assert_eq!(signed_in(&mut again, "mallory", 1).await, None);
        clients.push(again);
    }
    held.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_queued_for_connections_that_stop_reading_are_bounded_in_total() {
    const MAX_TOTAL: usize = 16 << 20;
    const LAGGARDS: usize = 6;
    let held = Held::start_tuned(|o| o.edge.max_queued_result_bytes = MAX_TOTAL).await;
    let executor = held.server.state.executor.clone();
    let subscriptions = held.server.state.subscriptions.clone();
    // A live result of about 600 KB that every mutation below changes.
    let body = "b".repeat(200_000);
    let mut ids = Vec::new();
    for n in 0..3 {
        let (id, _) = executor
            .mutation(
                "notes:add",
                args(obj! { "organizationId" => "A", "body" => body.as_str(), "n" => n as f64 }),
                Identity::Anonymous,
                livebase_runtime::executor::Caller::Client,
                None,
            )
            .await
            .expect("a note is added");
        ids.push(id);
    }
    let one_result = 3 * body.len();

    // Connections that subscribe and then never read again ...
    let mut laggards = Vec::new();
    for _ in 0..LAGGARDS {
        let mut c = held.client(None).await;
        c.subscribe(&[(1, "notes:list", org("A"))]).await;
        laggards.push(c);
    }
    // ... and one that reads everything, in its own task.
    let mut reader = held.client(None).await;
    reader.subscribe(&[(1, "notes:list", org("A"))]).await;
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(0.0f64);
    let reading = tokio::spawn(async move {
        loop {
            match reader.next_frame(Duration::from_secs(60)).await {
                Some(Frame::Message(ServerMessage::Transition { modifications, .. })) => {
                    for m in modifications {
                        if let livebase_schema::protocol::StateModification::QueryUpdated {
                            value,
                            ..
                        } = m
                        {
                            let n = support::docs(&value)[0]
                                .as_object()
                                .and_then(|o| o.get("n"))
                                .and_then(Value::as_f64)
                                .unwrap_or(-1.0);
                            let _ = seen_tx.send(n);
                        }
                    }
                }
                Some(Frame::Message(_)) => {}
                other => return other,
            }
        }
    });

    let dropped = || {
        held.server
            .state
            .subscriptions
            .stats()
            .dropped_slow
            .load(Ordering::SeqCst)
    };
    let mut peak = 0;
    let mut writes = 0;
    while dropped() < LAGGARDS as u64 && writes < 400 {
        writes += 1;
        let id = ids[0].as_str().expect("an id").to_string();
        executor
            .mutation(
                "notes:set",
                args(obj! { "id" => id.as_str(), "n" => writes as f64 }),
                Identity::Anonymous,
                livebase_runtime::executor::Caller::Client,
                None,
            )
            .await
            .expect("the note is changed");
        peak = peak.max(subscriptions.queued_bytes());
        // The reader keeps up: it has seen each write before the next.
        let now = writes as f64;
        let seen = timeout(RECV_TIMEOUT, seen_rx.wait_for(|n| *n == now)).await;
        if !matches!(seen, Ok(Ok(_))) {
            panic!("the reader stopped at write {writes}: {:?}", reading.await);
        }
    }
    assert_eq!(
        dropped(),
        LAGGARDS as u64,
        "every connection that stopped reading was dropped ({writes} writes)"
    );
    // Past the total, a queue may still fill up to LAGGING_MESSAGES results.
    let bound = MAX_TOTAL + (LAGGARDS + 1) * LAGGING_MESSAGES * (one_result + 64 * 1024);
    assert!(
        peak <= bound,
        "{peak} bytes were queued at once, more than {bound}"
    );
    // The reader kept up and was never dropped.
    assert!(!reading.is_finished(), "the reader's connection is open");
    drop(laggards);
    held.shutdown().await;
}

/// `POST /api/{kind}` of `path` with no arguments, anonymously.
async fn call_over_http(
    addr: std::net::SocketAddr,
    kind: &'static str,
    path: &'static str,
) -> livebase_testkit::http::HttpResponse {
    let body = serde_json::to_vec(&serde_json::json!({"path": path, "args": [{}]})).unwrap();
    http(
        addr,
        "POST",
        &format!("/api/{kind}"),
        &[("Content-Type", "application/json")],
        &body,
    )
    .await
}

/// Sends `count` mutations of `path` without waiting, ids from `first`.
async fn send_mutations(c: &mut Client, path: &str, first: u32, count: u32) {
    for id in first..first + count {
        c.send(&ClientMessage::Mutation {
            request_id: RequestId(id),
            udf_path: path.into(),
            args: args(obj! {}),
            component_path: None,
        })
        .await;
    }
}

/// The next mutation response: its request id and error code, if any.
async fn mutation_response(c: &mut Client, wait: Duration) -> Option<(u32, Option<String>)> {
    loop {
        match c.next_frame(wait).await {
            Some(Frame::Message(ServerMessage::MutationResponse {
                request_id, result, ..
            })) => {
                return Some((
                    request_id.0,
                    result
                        .err()
                        .and_then(|e| error_code(&e).map(str::to_string)),
                ))
            }
            Some(Frame::Message(_)) => {}
            None => return None,
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

/// A client that queues mutations on the writer and leaves at once (over
/// WebSocket or HTTP) must not get its places among its calls in flight
/// back until they have run: else connecting, queueing and leaving again
/// grows the writer's queue without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_left_behind_by_a_closed_connection_still_count_against_their_caller() {
    const BUDGET: usize = 6;
    let held = Held::start_tuned(|o| o.edge.max_calls_in_flight_per_caller = BUDGET).await;
    // The writer is held by the first `slow:write`; the rest of the budget
    // waits behind it, and the connection goes away.
    let mut leaver = held.client(None).await;
    send_mutations(&mut leaver, "slow:write", 0, BUDGET as u32 - 1).await;
    let deadline = Instant::now() + RECV_TIMEOUT;
    while held.writes.reached.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "slow:write never ran");
        sleep(Duration::from_millis(5)).await;
    }
    leaver.close().await;
    // Time for the server to see the client gone.
    sleep(Duration::from_millis(300)).await;
    let me = CallerKey::Address("127.0.0.1".parse().unwrap());
    assert_eq!(
        held.server.state.calls.held(&me),
        BUDGET - 1,
        "the mutations a closed connection left behind still count"
    );

    // One more over HTTP, whose client gives up before the answer.
    let addr = held.server.addr;
    let http_call = tokio::spawn(call_over_http(addr, "mutation", "slow:write"));
    let deadline = Instant::now() + RECV_TIMEOUT;
    while held.server.state.calls.held(&me) < BUDGET {
        assert!(Instant::now() < deadline, "the HTTP call never started");
        sleep(Duration::from_millis(5)).await;
    }
    http_call.abort();
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        held.server.state.calls.held(&me),
        BUDGET,
        "a mutation whose HTTP client left still counts"
    );

    // The caller's budget is still spent: a new connection's mutation is
    // refused at once instead of queued.
    let mut next = held.client(None).await;
    send_mutations(&mut next, "notes:noop", 0, 1).await;
    let answer = mutation_response(&mut next, Duration::from_secs(3)).await;
    assert_eq!(
        answer,
        Some((0, Some("LIMIT_EXCEEDED".to_string()))),
        "refused while the mutations left behind wait"
    );

    // Once they have run, the budget is back, and every one committed.
    held.release();
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        send_mutations(&mut next, "notes:noop", 1, 1).await;
        match mutation_response(&mut next, RECV_TIMEOUT).await {
            Some((1, None)) => break,
            Some((1, Some(code))) if code == "LIMIT_EXCEEDED" => {}
            other => panic!("expected the mutation to run, got {other:?}"),
        }
        assert!(Instant::now() < deadline, "the budget never came back");
        sleep(Duration::from_millis(20)).await;
    }
    let written = held
        .server
        .state
        .executor
        .query(
            "notes:count",
            args(org("W")),
            Identity::Anonymous,
            livebase_runtime::executor::Caller::Client,
        )
        .await
        .expect("notes:count succeeds")
        .value;
    assert_eq!(
        written,
        Value::Float64(BUDGET as f64),
        "every one committed"
    );
    held.shutdown().await;
}

/// An HTTP action whose client leaves before the answer runs to its end, as
/// a WebSocket's does (it may have effects half done), and keeps its
/// caller's place among calls in flight until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_action_whose_client_left_runs_to_its_end_and_still_counts() {
    let held = Held::start().await;
    let addr = held.server.addr;
    let http_call = tokio::spawn(call_over_http(addr, "action", "slow:hold"));
    held.until_running(1).await;
    http_call.abort();
    sleep(Duration::from_millis(300)).await;
    let me = CallerKey::Address("127.0.0.1".parse().unwrap());
    assert_eq!(
        held.server.state.calls.held(&me),
        1,
        "the action whose client left still counts"
    );
    held.release();
    let deadline = Instant::now() + RECV_TIMEOUT;
    while held.finished.load(Ordering::SeqCst) < 1 || held.server.state.calls.held(&me) > 0 {
        assert!(
            Instant::now() < deadline,
            "the action never finished ({} finished, {} held)",
            held.finished.load(Ordering::SeqCst),
            held.server.state.calls.held(&me)
        );
        sleep(Duration::from_millis(5)).await;
    }
    held.shutdown().await;
}
