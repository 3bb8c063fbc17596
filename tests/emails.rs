//! Template emails end to end, over real sockets: `organizations:invite`
//! schedules `emails:send`, the scheduler runs it, and a real SMTP server
//! (`tests/smtp/sink.py`, Python's aiosmtpd) receives the invitation with the
//! right recipient, subject, link and role. Without SMTP the mail lands in the
//! outbox folder; an SMTP refusal fails the job with the server's reply. And
//! DESIGN.md invariant 7 across a crash: a server SIGKILLed between the
//! scheduling commit and the run sends the mail once, and runs the scheduled
//! mutation once, after it restarts. The killed server is a child process —
//! this test binary re-executed to run only [`child_serves_until_killed`].

mod smtp;
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use livebase_runtime::email::MailOptions;
use livebase_runtime::registry::Registry;
use livebase_runtime::server::{serve, ServerOptions};
use livebase_schema::{define_table, obj, v, Value};
use serde_json::{json, Value as Json};
use smtp::SmtpSink;
use support::{TestServer, PATIENCE};
use tempfile::TempDir;

/// Where links in mails point, in these tests.
const APP_URL: &str = "https://app.example.com";
/// Set in the child: its data folder.
const CHILD_DIR: &str = "LIVEBASE_EMAILS_CHILD_DIR";
/// Set in the child: the SMTP URL.
const CHILD_SMTP: &str = "LIVEBASE_EMAILS_CHILD_SMTP";

fn options(dir: &Path, smtp: Option<String>) -> ServerOptions {
    ServerOptions {
        data_dir: dir.to_path_buf(),
        mail: MailOptions {
            smtp,
            app_url: Some(APP_URL.into()),
            ..MailOptions::default()
        },
        ..ServerOptions::default()
    }
}

async fn start(dir: TempDir, registry: Registry, smtp: Option<String>) -> TestServer {
    let server = serve(registry, options(dir.path(), smtp))
        .await
        .expect("the server starts");
    TestServer { server, dir }
}

