//! The file endpoints (see [`crate::storage`]):
//!
//! - `POST /api/storage/upload?token=…` — the body is one file, streamed into
//!   the blob store while it is hashed, at most
//!   [`EdgeOptions::max_upload_bytes`](super::EdgeOptions::max_upload_bytes)
//!   (`413` past it), within [`upload_deadline`]. Only after its bytes are
//!   durable does one mutation consume the token and insert the `_storage`
//!   row; the answer is `{"storageId": …}`. A token that is unknown, expired
//!   or used is `403` before any byte is read; an upload counts against its
//!   uploader's calls in flight ([`super::inflight`]). An upload that fails
//!   (too big, cut off, a token used meanwhile) leaves no file and no row.
//! - `GET /api/storage/<id>?sig=…` — the file, with its `Content-Type`, an
//!   `ETag` (its SHA-256; `If-None-Match` → `304`), one `Range` (`206`;
//!   `416` when unsatisfiable), `nosniff`, `Content-Security-Policy:
//!   sandbox`, and `Content-Disposition: attachment` unless its type is one
//!   a browser only displays ([`displayed_inline`]) — so an uploaded page or
//!   script never runs on this origin. A bad signature and a missing file are
//!   the same `404`.
//!
//! These routes are outside the middleware that reads every body whole
//! ([`super::http::read_body`]): an upload's body is larger than a message,
//! and is read here, as a stream, under its own deadline.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use livebase_schema::Value;
use serde_json::json;

use super::listener::ClientAddr;
use super::AppState;
use crate::error::{Error, ErrorCode};
use crate::storage::{storage_id, BlobHash, BlobReader, UrlKey};

/// The slowest upload accepted, on average: an upload must arrive within
/// the body timeout plus its size limit at this rate (20 MiB: 30 s + 320 s).
pub const MIN_UPLOAD_RATE: u64 = 64 * 1024;
/// Longest `Content-Type` kept with a file.
const MAX_CONTENT_TYPE_LEN: usize = 255;
/// Bytes read from a blob per chunk of a response, and written to one at
/// least per write of an upload.
const CHUNK: usize = 64 * 1024;

/// Where upload URLs point (`?token=…`).
pub const UPLOAD_PATH: &str = "/api/storage/upload";

/// The file routes, over `state`.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(UPLOAD_PATH, post(upload))
        .route("/api/storage/{id}", get(download))
        .with_state(state)
}

/// How long an upload of at most `max_bytes` may take to arrive.
pub fn upload_deadline(body_timeout: Duration, max_bytes: u64) -> Duration {
    body_timeout + Duration::from_secs(max_bytes / MIN_UPLOAD_RATE)
}

fn error_response(error: Error, path: &str) -> Response {
    let error = error.redact(path);
    let status = match error.code() {
        Some(ErrorCode::LimitExceeded) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let code = error
        .code()
        .map_or("ServerError", |c| c.as_str())
        .to_string();
    (
        status,
        Json(json!({"code": code, "message": error.client_message()})),
    )
        .into_response()
}

/// An answer sent before the body was read whole: the connection closes.
fn refuse_body(status: StatusCode, code: &str, message: String) -> Response {
    let mut response = (status, Json(json!({"code": code, "message": message}))).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn no_storage() -> Response {
    error_response(
        Error::internal("this server has no file storage"),
        "/api/storage",
    )
}

/// The `Content-Type` an upload declares, if it is one to keep.
fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= MAX_CONTENT_TYPE_LEN).then(|| value.to_string())
}

