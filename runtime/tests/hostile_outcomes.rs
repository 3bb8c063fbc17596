//! Stored mutation outcomes against a hostile client (issue 11, items 5 and
//! 6), on a real server: an outcome answers only a resend — the same caller,
//! function and arguments under the same session and request id — so a
//! stranger who learned a session id can neither read its outcomes nor plant
//! one that stops the owner's mutation; and a failed mutation, having written
//! nothing, leaves nothing behind (no outcome row to write and sync).

mod support;

use livebase_schema::protocol::{
    AuthenticationToken, ClientMessage, RequestId, ServerMessage, SessionId,
};
use livebase_schema::{obj, Value};
use livebase_testkit::http::post_json;
use livebase_testkit::{Client, TestServer};
use support::{is_note_id, note};

/// Signs up a user over HTTP and returns the token.
async fn sign_up(server: &TestServer, email: &str) -> String {
    let body =
        serde_json::json!({"email": email, "password": "correct horse battery", "name": "V"});
    let (status, reply) = post_json(server.addr(), "/api/auth/sign-up/email", &body).await;
    assert_eq!(status, 200, "sign-up: {reply}");
    reply["token"].as_str().expect("a token").to_string()
}

/// Authenticates `client` with `token` and waits for the Transition that
/// takes the new identity.
async fn authenticate(client: &mut Client, token: &str) {
    let base_version = client.version.identity;
    client
        .send(&ClientMessage::Authenticate {
            base_version,
            token: AuthenticationToken::User(token.to_string()),
        })
        .await;
    loop {
        match client.recv().await {
            ServerMessage::Transition { end_version, .. } => {
                client.version = end_version;
                if end_version.identity > base_version {
                    return;
                }
            }
            other => panic!("expected the Transition of Authenticate, got {other:?}"),
        }
    }
}

/// The attack of the issue: an anonymous client sends `Connect` with a
/// signed-in user's session id and a `Mutation` with request id 0 to a path
/// that does not exist. It must not receive the user's stored result; and
/// running the same function with the same arguments under that session is
/// its own mutation, not the user's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_anothers_session_id_is_not_answered_with_its_outcome() {
    let server = TestServer::start(support::registry()).await;
    let token = sign_up(&server, "victim@example.com").await;
    let session = SessionId::random();
    let mut victim = Client::connect(&server.ws_url(), session.clone()).await;
    authenticate(&mut victim, &token).await;
    let args = note("V", "secret", 1.0);
    let original = victim
        .mutation_as(RequestId(0), "notes:add", args.clone())
        .await
        .expect("notes:add succeeds");
    assert!(is_note_id(&original.value));
    let secret = original.value.as_str().expect("an id").to_string();

    let mut stranger = Client::connect(&server.ws_url(), session.clone()).await;
    let refused = stranger
        .mutation_as(RequestId(0), "nope:nope", obj! {})
        .await
        .expect_err("an unknown function fails");
    assert!(
        refused.message.contains("Could not find public function"),
        "{refused:?}"
    );
    assert!(!format!("{refused:?}").contains(&secret), "{refused:?}");
    // The same function and arguments, by another caller: it runs, as the
    // stranger's own mutation.
    let own = stranger
        .mutation_as(RequestId(0), "notes:add", args.clone())
        .await
        .expect("notes:add succeeds");
    assert_ne!(
        own.value, original.value,
        "the stranger got the victim's id"
    );
    assert_eq!(support::count(&server, "V").await, 2.0);
    stranger.close().await;

    // The victim's resend is still answered with its own outcome, and only
    // the victim's: the same identity on a new connection.
    victim.close().await;
    let mut again = Client::connect(&server.ws_url(), session.clone()).await;
    authenticate(&mut again, &token).await;
    let resent = again
        .mutation_as(RequestId(0), "notes:add", args.clone())
        .await
        .expect("the stored outcome");
    assert_eq!(resent, original);
    // Anonymous on the same session, the same call is the stranger's resend
    // (anonymous callers are told apart by their arguments only), never the
    // signed-in user's.
    let mut anonymous = Client::connect(&server.ws_url(), session).await;
    let ran = anonymous
        .mutation_as(RequestId(0), "notes:add", args)
        .await
        .expect("notes:add succeeds");
    assert_eq!(ran, own);
    assert_eq!(support::count(&server, "V").await, 2.0);
    server.shutdown().await;
}

