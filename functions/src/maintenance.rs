//! Housekeeping the application runs on a cron: sessions past their expiry
//! and stored mutation outcomes past their retry window are deleted, so
//! neither table grows without bound. Outcomes are deleted in batches, each
//! its own mutation, the next scheduled at once while a batch comes back
//! full: the purge keeps up with any rate without holding the writer long.

use std::time::Duration;

use livebase_runtime::auth::tables::SESSIONS;
use livebase_runtime::registry::Registry;
use livebase_runtime::{Error, Result};
use livebase_schema::{obj, v, DocumentId, Timestamp, Value};

/// How long a client may resend a mutation and get its stored outcome: a day
/// covers any reconnect; after that the outcome is deleted.
pub const OUTCOME_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How often the purge runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(60 * 60);
/// Most sessions one run deletes (the next run continues).
pub const PURGE_BATCH: usize = 1_000;
/// Most outcomes one run deletes; a full batch schedules the next run at
/// once, so every outcome past retention goes, however many there are.
pub const OUTCOME_PURGE_BATCH: usize = 10_000;
/// The purge's function.
pub const PURGE: &str = "maintenance:purge";

pub fn register(app: &mut Registry) {
    app.internal_mutation(
        PURGE,
        [("outcomesOlderThanMs", v::optional(v::float64()))],
        |ctx, args| {
            let now_ts = ctx
                .db
                .commit_ts()
                .ok_or_else(|| Error::internal("purge runs as a mutation"))?;
            let now = now_ts.as_millis_f64();
            let retention = match args.value("outcomesOlderThanMs") {
                Some(_) => args.f64("outcomesOlderThanMs")?,
                None => OUTCOME_RETENTION.as_millis() as f64,
            };
            let sessions = purge_expired_sessions(ctx, now)?;
            // Outcomes are stamped with their commit timestamp (nanoseconds).
            let retention_ns = (retention.max(0.0) * 1e6) as u64;
            let cutoff = Timestamp::new(now_ts.get().saturating_sub(retention_ns));
            let outcomes = ctx
                .db
                .purge_mutation_outcomes(cutoff, OUTCOME_PURGE_BATCH)?;
            if outcomes == OUTCOME_PURGE_BATCH {
                // More may be left: the next batch runs as its own mutation,
                // so other writes get the writer in between.
                let next = match args.value("outcomesOlderThanMs") {
                    Some(_) => obj! { "outcomesOlderThanMs" => retention },
                    None => obj! {},
                };
                ctx.scheduler().run_after(Duration::ZERO, PURGE, next)?;
            }
            Ok(obj! { "sessions" => sessions as f64, "outcomes" => outcomes as f64 })
        },
    );
    app.interval(
        "purge expired sessions and old mutation outcomes",
        PURGE_EVERY,
        PURGE,
        obj! {},
    );
}

fn id_of(doc: &Value) -> Result<DocumentId> {
    doc.get("_id")
        .and_then(Value::as_str)
        .and_then(DocumentId::parse)
        .ok_or_else(|| Error::internal("a stored document has no valid _id"))
}

/// Sessions are created with one lifetime, so the oldest expire first: the
/// oldest batch holds every expired session there is (or the next run finds
/// the rest).
fn purge_expired_sessions(ctx: &mut livebase_runtime::registry::Ctx, now: f64) -> Result<usize> {
    let oldest = ctx.db.query(SESSIONS).take(PURGE_BATCH)?;
    let mut deleted = 0;
    for session in oldest {
        let expires_at = session
            .get("expiresAt")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        if expires_at <= now {
            ctx.db.delete(&id_of(&session)?)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
