//! The state machine fed message sequences as data: calls and server messages
//! in, the frames it would send and the notifications it reports out.

use livebase_schema::obj;
use livebase_schema::protocol::MutationSuccess;

use super::*;

const SESSION: &str = "6564c72d-2e49-46b7-bbf8-a12881bf2ecb";

fn state() -> ClientState {
    ClientState::with_session(SessionId::parse(SESSION).unwrap())
}

/// A state on an open first connection, its opening frames already taken.
fn connected() -> ClientState {
    let mut s = state();
    s.on_connect();
    drain(&mut s);
    s
}

fn drain(s: &mut ClientState) -> Vec<ClientMessage> {
    std::iter::from_fn(|| s.next_outgoing()).collect()
}

fn ts(n: u64) -> Timestamp {
    Timestamp::new(n)
}

fn version(query_set: u32, identity: u32, t: u64) -> StateVersion {
    StateVersion {
        query_set,
        identity,
        ts: ts(t),
    }
}

fn connect(count: u32, reason: &str, max: Option<u64>) -> ClientMessage {
    ClientMessage::Connect {
        session_id: SessionId::parse(SESSION).unwrap(),
        connection_count: count,
        last_close_reason: Some(reason.to_string()),
        max_observed_timestamp: max.map(ts),
        client_ts: None,
    }
}

fn modify(base: u32, new: u32, modifications: Vec<QuerySetModification>) -> ClientMessage {
    ClientMessage::ModifyQuerySet {
        base_version: base,
        new_version: new,
        modifications,
    }
}

fn add(id: u32, path: &str, args: Value) -> QuerySetModification {
    QuerySetModification::Add {
        query_id: QueryId(id),
        udf_path: path.to_string(),
        args: vec![args],
        journal: None,
        component_path: None,
    }
}

fn authenticate(base: u32, token: Option<&str>) -> ClientMessage {
    ClientMessage::Authenticate {
        base_version: base,
        token: token_of(&token.map(str::to_string)),
    }
}

fn mutation(id: u32, path: &str, args: Value) -> ClientMessage {
    ClientMessage::Mutation {
        request_id: RequestId(id),
        udf_path: path.to_string(),
        args: vec![args],
        component_path: None,
    }
}

fn action(id: u32, path: &str, args: Value) -> ClientMessage {
    ClientMessage::Action {
        request_id: RequestId(id),
        udf_path: path.to_string(),
        args: vec![args],
        component_path: None,
    }
}

fn transition(
    start: StateVersion,
    end: StateVersion,
    modifications: Vec<StateModification>,
) -> ServerMessage {
    ServerMessage::Transition {
        start_version: start,
        end_version: end,
        modifications,
        client_clock_skew: None,
        server_ts: None,
    }
}

fn updated(id: u32, value: Value) -> StateModification {
    StateModification::QueryUpdated {
        query_id: QueryId(id),
        value: value.into(),
        log_lines: Vec::new(),
        journal: None,
    }
}

fn failed(id: u32, error: FunctionError) -> StateModification {
    StateModification::QueryFailed {
        query_id: QueryId(id),
        error,
        log_lines: Vec::new(),
        journal: None,
    }
}

fn committed(id: u32, value: Value, t: u64) -> ServerMessage {
    ServerMessage::MutationResponse {
        request_id: RequestId(id),
        result: Ok(MutationSuccess { value, ts: ts(t) }),
        log_lines: Vec::new(),
    }
}

fn refused(id: u32, error: FunctionError) -> ServerMessage {
    ServerMessage::MutationResponse {
        request_id: RequestId(id),
        result: Err(error),
        log_lines: Vec::new(),
    }
}

fn app_error(code: &str, message: &str) -> FunctionError {
    FunctionError {
        message: message.to_string(),
        data: Some(obj! { "code" => code, "message" => message }),
    }
}

fn queries_updated(ids: &[u32], t: u64) -> Notification {
    Notification::QueriesUpdated {
        queries: ids.iter().map(|i| QueryId(*i)).collect(),
        ts: ts(t),
    }
}

fn mutation_done(id: u32, result: Result<Value, FunctionError>) -> Notification {
    Notification::MutationCompleted {
        request_id: RequestId(id),
        result,
    }
}

fn org(o: &str) -> Value {
    obj! { "organizationId" => o }
}

#[test]
fn first_connect_sends_connect_then_the_query_set_from_version_zero() {
    let mut s = state();
    let q = s.subscribe("notes:list", org("o1"));
    assert_eq!(q, QueryId(0));
    assert_eq!(drain(&mut s), [], "nothing is sent while disconnected");

    s.on_connect();
    assert_eq!(
        drain(&mut s),
        [
            connect(0, "InitialConnect", None),
            modify(0, 1, vec![add(0, "notes:list", org("o1"))]),
        ]
    );
}

