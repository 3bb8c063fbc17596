//! The protocol's wire JSON: real frames of the npm client pinned, round
//! trips of every message, and decoding that never panics.

use super::*;
use proptest::prelude::*;
use serde_json::json;

use crate::testing::arb_value;
use crate::value::Object;

const SESSION: &str = "6564c72d-2e49-46b7-bbf8-a12881bf2ecb";

fn session() -> SessionId {
    SessionId::parse(SESSION).unwrap()
}

fn object(fields: &[(&str, Value)]) -> Value {
    Value::Object(
        (fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<Object>())
        .into(),
    )
}

fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

fn client(text: &str) -> ClientMessage {
    ClientMessage::from_text(text).unwrap_or_else(|e| panic!("{text}\n  -> {e}"))
}

fn server(text: &str) -> ServerMessage {
    ServerMessage::from_text(text).unwrap_or_else(|e| panic!("{text}\n  -> {e}"))
}

fn client_error(text: &str) -> String {
    match ClientMessage::from_text(text) {
        Ok(m) => panic!("{text} decoded as {m:?}"),
        Err(e) => e.to_string(),
    }
}

fn server_error(text: &str) -> String {
    match ServerMessage::from_text(text) {
        Ok(m) => panic!("{text} decoded as {m:?}"),
        Err(e) => e.to_string(),
    }
}

