//! The `todos` table: the complete example feature the seed points to.

use livebase_schema::{define_table, v, TableDefinition};

/// Longest todo text, in characters: the table's bound, which `create_todo`
/// also checks first to answer with its own message.
pub const MAX_TEXT_CHARS: usize = 1000;

pub const TODOS: &str = "todos";

pub fn todos_table() -> TableDefinition {
    define_table([
        // `create_todo` refuses longer texts with its own message first; the
        // table holds the bound for every other write.
        ("text", v::string().max_len(MAX_TEXT_CHARS)),
        ("completed", v::boolean()),
        ("organizationId", v::string()),
        ("createdBy", v::string()),
    ])
    .index("by_organization", ["organizationId"])
}
