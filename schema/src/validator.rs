//! Validators: the shapes that function arguments, return values and table
//! documents must have, built with constructors that read like Convex's
//! (`v::string()`, `v::id("users")`, `v::optional(..)` …), checked against values
//! with errors that name the path and what was expected and found, and described
//! as Convex's validator JSON for code generation.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Map, Value as Json};

use crate::id::DocumentId;
use crate::value::{check_field_name, Object, Path, Value};

/// The shape a value must have.
///
/// `Optional` only means something as an object field, where the field may then
/// be absent; anywhere else it means "this, or missing", and a present value is
/// checked against the inner validator. A present `null` is not "missing".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validator {
    String,
    /// A string of at most this many characters (Unicode scalar values), made
    /// by `v::string().max_len(n)`: the bound on what one field can make the
    /// server store, read and send.
    BoundedString(usize),
    Float64,
    Int64,
    Boolean,
    Null,
    Bytes,
    /// A string id of a document in the named table.
    Id(String),
    Optional(Box<Validator>),
    Array(Box<Validator>),
    /// Exactly these fields: unknown fields are rejected, and a field may be absent
    /// only when its validator is [`Validator::Optional`].
    Object(BTreeMap<String, Validator>),
    /// Any one of the alternatives; an empty union accepts nothing.
    Union(Vec<Validator>),
    /// Exactly this value (compared in Convex's order, so `1n` is not `1.0`).
    Literal(Value),
    /// An object with arbitrary field names, each name checked as a string against
    /// `keys` and each value against `values`.
    Record {
        keys: Box<Validator>,
        values: Box<Validator>,
    },
    Any,
}

/// A value that does not match its validator, or a validator that is not well
/// formed (see [`Validator::check_definition`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Where the problem is, e.g. `args.items[3].name`.
    pub path: String,
    /// What was expected there and what was found.
    pub message: String,
}

impl ValidationError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Validator constructors, named as in Convex's `v` so that argument and schema
/// definitions read the same in Rust as in the seed's TypeScript.
pub mod v {
    use super::*;

    pub fn string() -> Validator {
        Validator::String
    }

    pub fn float64() -> Validator {
        Validator::Float64
    }

    /// Convex's name for [`float64`]: JavaScript numbers are float64.
    pub fn number() -> Validator {
        Validator::Float64
    }

    pub fn int64() -> Validator {
        Validator::Int64
    }

    pub fn boolean() -> Validator {
        Validator::Boolean
    }

    pub fn null() -> Validator {
        Validator::Null
    }

    pub fn bytes() -> Validator {
        Validator::Bytes
    }

    pub fn id(table: impl Into<String>) -> Validator {
        Validator::Id(table.into())
    }

    pub fn optional(inner: Validator) -> Validator {
        Validator::Optional(Box::new(inner))
    }

    pub fn array(inner: Validator) -> Validator {
        Validator::Array(Box::new(inner))
    }

    /// An object with exactly these fields. A name given twice keeps the last
    /// validator.
    pub fn object<'a>(fields: impl IntoIterator<Item = (&'a str, Validator)>) -> Validator {
        Validator::Object(
            fields
                .into_iter()
                .map(|(name, validator)| (name.to_string(), validator))
                .collect(),
        )
    }

    pub fn union(alternatives: impl IntoIterator<Item = Validator>) -> Validator {
        Validator::Union(alternatives.into_iter().collect())
    }

    pub fn literal(value: impl Into<Value>) -> Validator {
        Validator::Literal(value.into())
    }

    /// An object used as a map: `keys` checks each field name (as a string; use
    /// `v::string()` or `v::id(..)`), `values` each field value.
    pub fn record(keys: Validator, values: Validator) -> Validator {
        Validator::Record {
            keys: Box::new(keys),
            values: Box::new(values),
        }
    }

    pub fn any() -> Validator {
        Validator::Any
    }

    /// Convex's `paginationOptsValidator`: the `paginationOpts` argument of a
    /// paginated query — `numItems`, the page's start `cursor` (null for the
    /// first page), and optionally its `endCursor`, the client's page `id`
    /// and the read bounds `maximumRowsRead` / `maximumBytesRead`.
    pub fn pagination_opts() -> Validator {
        object([
            ("numItems", number()),
            ("cursor", union([string(), null()])),
            ("endCursor", optional(union([string(), null()]))),
            ("id", optional(number())),
            ("maximumRowsRead", optional(number())),
            ("maximumBytesRead", optional(number())),
        ])
    }
}

