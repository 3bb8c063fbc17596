//! Target `index_key`: the order-preserving index-key encoding
//! (`livebase_schema::key`), which every index range, read set and write set
//! is made of.
//!
//! The first byte picks a mode. Even: the rest of the input is read as two
//! value tuples (any type, NaN payloads, `-0`, zero and `0xFF` bytes in
//! strings, bytes and field names), and the invariants are: each key decodes
//! back to its tuple; comparing two keys as bytes gives the order of the
//! tuples; a key that starts with a tuple's key lies in `[enc(a),
//! enc(a) ++ [0xFF])` — the interval the query planner uses for "leading
//! values equal `a`" — and a key whose leading values differ does not. Odd:
//! the rest is taken as a key as-is; if it decodes at all, encoding what it
//! decodes to gives the same bytes (no two tuples share a key).

use livebase_schema::key::encode_tuple;
use livebase_schema::{Object, Value};

use crate::keycodec::decode_tuple;
use crate::Target;

pub const TARGET: Target = Target {
    name: "index_key",
    checks:
        "index keys: decode(encode(t)) == t; key order == value order; prefix intervals; canonical",
    run,
    dictionary: &[
        &[0x00, 0xFF],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x7F, 0xF8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01],
        &[0xC3, 0xBF],
        &[0xF4, 0x8F, 0xBF, 0xBF],
    ],
};

type Tuple = Vec<Option<Value>>;

fn run(data: &[u8]) -> String {
    let Some((&mode, rest)) = data.split_first() else {
        return "empty".into();
    };
    if !mode.is_multiple_of(2) {
        return match decode_tuple(rest) {
            Some(tuple) => {
                assert_eq!(
                    encode_tuple(tuple.iter().map(Option::as_ref)),
                    rest,
                    "bytes that decode are not the encoding of what they decode to"
                );
                format!("raw key of {} values", tuple.len().min(4))
            }
            None => "raw not a key".into(),
        };
    }
    let mut input = Input(rest);
    let a = input.tuple();
    let b = input.tuple();
    let (ka, kb) = (key(&a), key(&b));
    assert_eq!(
        decode_tuple(&ka).as_ref(),
        Some(&a),
        "decode(encode(a)) != a"
    );
    assert_eq!(
        decode_tuple(&kb).as_ref(),
        Some(&b),
        "decode(encode(b)) != b"
    );
    assert_eq!(ka.cmp(&kb), a.cmp(&b), "key order differs from value order");

    // The keys whose leading values equal `a` are [enc(a), enc(a) ++ FF).
    let end = [ka.as_slice(), &[0xFF]].concat();
    let longer = [ka.as_slice(), &kb].concat();
    assert!(
        ka <= longer && longer < end,
        "a longer key left its prefix interval"
    );
    if !a.is_empty() && a.len() <= b.len() {
        let leads_with_a = b[..a.len()] == a[..];
        assert_eq!(
            ka <= kb && kb < end,
            leads_with_a,
            "the prefix interval of a holds b exactly when b starts with a's values"
        );
    }
    format!("{:?}", a.cmp(&b))
}

fn key(t: &Tuple) -> Vec<u8> {
    encode_tuple(t.iter().map(Option::as_ref))
}

/// Reads values from fuzzer bytes; running out of bytes reads zeros, so
/// every input makes some value.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes(8).try_into().expect("8 bytes"))
    }

    fn tuple(&mut self) -> Tuple {
        let n = self.byte() % 4;
        (0..n)
            .map(|_| {
                if self.byte().is_multiple_of(8) {
                    None
                } else {
                    Some(self.value(0))
                }
            })
            .collect()
    }

    /// A short string over characters that matter to the encoding: NUL
    /// (escaped), high code points (UTF-8 bytes up to 0xF4), and a few
    /// letters so that strings share prefixes.
    fn string(&mut self) -> String {
        const CHARS: [char; 8] = ['a', 'b', '\0', '\u{1}', '\u{7f}', 'ÿ', '\u{10FFFF}', 'é'];
        let n = self.byte() % 5;
        (0..n)
            .map(|_| CHARS[usize::from(self.byte() % 8)])
            .collect()
    }

    fn value(&mut self, depth: usize) -> Value {
        let kind = self.byte() % if depth >= 3 { 6 } else { 8 };
        match kind {
            0 => Value::Null,
            1 => Value::Int64(self.small_or_raw() as i64),
            2 => Value::Float64(f64::from_bits(self.small_or_raw())),
            3 => Value::Boolean(self.byte() % 2 == 1),
            4 => Value::String(self.string()),
            5 => {
                let n = usize::from(self.byte() % 5);
                Value::Bytes(self.bytes(n))
            }
            6 => {
                let n = self.byte() % 4;
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            _ => {
                let n = self.byte() % 4;
                let mut fields = Object::new();
                for _ in 0..n {
                    let name = self.string();
                    let value = self.value(depth + 1);
                    fields.insert(name, value);
                }
                Value::Object(fields.into())
            }
        }
    }

    /// Mostly a few values near each other and the edges (so that compared
    /// keys are often equal or adjacent), sometimes 8 raw bytes.
    fn small_or_raw(&mut self) -> u64 {
        const EDGES: [u64; 8] = [
            0,
            1,
            u64::MAX,
            1 << 63,
            (1 << 63) - 1,
            0x7FF0_0000_0000_0000, // +inf
            0x7FF8_0000_0000_0001, // a NaN with a payload
            0xFFF0_0000_0000_0000, // -inf
        ];
        match self.byte() % 4 {
            0 => self.u64(),
            n => EDGES[usize::from(self.byte() % 8)].wrapping_add(u64::from(n) - 1),
        }
    }
}
