//! Accounts a person can trust, end to end over real sockets with a real SMTP
//! server (`tests/smtp/sink.py`, Python's aiosmtpd): every mailed link is
//! read out of the received mail and followed as a person would. Email
//! verification guards invitations (the takeover of an invitation by signing
//! up with its address fails), a reset link sets a new password and ends every
//! session with its live subscriptions, passwords change, sessions are listed
//! and revoked by their owner only, and only a bare, canonical address makes
//! an account.

mod smtp;
mod support;

use std::time::Duration;

use livebase_runtime::email::MailOptions;
use livebase_testkit::mail::{link_in, path_of};
use livebase_testkit::server::code;
use livebase_testkit::{
    error_code, eventually, HttpResponse, TestServer, User, PASSWORD, PATIENCE,
};
use serde_json::{json, Value as Json};
use smtp::{Received, SmtpSink};

/// The application's server, mailing through `sink`.
async fn start(sink: &SmtpSink) -> TestServer {
    TestServer::start_tuned(livebase_functions::app(), |o| {
        o.mail = MailOptions {
            smtp: Some(sink.url()),
            ..MailOptions::default()
        };
    })
    .await
}

/// Waits for the newest mail to `to` with `subject` that arrived after the
/// first `skip` mails (any recipient).
async fn mail_to(sink: &SmtpSink, to: &str, subject: &str, skip: usize) -> Received {
    let what = format!("a mail to {to} with subject {subject:?}");
    eventually(&what, PATIENCE, || async {
        let received = sink.received();
        received
            .iter()
            .skip(skip)
            .rev()
            .find(|m| m.rcpt_tos == [to] && m.subject == subject)
            .cloned()
            .ok_or_else(|| format!("{received:#?}"))
    })
    .await
}

/// The link in a mail's text part that contains `marker`.
fn link(mail: &Received, marker: &str) -> String {
    link_in(&mail.text, marker).unwrap_or_else(|| panic!("no {marker} link in {mail:#?}"))
}

/// Follows the verification link of the newest verification mail to `to`.
async fn follow_verification(t: &TestServer, sink: &SmtpSink, to: &str) -> HttpResponse {
    let mail = mail_to(sink, to, "Confirm your email address", 0).await;
    t.get(&path_of(&link(&mail, "/api/auth/verify-email?")), None)
        .await
}

async fn sign_up_verified(t: &TestServer, sink: &SmtpSink, email: &str, name: &str) -> User {
    let user = t.sign_up(email, name).await;
    let followed = follow_verification(t, sink, email).await;
    assert_eq!(followed.status, 200, "{}", followed.body);
    user
}

fn ok(outcome: livebase_testkit::Outcome) -> Json {
    outcome.unwrap_or_else(|f| panic!("expected success, got {f:?}"))
}

fn token_of(reply: &HttpResponse) -> String {
    reply.body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token in {}", reply.body))
        .to_string()
}

