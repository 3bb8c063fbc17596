//! livebase's store: everything between a function's document calls and the
//! disk. The [`Persistence`] trait and its SQLite engine, the [`transaction`]
//! API functions use (the one place reads are recorded), read and write sets
//! with the [`readset::InvalidationIndex`] that files them, pagination
//! cursors, the typed document calls ([`typed`]: `get_doc`, `query_of`), and the [`database`] — the writer thread and reader pool behind an
//! async handle.
//!
//! **Invariant:** nothing outside this crate names rusqlite: the runtime sees
//! engines only through [`Persistence`], and their failures only as
//! [`StoreError`], turned into an internal [`Error`] at the boundary.
//!
//! With the `conformance` feature, `conformance` exports the suite every
//! engine must pass as named cases, and `conformance_tests!` runs them all as
//! one `#[test]` each in another engine's crate (`tests/conformance.rs` runs
//! them on SQLite that way).

pub mod blobs;
pub mod clock;
pub mod database;
pub mod error;
pub mod files;
pub mod pagination;
pub mod persistence;
pub mod readset;
pub mod transaction;
pub mod typed;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Error, ErrorCode, Result, StoreError};
pub use persistence::sqlite::SqlitePersistence;
pub use persistence::{
    index_key, index_prefix, CommitLog, Document, Lease, LogRead, MutationOutcome, Order,
    Persistence, StoreConnection,
};
