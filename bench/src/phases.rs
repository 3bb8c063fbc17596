//! The measurements, in the order they are reported. Each figure is printed
//! beside the machine's own limit measured in the same run.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use livebase_schema::protocol::ServerMessage;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{lean_newest, sign_up, small_buffers, BoxError, Conn};
use crate::measure::{
    concurrent_writes, percentiles, pipelined_writes, progress, wait_for_newest, WAIT,
};
use crate::server::Server;

/// Sizes of one run.
struct Sizes {
    echo_rounds: usize,
    sqlite_inserts: usize,
    idle_subs: usize,
    idle_orgs: usize,
    writes: usize,
    selectivity_small: usize,
    fanout_conns: usize,
    fanout_repeats: usize,
    throughput_total: usize,
    memory_conns: usize,
    scaling: Vec<usize>,
    hostile: HostileSizes,
    /// Rows of the live results whose one-row change is pushed.
    result_rows: Vec<usize>,
    /// One-row changes measured per result size.
    result_writes: usize,
    /// Mutations per transport in the HTTP-against-WebSocket CPU phase.
    http_calls: usize,
    /// Subscribers (each of its own query) and writes in the distinct fan-out.
    distinct_conns: usize,
    distinct_repeats: usize,
    /// Stored file sizes (bytes) and uploads-and-downloads per size.
    file_sizes: Vec<usize>,
    file_runs: usize,
}

/// Sizes of the hostile-tenant phase.
#[derive(Clone)]
struct HostileSizes {
    /// Victim pushes measured, quiet and then under churn.
    writes: usize,
    /// Documents in the hostile tenant's organization (each heavy query reads
    /// them all).
    docs: usize,
    /// Heavy live queries the hostile tenant holds (distinct, so not shared).
    heavy: u32,
    /// Heavy queries its churning connection adds and removes per step.
    churn: u32,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                echo_rounds: 200,
                sqlite_inserts: 50,
                idle_subs: 200,
                idle_orgs: 20,
                writes: 30,
                selectivity_small: 10,
                fanout_conns: 20,
                fanout_repeats: 3,
                throughput_total: 64,
                memory_conns: 50,
                scaling: vec![100, 200],
                hostile: HostileSizes {
                    writes: 20,
                    docs: 200,
                    heavy: 10,
                    churn: 5,
                },
                result_rows: vec![20, 100, 500],
                result_writes: 20,
                http_calls: 30,
                distinct_conns: 20,
                distinct_repeats: 3,
                file_sizes: vec![256 << 10],
                file_runs: 2,
            }
        } else {
            Sizes {
                echo_rounds: 5_000,
                sqlite_inserts: 1_000,
                idle_subs: 10_000,
                idle_orgs: 1_000,
                writes: 1_000,
                selectivity_small: 10,
                fanout_conns: 1_000,
                fanout_repeats: 300,
                throughput_total: 2_000,
                memory_conns: 10_000,
                scaling: vec![1_000, 10_000, 50_000],
                // Enough pushes to span more than one `STARVATION_LIMIT` of
                // the worker, and for a p99 that is the 30th-worst sample of
                // each side, not the 10th: with 1,000 the ratio of two p99s
                // moved between 1.4 and 2.1 from run to run.
                hostile: HostileSizes {
                    writes: 3_000,
                    docs: 2_000,
                    heavy: 50,
                    churn: 20,
                },
                result_rows: vec![20, 100, 500],
                result_writes: 500,
                http_calls: 1_000,
                distinct_conns: 1_000,
                distinct_repeats: 50,
                file_sizes: vec![1 << 20, 8 << 20],
                file_runs: 7,
            }
        }
    }
}

