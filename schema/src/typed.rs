//! Typed values: Rust types as the source of truth for what a function takes
//! and returns and what a table holds. A type implementing [`Type`] says
//! which values it is (its [`Validator`]) and converts from and to
//! [`Value`]; `#[derive(Type)]` writes both from one struct or enum
//! definition, so a function's argument validator and its handler's
//! argument type cannot disagree.
//!
//! ```
//! use livebase_schema::typed::{Doc, Id, Table, Type};
//! use livebase_schema::{obj, v, Value};
//!
//! #[derive(Type, Debug, PartialEq)]
//! #[livebase(table = "todos")]
//! struct Todo {
//!     #[livebase(max_len = 1000)]
//!     text: String,
//!     completed: bool,
//!     due: Option<f64>,
//! }
//!
//! assert_eq!(
//!     Todo::validator(),
//!     v::object([
//!         ("text", v::string().max_len(1000)),
//!         ("completed", v::boolean()),
//!         ("due", v::optional(v::number())),
//!     ]),
//! );
//! let todo = Todo::from_value(obj! { "text" => "milk", "completed" => false }, "args").unwrap();
//! assert_eq!(todo.due, None);
//! assert_eq!(Id::<Todo>::validator(), v::id("todos"));
//! ```
//!
//! Conversion after validation cannot fail on shape — the validator is the
//! type's own — so a function's bad arguments are refused by the validator,
//! with the errors that name the path (`args.text: …`), before any
//! conversion runs.
//!
//! [`Value`] stays underneath: a type's value is what is stored, sent and
//! validated, and `Value` itself is a [`Type`] (`v::any()`) for dynamic
//! code. Why not serde: the value model tells `int64` from `float64`, bytes
//! from arrays, and an absent field from `null` (`v::optional` refuses
//! `null`), none of which serde's data model keeps apart.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::id::DocumentId;
use crate::table::{define_table, TableDefinition, CREATION_TIME_FIELD, ID_FIELD};
use crate::validator::{v, ValidationError, Validator};
use crate::value::{Object, Value};

pub use livebase_macros::Type;

/// A Rust type whose values are Convex values of one shape.
///
/// In a value's place, `Option<T>` is `T` or `null`; as an object field it
/// is a field that may be absent (`v::optional(T)`), which is what the
/// `*_field` methods say — only `Option` overrides them.
pub trait Type: Sized {
    /// The values of this type.
    fn validator() -> Validator;

    /// Reads a value of this type; `path` names it in errors. A value its
    /// [`Type::validator`] accepts is always read.
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError>;

    /// This value.
    fn into_value(self) -> Value;

    /// The validator of an object field of this type.
    fn field_validator() -> Validator {
        Self::validator()
    }

    /// Reads an object field of this type, `None` when absent.
    fn from_field(value: Option<Value>, path: &str) -> Result<Self, ValidationError> {
        match value {
            Some(value) => Self::from_value(value, path),
            None => Err(ValidationError::new(path, "missing required field")),
        }
    }

    /// An object field of this type, `None` to leave it out.
    fn into_field(self) -> Option<Value> {
        Some(self.into_value())
    }
}

/// A table, named by a type: `Id<T>` is an id of table `T::NAME`. A
/// table's document type declares it with `#[livebase(table = "todos")]` on
/// a `#[derive(Type)]` struct of the document's fields (without `_id` and
/// `_creationTime`), which also makes `Doc<T>` its documents. A table whose
/// documents are not typed (another crate's) is named by a type with only
/// this impl: `enum Users {} impl Table for Users { const NAME = "users"; }`.
pub trait Table {
    const NAME: &'static str;
}

/// The definition of table `T` from its document type: the fields of
/// `T::validator()`; add indexes to it as to [`define_table`]'s.
///
/// # Panics
///
/// When `T`'s validator is not an object, a mistake found at startup.
pub fn table_of<T: Table + Type>() -> TableDefinition {
    let validator = T::validator();
    let Some(fields) = validator.object_fields() else {
        panic!("table `{}`: its document type is not an object", T::NAME);
    };
    define_table(fields.iter().map(|(name, v)| (name.as_str(), v.clone())))
}

/// The fields of an object value; an error naming `path` for another value.
/// (Used by `#[derive(Type)]`.)
pub fn object_fields(value: Value, path: &str) -> Result<Object, ValidationError> {
    match value {
        Value::Object(fields) => Ok(fields.into_fields()),
        other => Err(ValidationError::new(
            path,
            format!("expected an object, found {}", other.value_type()),
        )),
    }
}

