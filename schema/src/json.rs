//! Convex's JSON encoding of values, both directions. This is the only place that
//! knows how a value looks on the wire: int64 as `{"$integer": base64 LE}`, floats
//! that JSON cannot carry (NaN, ±∞, -0) as `{"$float": base64 LE}`, bytes as
//! `{"$bytes": base64}`; object keys starting with `$` are reserved. Decoding never
//! panics: every error names the path of the offending part (`args.items[3].name`).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value as Json};

use crate::value::{check_field_name, Object, Path, Value, MAX_NESTING_DEPTH};

/// A JSON value that is not a valid Convex-encoded value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// Where the problem is, e.g. `args.items[3].name`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl DecodeError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Value {
    /// Encodes this value as Convex JSON.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Int64(i) => tagged("$integer", BASE64.encode(i.to_le_bytes())),
            Value::Float64(f) => {
                if plain_float(*f) {
                    // `from_f64` only fails for non-finite floats.
                    Number::from_f64(*f).map_or(Json::Null, Json::Number)
                } else {
                    tagged("$float", BASE64.encode(f.to_le_bytes()))
                }
            }
            Value::Boolean(b) => Json::Bool(*b),
            Value::String(s) => Json::String(s.clone()),
            Value::Bytes(b) => tagged("$bytes", BASE64.encode(b)),
            Value::Array(items) => Json::Array(items.iter().map(Value::to_json).collect()),
            Value::Object(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }

    /// Appends this value's Convex JSON text to `out`: the same text as
    /// `to_json().to_string()`, written directly instead of through a JSON
    /// tree, since pushing results to subscribers is the server's hottest path.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Float64(f) if plain_float(*f) => write_leaf(out, f),
            Value::Float64(f) => write_tagged(out, "$float", &f.to_le_bytes()),
            Value::Int64(i) => write_tagged(out, "$integer", &i.to_le_bytes()),
            Value::Bytes(b) => write_tagged(out, "$bytes", b),
            Value::String(s) => write_leaf(out, s.as_str()),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_json(out);
                }
                out.push(b']');
            }
            Value::Object(fields) => {
                let kept = fields.kept_json().or_else(|| {
                    fields.keep_json(|| {
                        let mut text = Vec::with_capacity(64);
                        write_object(fields, &mut text);
                        utf8(text).into_boxed_str()
                    })
                });
                match kept {
                    Some(text) => out.extend_from_slice(text.as_bytes()),
                    None => write_object(fields, out),
                }
            }
        }
    }

    /// This value's Convex JSON text (see [`Value::write_json`]).
    pub fn to_json_text(&self) -> String {
        let mut out = Vec::with_capacity(64);
        self.write_json(&mut out);
        utf8(out)
    }

    /// Decodes Convex JSON; `path` names the root in errors (e.g. `args`).
    pub fn from_json(json: &Json, path: &str) -> Result<Value, DecodeError> {
        decode(json, Path::Root(path), 1)
    }

    /// Parses a JSON text and decodes it. Valid text is decoded in one pass
    /// straight into a [`Value`] (this is how every stored document is read);
    /// only when that fails is the text decoded again through a JSON tree, to
    /// name the path of what is wrong.
    pub fn from_json_str(text: &str, path: &str) -> Result<Value, DecodeError> {
        let mut de = serde_json::Deserializer::from_str(text);
        if let Ok(value) = (ValueSeed { depth: 1 })
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v))
        {
            return Ok(value);
        }
        let json: Json = serde_json::from_str(text)
            .map_err(|e| DecodeError::new(path, format!("not valid JSON: {e}")))?;
        Value::from_json(&json, path)
    }
}

/// Whether a float travels as a JSON number (not NaN, ±∞ or -0).
fn plain_float(f: f64) -> bool {
    f.is_finite() && !(f == 0.0 && f.is_sign_negative())
}

/// Appends a string or number as serde_json writes it (same escaping, same
/// float digits), so both encoders produce identical text.
/// Appends the JSON text of an object with `fields` to `out`.
fn write_object(fields: &Object, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (name, item)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_leaf(out, name.as_str());
        out.push(b':');
        item.write_json(out);
    }
    out.push(b'}');
}

