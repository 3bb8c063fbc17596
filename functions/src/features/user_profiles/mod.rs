//! User profiles: extra user data in a table of the application's own.

pub mod schema;
