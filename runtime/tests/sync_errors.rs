//! The error model of `docs/reference/protocol.md` over the WebSocket: application errors carry
//! `errorData.code`; a panicking handler says only `Server error` with a
//! request id and fails only its own call; internal functions look exactly
//! like missing ones; invalid arguments name the field.

mod support;

use livebase_schema::protocol::FunctionError;
use livebase_schema::{obj, Value};
use livebase_testkit::ws::server_error_request_id;
use livebase_testkit::{error_code, TestServer};
use support::{note, org};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_error_arrives_with_its_code_and_data() {
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;

    let err = c
        .mutation("notes:conflict", obj! {})
        .await
        .expect_err("notes:conflict fails");
    assert_eq!(err.message, "that note is taken");
    let expected =
        obj! { "code" => "CONFLICT", "message" => "that note is taken", "field" => "body" };
    assert_eq!(err.data, Some(expected.clone()));

    let t = c.subscribe(&[(0, "notes:conflictQuery", obj! {})]).await;
    let failed = t.failed(0).expect("the query failed");
    assert_eq!(failed.message, "that note is taken");
    assert_eq!(failed.data, Some(expected));

    // An action answers with the same error model.
    let err = c
        .action(
            "notes:addViaAction",
            obj! { "organizationId" => "A", "body" => "b", "n" => "NaN" },
        )
        .await
        .expect_err("invalid arguments");
    assert_eq!(error_code(&err), Some("INVALID_ARGUMENT"));

    // A failed mutation does not end the connection.
    let ok = c
        .mutation("notes:add", note("A", "fine", 1.0))
        .await
        .expect("notes:add succeeds");
    c.transitions_until(ok.ts).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_says_server_error_with_a_request_id_and_fails_only_its_call() {
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;

    let err = c
        .mutation("notes:panic", obj! {})
        .await
        .expect_err("notes:panic fails");
    let first = server_error_request_id(&err.message)
        .unwrap_or_else(|| panic!("not `[Request ID: ..] Server error`: {:?}", err.message));
    assert_eq!(err.data, None, "no errorData for an internal failure");
    assert!(
        !err.message.contains("on purpose"),
        "the panic message stays in the log"
    );

    let err = c
        .mutation("notes:panic", obj! {})
        .await
        .expect_err("notes:panic fails again");
    let second = server_error_request_id(&err.message).expect("a request id");
    assert_ne!(first, second, "each failure has its own request id");

    let t = c
        .subscribe(&[
            (0, "notes:panicQuery", obj! {}),
            (1, "notes:count", org("A")),
        ])
        .await;
    let failed = t.failed(0).expect("the panicking query failed");
    assert!(
        server_error_request_id(&failed.message).is_some(),
        "{failed:?}"
    );
    assert_eq!(failed.data, None);
    assert_eq!(
        t.updated(1),
        Some(&Value::Float64(0.0)),
        "its neighbour is fine"
    );

    let err = c
        .action("notes:panicAction", obj! {})
        .await
        .expect_err("notes:panicAction fails");
    assert!(server_error_request_id(&err.message).is_some(), "{err:?}");
    assert_eq!(err.data, None);

    // The server and this connection keep working.
    let ok = c
        .mutation("notes:add", note("A", "after the panic", 1.0))
        .await
        .expect("notes:add succeeds");
    let seen = c.transitions_until(ok.ts).await;
    assert!(seen
        .iter()
        .any(|t| t.updated(1) == Some(&Value::Float64(1.0))));
    server.shutdown().await;
}

/// A function error with its path replaced by `<path>`, so that errors about
/// different paths can be compared.
fn without_path(error: &FunctionError, path: &str) -> (String, Option<String>) {
    let data = error
        .data
        .as_ref()
        .map(|d| d.to_json().to_string().replace(path, "<path>"));
    (error.message.replace(path, "<path>"), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_function_and_a_missing_one_give_the_same_error() {
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;

    // Mutations.
    let internal = c
        .mutation("notes:internalAdd", note("A", "sneaky", 1.0))
        .await
        .expect_err("internal mutations are not callable");
    let missing = c
        .mutation("notes:doesNotExist", note("A", "sneaky", 1.0))
        .await
        .expect_err("no such mutation");
    assert_eq!(error_code(&internal), Some("INVALID_ARGUMENT"));
    assert_eq!(
        without_path(&internal, "notes:internalAdd"),
        without_path(&missing, "notes:doesNotExist")
    );
    assert_eq!(
        support::count(&server, "A").await,
        0.0,
        "the internal mutation did not run"
    );

    // Queries.
    let t = c
        .subscribe(&[(0, "notes:secret", obj! {}), (1, "notes:nothing", obj! {})])
        .await;
    let internal = t.failed(0).expect("internal queries are not callable");
    let missing = t.failed(1).expect("no such query");
    assert!(!format!("{internal:?}").contains("the secret"));
    assert_eq!(
        without_path(internal, "notes:secret"),
        without_path(missing, "notes:nothing")
    );

    // Actions: `notes:internalAdd` is a mutation, not an action, so it is
    // also "missing" as an action, like a path that names nothing.
    let internal = c
        .action("notes:internalAdd", note("A", "x", 1.0))
        .await
        .expect_err("not an action");
    let missing = c
        .action("nowhere:atAll", note("A", "x", 1.0))
        .await
        .expect_err("no such action");
    assert_eq!(
        without_path(&internal, "notes:internalAdd"),
        without_path(&missing, "nowhere:atAll")
    );

    // The public action itself may run the internal mutation.
    let id = c
        .action("notes:addViaAction", note("A", "via action", 1.0))
        .await
        .expect("the action succeeds");
    assert!(support::is_note_id(&id), "{id:?}");
    assert_eq!(support::count(&server, "A").await, 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_invalid_argument_errors_that_name_the_field() {
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;
    let cases = [
        (
            "a field of the wrong type",
            obj! { "organizationId" => "A", "body" => "b", "n" => "one" },
            "args.n",
        ),
        (
            "a missing field",
            obj! { "organizationId" => "A", "n" => 1.0 },
            "body",
        ),
        (
            "an unknown field",
            obj! { "organizationId" => "A", "body" => "b", "n" => 1.0, "extra" => true },
            "extra",
        ),
        ("not an object", Value::from("A"), "args"),
    ];
    for (what, fields, names) in cases {
        let err = c.mutation("notes:add", fields).await.expect_err(what);
        assert_eq!(
            error_code(&err),
            Some("INVALID_ARGUMENT"),
            "{what}: {err:?}"
        );
        assert!(
            err.message.contains(names),
            "{what}: {:?} should name {names}",
            err.message
        );
    }
    let err = c
        .mutation("notes:set", obj! { "id" => "users_123", "body" => "b" })
        .await
        .expect_err("an id of another table");
    assert_eq!(error_code(&err), Some("INVALID_ARGUMENT"), "{err:?}");
    assert!(err.message.contains("args.id"), "{:?}", err.message);

    let t = c
        .subscribe(&[(
            0,
            "notes:range",
            obj! { "organizationId" => "A", "lo" => 0.0, "hi" => "z" },
        )])
        .await;
    let failed = t.failed(0).expect("invalid query arguments fail the query");
    assert_eq!(error_code(failed), Some("INVALID_ARGUMENT"));
    assert!(failed.message.contains("args.hi"), "{:?}", failed.message);
    assert_eq!(
        support::count(&server, "A").await,
        0.0,
        "no invalid call wrote anything"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_an_auth_error_and_the_connection_goes_on() {
    use livebase_schema::protocol::{AuthenticationToken, ClientMessage, ServerMessage};
    let server = TestServer::start(support::registry()).await;
    let mut c = server.client().await;
    c.subscribe(&[(0, "notes:count", org("A"))]).await;
    for token in [
        AuthenticationToken::User("not-a-token".into()),
        AuthenticationToken::Admin("not-a-key".into()),
    ] {
        let base_version = c.version.identity;
        c.send(&ClientMessage::Authenticate {
            base_version,
            token,
        })
        .await;
        match c.recv().await {
            ServerMessage::AuthError {
                error,
                base_version: echoed,
                auth_update_attempted,
            } => {
                assert!(!error.is_empty());
                assert_eq!(echoed, base_version);
                assert!(auth_update_attempted);
            }
            other => panic!("expected an AuthError, got {other:?}"),
        }
    }
    // `Event` is accepted and ignored.
    c.send(&ClientMessage::Event {
        event_type: "ClientConnect".into(),
        event: serde_json::json!({"marks": []}),
    })
    .await;
    c.expect_silence(livebase_testkit::SILENCE).await;
    let ok = c
        .mutation("notes:add", note("A", "still signed out", 1.0))
        .await
        .expect("notes:add succeeds");
    let seen = c.transitions_until(ok.ts).await;
    assert!(seen
        .iter()
        .any(|t| t.updated(0) == Some(&Value::Float64(1.0))));
    assert_eq!(c.version.identity, 0, "a refused token changes no identity");
    server.shutdown().await;
}