async fn upload(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddr>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    const PATH: &str = UPLOAD_PATH;
    let Some(files) = state.executor.files().cloned() else {
        return no_storage();
    };
    let Some(token) = query.get("token").cloned() else {
        return error_response(Error::invalid("the upload URL has no token"), PATH);
    };
    let uploader = match files.check_token(&token).await {
        Ok(u) => u,
        Err(e) => return error_response(e, PATH),
    };
    let client = client.map(|Extension(ClientAddr(addr))| addr);
    let _slot = match state.calls.start(&uploader.identity(), client) {
        Ok(slot) => slot,
        Err(e) => return super::inflight::too_many_calls(&e),
    };
    let max = files.max_upload_bytes();
    let too_large = || {
        refuse_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the file is larger than {max} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max) {
        return too_large();
    }
    let content_type = content_type(&headers);
    let deadline = tokio::time::Instant::now() + upload_deadline(state.edge.body_timeout, max);
    let mut writer = match files.begin().await {
        Ok(w) => w,
        Err(e) => return error_response(e, PATH),
    };
    // Dropping `writer` on any early return removes what it wrote.
    let mut stream = body.into_data_stream();
    // Small network chunks are gathered into writes of at least CHUNK bytes.
    let mut pending = Vec::with_capacity(CHUNK);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return refuse_body(
                    StatusCode::REQUEST_TIMEOUT,
                    "RequestTimeout",
                    "the file did not arrive in time".into(),
                )
            }
            Ok(None) => {
                if !pending.is_empty() {
                    writer = match files.write(writer, Bytes::from(pending)).await {
                        Ok(w) => w,
                        Err(e) => return error_response(e, PATH),
                    };
                }
                break;
            }
            Ok(Some(Err(e))) => {
                return refuse_body(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("reading the file failed: {e}"),
                )
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if writer.size() + (pending.len() + chunk.len()) as u64 > max {
            return too_large();
        }
        pending.extend_from_slice(&chunk);
        if pending.len() >= CHUNK {
            let full = std::mem::replace(&mut pending, Vec::with_capacity(CHUNK));
            writer = match files.write(writer, Bytes::from(full)).await {
                Ok(w) => w,
                Err(e) => return error_response(e, PATH),
            };
        }
    }
    match files.commit(writer, content_type, Some(token)).await {
        Ok(id) => Json(json!({"storageId": id.as_str()})).into_response(),
        Err(e) => error_response(e, PATH),
    }
}

/// Whether a browser given this type only displays it (an image, audio,
/// video, plain text) — anything else, HTML, SVG, XML, scripts, PDF and
/// types it does not know included, is sent as an attachment.
pub fn displayed_inline(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    match kind {
        "image" => !sub.contains("svg") && !sub.contains("xml"),
        "audio" | "video" => !sub.contains("xml"),
        "text" => sub == "plain",
        "application" => sub == "json",
        _ => false,
    }
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// The whole file (no `Range`, or one this server does not serve in
    /// parts: several ranges, another unit, a malformed one).
    Full,
    /// Bytes `start..end`.
    Part(u64, u64),
    /// A range that lies past the file's end.
    Unsatisfiable,
}

/// Reads a `Range` header value (RFC 9110, section 14.2): one `bytes` range.
pub fn parse_range(value: &str, size: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part(size - n.min(size), size)
            }
        }
        (false, Some(start), None) if last.trim().is_empty() => {
            if start >= size {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part(start, size)
            }
        }
        (false, Some(start), Some(end)) if start <= end => {
            if start >= size {
                RangeAsk::Unsatisfiable
            } else {
                RangeAsk::Part(start, end.saturating_add(1).min(size))
            }
        }
        _ => RangeAsk::Full,
    }
}

/// Whether an `If-None-Match` value names `etag` (or is `*`).
fn none_match(value: &str, etag: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": "NOT_FOUND", "message": "there is no such file"})),
    )
        .into_response()
}

