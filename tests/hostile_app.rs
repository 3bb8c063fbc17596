//! What members of an organization can do to the application by creating
//! rows (issue 11, items 6 and 7), on a real server: the list queries stay
//! bounded past the array and read limits, removing an organization larger
//! than the per-mutation write limit works (and hides it at once), and the
//! purge of old mutation outcomes keeps up however many there are; and
//! (items 5) a stranger with an owner's session id gets none of its outcomes.
//!
//! The rows are written in process through the server's own database, a
//! thousand per transaction, so that making tens of thousands takes seconds.

mod support;

use std::time::Duration;

use livebase_functions::shared::LIST_LIMIT;
use livebase_runtime::store::MutationOutcome;
use livebase_runtime::transaction::{MAX_READS_PER_TRANSACTION, MAX_WRITES_PER_TRANSACTION};
use livebase_runtime::upkeep;
use livebase_schema::protocol::{
    ClientMessage, FunctionError, RequestId, ServerMessage, SessionId,
};
use livebase_schema::{obj, DocumentId, Object, Timestamp, Value};
use livebase_testkit::server::code;
use livebase_testkit::{error_code, Client, TestServer, User, PATIENCE};
use serde_json::{json, Value as Json};

/// Rows per transaction when filling a table.
const CHUNK: usize = 1_000;

/// Inserts `count` rows into `table`, the fields of row `i` made by `row(i)`.
async fn fill(
    server: &TestServer,
    table: &'static str,
    count: usize,
    row: impl Fn(usize) -> Object + Send + Sync + Clone + 'static,
) {
    let mut done = 0;
    while done < count {
        let (from, to) = (done, (done + CHUNK).min(count));
        let row = row.clone();
        server
            .executor()
            .database()
            .mutate(move |tx| {
                for i in from..to {
                    tx.insert(table, Value::Object(row(i).into()))?;
                }
                Ok(())
            })
            .await
            .unwrap_or_else(|e| panic!("filling {table}: {e}"));
        done = to;
    }
}

/// A user who owns a new organization; returns both.
async fn owner_of(server: &TestServer, email: &str, slug: &str) -> (User, String) {
    let owner = server.sign_up(email, "Owner").await;
    let org = server
        .mutation(
            "organizations:create",
            &owner,
            json!({"name": slug, "slug": slug}),
        )
        .await
        .expect("organizations:create");
    (owner, org.as_str().expect("an id").to_string())
}

fn scoped(org: &str, fields: Value) -> Object {
    let Value::Object(mut o) = fields else {
        unreachable!("obj! makes objects")
    };
    o.insert("organizationId".into(), Value::from(org));
    o.into_fields()
}

/// Whether any row of `table` still belongs to the organization.
async fn has_rows(server: &TestServer, table: &'static str, org: &str) -> bool {
    let org = org.to_string();
    !server
        .executor()
        .database()
        .query(move |tx| {
            tx.query(table)
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .take(1)
        })
        .await
        .expect("reads")
        .value
        .is_empty()
}