pub async fn run_all(
    quick: bool,
    only: Option<&str>,
    postgres: Option<&str>,
    out: &Path,
) -> Result<(), BoxError> {
    let s = Sizes::new(quick);
    let mut results = serde_json::Map::new();
    const PHASES: [&str; 12] = [
        "push",
        "fanout",
        "throughput",
        "memory",
        "scaling",
        "hostile",
        "pushsize",
        "http",
        "distinct",
        "files",
        "devloop",
        "postgres",
    ];
    if let Some(o) = only.filter(|o| !PHASES.contains(o)) {
        return Err(format!("unknown phase `{o}`; the phases are {}", PHASES.join(", ")).into());
    }
    let want = |phase: &str| only.is_none_or(|o| o == phase);

    progress("limit: WebSocket echo round trip on loopback");
    let (echo_p50, echo_p99, _) = echo(s.echo_rounds).await?;
    results.insert("echo_ms".into(), json!({"p50": echo_p50, "p99": echo_p99}));

    progress("limit: plain rusqlite single-row insert transactions (WAL, synchronous=FULL)");
    let sqlite_rate = sqlite_inserts(s.sqlite_inserts)?;
    results.insert("sqlite_inserts_per_s".into(), json!(sqlite_rate));

    if want("push") {
        progress(&format!(
            "push latency with {} idle subscriptions over {} organizations",
            s.idle_subs, s.idle_orgs
        ));
        let push = push_scenario(s.idle_subs, s.idle_orgs, s.writes).await?;
        results.insert(
            "push_ms".into(),
            json!({"p50": push.p50, "p99": push.p99, "max": push.max, "idle_subscriptions": s.idle_subs,
                   "ratio_to_echo_p50": push.p50 / echo_p50.max(1e-9)}),
        );

        progress(&format!(
            "selectivity: {} vs {} other subscriptions",
            s.selectivity_small, s.idle_subs
        ));
        let small = push_scenario(
            s.selectivity_small,
            s.selectivity_small.min(s.idle_orgs),
            s.writes,
        )
        .await?;
        let selectivity = push.cpu_us_per_mutation / small.cpu_us_per_mutation.max(1e-9);
        results.insert(
            "selectivity".into(),
            json!({"cpu_us_per_mutation_small": small.cpu_us_per_mutation,
                   "cpu_us_per_mutation_large": push.cpu_us_per_mutation, "ratio": selectivity}),
        );
    }

    if want("fanout") {
        progress(&format!(
            "fan-out: {} subscribers of one query",
            s.fanout_conns
        ));
        let (fan, floor) = fanout_beside_floor(s.fanout_conns, s.fanout_repeats, false).await?;
        results.insert(
            "fanout".into(),
            json!({"connections": s.fanout_conns, "last_p50_ms": fan.p50, "last_p99_ms": fan.p99, "runs_per_write": fan.runs,
                   "server_cpu_us_per_write": fan.cpu_us,
                   "limit_last_p50_ms": floor.0, "limit_last_p99_ms": floor.1, "p99_ratio": fan.p99 / floor.1.max(1e-9)}),
        );
    }

    if want("throughput") {
        let mut throughput = Vec::new();
        // Each figure is set beside rusqlite measured in the same seconds:
        // the two alternate in slices (see `SLICES`).
        let beside = |(rate, limit): (f64, f64)| json!({"per_s": rate, "sqlite_beside_per_s": limit, "ratio_to_sqlite": rate / limit.max(1e-9)});
        let inserts = 2 * s.sqlite_inserts;
        // A client waits for each answer before sending the next, but the
        // last row's, which keeps [`PIPELINE_DEPTH`] in flight.
        for (clients, depth) in [(1usize, 1usize), (8, 1), (64, 1), (1, PIPELINE_DEPTH)] {
            progress(&format!(
                "throughput: {clients} concurrent clients, {depth} in flight each"
            ));
            let mut row =
                beside(mutation_throughput(clients, depth, s.throughput_total, inserts).await?);
            row["clients"] = json!(clients);
            row["in_flight"] = json!(depth);
            throughput.push(row);
        }
        results.insert("throughput".into(), json!(throughput));
        progress("throughput: one client's mutations in process, without the network");
        let measured = in_process_mutations(s.throughput_total, inserts).await?;
        results.insert("in_process_mutations".into(), beside(measured));
    }

    if want("memory") {
        progress(&format!(
            "memory: {} idle subscribed connections",
            s.memory_conns
        ));
        let per_conn_kb = memory(s.memory_conns).await?;
        results.insert("memory_kb_per_connection".into(), json!(per_conn_kb));
    }

    if want("scaling") {
        let mut scaling = Vec::new();
        for &subs in &s.scaling {
            progress(&format!("scaling: {subs} subscriptions"));
            let r = push_scenario(subs, (subs / 10).max(1), s.writes.min(300)).await?;
            scaling.push(
                json!({"subscriptions": subs, "push_p50_ms": r.p50, "push_p99_ms": r.p99,
                                "cpu_us_per_mutation": r.cpu_us_per_mutation}),
            );
        }
        results.insert("scaling".into(), json!(scaling));
    }

    if want("hostile") {
        let h = &s.hostile;
        progress(&format!(
            "hostile tenant: another organization's push, quiet and while one tenant churns ({} heavy queries over {} documents)",
            h.heavy, h.docs
        ));
        let r = hostile_tenant(h).await?;
        results.insert(
            "hostile_tenant".into(),
            json!({"quiet_p50_ms": r.quiet.0, "quiet_p99_ms": r.quiet.1, "quiet_max_ms": r.quiet.2,
                   "hostile_p50_ms": r.hostile.0, "hostile_p99_ms": r.hostile.1, "hostile_max_ms": r.hostile.2,
                   "p99_ratio": r.hostile.1 / r.quiet.1.max(1e-9), "p50_ratio": r.hostile.0 / r.quiet.0.max(1e-9),
                   "hostile_mutations_per_s": r.mutations_per_s, "evaluations_per_s": r.evaluations_per_s,
                   "quiet_write_p50_ms": r.quiet_write.0, "quiet_write_p99_ms": r.quiet_write.1,
                   "hostile_write_p50_ms": r.hostile_write.0, "hostile_write_p99_ms": r.hostile_write.1,
                   "churn_steps": r.churn_steps, "churn_reconnects": r.reconnects,
                   "heavy_queries": h.heavy, "heavy_docs": h.docs}),
        );
    }

    if want("pushsize") {
        let mut rows = Vec::new();
        for &n in &s.result_rows {
            progress(&format!(
                "push when one row of a live {n}-row result changes"
            ));
            let r = push_by_result_size(n, s.result_writes).await?;
            rows.push(
                json!({"rows": n, "p50_ms": r.p50, "p99_ms": r.p99, "max_ms": r.max,
                             "cpu_us_per_mutation": r.cpu_us_per_mutation}),
            );
        }
        results.insert("push_by_result_size".into(), json!(rows));
    }

    if want("http") {
        progress(&format!(
            "server CPU per mutation: HTTP (fresh connection, keep-alive) vs WebSocket, {} calls each",
            s.http_calls
        ));
        let r = http_cpu(s.http_calls).await?;
        results.insert(
            "http_cpu".into(),
            json!({"calls": s.http_calls, "ws_us": r.ws, "http_keep_alive_us": r.keep_alive,
                   "http_fresh_us": r.fresh, "http_fresh_anonymous_us": r.fresh_anonymous,
                   "keep_alive_ratio": r.keep_alive / r.ws.max(1e-9),
                   "fresh_ratio": r.fresh / r.ws.max(1e-9)}),
        );
    }

    if want("distinct") {
        progress(&format!(
            "fan-out: {} subscribers of {} distinct queries",
            s.distinct_conns, s.distinct_conns
        ));
        let (fan, floor) = fanout_beside_floor(s.distinct_conns, s.distinct_repeats, true).await?;
        results.insert(
            "fanout_distinct".into(),
            json!({"connections": s.distinct_conns, "last_p50_ms": fan.p50, "last_p99_ms": fan.p99,
                   "runs_per_write": fan.runs, "server_cpu_us_per_write": fan.cpu_us,
                   "limit_last_p50_ms": floor.0, "limit_last_p99_ms": floor.1,
                   "p99_ratio": fan.p99 / floor.1.max(1e-9)}),
        );
    }

    if want("files") {
        let mut rows = Vec::new();
        for &size in &s.file_sizes {
            progress(&format!(
                "files: upload and download of {} KiB files, {} runs, beside the disk's write + fsync and read",
                size >> 10,
                s.file_runs
            ));
            let r = crate::files::files(size, s.file_runs).await?;
            rows.push(crate::files::row(size, s.file_runs, &r));
        }
        results.insert("files".into(), json!(rows));
    }

    // The dev loop builds an application with cargo: in full runs and on
    // its own, not in the smoke run.
    if only == Some("devloop") || (only.is_none() && !quick) {
        progress("dev loop: a one-line change to a query's source until the new result reaches its client (livebase dev, cargo)");
        let r = crate::devloop::devloop(5).await?;
        let mut sorted = r.rounds_s.clone();
        sorted.sort_by(f64::total_cmp);
        results.insert(
            "devloop".into(),
            json!({"first_build_s": r.first_build_s, "rounds_s": r.rounds_s,
                   "median_s": sorted[sorted.len() / 2], "max_s": sorted[sorted.len() - 1]}),
        );
    }

    // Over PostgreSQL, when a database is given; the smoke run leaves it
    // out otherwise, a full run reports it as not measured.
    if only == Some("postgres") || (only.is_none() && (!quick || postgres.is_some())) {
        results.insert(
            "postgres".into(),
            crate::postgres::phase(postgres, quick).await?,
        );
    }

    let json = serde_json::Value::Object(results);
    std::fs::write(out, serde_json::to_string_pretty(&json)?)?;
    print_table(&json);
    eprintln!("[bench] wrote {}", out.display());
    Ok(())
}

