//! The executor: runs a registered function by path — argument checking,
//! visibility, the transaction, panics, idempotent mutation retries — and logs
//! one line per call (path, kind, duration, outcome). Every entry point (the
//! WebSocket, HTTP, actions, the scheduler) calls functions through here.

use std::sync::Arc;
use std::time::Instant;

use livebase_schema::{Timestamp, Value};
use sha2::{Digest, Sha256};

use crate::calllog::{CallLog, CallOutcome};
use crate::context::{ActionCtx, BoxFuture, FunctionRunner};
use crate::database::{catch_panic, Database, QueryOutcome};
use crate::email::Mailer;
use crate::error::{Error, Result};
use crate::function::{canonical_path, Access, FunctionKind};
use crate::identity::Identity;
use crate::pagination::CursorKey;
use crate::readset::ReadSet;
use crate::registry::{check_result, run_sync, Function, FunctionHandler, Registry};
use crate::scheduler::retry::JobContext;
use crate::store::MutationOutcome;
use crate::transaction::Transaction;

/// Who is asking: a client (public functions only) or the server itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Client,
    Server,
}

impl Caller {
    /// The functions this caller may find: a client only public ones.
    pub fn access(self) -> Access {
        match self {
            Caller::Client => Access::PublicOnly,
            Caller::Server => Access::Any,
        }
    }
}

/// A mutation's idempotency key: the client's session and request id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub session_id: String,
    pub request_id: u32,
}

/// Runs functions; cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    db: Database,
    registry: Arc<Registry>,
    /// What actions send mail through ([`crate::registry::ActionCtx::mailer`]).
    mailer: Option<Mailer>,
    /// Where each call is also recorded, for the dev dashboard.
    calls: Option<CallLog>,
    /// What every call's transaction signs pagination cursors with.
    cursor_key: Arc<CursorKey>,
    /// Stored files' bytes, for actions ([`ActionCtx::storage`]).
    files: Option<crate::storage::Files>,
    /// The origin stored files' URLs are built on (the server's public URL).
    public_url: Option<Arc<str>>,
    /// Where mutations run when this process is not the store's writer
    /// (one of several nodes: [`crate::node`]).
    forward: Option<Arc<dyn Forward>>,
}

/// Where a mutation runs when this process may not commit: the store's
/// writer, another process ([`crate::node::Node`] implements it).
pub trait Forward: Send + Sync + 'static {
    /// Whether this process is the writer now (its mutations run here).
    fn is_writer(&self) -> bool;
    /// Runs a mutation on the writer, as `identity` calling as `caller`,
    /// keyed by `key`: its value and commit timestamp.
    fn forward<'a>(
        &'a self,
        path: &'a str,
        args: &'a [Value],
        identity: &'a Identity,
        caller: Caller,
        key: Option<&'a RequestKey>,
    ) -> futures::future::BoxFuture<'a, Result<(Value, Timestamp)>>;
}

/// A query's result and what it read, at the snapshot `ts`.
pub type QueryResult = QueryOutcome<Value>;

impl Executor {
    pub fn new(db: Database, registry: Arc<Registry>) -> Executor {
        Executor {
            inner: Arc::new(Inner {
                db,
                registry,
                mailer: None,
                calls: None,
                cursor_key: crate::pagination::process_key(),
                files: None,
                public_url: None,
                forward: None,
            }),
        }
    }

    /// This executor with `change` made to a copy of its parts (the
    /// `with_*` builders).
    fn with(self, change: impl FnOnce(&mut Inner)) -> Executor {
        let mut inner = Inner::clone(&self.inner);
        change(&mut inner);
        Executor {
            inner: Arc::new(inner),
        }
    }

    /// This executor with `mailer` for its actions.
    pub fn with_mailer(self, mailer: Mailer) -> Executor {
        self.with(|inner| inner.mailer = Some(mailer))
    }

    /// This executor, also recording every call in `calls`.
    pub fn with_call_log(self, calls: CallLog) -> Executor {
        self.with(|inner| inner.calls = Some(calls))
    }

    /// This executor, signing pagination cursors and journals with the
    /// deployment's `key` (so they outlive a restart).
    pub fn with_cursor_key(self, key: CursorKey) -> Executor {
        self.with(|inner| inner.cursor_key = Arc::new(key))
    }

    /// This executor, giving actions `files`.
    pub fn with_files(self, files: crate::storage::Files) -> Executor {
        self.with(|inner| inner.files = Some(files))
    }

    /// This executor, building stored files' URLs on `url` (the server's
    /// public origin, `https://host[:port]`), as Convex returns absolute URLs.
    pub fn with_public_url(self, url: &str) -> Executor {
        self.with(|inner| inner.public_url = Some(Arc::from(url.trim_end_matches('/'))))
    }

