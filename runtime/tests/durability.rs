//! Acknowledged is durable (`docs/reference/invariants.md`, invariant 8): a child process commits in
//! a loop and reports each commit after `mutate` returned; the parent kills it
//! with SIGKILL mid-stream, reopens the database and finds every reported write,
//! whole. The child is this same test binary, re-executed to run only
//! [`child_commits_until_killed`] with [`CHILD_DIR`] set.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{open_in, test_db};
use livebase_runtime::database::Database;
use livebase_schema::{obj, DocumentId, Timestamp, Value};
use livebase_testkit::process::run_test_alone;

/// Set in the child: the folder holding the database.
const CHILD_DIR: &str = "LIVEBASE_DURABILITY_CHILD_DIR";
/// Set in the child: which run this is (each run's documents carry it).
const CHILD_RUN: &str = "LIVEBASE_DURABILITY_CHILD_RUN";
/// How many child runs the parent starts and kills, one after another, on the
/// same database.
const RUNS: i64 = 3;
/// How many acknowledged commits the parent waits for before each kill.
const KILL_AFTER: usize = 50;

/// The document a child writes for commit `i` of run `run`: large enough to
/// span several pages, and recomputable by the parent.
fn expected_fields(run: i64, i: i64) -> Value {
    obj! {
        "organizationId" => format!("run{run}"),
        "status" => format!("n{i}"),
        "name" => format!("{run}/{i}:").repeat(300),
        "priority" => i as f64,
    }
}

/// Not a test of its own: in a normal run it returns at once. In the child it
/// commits forever (until killed), each commit inserting one `items` document
/// and bumping a tally in `things`, and prints `committed <i> <id> <ts>` after
/// each `mutate` returned.
#[tokio::test]
async fn child_commits_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let run: i64 = std::env::var(CHILD_RUN).unwrap().parse().unwrap();
    let db = open_in(dir.as_ref());
    for i in 0.. {
        let committed = db
            .mutate(move |tx| {
                let id = tx.insert("items", expected_fields(run, i))?;
                // The tally: one `things` document counting every `items` insert,
                // updated in the same commit (so the two never disagree).
                match tx.query("things").first()? {
                    Some(tally) => {
                        let n = tally
                            .get("note")
                            .and_then(Value::as_str)
                            .unwrap()
                            .parse::<u64>()
                            .unwrap();
                        let tally_id = common::id_of(&tally);
                        tx.patch(&tally_id, obj! { "note" => (n + 1).to_string() })?;
                    }
                    None => {
                        tx.insert(
                            "things",
                            obj! { "organizationId" => "tally", "note" => "1" },
                        )?;
                    }
                }
                Ok(id)
            })
            .await
            .unwrap();
        // println! flushes at the newline: once this returns, the line is in the pipe.
        println!("committed {i} {} {}", committed.value, committed.ts.get());
    }
}

struct Acknowledged {
    run: i64,
    i: i64,
    id: DocumentId,
    ts: Timestamp,
}

