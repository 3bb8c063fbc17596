//! The server under test: an application served on a free port of 127.0.0.1
//! over a SQLite file in its own temporary folder (removed on drop), in this
//! process, so a test can also look at its store and its subscription worker.
//! Beside it, the HTTP function API and the built-in auth endpoints as a
//! test calls them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use livebase_runtime::auth::Authenticator;
use livebase_runtime::database::Database;
use livebase_runtime::executor::Executor;
use livebase_runtime::registry::Registry;
use livebase_runtime::server::{serve, serve_with, RunningServer, ServerOptions};
use livebase_runtime::subscriptions::Stats;
use livebase_schema::protocol::SessionId;
use livebase_schema::Value;
use serde_json::{json, Value as Json};
use tempfile::TempDir;
use tokio::time::timeout;

use crate::http::{http_json, HttpResponse};
use crate::mail::{outbox_link, path_of};
use crate::ws::Client;
use crate::{eventually, PATIENCE};

/// The password every test user signs up with.
pub const PASSWORD: &str = "correct horse battery";

/// A running server and its data folder.
pub struct TestServer {
    pub server: RunningServer,
    pub dir: TempDir,
}

impl TestServer {
    /// `app` on a free port over a fresh data folder.
    pub async fn start(app: Registry) -> TestServer {
        TestServer::start_tuned(app, |_| {}).await
    }