    /// The origin stored files' URLs are built on, if set.
    /// This executor with its mutations run through `forward` whenever
    /// this process is not the store's writer.
    pub fn with_forward(self, forward: Arc<dyn Forward>) -> Executor {
        self.with(|i| i.forward = Some(forward))
    }

    pub fn public_url(&self) -> Option<&Arc<str>> {
        self.inner.public_url.as_ref()
    }

    /// The server's file storage, if it has one.
    pub fn files(&self) -> Option<&crate::storage::Files> {
        self.inner.files.as_ref()
    }

    /// What this executor's calls sign pagination cursors with.
    pub fn cursor_key(&self) -> &Arc<CursorKey> {
        &self.inner.cursor_key
    }

    /// The one log line of a call (and its entry in the call log, if any).
    fn log_call(
        &self,
        path: &str,
        kind: FunctionKind,
        started: Instant,
        outcome: &Result<impl Sized>,
    ) {
        let elapsed = started.elapsed();
        let ms = elapsed.as_secs_f64() * 1e3;
        if let Some(calls) = &self.inner.calls {
            let outcome = match outcome {
                Ok(_) => CallOutcome::Success,
                Err(e) => CallOutcome::Failed(e.to_string()),
            };
            calls.record(path, kind, elapsed, outcome);
        }
        match outcome {
            Ok(_) => {
                tracing::info!(target: "livebase::call", path, kind = kind.name(), ms = format!("{ms:.2}"), "ok")
            }
            Err(e) => {
                tracing::info!(target: "livebase::call", path, kind = kind.name(), ms = format!("{ms:.2}"), error = %e, "failed")
            }
        }
    }

    /// The call log this executor records in, if any (the HTTP routes
    /// record theirs there too).
    pub fn call_log(&self) -> Option<&CallLog> {
        self.inner.calls.as_ref()
    }

    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Runs a query on a fresh snapshot.
    pub async fn query(
        &self,
        path: &str,
        args: Vec<Value>,
        identity: Identity,
        caller: Caller,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let outcome = self.query_inner(path, args, identity, caller).await;
        self.log_call(path, FunctionKind::Query, started, &outcome);
        outcome.map_err(|e| e.redact(path))
    }

    async fn query_inner(
        &self,
        path: &str,
        args: Vec<Value>,
        identity: Identity,
        caller: Caller,
    ) -> Result<QueryResult> {
        let function = self
            .inner
            .registry
            .lookup(path, FunctionKind::Query, caller.access())?
            .clone();
        let args = Registry::check_args(&function, &args)?;
        let key = self.inner.cursor_key.clone();
        let public_url = self.inner.public_url.clone();
        self.inner
            .db
            .query(move |tx| {
                tx.set_cursor_key(key);
                tx.set_public_url(public_url);
                run_sync(&function, tx, &identity, args)
            })
            .await
    }

    /// Runs a mutation and commits it. With a request key, a mutation that
    /// already ran returns its stored outcome instead of running again.
    pub async fn mutation(
        &self,
        path: &str,
        args: Vec<Value>,
        identity: Identity,
        caller: Caller,
        key: Option<RequestKey>,
    ) -> Result<(Value, Timestamp)> {
        self.start_mutation(path, args, identity, caller, key).await
    }

    /// Starts a mutation as [`Executor::mutation`] runs it, and gives the
    /// future of its outcome. On the store's writer the mutation is queued
    /// before this returns ([`Database::submit`]), so mutations started one
    /// after another commit in that order and may share a commit;
    /// [`Executor::starts_in_order`] says whether that holds.
    pub fn start_mutation(
        &self,
        path: &str,
        args: Vec<Value>,
        identity: Identity,
        caller: Caller,
        key: Option<RequestKey>,
    ) -> BoxFuture<Result<(Value, Timestamp)>> {
        let started = Instant::now();
        let this = self.clone();
        let path = path.to_string();
        match &self.inner.forward {
            Some(forward) if !forward.is_writer() => {
                let forward = forward.clone();
                Box::pin(async move {
                    let outcome = forward
                        .forward(&path, &args, &identity, caller, key.as_ref())
                        .await;
                    this.finish_mutation(&path, started, outcome)
                })
            }
            _ => {
                let outcome = self.queue_mutation(&path, args, identity, caller, key);
                Box::pin(async move {
                    let outcome = outcome.await;
                    this.finish_mutation(&path, started, outcome)
                })
            }
        }
    }

