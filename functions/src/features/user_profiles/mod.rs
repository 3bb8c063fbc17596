//! User profiles: the seed's "extending user data" — the built-in `users` table
//! stays the runtime's, and what the application adds lives in a table of its
//! own linked by user id ([`schema`], [`logic`], and `crate::user_profiles`).

pub mod logic;
pub mod schema;
