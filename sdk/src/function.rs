//! Typed references to an application's functions: a [`FunctionRef`] is a path
//! (`module:name`) that also carries the function's kind, argument type and
//! result type, so `client.subscribe(notes::LIST, ListArgs { .. })` only
//! compiles with the right arguments, and its results arrive already decoded.
//!
//! Arguments become a [`Value`] object through [`IntoArgs`]; results come back
//! through [`FromValue`]. Both are implemented by hand — the SDK has no serde
//! layer over [`Value`] — which for an argument struct is one `obj!` and for a
//! result struct one [`Fields`] read per field:
//!
//! ```
//! use livebase_sdk::{obj, query, DecodeError, Fields, FromValue, IntoArgs, QueryRef, Value};
//!
//! /// The arguments of `notes:list`.
//! pub struct ListArgs {
//!     pub organization_id: String,
//! }
//!
//! impl IntoArgs for ListArgs {
//!     fn into_args(self) -> Value {
//!         obj! { "organizationId" => self.organization_id }
//!     }
//! }
//!
//! /// One document of the `notes` table.
//! #[derive(Debug, PartialEq)]
//! pub struct Note {
//!     pub id: String,
//!     pub body: String,
//!     pub pinned: Option<bool>,
//! }
//!
//! impl FromValue for Note {
//!     fn from_value(value: Value) -> Result<Self, DecodeError> {
//!         let mut fields = Fields::new(value)?;
//!         Ok(Note {
//!             id: fields.take("_id")?,
//!             body: fields.take("body")?,
//!             // A missing optional field reads as `None`.
//!             pinned: fields.take("pinned")?,
//!         })
//!     }
//! }
//!
//! pub mod notes {
//!     use super::*;
//!     /// Every note of an organization.
//!     pub const LIST: QueryRef<ListArgs, Vec<Note>> = query("notes:list");
//! }
//!
//! # fn main() {
//! // What the client sends and how it reads the answer:
//! let args = ListArgs { organization_id: "org1".into() }.into_args();
//! assert_eq!(args, obj! { "organizationId" => "org1" });
//! let result = Value::Array(vec![obj! { "_id" => "notes|1", "body" => "hi" }]);
//! let notes = <Vec<Note>>::from_value(result).unwrap();
//! assert_eq!(notes, [Note { id: "notes|1".into(), body: "hi".into(), pinned: None }]);
//! assert_eq!(notes::LIST.path(), "notes:list");
//!
//! // A result of the wrong shape names where it is wrong.
//! let err = <Vec<Note>>::from_value(Value::Array(vec![obj! { "_id" => "x" }])).unwrap_err();
//! assert_eq!(err.to_string(), "[0].body: missing");
//! # }
//! ```
//!
//! For exploring, or a function with no types yet, use [`Value`] on both sides:
//! `query::<Value, Value>("notes:list")`.

use std::fmt;
use std::marker::PhantomData;

use livebase_schema::{DecodeError, Object, Value};

/// Marker types for the three kinds of function. They have no values; they
/// only keep a query reference out of `Client::mutation` and so on.
pub mod kind {
    /// Read-only, reactive: subscribe to it.
    #[derive(Debug)]
    pub enum Query {}
    /// A transaction that writes: call it, read your write.
    #[derive(Debug)]
    pub enum Mutation {}
    /// Anything else (side effects, other services): call it.
    #[derive(Debug)]
    pub enum Action {}
}

/// A function of kind `K` at a path, taking `Args` and returning `Output`.
/// Made by [`query`], [`mutation`] and [`action`], usually as a `const`.
pub struct FunctionRef<K, Args, Output> {
    path: &'static str,
    _types: PhantomData<fn(K, Args) -> Output>,
}

/// A query's reference.
pub type QueryRef<Args, Output> = FunctionRef<kind::Query, Args, Output>;

/// The output of a paginated query whose items are `T`, in a reference that
/// [`crate::PaginatedSubscription::of`] drives: `QueryRef<Args, Paginated<T>>`.
pub struct Paginated<T>(PhantomData<fn() -> T>);
/// A mutation's reference.
pub type MutationRef<Args, Output> = FunctionRef<kind::Mutation, Args, Output>;
/// An action's reference.
pub type ActionRef<Args, Output> = FunctionRef<kind::Action, Args, Output>;