impl Validator {
    /// This string validator limited to `max` characters:
    /// `v::string().max_len(200)`.
    ///
    /// # Panics
    ///
    /// On a validator other than `v::string()`: a length bound on anything
    /// else is a mistake in the schema or function definition, found when it
    /// is built at startup.
    pub fn max_len(self, max: usize) -> Validator {
        match self {
            Validator::String | Validator::BoundedString(_) => Validator::BoundedString(max),
            other => panic!("max_len({max}) applies to v::string(), not to {other}"),
        }
    }

    /// Checks `value`; `path` names the root in errors (`args`, `items` …).
    pub fn validate(&self, value: &Value, path: &str) -> Result<(), ValidationError> {
        self.check(value, &Path::Root(path))
    }

    /// Whether this validator lets an object field be absent.
    pub fn is_optional(&self) -> bool {
        matches!(self, Validator::Optional(_))
    }

    /// The fields of an object validator; `None` for any other validator.
    pub fn object_fields(&self) -> Option<&BTreeMap<String, Validator>> {
        match self {
            Validator::Object(fields) => Some(fields),
            _ => None,
        }
    }

    /// Checks that this validator is one Convex would accept: `optional` only at
    /// the top or as an object field, record keys only string-like validators
    /// (string, id, string literals, unions of those), and object field names
    /// valid. The constructors cannot refuse these (they do not fail), so schemas
    /// and function registries call this once, up front.
    pub fn check_definition(&self, path: &str) -> Result<(), ValidationError> {
        self.check_definition_at(&Path::Root(path), true)
    }

    /// Convex's JSON description of this validator (the `json` property of a
    /// validator in the npm package's `values/validators.ts`): `{"type":"string"}`,
    /// `{"type":"id","tableName":"users"}`, `{"type":"object","value":{"f":
    /// {"fieldType":{..},"optional":false}}}` and so on. Float64 is `"number"` and
    /// int64 `"bigint"`, as there. Optionality is a property of an object field,
    /// so an `Optional` outside an object is described by its inner validator.
    pub fn to_json(&self) -> Json {
        match self {
            // Convex's validator JSON has no length bound: clients see a string.
            Validator::String | Validator::BoundedString(_) => json!({"type": "string"}),
            Validator::Float64 => json!({"type": "number"}),
            Validator::Int64 => json!({"type": "bigint"}),
            Validator::Boolean => json!({"type": "boolean"}),
            Validator::Null => json!({"type": "null"}),
            Validator::Bytes => json!({"type": "bytes"}),
            Validator::Any => json!({"type": "any"}),
            Validator::Id(table) => json!({"type": "id", "tableName": table}),
            Validator::Optional(inner) => inner.to_json(),
            Validator::Array(inner) => json!({"type": "array", "value": inner.to_json()}),
            Validator::Object(fields) => {
                let value: Map<String, Json> = fields
                    .iter()
                    .map(|(name, field)| (name.clone(), field_json(field)))
                    .collect();
                json!({"type": "object", "value": value})
            }
            Validator::Union(alternatives) => json!({
                "type": "union",
                "value": alternatives.iter().map(Validator::to_json).collect::<Vec<_>>(),
            }),
            Validator::Literal(value) => json!({"type": "literal", "value": value.to_json()}),
            Validator::Record { keys, values } => json!({
                "type": "record",
                "keys": keys.to_json(),
                "values": field_json(values),
            }),
        }
    }

