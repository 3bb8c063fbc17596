//! The `userProfiles` table: the seed's "extending user data" — a table linked
//! to the built-in users by id.

use livebase_schema::{define_table, v, TableDefinition};

pub const USER_PROFILES: &str = "userProfiles";
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Longest bio, in characters.
pub const MAX_BIO_CHARS: usize = 2000;

pub fn user_profiles_table() -> TableDefinition {
    define_table([
        ("userId", v::id("users")),
        ("displayName", v::string().max_len(MAX_DISPLAY_NAME_CHARS)),
        ("bio", v::optional(v::string().max_len(MAX_BIO_CHARS))),
        ("avatarId", v::optional(v::id("_storage"))),
    ])
    .index("by_user", ["userId"])
    .index("by_avatar", ["avatarId"])
}
