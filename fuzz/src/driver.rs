//! The fuzzing loop: start from a target's corpus, mutate a pooled input, run
//! it with panics caught, keep inputs with an outcome not seen before, and
//! save every input that panicked (one file per distinct panic) so that it
//! can be replayed and, once fixed, added to the corpus.

use std::collections::{HashMap, HashSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::mutate::{mutate, Rng};
use crate::{load_corpus, Target};

/// Most inputs kept in memory; past it a new input replaces a random one.
const MAX_POOL: usize = 4096;
/// How often progress is printed.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// How one run went.
#[derive(Debug, Default)]
pub struct Stats {
    pub executions: u64,
    pub elapsed: Duration,
    /// Distinct outcome labels seen.
    pub outcomes: usize,
    /// Inputs in the pool at the end (corpus plus kept mutants).
    pub pool: usize,
    /// Distinct panics (by message and place), with the file each input went to.
    pub crashes: Vec<(String, PathBuf)>,
}

/// When to stop.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    Time(Duration),
    Executions(u64),
}

/// Fuzzes `target` until the budget is spent. Crashing inputs go to
/// `artifacts/<target>/crash-<hash>`.
pub fn fuzz(target: &Target, budget: Budget, seed: u64, artifacts: &Path) -> Stats {
    let mut pool: Vec<Vec<u8>> = load_corpus(target.name)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let last_panic: Arc<Mutex<Option<String>>> = Arc::default();
    let previous_hook = panic::take_hook();
    {
        let last_panic = last_panic.clone();
        panic::set_hook(Box::new(move |info| {
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            *last_panic.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{place}: {message}"));
        }));
    }

    let mut rng = Rng::new(seed);
    let mut seen: HashSet<String> = HashSet::new();
    let mut crashes: HashMap<String, (String, PathBuf)> = HashMap::new();
    let mut stats = Stats::default();
    let start = Instant::now();
    let mut last_report = start;

    for input in pool.clone() {
        if let Some(label) = run_one(
            target,
            &last_panic,
            &mut crashes,
            artifacts,
            &input,
            &mut stats,
        ) {
            seen.insert(label);
        }
    }
    loop {
        let done = match budget {
            Budget::Time(d) => start.elapsed() >= d,
            Budget::Executions(n) => stats.executions >= n,
        };
        if done {
            break;
        }
        let mut input = rng.pick(&pool).clone();
        mutate(&mut rng, &mut input, &pool, target.dictionary);
        if let Some(label) = run_one(
            target,
            &last_panic,
            &mut crashes,
            artifacts,
            &input,
            &mut stats,
        ) {
            if seen.insert(label) {
                if pool.len() < MAX_POOL {
                    pool.push(input);
                } else {
                    let i = rng.below(pool.len());
                    pool[i] = input;
                }
            }
        }
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            eprintln!(
                "{}: {} executions in {:.0}s, {} outcomes, {} inputs, {} crashes",
                target.name,
                stats.executions,
                start.elapsed().as_secs_f64(),
                seen.len(),
                pool.len(),
                crashes.len()
            );
        }
    }
    panic::set_hook(previous_hook);
    stats.elapsed = start.elapsed();
    stats.outcomes = seen.len();
    stats.pool = pool.len();
    stats.crashes = crashes.into_values().collect();
    stats.crashes.sort();
    stats
}

/// Runs one input with panics caught: its label, or `None` after a panic
/// (saved to a file the first time that panic is seen).
fn run_one(
    target: &Target,
    last_panic: &Mutex<Option<String>>,
    crashes: &mut HashMap<String, (String, PathBuf)>,
    artifacts: &Path,
    input: &[u8],
    stats: &mut Stats,
) -> Option<String> {
    stats.executions += 1;
    match panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        Ok(label) => Some(label),
        Err(_) => {
            let what = last_panic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default();
            // One file per distinct panic: its place, plus the message's
            // shape (the values in it differ from input to input).
            let key = match what.split_once(": ") {
                Some((place, message)) => format!("{place} {}", crate::normalize(message)),
                None => what.clone(),
            };
            if let std::collections::hash_map::Entry::Vacant(e) = crashes.entry(key) {
                let path = save_crash(artifacts, target.name, input);
                eprintln!(
                    "{}: PANIC {what}\n  input saved to {}",
                    target.name,
                    path.display()
                );
                e.insert((what, path));
            }
            None
        }
    }
}

fn save_crash(artifacts: &Path, target: &str, input: &[u8]) -> PathBuf {
    let dir = artifacts.join(target);
    let path = dir.join(format!("crash-{:016x}", fnv1a(input)));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!("cannot save {}: {e}", path.display());
    }
    path
}

/// FNV-1a, to name a saved input by its content.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
