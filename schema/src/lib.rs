//! livebase's value model and everything that describes data without storing it:
//! values and their Convex JSON encoding, validators, Rust types as values
//! (`typed`: `#[derive(Type)]`, `Id<T>`, `Doc<T>`), table schemas, document ids,
//! timestamps, order-preserving index keys, and the sync protocol's message types.
//!
//! **Invariant:** this crate knows nothing of SQLite, tokio or sockets; the store,
//! the server and the SDK all build on it.

pub mod id;
pub mod json;
pub mod key;
pub mod protocol;
pub mod table;
pub mod timestamp;
pub mod typed;
pub mod validator;
pub mod value;

// `#[derive(Type)]` names this crate by its path, here too.
extern crate self as livebase_schema;

#[cfg(test)]
mod testing;

pub use id::DocumentId;
pub use json::DecodeError;
pub use table::{define_table, IndexDefinition, Schema, SchemaError, TableDefinition};
pub use timestamp::Timestamp;
pub use typed::{Doc, Id, Table, Type};
pub use validator::{v, ValidationError, Validator};
pub use value::{Object, SharedObject, Value, ValueType};