/// Starts a child run on `dir`, waits for `KILL_AFTER` acknowledged commits,
/// SIGKILLs it, and returns every commit it acknowledged (including lines it
/// printed after the one the parent stopped at, still in the pipe).
fn run_child_and_kill(dir: &std::path::Path, run: i64) -> Vec<Acknowledged> {
    let run_text = run.to_string();
    let mut child = run_test_alone(
        "child_commits_until_killed",
        &[(CHILD_DIR, dir.as_os_str()), (CHILD_RUN, run_text.as_ref())],
    );
    let lines_rx = child.stdout_lines();

    let parse = |line: &str| -> Option<Acknowledged> {
        // libtest's `test child_commits_until_killed ... ` has no newline, so the
        // first report shares its line.
        let at = line.find("committed ")?;
        let mut parts = line[at + "committed ".len()..].split(' ');
        let i = parts.next()?.parse().ok()?;
        let id = DocumentId::parse(parts.next()?)?;
        let ts = Timestamp::new(parts.next()?.parse().ok()?);
        Some(Acknowledged { run, i, id, ts })
    };
    let mut acked = Vec::new();
    while acked.len() < KILL_AFTER {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!(
                    "child run {run} stopped reporting after {} commits: {e}",
                    acked.len()
                )
            });
        acked.extend(parse(&line));
    }
    // SIGKILL: no destructor, no flush, no orderly close of SQLite.
    child.0.kill().expect("kill the child");
    let status = child.0.wait().unwrap();
    assert!(
        !status.success(),
        "the child was killed, it did not finish: {status}"
    );
    // Lines the child printed before it died are still in the pipe: read
    // until it ends.
    acked.extend(lines_rx.iter().filter_map(|l| parse(&l)));
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_commit_survives_sigkill() {
    let t = test_db();
    // Start from a database that already has a commit, then close it.
    let first =
        t.db.mutate(|tx| {
            tx.insert(
                "items",
                obj! { "organizationId" => "o", "status" => "s", "name" => "before" },
            )
        })
        .await
        .unwrap();
    drop(t.db);
    let dir = t.dir.path().to_path_buf();

    let mut acked: Vec<Acknowledged> = Vec::new();
    for run in 0..RUNS {
        let d = dir.clone();
        let got = tokio::task::spawn_blocking(move || run_child_and_kill(&d, run))
            .await
            .unwrap();
        assert!(got.len() >= KILL_AFTER);
        for (n, a) in got.iter().enumerate() {
            assert_eq!(a.i, n as i64, "run {run} reports its commits in order");
        }
        acked.extend(got);
    }
    for pair in acked.windows(2) {
        assert!(
            pair[1].ts > pair[0].ts,
            "commit timestamps increase across restarts"
        );
    }

    // Reopen after the last kill: every acknowledged write is there, whole.
    let db: Database = open_in(&dir);
    let ids: Vec<DocumentId> = acked.iter().map(|a| a.id.clone()).collect();
    let stored = db
        .query(move |tx| {
            ids.iter()
                .map(|id| tx.get(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap()
        .value;
    for (a, doc) in acked.iter().zip(&stored) {
        let doc = doc.as_ref().unwrap_or_else(|| {
            panic!(
                "run {} commit {} ({}) was acknowledged but is lost",
                a.run, a.i, a.id
            )
        });
        let mut user_fields = doc.as_object().unwrap().clone();
        user_fields.remove("_id");
        user_fields.remove("_creationTime");
        assert_eq!(
            Value::Object(user_fields.into()),
            expected_fields(a.run, a.i),
            "{}",
            a.id
        );
    }
    assert!(db
        .query({
            let id = first.value.clone();
            move |tx| tx.get(&id)
        })
        .await
        .unwrap()
        .value
        .is_some());

    // Nothing else, except at most the one commit per run that was on its way to
    // disk when the kill came; and each commit was atomic: the tally matches.
    let (per_run, tally) = db
        .query(|tx| {
            let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
            for doc in tx.query("items").collect()? {
                let org = doc
                    .get("organizationId")
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_string();
                *per_run.entry(org).or_default() += 1;
            }
            let tally = tx.query("things").unique()?;
            Ok((per_run, tally))
        })
        .await
        .unwrap()
        .value;
    let mut total = 0;
    for run in 0..RUNS {
        let acknowledged = acked.iter().filter(|a| a.run == run).count();
        let stored = per_run.get(&format!("run{run}")).copied().unwrap_or(0);
        assert!(
            stored == acknowledged || stored == acknowledged + 1,
            "run {run}: {acknowledged} acknowledged, {stored} stored"
        );
        total += stored;
    }
    let tally = tally.expect("the tally exists");
    assert_eq!(
        tally.get("note"),
        Some(&Value::from(total.to_string())),
        "every commit is all or nothing"
    );

    // The reopened database keeps committing, after every earlier timestamp.
    let next = db
        .mutate(|tx| {
            tx.insert(
                "items",
                obj! { "organizationId" => "o", "status" => "s", "name" => "after" },
            )
        })
        .await
        .unwrap();
    assert!(next.ts > acked.last().unwrap().ts);
}
