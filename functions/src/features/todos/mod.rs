//! Todos: the complete example feature (`schema.rs`, `logic.rs`, and the
//! registered `todos:*` functions).

pub mod schema;
