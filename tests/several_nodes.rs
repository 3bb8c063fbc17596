//! Several `livebase serve --postgres` processes on one database, with the
//! real binary on the tests' PostgreSQL (see `livebase_testkit::postgres`):
//! the first is the writer, the next follows it. A live query on either node
//! sees a write made on the other; a write sent to the follower runs on the
//! writer, keyed by its session and request id; clients on both nodes never
//! see a torn Transition; killing the writer hands the lease over, losing
//! no acknowledged write and applying none twice; a writer stopped past its
//! lease cannot commit when it wakes, and steps down; a scheduled job runs
//! once across the takeover.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use livebase_schema::protocol::{RequestId, ServerMessage, SessionId, StateModification};
use livebase_schema::Value;
use livebase_testkit::http::post_json;
use livebase_testkit::postgres::TestDatabase;
use livebase_testkit::process::{listening_address, KillOnDrop};
use livebase_testkit::{Client, PASSWORD, PATIENCE};
use serde_json::{json, Value as Json};

mod smtp;

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `livebase serve --port 0 --data <dir> --postgres <url> <args>`, without the
/// variables a developer's shell may set; started, not yet ready.
fn spawn(dir: &Path, url: &str, args: &[&str]) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_livebase"))
        .args([
            "serve",
            "--port",
            "0",
            "--data",
            path(dir),
            "--postgres",
            url,
        ])
        .args(args)
        .env_remove("LIVEBASE_DATA")
        .env_remove("LIVEBASE_POSTGRES_URL")
        .env_remove("LIVEBASE_SMTP_URL")
        .env_remove("LIVEBASE_JWT_SECRET")
        .env_remove("LIVEBASE_NODE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("livebase starts");
    KillOnDrop(child)
}

/// A node, ready: its process, its address, and its standard error (read
/// by a thread of its own, so that a chatty node never blocks).
struct NodeProcess {
    child: KillOnDrop,
    addr: SocketAddr,
    stderr: std::sync::mpsc::Receiver<String>,
    /// Its log lines after the ready line.
    stdout: std::sync::mpsc::Receiver<String>,
    /// Its log lines before the ready line.
    early: Vec<String>,
}

impl NodeProcess {
    fn start(dir: &Path, url: &str) -> NodeProcess {
        NodeProcess::start_with(dir, url, &[])
    }

    /// As [`NodeProcess::start`], with `args` appended to the command line.
    fn start_with(dir: &Path, url: &str, args: &[&str]) -> NodeProcess {
        let mut child = spawn(dir, url, args);
        let stderr = child.0.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let stdout = child.stdout_lines();
        let (addr, early) = listening_address(&stdout);
        NodeProcess {
            child,
            addr,
            stderr: rx,
            stdout,
            early,
        }
    }

    fn ws(&self) -> String {
        format!("ws://{}/api/sync", self.addr)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }

    /// Waits for the process to end; its exit status and what it said.
    fn exit(&mut self) -> (std::process::ExitStatus, String) {
        let since = Instant::now();
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("waitable") {
                break status;
            }
            assert!(since.elapsed() < PATIENCE, "the node kept running");
            std::thread::sleep(Duration::from_millis(20));
        };
        let said: Vec<String> = self.stderr.try_iter().collect();
        (status, said.join("\n"))
    }
}

fn args(json: Json) -> Value {
    Value::from_json(&json, "args").expect("Convex JSON")
}

async fn sign_up(addr: SocketAddr, email: &str) -> String {
    let (status, reply) = post_json(
        addr,
        "/api/auth/sign-up/email",
        &json!({"email": email, "password": PASSWORD, "name": email}),
    )
    .await;
    assert_eq!(status, 200, "sign-up of {email}: {reply}");
    reply["token"].as_str().expect("a token").to_string()
}

async fn signed_in(url: &str, session: SessionId, token: &str) -> Client {
    let mut ws = Client::connect(url, session).await;
    let reply = ws.authenticate(token).await;
    assert!(
        matches!(reply, ServerMessage::Transition { .. }),
        "the token is accepted: {reply:?}"
    );
    ws
}