#[test]
fn subscribing_while_connected_moves_the_query_set_version_by_one_each_time() {
    let mut s = connected();
    s.subscribe("notes:list", org("o1"));
    assert_eq!(
        drain(&mut s),
        [modify(1, 2, vec![add(0, "notes:list", org("o1"))])]
    );
    s.unsubscribe(QueryId(0));
    assert_eq!(
        drain(&mut s),
        [modify(
            2,
            3,
            vec![QuerySetModification::Remove {
                query_id: QueryId(0)
            }]
        )]
    );
    assert!(!s.unsubscribe(QueryId(0)), "already gone");
    assert_eq!(drain(&mut s), []);
}

#[test]
fn consecutive_query_set_changes_go_out_as_one_message() {
    let mut s = connected();
    s.subscribe("notes:list", org("o1"));
    s.subscribe("notes:list", org("o2"));
    s.unsubscribe(QueryId(0));
    let m = s.mutation("notes:add", obj! {});
    s.subscribe("notes:list", org("o3"));
    assert_eq!(
        drain(&mut s),
        [
            modify(
                1,
                4,
                vec![
                    add(0, "notes:list", org("o1")),
                    add(1, "notes:list", org("o2")),
                    QuerySetModification::Remove {
                        query_id: QueryId(0)
                    },
                ]
            ),
            mutation(m.0, "notes:add", obj! {}),
            modify(4, 5, vec![add(2, "notes:list", org("o3"))]),
        ]
    );
}

#[test]
fn a_transition_updates_all_its_queries_in_one_notification() {
    let mut s = connected();
    s.subscribe("notes:list", org("o1"));
    s.subscribe("notes:list", org("o2"));
    drain(&mut s);
    let notes = s
        .receive(transition(
            version(0, 0, 0),
            version(3, 0, 7),
            vec![
                updated(0, Value::Array(vec![])),
                failed(1, app_error("FORBIDDEN", "not a member")),
            ],
        ))
        .unwrap();
    assert_eq!(notes, [queries_updated(&[0, 1], 7)]);
    assert_eq!(s.result(QueryId(0)), Some(&Ok(Value::Array(vec![]))));
    assert_eq!(
        s.result(QueryId(1)),
        Some(&Err(app_error("FORBIDDEN", "not a member")))
    );
    assert_eq!(s.version(), Some(version(3, 0, 7)));
    assert_eq!(s.max_observed_timestamp(), Some(ts(7)));
}

#[test]
fn a_transition_that_does_not_start_where_the_last_ended_is_refused_whole() {
    let mut s = connected();
    s.subscribe("notes:list", org("o1"));
    s.receive(transition(
        version(0, 0, 0),
        version(2, 0, 5),
        vec![updated(0, "first".into())],
    ))
    .unwrap();
    let err = s
        .receive(transition(
            version(2, 0, 4),
            version(2, 0, 9),
            vec![updated(0, "second".into())],
        ))
        .unwrap_err();
    assert_eq!(
        err,
        SyncError::VersionMismatch {
            expected: version(2, 0, 5),
            found: version(2, 0, 4),
        }
    );
    assert_eq!(s.result(QueryId(0)), Some(&Ok("first".into())));
    assert_eq!(s.version(), Some(version(2, 0, 5)));
}

#[test]
fn results_for_a_query_removed_meanwhile_are_dropped() {
    let mut s = connected();
    let q = s.subscribe("notes:list", org("o1"));
    s.unsubscribe(q);
    let notes = s
        .receive(transition(
            version(0, 0, 0),
            version(2, 0, 3),
            vec![
                updated(0, "late".into()),
                StateModification::QueryRemoved { query_id: q },
            ],
        ))
        .unwrap();
    assert_eq!(notes, []);
    assert_eq!(s.result(q), None);
}

#[test]
fn a_mutation_completes_only_once_a_transition_reaches_its_commit_ts() {
    let mut s = connected();
    s.subscribe("notes:list", org("o1"));
    s.receive(transition(
        version(0, 0, 0),
        version(2, 0, 5),
        vec![updated(0, Value::Array(vec![]))],
    ))
    .unwrap();
    let m = s.mutation("notes:add", obj! { "body" => "hi" });
    drain(&mut s);

    assert_eq!(s.receive(committed(m.0, "id1".into(), 10)).unwrap(), []);
    // A Transition before the commit does not complete it…
    assert_eq!(
        s.receive(transition(version(2, 0, 5), version(2, 0, 9), vec![]))
            .unwrap(),
        []
    );
    // …the one that reaches it does, after its query updates.
    let notes = s
        .receive(transition(
            version(2, 0, 9),
            version(2, 0, 10),
            vec![updated(0, Value::Array(vec!["hi".into()]))],
        ))
        .unwrap();
    assert_eq!(
        notes,
        [
            queries_updated(&[0], 10),
            mutation_done(m.0, Ok("id1".into()))
        ]
    );
    assert_eq!(s.pending_requests(), 0);
}