impl<K, A, O> FunctionRef<K, A, O> {
    /// A reference to the function at `path` (`module:name`). Nothing checks
    /// here that the server has it, or with these types; a wrong path is
    /// answered by the server as a function that does not exist.
    pub const fn new(path: &'static str) -> Self {
        FunctionRef {
            path,
            _types: PhantomData,
        }
    }

    pub const fn path(&self) -> &'static str {
        self.path
    }
}

/// A reference to the query at `path`.
pub const fn query<A, O>(path: &'static str) -> QueryRef<A, O> {
    FunctionRef::new(path)
}

/// A reference to the mutation at `path`.
pub const fn mutation<A, O>(path: &'static str) -> MutationRef<A, O> {
    FunctionRef::new(path)
}

/// A reference to the action at `path`.
pub const fn action<A, O>(path: &'static str) -> ActionRef<A, O> {
    FunctionRef::new(path)
}

// By hand: derives would demand `K: Clone`, `A: Clone`, … of the marker types.
impl<K, A, O> Clone for FunctionRef<K, A, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, A, O> Copy for FunctionRef<K, A, O> {}

impl<K, A, O> fmt::Debug for FunctionRef<K, A, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FunctionRef").field(&self.path).finish()
    }
}

/// A function's arguments: converts to the argument object sent on the wire.
pub trait IntoArgs {
    /// The argument object. (A value that is not an object is sent as it is,
    /// and the server refuses it as invalid arguments.)
    fn into_args(self) -> Value;
}

impl IntoArgs for Value {
    fn into_args(self) -> Value {
        self
    }
}

impl IntoArgs for Object {
    fn into_args(self) -> Value {
        Value::Object(self.into())
    }
}

/// No arguments: `{}`.
impl IntoArgs for () {
    fn into_args(self) -> Value {
        Value::Object(Object::new().into())
    }
}

/// A function's result: decodes from the [`Value`] the server sent.
///
/// Errors name where the value is wrong relative to the value itself
/// (`[3].body`, or an empty path for the value as a whole); the client prefixes
/// `result` when it reports one.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> Result<Self, DecodeError>;
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        Ok(value)
    }
}

/// `null` (what a function returning nothing sends).
impl FromValue for () {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Null => Ok(()),
            other => Err(mismatch("null", &other)),
        }
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(mismatch("a string", &other)),
        }
    }
}

/// A Convex `number` (float64).
impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Float64(f) => Ok(f),
            other => Err(mismatch("a number", &other)),
        }
    }
}

/// A Convex `bigint` (int64).
impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Int64(i) => Ok(i),
            other => Err(mismatch("an int64", &other)),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Boolean(b) => Ok(b),
            other => Err(mismatch("a boolean", &other)),
        }
    }
}

impl FromValue for Object {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Object(o) => Ok(o.into_fields()),
            other => Err(mismatch("an object", &other)),
        }
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| T::from_value(item).map_err(|e| nest(e, &format!("[{i}]"))))
                .collect(),
            other => Err(mismatch("an array", &other)),
        }
    }
}

/// `null` is `None`.
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// Reads an object's fields one by one, for [`FromValue`] implementations of
/// result structs; errors name the field (`.body`).
#[derive(Debug)]
pub struct Fields {
    object: Object,
}

impl Fields {
    /// Fails unless `value` is an object.
    pub fn new(value: Value) -> Result<Fields, DecodeError> {
        Object::from_value(value).map(|object| Fields { object })
    }

    /// Takes the field `name` out and decodes it. A missing field decodes as
    /// `null` would, when `T` accepts that (`Option<T>`, `Value`, `()`); for
    /// other types it is an error saying `missing`.
    pub fn take<T: FromValue>(&mut self, name: &str) -> Result<T, DecodeError> {
        let path = format!(".{name}");
        match self.object.remove(name) {
            Some(value) => T::from_value(value).map_err(|e| nest(e, &path)),
            None => T::from_value(Value::Null).map_err(|_| DecodeError::new(path, "missing")),
        }
    }

    /// The fields not taken yet.
    pub fn into_rest(self) -> Object {
        self.object
    }
}

fn mismatch(expected: &str, found: &Value) -> DecodeError {
    DecodeError::new(
        "",
        format!("expected {expected}, found {}", found.value_type()),
    )
}

/// `error`, found inside the part of a value at `prefix`.
pub(crate) fn nest(error: DecodeError, prefix: &str) -> DecodeError {
    DecodeError::new(format!("{prefix}{}", error.path), error.message)
}

