//! The PostgreSQL engine passes the store's conformance suite: one test per
//! case, `conformance::<case>`, each in a schema of its own on the tests'
//! server (see `livebase_testkit::postgres` for where it comes from), so the
//! cases run in parallel; the schema is dropped when the case ends.

mod conformance {
    use livebase_store::{Persistence, StoreConnection, StoreError};
    use livebase_store_postgres::PostgresPersistence;
    use livebase_testkit::postgres::{drop_schema, server_url, unique_name};

    fn server() -> Option<String> {
        server_url("the PostgreSQL conformance suite")
    }

    /// The engine on a fresh schema, dropped with it.
    struct OwnSchema {
        engine: PostgresPersistence,
        url: String,
    }

    impl OwnSchema {
        fn create() -> OwnSchema {
            let url = server().expect("a server: checked before the case");
            let engine = PostgresPersistence::open_schema(&url, &unique_name("conformance"), None)
                .expect("open a fresh schema");
            OwnSchema { engine, url }
        }
    }

    impl Persistence for OwnSchema {
        fn connect(&self) -> Result<Box<dyn StoreConnection>, StoreError> {
            self.engine.connect()
        }
    }

    impl Drop for OwnSchema {
        fn drop(&mut self) {
            drop_schema(&self.url, self.engine.schema());
        }
    }

    livebase_store::conformance_tests!(|_dir| OwnSchema::create(), when: || server().is_some());
}
