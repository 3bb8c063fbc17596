//! A reference decoder for index keys (`livebase_schema::key`), written from
//! that module's description of the encoding. The server never decodes keys;
//! the fuzzer does, to check that the encoding is what it says: every key
//! decodes back to the values it was made from, and any byte string that
//! decodes at all is exactly the encoding of what it decodes to (so no two
//! value tuples share a key).

use livebase_schema::{Object, Value};

/// Deepest nesting the decoder follows; hostile bytes can nest arbitrarily,
/// and this decoder must not overflow the stack on them.
const MAX_DEPTH: usize = 64;

/// Decodes a whole key into its values (`None` = a missing field). `None`
/// when the bytes are not a well-formed key.
pub fn decode_tuple(key: &[u8]) -> Option<Vec<Option<Value>>> {
    let mut rest = key;
    let mut out = Vec::new();
    while !rest.is_empty() {
        out.push(decode_value(&mut rest, 0)?);
    }
    Some(out)
}

/// Decodes one value from the front of `rest`.
fn decode_value(rest: &mut &[u8], depth: usize) -> Option<Option<Value>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (&tag, tail) = rest.split_first()?;
    *rest = tail;
    Some(Some(match tag {
        0x02 => return Some(None),
        0x03 => Value::Null,
        0x04 => Value::Int64((u64::from_be_bytes(take8(rest)?) ^ (1 << 63)) as i64),
        0x05 => {
            let ordered = u64::from_be_bytes(take8(rest)?);
            let bits = if ordered >> 63 == 1 {
                ordered ^ (1 << 63)
            } else {
                !ordered
            };
            Value::Float64(f64::from_bits(bits))
        }
        0x06 => match take(rest, 1)?[0] {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            _ => return None,
        },
        0x07 => Value::String(String::from_utf8(unescape(rest)?).ok()?),
        0x08 => Value::Bytes(unescape(rest)?),
        0x09 => {
            let mut items = Vec::new();
            loop {
                if rest.first() == Some(&0x00) {
                    *rest = &rest[1..];
                    break;
                }
                // An array holds values, never a missing field.
                items.push(decode_value(rest, depth + 1)??);
            }
            Value::Array(items)
        }
        0x0A => {
            let mut fields = Object::new();
            let mut last: Option<String> = None;
            loop {
                match take(rest, 1)?[0] {
                    0x00 => break,
                    0x01 => {}
                    _ => return None,
                }
                let name = String::from_utf8(unescape(rest)?).ok()?;
                // Fields are encoded in name order, each once.
                if last.as_ref().is_some_and(|l| *l >= name) {
                    return None;
                }
                let value = decode_value(rest, depth + 1)??;
                last = Some(name.clone());
                fields.insert(name, value);
            }
            Value::Object(fields.into())
        }
        _ => return None,
    }))
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take8(rest: &mut &[u8]) -> Option<[u8; 8]> {
    take(rest, 8)?.try_into().ok()
}

/// Reads escaped bytes up to their terminator: `00 FF` is a zero byte, a
/// lone `00` ends them.
fn unescape(rest: &mut &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let b = take(rest, 1)?[0];
        if b != 0x00 {
            out.push(b);
        } else if rest.first() == Some(&0xFF) {
            *rest = &rest[1..];
            out.push(0x00);
        } else {
            return Some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use livebase_schema::key::encode_tuple;

    #[test]
    fn decodes_what_the_encoder_wrote() {
        let mut object = Object::new();
        object.insert("a\0".into(), Value::Bytes(vec![0, 0xFF, 0]));
        object.insert(
            "b".into(),
            Value::Array(vec![Value::Null, Value::Int64(-3)]),
        );
        let tuple = vec![
            None,
            Some(Value::String("x\0y".into())),
            Some(Value::Float64(-0.0)),
            Some(Value::Float64(f64::NAN)),
            Some(Value::Boolean(true)),
            Some(Value::Object(object.into())),
            Some(Value::Int64(i64::MIN)),
        ];
        let key = encode_tuple(tuple.iter().map(Option::as_ref));
        assert_eq!(decode_tuple(&key), Some(tuple));
    }

    #[test]
    fn refuses_malformed_keys() {
        for bad in [
            &[0x04, 1, 2][..],
            &[0x06, 2],
            &[0x07, b'a'],
            &[0x07, 0xC3, 0x00],
            &[0x0B],
            &[0x0A, 0x01, b'b', 0x00, 0x03, 0x01, b'a', 0x00, 0x03, 0x00],
            &[0x09, 0x02, 0x00],
        ] {
            assert_eq!(decode_tuple(bad), None, "{bad:x?}");
        }
        assert_eq!(decode_tuple(&[0x09; 100_000]), None, "deep nesting");
    }
}
