//! The registered `userProfiles:*` functions: signed-in users read and write
//! their own profile — nothing else, so they need no organization.

use livebase_runtime::registry::Registry;
use livebase_runtime::storage::StoredFile;
use livebase_schema::typed::{Id, Type};

use crate::features::user_profiles::logic::{self, user_id};
use crate::shared::auth::validations::ensure_user;

/// `userProfiles:get {}`.
#[derive(Type)]
pub struct GetArgs {}

/// `userProfiles:upsert {displayName, bio?}`.
#[derive(Type)]
pub struct UpsertArgs {
    pub display_name: String,
    pub bio: Option<String>,
}

/// `userProfiles:setAvatar {storageId}`.
#[derive(Type)]
pub struct SetAvatarArgs {
    pub storage_id: Id<StoredFile>,
}

pub fn register(app: &mut Registry) {
    app.typed_query("userProfiles:get", |ctx, _args: GetArgs| {
        let user = ensure_user(ctx)?;
        logic::get_profile_with_avatar(ctx, &user_id(&user.id)?)
    });

    app.typed_mutation("userProfiles:upsert", |ctx, args: UpsertArgs| {
        let user = ensure_user(ctx)?;
        logic::upsert_profile(ctx.db, &user_id(&user.id)?, &args.display_name, args.bio)
    });

    app.typed_mutation("userProfiles:setAvatar", |ctx, args: SetAvatarArgs| {
        let user = ensure_user(ctx)?;
        logic::set_avatar(ctx, &user_id(&user.id)?, &args.storage_id)
    });
}