/// Two nodes on a new database: the writer, then a follower; `None` when
/// the tests have no PostgreSQL.
fn two_nodes(test: &str) -> Option<(TestDatabase, tempfile::TempDir, NodeProcess, NodeProcess)> {
    let db = TestDatabase::create(test)?;
    let dirs = tempfile::tempdir().unwrap();
    let a = NodeProcess::start(&dirs.path().join("a"), &db.url);
    let b = NodeProcess::start(&dirs.path().join("b"), &db.url);
    Some((db, dirs, a, b))
}

async fn create_organization(ws: &mut Client, slug: &str) -> String {
    let created = ws
        .mutation(
            "organizations:create",
            args(json!({"name": slug, "slug": slug})),
        )
        .await
        .expect("the organization is created");
    created.value.as_str().expect("an id").to_string()
}

fn names(items: &Json) -> Vec<String> {
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| i["name"].as_str().expect("a name").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_query_on_one_node_sees_a_write_on_the_other_and_a_follower_forwards_writes() {
    let Some((_db, _dirs, a, b)) = two_nodes("two nodes") else {
        return;
    };
    // Signed up through the follower (auth goes to the writer whole); the
    // token holds on both nodes (they share the deployment's secret).
    let token = sign_up(b.addr, "ada@example.com").await;
    let mut on_a = signed_in(&a.ws(), SessionId::random(), &token).await;
    let mut on_b = signed_in(&b.ws(), SessionId::random(), &token).await;
    let org = create_organization(&mut on_a, "acme").await;
    for ws in [&mut on_a, &mut on_b] {
        ws.add_query(1, "items:getAll", json!({"organizationId": org}))
            .await;
        assert_eq!(ws.next_result(1).await.unwrap(), json!([]));
    }

    // Written on the writer, pushed on the follower.
    on_a.mutation(
        "items:create",
        args(json!({"name": "from a", "status": "todo", "organizationId": org})),
    )
    .await
    .expect("created on the writer");
    assert_eq!(names(&on_b.next_result(1).await.unwrap()), ["from a"]);
    assert_eq!(names(&on_a.next_result(1).await.unwrap()), ["from a"]);

    // Written on the follower: it runs on the writer, and the follower's
    // own live query has it right after the response (read your writes).
    let written = on_b
        .mutation(
            "items:create",
            args(json!({"name": "from b", "status": "todo", "organizationId": org})),
        )
        .await
        .expect("created through the follower");
    let seen = on_b.transitions_until(written.ts).await;
    let last = seen
        .iter()
        .rev()
        .find_map(|t| t.updated(1))
        .expect("the follower's live query moved");
    assert_eq!(names(&last.to_json()), ["from a", "from b"]);
    assert_eq!(
        names(&on_a.next_result(1).await.unwrap()),
        ["from a", "from b"]
    );

    // A resend through the follower (same session, same request id) is
    // answered from the writer's stored outcome, not run again.
    let session = SessionId::random();
    let mut keyed = signed_in(&b.ws(), session.clone(), &token).await;
    let request = RequestId(7);
    let create = args(json!({"name": "once", "status": "todo", "organizationId": org}));
    let first = keyed
        .mutation_as(request, "items:create", create.clone())
        .await
        .expect("created");
    drop(keyed);
    let mut again = signed_in(&b.ws(), session, &token).await;
    let resent = again
        .mutation_as(request, "items:create", create)
        .await
        .expect("answered");
    assert_eq!(resent.value, first.value, "the same document, not a second");
    assert_eq!(
        names(&on_a.next_result(1).await.unwrap()),
        ["from a", "from b", "once"]
    );
    on_a.expect_silence(Duration::from_millis(300)).await;

    // The writer's end of forwarding believes an identity only beside the
    // nodes' secret: without it, or with a wrong one, a stranger naming
    // Ada's identity writes nothing.
    let session = livebase_testkit::http::http_json(
        a.addr,
        "GET",
        "/api/auth/get-session",
        Some(&token),
        &[],
        None,
    )
    .await
    .json();
    let forged = json!({
        "path": "items:create",
        "args": [{"name": "forged", "status": "todo", "organizationId": org}],
        "identity": {"userId": session["session"]["userId"], "sessionId": session["session"]["id"]},
        "caller": "client",
    });
    for secret in [None, Some("bm90IHRoZSBzZWNyZXQ")] {
        let headers: Vec<(&str, &str)> = secret.map(|s| ("livebase-node", s)).into_iter().collect();
        let answer = livebase_testkit::http::http_json(
            a.addr,
            "POST",
            "/_node/mutation",
            None,
            &headers,
            Some(&forged),
        )
        .await;
        assert_eq!(answer.status, 404, "{secret:?}");
        // Nor does it hand the writer sessions to end.
        let answer = livebase_testkit::http::http_json(
            a.addr,
            "POST",
            "/_node/end-sessions",
            None,
            &headers,
            Some(&json!({"sessionIds": [session["session"]["id"]]})),
        )
        .await;
        assert_eq!(answer.status, 404, "{secret:?}");
    }
    on_a.expect_silence(Duration::from_millis(300)).await;
}

/// What a client holds of its live queries after each Transition.
#[derive(Default)]
struct Held(HashMap<u32, Json>);

impl Held {
    fn apply(&mut self, modifications: &[StateModification]) {
        for m in modifications {
            if let StateModification::QueryUpdated {
                query_id, value, ..
            } = m
            {
                self.0.insert(query_id.0, value.to_json());
            }
        }
    }

    /// Whether every item `items:getAll` (query 1) holds with each status
    /// is exactly what `items:getByStatus` of that status (2: todo, 3: done)
    /// holds: results of one snapshot always agree.
    fn consistent(&self) -> Result<(), String> {
        let (Some(all), Some(todo), Some(done)) = (self.0.get(&1), self.0.get(&2), self.0.get(&3))
        else {
            return Ok(());
        };
        let ids = |v: &Json, status: Option<&str>| -> BTreeSet<String> {
            v.as_array()
                .unwrap()
                .iter()
                .filter(|i| status.is_none_or(|s| i["status"] == s))
                .map(|i| i["_id"].as_str().unwrap().to_string())
                .collect()
        };
        for (status, by_status) in [("todo", todo), ("done", done)] {
            if ids(all, Some(status)) != ids(by_status, None) {
                return Err(format!(
                    "torn: getAll {all} but getByStatus({status}) {by_status}"
                ));
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_both_nodes_never_see_a_torn_transition() {
    let Some((_db, _dirs, a, b)) = two_nodes("no torn transitions") else {
        return;
    };
    let token = sign_up(a.addr, "ada@example.com").await;
    let mut writer_a = signed_in(&a.ws(), SessionId::random(), &token).await;
    let org = create_organization(&mut writer_a, "acme").await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let created = writer_a
            .mutation(
                "items:create",
                args(json!({"name": format!("item {i}"), "status": "todo", "organizationId": org})),
            )
            .await
            .expect("created");
        ids.push(created.value.as_str().unwrap().to_string());
    }
    let mut writer_b = signed_in(&b.ws(), SessionId::random(), &token).await;

    let watch = |url: String, token: String, org: String| async move {
        let mut ws = signed_in(&url, SessionId::random(), &token).await;
        ws.subscribe(&[
            (1, "items:getAll", args(json!({"organizationId": org}))),
            (
                2,
                "items:getByStatus",
                args(json!({"organizationId": org, "status": "todo"})),
            ),
            (
                3,
                "items:getByStatus",
                args(json!({"organizationId": org, "status": "done"})),
            ),
        ])
        .await;
        ws
    };
    let mut readers = Vec::new();
    for url in [a.ws(), b.ws(), a.ws(), b.ws()] {
        readers.push(watch(url, token.clone(), org.clone()).await);
    }
    let mut readers: Vec<_> = readers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut held = Held::default();
                let mut transitions = 0u32;
                for t in ws.stashed_transitions() {
                    held.apply(&t.modifications);
                }
                // Reads until the last write's status shows ("item 0" done
                // for the last time), checking after every Transition.
                loop {
                    let t = ws.transition().await;
                    held.apply(&t.modifications);
                    transitions += 1;
                    held.consistent()?;
                    let finished = held.0.get(&3).is_some_and(|done| {
                        done.as_array()
                            .unwrap()
                            .iter()
                            .any(|i| i["name"] == "finished")
                    });
                    if finished {
                        return Ok::<u32, String>(transitions);
                    }
                }
            })
        })
        .collect();

    // Writers on both nodes move items between the statuses.
    for round in 0..30 {
        let ws = if round % 2 == 0 {
            &mut writer_a
        } else {
            &mut writer_b
        };
        let id = &ids[round % ids.len()];
        let status = if round % 3 == 0 { "done" } else { "todo" };
        ws.mutation("items:update", args(json!({"id": id, "status": status})))
            .await
            .expect("updated");
    }
    writer_b
        .mutation(
            "items:update",
            args(json!({"id": ids[0], "name": "finished", "status": "done"})),
        )
        .await
        .expect("updated");
    for reader in readers.drain(..) {
        let transitions = tokio::time::timeout(PATIENCE, reader)
            .await
            .expect("every reader sees the last write")
            .expect("the reader ran")
            .unwrap_or_else(|torn| panic!("{torn}"));
        assert!(transitions >= 1);
    }
}

