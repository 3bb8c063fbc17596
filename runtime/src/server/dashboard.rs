//! The dev dashboard at `/_dashboard`: one static page ([`PAGE`], no build
//! step) and the small read-only JSON endpoints it polls under
//! `/_dashboard/api/`, plus one Server-Sent Events stream that says when to
//! poll — on every commit (documents and scheduled jobs) and every function
//! call (the call log, and the outbox its actions write to). Scheduled jobs
//! come with a status ([`job_status`]) that tells a retrying job from a
//! pending one, which the page's outbox shows for its mail jobs: pending,
//! retrying, sent, failed, each with its attempts and the SMTP reply.
//!
//! **Invariant:** mounted only when [`super::ServerOptions::dashboard`] is set,
//! which only `livebase dev` does; `livebase serve` answers 404 here. The
//! endpoints read the store directly, not through functions, so they see
//! every table and never show up in the call log they serve.
//!
//! Under `livebase dev` the server runs as a child of a supervisor that
//! rebuilds the application on save; the supervisor writes how the last
//! build went to [`BUILD_STATUS_FILE`] in the data folder, and
//! `/_dashboard/api/build` serves it, so the page can show a failed build's
//! compiler output while the previous code keeps serving.
//!
//! The file browser (`/_dashboard/api/files`) lists `_storage` rows with a
//! same-origin signed URL each, which the page uses for image previews
//! (`img-src 'self'`) and downloads.
//!
//! The wire JSON is built here, at the edge: [`CallRecord`] and [`eml::Mail`]
//! do not derive `Serialize`.
//!
//! **Invariant:** every dashboard route answers only a request whose `Host`
//! is the loopback address and port the server is bound to
//! ([`loopback_hosts`]); any other is 403. A web page elsewhere cannot read
//! the dashboard through DNS rebinding (its host name pointed at 127.0.0.1),
//! since the browser then sends that name as `Host`.

mod eml;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use livebase_schema::Value;
use serde_json::{json, Value as JsonValue};
use tokio::sync::{broadcast, watch};

use super::{AppState, ServerOptions};
use crate::calllog::{CallLog, CallOutcome, CallRecord};
use crate::email::OUTBOX_DIR;
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::store::Order;
use crate::system::{JobState, SCHEDULED_FUNCTIONS};

/// The page: HTML, CSS and script in one file. It builds every piece of
/// data into the DOM as text, never as markup.
pub const PAGE: &str = include_str!("dashboard.html");

/// The file in the data folder where `livebase dev`'s supervisor writes the
/// last build's outcome, as JSON: `{"status": "building" | "ok" | "failed",
/// "at": <ms since the epoch>, "command": "…", "output": "…"}` (`output`: the
/// build's standard error when it failed). Served as written by
/// `/_dashboard/api/build`; absent, the answer is `{"status": "none"}`.
pub const BUILD_STATUS_FILE: &str = "dev-build.json";

/// Documents a table listing returns unless asked for fewer.
const DEFAULT_DOCUMENTS: usize = 100;
/// Most documents one table listing returns.
const MAX_DOCUMENTS: usize = 1000;
/// Tables are counted up to this many documents ("1000+" beyond): counting
/// reads every document, and the page recounts on every commit.
const COUNT_CAP: usize = 1000;
/// Most outbox mails one listing returns (the newest).
const MAX_MAILS: usize = 100;
/// Jobs a job listing returns unless asked for fewer.
const DEFAULT_JOBS: usize = 100;
/// The newest jobs a job listing looks through (for a function's, too).
const JOBS_SCANNED: usize = 1000;
/// Stored files a file listing returns unless asked for fewer.
const DEFAULT_FILES: usize = 100;
/// Most stored files one file listing returns.
const MAX_FILES: usize = 1000;
/// A comment line on the event stream this often, so proxies and the
/// browser keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Served beside the page: scripts only from the page itself, no plugins, no
/// framing; fetches to this server only; images from data URLs and this
/// server (stored files' previews). Mails render in a sandboxed frame
/// without scripts; their remote images are not loaded.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data: 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'none'";

#[derive(Clone)]
struct Dashboard {
    executor: Executor,
    calls: CallLog,
    /// The timestamp of the newest commit.
    commits: watch::Receiver<u64>,
    /// Where mail is written, or `None` when it goes to an SMTP relay.
    outbox: Option<PathBuf>,
    smtp: Option<String>,
    /// [`BUILD_STATUS_FILE`] in the data folder.
    build_status: PathBuf,
    shutdown: broadcast::Sender<()>,
}