/// A stranger who knows a session id sends mutations under it first — one
/// that succeeds, one that fails — with the request ids the owner will use.
/// The owner's later mutations still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_plant_an_outcome_that_stops_the_owners_mutation() {
    let server = TestServer::start(support::registry()).await;
    let session = SessionId::random();
    let mut stranger = Client::connect(&server.ws_url(), session.clone()).await;
    let planted = stranger
        .mutation_as(RequestId(0), "notes:add", note("P", "planted", 0.0))
        .await
        .expect("notes:add succeeds");
    stranger
        .mutation_as(RequestId(1), "notes:conflict", obj! {})
        .await
        .expect_err("notes:conflict fails");
    stranger
        .mutation_as(RequestId(2), "notes:add", obj! {"organizationId" => "P"})
        .await
        .expect_err("missing arguments fail");
    stranger.close().await;

    // The owner is anonymous too, on the same session: only the arguments
    // tell its requests from the stranger's.
    let mut owner = Client::connect(&server.ws_url(), session).await;
    for (request, body) in [(0, "mine"), (1, "mine too"), (2, "and mine")] {
        let ran = owner
            .mutation_as(
                RequestId(request),
                "notes:add",
                note("P", body, f64::from(request)),
            )
            .await
            .unwrap_or_else(|e| panic!("request {request} did not run: {e:?}"));
        assert!(is_note_id(&ran.value));
        assert_ne!(ran.value, planted.value);
    }
    let bodies: Vec<String> = support::docs(
        &support::query(&server, "notes:list", support::org("P"))
            .await
            .expect("notes:list"),
    )
    .iter()
    .map(|d| d.get("body").and_then(Value::as_str).unwrap_or("").into())
    .collect();
    assert_eq!(bodies, ["planted", "mine", "mine too", "and mine"]);
    server.shutdown().await;
}

/// Failing mutations — an unknown function, bad arguments, the function's
/// own error, a panic — store no outcome, so a client cannot grow the file
/// (or make the server write and sync) by failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_mutations_leave_no_outcome_behind() {
    let server = TestServer::start(support::registry()).await;
    let mut client = server.client().await;
    client
        .mutation("notes:add", note("F", "one write", 0.0))
        .await
        .expect("notes:add succeeds");
    assert_eq!(
        server.stored_outcomes().await,
        1,
        "a mutation that wrote keeps its outcome"
    );

    for _ in 0..20 {
        client
            .mutation("nope:nope", obj! {})
            .await
            .expect_err("no such function");
        client
            .mutation("notes:add", obj! {"organizationId" => 1.0})
            .await
            .expect_err("bad arguments");
        let failed = client
            .mutation("notes:conflict", obj! {})
            .await
            .expect_err("notes:conflict fails");
        assert_eq!(
            livebase_testkit::error_code(&failed),
            Some("CONFLICT"),
            "{failed:?}"
        );
        client
            .mutation("notes:panic", obj! {})
            .await
            .expect_err("notes:panic fails");
    }
    // A failure's resend is answered the same way: it runs again, and having
    // written nothing the first time, running again repeats no effect.
    let request = client.request_id();
    let first = client
        .mutation_as(request, "notes:conflict", obj! {})
        .await
        .expect_err("fails");
    let resent = client
        .mutation_as(request, "notes:conflict", obj! {})
        .await
        .expect_err("fails again");
    assert_eq!(first, resent);
    assert_eq!(
        server.stored_outcomes().await,
        1,
        "a failure stored an outcome"
    );
    client.close().await;
    server.shutdown().await;
}
