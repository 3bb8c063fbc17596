//! The `userProfiles` table: the seed's "extending user data" — a table linked
//! to the built-in users by id.

use livebase_schema::{define_table, v, TableDefinition};

pub const USER_PROFILES: &str = "userProfiles";

pub fn user_profiles_table() -> TableDefinition {
    define_table([
        ("userId", v::id("users")),
        ("displayName", v::string()),
        ("bio", v::optional(v::string())),
    ])
    .index("by_user", ["userId"])
}