#[test]
fn a_mutation_whose_commit_is_already_visible_completes_on_its_response() {
    let mut s = connected();
    let m = s.mutation("notes:add", obj! {});
    s.receive(transition(version(0, 0, 0), version(1, 0, 20), vec![]))
        .unwrap();
    assert_eq!(
        s.receive(committed(m.0, Value::Null, 15)).unwrap(),
        [mutation_done(m.0, Ok(Value::Null))]
    );
}

#[test]
fn a_failed_mutation_completes_at_once_with_its_error_data() {
    let mut s = connected();
    let m = s.mutation("notes:fail", obj! {});
    let error = app_error("NOTE_REJECTED", "no");
    assert_eq!(
        s.receive(refused(m.0, error.clone())).unwrap(),
        [mutation_done(m.0, Err(error))]
    );
}

#[test]
fn a_duplicate_or_unknown_response_is_ignored() {
    let mut s = connected();
    let m = s.mutation("notes:add", obj! {});
    s.receive(transition(version(0, 0, 0), version(1, 0, 20), vec![]))
        .unwrap();
    assert_eq!(s.receive(committed(m.0, Value::Null, 15)).unwrap().len(), 1);
    assert_eq!(s.receive(committed(m.0, Value::Null, 15)).unwrap(), []);
    assert_eq!(s.receive(committed(99, Value::Null, 15)).unwrap(), []);
    let a = s.action("notes:echo", obj! {});
    // A mutation's answer to an action's id is not the action's answer.
    assert_eq!(s.receive(committed(a.0, Value::Null, 15)).unwrap(), []);
    assert_eq!(s.pending_requests(), 1);
}

#[test]
fn actions_complete_on_their_response() {
    let mut s = connected();
    let a = s.action("notes:echo", obj! { "message" => "x" });
    assert_eq!(
        drain(&mut s),
        [action(a.0, "notes:echo", obj! { "message" => "x" })]
    );
    let notes = s
        .receive(ServerMessage::ActionResponse {
            request_id: a,
            result: Ok("x".into()),
            log_lines: Vec::new(),
        })
        .unwrap();
    assert_eq!(
        notes,
        [Notification::ActionCompleted {
            request_id: a,
            result: Ok("x".into())
        }]
    );
}

#[test]
fn resuming_replays_session_queries_auth_and_unanswered_mutations() {
    let mut s = state();
    s.set_auth(Some("token-1".into()));
    s.on_connect();
    assert_eq!(
        drain(&mut s),
        [
            connect(0, "InitialConnect", None),
            authenticate(0, Some("token-1")),
            modify(0, 1, vec![]),
        ]
    );
    s.subscribe("notes:list", org("o1"));
    s.receive(transition(
        version(0, 0, 0),
        version(2, 1, 40),
        vec![updated(0, Value::Array(vec![]))],
    ))
    .unwrap();
    let answered = s.mutation("notes:add", obj! { "body" => "a" });
    let unanswered = s.mutation("notes:add", obj! { "body" => "b" });
    let lost = s.action("notes:echo", obj! {});
    drain(&mut s);
    s.receive(committed(answered.0, "id-a".into(), 50)).unwrap();

    let notes = s.on_disconnect("server went away");
    assert_eq!(notes, [Notification::ActionLost { request_id: lost }]);
    assert!(!s.is_connected());
    // Made while disconnected: sent after the resume.
    let later = s.action("notes:echo", obj! { "n" => 1.0 });
    assert_eq!(drain(&mut s), []);

    s.on_connect();
    assert_eq!(
        drain(&mut s),
        [
            connect(1, "server went away", Some(40)),
            authenticate(0, Some("token-1")),
            modify(0, 1, vec![add(0, "notes:list", org("o1"))]),
            mutation(unanswered.0, "notes:add", obj! { "body" => "b" }),
            action(later.0, "notes:echo", obj! { "n" => 1.0 }),
        ]
    );
    // The results shown so far stay until the new connection replaces them.
    assert_eq!(s.result(QueryId(0)), Some(&Ok(Value::Array(vec![]))));

    // The new connection starts from version zero again; its first Transition
    // completes the mutation answered before the drop.
    let notes = s
        .receive(transition(
            version(0, 0, 0),
            version(1, 1, 60),
            vec![updated(0, Value::Array(vec!["a".into()]))],
        ))
        .unwrap();
    assert_eq!(
        notes,
        [
            queries_updated(&[0], 60),
            Notification::AuthConfirmed {
                generation: AuthGeneration(1)
            },
            mutation_done(answered.0, Ok("id-a".into())),
        ]
    );
    // The resent one: the server answers with the stored outcome.
    assert_eq!(
        s.receive(committed(unanswered.0, "id-b".into(), 55))
            .unwrap(),
        [mutation_done(unanswered.0, Ok("id-b".into()))]
    );
}

