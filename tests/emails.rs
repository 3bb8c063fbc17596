//! Template emails end to end, over real sockets: `organizations:invite`
//! schedules `emails:send`, the scheduler runs it, and a real SMTP server
//! (`tests/smtp/sink.py`, Python's aiosmtpd) receives the invitation with the
//! right recipient, subject, link and role. Without SMTP the mail lands in the
//! outbox folder. A `5xx` fails the job with the server's reply; a `421` or a
//! server that is down is retried (each attempt on the job) until the mail
//! gets through, once, with its job's `Message-ID`. STARTTLS and implicit TLS
//! with a certificate made for the run and AUTH, with the password in no log
//! line; DKIM signing.
//!
//! And invariant 7 (`docs/reference/invariants.md`) across crashes: a server SIGKILLed between the
//! scheduling commit and the run sends the mail once, and runs the scheduled
//! mutation once, after it restarts (the killed server is a child process —
//! this test binary re-executed to run only [`child_serves_until_killed`]);
//! the real binary killed at random moments around twenty invitations sends
//! every one, any repeat with the same `Message-ID`.

mod smtp;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use livebase_runtime::email::{DkimOptions, MailOptions};
use livebase_runtime::registry::Registry;
use livebase_runtime::server::{serve, ServerOptions};
use livebase_schema::{define_table, obj, v, Value};
use livebase_testkit::process::{listening_address, run_test_alone, KillOnDrop};
use livebase_testkit::{TestServer, PATIENCE};
use serde_json::{json, Value as Json};
use smtp::{SinkOptions, SinkTls, SmtpSink};
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
    let options = options(dir.path(), smtp);
    start_with(dir, registry, options).await
}

async fn start_with(dir: TempDir, registry: Registry, options: ServerOptions) -> TestServer {
    TestServer::start_in(dir, registry, |o| *o = options).await
}

/// Waits until `check` finds what it looks for in `table`'s rows.
async fn rows_until<T>(
    t: &TestServer,
    table: &'static str,
    what: &str,
    check: impl Fn(&[Json]) -> Option<T>,
) -> T {
    t.rows_until(table, what, |rows| {
        check(&rows.iter().map(Value::to_json).collect::<Vec<_>>())
    })
    .await
}

/// The `emails:send` job whose mail goes to `to`, once `check` holds of it.
async fn mail_job_until(
    t: &TestServer,
    to: &str,
    what: &str,
    check: impl Fn(&Json) -> bool,
) -> Json {
    rows_until(t, "_scheduled_functions", what, |jobs| {
        jobs.iter()
            .find(|j| j["name"] == "emails:send" && j["args"]["to"] == to && check(j))
            .cloned()
    })
    .await
}

/// Ada signs up and creates organization Acme; returns her and its id.
async fn ada_with_acme(t: &TestServer) -> (livebase_testkit::User, Json) {
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let org = t
        .mutation(
            "organizations:create",
            &ada,
            json!({"name": "Acme", "slug": "acme"}),
        )
        .await
        .expect("the organization is created");
    (ada, org)
}

async fn invite(t: &TestServer, ada: &livebase_testkit::User, org: &Json, email: &str) {
    t.mutation(
        "organizations:invite",
        ada,
        json!({"organizationId": org, "email": email, "role": "member"}),
    )
    .await
    .expect("the invitation commits");
}