#[tokio::test]
async fn a_member_cannot_take_over_an_invitation_by_signing_up_with_its_address() {
    let sink = SmtpSink::start();
    let t = start(&sink).await;
    let owner = t.sign_up("owner@example.com", "Olive").await;
    let mallory = sign_up_verified(&t, &sink, "mallory@example.com", "Mallory").await;
    let org = ok(t
        .mutation(
            "organizations:create",
            &owner,
            json!({"name": "Acme", "slug": "acme"}),
        )
        .await);
    let invite = |email: &str, role: &str| {
        let args = json!({"organizationId": org, "email": email, "role": role});
        t.mutation("organizations:invite", &owner, args)
    };
    let to_mallory = ok(invite("mallory@example.com", "member").await);
    ok(t.mutation(
        "organizations:acceptInvitation",
        &mallory,
        json!({"invitationId": to_mallory}),
    )
    .await);
    let to_victor = ok(invite("victor@example.com", "owner").await);

    // Mallory, a plain member, reads the pending invitation's address...
    let listed = ok(t
        .query(
            "organizations:invitations",
            &mallory,
            json!({"organizationId": org}),
        )
        .await);
    assert!(
        listed
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["email"] == "victor@example.com"),
        "{listed}"
    );
    // ...signs up with it, which she can, and tries to accept as owner.
    let squatter = t.sign_up("victor@example.com", "Not Victor").await;
    let refused = t
        .mutation(
            "organizations:acceptInvitation",
            &squatter,
            json!({"invitationId": to_victor}),
        )
        .await
        .expect_err("an unverified account cannot accept");
    assert_eq!(refused.code, "FORBIDDEN");
    assert!(refused.message.contains("verify"), "{}", refused.message);
    let members = ok(t
        .query(
            "organizations:members",
            &owner,
            json!({"organizationId": org}),
        )
        .await);
    assert_eq!(members.as_array().map(Vec::len), Some(2), "{members}");

    // The real Victor owns the mailbox: a reset link takes the account back,
    // proves the address, and ends the squatter's session.
    let asked = t
        .post(
            "/api/auth/request-password-reset",
            None,
            json!({"email": "victor@example.com"}),
        )
        .await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    let mail = mail_to(&sink, "victor@example.com", "Reset your password", 0).await;
    let reset_link = link(&mail, "/reset-password?token=");
    let token = reset_link.rsplit_once("token=").expect("a token").1;
    let reset = t
        .post(
            "/api/auth/reset-password",
            None,
            json!({"newPassword": "victor's own passphrase", "token": token}),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(
        code(
            &t.query("organizations:listMine", &squatter, json!({}))
                .await
        ),
        "UNAUTHENTICATED",
        "the squatter's session ended"
    );
    let signed_in = t
        .sign_in("victor@example.com", "victor's own passphrase")
        .await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert_eq!(signed_in.body["user"]["emailVerified"], true);
    let victor = User::from_reply(&signed_in, "victor@example.com");
    ok(t.mutation(
        "organizations:acceptInvitation",
        &victor,
        json!({"invitationId": to_victor}),
    )
    .await);
}

