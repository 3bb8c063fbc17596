//! The `items` table: the seed's example of an organization-scoped feature.

use livebase_schema::{define_table, v, TableDefinition};

pub const ITEMS: &str = "items";
/// Longest item name, in characters: a member cannot make every reader of the
/// organization's list fetch megabytes per item.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest item status, in characters.
pub const MAX_STATUS_CHARS: usize = 64;

pub fn items_table() -> TableDefinition {
    define_table([
        ("name", v::string().max_len(MAX_NAME_CHARS)),
        ("status", v::string().max_len(MAX_STATUS_CHARS)),
        ("organizationId", v::string()),
        ("createdBy", v::string()),
    ])
    .index("by_organization", ["organizationId"])
    .index("by_organization_status", ["organizationId", "status"])
}
