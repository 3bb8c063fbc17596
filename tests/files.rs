//! Stored files end to end, over real sockets: an upload through a URL from
//! `files:generateUploadUrl`, the avatar it becomes (`userProfiles:setAvatar`,
//! `avatarUrl` in a live `userProfiles:get`), serving with `ETag`, `Range`
//! and the headers that keep uploaded pages from running on our origin; and
//! what must leave nothing behind in `<data>/files`: a replayed URL, an
//! upload over the limit, an upload cut off, a replaced avatar. And files
//! through `livebase export` and `livebase import`: the bytes travel in the
//! export file, and a corrupted blob line is refused by line number.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use livebase_runtime::storage::STORAGE;
use livebase_testkit::server::code;
use livebase_testkit::{TestServer, User, PATIENCE};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server of the application whose uploads may be at most `max` bytes.
async fn server_with_upload_limit(max: u64) -> TestServer {
    TestServer::start_tuned(livebase_functions::app(), |o| o.edge.max_upload_bytes = max).await
}

/// An HTTP reply with its body as bytes.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or(Json::Null)
    }
}

fn parse(raw: &[u8]) -> Raw {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// The path of `url` on the server at `addr`: the URLs the server gives are
/// absolute, on its own `http://<addr>` unless a public URL says otherwise.
fn path_on(addr: SocketAddr, url: &str) -> &str {
    let origin = format!("http://{addr}");
    if url.starts_with("http") {
        url.strip_prefix(&origin)
            .unwrap_or_else(|| panic!("{url} is not on {origin}"))
    } else {
        url
    }
}

/// One request on a fresh connection (`Connection: close`) to `url` (a path,
/// or an absolute URL on the server); `body` is sent with its
/// `Content-Length`.
async fn request(
    addr: SocketAddr,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let path = path_on(addr, url);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        stream.write_all(head.as_bytes()).await.expect("sends");
        // The server may answer (and close) before the whole body is in.
        let _ = stream.write_all(body).await;
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("the server answers in time");
    parse(&raw)
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Raw {
    request(addr, "GET", path, headers, b"").await
}

/// Every regular file under `<data>/files`, temporary ones included.
fn files_on_disk(data: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("files"), &mut out);
    out
}

/// Waits until `done` holds (the server works after it answers: the
/// collector, a handler seeing its client go), through the kit's one poll.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    livebase_testkit::eventually(what, PATIENCE, || {
        let ok = done();
        async move { ok.then_some(()).ok_or_else(|| "not yet".to_string()) }
    })
    .await
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn upload_url(t: &TestServer, user: &User) -> String {
    let url = t
        .mutation("files:generateUploadUrl", user, json!({}))
        .await
        .expect("an upload URL");
    let url = url.as_str().expect("a string").to_string();
    // Absolute, as Convex's: a page on another origin `fetch`es it as is.
    assert!(
        url.starts_with(&format!("{}/api/storage/upload?token=", t.url())),
        "{url}"
    );
    url
}

/// Uploads `bytes` as `content_type` to `url`; the reply.
async fn upload(t: &TestServer, url: &str, content_type: &str, bytes: &[u8]) -> Raw {
    request(
        t.addr(),
        "POST",
        url,
        &[("Content-Type", content_type)],
        bytes,
    )
    .await
}

async fn upload_ok(t: &TestServer, user: &User, content_type: &str, bytes: &[u8]) -> String {
    let url = upload_url(t, user).await;
    let reply = upload(t, &url, content_type, bytes).await;
    assert_eq!(reply.status, 200, "upload: {}", reply.json());
    reply.json()["storageId"]
        .as_str()
        .expect("storageId")
        .to_string()
}

async fn signed_up_with_profile(t: &TestServer, email: &str) -> User {
    let user = t.sign_up(email, "Ada").await;
    t.mutation("userProfiles:upsert", &user, json!({"displayName": "Ada"}))
        .await
        .expect("a profile");
    user
}

