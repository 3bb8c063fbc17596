//! The HTTP function API as the npm `ConvexHttpClient` uses it, over a raw
//! HTTP/1.1 socket: `POST /api/query|mutation|action` answer `200 {status:
//! "success", value, logLines}` or `560 {status: "error", errorMessage,
//! errorData?, logLines}`; a body that is not a request is `400`; `GET
//! /health` is `200`. A mutation over HTTP reaches WebSocket subscribers.

mod support;

use livebase_schema::Value;
use livebase_testkit::http::{call, http, post_json};
use livebase_testkit::ws::server_error_request_id;
use livebase_testkit::TestServer;
use serde_json::{json, Value as Json};
use support::{note, org};

/// The keys of a JSON object, sorted.
fn keys(body: &Json) -> Vec<&str> {
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap_or_else(|| panic!("expected an object: {body}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_calls_answer_200_with_the_value_and_reach_subscribers() {
    let server = TestServer::start(support::registry()).await;
    let addr = server.addr();
    let mut watcher = server.client().await;
    watcher.subscribe(&[(0, "notes:list", org("A"))]).await;

    let (status, body) = call(addr, "query", "notes:list", org("A")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "success", "value": [], "logLines": []})
    );

    let (status, body) = call(addr, "mutation", "notes:add", note("A", "over http", 2.5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), ["logLines", "status", "value"]);
    assert_eq!(body["status"], "success");
    let id = body["value"].as_str().expect("an id").to_string();
    let pushed = watcher.transition().await;
    let list = support::docs(pushed.updated(0).expect("the HTTP write is pushed"));
    assert_eq!(list.len(), 1);
    assert_eq!(support::id_of(&list[0]), id);

    let (status, body) = call(addr, "query", "notes:list", org("A")).await;
    assert_eq!(status, 200);
    let doc = &body["value"][0];
    assert_eq!(doc["_id"], id.as_str());
    assert_eq!(doc["body"], "over http");
    assert_eq!(doc["n"], 2.5);
    assert!(doc["_creationTime"].is_f64(), "{doc}");

    let (status, body) = call(
        addr,
        "action",
        "notes:addViaAction",
        note("A", "via action", 3.0),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert!(support::is_note_id(
        &Value::from_json(&body["value"], "value").expect("a value")
    ));
    let pushed = watcher.transition().await;
    assert_eq!(support::docs(pushed.updated(0).expect("pushed")).len(), 2);

    // The Convex value encoding on the way in and out: a float that JSON
    // cannot hold travels as `{"$float": ..}`.
    let (status, body) = call(
        addr,
        "mutation",
        "notes:add",
        note("B", "inf", f64::INFINITY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(addr, "query", "notes:list", org("B")).await;
    let n = Value::from_json(&body["value"][0]["n"], "n").expect("a value");
    assert_eq!(n, Value::Float64(f64::INFINITY));

    let health = http(addr, "GET", "/health", &[], b"").await;
    assert_eq!(health.status, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_calls_answer_560_with_the_error_model() {
    let server = TestServer::start(support::registry()).await;
    let addr = server.addr();

    let (status, body) = call(addr, "mutation", "notes:conflict", livebase_schema::obj! {}).await;
    assert_eq!(status, 560, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "error",
            "errorMessage": "that note is taken",
            "errorData": {"code": "CONFLICT", "message": "that note is taken", "field": "body"},
            "logLines": [],
        })
    );
    let (status, body) = call(
        addr,
        "query",
        "notes:conflictQuery",
        livebase_schema::obj! {},
    )
    .await;
    assert_eq!(status, 560);
    assert_eq!(body["errorData"]["code"], "CONFLICT");

    for (kind, path) in [("mutation", "notes:panic"), ("query", "notes:panicQuery")] {
        let (status, body) = call(addr, kind, path, livebase_schema::obj! {}).await;
        assert_eq!(status, 560, "{body}");
        assert_eq!(
            keys(&body),
            ["errorMessage", "logLines", "status"],
            "no errorData"
        );
        let message = body["errorMessage"].as_str().expect("a message");
        assert!(server_error_request_id(message).is_some(), "{message:?}");
    }

    // Internal and missing functions: the same answer but for the path.
    for (kind, internal, missing) in [
        ("query", "notes:secret", "notes:nope"),
        ("mutation", "notes:internalAdd", "notes:nope"),
        ("action", "notes:list", "nowhere:nope"),
    ] {
        let args = note("A", "x", 1.0);
        let (s1, b1) = call(addr, kind, internal, args.clone()).await;
        let (s2, b2) = call(addr, kind, missing, args).await;
        assert_eq!((s1, s2), (560, 560));
        assert_eq!(
            b1.to_string().replace(internal, "<path>"),
            b2.to_string().replace(missing, "<path>"),
            "{kind}"
        );
        assert_eq!(b1["errorData"]["code"], "INVALID_ARGUMENT");
    }
    assert_eq!(support::count(&server, "A").await, 0.0);

    let (status, body) = call(
        addr,
        "mutation",
        "notes:add",
        livebase_schema::obj! { "organizationId" => "A", "body" => 7.0, "n" => 1.0 },
    )
    .await;
    assert_eq!(status, 560);
    assert_eq!(body["errorData"]["code"], "INVALID_ARGUMENT");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("args.body"),
        "{body}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_request_is_400_and_names_the_problem() {
    let server = TestServer::start(support::registry()).await;
    let addr = server.addr();
    let json_header = [("Content-Type", "application/json")];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"{\"path\": ".to_vec(), "not JSON"),
        ("an empty body", Vec::new(), "not JSON"),
        ("no path", br#"{"args": [{}]}"#.to_vec(), "path"),
        (
            "a path that is a number",
            br#"{"path": 3, "args": [{}]}"#.to_vec(),
            "path",
        ),
        (
            "args that are a number",
            br#"{"path": "notes:list", "args": 5}"#.to_vec(),
            "args",
        ),
        (
            "an unknown format",
            br#"{"path": "notes:list", "format": "xml", "args": [{}]}"#.to_vec(),
            "format",
        ),
        (
            "args that are not Convex JSON",
            br#"{"path": "notes:list", "args": [{"$bad": 1}]}"#.to_vec(),
            "args[0]",
        ),
    ];
    for kind in ["query", "mutation", "action"] {
        for (what, body, names) in &cases {
            let response = http(addr, "POST", &format!("/api/{kind}"), &json_header, body).await;
            assert_eq!(response.status, 400, "{kind} with {what}");
            let text = String::from_utf8_lossy(&response.bytes);
            assert!(
                text.contains(names),
                "{kind} with {what}: {text} should name {names}"
            );
        }
    }
    // A body over the size cap is refused too, and the server stays up.
    let huge = vec![b' '; 3 << 20];
    let response = http(addr, "POST", "/api/mutation", &json_header, &huge).await;
    assert_eq!(response.status, 413);
    let (status, _) = post_json(
        addr,
        "/api/query",
        &json!({"path": "notes:count", "args": [{"organizationId": "A"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(http(addr, "GET", "/health", &[], b"").await.status, 200);
    server.shutdown().await;
}

/// A client that sends part of a request's headers and then stalls (a
/// slowloris) is disconnected after the handshake timeout, while a normal
/// request on another connection is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_is_cut_off_after_the_handshake_timeout() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start(support::registry()).await;
    let mut stalled = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    stalled
        .write_all(b"GET /api/sync HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();

    let health = http(server.addr(), "GET", "/health", &[], b"").await;
    assert_eq!(
        health.status, 200,
        "others are served while one connection stalls"
    );

    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(
        livebase_runtime::server::HANDSHAKE_TIMEOUT + Duration::from_secs(5),
        stalled.read(&mut buf),
    )
    .await
    .expect("the server closes a stalled connection instead of holding it");
    // Closed (0 bytes), reset, or answered with an error status: never held open.
    if let Ok(n) = read {
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            n == 0 || text.starts_with("HTTP/1.1 408"),
            "unexpected reply: {text}"
        );
    }
    assert!(
        started.elapsed()
            >= livebase_runtime::server::HANDSHAKE_TIMEOUT - Duration::from_millis(500),
        "cut off only after the timeout, at {:?}",
        started.elapsed()
    );
}