#[tokio::test]
async fn a_verification_link_works_once_and_redirects_only_into_the_app() {
    let sink = SmtpSink::start();
    let t = start(&sink).await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let session = t.get("/api/auth/get-session", Some(&ada.token)).await;
    assert_eq!(
        session.body["user"]["emailVerified"], false,
        "{}",
        session.body
    );
    let first = mail_to(&sink, "ada@example.com", "Confirm your email address", 0).await;
    let first_link = link(&first, "/api/auth/verify-email?");
    assert!(
        first_link.starts_with(&format!("http://{}/", t.addr())),
        "built on the app URL (here the server's own): {first_link}"
    );
    assert!(
        first.html.contains("/api/auth/verify-email?token"),
        "{}",
        first.html
    );

    // Asking again (with a callback) mails a new link that replaces the first.
    let before = sink.received().len();
    let again = t
        .post(
            "/api/auth/send-verification-email",
            None,
            json!({"email": "ADA@example.com", "callbackURL": "/welcome?from=mail"}),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    let second = mail_to(
        &sink,
        "ada@example.com",
        "Confirm your email address",
        before,
    )
    .await;
    let second_link = link(&second, "/api/auth/verify-email?");
    assert_ne!(first_link, second_link);
    assert_eq!(
        t.get(&path_of(&first_link), None).await.status,
        400,
        "replaced"
    );

    let followed = t.get(&path_of(&second_link), None).await;
    assert_eq!(followed.status, 302, "{}", followed.body);
    assert_eq!(
        followed.header("location"),
        Some(format!("http://{}/welcome?from=mail", t.addr()).as_str())
    );
    let session = t.get("/api/auth/get-session", Some(&ada.token)).await;
    assert_eq!(session.body["user"]["emailVerified"], true);
    // Verified: the welcome mail follows.
    mail_to(&sink, "ada@example.com", "Welcome, Ada", 0).await;

    let used = t.get(&path_of(&second_link), None).await;
    assert_eq!(used.status, 400, "{}", used.body);
    assert_eq!(used.body["code"], "INVALID_TOKEN");
    let unknown = t
        .get(
            "/api/auth/verify-email?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            None,
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(t.get("/api/auth/verify-email", None).await.status, 400);

    // Unknown and verified addresses get the same answer, and no mail.
    let before = sink.received().len();
    for email in ["nobody@example.com", "ada@example.com", "not an address"] {
        let r = t
            .post(
                "/api/auth/send-verification-email",
                None,
                json!({"email": email}),
            )
            .await;
        assert_eq!(
            (r.status, &r.body),
            (200, &json!({"status": true})),
            "{email}"
        );
    }
    // A callback off the app would make our mail an open redirect.
    for evil in [
        "https://evil.example/x",
        "//evil.example/x",
        "javascript:alert(1)",
    ] {
        let r = t
            .post(
                "/api/auth/send-verification-email",
                None,
                json!({"email": "nobody@example.com", "callbackURL": evil}),
            )
            .await;
        assert_eq!(r.status, 400, "{evil}: {}", r.body);
        assert_eq!(r.body["code"], "INVALID_CALLBACK_URL");
    }
    // The welcome mail may still be on its way; nothing else is.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let extra: Vec<_> = sink
        .received()
        .into_iter()
        .skip(before)
        .filter(|m| m.subject != "Welcome, Ada")
        .collect();
    assert!(extra.is_empty(), "{extra:#?}");
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_and_ends_every_session_live_ones_included() {
    let sink = SmtpSink::start();
    let t = start(&sink).await;
    let ada = sign_up_verified(&t, &sink, "ada@example.com", "Ada").await;
    let second = token_of(&t.sign_in("ada@example.com", PASSWORD).await);
    let mut ws = t.client().await;
    ws.authenticate(&second).await;
    ws.add_query(1, "organizations:listMine", json!({})).await;
    assert_eq!(ws.next_result(1).await, Ok(json!([])));

    let before = sink.received().len();
    let known = t
        .post(
            "/api/auth/request-password-reset",
            None,
            json!({"email": "ada@example.com", "redirectTo": "/account/new-password"}),
        )
        .await;
    let unknown = t
        .post(
            "/api/auth/request-password-reset",
            None,
            json!({"email": "nobody@example.com"}),
        )
        .await;
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
    assert_eq!(known.status, 200);
    let mail = mail_to(&sink, "ada@example.com", "Reset your password", before).await;
    let reset_link = link(&mail, "/account/new-password?token=");
    assert!(
        reset_link.starts_with(&format!("http://{}/account/new-password?token=", t.addr())),
        "{reset_link}"
    );
    let token = reset_link.rsplit_once("token=").expect("a token").1;

    let short = t
        .post(
            "/api/auth/reset-password",
            None,
            json!({"newPassword": "short", "token": token}),
        )
        .await;
    assert_eq!(short.status, 400, "{}", short.body);
    let reset = t
        .post(
            "/api/auth/reset-password",
            None,
            json!({"newPassword": "a brand new passphrase", "token": token}),
        )
        .await;
    assert_eq!(reset.status, 200, "{}", reset.body);

    // Every session ended at once: the live subscription fails, both tokens
    // are refused.
    let failed = ws.next_result(1).await.expect_err("the session ended");
    assert_eq!(error_code(&failed), Some("UNAUTHENTICATED"));
    for token in [&ada.token, &second] {
        assert_eq!(
            t.get("/api/auth/get-session", Some(token)).await.status,
            401
        );
    }
    assert_eq!(t.sign_in("ada@example.com", PASSWORD).await.status, 401);
    assert_eq!(
        t.sign_in("ada@example.com", "a brand new passphrase")
            .await
            .status,
        200
    );
    let reused = t
        .post(
            "/api/auth/reset-password",
            None,
            json!({"newPassword": "yet another passphrase", "token": token}),
        )
        .await;
    assert_eq!(reused.status, 400, "single use: {}", reused.body);
    assert_eq!(reused.body["code"], "INVALID_TOKEN");
    // Only the hash of a token is stored.
    let stored = t.rows_json("_auth_tokens").await;
    assert!(
        !stored.iter().any(|r| r.to_string().contains(token)),
        "{stored:?}"
    );
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_can_end_other_sessions() {
    let sink = SmtpSink::start();
    let t = start(&sink).await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let other = token_of(&t.sign_in("ada@example.com", PASSWORD).await);
    async fn change(
        t: &TestServer,
        token: &str,
        current: &str,
        new: &str,
        revoke: bool,
    ) -> HttpResponse {
        t.post(
            "/api/auth/change-password",
            Some(token),
            json!({"currentPassword": current, "newPassword": new, "revokeOtherSessions": revoke}),
        )
        .await
    }
    let wrong = change(&t, &ada.token, "not my password", "new passphrase 1", false).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.body["code"], "INVALID_PASSWORD");
    let no_bearer = t
        .post(
            "/api/auth/change-password",
            None,
            json!({"currentPassword": PASSWORD, "newPassword": "new passphrase 1"}),
        )
        .await;
    assert_eq!(no_bearer.status, 401);

    let kept = change(&t, &ada.token, PASSWORD, "new passphrase 1", false).await;
    assert_eq!(
        (kept.status, &kept.body["token"]),
        (200, &Json::Null),
        "{}",
        kept.body
    );
    assert_eq!(
        t.get("/api/auth/get-session", Some(&other)).await.status,
        200
    );
    assert_eq!(t.sign_in("ada@example.com", PASSWORD).await.status, 401);

    let revoked = change(&t, &ada.token, "new passphrase 1", "new passphrase 2", true).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let fresh = token_of(&revoked);
    for old in [&ada.token, &other] {
        assert_eq!(t.get("/api/auth/get-session", Some(old)).await.status, 401);
    }
    assert_eq!(
        t.get("/api/auth/get-session", Some(&fresh)).await.status,
        200
    );
    assert_eq!(
        t.sign_in("ada@example.com", "new passphrase 2")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_by_their_owner_only() {
    let sink = SmtpSink::start();
    let t = start(&sink).await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let laptop = token_of(&t.sign_in("ada@example.com", PASSWORD).await);
    let bob = t.sign_up("bob@example.com", "Bob").await;

    let listed = t.get("/api/auth/list-sessions", Some(&ada.token)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let sessions = listed.body.as_array().expect("a list").clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let laptop_session = sessions
        .iter()
        .find(|s| s["current"] == false)
        .expect("the other session");
    assert!(laptop_session["expiresAt"].as_f64().unwrap_or(0.0) > 0.0);

    let mut ws = t.client().await;
    ws.authenticate(&laptop).await;
    ws.add_query(1, "organizations:listMine", json!({})).await;
    assert_eq!(ws.next_result(1).await, Ok(json!([])));

    // Bob cannot revoke Ada's session, by id or by token.
    for which in [laptop_session["token"].clone(), json!(laptop)] {
        let r = t
            .post(
                "/api/auth/revoke-session",
                Some(&bob.token),
                json!({"token": which}),
            )
            .await;
        assert_eq!(r.status, 404, "{}", r.body);
    }
    assert_eq!(
        t.get("/api/auth/get-session", Some(&laptop)).await.status,
        200
    );
    let bobs = t.get("/api/auth/list-sessions", Some(&bob.token)).await;
    assert_eq!(bobs.body.as_array().map(Vec::len), Some(1), "{}", bobs.body);

    let revoked = t
        .post(
            "/api/auth/revoke-session",
            Some(&ada.token),
            json!({"token": laptop_session["token"]}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let failed = ws.next_result(1).await.expect_err("the session ended");
    assert_eq!(error_code(&failed), Some("UNAUTHENTICATED"));
    assert_eq!(
        t.get("/api/auth/get-session", Some(&laptop)).await.status,
        401
    );
    let listed = t.get("/api/auth/list-sessions", Some(&ada.token)).await;
    assert_eq!(listed.body.as_array().map(Vec::len), Some(1));
    assert_eq!(t.get("/api/auth/list-sessions", None).await.status, 401);
}

#[tokio::test]
async fn only_a_bare_canonical_address_makes_an_account() {
    let sink = SmtpSink::start();
    let t = start(&sink).await;
    let sign_up = |email: &'static str| {
        t.post(
            "/api/auth/sign-up/email",
            None,
            json!({"email": email, "password": PASSWORD, "name": "X"}),
        )
    };
    for bad in [
        "x<victim@example.com>",
        "Victim <victim@example.com>",
        "victim@example.com, x@example.com",
        "\"victim\"@example.com",
        "vic\u{200b}tim@example.com",
    ] {
        let r = sign_up(bad).await;
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert_eq!(r.body["code"], "INVALID_EMAIL");
    }
    let first = sign_up("Ada@B\u{fc}cher.DE").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["user"]["email"], "ada@xn--bcher-kva.de");
    for same in [
        "ADA@xn--BCHER-kva.de",
        "ada@bu\u{308}cher.de",
        "ada@b\u{fc}cher.de",
    ] {
        let r = sign_up(same).await;
        assert_eq!(r.status, 422, "{same:?} is the same mailbox: {}", r.body);
    }
    let jorg = sign_up("Jo\u{308}rg@example.com").await;
    assert_eq!(jorg.body["user"]["email"], "j\u{f6}rg@example.com");
    let r = sign_up("J\u{d6}RG@example.com").await;
    assert_eq!(r.status, 422, "NFC and case: {}", r.body);
    // The verification mail goes to the canonical address.
    mail_to(
        &sink,
        "ada@xn--bcher-kva.de",
        "Confirm your email address",
        0,
    )
    .await;
}

/// Sends `n` requests and returns the statuses.
async fn statuses(t: &TestServer, n: usize, path: &str, body: impl Fn(usize) -> Json) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(t.post(path, None, body(i)).await.status);
    }
    out
}

fn assert_refused_with_retry_after(reply: &HttpResponse, what: &str) {
    assert_eq!(reply.status, 429, "{what}: {}", reply.body);
    let seconds: u64 = reply
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: a Retry-After header"));
    assert!(seconds > 0, "{what}: {seconds}");
}

#[tokio::test]
async fn every_auth_limit_refuses_with_429_and_retry_after() {
    use livebase_runtime::auth::limits::{
        MAIL_PER_ADDRESS, MAIL_PER_IP, SIGN_IN_PER_IP, SIGN_UP_PER_ADDRESS, SIGN_UP_PER_IP,
    };
    let t = support::start().await;

    // Sign-up per address: a taken address answers 422 only so often.
    t.sign_up("taken@example.com", "Taken").await;
    let body = |_| json!({"email": "taken@example.com", "password": PASSWORD, "name": "X"});
    let got = statuses(
        &t,
        SIGN_UP_PER_ADDRESS.burst as usize - 1,
        "/api/auth/sign-up/email",
        body,
    )
    .await;
    assert!(got.iter().all(|s| *s == 422), "{got:?}");
    let refused = t.post("/api/auth/sign-up/email", None, body(0)).await;
    assert_refused_with_retry_after(&refused, "sign-up per address");

    // Mail per address: verification and reset share it.
    let mail = |path: &'static str| {
        let t = &t;
        async move {
            t.post(path, None, json!({"email": "someone@example.com"}))
                .await
        }
    };
    for _ in 0..MAIL_PER_ADDRESS.burst {
        assert_eq!(mail("/api/auth/request-password-reset").await.status, 200);
    }
    assert_refused_with_retry_after(
        &mail("/api/auth/send-verification-email").await,
        "mail per address",
    );

    // Mail per client: fresh addresses, one client.
    let got = statuses(
        &t,
        MAIL_PER_IP.burst as usize - MAIL_PER_ADDRESS.burst as usize - 1,
        "/api/auth/send-verification-email",
        |i| json!({"email": format!("mail{i}@example.com")}),
    )
    .await;
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    let refused = t
        .post(
            "/api/auth/send-verification-email",
            None,
            json!({"email": "fresh@example.com"}),
        )
        .await;
    assert_refused_with_retry_after(&refused, "mail per client");

    // Sign-up per client: short passwords are refused after the limit is
    // counted, so hitting it needs no hashing.
    let got = statuses(
        &t,
        SIGN_UP_PER_IP.burst as usize - SIGN_UP_PER_ADDRESS.burst as usize - 1,
        "/api/auth/sign-up/email",
        |i| json!({"email": format!("new{i}@example.com"), "password": "short", "name": "X"}),
    )
    .await;
    assert!(got.iter().all(|s| *s == 400), "{got:?}");
    let refused = t
        .post(
            "/api/auth/sign-up/email",
            None,
            json!({"email": "one-more@example.com", "password": PASSWORD, "name": "X"}),
        )
        .await;
    assert_refused_with_retry_after(&refused, "sign-up per client");

    // Sign-in per client: unknown addresses, one client (the per-address
    // limit is tests/auth.rs's). The bucket refills while the passwords
    // hash, so send until refused, and count what got through.
    let mut answered = 0;
    let refused = loop {
        let reply = t
            .sign_in(&format!("guess{answered}@example.com"), "guess")
            .await;
        if reply.status != 401 || answered > 3 * SIGN_IN_PER_IP.burst {
            break reply;
        }
        answered += 1;
    };
    assert!(answered >= SIGN_IN_PER_IP.burst, "{answered}");
    assert_refused_with_retry_after(&refused, "sign-in per client");
}

#[tokio::test]
async fn invitations_are_limited_per_organization_and_address_without_blocking_others() {
    use livebase_functions::features::organizations::logic::{
        MAX_INVITATIONS_PER_ADDRESS, MAX_INVITATIONS_PER_ORGANIZATION,
    };
    let t = support::start().await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    let bob = t.sign_up("bob@example.com", "Bob").await;
    async fn create(t: &TestServer, user: &User, slug: &str) -> Json {
        let args = json!({"name": slug, "slug": slug});
        ok(t.mutation("organizations:create", user, args).await)
    }
    async fn invite(
        t: &TestServer,
        user: &User,
        org: &Json,
        email: &str,
    ) -> livebase_testkit::Outcome {
        let args = json!({"organizationId": org, "email": email, "role": "member"});
        t.mutation("organizations:invite", user, args).await
    }
    let acme = create(&t, &ada, "acme").await;
    let globex = create(&t, &bob, "globex").await;

    // Invite/cancel churn in Acme hits Acme's limit for that address...
    for _ in 0..MAX_INVITATIONS_PER_ADDRESS {
        let id = ok(invite(&t, &ada, &acme, "x@example.com").await);
        ok(t.mutation(
            "organizations:cancelInvitation",
            &ada,
            json!({"invitationId": id}),
        )
        .await);
    }
    let refused = invite(&t, &ada, &acme, "x@example.com").await;
    assert_eq!(code(&refused), "LIMIT_EXCEEDED", "{refused:?}");
    // ...and nobody else's: Globex can still invite the address.
    ok(invite(&t, &bob, &globex, "x@example.com").await);

    // One organization's invitations in an hour (the churn above counts).
    for i in MAX_INVITATIONS_PER_ADDRESS..MAX_INVITATIONS_PER_ORGANIZATION {
        ok(invite(&t, &ada, &acme, &format!("guest{i}@example.com")).await);
    }
    let refused = invite(&t, &ada, &acme, "one-too-many@example.com").await;
    assert_eq!(code(&refused), "LIMIT_EXCEEDED", "{refused:?}");
    assert!(refused.unwrap_err().message.contains("hour"));
    ok(invite(&t, &bob, &globex, "one-too-many@example.com").await);
}

#[tokio::test]
async fn a_session_that_expires_ends_its_live_queries_without_any_write() {
    use livebase_runtime::auth::tokens::{Claims, TokenKeys};
    use livebase_schema::obj;
    use std::time::{SystemTime, UNIX_EPOCH};

    let t = support::start().await;
    let ada = t.sign_up("ada@example.com", "Ada").await;
    // A session that ends in about a second, and a token for it signed with
    // the server's own key.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expires_at = now.as_millis() as f64 + 1500.0;
    let user_id = ada.id.clone();
    let sid = t
        .server
        .state
        .executor
        .database()
        .mutate(move |tx| {
            tx.insert(
                "sessions",
                obj! { "userId" => user_id.as_str(), "expiresAt" => expires_at },
            )
        })
        .await
        .expect("a session row")
        .value;
    let keys = TokenKeys::load(t.data_dir()).expect("the server's key");
    let token = keys
        .issue(&Claims {
            sub: ada.id.clone(),
            sid: sid.as_str().to_string(),
            iat: now.as_secs(),
            exp: now.as_secs() + 60,
        })
        .expect("signs");

    let mut ws = t.client().await;
    ws.authenticate(&token).await;
    ws.add_query(1, "organizations:listMine", json!({})).await;
    assert_eq!(ws.next_result(1).await, Ok(json!([])));
    // Nothing is written from here on; the next result is the session's end.
    let ended = ws.next_result(1).await.expect_err("the session expired");
    assert_eq!(error_code(&ended), Some("UNAUTHENTICATED"));
    assert_eq!(
        t.get("/api/auth/get-session", Some(&token)).await.status,
        401
    );
    // Ada's other session is untouched.
    assert_eq!(
        t.get("/api/auth/get-session", Some(&ada.token))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn clients_behind_a_local_proxy_are_limited_each_on_their_own() {
    use livebase_runtime::auth::limits::MAIL_PER_IP;
    let t = support::start().await;
    // A reverse proxy on this machine says whom it forwards for.
    let ask = |client: &'static str, n: usize| {
        let t = &t;
        async move {
            livebase_testkit::http::http_json(
                t.addr(),
                "POST",
                "/api/auth/send-verification-email",
                None,
                &[("X-Forwarded-For", client)],
                Some(&json!({"email": format!("someone{n}@example.com")})),
            )
            .await
        }
    };
    for n in 0..MAIL_PER_IP.burst as usize {
        assert_eq!(ask("203.0.113.1", n).await.status, 200);
    }
    assert_refused_with_retry_after(&ask("203.0.113.1", 99).await, "the first client");
    // A spoofed first entry does not change the address the proxy added.
    assert_eq!(ask("198.51.100.7, 203.0.113.1", 100).await.status, 429);
    assert_eq!(ask("203.0.113.2", 101).await.status, 200, "another client");
}

/// A mailed link's one-time token lives in its `emails:send` job's row only
/// until the mail is sent: the job then forgets the link (and keeps the rest
/// of its arguments), so no table, export or dashboard holds the token.
#[tokio::test]
async fn a_sent_mail_job_no_longer_holds_its_link() {
    let sink = SmtpSink::start();
    let t = start(&sink).await;
    t.sign_up("ada@example.com", "Ada").await;
    let mail = mail_to(&sink, "ada@example.com", "Confirm your email address", 0).await;
    let url = link(&mail, "/api/auth/verify-email?");
    let token = url
        .split("token=")
        .nth(1)
        .expect("the link carries a token")
        .to_string();
    let started = std::time::Instant::now();
    let job = loop {
        let jobs = t.rows_json("_scheduled_functions").await;
        let job = jobs
            .into_iter()
            .find(|j| j["name"] == "emails:send" && j["args"]["template"] == "verify-email")
            .expect("the verification mail's job");
        if job["state"] == "success" {
            break job;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the job never settled: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job["args"]["to"], "ada@example.com");
    assert_eq!(job["args"]["data"]["name"], "Ada");
    assert!(job["args"]["data"].get("url").is_none(), "{job:#}");
    let everything = serde_json::to_string(&t.rows_json("_scheduled_functions").await).unwrap();
    assert!(!everything.contains(&token), "{everything}");
    // The link itself still works: the token's hash is what the store keeps.
    let followed = t.get(&path_of(&url), None).await;
    assert_eq!(followed.status, 200, "{}", followed.body);
}