/// The job's attempt records.
fn attempts(job: &Json) -> Vec<Json> {
    job["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("attempts on {job:#}"))
        .clone()
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
    let (child, addr, _) = livebase_serve_logged(dir, flags, &[]);
    (child, addr)
}

/// [`livebase_serve`] with `env` set, and every line it prints after the
/// address.
fn livebase_serve_logged(
    dir: &Path,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (KillOnDrop, std::net::SocketAddr, Logs) {
    let child = Command::new(env!("CARGO_BIN_EXE_livebase"))
        .args(["serve", "--port", "0", "--data"])
        .arg(dir)
        .args(flags)
        .env_remove("LIVEBASE_SMTP_URL")
        .env_remove("LIVEBASE_APP_URL")
        .env_remove("LIVEBASE_MAIL_FROM")
        .env_remove("LIVEBASE_SMTP_CA_FILE")
        .env_remove("LIVEBASE_DKIM_KEY")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("livebase starts");
    let mut child = KillOnDrop(child);
    let rx = child.stdout_lines();
    let (addr, early) = listening_address(&rx);
    (child, addr, Logs { early, rx })
}

/// What a [`livebase_serve_logged`] server printed.
struct Logs {
    /// Before its address.
    early: Vec<String>,
    /// After it, as it comes.
    rx: std::sync::mpsc::Receiver<String>,
}

impl Logs {
    /// Waits until a line holding `needle` has come.
    fn wait_for(&mut self, needle: &str) {
        while !self.early.iter().any(|l| l.contains(needle)) {
            let line = self
                .rx
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("no `{needle}` in the log: {:#?}", self.early));
            self.early.push(line);
        }
    }

    /// Every line, once the server has exited.
    fn all(self) -> Vec<String> {
        let mut lines = self.early;
        lines.extend(self.rx.iter());
        lines
    }
}

/// `POST path` with `body` (and a bearer token) to a server; the JSON reply.
async fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: Json) -> Json {
    let reply =
        livebase_testkit::http::http_json(addr, "POST", path, token, &[], Some(&body)).await;
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
        json!({"email": "ada@example.com", "password": livebase_testkit::PASSWORD, "name": "Ada"}),
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
    let message_id = format!(
        "Message-ID: <{}@localhost>\r\n",
        job["_id"].as_str().unwrap()
    );
    assert!(eml.contains(&message_id), "the job's Message-ID: {eml}");
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
    // A 5xx is final: one attempt, not retried.
    let tried = attempts(&job);
    assert_eq!(tried.len(), 1, "{job:#}");
    assert_eq!(tried[0]["error"], job["error"]);
    assert!(tried[0].get("nextAttemptTime").is_none(), "{job:#}");
    // Only the verification mail got through.
    let mails = sink.wait_for(1, PATIENCE).await;
    assert!(
        mails.iter().all(|m| m.rcpt_tos == ["ada@example.com"]),
        "{mails:#?}"
    );
}

#[tokio::test]
async fn a_mail_to_a_server_that_is_down_is_retried_until_it_comes_up() {
    // A port that was free a moment ago: nothing listens there yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = start(
        tempfile::tempdir().unwrap(),
        livebase_functions::app(),
        Some(format!("smtp://127.0.0.1:{port}")),
    )
    .await;
    t.sign_up("ada@example.com", "Ada").await;
    let retrying = mail_job_until(&t, "ada@example.com", "a failed attempt", |j| {
        j["attempts"].as_array().is_some_and(|a| !a.is_empty()) && j["state"] == "pending"
    })
    .await;
    let error = retrying["error"].as_str().unwrap_or_default();
    assert!(error.contains("EMAIL_NOT_SENT"), "{error}");
    assert!(error.contains("the mail to ada@example.com"), "{error}");
    let first = &attempts(&retrying)[0];
    let next = first["nextAttemptTime"]
        .as_f64()
        .expect("the next attempt's time");
    assert!(next > first["endedTime"].as_f64().unwrap(), "{retrying:#}");
    assert_eq!(retrying["scheduledTime"].as_f64(), Some(next));

    let sink = SmtpSink::start_with(SinkOptions {
        port: Some(port),
        ..SinkOptions::default()
    });
    let job = settled_mail_job(&t, "ada@example.com").await;
    assert_eq!(job["state"], "success", "{job:#}");
    assert!(job.get("error").is_none(), "{job:#}");
    let tried = attempts(&job);
    assert!(tried.len() >= 2, "{job:#}");
    let mails = sink.wait_for(1, PATIENCE).await;
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(
        tried.last().unwrap()["result"]["messageId"],
        mails[0].message_id.as_str()
    );
}

#[tokio::test]
async fn a_server_answering_421_twice_gets_the_mail_once_with_one_message_id() {
    let sink = SmtpSink::start();
    let t = start(
        tempfile::tempdir().unwrap(),
        livebase_functions::app(),
        Some(sink.url()),
    )
    .await;
    let (ada, org) = ada_with_acme(&t).await;
    invite(&t, &ada, &org, "tempfail2-bob@example.com").await;
    let job = settled_mail_job(&t, "tempfail2-bob@example.com").await;
    assert_eq!(job["state"], "success", "{job:#}");
    let tried = attempts(&job);
    assert_eq!(tried.len(), 3, "{job:#}");
    for failed in &tried[..2] {
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("421") && error.contains("try again later"),
            "{job:#}"
        );
        assert!(failed["nextAttemptTime"].as_f64() >= failed["endedTime"].as_f64());
    }
    let result = &tried[2]["result"];
    assert_eq!(result["via"], "smtp");
    assert!(
        result["reply"]
            .as_str()
            .unwrap_or_default()
            .starts_with("250"),
        "{job:#}"
    );
    let id = job["_id"].as_str().unwrap();
    let message_id = format!("<{id}@localhost>");
    assert_eq!(result["messageId"], message_id.as_str());

    // Give a repeat every chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to_bob: Vec<_> = sink
        .received()
        .into_iter()
        .filter(|m| m.rcpt_tos == ["tempfail2-bob@example.com"])
        .collect();
    assert_eq!(to_bob.len(), 1, "{to_bob:#?}");
    assert_eq!(to_bob[0].message_id, message_id);
}