/// Past the array limit (8,192) and, for members (a row and a user read
/// each), past the read limit: every list query answers over HTTP and over
/// the WebSocket, with at most [`LIST_LIMIT`] rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queries_stay_bounded_however_many_rows_members_create() {
    let server = support::start().await;
    let (owner, org) = owner_of(&server, "owner@example.com", "crowded").await;
    let many = MAX_READS_PER_TRANSACTION / 2 + 8;
    assert!(many > 8_192);
    let by = owner.id.clone();
    let (o, b) = (org.clone(), by.clone());
    fill(&server, "items", many, move |i| {
        scoped(
            &o,
            obj! {"name" => format!("item {i}"), "status" => "open", "createdBy" => b.as_str()},
        )
    })
    .await;
    let (o, b) = (org.clone(), by.clone());
    fill(&server, "todos", many, move |i| {
        scoped(
            &o,
            obj! {"text" => format!("todo {i}"), "completed" => false, "createdBy" => b.as_str()},
        )
    })
    .await;
    let (o, b) = (org.clone(), by.clone());
    fill(&server, "invitations", many, move |i| {
        scoped(
            &o,
            obj! {
                "email" => format!("guest{i}@example.com"),
                "role" => "member",
                "status" => "pending",
                "invitedBy" => b.as_str(),
                "expiresAt" => 4.0e12,
            },
        )
    })
    .await;
    let o = org.clone();
    fill(&server, "members", many, move |_| {
        scoped(
            &o,
            obj! {"userId" => DocumentId::generate("users").as_str(), "role" => "member"},
        )
    })
    .await;

    let queries: [(&str, Json, usize); 5] = [
        ("items:getAll", json!({"organizationId": org}), LIST_LIMIT),
        (
            "items:getByStatus",
            json!({"organizationId": org, "status": "open"}),
            LIST_LIMIT,
        ),
        ("todos:list", json!({"organizationId": org}), LIST_LIMIT),
        (
            "organizations:invitations",
            json!({"organizationId": org}),
            LIST_LIMIT,
        ),
        // Only the owner is a user that exists; the rest are skipped.
        ("organizations:members", json!({"organizationId": org}), 1),
    ];
    for (path, args, expected) in &queries {
        let rows = server
            .query(path, &owner, args.clone())
            .await
            .unwrap_or_else(|e| panic!("{path} over HTTP: {e:?}"));
        let rows = rows.as_array().expect("a list");
        assert_eq!(rows.len(), *expected, "{path} over HTTP");
    }
    // Oldest first for items, newest first for todos.
    let items = server
        .query("items:getAll", &owner, json!({"organizationId": org}))
        .await
        .expect("items:getAll");
    assert_eq!(items[0]["name"], "item 0");
    let todos = server
        .query("todos:list", &owner, json!({"organizationId": org}))
        .await
        .expect("todos:list");
    assert_eq!(todos[0]["text"], format!("todo {}", many - 1));

    let mut ws = server.client().await;
    ws.authenticate(&owner.token).await;
    for (i, (path, args, expected)) in queries.iter().enumerate() {
        ws.add_query(i as u32, path, args.clone()).await;
        let rows = ws
            .next_result(i as u32)
            .await
            .unwrap_or_else(|e| panic!("{path} over the WebSocket: {e:?}"));
        assert_eq!(
            rows.as_array().map(Vec::len),
            Some(*expected),
            "{path} over the WebSocket"
        );
    }
}

/// An organization with more rows than one mutation may write is removed:
/// gone for every reader at once, its rows deleted in batches after, other
/// organizations untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_larger_than_the_write_limit_is_removed() {
    let server = support::start().await;
    let (owner, org) = owner_of(&server, "owner@example.com", "doomed").await;
    let (_, other) = owner_of(&server, "neighbour@example.com", "neighbour").await;
    let by = owner.id.clone();
    let (o, b) = (org.clone(), by.clone());
    fill(
        &server,
        "items",
        MAX_WRITES_PER_TRANSACTION + 100,
        move |i| {
            scoped(
                &o,
                obj! {"name" => format!("item {i}"), "status" => "open", "createdBy" => b.as_str()},
            )
        },
    )
    .await;
    let (o, b) = (org.clone(), by.clone());
    fill(&server, "todos", 300, move |i| {
        scoped(
            &o,
            obj! {"text" => format!("todo {i}"), "completed" => false, "createdBy" => b.as_str()},
        )
    })
    .await;
    let (o, b) = (other.clone(), by.clone());
    fill(&server, "items", 10, move |i| {
        scoped(
            &o,
            obj! {"name" => format!("kept {i}"), "status" => "open", "createdBy" => b.as_str()},
        )
    })
    .await;
    let mut ws = server.client().await;
    ws.authenticate(&owner.token).await;
    ws.add_query(0, "todos:list", json!({"organizationId": org}))
        .await;
    let before = ws.next_result(0).await.expect("todos:list");
    assert_eq!(before.as_array().map(Vec::len), Some(300));

    server
        .mutation(
            "organizations:remove",
            &owner,
            json!({"organizationId": org}),
        )
        .await
        .expect("organizations:remove succeeds");
    // Gone at once: for new calls, and for the live query.
    let denied = server
        .query("items:getAll", &owner, json!({"organizationId": org}))
        .await;
    assert_eq!(code(&denied), "FORBIDDEN");
    let mine = server
        .query("organizations:listMine", &owner, json!({}))
        .await
        .expect("listMine");
    assert_eq!(mine, json!([]));
    let pushed = ws.next_result(0).await.expect_err("todos:list now fails");
    assert_eq!(error_code(&pushed), Some("FORBIDDEN"));

    // The rows follow, batch after batch.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for table in ["items", "todos", "members", "invitations"] {
        while has_rows(&server, table, &org).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "rows of {table} are left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let left = server
        .executor()
        .database()
        .query(|tx| tx.query("items").collect())
        .await
        .expect("reads")
        .value;
    assert_eq!(left.len(), 10, "the neighbour's items are kept");
}

