//! `livebase-fuzz <target|all|list> [--seconds N | --runs N] [--seed S]`:
//! fuzzes one target (or each in turn) from its corpus and prints how many
//! inputs it ran and what it found. `livebase-fuzz replay <target> FILE…`
//! runs saved inputs once each, panics shown as they happen. Build it with the `fuzz` profile
//! (release speed, overflow checks on):
//!
//! ```text
//! cargo run --profile fuzz -p livebase-fuzz -- frame --seconds 300
//! ```
//!
//! Crashing inputs are saved under `fuzz/artifacts/<target>/`; the exit code
//! is 1 when any target crashed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livebase_fuzz::driver::{fuzz, Budget};
use livebase_fuzz::{target, Target, TARGETS};

const USAGE: &str = "usage: livebase-fuzz <target|all|list> [--seconds N | --runs N] [--seed S]\n       livebase-fuzz replay <target> FILE...";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if name == "replay" {
        return replay(&args[1..]);
    }
    let mut budget = Budget::Time(Duration::from_secs(60));
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let Some(n) = rest.next().and_then(|v| v.parse::<u64>().ok()) else {
            eprintln!("{flag} needs a number\n{USAGE}");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--seconds" => budget = Budget::Time(Duration::from_secs(n)),
            "--runs" => budget = Budget::Executions(n),
            "--seed" => seed = n,
            _ => {
                eprintln!("unknown option {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let targets: Vec<&Target> = match name.as_str() {
        "list" => {
            for t in TARGETS {
                println!("{:<11} {}", t.name, t.checks);
            }
            return ExitCode::SUCCESS;
        }
        "all" => TARGETS.iter().collect(),
        other => match target(other) {
            Some(t) => vec![t],
            None => {
                eprintln!("no target {other}; `list` names them");
                return ExitCode::from(2);
            }
        },
    };
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    let mut crashed = false;
    for t in targets {
        eprintln!("{}: seed {seed}, {budget:?}", t.name);
        let stats = fuzz(t, budget, seed, &artifacts);
        let secs = stats.elapsed.as_secs_f64();
        println!(
            "{}: {} executions in {:.0} s ({:.0}/s), {} distinct outcomes, {} inputs kept, {} crashes",
            t.name,
            stats.executions,
            secs,
            stats.executions as f64 / secs.max(1e-9),
            stats.outcomes,
            stats.pool,
            stats.crashes.len()
        );
        for (what, path) in &stats.crashes {
            println!("  crash: {what} -> {}", path.display());
        }
        crashed |= !stats.crashes.is_empty();
    }
    if crashed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs each file through the target once and prints its outcome.
fn replay(args: &[String]) -> ExitCode {
    let Some(t) = args.first().and_then(|name| target(name)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    for file in &args[1..] {
        match std::fs::read(file) {
            Ok(bytes) => println!("{file}: {}", (t.run)(&bytes)),
            Err(e) => {
                eprintln!("{file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