/// Waits until `check` finds what it looks for in `table`'s rows.
async fn rows_until<T>(
    t: &TestServer,
    table: &'static str,
    what: &str,
    check: impl Fn(&[Json]) -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        let rows = t.rows(table).await;
        if let Some(found) = check(&rows) {
            return found;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "waited for {what}; {table}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `emails:send` job whose mail goes to `to`, once it is settled.
async fn settled_mail_job(t: &TestServer, to: &str) -> Json {
    rows_until(
        t,
        "_scheduled_functions",
        "the mail job to settle",
        |jobs| {
            jobs.iter()
                .find(|j| {
                    j["name"] == "emails:send"
                        && j["args"]["to"] == to
                        && matches!(j["state"].as_str(), Some("success" | "failed"))
                })
                .cloned()
        },
    )
    .await
}

#[tokio::test]
async fn an_invitation_reaches_a_real_smtp_server_with_its_link_and_role() {
    let sink = SmtpSink::start();
    let t = start(
        tempfile::tempdir().unwrap(),
        livebase_functions::app(),
        Some(sink.url()),
    )
    .await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let org = t
        .mutation(
            "organizations:create",
            &ada,
            json!({"name": "Acme & Co", "slug": "acme"}),
        )
        .await
        .expect("the organization is created");
    let invitation = t
        .mutation(
            "organizations:invite",
            &ada,
            json!({"organizationId": org, "email": "bob@example.com", "role": "admin"}),
        )
        .await
        .expect("the invitation is created");
    let invitation = invitation.as_str().expect("an invitation id");

    // Sign-up's verification link to Ada, then the invitation to Bob.
    let mails = sink.wait_for(2, PATIENCE).await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let verify = mails.iter().find(|m| m.rcpt_tos == ["ada@example.com"]);
    assert_eq!(
        verify.map(|m| m.subject.as_str()),
        Some("Confirm your email address")
    );
    let to_bob: Vec<_> = mails
        .iter()
        .filter(|m| m.rcpt_tos == ["bob@example.com"])
        .collect();
    assert_eq!(to_bob.len(), 1, "one invitation mail: {mails:#?}");
    let mail = to_bob[0];
    assert_eq!(mail.to, "bob@example.com");
    assert!(mail.from.contains("noreply@localhost"), "{}", mail.from);
    assert_eq!(mail.subject, "Ada invited you to join Acme & Co");
    let link = format!("{APP_URL}/accept-invitation/{invitation}");
    assert!(
        mail.text.contains(&link),
        "the text part links the invitation:\n{}",
        mail.text
    );
    assert!(
        mail.text
            .contains("Ada invited you to join Acme & Co as admin"),
        "{}",
        mail.text
    );
    assert!(
        mail.html.contains(&format!("href=\"{link}\"")),
        "{}",
        mail.html
    );
    assert!(
        mail.html.contains("Acme &amp; Co"),
        "HTML is escaped: {}",
        mail.html
    );

    let job = settled_mail_job(&t, "bob@example.com").await;
    assert_eq!(job["state"], "success", "{job:#}");
    assert_eq!(job["args"]["template"], "invitation");
    assert!(job["completedTime"].as_f64() >= job["scheduledTime"].as_f64());
}

/// Starts `livebase serve` — the binary itself — on `dir` with `flags`, and
/// returns it (killed on drop) with its address. Its output is drained by a
/// thread, so a chatty log never blocks it.
fn livebase_serve(dir: &Path, flags: &[&str]) -> (KillOnDrop, std::net::SocketAddr) {
    let child = Command::new(env!("CARGO_BIN_EXE_livebase"))
        .args(["serve", "--port", "0", "--data"])
        .arg(dir)
        .args(flags)
        .env_remove("LIVEBASE_SMTP_URL")
        .env_remove("LIVEBASE_APP_URL")
        .env_remove("LIVEBASE_MAIL_FROM")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("livebase starts");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("livebase prints its URL");
        if let Some(url) = line.strip_prefix("livebase listening on http://") {
            break url.trim().parse().expect("an address");
        }
    };
    (child, addr)
}

/// `POST path` with `body` (and a bearer token) to a server; the JSON reply.
async fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: Json) -> Json {
    let reply = support::http(addr, "POST", path, token, Some(body)).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    reply.body
}

async fn call(addr: std::net::SocketAddr, token: &str, path: &str, args: Json) -> Json {
    let body = json!({"path": path, "format": "convex_encoded_json", "args": [args]});
    let reply = post(addr, "/api/mutation", Some(token), body).await;
    assert_eq!(reply["status"], "success", "{path}: {reply}");
    reply["value"].clone()
}

#[tokio::test]
async fn livebase_serve_with_smtp_mails_the_invitation() {
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let smtp = sink.url();
    let (_server, addr) = livebase_serve(
        dir.path(),
        &[
            "--smtp",
            &smtp,
            "--app-url",
            "https://acme.example/",
            "--mail-from",
            "Acme <invites@acme.example>",
        ],
    );
    let signed_up = post(
        addr,
        "/api/auth/sign-up/email",
        None,
        json!({"email": "ada@example.com", "password": support::PASSWORD, "name": "Ada"}),
    )
    .await;
    let token = signed_up["token"].as_str().expect("a token");
    let org = call(
        addr,
        token,
        "organizations:create",
        json!({"name": "Acme", "slug": "acme"}),
    )
    .await;
    let invitation = call(
        addr,
        token,
        "organizations:invite",
        json!({"organizationId": org, "email": "bob@example.com", "role": "member"}),
    )
    .await;
    let mails = sink.wait_for(2, PATIENCE).await;
    let to_bob: Vec<_> = mails
        .iter()
        .filter(|m| m.rcpt_tos == ["bob@example.com"])
        .collect();
    assert_eq!(to_bob.len(), 1, "{mails:#?}");
    assert_eq!(to_bob[0].subject, "Ada invited you to join Acme");
    assert_eq!(to_bob[0].from, "Acme <invites@acme.example>");
    let link = format!(
        "https://acme.example/accept-invitation/{}",
        invitation.as_str().expect("an invitation id")
    );
    assert!(to_bob[0].text.contains(&link), "{}", to_bob[0].text);
    assert!(to_bob[0].text.contains("as member"), "{}", to_bob[0].text);
    assert!(dir.path().join("livebase.sqlite3").exists());
    assert!(
        !dir.path().join("outbox").exists(),
        "SMTP set: nothing goes to the outbox"
    );
}

