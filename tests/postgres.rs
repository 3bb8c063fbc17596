//! `livebase serve --postgres` with the real binary on the tests' PostgreSQL
//! (see `livebase_testkit::postgres`), a database per test: a user signs up,
//! a mutation's result is pushed to a live query over the WebSocket, and
//! after the process is killed and started again the data is there — in
//! the database, not in a SQLite file of the data folder. And an export of a
//! deployment on SQLite, imported with `livebase import --postgres`, serves
//! the same data to the same tokens, and exports back line for line.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use livebase_runtime::auth::tokens::SECRET_FILE;
use livebase_runtime::store::sqlite::DATABASE_FILE;
use livebase_runtime::store::Persistence;
use livebase_schema::protocol::SessionId;
use livebase_schema::Value;
use livebase_store_postgres::PostgresPersistence;
use livebase_testkit::http::{http, post_json, HttpResponse};
use livebase_testkit::mail::path_of;
use livebase_testkit::postgres::TestDatabase;
use livebase_testkit::process::{listening_address, KillOnDrop};
use livebase_testkit::{Client, PASSWORD};
use serde_json::{json, Value as Json};

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `livebase <args>`, without the variables a developer's shell may set.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_livebase"));
    c.args(args)
        .env_remove("LIVEBASE_DATA")
        .env_remove("LIVEBASE_POSTGRES_URL")
        .env_remove("LIVEBASE_SMTP_URL")
        .env_remove("LIVEBASE_JWT_SECRET");
    c
}

/// Starts `livebase serve --port 0 --data <dir> [--postgres <url>]` and waits
/// for its ready line.
fn start(dir: &Path, postgres: Option<&str>) -> (KillOnDrop, SocketAddr) {
    let mut args = vec!["serve", "--port", "0", "--data", path(dir)];
    args.extend(
        postgres
            .map(|url| ["--postgres", url])
            .into_iter()
            .flatten(),
    );
    let child = command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("livebase starts");
    let mut child = KillOnDrop(child);
    let (addr, _) = listening_address(&child.stdout_lines());
    (child, addr)
}

/// `livebase <verb> <file> --data <data> --postgres <url>` (`export` or
/// `import`), not yet run.
fn on_postgres(verb: &str, file: &Path, data: &Path, url: &str) -> Command {
    command(&[verb, path(file), "--data", path(data), "--postgres", url])
}

fn run(args: &[&str]) -> Output {
    checked(command(args))
}

