//! The function registry: an application's queries, mutations and actions,
//! registered under `module:name` paths with argument validators, plus its
//! schema. Handlers read like the seed's `query({args, handler})`:
//!
//! ```text
//! app.query("items:getAll", [("organizationId", v::string())], |ctx, args| {
//!     let organization_id = args.string("organizationId")?;
//!     ensure_user_with_organization(ctx, &organization_id)?;
//!     logic::get_items(ctx.db, &organization_id)
//! });
//! ```
//!
//! Queries and mutations are synchronous (they run inside one store
//! transaction, on a store thread); actions are async and reach the database
//! only through [`ActionCtx`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use livebase_schema::{v, DocumentId, Object, Schema, Validator, Value};

use crate::email::Mailer;
use crate::error::{Error, Result};
use crate::scheduler::{CronJob, JobContext, RetryPolicy, Schedule, Scheduler};
use crate::transaction::Transaction;

/// Who is calling: nobody, or a signed-in user with a live session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Identity {
    #[default]
    Anonymous,
    User {
        user_id: String,
        session_id: String,
    },
}

impl Identity {
    /// A stable key for sharing query evaluations between identical callers.
    pub fn cache_key(&self) -> String {
        match self {
            Identity::Anonymous => String::new(),
            Identity::User { session_id, .. } => session_id.clone(),
        }
    }
}

/// What a query or mutation handler gets: the transaction and the caller.
pub struct Ctx<'t, 'a> {
    pub db: &'t mut Transaction<'a>,
    pub identity: &'t Identity,
}

impl<'a> Ctx<'_, 'a> {
    /// Schedules functions from a mutation, in its transaction — the seed's
    /// `ctx.scheduler`: `ctx.scheduler().run_after(Duration::ZERO, "emails:send", args)`.
    pub fn scheduler(&mut self) -> Scheduler<'_, 'a> {
        Scheduler::new(self.db)
    }
}

/// The seed's names for the two contexts; a query's transaction refuses writes.
pub type QueryCtx<'t, 'a> = Ctx<'t, 'a>;
pub type MutationCtx<'t, 'a> = Ctx<'t, 'a>;

/// Validated arguments of a call, with typed accessors whose errors name the
/// argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Args(Object);

impl Args {
    pub fn new(fields: Object) -> Args {
        Args(fields)
    }

    pub fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }

    pub fn string(&self, name: &str) -> Result<String> {
        match self.0.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            other => Err(Error::invalid(format!(
                "args.{name}: expected a string, found {}",
                describe(other)
            ))),
        }
    }

    pub fn opt_string(&self, name: &str) -> Result<Option<String>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(_) => self.string(name).map(Some),
        }
    }

    pub fn f64(&self, name: &str) -> Result<f64> {
        self.0.get(name).and_then(Value::as_f64).ok_or_else(|| {
            Error::invalid(format!(
                "args.{name}: expected a number, found {}",
                describe(self.0.get(name))
            ))
        })
    }

    pub fn bool(&self, name: &str) -> Result<bool> {
        self.0.get(name).and_then(Value::as_bool).ok_or_else(|| {
            Error::invalid(format!(
                "args.{name}: expected a boolean, found {}",
                describe(self.0.get(name))
            ))
        })
    }

    /// An id argument that must name a document of `table`.
    pub fn id(&self, name: &str, table: &str) -> Result<DocumentId> {
        let s = self.string(name)?;
        DocumentId::parse_in(&s, table).ok_or_else(|| {
            Error::invalid(format!(
                "args.{name}: `{s}` is not an id of table `{table}`"
            ))
        })
    }
}

fn describe(v: Option<&Value>) -> String {
    v.map_or("nothing".into(), |v| v.value_type().to_string())
}

type SyncHandler = Arc<dyn Fn(&mut Ctx, Args) -> Result<Value> + Send + Sync>;
/// A boxed future as actions return it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ActionHandler = Arc<dyn Fn(ActionCtx, Args) -> BoxFuture<Result<Value>> + Send + Sync>;

/// What an action handler gets: the caller and a way to run other functions.
#[derive(Clone)]
pub struct ActionCtx {
    pub identity: Identity,
    runner: Arc<dyn FunctionRunner>,
    job: Option<JobContext>,
}

impl ActionCtx {
    pub fn new(identity: Identity, runner: Arc<dyn FunctionRunner>) -> ActionCtx {
        ActionCtx {
            identity,
            runner,
            job: None,
        }
    }

    /// The same context, for an action the scheduler runs as `job`.
    pub fn with_job(mut self, job: Option<JobContext>) -> ActionCtx {
        self.job = job;
        self
    }

