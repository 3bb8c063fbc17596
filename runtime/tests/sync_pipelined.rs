//! Mutations a client sends without waiting for the answers (as the `convex`
//! npm client does when an app calls several at once): the server queues
//! each on the writer as it arrives, so they may commit together, yet each
//! runs after the one sent before it and sees its writes, a failure stays
//! its own, the answers come in the order sent, a resend of the whole run
//! after a reconnect is answered from the stored outcomes, and each runs as
//! who the client was when it sent it (signing in between sends).

mod support;

use livebase_runtime::registry::Registry;
use livebase_runtime::server::MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION;
use livebase_schema::protocol::{ClientMessage, RequestId, ServerMessage, SessionId};
use livebase_schema::{obj, v, Timestamp, Value};
use livebase_testkit::{error_code, Client, TestServer};

/// The test app plus `notes:append {organizationId}`: counts the
/// organization's notes, adds one whose `n` is that count, and returns it —
/// so each append's answer says how many ran before it.
fn app() -> Registry {
    let mut app = support::registry();
    app.mutation(
        "notes:append",
        [("organizationId", v::string())],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let before = ctx
                .db
                .query("notes")
                .with_index("by_organization", |q| q.eq("organizationId", org.as_str()))
                .collect()?
                .len() as f64;
            ctx.db.insert(
                "notes",
                obj! { "organizationId" => org.as_str(), "body" => "append", "n" => before, "createdBy" => "tester" },
            )?;
            Ok(Value::Float64(before))
        },
    );
    app.mutation("whoami:mutate", [], |ctx, _args| {
        Ok(match ctx.identity {
            livebase_runtime::identity::Identity::User { user_id, .. } => {
                Value::from(user_id.as_str())
            }
            _ => Value::Null,
        })
    });
    app
}

/// What the `k`-th mutation of the run is: most append, some fail on
/// purpose (an error, a panic, an unknown function, bad arguments).
fn nth(k: u32) -> (&'static str, Value) {
    match k % 10 {
        3 => ("notes:conflict", obj! {}),
        6 if k % 20 == 6 => ("notes:panic", obj! {}),
        6 => ("notes:nope", obj! {}),
        8 => ("notes:append", obj! { "organizationId" => 7.0 }),
        _ => ("notes:append", obj! { "organizationId" => "P" }),
    }
}

/// Sends mutations `0..count` back to back, then reads every answer: in
/// the order sent, as `(request id, outcome)`.
async fn run(client: &mut Client, count: u32) -> Vec<(u32, Result<(Value, Timestamp), String>)> {
    for k in 0..count {
        let (path, args) = nth(k);
        client
            .send(&ClientMessage::Mutation {
                request_id: RequestId(k),
                udf_path: path.into(),
                args: vec![args],
                component_path: None,
            })
            .await;
    }
    let mut answers = Vec::new();
    while answers.len() < count as usize {
        if let ServerMessage::MutationResponse {
            request_id, result, ..
        } = client.recv().await
        {
            let outcome = match result {
                Ok(success) => Ok((success.value, success.ts)),
                Err(e) => Err(error_code(&e).unwrap_or(&e.message).to_string()),
            };
            answers.push((request_id.0, outcome));
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_sent_without_waiting_run_in_order_and_each_fails_alone() {
    let server = TestServer::start(app()).await;
    let session = SessionId::random();
    let mut client = Client::connect(&server.ws_url(), session.clone()).await;
    // Several times the bound on mutations in flight: the rest wait in the
    // socket, none is refused.
    let count = 4 * MAX_MUTATIONS_IN_FLIGHT_PER_CONNECTION as u32 + 7;
    let answers = run(&mut client, count).await;

    let ids: Vec<u32> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (0..count).collect::<Vec<_>>(),
        "answered in the order sent"
    );
    let mut appended = 0.0;
    let mut last_ts = Timestamp::ZERO;
    for (k, outcome) in &answers {
        let (path, args) = nth(*k);
        match outcome {
            Ok((value, ts)) => {
                assert_eq!(path, "notes:append", "mutation {k} should have failed");
                assert_eq!(
                    *value,
                    Value::Float64(appended),
                    "mutation {k} saw every append sent before it, and none after"
                );
                assert!(*ts > last_ts, "mutation {k} committed after the one before");
                last_ts = *ts;
                appended += 1.0;
            }
            Err(code) => match path {
                "notes:conflict" => assert_eq!(code, "CONFLICT", "mutation {k}"),
                "notes:append" => {
                    assert!(args.get("organizationId").and_then(Value::as_str).is_none());
                    assert_eq!(code, "INVALID_ARGUMENT", "mutation {k}");
                }
                // A panic, an unknown function: failed, whatever the code.
                _ => {}
            },
        }
    }
    assert!(appended > 0.0);
    assert_eq!(
        support::count(&server, "P").await,
        appended,
        "every append committed once"
    );
    // Read your writes: a Transition at the last commit follows.
    client.transitions_until(last_ts).await;
    client.close().await;

    // A reconnect resends the whole run, again without waiting: every
    // answer is the stored one, and nothing runs twice.
    let mut again = Client::connect(&server.ws_url(), session).await;
    let resent = run(&mut again, count).await;
    for ((k, first), (_, second)) in answers.iter().zip(&resent) {
        match (first, second) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "mutation {k}: the stored outcome"),
            (Err(_), Err(_)) => {}
            _ => panic!("mutation {k}: {first:?} then {second:?}"),
        }
    }
    assert_eq!(support::count(&server, "P").await, appended);
    again.close().await;
}

/// A client that signs in between mutations it sends without waiting: each
/// runs as who the client was when it sent it, not when it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mutation_sent_without_waiting_runs_as_who_sent_it() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let server =
        TestServer::start_with_auth(dir, app(), |_| {}, std::sync::Arc::new(support::NamedUsers))
            .await;
    let mut client = Client::connect(&server.ws_url(), SessionId::random()).await;
    let mutation = |k: u32| ClientMessage::Mutation {
        request_id: RequestId(k),
        udf_path: "whoami:mutate".into(),
        args: vec![obj! {}],
        component_path: None,
    };
    let sign_in = |base_version: u32, user: &str| ClientMessage::Authenticate {
        base_version,
        token: livebase_schema::protocol::AuthenticationToken::User(format!("user:{user}")),
    };
    client.send(&mutation(0)).await;
    client.send(&mutation(1)).await;
    client.send(&sign_in(0, "ada")).await;
    client.send(&mutation(2)).await;
    client.send(&sign_in(1, "bob")).await;
    client.send(&mutation(3)).await;
    client.send(&mutation(4)).await;
    let mut who = Vec::new();
    while who.len() < 5 {
        if let ServerMessage::MutationResponse {
            request_id, result, ..
        } = client.recv().await
        {
            let value = result.expect("whoami:mutate succeeds").value;
            who.push((request_id.0, value));
        }
    }
    let null = Value::Null;
    let (ada, bob) = (Value::from("ada"), Value::from("bob"));
    assert_eq!(
        who,
        vec![
            (0, null.clone()),
            (1, null),
            (2, ada),
            (3, bob.clone()),
            (4, bob)
        ]
    );
}
