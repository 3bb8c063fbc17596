//! The SDK against a real server: subscriptions as streams, read-your-writes,
//! errors with their data, auth, and resuming after the connection or the
//! server goes away.

mod common;

use std::time::Duration;

use common::{fast, next, next_until, start, start_at, Proxy, PATIENCE};
use futures::FutureExt;
use livebase_schema::protocol::{ClientMessage, QuerySetModification};
use livebase_sdk::{
    action, error_code, mutation, obj, query, ActionRef, Client, ClientError, DecodeError, Fields,
    FromValue, IntoArgs, MutationRef, QueryRef, Value,
};

// ---- the application's functions, typed as an app would write them ----

struct ListArgs {
    organization_id: &'static str,
}

impl IntoArgs for ListArgs {
    fn into_args(self) -> Value {
        obj! { "organizationId" => self.organization_id }
    }
}

struct AddArgs {
    organization_id: &'static str,
    body: &'static str,
}

impl IntoArgs for AddArgs {
    fn into_args(self) -> Value {
        obj! { "organizationId" => self.organization_id, "body" => self.body }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Note {
    id: String,
    body: String,
    created_by: String,
}

impl FromValue for Note {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        let mut fields = Fields::new(value)?;
        Ok(Note {
            id: fields.take("_id")?,
            body: fields.take("body")?,
            created_by: fields.take("createdBy")?,
        })
    }
}

mod notes {
    use super::*;

