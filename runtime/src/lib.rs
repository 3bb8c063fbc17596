//! livebase's runtime: the subscription manager, the function registry, the
//! scheduler and crons, auth, email, and the sync server — over the store
//! (`livebase-store`: persistence, transactions, read and write sets, the
//! writer thread), whose modules it re-exports under their old paths.
//!
//! **Invariant:** the runtime hosts any application and never imports one; the
//! application registers its functions and schema through [`registry`].

pub mod auth;
pub mod backup;
pub mod calllog;

pub mod codegen;
pub mod context;
pub mod datadir;
pub mod email;
pub mod executor;
pub mod function;
pub mod identity;
pub mod node;
pub mod private_files;
pub mod registry;
pub mod route;
pub mod scheduler;
pub mod schema_check;
pub mod server;
pub mod storage;
pub mod subscriptions;
pub mod system;
pub mod upkeep;

// The store's modules, at the paths they had when they lived here.
pub use livebase_store::persistence as store;
pub use livebase_store::{clock, database, error, pagination, readset, transaction, typed};

pub use error::{Error, ErrorCode, Result};