/// The error for a value that is not `T`. (Used by `#[derive(Type)]`.)
pub fn mismatch<T: Type>(value: &Value, path: &str) -> ValidationError {
    match T::validator().validate(value, path) {
        Err(e) => e,
        Ok(()) => ValidationError::new(path, format!("unexpected {}", value.value_type())),
    }
}

/// `validator` bounded to `max` characters, inside an `optional` too
/// (`#[livebase(max_len = N)]`).
pub fn max_len(validator: Validator, max: usize) -> Validator {
    match validator {
        Validator::Optional(inner) => v::optional(inner.max_len(max)),
        other => other.max_len(max),
    }
}

fn expected(path: &str, what: &str, value: &Value) -> ValidationError {
    ValidationError::new(
        path,
        format!("expected {what}, found {}", value.value_type()),
    )
}

impl Type for String {
    fn validator() -> Validator {
        v::string()
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(expected(path, "a string", &other)),
        }
    }
    fn into_value(self) -> Value {
        Value::String(self)
    }
}

impl Type for bool {
    fn validator() -> Validator {
        v::boolean()
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        match value {
            Value::Boolean(b) => Ok(b),
            other => Err(expected(path, "a boolean", &other)),
        }
    }
    fn into_value(self) -> Value {
        Value::Boolean(self)
    }
}

/// A JavaScript number: `v::number()`.
impl Type for f64 {
    fn validator() -> Validator {
        v::number()
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        match value {
            Value::Float64(f) => Ok(f),
            other => Err(expected(path, "a number", &other)),
        }
    }
    fn into_value(self) -> Value {
        Value::Float64(self)
    }
}

/// A JavaScript bigint: `v::int64()`.
impl Type for i64 {
    fn validator() -> Validator {
        v::int64()
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        match value {
            Value::Int64(n) => Ok(n),
            other => Err(expected(path, "a bigint", &other)),
        }
    }
    fn into_value(self) -> Value {
        Value::Int64(self)
    }
}

/// Nothing: `null` (a mutation that returns nothing answers `null`).
impl Type for () {
    fn validator() -> Validator {
        v::null()
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        match value {
            Value::Null => Ok(()),
            other => Err(expected(path, "null", &other)),
        }
    }
    fn into_value(self) -> Value {
        Value::Null
    }
}

/// Any value, unchecked: the untyped API's, for dynamic code.
impl Type for Value {
    fn validator() -> Validator {
        v::any()
    }
    fn from_value(value: Value, _path: &str) -> Result<Self, ValidationError> {
        Ok(value)
    }
    fn into_value(self) -> Value {
        self
    }
}

impl<T: Type> Type for Vec<T> {
    fn validator() -> Validator {
        v::array(T::validator())
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        match value {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| T::from_value(item, &format!("{path}[{i}]")))
                .collect(),
            other => Err(expected(path, "an array", &other)),
        }
    }
    fn into_value(self) -> Value {
        Value::Array(self.into_iter().map(T::into_value).collect())
    }
}

/// An object used as a map: `v::record(v::string(), T)`.
impl<T: Type> Type for BTreeMap<String, T> {
    fn validator() -> Validator {
        v::record(v::string(), T::validator())
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        object_fields(value, path)?
            .into_iter()
            .map(|(k, item)| {
                let item = T::from_value(item, &format!("{path}.{k}"))?;
                Ok((k, item))
            })
            .collect()
    }
    fn into_value(self) -> Value {
        Value::Object(self.into_iter().map(|(k, v)| (k, v.into_value())).collect())
    }
}

/// `T` or `null` as a value; as an object field, `T` or absent.
impl<T: Type> Type for Option<T> {
    fn validator() -> Validator {
        v::union([T::validator(), v::null()])
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        match value {
            Value::Null => Ok(None),
            value => T::from_value(value, path).map(Some),
        }
    }
    fn into_value(self) -> Value {
        self.map_or(Value::Null, T::into_value)
    }
    fn field_validator() -> Validator {
        v::optional(T::validator())
    }
    fn from_field(value: Option<Value>, path: &str) -> Result<Self, ValidationError> {
        value.map(|value| T::from_value(value, path)).transpose()
    }
    fn into_field(self) -> Option<Value> {
        self.map(T::into_value)
    }
}

