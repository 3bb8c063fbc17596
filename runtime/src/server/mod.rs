//! The network edge: one axum router on one port serving the sync WebSocket
//! (`/api/sync`, `/api/<client version>/sync`), the HTTP function API
//! (`/api/query`, `/api/mutation`, `/api/action`), the auth endpoints
//! (`/api/auth/*`, see [`crate::auth::http`]), `/health`, in dev mode the
//! dashboard (`/_dashboard`, see [`dashboard`]), and, as the fallback, the
//! application's HTTP routes ([`routes`]). Shaped like
//! mini-redis's server: connection caps (semaphores, and counts per client
//! address), a handler per connection, and one broadcast shutdown signal —
//! heard by the scheduler's worker, started here beside them, and passed to
//! every WebSocket handler by ending its outbound queue.
//!
//! Every bound at the edge is a constant beside the code that enforces it
//! ([`listener`]: HTTP connections and headers; [`http`]: request bodies;
//! [`ws`]: WebSocket connections, `Connect` and liveness), collected in
//! [`EdgeOptions`] so that tests can shorten the timeouts.

pub(crate) mod client_addr;
pub mod dashboard;
pub mod files;
pub mod http;
pub mod inflight;
mod listener;
pub mod nodes;
pub mod routes;
mod woken;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinHandle;

use crate::auth::{Authenticator, SessionAuth};
use crate::calllog::CallLog;
use crate::clock::Clock;
use crate::database::Database;
use crate::datadir::DataDirLock;
use crate::email::{MailOptions, Mailer};
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::node::{Lease, Node};
use crate::registry::Registry;
use crate::scheduler::{self, SchedulerOptions};
use crate::store::sqlite::SqlitePersistence;
use crate::store::Persistence;
use crate::subscriptions::{Subscriptions, MAX_QUEUED_RESULT_BYTES_TOTAL};
pub use crate::subscriptions::{OUTBOUND_QUEUE, OUTBOUND_QUEUE_BYTES};
use crate::system::with_system_tables;

pub use http::REQUEST_BODY_TIMEOUT;
pub use inflight::{CallerKey, CallsInFlight, MAX_CALLS_IN_FLIGHT_PER_CALLER};
pub use listener::{
    AddressCounts, AddressSlot, ClientAddr, Counts, Slot, HANDSHAKE_TIMEOUT, MAX_HTTP_CONNECTIONS,
    MAX_HTTP_CONNECTIONS_PER_ADDRESS, RETRY_AFTER,
};
pub use ws::{
    CONNECT_TIMEOUT, MAX_ACTIONS_PER_CONNECTION, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS,
    MAX_CONNECTIONS_PER_USER, MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION, PING_INTERVAL, PONG_TIMEOUT,
    SEND_TIMEOUT,
};

/// How long shutdown waits for the WebSocket handlers to send their close
/// frames and end.
pub const WEBSOCKET_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Largest WebSocket message (and HTTP body) accepted: 2 MiB, room for a
/// maximal 1 MiB value in its JSON encoding. Bigger messages close the
/// connection with code 1009.
pub const MAX_MESSAGE_SIZE: usize = 2 << 20;

