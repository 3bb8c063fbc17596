//! Hostile clients at the network edge and in the size of what they make the
//! server read and send (issue 11, items 2 and 3), each attack sent to a real
//! server on a real socket: a stalled request body, too many HTTP connections
//! or WebSockets from one address or in total, a WebSocket that never sends
//! `Connect` or stops reading, and queries whose result or reads pass the
//! byte limits — over HTTP as over the WebSocket.
//!
//! The timeouts and caps are lowered through `ServerOptions::edge` so that no
//! test waits for the production values.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use livebase_runtime::server::ServerOptions;
use livebase_runtime::transaction::{
    MAX_BYTES_READ_PER_TRANSACTION, MAX_BYTES_WRITTEN_PER_TRANSACTION,
};
use livebase_schema::value::MAX_VALUE_SIZE;
use livebase_schema::{obj, Value};
use livebase_testkit::http::{call, http, http_from, http_raw};
use livebase_testkit::{error_code, eventually, Frame, HttpResponse, TestServer, PATIENCE};
use support::org;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

/// A second client address: every 127.0.0.0/8 address reaches the server.
fn other_address() -> IpAddr {
    "127.0.0.2".parse().expect("an address")
}

async fn health(server: &TestServer) -> HttpResponse {
    http(server.addr(), "GET", "/health", &[], b"").await
}

/// Asks for `/health` until it answers 200: a slot given back is freed when
/// the server notices the other side closed, a moment after the close.
async fn eventually_healthy(server: &TestServer) {
    let what = "a slot back after the held connection closed";
    eventually(what, PATIENCE, || async {
        match health(server).await.status {
            200 => Ok(()),
            status => Err(format!("still refused ({status})")),
        }
    })
    .await
}

/// Opens `n` connections that send nothing, and waits until the server holds
/// them (a request on one more connection is refused once they are).
async fn idle_connections(server: &TestServer, n: usize) -> Vec<TcpStream> {
    let mut idle = Vec::new();
    for _ in 0..n {
        idle.push(TcpStream::connect(server.addr()).await.expect("connecting"));
    }
    idle
}

fn assert_refused(response: &HttpResponse, status: u16, names: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.header("retry-after"),
        Some("5"),
        "a refusal says when to come back"
    );
    let body = response.json();
    assert_eq!(body["code"], "TooManyConnections", "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains(names),
        "{body} should say {names}"
    );
}

// ---------------------------------------------------------------------------
// Stalled sockets.

/// A `POST /api/query` announcing a megabyte and sending nothing (and one
/// sending a few bytes, then nothing) is answered `408` and closed once the
/// body timeout passes; other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_answered_408_and_closed() {
    let server = TestServer::start_tuned(support::registry(), |o: &mut ServerOptions| {
        o.edge.body_timeout = Duration::from_millis(300);
    })
    .await;
    let head = format!(
        "POST /api/query HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
        server.addr()
    );
    for sent in [head.clone(), format!("{head}{{\"path\": ")] {
        let stalled = TcpStream::connect(server.addr()).await.expect("connecting");
        let (response, other) = tokio::join!(http_raw(stalled, sent.as_bytes()), health(&server));
        assert_eq!(other.status, 200, "others are served while one stalls");
        // `http_raw` reads until the server closes: the socket is not held.
        assert_eq!(response.status, 408, "{response:?}");
        assert_eq!(response.header("connection"), Some("close"));
        let body = response.json();
        assert_eq!(body["code"], "RequestTimeout", "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains("300ms"),
            "{body} should name the timeout"
        );
    }
    // A body that arrives in time is served as before.
    let (status, body) = call(server.addr(), "query", "notes:count", org("A")).await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;
}

/// An idle keep-alive connection is closed after the header timeout, so it
/// does not keep its slot under the caps below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = TestServer::start_tuned(support::registry(), |o: &mut ServerOptions| {
        o.edge.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut kept = TcpStream::connect(server.addr()).await.expect("connecting");
    let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr());
    kept.write_all(request.as_bytes()).await.expect("sending");
    let mut raw = Vec::new();
    let read = tokio::time::timeout(PATIENCE, kept.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the idle connection was held open");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "one answer, then the close: {text}");
    server.shutdown().await;
}