pub(crate) fn write_leaf<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, leaf: &T) {
    serde_json::to_writer(out, leaf)
        .expect("writing a JSON string or number to memory cannot fail");
}

fn write_tagged(out: &mut Vec<u8>, tag: &str, bytes: &[u8]) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(b"\":\"");
    out.extend_from_slice(BASE64.encode(bytes).as_bytes());
    out.extend_from_slice(b"\"}");
}

/// JSON text written by these encoders is UTF-8 by construction.
pub(crate) fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("JSON text written from strings is UTF-8")
}

fn tagged(tag: &str, payload: String) -> Json {
    let mut m = Map::new();
    m.insert(tag.to_string(), Json::String(payload));
    Json::Object(m)
}

fn decode(json: &Json, path: Path<'_>, depth: usize) -> Result<Value, DecodeError> {
    match json {
        Json::Null => Ok(Value::Null),
        Json::Bool(b) => Ok(Value::Boolean(*b)),
        Json::Number(n) => n.as_f64().map(Value::Float64).ok_or_else(|| {
            DecodeError::new(path.to_string(), format!("number {n} is not a float64"))
        }),
        Json::String(s) => Ok(Value::String(s.clone())),
        Json::Array(items) => {
            if depth > MAX_NESTING_DEPTH {
                return Err(too_deep(path));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| decode(item, Path::Index(&path, i), depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Json::Object(map) => {
            if map.len() == 1 {
                let (key, payload) = map.iter().next().expect("one entry");
                if key.starts_with('$') {
                    return decode_tagged(key, payload, path);
                }
            }
            if depth > MAX_NESTING_DEPTH {
                return Err(too_deep(path));
            }
            let mut fields = Object::new();
            for (key, item) in map {
                let item_path = Path::Field(&path, key);
                check_field_name(key).map_err(|m| DecodeError::new(item_path.to_string(), m))?;
                fields.insert(key.clone(), decode(item, item_path, depth + 1)?);
            }
            Ok(Value::Object(fields.into()))
        }
    }
}

/// Decodes Convex JSON text into a [`Value`] in one pass. It accepts exactly
/// what [`decode`] accepts; its errors carry no path (the caller re-decodes
/// through the tree for that).
struct ValueSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Convex-encoded value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Boolean(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Float64(n as f64))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Float64(n as f64))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Float64(n))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth > MAX_NESTING_DEPTH {
            return Err(de::Error::custom("too deep"));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(ValueSeed {
            depth: self.depth + 1,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Object::new();
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if first && key.starts_with('$') {
                // A tagged value (`{"$integer": …}`) is an object of one key.
                let payload: String = map.next_value()?;
                let value = decode_tagged(&key, &Json::String(payload), Path::Root(""))
                    .map_err(|e| de::Error::custom(e.message))?;
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("a tagged value has one key"));
                }
                return Ok(value);
            }
            first = false;
            if self.depth > MAX_NESTING_DEPTH {
                return Err(de::Error::custom("too deep"));
            }
            check_field_name(&key).map_err(de::Error::custom)?;
            let item = map.next_value_seed(ValueSeed {
                depth: self.depth + 1,
            })?;
            fields.insert(key.into_owned(), item);
        }
        if first && self.depth > MAX_NESTING_DEPTH {
            return Err(de::Error::custom("too deep"));
        }
        Ok(Value::Object(fields.into()))
    }
}

fn too_deep(path: Path<'_>) -> DecodeError {
    DecodeError::new(
        path.to_string(),
        format!("nested more than {MAX_NESTING_DEPTH} levels deep"),
    )
}

