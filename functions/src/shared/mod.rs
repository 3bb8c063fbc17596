//! What every feature shares: the permission checks of [`auth`], and how
//! many rows a list query returns.

pub mod auth;

/// Most rows a list query (`items:getAll`, `items:getByStatus`, `todos:list`,
/// `organizations:members`, `organizations:invitations`) returns: members
/// can create rows without end, and a list that grew past the array or read
/// limits would fail for everyone.
pub const LIST_LIMIT: usize = 1_000;