fn print_table(r: &serde_json::Value) {
    let f = |p: &str| {
        r.pointer(p)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    println!("| figure | result | limit / goal |");
    println!("| --- | --- | --- |");
    println!(
        "| WebSocket echo round trip (limit) | p50 {:.3} ms, p99 {:.3} ms | — |",
        f("/echo_ms/p50"),
        f("/echo_ms/p99")
    );
    println!(
        "| rusqlite single-row inserts (limit) | {:.0} /s | — |",
        f("/sqlite_inserts_per_s")
    );
    println!(
        "| push latency, {} idle subscriptions | p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({:.1}× echo) | p50 ≤ 0.5 ms, p99 ≤ 2 ms |",
        f("/push_ms/idle_subscriptions"), f("/push_ms/p50"), f("/push_ms/p99"), f("/push_ms/max"), f("/push_ms/ratio_to_echo_p50")
    );
    println!(
        "| selectivity: server CPU per mutation | {:.1} µs (small) vs {:.1} µs (large): ratio {:.2} | ≤ 1.1 |",
        f("/selectivity/cpu_us_per_mutation_small"), f("/selectivity/cpu_us_per_mutation_large"), f("/selectivity/ratio")
    );
    println!(
        "| bare WebSocket broadcast to {} connections (limit) | last p50 {:.2} ms, p99 {:.2} ms | — |",
        f("/fanout/connections"),
        f("/fanout/limit_last_p50_ms"),
        f("/fanout/limit_last_p99_ms")
    );
    println!(
        "| fan-out to {} subscribers | last p50 {:.2} ms, p99 {:.2} ms ({:.2}× the bare broadcast's p99); query runs per write {:.2}; server CPU per write {:.0} µs ({:.2} µs per subscriber) | p99 ≤ 1.2× the bare broadcast; 1 run |",
        f("/fanout/connections"), f("/fanout/last_p50_ms"), f("/fanout/last_p99_ms"), f("/fanout/p99_ratio"), f("/fanout/runs_per_write"),
        f("/fanout/server_cpu_us_per_write"), f("/fanout/server_cpu_us_per_write") / f("/fanout/connections")
    );
    if let Some(rows) = r.get("throughput").and_then(|t| t.as_array()) {
        for row in rows {
            let g = |k: &str| {
                row.get(k)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(f64::NAN)
            };
            let clients = match (g("clients"), g("in_flight")) {
                (c, d) if d > 1.0 => format!(
                    "{c} client{}, {d} in flight each",
                    if c == 1.0 { "" } else { "s" }
                ),
                (1.0, _) => "1 client".to_string(),
                (c, _) => format!("{c} clients"),
            };
            println!(
                "| mutations/s, {clients} | {:.0} /s ({:.0} % of rusqlite's {:.0} /s beside it) | ≥ 50 % |",
                g("per_s"),
                g("ratio_to_sqlite") * 100.0,
                g("sqlite_beside_per_s")
            );
        }
    }
    println!(
        "| mutations/s, 1 client in process (no network) | {:.0} /s ({:.0} % of rusqlite's {:.0} /s beside it) | — |",
        f("/in_process_mutations/per_s"),
        f("/in_process_mutations/ratio_to_sqlite") * 100.0,
        f("/in_process_mutations/sqlite_beside_per_s")
    );
    println!(
        "| memory per idle subscribed connection | {:.1} KB | ≤ 50 KB |",
        f("/memory_kb_per_connection")
    );
    if r.get("hostile_tenant").is_some() {
        println!(
            "| (the same victim's mutation round trip alone) | quiet p50 {:.3} ms, p99 {:.3} ms; churning p50 {:.3} ms, p99 {:.3} ms | — |",
            f("/hostile_tenant/quiet_write_p50_ms"), f("/hostile_tenant/quiet_write_p99_ms"),
            f("/hostile_tenant/hostile_write_p50_ms"), f("/hostile_tenant/hostile_write_p99_ms")
        );
        println!(
            "| another organization's push while one tenant churns | quiet p50 {:.3} ms, p99 {:.3} ms; churning p50 {:.3} ms, p99 {:.3} ms ({:.1}× at p99); tenant {:.0} mutations/s, {:.0} evaluations/s | p99 ≤ 2× quiet |",
            f("/hostile_tenant/quiet_p50_ms"), f("/hostile_tenant/quiet_p99_ms"),
            f("/hostile_tenant/hostile_p50_ms"), f("/hostile_tenant/hostile_p99_ms"),
            f("/hostile_tenant/p99_ratio"), f("/hostile_tenant/hostile_mutations_per_s"),
            f("/hostile_tenant/evaluations_per_s")
        );
    }
    if let Some(rows) = r.get("push_by_result_size").and_then(|t| t.as_array()) {
        for row in rows {
            let g = |k: &str| {
                row.get(k)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(f64::NAN)
            };
            println!(
                "| push when one row of a live {}-row result changes | p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {:.1} µs CPU per mutation | 500 rows: p50 ≤ 1 ms and ≤ 2× the 20-row p50; p99 ≤ 2 ms |",
                g("rows"), g("p50_ms"), g("p99_ms"), g("max_ms"), g("cpu_us_per_mutation")
            );
        }
    }
    if r.get("http_cpu").is_some() {
        println!(
            "| server CPU per mutation: WebSocket vs HTTP keep-alive, HTTP fresh connection (and without a token) | {:.1} µs vs {:.1} µs ({:.2}×), {:.1} µs ({:.2}×; {:.1} µs) | HTTP ≤ 2× WebSocket |",
            f("/http_cpu/ws_us"), f("/http_cpu/http_keep_alive_us"), f("/http_cpu/keep_alive_ratio"),
            f("/http_cpu/http_fresh_us"), f("/http_cpu/fresh_ratio"), f("/http_cpu/http_fresh_anonymous_us")
        );
    }
    if r.get("fanout_distinct").is_some() {
        println!(
            "| fan-out to {} subscribers of as many distinct queries | last p50 {:.2} ms, p99 {:.2} ms ({:.2}× the bare broadcast's p99 of {:.2} ms, p50 {:.2} ms); query runs per write {:.0}; server CPU per write {:.0} µs ({:.2} µs per subscriber) | p99 ≤ 1.2× the bare broadcast |",
            f("/fanout_distinct/connections"), f("/fanout_distinct/last_p50_ms"), f("/fanout_distinct/last_p99_ms"),
            f("/fanout_distinct/p99_ratio"), f("/fanout_distinct/limit_last_p99_ms"), f("/fanout_distinct/limit_last_p50_ms"),
            f("/fanout_distinct/runs_per_write"),
            f("/fanout_distinct/server_cpu_us_per_write"), f("/fanout_distinct/server_cpu_us_per_write") / f("/fanout_distinct/connections")
        );
    }
    crate::files::print_rows(r);
    crate::postgres::print_rows(r);
    if r.get("devloop").is_some() {
        println!(
            "| dev loop: a one-line change to a query's source → the new result on its client's live query (5 edits) | median {:.1} s, max {:.1} s (the first build, not counted: {:.0} s) | ≤ 10 s |",
            f("/devloop/median_s"), f("/devloop/max_s"), f("/devloop/first_build_s")
        );
    }
    if let Some(rows) = r.get("scaling").and_then(|t| t.as_array()) {
        for row in rows {
            let g = |k: &str| {
                row.get(k)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(f64::NAN)
            };
            println!(
                "| scaling, {} subscriptions | push p50 {:.3} ms, p99 {:.3} ms; {:.1} µs CPU per mutation | flat |",
                g("subscriptions"), g("push_p50_ms"), g("push_p99_ms"), g("cpu_us_per_mutation")
            );
        }
    }
}

/// Round trips of a bare tokio-tungstenite echo server on loopback.
async fn echo(rounds: usize) -> Result<(f64, f64, f64), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/"), None, true).await?;
    let payload = r#"{"type":"Transition","modifications":[]}"#;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        ws.send(Message::Text(payload.into())).await?;
        ws.next().await.ok_or("echo closed")??;
        samples.push(t0.elapsed());
    }
    Ok(percentiles(&mut samples))
}

