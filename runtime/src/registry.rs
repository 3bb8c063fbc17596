//! The function registry: an application's queries, mutations and actions,
//! registered under `module:name` paths with argument validators, plus its
//! schema. Handlers read like the seed's `query({args, handler})`:
//!
//! ```text
//! app.query("items:getAll", [("organizationId", v::string())], |ctx, args| {
//!     let organization_id = args.string("organizationId")?;
//!     ensure_user_with_organization(ctx, &organization_id)?;
//!     logic::get_items(&mut ctx.db, &organization_id)
//! });
//! ```
//!
//! or, typed — the arguments a `#[derive(Type)]` struct whose validator is
//! the function's, the result a [`Type`] that codegen declares:
//!
//! ```text
//! #[derive(Type)]
//! struct GetAll { organization_id: String }
//!
//! app.typed_query("items:getAll", |ctx, args: GetAll| -> Result<Vec<Doc<Item>>> {
//!     ensure_user_with_organization(ctx, &args.organization_id)?;
//!     logic::get_items(&mut ctx.db, &args.organization_id)
//! });
//! ```
//!
//! Both kinds are the same [`Function`] once registered: a validator the
//! call's arguments are checked against first (so a typed function's bad
//! arguments get the same `INVALID_ARGUMENT` naming `args.<field>`), and a
//! handler over values; a typed one also records its result's validator
//! ([`Function::returns`]).
//!
//! Queries and mutations are synchronous (they run inside one store
//! transaction, on a store thread); actions are async and reach the database
//! only through [`ActionCtx`]. What each handler is given lives in
//! [`crate::context`] (a query's context has reads only), what names a
//! function and its arguments in [`crate::function`], the caller in
//! [`crate::identity`]; all are re-exported here.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use livebase_schema::typed::Type;
use livebase_schema::{v, Schema, SharedObject, Validator, Value};

use crate::error::{Error, Result};
use crate::route::{HttpRequest, HttpResponse, Method, Route, Routes};
use crate::scheduler::cron::{CronJob, Schedule};
use crate::scheduler::retry::RetryPolicy;
use crate::transaction::Transaction;

pub use crate::context::{
    ActionCtx, BoxFuture, FunctionRunner, MutationCtx, QueryCtx, ReadCtx, Reader,
};
pub use crate::function::{canonical_path, Access, Args, FunctionKind, Visibility};
pub use crate::identity::Identity;

type QueryHandler = Arc<dyn Fn(&mut QueryCtx, Args) -> Result<Value> + Send + Sync>;
type MutationHandler = Arc<dyn Fn(&mut MutationCtx, Args) -> Result<Value> + Send + Sync>;
type ActionHandler = Arc<dyn Fn(ActionCtx, Args) -> BoxFuture<Result<Value>> + Send + Sync>;

/// A registered function's code, by kind: each kind's handler takes its own
/// context.
#[derive(Clone)]
#[non_exhaustive]
pub enum FunctionHandler {
    Query(QueryHandler),
    Mutation(MutationHandler),
    Action(ActionHandler),
}

/// One registered function (held by the registry behind an `Arc`).
pub struct Function {
    pub path: String,
    pub visibility: Visibility,
    pub args: Validator,
    /// The result's validator, for a function registered typed
    /// (`typed_query` …): what codegen declares it returns. `None`: any
    /// value (the untyped API).
    pub returns: Option<Validator>,
    pub handler: FunctionHandler,
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
            FunctionHandler::Query(_) => FunctionKind::Query,
            FunctionHandler::Mutation(_) => FunctionKind::Mutation,
            FunctionHandler::Action(_) => FunctionKind::Action,
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
    /// HTTP routes ([`Registry::route`]).
    routes: Routes,
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
            routes: Routes::default(),
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

