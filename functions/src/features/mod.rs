//! The application's features, one folder each: `schema.rs` (its tables),
//! `logic.rs` (what it does, on a transaction); the registered functions sit
//! beside `features/` in `<module>.rs`.

pub mod items;
pub mod organizations;
pub mod todos;
pub mod user_profiles;
