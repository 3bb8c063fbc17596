//! The seed's `shared/auth/`: the role → permission table
//! ([`permissions`]) and the three levels of checks every function starts with
//! ([`validations`]).

pub mod permissions;
pub mod validations;
