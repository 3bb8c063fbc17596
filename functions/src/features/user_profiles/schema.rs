//! The `userProfiles` table: the seed's "extending user data" — a table linked
//! to the built-in users by id. Its document type [`UserProfile`] is the
//! table's definition.

use livebase_runtime::auth::tables::Users;
use livebase_runtime::storage::StoredFile;
use livebase_schema::typed::{table_of, Id, Type};
use livebase_schema::TableDefinition;

pub const USER_PROFILES: &str = "userProfiles";
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Longest bio, in characters.
pub const MAX_BIO_CHARS: usize = 2000;

/// A user's profile, as stored in `userProfiles`.
#[derive(Type, Clone, Debug, PartialEq)]
#[livebase(table = USER_PROFILES)]
pub struct UserProfile {
    pub user_id: Id<Users>,
    #[livebase(max_len = MAX_DISPLAY_NAME_CHARS)]
    pub display_name: String,
    #[livebase(max_len = MAX_BIO_CHARS)]
    pub bio: Option<String>,
    /// The stored file of the avatar, set by `userProfiles:setAvatar`.
    pub avatar_id: Option<Id<StoredFile>>,
}

pub fn user_profiles_table() -> TableDefinition {
    table_of::<UserProfile>()
        .index("by_user", ["userId"])
        .index("by_avatar", ["avatarId"])
}