    /// As [`TestServer::start`], with options that `tune` changes first
    /// (shorter timeouts, lower caps, a mail relay, a test clock).
    pub async fn start_tuned(app: Registry, tune: impl FnOnce(&mut ServerOptions)) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary folder");
        TestServer::start_in(dir, app, tune).await
    }

    /// `app` over the data already in `dir` (a restart, a redeploy).
    pub async fn start_in(
        dir: TempDir,
        app: Registry,
        tune: impl FnOnce(&mut ServerOptions),
    ) -> TestServer {
        let options = options(dir.path(), tune);
        let server = serve(app, options).await.expect("the server starts");
        TestServer { server, dir }
    }

    /// As [`TestServer::start_in`], with another authenticator for tokens
    /// (and so no `/api/auth/*` endpoints).
    pub async fn start_with_auth(
        dir: TempDir,
        app: Registry,
        tune: impl FnOnce(&mut ServerOptions),
        authenticator: Arc<dyn Authenticator>,
    ) -> TestServer {
        let options = options(dir.path(), tune);
        let server = serve_with(app, options, authenticator)
            .await
            .expect("the server starts");
        TestServer { server, dir }
    }

    /// Shuts the server down (closing every connection, letting running jobs
    /// finish) and hands back its data folder.
    pub async fn stop(self) -> TempDir {
        timeout(PATIENCE, self.server.shutdown())
            .await
            .expect("the server shuts down in time");
        self.dir
    }

    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// Shuts the server down and serves the same data folder with `app`, on
    /// a new port: a restart, or a redeploy when `app` changed.
    pub async fn restart(self, app: Registry) -> TestServer {
        let dir = self.stop().await;
        TestServer::start_in(dir, app, |_| {}).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The `http://` URL the server answers on.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The sync endpoint as the npm client names it (with its version).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/1.48.0/sync", self.server.addr)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's executor, to call functions and inspect the store in
    /// process.
    pub fn executor(&self) -> &Executor {
        &self.server.state.executor
    }

    pub fn database(&self) -> &Database {
        self.executor().database()
    }

    pub fn stats(&self) -> &Stats {
        self.server.state.subscriptions.stats()
    }

    /// Query evaluations the subscription worker has run so far.
    pub fn evaluations(&self) -> u64 {
        self.stats().evaluations.load(Ordering::SeqCst)
    }

    /// Connections dropped because they could not keep up.
    pub fn dropped_slow(&self) -> u64 {
        self.stats().dropped_slow.load(Ordering::SeqCst)
    }

    /// A protocol client connected with a fresh session.
    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url(), SessionId::random()).await
    }

    /// Every row of a table, read on the server's own database.
    pub async fn rows(&self, table: &'static str) -> Vec<Value> {
        self.database()
            .query(move |tx| tx.query(table).collect())
            .await
            .expect("the table reads")
            .value
    }

    /// How many mutation outcomes the store keeps (to answer resends).
    pub async fn stored_outcomes(&self) -> usize {
        self.database()
            .query(|tx| tx.count_mutation_outcomes())
            .await
            .expect("the store reads")
            .value
    }

    /// Polls `table` until `check` finds what it looks for in its rows (up
    /// to [`PATIENCE`]): what a job or the server's upkeep writes.
    pub async fn rows_until<T>(
        &self,
        table: &'static str,
        what: &str,
        check: impl Fn(&[Value]) -> Option<T>,
    ) -> T {
        eventually(what, PATIENCE, || async {
            let rows = self.rows(table).await;
            check(&rows).ok_or_else(|| format!("{table}: {rows:#?}"))
        })
        .await
    }

    /// [`TestServer::rows`] as JSON.
    pub async fn rows_json(&self, table: &'static str) -> Vec<Json> {
        self.rows(table).await.iter().map(Value::to_json).collect()
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Json) -> HttpResponse {
        http_json(self.addr(), "POST", path, token, &[], Some(&body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> HttpResponse {
        http_json(self.addr(), "GET", path, token, &[], None).await
    }

    /// Calls a function through the HTTP API: its value, or its error's code
    /// and message.
    pub async fn call(&self, kind: &str, path: &str, token: Option<&str>, args: Json) -> Outcome {
        let reply = self
            .post(
                &format!("/api/{kind}"),
                token,
                json!({"path": path, "format": "convex_encoded_json", "args": [args]}),
            )
            .await;
        match (reply.status, reply.body["status"].as_str()) {
            (200, Some("success")) => Ok(reply.body["value"].clone()),
            (560, Some("error")) => Err(Failure {
                code: reply.body["errorData"]["code"]
                    .as_str()
                    .unwrap_or("(no code)")
                    .to_string(),
                message: reply.body["errorMessage"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            }),
            _ => panic!(
                "{kind} {path}: unexpected reply {} {}",
                reply.status, reply.body
            ),
        }
    }

    pub async fn query(&self, path: &str, user: &User, args: Json) -> Outcome {
        self.call("query", path, Some(&user.token), args).await
    }

    pub async fn mutation(&self, path: &str, user: &User, args: Json) -> Outcome {
        self.call("mutation", path, Some(&user.token), args).await
    }

    /// Signs up `email` (with [`PASSWORD`]) and returns the session.
    pub async fn sign_up(&self, email: &str, name: &str) -> User {
        let reply = self
            .post(
                "/api/auth/sign-up/email",
                None,
                json!({"email": email, "password": PASSWORD, "name": name}),
            )
            .await;
        assert_eq!(reply.status, 200, "sign-up of {email}: {}", reply.body);
        User::from_reply(&reply, email)
    }

    /// Signs up `email` and follows the verification link mailed to it, as
    /// a person would: the user may then accept invitations.
    pub async fn sign_up_verified(&self, email: &str, name: &str) -> User {
        let user = self.sign_up(email, name).await;
        self.verify_email(&user.email).await;
        user
    }

    /// Follows the newest verification link in the outbox mailed to `email`
    /// (waiting for the mail job) and expects it to work.
    pub async fn verify_email(&self, email: &str) {
        let link = outbox_link(self.data_dir(), email, "/api/auth/verify-email?").await;
        let reply = self.get(&path_of(&link), None).await;
        assert_eq!(reply.status, 200, "following {link}: {}", reply.body);
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> HttpResponse {
        self.post(
            "/api/auth/sign-in/email",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }
}

/// Listening on a free port of 127.0.0.1 over `data_dir`, then `tune`.
fn options(data_dir: &Path, tune: impl FnOnce(&mut ServerOptions)) -> ServerOptions {
    let mut options = ServerOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_path_buf(),
        ..ServerOptions::default()
    };
    tune(&mut options);
    options
}

/// A signed-up user and their token.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
}

impl User {
    /// The user of a sign-up or sign-in reply.
    pub fn from_reply(reply: &HttpResponse, email: &str) -> User {
        User {
            id: reply.body["user"]["id"]
                .as_str()
                .expect("user.id")
                .to_string(),
            email: email.to_string(),
            token: reply.body["token"].as_str().expect("token").to_string(),
        }
    }
}

/// A function's error as the HTTP API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

/// What a function call over HTTP came to.
pub type Outcome = Result<Json, Failure>;

/// The code of a failed call (panics on success).
pub fn code(outcome: &Outcome) -> &str {
    match outcome {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(f) => &f.code,
    }
}
