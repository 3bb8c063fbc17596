//! `livebase export` and `livebase import`, run as the real command over real
//! data folders: a store seeded through the server (users by sign-up, an
//! organization with a member, todos, scheduled jobs, one holding an int64
//! and bytes) comes back document for document in a fresh folder, and a server
//! started there answers the same queries — to the old tokens when the
//! `jwt-secret` moved too, and only to new sign-ins when it did not. An
//! import into a folder that holds data, or of a file with a bad line, is
//! refused, names the problem, and changes nothing; one into a folder where a
//! server only started goes in.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use livebase_runtime::auth::tokens::SECRET_FILE;
use livebase_runtime::store::sqlite::{SqlitePersistence, DATABASE_FILE};
use livebase_runtime::store::{Document, Persistence};
use livebase_runtime::system::SCHEMA_CHECKS;
use livebase_schema::{obj, Value};
use livebase_testkit::server::code;
use livebase_testkit::{TestServer, User, PASSWORD};
use serde_json::{json, Value as Json};
use tempfile::TempDir;

/// Runs the `livebase` binary.
fn livebase(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_livebase"))
        .args(args)
        .env_remove("LIVEBASE_DATA")
        .env_remove("LIVEBASE_JWT_SECRET")
        .output()
        .expect("livebase runs")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every document of a data folder, in id order.
fn documents(data: &Path) -> Vec<Document> {
    let store = SqlitePersistence::open(data.join(DATABASE_FILE)).expect("the store opens");
    let mut conn = store.connect().expect("connects");
    conn.begin_read().expect("a snapshot");
    let docs = conn.scan_documents(None, 1_000_000).expect("scans");
    conn.end_read().expect("ends");
    docs
}

fn ok(outcome: livebase_testkit::Outcome) -> Json {
    outcome.unwrap_or_else(|f| panic!("expected success, got {f:?}"))
}

/// The server of `functions/` over an existing data folder.
async fn start_on(dir: TempDir) -> TestServer {
    TestServer::start_in(dir, livebase_functions::app(), |_| {}).await
}

/// A seeded server: Ada owns `acme` with three todos (one done), Bob is a
/// member who verified his address; the mails (two verification links, Bob's
/// welcome, his invitation) are waited for here until sent, so nothing
/// changes after the seeding.
struct Seeded {
    t: TestServer,
    ada: User,
    org: String,
}

async fn seed() -> Seeded {
    let t = support::start().await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let bob = t.sign_up_verified("bob@example.com", "Bob").await;
    let org = ok(t
        .mutation(
            "organizations:create",
            &ada,
            json!({"name": "Acme", "slug": "acme"}),
        )
        .await);
    let org = org.as_str().expect("an organization id").to_string();
    let invitation = ok(t
        .mutation(
            "organizations:invite",
            &ada,
            json!({"organizationId": org, "email": bob.email, "role": "member"}),
        )
        .await);
    ok(t.mutation(
        "organizations:acceptInvitation",
        &bob,
        json!({"invitationId": invitation}),
    )
    .await);
    let mut first = None;
    for text in ["write tests", "export", "import"] {
        let id = ok(t
            .mutation(
                "todos:create",
                &ada,
                json!({"organizationId": org, "text": text}),
            )
            .await);
        first.get_or_insert(id);
    }
    ok(t.mutation("todos:toggle", &ada, json!({"id": first})).await);
    // A canceled job whose arguments hold an int64 and bytes, which the
    // export must carry exactly.
    t.server
        .state
        .executor
        .database()
        .mutate(|tx| {
            tx.insert(
                "_scheduled_functions",
                obj! {
                    "name" => "todos:create",
                    "args" => obj! { "n" => i64::MAX - 1, "raw" => vec![0u8, 255] },
                    "scheduledTime" => 4.0e12,
                    "state" => "canceled",
                },
            )
        })
        .await
        .expect("a job is stored");
    // Wait for the mails (four jobs: two verifications, a welcome, an
    // invitation); the
    // application's crons' next runs stay pending, far off.
    t.rows_until("_scheduled_functions", "the mail jobs to finish", |jobs| {
        let mails: Vec<&Value> = jobs
            .iter()
            .filter(|j| j.get("name").and_then(Value::as_str) == Some("emails:send"))
            .collect();
        let sent = |j: &&Value| j.get("state").and_then(Value::as_str) == Some("success");
        (mails.len() == 4 && mails.iter().all(sent)).then_some(())
    })
    .await;
    Seeded { t, ada, org }
}

#[tokio::test]
async fn an_export_imported_into_a_fresh_folder_is_the_same_data_and_answers_the_same() {
    let Seeded { t, ada, org } = seed().await;
    let todos = ok(t
        .query("todos:list", &ada, json!({"organizationId": org}))
        .await);
    assert_eq!(todos.as_array().map(Vec::len), Some(3), "{todos}");
    let orgs = ok(t.query("organizations:listMine", &ada, json!({})).await);

    // Exported while the server runs: a read snapshot, no need to stop it.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.jsonl");
    let out = livebase(&["export", path(&file), "--data", path(t.data_dir())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(SECRET_FILE),
        "the secret is mentioned"
    );
    let source = t.dir.path().to_path_buf();
    let TestServer {
        server,
        dir: source_dir,
    } = t;
    server.shutdown().await;
    // The record of the server's schema check stays behind: it is said of
    // this store, not data.
    let (checks, exported): (Vec<_>, Vec<_>) = documents(&source)
        .into_iter()
        .partition(|d| d.table() == SCHEMA_CHECKS);
    assert!(!checks.is_empty(), "the server recorded its schema check");
    let tables: std::collections::BTreeSet<&str> = exported.iter().map(|d| d.table()).collect();
    for table in [
        "users",
        "sessions",
        "organizations",
        "members",
        "invitations",
        "todos",
        "_scheduled_functions",
    ] {
        assert!(tables.contains(table), "{table} is seeded: {tables:?}");
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().count(),
        1 + exported.len(),
        "a header, then a line per document"
    );

    // Into a folder where a server only started (it recorded its schema
    // check, which the import forgets: what it loads is checked against
    // the import's schema), with the secret: the same documents, ids, times.
    let TestServer { server, dir: moved } = start_on(tempfile::tempdir().unwrap()).await;
    server.shutdown().await;
    let left = documents(moved.path());
    assert!(!left.is_empty() && left.iter().all(|d| d.table() == SCHEMA_CHECKS));
    let out = livebase(&["import", path(&file), "--data", path(moved.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(documents(moved.path()), exported);
    std::fs::copy(source.join(SECRET_FILE), moved.path().join(SECRET_FILE)).unwrap();

    // Indexes rebuilt: the same answers, to the token issued before the move.
    let t2 = start_on(moved).await;
    assert_eq!(
        ok(t2
            .query("todos:list", &ada, json!({"organizationId": org}))
            .await),
        todos
    );
    assert_eq!(
        ok(t2.query("organizations:listMine", &ada, json!({})).await),
        orgs
    );
    assert_eq!(t2.sign_in("bob@example.com", PASSWORD).await.status, 200);
    t2.server.shutdown().await;

    // Without the secret the data is all there, but old tokens are refused
    // until their users sign in again.
    let fresh = tempfile::tempdir().unwrap();
    let out = livebase(&["import", path(&file), "--data", path(fresh.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(SECRET_FILE),
        "the secret is mentioned"
    );
    let t3 = start_on(fresh).await;
    let refused = t3
        .query("todos:list", &ada, json!({"organizationId": org}))
        .await;
    assert_eq!(code(&refused), "UNAUTHENTICATED");
    let again = t3.sign_in("ada@example.com", PASSWORD).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let ada_again = User::from_reply(&again, "ada@example.com");
    assert_eq!(
        ok(t3
            .query("todos:list", &ada_again, json!({"organizationId": org}))
            .await),
        todos
    );
    t3.server.shutdown().await;
    drop(source_dir);
}

#[tokio::test]
async fn import_refuses_a_folder_that_already_holds_data() {
    let Seeded { t, .. } = seed().await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.jsonl");
    let out = livebase(&["export", path(&file), "--data", path(t.data_dir())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let TestServer { server, dir } = t;
    server.shutdown().await;
    let before = documents(dir.path());

    let out = livebase(&["import", path(&file), "--data", path(dir.path())]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(documents(dir.path()), before, "nothing changed");
}

#[tokio::test]
async fn a_bad_line_is_named_and_nothing_is_imported() {
    let Seeded { t, .. } = seed().await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.jsonl");
    let out = livebase(&["export", path(&file), "--data", path(t.data_dir())]);
    assert!(out.status.success(), "{}", stderr(&out));
    t.server.shutdown().await;
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let todo = lines
        .iter()
        .position(|l| l.starts_with(r#"{"table":"todos""#))
        .expect("a todo line");
    let mut not_a_bool: Json = serde_json::from_str(&lines[todo]).unwrap();
    not_a_bool["doc"]["completed"] = json!("yes");

    let cases = [
        (todo, "{\"table\": \"todos\",".to_string(), "not valid JSON"),
        (
            2,
            json!({"table": "ghosts", "_id": "ghosts_0000000000000000", "_creationTime": 1.0, "doc": {}})
                .to_string(),
            "unknown table `ghosts`",
        ),
        (todo, not_a_bool.to_string(), "todos.completed"),
    ];
    for (at, bad, expected) in cases {
        let mut edited = lines.clone();
        edited[at] = bad.clone();
        let broken = work.path().join("broken.jsonl");
        std::fs::write(&broken, edited.join("\n")).unwrap();
        let target = tempfile::tempdir().unwrap();
        let out = livebase(&["import", path(&broken), "--data", path(target.path())]);
        assert!(!out.status.success(), "{bad} was accepted");
        let err = stderr(&out);
        assert!(err.contains(&format!("line {}:", at + 1)), "{bad}: {err}");
        assert!(err.contains(expected), "{bad}: {err}");
        assert_eq!(
            documents(target.path()),
            vec![],
            "nothing imported for {bad}"
        );
    }
}
