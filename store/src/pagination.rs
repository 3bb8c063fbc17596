//! Pagination as Convex's clients drive it: `paginationOpts` in, a
//! `PaginationResult` out, and the cursors and journals between them.
//!
//! A cursor names a position in one query's index range: the key of the last
//! row a page passed. It travels as base64url of the key followed by an
//! HMAC-SHA-256 tag (truncated to [`TAG_LEN`] bytes) over the key and the
//! query's *binding* — its table, index, range and order — under the
//! deployment's [`CursorKey`]. So a cursor that was edited, or that came from
//! another query (another organization's list, another index), fails its tag
//! and is `INVALID_ARGUMENT`; no cursor can move a scan outside its range.
//!
//! A live query's **journal** is the end cursor of its page: the first run of a
//! page without `endCursor` ends after `numItems` rows and records where; every
//! re-run (and a re-add after a reconnect, which sends the journal back) ends
//! at that same key, so pages grow and shrink instead of shifting rows into
//! their neighbours. A journal is a cursor and is checked the same way.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use livebase_schema::typed::{object_fields, Type};
use livebase_schema::{v, Object, ValidationError, Validator, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bytes of the HMAC tag a cursor carries: 128 bits, past any guessing.
pub const TAG_LEN: usize = 16;
/// Most items one page may ask for (`paginationOpts.numItems`): Convex's
/// per-query document limit.
pub const MAX_PAGE_ITEMS: usize = 16_384;
/// A page re-run to a fixed end that holds at least this many times its
/// `numItems` reports `SplitRecommended`, with a `splitCursor` at its middle.
pub const SPLIT_FACTOR: usize = 2;

/// The deployment's key for cursors and journals.
pub struct CursorKey([u8; 32]);

impl CursorKey {
    /// The key derived from the deployment's secret (the token secret, so
    /// cursors stay valid across restarts and between servers that share it).
    pub fn derive(secret: &[u8]) -> CursorKey {
        let mut hash = Sha256::new();
        hash.update(b"livebase pagination cursors v1\0");
        hash.update(secret);
        CursorKey(hash.finalize().into())
    }

    /// A key of this process alone (tests, and a database opened without a
    /// data folder): its cursors die with the process.
    pub fn random() -> Arc<CursorKey> {
        Arc::new(CursorKey(rand::random()))
    }

    /// A key for another purpose, derived from this one (HMAC of
    /// `purpose`), so that what it signs can never pass for a cursor.
    pub fn subkey(&self, purpose: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"livebase subkey v1\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn tag(&self, binding: &[u8], key: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(&(binding.len() as u64).to_le_bytes());
        mac.update(binding);
        mac.update(key);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// The cursor for position `key` of the query bound by `binding`.
    pub fn encode(&self, binding: &[u8], key: &[u8]) -> String {
        let mut bytes = key.to_vec();
        bytes.extend_from_slice(&self.tag(binding, key));
        B64.encode(bytes)
    }

    /// The position a cursor names, if this query issued it.
    pub fn decode(&self, binding: &[u8], cursor: &str) -> Result<Vec<u8>> {
        let bad = || Error::invalid("the pagination cursor is not one this query issued");
        let bytes = B64.decode(cursor).map_err(|_| bad())?;
        if bytes.len() < TAG_LEN {
            return Err(bad());
        }
        let (key, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(&(binding.len() as u64).to_le_bytes());
        mac.update(binding);
        mac.update(key);
        // `verify_truncated_left` compares in constant time.
        mac.verify_truncated_left(tag).map_err(|_| bad())?;
        Ok(key.to_vec())
    }
}

/// The key a transaction signs and checks cursors with unless its caller
/// sets the deployment's (the runtime's `Executor::with_cursor_key` does,
/// for every call): random, one per process.
pub fn process_key() -> Arc<CursorKey> {
    static KEY: OnceLock<Arc<CursorKey>> = OnceLock::new();
    KEY.get_or_init(CursorKey::random).clone()
}

/// Convex's `paginationOpts`, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PaginationOpts {
    pub num_items: usize,
    pub cursor: Option<String>,
    pub end_cursor: Option<String>,
    pub maximum_rows_read: Option<usize>,
    pub maximum_bytes_read: Option<usize>,
}

fn count(opts: &Object, name: &str, max: usize) -> Result<Option<usize>> {
    match opts.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n.fract() == 0.0 && n >= 0.0 => Ok(Some((n as usize).min(max))),
            _ => Err(Error::invalid(format!(
                "paginationOpts.{name}: expected a whole number of at least 0, found {}",
                v.to_json_text()
            ))),
        },
    }
}

fn opt_string(opts: &Object, name: &str) -> Result<Option<String>> {
    match opts.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(Error::invalid(format!(
            "paginationOpts.{name}: expected a string or null, found {}",
            v.to_json_text()
        ))),
    }
}