/// Runs `c`, which must succeed; its output.
fn checked(mut c: Command) -> Output {
    let out = c.output().expect("livebase runs");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Signs `email` up; the session token.
async fn sign_up(addr: SocketAddr, email: &str, name: &str) -> String {
    let (status, reply) = post_json(
        addr,
        "/api/auth/sign-up/email",
        &json!({"email": email, "password": PASSWORD, "name": name}),
    )
    .await;
    assert_eq!(status, 200, "sign-up of {email}: {reply}");
    reply["token"].as_str().expect("a token").to_string()
}

/// A WebSocket signed in with `token`, watching `organizations:listMine` as
/// query 1; the client and the query's first result.
async fn watch_organizations(addr: SocketAddr, token: &str) -> (Client, Json) {
    let mut ws = Client::connect(&format!("ws://{addr}/api/sync"), SessionId::random()).await;
    ws.authenticate(token).await;
    ws.add_query(1, "organizations:listMine", json!({})).await;
    let first = ws.next_result(1).await.expect("listMine answers");
    (ws, first)
}

/// Uploads `bytes` through a generated URL as `token`'s avatar.
async fn upload_avatar(addr: SocketAddr, token: &str, bytes: &[u8]) {
    let mut ws = Client::connect(&format!("ws://{addr}/api/sync"), SessionId::random()).await;
    ws.authenticate(token).await;
    ws.upload_avatar(addr, "image/png", bytes).await;
}

/// `token`'s avatar, downloaded from the URL `userProfiles:get` gives.
async fn avatar(addr: SocketAddr, token: &str) -> HttpResponse {
    let mut ws = Client::connect(&format!("ws://{addr}/api/sync"), SessionId::random()).await;
    ws.authenticate(token).await;
    ws.add_query(1, "userProfiles:get", json!({})).await;
    let profile = ws.next_result(1).await.expect("the profile");
    let url = profile["avatarUrl"].as_str().expect("an avatar URL");
    http(addr, "GET", &path_of(url), &[], b"").await
}

/// 100 KB that are not all alike.
fn picture() -> Vec<u8> {
    (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn names(organizations: &Json) -> Vec<&str> {
    organizations
        .as_array()
        .expect("a list")
        .iter()
        .map(|o| o["name"].as_str().expect("a name"))
        .collect()
}

/// How many documents of `table` the database holds (read directly, not
/// through a server).
fn documents_in(url: &str, table: &str) -> usize {
    let store = PostgresPersistence::open(url).expect("the database opens");
    let mut conn = store.connect().expect("connects");
    conn.begin_read().expect("a snapshot");
    let docs = conn.scan_documents(None, 1_000_000).expect("scans");
    conn.end_read().expect("ends");
    docs.iter().filter(|d| d.table() == table).count()
}

#[tokio::test]
async fn a_server_on_postgres_pushes_live_queries_and_finds_its_data_after_a_restart() {
    let Some(db) = TestDatabase::create("serve --postgres") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let (server, addr) = start(data.path(), Some(&db.url));
    let token = sign_up(addr, "ada@example.com", "Ada").await;
    let (mut ws, first) = watch_organizations(addr, &token).await;
    assert_eq!(first, json!([]));

    let created = ws
        .mutation(
            "organizations:create",
            Value::from_json(&json!({"name": "Acme", "slug": "acme"}), "args").unwrap(),
        )
        .await
        .expect("the organization is created");
    assert!(created.value.as_str().is_some(), "{:?}", created.value);
    let pushed = ws.next_result(1).await.expect("listMine is pushed");
    assert_eq!(names(&pushed), ["Acme"]);

    // Killed, not stopped: what was acknowledged is in PostgreSQL.
    drop(ws);
    drop(server);
    assert!(
        !data.path().join(DATABASE_FILE).exists(),
        "no SQLite file: the documents are in PostgreSQL"
    );
    assert_eq!(documents_in(&db.url, "organizations"), 1);
    assert_eq!(documents_in(&db.url, "users"), 1);

    let (_server, addr) = start(data.path(), Some(&db.url));
    // The token (signed with the data folder's secret, its session row in
    // PostgreSQL) still works, and the data is there.
    let (_ws, again) = watch_organizations(addr, &token).await;
    assert_eq!(names(&again), ["Acme"]);
}

#[tokio::test]
async fn an_export_from_sqlite_imported_into_postgres_serves_the_same_data_to_the_same_tokens() {
    let Some(db) = TestDatabase::create("import --postgres") else {
        return;
    };
    let parent = tempfile::tempdir().unwrap();
    let (sqlite_dir, postgres_dir) = (parent.path().join("sqlite"), parent.path().join("pg"));
    let token = {
        let (_server, addr) = start(&sqlite_dir, None);
        let token = sign_up(addr, "ada@example.com", "Ada").await;
        let (mut ws, _) = watch_organizations(addr, &token).await;
        ws.mutation(
            "organizations:create",
            Value::from_json(&json!({"name": "Acme", "slug": "acme"}), "args").unwrap(),
        )
        .await
        .expect("the organization is created");
        upload_avatar(addr, &token, &picture()).await;
        token
    };
    let export = parent.path().join("export.jsonl");
    run(&["export", path(&export), "--data", path(&sqlite_dir)]);
    let imported = checked(on_postgres("import", &export, &postgres_dir, &db.url));
    let said = String::from_utf8_lossy(&imported.stderr);
    assert!(said.contains("PostgreSQL database"), "{said}");
    assert!(!said.contains(":password@"), "{said}");
    std::fs::copy(sqlite_dir.join(SECRET_FILE), postgres_dir.join(SECRET_FILE)).unwrap();
    assert_eq!(documents_in(&db.url, "organizations"), 1);

    // Exported back from PostgreSQL: the same documents, line for line.
    let back = parent.path().join("back.jsonl");
    checked(on_postgres("export", &back, &postgres_dir, &db.url));
    let body = |file: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(file).expect("an export");
        text.lines().skip(1).map(str::to_string).collect()
    };
    assert_eq!(body(&back), body(&export));
    assert!(body(&export).len() > 3, "users, sessions, an organization…");

    let (_server, addr) = start(&postgres_dir, Some(&db.url));
    let (_ws, organizations) = watch_organizations(addr, &token).await;
    assert_eq!(names(&organizations), ["Acme"]);
    // The file's bytes came along, into the database, not the folder.
    let got = avatar(addr, &token).await;
    assert_eq!(got.status, 200);
    assert!(got.bytes == picture(), "the avatar's bytes");
    assert!(
        !postgres_dir.join("files").exists(),
        "no bytes in the folder"
    );
    // A second import into the same database is refused: it holds data.
    let again = on_postgres("import", &export, &parent.path().join("other"), &db.url)
        .output()
        .expect("livebase runs");
    assert!(!again.status.success(), "a second import is refused");
}

#[tokio::test]
async fn files_an_earlier_version_kept_in_the_data_folder_are_copied_into_the_database() {
    use livebase_runtime::storage::{BlobStore, DirBlobStore};
    use livebase_store_postgres::PostgresBlobs;

    let Some(db) = TestDatabase::create("files moved into postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), Some(&db.url));
    let token = sign_up(addr, "ada@example.com", "Ada").await;
    upload_avatar(addr, &token, &picture()).await;
    drop(server);

    // As an earlier version left it: the row in the database, the bytes
    // only in the data folder.
    let shared = PostgresBlobs::new(&PostgresPersistence::open(&db.url).unwrap());
    let hashes = shared.list().unwrap();
    assert_eq!(hashes.len(), 1, "the upload's bytes went to the database");
    let folder = DirBlobStore::open(dir.path()).unwrap();
    let mut w = folder.begin().unwrap();
    w.write(&picture()).unwrap();
    assert_eq!(w.finish().unwrap().sha256, hashes[0]);
    shared.delete(&hashes[0]).unwrap();

    let (_server, addr) = start(dir.path(), Some(&db.url));
    let got = avatar(addr, &token).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.bytes));
    assert!(got.bytes == picture(), "the avatar's bytes");
    assert_eq!(shared.list().unwrap(), hashes);
}

#[tokio::test]
async fn check_data_reads_the_postgres_store_it_is_given() {
    let Some(db) = TestDatabase::create("check-data --postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    drop(start(dir.path(), Some(&db.url)));
    let check = || {
        command(&["check-data", "--data", path(dir.path())])
            .env("LIVEBASE_POSTGRES_URL", &db.url)
            .output()
            .expect("livebase runs")
    };
    let fine = check();
    assert!(
        fine.status.success(),
        "{}",
        String::from_utf8_lossy(&fine.stderr)
    );

    // A todo this build's schema refuses, in the database (the data folder
    // has no SQLite file): check-data finds it there.
    let mut app = livebase_functions::app();
    app.extend_schema(livebase_runtime::system::with_system_tables);
    let store = PostgresPersistence::open(&db.url).unwrap();
    let id = livebase_testkit::postgres::insert_unchecked(
        std::sync::Arc::new(store),
        app.schema(),
        "todos",
    )
    .await;
    let refused = check();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("table todos"), "{said}");
    assert!(said.contains(id.as_str()), "{said}");
}

#[tokio::test]
async fn an_import_into_a_database_a_node_is_running_on_is_refused() {
    let Some(db) = TestDatabase::create("import beside a node") else {
        return;
    };
    let parent = tempfile::tempdir().unwrap();
    let export = parent.path().join("export.jsonl");
    {
        let (_node, _addr) = start(&parent.path().join("node"), Some(&db.url));
        checked(on_postgres(
            "export",
            &export,
            &parent.path().join("node"),
            &db.url,
        ));
        // The node holds only its schema checks, which an import may
        // replace; but it is running, and would write beside the import.
        let refused = on_postgres("import", &export, &parent.path().join("import"), &db.url)
            .output()
            .expect("livebase runs");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{said}");
        assert!(said.contains("a livebase node is running"), "{said}");
    }
    // Once the node has stopped (its session ends with it, and the lease
    // with its session), the same import goes in.
    let since = std::time::Instant::now();
    loop {
        let out = on_postgres("import", &export, &parent.path().join("import"), &db.url)
            .output()
            .expect("livebase runs");
        let said = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break;
        }
        assert!(
            said.contains("a livebase node is running")
                && since.elapsed() < livebase_testkit::PATIENCE,
            "{said}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
