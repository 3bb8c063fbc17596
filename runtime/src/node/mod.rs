//! Several nodes on one shared store (PostgreSQL): one writer under a lease,
//! the others followers.
//!
//! Every node serves queries and live queries from the store and learns of
//! commits from its commit log (see [`crate::database`]). Only the writer
//! commits: a follower's [`crate::database::Database`] refuses to, its
//! [`crate::executor::Executor`] forwards each mutation — with the caller's
//! identity and `(sessionId, requestId)` — to the writer's
//! [`FORWARD_PATH`] ([`Node::forward_mutation`]); a file's bytes go into
//! the store the nodes share from the node that received them, and only its
//! row is committed by the writer ([`Node::commit_file`]); and the HTTP
//! routes that write outside of functions (`/api/auth/*`) are passed to the
//! writer whole ([`Node::proxy`]). Nodes prove themselves to each other with
//! a secret they share through the store ([`NODE_SECRET`]).
//!
//! The lease itself is the store's ([`Lease`]): a follower tries to take it
//! every [`LEASE_POLL`] and becomes the writer when it gets it; a writer
//! that loses it stops serving (see `server`).

pub mod client;
pub mod forward;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use forward::{PassedBody, FORWARD_PATH, NODE_HEADER};
pub use livebase_store::Lease;

use crate::error::Result;

/// How often a follower tries to take the lease.
pub const LEASE_POLL: Duration = Duration::from_millis(250);
/// How often the writer checks that it still holds the lease.
pub const LEASE_CHECK: Duration = Duration::from_millis(250);
/// The name of the secret nodes prove themselves to each other with, among
/// the store's shared secrets.
pub const NODE_SECRET: &str = "node";
/// The name of the deployment's secret (tokens, cursors) among the store's
/// shared secrets: every node signs and checks tokens with the same key.
pub const DEPLOYMENT_SECRET: &str = "deployment";

/// The writer's URL as last read, and when.
#[derive(Default)]
struct Target {
    url: Option<String>,
    read: Option<Instant>,
}

/// How old the writer's URL as last read may be before a call that did not
/// reach it reads it again.
pub const WRITER_REREAD: Duration = Duration::from_millis(100);

/// This node: writer or follower, and how to reach the writer.
pub struct Node {
    lease: Arc<dyn Lease>,
    writer: AtomicBool,
    /// Where this node takes forwarded writes once it is the writer.
    own_url: String,
    /// The nodes' secret as [`NODE_HEADER`] carries it.
    secret: String,
    /// The writer's URL as last read from the store.
    target: tokio::sync::Mutex<Target>,
    client: client::Pool,
    /// Calls to the writer in flight ([`forward::MAX_CALLS_TO_WRITER`]).
    calls: tokio::sync::Semaphore,
    /// Uploads being passed to the writer
    /// ([`forward::MAX_UPLOADS_PASSED_ON`]).
    uploads: tokio::sync::Semaphore,
}

impl Node {
    /// A node over `lease`, not the writer yet, reachable at `own_url`.
    pub fn new(lease: Arc<dyn Lease>, own_url: String) -> Result<Node> {
        let secret = forward::encode_secret(&lease.secret(NODE_SECRET, None)?);
        Ok(Node {
            lease,
            writer: AtomicBool::new(false),
            own_url,
            secret,
            target: tokio::sync::Mutex::new(Target::default()),
            client: client::Pool::default(),
            calls: tokio::sync::Semaphore::new(forward::MAX_CALLS_TO_WRITER),
            uploads: tokio::sync::Semaphore::new(forward::MAX_UPLOADS_PASSED_ON),
        })
    }

    pub fn lease(&self) -> &Arc<dyn Lease> {
        &self.lease
    }

    /// Whether this node is the writer now.
    pub fn is_writer(&self) -> bool {
        self.writer.load(Ordering::SeqCst)
    }

    /// Marks this node the writer (it holds the lease) and tells the others
    /// where to forward writes.
    pub fn become_writer(&self) -> Result<()> {
        self.writer.store(true, Ordering::SeqCst);
        Ok(self.lease.advertise(&self.own_url)?)
    }

    /// Marks this node as no longer the writer.
    pub fn step_down(&self) {
        self.writer.store(false, Ordering::SeqCst);
    }

    /// Where this node takes forwarded writes.
    pub fn own_url(&self) -> &str {
        &self.own_url
    }

    /// Whether `presented` (a [`NODE_HEADER`] value) is the nodes' secret.
    pub fn is_node(&self, presented: &[u8]) -> bool {
        constant_time_eq(presented, self.secret.as_bytes())
    }

    /// The writer's URL: the one last read, unless `refresh` and that read
    /// is older than [`WRITER_REREAD`]. Calls that wait for the writer all
    /// at once (a failover under load) share one read of the store.
    async fn writer_url(&self, refresh: bool) -> Result<Option<String>> {
        let mut target = self.target.lock().await;
        let stale = match &target.read {
            None => true,
            Some(at) => refresh && at.elapsed() >= WRITER_REREAD,
        };
        if stale {
            let lease = self.lease.clone();
            let read = tokio::task::spawn_blocking(move || lease.writer())
                .await
                .map_err(|e| crate::error::Error::internal(format!("reading the writer: {e}")))??;
            *target = Target {
                url: read,
                read: Some(Instant::now()),
            };
        }
        Ok(target.url.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