impl PaginationOpts {
    /// The first page of `num_items`.
    pub fn first(num_items: usize) -> PaginationOpts {
        PaginationOpts {
            num_items,
            ..PaginationOpts::default()
        }
    }

    /// From the `paginationOpts` argument (already checked against
    /// `v::pagination_opts()`; checked again here for direct callers).
    pub fn from_value(value: &Value) -> Result<PaginationOpts> {
        let Value::Object(opts) = value else {
            return Err(Error::invalid(format!(
                "paginationOpts: expected an object, found {}",
                value.to_json_text()
            )));
        };
        let num_items = count(opts, "numItems", MAX_PAGE_ITEMS)?.ok_or_else(|| {
            Error::invalid("paginationOpts.numItems: expected a whole number, found nothing")
        })?;
        Ok(PaginationOpts {
            num_items,
            cursor: opt_string(opts, "cursor")?,
            end_cursor: opt_string(opts, "endCursor")?,
            maximum_rows_read: count(opts, "maximumRowsRead", usize::MAX)?,
            maximum_bytes_read: count(opts, "maximumBytesRead", usize::MAX)?,
        })
    }
}

/// Convex's `PaginationResult`: a page of `T` (documents as values for the
/// untyped API, `Doc<Todo>` for a typed query).
#[derive(Clone, Debug, PartialEq)]
pub struct PaginationResult<T = Value> {
    pub page: Vec<T>,
    pub is_done: bool,
    pub continue_cursor: String,
    pub split_cursor: Option<String>,
    /// `"SplitRecommended"` or `"SplitRequired"` when the page should split.
    pub page_status: Option<&'static str>,
}

/// The page statuses a [`PaginationResult`] may carry.
const PAGE_STATUSES: [&str; 2] = ["SplitRecommended", "SplitRequired"];

impl<T> PaginationResult<T> {
    /// The same page with each item converted by `f`; the first error stops.
    pub fn try_map<U, E>(
        self,
        f: impl FnMut(T) -> std::result::Result<U, E>,
    ) -> std::result::Result<PaginationResult<U>, E> {
        Ok(PaginationResult {
            page: self
                .page
                .into_iter()
                .map(f)
                .collect::<std::result::Result<_, E>>()?,
            is_done: self.is_done,
            continue_cursor: self.continue_cursor,
            split_cursor: self.split_cursor,
            page_status: self.page_status,
        })
    }
}

impl<T: Type> PaginationResult<T> {
    /// The value a query returns: `{page, isDone, continueCursor,
    /// splitCursor?, pageStatus?}`.
    pub fn into_value(self) -> Value {
        let mut out = Object::new();
        out.insert(
            "page".into(),
            Value::Array(self.page.into_iter().map(T::into_value).collect()),
        );
        out.insert("isDone".into(), Value::Boolean(self.is_done));
        out.insert("continueCursor".into(), self.continue_cursor.into());
        if let Some(split) = self.split_cursor {
            out.insert("splitCursor".into(), split.into());
        }
        if let Some(status) = self.page_status {
            out.insert("pageStatus".into(), status.into());
        }
        Value::Object(out.into())
    }
}

/// The validator of a [`PaginationResult`] whose page's items are `item`s.
pub fn result_validator(item: Validator) -> Validator {
    v::object([
        ("page", v::array(item)),
        ("isDone", v::boolean()),
        ("continueCursor", v::string()),
        ("splitCursor", v::optional(v::string())),
        (
            "pageStatus",
            v::optional(v::union(PAGE_STATUSES.map(v::literal))),
        ),
    ])
}

/// A paginated query's result, typed by its page's items: what codegen
/// declares as `PaginationResult<T>`.
impl<T: Type> Type for PaginationResult<T> {
    fn validator() -> Validator {
        result_validator(T::validator())
    }

    fn from_value(value: Value, path: &str) -> std::result::Result<Self, ValidationError> {
        let mut fields = object_fields(value, path)?;
        let mut field = |name: &str| (fields.remove(name), format!("{path}.{name}"));
        let (page, page_path) = field("page");
        let (is_done, is_done_path) = field("isDone");
        let (cursor, cursor_path) = field("continueCursor");
        let (split, split_path) = field("splitCursor");
        let (status, status_path) = field("pageStatus");
        let page_status = match Option::<String>::from_field(status, &status_path)? {
            None => None,
            Some(s) => Some(
                PAGE_STATUSES
                    .into_iter()
                    .find(|known| *known == s)
                    .ok_or_else(|| {
                        ValidationError::new(status_path, format!("unknown page status `{s}`"))
                    })?,
            ),
        };
        Ok(PaginationResult {
            page: Vec::from_field(page, &page_path)?,
            is_done: bool::from_field(is_done, &is_done_path)?,
            continue_cursor: String::from_field(cursor, &cursor_path)?,
            split_cursor: Option::from_field(split, &split_path)?,
            page_status,
        })
    }

