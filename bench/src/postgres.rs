//! The `postgres` phase: livebase on one PostgreSQL database, one node and
//! two, beside the PostgreSQL server's own limits measured in the same run
//! (a `SELECT 1` round trip, a `NOTIFY` wake-up — how a node learns of a
//! commit — and a single-row insert transaction, from
//! `livebase_store_postgres::probe`, since nothing here names the `postgres`
//! crate).
//!
//! The figures: push latency on one node; a write on node A reaching a live
//! query on node B (and a mutation's round trip on the writer against one
//! forwarded by a follower); mutation throughput from concurrent clients;
//! failover, from a kill -9 of the writer until a write through the follower
//! succeeds again. Nodes are server children (`Server::start_on_postgres`);
//! the second started on a schema follows the first. Every measurement makes
//! a schema of its own, so runs never see each other's data, and drops it.
//!
//! The database comes from `--postgres`, `LIVEBASE_BENCH_POSTGRES_URL` or
//! `LIVEBASE_TEST_POSTGRES_URL` (what `.ci/postgres.sh` exports); without
//! one the phase is skipped, which is no error.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livebase_store_postgres::probe;
use serde_json::json;

use crate::client::{BoxError, Conn};
use crate::measure::{concurrent_writes, percentiles, progress, wait_for_newest, WAIT};
use crate::server::Server;

/// The JSON result of a run without a database.
pub const NOT_MEASURED: &str = "not measured (no PostgreSQL)";

/// How long a failover may take before the measurement gives up: past the
/// followers' own wait for a writer (`WRITER_WAIT`, 15 s).
const FAILOVER_LIMIT: Duration = Duration::from_secs(40);

/// The database to measure on: the command line's, else the environment's.
pub fn database_url(flag: Option<String>) -> Option<String> {
    let env = |name: &str| std::env::var(name).ok();
    flag.or_else(|| env("LIVEBASE_BENCH_POSTGRES_URL"))
        .or_else(|| env("LIVEBASE_TEST_POSTGRES_URL"))
        .filter(|url| !url.trim().is_empty())
}

/// Sizes of one run of the phase.
struct Sizes {
    /// Samples of each of the server's limits.
    probes: usize,
    /// Single-row insert commits beside each throughput figure.
    inserts: usize,
    /// Pushes measured, on one node and across two.
    writes: usize,
    throughput_total: usize,
    clients: Vec<usize>,
    /// Failovers measured (each on a new pair of nodes).
    failovers: usize,
    /// Stored files uploaded and downloaded (bytes in the database), and
    /// their size.
    file_runs: usize,
    file_size: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                probes: 50,
                inserts: 50,
                writes: 20,
                throughput_total: 64,
                clients: vec![1, 8],
                failovers: 1,
                file_runs: 1,
                file_size: 1 << 20,
            }
        } else {
            Sizes {
                probes: 2_000,
                inserts: 500,
                writes: 500,
                throughput_total: 1_000,
                clients: vec![1, 8, 64],
                failovers: 5,
                file_runs: 7,
                file_size: 8 << 20,
            }
        }
    }
}

