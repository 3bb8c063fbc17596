//! Users and sessions end to end, over real sockets: the `/api/auth/*`
//! endpoints with `docs/reference/app.md`'s status codes, the one 401 for a wrong password and
//! an unknown email, sign-in throttling, tokens that are forged, expired or
//! revoked — refused by HTTP calls, `get-session` and the WebSocket alike —
//! and a sign-out that fails a live subscription at once.

mod support;

use livebase_runtime::auth::limits::SIGN_IN_PER_ADDRESS;
use livebase_runtime::auth::tokens::{Claims, TokenKeys, SECRET_FILE};
use livebase_schema::protocol::ServerMessage;
use livebase_testkit::server::code;
use livebase_testkit::{error_code, PASSWORD};
use serde_json::json;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[tokio::test]
async fn sign_up_sign_in_and_get_session_agree_on_the_user() {
    let t = support::start().await;
    let up = t
        .post(
            "/api/auth/sign-up/email",
            None,
            json!({"email": " Ada@Example.com", "password": PASSWORD, "name": "Ada"}),
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.body);
    let user = &up.body["user"];
    assert_eq!(
        user["email"], "ada@example.com",
        "emails are stored lowercased"
    );
    assert_eq!(user["name"], "Ada");
    assert!(user["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("users_")));

    let token = up.body["token"].as_str().expect("a token");
    assert_eq!(token.split('.').count(), 3, "a JWT");
    let session = t.get("/api/auth/get-session", Some(token)).await;
    assert_eq!(session.status, 200, "{}", session.body);
    assert_eq!(&session.body["user"], user);
    assert_eq!(session.body["session"]["userId"], user["id"]);

    let inn = t.sign_in("ADA@example.com", PASSWORD).await;
    assert_eq!(inn.status, 200, "{}", inn.body);
    assert_eq!(&inn.body["user"], user);
    assert_ne!(
        inn.body["token"], up.body["token"],
        "each sign-in is its own session"
    );
}

#[tokio::test]
async fn sign_up_refuses_bad_input_with_400_and_a_taken_email_with_422() {
    let t = support::start().await;
    let sign_up = |email: &'static str, password: &'static str, name: &'static str| {
        t.post(
            "/api/auth/sign-up/email",
            None,
            json!({"email": email, "password": password, "name": name}),
        )
    };
    assert_eq!(sign_up("not-an-email", PASSWORD, "A").await.status, 400);
    assert_eq!(sign_up("a@example.com", "1234567", "A").await.status, 400);
    assert_eq!(sign_up("a@example.com", PASSWORD, "  ").await.status, 400);
    let missing = t
        .post(
            "/api/auth/sign-up/email",
            None,
            json!({"email": "a@example.com"}),
        )
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(sign_up("a@example.com", PASSWORD, "A").await.status, 200);
    let again = sign_up("A@example.com", "another password", "B").await;
    assert_eq!(again.status, 422, "{}", again.body);
    assert_eq!(again.body["code"], "USER_ALREADY_EXISTS");
}

#[tokio::test]
async fn sign_up_records_the_verification_email_job() {
    let t = support::start().await;
    t.sign_up("ada@example.com", "Ada").await;
    // The app's crons have jobs of their own; the verification mail is the
    // one email job.
    let jobs: Vec<_> = t
        .rows_json("_scheduled_functions")
        .await
        .into_iter()
        .filter(|j| j["name"] == "emails:send")
        .collect();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    // Stored as pending; the scheduler may already have run it.
    let state = jobs[0]["state"].as_str().unwrap_or_default();
    assert!(
        ["pending", "inProgress", "success"].contains(&state),
        "{state}"
    );
    assert_eq!(jobs[0]["args"]["template"], "verify-email");
    assert_eq!(jobs[0]["args"]["to"], "ada@example.com");
    // The link is in the job until the mail is sent, and only until then.
    let url = jobs[0]["args"]["data"]["url"].as_str();
    if state == "success" {
        assert_eq!(url, None, "a sent mail's job forgets its link");
    } else {
        let url = url.unwrap_or_default();
        assert!(url.contains("/api/auth/verify-email?token="), "{url}");
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_401() {
    let t = support::start().await;
    t.sign_up("ada@example.com", "Ada").await;
    let wrong_password = t.sign_in("ada@example.com", "not the password").await;
    let unknown_email = t.sign_in("nobody@example.com", PASSWORD).await;
    assert_eq!(wrong_password.status, 401);
    assert_eq!(unknown_email.status, 401);
    assert_eq!(wrong_password.body, unknown_email.body);
    assert_eq!(wrong_password.body["code"], "INVALID_EMAIL_OR_PASSWORD");
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_refused_with_429_and_retry_after() {
    const MAX_ATTEMPTS: u32 = SIGN_IN_PER_ADDRESS.burst;
    let t = support::start().await;
    t.sign_up("ada@example.com", "Ada").await;
    t.sign_up("bob@example.com", "Bob").await;
    for attempt in 0..MAX_ATTEMPTS {
        let r = t.sign_in("ada@example.com", "guess").await;
        assert_eq!(r.status, 401, "attempt {attempt}");
    }
    let limited = t.sign_in("ada@example.com", PASSWORD).await;
    assert_eq!(
        limited.status, 429,
        "even the right password waits: {}",
        limited.body
    );
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");
    // Unknown emails are limited the same way, and other users are not.
    for _ in 0..MAX_ATTEMPTS {
        assert_eq!(t.sign_in("nobody@example.com", "guess").await.status, 401);
    }
    assert_eq!(t.sign_in("nobody@example.com", "guess").await.status, 429);
    assert_eq!(t.sign_in("bob@example.com", PASSWORD).await.status, 200);
}

#[tokio::test]
async fn forged_expired_and_revoked_tokens_are_refused_everywhere() {
    let t = support::start().await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let session = t.get("/api/auth/get-session", Some(&ada.token)).await;
    let sid = session.body["session"]["id"]
        .as_str()
        .expect("a session id")
        .to_string();

    // The server's own key, read from the data folder where it was generated.
    let keys = TokenKeys::load(t.data_dir()).expect("the server's key");
    let claims = |exp: u64| Claims {
        sub: ada.id.clone(),
        sid: sid.clone(),
        iat: now_secs() - 3600,
        exp,
    };
    let fresh = keys.issue(&claims(now_secs() + 600)).expect("signs");
    let expired = keys.issue(&claims(now_secs() - 60)).expect("signs");
    let other_key = TokenKeys::from_secret(&[7u8; 32]).expect("a key");
    let forged = other_key.issue(&claims(now_secs() + 600)).expect("signs");
    let garbage = "not.a.token".to_string();

    assert_eq!(
        t.get("/api/auth/get-session", Some(&fresh)).await.status,
        200
    );
    for (name, token) in [
        ("expired", &expired),
        ("forged", &forged),
        ("garbage", &garbage),
    ] {
        assert_eq!(
            t.get("/api/auth/get-session", Some(token)).await.status,
            401,
            "{name} get-session"
        );
        let call = t
            .call("query", "userProfiles:get", Some(token), json!({}))
            .await;
        assert_eq!(code(&call), "UNAUTHENTICATED", "{name} HTTP call");
        let mut ws = t.client().await;
        assert!(
            matches!(
                ws.authenticate(token).await,
                ServerMessage::AuthError { .. }
            ),
            "{name} Authenticate"
        );
    }

    // Revoked: sign out, and the same (still unexpired) token fails everywhere.
    let out = t
        .post("/api/auth/sign-out", Some(&ada.token), json!({}))
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    for token in [&ada.token, &fresh] {
        assert_eq!(
            t.get("/api/auth/get-session", Some(token)).await.status,
            401
        );
        let call = t
            .call("query", "userProfiles:get", Some(token), json!({}))
            .await;
        assert_eq!(code(&call), "UNAUTHENTICATED");
        let mut ws = t.client().await;
        assert!(matches!(
            ws.authenticate(token).await,
            ServerMessage::AuthError { .. }
        ));
    }
    assert_eq!(t.get("/api/auth/get-session", None).await.status, 401);
}

#[tokio::test]
async fn signing_out_fails_the_live_subscriptions_of_that_session_only() {
    let t = support::start().await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let other_session = t.sign_in("ada@example.com", PASSWORD).await;
    let other_token = other_session.body["token"]
        .as_str()
        .expect("token")
        .to_string();

    let mut ws = t.client().await;
    assert!(matches!(
        ws.authenticate(&ada.token).await,
        ServerMessage::Transition { .. }
    ));
    ws.add_query(1, "userProfiles:get", json!({})).await;
    ws.add_query(2, "organizations:listMine", json!({})).await;
    assert_eq!(ws.next_result(1).await, Ok(json!(null)));
    assert_eq!(ws.next_result(2).await, Ok(json!([])));

    let mut other = t.client().await;
    assert!(matches!(
        other.authenticate(&other_token).await,
        ServerMessage::Transition { .. }
    ));
    other.add_query(1, "userProfiles:get", json!({})).await;
    assert_eq!(other.next_result(1).await, Ok(json!(null)));

    let out = t
        .post("/api/auth/sign-out", Some(&ada.token), json!({}))
        .await;
    assert_eq!(out.status, 200);
    let failed = ws.next_result(1).await.expect_err("the session ended");
    assert_eq!(error_code(&failed), Some("UNAUTHENTICATED"));

    // The other session of the same user is untouched: its next push is
    // the profile it writes, not a failure.
    let other_user = livebase_testkit::User {
        id: ada.id.clone(),
        email: ada.email.clone(),
        token: other_token.clone(),
    };
    t.mutation(
        "userProfiles:upsert",
        &other_user,
        json!({"displayName": "Ada L."}),
    )
    .await
    .expect("the other session still works");
    let profile = other.next_result(1).await.expect("a profile");
    assert_eq!(profile["displayName"], "Ada L.");
}

#[tokio::test]
async fn the_signing_key_is_generated_private_in_the_data_folder() {
    let t = support::start().await;
    let path = t.data_dir().join(SECRET_FILE);
    assert!(path.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn authenticating_re_runs_the_connections_queries_under_the_new_identity() {
    let t = support::start().await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    t.mutation("userProfiles:upsert", &ada, json!({"displayName": "Ada"}))
        .await
        .expect("a profile");
    let mut ws = t.client().await;
    ws.add_query(1, "userProfiles:get", json!({})).await;
    let anonymous = ws.next_result(1).await.expect_err("signed out");
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
    assert!(matches!(
        ws.authenticate(&ada.token).await,
        ServerMessage::Transition { .. }
    ));
    let profile = ws.next_result(1).await.expect("signed in");
    assert_eq!(profile["displayName"], "Ada");
    // A bad token is answered with AuthError and changes nothing else.
    assert!(matches!(
        ws.authenticate("not.a.token").await,
        ServerMessage::AuthError { .. }
    ));
}

#[tokio::test]
async fn a_refused_token_signs_the_connection_out() {
    let t = support::start().await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    t.mutation("userProfiles:upsert", &ada, json!({"displayName": "Ada"}))
        .await
        .expect("a profile");
    let mut ws = t.client().await;
    assert!(matches!(
        ws.authenticate(&ada.token).await,
        ServerMessage::Transition { .. }
    ));
    ws.add_query(1, "userProfiles:get", json!({})).await;
    let profile = ws.next_result(1).await.expect("signed in");
    assert_eq!(profile["displayName"], "Ada");
    // A failed Authenticate does not keep the previous identity: the query
    // re-runs as anonymous, as if the connection had never signed in.
    assert!(matches!(
        ws.authenticate("not.a.token").await,
        ServerMessage::AuthError { .. }
    ));
    let anonymous = ws.next_result(1).await.expect_err("signed out");
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"));
    // The identity version did not move: the next Authenticate (from the
    // same base) is accepted and signs in again.
    assert!(matches!(
        ws.authenticate(&ada.token).await,
        ServerMessage::Transition { .. }
    ));
    let again = ws.next_result(1).await.expect("signed in again");
    assert_eq!(again["displayName"], "Ada");
}
