//! The runtime's own tables, which live beside the application's in the same
//! store (names start with `_`): stored mutation outcomes for idempotent
//! retries. Later issues add users, sessions and scheduled jobs here.

use livebase_schema::{define_table, v, Schema};

/// Outcomes of client mutations by `(sessionId, requestId)`, written in the
/// same transaction as the mutation, so a resent mutation returns what the
/// first run returned instead of running again.
pub const MUTATION_OUTCOMES: &str = "_mutation_outcomes";

/// Adds the system tables to an application's schema.
pub fn with_system_tables(schema: Schema) -> Schema {
    schema.system_table(
        MUTATION_OUTCOMES,
        define_table([
            ("sessionId", v::string()),
            ("requestId", v::float64()),
            ("path", v::string()),
            ("ts", v::int64()),
            ("success", v::boolean()),
            ("result", v::any()),
            ("errorData", v::optional(v::any())),
        ])
        .index("by_request", ["sessionId", "requestId"]),
    )
}