    /// The scheduled job this action runs for — its id is the same on every
    /// attempt of a retryable action, a key to make its effect safe to
    /// repeat — or `None` when it was called directly.
    pub fn job(&self) -> Option<&JobContext> {
        self.job.as_ref()
    }

    /// Runs a query (public or internal) as this action's caller.
    pub async fn run_query(&self, path: &str, args: Value) -> Result<Value> {
        self.runner
            .run(FunctionKind::Query, path, args, self.identity.clone())
            .await
    }

    /// Runs a mutation (public or internal) as this action's caller.
    pub async fn run_mutation(&self, path: &str, args: Value) -> Result<Value> {
        self.runner
            .run(FunctionKind::Mutation, path, args, self.identity.clone())
            .await
    }

    /// Runs an action (public or internal) as this action's caller.
    pub async fn run_action(&self, path: &str, args: Value) -> Result<Value> {
        self.runner
            .run(FunctionKind::Action, path, args, self.identity.clone())
            .await
    }

    /// The server's mailer: SMTP when configured, the outbox folder otherwise.
    pub fn mailer(&self) -> Result<Mailer> {
        self.runner
            .mailer()
            .ok_or_else(|| Error::internal("this server has no mailer"))
    }
}

/// Runs functions on behalf of actions; implemented by the executor.
pub trait FunctionRunner: Send + Sync + 'static {
    fn run(
        &self,
        kind: FunctionKind,
        path: &str,
        args: Value,
        identity: Identity,
    ) -> BoxFuture<Result<Value>>;

    /// The mailer actions send through, if the server has one.
    fn mailer(&self) -> Option<Mailer> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    Query,
    Mutation,
    Action,
}

impl FunctionKind {
    pub fn name(self) -> &'static str {
        match self {
            FunctionKind::Query => "query",
            FunctionKind::Mutation => "mutation",
            FunctionKind::Action => "action",
        }
    }
}

/// Whether clients may call a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    Public,
    /// Callable only from actions and the scheduler; to clients it looks
    /// exactly like a function that does not exist.
    Internal,
}

#[derive(Clone)]
pub enum Handler {
    Query(SyncHandler),
    Mutation(SyncHandler),
    Action(ActionHandler),
}

/// One registered function (held by the registry behind an `Arc`).
pub struct Function {
    pub path: String,
    pub visibility: Visibility,
    pub args: Validator,
    pub handler: Handler,
    /// For an action declared with [`Registry::retryable`]: how the scheduler
    /// retries its jobs. `None`: a scheduled run happens at most once.
    pub retry: Option<RetryPolicy>,
    /// Argument fields (dotted paths into the arguments object) removed from
    /// a job's `_scheduled_functions` row once it has succeeded or failed,
    /// declared with [`Registry::forget_args_when_done`].
    pub forget_when_done: &'static [&'static str],
}

impl Function {
    pub fn kind(&self) -> FunctionKind {
        match self.handler {
            Handler::Query(_) => FunctionKind::Query,
            Handler::Mutation(_) => FunctionKind::Mutation,
            Handler::Action(_) => FunctionKind::Action,
        }
    }
}

/// An application: its schema, functions and crons.
#[derive(Clone, Default)]
pub struct Registry {
    schema: Schema,
    /// Shared, so a call holds its function without copying its validator.
    functions: BTreeMap<String, Arc<Function>>,
    crons: Vec<CronJob>,
}

/// The canonical form of a function path: `module:name`, a module's `.js`
/// suffix dropped (the npm client may send it) and `default` when no name is
/// given.
pub fn canonical_path(path: &str) -> String {
    let (module, name) = path.rsplit_once(':').unwrap_or((path, "default"));
    let module = module.strip_suffix(".js").unwrap_or(module);
    format!("{module}:{name}")
}

fn object_validator<'a>(args: impl IntoIterator<Item = (&'a str, Validator)>) -> Validator {
    v::object(args)
}