/// Frames exactly as the npm client (`convex` 1.48.0, `ConvexClient`) sent them
/// to a capturing server: a first connection, then a reconnect after the server
/// closed the socket.
#[test]
fn npm_client_frames_decode() {
    let cases: Vec<(&str, ClientMessage)> = vec![
        (
            r#"{"connectionCount":0,"lastCloseReason":"InitialConnect","clientTs":1795813594005,"type":"Connect","sessionId":"6564c72d-2e49-46b7-bbf8-a12881bf2ecb"}"#,
            ClientMessage::Connect {
                session_id: session(),
                connection_count: 0,
                last_close_reason: Some("InitialConnect".into()),
                max_observed_timestamp: None,
                client_ts: Some(1795813594005),
            },
        ),
        (
            r#"{"type":"Authenticate","baseVersion":0,"tokenType":"User","value":"header.payload.sig"}"#,
            ClientMessage::Authenticate {
                base_version: 0,
                token: AuthenticationToken::User("header.payload.sig".into()),
            },
        ),
        (
            r#"{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Add","queryId":0,"udfPath":"messages:list","args":[{"channel":"general"}]}]}"#,
            ClientMessage::ModifyQuerySet {
                base_version: 0,
                new_version: 1,
                modifications: vec![QuerySetModification::Add {
                    query_id: QueryId(0),
                    udf_path: "messages:list".into(),
                    args: vec![object(&[("channel", string("general"))])],
                    journal: None,
                    component_path: None,
                }],
            },
        ),
        (
            r#"{"type":"Mutation","requestId":0,"udfPath":"messages:send","args":[{"body":"hello","count":{"$integer":"AwAAAAAAAAA="},"ratio":0.5,"raw":{"$bytes":"AQI="}}]}"#,
            ClientMessage::Mutation {
                request_id: RequestId(0),
                udf_path: "messages:send".into(),
                args: vec![object(&[
                    ("body", string("hello")),
                    ("count", Value::Int64(3)),
                    ("ratio", Value::Float64(0.5)),
                    ("raw", Value::Bytes(vec![1, 2])),
                ])],
                component_path: None,
            },
        ),
        (
            r#"{"type":"Action","requestId":1,"udfPath":"ai:run","args":[{}]}"#,
            ClientMessage::Action {
                request_id: RequestId(1),
                udf_path: "ai:run".into(),
                args: vec![object(&[])],
                component_path: None,
            },
        ),
        (
            r#"{"connectionCount":1,"lastCloseReason":"bye","clientTs":1795813595020,"type":"Connect","sessionId":"6564c72d-2e49-46b7-bbf8-a12881bf2ecb","maxObservedTimestamp":"6AMAAAAAAAA="}"#,
            ClientMessage::Connect {
                session_id: session(),
                connection_count: 1,
                last_close_reason: Some("bye".into()),
                max_observed_timestamp: Some(Timestamp::new(1000)),
                client_ts: Some(1795813595020),
            },
        ),
        (
            // After a reconnect the client re-adds its queries with the journal
            // it was sent, here `null`.
            r#"{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Add","queryId":0,"udfPath":"messages:list","args":[{"channel":"general"}],"journal":null}]}"#,
            ClientMessage::ModifyQuerySet {
                base_version: 0,
                new_version: 1,
                modifications: vec![QuerySetModification::Add {
                    query_id: QueryId(0),
                    udf_path: "messages:list".into(),
                    args: vec![object(&[("channel", string("general"))])],
                    journal: None,
                    component_path: None,
                }],
            },
        ),
        (
            r#"{"type":"ModifyQuerySet","baseVersion":1,"newVersion":2,"modifications":[{"type":"Remove","queryId":0}]}"#,
            ClientMessage::ModifyQuerySet {
                base_version: 1,
                new_version: 2,
                modifications: vec![QuerySetModification::Remove {
                    query_id: QueryId(0),
                }],
            },
        ),
        (
            r#"{"type":"Authenticate","tokenType":"None","baseVersion":1}"#,
            ClientMessage::Authenticate {
                base_version: 1,
                token: AuthenticationToken::None,
            },
        ),
        (
            r#"{"type":"Event","eventType":"ClientReceivedTransition","event":{"transitionTransitTime":12.5,"messageLength":300}}"#,
            ClientMessage::Event {
                event_type: "ClientReceivedTransition".into(),
                event: json!({"transitionTransitTime": 12.5, "messageLength": 300}),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(client(text), expected, "{text}");
    }
}

/// What the `convex` crate's `sync_types` and other client versions send
/// differently: optional fields left out, `acting_as`, `componentPath`, fields
/// this protocol does not know.
#[test]
fn other_clients_frames_decode() {
    let bare_connect = client(&format!(
        r#"{{"type":"Connect","sessionId":"{}","connectionCount":2}}"#,
        SESSION.to_uppercase()
    ));
    assert_eq!(
        bare_connect,
        ClientMessage::Connect {
            session_id: session(),
            connection_count: 2,
            last_close_reason: None,
            max_observed_timestamp: None,
            client_ts: None,
        }
    );

    let unrounded = client(&format!(
        r#"{{"type":"Connect","sessionId":"{SESSION}","connectionCount":0,"lastCloseReason":null,"clientTs":1700000000000.6,"queryWorkloadClass":"degradable"}}"#
    ));
    let ClientMessage::Connect { client_ts, .. } = unrounded else {
        panic!("{unrounded:?}");
    };
    assert_eq!(client_ts, Some(1700000000001));

    for field in ["acting_as", "impersonating"] {
        let admin = client(&format!(
            r#"{{"type":"Authenticate","baseVersion":3,"tokenType":"Admin","value":"key","{field}":{{"subject":"u1","issuer":"i"}}}}"#
        ));
        assert_eq!(
            admin,
            ClientMessage::Authenticate {
                base_version: 3,
                token: AuthenticationToken::Admin("key".into()),
            }
        );
    }

    let component = client(
        r#"{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Add","queryId":7,"udfPath":"lib:get","args":[{}],"journal":"cursor","componentPath":"rateLimiter"}]}"#,
    );
    assert_eq!(
        component,
        ClientMessage::ModifyQuerySet {
            base_version: 0,
            new_version: 1,
            modifications: vec![QuerySetModification::Add {
                query_id: QueryId(7),
                udf_path: "lib:get".into(),
                args: vec![object(&[])],
                journal: Some("cursor".into()),
                component_path: Some("rateLimiter".into()),
            }],
        }
    );
}

#[test]
fn client_messages_encode_as_the_npm_client_sends_them() {
    let cases: Vec<(ClientMessage, Json)> = vec![
        (
            ClientMessage::Connect {
                session_id: session(),
                connection_count: 1,
                last_close_reason: None,
                max_observed_timestamp: Some(Timestamp::new(1000)),
                client_ts: Some(1795813595020),
            },
            json!({"type": "Connect", "sessionId": SESSION, "connectionCount": 1,
                   "lastCloseReason": null, "maxObservedTimestamp": "6AMAAAAAAAA=",
                   "clientTs": 1795813595020u64}),
        ),
        (
            ClientMessage::ModifyQuerySet {
                base_version: 0,
                new_version: 1,
                modifications: vec![
                    QuerySetModification::Add {
                        query_id: QueryId(0),
                        udf_path: "messages:list".into(),
                        args: vec![object(&[("n", Value::Int64(1))])],
                        journal: None,
                        component_path: None,
                    },
                    QuerySetModification::Remove {
                        query_id: QueryId(4),
                    },
                ],
            },
            json!({"type": "ModifyQuerySet", "baseVersion": 0, "newVersion": 1,
                   "modifications": [
                       {"type": "Add", "queryId": 0, "udfPath": "messages:list",
                        "args": [{"n": {"$integer": "AQAAAAAAAAA="}}]},
                       {"type": "Remove", "queryId": 4}]}),
        ),
        (
            ClientMessage::Authenticate {
                base_version: 0,
                token: AuthenticationToken::User("jwt".into()),
            },
            json!({"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": "jwt"}),
        ),
        (
            ClientMessage::Authenticate {
                base_version: 1,
                token: AuthenticationToken::None,
            },
            json!({"type": "Authenticate", "baseVersion": 1, "tokenType": "None"}),
        ),
        (
            ClientMessage::Mutation {
                request_id: RequestId(0),
                udf_path: "messages:send".into(),
                args: vec![object(&[("raw", Value::Bytes(vec![1, 2]))])],
                component_path: None,
            },
            json!({"type": "Mutation", "requestId": 0, "udfPath": "messages:send",
                   "args": [{"raw": {"$bytes": "AQI="}}]}),
        ),
        (
            ClientMessage::Action {
                request_id: RequestId(1),
                udf_path: "ai:run".into(),
                args: vec![object(&[])],
                component_path: None,
            },
            json!({"type": "Action", "requestId": 1, "udfPath": "ai:run", "args": [{}]}),
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(message.to_json(), expected, "{message:?}");
    }
}

/// Server frames exactly as sent to the npm client (`convex` 1.48.0), which
/// accepted every one: it delivered the query result, resolved the mutation
/// after the second Transition and rejected the action with a `ConvexError`
/// carrying the data.
#[test]
fn server_messages_encode_as_the_npm_client_accepts_them() {
    let at_zero = StateVersion {
        query_set: 1,
        identity: 1,
        ts: Timestamp::ZERO,
    };
    let cases: Vec<(ServerMessage, &str)> = vec![
        (
            ServerMessage::Transition {
                start_version: StateVersion {
                    query_set: 0,
                    identity: 1,
                    ts: Timestamp::ZERO,
                },
                end_version: at_zero,
                modifications: vec![StateModification::QueryUpdated {
                    query_id: QueryId(0),
                    value: Value::Array(vec![object(&[
                        ("body", string("hi")),
                        ("n", Value::Int64(7)),
                    ])])
                    .into(),
                    log_lines: vec!["[LOG] 'hello'".into()],
                    journal: None,
                }],
                client_clock_skew: None,
                server_ts: None,
            },
            r#"{"type":"Transition","startVersion":{"querySet":0,"identity":1,"ts":"AAAAAAAAAAA="},"endVersion":{"querySet":1,"identity":1,"ts":"AAAAAAAAAAA="},"modifications":[{"type":"QueryUpdated","queryId":0,"value":[{"body":"hi","n":{"$integer":"BwAAAAAAAAA="}}],"logLines":["[LOG] 'hello'"],"journal":null}]}"#,
        ),
        (
            ServerMessage::MutationResponse {
                request_id: RequestId(0),
                result: Ok(MutationSuccess {
                    value: Value::Null,
                    ts: Timestamp::new(1000),
                }),
                log_lines: vec![],
            },
            r#"{"type":"MutationResponse","requestId":0,"success":true,"result":null,"ts":"6AMAAAAAAAA=","logLines":[]}"#,
        ),
        (
            ServerMessage::Transition {
                start_version: at_zero,
                end_version: StateVersion {
                    ts: Timestamp::new(1000),
                    ..at_zero
                },
                modifications: vec![],
                client_clock_skew: None,
                server_ts: None,
            },
            r#"{"type":"Transition","startVersion":{"querySet":1,"identity":1,"ts":"AAAAAAAAAAA="},"endVersion":{"querySet":1,"identity":1,"ts":"6AMAAAAAAAA="},"modifications":[]}"#,
        ),
        (
            ServerMessage::ActionResponse {
                request_id: RequestId(1),
                result: Err(FunctionError {
                    message: "Uncaught ConvexError: nope".into(),
                    data: Some(object(&[
                        ("code", string("FORBIDDEN")),
                        ("message", string("nope")),
                    ])),
                }),
                log_lines: vec![],
            },
            r#"{"type":"ActionResponse","requestId":1,"success":false,"result":"Uncaught ConvexError: nope","logLines":[],"errorData":{"code":"FORBIDDEN","message":"nope"}}"#,
        ),
        (
            ServerMessage::Transition {
                start_version: at_zero,
                end_version: StateVersion {
                    query_set: 2,
                    ..at_zero
                },
                modifications: vec![StateModification::QueryRemoved {
                    query_id: QueryId(0),
                }],
                client_clock_skew: None,
                server_ts: None,
            },
            r#"{"type":"Transition","startVersion":{"querySet":1,"identity":1,"ts":"AAAAAAAAAAA="},"endVersion":{"querySet":2,"identity":1,"ts":"AAAAAAAAAAA="},"modifications":[{"type":"QueryRemoved","queryId":0}]}"#,
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(message.to_text(), expected);
        assert_eq!(server(expected), message);
    }
}

/// The npm client (1.48.0) accepted these too: the first QueryFailed became a
/// `ConvexError` with its data, the second a plain `Error`; `errorData: null`
/// became `ConvexError` with data `null`; the `$float` NaN arrived as `NaN`.
#[test]
fn every_other_server_message_encodes_to_its_pinned_frame() {
    let cases: Vec<(ServerMessage, &str)> = vec![
        (
            ServerMessage::Transition {
                start_version: StateVersion::INITIAL,
                end_version: StateVersion {
                    query_set: 1,
                    identity: 0,
                    ts: Timestamp::new(1000),
                },
                modifications: vec![
                    StateModification::QueryFailed {
                        query_id: QueryId(3),
                        error: FunctionError {
                            message: "Item not found".into(),
                            data: Some(object(&[("code", string("NOT_FOUND"))])),
                        },
                        log_lines: vec![],
                        journal: Some("j1".into()),
                    },
                    StateModification::QueryFailed {
                        query_id: QueryId(4),
                        error: FunctionError {
                            message: "Server error".into(),
                            data: None,
                        },
                        log_lines: vec!["[ERROR] 'boom'".into()],
                        journal: None,
                    },
                ],
                client_clock_skew: Some(-12),
                server_ts: Some(Timestamp::new(1_700_000_000_000_000_000)),
            },
            r#"{"type":"Transition","startVersion":{"querySet":0,"identity":0,"ts":"AAAAAAAAAAA="},"endVersion":{"querySet":1,"identity":0,"ts":"6AMAAAAAAAA="},"modifications":[{"type":"QueryFailed","queryId":3,"errorMessage":"Item not found","logLines":[],"journal":"j1","errorData":{"code":"NOT_FOUND"}},{"type":"QueryFailed","queryId":4,"errorMessage":"Server error","logLines":["[ERROR] 'boom'"],"journal":null}],"clientClockSkew":-12,"serverTs":1700000000000000000}"#,
        ),
        (
            ServerMessage::MutationResponse {
                request_id: RequestId(5),
                result: Err(FunctionError {
                    message: "Server error (request 0f3a)".into(),
                    data: None,
                }),
                log_lines: vec![],
            },
            r#"{"type":"MutationResponse","requestId":5,"success":false,"result":"Server error (request 0f3a)","logLines":[]}"#,
        ),
        (
            ServerMessage::MutationResponse {
                request_id: RequestId(6),
                result: Err(FunctionError {
                    message: "ConvexError: null".into(),
                    data: Some(Value::Null),
                }),
                log_lines: vec![],
            },
            r#"{"type":"MutationResponse","requestId":6,"success":false,"result":"ConvexError: null","logLines":[],"errorData":null}"#,
        ),
        (
            ServerMessage::ActionResponse {
                request_id: RequestId(7),
                result: Ok(Value::Float64(f64::NAN)),
                log_lines: vec!["[INFO] 'x'".into()],
            },
            r#"{"type":"ActionResponse","requestId":7,"success":true,"result":{"$float":"AAAAAAAA+H8="},"logLines":["[INFO] 'x'"]}"#,
        ),
        (
            ServerMessage::AuthError {
                error: "token expired".into(),
                base_version: 1,
                auth_update_attempted: true,
            },
            r#"{"type":"AuthError","error":"token expired","baseVersion":1,"authUpdateAttempted":true}"#,
        ),
        (
            ServerMessage::FatalError {
                error: "Mutation.args: expected an array".into(),
            },
            r#"{"type":"FatalError","error":"Mutation.args: expected an array"}"#,
        ),
        (ServerMessage::Ping, r#"{"type":"Ping"}"#),
    ];
    for (message, expected) in cases {
        assert_eq!(message.to_text(), expected);
        assert_eq!(server(expected), message);
    }
}

/// The Convex backend (and `sync_types`) write unknown optional fields as `null`,
/// leave out `journal` in old versions and put `ts: null` on failures.
#[test]
fn convex_backend_server_frames_decode() {
    let transition = server(
        r#"{"type":"Transition","startVersion":{"querySet":0,"identity":0,"ts":"AAAAAAAAAAA="},"endVersion":{"querySet":1,"identity":0,"ts":"AAAAAAAAAAA="},"modifications":[{"type":"QueryUpdated","queryId":0,"value":1.5,"logLines":[]},{"type":"QueryFailed","queryId":1,"errorMessage":"e","logLines":[],"journal":null,"errorData":null}],"clientClockSkew":null,"serverTs":null}"#,
    );
    assert_eq!(
        transition,
        ServerMessage::Transition {
            start_version: StateVersion::INITIAL,
            end_version: StateVersion {
                query_set: 1,
                ..StateVersion::INITIAL
            },
            modifications: vec![
                StateModification::QueryUpdated {
                    query_id: QueryId(0),
                    value: Value::Float64(1.5).into(),
                    log_lines: vec![],
                    journal: None,
                },
                StateModification::QueryFailed {
                    query_id: QueryId(1),
                    error: FunctionError {
                        message: "e".into(),
                        data: Some(Value::Null),
                    },
                    log_lines: vec![],
                    journal: None,
                },
            ],
            client_clock_skew: None,
            server_ts: None,
        }
    );
    assert_eq!(
        server(
            r#"{"type":"MutationResponse","requestId":2,"success":false,"result":"nope","ts":null,"logLines":[]}"#
        ),
        ServerMessage::MutationResponse {
            request_id: RequestId(2),
            result: Err(FunctionError {
                message: "nope".into(),
                data: None,
            }),
            log_lines: vec![],
        }
    );
}

#[test]
fn malformed_client_frames_say_what_and_where() {
    let m = |rest: &str| format!(r#"{{"type":"Mutation","udfPath":"a:b",{rest}}}"#);
    let connect = |rest: &str| {
        format!(r#"{{"type":"Connect","sessionId":"{SESSION}","connectionCount":0,{rest}}}"#)
    };
    let cases: Vec<(String, &str)> = vec![
        ("[1]".into(), r#"expected a JSON object with a "type""#),
        ("{}".into(), "type: required field is missing"),
        (r#"{"type":3}"#.into(), "type: expected a string"),
        (r#"{"type":"Foo"}"#.into(), r#"unknown message type "Foo""#),
        (r#"{"type":"Ping"}"#.into(), r#"unknown message type "Ping""#),
        (
            format!(r#"{{"type":"{}"}}"#, "x".repeat(1000)),
            // The echo is cut short.
            "unknown message type \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
        ),
        (m(r#""requestId":1,"args":{}"#), "Mutation.args: expected an array"),
        (m(r#""requestId":1"#), "Mutation.args: required field is missing"),
        (
            m(r#""requestId":-1,"args":[]"#),
            "Mutation.requestId: expected a non-negative integer",
        ),
        (
            m(r#""requestId":1.5,"args":[]"#),
            "Mutation.requestId: expected a non-negative integer",
        ),
        (
            m(r#""requestId":"1","args":[]"#),
            "Mutation.requestId: expected a non-negative integer",
        ),
        (
            m(r#""requestId":4294967296,"args":[]"#),
            "Mutation.requestId: expected a non-negative integer below 2^32",
        ),
        (
            m(r#""requestId":1,"args":[{"n":{"$integer":"AQ=="}}]"#),
            "Mutation.args[0].n: `$integer` must hold exactly 8 bytes, got 1",
        ),
        (
            r#"{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Remove","queryId":0},{"type":"Remove","queryId":1},{"type":"Remove","queryId":"2"}]}"#.into(),
            "ModifyQuerySet.modifications[2].queryId: expected a non-negative integer",
        ),
        (
            r#"{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Replace","queryId":0}]}"#.into(),
            r#"ModifyQuerySet.modifications[0].type: unknown modification type "Replace""#,
        ),
        (
            r#"{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[7]}"#.into(),
            "ModifyQuerySet.modifications[0]: expected an object",
        ),
        (
            r#"{"type":"ModifyQuerySet","baseVersion":0,"newVersion":1,"modifications":[{"type":"Add","queryId":0,"udfPath":"a:b","args":[],"journal":5}]}"#.into(),
            "ModifyQuerySet.modifications[0].journal: expected a string",
        ),
        (
            r#"{"type":"Connect","sessionId":"not-a-uuid","connectionCount":0}"#.into(),
            r#"Connect.sessionId: expected a UUID like "6564c72d-2e49-46b7-bbf8-a12881bf2ecb""#,
        ),
        (
            connect(r#""maxObservedTimestamp":"AQ==""#),
            "Connect.maxObservedTimestamp: expected a timestamp: base64 of 8 little-endian bytes",
        ),
        (
            connect(r#""maxObservedTimestamp":"!!!!!!!!!!!!""#),
            "Connect.maxObservedTimestamp: expected a timestamp: base64 of 8 little-endian bytes",
        ),
        (
            connect(r#""maxObservedTimestamp":1000"#),
            "Connect.maxObservedTimestamp: expected a timestamp: base64 of 8 little-endian bytes",
        ),
        (
            connect(r#""clientTs":-5"#),
            "Connect.clientTs: expected a non-negative number of milliseconds",
        ),
        (
            r#"{"type":"Authenticate","baseVersion":0,"tokenType":"Bearer","value":"x"}"#.into(),
            r#"Authenticate.tokenType: unknown token type "Bearer""#,
        ),
        (
            r#"{"type":"Authenticate","baseVersion":0,"tokenType":"User"}"#.into(),
            "Authenticate.value: required field is missing",
        ),
        (
            r#"{"type":"Event","eventType":"X"}"#.into(),
            "Event.event: required field is missing",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(client_error(&text), expected, "{text}");
    }
    assert!(client_error("not json").starts_with("not valid JSON: "));
    assert!(client_error("").starts_with("not valid JSON: "));
    let deep = "[".repeat(100_000);
    assert!(client_error(&deep).starts_with("not valid JSON: "));
}

#[test]
fn malformed_server_frames_say_what_and_where() {
    let v = r#"{"querySet":0,"identity":0,"ts":"AAAAAAAAAAA="}"#;
    let cases: Vec<(String, &str)> = vec![
        (r#"{"type":"Connect"}"#.into(), r#"unknown message type "Connect""#),
        (
            format!(
                r#"{{"type":"Transition","startVersion":{v},"endVersion":{{"querySet":0,"identity":0,"ts":"AQ=="}},"modifications":[]}}"#
            ),
            "Transition.endVersion.ts: expected a timestamp: base64 of 8 little-endian bytes",
        ),
        (
            format!(
                r#"{{"type":"Transition","startVersion":{v},"endVersion":{v},"modifications":[{{"type":"QueryUpdated","queryId":0,"logLines":[]}}]}}"#
            ),
            "Transition.modifications[0].value: required field is missing",
        ),
        (
            format!(
                r#"{{"type":"Transition","startVersion":{v},"endVersion":{v},"modifications":[{{"type":"QueryUpdated","queryId":0,"value":{{"$set":[]}},"logLines":[]}}]}}"#
            ),
            "Transition.modifications[0].value: `$set` is not a known encoding; keys starting with `$` are reserved",
        ),
        (
            format!(
                r#"{{"type":"Transition","startVersion":{v},"endVersion":{v},"modifications":[{{"type":"QueryUpdated","queryId":0,"value":1,"logLines":[1]}}]}}"#
            ),
            "Transition.modifications[0].logLines[0]: expected a string",
        ),
        (
            format!(
                r#"{{"type":"Transition","startVersion":{v},"endVersion":{v},"modifications":[{{"type":"QueryChanged","queryId":0}}]}}"#
            ),
            r#"Transition.modifications[0].type: unknown state modification type "QueryChanged""#,
        ),
        (
            format!(r#"{{"type":"Transition","startVersion":{v},"modifications":[]}}"#),
            "Transition.endVersion: required field is missing",
        ),
        (
            r#"{"type":"MutationResponse","requestId":0,"success":false,"result":{"a":1},"logLines":[]}"#.into(),
            "MutationResponse.result: expected a string",
        ),
        (
            r#"{"type":"MutationResponse","requestId":0,"success":true,"result":null,"logLines":[]}"#.into(),
            "MutationResponse.ts: required field is missing",
        ),
        (
            r#"{"type":"ActionResponse","requestId":0,"success":"yes","result":null,"logLines":[]}"#.into(),
            "ActionResponse.success: expected a boolean",
        ),
        (
            r#"{"type":"AuthError","error":"bad","baseVersion":0}"#.into(),
            "AuthError.authUpdateAttempted: required field is missing",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(server_error(&text), expected, "{text}");
    }
}

#[test]
fn session_ids_are_hyphenated_uuids() {
    let id = SessionId::random();
    assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
    assert_eq!(&id.as_str()[14..15], "4", "version 4: {id}");
    assert_ne!(SessionId::random(), id);
    assert_eq!(
        SessionId::parse(&SESSION.to_uppercase()).map(|s| s.to_string()),
        Some(SESSION.to_string())
    );
    for bad in [
        "",
        "6564c72d2e4946b7bbf8a12881bf2ecb",
        "6564c72d-2e49-46b7-bbf8-a12881bf2ec",
        "6564c72d-2e49-46b7-bbf8-a12881bf2ecg",
        "{6564c72d-2e49-46b7-bbf8-a12881bf2ec}",
        "6564c72d-2e49-46b7-bbf8-a12881bf2ecé",
    ] {
        assert_eq!(SessionId::parse(bad), None, "{bad}");
    }
}

// ---- property tests ----

fn arb_text() -> impl Strategy<Value = String> {
    "\\PC{0,10}"
}

fn arb_session_id() -> impl Strategy<Value = SessionId> {
    any::<u128>().prop_map(|n| {
        let hex = format!("{n:032x}");
        let text = format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        SessionId::parse(&text).unwrap()
    })
}

fn arb_ts() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp::new)
}

fn arb_args() -> impl Strategy<Value = Vec<Value>> {
    proptest::collection::vec(arb_value(), 0..3)
}

fn arb_log_lines() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(arb_text(), 0..3)
}

fn arb_function_error() -> impl Strategy<Value = FunctionError> {
    (arb_text(), proptest::option::of(arb_value()))
        .prop_map(|(message, data)| FunctionError { message, data })
}

fn arb_connect() -> impl Strategy<Value = ClientMessage> {
    (
        arb_session_id(),
        any::<u32>(),
        proptest::option::of(arb_text()),
        proptest::option::of(arb_ts()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(session_id, count, reason, max_ts, client_ts)| ClientMessage::Connect {
                session_id,
                connection_count: count,
                last_close_reason: reason,
                max_observed_timestamp: max_ts,
                client_ts,
            },
        )
}

fn arb_query_set_modification() -> impl Strategy<Value = QuerySetModification> {
    prop_oneof![
        (
            any::<u32>(),
            arb_text(),
            arb_args(),
            proptest::option::of(arb_text()),
            proptest::option::of(arb_text()),
        )
            .prop_map(|(id, udf_path, args, journal, component_path)| {
                QuerySetModification::Add {
                    query_id: QueryId(id),
                    udf_path,
                    args,
                    journal,
                    component_path,
                }
            }),
        any::<u32>().prop_map(|id| QuerySetModification::Remove {
            query_id: QueryId(id)
        }),
    ]
}

fn arb_modify_query_set() -> impl Strategy<Value = ClientMessage> {
    (
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(arb_query_set_modification(), 0..4),
    )
        .prop_map(
            |(base_version, new_version, modifications)| ClientMessage::ModifyQuerySet {
                base_version,
                new_version,
                modifications,
            },
        )
}

fn arb_authenticate() -> impl Strategy<Value = ClientMessage> {
    let token = prop_oneof![
        arb_text().prop_map(AuthenticationToken::User),
        arb_text().prop_map(AuthenticationToken::Admin),
        Just(AuthenticationToken::None),
    ];
    (any::<u32>(), token).prop_map(|(base_version, token)| ClientMessage::Authenticate {
        base_version,
        token,
    })
}

fn arb_request() -> impl Strategy<Value = ClientMessage> {
    (
        any::<bool>(),
        any::<u32>(),
        arb_text(),
        arb_args(),
        proptest::option::of(arb_text()),
    )
        .prop_map(|(mutation, id, udf_path, args, component_path)| {
            let request_id = RequestId(id);
            if mutation {
                ClientMessage::Mutation {
                    request_id,
                    udf_path,
                    args,
                    component_path,
                }
            } else {
                ClientMessage::Action {
                    request_id,
                    udf_path,
                    args,
                    component_path,
                }
            }
        })
}

fn arb_event() -> impl Strategy<Value = ClientMessage> {
    (arb_text(), arb_value()).prop_map(|(event_type, v)| ClientMessage::Event {
        event_type,
        event: v.to_json(),
    })
}

fn arb_client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        arb_connect(),
        arb_modify_query_set(),
        arb_authenticate(),
        arb_request(),
        arb_event(),
    ]
}

fn arb_version() -> impl Strategy<Value = StateVersion> {
    (any::<u32>(), any::<u32>(), arb_ts()).prop_map(|(query_set, identity, ts)| StateVersion {
        query_set,
        identity,
        ts,
    })
}

fn arb_state_modification() -> impl Strategy<Value = StateModification> {
    prop_oneof![
        (
            any::<u32>(),
            arb_value(),
            arb_log_lines(),
            proptest::option::of(arb_text())
        )
            .prop_map(|(id, value, log_lines, journal)| {
                StateModification::QueryUpdated {
                    query_id: QueryId(id),
                    value: Arc::new(ResultValue::new(value)),
                    log_lines,
                    journal,
                }
            }),
        (
            any::<u32>(),
            arb_function_error(),
            arb_log_lines(),
            proptest::option::of(arb_text())
        )
            .prop_map(|(id, error, log_lines, journal)| {
                StateModification::QueryFailed {
                    query_id: QueryId(id),
                    error,
                    log_lines,
                    journal,
                }
            }),
        any::<u32>().prop_map(|id| StateModification::QueryRemoved {
            query_id: QueryId(id)
        }),
    ]
}

fn arb_transition() -> impl Strategy<Value = ServerMessage> {
    (
        arb_version(),
        arb_version(),
        proptest::collection::vec(arb_state_modification(), 0..4),
        proptest::option::of(any::<i64>()),
        proptest::option::of(arb_ts()),
    )
        .prop_map(
            |(start, end, modifications, skew, server_ts)| ServerMessage::Transition {
                start_version: start,
                end_version: end,
                modifications,
                client_clock_skew: skew,
                server_ts,
            },
        )
}

fn arb_mutation_response() -> impl Strategy<Value = ServerMessage> {
    let result = prop_oneof![
        (arb_value(), arb_ts()).prop_map(|(value, ts)| Ok(MutationSuccess { value, ts })),
        arb_function_error().prop_map(Err),
    ];
    (any::<u32>(), result, arb_log_lines()).prop_map(|(id, result, log_lines)| {
        ServerMessage::MutationResponse {
            request_id: RequestId(id),
            result,
            log_lines,
        }
    })
}

fn arb_action_response() -> impl Strategy<Value = ServerMessage> {
    let result = prop_oneof![arb_value().prop_map(Ok), arb_function_error().prop_map(Err)];
    (any::<u32>(), result, arb_log_lines()).prop_map(|(id, result, log_lines)| {
        ServerMessage::ActionResponse {
            request_id: RequestId(id),
            result,
            log_lines,
        }
    })
}

fn arb_other_server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (arb_text(), any::<u32>(), any::<bool>()).prop_map(|(error, base, attempted)| {
            ServerMessage::AuthError {
                error,
                base_version: base,
                auth_update_attempted: attempted,
            }
        }),
        arb_text().prop_map(|error| ServerMessage::FatalError { error }),
        Just(ServerMessage::Ping),
    ]
}

fn arb_server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        arb_transition(),
        arb_mutation_response(),
        arb_action_response(),
        arb_other_server_message(),
    ]
}

fn assert_client_round_trip(message: &ClientMessage) -> Result<(), TestCaseError> {
    let json = message.to_json();
    prop_assert_eq!(&ClientMessage::from_json(&json)?, message);
    // The workspace enables serde_json\'s `float_roundtrip`, so text is exact.
    prop_assert_eq!(&ClientMessage::from_text(&message.to_text())?, message);
    Ok(())
}

fn assert_server_round_trip(message: &ServerMessage) -> Result<(), TestCaseError> {
    let json = message.to_json();
    // The frames written directly are exactly the tree's text.
    prop_assert_eq!(message.to_text(), json.to_string());
    prop_assert_eq!(&ServerMessage::from_json(&json)?, message);
    // The workspace enables serde_json\'s `float_roundtrip`, so text is exact.
    prop_assert_eq!(&ServerMessage::from_text(&message.to_text())?, message);
    Ok(())
}

/// Any JSON, shaped enough like a message that decoding gets past the `type`.
fn arb_messageish_json() -> impl Strategy<Value = Json> {
    const NAMES: &[&str] = &[
        "type",
        "Connect",
        "ModifyQuerySet",
        "Authenticate",
        "Mutation",
        "Action",
        "Event",
        "Add",
        "Remove",
        "Transition",
        "MutationResponse",
        "ActionResponse",
        "AuthError",
        "FatalError",
        "Ping",
        "QueryUpdated",
        "QueryFailed",
        "QueryRemoved",
        "User",
        "Admin",
        "None",
        "sessionId",
        "connectionCount",
        "lastCloseReason",
        "maxObservedTimestamp",
        "clientTs",
        "baseVersion",
        "newVersion",
        "modifications",
        "queryId",
        "udfPath",
        "args",
        "journal",
        "componentPath",
        "tokenType",
        "value",
        "requestId",
        "eventType",
        "event",
        "startVersion",
        "endVersion",
        "querySet",
        "identity",
        "ts",
        "logLines",
        "errorMessage",
        "errorData",
        "success",
        "result",
        "error",
        "authUpdateAttempted",
        "clientClockSkew",
        "serverTs",
        "$integer",
    ];
    let name = proptest::sample::select(NAMES).prop_map(str::to_string);
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        (-1e20f64..1e20).prop_map(Json::from),
        name.clone().prop_map(Json::from),
        Just(Json::from(SESSION)),
        Just(Json::from("6AMAAAAAAAA=")),
        "[A-Za-z0-9+/=]{0,12}".prop_map(Json::from),
    ];
    let any_json = leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            proptest::collection::btree_map(name.clone(), inner, 0..8)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    });
    (
        proptest::sample::select(NAMES),
        proptest::collection::btree_map(proptest::sample::select(NAMES), any_json, 0..8),
    )
        .prop_map(|(kind, fields)| {
            let mut m: Map<String, Json> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            m.insert("type".into(), kind.into());
            Json::Object(m)
        })
}

proptest! {
    #[test]
    fn connect_round_trips(m in arb_connect()) {
        assert_client_round_trip(&m)?;
    }

    #[test]
    fn modify_query_set_round_trips(m in arb_modify_query_set()) {
        assert_client_round_trip(&m)?;
    }

    #[test]
    fn authenticate_round_trips(m in arb_authenticate()) {
        assert_client_round_trip(&m)?;
    }

    #[test]
    fn mutation_and_action_requests_round_trip(m in arb_request()) {
        assert_client_round_trip(&m)?;
    }

    #[test]
    fn event_round_trips(m in arb_event()) {
        assert_client_round_trip(&m)?;
    }

    #[test]
    fn transition_round_trips(m in arb_transition()) {
        assert_server_round_trip(&m)?;
    }

    #[test]
    fn mutation_response_round_trips(m in arb_mutation_response()) {
        assert_server_round_trip(&m)?;
    }

    #[test]
    fn action_response_round_trips(m in arb_action_response()) {
        assert_server_round_trip(&m)?;
    }

    #[test]
    fn auth_error_fatal_error_and_ping_round_trip(m in arb_other_server_message()) {
        assert_server_round_trip(&m)?;
    }

    /// Whatever arrives, decoding answers (and never panics); what it accepts
    /// re-encodes to something it accepts again.
    #[test]
    fn decoding_arbitrary_json_never_panics(json in arb_messageish_json()) {
        if let Ok(m) = ClientMessage::from_json(&json) {
            assert_client_round_trip(&m)?;
        }
        if let Ok(m) = ServerMessage::from_json(&json) {
            assert_server_round_trip(&m)?;
        }
    }

    /// A valid message with one field dropped or replaced still decodes to a
    /// message or an error.
    #[test]
    fn damaged_messages_never_panic(
        client in arb_client_message(),
        server in arb_server_message(),
        replacement in arb_messageish_json(),
        pick in any::<prop::sample::Index>(),
        drop_it in any::<bool>(),
    ) {
        for mut json in [client.to_json(), server.to_json()] {
            let map = json.as_object_mut().unwrap();
            let key = map.keys().nth(pick.index(map.len())).unwrap().clone();
            if drop_it {
                map.remove(&key);
            } else {
                map.insert(key, replacement.clone());
            }
            let _ = ClientMessage::from_json(&json);
            let _ = ServerMessage::from_json(&json);
        }
    }
}