#[tokio::test]
async fn without_smtp_each_mail_is_an_eml_file_in_the_outbox() {
    let t = start(
        tempfile::tempdir().unwrap(),
        livebase_functions::app(),
        None,
    )
    .await;
    t.sign_up("ada@example.com", "Ada").await;
    let job = settled_mail_job(&t, "ada@example.com").await;
    assert_eq!(job["state"], "success", "{job:#}");
    let outbox = t.data_dir().join("outbox");
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("the outbox folder exists")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|x| x.to_str()), Some("eml"));
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    assert!(eml.contains("To: ada@example.com\r\n"), "{eml}");
    assert!(
        eml.contains("Subject: Confirm your email address\r\n"),
        "{eml}"
    );
    assert!(eml.contains("multipart/alternative"), "{eml}");
    assert!(eml.contains("Hello Ada,"), "{eml}");
}

#[tokio::test]
async fn a_refused_mail_fails_its_job_with_the_smtp_servers_reply() {
    let sink = SmtpSink::start();
    let t = start(
        tempfile::tempdir().unwrap(),
        livebase_functions::app(),
        Some(sink.url()),
    )
    .await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let org = t
        .mutation(
            "organizations:create",
            &ada,
            json!({"name": "Acme", "slug": "acme"}),
        )
        .await
        .unwrap();
    t.mutation(
        "organizations:invite",
        &ada,
        json!({"organizationId": org, "email": "reject-bob@example.com", "role": "member"}),
    )
    .await
    .expect("the invitation itself commits");
    let job = settled_mail_job(&t, "reject-bob@example.com").await;
    assert_eq!(job["state"], "failed", "{job:#}");
    let error = job["error"].as_str().expect("the job says why");
    assert!(error.contains("550"), "{error}");
    assert!(
        error.contains("mailbox unavailable"),
        "the server's own words: {error}"
    );
    // Only the verification mail got through.
    let mails = sink.wait_for(1, PATIENCE).await;
    assert!(
        mails.iter().all(|m| m.rcpt_tos == ["ada@example.com"]),
        "{mails:#?}"
    );
}

#[tokio::test]
async fn an_unreachable_smtp_server_fails_the_job_instead_of_losing_the_mail() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let smtp = format!("smtp://{closed}");
    let t = start(
        tempfile::tempdir().unwrap(),
        livebase_functions::app(),
        Some(smtp),
    )
    .await;
    t.sign_up("ada@example.com", "Ada").await;
    let job = settled_mail_job(&t, "ada@example.com").await;
    assert_eq!(job["state"], "failed", "{job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("EMAIL_NOT_SENT"), "{error}");
    assert!(error.contains("the mail to ada@example.com"), "{error}");
}

// ---------------------------------------------------------------------------
// A crash between the scheduling commit and the run.

/// How long after its mutation the crash test's jobs are due: long enough to
/// kill the child first, short enough for a fast test.
const CRASH_DELAY_MS: f64 = 1500.0;

