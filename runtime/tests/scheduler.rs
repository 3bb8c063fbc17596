//! Durable scheduling (`docs/reference/invariants.md`, invariant 7) on a real server over a real
//! SQLite file: a job runs after its delay and never before; a commit that
//! schedules an earlier job wakes the worker; a canceled job never runs; a
//! failed mutation schedules nothing; a failing scheduled mutation leaves no
//! write behind and its job says why; concurrency stays within its bound; the
//! job table is readable — and subscribable — like any table. Across SIGKILL
//! (a child process: this test binary re-executed to run only
//! [`child_schedules_then_waits_to_be_killed`]) a scheduled mutation runs
//! exactly once after the restart, and an action caught in progress is marked
//! failed, not run again. Crons fire on their cadence, and a run missed while
//! the server was down happens once. A retryable action is run again after a
//! transient failure (each attempt recorded on its job, with the same job id)
//! and after a kill, fails at once on a permanent error, and gives up when its
//! policy allows no more attempts.
//!
//! Time is a test clock wherever a test waits for a job to come due: the
//! server's commits and its scheduler read it, and the test advances it
//! instead of sleeping. Delays are a few hundred milliseconds; every wait is
//! bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livebase_runtime::clock::TestClock;
use livebase_runtime::executor::Caller;
use livebase_runtime::registry::{ActionCtx, Identity, Registry};
use livebase_runtime::scheduler::{transient, RetryPolicy, SchedulerOptions};
use livebase_runtime::server::{serve, ServerOptions};
use livebase_runtime::system::{CRONS, SCHEDULED_FUNCTIONS};
use livebase_runtime::Error;
use livebase_schema::protocol::SessionId;
use livebase_schema::{define_table, obj, v, DocumentId, Schema, Value};
use livebase_testkit::process::{run_test_alone, KillOnDrop};
use livebase_testkit::{eventually, Client, TestServer, PATIENCE, SILENCE};
use tempfile::TempDir;

/// Set in the child: its data folder.
const CHILD_DIR: &str = "LIVEBASE_SCHEDULER_CHILD_DIR";
/// Set in the child: what it schedules before waiting to be killed
/// (`mutation` or `action`).
const CHILD_JOB: &str = "LIVEBASE_SCHEDULER_CHILD_JOB";
/// The crash test's mutation is due this long after it is scheduled.
const CRASH_DELAY_MS: f64 = 800.0;

