//! The application's string fields are bounded (issue 11, item 3): a member
//! used to be able to create 120 items with 200 KB names, so that every read
//! of `items:getAll` fetched and sent 24 MB. Now such a write is refused at
//! create (and update) with `INVALID_ARGUMENT` naming the field and its bound,
//! through the table validators, on a real server with the app of
//! `functions/`.

mod support;

use livebase_testkit::server::code;
use livebase_testkit::{Outcome, TestServer, User};
use serde_json::{json, Value as Json};

fn failure(outcome: &Outcome) -> (&str, &str) {
    match outcome {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(f) => (f.code.as_str(), f.message.as_str()),
    }
}

/// Asserts `outcome` is `INVALID_ARGUMENT` naming `field` and its bound.
fn refused(outcome: &Outcome, field: &str, max: usize) {
    let (code, message) = failure(outcome);
    assert_eq!(code, "INVALID_ARGUMENT", "{message}");
    assert!(message.contains(field), "{message} should name {field}");
    assert!(
        message.contains(&format!("at most {max} characters")),
        "{message} should name the bound {max}"
    );
    assert!(message.len() < 400, "the error does not echo the value");
}

async fn owner_with_organization(t: &TestServer) -> (User, String) {
    let owner = t.sign_up("owner@example.com", "Owner").await;
    let org = t
        .mutation(
            "organizations:create",
            &owner,
            json!({"name": "Acme", "slug": "acme"}),
        )
        .await
        .expect("the organization is created");
    let org = org.as_str().expect("an id").to_string();
    (owner, org)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_names_and_statuses_are_bounded_at_create_and_update() {
    let t = support::start().await;
    let (owner, org) = owner_with_organization(&t).await;
    let huge = "n".repeat(200_000);

    // The attack: items with 200 KB names. The first is refused already.
    let created = t
        .mutation(
            "items:create",
            &owner,
            json!({"name": huge, "status": "open", "organizationId": org}),
        )
        .await;
    refused(&created, "items.name", 200);
    let created = t
        .mutation(
            "items:create",
            &owner,
            json!({"name": "widget", "status": "s".repeat(65), "organizationId": org}),
        )
        .await;
    refused(&created, "items.status", 64);

    // At the bound (in characters, not bytes) an item is fine.
    let name = "é".repeat(200);
    let item = t
        .mutation(
            "items:create",
            &owner,
            json!({"name": name, "status": "open", "organizationId": org}),
        )
        .await
        .expect("a name of 200 characters is accepted");
    let grown = t
        .mutation(
            "items:update",
            &owner,
            json!({"id": item, "name": format!("{name}x")}),
        )
        .await;
    refused(&grown, "items.name", 200);

    let items = t
        .query("items:getAll", &owner, json!({"organizationId": org}))
        .await
        .expect("the list reads");
    let items = items.as_array().expect("an array");
    assert_eq!(items.len(), 1, "nothing refused was written");
    assert_eq!(items[0]["name"], Json::from(name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_and_todos_are_bounded() {
    let t = support::start().await;
    let (owner, org) = owner_with_organization(&t).await;

    let profile = t
        .mutation(
            "userProfiles:upsert",
            &owner,
            json!({"displayName": "d".repeat(101)}),
        )
        .await;
    refused(&profile, "userProfiles.displayName", 100);
    let profile = t
        .mutation(
            "userProfiles:upsert",
            &owner,
            json!({"displayName": "Ada", "bio": "b".repeat(2001)}),
        )
        .await;
    refused(&profile, "userProfiles.bio", 2000);
    t.mutation(
        "userProfiles:upsert",
        &owner,
        json!({"displayName": "Ada", "bio": "b".repeat(2000)}),
    )
    .await
    .expect("a bio at the bound is accepted");

    // The todo's own check answers first; the table holds the same bound.
    let todo = t
        .mutation(
            "todos:create",
            &owner,
            json!({"text": "t".repeat(1001), "organizationId": org}),
        )
        .await;
    assert_eq!(code(&todo), "INVALID_ARGUMENT");
}