/// Past the per-address cap an HTTP connection is answered `429` with
/// `Retry-After`; another address is still served, and a slot given back is
/// free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_per_address_are_capped_with_429() {
    let server = TestServer::start_tuned(support::registry(), |o: &mut ServerOptions| {
        o.edge.max_http_connections_per_address = 2;
    })
    .await;
    let mut idle = idle_connections(&server, 2).await;
    assert_refused(&health(&server).await, 429, "from your address");
    let elsewhere = http_from(other_address(), server.addr(), "GET", "/health").await;
    assert_eq!(elsewhere.status, 200, "another address has its own count");

    drop(idle.pop());
    eventually_healthy(&server).await;
    server.shutdown().await;
}

/// Past the global cap an HTTP connection is answered `503` with
/// `Retry-After`, whatever its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_are_capped_in_total_with_503() {
    let server = TestServer::start_tuned(support::registry(), |o: &mut ServerOptions| {
        o.edge.max_http_connections = 2;
    })
    .await;
    let mut idle = idle_connections(&server, 2).await;
    let refused = http_from(other_address(), server.addr(), "GET", "/health").await;
    assert_refused(&refused, 503, "too many connections");

    drop(idle.pop());
    eventually_healthy(&server).await;
    server.shutdown().await;
}

/// The WebSocket handshake of one connection too many: the HTTP status the
/// server refused it with, and its `Retry-After`.
async fn refused_upgrade(server: &TestServer) -> (u16, Option<String>) {
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(server.ws_url()))
        .await
        .expect("an answer to the handshake in time")
    {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        ),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the upgrade was accepted past the cap"),
    }
}

/// WebSockets are capped per address (`429`) as well as in total (`503`). An
/// upgraded connection no longer counts as an HTTP connection, and a closed
/// one gives its slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_per_address_are_capped_with_429() {
    let server = TestServer::start_tuned(support::registry(), |o: &mut ServerOptions| {
        o.edge.max_connections_per_address = 2;
        o.edge.max_http_connections_per_address = 2;
    })
    .await;
    let first = server.client().await;
    let mut second = server.client().await;
    second.subscribe(&[(0, "notes:count", org("A"))]).await;
    assert_eq!(refused_upgrade(&server).await, (429, Some("5".into())));
    // Two WebSockets are open, yet HTTP from the same address is served.
    assert_eq!(health(&server).await.status, 200);

    first.close().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let third = loop {
        match tokio_tungstenite::connect_async(server.ws_url()).await {
            Ok((socket, _)) => break socket,
            Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "the slot came back");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    drop(third);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_capped_in_total_with_503() {
    let server = TestServer::start_tuned(support::registry(), |o: &mut ServerOptions| {
        o.edge.max_connections = 1;
    })
    .await;
    let _only = server.client().await;
    assert_eq!(refused_upgrade(&server).await, (503, Some("5".into())));
    server.shutdown().await;
}

/// A WebSocket that never sends `Connect` is closed after the connect
/// timeout (1002).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_never_sends_connect_is_closed() {
    let server = TestServer::start_tuned(support::registry(), |o: &mut ServerOptions| {
        o.edge.connect_timeout = Duration::from_millis(200);
    })
    .await;
    let mut silent = livebase_testkit::Client::without_connect(&server.ws_url()).await;
    assert_eq!(silent.expect_close().await, Some(1002));
    server.shutdown().await;
}