#[test]
fn set_auth_is_confirmed_by_the_transition_that_reaches_its_identity_version() {
    let mut s = connected();
    let g = s.set_auth(Some("t".into()));
    assert_eq!(drain(&mut s), [authenticate(0, Some("t"))]);
    assert_eq!(
        s.receive(transition(version(0, 0, 0), version(1, 0, 3), vec![]))
            .unwrap(),
        []
    );
    assert_eq!(
        s.receive(transition(version(1, 0, 3), version(1, 1, 3), vec![]))
            .unwrap(),
        [Notification::AuthConfirmed { generation: g }]
    );
    let g2 = s.set_auth(None);
    assert_eq!(drain(&mut s), [authenticate(1, None)]);
    assert!(g2 > g);
}

#[test]
fn a_refused_token_is_dropped_and_the_server_told_to_run_anonymously() {
    let mut s = connected();
    let g = s.set_auth(Some("bad".into()));
    drain(&mut s);
    let notes = s
        .receive(ServerMessage::AuthError {
            error: "token expired".into(),
            base_version: 0,
            auth_update_attempted: true,
        })
        .unwrap();
    assert_eq!(
        notes,
        [Notification::AuthFailed {
            generation: g,
            error: "token expired".into()
        }]
    );
    assert_eq!(drain(&mut s), [authenticate(0, None)]);
    // The next Authenticate builds on the version the server is at.
    s.set_auth(Some("good".into()));
    assert_eq!(drain(&mut s), [authenticate(1, Some("good"))]);

    // And a resume no longer carries the refused token.
    let mut s = connected();
    s.set_auth(Some("bad".into()));
    s.receive(ServerMessage::AuthError {
        error: "no".into(),
        base_version: 0,
        auth_update_attempted: true,
    })
    .unwrap();
    s.on_disconnect("bye");
    s.on_connect();
    assert_eq!(
        drain(&mut s),
        [connect(1, "bye", None), modify(0, 1, vec![])]
    );
}

#[test]
fn an_auth_error_for_a_superseded_token_is_ignored() {
    let mut s = connected();
    s.set_auth(Some("first".into()));
    let g = s.set_auth(Some("second".into()));
    drain(&mut s);
    let notes = s
        .receive(ServerMessage::AuthError {
            error: "bad first".into(),
            base_version: 0,
            auth_update_attempted: true,
        })
        .unwrap();
    assert_eq!(notes, []);
    assert_eq!(drain(&mut s), []);
    s.on_disconnect("fatal");
    s.on_connect();
    assert_eq!(drain(&mut s)[1], authenticate(0, Some("second")));
    let notes = s
        .receive(transition(version(0, 0, 0), version(1, 1, 1), vec![]))
        .unwrap();
    assert_eq!(notes, [Notification::AuthConfirmed { generation: g }]);
}

#[test]
fn signing_out_while_disconnected_is_said_on_connect() {
    let mut s = state();
    s.set_auth(None);
    s.on_connect();
    assert_eq!(
        drain(&mut s),
        [
            connect(0, "InitialConnect", None),
            authenticate(0, None),
            modify(0, 1, vec![]),
        ]
    );
}

#[test]
fn fatal_errors_and_messages_while_disconnected_are_errors() {
    let mut s = connected();
    assert_eq!(s.receive(ServerMessage::Ping).unwrap(), []);
    assert_eq!(
        s.receive(ServerMessage::FatalError {
            error: "bad frame".into()
        }),
        Err(SyncError::Fatal("bad frame".into()))
    );
    s.on_disconnect("fatal");
    assert_eq!(
        s.receive(ServerMessage::Ping),
        Err(SyncError::NotConnected("Ping"))
    );
}

#[test]
fn the_session_id_survives_reconnects_and_differs_between_clients() {
    let mut s = ClientState::new();
    let id = s.session_id().clone();
    s.on_connect();
    s.on_disconnect("x");
    s.on_connect();
    let frames = drain(&mut s);
    assert!(
        matches!(&frames[0], ClientMessage::Connect { session_id, connection_count: 1, .. } if *session_id == id)
    );
    assert_ne!(ClientState::new().session_id(), &id);
}

#[test]
fn connecting_again_without_a_disconnect_still_reports_lost_actions() {
    let mut s = connected();
    let a = s.action("notes:echo", obj! {});
    s.on_connect();
    assert_eq!(drain(&mut s)[0], connect(1, "reconnected", None));
    assert_eq!(
        s.receive(ServerMessage::Ping).unwrap(),
        [Notification::ActionLost { request_id: a }]
    );
}
