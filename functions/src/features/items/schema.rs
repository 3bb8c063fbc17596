//! The `items` table: the seed's example of an organization-scoped feature.
//! Its document type [`Item`] is the table's definition.

use livebase_schema::typed::{table_of, Type};
use livebase_schema::TableDefinition;

pub const ITEMS: &str = "items";
/// Longest item name, in characters: a member cannot make every reader of the
/// organization's list fetch megabytes per item.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest item status, in characters.
pub const MAX_STATUS_CHARS: usize = 64;

/// An item, as stored in `items`.
#[derive(Type, Clone, Debug, PartialEq)]
#[livebase(table = ITEMS)]
pub struct Item {
    #[livebase(max_len = MAX_NAME_CHARS)]
    pub name: String,
    #[livebase(max_len = MAX_STATUS_CHARS)]
    pub status: String,
    pub organization_id: String,
    /// The `user.id` of its author.
    pub created_by: String,
}

pub fn items_table() -> TableDefinition {
    table_of::<Item>()
        .index("by_organization", ["organizationId"])
        .index("by_organization_status", ["organizationId", "status"])
}