impl Registry {
    pub fn new(schema: Schema) -> Registry {
        Registry {
            schema,
            functions: BTreeMap::new(),
            crons: Vec::new(),
        }
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Adds tables (the runtime adds its system tables this way).
    pub fn extend_schema(&mut self, f: impl FnOnce(Schema) -> Schema) {
        self.schema = f(std::mem::take(&mut self.schema));
    }

    pub fn functions(&self) -> impl Iterator<Item = &Function> {
        self.functions.values().map(Arc::as_ref)
    }

    /// The function at `path`, whatever its kind and visibility.
    pub fn get(&self, path: &str) -> Option<&Arc<Function>> {
        self.functions.get(&canonical_path(path))
    }

    /// The declared crons.
    pub fn crons(&self) -> &[CronJob] {
        &self.crons
    }

    /// Declares cron `name`: run mutation or action `path` with `args` every
    /// `every`, the first time `every` after the cron is first served — the
    /// seed's `crons.interval`. A run missed while the server was down happens
    /// once after it starts; see [`crate::scheduler::cron`].
    pub fn interval(&mut self, name: &str, every: Duration, path: &str, args: impl Into<Value>) {
        let schedule = Schedule::interval(every)
            .unwrap_or_else(|e| panic!("cron `{name}` has an invalid interval: {e}"));
        self.add_cron(name, schedule, path, args.into());
    }

    /// Declares cron `name`: run mutation or action `path` with `args` when the
    /// cron expression matches (UTC; five fields, or six with leading seconds)
    /// — the seed's `crons.cron`.
    pub fn cron(&mut self, name: &str, expression: &str, path: &str, args: impl Into<Value>) {
        let schedule = Schedule::cron(expression)
            .unwrap_or_else(|e| panic!("cron `{name}` has an invalid schedule: {e}"));
        self.add_cron(name, schedule, path, args.into());
    }

    fn add_cron(&mut self, name: &str, schedule: Schedule, path: &str, args: Value) {
        assert!(
            !self.crons.iter().any(|c| c.name == name),
            "cron `{name}` is declared twice"
        );
        let cron = CronJob::new(name, schedule, path, args)
            .unwrap_or_else(|e| panic!("cron `{name}`: {e}"));
        self.crons.push(cron);
    }

    fn add(&mut self, path: &str, visibility: Visibility, args: Validator, handler: Handler) {
        let path = canonical_path(path);
        assert!(
            !self.functions.contains_key(&path),
            "function `{path}` is registered twice"
        );
        if let Err(e) = args.check_definition("args") {
            panic!("function `{path}` has an invalid argument validator: {e}");
        }
        self.functions.insert(
            path.clone(),
            Arc::new(Function {
                path,
                visibility,
                args,
                handler,
                retry: None,
                forget_when_done: &[],
            }),
        );
    }

    fn sync<R: Into<Value>>(
        handler: impl Fn(&mut Ctx, Args) -> Result<R> + Send + Sync + 'static,
    ) -> SyncHandler {
        Arc::new(move |ctx, args| handler(ctx, args).map(Into::into))
    }

    fn action_handler<F, R>(
        handler: impl Fn(ActionCtx, Args) -> F + Send + Sync + 'static,
    ) -> ActionHandler
    where
        F: Future<Output = Result<R>> + Send + 'static,
        R: Into<Value>,
    {
        Arc::new(move |ctx, args| {
            let fut = handler(ctx, args);
            Box::pin(async move { fut.await.map(Into::into) })
        })
    }

    /// Registers a public query.
    pub fn query<'a, R: Into<Value>>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(&mut QueryCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Handler::Query(Self::sync(handler));
        self.add(path, Visibility::Public, object_validator(args), h);
    }

