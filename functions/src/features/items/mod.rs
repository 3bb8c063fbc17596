//! Items: the seed's complete feature pattern (`schema.rs`, `logic.rs`, and the
//! registered `items:*` functions).

pub mod schema;