/// Single-row insert transactions per second, same durability as livebase.
fn sqlite_inserts(n: usize) -> Result<f64, BoxError> {
    let mut limit = SqliteLimit::open()?;
    limit.insert(n)?;
    Ok(limit.per_s())
}

/// Mutations the pipelined throughput row's client keeps in flight: the
/// server's bound per connection
/// (`livebase_runtime::server::MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION`).
const PIPELINE_DEPTH: usize = livebase_runtime::server::MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION;

/// How many slices a throughput figure and rusqlite's beside it alternate
/// in. This machine's disk drifts by tens of percent within a minute (the
/// same rusqlite loop measured 3,400 and 6,000 /s minutes apart), so a
/// figure is set beside rusqlite measured in the same seconds, not only
/// before and after it.
const SLICES: usize = 10;

/// Writes in batches until a WAL file no longer grows, at most
/// [`MAX_WARMING_BATCHES`] batches. Both sides of a throughput figure are
/// measured so, as a server that has run a while is: until SQLite first
/// restarts its WAL, each commit extends the file, and on ext4 a sync that
/// also records a new file size takes about 1.5 times as long as one that
/// overwrites frames of an earlier cycle (rusqlite on this disk: 5,000 /s
/// against 7,100-8,900 /s). A fresh livebase file grows its WAL for its
/// first `WAL_CYCLE_PAGES` pages (about 1,500 mutations).
async fn warm_until_the_wal_settles<F, Fut>(
    wal_len: impl Fn() -> u64,
    mut batch: F,
) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let mut last = wal_len();
    for n in 1..=MAX_WARMING_BATCHES {
        batch().await?;
        let now = wal_len();
        if now == last {
            progress(&format!(
                "  warmed: {n} batches of {WARMING_BATCH}, WAL {:.1} MiB",
                now as f64 / f64::from(1 << 20)
            ));
            return Ok(());
        }
        last = now;
    }
    progress("  the WAL was still growing after the warming batches");
    Ok(())
}

/// See [`warm_until_the_wal_settles`]; 60 batches of 500 mutations is
/// many times what fills livebase's WAL.
const MAX_WARMING_BATCHES: usize = 60;
/// Mutations (or inserts) per warming batch.
const WARMING_BATCH: usize = 500;

/// Plain rusqlite single-row insert transactions on one file, with
/// livebase's durability (WAL, `synchronous=FULL`): the limit the mutation
/// figures are set beside.
struct SqliteLimit {
    _dir: tempfile::TempDir,
    conn: rusqlite::Connection,
    rows: usize,
    spent: Duration,
}

impl SqliteLimit {
    fn open() -> Result<SqliteLimit, BoxError> {
        let dir = tempfile::tempdir()?;
        let conn = rusqlite::Connection::open(dir.path().join("limit.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
        Ok(SqliteLimit {
            _dir: dir,
            conn,
            rows: 0,
            spent: Duration::ZERO,
        })
    }

    /// Opened and written until its WAL no longer grows.
    async fn warmed() -> Result<SqliteLimit, BoxError> {
        let limit = std::cell::RefCell::new(SqliteLimit::open()?);
        let wal = limit.borrow()._dir.path().join("limit.sqlite3-wal");
        warm_until_the_wal_settles(
            || std::fs::metadata(&wal).map_or(0, |m| m.len()),
            || {
                let done = limit.borrow_mut().insert(WARMING_BATCH);
                async move { done }
            },
        )
        .await?;
        let mut limit = limit.into_inner();
        limit.rows = 0;
        limit.spent = Duration::ZERO;
        Ok(limit)
    }

    /// Inserts `n` rows, each in a transaction of its own.
    fn insert(&mut self, n: usize) -> Result<(), BoxError> {
        let t0 = Instant::now();
        for i in 0..n {
            self.conn
                .execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])?;
        }
        self.spent += t0.elapsed();
        self.rows += n;
        Ok(())
    }

    fn per_s(&self) -> f64 {
        self.rows as f64 / self.spent.as_secs_f64().max(1e-9)
    }
}

struct PushResult {
    p50: f64,
    p99: f64,
    max: f64,
    cpu_us_per_mutation: f64,
}

/// Opens `subs` idle subscriptions (each distinct) over `orgs` organizations,
/// 100 per connection; returns the connections (kept open by the caller).
async fn idle_subscriptions(url: &str, subs: usize, orgs: usize) -> Result<Vec<Conn>, BoxError> {
    let mut conns = Vec::new();
    let per_conn = 100;
    let mut made = 0;
    while made < subs {
        let n = per_conn.min(subs - made);
        let mut c = Conn::connect(url).await?;
        let queries: Vec<(u32, String, Option<f64>)> = (0..n)
            .map(|i| {
                let k = made + i;
                (i as u32, format!("org{}", k % orgs.max(1)), Some(k as f64))
            })
            .collect();
        c.subscribe(&queries).await?;
        let v = c.query_set();
        c.await_query_set(v, WAIT).await?;
        conns.push(c);
        made += n;
    }
    Ok(conns)
}

/// One writer, one subscriber of the written organization, `idle` other
/// subscriptions: the latency from sending a mutation to the subscriber
/// holding the new result, and the server's CPU per mutation.
async fn push_scenario(idle: usize, orgs: usize, writes: usize) -> Result<PushResult, BoxError> {
    let mut server = Server::start().await?;
    let _idle = idle_subscriptions(&server.url, idle, orgs).await?;
    let mut writer = Conn::connect(&server.url).await?;
    let mut sub = Conn::connect(&server.url).await?;
    sub.subscribe(&[(0, "target".into(), None)]).await?;
    sub.await_query_set(1, WAIT).await?;
    // Warm up caches and prepared statements.
    for i in 0..5 {
        writer.add_and_wait("warmup", f64::from(i)).await?;
    }
    let before = server.stats().await?;
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes {
        let n = i as f64;
        let t0 = Instant::now();
        let id = writer.add("target", n).await?;
        wait_for_newest(&mut sub, n).await?;
        samples.push(t0.elapsed());
        // Drain the writer's own response (and read-your-writes Transition).
        writer.await_response(id).await?;
    }
    let after = server.stats().await?;
    server.stop().await;
    if after.commits - before.commits < writes as u64 {
        return Err(format!(
            "only {} of {writes} writes committed",
            after.commits - before.commits
        )
        .into());
    }
    let (p50, p99, max) = percentiles(&mut samples);
    Ok(PushResult {
        p50,
        p99,
        max,
        cpu_us_per_mutation: (after.cpu_ns - before.cpu_ns) as f64 / 1e3 / writes.max(1) as f64,
    })
}