    fn check(&self, value: &Value, path: &Path<'_>) -> Result<(), ValidationError> {
        match (self, value) {
            (Validator::Any, _)
            | (Validator::String, Value::String(_))
            | (Validator::Float64, Value::Float64(_))
            | (Validator::Int64, Value::Int64(_))
            | (Validator::Boolean, Value::Boolean(_))
            | (Validator::Null, Value::Null)
            | (Validator::Bytes, Value::Bytes(_)) => Ok(()),
            (Validator::BoundedString(max), Value::String(s)) => {
                // Bytes bound characters from above, so most strings are
                // accepted without counting.
                if s.len() <= *max {
                    return Ok(());
                }
                let chars = s.chars().count();
                if chars <= *max {
                    return Ok(());
                }
                Err(ValidationError::new(
                    path.to_string(),
                    format!(
                        "expected a string of at most {max} characters, found {chars} characters"
                    ),
                ))
            }
            (Validator::Id(table), Value::String(s)) => {
                if DocumentId::parse_in(s, table).is_some() {
                    return Ok(());
                }
                let hint = match DocumentId::parse(s) {
                    Some(id) => format!(" (an id in table `{}`)", id.table()),
                    None => String::new(),
                };
                Err(self.mismatch(value, path, &hint))
            }
            (Validator::Optional(inner), _) => inner.check(value, path),
            (Validator::Array(inner), Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    inner.check(item, &Path::Index(path, i))?;
                }
                Ok(())
            }
            (Validator::Object(fields), Value::Object(object)) => {
                check_object(fields, object, path, |_| false)
            }
            (Validator::Union(alternatives), _) => {
                if alternatives.iter().any(|a| a.check(value, path).is_ok()) {
                    Ok(())
                } else {
                    Err(self.mismatch(value, path, ""))
                }
            }
            (Validator::Literal(expected), _) => {
                if expected == value {
                    Ok(())
                } else {
                    Err(self.mismatch(value, path, ""))
                }
            }
            (Validator::Record { keys, values }, Value::Object(object)) => {
                for (key, item) in object {
                    let item_path = Path::Field(path, key);
                    keys.check(&Value::String(key.clone()), &item_path)
                        .map_err(|e| {
                            ValidationError::new(e.path, format!("invalid key: {}", e.message))
                        })?;
                    values.check(item, &item_path)?;
                }
                Ok(())
            }
            _ => Err(self.mismatch(value, path, "")),
        }
    }

    fn mismatch(&self, found: &Value, path: &Path<'_>, hint: &str) -> ValidationError {
        ValidationError::new(
            path.to_string(),
            format!("expected {self}, found {}{hint}", describe(found)),
        )
    }

    fn check_definition_at(
        &self,
        path: &Path<'_>,
        optional_allowed: bool,
    ) -> Result<(), ValidationError> {
        let fail = |message: String| Err(ValidationError::new(path.to_string(), message));
        match self {
            Validator::String
            | Validator::BoundedString(_)
            | Validator::Float64
            | Validator::Int64
            | Validator::Boolean
            | Validator::Null
            | Validator::Bytes
            | Validator::Id(_)
            | Validator::Literal(_)
            | Validator::Any => Ok(()),
            Validator::Optional(inner) => {
                if optional_allowed {
                    inner.check_definition_at(path, true)
                } else {
                    fail(format!(
                        "{self} is only allowed as an object field or at the top level"
                    ))
                }
            }
            Validator::Array(inner) => inner.check_definition_at(&Path::Index(path, 0), false),
            Validator::Object(fields) => {
                for (name, field) in fields {
                    let field_path = Path::Field(path, name);
                    check_field_name(name)
                        .map_err(|m| ValidationError::new(field_path.to_string(), m))?;
                    field.check_definition_at(&field_path, true)?;
                }
                Ok(())
            }
            Validator::Union(alternatives) => {
                for alternative in alternatives {
                    alternative.check_definition_at(path, false)?;
                }
                Ok(())
            }
            Validator::Record { keys, values } => {
                if !keys.is_string_like() {
                    return fail(format!(
                        "record keys must be validated by string, id or string literals, not {keys}"
                    ));
                }
                values.check_definition_at(&Path::Field(path, "<value>"), false)
            }
        }
    }

    /// Whether every value this validator accepts is a string, so it can check
    /// record keys.
    fn is_string_like(&self) -> bool {
        match self {
            Validator::String | Validator::BoundedString(_) | Validator::Id(_) => true,
            Validator::Literal(value) => matches!(value, Value::String(_)),
            Validator::Union(alternatives) => alternatives.iter().all(Validator::is_string_like),
            _ => false,
        }
    }
}

/// Checks `object` against exactly `fields`, skipping fields for which `skip`
/// holds (tables use it for the system fields). Unknown fields are reported
/// before missing ones, because a misspelled field shows up as both and the
/// unknown name is the more useful clue.
pub(crate) fn check_object_fields(
    fields: &BTreeMap<String, Validator>,
    object: &Object,
    path: &str,
    skip: impl Fn(&str) -> bool,
) -> Result<(), ValidationError> {
    check_object(fields, object, &Path::Root(path), skip)
}