/// The dashboard's routes over a running server's state; `calls` must be the
/// log its executor records to (see [`Executor::with_call_log`]); `addr` is
/// the address the server is bound to.
pub async fn routes(
    state: &AppState,
    calls: CallLog,
    options: &ServerOptions,
    addr: SocketAddr,
) -> Result<Router> {
    let (notify, commits) = watch::channel(0);
    // Runs on the writer thread after each commit: it only stores a number.
    // Commits before this are covered by the page's first fetch.
    state
        .executor
        .database()
        .on_commit(Box::new(move |commit| {
            notify.send_replace(commit.ts.get());
        }))
        .await?;
    let dashboard = Dashboard {
        executor: state.executor.clone(),
        calls,
        commits,
        outbox: match &options.mail.smtp {
            None => Some(options.data_dir.join(OUTBOX_DIR)),
            Some(_) => None,
        },
        // Never the credentials: the page shows this.
        smtp: options.mail.smtp.as_deref().map(crate::email::redact_url),
        build_status: options.data_dir.join(BUILD_STATUS_FILE),
        shutdown: state.shutdown.clone(),
    };
    Ok(Router::new()
        .route("/_dashboard", get(page))
        .route("/_dashboard/", get(page))
        .route("/_dashboard/api/tables", get(tables))
        .route("/_dashboard/api/tables/{table}", get(documents))
        .route("/_dashboard/api/calls", get(calls_after))
        .route("/_dashboard/api/outbox", get(outbox))
        .route("/_dashboard/api/jobs", get(jobs))
        .route("/_dashboard/api/files", get(files))
        .route("/_dashboard/api/events", get(events))
        .route("/_dashboard/api/build", get(build))
        .with_state(dashboard)
        .layer(middleware::from_fn_with_state(
            Arc::new(loopback_hosts(addr.port())),
            check_host,
        )))
}