/// The timeouts and connection caps of the network edge. The defaults are the
/// named constants; tests shorten the timeouts and lower the caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeOptions {
    /// [`HANDSHAKE_TIMEOUT`]: to send a request's headers.
    pub handshake_timeout: Duration,
    /// [`REQUEST_BODY_TIMEOUT`]: to send a request's whole body.
    pub body_timeout: Duration,
    /// [`CONNECT_TIMEOUT`]: for a new WebSocket to send `Connect`.
    pub connect_timeout: Duration,
    /// [`PING_INTERVAL`]: between WebSocket pings (and before a protocol
    /// `Ping` to an idle client).
    pub ping_interval: Duration,
    /// [`PONG_TIMEOUT`]: for a WebSocket peer to answer a ping.
    pub pong_timeout: Duration,
    /// [`MAX_HTTP_CONNECTIONS`].
    pub max_http_connections: usize,
    /// [`MAX_HTTP_CONNECTIONS_PER_ADDRESS`].
    pub max_http_connections_per_address: usize,
    /// [`MAX_CONNECTIONS`]: WebSockets.
    pub max_connections: usize,
    /// [`MAX_CONNECTIONS_PER_ADDRESS`]: WebSockets.
    pub max_connections_per_address: usize,
    /// [`MAX_CONNECTIONS_PER_USER`]: WebSockets signed in as one user.
    pub max_connections_per_user: usize,
    /// [`MAX_ACTIONS_PER_CONNECTION`]: actions one WebSocket runs at once.
    pub max_actions_per_connection: usize,
    /// [`MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION`]: mutations one WebSocket
    /// has queued on the writer at once.
    pub max_mutations_per_connection: usize,
    /// [`MAX_CALLS_IN_FLIGHT_PER_CALLER`]: calls one user or anonymous client
    /// address has in flight.
    pub max_calls_in_flight_per_caller: usize,
    /// [`MAX_QUEUED_RESULT_BYTES_TOTAL`]: results waiting in the outbound
    /// queues of all connections together.
    pub max_queued_result_bytes: usize,
    /// [`crate::storage::MAX_UPLOAD_BYTES`]: the largest file the upload
    /// endpoint accepts.
    pub max_upload_bytes: u64,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            body_timeout: REQUEST_BODY_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            ping_interval: PING_INTERVAL,
            pong_timeout: PONG_TIMEOUT,
            max_http_connections: MAX_HTTP_CONNECTIONS,
            max_http_connections_per_address: MAX_HTTP_CONNECTIONS_PER_ADDRESS,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_address: MAX_CONNECTIONS_PER_ADDRESS,
            max_connections_per_user: MAX_CONNECTIONS_PER_USER,
            max_actions_per_connection: MAX_ACTIONS_PER_CONNECTION,
            max_mutations_per_connection: MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION,
            max_calls_in_flight_per_caller: MAX_CALLS_IN_FLIGHT_PER_CALLER,
            max_queued_result_bytes: MAX_QUEUED_RESULT_BYTES_TOTAL,
            max_upload_bytes: crate::storage::MAX_UPLOAD_BYTES,
        }
    }
}

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Folder for the SQLite file (unless [`ServerOptions::store`] names
    /// another engine), the token secret, stored files' bytes and the email
    /// outbox (created if missing).
    pub data_dir: PathBuf,
    /// Where documents are stored: the data folder's SQLite file, or an
    /// engine the caller opened (`livebase serve --postgres`).
    pub store: Store,
    /// Where stored files' bytes live: the data folder's `files/`, or a
    /// store the caller opened (the database's, with `--postgres`, which
    /// every node shares).
    pub blobs: Blobs,
    /// Outgoing mail: the SMTP relay (`--smtp`), or the outbox folder.
    pub mail: MailOptions,
    /// The origin clients reach this server at (`--public-url`,
    /// `https://host[:port]`), which upload and file URLs are built on;
    /// `None`: `http://<the bound address>`.
    pub public_url: Option<String>,
    /// How many scheduled jobs run at once.
    pub scheduler: SchedulerOptions,
    /// Serve the dev dashboard at `/_dashboard` and keep the call log it
    /// shows. Only `livebase dev` sets it: the dashboard shows every table.
    pub dashboard: bool,
    /// Timeouts and connection caps at the network edge.
    pub edge: EdgeOptions,
    /// Where commit timestamps, the scheduler and the WebSocket liveness
    /// timers read the time: the real clock, or a test's
    /// ([`crate::clock::TestClock`]).
    pub clock: Clock,
    /// One of several nodes sharing the store ([`crate::node`]): the
    /// writer's lease, and where this node takes forwarded writes.
    pub cluster: Option<ClusterOptions>,
}

