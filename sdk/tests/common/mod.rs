//! Fixtures for the SDK's tests against a real server: a small application
//! (`notes`, shaped like the seed's tables) served by `livebase_testkit`'s
//! server on port 0 with its SQLite file in a temporary folder, and a
//! WebSocket proxy between client and server
//! that records the client's frames and can cut the connection at a chosen
//! moment.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use livebase_runtime::auth::Authenticator;
use livebase_runtime::registry::{BoxFuture, Identity, Registry};
use livebase_runtime::{Error, ErrorCode};
use livebase_schema::protocol::{ClientMessage, ServerMessage};
use livebase_schema::{define_table, obj, v, Object, Schema, Validator, Value};
use livebase_sdk::{ClientOptions, Subscription};
use tempfile::TempDir;

pub use livebase_testkit::{TestServer, PATIENCE};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// The test application: `notes` scoped by organization, plus functions that
/// fail in each way a client must report.
pub fn registry() -> Registry {
    let schema = Schema::new().table(
        "notes",
        define_table([
            ("organizationId", v::string()),
            ("body", v::string()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"]),
    );
    let mut app = Registry::new(schema);
    app.query(
        "notes:list",
        [("organizationId", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            if organization_id == "forbidden" {
                return Err(Error::forbidden("not a member of this organization"));
            }
            let notes = ctx
                .db
                .query("notes")
                .with_index("by_organization", |r| {
                    r.eq("organizationId", organization_id)
                })
                .collect()?;
            Ok(Value::Array(notes))
        },
    );
    app.query(
        "notes:page",
        [
            ("organizationId", v::string()),
            ("paginationOpts", v::pagination_opts()),
        ],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            let opts = livebase_runtime::pagination::PaginationOpts::from_value(
                args.value("paginationOpts").expect("checked"),
            )?;
            ctx.db
                .query("notes")
                .with_index("by_organization", |r| {
                    r.eq("organizationId", organization_id)
                })
                .order(livebase_runtime::store::Order::Desc)
                .paginate_with(&opts)
        },
    );
    app.query("notes:whoami", no_args(), |ctx, _| {
        Ok(match ctx.identity {
            Identity::Anonymous => Value::Null,
            Identity::User { user_id, .. } => Value::from(user_id.as_str()),
        })
    });
    app.mutation(
        "notes:add",
        [("organizationId", v::string()), ("body", v::string())],
        |ctx, args| {
            let created_by = match ctx.identity {
                Identity::Anonymous => "anonymous".to_string(),
                Identity::User { user_id, .. } => user_id.clone(),
            };
            let id = ctx.db.insert(
                "notes",
                obj! {
                    "organizationId" => args.string("organizationId")?,
                    "body" => args.string("body")?,
                    "createdBy" => created_by,
                },
            )?;
            Ok(Value::from(id.to_string()))
        },
    );
    app.mutation("notes:remove", [("id", v::id("notes"))], |ctx, args| {
        ctx.db.delete(&args.id("id", "notes")?)?;
        Ok(Value::Null)
    });
    app.mutation("notes:reject", [("reason", v::string())], |_, args| {
        let mut data = Object::new();
        data.insert("retryable".into(), Value::Boolean(false));
        Err::<Value, _>(Error::App {
            code: ErrorCode::Custom("NOTE_REJECTED".into()),
            message: args.string("reason")?,
            data,
        })
    });
    app.mutation(
        "notes:crash",
        no_args(),
        |_, _| -> livebase_runtime::Result<Value> { panic!("a bug in a handler") },
    );
    app.action(
        "notes:shout",
        [("text", v::string())],
        |_ctx, args| async move { Ok(Value::from(args.string("text")?.to_uppercase())) },
    );
    app
}

fn no_args() -> Vec<(&'static str, Validator)> {
    Vec::new()
}

/// Accepts tokens `user:<name>` as the user `<name>`.
pub struct TestAuth;

impl Authenticator for TestAuth {
    fn authenticate(&self, token: &str) -> BoxFuture<livebase_runtime::Result<Identity>> {
        let user = token.strip_prefix("user:").map(str::to_string);
        Box::pin(async move {
            match user {
                Some(user_id) => Ok(Identity::User {
                    session_id: format!("session-{user_id}"),
                    user_id,
                }),
                None => Err(Error::unauthenticated("unknown token")),
            }
        })
    }
}

/// The test application with [`TestAuth`] on a free port over a fresh data
/// folder (removed on drop).
pub async fn start() -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    start_at("127.0.0.1:0".parse().unwrap(), dir).await
}

/// The same, on `listen` over the data in `dir`: a restart at the address
/// the clients know.
pub async fn start_at(listen: SocketAddr, dir: TempDir) -> TestServer {
    TestServer::start_with_auth(dir, registry(), |o| o.listen = listen, Arc::new(TestAuth)).await
}

/// Client options for tests: reconnect within milliseconds.
pub fn fast() -> ClientOptions {
    ClientOptions::default().with_backoff(Duration::from_millis(10), Duration::from_millis(200))
}

/// The subscription's next result, failing the test after [`PATIENCE`].
pub async fn next<O: livebase_sdk::FromValue>(
    subscription: &mut Subscription<O>,
) -> Result<O, livebase_sdk::FunctionError> {
    tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("a result in time")
        .expect("the subscription is live")
}

/// Waits until the subscription yields a result that satisfies `done`.
pub async fn next_until<O: livebase_sdk::FromValue>(
    subscription: &mut Subscription<O>,
    mut done: impl FnMut(&Result<O, livebase_sdk::FunctionError>) -> bool,
) -> Result<O, livebase_sdk::FunctionError> {
    loop {
        let result = next(subscription).await;
        if done(&result) {
            return result;
        }
    }
}

/// A WebSocket proxy in front of a server. It records every client frame with
/// the number of the connection it came on, and can cut a connection just
/// before it would forward a chosen server message — so the server has done
/// the work, and the client never hears of it.
pub struct Proxy {
    pub url: String,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    connections: AtomicUsize,
    closed: AtomicUsize,
    frames: Mutex<Vec<(usize, ClientMessage)>>,
    /// The kind of server message (`MutationResponse`, …) to cut at, once.
    cut_at: Mutex<Option<&'static str>>,
}

impl Proxy {
    pub async fn start(server_url: &str) -> Proxy {
        let upstream = format!("{}/api/sync", server_url.replacen("http://", "ws://", 1));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState::default());
        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = accepting.connections.fetch_add(1, Ordering::SeqCst);
                let state = accepting.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    relay(stream, upstream, n, state.clone()).await;
                    state.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Proxy { url, state }
    }

    /// Cuts the connection instead of forwarding the next server message of
    /// this kind.
    pub fn cut_at(&self, kind: &'static str) {
        *self.state.cut_at.lock().unwrap() = Some(kind);
    }

    /// How many connections clients opened through the proxy.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How many of those connections have ended.
    pub fn closed(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// Every frame clients sent, with the connection number it came on.
    pub fn frames(&self) -> Vec<(usize, ClientMessage)> {
        self.state.frames.lock().unwrap().clone()
    }
}

async fn relay(stream: tokio::net::TcpStream, upstream: String, n: usize, state: Arc<ProxyState>) {
    let Ok(client) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let Ok((server, _)) = tokio_tungstenite::connect_async(upstream).await else {
        return;
    };
    let (mut to_client, mut from_client) = client.split();
    let (mut to_server, mut from_server) = server.split();
    loop {
        tokio::select! {
            frame = from_client.next() => {
                let Some(Ok(frame)) = frame else { return };
                if let Message::Text(text) = &frame {
                    let message = ClientMessage::from_text(text).expect("the SDK sends valid frames");
                    state.frames.lock().unwrap().push((n, message));
                }
                if to_server.send(frame).await.is_err() {
                    return;
                }
            }
            frame = from_server.next() => {
                let Some(Ok(frame)) = frame else { return };
                if let Message::Text(text) = &frame {
                    let kind = ServerMessage::from_text(text).map(|m| m.kind()).unwrap_or("");
                    let mut cut_at = state.cut_at.lock().unwrap();
                    if *cut_at == Some(kind) {
                        *cut_at = None;
                        // Dropping both sockets: the client sees the
                        // connection fail, without this message.
                        return;
                    }
                }
                if to_client.send(frame).await.is_err() {
                    return;
                }
            }
        }
    }
}
