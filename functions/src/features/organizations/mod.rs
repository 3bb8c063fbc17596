//! Organizations, members and invitations. Their tables are the runtime's
//! (`livebase_runtime::auth::tables`), so this feature has no `schema.rs`;
//! [`logic`] holds what it does, and `crate::organizations` the registered
//! `organizations:*` functions.

pub mod logic;
