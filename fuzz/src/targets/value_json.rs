//! Target `value_json`: JSON text through Convex's value decoder
//! ([`Value::from_json_str`], the one-pass decoder every stored document and
//! argument goes through, with its tree-decoder fallback).
//!
//! Invariants: decoding never panics; the one-pass decoder agrees with the
//! tree decoder ([`Value::from_json`]) on every valid JSON text, errors
//! included; a decoded value encodes (both encoders give the same text) and
//! decodes back to itself, and its index key decodes back to it too; every
//! error names a path under the root it was given.

use livebase_schema::key::encode_tuple;
use livebase_schema::Value;
use serde_json::Value as Json;

use crate::keycodec::decode_tuple;
use crate::{error_label, Target};

pub const TARGET: Target = Target {
    name: "value_json",
    checks: "Convex JSON values: no panic; one-pass == tree decoder; decode(encode(v)) == v; errors name a path",
    run,
    dictionary: DICTIONARY,
};

const DICTIONARY: &[&[u8]] = &[
    br#"{"$integer":"#,
    br#"{"$float":"#,
    br#"{"$bytes":"#,
    br#"{"$set":"#,
    br#""$integer""#,
    br#""AQAAAAAAAAA=""#,
    br#""AAAAAAAA+H8=""#,
    br#""AAAAAAAAAIA=""#,
    br#""AQI=""#,
    br#""AQ==""#,
    br#""!!""#,
    br#""_id""#,
    br#""a":"#,
    br#""""#,
    b"null",
    b"true",
    b"false",
    b"[[[[[[[[[[[[[[[[[[",
    b"]]]]]]]]]]]]]]]]]]",
    br#"{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":"#,
    br#""\ud800""#,
    br#""\u0000""#,
    b"-0.0",
    b"1e400",
];

/// The root name errors are reported under.
const ROOT: &str = "args";

fn run(data: &[u8]) -> String {
    let Some(text) = super::text(data) else {
        return "not utf-8".into();
    };
    let decoded = Value::from_json_str(text, ROOT);
    match serde_json::from_str::<Json>(text) {
        Ok(json) => assert_eq!(
            decoded,
            Value::from_json(&json, ROOT),
            "the one-pass and tree decoders disagree"
        ),
        Err(_) => {
            let e = decoded
                .as_ref()
                .expect_err("text that is not JSON decoded to a value");
            assert!(e.message.contains("not valid JSON"), "{e}");
        }
    }
    match decoded {
        Ok(value) => {
            let text = value.to_json_text();
            assert_eq!(
                text,
                value.to_json().to_string(),
                "the two encoders disagree"
            );
            assert_eq!(
                Value::from_json_str(&text, ROOT).as_ref(),
                Ok(&value),
                "decode(encode(v)) != v"
            );
            let key = encode_tuple([Some(&value)]);
            assert_eq!(
                decode_tuple(&key),
                Some(vec![Some(value.clone())]),
                "the value's index key does not decode back to it"
            );
            // Limits are checked on decoded values before they are stored;
            // checking must not panic whatever the value.
            let limits = value
                .check_limits(ROOT)
                .map_or("over a limit", |()| "in limits");
            format!("ok {} {limits}", value.value_type().name())
        }
        Err(e) => {
            assert!(
                e.path == ROOT || e.path.starts_with("args.") || e.path.starts_with("args["),
                "the error's path `{}` is not under `{ROOT}`",
                e.path
            );
            assert!(!e.message.is_empty(), "an empty error message");
            format!("error {}", error_label(&e.message))
        }
    }
}