    /// Whether mutations started one after another
    /// ([`Executor::start_mutation`]) commit in that order: they do where
    /// they run here, not where they are forwarded to another node (each
    /// forward is a request of its own).
    pub fn starts_in_order(&self) -> bool {
        self.inner.forward.as_ref().is_none_or(|f| f.is_writer())
    }

    fn finish_mutation(
        &self,
        path: &str,
        started: Instant,
        outcome: Result<(Value, Timestamp)>,
    ) -> Result<(Value, Timestamp)> {
        self.log_call(path, FunctionKind::Mutation, started, &outcome);
        outcome.map_err(|e| e.redact(path))
    }

    /// Queues a mutation on this process's writer before it returns: the
    /// mutation runs there whether or not the returned future is polled,
    /// which only waits for its outcome.
    fn queue_mutation(
        &self,
        path: &str,
        args: Vec<Value>,
        identity: Identity,
        caller: Caller,
        key: Option<RequestKey>,
    ) -> BoxFuture<Result<(Value, Timestamp)>> {
        // Only a resend — the same caller calling the same function with the
        // same arguments, under the same session and request id — is answered
        // from a stored outcome: a stranger who learned a session id reads
        // none, and what a stranger stores never stops the owner's mutation.
        let key = key.map(|key| OutcomeKey {
            fingerprint: fingerprint(&identity, path, &args),
            request: key,
        });
        let function =
            match self
                .inner
                .registry
                .lookup(path, FunctionKind::Mutation, caller.access())
            {
                Ok(function) => function.clone(),
                Err(missing) => {
                    // A redeploy between a mutation and its resend may have
                    // removed the function: the resend still gets its answer.
                    let this = self.clone();
                    return Box::pin(async move {
                        match this.stored_outcome(key).await? {
                            Some(stored) => Ok((stored.value, stored.ts)),
                            None => Err(missing),
                        }
                    });
                }
            };
        let cursor_key = self.inner.cursor_key.clone();
        let public_url = self.inner.public_url.clone();
        let committed = self.inner.db.submit(move |tx| {
            tx.set_cursor_key(cursor_key);
            tx.set_public_url(public_url);
            run_keyed_mutation(tx, &function, &identity, &args, key)
        });
        Box::pin(async move {
            let committed = committed.await?;
            match committed.value {
                Run::Replayed(stored) => Ok((stored.value, stored.ts)),
                Run::Fresh(value) => Ok((value, committed.ts)),
            }
        })
    }

    /// The stored outcome of a keyed mutation, read on a snapshot (for a
    /// resend whose function is gone).
    async fn stored_outcome(&self, key: Option<OutcomeKey>) -> Result<Option<MutationOutcome>> {
        let Some(key) = key else {
            return Ok(None);
        };
        let stored = self.inner.db.query(move |tx| key.stored(tx)).await?;
        Ok(stored.value)
    }

    /// Runs an action.
    pub async fn action(
        &self,
        path: &str,
        args: Vec<Value>,
        identity: Identity,
        caller: Caller,
    ) -> Result<Value> {
        let started = Instant::now();
        let outcome = self.action_inner(path, args, identity, caller, None).await;
        self.log_call(path, FunctionKind::Action, started, &outcome);
        outcome.map_err(|e| e.redact(path))
    }

    /// Runs an action for the scheduler, as attempt `job.attempt` of job
    /// `job.id`: the action sees the job in [`ActionCtx::job`].
    pub async fn scheduled_action(
        &self,
        path: &str,
        args: Vec<Value>,
        job: JobContext,
    ) -> Result<Value> {
        let started = Instant::now();
        let outcome = self
            .action_inner(path, args, Identity::Anonymous, Caller::Server, Some(job))
            .await;
        self.log_call(path, FunctionKind::Action, started, &outcome);
        outcome.map_err(|e| e.redact(path))
    }

    async fn action_inner(
        &self,
        path: &str,
        args: Vec<Value>,
        identity: Identity,
        caller: Caller,
        job: Option<JobContext>,
    ) -> Result<Value> {
        let function = self
            .inner
            .registry
            .lookup(path, FunctionKind::Action, caller.access())?
            .clone();
        let args = Registry::check_args(&function, &args)?;
        let FunctionHandler::Action(handler) = &function.handler else {
            return Err(Error::internal("lookup returned a non-action"));
        };
        let ctx = ActionCtx::new(identity, Arc::new(self.clone())).with_job(job);
        let fut = catch_panic(|| Ok(handler(ctx, args)))?;
        // A panic inside the future surfaces as a JoinError of its task.
        match tokio::spawn(fut).await {
            Ok(result) => result.and_then(check_result),
            Err(e) => Err(Error::internal(format!("action panicked: {e}"))),
        }
    }

