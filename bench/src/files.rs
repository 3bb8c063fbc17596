//! The files phase: upload and download throughput of stored files over
//! loopback, each beside the disk's own throughput measured in the same run.
//!
//! An upload is timed from connecting to the `{storageId}` reply: the body
//! streamed to a temporary file while it is hashed, synced, renamed to its
//! address (and the folders synced), then the `_storage` row committed. Its
//! limit is the disk's sequential write of as many bytes plus one `fsync`,
//! measured in a folder beside the server's data folder just before and just
//! after the upload (their mean: this machine's disk drifts). A download is
//! timed from connecting to the last byte of `GET` on the file's signed URL;
//! its limit is reading a file just written back from the disk — like the
//! download, that read is served by the page cache, so the pair compares
//! livebase's serving path with the kernel's, not two disks. Beside the
//! download is also the loopback's own: a bare tokio listener writing as
//! many bytes to a fresh connection, read to its end the same way.

use std::io::{Read, Write};
use std::time::Instant;

use livebase_schema::obj;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{BoxError, HttpCaller};
use crate::server::Server;

const MIB: f64 = (1 << 20) as f64;

/// One size's figures, in MiB/s (medians of the runs).
pub struct FileRates {
    pub upload: f64,
    pub disk_write: f64,
    pub download: f64,
    pub disk_read: f64,
    pub loopback: f64,
}

/// Uploads and downloads `runs` files of `size` bytes (each different, so
/// none is stored once for two) on a server over a data folder, with the
/// disk's figures beside each.
pub async fn files(size: usize, runs: usize) -> Result<FileRates, BoxError> {
    let server = Server::start().await?;
    let rates = files_on(&server, size, runs).await;
    server.stop().await;
    rates
}

