//! What every feature shares: the permission checks of [`auth`].

pub mod auth;