async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(files) = state.executor.files().cloned() else {
        return no_storage();
    };
    let key = UrlKey::from_cursor_key(state.executor.cursor_key());
    let signed = query.get("sig").is_some_and(|sig| key.verify(&id, sig));
    let Ok(id) = storage_id(&id) else {
        return not_found();
    };
    if !signed {
        return not_found();
    }
    let row = match files.row(&id).await {
        Ok(Some(row)) => row,
        Ok(None) => return not_found(),
        Err(e) => return error_response(e, "/api/storage"),
    };
    let Some(hash) = row
        .get("sha256")
        .and_then(Value::as_str)
        .and_then(BlobHash::parse)
    else {
        return error_response(
            Error::internal(format!("file {id} has no valid sha256")),
            "/api/storage",
        );
    };
    let size = row.get("size").and_then(Value::as_f64).unwrap_or(0.0) as u64;
    let etag = format!("\"{hash}\"");
    let content_type = row
        .get("contentType")
        .and_then(Value::as_str)
        .and_then(|ct| HeaderValue::from_str(ct).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let inline = content_type.to_str().is_ok_and(displayed_inline);

    let mut out = HeaderMap::new();
    out.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    if !inline {
        out.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| none_match(v, &etag))
    {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(header::CONTENT_TYPE, content_type);
    // `If-Range` with another tag: the file changed, send it whole.
    let range_applies = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let ask = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(range) if range_applies => parse_range(range, size),
        _ => RangeAsk::Full,
    };
    let (status, start, end) = match ask {
        RangeAsk::Full => (StatusCode::OK, 0, size),
        RangeAsk::Part(start, end) => {
            let range = format!("bytes {start}-{}/{size}", end - 1);
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&range).expect("ascii"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        RangeAsk::Unsatisfiable => {
            out.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return (StatusCode::RANGE_NOT_SATISFIABLE, out).into_response();
        }
    };
    let blobs = files.blobs().clone();
    let reader = tokio::task::spawn_blocking(move || blobs.read(&hash, start, end)).await;
    let reader = match reader {
        Ok(Ok(Some(reader))) => reader,
        Ok(Ok(None)) => {
            return error_response(
                Error::internal(format!("the bytes of file {id} are missing")),
                "/api/storage",
            )
        }
        Ok(Err(e)) => {
            return error_response(
                Error::internal(format!("reading file {id}: {e}")),
                "/api/storage",
            )
        }
        Err(e) => {
            return error_response(
                Error::internal(format!("reading file {id}: {e}")),
                "/api/storage",
            )
        }
    };
    out.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&(end - start).to_string()).expect("digits"),
    );
    (status, out, stream(reader)).into_response()
}

/// A blob's bytes as a response body, read a chunk at a time on a blocking
/// thread that is let go between chunks: a slow client holds its reader and
/// one chunk, never a thread.
fn stream(reader: BlobReader) -> Body {
    let chunks = futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            let n = io::Read::read(&mut reader, &mut buf)?;
            buf.truncate(n);
            Ok::<_, io::Error>((buf, reader))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match read {
            Ok((buf, _)) if buf.is_empty() => None,
            Ok((buf, reader)) => Some((Ok(Bytes::from(buf)), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    });
    Body::from_stream(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        use RangeAsk::*;
        let cases = [
            ("bytes=0-4", 10, Part(0, 5)),
            ("bytes=5-", 10, Part(5, 10)),
            ("bytes=-3", 10, Part(7, 10)),
            ("bytes=-30", 10, Part(0, 10)),
            ("bytes=8-100", 10, Part(8, 10)),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-12", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=5-2", 10, Full),
            ("bytes=0-1,3-4", 10, Full),
            ("items=0-1", 10, Full),
            ("bytes=x-1", 10, Full),
        ];
        for (value, size, want) in cases {
            assert_eq!(parse_range(value, size), want, "{value} of {size}");
        }
    }

    #[test]
    fn only_types_a_browser_merely_displays_are_inline() {
        for inline in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "audio/ogg",
            "text/plain; charset=utf-8",
            "application/json",
        ] {
            assert!(displayed_inline(inline), "{inline}");
        }
        for attachment in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "text/javascript",
            "application/javascript",
            "application/pdf",
            "text/css",
            "multipart/x-mixed-replace",
            "",
            "nonsense",
        ] {
            assert!(!displayed_inline(attachment), "{attachment}");
        }
    }

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        assert!(none_match("\"abc\"", "\"abc\""));
        assert!(none_match("\"x\", W/\"abc\"", "\"abc\""));
        assert!(none_match("*", "\"abc\""));
        assert!(!none_match("\"abd\"", "\"abc\""));
    }
}
