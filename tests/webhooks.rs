//! The application's HTTP routes end to end, over real sockets: the public
//! organization page answers without sign-in; a correctly signed webhook
//! creates an item (by the organization's first owner) that members see;
//! every forged, unsigned or tampered webhook is `401` and writes nothing; a
//! bad body is `400` naming the field; a server without a secret refuses
//! every webhook with `503`.

use livebase_functions::http::{WebhookSecret, SIGNATURE_HEADER};
use livebase_testkit::http::{http, http_json, HttpResponse};
use livebase_testkit::{Outcome, TestServer, User};
use serde_json::{json, Value as Json};

const SECRET: &str = "whsec-test-0123456789";

/// The application of `functions/` with `secret` as its webhook secret.
async fn start(secret: Option<WebhookSecret>) -> TestServer {
    TestServer::start(livebase_functions::app_with_webhook_secret(secret)).await
}

fn ok(outcome: Outcome) -> Json {
    outcome.unwrap_or_else(|f| panic!("expected success, got {f:?}"))
}

/// `POST /webhooks/items` with `body` and, if given, the signature header.
async fn webhook(t: &TestServer, body: &Json, signature: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = signature
        .map(|s| vec![(SIGNATURE_HEADER, s)])
        .unwrap_or_default();
    // The kit sends `body.to_string()`: the text `sign` signs.
    http_json(
        t.addr(),
        "POST",
        "/webhooks/items",
        None,
        &headers,
        Some(body),
    )
    .await
}

/// The signature of `body` as the test client sends it (its JSON text).
fn sign(secret: &str, body: &Json) -> String {
    WebhookSecret::new(secret).sign(body.to_string().as_bytes())
}

/// `acme`, created by `owner`, then joined by `second_owner` (as owner) and
/// `member`.
async fn acme(t: &TestServer) -> (String, User, User, User) {
    let owner = t.sign_up("owner@example.com", "Olive Owner").await;
    let second_owner = t.sign_up_verified("second@example.com", "Sam Second").await;
    let member = t.sign_up_verified("member@example.com", "Mia Member").await;
    let org = ok(t
        .mutation(
            "organizations:create",
            &owner,
            json!({"name": "Acme Inc", "slug": "acme"}),
        )
        .await);
    let org = org.as_str().expect("an id").to_string();
    for (user, role) in [(&second_owner, "owner"), (&member, "member")] {
        let invitation = ok(t
            .mutation(
                "organizations:invite",
                &owner,
                json!({"organizationId": org, "email": user.email, "role": role}),
            )
            .await);
        ok(t.mutation(
            "organizations:acceptInvitation",
            user,
            json!({"invitationId": invitation}),
        )
        .await);
    }
    (org, owner, second_owner, member)
}

async fn items_seen_by(t: &TestServer, user: &User, org: &str) -> Vec<Json> {
    let items = ok(t
        .query("items:getAll", user, json!({"organizationId": org}))
        .await);
    items.as_array().expect("an array").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_page_answers_without_sign_in() {
    let t = start(None).await;
    let (_org, ..) = acme(&t).await;
    let reply = http(t.addr(), "GET", "/public/organizations/acme", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, json!({"name": "Acme Inc", "members": 3}));
    let unknown = http(t.addr(), "GET", "/public/organizations/nope", &[], b"").await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.body["code"], "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_creates_an_item_by_the_first_owner() {
    let t = start(Some(WebhookSecret::new(SECRET))).await;
    let (org, owner, _second, member) = acme(&t).await;
    let body = json!({"organizationSlug": "acme", "name": "From Stripe", "status": "paid"});
    let reply = webhook(&t, &body, Some(&sign(SECRET, &body))).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let items = items_seen_by(&t, &member, &org).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["_id"], reply.body["id"]);
    assert_eq!(items[0]["name"], "From Stripe");
    assert_eq!(items[0]["status"], "paid");
    assert_eq!(items[0]["organizationId"], org.as_str());
    assert_eq!(items[0]["createdBy"], owner.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_and_tampered_webhooks_are_refused_and_write_nothing() {
    let t = start(Some(WebhookSecret::new(SECRET))).await;
    let (org, _owner, _second, member) = acme(&t).await;
    let body = json!({"organizationSlug": "acme", "name": "Injected", "status": "paid"});
    let tampered = json!({"organizationSlug": "acme", "name": "Injected!", "status": "paid"});
    let wrong_secret = sign("not-the-secret", &body);
    let signed = sign(SECRET, &body);
    let attacks: [(&str, &Json, Option<&str>); 5] = [
        ("a wrong signature", &body, Some(&wrong_secret)),
        ("no signature", &body, None),
        ("a signature of another body", &tampered, Some(&signed)),
        ("a malformed signature", &body, Some("sha256=not-hex")),
        (
            "a bare digest",
            &body,
            Some(signed.trim_start_matches("sha256=")),
        ),
    ];
    for (attack, body, signature) in attacks {
        let reply = webhook(&t, body, signature).await;
        assert_eq!(reply.status, 401, "{attack}: {}", reply.body);
        assert_eq!(reply.body["code"], "UNAUTHENTICATED", "{attack}");
        assert!(t.rows("items").await.is_empty(), "{attack} wrote an item");
    }
    // Positive control: the same body, correctly signed, is accepted.
    assert_eq!(webhook(&t, &body, Some(&signed)).await.status, 201);
    assert_eq!(items_seen_by(&t, &member, &org).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_with_a_bad_body_is_400_naming_the_field() {
    let t = start(Some(WebhookSecret::new(SECRET))).await;
    acme(&t).await;
    let long = "x".repeat(201);
    let cases = [
        (
            json!({"organizationSlug": "acme", "name": long, "status": "s"}),
            400,
            "body.name",
        ),
        (
            json!({"organizationSlug": "acme", "name": "n", "status": "s".repeat(65)}),
            400,
            "body.status",
        ),
        (
            json!({"organizationSlug": "acme", "name": "n"}),
            400,
            "status",
        ),
        (
            json!({"organizationSlug": "acme", "name": 5, "status": "s"}),
            400,
            "body.name",
        ),
        (
            json!({"organizationSlug": "nope", "name": "n", "status": "s"}),
            404,
            "nope",
        ),
        (json!([1, 2]), 400, "body"),
    ];
    for (body, status, named) in cases {
        let reply = webhook(&t, &body, Some(&sign(SECRET, &body))).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        let message = reply.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{body}: {message}");
    }
    assert!(t.rows("items").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_every_webhook_is_503() {
    let t = start(None).await;
    acme(&t).await;
    let body = json!({"organizationSlug": "acme", "name": "n", "status": "s"});
    for signature in [Some(sign(SECRET, &body)), Some(sign("", &body)), None] {
        let reply = webhook(&t, &body, signature.as_deref()).await;
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.body["code"], "WEBHOOK_NOT_CONFIGURED");
    }
    assert!(t.rows("items").await.is_empty());
}