    /// The declared HTTP routes.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Declares HTTP route `method pattern` (`/path/{param}`) — Convex's
    /// `http.route`: `handler` gets an action's context and the request, and
    /// answers a response; see [`crate::route`]. The returned route takes a
    /// CORS policy (`.cors(Cors::origins([..]))`). Panics, as registration
    /// does, on a malformed pattern, one under `/api`, `/_dashboard` or
    /// `/health`, or a method and pattern declared twice.
    pub fn route<F>(
        &mut self,
        method: Method,
        pattern: &str,
        handler: impl Fn(ActionCtx, HttpRequest) -> F + Send + Sync + 'static,
    ) -> &mut Route
    where
        F: Future<Output = Result<HttpResponse>> + Send + 'static,
    {
        self.routes.add(
            method,
            pattern,
            Arc::new(move |ctx, request| Box::pin(handler(ctx, request))),
        )
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

    fn add(
        &mut self,
        path: &str,
        visibility: Visibility,
        args: Validator,
        handler: FunctionHandler,
    ) {
        self.add_function(path, visibility, args, None, handler);
    }

    fn add_function(
        &mut self,
        path: &str,
        visibility: Visibility,
        args: Validator,
        returns: Option<Validator>,
        handler: FunctionHandler,
    ) {
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
                returns,
                handler,
                retry: None,
                forget_when_done: &[],
            }),
        );
    }

    fn query_handler<R: Into<Value>>(
        handler: impl Fn(&mut QueryCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) -> FunctionHandler {
        FunctionHandler::Query(Arc::new(move |ctx, args| {
            handler(ctx, args).map(Into::into)
        }))
    }

    fn mutation_handler<R: Into<Value>>(
        handler: impl Fn(&mut MutationCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) -> FunctionHandler {
        FunctionHandler::Mutation(Arc::new(move |ctx, args| {
            handler(ctx, args).map(Into::into)
        }))
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
        let h = Self::query_handler(handler);
        self.add(path, Visibility::Public, object_validator(args), h);
    }

    /// Registers an internal query.
    pub fn internal_query<'a, R: Into<Value>>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(&mut QueryCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Self::query_handler(handler);
        self.add(path, Visibility::Internal, object_validator(args), h);
    }

    /// Registers a public mutation.
    pub fn mutation<'a, R: Into<Value>>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(&mut MutationCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Self::mutation_handler(handler);
        self.add(path, Visibility::Public, object_validator(args), h);
    }

    /// Registers an internal mutation.
    pub fn internal_mutation<'a, R: Into<Value>>(
        &mut self,
        path: &str,
        args: impl IntoIterator<Item = (&'a str, Validator)>,
        handler: impl Fn(&mut MutationCtx, Args) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Self::mutation_handler(handler);
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
        let h = FunctionHandler::Action(Self::action_handler(handler));
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
        let h = FunctionHandler::Action(Self::action_handler(handler));
        self.add(path, Visibility::Internal, object_validator(args), h);
    }

    /// Registers a typed function: its argument validator is `A`'s, its
    /// result `R`'s. Panics, as registration does, when `A` is not an object.
    fn add_typed<A: Type, R: Type>(
        &mut self,
        path: &str,
        visibility: Visibility,
        handler: FunctionHandler,
    ) {
        let args = A::validator();
        assert!(
            args.object_fields().is_some(),
            "function `{path}`: its argument type is not an object (a struct with named fields)"
        );
        self.add_function(path, visibility, args, Some(R::validator()), handler);
    }

    fn typed_query_handler<A: Type, R: Type>(
        handler: impl Fn(&mut QueryCtx, A) -> Result<R> + Send + Sync + 'static,
    ) -> FunctionHandler {
        FunctionHandler::Query(Arc::new(move |ctx, args| {
            handler(ctx, typed_args(args)?).map(R::into_value)
        }))
    }

    fn typed_mutation_handler<A: Type, R: Type>(
        handler: impl Fn(&mut MutationCtx, A) -> Result<R> + Send + Sync + 'static,
    ) -> FunctionHandler {
        FunctionHandler::Mutation(Arc::new(move |ctx, args| {
            handler(ctx, typed_args(args)?).map(R::into_value)
        }))
    }

    fn typed_action_handler<A, R, F>(
        handler: impl Fn(ActionCtx, A) -> F + Send + Sync + 'static,
    ) -> FunctionHandler
    where
        A: Type,
        R: Type,
        F: Future<Output = Result<R>> + Send + 'static,
    {
        FunctionHandler::Action(Arc::new(move |ctx, args| {
            let args = match typed_args(args) {
                Ok(args) => args,
                Err(e) => return Box::pin(async move { Err(e) }),
            };
            let fut = handler(ctx, args);
            Box::pin(async move { fut.await.map(R::into_value) })
        }))
    }

    /// Registers a public query taking `A` and returning `R`.
    pub fn typed_query<A: Type, R: Type>(
        &mut self,
        path: &str,
        handler: impl Fn(&mut QueryCtx, A) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Self::typed_query_handler(handler);
        self.add_typed::<A, R>(path, Visibility::Public, h);
    }

    /// Registers an internal query taking `A` and returning `R`.
    pub fn typed_internal_query<A: Type, R: Type>(
        &mut self,
        path: &str,
        handler: impl Fn(&mut QueryCtx, A) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Self::typed_query_handler(handler);
        self.add_typed::<A, R>(path, Visibility::Internal, h);
    }

    /// Registers a public mutation taking `A` and returning `R`.
    pub fn typed_mutation<A: Type, R: Type>(
        &mut self,
        path: &str,
        handler: impl Fn(&mut MutationCtx, A) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Self::typed_mutation_handler(handler);
        self.add_typed::<A, R>(path, Visibility::Public, h);
    }

    /// Registers an internal mutation taking `A` and returning `R`.
    pub fn typed_internal_mutation<A: Type, R: Type>(
        &mut self,
        path: &str,
        handler: impl Fn(&mut MutationCtx, A) -> Result<R> + Send + Sync + 'static,
    ) {
        let h = Self::typed_mutation_handler(handler);
        self.add_typed::<A, R>(path, Visibility::Internal, h);
    }

    /// Registers a public action taking `A` and returning `R`.
    pub fn typed_action<A, R, F>(
        &mut self,
        path: &str,
        handler: impl Fn(ActionCtx, A) -> F + Send + Sync + 'static,
    ) where
        A: Type,
        R: Type,
        F: Future<Output = Result<R>> + Send + 'static,
    {
        let h = Self::typed_action_handler(handler);
        self.add_typed::<A, R>(path, Visibility::Public, h);
    }

    /// Registers an internal action taking `A` and returning `R`.
    pub fn typed_internal_action<A, R, F>(
        &mut self,
        path: &str,
        handler: impl Fn(ActionCtx, A) -> F + Send + Sync + 'static,
    ) where
        A: Type,
        R: Type,
        F: Future<Output = Result<R>> + Send + 'static,
    {
        let h = Self::typed_action_handler(handler);
        self.add_typed::<A, R>(path, Visibility::Internal, h);
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

    /// Finds a function of `kind` at `path`, among those `access` may find:
    /// an internal function is not found by [`Access::PublicOnly`] — with
    /// the same error as a missing one.
    pub fn lookup(&self, path: &str, kind: FunctionKind, access: Access) -> Result<&Arc<Function>> {
        let path = canonical_path(path);
        match self.functions.get(&path) {
            Some(f) if f.kind() == kind && access.allows(f.visibility) => Ok(f),
            _ => Err(Error::invalid(format!(
                "Could not find public function for '{path}' (no {} with that path)",
                kind.name()
            ))),
        }
    }

    /// Checks a call's arguments — the wire form is an array holding one object —
    /// against the function's validator.
    pub fn check_args(function: &Function, args: &[Value]) -> Result<Args> {
        // The caller's object itself, shared: a live query's arguments are
        // checked against the limits once (the object keeps the outcome),
        // and no re-run copies them.
        let fields = match args {
            [] => SharedObject::default(),
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
            Value::Object(o) => Ok(Args::new(o)),
            _ => unreachable!("built as an object above"),
        }
    }
}

/// A typed function's arguments, already checked against `A`'s validator
/// (so reading them fails only if the two disagreed, a bug).
fn typed_args<A: Type>(args: Args) -> Result<A> {
    A::from_value(args.into_value(), "args").map_err(|e| Error::invalid(e.to_string()))
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
    match &function.handler {
        FunctionHandler::Query(h) => {
            let mut ctx = QueryCtx {
                db: Reader::new(tx),
                identity,
            };
            check_result(h(&mut ctx, args)?)
        }
        FunctionHandler::Mutation(h) => {
            let mut ctx = MutationCtx { db: tx, identity };
            check_result(h(&mut ctx, args)?)
        }
        FunctionHandler::Action(_) => Err(Error::internal("an action cannot run in a transaction")),
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

#[cfg(test)]
mod tests;