/// The application plus what the crash test needs: `test:inviteLater`, a
/// public mutation that schedules the invitation mail and an internal
/// mutation, `test:record`, both `delayMs` later.
fn app_with_test_functions() -> Registry {
    let mut app = livebase_functions::app();
    app.extend_schema(|s| s.table("records", define_table([("note", v::string())])));
    app.mutation(
        "test:inviteLater",
        [("to", v::string()), ("delayMs", v::float64())],
        |ctx, args| {
            let delay = Duration::from_secs_f64(args.f64("delayMs")? / 1e3);
            let to = args.string("to")?;
            let mail = obj! {
                "to" => to.as_str(),
                "template" => "invitation",
                "data" => obj! {
                    "invitationId" => "invitations_0123456789abcdef",
                    "organizationName" => "Acme",
                    "inviterName" => "Ada",
                    "role" => "member",
                },
            };
            let mut scheduler = ctx.scheduler();
            let mail_job = scheduler.run_after(delay, livebase_functions::emails::SEND, mail)?;
            let record_job = scheduler.run_after(delay, "test:record", obj! { "note" => to })?;
            Ok(obj! { "mail" => mail_job, "record" => record_job })
        },
    );
    app.internal_mutation("test:record", [("note", v::string())], |ctx, args| {
        ctx.db
            .insert("records", obj! { "note" => args.string("note")? })?;
        Ok(Value::Null)
    });
    app
}

/// Not a test of its own: in a normal run it returns at once. In the child it
/// serves [`app_with_test_functions`] on [`CHILD_DIR`] until it is killed.
#[tokio::test]
async fn child_serves_until_killed() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let smtp = std::env::var(CHILD_SMTP).ok();
    let server = serve(app_with_test_functions(), options(dir.as_ref(), smtp))
        .await
        .expect("the child's server starts");
    println!("child listening on {}", server.addr);
    std::future::pending::<()>().await;
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_before_a_job_runs_sends_the_mail_once_after_restart() {
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_serves_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_SMTP, sink.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child starts its server");
        if let Some(at) = line.find("child listening on ") {
            break line[at + "child listening on ".len()..]
                .trim()
                .parse()
                .unwrap();
        }
    };

    let asked = Instant::now();
    let reply = support::http(
        addr,
        "POST",
        "/api/mutation",
        None,
        Some(json!({
            "path": "test:inviteLater",
            "format": "convex_encoded_json",
            "args": [{"to": "carol@example.com", "delayMs": CRASH_DELAY_MS}],
        })),
    )
    .await;
    assert_eq!(reply.body["status"], "success", "{}", reply.body);
    // SIGKILL: no shutdown, no flush; the jobs are committed and not yet due.
    child.0.kill().expect("kill the child");
    let killed_after = asked.elapsed();
    child.0.wait().unwrap();
    assert!(
        killed_after < Duration::from_secs_f64(CRASH_DELAY_MS / 1e3),
        "the child was killed before its jobs were due ({killed_after:?})"
    );
    assert!(
        sink.received().is_empty(),
        "nothing was sent before the kill"
    );

    // Down until the jobs are overdue: they came due while the server was down.
    let due = asked + Duration::from_secs_f64(CRASH_DELAY_MS / 1e3 + 0.2);
    tokio::time::sleep_until(due.into()).await;
    let t = start(dir, app_with_test_functions(), Some(sink.url())).await;

    let mails = sink.wait_for(1, PATIENCE).await;
    let job = settled_mail_job(&t, "carol@example.com").await;
    assert_eq!(job["state"], "success", "{job:#}");
    let records = rows_until(&t, "records", "the scheduled mutation to run", |rows| {
        (!rows.is_empty()).then(|| rows.to_vec())
    })
    .await;
    // Give a second run every chance to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails_after = sink.received();
    assert_eq!(
        mails_after.len(),
        1,
        "the mail is sent once: {mails_after:#?}"
    );
    assert_eq!(mails[0].rcpt_tos, ["carol@example.com"]);
    assert_eq!(mails[0].subject, "Ada invited you to join Acme");
    assert_eq!(t.rows("records").await, records, "the mutation ran once");
    assert_eq!(records.len(), 1);
    // The app's own cron jobs aside, the two jobs ran, each once.
    let jobs: Vec<_> = t
        .rows("_scheduled_functions")
        .await
        .into_iter()
        .filter(|j| j["name"] != "maintenance:purge")
        .collect();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    assert!(jobs.iter().all(|j| j["state"] == "success"), "{jobs:#?}");
}
