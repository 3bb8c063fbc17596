//! The application's features, one folder each: `schema.rs` (its tables),
//! `logic.rs` (what it does, on a transaction) and the registered functions.

pub mod items;
pub mod todos;
pub mod user_profiles;
