//! livebase's runtime: the store and its transactions, read and write sets, the
//! subscription manager, the function registry, the scheduler and crons,
//! email, and the sync server.
//!
//! **Invariant:** the runtime hosts any application and never imports one; the
//! application registers its functions and schema through [`registry`].

pub mod auth;
pub mod backup;
pub mod calllog;
pub mod codegen;
pub mod context;
pub mod database;
pub mod datadir;
pub mod email;
pub mod error;
pub mod executor;
pub mod function;
pub mod identity;
pub mod pagination;
pub mod private_files;
pub mod readset;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod storage;
pub mod store;
pub mod subscriptions;
pub mod system;
pub mod transaction;
pub mod upkeep;

pub use error::{Error, ErrorCode, Result};