/// How this server shares its store with other nodes.
#[derive(Clone)]
pub struct ClusterOptions {
    pub lease: Arc<dyn Lease>,
    /// The `http://host:port` other nodes reach this one at when it is the
    /// writer; `None`: the bound address (the loopback address in place of
    /// an unspecified one, which suits nodes on one machine only).
    pub node_url: Option<String>,
}

impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("node_url", &self.node_url)
            .finish()
    }
}

impl Default for ServerOptions {
    /// `127.0.0.1:0` over `.livebase/`, mail to the outbox.
    fn default() -> Self {
        ServerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: PathBuf::from(".livebase"),
            store: Store::DataFolder,
            blobs: Blobs::DataFolder,
            mail: MailOptions::default(),
            public_url: None,
            scheduler: SchedulerOptions::default(),
            dashboard: false,
            edge: EdgeOptions::default(),
            clock: Clock::real(),
            cluster: None,
        }
    }
}

/// Where a server stores documents. Whichever it is, the data folder keeps
/// what is not in the store: the token secret, stored files' bytes, the
/// outbox, and the lock that keeps a second server off the folder.
#[derive(Clone, Default)]
pub enum Store {
    /// The SQLite file in the data folder
    /// ([`crate::store::sqlite::DATABASE_FILE`]), created if missing.
    #[default]
    DataFolder,
    /// An engine opened by the caller (PostgreSQL, for `--postgres`).
    Engine(Arc<dyn Persistence>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::DataFolder => f.write_str("DataFolder"),
            Store::Engine(_) => f.write_str("Engine"),
        }
    }
}

/// Where a server keeps stored files' bytes.
#[derive(Clone, Default)]
pub enum Blobs {
    /// `<data>/files/` ([`crate::storage::DirBlobStore`]).
    #[default]
    DataFolder,
    /// A store opened by the caller (PostgreSQL's, for `--postgres`).
    Store(Arc<dyn crate::storage::BlobStore>),
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blobs::DataFolder => f.write_str("DataFolder"),
            Blobs::Store(_) => f.write_str("Store"),
        }
    }
}

/// Copies into `blobs` the files' bytes an earlier version kept in the
/// data folder's `files/` (before a database store held them), so none is
/// lost when a deployment moves; they stay in the folder too.
async fn adopt_folder_blobs(
    data_dir: &std::path::Path,
    blobs: Arc<dyn crate::storage::BlobStore>,
) -> Result<()> {
    if !data_dir.join(crate::storage::blobs::FILES_DIR).is_dir() {
        return Ok(());
    }
    let data_dir = data_dir.to_path_buf();
    let copied = blocking(move || {
        let folder = crate::storage::DirBlobStore::open(&data_dir)
            .map_err(|e| Error::internal(format!("opening the files folder: {e}")))?;
        livebase_store::blobs::copy_missing(&folder, blobs.as_ref()).map_err(|e| {
            Error::internal(format!(
                "copying the files of {} into the shared store: {e}",
                data_dir.display()
            ))
        })
    })
    .await?;
    if copied > 0 {
        tracing::info!(target: "livebase::storage", count = copied, "copied files' bytes from the data folder into the shared store");
    }
    Ok(())
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub executor: Executor,
    pub subscriptions: Subscriptions,
    pub authenticator: Arc<dyn Authenticator>,
    /// WebSocket connections, all together ([`EdgeOptions::max_connections`]).
    pub connections: Arc<Semaphore>,
    /// WebSocket connections per client address.
    pub connections_per_address: Arc<AddressCounts>,
    /// WebSocket connections per signed-in user (by user id).
    pub connections_per_user: Arc<Counts<String>>,
    /// Function calls in flight per caller.
    pub calls: CallsInFlight,
    pub edge: EdgeOptions,
    /// The clock of the WebSocket liveness timers.
    pub clock: Clock,
    pub shutdown: broadcast::Sender<()>,
    /// This node, when several share the store.
    pub node: Option<Arc<Node>>,
    /// Stored files' bytes are in a store every node reads
    /// ([`Blobs::Store`]): a follower serves downloads itself.
    pub shared_files: bool,
    /// The built-in sessions, when the server uses them (the writer ends
    /// the expired sessions another node hands it).
    pub sessions: Option<SessionAuth>,
}