/// One subscriber of `bench:all` over an organization of `rows` documents,
/// another connection changing one of them: the time from sending the
/// mutation to the arrival of the Transition that carries the change. The
/// frame's arrival is the sample; the subscriber parses it only afterwards
/// (to check it is the one), so client-side parsing is not counted.
async fn push_by_result_size(rows: usize, writes: usize) -> Result<PushResult, BoxError> {
    use crate::client::{add, lean_holds};
    use livebase_schema::obj;

    let mut server = Server::start().await?;
    let org = format!("rows{rows}");
    let mut writer = Conn::connect(&server.url).await?;
    writer
        .mutate(
            "bench:addMany",
            obj! { "organizationId" => org.as_str(), "count" => rows as f64 },
        )
        .await?;
    let mut sub = Conn::connect(&server.url).await?;
    let v = sub
        .modify(vec![add(
            0,
            "bench:all",
            obj! { "organizationId" => org.as_str() },
        )])
        .await?;
    sub.await_query_set(v, WAIT).await?;
    let mut set = async |n: f64| -> Result<Duration, BoxError> {
        let t0 = Instant::now();
        let id = writer
            .send_mutation(
                "bench:setFirst",
                obj! { "organizationId" => org.as_str(), "n" => n },
            )
            .await?;
        let elapsed = loop {
            let text = sub.recv_text(WAIT).await?;
            let at = t0.elapsed();
            if lean_holds(&text, n)? {
                break at;
            }
        };
        writer.await_response(id).await?;
        Ok(elapsed)
    };
    // Warm up caches and prepared statements.
    for i in 0..5 {
        set(-1.0 - f64::from(i)).await?;
    }
    let before = server.stats().await?;
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes {
        samples.push(set(1e6 + i as f64).await?);
    }
    let after = server.stats().await?;
    server.stop().await;
    let (p50, p99, max) = percentiles(&mut samples);
    Ok(PushResult {
        p50,
        p99,
        max,
        cpu_us_per_mutation: (after.cpu_ns - before.cpu_ns) as f64 / 1e3 / writes.max(1) as f64,
    })
}

/// Server CPU per mutation (µs), by transport.
struct HttpCpu {
    ws: f64,
    keep_alive: f64,
    fresh: f64,
    fresh_anonymous: f64,
}

/// The server child's CPU time per `bench:add` over an authenticated
/// WebSocket, and as HTTP calls carrying the same token (`Authorization:
/// Bearer`) on one kept-alive connection, on a fresh connection per call, and
/// on a fresh connection per call without a token. The calls are sequential,
/// so the CPU is the server's work per call, not contention; the transports
/// take turns in rounds of `calls / ROUNDS`, so that a change in the shared
/// machine's load during the run weighs on all of them alike.
async fn http_cpu(calls: usize) -> Result<HttpCpu, BoxError> {
    use crate::client::HttpCaller;
    use livebase_schema::obj;
    const ROUNDS: usize = 10;

    let mut server = Server::start().await?;
    let token = sign_up(&server.url, "http@bench.test", false).await?;
    let args = |n: usize| obj! { "organizationId" => "http", "n" => n as f64 };

    let mut ws = Conn::connect(&server.url).await?;
    ws.authenticate(0, &token, WAIT).await?;
    let mut kept = HttpCaller::new(&server.url, Some(token.clone()), true);
    let mut fresh = HttpCaller::new(&server.url, Some(token.clone()), false);
    let mut anonymous = HttpCaller::new(&server.url, None, false);
    // Warm up each transport (and the token check) first.
    for i in 0..5 {
        ws.add_and_wait("http", i as f64).await?;
        kept.mutation("bench:add", args(i)).await?;
        fresh.mutation("bench:add", args(i)).await?;
        anonymous.mutation("bench:add", args(i)).await?;
    }
    let per_round = (calls / ROUNDS).max(1);
    let mut cpu_ns = [0u64; 4];
    for _ in 0..ROUNDS {
        let before = server.stats().await?;
        for i in 0..per_round {
            ws.add_and_wait("http", i as f64).await?;
        }
        let after = server.stats().await?;
        cpu_ns[0] += after.cpu_ns - before.cpu_ns;
        for (k, http) in [&mut kept, &mut fresh, &mut anonymous]
            .into_iter()
            .enumerate()
        {
            let before = server.stats().await?;
            for i in 0..per_round {
                http.mutation("bench:add", args(i)).await?;
            }
            let after = server.stats().await?;
            cpu_ns[k + 1] += after.cpu_ns - before.cpu_ns;
        }
    }
    server.stop().await;
    let us = |ns: u64| ns as f64 / 1e3 / (per_round * ROUNDS) as f64;
    Ok(HttpCpu {
        ws: us(cpu_ns[0]),
        keep_alive: us(cpu_ns[1]),
        fresh: us(cpu_ns[2]),
        fresh_anonymous: us(cpu_ns[3]),
    })
}

/// One fan-out measurement: the last subscriber's receipt (p50, p99, in
/// ms), query runs per write, and the server's CPU per write (µs: the
/// mutation, the query runs and the sends to every subscriber).
struct Fanout {
    p50: f64,
    p99: f64,
    runs: f64,
    cpu_us: f64,
}

/// Fan-out and the machine's floor for it measured in the same seconds:
/// the rounds alternate, one write to `conns` livebase subscribers, then
/// one bare broadcast to as many connections (this machine's speed drifts
/// by more than the gap between the two, see [`SLICES`]). Both sets of
/// connections stay open throughout; the idle one only waits.
async fn fanout_beside_floor(
    conns: usize,
    repeats: usize,
    distinct: bool,
) -> Result<(Fanout, (f64, f64)), BoxError> {
    let mut fan = FanoutRig::start(conns, repeats, distinct).await?;
    progress(&format!(
        "  and a bare WebSocket broadcast to {conns} connections (the limit), round for round"
    ));
    let mut floor = BroadcastRig::start(conns, repeats).await?;
    let (mut fan_samples, mut floor_samples) = (Vec::new(), Vec::new());
    for r in 0..repeats {
        fan_samples.push(fan.round(r).await?);
        floor_samples.push(floor.round(r).await?);
    }
    floor.stop();
    let fan = fan.finish(fan_samples).await?;
    let (p50, p99, _) = percentiles(&mut floor_samples);
    Ok((fan, (p50, p99)))
}

/// `conns` connections subscribed to one query (or, `distinct`, each to a
/// query of its own over the same documents, so every write re-runs all of
/// them), and one more that writes.
struct FanoutRig {
    server: Server,
    writer: Conn,
    rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Instant)>,
    conns: usize,
    repeats: usize,
    before: crate::server::Stats,
}

impl FanoutRig {
    async fn start(conns: usize, repeats: usize, distinct: bool) -> Result<FanoutRig, BoxError> {
        let mut server = Server::start().await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
        for k in 0..conns {
            let mut c = Conn::connect(&server.url).await?;
            let tag = distinct.then_some(k as f64);
            c.subscribe(&[(0, "fan".into(), tag)]).await?;
            c.await_query_set(1, WAIT).await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                for r in 0..repeats {
                    if wait_for_newest(&mut c, r as f64).await.is_err() {
                        return;
                    }
                    let _ = tx.send((r, Instant::now()));
                }
            });
        }
        let writer = Conn::connect(&server.url).await?;
        let before = server.stats().await?;
        Ok(FanoutRig {
            server,
            writer,
            rx,
            conns,
            repeats,
            before,
        })
    }

    /// Round `r`: one write, and the time until its last subscriber has it.
    async fn round(&mut self, r: usize) -> Result<Duration, BoxError> {
        let t0 = Instant::now();
        self.writer.add_and_wait("fan", r as f64).await?;
        Ok(last_receipt(&mut self.rx, self.conns, r).await? - t0)
    }

    async fn finish(mut self, mut samples: Vec<Duration>) -> Result<Fanout, BoxError> {
        let after = self.server.stats().await?;
        self.server.stop().await;
        if after.dropped_slow > self.before.dropped_slow {
            return Err("fan-out: the server dropped subscribers as too slow".into());
        }
        let repeats = self.repeats.max(1) as f64;
        let runs = (after.evaluations - self.before.evaluations) as f64 / repeats;
        let cpu_us = (after.cpu_ns - self.before.cpu_ns) as f64 / 1e3 / repeats;
        let (p50, p99, _) = percentiles(&mut samples);
        Ok(Fanout {
            p50,
            p99,
            runs,
            cpu_us,
        })
    }
}

