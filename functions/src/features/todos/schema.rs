//! The `todos` table: the complete example feature the seed points to. Its
//! document type [`Todo`] is the table's definition: the fields' validators
//! are derived from it, and reads answer `Doc<Todo>`.

use livebase_schema::typed::{table_of, Type};
use livebase_schema::TableDefinition;

/// Longest todo text, in characters: the table's bound, which `create_todo`
/// also checks first to answer with its own message.
pub const MAX_TEXT_CHARS: usize = 1000;

pub const TODOS: &str = "todos";

/// A todo, as stored in `todos`.
#[derive(Type, Clone, Debug, PartialEq)]
#[livebase(table = TODOS)]
pub struct Todo {
    // `create_todo` refuses longer texts with its own message first; the
    // table holds the bound for every other write.
    #[livebase(max_len = MAX_TEXT_CHARS)]
    pub text: String,
    pub completed: bool,
    pub organization_id: String,
    /// The `user.id` of its author.
    pub created_by: String,
}

pub fn todos_table() -> TableDefinition {
    table_of::<Todo>().index("by_organization", ["organizationId"])
}
