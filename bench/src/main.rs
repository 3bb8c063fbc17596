//! `livebase-bench`: measures livebase's core on loopback against the limits of
//! the machine it runs on, measured in the same run.
//!
//! Run: `cargo run --release -p livebase-bench` (about five minutes on 2
//! cores); `-- --quick` is the seconds-long smoke version CI runs. It prints a
//! table and writes `bench-results.json`. Given a PostgreSQL database
//! (`--postgres URL`, `LIVEBASE_BENCH_POSTGRES_URL`; with `.ci/postgres.sh`
//! sourced, the tests' throwaway server), the `postgres` phase measures
//! livebase on it, one node and two.
//!
//! The server runs as a child process (this binary with `server`), so its CPU
//! time and resident memory are its own; the child answers `stats` on stdin
//! with its counters.

mod app;
mod client;
mod devloop;
mod files;
mod measure;
mod phases;
mod postgres;
mod server;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "livebase-bench",
    about = "Measure livebase against the machine's limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A seconds-long smoke run with small sizes (CI).
    #[arg(long)]
    quick: bool,
    /// Run only one phase (push, fanout, throughput, memory, scaling, hostile,
    /// pushsize, http, distinct, files, devloop — the last builds a tiny
    /// application with cargo, so the smoke run leaves it out — postgres),
    /// e.g.
    /// while profiling the server child; the limits are always measured.
    #[arg(long)]
    only: Option<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// The PostgreSQL database of the `postgres` phase (each measurement
    /// makes a schema of its own there and drops it); default
    /// `LIVEBASE_BENCH_POSTGRES_URL`, else `LIVEBASE_TEST_POSTGRES_URL`.
    /// Without one the phase is skipped.
    #[arg(long)]
    postgres: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: serve the benchmark application (the parent starts this).
    Server {
        #[arg(long)]
        data: PathBuf,
        /// Store in this PostgreSQL database, as one of several nodes.
        #[arg(long, requires = "schema")]
        postgres: Option<String>,
        /// The schema of the PostgreSQL database to store in.
        #[arg(long, requires = "postgres")]
        schema: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // 10,000 connections need more than the usual 1,024 open files, on both
    // ends; the child inherits the raised limit.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Server {
            data,
            postgres,
            schema,
        }) => runtime.block_on(server::child(data, postgres.zip(schema))),
        None => {
            let postgres = postgres::database_url(cli.postgres);
            runtime.block_on(phases::run_all(
                cli.quick,
                cli.only.as_deref(),
                postgres.as_deref(),
                &cli.out,
            ))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
