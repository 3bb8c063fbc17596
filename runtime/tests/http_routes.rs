//! An application's HTTP routes over real sockets: a route gets its path
//! parameters, query, headers and body and reaches the store through an
//! action's context; reserved prefixes and duplicates are refused at
//! registration; errors answer their codes' statuses; CORS preflights and
//! headers follow each route's policy; the body limit, the per-caller budget
//! and the call log apply to routes as to function calls; the built-in
//! routes keep their handlers.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use livebase_runtime::calllog::CallKind;
use livebase_runtime::registry::Registry;
use livebase_runtime::route::{Cors, HttpResponse, Method};
use livebase_runtime::server::MAX_MESSAGE_SIZE;
use livebase_runtime::{Error, ErrorCode};
use livebase_schema::obj;
use livebase_testkit::http::{call, http, http_raw};
use livebase_testkit::ws::server_error_request_id;
use livebase_testkit::TestServer;
use serde_json::json;
use support::org;
use tokio::sync::{mpsc, Notify};

/// The test application with routes added by `declare`.
async fn serve_with_routes(declare: impl FnOnce(&mut Registry)) -> TestServer {
    serve_tuned(declare, |_| {}).await
}

async fn serve_tuned(
    declare: impl FnOnce(&mut Registry),
    tune: impl FnOnce(&mut livebase_runtime::server::ServerOptions),
) -> TestServer {
    let mut app = support::registry();
    declare(&mut app);
    TestServer::start_tuned(app, tune).await
}

/// What `panic!` said, from a caught panic's payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The message of the panic `declare` raised on a fresh registry, or `None`.
fn registration_panic(declare: impl FnOnce(&mut Registry)) -> Option<String> {
    let mut app = support::registry();
    catch_unwind(AssertUnwindSafe(|| declare(&mut app)))
        .err()
        .map(panic_message)
}