// ---------------------------------------------------------------------------
// TLS, AUTH and DKIM.

const SMTP_USER: &str = "livebase";
const SMTP_PASSWORD: &str = "s3cret-Pa55word";

fn auth() -> Option<(String, String)> {
    Some((SMTP_USER.into(), SMTP_PASSWORD.into()))
}

#[tokio::test]
async fn livebase_serve_sends_over_starttls_with_auth_and_never_logs_the_password() {
    let sink = SmtpSink::start_with(SinkOptions {
        tls: Some(SinkTls::StartTls),
        auth: auth(),
        ..SinkOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let smtp = format!(
        "smtp://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{}?tls=required",
        sink.port
    );
    let ca = sink.ca_file();
    let (mut server, addr, mut logs) = livebase_serve_logged(
        dir.path(),
        &["--smtp-ca-file", ca.to_str().unwrap()],
        // Through the environment, as a deployment would pass a secret; every
        // log line shown.
        &[("LIVEBASE_SMTP_URL", &smtp), ("LIVEBASE_LOG", "debug")],
    );
    post(
        addr,
        "/api/auth/sign-up/email",
        None,
        json!({"email": "ada@example.com", "password": livebase_testkit::PASSWORD, "name": "Ada"}),
    )
    .await;
    let mails = sink.wait_for(1, PATIENCE).await;
    let verify = mails
        .iter()
        .find(|m| m.subject == "Confirm your email address")
        .unwrap_or_else(|| panic!("{mails:#?}"));
    assert!(verify.tls, "sent over TLS");
    assert_eq!(
        verify.login.as_deref(),
        Some(SMTP_USER),
        "sent authenticated"
    );

    // The sink saves a mail before it answers: wait for the answer's line.
    logs.wait_for("mail sent");
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let lines = logs.all();
    assert!(
        lines.iter().any(|l| l.contains("smtp://***:***@127.0.0.1")),
        "the relay is logged without its credentials: {lines:#?}"
    );
    let leaks: Vec<_> = lines.iter().filter(|l| l.contains(SMTP_PASSWORD)).collect();
    assert!(leaks.is_empty(), "the password is in the log: {leaks:#?}");
}

#[test]
fn livebase_serve_refuses_bad_mail_settings_with_a_clear_error_and_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-key.pem");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--smtp", "smtp://ada:Hunter2-secret@mail.example.com:25"],
            "credentials would travel unencrypted",
        ),
        (
            &[
                "--smtp",
                "smtps://ada:Hunter2-secret@mail.example.com?tls=maybe",
            ],
            "smtps://***:***@mail.example.com",
        ),
        (
            &["--dkim-key", missing.to_str().unwrap()],
            "no-such-key.pem",
        ),
    ];
    for (flags, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_livebase"))
            .args(["serve", "--port", "0", "--data"])
            .arg(dir.path())
            .args(flags)
            .env_remove("LIVEBASE_SMTP_URL")
            .env_remove("LIVEBASE_DKIM_KEY")
            .output()
            .expect("livebase runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{flags:?} is refused: {said}");
        assert!(said.contains(expected), "{flags:?}: {said}");
        assert!(
            !said.contains("Hunter2"),
            "{flags:?} shows the password: {said}"
        );
    }
}

/// Options for a server sending through `smtp`, trusting `ca`.
fn tls_options(dir: &Path, smtp: String, ca: PathBuf) -> ServerOptions {
    let mut options = options(dir, Some(smtp));
    options.mail.smtp_ca_file = Some(ca);
    options
}

