//! Todos: the complete example feature the seed points to — [`schema`] (the
//! table), [`logic`] (what it does, on a transaction) — with the registered
//! `todos:*` functions in `crate::todos`. Copy this folder to start a feature.

pub mod logic;
pub mod schema;
