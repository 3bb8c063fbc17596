//! An upload cut by `kill -9`, with the real binary: the server dies with
//! part of the body written to `<data>/files/tmp/`; restarted on the same
//! folder, it removes that temporary file before it announces its address
//! (before it serves a request), no `_storage`
//! row exists (the row commits only after the whole body is synced and
//! renamed), and the upload URL — whose token is consumed in that same
//! commit — still works, once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use livebase_runtime::storage::STORAGE;
use livebase_runtime::store::sqlite::{SqlitePersistence, DATABASE_FILE};
use livebase_runtime::store::Persistence;
use livebase_testkit::http::{call_json, http, http_json};
use livebase_testkit::process::{listening_address, KillOnDrop};
use livebase_testkit::PASSWORD;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long the test waits for the server to get somewhere (a guard
/// against hanging, not a measure of speed).
const GUARD: Duration = Duration::from_secs(60);

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `livebase serve --port 0 --data <dir>`, once it listens.
fn serve(dir: &Path) -> (KillOnDrop, SocketAddr) {
    let child = Command::new(env!("CARGO_BIN_EXE_livebase"))
        .args(["serve", "--port", "0", "--data", path(dir)])
        .env_remove("LIVEBASE_DATA")
        .env_remove("LIVEBASE_SMTP_URL")
        .env_remove("LIVEBASE_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("livebase starts");
    let mut child = KillOnDrop(child);
    let (addr, _) = listening_address(&child.stdout_lines());
    (child, addr)
}

/// Every regular file under `<data>/files`, temporary ones included, with
/// its size.
fn files_on_disk(data: &Path) -> Vec<(PathBuf, u64)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let size = entry.metadata().map_or(0, |m| m.len());
                out.push((path, size));
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("files"), &mut out);
    out
}

/// The `_storage` rows of the data folder (read from a snapshot beside the
/// running server, as `livebase export` does).
fn storage_rows(data: &Path) -> usize {
    let store = SqlitePersistence::open(data.join(DATABASE_FILE)).expect("the store opens");
    let mut conn = store.connect().expect("connects");
    conn.begin_read().expect("a snapshot");
    let docs = conn.scan_documents(None, 1_000_000).expect("scans");
    conn.end_read().expect("ends");
    docs.iter().filter(|d| d.table() == STORAGE).count()
}

/// Polls `done` until it holds (or fails the test after [`GUARD`]).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kill_9_during_an_upload_leaves_no_partial_file_no_row_and_a_url_that_works_once() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (mut server, addr) = serve(&dir);
    let up = http_json(
        addr,
        "POST",
        "/api/auth/sign-up/email",
        None,
        &[],
        Some(&json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"})),
    )
    .await;
    assert_eq!(up.status, 200, "{}", up.body);
    let token = up.body["token"].as_str().expect("a token").to_string();
    let (status, reply) = call_json(
        addr,
        "mutation",
        "files:generateUploadUrl",
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let url = reply["value"].as_str().expect("an upload URL").to_string();

    // 64 KiB of a 1 MiB body, then SIGKILL while the server waits for more.
    let total = 1 << 20;
    let mut upload = TcpStream::connect(addr).await.expect("connects");
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: {total}\r\n\r\n"
    );
    upload.write_all(head.as_bytes()).await.expect("sends");
    upload.write_all(&[7u8; 65_536]).await.expect("sends");
    until("part of the body on disk", || {
        files_on_disk(&dir).iter().any(|(_, size)| *size > 0)
    })
    .await;
    server.0.kill().expect("SIGKILL");
    server.0.wait().expect("reaped");
    drop(upload);
    let left = files_on_disk(&dir);
    assert_eq!(left.len(), 1, "the half upload is on disk: {left:?}");
    assert!(
        left[0].0.parent().is_some_and(|p| p.ends_with("files/tmp")),
        "under its temporary name, never its address: {left:?}"
    );

    // Restarted on the same folder: the temporary file is gone by the time
    // it prints its address, and no row was committed.
    let (_server, addr) = serve(&dir);
    assert_eq!(
        files_on_disk(&dir),
        vec![],
        "no partial file after start-up"
    );
    assert_eq!(storage_rows(&dir), 0, "no `_storage` row");

    // The token was not consumed: the same URL takes the whole file, once.
    let body = vec![7u8; total];
    let whole = http(addr, "POST", &url, &[("Content-Type", "image/png")], &body).await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    assert!(whole.body["storageId"].is_string(), "{}", whole.body);
    let again = http(addr, "POST", &url, &[("Content-Type", "image/png")], b"x").await;
    assert_eq!(again.status, 403, "{}", again.body);
    assert_eq!(storage_rows(&dir), 1);
    let stored = files_on_disk(&dir);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].1, total as u64, "the whole file, at its address");
}
