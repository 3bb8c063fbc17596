//! What a function's handler is given. A query gets a [`QueryCtx`], whose
//! [`Reader`] has the transaction's reads and nothing else, so a write inside
//! a query does not compile; a mutation gets a [`MutationCtx`], with the
//! whole [`Transaction`] and the scheduler; an action gets an [`ActionCtx`],
//! which reaches the database only by calling other functions. Checks that
//! both queries and mutations start with (is the caller signed in, a member)
//! take any [`ReadCtx`].
//!
//! A query cannot write:
//!
//! ```compile_fail,E0599
//! # use livebase_runtime::registry::Registry;
//! # use livebase_schema::{obj, v, Value};
//! let mut app = Registry::default();
//! app.query("notes:sneaky", [("body", v::string())], |ctx, args| {
//!     ctx.db.insert("notes", obj! { "body" => args.string("body")? })?;
//!     Ok(Value::Null)
//! });
//! ```
//!
//! while the same handler reading, or registered as a mutation, does:
//!
//! ```
//! # use livebase_runtime::registry::Registry;
//! # use livebase_schema::{obj, v, Value};
//! let mut app = Registry::default();
//! app.query("notes:list", [("body", v::string())], |ctx, _args| {
//!     ctx.db.query("notes").collect()
//! });
//! app.mutation("notes:add", [("body", v::string())], |ctx, args| {
//!     ctx.db.insert("notes", obj! { "body" => args.string("body")? })?;
//!     Ok(Value::Null)
//! });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use livebase_schema::typed::{Doc, Id, Table, Type};
use livebase_schema::{DocumentId, Schema, Timestamp, Value};

use crate::email::Mailer;
use crate::error::{Error, Result};
use crate::function::FunctionKind;
use crate::identity::Identity;
use crate::scheduler::retry::JobContext;
use crate::scheduler::Scheduler;
use crate::storage::{Files, StorageReader, StorageWriter};
use crate::transaction::{Query, Transaction};
use crate::typed::TypedQuery;

/// A transaction seen through a query: its reads (each recorded in the read
/// set, as every read is) and none of its writes.
pub struct Reader<'t, 'a> {
    tx: &'t mut Transaction<'a>,
}

impl<'t, 'a> Reader<'t, 'a> {
    /// The reads of `tx` — in a mutation, for logic shared with queries.
    pub fn new(tx: &'t mut Transaction<'a>) -> Reader<'t, 'a> {
        Reader { tx }
    }

    /// The same reader, borrowed for a shorter time (to hand to a helper
    /// and keep using it after).
    pub fn reborrow(&mut self) -> Reader<'_, 'a> {
        Reader { tx: self.tx }
    }

    /// The document with this id, or `None`.
    pub fn get(&mut self, id: &DocumentId) -> Result<Option<Value>> {
        self.tx.get(id)
    }

    /// Starts a query over `table`; see [`Transaction::query`].
    pub fn query(&mut self, table: &str) -> Query<'_, 'a> {
        self.tx.query(table)
    }

    /// The document of table `T` with this id, typed, or `None`.
    pub fn get_doc<T: Table + Type>(&mut self, id: &Id<T>) -> Result<Option<Doc<T>>> {
        self.tx.get_doc(id)
    }

    /// Starts a query over `T`'s table, answering `Doc<T>`s; see
    /// [`Transaction::query_of`].
    pub fn query_of<T: Table + Type>(&mut self) -> TypedQuery<'_, 'a, T> {
        self.tx.query_of()
    }

    /// The snapshot this transaction reads.
    pub fn snapshot_ts(&self) -> Timestamp {
        self.tx.snapshot_ts()
    }

    /// The timestamp a mutation's transaction will commit at; `None` in a
    /// query.
    pub fn commit_ts(&self) -> Option<Timestamp> {
        self.tx.commit_ts()
    }

    pub fn schema(&self) -> &Schema {
        self.tx.schema()
    }
}

impl<'t, 'a> From<&'t mut Transaction<'a>> for Reader<'t, 'a> {
    fn from(tx: &'t mut Transaction<'a>) -> Self {
        Reader::new(tx)
    }
}