/// When the last of `conns` subscribers reported round `r`.
async fn last_receipt(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, Instant)>,
    conns: usize,
    r: usize,
) -> Result<Instant, BoxError> {
    let mut last = None;
    for _ in 0..conns {
        let (got, at) = tokio::time::timeout(WAIT, rx.recv())
            .await?
            .ok_or("fan-out task ended")?;
        if got != r {
            return Err(format!("fan-out: expected round {r}, a subscriber reported {got}").into());
        }
        last = Some(last.map_or(at, |l: Instant| l.max(at)));
    }
    last.ok_or_else(|| "fan-out: no subscribers".into())
}

/// The machine's floor for fan-out: a bare tokio-tungstenite server sends one
/// frame, encoded once and shaped like livebase's Transition of the same
/// query result, to `conns` connections; per round, the time until the last
/// of the same lean clients has parsed it. No database, no query, no
/// protocol state: what is left is sockets, frames and parsing on this
/// machine's cores.
struct BroadcastRig {
    go: tokio::sync::broadcast::Sender<tokio_tungstenite::tungstenite::Utf8Bytes>,
    rx: tokio::sync::mpsc::UnboundedReceiver<(usize, Instant)>,
    conns: usize,
    server: tokio::task::JoinHandle<()>,
}

impl BroadcastRig {
    async fn start(conns: usize, repeats: usize) -> Result<BroadcastRig, BoxError> {
        use tokio_tungstenite::tungstenite::Utf8Bytes;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (go, _) = tokio::sync::broadcast::channel::<Utf8Bytes>(repeats.max(1));
        let accept_go = go.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let mut frames = accept_go.subscribe();
                tokio::spawn(async move {
                    let Ok(mut ws) =
                        tokio_tungstenite::accept_async_with_config(stream, Some(small_buffers()))
                            .await
                    else {
                        return;
                    };
                    while let Ok(frame) = frames.recv().await {
                        if ws.send(Message::Text(frame)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
        for _ in 0..conns {
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
                format!("ws://{addr}"),
                Some(small_buffers()),
                true,
            )
            .await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                for r in 0..repeats {
                    loop {
                        let Some(Ok(Message::Text(text))) = ws.next().await else {
                            return;
                        };
                        if lean_newest(&text)
                            .ok()
                            .flatten()
                            .is_some_and(|n| n.contains(&(r as f64)))
                        {
                            break;
                        }
                    }
                    let _ = tx.send((r, Instant::now()));
                }
            });
        }
        Ok(BroadcastRig {
            go,
            rx,
            conns,
            server,
        })
    }

    /// Round `r`: one broadcast, and the time until its last client has it.
    async fn round(&mut self, r: usize) -> Result<Duration, BoxError> {
        let frame =
            tokio_tungstenite::tungstenite::Utf8Bytes::from(transition_like_livebase(r as f64));
        let t0 = Instant::now();
        self.go.send(frame)?;
        Ok(last_receipt(&mut self.rx, self.conns, r).await? - t0)
    }

    fn stop(self) {
        self.server.abort();
    }
}

/// The text of a Transition carrying a `bench:list` result of 20 documents,
/// the newest with `n`, as livebase would send it.
fn transition_like_livebase(n: f64) -> String {
    use livebase_schema::protocol::{QueryId, StateModification, StateVersion};
    use livebase_schema::{obj, DocumentId, Value};
    let docs = (0..20)
        .map(|i| {
            obj! {
                "_id" => DocumentId::generate("docs").as_str(),
                "_creationTime" => 1.8e12 + f64::from(i),
                "organizationId" => "fan",
                "n" => if i == 0 { n } else { n - f64::from(i) },
                "createdBy" => "bench",
            }
        })
        .collect();
    ServerMessage::Transition {
        start_version: StateVersion::INITIAL,
        end_version: StateVersion::INITIAL,
        modifications: vec![StateModification::QueryUpdated {
            query_id: QueryId(0),
            value: Value::Array(docs).into(),
            log_lines: Vec::new(),
            journal: None,
        }],
        client_clock_skew: None,
        server_ts: None,
    }
    .to_text()
}

/// Sequential client mutations per second called straight on the executor
/// (same application, same store, with a request key so each stores its
/// outcome as over the WebSocket): the single-client figure without the
/// network and the protocol.
async fn in_process_mutations(n: usize, inserts: usize) -> Result<(f64, f64), BoxError> {
    use livebase_runtime::database::Database;
    use livebase_runtime::executor::{Caller, Executor, RequestKey};
    use livebase_runtime::registry::Identity;
    use livebase_runtime::store::sqlite::SqlitePersistence;
    use livebase_runtime::system::with_system_tables;
    use std::sync::Arc;

    let dir = tempfile::tempdir()?;
    let mut app = crate::app::registry();
    app.extend_schema(with_system_tables);
    let file = dir.path().join("db.sqlite3");
    let store = SqlitePersistence::open(&file)?;
    let db = Database::open(Arc::new(store), app.schema().clone())?;
    let executor = Executor::new(db, Arc::new(app));
    let session = livebase_schema::protocol::SessionId::random();
    let add = |i: usize| {
        let args = vec![livebase_schema::obj! { "organizationId" => "org0", "n" => i as f64 }];
        let key = RequestKey {
            session_id: session.as_str().to_string(),
            request_id: i as u32,
        };
        executor.mutation(
            "bench:add",
            args,
            Identity::Anonymous,
            Caller::Client,
            Some(key),
        )
    };
    let next = std::cell::Cell::new(0);
    let wal = file.with_extension("sqlite3-wal");
    warm_until_the_wal_settles(
        || std::fs::metadata(&wal).map_or(0, |m| m.len()),
        || {
            let from = next.replace(next.get() + WARMING_BATCH);
            let add = &add;
            async move {
                for i in from..from + WARMING_BATCH {
                    add(i).await?;
                }
                Ok(())
            }
        },
    )
    .await?;
    let mut next = next.get();
    let mut limit = SqliteLimit::warmed().await?;
    let per_slice = (n / SLICES).max(1);
    let mut spent = Duration::ZERO;
    for _ in 0..SLICES {
        limit.insert((inserts / SLICES).max(1))?;
        let t0 = Instant::now();
        for i in next..next + per_slice {
            add(i).await?;
        }
        spent += t0.elapsed();
        next += per_slice;
    }
    Ok((
        (per_slice * SLICES) as f64 / spent.as_secs_f64(),
        limit.per_s(),
    ))
}

/// Committed mutations per second from `clients` concurrent connections,
/// `total` in all, and rusqlite's `inserts` per second beside them: the two
/// alternate in [`SLICES`] slices.
async fn mutation_throughput(
    clients: usize,
    depth: usize,
    total: usize,
    inserts: usize,
) -> Result<(f64, f64), BoxError> {
    let server = Server::start().await?;
    let mut conns = Vec::new();
    for _ in 0..clients {
        let mut c = Conn::connect(&server.url).await?;
        c.add_and_wait("warmup", 0.0).await?;
        conns.push(c);
    }
    let conns = std::cell::RefCell::new(conns);
    warm_until_the_wal_settles(
        || server.wal_len(),
        || async {
            let mut held = std::mem::take(&mut *conns.borrow_mut());
            let done = concurrent_writes(&mut held, (WARMING_BATCH / clients).max(1)).await;
            *conns.borrow_mut() = held;
            done.map(|_| ())
        },
    )
    .await?;
    let mut conns = conns.into_inner();
    let mut limit = SqliteLimit::warmed().await?;
    let per_slice = (total / clients / SLICES).max(1);
    let mut spent = Duration::ZERO;
    for _ in 0..SLICES {
        limit.insert((inserts / SLICES).max(1))?;
        let t0 = Instant::now();
        pipelined_writes(&mut conns, per_slice, depth).await?;
        spent += t0.elapsed();
    }
    server.stop().await;
    let rate = (per_slice * clients * SLICES) as f64 / spent.as_secs_f64();
    Ok((rate, limit.per_s()))
}

/// Resident memory added per idle connection holding one subscription.
async fn memory(conns: usize) -> Result<f64, BoxError> {
    let mut server = Server::start().await?;
    let before = server.stats().await?;
    let mut held = Vec::with_capacity(conns);
    for k in 0..conns {
        let mut c = Conn::connect(&server.url).await?;
        c.subscribe(&[(0, format!("org{}", k % 1000), Some(k as f64))])
            .await?;
        c.await_query_set(1, WAIT).await?;
        held.push(c);
        if (k + 1) % 2_000 == 0 {
            progress(&format!("  {} connections open", k + 1));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.stats().await?;
    server.stop().await;
    Ok(after.rss_kb.saturating_sub(before.rss_kb) as f64 / conns.max(1) as f64)
}

struct HostileResult {
    quiet: (f64, f64, f64),
    hostile: (f64, f64, f64),
    /// The victim's mutation round trips alone (no push awaited), to tell
    /// the writer's share of the push latency from the worker's.
    quiet_write: (f64, f64, f64),
    hostile_write: (f64, f64, f64),
    mutations_per_s: f64,
    evaluations_per_s: f64,
    churn_steps: u64,
    reconnects: u64,
}

/// The victim's mutation round trips (the response only), added to
/// `samples`.
async fn victim_writes(
    writer: &mut Conn,
    writes: usize,
    offset: f64,
    samples: &mut Vec<Duration>,
) -> Result<(), BoxError> {
    for i in 0..writes {
        let t0 = Instant::now();
        writer.add_and_wait("victim", offset + i as f64).await?;
        samples.push(t0.elapsed());
    }
    Ok(())
}

/// The victim's push latency: its writer adds to its organization, its
/// subscriber waits for the new newest document.
async fn victim_pushes(
    writer: &mut Conn,
    sub: &mut Conn,
    writes: usize,
    offset: f64,
    samples: &mut Vec<Duration>,
) -> Result<(), BoxError> {
    for i in 0..writes {
        let n = offset + i as f64;
        let t0 = Instant::now();
        let id = writer.add("victim", n).await?;
        wait_for_newest(sub, n).await?;
        samples.push(t0.elapsed());
        writer.await_response(id).await?;
    }
    Ok(())
}

/// Another organization's push p50/p99, quiet and while one tenant churns at
/// full speed, in alternating slices ([`SLICES`]): mutations hitting its own heavy live queries (each
/// reads every document of its organization), a connection adding and
/// removing heavy queries, and `Authenticate` flips between two sessions of
/// the tenant's user (each re-runs every query that connection holds). The
/// churning connection is closed by its budgets now and then; it reconnects
/// and goes on, as a hostile client would.
async fn hostile_tenant(h: &HostileSizes) -> Result<HostileResult, BoxError> {
    use std::sync::atomic::Ordering;

    let mut server = Server::start().await?;
    let url = server.url.clone();
    let victim_token = sign_up(&url, "victim@bench.test", false).await?;
    let mut victim_writer = Conn::connect(&url).await?;
    victim_writer.authenticate(0, &victim_token, WAIT).await?;
    let mut victim_sub = Conn::connect(&url).await?;
    victim_sub.authenticate(0, &victim_token, WAIT).await?;
    victim_sub.subscribe(&[(0, "victim".into(), None)]).await?;
    victim_sub.await_query_set(1, WAIT).await?;

    // The hostile client is a program of its own, as it would be on another
    // machine: its own threads and event loop, so the victim's client never
    // waits behind the attacker's tasks in one executor (they still share
    // the machine's two cores with each other and the server).
    let attacker = Attacker::start(url.clone(), h)?;
    attacker.ready.recv()??;

    for i in 0..5 {
        victim_writer
            .add_and_wait("victim", -1.0 - f64::from(i))
            .await?;
    }
    // Quiet and churning alternate in slices, so that both figures are
    // measured in the same minutes: this machine's own speed drifts by
    // more than the effect measured (the quiet push p50 moved from 0.53 to
    // 0.82 ms within an hour). The tenant pauses between its steps for the
    // quiet slices; its live queries stay subscribed.
    let (per_push, per_write) = ((h.writes / SLICES).max(1), (h.writes / 3 / SLICES).max(1));
    let (mut quiet, mut hostile) = (Vec::new(), Vec::new());
    let (mut quiet_write, mut hostile_write) = (Vec::new(), Vec::new());
    let (mut churning, mut tenant_mutations, mut evaluations) = (Duration::ZERO, 0, 0);
    let mut n = 0.0;
    progress("  quiet and churning, alternating");
    attacker.go.send(())?;
    // Let the churn get going before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..SLICES {
        attacker.counters.paused.store(false, Ordering::Relaxed);
        tokio::time::sleep(SLICE_SETTLE).await;
        let before = server.stats().await?;
        let m0 = attacker.counters.mutations.load(Ordering::Relaxed);
        let t0 = Instant::now();
        warm_up(&mut victim_writer, &mut victim_sub, 3e5 + n).await?;
        victim_pushes(
            &mut victim_writer,
            &mut victim_sub,
            per_push,
            1e5 + n,
            &mut hostile,
        )
        .await?;
        victim_writes(&mut victim_writer, per_write, 2e5 + n, &mut hostile_write).await?;
        churning += t0.elapsed();
        tenant_mutations += attacker.counters.mutations.load(Ordering::Relaxed) - m0;
        evaluations += server.stats().await?.evaluations - before.evaluations;

        attacker.counters.paused.store(true, Ordering::Relaxed);
        // The tenant's steps in flight end, and the re-runs they caused.
        tokio::time::sleep(SLICE_SETTLE).await;
        warm_up(&mut victim_writer, &mut victim_sub, 4e5 + n).await?;
        victim_pushes(&mut victim_writer, &mut victim_sub, per_push, n, &mut quiet).await?;
        victim_writes(&mut victim_writer, per_write, 5e4 + n, &mut quiet_write).await?;
        n += per_push as f64;
    }
    let elapsed = churning.as_secs_f64();
    attacker.counters.stop.store(true, Ordering::Relaxed);
    attacker.counters.paused.store(false, Ordering::Relaxed);
    server.stop().await;
    // The server is gone: the churners end with connection errors.
    let _ = attacker.thread.join();
    let counters = &attacker.counters;
    Ok(HostileResult {
        quiet: percentiles(&mut quiet),
        hostile: percentiles(&mut hostile),
        quiet_write: percentiles(&mut quiet_write),
        hostile_write: percentiles(&mut hostile_write),
        mutations_per_s: tenant_mutations as f64 / elapsed,
        evaluations_per_s: evaluations as f64 / elapsed,
        churn_steps: counters.steps.load(Ordering::Relaxed),
        reconnects: counters.reconnects.load(Ordering::Relaxed),
    })
}

/// How long the hostile phase lets the tenant start or stop churning before a
/// slice is measured.
const SLICE_SETTLE: Duration = Duration::from_millis(100);

/// Pushes the victim makes, unmeasured, at the start of each slice: the
/// first after a wait is slow whoever else runs (idle cores wake up on this
/// virtual machine), and there are as many slices as samples at p99.
const SLICE_WARM_UP: usize = 5;

async fn warm_up(writer: &mut Conn, sub: &mut Conn, offset: f64) -> Result<(), BoxError> {
    let mut ignored = Vec::new();
    victim_pushes(writer, sub, SLICE_WARM_UP, offset, &mut ignored).await
}

/// What the hostile client reports while it runs.
#[derive(Default)]
struct AttackCounters {
    stop: std::sync::atomic::AtomicBool,
    /// The tenant waits between its steps (a quiet slice).
    paused: std::sync::atomic::AtomicBool,
    mutations: std::sync::atomic::AtomicU64,
    steps: std::sync::atomic::AtomicU64,
    reconnects: std::sync::atomic::AtomicU64,
}

/// The hostile tenant's client, on a thread and runtime of its own: it sets
/// up its organization and heavy live queries, says it is ready, and churns
/// once told to go.
struct Attacker {
    ready: std::sync::mpsc::Receiver<Result<(), BoxError>>,
    go: std::sync::mpsc::Sender<()>,
    counters: std::sync::Arc<AttackCounters>,
    thread: std::thread::JoinHandle<()>,
}

impl Attacker {
    fn start(url: String, h: &HostileSizes) -> Result<Attacker, BoxError> {
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let counters = std::sync::Arc::new(AttackCounters::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-attacker")
            .enable_all()
            .build()?;
        let (h, c) = (h.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("bench-attacker".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let set_up = attack_setup(&url, &h).await;
                    let (tokens, writer, sub) = match set_up {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    if tokio::task::spawn_blocking(move || go_rx.recv())
                        .await
                        .is_ok_and(|r| r.is_ok())
                    {
                        attack(url, tokens, writer, sub, h, c).await;
                    }
                });
            })?;
        Ok(Attacker {
            ready,
            go,
            counters,
            thread,
        })
    }
}

/// The hostile tenant's organization: `h.docs` documents, read whole by each
/// of its `h.heavy` distinct live queries.
async fn attack_setup(url: &str, h: &HostileSizes) -> Result<([String; 2], Conn, Conn), BoxError> {
    use livebase_schema::obj;
    let hostile_a = sign_up(url, "hostile@bench.test", false).await?;
    let hostile_b = sign_up(url, "hostile@bench.test", true).await?;
    let mut writer = Conn::connect(url).await?;
    writer.authenticate(0, &hostile_a, WAIT).await?;
    writer
        .mutate(
            "bench:addMany",
            obj! { "organizationId" => "hostile", "count" => h.docs as f64 },
        )
        .await?;
    let mut sub = Conn::connect(url).await?;
    sub.authenticate(0, &hostile_a, WAIT).await?;
    let v = sub
        .modify((0..h.heavy).map(|i| heavy(i, f64::from(i))).collect())
        .await?;
    sub.await_query_set(v, WAIT).await?;
    Ok(([hostile_a, hostile_b], writer, sub))
}

/// One of the hostile tenant's heavy live queries.
fn heavy(id: u32, tag: f64) -> livebase_schema::protocol::QuerySetModification {
    use livebase_schema::obj;
    crate::client::add(
        id,
        "bench:count",
        obj! { "organizationId" => "hostile", "tag" => tag },
    )
}

/// Churns at full speed until told to stop: mutations hitting its own heavy
/// queries, their subscriber reading every push, and a connection adding and
/// removing heavy queries and flipping `Authenticate` between two sessions.
async fn attack(
    url: String,
    tokens: [String; 2],
    mut hostile_writer: Conn,
    mut hostile_sub: Conn,
    h: HostileSizes,
    c: std::sync::Arc<AttackCounters>,
) {
    use livebase_schema::protocol::{QueryId, QuerySetModification};
    use std::sync::atomic::Ordering;

    let mut tasks = Vec::new();
    // Writes to its own organization, as fast as they commit.
    {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 1e9;
            while !c.stop.load(Ordering::Relaxed) {
                if c.paused.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                hostile_writer.add_and_wait("hostile", n).await?;
                c.mutations.fetch_add(1, Ordering::Relaxed);
                n += 1.0;
            }
            Ok::<(), BoxError>(())
        }));
    }
    // Its heavy queries' subscriber reads what is pushed (a reader that
    // stopped would only be cut off).
    {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            while !c.stop.load(Ordering::Relaxed) {
                let _ = hostile_sub.recv_text(Duration::from_millis(100)).await;
            }
            Ok(())
        }));
    }
    // Add/Remove and Authenticate churn on a connection of its own.
    {
        let churn = h.churn;
        tasks.push(tokio::spawn(async move {
            let mut tag = 1e6;
            while !c.stop.load(Ordering::Relaxed) {
                let mut conn = Conn::connect(&url).await?;
                let mut identity = 0u32;
                if conn.authenticate(0, &tokens[0], WAIT).await.is_err() {
                    c.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                identity += 1;
                let mut ids: Vec<u32> = Vec::new();
                let mut next_id = 0u32;
                let result: Result<(), BoxError> = async {
                    while !c.stop.load(Ordering::Relaxed) {
                        if c.paused.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            continue;
                        }
                        let adds: Vec<QuerySetModification> = (0..churn)
                            .map(|k| {
                                tag += 1.0;
                                heavy(next_id + k, tag)
                            })
                            .collect();
                        ids.extend(next_id..next_id + churn);
                        next_id += churn;
                        let v = conn.modify(adds).await?;
                        conn.await_query_set(v, WAIT).await?;
                        let token = &tokens[(identity % 2) as usize];
                        conn.authenticate(identity, token, WAIT).await?;
                        identity += 1;
                        let removes = ids
                            .drain(..)
                            .map(|id| QuerySetModification::Remove {
                                query_id: QueryId(id),
                            })
                            .collect();
                        let v = conn.modify(removes).await?;
                        conn.await_query_set(v, WAIT).await?;
                        c.steps.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
                .await;
                if result.is_err() {
                    // Closed by its budget: a hostile client reconnects.
                    c.reconnects.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