    fn into_value(self) -> Value {
        PaginationResult::into_value(self)
    }
}

/// `paginationOpts`: `v::pagination_opts()`.
impl Type for PaginationOpts {
    fn validator() -> Validator {
        v::pagination_opts()
    }

    /// A refusal keeps [`PaginationOpts::from_value`]'s words, which name
    /// the field (`paginationOpts.numItems: …`).
    fn from_value(value: Value, path: &str) -> std::result::Result<Self, ValidationError> {
        PaginationOpts::from_value(&value).map_err(|e| {
            let message = match &e {
                Error::App { message, .. } => message.clone(),
                other => other.to_string(),
            };
            match message.split_once(": ") {
                Some((at, what)) => ValidationError::new(at, what),
                None => ValidationError::new(path, message),
            }
        })
    }

    fn into_value(self) -> Value {
        let mut out = Object::new();
        let number = |n: usize| Value::Float64(n as f64);
        out.insert("numItems".into(), number(self.num_items));
        out.insert(
            "cursor".into(),
            self.cursor.map_or(Value::Null, Value::from),
        );
        if let Some(end) = self.end_cursor {
            out.insert("endCursor".into(), end.into());
        }
        if let Some(n) = self.maximum_rows_read {
            out.insert("maximumRowsRead".into(), number(n));
        }
        if let Some(n) = self.maximum_bytes_read {
            out.insert("maximumBytesRead".into(), number(n));
        }
        Value::Object(out.into())
    }
}

impl From<PaginationResult> for Value {
    fn from(r: PaginationResult) -> Value {
        r.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typed page's value is one its validator accepts, and reads back.
    #[test]
    fn a_typed_page_is_what_its_validator_says() {
        let page = PaginationResult {
            page: vec!["a".to_string(), "b".to_string()],
            is_done: false,
            continue_cursor: "c".into(),
            split_cursor: Some("s".into()),
            page_status: Some("SplitRecommended"),
        };
        let value = page.clone().into_value();
        let validator = <PaginationResult<String> as Type>::validator();
        assert_eq!(validator.validate(&value, "result"), Ok(()));
        assert_eq!(
            <PaginationResult<String> as Type>::from_value(value, "result"),
            Ok(page)
        );
        let bare = PaginationResult::<String> {
            page: Vec::new(),
            is_done: true,
            continue_cursor: String::new(),
            split_cursor: None,
            page_status: None,
        };
        assert_eq!(validator.validate(&bare.into_value(), "result"), Ok(()));
        let opts = PaginationOpts {
            num_items: 3,
            cursor: Some("c".into()),
            end_cursor: Some("e".into()),
            maximum_rows_read: Some(10),
            maximum_bytes_read: None,
        };
        let value = Type::into_value(opts.clone());
        assert_eq!(v::pagination_opts().validate(&value, "opts"), Ok(()));
        assert_eq!(
            <PaginationOpts as Type>::from_value(value, "opts"),
            Ok(opts)
        );
    }

    #[test]
    fn a_cursor_round_trips_only_under_its_binding_and_key() {
        let key = CursorKey::derive(b"a secret of the deployment......");
        let cursor = key.encode(b"items/by_org/a", b"\x01key");
        assert_eq!(key.decode(b"items/by_org/a", &cursor).unwrap(), b"\x01key");
        // Another query's binding, another deployment's key, an edit.
        assert!(key.decode(b"items/by_org/b", &cursor).is_err());
        let other = CursorKey::derive(b"another secret..................");
        assert!(other.decode(b"items/by_org/a", &cursor).is_err());
        let mut bytes = B64.decode(&cursor).unwrap();
        bytes[0] ^= 1;
        assert!(key.decode(b"items/by_org/a", &B64.encode(bytes)).is_err());
        assert!(key.decode(b"items/by_org/a", "short").is_err());
        assert!(key.decode(b"items/by_org/a", "not base64!").is_err());
    }

    #[test]
    fn opts_are_read_and_checked() {
        let v = livebase_schema::obj! { "numItems" => 10.0, "cursor" => Value::Null, "id" => -1.0 };
        assert_eq!(
            PaginationOpts::from_value(&v).unwrap(),
            PaginationOpts::first(10)
        );
        let v = livebase_schema::obj! { "numItems" => 1.5, "cursor" => Value::Null };
        let err = PaginationOpts::from_value(&v).unwrap_err();
        assert!(err.to_string().contains("numItems"), "{err}");
    }
}
