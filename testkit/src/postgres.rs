//! A PostgreSQL server for the tests that need one (the PostgreSQL engine's
//! conformance suite, `livebase serve --postgres`), and a database or schema
//! of its own for each test, so that tests run in parallel.
//!
//! Where the server comes from, in order:
//! 1. `LIVEBASE_TEST_POSTGRES_URL` (a `postgres://` URL whose user may create
//!    databases), as `.ci/run` sets it after starting one with
//!    `.ci/postgres.sh`;
//! 2. under CI (`CI` set) nothing else: the test fails, so a missing server
//!    is never a silent skip;
//! 3. else a throwaway server this test binary starts once, with
//!    `.ci/postgres.sh --serve` (when PostgreSQL is installed under
//!    `/usr/lib/postgresql`), which stops it when the binary exits (its
//!    standard input, a pipe this process holds, closes);
//! 4. else none: [`server_url`] says the test was skipped and returns `None`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The variable that names the tests' PostgreSQL server.
pub const URL_VAR: &str = "LIVEBASE_TEST_POSTGRES_URL";

/// The variable that names the PEM file of the CA that signed the tests'
/// server's TLS certificate, when it speaks TLS.
pub const CA_VAR: &str = "LIVEBASE_TEST_POSTGRES_CA";

/// The server the tests use (see the module docs), or `None` when there is
/// none and the test should skip; `test` names the test in the line saying
/// so. Panics under CI when `LIVEBASE_TEST_POSTGRES_URL` is unset.
pub fn server_url(test: &str) -> Option<String> {
    if let Some(url) = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
        return Some(url);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{URL_VAR} is unset under CI: the PostgreSQL tests need a server (.ci/run starts one)"
    );
    let url = local_server().as_ref().map(|s| s.url.clone());
    if url.is_none() {
        eprintln!(
            "{test}: skipped, no PostgreSQL: set {URL_VAR}, or install PostgreSQL \
             (Debian's `postgresql`) for the tests to start one"
        );
    }
    url
}

/// The PEM file of the CA that signed the TLS certificate of the server
/// [`server_url`] names, if it speaks TLS: `LIVEBASE_TEST_POSTGRES_CA` beside
/// `LIVEBASE_TEST_POSTGRES_URL`, or the one the local server was made with.
pub fn server_ca(test: &str) -> Option<PathBuf> {
    server_url(test)?;
    let ca = match std::env::var(URL_VAR).ok().filter(|u| !u.is_empty()) {
        Some(_) => std::env::var_os(CA_VAR)
            .filter(|ca| !ca.is_empty())
            .map(PathBuf::from),
        None => local_server().as_ref().and_then(|s| s.ca.clone()),
    };
    if ca.is_none() {
        eprintln!("{test}: skipped, the tests' PostgreSQL has no TLS ({CA_VAR} is unset)");
    }
    ca
}

/// A server this binary started.
struct LocalServer {
    url: String,
    ca: Option<PathBuf>,
}

/// The server this binary started, once, if it could.
fn local_server() -> &'static Option<LocalServer> {
    /// What keeps the server alive: the pipe to its script's standard input.
    static KEEP: Mutex<Vec<(Child, ChildStdin)>> = Mutex::new(Vec::new());
    static SERVER: OnceLock<Option<LocalServer>> = OnceLock::new();
    SERVER.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres.sh");
        let installed = std::fs::read_dir("/usr/lib/postgresql")
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !installed || !script.exists() {
            return None;
        }
        let mut child = Command::new("bash")
            .arg(&script)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run .ci/postgres.sh");
        let stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut line = || lines.next().and_then(Result::ok).unwrap_or_default();
        let url = line().trim().to_string();
        let ca = Some(line().trim().to_string())
            .filter(|ca| !ca.is_empty())
            .map(PathBuf::from);
        assert!(
            url.starts_with("postgres://"),
            ".ci/postgres.sh --serve did not start a server (see its output above)"
        );
        KEEP.lock().unwrap().push((child, stdin));
        Some(LocalServer { url, ca })
    })
}

/// A name no other test of any binary uses at the same time: `prefix`, this
/// process's id and a counter.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database of its own on the tests' server, dropped with this value.
pub struct TestDatabase {
    /// The database's URL: the server's, with its name as the path.
    pub url: String,
    server: String,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh database (see [`server_url`] for `None`).
    pub fn create(test: &str) -> Option<TestDatabase> {
        let server = server_url(test)?;
        let name = unique_name("livebase_test");
        admin(&server, format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(&server).expect("the server's URL is a postgres:// URL");
        url.set_path(&format!("/{name}"));
        Some(TestDatabase {
            url: url.to_string(),
            server,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        admin(
            &self.server,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Drops `schema` (and everything in it) from the database at `url`: what
/// a test that made a schema of its own does when it ends.
pub fn drop_schema(url: &str, schema: &str) {
    admin(url, format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
}

/// Runs `sql` on the database at `server`. On a thread of its own: the
/// synchronous client may not block a thread that runs async tests.
fn admin(server: &str, sql: String) {
    let server = server.to_string();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&server, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to the tests' PostgreSQL: {e}"));
        client
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
    .join()
    .expect("the PostgreSQL admin thread");
}

/// Inserts into `table` of `store` a document that declares only
/// `{text: 3}`, as code with a laxer definition of the table (or a
/// tool) could have written it: `schema` with `table` accepting anything
/// named `text`, the rest as they are. For tests of what catches documents a
/// schema refuses.
pub async fn insert_unchecked(
    store: std::sync::Arc<dyn livebase_runtime::store::Persistence>,
    schema: &livebase_schema::Schema,
    table: &str,
) -> livebase_schema::DocumentId {
    use livebase_runtime::database::Database;
    use livebase_schema::{define_table, obj, v, Schema};

    let mut lax = Schema::new();
    for (name, def) in schema.tables() {
        let def = if name == table {
            define_table([("text", v::any())])
        } else {
            def.clone()
        };
        lax = if schema.is_system_table(name) {
            lax.system_table(name, def)
        } else {
            lax.table(name, def)
        };
    }
    let side = Database::open(store, lax).expect("opens");
    let table = table.to_string();
    side.mutate(move |tx| tx.insert(&table, obj! { "text" => 3.0 }))
        .await
        .expect("inserted")
        .value
}