fn check_object(
    fields: &BTreeMap<String, Validator>,
    object: &Object,
    path: &Path<'_>,
    skip: impl Fn(&str) -> bool,
) -> Result<(), ValidationError> {
    if let Some(unknown) = object
        .keys()
        .find(|name| !fields.contains_key(*name) && !skip(name))
    {
        let expected = if fields.is_empty() {
            "the object has no fields".to_string()
        } else {
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            format!("expected one of: {}", names.join(", "))
        };
        return Err(ValidationError::new(
            path.to_string(),
            format!("unknown field `{unknown}` ({expected})"),
        ));
    }
    for (name, validator) in fields {
        match object.get(name) {
            Some(item) => validator.check(item, &Path::Field(path, name))?,
            None if validator.is_optional() => {}
            None => {
                return Err(ValidationError::new(
                    path.to_string(),
                    format!("missing required field `{name}`"),
                ))
            }
        }
    }
    Ok(())
}

fn field_json(field: &Validator) -> Json {
    let mut inner = field;
    while let Validator::Optional(next) = inner {
        inner = next;
    }
    json!({"fieldType": inner.to_json(), "optional": field.is_optional()})
}

/// Longest string (in chars) quoted in full in an error message.
const MAX_QUOTED_CHARS: usize = 40;

/// A found value for an error message: its type and, for scalars, the value
/// itself, shortened so that a huge argument does not make a huge error.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Int64(i) => format!("int64 {i}"),
        Value::Float64(f) => format!("float64 {}", Float(*f)),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::String(s) => {
            if s.chars().count() > MAX_QUOTED_CHARS {
                let head: String = s.chars().take(MAX_QUOTED_CHARS).collect();
                format!("string {}…", Json::String(head))
            } else {
                format!("string {}", Json::String(s.clone()))
            }
        }
        Value::Bytes(b) => format!("bytes ({} bytes)", b.len()),
        Value::Array(items) => format!("array ({} elements)", items.len()),
        Value::Object(_) => "object".to_string(),
    }
}

/// A short, TypeScript-like description: `string`, `id("users")`,
/// `array<string>`, `{ name: string, bio?: string }`, `"a" | "b"`.
impl fmt::Display for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Validator::String => f.write_str("string"),
            Validator::BoundedString(max) => write!(f, "string(max {max} chars)"),
            Validator::Float64 => f.write_str("float64"),
            Validator::Int64 => f.write_str("int64"),
            Validator::Boolean => f.write_str("boolean"),
            Validator::Null => f.write_str("null"),
            Validator::Bytes => f.write_str("bytes"),
            Validator::Any => f.write_str("any"),
            Validator::Id(table) => write!(f, "id({})", Json::String(table.clone())),
            Validator::Optional(inner) => write!(f, "optional<{inner}>"),
            Validator::Array(inner) => write!(f, "array<{inner}>"),
            Validator::Object(fields) if fields.is_empty() => f.write_str("{}"),
            Validator::Object(fields) => {
                f.write_str("{ ")?;
                for (i, (name, field)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if is_identifier(name) {
                        f.write_str(name)?;
                    } else {
                        write!(f, "{}", Json::String(name.clone()))?;
                    }
                    let mut inner = field;
                    while let Validator::Optional(next) = inner {
                        inner = next;
                    }
                    let mark = if field.is_optional() { "?" } else { "" };
                    write!(f, "{mark}: {inner}")?;
                }
                f.write_str(" }")
            }
            Validator::Union(alternatives) if alternatives.is_empty() => f.write_str("never"),
            Validator::Union(alternatives) => {
                for (i, alternative) in alternatives.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{alternative}")?;
                }
                Ok(())
            }
            Validator::Literal(value) => match value {
                Value::String(s) => write!(f, "{}", Json::String(s.clone())),
                Value::Int64(i) => write!(f, "{i}n"),
                Value::Float64(x) => write!(f, "{}", Float(*x)),
                Value::Boolean(b) => write!(f, "{b}"),
                Value::Null => f.write_str("null"),
                other => write!(f, "{}", other.to_json()),
            },
            Validator::Record { keys, values } => write!(f, "record<{keys}, {values}>"),
        }
    }
}