/// 64 KiB of bytes that are not all alike.
fn picture() -> Vec<u8> {
    (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn an_avatar_uploaded_through_a_generated_url_is_served_with_its_type_etag_and_ranges() {
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let bytes = picture();
    let id = upload_ok(&t, &ada, "image/png", &bytes).await;

    let meta = t.rows_json(STORAGE).await;
    assert_eq!(meta.len(), 1);
    assert_eq!(meta[0]["sha256"], json!(hex_sha256(&bytes)));
    assert_eq!(meta[0]["size"], json!(bytes.len() as f64));
    assert_eq!(meta[0]["contentType"], json!("image/png"));

    let mut ws = t.client().await;
    ws.authenticate(&ada.token).await;
    ws.add_query(1, "userProfiles:get", json!({})).await;
    let before = ws.next_result(1).await.expect("the profile");
    assert!(before.get("avatarUrl").is_none(), "{before}");

    t.mutation("userProfiles:setAvatar", &ada, json!({"storageId": id}))
        .await
        .expect("the avatar is set");
    let after = ws.next_result(1).await.expect("the profile, live");
    let url = after["avatarUrl"].as_str().expect("avatarUrl").to_string();
    assert!(
        url.starts_with(&format!("{}/api/storage/{id}?sig=", t.url())),
        "{url}"
    );

    let whole = get(t.addr(), &url, &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, bytes);
    assert_eq!(whole.header("content-type"), Some("image/png"));
    assert_eq!(whole.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(whole.header("content-security-policy"), Some("sandbox"));
    assert_eq!(whole.header("content-disposition"), None);
    let etag = format!("\"{}\"", hex_sha256(&bytes));
    assert_eq!(whole.header("etag"), Some(etag.as_str()));

    let cached = get(t.addr(), &url, &[("If-None-Match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());

    let part = get(t.addr(), &url, &[("Range", "bytes=1000-1999")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, bytes[1000..2000]);
    assert_eq!(part.header("content-range"), Some("bytes 1000-1999/65536"));
    let tail = get(t.addr(), &url, &[("Range", "bytes=-10")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, bytes[65_526..]);
    let past = get(t.addr(), &url, &[("Range", "bytes=65536-")]).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */65536"));
}

#[tokio::test]
async fn a_bad_signature_or_an_unknown_file_is_404() {
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let id = upload_ok(&t, &ada, "image/png", b"png bytes").await;
    t.mutation("userProfiles:setAvatar", &ada, json!({"storageId": id}))
        .await
        .expect("the avatar is set");
    let profile = t
        .query("userProfiles:get", &ada, json!({}))
        .await
        .expect("the profile");
    let url = profile["avatarUrl"].as_str().expect("avatarUrl");
    assert_eq!(get(t.addr(), url, &[]).await.status, 200);

    let (path, sig) = url.split_once("?sig=").expect("a signature");
    let mut forged = sig.to_string();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    for bad in [
        path.to_string(),
        format!("{path}?sig={forged}"),
        format!("{path}?sig="),
        format!("/api/storage/not-an-id?sig={sig}"),
    ] {
        let reply = get(t.addr(), &bad, &[]).await;
        assert_eq!(reply.status, 404, "{bad}");
        assert!(reply.body.len() < 200, "no file bytes: {bad}");
    }
}

#[tokio::test]
async fn active_content_is_served_as_an_attachment() {
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    for kind in ["text/html", "image/svg+xml", "application/javascript"] {
        let id = upload_ok(&t, &ada, kind, b"<script>alert(1)</script>").await;
        t.mutation("userProfiles:setAvatar", &ada, json!({"storageId": id}))
            .await
            .expect("the avatar is set");
        let profile = t
            .query("userProfiles:get", &ada, json!({}))
            .await
            .expect("the profile");
        let reply = get(t.addr(), profile["avatarUrl"].as_str().unwrap(), &[]).await;
        assert_eq!(reply.status, 200, "{kind}");
        assert_eq!(
            reply.header("content-disposition"),
            Some("attachment"),
            "{kind}"
        );
        assert_eq!(
            reply.header("content-security-policy"),
            Some("sandbox"),
            "{kind}"
        );
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn a_replayed_upload_url_is_refused_and_stores_no_second_file() {
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let url = upload_url(&t, &ada).await;
    let first = upload(&t, &url, "text/plain", b"first").await;
    assert_eq!(first.status, 200, "{}", first.json());
    let again = upload(&t, &url, "text/plain", b"second").await;
    assert_eq!(again.status, 403, "{}", again.json());
    assert_eq!(t.rows_json(STORAGE).await.len(), 1);
    assert_eq!(files_on_disk(t.data_dir()).len(), 1);

    let forged = upload(&t, "/api/storage/upload?token=forged", "text/plain", b"x").await;
    assert_eq!(forged.status, 403);
    assert_eq!(t.rows_json(STORAGE).await.len(), 1);
    assert_eq!(files_on_disk(t.data_dir()).len(), 1);
}

#[tokio::test]
async fn an_upload_url_is_for_signed_in_users_only() {
    let t = support::start().await;
    let outcome = t
        .call("mutation", "files:generateUploadUrl", None, json!({}))
        .await;
    assert_eq!(code(&outcome), "UNAUTHENTICATED");
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_leaves_no_file() {
    let t = server_with_upload_limit(1024).await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    // Announced too big: refused before a byte is read.
    let url = upload_url(&t, &ada).await;
    let announced = upload(&t, &url, "image/png", &vec![7u8; 4096]).await;
    assert_eq!(announced.status, 413);

    // Not announced (chunked): refused once it passes the limit.
    let url = upload_url(&t, &ada).await;
    let mut stream = TcpStream::connect(t.addr()).await.expect("connects");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
        path_on(t.addr(), &url),
        t.addr()
    );
    stream.write_all(head.as_bytes()).await.expect("sends");
    for _ in 0..4 {
        let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw)).await;
    assert_eq!(parse(&raw).status, 413);

    assert!(t.rows_json(STORAGE).await.is_empty());
    eventually("no file (nor temporary file) is left", || {
        files_on_disk(t.data_dir()).is_empty()
    })
    .await;
    // At the limit exactly is fine.
    let fits = upload_ok(&t, &ada, "image/png", &vec![7u8; 1024]).await;
    assert!(!fits.is_empty());
}

#[tokio::test]
async fn an_upload_cut_off_leaves_no_file_and_its_url_still_works() {
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let url = upload_url(&t, &ada).await;
    let mut stream = TcpStream::connect(t.addr()).await.expect("connects");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n",
        path_on(t.addr(), &url),
        t.addr()
    );
    stream.write_all(head.as_bytes()).await.expect("sends");
    stream.write_all(&[1u8; 5000]).await.expect("sends");
    eventually("the upload has begun on disk", || {
        !files_on_disk(t.data_dir()).is_empty()
    })
    .await;
    drop(stream);
    eventually("the half upload is removed", || {
        files_on_disk(t.data_dir()).is_empty()
    })
    .await;
    assert!(t.rows_json(STORAGE).await.is_empty());

    // The token was not used: the same URL takes the whole file.
    let whole = upload(&t, &url, "image/png", &[1u8; 100_000]).await;
    assert_eq!(whole.status, 200, "{}", whole.json());
    assert_eq!(files_on_disk(t.data_dir()).len(), 1);
}

#[tokio::test]
async fn a_replaced_avatar_is_deleted_from_disk_and_its_url_stops_working() {
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let old = upload_ok(&t, &ada, "image/png", b"the old avatar").await;
    t.mutation("userProfiles:setAvatar", &ada, json!({"storageId": old}))
        .await
        .expect("the avatar is set");
    let old_url = t.query("userProfiles:get", &ada, json!({})).await.unwrap()["avatarUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let new = upload_ok(&t, &ada, "image/png", b"the new avatar").await;
    assert_eq!(files_on_disk(t.data_dir()).len(), 2);
    t.mutation("userProfiles:setAvatar", &ada, json!({"storageId": new}))
        .await
        .expect("the avatar is replaced");

    let rows = t.rows_json(STORAGE).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["_id"], json!(new));
    let new_hash = hex_sha256(b"the new avatar");
    eventually("only the new avatar's bytes are on disk", || {
        let files = files_on_disk(t.data_dir());
        files.len() == 1 && files[0].ends_with(&new_hash)
    })
    .await;
    assert_eq!(get(t.addr(), &old_url, &[]).await.status, 404);
}

#[tokio::test]
async fn bytes_two_files_share_stay_until_neither_is_left() {
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let bob = signed_up_with_profile(&t, "bob@example.com").await;
    let same = b"the same bytes";
    let a = upload_ok(&t, &ada, "image/png", same).await;
    let b = upload_ok(&t, &bob, "image/png", same).await;
    assert_ne!(a, b);
    assert_eq!(files_on_disk(t.data_dir()).len(), 1, "one blob for both");
    for (user, id) in [(&ada, &a), (&bob, &b)] {
        t.mutation("userProfiles:setAvatar", user, json!({"storageId": id}))
            .await
            .expect("the avatar is set");
    }
    // Ada replaces hers: her file goes, Bob's bytes (the same) stay.
    let other = upload_ok(&t, &ada, "image/png", b"another").await;
    t.mutation("userProfiles:setAvatar", &ada, json!({"storageId": other}))
        .await
        .expect("the avatar is replaced");
    assert_eq!(t.rows_json(STORAGE).await.len(), 2);
    let bob_url = t.query("userProfiles:get", &bob, json!({})).await.unwrap()["avatarUrl"]
        .as_str()
        .unwrap()
        .to_string();
    // The collector has run once the deletion is handled (its row gone).
    t.rows_until("_storage_deletions", "the deletion collected", |rows| {
        rows.is_empty().then_some(())
    })
    .await;
    let reply = get(t.addr(), &bob_url, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, same);
    assert_eq!(files_on_disk(t.data_dir()).len(), 2);

    // A file that is another profile's avatar cannot be taken.
    let taken = t
        .mutation("userProfiles:setAvatar", &ada, json!({"storageId": b}))
        .await;
    assert_eq!(code(&taken), "FORBIDDEN");
}

#[tokio::test]
async fn an_action_stores_bytes_and_reads_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut app = livebase_functions::app();
    app.action("fileTest:roundTrip", [], |ctx, _args| async move {
        let files = ctx.storage()?;
        let id = files
            .store(b"made by an action".to_vec(), Some("text/plain".into()))
            .await?;
        let read = files.get(&id).await?.expect("the file just stored");
        Ok(json_value(&id, read))
    });
    fn json_value(
        id: &livebase_schema::DocumentId,
        read: livebase_runtime::storage::FileBytes,
    ) -> livebase_schema::Value {
        livebase_schema::obj! {
            "id" => id.as_str(),
            "text" => String::from_utf8(read.bytes).expect("utf-8"),
            "contentType" => read.content_type.unwrap_or_default(),
        }
    }
    let t = TestServer::start_in(dir, app, |_| {}).await;
    let value = t
        .call("action", "fileTest:roundTrip", None, json!({}))
        .await
        .expect("the action runs");
    assert_eq!(value["text"], json!("made by an action"));
    assert_eq!(value["contentType"], json!("text/plain"));
    let rows = t.rows_json(STORAGE).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["_id"], value["id"]);
    assert_eq!(files_on_disk(t.data_dir()).len(), 1);
}

#[tokio::test]
async fn uploads_count_against_their_uploaders_calls_in_flight() {
    let t = TestServer::start_tuned(livebase_functions::app(), |o| {
        o.edge.max_calls_in_flight_per_caller = 1
    })
    .await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let (first, second) = (upload_url(&t, &ada).await, upload_url(&t, &ada).await);
    // The first upload stalls mid-body, holding Ada's one call.
    let mut stalled = TcpStream::connect(t.addr()).await.expect("connects");
    let head = format!(
        "POST {first} HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000\r\n\r\n",
        t.addr()
    );
    stalled.write_all(head.as_bytes()).await.expect("sends");
    stalled.write_all(&[0u8; 10]).await.expect("sends");
    eventually("the first upload has begun", || {
        !files_on_disk(t.data_dir()).is_empty()
    })
    .await;
    let refused = upload(&t, &second, "text/plain", b"second").await;
    assert_eq!(refused.status, 429, "{}", refused.json());
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(stalled);
    eventually("the stalled upload is gone", || {
        files_on_disk(t.data_dir()).is_empty()
    })
    .await;
    // Its slot given back (the handler has ended), the same URL works.
    livebase_testkit::eventually("the second upload accepted", PATIENCE, || async {
        let reply = upload(&t, &second, "text/plain", b"second").await;
        match reply.status {
            200 => Ok(()),
            429 => Err("429".to_string()),
            other => panic!("upload: {other} {}", reply.json()),
        }
    })
    .await;
}

#[tokio::test]
async fn a_restart_removes_half_written_and_unnamed_blobs_and_keeps_the_rest() {
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let kept = b"a file with a row";
    upload_ok(&t, &ada, "text/plain", kept).await;
    let dir = t.stop().await;

    // What a crash could leave: a temporary file, and a blob whose row
    // never committed.
    let files = dir.path().join("files");
    std::fs::write(files.join("tmp").join("0123abcd"), b"half").unwrap();
    let orphan = hex_sha256(b"no row names me");
    std::fs::create_dir_all(files.join(&orphan[..2])).unwrap();
    std::fs::write(files.join(&orphan[..2]).join(&orphan), b"no row names me").unwrap();
    assert_eq!(files_on_disk(dir.path()).len(), 3);

    let t = TestServer::start_in(dir, livebase_functions::app(), |_| {}).await;
    let kept_hash = hex_sha256(kept);
    eventually("only the file with a row is left", || {
        let files = files_on_disk(t.data_dir());
        files.len() == 1 && files[0].ends_with(&kept_hash)
    })
    .await;
}

#[tokio::test]
async fn an_expired_upload_url_is_refused_and_purged() {
    use livebase_runtime::storage::{token_hash, STORAGE_UPLOADS};
    let t = support::start().await;
    let expired = "an-expired-token";
    let hash = token_hash(expired);
    t.database()
        .mutate(move |tx| {
            tx.insert(
                STORAGE_UPLOADS,
                livebase_schema::obj! { "tokenHash" => hash, "expiresAt" => 1.0 },
            )
        })
        .await
        .expect("a token row");
    let reply = upload(
        &t,
        &format!("/api/storage/upload?token={expired}"),
        "text/plain",
        b"too late",
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.json());
    assert!(files_on_disk(t.data_dir()).is_empty());
    // No row count here: the start-up purge of this very server may already
    // have removed the expired row (it runs beside the first requests).

    // The purge runs at start (and hourly).
    let t = t.restart(livebase_functions::app()).await;
    t.rows_until(STORAGE_UPLOADS, "the expired token purged", |rows| {
        rows.is_empty().then_some(())
    })
    .await;
}

/// Runs the `livebase` binary (its export and import commands).
fn livebase(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_livebase"))
        .args(args)
        .env_remove("LIVEBASE_DATA")
        .env_remove("LIVEBASE_JWT_SECRET")
        .output()
        .expect("livebase runs")
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[tokio::test]
async fn export_and_import_carry_the_files_bytes_and_a_corrupted_blob_line_is_refused() {
    use livebase_runtime::auth::tokens::SECRET_FILE;
    let t = support::start().await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let bytes = picture();
    let id = upload_ok(&t, &ada, "image/png", &bytes).await;
    t.mutation("userProfiles:setAvatar", &ada, json!({"storageId": id}))
        .await
        .expect("the avatar is set");
    let url = t.query("userProfiles:get", &ada, json!({})).await.unwrap()["avatarUrl"]
        .as_str()
        .expect("avatarUrl")
        .to_string();

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.jsonl");
    let out = livebase(&["export", utf8(&file), "--data", utf8(t.data_dir())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = std::fs::read(t.data_dir().join(SECRET_FILE)).expect("the secret");
    drop(t.stop().await);

    // Into a fresh folder (with the secret, so the signed URL is the same):
    // the imported deployment serves the same bytes.
    let moved = tempfile::tempdir().unwrap();
    let out = livebase(&["import", utf8(&file), "--data", utf8(moved.path())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files_on_disk(moved.path()).len(), 1);
    std::fs::write(moved.path().join(SECRET_FILE), secret).unwrap();
    let t2 = TestServer::start_in(moved, livebase_functions::app(), |_| {}).await;
    // The same path and signature, on the new server's origin (its own
    // address: no public URL is set).
    let path = &url[url.find("/api/storage/").expect("a file URL")..];
    let served = get(t2.addr(), path, &[]).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body, bytes);
    assert_eq!(served.header("content-type"), Some("image/png"));
    let profile = t2.query("userProfiles:get", &ada, json!({})).await.unwrap();
    assert_eq!(
        profile["avatarUrl"],
        json!(format!("http://{}{path}", t2.addr()))
    );
    drop(t2.stop().await);

    // The blob line's bytes edited: the import names the line and leaves
    // neither a document nor a file.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(r#"{"blob""#))
        .expect("a blob line");
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    let mut blob: Json = serde_json::from_str(&lines[at]).unwrap();
    blob["bytes"] = json!(base64_of(&bad));
    lines[at] = blob.to_string();
    let broken = work.path().join("broken.jsonl");
    std::fs::write(&broken, lines.join("\n")).unwrap();
    let target = tempfile::tempdir().unwrap();
    let out = livebase(&["import", utf8(&broken), "--data", utf8(target.path())]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a corrupted blob was accepted");
    assert!(err.contains(&format!("line {}:", at + 1)), "{err}");
    assert!(err.contains("the file is corrupted"), "{err}");
    assert!(files_on_disk(target.path()).is_empty(), "no file left");
    let t3 = TestServer::start_in(target, livebase_functions::app(), |_| {}).await;
    assert!(t3.rows_json(STORAGE).await.is_empty(), "no row imported");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_public_url_is_what_upload_and_file_urls_are_built_on() {
    // Behind a proxy: clients reach the server at another origin.
    let public = "https://files.example.com:8443";
    let t = TestServer::start_tuned(livebase_functions::app(), |o| {
        o.public_url = Some(format!("{public}/"));
    })
    .await;
    let ada = signed_up_with_profile(&t, "ada@example.com").await;
    let url = t
        .mutation("files:generateUploadUrl", &ada, json!({}))
        .await
        .expect("an upload URL");
    let url = url.as_str().expect("a string");
    let path = url
        .strip_prefix(public)
        .unwrap_or_else(|| panic!("{url} is on {public}"));
    assert!(path.starts_with("/api/storage/upload?token="), "{url}");

    // What the proxy forwards: the same path on the server.
    let reply = request(
        t.addr(),
        "POST",
        path,
        &[("Content-Type", "text/plain")],
        b"hi",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let id = reply.json()["storageId"]
        .as_str()
        .expect("storageId")
        .to_string();
    t.mutation("userProfiles:setAvatar", &ada, json!({"storageId": id}))
        .await
        .expect("the avatar is set");
    let profile = t.query("userProfiles:get", &ada, json!({})).await.unwrap();
    let avatar = profile["avatarUrl"].as_str().expect("avatarUrl");
    let path = avatar
        .strip_prefix(public)
        .unwrap_or_else(|| panic!("{avatar} is on {public}"));
    assert!(
        path.starts_with(&format!("/api/storage/{id}?sig=")),
        "{avatar}"
    );
    let served = get(t.addr(), path, &[]).await;
    assert_eq!((served.status, served.body.as_slice()), (200, &b"hi"[..]));
}

#[tokio::test]
async fn a_public_url_that_is_not_an_origin_is_refused_at_start() {
    for bad in [
        "files.example.com",
        "ftp://files.example.com",
        "https://files.example.com/app",
        "https://files.example.com/?x=1",
        "https://files.example.com/#top",
        "https://user:pw@files.example.com",
    ] {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let options = livebase_runtime::server::ServerOptions {
            data_dir: dir.path().to_path_buf(),
            public_url: Some(bad.to_string()),
            ..Default::default()
        };
        let started = livebase_runtime::server::serve(livebase_functions::app(), options).await;
        let Err(e) = started else {
            panic!("{bad} is refused");
        };
        assert!(e.to_string().contains("public URL"), "{bad}: {e}");
    }
}