    pub const LIST: QueryRef<ListArgs, Vec<Note>> = query("notes:list");
    pub const WHOAMI: QueryRef<(), Option<String>> = query("notes:whoami");
    pub const ADD: MutationRef<AddArgs, String> = mutation("notes:add");
    pub const REJECT: MutationRef<Value, ()> = mutation("notes:reject");
    pub const CRASH: MutationRef<(), ()> = mutation("notes:crash");
    pub const SHOUT: ActionRef<Value, String> = action("notes:shout");
}

fn org1() -> ListArgs {
    ListArgs {
        organization_id: "org1",
    }
}

fn add(body: &'static str) -> AddArgs {
    AddArgs {
        organization_id: "org1",
        body,
    }
}

fn bodies(notes: &[Note]) -> Vec<&str> {
    notes.iter().map(|n| n.body.as_str()).collect()
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("done in time")
}

// ---- scenarios ----

#[tokio::test]
async fn a_subscription_streams_what_another_client_writes() {
    let server = start().await;
    let reader = Client::connect(&server.url()).await.unwrap();
    let writer = Client::connect(&server.url()).await.unwrap();

    let mut list = reader.subscribe(notes::LIST, org1());
    assert_eq!(next(&mut list).await, Ok(vec![]));

    let id = within(writer.mutation(notes::ADD, add("hello")))
        .await
        .unwrap();
    let seen = next(&mut list).await.unwrap();
    assert_eq!(
        seen,
        [Note {
            id,
            body: "hello".into(),
            created_by: "anonymous".into()
        }]
    );
    // A write to another organization is not this query's business.
    within(writer.mutation(
        notes::ADD,
        AddArgs {
            organization_id: "org2",
            body: "elsewhere",
        },
    ))
    .await
    .unwrap();
    within(writer.mutation(notes::ADD, add("second")))
        .await
        .unwrap();
    let seen = next(&mut list).await.unwrap();
    assert_eq!(bodies(&seen), ["hello", "second"]);
}

#[tokio::test]
async fn a_mutation_resolves_only_after_every_subscription_reflects_it() {
    let server = start().await;
    let client = Client::connect(&server.url()).await.unwrap();
    let mut list = client.subscribe(notes::LIST, org1());
    let mut same = client.subscribe(notes::LIST, org1());
    assert_eq!(next(&mut list).await, Ok(vec![]));
    assert_eq!(next(&mut same).await, Ok(vec![]));

    for i in 0..10 {
        let id = within(client.mutation(notes::ADD, add("n"))).await.unwrap();
        // No waiting: the results are already there when the mutation resolves.
        for subscription in [&list, &same] {
            let current = subscription.current().unwrap().unwrap();
            assert_eq!(current.len(), i + 1);
            assert_eq!(current.last().unwrap().id, id);
        }
        // And the stream has the new result ready.
        let ready = list.next_ready().expect("a result is ready");
        assert_eq!(ready.unwrap().len(), i + 1);
    }
}

/// `Subscription::next` that must not wait.
trait NextReady: futures::Stream + Unpin {
    fn next_ready(&mut self) -> Option<Self::Item> {
        futures::StreamExt::next(self).now_or_never().flatten()
    }
}

impl<S: futures::Stream + Unpin> NextReady for S {}

#[tokio::test]
async fn function_errors_reach_the_client_with_their_data() {
    let server = start().await;
    let client = Client::connect(&server.url()).await.unwrap();

    let err = within(client.mutation(notes::REJECT, obj! { "reason" => "too long" }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOTE_REJECTED"));
    assert_eq!(
        err.data(),
        Some(&obj! { "code" => "NOTE_REJECTED", "message" => "too long", "retryable" => false })
    );
    assert_eq!(err.to_string(), "too long");

    // Arguments the validator refuses.
    let err = within(client.mutation(notes::REJECT, obj! { "reason" => 1.0 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("INVALID_ARGUMENT"), "{err}");

    // A function that does not exist.
    let missing = mutation::<Value, Value>("notes:missing");
    let err = within(client.mutation(missing, obj! {})).await.unwrap_err();
    assert!(
        err.to_string().contains("Could not find public function"),
        "{err}"
    );

    // A bug on the server: a message with a request id, and no data.
    let err = within(client.mutation(notes::CRASH, ())).await.unwrap_err();
    assert!(err.to_string().ends_with("Server error"), "{err}");
    assert_eq!(err.data(), None);

    // A query's failure arrives in its stream.
    let mut forbidden = client.subscribe(
        notes::LIST,
        ListArgs {
            organization_id: "forbidden",
        },
    );
    let err = next(&mut forbidden).await.unwrap_err();
    assert_eq!(error_code(&err), Some("FORBIDDEN"));
    assert_eq!(err.message, "not a member of this organization");

    // A result of the wrong type is reported, not mistaken for data.
    let wrong = query::<ListArgs, Vec<String>>("notes:list");
    within(client.mutation(notes::ADD, add("x"))).await.unwrap();
    let err = within(client.query(wrong, org1())).await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }));
    assert_eq!(
        err.to_string(),
        "the result of `notes:list` is not what its reference declares: \
         result[0]: expected a string, found object"
    );
}

#[tokio::test]
async fn actions_answer_with_their_result() {
    let server = start().await;
    let client = Client::connect(&server.url()).await.unwrap();
    let shout = within(client.action(notes::SHOUT, obj! { "text" => "hi" })).await;
    assert_eq!(shout, Ok("HI".to_string()));
}

#[tokio::test]
async fn set_auth_reruns_queries_as_the_user_and_a_refused_token_signs_out() {
    let server = start().await;
    let client = Client::connect(&server.url()).await.unwrap();
    let mut me = client.subscribe(notes::WHOAMI, ());
    assert_eq!(next(&mut me).await, Ok(None));

    within(client.set_auth(Some("user:alice".into())))
        .await
        .unwrap();
    assert_eq!(
        next_until(&mut me, |r| r.is_ok() && *r != Ok(None)).await,
        Ok(Some("alice".into()))
    );
    let id = within(client.mutation(notes::ADD, add("mine")))
        .await
        .unwrap();
    let list = within(client.query(notes::LIST, org1())).await.unwrap();
    assert_eq!(list[0].id, id);
    assert_eq!(list[0].created_by, "alice");

    let refused = within(client.set_auth(Some("forged".into()))).await;
    assert!(
        matches!(&refused, Err(ClientError::Unauthenticated(m)) if m == "unknown token"),
        "{refused:?}"
    );
    assert_eq!(next_until(&mut me, |r| *r == Ok(None)).await, Ok(None));
}

#[tokio::test]
async fn a_subscription_resumes_after_the_server_restarts_on_the_same_port_and_data() {
    let server = start().await;
    let addr = server.addr();
    let client = Client::connect_with(&server.url(), fast()).await.unwrap();
    within(client.set_auth(Some("user:alice".into())))
        .await
        .unwrap();
    let mut list = client.subscribe(notes::LIST, org1());
    assert_eq!(next(&mut list).await, Ok(vec![]));
    within(client.mutation(notes::ADD, add("before")))
        .await
        .unwrap();

    let dir = server.stop().await;
    // Called while the server is down: queued, sent once it is back.
    let pending = tokio::spawn(client.mutation(notes::ADD, add("while down")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pending.is_finished());

    let server = start_at(addr, dir).await;
    let id = within(pending).await.unwrap().unwrap();
    let notes = list.current().unwrap().unwrap();
    assert_eq!(bodies(&notes), ["before", "while down"]);
    // Signed in again before the mutation ran.
    assert_eq!(notes[1].id, id);
    assert_eq!(notes[1].created_by, "alice");

    // And the subscription is live on the new server.
    let other = Client::connect(&server.url()).await.unwrap();
    within(other.mutation(notes::ADD, add("after")))
        .await
        .unwrap();
    let notes = next_until(&mut list, |r| r.as_ref().is_ok_and(|n| n.len() == 3)).await;
    assert_eq!(bodies(&notes.unwrap()), ["before", "while down", "after"]);
}

#[tokio::test]
async fn a_mutation_whose_response_was_lost_is_resent_and_applied_once() {
    let server = start().await;
    let proxy = Proxy::start(&server.url()).await;
    let client = Client::connect_with(&proxy.url, fast()).await.unwrap();
    let mut list = client.subscribe(notes::LIST, org1());
    assert_eq!(next(&mut list).await, Ok(vec![]));

    // The server commits the mutation; its answer never reaches the client.
    proxy.cut_at("MutationResponse");
    let id = within(client.mutation(notes::ADD, add("once")))
        .await
        .unwrap();

    let notes = list.current().unwrap().unwrap();
    assert_eq!(bodies(&notes), ["once"]);
    assert_eq!(notes[0].id, id);
    let other = Client::connect(&server.url()).await.unwrap();
    let seen = within(other.query(notes::LIST, org1())).await.unwrap();
    assert_eq!(seen, notes, "stored once on the server");

    // What the client sent: the same session resumed, the same request id.
    assert_eq!(proxy.connections(), 2);
    let frames = proxy.frames();
    let sent_on = |n: usize| -> Vec<&ClientMessage> {
        frames
            .iter()
            .filter(|(c, _)| *c == n)
            .map(|(_, m)| m)
            .collect()
    };
    let (first, second) = (sent_on(0), sent_on(1));
    let ClientMessage::Connect { session_id, .. } = first[0] else {
        panic!("Connect first, got {:?}", first[0]);
    };
    assert_eq!(session_id, client.session_id());
    let ClientMessage::Connect {
        session_id: resumed,
        connection_count,
        max_observed_timestamp,
        ..
    } = second[0]
    else {
        panic!("Connect first, got {:?}", second[0]);
    };
    assert_eq!(resumed, session_id);
    assert_eq!(*connection_count, 1);
    assert!(max_observed_timestamp.is_some());
    let mutation_ids = |msgs: &[&ClientMessage]| -> Vec<u32> {
        msgs.iter()
            .filter_map(|m| match m {
                ClientMessage::Mutation { request_id, .. } => Some(request_id.0),
                _ => None,
            })
            .collect()
    };
    assert_eq!(mutation_ids(&first), [0]);
    assert_eq!(mutation_ids(&second), [0]);
    // The query set was re-added from version zero.
    assert!(matches!(
        second[1],
        ClientMessage::ModifyQuerySet {
            base_version: 0,
            new_version: 1,
            modifications,
        } if modifications.len() == 1
    ));
}

#[tokio::test]
async fn an_action_cut_off_by_a_dropped_connection_fails_and_is_not_resent() {
    let server = start().await;
    let proxy = Proxy::start(&server.url()).await;
    let client = Client::connect_with(&proxy.url, fast()).await.unwrap();
    proxy.cut_at("ActionResponse");
    let lost = within(client.action(notes::SHOUT, obj! { "text" => "hi" })).await;
    assert_eq!(lost, Err(ClientError::ConnectionLost));

    // The client carries on over a new connection.
    let shout = within(client.action(notes::SHOUT, obj! { "text" => "again" })).await;
    assert_eq!(shout, Ok("AGAIN".to_string()));
    let actions = proxy
        .frames()
        .into_iter()
        .filter(|(_, m)| matches!(m, ClientMessage::Action { .. }))
        .count();
    assert_eq!(actions, 2, "one each, none resent");
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection_once_calls_are_answered() {
    let server = start().await;
    let proxy = Proxy::start(&server.url()).await;
    let client = Client::connect(&proxy.url).await.unwrap();
    let mut list = client.subscribe(notes::LIST, org1());
    next(&mut list).await.unwrap();
    drop(list);
    // A call still waiting keeps the connection until it is answered.
    let pending = client.mutation(notes::ADD, add("last words"));
    drop(client);
    assert!(within(pending).await.is_ok());
    within(async {
        while proxy.closed() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // The dropped subscription was removed from the query set on the way.
    let removed = proxy.frames().into_iter().any(|(_, m)| {
        matches!(m, ClientMessage::ModifyQuerySet { modifications, .. }
            if matches!(modifications[..], [QuerySetModification::Remove { .. }]))
    });
    assert!(removed);
}

#[tokio::test]
async fn connecting_reports_bad_urls_and_unreachable_servers() {
    assert!(matches!(
        Client::connect("localhost:3210").await,
        Err(ClientError::InvalidUrl(_))
    ));
    // A port nobody listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = Client::connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}
