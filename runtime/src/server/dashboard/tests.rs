//! The dashboard's endpoints on a real server (port 0, a temporary folder),
//! over plain HTTP/1.1 on a socket.

use std::net::SocketAddr;
use std::time::Duration;

use livebase_schema::{define_table, obj, v, Schema, Value};
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::executor::Caller;
use crate::registry::{Identity, Registry};
use crate::server::{serve, RunningServer, ServerOptions};

const WAIT: Duration = Duration::from_secs(10);

fn app() -> Registry {
    let mut app =
        Registry::new(Schema::new().table("notes", define_table([("body", v::string())])));
    app.mutation("notes:add", [("body", v::string())], |ctx, args| {
        let id = ctx
            .db
            .insert("notes", obj! { "body" => args.string("body")? })?;
        Ok(Value::from(id.as_str()))
    });
    app
}

async fn start(dir: &tempfile::TempDir, dashboard: bool) -> RunningServer {
    let options = ServerOptions {
        data_dir: dir.path().to_path_buf(),
        dashboard,
        ..ServerOptions::default()
    };
    serve(app(), options).await.expect("the server starts")
}

async fn request(addr: SocketAddr, path: &str) -> TcpStream {
    request_as(addr, path, &addr.to_string()).await
}

/// `GET path` sent to `addr` with `Host: host`.
async fn request_as(addr: SocketAddr, path: &str, host: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp
}

/// `GET path`: the status, the headers (lowercase) and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    get_as(addr, path, &addr.to_string()).await
}

