//! Target `frame`: one WebSocket text frame through the sync protocol's
//! decoders, [`ClientMessage::from_text`] (what the server parses from any
//! client) and [`ServerMessage::from_text`] (what the SDK parses).
//!
//! Invariants: decoding never panics; a decoded message encodes to a frame
//! that decodes to the same message; a server message's direct text writer
//! gives exactly the text of its JSON tree; an error names where it is (its
//! path starts with the message type) and stays about the size of the input.

use livebase_schema::protocol::{ClientMessage, ProtocolError, ServerMessage};

use crate::{error_label, Target};

pub const TARGET: Target = Target {
    name: "frame",
    checks: "client and server frames: no panic; decode(encode(m)) == m; errors name their path",
    run,
    dictionary: DICTIONARY,
};

const DICTIONARY: &[&[u8]] = &[
    br#""type":"Connect""#,
    br#""type":"ModifyQuerySet""#,
    br#""type":"Authenticate""#,
    br#""type":"Mutation""#,
    br#""type":"Action""#,
    br#""type":"Event""#,
    br#""type":"Add""#,
    br#""type":"Remove""#,
    br#""type":"Transition""#,
    br#""type":"QueryUpdated""#,
    br#""type":"QueryFailed""#,
    br#""type":"QueryRemoved""#,
    br#""type":"MutationResponse""#,
    br#""type":"ActionResponse""#,
    br#""type":"AuthError""#,
    br#""type":"FatalError""#,
    br#""type":"Ping""#,
    br#""sessionId":"6564c72d-2e49-46b7-bbf8-a12881bf2ecb""#,
    br#""connectionCount":"#,
    br#""maxObservedTimestamp":"6AMAAAAAAAA=""#,
    br#""clientTs":"#,
    br#""lastCloseReason":null"#,
    br#""baseVersion":"#,
    br#""newVersion":"#,
    br#""modifications":["#,
    br#""queryId":"#,
    br#""requestId":"#,
    br#""udfPath":"a:b""#,
    br#""args":[{"#,
    br#""journal":"#,
    br#""componentPath":"#,
    br#""tokenType":"User""#,
    br#""tokenType":"Admin""#,
    br#""tokenType":"None""#,
    br#""value":"#,
    br#""eventType":"#,
    br#""event":{}"#,
    br#""success":true"#,
    br#""success":false"#,
    br#""result":"#,
    br#""errorData":"#,
    br#""errorMessage":"#,
    br#""logLines":[]"#,
    br#""ts":"AAAAAAAAAAA=""#,
    br#""startVersion":{"querySet":0,"identity":0,"ts":"AAAAAAAAAAA="}"#,
    br#""endVersion":"#,
    br#""serverTs":"#,
    br#""clientClockSkew":"#,
    br#"{"$integer":"AQAAAAAAAAA="}"#,
    br#"{"$float":"AAAAAAAA+H8="}"#,
    br#"{"$bytes":"AQI="}"#,
    br#"{"$set":[]}"#,
    b"null",
    b"true",
    br#""\ud800""#,
    br#""\u0000""#,
];

/// The message types, which every error path starts with.
const KINDS: &[&str] = &[
    "Connect",
    "ModifyQuerySet",
    "Authenticate",
    "Mutation",
    "Action",
    "Event",
    "Transition",
    "MutationResponse",
    "ActionResponse",
    "AuthError",
    "FatalError",
];

fn run(data: &[u8]) -> String {
    let Some(text) = super::text(data) else {
        return "not utf-8".into();
    };
    let client = match ClientMessage::from_text(text) {
        Ok(message) => {
            let again = ClientMessage::from_text(&message.to_text())
                .unwrap_or_else(|e| panic!("a decoded client message does not decode again: {e}"));
            assert_eq!(again, message, "client message round trip");
            format!("client ok {}", message.kind())
        }
        Err(e) => format!("client {}", check_error(&e, text)),
    };
    let server = match ServerMessage::from_text(text) {
        Ok(message) => {
            let frame = message.to_text();
            assert_eq!(
                frame,
                message.to_json().to_string(),
                "the direct writer and the JSON tree disagree"
            );
            let again = ServerMessage::from_text(&frame)
                .unwrap_or_else(|e| panic!("a decoded server message does not decode again: {e}"));
            assert_eq!(again, message, "server message round trip");
            format!("server ok {}", message.kind())
        }
        Err(e) => format!("server {}", check_error(&e, text)),
    };
    format!("{client} / {server}")
}

/// Checks an error's shape; returns its label.
fn check_error(e: &ProtocolError, input: &str) -> String {
    let shown = e.to_string();
    assert!(!shown.is_empty(), "an empty error message");
    // The message may quote the input, never more than that: it goes back to
    // the client. A bad field name appears twice (in the path and in the
    // message), and the path names each enclosing field once.
    assert!(
        shown.len() <= 2 * input.len() + 256,
        "an error of {} bytes for {} bytes of input",
        shown.len(),
        input.len()
    );
    // The label is made of the message alone: the path holds the input's
    // field names.
    let (path, message) = match e {
        ProtocolError::NotJson(_) => return "not json".into(),
        ProtocolError::UnknownType {
            path, found, what, ..
        } => {
            assert!(found.chars().count() <= 64, "the unknown tag is cut short");
            (path.as_str(), format!("unknown {what} type"))
        }
        ProtocolError::Invalid { path, message } => (path.as_str(), message.clone()),
        ProtocolError::Value(d) => (d.path.as_str(), d.message.clone()),
        other => panic!("an error of an unexpected kind: {other:?}"),
    };
    let head = path.split(['.', '[']).next().unwrap_or("");
    assert!(
        path.is_empty() || KINDS.contains(&head) || (path == "type"),
        "the error's path `{path}` does not start with a message type"
    );
    format!("{head} {}", error_label(&message))
}