fn decode_tagged(key: &str, payload: &Json, path: Path<'_>) -> Result<Value, DecodeError> {
    if !matches!(key, "$integer" | "$float" | "$bytes") {
        return Err(DecodeError::new(
            path.to_string(),
            format!("`{key}` is not a known encoding; keys starting with `$` are reserved"),
        ));
    }
    let text = payload.as_str().ok_or_else(|| {
        DecodeError::new(
            path.to_string(),
            format!("`{key}` must hold a base64 string"),
        )
    })?;
    let bytes = BASE64.decode(text).map_err(|e| {
        DecodeError::new(
            path.to_string(),
            format!("`{key}` holds invalid base64: {e}"),
        )
    })?;
    let eight = |bytes: Vec<u8>| -> Result<[u8; 8], DecodeError> {
        bytes.try_into().map_err(|b: Vec<u8>| {
            DecodeError::new(
                path.to_string(),
                format!("`{key}` must hold exactly 8 bytes, got {}", b.len()),
            )
        })
    };
    match key {
        "$integer" => Ok(Value::Int64(i64::from_le_bytes(eight(bytes)?))),
        "$float" => Ok(Value::Float64(f64::from_le_bytes(eight(bytes)?))),
        "$bytes" => Ok(Value::Bytes(bytes)),
        _ => unreachable!("checked above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::arb_value;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Encoding then decoding gives the same value, through JSON text too
        /// (NaN, ±∞ and -0 included, which travel as `$float`).
        #[test]
        fn encode_decode_round_trips(value in arb_value()) {
            let json = value.to_json();
            prop_assert_eq!(Value::from_json(&json, "v")?, value.clone());
            prop_assert_eq!(Value::from_json_str(&json.to_string(), "v")?, value);
        }

        /// The direct writer produces exactly the text of the JSON tree.
        #[test]
        fn the_direct_writer_matches_the_tree(value in arb_value()) {
            prop_assert_eq!(value.to_json_text(), value.to_json().to_string());
        }
    }

    /// JSON shaped to reach every branch of decoding: tagged keys with good
    /// and bad payloads, reserved keys among others, deep nesting, numbers.
    fn arb_convexish_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            any::<f64>().prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            prop_oneof![
                Just("AQAAAAAAAAA=".to_string()),
                Just("AQ==".to_string()),
                Just("not base64!".to_string()),
                "[a-z$]{0,3}",
            ]
            .prop_map(Json::String),
        ];
        leaf.prop_recursive(20, 200, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("$integer"),
                            Just("$float"),
                            Just("$bytes"),
                            Just("$set"),
                            Just("a"),
                            Just("b"),
                            Just(""),
                        ],
                        inner
                    ),
                    0..3
                )
                .prop_map(|entries| {
                    Json::Object(
                        entries
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The one-pass text decoder accepts exactly what the tree decoder
        /// accepts, with the same result; errors come from the tree decoder.
        #[test]
        fn text_decoding_agrees_with_tree_decoding(json in arb_convexish_json()) {
            let text = json.to_string();
            let by_tree = Value::from_json(&json, "v");
            let by_text = Value::from_json_str(&text, "v");
            prop_assert_eq!(by_text, by_tree);
        }
    }

    #[test]
    fn integers_floats_and_bytes_use_tagged_encodings() {
        assert_eq!(
            Value::Int64(1).to_json(),
            json!({"$integer": "AQAAAAAAAAA="})
        );
        assert_eq!(Value::Float64(1.5).to_json(), json!(1.5));
        assert_eq!(
            Value::Float64(-0.0).to_json(),
            json!({"$float": "AAAAAAAAAIA="})
        );
        assert_eq!(
            Value::Bytes(vec![1, 2]).to_json(),
            json!({"$bytes": "AQI="})
        );
        let nan = Value::from_json(&Value::Float64(f64::NAN).to_json(), "x").unwrap();
        assert!(nan.as_f64().unwrap().is_nan());
    }

    #[test]
    fn decoding_errors_name_the_path() {
        let bad = json!({"items": [1, 2, 3, {"name": {"$integer": "AQ=="}}]});
        let err = Value::from_json(&bad, "args").unwrap_err();
        assert_eq!(err.path, "args.items[3].name");
        assert!(err.message.contains("8 bytes"), "{err}");

        let err = Value::from_json(&json!({"a": {"$set": []}}), "args").unwrap_err();
        assert_eq!(err.path, "args.a");
        assert!(err.message.contains("reserved"), "{err}");

        let err = Value::from_json(&json!({"ok": 1, "$bad": 1}), "args").unwrap_err();
        assert_eq!(err.path, "args.$bad");

        let err = Value::from_json_str("{not json", "args").unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn too_deep_nesting_is_refused_without_recursion_blowup() {
        let mut v = json!(1);
        for _ in 0..1_000 {
            v = json!([v]);
        }
        let err = Value::from_json(&v, "args").unwrap_err();
        assert!(err.message.contains("levels deep"));
    }
}
