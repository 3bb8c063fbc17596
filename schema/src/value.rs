//! The value model: what a document field, a function argument and a function
//! result can hold — Convex's eight types — with Convex's total order across them
//! and the size limits every stored or transmitted value obeys.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, OnceLock};

/// An object: field names to values. Fields are kept sorted by name, which makes
/// equality, ordering and index keys independent of insertion order.
pub type Object = BTreeMap<String, Value>;

/// The fields of an object value, shared: cloning a value copies a pointer,
/// not its fields, so a stored document that many re-runs read and many
/// results hold is one allocation.
///
/// What depends on the fields alone is kept beside them once computed: the
/// size ([`Value::size`]), whether the limits hold and how deep the object
/// nests, and (for an object that is shared, such as a document a store
/// connection keeps decoded) its JSON text. Changing the fields (through
/// `DerefMut`, which first copies fields that are shared) forgets all three,
/// so they can never describe other fields than the ones they sit beside.
#[derive(Clone)]
pub struct SharedObject(Arc<ObjectCell>);

struct ObjectCell {
    fields: Object,
    size: OnceLock<usize>,
    /// How many levels of arrays and objects the object spans (itself
    /// included), once its field names and lengths, and those of everything
    /// inside it, are known to be within the limits.
    height: OnceLock<usize>,
    json: OnceLock<Box<str>>,
}

impl Clone for ObjectCell {
    fn clone(&self) -> ObjectCell {
        ObjectCell::new(self.fields.clone())
    }
}

impl ObjectCell {
    fn new(fields: Object) -> ObjectCell {
        ObjectCell {
            fields,
            size: OnceLock::new(),
            height: OnceLock::new(),
            json: OnceLock::new(),
        }
    }
}

impl SharedObject {
    pub fn new(fields: Object) -> SharedObject {
        SharedObject(Arc::new(ObjectCell::new(fields)))
    }

    /// The fields, copied only if another value shares them.
    pub fn into_fields(self) -> Object {
        match Arc::try_unwrap(self.0) {
            Ok(cell) => cell.fields,
            Err(shared) => shared.fields.clone(),
        }
    }

    /// Whether two values share these fields (and so are equal).
    pub fn ptr_eq(&self, other: &SharedObject) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// [`Value::size`] of the object, computed once.
    fn size(&self) -> usize {
        *self.0.size.get_or_init(|| {
            1 + self
                .0
                .fields
                .iter()
                .map(|(k, v)| k.len() + 1 + v.size())
                .sum::<usize>()
        })
    }

    /// The object's JSON text, if it was kept.
    pub(crate) fn kept_json(&self) -> Option<&str> {
        self.0.json.get().map(|text| &**text)
    }

    /// Keeps `text` as the object's JSON text if the object is shared (a
    /// unique object is about to be dropped or changed, so keeping its text
    /// would only cost memory); the caller encoded it from these fields.
    pub(crate) fn keep_json(&self, text: impl FnOnce() -> Box<str>) -> Option<&str> {
        if Arc::strong_count(&self.0) < 2 {
            return None;
        }
        Some(self.0.json.get_or_init(text))
    }
}

impl Default for SharedObject {
    fn default() -> SharedObject {
        SharedObject::new(Object::new())
    }
}

impl Deref for SharedObject {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.0.fields
    }
}

impl DerefMut for SharedObject {
    /// The fields to change: copied first if another value shares them, and
    /// with what was computed from them forgotten.
    fn deref_mut(&mut self) -> &mut Object {
        let cell = Arc::make_mut(&mut self.0);
        cell.size = OnceLock::new();
        cell.height = OnceLock::new();
        cell.json = OnceLock::new();
        &mut cell.fields
    }
}

impl fmt::Debug for SharedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fields.fmt(f)
    }
}

impl PartialEq for SharedObject {
    fn eq(&self, other: &SharedObject) -> bool {
        self.ptr_eq(other) || self.0.fields == other.0.fields
    }
}

impl Eq for SharedObject {}

impl From<Object> for SharedObject {
    fn from(fields: Object) -> SharedObject {
        SharedObject::new(fields)
    }
}

impl From<SharedObject> for Object {
    fn from(object: SharedObject) -> Object {
        object.into_fields()
    }
}

impl FromIterator<(String, Value)> for SharedObject {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> SharedObject {
        SharedObject::new(iter.into_iter().collect())
    }
}

impl IntoIterator for SharedObject {
    type Item = (String, Value);
    type IntoIter = std::collections::btree_map::IntoIter<String, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_fields().into_iter()
    }
}

impl<'a> IntoIterator for &'a SharedObject {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.fields.iter()
    }
}

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
    Object(SharedObject),
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
            Value::Object(o) => return o.size(),
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