/// What a query handler gets: reads and the caller.
pub struct QueryCtx<'t, 'a> {
    pub db: Reader<'t, 'a>,
    pub identity: &'t Identity,
}

impl<'a> QueryCtx<'_, 'a> {
    /// Stored files' URLs and metadata — the seed's `ctx.storage` in a query.
    pub fn storage(&mut self) -> StorageReader<'_, 'a> {
        StorageReader::new(self.db.tx)
    }
}

/// What a mutation handler gets: the transaction, reads and writes, and the
/// caller.
pub struct MutationCtx<'t, 'a> {
    pub db: &'t mut Transaction<'a>,
    pub identity: &'t Identity,
}

impl<'a> MutationCtx<'_, 'a> {
    /// Schedules functions from a mutation, in its transaction — the seed's
    /// `ctx.scheduler`: `ctx.scheduler().run_after(Duration::ZERO, "emails:send", args)`.
    pub fn scheduler(&mut self) -> Scheduler<'_, 'a> {
        Scheduler::new(self.db)
    }

    /// Stored files from a mutation, in its transaction — the seed's
    /// `ctx.storage`: upload URLs, URLs, metadata, deletion.
    pub fn storage(&mut self) -> StorageWriter<'_, 'a> {
        StorageWriter::new(self.db, self.identity)
    }
}

/// What a query's and a mutation's context share: the caller, and reads.
pub trait ReadCtx<'a> {
    /// The caller.
    fn identity(&self) -> &Identity;
    /// The transaction's reads, with the caller (both at once, as a check
    /// needs them).
    fn reads(&mut self) -> (Reader<'_, 'a>, &Identity);
}

impl<'a> ReadCtx<'a> for QueryCtx<'_, 'a> {
    fn identity(&self) -> &Identity {
        self.identity
    }
    fn reads(&mut self) -> (Reader<'_, 'a>, &Identity) {
        (self.db.reborrow(), self.identity)
    }
}

impl<'a> ReadCtx<'a> for MutationCtx<'_, 'a> {
    fn identity(&self) -> &Identity {
        self.identity
    }
    fn reads(&mut self) -> (Reader<'_, 'a>, &Identity) {
        (Reader::new(self.db), self.identity)
    }
}

/// A boxed future as actions return it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

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

    /// Runs a query as [`ActionCtx::run_query`] does, with typed arguments
    /// and result: `R` is what the query declares it returns.
    pub async fn run_typed_query<A: Type, R: Type>(&self, path: &str, args: A) -> Result<R> {
        typed_result(path, self.run_query(path, args.into_value()).await?)
    }

    /// Runs a mutation as [`ActionCtx::run_mutation`] does, typed.
    pub async fn run_typed_mutation<A: Type, R: Type>(&self, path: &str, args: A) -> Result<R> {
        typed_result(path, self.run_mutation(path, args.into_value()).await?)
    }

    /// Runs an action as [`ActionCtx::run_action`] does, typed.
    pub async fn run_typed_action<A: Type, R: Type>(&self, path: &str, args: A) -> Result<R> {
        typed_result(path, self.run_action(path, args.into_value()).await?)
    }

    /// The server's mailer: SMTP when configured, the outbox folder otherwise.
    pub fn mailer(&self) -> Result<Mailer> {
        self.runner
            .mailer()
            .ok_or_else(|| Error::internal("this server has no mailer"))
    }

    /// Stored files from an action — the seed's `ctx.storage`: `store`
    /// bytes as a new file, `get` a file's bytes.
    pub fn storage(&self) -> Result<Files> {
        self.runner
            .files()
            .ok_or_else(|| Error::internal("this server has no file storage"))
    }
}

/// `value`, what `path` answered, as `R`: a result that is not the type
/// the caller expects is the caller's mistake, an internal error.
fn typed_result<R: Type>(path: &str, value: Value) -> Result<R> {
    R::from_value(value, "result")
        .map_err(|e| Error::internal(format!("`{path}` answered another type: {e}")))
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

    /// The file storage actions use, if the server has one.
    fn files(&self) -> Option<Files> {
        None
    }
}
