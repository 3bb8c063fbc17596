//! Items: the seed's complete feature pattern — [`schema`] (the table),
//! [`logic`] (what it does, on a transaction) — with the registered `items:*`
//! functions in `crate::items`.

pub mod logic;
pub mod schema;