/// A running server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    task: JoinHandle<()>,
    /// What runs only on the store's writer, once this node is it.
    writer_tasks: Arc<tokio::sync::Mutex<Option<WriterTasks>>>,
    /// The follower's wait for the lease, then the writer's watch over it.
    lease_task: Option<JoinHandle<()>>,
    /// Set when this node lost the writer's lease and stopped.
    stepped_down: Arc<std::sync::atomic::AtomicBool>,
    _data_dir: DataDirLock,
}

/// The scheduler, the upkeep and the files' collector: they write, so they
/// run on the store's writer only.
struct WriterTasks {
    scheduler: scheduler::Worker,
    upkeep: JoinHandle<()>,
    files: JoinHandle<()>,
}

impl WriterTasks {
    async fn start(
        executor: &Executor,
        files: &crate::storage::Files,
        options: &SchedulerOptions,
        shutdown: &broadcast::Sender<()>,
    ) -> Result<WriterTasks> {
        let scheduler =
            scheduler::start(executor.clone(), options.clone(), shutdown.subscribe()).await?;
        let upkeep = crate::upkeep::start(executor.database().clone(), shutdown.subscribe());
        let files = files.start_collector(shutdown.subscribe()).await?;
        Ok(WriterTasks {
            scheduler,
            upkeep,
            files,
        })
    }

    async fn stopped(self) {
        self.scheduler.stopped().await;
        let _ = self.upkeep.await;
        let _ = self.files.await;
    }
}

impl RunningServer {
    /// The `http://` URL the server answers on.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes every WebSocket (code 1001) and waits for the
    /// server to finish.
    pub async fn shutdown(self) {
        let _ = self.state.shutdown.send(());
        self.wait().await;
    }