fn ok_route(app: &mut Registry, method: Method, pattern: &str) {
    app.route(method, pattern, |_, _| async { Ok(HttpResponse::new(204)) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_gets_its_request_and_writes_through_its_context() {
    let server = serve_with_routes(|app| {
        app.route(Method::POST, "/orgs/{org}/notes/{n}", |ctx, request| async move {
            let organization = request.param("org")?.to_string();
            let n: f64 = request
                .param("n")?
                .parse()
                .map_err(|_| Error::invalid("n: not a number"))?;
            let body = String::from_utf8(request.body.to_vec())
                .map_err(|_| Error::invalid("body: not UTF-8"))?;
            // An internal mutation: a route may call what clients cannot.
            let id = ctx
                .run_mutation(
                    "notes:internalAdd",
                    obj! {"organizationId" => organization.as_str(), "body" => body.as_str(), "n" => n},
                )
                .await?;
            Ok(HttpResponse::json(&json!({
                "id": id.to_json(),
                "tag": request.query_param("tag"),
                "header": request.header("x-test"),
                "path": request.path,
            }))
            .with_status(201))
        });
    })
    .await;

    let reply = http(
        server.addr(),
        "POST",
        "/orgs/a%20b/notes/7?tag=x%26y&other=1",
        &[("X-Test", "seen")],
        b"raw body bytes",
    )
    .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.bytes)
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["tag"], "x&y");
    assert_eq!(body["header"], "seen");
    assert_eq!(body["path"], "/orgs/a%20b/notes/7");

    let (status, listed) = call(server.addr(), "query", "notes:list", org("a b")).await;
    assert_eq!(status, 200, "{listed}");
    let notes = listed["value"].as_array().expect("an array of notes");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["body"], "raw body bytes");
    assert_eq!(notes[0]["n"], 7.0);
    assert_eq!(notes[0]["_id"], body["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_prefixes_and_duplicates_panic_at_registration() {
    for pattern in [
        "/api",
        "/api/hook",
        "/_dashboard/x",
        "/health",
        "/health/deep",
    ] {
        let message = registration_panic(|app| ok_route(app, Method::GET, pattern))
            .unwrap_or_else(|| panic!("`{pattern}` was accepted"));
        assert!(message.contains("is reserved"), "{pattern}: {message}");
    }
    let message = registration_panic(|app| {
        ok_route(app, Method::POST, "/hooks/{source}");
        ok_route(app, Method::POST, "/hooks/{name}");
    })
    .expect("a duplicate is refused");
    assert!(message.contains("registered twice"), "{message}");
    for pattern in ["hooks", "/hooks/", "/a//b", "/{bad-name}"] {
        assert!(
            registration_panic(|app| ok_route(app, Method::GET, pattern)).is_some(),
            "`{pattern}` was accepted"
        );
    }
    // Positive controls: the same path under another method, a literal
    // beside a parameter, and a name that only starts like a reserved one.
    assert_eq!(
        registration_panic(|app| {
            ok_route(app, Method::POST, "/hooks/{source}");
            ok_route(app, Method::GET, "/hooks/{source}");
            ok_route(app, Method::POST, "/hooks/stripe");
            ok_route(app, Method::GET, "/apiary");
        }),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_answers_under_a_reserved_prefix_and_the_built_in_routes_keep_theirs() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let server = serve_with_routes(move |app| {
        for pattern in ["/{one}", "/{one}/{two}"] {
            let counted = counted.clone();
            app.route(Method::GET, pattern, move |_, _| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(HttpResponse::text("caught")) }
            });
        }
    })
    .await;
    let addr = server.addr();
    for path in ["/_dashboard", "/_dashboard/api/tables", "/api/unknown"] {
        let reply = http(addr, "GET", path, &[], b"").await;
        assert_eq!(reply.status, 404, "{path}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(http(addr, "GET", "/health", &[], b"").await.bytes, b"ok");
    let (status, body) = call(addr, "query", "notes:list", org("A")).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("success")),
        "{body}"
    );
    // Positive control: the catch-all routes do answer elsewhere.
    assert_eq!(
        http(addr, "GET", "/anything", &[], b"").await.bytes,
        b"caught"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_answer_their_codes_statuses() {
    let server = serve_with_routes(|app| {
        app.route(Method::GET, "/fail/{code}", |_, request| async move {
            let code: ErrorCode = request.param("code")?.parse().expect("infallible");
            Err::<HttpResponse, _>(Error::app(code, "refused"))
        });
        app.route(Method::GET, "/internal", |_, _| async {
            Err::<HttpResponse, _>(Error::internal("the disk is on fire"))
        });
        app.route(Method::GET, "/panic", |_, _| async {
            panic!("a bug in a route");
            #[allow(unreachable_code)]
            Ok(HttpResponse::new(200))
        });
    })
    .await;
    let addr = server.addr();
    for (code, status) in [
        ("UNAUTHENTICATED", 401),
        ("FORBIDDEN", 403),
        ("NOT_FOUND", 404),
        ("INVALID_ARGUMENT", 400),
        ("CONFLICT", 422),
        ("LIMIT_EXCEEDED", 400),
        ("RATE_LIMITED", 429),
        ("APP_SPECIFIC", 400),
    ] {
        let reply = http(addr, "GET", &format!("/fail/{code}"), &[], b"").await;
        assert_eq!(reply.status, status, "{code}");
        assert_eq!(reply.json(), json!({"code": code, "message": "refused"}));
    }
    for path in ["/internal", "/panic"] {
        let reply = http(addr, "GET", path, &[], b"").await;
        assert_eq!(reply.status, 500, "{path}");
        let body = reply.json();
        let message = body["message"].as_str().unwrap_or_default();
        assert!(server_error_request_id(message).is_some(), "{path}: {body}");
        assert!(!body.to_string().contains("fire"), "{body}");
    }
    let unknown = http(addr, "GET", "/nowhere", &[], b"").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["code"], "NOT_FOUND");
    let head = http(addr, "HEAD", "/fail/CONFLICT", &[], b"").await;
    assert_eq!(
        (head.status, head.bytes.len()),
        (422, 0),
        "a HEAD runs the GET route, bodiless"
    );
    let wrong_method = http(addr, "DELETE", "/internal", &[], b"").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_headers_follow_each_routes_policy() {
    let server = serve_with_routes(|app| {
        app.route(Method::PUT, "/shared/{id}", |_, _| async {
            Ok(HttpResponse::text("put"))
        })
        .cors(Cors::origins(["https://app.example"]).allow_headers(["content-type", "x-key"]));
        app.route(Method::GET, "/open", |_, _| async {
            Ok(HttpResponse::text("open"))
        })
        .cors(Cors::any_origin());
        app.route(Method::GET, "/private", |_, _| async {
            Ok(HttpResponse::text("private"))
        });
    })
    .await;
    let addr = server.addr();
    let preflight = |path: &'static str, origin: &'static str, method: &'static str| async move {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
            ("Access-Control-Request-Headers", "content-type"),
        ];
        http(addr, "OPTIONS", path, &headers, b"").await
    };

    let allowed = preflight("/shared/1", "https://app.example", "PUT").await;
    assert_eq!(allowed.status, 204);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(allowed.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("content-type, x-key")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("600"));
    assert_eq!(allowed.header("vary"), Some("origin"));

    for refused in [
        preflight("/shared/1", "https://evil.example", "PUT").await,
        preflight("/private", "https://app.example", "GET").await,
    ] {
        assert_eq!(refused.status, 403);
        assert_eq!(refused.header("access-control-allow-origin"), None);
    }
    assert_eq!(
        preflight("/nowhere", "https://app.example", "GET")
            .await
            .status,
        404
    );

    let put = http(
        addr,
        "PUT",
        "/shared/1",
        &[("Origin", "https://app.example")],
        b"",
    )
    .await;
    assert_eq!(put.status, 200);
    assert_eq!(
        put.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let foreign = http(
        addr,
        "PUT",
        "/shared/1",
        &[("Origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    let open = http(
        addr,
        "GET",
        "/open",
        &[("Origin", "https://any.example")],
        b"",
    )
    .await;
    assert_eq!(open.header("access-control-allow-origin"), Some("*"));
    assert_eq!(open.header("vary"), None);
    let private = http(
        addr,
        "GET",
        "/private",
        &[("Origin", "https://app.example")],
        b"",
    )
    .await;
    assert_eq!(private.status, 200);
    assert_eq!(private.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_never_reaches_the_route() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let server = serve_with_routes(move |app| {
        app.route(Method::POST, "/upload", move |_, request| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(HttpResponse::text(request.body.len().to_string())) }
        });
    })
    .await;
    let addr = server.addr();
    let big = vec![b'x'; MAX_MESSAGE_SIZE + 1];
    let reply = http(addr, "POST", "/upload", &[], &big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Positive control: a body at the limit is the route's, whole.
    let reply = http(addr, "POST", "/upload", &[], &big[..MAX_MESSAGE_SIZE]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.bytes, MAX_MESSAGE_SIZE.to_string().as_bytes());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_408_before_the_route_runs() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let server = serve_tuned(
        move |app| {
            app.route(Method::POST, "/hook", move |_, _| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(HttpResponse::new(204)) }
            });
        },
        |options| options.edge.body_timeout = std::time::Duration::from_millis(300),
    )
    .await;
    let head = format!(
        "POST /hook HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\n{{\"partial",
        server.addr()
    );
    let stalled = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connecting");
    let reply = http_raw(stalled, head.as_bytes()).await;
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Positive control: the whole body in time reaches the route.
    assert_eq!(
        http(server.addr(), "POST", "/hook", &[], b"{}")
            .await
            .status,
        204
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_calls_count_against_the_callers_budget_and_are_logged() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let server = serve_tuned(
        move |app| {
            app.route(Method::GET, "/slow/{n}", move |_, _| {
                let entered_tx = entered_tx.clone();
                let gate = gate.clone();
                async move {
                    let _ = entered_tx.send(());
                    gate.notified().await;
                    Ok(HttpResponse::text("done"))
                }
            });
        },
        |options| {
            options.edge.max_calls_in_flight_per_caller = 1;
            options.dashboard = true;
        },
    )
    .await;
    let addr = server.addr();
    let first = tokio::spawn(async move { http(addr, "GET", "/slow/1", &[], b"").await });
    entered.recv().await.expect("the first call started");

    let refused = http(addr, "GET", "/slow/2", &[], b"").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["code"], "LIMIT_EXCEEDED");
    // A function call from the same address shares the budget.
    let (status, body) = call(addr, "query", "notes:list", org("A")).await;
    assert_eq!(status, 560, "{body}");
    assert_eq!(body["errorData"]["code"], "LIMIT_EXCEEDED");

    release.notify_one();
    let done = first.await.expect("the first call");
    assert_eq!(
        (done.status, done.bytes.as_slice()),
        (200, b"done".as_slice())
    );

    let log = server
        .executor()
        .call_log()
        .expect("a call log in dev mode");
    let routes: Vec<_> = log
        .since(0)
        .into_iter()
        .filter(|c| c.kind == CallKind::Route)
        .map(|c| {
            (
                c.path,
                c.outcome == livebase_runtime::calllog::CallOutcome::Success,
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("GET /slow/{n}".to_string(), false),
            ("GET /slow/{n}".to_string(), true)
        ]
    );
}

/// A route whose client leaves before the answer runs to its end on its own
/// task, and keeps its caller's place among calls in flight until then:
/// else leaving at once, again and again, would run handlers past every
/// budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_whose_client_left_keeps_its_callers_place_until_it_ends() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let ended = Arc::new(AtomicUsize::new(0));
    let ends = ended.clone();
    let server = serve_tuned(
        move |app| {
            app.route(Method::GET, "/slow", move |_, _| {
                let (entered_tx, gate, ends) = (entered_tx.clone(), gate.clone(), ends.clone());
                async move {
                    let _ = entered_tx.send(());
                    gate.notified().await;
                    ends.fetch_add(1, Ordering::SeqCst);
                    Ok(HttpResponse::text("done"))
                }
            });
            app.route(Method::GET, "/fast", |_, _| async {
                Ok(HttpResponse::new(204))
            });
        },
        |options| options.edge.max_calls_in_flight_per_caller = 1,
    )
    .await;
    let addr = server.addr();
    let leaver = tokio::spawn(async move { http(addr, "GET", "/slow", &[], b"").await });
    entered.recv().await.expect("the call started");
    leaver.abort();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // The handler still runs, and still holds the caller's one place.
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        http(addr, "GET", "/fast", &[], b""),
    )
    .await
    .expect("an answer in time");
    assert_eq!(
        refused.status, 429,
        "the route whose client left still counts"
    );

    // Once it ends, the place is free again.
    release.notify_one();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let reply = http(addr, "GET", "/fast", &[], b"").await;
        if reply.status == 204 {
            break;
        }
        assert_eq!(reply.status, 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the place never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        ended.load(Ordering::SeqCst),
        1,
        "the handler ran to its end"
    );
}