#[tokio::test]
async fn smtps_sends_over_implicit_tls_and_wrong_credentials_fail_the_job() {
    let sink = SmtpSink::start_with(SinkOptions {
        tls: Some(SinkTls::Implicit),
        auth: auth(),
        ..SinkOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let smtp = format!(
        "smtps://{SMTP_USER}:{SMTP_PASSWORD}@localhost:{}",
        sink.port
    );
    let options = tls_options(dir.path(), smtp, sink.ca_file());
    let t = start_with(dir, livebase_functions::app(), options).await;
    t.sign_up("ada@example.com", "Ada").await;
    let mails = sink.wait_for(1, PATIENCE).await;
    assert!(
        mails[0].tls && mails[0].login.as_deref() == Some(SMTP_USER),
        "{mails:#?}"
    );
    assert!(!mails[0].raw.contains(SMTP_PASSWORD));

    // The same server, the wrong password: a 535 is final.
    let dir = tempfile::tempdir().unwrap();
    let smtp = format!("smtps://{SMTP_USER}:wrong@localhost:{}", sink.port);
    let options = tls_options(dir.path(), smtp, sink.ca_file());
    let t = start_with(dir, livebase_functions::app(), options).await;
    t.sign_up("bob@example.com", "Bob").await;
    let job = settled_mail_job(&t, "bob@example.com").await;
    assert_eq!(job["state"], "failed", "{job:#}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("535"), "{error}");
    assert!(!error.contains("wrong"), "{error}");
}

#[tokio::test]
async fn opportunistic_tls_encrypts_when_offered_and_sends_plain_otherwise() {
    for tls in [Some(SinkTls::StartTls), None] {
        let sink = SmtpSink::start_with(SinkOptions {
            tls,
            ..SinkOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let smtp = format!("smtp://localhost:{}?tls=opportunistic", sink.port);
        let mut options = options(dir.path(), Some(smtp));
        if tls.is_some() {
            options.mail.smtp_ca_file = Some(sink.ca_file());
        }
        let t = start_with(dir, livebase_functions::app(), options).await;
        t.sign_up("ada@example.com", "Ada").await;
        let mails = sink.wait_for(1, PATIENCE).await;
        assert_eq!(mails[0].tls, tls.is_some(), "{tls:?}: {mails:#?}");
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_not_trusted() {
    let sink = SmtpSink::start_with(SinkOptions {
        tls: Some(SinkTls::StartTls),
        ..SinkOptions::default()
    });
    // No CA file: the sink's certificate is signed by nobody Mozilla knows.
    let t = start(
        tempfile::tempdir().unwrap(),
        livebase_functions::app(),
        Some(format!("smtp://127.0.0.1:{}?tls=required", sink.port)),
    )
    .await;
    t.sign_up("ada@example.com", "Ada").await;
    let job = mail_job_until(&t, "ada@example.com", "a failed attempt", |j| {
        j["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a.get("error").is_some()))
    })
    .await;
    let error = job["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{job:#}");
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn with_a_dkim_key_every_mail_is_signed_and_verifies() {
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("dkim.pem");
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        key.to_str().unwrap(),
        "2048",
    ]);
    let public = openssl(&["rsa", "-in", key.to_str().unwrap(), "-pubout"]);
    let public: String = public.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut options = options(dir.path(), Some(sink.url()));
    options.mail.from = Some("Acme <mail@acme.example>".into());
    options.mail.dkim = Some(DkimOptions {
        key_file: key,
        selector: Some("s1".into()),
        domain: None,
    });
    let t = start_with(dir, livebase_functions::app(), options).await;
    t.sign_up("ada@example.com", "Ada").await;
    let mails = sink.wait_for(1, PATIENCE).await;
    let signature = mails[0].dkim_signature.clone().expect("a DKIM-Signature");
    let compact: String = signature.split_whitespace().collect();
    assert!(compact.contains("d=acme.example;"), "{signature}");
    assert!(compact.contains("s=s1;"), "{signature}");
    assert!(compact.to_lowercase().contains("message-id"), "{signature}");

    // A receiver's check, by dkimpy, with the public key as DNS would give it.
    let raw = t.data_dir().join("received.eml");
    std::fs::write(&raw, &mails[0].raw).unwrap();
    let script = r#"
import sys, dkim
raw = open(sys.argv[1], "rb").read()
record = ("v=DKIM1; k=rsa; p=" + sys.argv[2]).encode()
print("verified" if dkim.verify(raw, dnsfunc=lambda name, timeout=5: record) else "failed")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&raw)
        .arg(&public)
        .output()
        .expect("python3 runs (and `pip install dkimpy`)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        "verified",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the `openssl` command; its standard output.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the `openssl` command runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_before_a_job_runs_sends_the_mail_once_after_restart() {
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let smtp = sink.url();
    let mut child = run_test_alone(
        "child_serves_until_killed",
        &[
            (CHILD_DIR, dir.path().as_os_str()),
            (CHILD_SMTP, smtp.as_ref()),
        ],
    );
    let lines_rx = child.stdout_lines();
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
    let reply = livebase_testkit::http::http_json(
        addr,
        "POST",
        "/api/mutation",
        None,
        &[],
        Some(&json!({
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
    assert_eq!(
        t.rows_json("records").await,
        records,
        "the mutation ran once"
    );
    assert_eq!(records.len(), 1);
    // The two jobs ran, each once.
    let jobs = t.rows_json("_scheduled_functions").await;
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    assert!(jobs.iter().all(|j| j["state"] == "success"), "{jobs:#?}");
}

// ---------------------------------------------------------------------------
// The real binary, SIGKILLed at random moments around its mail jobs.

/// Rounds of invite + kill in the crash test.
const CRASH_ROUNDS: usize = 20;
/// The kill comes this long (at most, picked at random) after the invitation
/// committed.
const CRASH_WINDOW_MS: u64 = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_survive_kill_9_at_random_moments_and_repeats_keep_their_message_id() {
    use rand::Rng;
    // The sink answers each mail 40 ms after taking it: a kill in between
    // leaves a delivered mail its sender never heard of.
    let sink = SmtpSink::start_with(SinkOptions {
        data_delay: Some(Duration::from_millis(40)),
        ..SinkOptions::default()
    });
    let smtp = sink.url();
    let dir = tempfile::tempdir().unwrap();
    let mut session: Option<(String, Json)> = None;
    let mut kills = Vec::new();
    for round in 0..CRASH_ROUNDS {
        let (mut server, addr) = livebase_serve(dir.path(), &["--smtp", &smtp]);
        let (token, org) = match &session {
            Some(s) => s.clone(),
            None => {
                let signed_up = post(
                    addr,
                    "/api/auth/sign-up/email",
                    None,
                    json!({"email": "ada@example.com", "password": livebase_testkit::PASSWORD, "name": "Ada"}),
                )
                .await;
                let token = signed_up["token"].as_str().expect("a token").to_string();
                let org = call(
                    addr,
                    &token,
                    "organizations:create",
                    json!({"name": "Acme", "slug": "acme"}),
                )
                .await;
                session = Some((token.clone(), org.clone()));
                (token, org)
            }
        };
        call(
            addr,
            &token,
            "organizations:invite",
            json!({"organizationId": org, "email": format!("guest{round}@example.com"), "role": "member"}),
        )
        .await;
        let wait = rand::rng().random_range(0..CRASH_WINDOW_MS);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.0.kill().expect("kill -9");
        server.0.wait().unwrap();
        kills.push(wait);
    }
    // A last start: whatever was cut short is sent now.
    let (_server, _addr) = livebase_serve(dir.path(), &["--smtp", &smtp]);
    let guests: Vec<String> = (0..CRASH_ROUNDS)
        .map(|r| format!("guest{r}@example.com"))
        .collect();
    let mails = sink
        .wait_until(
            &format!("an invitation to each guest (kills after {kills:?} ms)"),
            PATIENCE * 2,
            |mails| {
                guests
                    .iter()
                    .all(|g| mails.iter().any(|m| m.rcpt_tos == [g.as_str()]))
            },
        )
        .await;
    let mut repeats = 0;
    for guest in &guests {
        let copies: Vec<_> = mails
            .iter()
            .filter(|m| m.rcpt_tos == [guest.as_str()])
            .collect();
        let first = &copies[0].message_id;
        assert!(
            first.starts_with("<_scheduled_functions_") && first.ends_with("@localhost>"),
            "the Message-ID names the job: {first}"
        );
        assert!(
            copies.iter().all(|m| &m.message_id == first),
            "every copy to {guest} is the same mail: {copies:#?}"
        );
        assert!(copies
            .iter()
            .all(|m| m.subject == "Ada invited you to join Acme"));
        repeats += copies.len() - 1;
    }
    println!("{CRASH_ROUNDS} rounds, kills after {kills:?} ms: {repeats} repeated mail(s)");

    // The jobs say the same: each invitation's job succeeded — none was
    // failed by a restart — with the Message-ID its mail carries.
    drop(_server);
    let t = start(dir, livebase_functions::app(), Some(smtp)).await;
    for guest in &guests {
        let job = settled_mail_job(&t, guest).await;
        assert_eq!(job["state"], "success", "{job:#}");
        let id = format!("<{}@localhost>", job["_id"].as_str().unwrap());
        assert_eq!(
            attempts(&job).last().unwrap()["result"]["messageId"],
            id.as_str()
        );
        assert!(mails
            .iter()
            .any(|m| m.rcpt_tos == [guest.as_str()] && m.message_id == id));
    }
}