/// In-flight and peak counts of `events:slow` runs.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// The application under test: one table of `events`, and
///
/// | path | kind | what |
/// | --- | --- | --- |
/// | `jobs:runAfter {path, delayMs, args}` | mutation | `ctx.scheduler().run_after`; returns the job id |
/// | `jobs:runAt {path, at, args}` | mutation | `ctx.scheduler().run_at` |
/// | `jobs:cancel {id}` | mutation | `ctx.scheduler().cancel`; returns whether it was pending |
/// | `jobs:scheduleThenFail {path}` | mutation | schedules `path`, then fails |
/// | `jobs:get {id}` | query | the `_scheduled_functions` document |
/// | `events:record {note}` | internal mutation | inserts an event at its commit time |
/// | `events:fail {note}` | internal mutation | inserts an event, then fails |
/// | `events:act {note}` | internal action | runs `events:record` |
/// | `events:slow {}` | internal action | sleeps 150 ms, counted in [`Concurrency`] |
/// | `events:hang {note}` | internal action | records `note`, prints `action started`, sleeps a minute |
/// | `tries:record {note, job, attempt}` | internal mutation | inserts a try |
/// | `retry:flaky {note, failures}` | retryable action ([`FAST_RETRY`]) | records its try; fails transiently the first `failures` attempts |
/// | `retry:refuse {note}` | retryable action | records its try; fails permanently |
/// | `retry:hangOnce {note}` | retryable action, one attempt | records its try; the first attempt prints `action started` and sleeps a minute |
fn registry(concurrency: Arc<Concurrency>) -> Registry {
    let schema = Schema::new()
        .table(
            "events",
            define_table([("note", v::string()), ("at", v::float64())]),
        )
        .table(
            "tries",
            define_table([
                ("note", v::string()),
                ("job", v::string()),
                ("attempt", v::float64()),
            ]),
        );
    let mut app = Registry::new(schema);
    app.mutation(
        "jobs:runAfter",
        [
            ("path", v::string()),
            ("args", v::any()),
            ("delayMs", v::float64()),
        ],
        |ctx, args| {
            let delay = Duration::from_secs_f64(args.f64("delayMs")? / 1e3);
            let path = args.string("path")?;
            let job_args = args.value("args").cloned().unwrap_or(obj! {});
            ctx.scheduler().run_after(delay, &path, job_args)
        },
    );
    app.mutation(
        "jobs:runAt",
        [
            ("path", v::string()),
            ("args", v::any()),
            ("at", v::float64()),
        ],
        |ctx, args| {
            let path = args.string("path")?;
            let job_args = args.value("args").cloned().unwrap_or(obj! {});
            ctx.scheduler().run_at(args.f64("at")?, &path, job_args)
        },
    );
    app.mutation("jobs:cancel", [("id", v::string())], |ctx, args| {
        let id = args.id("id", SCHEDULED_FUNCTIONS)?;
        ctx.scheduler().cancel(&id)
    });
    app.mutation(
        "jobs:scheduleThenFail",
        [("path", v::string())],
        |ctx, args| {
            ctx.scheduler().run_after(
                Duration::ZERO,
                &args.string("path")?,
                obj! { "note" => "never" },
            )?;
            Err::<Value, _>(Error::conflict("changed my mind"))
        },
    );
    app.query("jobs:get", [("id", v::string())], |ctx, args| {
        let id = args.id("id", SCHEDULED_FUNCTIONS)?;
        Ok(ctx.db.get(&id)?.unwrap_or(Value::Null))
    });
    app.internal_mutation("events:record", [("note", v::string())], |ctx, args| {
        let at = ctx.db.commit_ts().expect("a mutation").as_millis_f64();
        ctx.db.insert(
            "events",
            obj! { "note" => args.string("note")?, "at" => at },
        )
    });
    app.internal_mutation("events:fail", [("note", v::string())], |ctx, args| {
        ctx.db.insert(
            "events",
            obj! { "note" => args.string("note")?, "at" => 0.0 },
        )?;
        Err::<Value, _>(Error::conflict("the scheduled mutation refuses"))
    });
    app.internal_action(
        "events:act",
        [("note", v::string())],
        |ctx, args| async move {
            let note = args.string("note")?;
            ctx.run_mutation("events:record", obj! { "note" => note })
                .await
        },
    );
    app.internal_action("events:slow", [], move |_ctx, _args| {
        let c = concurrency.clone();
        async move {
            let now = c.now.fetch_add(1, Ordering::SeqCst) + 1;
            c.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            c.now.fetch_sub(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
    });
    app.internal_action(
        "events:hang",
        [("note", v::string())],
        |ctx, args| async move {
            let note = args.string("note")?;
            ctx.run_mutation("events:record", obj! { "note" => note })
                .await?;
            println!("action started");
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(Value::Null)
        },
    );
    app.internal_mutation(
        "tries:record",
        [
            ("note", v::string()),
            ("job", v::string()),
            ("attempt", v::float64()),
        ],
        |ctx, args| {
            ctx.db.insert(
                "tries",
                obj! {
                    "note" => args.string("note")?,
                    "job" => args.string("job")?,
                    "attempt" => args.f64("attempt")?,
                },
            )
        },
    );
    app.internal_action(
        "retry:flaky",
        [("note", v::string()), ("failures", v::float64())],
        |ctx, args| async move {
            let attempt = record_try(&ctx, &args.string("note")?).await?;
            if f64::from(attempt) <= args.f64("failures")? {
                return Err(transient(Error::conflict(format!(
                    "attempt {attempt}: try again later"
                ))));
            }
            Ok(Value::from(format!("done on attempt {attempt}")))
        },
    );
    app.internal_action(
        "retry:refuse",
        [("note", v::string())],
        |ctx, args| async move {
            record_try(&ctx, &args.string("note")?).await?;
            Err::<Value, _>(Error::invalid("refused for good"))
        },
    );
    app.internal_action(
        "retry:hangOnce",
        [("note", v::string())],
        |ctx, args| async move {
            let attempt = record_try(&ctx, &args.string("note")?).await?;
            if attempt == 1 {
                println!("action started");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(Value::Null)
        },
    );
    for path in ["retry:flaky", "retry:refuse"] {
        app.retryable(path, FAST_RETRY);
    }
    // One attempt only: the attempt a kill cuts short must not count.
    app.retryable(
        "retry:hangOnce",
        RetryPolicy {
            max_attempts: 1,
            ..FAST_RETRY
        },
    );
    app
}

/// The retry policy of the `retry:*` actions: quick, so tests are.
const FAST_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    initial_backoff: Duration::from_millis(20),
    max_backoff: Duration::from_millis(100),
    deadline: Duration::from_secs(60),
};

/// Records a try of the calling action (its job and attempt); returns the
/// attempt number.
async fn record_try(ctx: &ActionCtx, note: &str) -> Result<u32, Error> {
    let job = ctx.job().expect("run by the scheduler").clone();
    ctx.run_mutation(
        "tries:record",
        obj! { "note" => note, "job" => job.id.as_str(), "attempt" => f64::from(job.attempt) },
    )
    .await?;
    Ok(job.attempt)
}

async fn start(registry: Registry) -> TestServer {
    start_in(
        tempfile::tempdir().unwrap(),
        registry,
        SchedulerOptions::default(),
    )
    .await
}

async fn start_in(dir: TempDir, registry: Registry, scheduler: SchedulerOptions) -> TestServer {
    TestServer::start_in(dir, registry, |o| o.scheduler = scheduler).await
}

/// A server on `time`: its commits and its scheduler see the time move only
/// as fast as the real clock, plus what the test advances it by.
async fn start_on(time: &TestClock, dir: TempDir, registry: Registry) -> TestServer {
    let clock = time.clock();
    TestServer::start_in(dir, registry, |o| o.clock = clock).await
}

/// The test application on a test clock, over a fresh data folder.
async fn start_clocked() -> (TestClock, TestServer) {
    let time = TestClock::new();
    let s = start_on(
        &time,
        tempfile::tempdir().unwrap(),
        registry(Arc::default()),
    )
    .await;
    (time, s)
}

/// Advances `time` by `step`, then waits until `check` holds of the jobs:
/// one step at a time, so that no tick of a cron is skipped over.
async fn step(
    s: &TestServer,
    time: &TestClock,
    step: Duration,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    time.advance(step);
    s.wait_rows(SCHEDULED_FUNCTIONS, what, check).await
}

/// What these tests ask of the server beside the kit's: calls in process,
/// and the state of jobs and what they wrote.
trait Jobs {
    async fn run_mutation(&self, path: &str, args: Value) -> Result<Value, Error>;
    async fn run_after(&self, delay_ms: f64, path: &str, args: Value) -> DocumentId;
    async fn job(&self, id: &DocumentId) -> Value;
    async fn tries(&self, note: &str) -> Vec<Value>;
    async fn events(&self, note: &str) -> Vec<Value>;
    async fn wait_rows(
        &self,
        table: &'static str,
        what: &str,
        check: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value>;
    async fn settled(&self, id: &DocumentId) -> Value;
}

impl Jobs for TestServer {
    /// Runs a mutation in process, as a client.
    async fn run_mutation(&self, path: &str, args: Value) -> Result<Value, Error> {
        self.executor()
            .mutation(path, vec![args], Identity::Anonymous, Caller::Client, None)
            .await
            .map(|(value, _)| value)
    }

    /// Schedules `path` with `args` `delay_ms` from now; returns the job id.
    async fn run_after(&self, delay_ms: f64, path: &str, args: Value) -> DocumentId {
        let id = self
            .run_mutation(
                "jobs:runAfter",
                obj! { "path" => path, "delayMs" => delay_ms, "args" => args },
            )
            .await
            .expect("scheduling commits");
        DocumentId::parse(id.as_str().expect("a job id")).expect("a job id")
    }

    async fn job(&self, id: &DocumentId) -> Value {
        let id = id.clone();
        self.database()
            .query(move |tx| tx.get(&id))
            .await
            .expect("the job reads")
            .value
            .expect("the job exists")
    }

    /// The tries recorded with `note`, oldest first.
    async fn tries(&self, note: &str) -> Vec<Value> {
        let mut tries = self.rows("tries").await;
        tries.retain(|e| e.get("note").and_then(Value::as_str) == Some(note));
        tries
    }

    async fn events(&self, note: &str) -> Vec<Value> {
        let mut events = self.rows("events").await;
        events.retain(|e| e.get("note").and_then(Value::as_str) == Some(note));
        events
    }

    /// Polls until `check` holds of `table`'s rows; returns them.
    async fn wait_rows(
        &self,
        table: &'static str,
        what: &str,
        check: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        self.rows_until(table, what, |rows| check(rows).then(|| rows.to_vec()))
            .await
    }

    /// Polls until the job is no longer pending or in progress.
    async fn settled(&self, id: &DocumentId) -> Value {
        eventually(&format!("job {id} to settle"), PATIENCE, || async {
            let job = self.job(id).await;
            match state(&job) {
                "pending" | "inProgress" => Err(format!("{job:?}")),
                _ => Ok(job),
            }
        })
        .await
    }
}

fn field_f64(doc: &Value, field: &str) -> f64 {
    doc.get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{field} in {doc:?}"))
}

fn state(job: &Value) -> &str {
    job.get("state").and_then(Value::as_str).unwrap_or_default()
}

fn note(note: &str) -> Value {
    obj! { "note" => note }
}

#[tokio::test]
async fn a_scheduled_mutation_runs_after_its_delay_and_never_before() {
    let time = TestClock::new();
    let clock = time.clock();
    let s = start_on(
        &time,
        tempfile::tempdir().unwrap(),
        registry(Arc::default()),
    )
    .await;
    let asked = clock.now_ms();
    let job = s.run_after(300.0, "events:record", note("later")).await;
    let row = s.job(&job).await;
    assert_eq!(state(&row), "pending");
    let due = field_f64(&row, "scheduledTime");
    assert!(due >= asked + 300.0, "due {due} is 300 ms after {asked}");

    // Halfway: the worker, woken by the advance, finds nothing due.
    time.advance(Duration::from_millis(150));
    tokio::time::sleep(SILENCE).await;
    let early = s.events("later").await;
    if clock.now_ms() < due {
        assert!(early.is_empty(), "not run early: {early:?}");
    }
    time.advance(Duration::from_millis(150));
    let ran = s.settled(&job).await;
    assert_eq!(state(&ran), "success", "{ran:?}");
    let events = s.events("later").await;
    assert_eq!(events.len(), 1);
    let at = field_f64(&events[0], "at");
    assert!(at >= due, "ran at {at}, due at {due}");
    assert!(at - due < 1000.0, "ran promptly: {} ms late", at - due);
    assert_eq!(
        field_f64(&ran, "completedTime"),
        at,
        "the state changed in the same commit"
    );
}

/// The worker's time is the server's clock: a job due in an hour runs once
/// the clock has moved an hour, not an hour later.
#[tokio::test]
async fn a_job_comes_due_when_the_servers_clock_reaches_its_time() {
    let (time, s) = start_clocked().await;
    let job = s
        .run_after(3_600_000.0, "events:record", note("in an hour"))
        .await;
    assert_eq!(state(&s.job(&job).await), "pending");
    time.advance(Duration::from_secs(3600));
    let ran = s.settled(&job).await;
    assert_eq!(state(&ran), "success", "{ran:?}");
    let at = field_f64(&s.events("in an hour").await[0], "at");
    assert!(at >= field_f64(&ran, "scheduledTime"), "{ran:?}");
}

#[tokio::test]
async fn a_commit_that_schedules_an_earlier_job_wakes_the_worker() {
    let s = start(registry(Arc::default())).await;
    let late = s.run_after(5_000.0, "events:record", note("late")).await;
    // The worker now sleeps until `late`; this commit must wake it.
    let early = s.run_after(100.0, "events:record", note("early")).await;
    let asked = Instant::now();
    assert_eq!(state(&s.settled(&early).await), "success");
    assert!(
        asked.elapsed() < Duration::from_millis(2_000),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(state(&s.job(&late).await), "pending");
}

#[tokio::test]
async fn a_canceled_job_never_runs() {
    let (time, s) = start_clocked().await;
    let job = s.run_after(300.0, "events:record", note("canceled")).await;
    let canceled = s
        .run_mutation("jobs:cancel", obj! { "id" => job.as_str() })
        .await
        .expect("cancel commits");
    assert_eq!(canceled, Value::Boolean(true));
    // A job scheduled with it, after it, shows the worker got past its time.
    let witness = s.run_after(400.0, "events:record", note("witness")).await;
    time.advance(Duration::from_millis(400));
    assert_eq!(state(&s.settled(&witness).await), "success");
    assert!(s.events("canceled").await.is_empty());
    let row = s.job(&job).await;
    assert_eq!(state(&row), "canceled");
    assert!(row.get("completedTime").is_some());
    let again = s
        .run_mutation("jobs:cancel", obj! { "id" => job.as_str() })
        .await;
    assert_eq!(
        again,
        Ok(Value::Boolean(false)),
        "a second cancel changes nothing"
    );
    let ran = s
        .run_mutation("jobs:cancel", obj! { "id" => witness.as_str() })
        .await;
    assert_eq!(
        ran,
        Ok(Value::Boolean(false)),
        "a job that ran cannot be canceled"
    );
}

#[tokio::test]
async fn a_failed_mutation_schedules_nothing() {
    let s = start(registry(Arc::default())).await;
    let failed = s
        .run_mutation("jobs:scheduleThenFail", obj! { "path" => "events:record" })
        .await;
    assert!(matches!(failed, Err(Error::App { .. })), "{failed:?}");
    assert!(s.rows(SCHEDULED_FUNCTIONS).await.is_empty());
    let witness = s.run_after(0.0, "events:record", note("witness")).await;
    assert_eq!(state(&s.settled(&witness).await), "success");
    assert!(s.events("never").await.is_empty());
    assert_eq!(s.rows(SCHEDULED_FUNCTIONS).await.len(), 1);
}

#[tokio::test]
async fn a_failing_scheduled_mutation_leaves_no_write_and_its_job_says_why() {
    let s = start(registry(Arc::default())).await;
    let failing = s.run_after(0.0, "events:fail", note("rolled back")).await;
    let missing = s.run_after(0.0, "events:nothing", note("x")).await;
    let query = s.run_after(0.0, "jobs:get", obj! { "id" => "x" }).await;
    let bad_args = s
        .run_after(0.0, "events:record", obj! { "note" => 7.0 })
        .await;

    let row = s.settled(&failing).await;
    assert_eq!(state(&row), "failed");
    let error = row.get("error").and_then(Value::as_str).unwrap_or_default();
    assert!(error.contains("the scheduled mutation refuses"), "{error}");
    assert!(
        s.events("rolled back").await.is_empty(),
        "its insert was rolled back"
    );

    for (job, reason) in [
        (missing, "there is no function `events:nothing`"),
        (query, "only mutations and actions can be scheduled"),
        (bad_args, "args.note"),
    ] {
        let row = s.settled(&job).await;
        assert_eq!(state(&row), "failed");
        let error = row.get("error").and_then(Value::as_str).unwrap_or_default();
        assert!(
            error.contains(reason),
            "{error:?} should contain {reason:?}"
        );
    }
}

#[tokio::test]
async fn a_scheduled_action_runs_once_and_settles() {
    let s = start(registry(Arc::default())).await;
    let job = s.run_after(0.0, "events:act", note("from an action")).await;
    let row = s.settled(&job).await;
    assert_eq!(state(&row), "success", "{row:?}");
    assert_eq!(s.events("from an action").await.len(), 1);
    let at = field_f64(&s.events("from an action").await[0], "at");
    assert!(
        field_f64(&row, "completedTime") > at,
        "settled after it ran"
    );
}

#[tokio::test]
async fn run_at_takes_an_absolute_time_and_a_past_one_runs_at_once() {
    let (time, s) = start_clocked().await;
    let at = time.clock().now_ms() + 200.0;
    let id = s
        .run_mutation(
            "jobs:runAt",
            obj! { "path" => "events:record", "at" => at, "args" => note("at") },
        )
        .await
        .unwrap();
    let job = DocumentId::parse(id.as_str().unwrap()).unwrap();
    assert_eq!(field_f64(&s.job(&job).await, "scheduledTime"), at);
    time.advance(Duration::from_millis(200));
    s.settled(&job).await;
    assert!(field_f64(&s.events("at").await[0], "at") >= at);

    let past = s
        .run_mutation(
            "jobs:runAt",
            obj! { "path" => "events:record", "at" => 0.0, "args" => note("past") },
        )
        .await
        .unwrap();
    let past = DocumentId::parse(past.as_str().unwrap()).unwrap();
    assert_eq!(state(&s.settled(&past).await), "success");
}

#[tokio::test]
async fn no_more_jobs_run_at_once_than_the_bound() {
    let concurrency = Arc::new(Concurrency::default());
    let s = start_in(
        tempfile::tempdir().unwrap(),
        registry(concurrency.clone()),
        SchedulerOptions {
            max_concurrent_jobs: 2,
        },
    )
    .await;
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(s.run_after(0.0, "events:slow", obj! {}).await);
    }
    for job in &jobs {
        assert_eq!(state(&s.settled(job).await), "success");
    }
    assert_eq!(
        concurrency.peak.load(Ordering::SeqCst),
        2,
        "two at a time, never more"
    );
}

#[tokio::test]
async fn a_query_can_read_a_job_and_its_subscribers_see_it_change() {
    let (time, s) = start_clocked().await;
    let job = s.run_after(300.0, "events:record", note("watched")).await;
    let url = format!("ws://{}/api/sync", s.addr());
    let mut client = Client::connect(&url, SessionId::random()).await;
    let first = client
        .subscribe(&[(1, "jobs:get", obj! { "id" => job.as_str() })])
        .await;
    let seen = first.updated(1).expect("the job, read by a query");
    assert_eq!(state(seen), "pending");
    assert_eq!(
        seen.get("name").and_then(Value::as_str),
        Some("events:record")
    );
    time.advance(Duration::from_millis(300));
    let next = client.transition().await;
    let seen = next.updated(1).expect("the job's update is pushed");
    assert_eq!(
        state(seen),
        "success",
        "pending → success in one commit: {seen:?}"
    );
    assert!(seen.get("completedTime").is_some());
}

// ---------------------------------------------------------------------------
// SIGKILL between the scheduling commit and the run.

/// Not a test of its own: in a normal run it returns at once. In the child it
/// serves [`registry`] on [`CHILD_DIR`], schedules what [`CHILD_JOB`] says,
/// prints `scheduled <job id>`, and waits to be killed.
#[tokio::test]
async fn child_schedules_then_waits_to_be_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let options = ServerOptions {
        data_dir: dir.into(),
        ..ServerOptions::default()
    };
    let server = serve(registry(Arc::default()), options)
        .await
        .expect("the child's server starts");
    let (path, delay) = match std::env::var(CHILD_JOB).as_deref() {
        Ok("action") => ("events:hang", 0.0),
        Ok("retryable") => ("retry:hangOnce", 0.0),
        _ => ("events:record", CRASH_DELAY_MS),
    };
    let (id, _) = server
        .state
        .executor
        .mutation(
            "jobs:runAfter",
            vec![obj! { "path" => path, "delayMs" => delay, "args" => note("crash") }],
            Identity::Anonymous,
            Caller::Client,
            None,
        )
        .await
        .expect("scheduling commits");
    println!("scheduled {}", id.as_str().unwrap());
    std::future::pending::<()>().await;
}

/// Starts the child on `dir` scheduling `job`, waits for the line containing
/// `kill_at`, SIGKILLs it, and returns the scheduled job's id and when the
/// scheduling was acknowledged.
fn run_child_and_kill(dir: &std::path::Path, job: &str, kill_at: &str) -> (DocumentId, Instant) {
    let mut child: KillOnDrop = run_test_alone(
        "child_schedules_then_waits_to_be_killed",
        &[(CHILD_DIR, dir.as_os_str()), (CHILD_JOB, job.as_ref())],
    );
    let rx = child.stdout_lines();
    let mut id = None;
    let mut acknowledged = Instant::now();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("the child stopped before `{kill_at}`: {e}"));
        if let Some(at) = line.find("scheduled ") {
            acknowledged = Instant::now();
            id = DocumentId::parse(line[at + "scheduled ".len()..].trim());
        }
        if line.contains(kill_at) {
            break;
        }
    }
    // SIGKILL: no destructor, no flush, no orderly close of SQLite.
    child.0.kill().expect("kill the child");
    assert!(!child.0.wait().unwrap().success());
    (id.expect("the child printed its job id"), acknowledged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_mutation_runs_exactly_once_after_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (job, acknowledged) =
        tokio::task::spawn_blocking(move || run_child_and_kill(&path, "mutation", "scheduled "))
            .await
            .unwrap();
    assert!(
        acknowledged.elapsed() < Duration::from_secs_f64(CRASH_DELAY_MS / 1e3),
        "killed before the job was due"
    );
    // Stay down until the job is overdue: come back on a clock that far on.
    let time = TestClock::new();
    time.advance(Duration::from_secs_f64(CRASH_DELAY_MS / 1e3 + 0.1));
    let s = start_on(&time, dir, registry(Arc::default())).await;
    let row = s.settled(&job).await;
    assert_eq!(state(&row), "success", "{row:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.events("crash").await.len(), 1, "ran once");

    // And once more across a clean restart: nothing runs again.
    let dir = s.stop().await;
    let s = start_on(&time, dir, registry(Arc::default())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.events("crash").await.len(), 1, "still once");
    assert_eq!(s.rows(SCHEDULED_FUNCTIONS).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_in_progress_at_a_kill_is_marked_failed_and_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (job, _) =
        tokio::task::spawn_blocking(move || run_child_and_kill(&path, "action", "action started"))
            .await
            .unwrap();
    let s = start_in(dir, registry(Arc::default()), SchedulerOptions::default()).await;
    let row = s.job(&job).await;
    assert_eq!(
        state(&row),
        "failed",
        "marked before the server serves: {row:?}"
    );
    assert_eq!(
        row.get("error").and_then(Value::as_str),
        Some("interrupted by a restart")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.events("crash").await.len(),
        1,
        "the action started once, and only once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_action_in_progress_at_a_kill_runs_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (job, _) = tokio::task::spawn_blocking(move || {
        run_child_and_kill(&path, "retryable", "action started")
    })
    .await
    .unwrap();
    let s = start_in(dir, registry(Arc::default()), SchedulerOptions::default()).await;
    let row = s.settled(&job).await;
    assert_eq!(
        state(&row),
        "success",
        "run again, not failed, though its policy allows one attempt: {row:?}"
    );
    let attempts = attempts_of(&row);
    assert_eq!(attempts.len(), 2, "{row:?}");
    assert_eq!(
        attempts[0].get("error").and_then(Value::as_str),
        Some("interrupted by a restart"),
        "{row:?}"
    );
    assert_eq!(attempts[0].get("interrupted"), Some(&Value::Boolean(true)));
    assert!(attempts[1].get("error").is_none(), "{row:?}");
    assert!(
        row.get("error").is_none(),
        "a success keeps no error: {row:?}"
    );
    let tries = s.tries("crash").await;
    let seen: Vec<(String, f64)> = tries.iter().map(try_of).collect();
    let id = job.as_str().to_string();
    assert_eq!(seen, [(id.clone(), 1.0), (id, 2.0)], "the same job, twice");
}

#[tokio::test]
async fn a_transiently_failing_retryable_action_runs_again_until_it_succeeds() {
    let s = start(registry(Arc::default())).await;
    let job = s
        .run_after(
            0.0,
            "retry:flaky",
            obj! { "note" => "flaky", "failures" => 2.0 },
        )
        .await;
    let row = s.settled(&job).await;
    assert_eq!(state(&row), "success", "{row:?}");
    let attempts = attempts_of(&row);
    assert_eq!(attempts.len(), 3, "{row:?}");
    for (n, failed) in attempts[..2].iter().enumerate() {
        let error = failed.get("error").and_then(Value::as_str).unwrap_or("");
        assert!(
            error.contains(&format!("attempt {}: try again later", n + 1)),
            "{row:?}"
        );
        // The next attempt was due after this one ended, and started then.
        let next = field_f64(failed, "nextAttemptTime");
        assert!(next >= field_f64(failed, "endedTime"), "{row:?}");
        assert!(
            field_f64(&attempts[n + 1], "startedTime") >= next,
            "{row:?}"
        );
    }
    assert_eq!(
        attempts[2].get("result").and_then(Value::as_str),
        Some("done on attempt 3")
    );
    assert!(row.get("error").is_none(), "{row:?}");
    let tries: Vec<f64> = s.tries("flaky").await.iter().map(|t| try_of(t).1).collect();
    assert_eq!(tries, [1.0, 2.0, 3.0]);
    assert!(
        s.tries("flaky")
            .await
            .iter()
            .all(|t| try_of(t).0 == job.as_str()),
        "every attempt sees its job's id"
    );
}

#[tokio::test]
async fn a_permanent_error_fails_a_retryable_job_at_once_with_its_reason() {
    let s = start(registry(Arc::default())).await;
    let job = s.run_after(0.0, "retry:refuse", note("refuse")).await;
    let row = s.settled(&job).await;
    assert_eq!(state(&row), "failed", "{row:?}");
    assert_eq!(
        row.get("error").and_then(Value::as_str),
        Some("INVALID_ARGUMENT: refused for good")
    );
    assert_eq!(attempts_of(&row).len(), 1, "{row:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.tries("refuse").await.len(), 1, "not run again");
}

#[tokio::test]
async fn a_retryable_job_gives_up_when_its_policy_allows_no_more_attempts() {
    let s = start(registry(Arc::default())).await;
    let job = s
        .run_after(
            0.0,
            "retry:flaky",
            obj! { "note" => "hopeless", "failures" => 100.0 },
        )
        .await;
    let row = s.settled(&job).await;
    assert_eq!(state(&row), "failed", "{row:?}");
    let error = row.get("error").and_then(Value::as_str).unwrap_or("");
    assert!(
        error.starts_with("gave up after 4 attempt(s): ")
            && error.contains("attempt 4: try again later"),
        "{error}"
    );
    assert_eq!(attempts_of(&row).len(), FAST_RETRY.max_attempts as usize);
    assert!(
        attempts_of(&row)
            .last()
            .unwrap()
            .get("nextAttemptTime")
            .is_none(),
        "{row:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.tries("hopeless").await.len(), 4);
}

fn attempts_of(job: &Value) -> Vec<Value> {
    match job.get("attempts") {
        Some(Value::Array(list)) => list.clone(),
        other => panic!("no attempts on the job: {other:?} in {job:?}"),
    }
}

/// A try's job id and attempt number.
fn try_of(t: &Value) -> (String, f64) {
    (
        t.get("job").and_then(Value::as_str).unwrap().to_string(),
        field_f64(t, "attempt"),
    )
}

// ---------------------------------------------------------------------------
// Crons.

/// The cron jobs that ran for `events:record {note}`, by scheduled time.
fn cron_runs(jobs: &[Value], note: &str) -> Vec<Value> {
    let mut runs: Vec<Value> = jobs
        .iter()
        .filter(|j| {
            state(j) == "success"
                && j.get("args")
                    .and_then(|a| a.get("note"))
                    .and_then(Value::as_str)
                    == Some(note)
        })
        .cloned()
        .collect();
    runs.sort_by(|a, b| field_f64(a, "scheduledTime").total_cmp(&field_f64(b, "scheduledTime")));
    runs
}

fn with_interval(every_ms: u64) -> Registry {
    let mut app = registry(Arc::default());
    app.interval(
        "tick",
        Duration::from_millis(every_ms),
        "events:record",
        note("tick"),
    );
    app
}

#[tokio::test]
async fn an_interval_cron_fires_on_its_cadence() {
    let time = TestClock::new();
    let started = time.clock().now_ms();
    let s = start_on(&time, tempfile::tempdir().unwrap(), with_interval(200)).await;
    let mut jobs = Vec::new();
    for ticks in 1..=4 {
        jobs = step(&s, &time, Duration::from_millis(200), "a tick", |jobs| {
            cron_runs(jobs, "tick").len() >= ticks
        })
        .await;
    }
    let runs = cron_runs(&jobs, "tick");
    let first = field_f64(&runs[0], "scheduledTime");
    assert!(
        first >= started + 200.0,
        "the first tick is one interval in"
    );
    for pair in runs.windows(2) {
        let gap = field_f64(&pair[1], "scheduledTime") - field_f64(&pair[0], "scheduledTime");
        assert!((gap - 200.0).abs() < 1e-6, "ticks 200 ms apart, not {gap}");
    }
    for run in &runs {
        let late = field_f64(run, "completedTime") - field_f64(run, "scheduledTime");
        assert!((0.0..500.0).contains(&late), "on time: {late} ms late");
    }
    let cron = &s.rows(CRONS).await[0];
    assert_eq!(cron.get("name").and_then(Value::as_str), Some("tick"));
    assert_eq!(
        cron.get("schedule").and_then(Value::as_str),
        Some("every 200ms")
    );
}

#[tokio::test]
async fn a_cron_expression_fires_at_its_matching_times() {
    let mut app = registry(Arc::default());
    app.cron("second", "* * * * * *", "events:record", note("second"));
    let time = TestClock::new();
    let s = start_on(&time, tempfile::tempdir().unwrap(), app).await;
    // Just past the next whole second, then one second on.
    let into_second = time.clock().now_ms() % 1000.0;
    let first = Duration::from_secs_f64((1001.0 - into_second) / 1e3);
    step(&s, &time, first, "a run", |jobs| {
        !cron_runs(jobs, "second").is_empty()
    })
    .await;
    let jobs = step(&s, &time, Duration::from_secs(1), "two runs", |jobs| {
        cron_runs(jobs, "second").len() >= 2
    })
    .await;
    let runs = cron_runs(&jobs, "second");
    for run in &runs {
        let due = field_f64(run, "scheduledTime");
        assert_eq!(due % 1000.0, 0.0, "on a whole second: {due}");
        let late = field_f64(run, "completedTime") - due;
        assert!((0.0..500.0).contains(&late), "on time: {late} ms late");
    }
    let gap = field_f64(&runs[1], "scheduledTime") - field_f64(&runs[0], "scheduledTime");
    assert_eq!(gap, 1000.0);
}

#[tokio::test]
async fn a_cron_run_missed_while_down_happens_once_after_restart() {
    let time = TestClock::new();
    let clock = time.clock();
    let s = start_on(&time, tempfile::tempdir().unwrap(), with_interval(200)).await;
    step(&s, &time, Duration::from_millis(200), "a tick", |jobs| {
        !cron_runs(jobs, "tick").is_empty()
    })
    .await;
    let dir = s.stop().await;
    let down = clock.now_ms();
    // Down across about five ticks.
    time.advance(Duration::from_millis(1_000));
    let up = clock.now_ms();
    let s = start_on(&time, dir, with_interval(200)).await;
    let after_up = |jobs: &[Value]| {
        cron_runs(jobs, "tick")
            .iter()
            .filter(|j| field_f64(j, "scheduledTime") > up)
            .count()
    };
    let mut jobs = Vec::new();
    for ticks in 1..=2 {
        jobs = step(
            &s,
            &time,
            Duration::from_millis(200),
            "ticks after the restart",
            |jobs| after_up(jobs) >= ticks,
        )
        .await;
    }
    let runs = cron_runs(&jobs, "tick");
    let missed: Vec<&Value> = runs
        .iter()
        .filter(|j| (down..up).contains(&field_f64(j, "scheduledTime")))
        .collect();
    assert_eq!(
        missed.len(),
        1,
        "one run for all the missed ticks: {runs:#?}"
    );
    let late = field_f64(missed[0], "completedTime") - up;
    assert!(
        late < 1_000.0,
        "the missed run happens right after the start ({late} ms)"
    );
    // Then back on the cadence of the original schedule.
    let after: Vec<f64> = runs
        .iter()
        .map(|j| field_f64(j, "scheduledTime"))
        .filter(|t| *t > up)
        .collect();
    let origin = field_f64(&runs[0], "scheduledTime");
    for t in after {
        let steps = (t - origin) / 200.0;
        assert!(
            (steps - steps.round()).abs() < 1e-6,
            "{t} is on the 200 ms grid"
        );
    }
}

#[tokio::test]
async fn a_cron_no_longer_declared_is_removed_with_its_pending_run() {
    let s = start(with_interval(60_000)).await;
    let cron = s.rows(CRONS).await;
    assert_eq!(cron.len(), 1);
    let job = DocumentId::parse(cron[0].get("jobId").and_then(Value::as_str).unwrap()).unwrap();
    assert_eq!(state(&s.job(&job).await), "pending");
    let dir = s.stop().await;
    let s = start_in(dir, registry(Arc::default()), SchedulerOptions::default()).await;
    assert!(s.rows(CRONS).await.is_empty());
    assert_eq!(state(&s.job(&job).await), "canceled");
}
