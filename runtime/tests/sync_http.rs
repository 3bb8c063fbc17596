//! The HTTP function API as the npm `ConvexHttpClient` uses it, over a raw
//! HTTP/1.1 socket: `POST /api/query|mutation|action` answer `200 {status:
//! "success", value, logLines}` or `560 {status: "error", errorMessage,
//! errorData?, logLines}`; a body that is not a request is `400`; `GET
//! /health` is `200`. A mutation over HTTP reaches WebSocket subscribers.

mod support;

use std::time::Duration;

use livebase_schema::{obj, DocumentId, Value};
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

/// One HTTP/1.1 request on `stream`, left open (no `Connection` header, so
/// HTTP/1.1's keep-alive), and its response read by its `Content-Length`:
/// the status, the lowercased headers and the JSON body.
async fn exchange(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    path: &str,
    token: Option<&str>,
    body: &Json,
) -> (u16, Vec<(String, String)>, Json) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: livebase\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .get_mut()
        .write_all(head.as_bytes())
        .await
        .expect("sending the request");
    let mut status = 0;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut line))
            .await
            .expect("a response in time")
            .expect("reading the response");
        assert!(
            n > 0,
            "the server closed the connection instead of answering"
        );
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        match line.split_once(':') {
            Some((name, value)) if status != 0 => {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
            _ => {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("a status line: {line:?}"))
            }
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("a Content-Length");
    let mut reply = vec![0u8; length];
    stream
        .read_exact(&mut reply)
        .await
        .expect("reading the body");
    let json = serde_json::from_slice(&reply).expect("a JSON body");
    (status, headers, json)
}

fn request(path: &str, fields: Value) -> Json {
    json!({"path": path, "format": "convex_encoded_json", "args": [fields.to_json()]})
}

async fn open(addr: std::net::SocketAddr) -> tokio::io::BufReader<tokio::net::TcpStream> {
    tokio::io::BufReader::new(
        tokio::net::TcpStream::connect(addr)
            .await
            .expect("connecting"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_kept_alive_connection_are_each_answered() {
    let server = TestServer::start(support::registry()).await;
    let mut conn = open(server.addr()).await;

    let (status, headers, body) = exchange(
        &mut conn,
        "/api/mutation",
        None,
        &request("notes:add", note("A", "first", 1.0)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close")),
        "the connection is kept: {headers:?}"
    );
    // The second call on the same connection is answered, and is the second
    // call: it sees the first one's write.
    let (status, _, body) = exchange(
        &mut conn,
        "/api/query",
        None,
        &request("notes:list", org("A")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"][0]["body"], "first", "{body}");
    let (status, _, body) = exchange(
        &mut conn,
        "/api/action",
        None,
        &request("notes:addViaAction", note("A", "third", 3.0)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;
}

/// Signs up over HTTP; the user id and the token.
async fn sign_up(server: &TestServer, email: &str) -> (String, String) {
    let body = json!({"email": email, "password": "correct horse battery", "name": "U"});
    let (status, reply) = post_json(server.addr(), "/api/auth/sign-up/email", &body).await;
    assert_eq!(status, 200, "sign-up: {reply}");
    let token = reply["token"].as_str().expect("a token").to_string();
    let user = reply["user"]["id"].as_str().expect("a user id").to_string();
    (user, token)
}

/// A call of `notes:list` (which reads no session) with `token` on `conn`:
/// whether it is refused is the token check's decision alone.
async fn list_with(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    token: &str,
) -> (u16, Json) {
    let (status, _, body) = exchange(
        conn,
        "/api/query",
        Some(token),
        &request("notes:list", org("A")),
    )
    .await;
    (status, body)
}

fn assert_unauthenticated((status, body): (u16, Json), what: &str) {
    assert_eq!(status, 560, "{what}: {body}");
    assert_eq!(
        body["errorData"]["code"], "UNAUTHENTICATED",
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_or_revoked_token_is_refused_over_http_at_once() {
    let server = TestServer::start(support::registry()).await;
    let (_, token) = sign_up(&server, "ada@example.com").await;
    let body = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let (status, reply) = post_json(server.addr(), "/api/auth/sign-in/email", &body).await;
    assert_eq!(status, 200, "{reply}");
    let second = reply["token"].as_str().expect("a token").to_string();
    let mut conn = open(server.addr()).await;
    // Each token is checked, then answered again (from what was checked).
    for t in [&token, &second] {
        for _ in 0..2 {
            assert_eq!(list_with(&mut conn, t).await.0, 200);
        }
    }

    // Revoking the second session from the first ends its token at once...
    let (status, _, body) = exchange(
        &mut conn,
        "/api/auth/revoke-session",
        Some(&token),
        &json!({"token": second}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_unauthenticated(list_with(&mut conn, &second).await, "revoked");
    assert_eq!(
        list_with(&mut conn, &token).await.0,
        200,
        "the other session"
    );

    // ...and signing out ends the first.
    let (status, _, body) =
        exchange(&mut conn, "/api/auth/sign-out", Some(&token), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_unauthenticated(list_with(&mut conn, &token).await, "signed out");
    let mut fresh = open(server.addr()).await;
    assert_unauthenticated(list_with(&mut fresh, &token).await, "on another connection");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refused_over_http_once_its_session_or_its_own_time_has_run_out() {
    use livebase_runtime::auth::tokens::{Claims, TokenKeys};
    use std::time::{SystemTime, UNIX_EPOCH};

    let server = TestServer::start(support::registry()).await;
    let (user, _) = sign_up(&server, "ada@example.com").await;
    let keys = TokenKeys::load(server.data_dir()).expect("the server's key");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let session = |expires_at: f64| {
        let user = user.clone();
        server.executor().database().mutate(move |tx| {
            tx.insert(
                "sessions",
                obj! { "userId" => user.as_str(), "expiresAt" => expires_at },
            )
        })
    };
    let token = |sid: &DocumentId, exp: u64| {
        keys.issue(&Claims {
            sub: user.clone(),
            sid: sid.as_str().to_string(),
            iat: now.as_secs(),
            exp,
        })
        .expect("signs")
    };
    let day_ms = 86_400_000.0;
    let now_ms = now.as_millis() as f64;
    // A session that ends in 1.5 s, its token valid for a minute...
    let sid = session(now_ms + 1_500.0)
        .await
        .expect("a session row")
        .value;
    let short_session = token(&sid, now.as_secs() + 60);
    // ...and a token that ends in 2 s, for a session valid for a day (no
    // write ends it: only the clock).
    let sid = session(now_ms + day_ms).await.expect("a session row").value;
    let short_token = token(&sid, now.as_secs() + 2);
    let mut conn = open(server.addr()).await;
    for t in [&short_session, &short_token] {
        for _ in 0..2 {
            assert_eq!(list_with(&mut conn, t).await.0, 200);
        }
    }
    // Past both ends (the token's `exp` is whole seconds).
    let past = Duration::from_secs(now.as_secs() + 3) - now;
    tokio::time::sleep(past + Duration::from_millis(100)).await;
    assert_unauthenticated(list_with(&mut conn, &short_session).await, "session ended");
    assert_unauthenticated(list_with(&mut conn, &short_token).await, "token expired");
    server.shutdown().await;
}
