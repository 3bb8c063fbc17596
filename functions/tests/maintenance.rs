//! The purge cron's mutation on a real SQLite store: expired sessions and
//! outcomes past retention are deleted, live ones kept; clients cannot call it.

use std::sync::Arc;

use livebase_runtime::auth::tables::SESSIONS;
use livebase_runtime::database::Database;
use livebase_runtime::executor::{Caller, Executor};
use livebase_runtime::registry::Identity;
use livebase_runtime::store::sqlite::SqlitePersistence;
use livebase_runtime::store::MutationOutcome;
use livebase_runtime::system::with_system_tables;
use livebase_schema::{obj, DocumentId, Value};

async fn executor(dir: &std::path::Path) -> Executor {
    let mut app = livebase_functions::app();
    app.extend_schema(with_system_tables);
    let store = Arc::new(SqlitePersistence::open(dir.join("db.sqlite3")).unwrap());
    let db = Database::open(store, app.schema().clone()).unwrap();
    Executor::new(db, Arc::new(app))
}

async fn stored_outcomes(ex: &Executor) -> usize {
    ex.database()
        .query(|tx| tx.count_mutation_outcomes())
        .await
        .unwrap()
        .value
}

#[tokio::test]
async fn purge_deletes_expired_sessions_and_old_outcomes_only() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path()).await;
    let user = DocumentId::generate("users").to_string();
    let (past, future) = (1.0, 4.0e12);
    let kept = ex
        .database()
        .mutate(move |tx| {
            tx.insert(
                SESSIONS,
                obj! { "userId" => user.as_str(), "expiresAt" => past },
            )?;
            tx.insert(
                SESSIONS,
                obj! { "userId" => user.as_str(), "expiresAt" => future },
            )
        })
        .await
        .unwrap()
        .value;
    // A client mutation's outcome, stored as the executor stores one.
    ex.database()
        .mutate(|tx| {
            let ts = tx.commit_ts().unwrap_or_default();
            tx.store_mutation_outcome(&MutationOutcome {
                session_id: "5d1b2c7e-0000-4000-8000-000000000000".into(),
                request_id: 7,
                fingerprint: vec![0; 32],
                ts,
                path: "todos:create".into(),
                value: Value::Null,
            })
        })
        .await
        .unwrap();
    assert_eq!(stored_outcomes(&ex).await, 1);

    // Default retention: the fresh outcome stays, the expired session goes.
    let (purged, _) = ex
        .mutation(
            "maintenance:purge",
            vec![obj! {}],
            Identity::Anonymous,
            Caller::Server,
            None,
        )
        .await
        .unwrap();
    assert_eq!(purged, obj! { "sessions" => 1.0, "outcomes" => 0.0 });
    assert_eq!(stored_outcomes(&ex).await, 1);
    let sessions = ex
        .database()
        .query(|tx| tx.query(SESSIONS).collect())
        .await
        .unwrap()
        .value;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].get("_id"), Some(&Value::from(kept)));

    // With no retention the outcome goes too; a second run finds nothing.
    let args = vec![obj! { "outcomesOlderThanMs" => 0.0 }];
    let (purged, _) = ex
        .mutation(
            "maintenance:purge",
            args.clone(),
            Identity::Anonymous,
            Caller::Server,
            None,
        )
        .await
        .unwrap();
    assert_eq!(purged, obj! { "sessions" => 0.0, "outcomes" => 1.0 });
    assert_eq!(stored_outcomes(&ex).await, 0);
    let (purged, _) = ex
        .mutation(
            "maintenance:purge",
            args,
            Identity::Anonymous,
            Caller::Server,
            None,
        )
        .await
        .unwrap();
    assert_eq!(purged, obj! { "sessions" => 0.0, "outcomes" => 0.0 });
}

#[tokio::test]
async fn clients_cannot_call_the_purge_and_the_cron_is_declared() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path()).await;
    let err = ex
        .mutation(
            "maintenance:purge",
            vec![obj! {}],
            Identity::Anonymous,
            Caller::Client,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.client_message()
            .contains("Could not find public function"),
        "{err}"
    );
    let app = livebase_functions::app();
    assert!(app
        .crons()
        .iter()
        .any(|c| c.name == "purge expired sessions and old mutation outcomes"));
}