    /// Waits until the server stops (after [`AppState::shutdown`] fires): the
    /// listener, the WebSockets' close frames (bounded by
    /// [`WEBSOCKET_CLOSE_GRACE`]), then the scheduler (running jobs get
    /// [`scheduler::worker::SHUTDOWN_GRACE`] to finish) and the upkeep.
    pub async fn wait(self) {
        let _ = self.task.await;
        // A WebSocket's handler runs on a task of its own once upgraded, not
        // among the listener's connections, and holds a permit of
        // `connections` until it ends: every permit back means every socket
        // was sent its 1001 close, which clients take as "reconnect", rather
        // than dropped with the process (1006).
        let all = u32::try_from(self.state.edge.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(
            WEBSOCKET_CLOSE_GRACE,
            self.state.connections.acquire_many(all),
        )
        .await;
        if let Some(task) = self.lease_task {
            task.abort();
            let _ = task.await;
        }
        if let Some(tasks) = self.writer_tasks.lock().await.take() {
            tasks.stopped().await;
        }
        self.state.subscriptions.shutdown();
    }

    /// Set when this node stops because it lost the store's writer lease
    /// (another node took it over): it must not go on as the writer. Read
    /// it after [`RunningServer::wait`].
    pub fn stepped_down(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.stepped_down.clone()
    }

    /// Whether this node is the store's writer now (always, on one node).
    pub fn is_writer(&self) -> bool {
        self.state.node.as_ref().is_none_or(|n| n.is_writer())
    }
}

/// Opens the store in `options.data_dir` and serves `registry` on it, with the
/// built-in users and sessions: the `/api/auth/*` endpoints, and tokens signed
/// with the key of the data folder (see [`crate::auth::tokens`]).
pub async fn serve(registry: Registry, options: ServerOptions) -> Result<RunningServer> {
    start(registry, options, None).await
}

/// As [`serve`], with another authenticator for tokens and no `/api/auth/*`
/// endpoints (`NoAuth` refuses every token).
pub async fn serve_with(
    registry: Registry,
    options: ServerOptions,
    authenticator: Arc<dyn Authenticator>,
) -> Result<RunningServer> {
    start(registry, options, Some(authenticator)).await
}

/// Starts a server; with no authenticator given, the built-in one.
async fn start(
    mut registry: Registry,
    options: ServerOptions,
    authenticator: Option<Arc<dyn Authenticator>>,
) -> Result<RunningServer> {
    let public_url = match &options.public_url {
        Some(raw) => Some(
            crate::storage::parse_public_url(raw)
                .map_err(|e| Error::invalid(format!("the public URL: {e}")))?,
        ),
        None => None,
    };
    // Held until the server is dropped: a second server on the folder fails.
    let data_dir = crate::datadir::lock(&options.data_dir)?;
    registry.extend_schema(with_system_tables);
    let persistence: Arc<dyn Persistence> = match &options.store {
        Store::DataFolder => Arc::new(SqlitePersistence::open(
            options.data_dir.join(crate::store::sqlite::DATABASE_FILE),
        )?),
        Store::Engine(engine) => engine.clone(),
    };
    // New code may declare a schema the stored documents do not satisfy;
    // it does not serve them (see `schema_check`).
    let started = std::time::Instant::now();
    let checked =
        match crate::schema_check::check_documents(persistence.as_ref(), registry.schema())? {
            Ok(checked) => checked,
            Err(mismatch) => return Err(Error::invalid(mismatch.to_string())),
        };
    let db = Database::open_with_clock(
        persistence,
        registry.schema().clone(),
        options.clock.clone(),
    )?;
    if checked.tables.is_empty() {
        tracing::info!("every table's definition is the one its documents were last checked against: none read");
    } else {
        tracing::info!(
            "checked the documents of {} table(s) against the schema: {} read in {:.1} s",
            checked.tables.len(),
            checked.documents,
            started.elapsed().as_secs_f64()
        );
        // The sole writer records what it checked; of several nodes, only
        // the writer records, for its own definitions, once it holds the
        // lease (`take_over`): the others may run other code.
        if options.cluster.is_none() {
            db.mutate(move |tx| crate::schema_check::record(tx, &checked))
                .await
                .map_err(|e| Error::internal(format!("recording the schema check: {e}")))?;
        }
    }
    // Tokens and cursors are signed with the deployment's secret: on
    // several nodes, one they share through the store (unless it is set in
    // the environment, for every node alike).
    let secret = match &options.cluster {
        Some(cluster) if std::env::var(crate::auth::tokens::SECRET_ENV).is_err() => {
            // The first node seeds it with its data folder's secret, if it
            // has one: a deployment moved onto PostgreSQL keeps its tokens.
            let seed = crate::auth::tokens::existing_secret(&options.data_dir)?;
            let lease = cluster.lease.clone();
            blocking(move || Ok(lease.secret(crate::node::DEPLOYMENT_SECRET, seed.as_deref())?))
                .await?
        }
        _ => crate::auth::tokens::deployment_secret(&options.data_dir)?,
    };
    let (authenticator, auth_routes, session_auth) = match authenticator {
        Some(custom) => (custom, None, None),
        None => {
            let auth = SessionAuth::with_keys(
                crate::auth::tokens::TokenKeys::from_secret(&secret)?,
                db.clone(),
            );
            let routes = crate::auth::http::routes(auth.clone());
            let handle = auth.clone();
            (
                Arc::new(auth) as Arc<dyn Authenticator>,
                Some(routes),
                Some(handle),
            )
        }
    };
    // Bound first: mail links default to the server's own URL.
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| Error::internal(format!("binding {}: {e}", options.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("reading the bound address: {e}")))?;
    let mailer = Mailer::from_options(&options.mail, &options.data_dir, &format!("http://{addr}"))?;
    tracing::info!(target: "livebase::email", to = %mailer.destination(), "outgoing mail");
    if let Some(auth) = &session_auth {
        auth.set_app_url(mailer.app_url());
    }
    // Cursors and journals stay valid across restarts: their key comes from
    // the deployment's secret.
    let cursor_key = crate::pagination::CursorKey::derive(&secret);
    // Stored files' bytes, content-addressed: `<data>/files/`, or the
    // store the caller opened.
    let blobs: Arc<dyn crate::storage::BlobStore> = match &options.blobs {
        Blobs::DataFolder => Arc::new(
            crate::storage::DirBlobStore::open(&options.data_dir)
                .map_err(|e| Error::internal(format!("opening the files folder: {e}")))?,
        ),
        Blobs::Store(blobs) => {
            adopt_folder_blobs(&options.data_dir, blobs.clone()).await?;
            blobs.clone()
        }
    };
    // One of several nodes: the writer if it gets the lease now, else a
    // follower until it does.
    let node = match &options.cluster {
        Some(cluster) => {
            let own_url = cluster.node_url.clone().unwrap_or_else(|| {
                let ip = match addr.ip() {
                    ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
                    ip => ip,
                };
                format!("http://{}", SocketAddr::new(ip, addr.port()))
            });
            let lease = cluster.lease.clone();
            Some(Arc::new(blocking(move || Node::new(lease, own_url)).await?))
        }
        None => None,
    };
    // On a follower, a file's bytes go into the shared store here and the
    // writer commits its row; a node with a folder of its own passes
    // uploads to the writer whole instead (`nodes::route`).
    let rows_on_writer = match (&node, &options.blobs) {
        (Some(node), Blobs::Store(_)) => {
            Some(node.clone() as Arc<dyn crate::storage::RowsOnWriter>)
        }
        _ => None,
    };
    let files = {
        let db = db.clone();
        let max = options.edge.max_upload_bytes;
        blocking(move || crate::storage::Files::new(blobs, db, max, rows_on_writer)).await?
    };
    // Upload and file URLs are absolute, as Convex's: by default on the
    // server's own URL, as mail links are.
    let public_url = public_url.unwrap_or_else(|| format!("http://{addr}"));
    let mut executor = Executor::new(db.clone(), Arc::new(registry))
        .with_mailer(mailer)
        .with_cursor_key(cursor_key)
        .with_files(files.clone())
        .with_public_url(&public_url);
    if let Some(node) = &node {
        executor = executor.with_forward(node.clone());
    }
    // A follower hands the sessions it saw, due to end, to the writer.
    if let (Some(node), Some(auth)) = (&node, &session_auth) {
        let node = node.clone();
        auth.end_expired_elsewhere(Arc::new(move |ids| {
            let node = node.clone();
            Box::pin(async move { node.end_sessions(ids).await })
        }));
    }
    let calls = options.dashboard.then(CallLog::default);
    if let Some(calls) = &calls {
        executor = executor.with_call_log(calls.clone());
    }
    let subscriptions =
        Subscriptions::start(&executor, options.edge.max_queued_result_bytes).await?;
    let (shutdown, _) = broadcast::channel(1);
    // Shutdown reaches the WebSockets through their outbound queues, each of
    // which ends (so no connection task waits on the shared signal itself).
    {
        let mut stop = shutdown.subscribe();
        let subscriptions = subscriptions.clone();
        tokio::spawn(async move {
            let _ = stop.recv().await;
            subscriptions.close_connections();
        });
    }
    let writer_tasks = Arc::new(tokio::sync::Mutex::new(None));
    let stepped_down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lease_task = match &node {
        None => {
            let tasks =
                WriterTasks::start(&executor, &files, &options.scheduler, &shutdown).await?;
            *writer_tasks.lock().await = Some(tasks);
            None
        }
        Some(node) => {
            let lease = node.lease().clone();
            let claimed = blocking(move || Ok(lease.try_claim()?)).await?;
            if claimed {
                take_over(
                    node,
                    &db,
                    &executor,
                    &files,
                    &options.scheduler,
                    &shutdown,
                    &writer_tasks,
                )
                .await?;
            } else {
                db.set_writable(false);
                tracing::info!(
                    "another node is the writer: this one follows it, and takes over if it goes"
                );
            }
            let lease = LeaseKeeper {
                node: node.clone(),
                db: db.clone(),
                executor: executor.clone(),
                files: files.clone(),
                scheduler: options.scheduler.clone(),
                shutdown: shutdown.clone(),
                writer_tasks: writer_tasks.clone(),
                stepped_down: stepped_down.clone(),
            };
            Some(tokio::spawn(lease.run()))
        }
    };
    let state = AppState {
        executor,
        subscriptions,
        authenticator,
        connections: Arc::new(Semaphore::new(options.edge.max_connections)),
        connections_per_address: AddressCounts::new(options.edge.max_connections_per_address),
        connections_per_user: Counts::new(options.edge.max_connections_per_user),
        calls: CallsInFlight::new(options.edge.max_calls_in_flight_per_caller),
        edge: options.edge,
        clock: options.clock.clone(),
        shutdown,
        node: node.clone(),
        sessions: session_auth.clone(),
        shared_files: matches!(options.blobs, Blobs::Store(_)),
    };
    let app = match auth_routes {
        Some(auth) => router(state.clone()).merge(auth),
        None => router(state.clone()),
    };
    let app = match calls {
        Some(calls) => {
            tracing::info!("dashboard at http://{addr}/_dashboard");
            app.merge(dashboard::routes(&state, calls, &options, addr).await?)
        }
        None => app,
    };
    // Last, so that every built-in route keeps its handlers.
    let routes_state = state.clone();
    let app = app.fallback(move |request: axum::extract::Request| {
        routes::serve(routes_state.clone(), request)
    });
    // Outermost, so that every route's body is read under the timeout.
    let app = app.layer(axum::middleware::from_fn_with_state(
        options.edge.body_timeout,
        http::read_body,
    ));
    // After the layer, so that uploads stream their bodies (`files` reads
    // them under its own limit and deadline).
    let app = app.merge(files::routes(state.clone()));
    // Outermost: a follower passes the writes outside of functions to the
    // writer before any route of its own sees them.
    let app = app.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        nodes::route,
    ));
    let stop = state.shutdown.subscribe();
    let task = tokio::spawn(listener::run(
        listener,
        app,
        stop,
        state.shutdown.clone(),
        options.edge,
    ));
    Ok(RunningServer {
        addr,
        state,
        task,
        writer_tasks,
        lease_task,
        stepped_down,
        _data_dir: data_dir,
    })
}