/// The `Host` values the dashboard answers: the loopback names with the
/// port it is served on.
pub fn loopback_hosts(port: u16) -> [String; 3] {
    [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// 403 unless the request's `Host` is one of `allowed` (see the module docs).
async fn check_host(
    State(allowed): State<Arc<[String; 3]>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(host) if allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) => {
            next.run(request).await
        }
        _ => failure(
            StatusCode::FORBIDDEN,
            format!(
                "the dashboard answers only at http://{}/_dashboard (or localhost, [::1])",
                allowed[0]
            ),
        ),
    }
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

/// An error as the page reads it: `{error}` with a status.
fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(e: &Error) -> Response {
    tracing::warn!(target: "livebase::dashboard", "{e}");
    failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `{tables: [{name, system, count, more}]}`: every table of the schema, the
/// application's first, each counted up to [`COUNT_CAP`].
async fn tables(State(d): State<Dashboard>) -> Response {
    let schema = d.executor.database().schema().clone();
    let mut names: Vec<(String, bool)> = schema
        .tables()
        .map(|(name, _)| (name.to_string(), schema.is_system_table(name)))
        .collect();
    names.sort_by_key(|(name, system)| (*system, name.clone()));
    // One snapshot per table: counting them all in one transaction could
    // pass its read limit.
    let mut out = Vec::with_capacity(names.len());
    for (name, system) in names {
        let table = name.clone();
        let counted = d
            .executor
            .database()
            .query(move |tx| Ok(tx.query(&table).take(COUNT_CAP + 1)?.len()))
            .await;
        match counted {
            Ok(n) => out.push(json!({
                "name": name,
                "system": system,
                "count": n.value.min(COUNT_CAP),
                "more": n.value > COUNT_CAP,
            })),
            Err(e) => return internal(&e),
        }
    }
    Json(json!({ "tables": out })).into_response()
}

/// `{table, documents: [Convex JSON], more}`, newest first; `?limit=` up to
/// [`MAX_DOCUMENTS`].
async fn documents(
    State(d): State<Dashboard>,
    Path(table): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if d.executor.database().schema().get(&table).is_none() {
        return failure(
            StatusCode::NOT_FOUND,
            format!("there is no table `{table}`"),
        );
    }
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(DEFAULT_DOCUMENTS)
        .clamp(1, MAX_DOCUMENTS);
    let name = table.clone();
    let read = d
        .executor
        .database()
        .query(move |tx| tx.query(&name).order(Order::Desc).take(limit + 1))
        .await;
    match read {
        Ok(outcome) => {
            let more = outcome.value.len() > limit;
            let docs: Vec<JsonValue> = outcome
                .value
                .iter()
                .take(limit)
                .map(Value::to_json)
                .collect();
            Json(json!({ "table": table, "documents": docs, "more": more })).into_response()
        }
        Err(e) => internal(&e),
    }
}

/// `{files: [{id, size, contentType, sha256, creationTime, url}], more}`:
/// the stored files, newest first, up to `?limit=` ([`DEFAULT_FILES`], at
/// most [`MAX_FILES`]); `url` is the signed path that serves the file on
/// this server (not the public URL: the page previews it same-origin).
async fn files(
    State(d): State<Dashboard>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(DEFAULT_FILES)
        .clamp(1, MAX_FILES);
    let read = d
        .executor
        .database()
        .query(move |tx| {
            tx.query(crate::storage::STORAGE)
                .order(Order::Desc)
                .take(limit + 1)
        })
        .await;
    let rows = match read {
        Ok(outcome) => outcome.value,
        Err(e) => return internal(&e),
    };
    let key = crate::storage::UrlKey::from_cursor_key(d.executor.cursor_key());
    let more = rows.len() > limit;
    let files: Vec<JsonValue> = rows
        .iter()
        .take(limit)
        .map(|row| {
            let text = |name: &str| row.get(name).and_then(Value::as_str);
            let number = |name: &str| row.get(name).and_then(Value::as_f64);
            let id = text("_id").unwrap_or_default();
            json!({
                "id": id,
                "size": number("size"),
                "contentType": text("contentType"),
                "sha256": text("sha256"),
                "creationTime": number("_creationTime"),
                "url": key.url(id),
            })
        })
        .collect();
    Json(json!({ "files": files, "more": more })).into_response()
}

fn call_json(call: &CallRecord) -> JsonValue {
    let (ok, error) = match &call.outcome {
        CallOutcome::Success => (true, None),
        CallOutcome::Failed(e) => (false, Some(e.as_str())),
    };
    json!({
        "seq": call.seq,
        "endedMs": call.ended_ms,
        "path": call.path,
        "kind": call.kind.name(),
        "ms": call.duration.as_secs_f64() * 1e3,
        "ok": ok,
        "error": error,
    })
}

/// `{calls: [..]}`: the calls after `?after=<seq>` (all that are kept when
/// absent), oldest first.
async fn calls_after(
    State(d): State<Dashboard>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let after = params
        .get("after")
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(0);
    let calls: Vec<JsonValue> = d.calls.since(after).iter().map(call_json).collect();
    Json(json!({ "calls": calls })).into_response()
}

/// What a scheduled job is doing, for people: its state, except that a
/// pending job with attempts behind it is `retrying` (a retryable action whose
/// last attempt failed transiently or was cut short by a restart), and an
/// action in progress is `running`.
pub fn job_status(job: &Value) -> &'static str {
    let tried = matches!(job.get("attempts"), Some(Value::Array(a)) if !a.is_empty());
    match JobState::of(job) {
        Some(JobState::Pending) if tried => "retrying",
        Some(JobState::InProgress) => "running",
        Some(state) => state.as_str(),
        None => "unknown",
    }
}

/// `{jobs: [Convex JSON + status], counts: {status: n}, more}`: the newest
/// scheduled jobs, of function `?function=` when given (among the newest
/// [`JOBS_SCANNED`]), up to `?limit=` ([`DEFAULT_JOBS`]); `counts` covers
/// every job looked through.
async fn jobs(
    State(d): State<Dashboard>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(DEFAULT_JOBS)
        .clamp(1, JOBS_SCANNED);
    let function = params.get("function").cloned();
    let read = d
        .executor
        .database()
        .query(|tx| {
            tx.query(SCHEDULED_FUNCTIONS)
                .order(Order::Desc)
                .take(JOBS_SCANNED)
        })
        .await;
    let scanned = match read {
        Ok(outcome) => outcome.value,
        Err(e) => return internal(&e),
    };
    let mut counts = serde_json::Map::new();
    let mut shown = Vec::new();
    let mut more = false;
    for job in &scanned {
        if let Some(name) = &function {
            if job.get("name").and_then(Value::as_str) != Some(name.as_str()) {
                continue;
            }
        }
        let status = job_status(job);
        let n = counts.get(status).and_then(JsonValue::as_u64).unwrap_or(0);
        counts.insert(status.into(), json!(n + 1));
        if shown.len() == limit {
            more = true;
            continue;
        }
        let mut shown_job = job.to_json();
        if let Some(o) = shown_job.as_object_mut() {
            o.insert("status".into(), json!(status));
        }
        shown.push(shown_job);
    }
    Json(json!({ "jobs": shown, "counts": counts, "more": more })).into_response()
}

/// `{outbox, smtp, mails: [{file, from, to, subject, date, text, html}]}`:
/// the newest [`MAX_MAILS`] mails of the outbox folder, newest first (file
/// names start with the time they were written).
async fn outbox(State(d): State<Dashboard>) -> Response {
    let Some(dir) = d.outbox.clone() else {
        return Json(json!({ "outbox": null, "smtp": d.smtp, "mails": [] })).into_response();
    };
    let shown = dir.display().to_string();
    let read = tokio::task::spawn_blocking(move || read_outbox(&dir)).await;
    match read {
        Ok(Ok(mails)) => {
            Json(json!({ "outbox": shown, "smtp": null, "mails": mails })).into_response()
        }
        Ok(Err(e)) => internal(&Error::internal(format!("reading the outbox {shown}: {e}"))),
        Err(e) => internal(&Error::internal(format!("reading the outbox: {e}"))),
    }
}

fn read_outbox(dir: &std::path::Path) -> std::io::Result<Vec<JsonValue>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // No mail sent yet: the folder is created by the first one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .filter(|(name, _)| name.ends_with(".eml"))
        .collect();
    files.sort_by(|a, b| b.0.cmp(&a.0));
    files.truncate(MAX_MAILS);
    let mut mails = Vec::with_capacity(files.len());
    for (name, path) in files {
        // A file removed since the listing is skipped, not an error.
        let Ok(raw) = std::fs::read(&path) else {
            continue;
        };
        let mail = eml::parse(&raw);
        mails.push(json!({
            "file": name,
            "from": mail.from,
            "to": mail.to,
            "subject": mail.subject,
            "date": mail.date,
            "text": mail.text,
            "html": mail.html,
        }));
    }
    Ok(mails)
}

