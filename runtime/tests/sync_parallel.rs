//! Live queries evaluated by several threads at once (`subscriptions`'s
//! evaluator pool), each result read on the snapshot its job opened: one
//! tenant's query still running does not hold back another tenant's push,
//! and results read on different snapshots never make a torn Transition.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livebase_runtime::error::Error;
use livebase_runtime::registry::Registry;
use livebase_runtime::subscriptions::evaluator_count;
use livebase_schema::protocol::{AuthenticationToken, ClientMessage, SessionId, StateModification};
use livebase_schema::{obj, v, Value};
use livebase_testkit::{add, Client, TestServer, Transition, PATIENCE};
use support::note;

/// Closed: `notes:gated` over organization `T` waits (up to [`PATIENCE`])
/// until it opens. Open, it still takes a few milliseconds, over any
/// organization: a heavy query, which the worker hands to its evaluators
/// rather than run itself.
static GATE_CLOSED: AtomicBool = AtomicBool::new(false);
/// How many runs of `notes:gated` wait at the gate.
static AT_GATE: AtomicUsize = AtomicUsize::new(0);

fn gated_app() -> Registry {
    let mut app = support::registry();
    app.query(
        "notes:gated",
        [("organizationId", v::string()), ("tag", v::float64())],
        |ctx, args| {
            let count = support::notes_of(ctx.db.reborrow(), &args)?.len();
            std::thread::sleep(Duration::from_millis(3));
            if args.string("organizationId")? == "T" && GATE_CLOSED.load(Ordering::SeqCst) {
                AT_GATE.fetch_add(1, Ordering::SeqCst);
                let since = Instant::now();
                while GATE_CLOSED.load(Ordering::SeqCst) && since.elapsed() < PATIENCE {
                    std::thread::sleep(Duration::from_micros(300));
                }
                AT_GATE.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(count as f64)
        },
    );
    app
}

async fn signed_in(server: &TestServer, user: &str) -> Client {
    let mut c = Client::connect(&server.ws_url(), SessionId::random()).await;
    c.send(&ClientMessage::Authenticate {
        base_version: 0,
        token: AuthenticationToken::User(format!("user:{user}")),
    })
    .await;
    let t = c.transition().await;
    assert_eq!(t.end.identity, 1);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_does_not_wait_for_another_tenants_query_still_running() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let server =
        TestServer::start_with_auth(dir, gated_app(), |_| {}, Arc::new(support::NamedUsers)).await;

    // More of the heavy tenant's queries than there are evaluators: were
    // they all run at once, every evaluator would wait at the gate.
    let gated = evaluator_count() as u32 + 1;
    let mut heavy = signed_in(&server, "heavy").await;
    let adds = (0..gated)
        .map(|tag| {
            let fields = obj! { "organizationId" => "T", "tag" => f64::from(tag) };
            add(tag, "notes:gated", fields)
        })
        .collect();
    let t = heavy.modify(adds).await;
    for tag in 0..gated {
        assert_eq!(t.updated(tag), Some(&Value::Float64(0.0)));
    }
    let mut victim = signed_in(&server, "victim").await;
    // The victim's query is heavy too: it needs a free evaluator.
    let fields = obj! { "organizationId" => "V", "tag" => 0.0 };
    let t = victim.subscribe(&[(0, "notes:gated", fields)]).await;
    assert_eq!(t.updated(0), Some(&Value::Float64(0.0)));

    // The heavy tenant's write re-runs its queries, which stop at the gate.
    GATE_CLOSED.store(true, Ordering::SeqCst);
    let storm = heavy
        .mutation("notes:add", note("T", "storm", 0.0))
        .await
        .expect("notes:add succeeds");
    let since = Instant::now();
    while AT_GATE.load(Ordering::SeqCst) == 0 {
        assert!(
            since.elapsed() < PATIENCE,
            "notes:gated never reached the gate"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // While it waits there, the victim's write reaches the victim's query.
    let mine = victim
        .mutation("notes:add", note("V", "mine", 0.0))
        .await
        .expect("notes:add succeeds");
    // Well before the gate gives up waiting by itself.
    let seen = tokio::time::timeout(PATIENCE / 3, victim.transitions_until(mine.ts))
        .await
        .expect("the victim's push arrives while the heavy queries wait");
    assert_eq!(
        seen.iter().rev().find_map(|t| t.updated(0)),
        Some(&Value::Float64(1.0))
    );
    assert!(
        AT_GATE.load(Ordering::SeqCst) > 0,
        "the victim was pushed only after the heavy queries had finished"
    );

    GATE_CLOSED.store(false, Ordering::SeqCst);
    let seen = heavy.transitions_until(storm.ts).await;
    let last = seen.last().expect("a Transition");
    for tag in 0..gated {
        assert_eq!(last.updated(tag), Some(&Value::Float64(1.0)), "query {tag}");
    }
    server.shutdown().await;
}

/// What each account starts with; the two organizations' sums add up to
/// twice this, whatever is moved between them.
const START: f64 = 1_000.0;
/// Distinct copies of each organization's sum on every connection: enough
/// that one write's re-runs are split over several evaluators.
const TAGS: u32 = 8;
const CONNECTIONS: usize = 3;
const MOVES_PER_WRITER: usize = 100;

fn ledger_app() -> Registry {
    let mut app = support::registry();
    app.query(
        "notes:sum",
        [("organizationId", v::string()), ("tag", v::float64())],
        |ctx, args| {
            let notes = support::notes_of(ctx.db.reborrow(), &args)?;
            // Heavy enough that the worker hands re-runs to its evaluators
            // and cuts their jobs short: one write's re-runs are read on
            // several snapshots.
            std::thread::sleep(Duration::from_micros(300));
            Ok(notes
                .iter()
                .filter_map(|n| n.get("n").and_then(Value::as_f64))
                .sum::<f64>())
        },
    );
    // Moves `amount` from one note to another in one transaction.
    app.mutation(
        "notes:move",
        [
            ("from", v::id("notes")),
            ("to", v::id("notes")),
            ("amount", v::float64()),
        ],
        |ctx, args| {
            let amount = args.f64("amount")?;
            for (field, sign) in [("from", -1.0), ("to", 1.0)] {
                let id = args.id(field, "notes")?;
                let doc = ctx
                    .db
                    .get(&id)?
                    .ok_or_else(|| Error::not_found(format!("args.{field}: no such note")))?;
                let n = doc.get("n").and_then(Value::as_f64).unwrap_or(0.0);
                ctx.db.patch(&id, obj! { "n" => n + sign * amount })?;
            }
            Ok(Value::Null)
        },
    );
    app
}

/// Query ids on each connection: `2 * tag` for A's sum, `2 * tag + 1` for B's.
fn ledger_queries() -> Vec<livebase_schema::protocol::QuerySetModification> {
    (0..TAGS)
        .flat_map(|tag| {
            let tag_f = f64::from(tag);
            [
                add(
                    2 * tag,
                    "notes:sum",
                    obj! { "organizationId" => "A", "tag" => tag_f },
                ),
                add(
                    2 * tag + 1,
                    "notes:sum",
                    obj! { "organizationId" => "B", "tag" => tag_f },
                ),
            ]
        })
        .collect()
}

/// Applies a Transition to a connection's view and checks the view: every
/// copy of A's sum equal, every copy of B's equal, and A + B the total.
fn apply_and_check(view: &mut HashMap<u32, f64>, t: &Transition) {
    for m in &t.modifications {
        match m {
            StateModification::QueryUpdated {
                query_id, value, ..
            } => {
                let n = value.value().as_f64().expect("a sum is a number");
                view.insert(query_id.0, n);
            }
            other => panic!("unexpected modification {other:?}"),
        }
    }
    if view.len() < 2 * TAGS as usize {
        return; // not every result has arrived yet
    }
    let a: Vec<f64> = (0..TAGS).map(|tag| view[&(2 * tag)]).collect();
    let b: Vec<f64> = (0..TAGS).map(|tag| view[&(2 * tag + 1)]).collect();
    assert!(
        a.iter().all(|x| *x == a[0]) && b.iter().all(|x| *x == b[0]) && a[0] + b[0] == 2.0 * START,
        "a torn Transition at {:?}: A's sums {a:?}, B's sums {b:?}",
        t.end.ts
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_read_on_different_snapshots_never_make_a_torn_transition() {
    let server = TestServer::start(ledger_app()).await;
    let a = support::mutate(&server, "notes:add", note("A", "account", START)).await;
    let b = support::mutate(&server, "notes:add", note("B", "account", START)).await;

    let mut readers = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut c = server.client().await;
        let mut view = HashMap::new();
        let t = c.modify(ledger_queries()).await;
        apply_and_check(&mut view, &t);
        readers.push((c, view));
    }

    // Two writers move random amounts both ways, as fast as commits allow.
    let mut writers = Vec::new();
    for w in 0..2u32 {
        let mut c = server.client().await;
        let (a, b) = (a.clone(), b.clone());
        writers.push(tokio::spawn(async move {
            let mut last = None;
            for i in 0..MOVES_PER_WRITER {
                let (from, to) = if (i as u32 + w).is_multiple_of(2) {
                    (&a, &b)
                } else {
                    (&b, &a)
                };
                let amount = f64::from((i as u32 * 7 + w * 13) % 50 + 1);
                let done = c
                    .mutation(
                        "notes:move",
                        obj! { "from" => from.clone(), "to" => to.clone(), "amount" => amount },
                    )
                    .await
                    .expect("notes:move succeeds");
                last = Some(done.ts);
                // Paced, so that results read on different snapshots are
                // often valid together (and so sent) while the writes go on.
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (c, last.expect("at least one move"))
        }));
    }

    // Every connection checks every Transition while the writers run, and
    // goes on until it has caught up with the last write (known once the
    // writers are done).
    let (last_write, wrote) = tokio::sync::watch::channel(None);
    let readers: Vec<_> = readers
        .into_iter()
        .map(|(mut c, mut view)| {
            let mut wrote = wrote.clone();
            tokio::spawn(async move {
                let mut transitions = 0;
                loop {
                    if let Some(end) = *wrote.borrow_and_update() {
                        if c.version.ts >= end {
                            return (view, transitions);
                        }
                    }
                    tokio::select! {
                        t = c.transition() => {
                            apply_and_check(&mut view, &t);
                            transitions += 1;
                        }
                        _ = wrote.changed() => {}
                    }
                }
            })
        })
        .collect();
    let mut end = None;
    for w in writers {
        let (_c, ts) = w.await.expect("a writer");
        end = end.max(Some(ts));
    }
    let end = end.expect("writers wrote");
    last_write.send(Some(end)).expect("readers listen");
    let truth_a = support::query(
        &server,
        "notes:sum",
        obj! { "organizationId" => "A", "tag" => 0.0 },
    )
    .await
    .expect("notes:sum answers");
    for r in readers {
        // Each caught up with the last write (or `transition` failed it
        // after PATIENCE without one).
        let (view, transitions) = r.await.expect("a reader");
        assert!(transitions > 1, "the reader saw the writes");
        assert_eq!(Some(&Value::Float64(view[&0])), Some(&truth_a));
    }
    server.shutdown().await;
}

/// Each thread of this process named `prefix…` (thread names are cut to 15
/// bytes) with its niceness, from `/proc/self/task`.
#[cfg(target_os = "linux")]
fn niceness_of_threads(prefix: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        // After the name: state (field 3) … nice (field 19).
        let nice = stat[close + 1..].split_whitespace().nth(16).unwrap();
        found.push(nice.parse().unwrap());
    }
    found
}

/// The evaluators yield the cores to the writer and the connections' threads
/// when both want them, so one tenant's re-runs slow others' mutations as
/// little as possible.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluators_run_at_a_lower_priority_than_the_writer() {
    use livebase_runtime::subscriptions::EVALUATOR_NICENESS;
    let server = TestServer::start(support::registry()).await;
    // The worker starts its evaluators on threads of its own, and each
    // lowers its own priority first thing.
    let want = i64::from(EVALUATOR_NICENESS);
    livebase_testkit::eventually("the evaluators' niceness", PATIENCE, || async {
        let evaluators = niceness_of_threads("livebase-evalu");
        if evaluators.len() >= evaluator_count() && evaluators.iter().all(|&n| n == want) {
            Ok(())
        } else {
            Err(format!("{evaluators:?}"))
        }
    })
    .await;
    let writers = niceness_of_threads("livebase-write");
    assert!(
        !writers.is_empty() && writers.iter().all(|&n| n == 0),
        "{writers:?}"
    );
    drop(server);
}
