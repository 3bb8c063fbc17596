//! The PostgreSQL engine passes the store's conformance suite: one test per
//! case, `conformance::<case>`, each in a schema of its own on the tests'
//! server (see `livebase_testkit::postgres` for where it comes from), so the
//! cases run in parallel.

mod conformance {
    use livebase_store_postgres::PostgresPersistence;
    use livebase_testkit::postgres::{server_url, unique_name};

    fn server() -> Option<String> {
        server_url("the PostgreSQL conformance suite")
    }

    livebase_store::conformance_tests!(
        |_dir| {
            let url = server().expect("a server: checked before the case");
            PostgresPersistence::open_schema(&url, &unique_name("conformance"), None)
                .expect("open a fresh schema")
        },
        when: || server().is_some()
    );
}