/// Runs `f` (a call to the store) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a store call panicked: {e}")))?
}

/// Makes this node the writer, once it holds the lease: it may commit,
/// tells the other nodes where to forward writes, and starts what runs on
/// the writer only (the scheduler first marks the actions the previous
/// writer left running as interrupted).
async fn take_over(
    node: &Arc<Node>,
    db: &Database,
    executor: &Executor,
    files: &crate::storage::Files,
    scheduler: &SchedulerOptions,
    shutdown: &broadcast::Sender<()>,
    writer_tasks: &tokio::sync::Mutex<Option<WriterTasks>>,
) -> Result<()> {
    db.set_writable(true);
    // Before anything else this writer commits: no schema check recorded
    // by a writer with other definitions may stand (see `schema_check`).
    let schema = db.schema().clone();
    let forgotten = db
        .mutate(move |tx| crate::schema_check::forget_others(tx, &schema))
        .await
        .map_err(|e| Error::internal(format!("forgetting other code's schema checks: {e}")))?
        .value;
    if forgotten > 0 {
        tracing::info!(
            count = forgotten,
            "forgot the schema checks recorded for other definitions"
        );
    }
    let n = node.clone();
    blocking(move || n.become_writer()).await?;
    let tasks = WriterTasks::start(executor, files, scheduler, shutdown).await?;
    *writer_tasks.lock().await = Some(tasks);
    tracing::info!(url = %node.own_url(), "this node is the writer");
    tokio::spawn(check_as_writer(db.clone()));
    Ok(())
}

