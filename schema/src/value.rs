//! The value model: what a document field, a function argument and a function
//! result can hold — Convex's eight types — with Convex's total order across them
//! and the size limits every stored or transmitted value obeys.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

/// An object: field names to values. Fields are kept sorted by name, which makes
/// equality, ordering and index keys independent of insertion order.
pub type Object = BTreeMap<String, Value>;

/// Largest encoded size of one value (a document, an argument list or a result):
/// 1 MiB, as in Convex.
pub const MAX_VALUE_SIZE: usize = 1 << 20;
/// Deepest nesting of arrays and objects inside one value (the top level is depth 1).
pub const MAX_NESTING_DEPTH: usize = 16;
/// Longest field name, in bytes.
pub const MAX_FIELD_NAME_LEN: usize = 1024;
/// Most elements in one array.
pub const MAX_ARRAY_LEN: usize = 8192;
/// Most fields in one object.
pub const MAX_OBJECT_FIELDS: usize = 1024;

/// One value of the Convex value model.
///
/// `PartialEq`/`Ord` follow Convex's total order: values of different types order
/// by type (null < int64 < float64 < boolean < string < bytes < array < object);
/// floats order by `f64::total_cmp` (so `-0.0 < 0.0` and NaN has a place).
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Int64(i64),
    Float64(f64),
    Boolean(bool),
    String(String),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Object(Object),
}

/// The type of a [`Value`], in Convex's cross-type order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueType {
    Null,
    Int64,
    Float64,
    Boolean,
    String,
    Bytes,
    Array,
    Object,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Null => "null",
            ValueType::Int64 => "int64",
            ValueType::Float64 => "float64",
            ValueType::Boolean => "boolean",
            ValueType::String => "string",
            ValueType::Bytes => "bytes",
            ValueType::Array => "array",
            ValueType::Object => "object",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a value breaks one of the limits above.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LimitError {
    /// Where in the value, e.g. `args.items[3]`.
    pub path: String,
    pub message: String,
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Null => ValueType::Null,
            Value::Int64(_) => ValueType::Int64,
            Value::Float64(_) => ValueType::Float64,
            Value::Boolean(_) => ValueType::Boolean,
            Value::String(_) => ValueType::String,
            Value::Bytes(_) => ValueType::Bytes,
            Value::Array(_) => ValueType::Array,
            Value::Object(_) => ValueType::Object,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float64(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// A field of an object value; `None` for a missing field or a non-object.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.get(field))
    }

    /// An approximate encoded size in bytes, used for [`MAX_VALUE_SIZE`]; it counts
    /// payload bytes plus one byte of overhead per value and per field name.
    pub fn size(&self) -> usize {
        1 + match self {
            Value::Null | Value::Boolean(_) => 0,
            Value::Int64(_) | Value::Float64(_) => 8,
            Value::String(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Array(a) => a.iter().map(Value::size).sum(),
            Value::Object(o) => o.iter().map(|(k, v)| k.len() + 1 + v.size()).sum(),
        }
    }

    /// Checks nesting depth, field names, array and object lengths, and total
    /// size. `path` names the value in errors (`args`, `doc` …).
    pub fn check_limits(&self, path: &str) -> Result<(), LimitError> {
        check_nested(self, Path::Root(path), 1)?;
        let size = self.size();
        if size > MAX_VALUE_SIZE {
            return Err(LimitError {
                path: path.to_string(),
                message: format!("value is {size} bytes, more than the limit of {MAX_VALUE_SIZE}"),
            });
        }
        Ok(())
    }
}

fn check_nested(value: &Value, path: Path<'_>, depth: usize) -> Result<(), LimitError> {
    let err = |message: String| LimitError {
        path: path.to_string(),
        message,
    };
    match value {
        Value::Array(_) | Value::Object(_) if depth > MAX_NESTING_DEPTH => Err(err(format!(
            "nested more than {MAX_NESTING_DEPTH} levels deep"
        ))),
        Value::Array(items) => {
            if items.len() > MAX_ARRAY_LEN {
                return Err(err(format!(
                    "array has {} elements, more than the limit of {MAX_ARRAY_LEN}",
                    items.len()
                )));
            }
            for (i, item) in items.iter().enumerate() {
                check_nested(item, Path::Index(&path, i), depth + 1)?;
            }
            Ok(())
        }
        Value::Object(fields) => {
            if fields.len() > MAX_OBJECT_FIELDS {
                return Err(err(format!(
                    "object has {} fields, more than the limit of {MAX_OBJECT_FIELDS}",
                    fields.len()
                )));
            }
            for (name, item) in fields {
                check_field_name(name).map_err(&err)?;
                check_nested(item, Path::Field(&path, name), depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Where a part of a value is (`args.items[3].name`). Built on the stack while
/// walking a value (checking limits, decoding, validating) and spelled out only
/// when an error needs it, so walking a large valid value allocates no paths.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Path<'a> {
    Root(&'a str),
    Index(&'a Path<'a>, usize),
    Field(&'a Path<'a>, &'a str),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(root) => f.write_str(root),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// A field name is 1..=[`MAX_FIELD_NAME_LEN`] bytes and does not start with `$`
/// (reserved by the JSON encoding).
pub fn check_field_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("field name is empty".to_string());
    }
    if name.len() > MAX_FIELD_NAME_LEN {
        return Err(format!(
            "field name is {} bytes, more than the limit of {MAX_FIELD_NAME_LEN}",
            name.len()
        ));
    }
    if name.starts_with('$') {
        return Err(format!(
            "field name `{name}` starts with `$`, which is reserved"
        ));
    }
    Ok(())
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Int64(a), Value::Int64(b)) => a.cmp(b),
            (Value::Float64(a), Value::Float64(b)) => a.total_cmp(b),
            (Value::Boolean(a), Value::Boolean(b)) => a.cmp(b),
            (Value::String(a), Value::String(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Array(a), Value::Array(b)) => a.cmp(b),
            (Value::Object(a), Value::Object(b)) => a.iter().cmp(b.iter()),
            (a, b) => a.value_type().cmp(&b.value_type()),
        }
    }
}

impl From<()> for Value {
    fn from(_: ()) -> Self {
        Value::Null
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float64(f)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int64(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Boolean(b)
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}
impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}
impl From<Object> for Value {
    fn from(o: Object) -> Self {
        Value::Object(o)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(o: Option<T>) -> Self {
        o.map_or(Value::Null, Into::into)
    }
}

/// Builds an [`Object`] value: `obj! { "name" => "x", "count" => 3.0 }`.
#[macro_export]
macro_rules! obj {
    () => { $crate::Value::Object($crate::Object::new()) };
    ($($k:expr => $v:expr),+ $(,)?) => {{
        let mut o = $crate::Object::new();
        $( o.insert(($k).to_string(), $crate::Value::from($v)); )+
        $crate::Value::Object(o)
    }};
}