    /// Registers an internal query.
    pub fn internal_query<'a, R: Into<Value>>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(&mut QueryCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Handler::Query(Self::sync(handler));
        self.add(path, Visibility::Internal, object_validator(args), h);
    }

    /// Registers a public mutation.
    pub fn mutation<'a, R: Into<Value>>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(&mut MutationCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Handler::Mutation(Self::sync(handler));
        self.add(path, Visibility::Public, object_validator(args), h);
    }

    /// Registers an internal mutation.
    pub fn internal_mutation<'a, R: Into<Value>>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(&mut MutationCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Handler::Mutation(Self::sync(handler));
        self.add(path, Visibility::Internal, object_validator(args), h);
    }

    /// Registers a public action.
    pub fn action<'a, F, R>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(ActionCtx, Args) -> F + Send + Sync + 'static,
    ) where
        F: Future<Output = Result<R>> + Send + 'static,
        R: Into<Value>,
    {
        let h = Handler::Action(Self::action_handler(handler));
        self.add(path, Visibility::Public, object_validator(args), h);
    }

    /// Registers an internal action.
    pub fn internal_action<'a, F, R>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(ActionCtx, Args) -> F + Send + Sync + 'static,
    ) where
        F: Future<Output = Result<R>> + Send + 'static,
        R: Into<Value>,
    {
        let h = Handler::Action(Self::action_handler(handler));
        self.add(path, Visibility::Internal, object_validator(args), h);
    }

    /// Declares action `path` (already registered) retryable under `policy`:
    /// a scheduled run of it that fails with a [`crate::scheduler::transient`]
    /// error, or is cut short by a crash, runs again (`docs/reference/invariants.md`, invariant 7).
    /// The action must make its effect safe to repeat, keyed by
    /// [`ActionCtx::job`]. Panics, as registration does, on a missing
    /// function, one that is not an action, or an invalid policy.
    pub fn retryable(&mut self, path: &str, policy: RetryPolicy) {
        let path = canonical_path(path);
        let policy = policy
            .validated()
            .unwrap_or_else(|e| panic!("the retry policy of `{path}`: {e}"));
        let Some(function) = self.functions.get_mut(&path) else {
            panic!("`{path}` is declared retryable but not registered");
        };
        assert!(
            function.kind() == FunctionKind::Action,
            "`{path}` is declared retryable but is not an action"
        );
        let Some(function) = Arc::get_mut(function) else {
            panic!("`{path}` is declared retryable after the registry was shared");
        };
        function.retry = Some(policy);
    }

    /// Declares that the argument fields `fields` (dotted paths, such as
    /// `data.url`) of retryable action `path`'s jobs are removed from their
    /// `_scheduled_functions` rows once the job has succeeded or failed:
    /// arguments that must survive a crash until the run and no longer, such
    /// as a mailed link holding a one-time token. Panics, as registration
    /// does, unless `path` is declared [`Registry::retryable`] already.
    pub fn forget_args_when_done(&mut self, path: &str, fields: &'static [&'static str]) {
        let path = canonical_path(path);
        let Some(function) = self.functions.get_mut(&path) else {
            panic!("`{path}` forgets arguments but is not registered");
        };
        assert!(
            function.retry.is_some(),
            "`{path}` forgets arguments when done but is not declared retryable"
        );
        let Some(function) = Arc::get_mut(function) else {
            panic!("`{path}` forgets arguments after the registry was shared");
        };
        function.forget_when_done = fields;
    }

    /// Finds a function of `kind` at `path`. With `public_only`, internal
    /// functions are not found — with the same error as a missing one.
    pub fn lookup(
        &self,
        path: &str,
        kind: FunctionKind,
        public_only: bool,
    ) -> Result<&Arc<Function>> {
        let path = canonical_path(path);
        match self.functions.get(&path) {
            Some(f) if f.kind() == kind && (!public_only || f.visibility == Visibility::Public) => {
                Ok(f)
            }
            _ => Err(Error::invalid(format!(
                "Could not find public function for '{path}' (no {} with that path)",
                kind.name()
            ))),
        }
    }

    /// Checks a call's arguments — the wire form is an array holding one object —
    /// against the function's validator.
    pub fn check_args(function: &Function, args: &[Value]) -> Result<Args> {
        let fields = match args {
            [] => Object::new(),
            [Value::Object(o)] => o.clone(),
            [other] => {
                return Err(Error::invalid(format!(
                    "args: expected an object, found {}",
                    other.value_type()
                )))
            }
            _ => {
                return Err(Error::invalid(format!(
                    "args: expected one argument object, found {}",
                    args.len()
                )))
            }
        };
        let value = Value::Object(fields);
        value
            .check_limits("args")
            .map_err(|e| Error::limit(e.to_string()))?;
        function
            .args
            .validate(&value, "args")
            .map_err(|e| Error::invalid(e.to_string()))?;
        match value {
            Value::Object(o) => Ok(Args(o)),
            _ => unreachable!("built as an object above"),
        }
    }
}

/// Runs a query or mutation handler in `tx`. Its result is checked against
/// the value limits here, inside the transaction, so that every path (the
/// WebSocket, HTTP, a function calling another) refuses an oversized result
/// before encoding it, and a mutation returning one is rolled back.
pub fn run_sync(
    function: &Function,
    tx: &mut Transaction,
    identity: &Identity,
    args: Args,
) -> Result<Value> {
    let mut ctx = Ctx { db: tx, identity };
    match &function.handler {
        Handler::Query(h) | Handler::Mutation(h) => check_result(h(&mut ctx, args)?),
        Handler::Action(_) => Err(Error::internal("an action cannot run in a transaction")),
    }
}

/// A function's result, if within [`livebase_schema::value::MAX_VALUE_SIZE`]
/// and the other value limits; `LIMIT_EXCEEDED` naming the limit otherwise.
pub fn check_result(value: Value) -> Result<Value> {
    value
        .check_limits("result")
        .map_err(|e| Error::limit(e.to_string()))?;
    Ok(value)
}