/// The last build of `livebase dev` (see [`BUILD_STATUS_FILE`]).
async fn build(State(d): State<Dashboard>) -> Response {
    let path = d.build_status.clone();
    let read = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match read {
        Ok(raw) => match serde_json::from_slice::<JsonValue>(&raw) {
            Ok(status) => Json(status).into_response(),
            // Caught mid-write (the supervisor renames a whole file into
            // place, so only a foreign writer gets here): nothing to show.
            Err(_) => Json(json!({ "status": "none" })).into_response(),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Json(json!({ "status": "none" })).into_response()
        }
        Err(e) => internal(&Error::internal(format!(
            "reading {}: {e}",
            d.build_status.display()
        ))),
    }
}

/// Server-Sent Events: `commit` (data: the commit's timestamp) after commits
/// and `calls` (data: the newest call's seq) after calls. Several changes
/// between two events come as one; the page refetches what it shows. The
/// stream ends when the server shuts down.
async fn events(State(d): State<Dashboard>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Watch {
        commits: watch::Receiver<u64>,
        calls: watch::Receiver<u64>,
        shutdown: broadcast::Receiver<()>,
    }
    let mut commits = d.commits.clone();
    commits.mark_unchanged();
    let watch = Watch {
        commits,
        calls: d.calls.subscribe(),
        shutdown: d.shutdown.subscribe(),
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        let event = tokio::select! {
            changed = w.commits.changed() => {
                changed.ok()?;
                let ts = *w.commits.borrow_and_update();
                Event::default().event("commit").data(ts.to_string())
            }
            changed = w.calls.changed() => {
                changed.ok()?;
                let seq = *w.calls.borrow_and_update();
                Event::default().event("calls").data(seq.to_string())
            }
            _ = w.shutdown.recv() => return None,
        };
        Some((Ok(event), w))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
