//! The `items` table: the seed's example of an organization-scoped feature.

use livebase_schema::{define_table, v, TableDefinition};

pub const ITEMS: &str = "items";

pub fn items_table() -> TableDefinition {
    define_table([
        ("name", v::string()),
        ("status", v::string()),
        ("organizationId", v::string()),
        ("createdBy", v::string()),
    ])
    .index("by_organization", ["organizationId"])
    .index("by_organization_status", ["organizationId", "status"])
}