/// However many outcomes accumulated, one run of the purge removes every
/// one past retention (in batches that follow each other), and keeps the
/// fresh ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_purge_keeps_up_with_any_number_of_outcomes() {
    let server = support::start().await;
    let old = 25_000;
    let fresh = 10;
    server
        .executor()
        .database()
        .mutate(move |tx| {
            let now = tx.commit_ts().expect("a mutation");
            for i in 0..old + fresh {
                tx.store_mutation_outcome(&MutationOutcome {
                    session_id: format!("session-{i}"),
                    request_id: 0,
                    fingerprint: vec![0; 32],
                    // Outcome `i < old` is a day and more old.
                    ts: if i < old {
                        Timestamp::new(i as u64 + 1)
                    } else {
                        now
                    },
                    path: "notes:add".into(),
                    value: Value::Null,
                })?;
            }
            Ok(())
        })
        .await
        .expect("outcomes stored");
    // No count is asserted here: the server's own upkeep, which runs at its
    // start, may be purging the old outcomes at this very moment (the exact
    // batches are pinned by `upkeep`'s unit test on a bare store).

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock past 1970")
        .as_secs_f64()
        * 1e3;
    // (The server's own upkeep, run at its start, may have taken some
    // already: what counts is that one run leaves none of the old.)
    upkeep::purge(server.executor().database(), now_ms, upkeep::UPKEEP_BATCH)
        .await
        .expect("the purge runs");
    assert_eq!(
        server.stored_outcomes().await,
        fresh,
        "the fresh outcomes are kept"
    );
}

/// Sends a `Mutation` and returns its response: the value, or the error.
async fn mutation_over(
    ws: &mut Client,
    request_id: u32,
    path: &str,
    args: Json,
) -> Result<Json, FunctionError> {
    ws.send(&ClientMessage::Mutation {
        request_id: RequestId(request_id),
        udf_path: path.to_string(),
        args: vec![Value::from_json(&args, "args").expect("convex JSON")],
        component_path: None,
    })
    .await;
    loop {
        if let ServerMessage::MutationResponse {
            request_id: id,
            result,
            ..
        } = ws.recv().await
        {
            assert_eq!(id, RequestId(request_id));
            return result.map(|success| success.value.to_json());
        }
    }
}

/// The attack of issue 11 on the application itself: an owner invites
/// someone over the WebSocket; an anonymous client that sends `Connect`
/// with the owner's session id and `Mutation {requestId: 0, udfPath:
/// "nope:nope"}` must not receive the invitation id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_the_owners_session_id_does_not_get_the_invitation_id() {
    let server = support::start().await;
    let (owner, org) = owner_of(&server, "owner@example.com", "acme").await;
    let session = SessionId::random();
    let mut ws = Client::connect(&server.ws_url(), session.clone()).await;
    ws.authenticate(&owner.token).await;
    let invited = json!({"organizationId": org, "email": "guest@example.com", "role": "member"});
    let invitation = mutation_over(&mut ws, 0, "organizations:invite", invited.clone())
        .await
        .expect("organizations:invite succeeds");
    let invitation = invitation.as_str().expect("an id").to_string();

    let mut stranger = Client::connect(&server.ws_url(), session.clone()).await;
    let answer = mutation_over(&mut stranger, 0, "nope:nope", json!({})).await;
    let refused = answer.expect_err("an unknown function fails");
    assert!(!format!("{refused:?}").contains(&invitation), "{refused:?}");
    // The same call as the owner's, anonymous: refused, not answered with
    // the owner's outcome.
    let answer = mutation_over(&mut stranger, 0, "organizations:invite", invited.clone()).await;
    assert_eq!(
        error_code(&answer.expect_err("not signed in")),
        Some("UNAUTHENTICATED")
    );

    // The owner's resend on a new connection still gets it.
    let mut again = Client::connect(&server.ws_url(), session).await;
    again.authenticate(&owner.token).await;
    let resent = mutation_over(&mut again, 0, "organizations:invite", invited)
        .await
        .expect("the stored outcome");
    assert_eq!(resent, json!(invitation));
}