/// `GET path` with `Host: host`: the status, the headers and the body.
async fn get_as(addr: SocketAddr, path: &str, host: &str) -> (u16, String, String) {
    let mut tcp = request_as(addr, path, host).await;
    let mut raw = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("a reply in time")
        .expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().expect("a status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

async fn get_json(addr: SocketAddr, path: &str) -> Json {
    let (status, _, body) = get(addr, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Reads `tcp` until what came holds every one of `wanted`.
async fn read_until(tcp: &mut TcpStream, seen: &mut String, wanted: &[&str]) {
    let mut buf = [0; 4096];
    while !wanted.iter().all(|w| seen.contains(w)) {
        let n = timeout(WAIT, tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("waiting for {wanted:?}, got {seen:?}"))
            .expect("read");
        assert!(n > 0, "the stream ended before {wanted:?}: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn the_dev_endpoints_show_tables_documents_calls_and_stream_changes() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let server = start(&dir, true).await;
    let addr = server.addr;

    let (status, head, page) = get(addr, "/_dashboard").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("img-src data: 'self';"), "{head}");
    assert!(page.contains("<title>livebase dashboard</title>"));

    let mut events = request(addr, "/_dashboard/api/events").await;
    let mut seen = String::new();
    read_until(&mut events, &mut seen, &["text/event-stream"]).await;

    let id = server
        .state
        .executor
        .mutation(
            "notes:add",
            vec![obj! { "body" => "<b>hi</b>" }],
            Identity::Anonymous,
            Caller::Client,
            None,
        )
        .await
        .expect("notes:add")
        .0;
    read_until(
        &mut events,
        &mut seen,
        &["event: commit", "event: calls\ndata: 1"],
    )
    .await;

    let tables = get_json(addr, "/_dashboard/api/tables").await;
    let tables = tables["tables"].as_array().expect("tables");
    assert_eq!(
        tables[0],
        serde_json::json!({"name": "notes", "system": false, "count": 1, "more": false}),
        "the application's tables come first"
    );
    assert!(tables[1..].iter().all(|t| t["system"] == true));

    let notes = get_json(addr, "/_dashboard/api/tables/notes").await;
    assert_eq!(notes["documents"][0]["_id"], id.to_json());
    assert_eq!(notes["documents"][0]["body"], "<b>hi</b>");
    assert_eq!(notes["more"], false);
    assert_eq!(get(addr, "/_dashboard/api/tables/nope").await.0, 404);

    let calls = get_json(addr, "/_dashboard/api/calls").await;
    let call = &calls["calls"][0];
    assert_eq!(call["path"], "notes:add");
    assert_eq!(call["kind"], "mutation");
    assert_eq!(call["ok"], true);
    assert_eq!(call["seq"], 1);
    let after = get_json(addr, "/_dashboard/api/calls?after=1").await;
    assert_eq!(after["calls"], serde_json::json!([]));

    let outbox = get_json(addr, "/_dashboard/api/outbox").await;
    assert_eq!(outbox["mails"], serde_json::json!([]), "no mail sent yet");

    // The file browser: a stored file listed with its metadata and a
    // same-origin signed URL that serves it (the page's image preview).
    let empty = get_json(addr, "/_dashboard/api/files").await;
    assert_eq!(empty, serde_json::json!({"files": [], "more": false}));
    // Text bytes: the test's reader wants UTF-8; the type is what counts.
    let png = b"PNG, not really a picture".to_vec();
    let file = server
        .state
        .executor
        .files()
        .expect("file storage")
        .store(png.clone(), Some("image/png".into()))
        .await
        .expect("a stored file");
    let files = get_json(addr, "/_dashboard/api/files").await;
    assert_eq!(files["more"], false);
    let listed = &files["files"][0];
    assert_eq!(listed["id"], file.as_str());
    assert_eq!(listed["size"], png.len() as f64);
    assert_eq!(listed["contentType"], "image/png");
    assert_eq!(listed["sha256"].as_str().map(str::len), Some(64));
    assert!(listed["creationTime"].as_f64().is_some_and(|t| t > 0.0));
    let url = listed["url"].as_str().expect("a url");
    assert!(
        url.starts_with(&format!("/api/storage/{file}?sig=")),
        "{url}"
    );
    let (status, head, body) = get(addr, url).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/png"), "{head}");
    assert_eq!(body.as_bytes(), png.as_slice());

    // The open event stream ends with the server.
    timeout(WAIT * 2, server.shutdown())
        .await
        .expect("the server shuts down with an event stream open");
}

#[tokio::test]
async fn without_the_option_there_is_no_dashboard() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let server = start(&dir, false).await;
    for path in [
        "/_dashboard",
        "/_dashboard/api/tables",
        "/_dashboard/api/files",
        "/_dashboard/api/events",
    ] {
        assert_eq!(get(server.addr, path).await.0, 404, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_answers_only_its_own_loopback_host() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let server = start(&dir, true).await;
    let (addr, port) = (server.addr, server.addr.port());
    let paths = [
        "/_dashboard",
        "/_dashboard/api/tables",
        "/_dashboard/api/events",
        "/_dashboard/api/files",
    ];
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(get_as(addr, paths[1], &host).await.0, 200, "{host}");
    }
    // DNS rebinding: a page on evil.example whose name now points at
    // 127.0.0.1 sends its own name as Host.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "localhost".to_string(),
        format!("localhost.evil.example:{port}"),
    ] {
        for path in paths {
            let (status, _, body) = get_as(addr, path, &host).await;
            assert_eq!(status, 403, "{host} {path}: {body}");
            assert!(!body.contains("notes"), "{host} {path}: {body}");
        }
    }
    // The rest of the server does not look at Host.
    assert_eq!(
        get_as(addr, "/health", &format!("evil.example:{port}"))
            .await
            .0,
        200
    );
    server.shutdown().await;
}

/// [`app`] plus jobs to watch: `jobs:schedule {path, delayMs}` and three
/// retryable actions — `mail:ok` succeeds, `mail:flaky` always fails
/// transiently (an hour between attempts: it stays retrying), `mail:refuse`
/// fails for good.
fn app_with_jobs() -> Registry {
    use crate::error::Error;
    use crate::scheduler::{transient, RetryPolicy};
    let mut app = app();
    app.mutation(
        "jobs:schedule",
        [("path", v::string()), ("delayMs", v::float64())],
        |ctx, args| {
            let delay = Duration::from_secs_f64(args.f64("delayMs")? / 1e3);
            ctx.scheduler()
                .run_after(delay, &args.string("path")?, obj! {})
        },
    );
    app.internal_action("mail:ok", [], |_ctx, _args| async move {
        Ok(Value::from("250 2.0.0 accepted"))
    });
    app.internal_action("mail:flaky", [], |_ctx, _args| async move {
        Err::<Value, _>(transient(Error::conflict("421 4.3.0 try again later")))
    });
    app.internal_action("mail:refuse", [], |_ctx, _args| async move {
        Err::<Value, _>(Error::invalid("550 5.1.1 mailbox unavailable"))
    });
    let policy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
        deadline: Duration::from_secs(86_400),
    };
    for path in ["mail:ok", "mail:flaky", "mail:refuse"] {
        app.retryable(path, policy);
    }
    app
}

#[tokio::test]
async fn jobs_come_with_a_status_that_tells_retrying_from_pending() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options = ServerOptions {
        data_dir: dir.path().to_path_buf(),
        dashboard: true,
        ..ServerOptions::default()
    };
    let server = serve(app_with_jobs(), options)
        .await
        .expect("the server starts");
    for (path, delay) in [
        ("mail:ok", 0.0),
        ("mail:flaky", 0.0),
        ("mail:refuse", 0.0),
        ("mail:ok", 3_600_000.0),
    ] {
        server
            .state
            .executor
            .mutation(
                "jobs:schedule",
                vec![obj! { "path" => path, "delayMs" => delay }],
                Identity::Anonymous,
                Caller::Client,
                None,
            )
            .await
            .expect("scheduled");
    }
    let expected = serde_json::json!({"success": 1, "retrying": 1, "failed": 1, "pending": 1});
    let started = std::time::Instant::now();
    let all = loop {
        let all = get_json(server.addr, "/_dashboard/api/jobs").await;
        if all["counts"] == expected {
            break all;
        }
        assert!(started.elapsed() < WAIT, "waited for {expected}: {all:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let jobs = all["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 4);
    let retrying = jobs
        .iter()
        .find(|j| j["status"] == "retrying")
        .expect("a retrying job");
    assert_eq!(retrying["name"], "mail:flaky");
    assert_eq!(retrying["state"], "pending");
    let attempt = &retrying["attempts"][0];
    assert_eq!(attempt["error"], "CONFLICT: 421 4.3.0 try again later");
    assert!(attempt["nextAttemptTime"].as_f64() > attempt["endedTime"].as_f64());

    let refused = get_json(server.addr, "/_dashboard/api/jobs?function=mail:refuse").await;
    assert_eq!(refused["counts"], serde_json::json!({"failed": 1}));
    assert_eq!(refused["jobs"][0]["status"], "failed");
    assert_eq!(
        refused["jobs"][0]["error"],
        "INVALID_ARGUMENT: 550 5.1.1 mailbox unavailable"
    );
    let sent = get_json(server.addr, "/_dashboard/api/jobs?function=mail:ok&limit=1").await;
    assert_eq!(sent["jobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(sent["more"], true);
    assert_eq!(
        sent["counts"],
        serde_json::json!({"success": 1, "pending": 1})
    );
    let ok = sent["jobs"][0].clone();
    assert_eq!(ok["status"], "pending", "the newest first: {ok:#}");
}

#[tokio::test]
async fn the_outbox_names_the_smtp_server_without_its_credentials() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options = ServerOptions {
        data_dir: dir.path().to_path_buf(),
        dashboard: true,
        mail: crate::email::MailOptions {
            smtp: Some("smtps://ada:Hunter2-secret@mail.example.com:465".into()),
            ..crate::email::MailOptions::default()
        },
        ..ServerOptions::default()
    };
    let server = serve(app(), options).await.expect("the server starts");
    let outbox = get_json(server.addr, "/_dashboard/api/outbox").await;
    assert_eq!(outbox["smtp"], "smtps://***:***@mail.example.com:465");
    assert_eq!(outbox["outbox"], Json::Null);
}