    /// Evaluates a query in a read transaction the caller controls (the
    /// subscription manager re-runs many queries on one snapshot this way);
    /// also returns the journal the run left, if it paginated.
    pub fn evaluate_in(
        registry: &Registry,
        mut tx: Transaction,
        path: &str,
        args: &[Value],
        identity: &Identity,
    ) -> (Result<Value>, ReadSet, Option<String>) {
        let result = registry
            .lookup(path, FunctionKind::Query, Access::PublicOnly)
            .and_then(|f| Ok((f, Registry::check_args(f, args)?)))
            .and_then(|(f, args)| catch_panic(|| run_sync(f, &mut tx, identity, args)));
        let journal = tx.journal().map(str::to_string);
        (result, tx.into_sets().0, journal)
    }
}

/// What a keyed mutation's transaction did: answered from a stored outcome,
/// or ran.
enum Run {
    Replayed(MutationOutcome),
    Fresh(Value),
}

/// What a stored outcome is filed under: the client's request, and the
/// [`fingerprint`] of who called what with which arguments.
struct OutcomeKey {
    fingerprint: Vec<u8>,
    request: RequestKey,
}

impl OutcomeKey {
    /// The outcome stored under this key, if the mutation ran before.
    fn stored(&self, tx: &mut Transaction) -> Result<Option<MutationOutcome>> {
        tx.mutation_outcome(
            &self.request.session_id,
            self.request.request_id,
            &self.fingerprint,
        )
    }
}

/// A mutation's transaction: a resend is answered from its stored outcome;
/// otherwise the arguments are checked, the function runs, and — if it
/// wrote — its outcome is stored in the same transaction.
fn run_keyed_mutation(
    tx: &mut Transaction,
    function: &Function,
    identity: &Identity,
    args: &[Value],
    key: Option<OutcomeKey>,
) -> Result<Run> {
    if let Some(key) = &key {
        if let Some(stored) = key.stored(tx)? {
            return Ok(Run::Replayed(stored));
        }
    }
    let args = Registry::check_args(function, args)?;
    let value = run_sync(function, tx, identity, args)?;
    if let Some(key) = key {
        store_outcome(tx, key, &function.path, &value)?;
    }
    Ok(Run::Fresh(value))
}

/// Keeps a keyed mutation's outcome for its resends. Only a mutation that
/// wrote has an effect a resend could repeat, so only it keeps one. A failure
/// wrote nothing (its transaction is rolled back): it leaves nothing behind,
/// and its resend simply runs again.
fn store_outcome(tx: &mut Transaction, key: OutcomeKey, path: &str, value: &Value) -> Result<()> {
    if tx.write_set().is_empty() {
        return Ok(());
    }
    tx.store_mutation_outcome(&MutationOutcome {
        session_id: key.request.session_id,
        request_id: key.request.request_id,
        fingerprint: key.fingerprint,
        ts: tx.commit_ts().unwrap_or_default(),
        path: path.to_string(),
        value: value.clone(),
    })
}

/// What binds a stored outcome to its request: SHA-256 over who called (the
/// user, or anonymous), the function's canonical path and the arguments as
/// sent. A resend carries all three unchanged; anyone else differs in one.
fn fingerprint(identity: &Identity, path: &str, args: &[Value]) -> Vec<u8> {
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        // Length-prefixed, so no two different requests hash the same bytes.
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    match identity {
        Identity::Anonymous => part(b"anonymous"),
        Identity::User { user_id, .. } => part(format!("user:{user_id}").as_bytes()),
    }
    part(canonical_path(path).as_bytes());
    for arg in args {
        part(arg.to_json_text().as_bytes());
    }
    hash.finalize().to_vec()
}

impl FunctionRunner for Executor {
    fn run(
        &self,
        kind: FunctionKind,
        path: &str,
        args: Value,
        identity: Identity,
    ) -> BoxFuture<Result<Value>> {
        let this = self.clone();
        let path = path.to_string();
        Box::pin(async move {
            let args = vec![args];
            match kind {
                FunctionKind::Query => this
                    .query(&path, args, identity, Caller::Server)
                    .await
                    .map(|o| o.value),
                FunctionKind::Mutation => this
                    .mutation(&path, args, identity, Caller::Server, None)
                    .await
                    .map(|(v, _)| v),
                FunctionKind::Action => this.action(&path, args, identity, Caller::Server).await,
            }
        })
    }

    fn mailer(&self) -> Option<Mailer> {
        self.inner.mailer.clone()
    }

    fn files(&self) -> Option<crate::storage::Files> {
        self.inner.files.clone()
    }
}
