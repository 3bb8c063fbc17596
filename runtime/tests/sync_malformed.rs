//! Bad input on the WebSocket (`docs/reference/invariants.md`, invariant 10): a frame that is not
//! JSON, an unknown message type, a binary frame, fields of the wrong type,
//! protocol-order mistakes and wrong query-set or identity versions each get a
//! `FatalError` naming the problem and then a close — for that connection
//! only: a bystander connection keeps its subscription and its pushes. An
//! oversized message is closed with code 1009.

mod support;

use livebase_schema::protocol::{AuthenticationToken, ClientMessage};
use livebase_schema::{obj, Value};
use livebase_testkit::ws::connect_message;
use livebase_testkit::{add, error_code, remove, Client, TestServer};
use support::{docs, note, org};
use tokio_tungstenite::tungstenite::Message;

/// Close code for a protocol violation.
const CLOSE_PROTOCOL: u16 = 1002;
/// Close code for a message too big to process.
const CLOSE_TOO_BIG: u16 = 1009;

/// A connection that holds a live query and checks, after each attack on some
/// other connection, that its pushes still come.
struct Bystander {
    client: Client,
    notes: usize,
}

impl Bystander {
    async fn start(server: &TestServer) -> Bystander {
        let mut client = server.client().await;
        client.subscribe(&[(0, "notes:list", org("A"))]).await;
        Bystander { client, notes: 0 }
    }

