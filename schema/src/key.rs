//! Order-preserving index keys. A key is the concatenation of self-delimiting
//! encodings of values such that comparing two keys as bytes (memcmp, as SQLite
//! compares BLOBs) gives the same answer as comparing the value tuples in Convex's
//! order. Index ranges, read sets and write sets are therefore byte intervals.
//!
//! Encoding, one tag byte per value:
//! `0x02` missing field (sorts before null, like `undefined`), `0x03` null,
//! `0x04` int64 (big-endian, sign bit flipped), `0x05` float64 (total-order bits),
//! `0x06` boolean (+ 0/1), `0x07` string and `0x08` bytes (0x00 escaped as
//! 0x00 0xFF, terminated by 0x00), `0x09` array (elements, then 0x00), `0x0A`
//! object (per field 0x01 + escaped name + value, then 0x00). Every encoding
//! is self-delimiting, so tuples concatenate without separators. One encoding
//! can still be a byte prefix of another (`"b"` = 07 62 00 is a prefix of
//! `"b\0"` = 07 62 00 FF 00): the keys whose leading value equals `v` are
//! exactly those in `[enc(v), enc(v) ++ [0xFF])`, since after a whole value a key
//! continues with a tag byte (below 0xFF) or ends.

use crate::value::Value;

const TAG_MISSING: u8 = 0x02;
const TAG_NULL: u8 = 0x03;
const TAG_INT64: u8 = 0x04;
const TAG_FLOAT64: u8 = 0x05;
const TAG_BOOLEAN: u8 = 0x06;
const TAG_STRING: u8 = 0x07;
const TAG_BYTES: u8 = 0x08;
const TAG_ARRAY: u8 = 0x09;
const TAG_OBJECT: u8 = 0x0A;

/// Appends the order-preserving encoding of `value` (`None` = a missing field).
pub fn encode_value(out: &mut Vec<u8>, value: Option<&Value>) {
    let Some(value) = value else {
        out.push(TAG_MISSING);
        return;
    };
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Int64(i) => {
            out.push(TAG_INT64);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Float64(f) => {
            out.push(TAG_FLOAT64);
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::Boolean(b) => {
            out.push(TAG_BOOLEAN);
            out.push(u8::from(*b));
        }
        Value::String(s) => {
            out.push(TAG_STRING);
            escape(out, s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(TAG_BYTES);
            escape(out, b);
        }
        Value::Array(items) => {
            out.push(TAG_ARRAY);
            for item in items {
                encode_value(out, Some(item));
            }
            out.push(0x00);
        }
        Value::Object(fields) => {
            out.push(TAG_OBJECT);
            for (name, item) in fields {
                out.push(0x01);
                escape(out, name.as_bytes());
                encode_value(out, Some(item));
            }
            out.push(0x00);
        }
    }
}

fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.push(0x00);
}

/// The key of a tuple of values, in order.
pub fn encode_tuple<'a>(values: impl IntoIterator<Item = Option<&'a Value>>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        encode_value(&mut out, v);
    }
    out
}

/// The smallest byte string greater than every string that starts with `prefix`,
/// or `None` when there is none (the prefix is empty or all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::arb_value;
    use proptest::prelude::*;

    fn key(v: &Value) -> Vec<u8> {
        encode_tuple([Some(v)])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn key_order_equals_value_order(a in arb_value(), b in arb_value()) {
            prop_assert_eq!(key(&a).cmp(&key(&b)), a.cmp(&b));
        }

        #[test]
        fn tuple_order_equals_lexicographic_value_order(
            a in proptest::collection::vec(arb_value(), 1..4),
            b in proptest::collection::vec(arb_value(), 1..4),
        ) {
            let ka = encode_tuple(a.iter().map(Some));
            let kb = encode_tuple(b.iter().map(Some));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }

        #[test]
        fn keys_with_a_prefix_are_below_prefix_end(a in arb_value(), b in arb_value()) {
            let p = key(&a);
            let mut longer = p.clone();
            encode_value(&mut longer, Some(&b));
            let end = prefix_end(&p).unwrap();
            prop_assert!(p <= longer && longer < end);
        }
    }

    #[test]
    fn missing_sorts_before_null_and_floats_in_total_order() {
        assert!(encode_tuple([None]) < key(&Value::Null));
        let floats = [
            f64::NEG_INFINITY,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            1.0,
            f64::INFINITY,
            f64::NAN,
        ];
        for w in floats.windows(2) {
            assert!(
                key(&Value::Float64(w[0])) < key(&Value::Float64(w[1])),
                "{w:?}"
            );
        }
    }
}
