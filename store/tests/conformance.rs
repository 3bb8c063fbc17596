//! The SQLite engine passes the conformance suite, run the way another
//! engine's crate runs it: one test per case, `conformance::<case>`.

mod conformance {
    use livebase_store::SqlitePersistence;

    livebase_store::conformance_tests!(|dir| {
        SqlitePersistence::open(dir.join("db.sqlite3")).expect("open sqlite")
    });
}