/// Checks `value` at `depth` (see [`Value::check_limits`]) and returns how
/// many levels of arrays and objects it spans (0 for a scalar). An object
/// found within the limits keeps its height, so checking it again (a stored
/// document in every re-run's result) costs one comparison.
fn check_nested(value: &Value, path: Path<'_>, depth: usize) -> Result<usize, LimitError> {
    let err = |message: String| LimitError {
        path: path.to_string(),
        message,
    };
    match value {
        Value::Object(fields) => {
            if let Some(height) = fields.0.height.get() {
                if depth + height - 1 <= MAX_NESTING_DEPTH {
                    return Ok(*height);
                }
            }
        }
        Value::Array(_) => {}
        _ => return Ok(0),
    }
    if depth > MAX_NESTING_DEPTH {
        return Err(err(format!(
            "nested more than {MAX_NESTING_DEPTH} levels deep"
        )));
    }
    match value {
        Value::Array(items) => {
            if items.len() > MAX_ARRAY_LEN {
                return Err(err(format!(
                    "array has {} elements, more than the limit of {MAX_ARRAY_LEN}",
                    items.len()
                )));
            }
            let mut below = 0;
            for (i, item) in items.iter().enumerate() {
                below = below.max(check_nested(item, Path::Index(&path, i), depth + 1)?);
            }
            Ok(1 + below)
        }
        Value::Object(fields) => {
            if fields.len() > MAX_OBJECT_FIELDS {
                return Err(err(format!(
                    "object has {} fields, more than the limit of {MAX_OBJECT_FIELDS}",
                    fields.len()
                )));
            }
            let mut below = 0;
            for (name, item) in fields.iter() {
                check_field_name(name).map_err(&err)?;
                below = below.max(check_nested(item, Path::Field(&path, name), depth + 1)?);
            }
            Ok(*fields.0.height.get_or_init(|| 1 + below))
        }
        _ => Ok(0),
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
            (Value::Object(a), Value::Object(b)) if a.ptr_eq(b) => Ordering::Equal,
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
        Value::Object(o.into())
    }
}
impl From<SharedObject> for Value {
    fn from(o: SharedObject) -> Self {
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
    () => { $crate::Value::Object($crate::SharedObject::default()) };
    ($($k:expr => $v:expr),+ $(,)?) => {{
        let mut o = $crate::Object::new();
        $( o.insert(($k).to_string(), $crate::Value::from($v)); )+
        $crate::Value::Object(o.into())
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> Value {
        (1..levels).fold(obj! { "leaf" => 1.0 }, |inner, _| obj! { "x" => inner })
    }

    #[test]
    fn changing_a_shared_object_leaves_the_other_value_as_it_was() {
        let a = obj! { "n" => 1.0, "s" => "text" };
        let mut b = a.clone();
        let (Value::Object(ao), Value::Object(bo)) = (&a, &mut b) else {
            unreachable!()
        };
        assert!(ao.ptr_eq(bo), "a clone shares the fields");
        bo.insert("n".into(), Value::Float64(2.0));
        assert_eq!(a, obj! { "n" => 1.0, "s" => "text" });
        assert_eq!(b, obj! { "n" => 2.0, "s" => "text" });
    }

    #[test]
    fn what_is_kept_beside_the_fields_is_forgotten_when_they_change() {
        let a = obj! { "n" => 1.0 };
        let mut b = a.clone(); // shared, so its text is kept
        assert_eq!(b.to_json_text(), r#"{"n":1.0}"#);
        assert_eq!(b.size(), a.size());
        b.check_limits("b").expect("within the limits");
        let Value::Object(fields) = &mut b else {
            unreachable!()
        };
        fields.insert("name".into(), Value::from("x".repeat(100)));
        let _keep_shared = b.clone();
        assert_eq!(
            b.to_json_text(),
            format!(r#"{{"n":1.0,"name":"{}"}}"#, "x".repeat(100))
        );
        assert_eq!(b.size(), a.size() + 4 + 1 + 101);
        let Value::Object(fields) = &mut b else {
            unreachable!()
        };
        fields.insert("$bad".into(), Value::Null);
        let err = b.check_limits("b").expect_err("a reserved field name");
        assert!(err.message.contains("$bad"), "{err}");
    }

    #[test]
    fn an_object_checked_once_is_still_too_deep_when_placed_deeper() {
        let inner = nested(MAX_NESTING_DEPTH);
        inner.check_limits("inner").expect("exactly at the limit");
        let outer = Value::Array(vec![inner.clone()]);
        let err = outer.check_limits("outer").expect_err("one level too deep");
        assert!(err.message.contains("nested more than"), "{err}");
        assert!(err.path.starts_with("outer[0].x"), "{err}");
        // And the same object still passes where it fits.
        inner.check_limits("again").expect("still at the limit");
    }

    #[test]
    fn a_kept_text_is_the_text_the_fields_encode_to() {
        let doc = obj! { "a" => 1.0, "b" => Value::Int64(7), "c" => vec![1u8, 2] };
        let shared = doc.clone();
        let first = shared.to_json_text();
        let again = shared.to_json_text(); // from the kept text
        assert_eq!(first, again);
        assert_eq!(first, doc.to_json().to_string());
    }
}
