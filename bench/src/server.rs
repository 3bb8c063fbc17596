//! The server under test, as a child process: started from this same binary,
//! it prints `ready <url>` and answers each `stats` line on stdin with one JSON
//! line of counters, its CPU time (summed over its threads, in nanoseconds) and
//! its resident memory. Given a PostgreSQL database and schema, it stores
//! there as one of several nodes (the writer if it is first, else a follower).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use livebase_runtime::server::{
    serve, ClusterOptions, EdgeOptions, ServerOptions, Store, MAX_CONNECTIONS, MAX_HTTP_CONNECTIONS,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::client::BoxError;

/// Runs in the child; `postgres` is a database URL and a schema in it.
pub async fn child(data: PathBuf, postgres: Option<(String, String)>) -> Result<(), BoxError> {
    let mut options = ServerOptions {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data,
        edge: EdgeOptions {
            // Every benchmark client comes from the one loopback address.
            max_connections_per_address: MAX_CONNECTIONS,
            max_http_connections_per_address: MAX_HTTP_CONNECTIONS,
            // ... and stands for many users, though it signs in as few.
            max_connections_per_user: MAX_CONNECTIONS,
            max_calls_in_flight_per_caller: MAX_CONNECTIONS,
            // The idle clients stand for browsers, which answer pings on their
            // own; the benchmark does not read them while they idle, so they
            // would not, and would be closed mid-measurement.
            pong_timeout: Duration::from_secs(24 * 3600),
            ..EdgeOptions::default()
        },
        ..ServerOptions::default()
    };
    if let Some((url, schema)) = postgres {
        // As `livebase serve --postgres` does: the store is also the lease,
        // and it keeps stored files' bytes.
        let p = livebase_store_postgres::PostgresPersistence::open_schema(&url, &schema, None)?;
        options.store = Store::Engine(std::sync::Arc::new(p.clone()));
        options.blobs = livebase_runtime::server::Blobs::Store(std::sync::Arc::new(
            livebase_store_postgres::PostgresBlobs::new(&p),
        ));
        options.cluster = Some(ClusterOptions {
            lease: std::sync::Arc::new(p),
            node_url: None,
        });
    }
    let server = serve(crate::app::registry(), options)
        .await
        .map_err(|e| e.to_string())?;
    println!("ready {}", server.url());
    let stats = server.state.subscriptions.stats().clone();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "stats" {
            let json = serde_json::json!({
                "evaluations": stats.evaluations.load(Ordering::Relaxed),
                "commits": stats.commits.load(Ordering::Relaxed),
                "dropped_slow": stats.dropped_slow.load(Ordering::Relaxed),
                "cpu_ns": cpu_ns(),
                "rss_kb": rss_kb(),
            });
            println!("{json}");
        }
    }
    Ok(())
}

/// CPU time of this process, summed over its threads (ns, from schedstat).
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Counters read from the child.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub evaluations: u64,
    pub commits: u64,
    pub dropped_slow: u64,
    pub cpu_ns: u64,
    pub rss_kb: u64,
}

/// The parent's handle on a child server.
pub struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pub url: String,
    _data: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Result<Server, BoxError> {
        Server::spawn(&[]).await
    }

    /// A node over the schema `schema` of the PostgreSQL database at `url`:
    /// the writer if no other node holds the schema, else a follower.
    pub async fn start_on_postgres(url: &str, schema: &str) -> Result<Server, BoxError> {
        Server::spawn(&["--postgres", url, "--schema", schema]).await
    }

    async fn spawn(args: &[&str]) -> Result<Server, BoxError> {
        let data = tempfile::tempdir()?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("server")
            .arg("--data")
            .arg(data.path())
            .args(args)
            .env("LIVEBASE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .map_err(|_| "the server did not start in 30 s")??
            .ok_or("the server exited before it was ready")?;
        let url = line
            .strip_prefix("ready ")
            .ok_or("unexpected first line")?
            .to_string();
        Ok(Server {
            child,
            stdin,
            stdout,
            url,
            _data: data,
        })
    }

    /// The size of the server's SQLite WAL file (0 before it exists).
    pub fn wal_len(&self) -> u64 {
        let wal = format!("{}-wal", livebase_runtime::store::sqlite::DATABASE_FILE);
        std::fs::metadata(self._data.path().join(wal)).map_or(0, |m| m.len())
    }

    pub async fn stats(&mut self) -> Result<Stats, BoxError> {
        self.stdin.write_all(b"stats\n").await?;
        let line = self.stdout.next_line().await?.ok_or("the server exited")?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let get = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Ok(Stats {
            evaluations: get("evaluations"),
            commits: get("commits"),
            dropped_slow: get("dropped_slow"),
            cpu_ns: get("cpu_ns"),
            rss_kb: get("rss_kb"),
        })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
