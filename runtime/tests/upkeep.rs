//! The runtime's upkeep on a real server: a data folder holding thousands
//! of finished jobs past their retention and of expired sessions is purged
//! by `livebase serve` on its own — the jobs and sessions still in use stay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use livebase_runtime::auth::tables::{SESSIONS, USERS};
use livebase_runtime::database::Database;
use livebase_runtime::registry::Registry;
use livebase_runtime::server::{serve, ServerOptions};
use livebase_runtime::store::sqlite::{SqlitePersistence, DATABASE_FILE};
use livebase_runtime::system::{with_system_tables, SCHEDULED_FUNCTIONS};
use livebase_schema::{obj, Schema, Value};

const DAY_MS: f64 = 24.0 * 60.0 * 60.0 * 1e3;
/// A guard against hanging, not a measure of speed.
const GUARD: Duration = Duration::from_secs(60);

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

async fn rows(db: &Database, table: &'static str) -> Vec<Value> {
    db.query(move |tx| tx.query(table).collect())
        .await
        .expect("reads")
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_server_purges_old_finished_jobs_and_expired_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    {
        let store = Arc::new(SqlitePersistence::open(dir.path().join(DATABASE_FILE)).unwrap());
        let db = Database::open(store, with_system_tables(Schema::new())).unwrap();
        let job = |state: &str, at: f64| {
            obj! { "name" => "m:f", "args" => obj! {}, "scheduledTime" => at, "state" => state }
        };
        db.mutate(move |tx| {
            for i in 0..3_000 {
                let state = ["success", "failed", "canceled"][i % 3];
                tx.insert(SCHEDULED_FUNCTIONS, job(state, now - 10.0 * DAY_MS))?;
            }
            // Kept: still to run; scheduled yesterday; scheduled long ago
            // but completed yesterday.
            tx.insert(SCHEDULED_FUNCTIONS, job("pending", now + DAY_MS))?;
            tx.insert(SCHEDULED_FUNCTIONS, job("success", now - DAY_MS))?;
            let mut late = job("failed", now - 10.0 * DAY_MS);
            if let Value::Object(fields) = &mut late {
                fields.insert("completedTime".into(), Value::from(now - DAY_MS));
            }
            tx.insert(SCHEDULED_FUNCTIONS, late)?;
            let user = tx.insert(
                USERS,
                obj! { "email" => "a@x", "name" => "A", "passwordHash" => "h" },
            )?;
            for _ in 0..3_000 {
                tx.insert(
                    SESSIONS,
                    obj! { "userId" => user.as_str(), "expiresAt" => now - DAY_MS },
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let users = rows(&db, USERS).await;
        let user = users[0]
            .get("_id")
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        db.mutate(move |tx| {
            tx.insert(
                SESSIONS,
                obj! { "userId" => user.as_str(), "expiresAt" => now + DAY_MS },
            )
        })
        .await
        .unwrap();
    }

    let options = ServerOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_path_buf(),
        ..ServerOptions::default()
    };
    let server = serve(Registry::new(Schema::new()), options)
        .await
        .expect("the server starts");
    let db = server.state.executor.database().clone();
    let deadline = Instant::now() + GUARD;
    loop {
        let (jobs, sessions) = (
            rows(&db, SCHEDULED_FUNCTIONS).await,
            rows(&db, SESSIONS).await,
        );
        if jobs.len() == 3 && sessions.len() == 1 {
            let mut states: Vec<&str> = jobs
                .iter()
                .filter_map(|j| j.get("state").and_then(Value::as_str))
                .collect();
            states.sort();
            assert_eq!(states, ["failed", "pending", "success"]);
            assert!(sessions[0].get("expiresAt").and_then(Value::as_f64) > Some(now));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs and {} sessions left",
            jobs.len(),
            sessions.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}