/// The writer of several nodes checks the tables no record says its own
/// definitions were checked against, and records them: the next node to
/// start with the same code reads none of them. Documents that fail are
/// logged (another node's code wrote them); nothing is recorded then.
async fn check_as_writer(db: Database) {
    let started = std::time::Instant::now();
    let (persistence, schema) = (db.persistence().clone(), db.schema().clone());
    let checked =
        blocking(move || crate::schema_check::check_documents(persistence.as_ref(), &schema)).await;
    let checked = match checked {
        Ok(Ok(checked)) if checked.tables.is_empty() => return,
        Ok(Ok(checked)) => checked,
        Ok(Err(mismatch)) => {
            return tracing::error!(
                "as the writer, found documents this node's schema does not accept (written by \
                 a node with other code?); nothing recorded: {mismatch}"
            )
        }
        Err(e) => return tracing::warn!("checking the documents as the writer: {e}"),
    };
    let (tables, documents) = (checked.tables.len(), checked.documents);
    match db
        .mutate(move |tx| crate::schema_check::record(tx, &checked))
        .await
    {
        Ok(_) => tracing::info!(
            "as the writer, checked the documents of {tables} table(s) against the schema and \
             recorded it: {documents} read in {:.1} s",
            started.elapsed().as_secs_f64()
        ),
        // No longer the writer, say: the next one checks.
        Err(e) => tracing::warn!("recording the schema check as the writer: {e}"),
    }
}