/// As [`files`], on `server` (one over PostgreSQL keeps the bytes there).
pub async fn files_on(server: &Server, size: usize, runs: usize) -> Result<FileRates, BoxError> {
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut caller = HttpCaller::new(&server.url, None, true);
    let scratch = tempfile::tempdir()?;
    let mut bytes: Vec<u8> = (0..size as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (mut upload, mut disk_write, mut download, mut disk_read, mut loopback) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // A warm-up run first (connection setup, the first row), not counted.
    for run in 0..=runs {
        bytes[..8].copy_from_slice(&(run as u64).to_le_bytes());
        let url = caller
            .call_value("mutation", "bench:uploadUrl", obj! {})
            .await?;
        let url = url.as_str().ok_or("an upload URL")?.to_string();

        let before = disk_write_rate(scratch.path(), &bytes)?;
        let t0 = Instant::now();
        let (status, reply) = post(&addr, &url, &bytes).await?;
        let up = t0.elapsed().as_secs_f64();
        let after = disk_write_rate(scratch.path(), &bytes)?;
        if status != 200 {
            return Err(format!("upload: {status} {}", String::from_utf8_lossy(&reply)).into());
        }
        let reply: serde_json::Value = serde_json::from_slice(&reply)?;
        let id = reply["storageId"].as_str().ok_or("a storageId")?;
        let file_url = caller
            .call_value("query", "bench:fileUrl", obj! { "storageId" => id })
            .await?;
        let file_url = file_url.as_str().ok_or("a file URL")?.to_string();

        let t0 = Instant::now();
        let got = get(&addr, &file_url).await?;
        let down = t0.elapsed().as_secs_f64();
        if got != size {
            return Err(format!("download: {got} bytes, not {size}").into());
        }
        let read = disk_read_rate(scratch.path(), &bytes)?;
        let bare = loopback_rate(&bytes).await?;
        if run > 0 {
            loopback.push(bare);
            upload.push(size as f64 / MIB / up);
            disk_write.push((before + after) / 2.0);
            download.push(size as f64 / MIB / down);
            disk_read.push(read);
        }
    }
    Ok(FileRates {
        upload: median(&mut upload),
        disk_write: median(&mut disk_write),
        download: median(&mut download),
        disk_read: median(&mut disk_read),
        loopback: median(&mut loopback),
    })
}

/// The figures of one size as the results file holds them.
pub fn row(size: usize, runs: usize, r: &FileRates) -> serde_json::Value {
    json!({"mib": size as f64 / MIB, "runs": runs,
           "upload_mib_per_s": r.upload, "disk_write_fsync_mib_per_s": r.disk_write,
           "upload_ratio": r.upload / r.disk_write.max(1e-9),
           "download_mib_per_s": r.download, "disk_read_mib_per_s": r.disk_read,
           "download_ratio": r.download / r.disk_read.max(1e-9),
           "loopback_mib_per_s": r.loopback, "download_ratio_to_loopback": r.download / r.loopback.max(1e-9)})
}

/// The table's lines for the `files` rows of the results.
pub fn print_rows(r: &serde_json::Value) {
    if let Some(rows) = r.get("files").and_then(|t| t.as_array()) {
        print_file_rows(rows, "");
    }
}

/// The lines of `rows` (as [`row`] makes them), each named with `place`
/// (`""`, or `" over PostgreSQL"`).
pub fn print_file_rows(rows: &[serde_json::Value], place: &str) {
    for row in rows {
        let g = |k: &str| {
            row.get(k)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        let mib = g("mib");
        let size = if mib >= 1.0 {
            format!("{mib:.0} MiB")
        } else {
            format!("{:.0} KiB", mib * 1024.0)
        };
        println!(
            "| upload{place}, {size} file (median of {}) | {:.0} MiB/s ({:.0} % of the disk's write + fsync, {:.0} MiB/s beside it) | — |",
            g("runs"), g("upload_mib_per_s"), g("upload_ratio") * 100.0, g("disk_write_fsync_mib_per_s")
        );
        println!(
            "| download{place}, {size} file (median of {}) | {:.0} MiB/s ({:.0} % of reading it back from the disk (page cache), {:.0} MiB/s; {:.0} % of a bare loopback transfer, {:.0} MiB/s) | — |",
            g("runs"), g("download_mib_per_s"), g("download_ratio") * 100.0, g("disk_read_mib_per_s"),
            g("download_ratio_to_loopback") * 100.0, g("loopback_mib_per_s")
        );
    }
}

/// MiB/s of writing `bytes` to a new file in `dir` and syncing it.
fn disk_write_rate(dir: &std::path::Path, bytes: &[u8]) -> Result<f64, BoxError> {
    let path = dir.join("limit.bin");
    let _ = std::fs::remove_file(&path);
    let t0 = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(bytes.len() as f64 / MIB / t0.elapsed().as_secs_f64())
}

/// MiB/s of reading back the file [`disk_write_rate`] wrote.
fn disk_read_rate(dir: &std::path::Path, bytes: &[u8]) -> Result<f64, BoxError> {
    let mut buf = vec![0u8; bytes.len()];
    let t0 = Instant::now();
    std::fs::File::open(dir.join("limit.bin"))?.read_exact(&mut buf)?;
    let rate = bytes.len() as f64 / MIB / t0.elapsed().as_secs_f64();
    if buf != bytes {
        return Err("the disk read back other bytes".into());
    }
    Ok(rate)
}

/// MiB/s of a bare tokio listener sending `bytes` on a fresh loopback
/// connection, timed as a download is: from connecting to the last byte.
async fn loopback_rate(bytes: &[u8]) -> Result<f64, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let payload = bytes.to_vec();
    let sender = tokio::spawn(async move {
        if let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let _ = stream.write_all(&payload).await;
        }
    });
    let t0 = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let got = read_all(&mut stream).await?.len();
    let rate = got as f64 / MIB / t0.elapsed().as_secs_f64();
    sender.await?;
    if got != bytes.len() {
        return Err(format!("loopback: {got} bytes, not {}", bytes.len()).into());
    }
    Ok(rate)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `POST`s `body` to `path` on a fresh connection; the status and body.
async fn post(addr: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let raw = read_all(&mut stream).await?;
    split(&raw).map(|(status, body)| (status, body.to_vec()))
}

/// `GET`s `path` on a fresh connection; the body's length, once the status
/// is 200.
async fn get(addr: &str, path: &str) -> Result<usize, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let raw = read_all(&mut stream).await?;
    let (status, body) = split(&raw)?;
    if status != 200 {
        return Err(format!("download: {status} {}", String::from_utf8_lossy(body)).into());
    }
    Ok(body.len())
}

async fn read_all(stream: &mut TcpStream) -> Result<Vec<u8>, BoxError> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    Ok(raw)
}

/// A response's status and body (read to the connection's end).
fn split(raw: &[u8]) -> Result<(u16, &[u8]), BoxError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("a response without a head")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("a response without a status")?;
    Ok((status, &raw[end + 4..]))
}