/// A document of a typed table (`livebase_schema::typed`), as a result.
impl<T: livebase_schema::typed::Table + livebase_schema::typed::Type> FromValue
    for livebase_schema::typed::Doc<T>
{
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        from_typed(value)
    }
}

/// An id of a typed table, as a result.
impl<T: livebase_schema::typed::Table> FromValue for livebase_schema::typed::Id<T> {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        from_typed(value)
    }
}

/// `value` read as `T` through its [`livebase_schema::typed::Type`] impl,
/// the error naming the path inside the value (what [`typed_value!`] uses).
///
/// [`typed_value!`]: crate::typed_value
pub fn from_typed<T: livebase_schema::typed::Type>(value: Value) -> Result<T, DecodeError> {
    T::from_value(value, "").map_err(|e| DecodeError::new(e.path, e.message))
}

/// Makes `#[derive(Type)]` types (`livebase_schema::typed`) arguments and
/// results of function references: `typed_value!(ListArgs, Todo);` implements
/// [`IntoArgs`] and [`FromValue`] for each through its `Type` impl. What
/// `livebase codegen --rust` writes for the types it generates.
#[macro_export]
macro_rules! typed_value {
    ($($name:ty),* $(,)?) => {$(
        impl $crate::IntoArgs for $name {
            fn into_args(self) -> $crate::Value {
                ::livebase_schema::typed::Type::into_value(self)
            }
        }
        impl $crate::FromValue for $name {
            fn from_value(value: $crate::Value) -> ::std::result::Result<Self, $crate::DecodeError> {
                $crate::function::from_typed(value)
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use livebase_schema::obj;
    use livebase_schema::typed::{Doc, Id};

    use super::*;

    #[derive(livebase_schema::typed::Type, Debug, PartialEq)]
    #[livebase(table = "notes")]
    struct Note {
        body: String,
    }

    #[derive(livebase_schema::typed::Type, Debug, PartialEq)]
    struct AddArgs {
        body: String,
        pinned: Option<bool>,
    }

    crate::typed_value!(AddArgs);

    #[test]
    fn typed_values_are_arguments_and_results() {
        let args = AddArgs {
            body: "hi".into(),
            pinned: None,
        };
        assert_eq!(args.into_args(), obj! { "body" => "hi" });
        let id = Id::<Note>::generate();
        let value = Value::Array(vec![obj! {
            "_id" => id.as_str(), "_creationTime" => 1.0, "body" => "hi",
        }]);
        let notes = <Vec<Doc<Note>> as FromValue>::from_value(value).expect("decoded");
        assert_eq!(notes[0].id, id);
        assert_eq!(notes[0].body, "hi");
        let err =
            <Vec<Doc<Note>> as FromValue>::from_value(Value::Array(vec![obj! { "_id" => "x" }]));
        assert_eq!(err.map(|_| ()).unwrap_err().path, "[0]._id");
        assert!(<Id<Note> as FromValue>::from_value(Value::from(1.0)).is_err());
    }

    #[test]
    fn decoding_errors_name_the_path_into_the_value() {
        let value = Value::Array(vec![Value::Null, obj! { "n" => "x" }]);
        let err = <Vec<Option<Object>>>::from_value(value.clone()).map(|_| ());
        assert_eq!(err, Ok(()));
        struct N(f64);
        impl FromValue for N {
            fn from_value(value: Value) -> Result<Self, DecodeError> {
                Ok(N(Fields::new(value)?.take("n")?))
            }
        }
        let ok = <Vec<Option<N>>>::from_value(Value::Array(vec![obj! { "n" => 2.0 }]));
        assert_eq!(ok.unwrap()[0].as_ref().map(|n| n.0), Some(2.0));
        let err = <Vec<Option<N>>>::from_value(value).err().unwrap();
        assert_eq!(err.path, "[1].n");
        assert_eq!(err.message, "expected a number, found string");
    }

    #[test]
    fn common_types_decode_from_their_values() {
        assert_eq!(String::from_value("a".into()), Ok("a".to_string()));
        assert_eq!(f64::from_value(1.5.into()), Ok(1.5));
        assert_eq!(i64::from_value(Value::Int64(7)), Ok(7));
        assert_eq!(bool::from_value(true.into()), Ok(true));
        assert_eq!(<()>::from_value(Value::Null), Ok(()));
        assert_eq!(<Option<String>>::from_value(Value::Null), Ok(None));
        assert!(f64::from_value(Value::Int64(1)).is_err());
        assert_eq!(().into_args(), obj! {});
    }
}