/// A float as a person would write it: `3`, `2.5`, `NaN`, and exponent notation
/// for very large or small magnitudes (plain `{}` would print 1e300 as 301 digits).
struct Float(f64);

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.0.abs();
        if magnitude.is_finite() && (magnitude >= 1e16 || (magnitude != 0.0 && magnitude < 1e-6)) {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obj;
    use crate::testing::arb_value;
    use proptest::prelude::*;

    /// The error message for `value` against `validator` at root `args`, asserting
    /// the path.
    fn error(validator: &Validator, value: &Value, path: &str) -> String {
        let err = validator
            .validate(value, "args")
            .expect_err("expected a validation error");
        assert_eq!(err.path, path, "{err}");
        err.message
    }

    fn accepts(validator: &Validator, value: impl Into<Value>) {
        let value = value.into();
        if let Err(e) = validator.validate(&value, "args") {
            panic!("{validator} should accept {value:?}: {e}");
        }
    }

    #[test]
    fn scalar_validators_accept_their_type_and_name_what_they_found() {
        accepts(&v::string(), "hi");
        accepts(&v::float64(), 1.5);
        accepts(&v::number(), f64::NAN);
        accepts(&v::int64(), 7i64);
        accepts(&v::boolean(), false);
        accepts(&v::null(), Value::Null);
        accepts(&v::bytes(), vec![1u8, 2]);

        assert_eq!(
            error(&v::string(), &3.0.into(), "args"),
            "expected string, found float64 3"
        );
        assert_eq!(
            error(&v::float64(), &3i64.into(), "args"),
            "expected float64, found int64 3"
        );
        assert_eq!(
            error(&v::number(), &"3".into(), "args"),
            "expected float64, found string \"3\""
        );
        assert_eq!(
            error(&v::int64(), &3.5.into(), "args"),
            "expected int64, found float64 3.5"
        );
        assert_eq!(
            error(&v::boolean(), &Value::Null, "args"),
            "expected boolean, found null"
        );
        assert_eq!(
            error(&v::null(), &true.into(), "args"),
            "expected null, found boolean true"
        );
        assert_eq!(
            error(&v::bytes(), &Value::Array(vec![Value::Null]), "args"),
            "expected bytes, found array (1 elements)"
        );
        assert_eq!(
            error(&v::string(), &obj! {}, "args"),
            "expected string, found object"
        );
    }

    #[test]
    fn a_bounded_string_counts_characters_and_names_the_path_and_the_bound() {
        let name = v::string().max_len(3);
        accepts(&name, "");
        accepts(&name, "abc");
        // Three characters in nine bytes: characters are what is bounded.
        accepts(&name, "日本語");
        let doc = v::object([("name", name.clone()), ("bio", v::optional(name.clone()))]);
        assert_eq!(
            error(&doc, &obj! {"name" => "abcd"}, "args.name"),
            "expected a string of at most 3 characters, found 4 characters"
        );
        assert_eq!(
            error(
                &doc,
                &obj! {"name" => "ab", "bio" => "日本語日"},
                "args.bio"
            ),
            "expected a string of at most 3 characters, found 4 characters"
        );
        assert_eq!(
            error(&name, &3.0.into(), "args"),
            "expected string(max 3 chars), found float64 3"
        );
        // Clients see a plain string; a bound string can key a record.
        assert_eq!(name.to_json(), json!({"type": "string"}));
        v::record(name, v::any()).check_definition("args").unwrap();
    }

    #[test]
    #[should_panic(expected = "max_len(3) applies to v::string(), not to float64")]
    fn max_len_on_a_non_string_is_refused_when_the_definition_is_built() {
        let _ = v::float64().max_len(3);
    }

    #[test]
    fn extreme_floats_use_exponent_notation() {
        assert_eq!(
            error(&v::null(), &1e300.into(), "args"),
            "expected null, found float64 1e300"
        );
        assert_eq!(
            error(&v::null(), &(-2.5e-9).into(), "args"),
            "expected null, found float64 -2.5e-9"
        );
        assert_eq!(
            error(&v::null(), &f64::NEG_INFINITY.into(), "args"),
            "expected null, found float64 -inf"
        );
        assert_eq!(v::literal(0.25).to_string(), "0.25");
    }

    #[test]
    fn long_strings_are_shortened_in_messages() {
        let long = "x".repeat(1000);
        let message = error(&v::int64(), &long.into(), "args");
        assert!(message.len() < 100, "{message}");
        assert!(message.ends_with("…"), "{message}");
    }

    #[test]
    fn ids_must_name_the_right_table() {
        let user = DocumentId::generate("users");
        let todo = DocumentId::generate("todos");
        let owner = v::object([("owner", v::id("users"))]);
        accepts(&owner, obj! { "owner" => user.as_str() });

        assert_eq!(
            error(&owner, &obj! { "owner" => "abc" }, "args.owner"),
            "expected id(\"users\"), found string \"abc\""
        );
        let message = error(&owner, &obj! { "owner" => todo.as_str() }, "args.owner");
        assert!(message.ends_with("(an id in table `todos`)"), "{message}");
        assert_eq!(
            error(&owner, &obj! { "owner" => 1.0 }, "args.owner"),
            "expected id(\"users\"), found float64 1"
        );
    }

    #[test]
    fn objects_reject_unknown_fields_and_require_non_optional_ones() {
        let args = v::object([("name", v::string()), ("status", v::string())]);
        accepts(&args, obj! { "name" => "a", "status" => "b" });

        assert_eq!(
            error(
                &args,
                &obj! { "name" => "a", "status" => "b", "foo" => 1.0 },
                "args"
            ),
            "unknown field `foo` (expected one of: name, status)"
        );
        assert_eq!(
            error(&args, &obj! { "status" => "b" }, "args"),
            "missing required field `name`"
        );
        assert_eq!(
            error(&v::object([]), &obj! { "x" => 1.0 }, "args"),
            "unknown field `x` (the object has no fields)"
        );
        assert_eq!(
            error(&args, &Value::Null, "args"),
            "expected { name: string, status: string }, found null"
        );
    }

    #[test]
    fn a_misspelled_field_is_reported_as_unknown() {
        let args = v::object([("name", v::string())]);
        assert_eq!(
            error(&args, &obj! { "nmae" => "a" }, "args"),
            "unknown field `nmae` (expected one of: name)"
        );
    }

    #[test]
    fn pagination_opts_accept_what_the_convex_client_sends() {
        let opts = v::pagination_opts();
        let first = obj! { "numItems" => 10.0, "cursor" => Value::Null, "id" => -1.0 };
        opts.validate(&first, "paginationOpts")
            .expect("a first page");
        let split = obj! {
            "numItems" => 10.0, "cursor" => "abc", "endCursor" => "def",
            "maximumRowsRead" => 100.0, "maximumBytesRead" => 1000.0
        };
        opts.validate(&split, "paginationOpts")
            .expect("a split page");
        let missing = obj! { "numItems" => 10.0 };
        let err = opts.validate(&missing, "paginationOpts").unwrap_err();
        assert!(err.to_string().contains("cursor"), "{err}");
        let wrong = obj! { "numItems" => "ten", "cursor" => Value::Null };
        let err = opts.validate(&wrong, "paginationOpts").unwrap_err();
        assert!(err.to_string().contains("numItems"), "{err}");
    }

    #[test]
    fn optional_fields_may_be_absent_but_not_null() {
        let profile = v::object([
            ("displayName", v::string()),
            ("bio", v::optional(v::string())),
        ]);
        accepts(&profile, obj! { "displayName" => "a" });
        accepts(&profile, obj! { "displayName" => "a", "bio" => "b" });
        assert_eq!(
            error(
                &profile,
                &obj! { "displayName" => "a", "bio" => Value::Null },
                "args.bio"
            ),
            "expected string, found null"
        );
        assert!(v::optional(v::string()).is_optional());
        assert!(!v::string().is_optional());
        // Outside an object, a present value is checked against the inner validator.
        accepts(&v::optional(v::int64()), 1i64);
        assert_eq!(
            error(&v::optional(v::int64()), &"x".into(), "args"),
            "expected int64, found string \"x\""
        );
    }

    #[test]
    fn nested_errors_name_the_full_path() {
        let args = v::object([(
            "items",
            v::array(v::object([("name", v::string()), ("qty", v::int64())])),
        )]);
        let item = |name: Value| obj! { "name" => name, "qty" => 1i64 };
        let good = Value::Array(vec![item("a".into()), item("b".into())]);
        accepts(&args, obj! { "items" => good });

        let bad = Value::Array(vec![
            item("a".into()),
            item("b".into()),
            item("c".into()),
            item(3.0.into()),
        ]);
        assert_eq!(
            error(&args, &obj! { "items" => bad }, "args.items[3].name"),
            "expected string, found float64 3"
        );
        let err = args
            .validate(&obj! { "items" => Value::Array(vec![Value::Null]) }, "args")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "args.items[0]: expected { name: string, qty: int64 }, found null"
        );
    }

    #[test]
    fn arrays_check_every_element() {
        let tags = v::array(v::string());
        accepts(&tags, Value::Array(vec![]));
        accepts(&tags, Value::Array(vec!["a".into(), "b".into()]));
        assert_eq!(
            error(
                &tags,
                &Value::Array(vec!["a".into(), Value::Null]),
                "args[1]"
            ),
            "expected string, found null"
        );
        assert_eq!(
            error(&tags, &"a".into(), "args"),
            "expected array<string>, found string \"a\""
        );
    }

    #[test]
    fn unions_accept_any_alternative_and_list_them_when_none_fits() {
        let status = v::union([v::literal("a"), v::literal("b")]);
        accepts(&status, "a");
        accepts(&status, "b");
        assert_eq!(
            error(&status, &"c".into(), "args"),
            "expected \"a\" | \"b\", found string \"c\""
        );
        let nullable = v::union([v::string(), v::null()]);
        accepts(&nullable, Value::Null);
        assert_eq!(
            error(&nullable, &1i64.into(), "args"),
            "expected string | null, found int64 1"
        );
        assert_eq!(
            error(&v::union([]), &Value::Null, "args"),
            "expected never, found null"
        );
    }

    #[test]
    fn literals_match_exactly_in_convex_order() {
        accepts(&v::literal("x"), "x");
        accepts(&v::literal(1i64), 1i64);
        accepts(&v::literal(2.5), 2.5);
        accepts(&v::literal(true), true);
        assert_eq!(
            error(&v::literal(1i64), &1.0.into(), "args"),
            "expected 1n, found float64 1"
        );
        assert_eq!(
            error(&v::literal(1.0), &1i64.into(), "args"),
            "expected 1, found int64 1"
        );
        assert_eq!(
            error(&v::literal(false), &true.into(), "args"),
            "expected false, found boolean true"
        );
        assert_eq!(
            error(&v::literal("x"), &"y".into(), "args"),
            "expected \"x\", found string \"y\""
        );
    }

    #[test]
    fn records_check_keys_as_strings_and_every_value() {
        let scores = v::record(v::string(), v::float64());
        accepts(&scores, obj! {});
        accepts(&scores, obj! { "alice" => 1.0, "bob" => 2.0 });
        assert_eq!(
            error(&scores, &obj! { "alice" => 1.0, "bob" => "x" }, "args.bob"),
            "expected float64, found string \"x\""
        );
        assert_eq!(
            error(&scores, &Value::Array(vec![]), "args"),
            "expected record<string, float64>, found array (0 elements)"
        );

        let user = DocumentId::generate("users");
        let by_user = v::record(v::id("users"), v::boolean());
        let mut ok = Object::new();
        ok.insert(user.as_str().to_string(), true.into());
        accepts(&by_user, ok);
        assert_eq!(
            error(&by_user, &obj! { "abc" => true }, "args.abc"),
            "invalid key: expected id(\"users\"), found string \"abc\""
        );
    }

    #[test]
    fn any_accepts_everything() {
        for value in [Value::Null, 1i64.into(), "x".into(), obj! { "a" => 1.0 }] {
            accepts(&v::any(), value);
        }
    }

    #[test]
    fn display_is_short_and_typescript_like() {
        let cases = [
            (v::string(), "string"),
            (v::number(), "float64"),
            (v::id("users"), "id(\"users\")"),
            (v::array(v::string()), "array<string>"),
            (
                v::object([("name", v::string()), ("bio", v::optional(v::string()))]),
                "{ bio?: string, name: string }",
            ),
            (v::object([("a b", v::any())]), "{ \"a b\": any }"),
            (v::object([]), "{}"),
            (
                v::union([v::literal("a"), v::literal("b")]),
                "\"a\" | \"b\"",
            ),
            (v::record(v::string(), v::int64()), "record<string, int64>"),
            (v::literal(Value::Null), "null"),
            (v::literal(vec![1u8]), "{\"$bytes\":\"AQ==\"}"),
        ];
        for (validator, expected) in cases {
            assert_eq!(validator.to_string(), expected);
        }
    }

    #[test]
    fn json_follows_convex_validator_json() {
        let profile = v::object([
            ("userId", v::id("users")),
            ("bio", v::optional(v::string())),
            ("tags", v::array(v::union([v::literal("a"), v::null()]))),
            ("scores", v::record(v::string(), v::int64())),
            ("count", v::literal(1i64)),
            ("blob", v::bytes()),
            ("ok", v::boolean()),
            ("n", v::number()),
            ("x", v::any()),
        ]);
        assert_eq!(
            profile.to_json(),
            json!({"type": "object", "value": {
                "userId": {"fieldType": {"type": "id", "tableName": "users"}, "optional": false},
                "bio": {"fieldType": {"type": "string"}, "optional": true},
                "tags": {"fieldType": {"type": "array", "value": {"type": "union", "value": [
                    {"type": "literal", "value": "a"}, {"type": "null"}
                ]}}, "optional": false},
                "scores": {"fieldType": {"type": "record", "keys": {"type": "string"},
                    "values": {"fieldType": {"type": "bigint"}, "optional": false}}, "optional": false},
                "count": {"fieldType": {"type": "literal", "value": {"$integer": "AQAAAAAAAAA="}},
                    "optional": false},
                "blob": {"fieldType": {"type": "bytes"}, "optional": false},
                "ok": {"fieldType": {"type": "boolean"}, "optional": false},
                "n": {"fieldType": {"type": "number"}, "optional": false},
                "x": {"fieldType": {"type": "any"}, "optional": false},
            }})
        );
        assert_eq!(v::optional(v::null()).to_json(), json!({"type": "null"}));
    }

    #[test]
    fn object_fields_exposes_an_object_validators_fields() {
        let args = v::object([("name", v::string())]);
        let fields = args.object_fields().expect("an object validator");
        assert_eq!(fields.get("name"), Some(&v::string()));
        assert_eq!(v::string().object_fields(), None);
    }

    #[test]
    fn check_definition_refuses_what_convex_would() {
        let good = v::object([
            ("bio", v::optional(v::string())),
            (
                "tags",
                v::record(v::union([v::id("users"), v::literal("x")]), v::any()),
            ),
        ]);
        assert_eq!(good.check_definition("args"), Ok(()));
        assert_eq!(v::optional(v::string()).check_definition("args"), Ok(()));

        let err = v::object([("tags", v::array(v::optional(v::string())))])
            .check_definition("args")
            .unwrap_err();
        assert_eq!(err.path, "args.tags[0]");
        assert!(
            err.message.contains("only allowed as an object field"),
            "{err}"
        );

        let err = v::record(v::float64(), v::any())
            .check_definition("args")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "args: record keys must be validated by string, id or string literals, not float64"
        );

        let err = v::object([("$bad", v::any())])
            .check_definition("args")
            .unwrap_err();
        assert_eq!(err.path, "args.$bad");
        assert!(err.message.contains("reserved"), "{err}");

        let err = v::union([v::optional(v::null())])
            .check_definition("args")
            .unwrap_err();
        assert!(err.message.contains("optional<null>"), "{err}");
    }

    /// A validator that accepts exactly `value` (and, for arrays, any sequence of
    /// its elements): literals for scalars, arrays of a union of the elements'
    /// validators, objects of the fields' validators.
    fn exact_validator(value: &Value) -> Validator {
        match value {
            Value::Array(items) => v::array(v::union(items.iter().map(exact_validator))),
            Value::Object(fields) => Validator::Object(
                fields
                    .iter()
                    .map(|(name, item)| (name.clone(), exact_validator(item)))
                    .collect(),
            ),
            scalar => v::literal(scalar.clone()),
        }
    }

    proptest! {
        #[test]
        fn any_accepts_every_value(value in arb_value()) {
            prop_assert_eq!(v::any().validate(&value, "args"), Ok(()));
        }

        #[test]
        fn a_validator_derived_from_a_value_accepts_it(value in arb_value()) {
            prop_assert_eq!(exact_validator(&value).validate(&value, "args"), Ok(()));
        }

        #[test]
        fn a_string_validator_accepts_exactly_strings(value in arb_value()) {
            let is_string = matches!(value, Value::String(_));
            prop_assert_eq!(v::string().validate(&value, "args").is_ok(), is_string);
        }
    }
}
