//! The `todos` table: the complete example feature the seed points to.

use livebase_schema::{define_table, v, TableDefinition};

pub const TODOS: &str = "todos";

pub fn todos_table() -> TableDefinition {
    define_table([
        ("text", v::string()),
        ("completed", v::boolean()),
        ("organizationId", v::string()),
        ("createdBy", v::string()),
    ])
    .index("by_organization", ["organizationId"])
}