/// A peer that stops reading never answers the server's WebSocket pings: it
/// is closed (1008) once the pong timeout passes, instead of being held. A
/// peer that reads answers them (its WebSocket library does) and stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_and_one_that_reads_stays() {
    let server = TestServer::start_tuned(support::registry(), |o: &mut ServerOptions| {
        o.edge.ping_interval = Duration::from_millis(100);
        o.edge.pong_timeout = Duration::from_millis(200);
    })
    .await;
    let mut reader = server.client().await;
    let mut deaf = server.client().await;
    deaf.subscribe(&[(0, "notes:count", org("A"))]).await;

    // The reader reads (and so answers pings) for several pong timeouts
    // while the other reads nothing at all.
    match reader.next_frame(Duration::from_millis(1200)).await {
        None => {}
        Some(other) => panic!("a peer that answers pings got {other:?}"),
    }
    let pushed = reader.subscribe(&[(0, "notes:count", org("A"))]).await;
    assert_eq!(pushed.updated(0), Some(&Value::from(0.0)));

    // Reading only now, the other finds that it was closed meanwhile.
    let (code, reason) = loop {
        match deaf.next_frame(PATIENCE).await {
            Some(Frame::Message(_)) => continue,
            Some(Frame::Close(Some(close))) => break close,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("no pong within 200ms"), "{reason}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Unbounded results.

/// A note body of 200 KB.
fn big_body() -> String {
    "x".repeat(200_000)
}

/// Inserts `count` notes with 200 KB bodies into organization `A`, in
/// mutations small enough for the bytes-written limit.
async fn add_big_notes(server: &TestServer, count: usize) {
    let per_mutation = MAX_BYTES_WRITTEN_PER_TRANSACTION / 200_000 - 1;
    let mut left = count;
    while left > 0 {
        let n = left.min(per_mutation);
        support::mutate(
            server,
            "notes:addMany",
            obj! {"organizationId" => "A", "body" => big_body(), "count" => n as f64},
        )
        .await;
        left -= n;
    }
}

/// The HTTP answer to `path` over organization `A`, checked to be a
/// `LIMIT_EXCEEDED` error whose message names `limit`; the answer stays small.
async fn expect_limit_over_http(server: &TestServer, path: &str, limit: usize) {
    let (status, body) = call(server.addr(), "query", path, org("A")).await;
    assert_eq!(
        status, 560,
        "{path} over HTTP must fail, not send the result"
    );
    assert_eq!(body["errorData"]["code"], "LIMIT_EXCEEDED", "{body}");
    let message = body["errorMessage"].as_str().unwrap_or("");
    assert!(
        message.contains(&limit.to_string()),
        "{message} should name the limit {limit}"
    );
    assert!(body.to_string().len() < 4096, "a short error, not a body");
}

/// A query whose result passes the value limit fails with `LIMIT_EXCEEDED`
/// over HTTP too — not a megabytes-long body — as it does over the WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_is_refused_over_http_as_over_the_websocket() {
    let server = TestServer::start(support::registry()).await;
    add_big_notes(&server, 8).await;
    expect_limit_over_http(&server, "notes:list", MAX_VALUE_SIZE).await;

    let mut client = server.client().await;
    let t = client.subscribe(&[(0, "notes:list", org("A"))]).await;
    let error = t.failed(0).expect("the live query fails too");
    assert_eq!(error_code(error), Some("LIMIT_EXCEEDED"));
    // A result within the limit is still sent whole.
    let (status, body) = call(server.addr(), "query", "notes:count", org("A")).await;
    assert_eq!((status, body["value"].as_f64()), (200, Some(8.0)), "{body}");
    server.shutdown().await;
}

/// A query that reads more than the bytes-read limit stops there with
/// `LIMIT_EXCEEDED`, whatever its result's size (here a count) and its
/// document count (well under the document limit); a mutation writing more
/// than the bytes-written limit is refused and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_are_bounded_in_bytes() {
    let server = TestServer::start(support::registry()).await;
    let over = MAX_BYTES_READ_PER_TRANSACTION / 200_000 + 2;
    add_big_notes(&server, over).await;
    expect_limit_over_http(&server, "notes:count", MAX_BYTES_READ_PER_TRANSACTION).await;
    let mut client = server.client().await;
    let t = client.subscribe(&[(0, "notes:count", org("A"))]).await;
    let error = t.failed(0).expect("the live query fails too");
    assert_eq!(error_code(error), Some("LIMIT_EXCEEDED"));
    assert!(
        error
            .message
            .contains(&MAX_BYTES_READ_PER_TRANSACTION.to_string()),
        "{}",
        error.message
    );

    let too_many = MAX_BYTES_WRITTEN_PER_TRANSACTION / 200_000 + 1;
    let (status, body) = call(
        server.addr(),
        "mutation",
        "notes:addMany",
        obj! {"organizationId" => "B", "body" => big_body(), "count" => too_many as f64},
    )
    .await;
    assert_eq!(status, 560, "{body}");
    assert_eq!(body["errorData"]["code"], "LIMIT_EXCEEDED", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains(&MAX_BYTES_WRITTEN_PER_TRANSACTION.to_string()),
        "{body}"
    );
    assert_eq!(
        support::count(&server, "B").await,
        0.0,
        "nothing was written"
    );
    server.shutdown().await;
}