/// Items named in `items:getAll`'s result, counted.
fn counted(items: &Json) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names(items) {
        *counts.entry(name).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_writer_hands_the_lease_over_and_loses_no_acknowledged_write() {
    let Some((_db, _dirs, a, b)) = two_nodes("failover") else {
        return;
    };
    let token = sign_up(a.addr, "ada@example.com").await;
    let mut setup = signed_in(&a.ws(), SessionId::random(), &token).await;
    let org = create_organization(&mut setup, "acme").await;
    drop(setup);

    // One writer per node, each sending keyed mutations one after another;
    // a writer whose connection breaks resends its pending request, with
    // the same session and request id, through the other node.
    const WRITES: u32 = 40;
    let writer = |prefix: &'static str, first: String, other: String| {
        let (token, org) = (token.clone(), org.clone());
        tokio::spawn(async move {
            let session = SessionId::random();
            let mut url = first;
            let mut ws = signed_in(&url, session.clone(), &token).await;
            let mut acknowledged = Vec::new();
            for i in 0..WRITES {
                let name = format!("{prefix}{i}");
                let create = args(json!({"name": name, "status": "todo", "organizationId": org}));
                let request = RequestId(i);
                loop {
                    let sent = tokio::spawn({
                        let create = create.clone();
                        async move {
                            let r = ws.mutation_as(request, "items:create", create).await;
                            (ws, r)
                        }
                    })
                    .await;
                    match sent {
                        Ok((back, Ok(_))) => {
                            ws = back;
                            acknowledged.push(name);
                            break;
                        }
                        Ok((_, Err(e))) => panic!("{name}: {e:?}"),
                        // The connection broke (the test client panics):
                        // the same request again, through the other node.
                        Err(_) => {
                            url = other.clone();
                            ws = signed_in(&url, session.clone(), &token).await;
                        }
                    }
                }
                if i == WRITES / 2 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            acknowledged
        })
    };
    let from_a = writer("a", a.ws(), b.ws());
    let from_b = writer("b", b.ws(), b.ws());
    // Some writes in, the writer is killed (its session with PostgreSQL
    // ends with it, and the follower takes the lease).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut a = a;
    a.signal("-KILL");
    let _ = a.exit();
    let (from_a, from_b) = (from_a.await.unwrap(), from_b.await.unwrap());
    assert_eq!(from_a.len() + from_b.len(), 2 * WRITES as usize);

    // Every acknowledged write is there, once.
    let mut reader = signed_in(&b.ws(), SessionId::random(), &token).await;
    reader
        .add_query(1, "items:getAll", json!({"organizationId": org}))
        .await;
    let items = counted(&reader.next_result(1).await.unwrap());
    let expected: BTreeMap<String, usize> = from_a
        .iter()
        .chain(&from_b)
        .map(|n| (n.clone(), 1))
        .collect();
    assert_eq!(items, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_stopped_past_its_lease_cannot_commit_and_steps_down_and_a_job_runs_once() {
    let Some((db, dirs, a, b)) = two_nodes("fencing") else {
        return;
    };
    let token = sign_up(a.addr, "ada@example.com").await;
    let mut on_a = signed_in(&a.ws(), SessionId::random(), &token).await;
    let org = create_organization(&mut on_a, "acme").await;

    // Stopped, the writer holds its session open but answers nothing: the
    // lease runs out and the follower takes it.
    a.signal("-STOP");
    let mut on_b = signed_in(&b.ws(), SessionId::random(), &token).await;
    let taken = Instant::now();
    on_b.mutation(
        "items:create",
        args(json!({"name": "after", "status": "todo", "organizationId": org})),
    )
    .await
    .expect("the follower, now the writer, commits");
    eprintln!(
        "the follower committed {:?} after the writer stopped",
        taken.elapsed()
    );
    // The new writer runs scheduled jobs: an invitation's email.
    on_b.mutation(
        "organizations:invite",
        args(json!({"organizationId": org, "email": "grace@example.com", "role": "member"})),
    )
    .await
    .expect("invited");
    livebase_testkit::mail::outbox_link(&dirs.path().join("b"), "grace@example.com", "/").await;

    // Woken, the old writer's commit is refused (fenced by the epoch), and
    // it stops.
    a.signal("-CONT");
    // Its answer: an error, or the connection closed as it stops (the
    // test client panics on that, inside a task of its own).
    let late_org = org.clone();
    let late = tokio::spawn(async move {
        on_a.mutation(
            "items:create",
            args(json!({"name": "late", "status": "todo", "organizationId": late_org})),
        )
        .await
    })
    .await
    .map_err(|_| ())
    .and_then(|answer| answer.map_err(|_| ()));
    let mut a = a;
    let (status, said) = a.exit();
    assert!(!status.success(), "the deposed writer exits with an error");
    assert!(said.contains("lost the writer's lease"), "{said}");
    on_b.add_query(1, "items:getAll", json!({"organizationId": org}))
        .await;
    let items = names(&on_b.next_result(1).await.unwrap());
    match late {
        Err(_) => assert_eq!(items, ["after"], "nothing of the deposed writer's landed"),
        // Had it noticed first and forwarded the write, it would be there.
        Ok(_) => assert_eq!(items, ["after", "late"]),
    }
    // The invitation's email went out once, from the new writer.
    let mails = |node: &str| -> usize {
        std::fs::read_dir(dirs.path().join(node).join("outbox"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .contains("grace@example.com")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((mails("a"), mails("b")), (0, 1));
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_used_only_on_a_follower_ends_at_its_expiry() {
    use livebase_runtime::auth::tokens::{Claims, TokenKeys};
    use livebase_runtime::database::Database;
    use livebase_schema::obj;
    use livebase_store_postgres::PostgresPersistence;
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    let Some((db, _dirs, a, b)) = two_nodes("expiry on a follower") else {
        return;
    };
    let ada = sign_up(a.addr, "ada@example.com").await;
    let user_id = livebase_testkit::http::http_json(
        a.addr,
        "GET",
        "/api/auth/get-session",
        Some(&ada),
        &[],
        None,
    )
    .await
    .json()["session"]["userId"]
        .as_str()
        .expect("a user id")
        .to_string();
    // A session of Ada's that ends in two seconds, written straight into
    // the database, and a token for it signed with the deployment's secret
    // the nodes share there: only the follower will ever see it.
    let store = PostgresPersistence::open(&db.url).expect("the database");
    let mut app = livebase_functions::app();
    app.extend_schema(livebase_runtime::system::with_system_tables);
    let side = Database::open(Arc::new(store.clone()), app.schema().clone()).expect("opens");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expires_at = now.as_millis() as f64 + 2000.0;
    let user = user_id.clone();
    let sid = side
        .mutate(move |tx| {
            tx.insert(
                "sessions",
                obj! { "userId" => user.as_str(), "expiresAt" => expires_at },
            )
        })
        .await
        .expect("a session row")
        .value;
    let keys = TokenKeys::from_secret(&store.shared_secret("deployment").unwrap()).unwrap();
    let token = keys
        .issue(&Claims {
            sub: user_id,
            sid: sid.as_str().to_string(),
            iat: now.as_secs(),
            exp: now.as_secs() + 60,
        })
        .expect("signs");

    let mut on_b = signed_in(&b.ws(), SessionId::random(), &token).await;
    on_b.add_query(1, "organizations:listMine", json!({})).await;
    assert_eq!(on_b.next_result(1).await, Ok(json!([])));
    // Nothing is written from here on: the next result is the session's end,
    // which the writer carries out for the follower.
    let waited = tokio::spawn(async move { on_b.next_result(1).await }).await;
    let Ok(answer) = waited else {
        let said = |n: &NodeProcess| {
            let lines: Vec<String> = n.stdout.try_iter().chain(n.stderr.try_iter()).collect();
            lines.join("\n")
        };
        panic!(
            "no result after the expiry\nwriter:\n{}\nfollower:\n{}",
            said(&a),
            said(&b)
        );
    };
    let ended = answer.expect_err("the session expired");
    assert_eq!(
        livebase_testkit::error_code(&ended),
        Some("UNAUTHENTICATED")
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_cut_short_by_the_writers_death_is_sent_again_by_the_new_writer() {
    let Some(db) = TestDatabase::create("interrupted action") else {
        return;
    };
    // The relay keeps each message, then takes four seconds to say so: a
    // writer killed meanwhile leaves its `emails:send` in progress.
    let sink = smtp::SmtpSink::start_with(smtp::SinkOptions {
        data_delay: Some(Duration::from_secs(4)),
        ..smtp::SinkOptions::default()
    });
    let relay = sink.url();
    let dirs = tempfile::tempdir().unwrap();
    let smtp_args = ["--smtp", relay.as_str()];
    let mut a = NodeProcess::start_with(&dirs.path().join("a"), &db.url, &smtp_args);
    let b = NodeProcess::start_with(&dirs.path().join("b"), &db.url, &smtp_args);
    let token = sign_up(a.addr, "ada@example.com").await;
    let mut on_a = signed_in(&a.ws(), SessionId::random(), &token).await;
    let org = create_organization(&mut on_a, "acme").await;
    on_a.mutation(
        "organizations:invite",
        args(json!({"organizationId": org, "email": "grace@example.com", "role": "member"})),
    )
    .await
    .expect("invited");
    let to_grace = |m: &smtp::Received| m.rcpt_tos == ["grace@example.com"];
    sink.wait_until("the invitation, in the relay's hands", PATIENCE, |got| {
        got.iter().any(to_grace)
    })
    .await;
    // The writer dies before the relay's answer: the job is left running.
    a.signal("-KILL");
    let _ = a.exit();

    // The follower takes over, marks the job interrupted and, the mail being
    // retryable, sends it again: the same message, recognisably.
    let mails = sink
        .wait_until("the invitation, sent again", PATIENCE * 2, |got| {
            got.iter().filter(|m| to_grace(m)).count() >= 2
        })
        .await;
    let ids: BTreeSet<&str> = mails
        .iter()
        .filter(|m| to_grace(m))
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(ids.len(), 1, "one Message-ID for both: {ids:?}");
    drop(b);
}

/// The bytes of a file, not all alike.
fn file_bytes() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_to_one_writer_is_served_by_every_node_and_after_the_writer_dies() {
    use livebase_testkit::http::http;
    use livebase_testkit::mail::path_of;

    let Some((_db, _dirs, a, b)) = two_nodes("files across nodes") else {
        return;
    };
    let token = sign_up(a.addr, "ada@example.com").await;
    // The upload goes through the follower, which passes it to the writer.
    let mut on_b = signed_in(&b.ws(), SessionId::random(), &token).await;
    let bytes = file_bytes();
    on_b.upload_avatar(b.addr, "application/octet-stream", &bytes)
        .await;
    on_b.add_query(1, "userProfiles:get", json!({})).await;
    let profile = on_b.next_result(1).await.expect("the profile");
    let avatar = profile["avatarUrl"].as_str().expect("a URL").to_string();

    for node in [&a, &b] {
        let got = http(node.addr, "GET", &path_of(&avatar), &[], b"").await;
        assert_eq!(got.status, 200, "download from {}", node.addr);
        assert!(got.bytes == bytes, "the bytes from {}", node.addr);
    }

    // The writer stops answering: the follower serves the file itself,
    // from the bytes every node shares (passed on to the writer, the
    // download would wait for it and end in 503).
    a.signal("-STOP");
    let got = http(b.addr, "GET", &path_of(&avatar), &[], b"").await;
    assert_eq!(
        got.status, 200,
        "download from the follower, the writer stopped"
    );
    assert!(got.bytes == bytes, "the bytes from the follower");

    // The writer dies; the follower takes over and still has the bytes.
    let mut a = a;
    a.signal("-KILL");
    let _ = a.exit();
    let since = Instant::now();
    let got = loop {
        let got = http(b.addr, "GET", &path_of(&avatar), &[], b"").await;
        if got.status != 503 || since.elapsed() > PATIENCE {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        got.status,
        200,
        "download after the takeover: {}",
        String::from_utf8_lossy(&got.bytes)
    );
    assert!(got.bytes == bytes, "the bytes after the takeover");
}

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Uploads that reach a follower while the writer does not answer hold a
/// bounded part of its memory. Once, a follower read each body whole and
/// passed it on (it grew by 360 MiB here), then read one only when among
/// four passed on (66 MiB); now it streams the bytes into the database as
/// the writer would, in chunks, and passes on only the row (42–45 MiB, the
/// database connections' buffers and the allocator's arenas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_a_follower_hold_a_bounded_part_of_its_memory() {
    use livebase_testkit::http::http;
    use livebase_testkit::mail::path_of;

    let Some((_db, _dirs, a, b)) = two_nodes("uploads passed on") else {
        return;
    };
    let token = sign_up(a.addr, "ada@example.com").await;
    let mut on_a = signed_in(&a.ws(), SessionId::random(), &token).await;
    const UPLOADS: usize = 12;
    const SIZE: usize = 16 << 20;
    let mut urls = Vec::new();
    for _ in 0..UPLOADS {
        let url = on_a
            .mutation("files:generateUploadUrl", args(json!({})))
            .await
            .expect("an upload URL")
            .value
            .to_json();
        urls.push(path_of(url.as_str().expect("a URL")));
    }

    // The writer stops answering; twelve 16 MiB uploads reach the follower,
    // which stores their bytes and then waits for the writer to commit the
    // rows.
    a.signal("-STOP");
    let before = resident_bytes(b.child.0.id());
    let body = std::sync::Arc::new(vec![7u8; SIZE]);
    let uploads: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let (addr, body) = (b.addr, body.clone());
            tokio::spawn(async move {
                http(
                    addr,
                    "POST",
                    &url,
                    &[("Content-Type", "application/octet-stream")],
                    &body,
                )
                .await
            })
        })
        .collect();
    let mut most = before;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        most = most.max(resident_bytes(b.child.0.id()));
    }
    for u in &uploads {
        u.abort();
    }
    a.signal("-KILL");
    let grew = most.saturating_sub(before);
    assert!(
        grew < (UPLOADS * SIZE / 2) as u64,
        "the follower grew by {} MiB for {UPLOADS} uploads of {} MiB",
        grew >> 20,
        SIZE >> 20
    );
}

/// The `_schema_checks` rows of the database at `url`: table → fingerprint.
async fn schema_checks(url: &str) -> BTreeMap<String, String> {
    use livebase_runtime::database::Database;
    use livebase_runtime::system::{CHECKED_FINGERPRINT, CHECKED_TABLE, SCHEMA_CHECKS};
    use livebase_store_postgres::PostgresPersistence;
    use std::sync::Arc;

    let store = PostgresPersistence::open(url).expect("the database");
    let side = Database::open(Arc::new(store), app_schema()).expect("opens");
    let rows = side
        .query(|tx| tx.query(SCHEMA_CHECKS).collect())
        .await
        .expect("the records")
        .value;
    rows.iter()
        .map(|r| {
            let field = |f: &str| r.get(f).and_then(Value::as_str).unwrap().to_string();
            (field(CHECKED_TABLE), field(CHECKED_FINGERPRINT))
        })
        .collect()
}

/// The application's schema with the system tables, as a node has it.
fn app_schema() -> livebase_schema::Schema {
    let mut app = livebase_functions::app();
    app.extend_schema(livebase_runtime::system::with_system_tables);
    app.schema().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_records_its_schema_checks_and_a_new_writer_forgets_other_codes() {
    use livebase_runtime::schema_check::fingerprint;

    let Some((db, dirs, a, _b)) = two_nodes("schema checks on several nodes") else {
        return;
    };
    let schema = app_schema();
    let own: BTreeMap<String, String> = schema
        .tables()
        .map(|(name, def)| (name.to_string(), fingerprint(name, def)))
        .collect();
    // The writer checks every table in the background and records it.
    livebase_testkit::eventually("the writer's records", PATIENCE, || async {
        let records = schema_checks(&db.url).await;
        if records == own {
            Ok(())
        } else {
            Err(format!("{} of {} tables", records.len(), own.len()))
        }
    })
    .await;
    // A node with the same code that starts now reads no document.
    let c = NodeProcess::start(&dirs.path().join("c"), &db.url);
    assert!(
        c.early.iter().any(|l| l.contains("none read")),
        "{}",
        c.early.join("\n")
    );

    // Another code's record for `todos`, as a writer with another schema
    // would leave it: a node starting now reads that table.
    {
        use livebase_runtime::database::Database;
        use livebase_runtime::system::{CHECKED_FINGERPRINT, CHECKED_TABLE, SCHEMA_CHECKS};
        use livebase_schema::obj;
        use livebase_store_postgres::PostgresPersistence;
        let store = PostgresPersistence::open(&db.url).unwrap();
        let side = Database::open(std::sync::Arc::new(store), schema.clone()).unwrap();
        side.mutate(|tx| {
            for row in tx.query(SCHEMA_CHECKS).collect()? {
                if row.get(CHECKED_TABLE).and_then(Value::as_str) == Some("todos") {
                    let id = row.get("_id").and_then(Value::as_str).unwrap();
                    tx.delete(&livebase_schema::DocumentId::parse(id).unwrap())?;
                }
            }
            tx.insert(
                SCHEMA_CHECKS,
                obj! { CHECKED_TABLE => "todos", CHECKED_FINGERPRINT => "another code's" },
            )
        })
        .await
        .unwrap();
    }
    let d = NodeProcess::start(&dirs.path().join("d"), &db.url);
    assert!(
        d.early
            .iter()
            .any(|l| l.contains("checked the documents of 1 table(s)")),
        "{}",
        d.early.join("\n")
    );

    // A todo no node's code accepts, as a node with a laxer `todos` (or a
    // tool) could have written it; then the writer goes. The next one
    // forgets the other code's record before it commits anything else; its
    // own check of `todos` finds the todo, so it records nothing for it,
    // and a node with that other code would read `todos` again.
    let store = livebase_store_postgres::PostgresPersistence::open(&db.url).unwrap();
    livebase_testkit::postgres::insert_unchecked(std::sync::Arc::new(store), &schema, "todos")
        .await;
    let mut a = a;
    a.signal("-KILL");
    let _ = a.exit();
    let nodes = [&_b, &c, &d];
    livebase_testkit::eventually("the new writer's check", PATIENCE, || async {
        let found = nodes
            .iter()
            .flat_map(|n| n.stdout.try_iter().collect::<Vec<_>>())
            .any(|l| l.contains("does not accept"));
        if found {
            Ok(())
        } else {
            Err("no writer has checked yet".to_string())
        }
    })
    .await;
    let records = schema_checks(&db.url).await;
    assert_eq!(records.get("todos"), None, "{records:?}");
    let mut others = own.clone();
    others.remove("todos");
    assert_eq!(
        records
            .into_iter()
            .filter(|(t, _)| t != "todos")
            .collect::<BTreeMap<_, _>>(),
        others
    );
    drop((c, d));
}