    async fn still_served(&mut self) {
        let done = self
            .client
            .mutation("notes:add", note("A", "still here", self.notes as f64))
            .await
            .expect("the bystander's mutation succeeds");
        self.notes += 1;
        let seen = self.client.transitions_until(done.ts).await;
        let list = seen
            .iter()
            .rev()
            .find_map(|t| t.updated(0))
            .expect("the bystander's query is pushed");
        assert_eq!(docs(list).len(), self.notes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_gets_a_fatal_error_and_a_close_for_that_connection_only() {
    let server = TestServer::start(support::registry()).await;
    let mut bystander = Bystander::start(&server).await;
    let cases: Vec<(&str, Message, &str)> = vec![
        (
            "not JSON",
            Message::text("{\"type\": \"Mutation\""),
            "not valid JSON",
        ),
        (
            "not an object",
            Message::text("[1, 2, 3]"),
            "expected a JSON object",
        ),
        (
            "an unknown type",
            Message::text(r#"{"type": "Subscribe", "queryId": 1}"#),
            "unknown message type \"Subscribe\"",
        ),
        (
            "a binary frame",
            Message::binary(vec![0x7b, 0x7d]),
            "binary",
        ),
        (
            "a request id that is a string",
            Message::text(
                r#"{"type": "Mutation", "requestId": "zero", "udfPath": "notes:add", "args": [{}]}"#,
            ),
            "Mutation.requestId",
        ),
        (
            "args that are not an array",
            Message::text(
                r#"{"type": "Mutation", "requestId": 0, "udfPath": "notes:add", "args": {"n": 1}}"#,
            ),
            "Mutation.args",
        ),
        (
            "a modification without a query id",
            Message::text(
                r#"{"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1, "modifications": [{"type": "Add", "udfPath": "notes:list", "args": [{}]}]}"#,
            ),
            "ModifyQuerySet.modifications[0].queryId",
        ),
        (
            "a second Connect",
            Message::text(
                connect_message(&livebase_schema::protocol::SessionId::random(), 1).to_text(),
            ),
            "Connect",
        ),
    ];
    for (what, frame, names) in cases {
        let mut victim = server.client().await;
        victim.send_raw(frame).await;
        let (error, code) = victim.expect_fatal_then_close().await;
        assert!(
            error.contains(names),
            "{what}: {error:?} should mention {names:?}"
        );
        assert_eq!(code, Some(CLOSE_PROTOCOL), "{what}");
        bystander.still_served().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_other_than_connect_is_fatal() {
    let server = TestServer::start(support::registry()).await;
    let mut bystander = Bystander::start(&server).await;
    let cases: Vec<(&str, Message, &str)> = vec![
        ("not JSON", Message::text("hello"), "not valid JSON"),
        (
            "a mutation before Connect",
            Message::text(
                ClientMessage::Mutation {
                    request_id: livebase_schema::protocol::RequestId(0),
                    udf_path: "notes:add".into(),
                    args: vec![note("A", "early", 0.0)],
                    component_path: None,
                }
                .to_text(),
            ),
            "expected Connect",
        ),
        (
            "a binary frame",
            Message::binary(vec![1, 2, 3]),
            "text frame",
        ),
        (
            "a Connect with a bad session id",
            Message::text(r#"{"type": "Connect", "sessionId": "nope", "connectionCount": 0}"#),
            "Connect.sessionId",
        ),
    ];
    for (what, frame, names) in cases {
        let mut victim = Client::without_connect(&server.ws_url()).await;
        victim.send_raw(frame).await;
        let (error, code) = victim.expect_fatal_then_close().await;
        assert!(
            error.contains(names),
            "{what}: {error:?} should mention {names:?}"
        );
        assert_eq!(code, Some(CLOSE_PROTOCOL), "{what}");
        bystander.still_served().await;
    }
    assert_eq!(
        support::count(&server, "A").await,
        bystander.notes as f64,
        "nothing early ran"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_query_set_and_identity_versions_are_fatal() {
    let server = TestServer::start(support::registry()).await;
    let mut bystander = Bystander::start(&server).await;
    let modify = |base, new, modifications| ClientMessage::ModifyQuerySet {
        base_version: base,
        new_version: new,
        modifications,
    };
    let cases = vec![
        (
            "a base version ahead of the query set",
            modify(5, 6, vec![add(0, "notes:list", org("A"))]),
            "baseVersion 5",
        ),
        (
            "a new version that does not move forward",
            modify(0, 0, vec![add(0, "notes:list", org("A"))]),
            "newVersion 0",
        ),
        (
            "removing a query that is not there",
            modify(0, 1, vec![remove(7)]),
            "query 7 is not in the query set",
        ),
        (
            "adding one query id twice",
            modify(
                0,
                1,
                vec![
                    add(1, "notes:list", org("A")),
                    add(1, "notes:count", org("A")),
                ],
            ),
            "query 1 is already in the query set",
        ),
        (
            "an identity version ahead",
            ClientMessage::Authenticate {
                base_version: 3,
                token: AuthenticationToken::None,
            },
            "baseVersion 3",
        ),
    ];
    for (what, msg, names) in cases {
        let mut victim = server.client().await;
        victim.send(&msg).await;
        let (error, code) = victim.expect_fatal_then_close().await;
        assert!(
            error.contains(names),
            "{what}: {error:?} should mention {names:?}"
        );
        assert_eq!(code, Some(CLOSE_PROTOCOL), "{what}");
        bystander.still_served().await;
    }

    // The right versions work: the query set moves one step at a time, and
    // `Authenticate {None}` moves the identity version.
    let mut fine = server.client().await;
    fine.subscribe(&[(0, "notes:count", org("A"))]).await;
    fine.send(&ClientMessage::Authenticate {
        base_version: 0,
        token: AuthenticationToken::None,
    })
    .await;
    let t = fine.transition().await;
    assert_eq!(t.end.identity, 1);
    fine.subscribe(&[(1, "notes:count", org("B"))]).await;
    assert_eq!(fine.version.query_set, 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_with_1009_and_a_large_argument_is_a_limit_error() {
    let server = TestServer::start(support::registry()).await;
    let mut bystander = Bystander::start(&server).await;

    let mut victim = server.client().await;
    let huge = "x".repeat(3 << 20);
    let frame = ClientMessage::Mutation {
        request_id: livebase_schema::protocol::RequestId(0),
        udf_path: "notes:add".into(),
        args: vec![note("A", &huge, 0.0)],
        component_path: None,
    };
    // The server stops reading at the frame header and closes, so the rest
    // of the send may be refused (connection reset); the close frame it sent
    // first is still there to read.
    let _ = victim.try_send_raw(Message::text(frame.to_text())).await;
    assert_eq!(victim.expect_close().await, Some(CLOSE_TOO_BIG));
    bystander.still_served().await;

    // Under the frame cap but over the value cap: an answer, not a close.
    let mut sender = server.client().await;
    let big = "y".repeat(3 << 19);
    let err = sender
        .mutation("notes:add", note("A", &big, 0.0))
        .await
        .expect_err("too large a value");
    assert_eq!(error_code(&err), Some("LIMIT_EXCEEDED"), "{err:?}");
    assert!(
        err.message.len() < 1000,
        "the error does not echo the value"
    );
    let ok = sender
        .mutation(
            "notes:add",
            obj! { "organizationId" => "B", "body" => "small", "n" => 1.0 },
        )
        .await
        .expect("the connection still works");
    sender.transitions_until(ok.ts).await;
    bystander.still_served().await;
    assert_eq!(
        support::query(&server, "notes:count", org("A")).await,
        Ok(Value::Float64(bystander.notes as f64))
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_per_connection_cap_fails_and_can_still_be_removed() {
    use livebase_runtime::subscriptions::MAX_QUERIES_PER_CONNECTION;
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;
    let cap = MAX_QUERIES_PER_CONNECTION as u32;
    let adds = (0..=cap)
        .map(|id| add(id, "notes:count", org("A")))
        .collect();
    let t = c.modify(adds).await;
    assert_eq!(t.modifications.len(), MAX_QUERIES_PER_CONNECTION + 1);
    assert_eq!(t.updated(0), Some(&Value::Float64(0.0)));
    assert_eq!(t.updated(cap - 1), Some(&Value::Float64(0.0)));
    let over = t.failed(cap).expect("the query over the cap fails");
    assert_eq!(error_code(over), Some("LIMIT_EXCEEDED"), "{over:?}");
    assert_eq!(
        server.evaluations(),
        1,
        "identical queries share one evaluation"
    );

    // The client holds the failed query in its set and removes it as any other
    // (the npm client does when the component that asked for it unmounts).
    let t = c.modify(vec![remove(cap)]).await;
    assert_eq!(t.query_ids(), vec![cap]);
    // With one slot free again, a new query is accepted.
    let t = c
        .modify(vec![remove(0), add(cap + 1, "notes:list", org("A"))])
        .await;
    assert_eq!(t.updated(cap + 1), Some(&Value::Array(vec![])));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_never_sends_connect_is_closed_after_the_handshake_timeout() {
    use livebase_runtime::server::CONNECT_TIMEOUT;
    use std::time::{Duration, Instant};
    let server = TestServer::start(support::registry()).await;
    let mut bystander = Bystander::start(&server).await;
    let mut silent = Client::without_connect(&server.ws_url()).await;
    let since = Instant::now();
    let frame = silent
        .next_frame(CONNECT_TIMEOUT + Duration::from_secs(5))
        .await
        .expect("the server closes the silent connection");
    let waited = since.elapsed();
    match frame {
        livebase_testkit::Frame::Close(Some((code, reason))) => {
            assert_eq!(code, CLOSE_PROTOCOL);
            assert!(reason.contains("Connect"), "{reason:?}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(
        waited + Duration::from_millis(500) >= CONNECT_TIMEOUT,
        "closed after {waited:?}"
    );
    bystander.still_served().await;
    server.shutdown().await;
}