/// The id of a document of table `T`: a [`DocumentId`] whose table is
/// `T::NAME`, checked when it is made, and a type of its own per table, so an
/// `Id<Todo>` is not an `Id<Organization>`:
///
/// ```compile_fail,E0308
/// # use livebase_schema::typed::{Id, Type};
/// #[derive(Type)]
/// #[livebase(table = "todos")]
/// struct Todo {}
/// #[derive(Type)]
/// #[livebase(table = "organizations")]
/// struct Organization {}
///
/// fn remove(id: Id<Todo>) {}
/// let organization: Id<Organization> = Id::generate();
/// remove(organization);
/// ```
pub struct Id<T> {
    id: DocumentId,
    table: PhantomData<fn() -> T>,
}

impl<T: Table> Id<T> {
    /// `id` as an id of `T`, if it is one of `T`'s table.
    pub fn new(id: DocumentId) -> Option<Id<T>> {
        (id.table() == T::NAME).then_some(Id {
            id,
            table: PhantomData,
        })
    }

    /// Parses an id string of `T`'s table.
    pub fn parse(s: &str) -> Option<Id<T>> {
        DocumentId::parse_in(s, T::NAME).map(|id| Id {
            id,
            table: PhantomData,
        })
    }

    /// A new id in `T`'s table (the store makes a document's id; this is
    /// for tests and examples).
    pub fn generate() -> Id<T> {
        Id {
            id: DocumentId::generate(T::NAME),
            table: PhantomData,
        }
    }
}

impl<T> Id<T> {
    /// The untyped id, for the untyped API.
    pub fn document_id(&self) -> &DocumentId {
        &self.id
    }

    pub fn into_document_id(self) -> DocumentId {
        self.id
    }

    pub fn as_str(&self) -> &str {
        self.id.as_str()
    }
}

/// An `Id<T>` is a [`DocumentId`] wherever the untyped API takes one.
impl<T> Deref for Id<T> {
    type Target = DocumentId;
    fn deref(&self) -> &DocumentId {
        &self.id
    }
}

impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        Id {
            id: self.id.clone(),
            table: PhantomData,
        }
    }
}

impl<T> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for Id<T> {}

impl<T> PartialOrd for Id<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Id<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl<T> Hash for Id<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl<T> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.id, f)
    }
}

impl<T> fmt::Display for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

impl<T> From<Id<T>> for Value {
    fn from(id: Id<T>) -> Value {
        id.id.into()
    }
}

/// `v::id(T::NAME)`.
impl<T: Table> Type for Id<T> {
    fn validator() -> Validator {
        v::id(T::NAME)
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        match &value {
            Value::String(s) => Id::parse(s).ok_or_else(|| mismatch::<Self>(&value, path)),
            other => Err(expected(path, "an id", other)),
        }
    }
    fn into_value(self) -> Value {
        self.id.into()
    }
}

/// A document of table `T` as stored: its fields (`doc.text`, through
/// `Deref`) and the system fields `_id` and `_creationTime` — Convex's
/// `Doc<"todos">`.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc<T> {
    /// `_id`.
    pub id: Id<T>,
    /// `_creationTime`: milliseconds since the epoch.
    pub creation_time: f64,
    /// The document's own fields.
    pub fields: T,
}

impl<T> Deref for Doc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.fields
    }
}

impl<T> DerefMut for Doc<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.fields
    }
}

/// `T`'s fields with `_id: v::id(T::NAME)` and `_creationTime: v::number()`.
impl<T: Table + Type> Type for Doc<T> {
    fn validator() -> Validator {
        let mut fields = T::validator().object_fields().cloned().unwrap_or_default();
        fields.insert(ID_FIELD.into(), Id::<T>::validator());
        fields.insert(CREATION_TIME_FIELD.into(), v::number());
        Validator::Object(fields)
    }
    fn from_value(value: Value, path: &str) -> Result<Self, ValidationError> {
        let mut fields = object_fields(value, path)?;
        let id = Id::from_field(fields.remove(ID_FIELD), &format!("{path}.{ID_FIELD}"))?;
        let creation_time = f64::from_field(
            fields.remove(CREATION_TIME_FIELD),
            &format!("{path}.{CREATION_TIME_FIELD}"),
        )?;
        Ok(Doc {
            id,
            creation_time,
            fields: T::from_value(Value::Object(fields.into()), path)?,
        })
    }
    fn into_value(self) -> Value {
        let mut out = match self.fields.into_value() {
            Value::Object(fields) => fields,
            _ => Object::new().into(),
        };
        out.insert(ID_FIELD.into(), self.id.into());
        out.insert(
            CREATION_TIME_FIELD.into(),
            Value::Float64(self.creation_time),
        );
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests;