/// Runs the phase on the database at `url` (or says why not) and returns
/// its JSON.
pub async fn phase(url: Option<&str>, quick: bool) -> Result<serde_json::Value, BoxError> {
    let Some(url) = url else {
        progress(
            "postgres: skipped, no PostgreSQL (give --postgres URL or LIVEBASE_BENCH_POSTGRES_URL)",
        );
        return Ok(json!({ "skipped": NOT_MEASURED }));
    };
    let s = Sizes::new(quick);
    let mut r = serde_json::Map::new();

    let settings = blocking({
        let url = url.to_string();
        move || probe::server_settings(&url)
    })
    .await?;
    let settings: serde_json::Map<String, serde_json::Value> = settings
        .into_iter()
        .map(|(name, value)| (name, json!(value)))
        .collect();
    let setting = |name: &str| settings[name].as_str().unwrap_or("?").to_string();
    progress(&format!(
        "postgres: PostgreSQL {} (fsync {}, synchronous_commit {})",
        setting("server_version"),
        setting("fsync"),
        setting("synchronous_commit")
    ));
    r.insert("server".into(), settings.into());

    progress("limit: a bare PostgreSQL round trip (SELECT 1)");
    let mut samples = blocking({
        let (url, n) = (url.to_string(), s.probes);
        move || probe::round_trips(&url, n)
    })
    .await?;
    r.insert("round_trip_ms".into(), latency(&mut samples));

    progress("limit: a PostgreSQL NOTIFY until the LISTENing session has it");
    let mut samples = blocking({
        let (url, n) = (url.to_string(), s.probes);
        move || probe::notify_wakeups(&url, n)
    })
    .await?;
    r.insert("notify_wakeup_ms".into(), latency(&mut samples));

    progress("limit: PostgreSQL single-row insert transactions");
    let inserts = insert_rate(url, s.inserts).await?;
    r.insert("insert_commits_per_s".into(), json!(inserts));

    progress(&format!(
        "postgres: push latency on one node, {} writes",
        s.writes
    ));
    r.insert(
        "push_one_node_ms".into(),
        push_one_node(url, s.writes).await?,
    );

    progress(&format!(
        "postgres: a write on node A → a live query on node B, {} writes",
        s.writes
    ));
    let two = two_nodes(url, s.writes).await?;
    r.insert("cross_node_ms".into(), two.cross_node);
    r.insert("writer_write_ms".into(), two.on_writer);
    r.insert("forwarded_write_ms".into(), two.forwarded);

    let mut throughput = Vec::new();
    for &clients in &s.clients {
        progress(&format!(
            "postgres: throughput, {clients} concurrent clients on one node"
        ));
        let before = insert_rate(url, s.inserts).await?;
        let rate = throughput_on_one_node(url, clients, s.throughput_total).await?;
        let after = insert_rate(url, s.inserts).await?;
        let limit = (before + after) / 2.0;
        throughput.push(
            json!({"clients": clients, "per_s": rate, "inserts_beside_per_s": limit,
                               "ratio_to_inserts": rate / limit.max(1e-9)}),
        );
    }
    r.insert("throughput".into(), json!(throughput));

    progress(&format!(
        "postgres: upload and download of {} MiB files on one node, {} runs (bytes in the database)",
        s.file_size >> 20,
        s.file_runs
    ));
    let schema = Schema::new(url);
    let node = schema.node().await?;
    let rates = crate::files::files_on(&node, s.file_size, s.file_runs).await;
    node.stop().await;
    schema.drop_now().await?;
    r.insert(
        "files".into(),
        json!([crate::files::row(s.file_size, s.file_runs, &rates?)]),
    );

    let mut runs = Vec::new();
    let mut failed_writes = 0;
    for k in 0..s.failovers {
        progress(&format!(
            "postgres: failover {} of {}: kill -9 of the writer under writes through the follower",
            k + 1,
            s.failovers
        ));
        let f = failover(url).await?;
        runs.push(f.ms);
        failed_writes += f.failed_writes;
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    r.insert(
        "failover_ms".into(),
        json!({"runs": runs, "median": sorted[sorted.len() / 2], "max": sorted[sorted.len() - 1],
               "failed_writes": failed_writes}),
    );
    Ok(r.into())
}

/// Prints the phase's rows of the results table.
pub fn print_rows(r: &serde_json::Value) {
    let Some(p) = r.get("postgres") else {
        return;
    };
    if let Some(why) = p.get("skipped").and_then(serde_json::Value::as_str) {
        println!("| PostgreSQL, two nodes | {why} | — |");
        return;
    }
    let f = |path: &str| {
        p.pointer(path)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let setting = |name: &str| {
        p.pointer(&format!("/server/{name}"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "| PostgreSQL {} round trip, SELECT 1 (limit) | p50 {:.3} ms, p99 {:.3} ms | — |",
        setting("server_version"),
        f("/round_trip_ms/p50"),
        f("/round_trip_ms/p99")
    );
    println!(
        "| PostgreSQL NOTIFY → the LISTENing session has it (limit) | p50 {:.3} ms, p99 {:.3} ms | — |",
        f("/notify_wakeup_ms/p50"),
        f("/notify_wakeup_ms/p99")
    );
    println!(
        "| PostgreSQL single-row insert transactions, fsync {}, synchronous_commit {} (limit) | {:.0} /s | — |",
        setting("fsync"),
        setting("synchronous_commit"),
        f("/insert_commits_per_s")
    );
    println!(
        "| push latency, one node over PostgreSQL | p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms | — |",
        f("/push_one_node_ms/p50"),
        f("/push_one_node_ms/p99"),
        f("/push_one_node_ms/max")
    );
    println!(
        "| two nodes over PostgreSQL: a write on node A → the live query on node B | p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms | p50 ≤ 2 ms, p99 ≤ 20 ms |",
        f("/cross_node_ms/p50"),
        f("/cross_node_ms/p99"),
        f("/cross_node_ms/max")
    );
    println!(
        "| mutation round trip on the writer vs through a follower (forwarded) | p50 {:.3} ms, p99 {:.3} ms vs p50 {:.3} ms, p99 {:.3} ms | — |",
        f("/writer_write_ms/p50"),
        f("/writer_write_ms/p99"),
        f("/forwarded_write_ms/p50"),
        f("/forwarded_write_ms/p99")
    );
    if let Some(rows) = p.get("throughput").and_then(|t| t.as_array()) {
        for row in rows {
            let g = |k: &str| {
                row.get(k)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(f64::NAN)
            };
            println!(
                "| mutations/s over PostgreSQL, {} clients | {:.0} /s ({:.0} % of PostgreSQL's {:.0} single-row inserts/s beside it) | — |",
                g("clients"),
                g("per_s"),
                g("ratio_to_inserts") * 100.0,
                g("inserts_beside_per_s")
            );
        }
    }
    if let Some(rows) = p.get("files").and_then(|t| t.as_array()) {
        crate::files::print_file_rows(rows, " over PostgreSQL");
    }
    let runs = p
        .pointer("/failover_ms/runs")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    println!(
        "| failover: kill -9 of the writer → the first write through the follower answered ({runs} runs) | median {:.0} ms, max {:.0} ms; {:.0} writes failed | about 1 s; none |",
        f("/failover_ms/median"),
        f("/failover_ms/max"),
        f("/failover_ms/failed_writes")
    );
}

/// `f` on a thread where it may block; its error as the benchmark's.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, livebase_runtime::error::StoreError> + Send + 'static,
) -> Result<T, BoxError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// p50, p99 and max as JSON.
fn latency(samples: &mut [Duration]) -> serde_json::Value {
    let (p50, p99, max) = percentiles(samples);
    json!({"p50": p50, "p99": p99, "max": max})
}

/// A schema of the database made for one measurement: named so that no
/// other measurement or run uses it at the same time, dropped when done
/// (by [`Schema::drop_now`] once its nodes are stopped, or on drop).
struct Schema {
    url: String,
    name: String,
    dropped: bool,
}

impl Schema {
    fn new(url: &str) -> Schema {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Schema {
            url: url.to_string(),
            name: format!(
                "livebase_bench_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            dropped: false,
        }
    }

    async fn node(&self) -> Result<Server, BoxError> {
        Server::start_on_postgres(&self.url, &self.name).await
    }

    /// Drops the schema; its nodes must be stopped first (their sessions
    /// would hold the drop up).
    async fn drop_now(mut self) -> Result<(), BoxError> {
        self.dropped = true;
        let (url, name) = (self.url.clone(), self.name.clone());
        blocking(move || probe::drop_schema(&url, &name)).await
    }
}

impl Drop for Schema {
    /// On an error's way out: the nodes, dropped before it, were killed.
    fn drop(&mut self) {
        if !self.dropped {
            let _ = probe::drop_schema(&self.url, &self.name);
        }
    }
}

/// Single-row insert transactions per second on the server, in a schema of
/// their own.
async fn insert_rate(url: &str, n: usize) -> Result<f64, BoxError> {
    let schema = Schema::new(url);
    let samples = blocking({
        let (url, name) = (url.to_string(), schema.name.clone());
        move || probe::insert_commits(&url, &name, n)
    })
    .await?;
    schema.drop_now().await?;
    let total: Duration = samples.iter().sum();
    Ok(n as f64 / total.as_secs_f64().max(1e-9))
}

/// The time from sending each of `writes` mutations on `writer` to `sub`
/// holding the new newest document; each mutation's answer is read (and
/// must be a success) before the next.
async fn pushes(
    writer: &mut Conn,
    sub: &mut Conn,
    writes: usize,
) -> Result<Vec<Duration>, BoxError> {
    // Warm up caches, prepared statements and the nodes' connections.
    for i in 0..5 {
        writer.add_and_wait("warmup", f64::from(i)).await?;
    }
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes {
        let n = i as f64;
        let t0 = Instant::now();
        let id = writer.add("target", n).await?;
        wait_for_newest(sub, n).await?;
        samples.push(t0.elapsed());
        writer.await_response(id).await?;
    }
    Ok(samples)
}

/// A subscriber of `target` on `node`, subscribed.
async fn subscriber(node: &Server) -> Result<Conn, BoxError> {
    let mut sub = Conn::connect(&node.url).await?;
    sub.subscribe(&[(0, "target".into(), None)]).await?;
    sub.await_query_set(1, WAIT).await?;
    Ok(sub)
}

/// Push latency on one node over PostgreSQL: a writer and a subscriber on it.
async fn push_one_node(url: &str, writes: usize) -> Result<serde_json::Value, BoxError> {
    let schema = Schema::new(url);
    let node = schema.node().await?;
    let mut writer = Conn::connect(&node.url).await?;
    let mut sub = subscriber(&node).await?;
    let mut samples = pushes(&mut writer, &mut sub, writes).await?;
    node.stop().await;
    schema.drop_now().await?;
    Ok(latency(&mut samples))
}

struct TwoNodes {
    cross_node: serde_json::Value,
    on_writer: serde_json::Value,
    forwarded: serde_json::Value,
}

/// A writer node A and a follower B on one schema: writes sent to A, the
/// subscriber on B; then mutation round trips on A and through B.
async fn two_nodes(url: &str, writes: usize) -> Result<TwoNodes, BoxError> {
    let schema = Schema::new(url);
    let a = schema.node().await?;
    let b = schema.node().await?;
    let mut writer = Conn::connect(&a.url).await?;
    let mut sub = subscriber(&b).await?;
    let mut cross = pushes(&mut writer, &mut sub, writes).await?;
    drop(sub);
    let round_trips = async |conn: &mut Conn, offset: f64| -> Result<_, BoxError> {
        let mut samples = Vec::with_capacity(writes);
        for i in 0..writes {
            let t0 = Instant::now();
            conn.add_and_wait("round-trips", offset + i as f64).await?;
            samples.push(t0.elapsed());
        }
        Ok(latency(&mut samples))
    };
    let on_writer = round_trips(&mut writer, 1e6).await?;
    let mut through_b = Conn::connect(&b.url).await?;
    for i in 0..5 {
        through_b.add_and_wait("warmup", f64::from(i)).await?;
    }
    let forwarded = round_trips(&mut through_b, 2e6).await?;
    b.stop().await;
    a.stop().await;
    schema.drop_now().await?;
    Ok(TwoNodes {
        cross_node: latency(&mut cross),
        on_writer,
        forwarded,
    })
}

/// Committed mutations per second on one node from `clients` concurrent
/// connections, each writing to an organization of its own.
async fn throughput_on_one_node(url: &str, clients: usize, total: usize) -> Result<f64, BoxError> {
    let schema = Schema::new(url);
    let node = schema.node().await?;
    let per_client = (total / clients).max(1);
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut c = Conn::connect(&node.url).await?;
        c.add_and_wait("warmup", 0.0).await?;
        conns.push(c);
    }
    let rate = concurrent_writes(&mut conns, per_client).await?;
    node.stop().await;
    schema.drop_now().await?;
    Ok(rate)
}

struct Failover {
    /// From the kill to the answer of the first write sent after the
    /// writer was gone.
    ms: f64,
    /// Writes answered with an error (or cut off) meanwhile.
    failed_writes: u64,
}

/// A writer and a follower; one client writes through the follower in a
/// loop; the writer is killed (SIGKILL); the time from the kill until a
/// write sent after the killed process was reaped is answered with success. The write in flight at the
/// kill is resent by the follower to whichever node is the writer then, so
/// it holds up the loop until the takeover too: the figure is the takeover
/// plus one round trip at most.
async fn failover(url: &str) -> Result<Failover, BoxError> {
    let schema = Schema::new(url);
    let writer = schema.node().await?;
    let follower = schema.node().await?;
    let follower_url = follower.url.clone();
    let mut conn = Conn::connect(&follower_url).await?;
    for i in 0..5 {
        conn.add_and_wait("warmup", f64::from(i)).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    // Each successful write: when it was sent and when it was answered.
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<(Instant, Instant)>();
    let writes = tokio::spawn({
        let (stop, failed) = (stop.clone(), failed.clone());
        async move {
            let mut n = 0.0;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match conn.add_and_wait("failover", n).await {
                    Ok(()) => {
                        if done_tx.send((sent, Instant::now())).is_err() {
                            break;
                        }
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // Whatever it was, a fresh connection goes on.
                        conn = Conn::connect(&follower_url).await?;
                    }
                }
                n += 1.0;
            }
            Ok::<(), BoxError>(())
        }
    });
    // Writes flowing through the follower before the kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    writer.stop().await;
    // Reaped: a write sent from now on cannot reach the old writer.
    let dead = Instant::now();
    let answered = tokio::time::timeout(FAILOVER_LIMIT, async {
        while let Some((sent, at)) = done.recv().await {
            if sent >= dead {
                return Some(at);
            }
        }
        None
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    drop(done);
    let answered = match answered {
        Ok(Some(at)) => at,
        Ok(None) => {
            writes.await??;
            return Err("the writes through the follower stopped".into());
        }
        Err(_) => {
            return Err(format!(
                "no write through the follower succeeded within {FAILOVER_LIMIT:?} of the kill"
            )
            .into())
        }
    };
    let _ = writes.await;
    follower.stop().await;
    schema.drop_now().await?;
    Ok(Failover {
        ms: answered.duration_since(killed).as_secs_f64() * 1e3,
        failed_writes: failed.load(Ordering::Relaxed),
    })
}