/// A follower's wait for the lease, then the writer's watch over it.
struct LeaseKeeper {
    node: Arc<Node>,
    db: Database,
    executor: Executor,
    files: crate::storage::Files,
    scheduler: SchedulerOptions,
    shutdown: broadcast::Sender<()>,
    writer_tasks: Arc<tokio::sync::Mutex<Option<WriterTasks>>>,
    stepped_down: Arc<std::sync::atomic::AtomicBool>,
}

impl LeaseKeeper {
    async fn run(self) {
        let mut failures = 0u32;
        while !self.node.is_writer() {
            tokio::time::sleep(crate::node::LEASE_POLL).await;
            let lease = self.node.lease().clone();
            match blocking(move || Ok(lease.try_claim()?)).await {
                Ok(false) => failures = 0,
                Ok(true) => {
                    let taken = take_over(
                        &self.node,
                        &self.db,
                        &self.executor,
                        &self.files,
                        &self.scheduler,
                        &self.shutdown,
                        &self.writer_tasks,
                    )
                    .await;
                    if let Err(e) = taken {
                        tracing::error!("taking over as the writer failed: {e}; stopping");
                        return self.step_down();
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(100) {
                        tracing::warn!("trying to take the writer's lease: {e}");
                    }
                }
            }
        }
        loop {
            tokio::time::sleep(crate::node::LEASE_CHECK).await;
            if self.node.lease().lost() {
                tracing::error!(
                    "this node lost the writer's lease (another node took it over, or its \
                     session with the store ended): it stops, and nothing more it commits lands"
                );
                return self.step_down();
            }
        }
    }

    fn step_down(&self) {
        self.node.step_down();
        self.db.set_writable(false);
        self.stepped_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.shutdown.send(());
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/sync", get(ws::upgrade))
        .route("/api/{version}/sync", get(ws::upgrade))
        .route("/api/query", post(http::query))
        .route("/api/mutation", post(http::mutation))
        .route("/api/action", post(http::action))
        .route("/health", get(http::health))
        .route(crate::node::FORWARD_PATH, post(nodes::accept_mutation))
        .route(crate::node::forward::FILE_PATH, post(nodes::accept_file))
        .route(
            crate::node::forward::END_SESSIONS_PATH,
            post(nodes::accept_expired_sessions),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE_SIZE))
        .with_state(state)
}
