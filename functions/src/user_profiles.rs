//! The registered `userProfiles:*` functions: signed-in users read and write
//! their own profile — nothing else, so they need no organization.

use livebase_runtime::registry::Registry;
use livebase_runtime::storage::STORAGE;
use livebase_schema::{v, Value};

use crate::features::user_profiles::logic;
use crate::shared::auth::validations::ensure_user;

pub fn register(app: &mut Registry) {
    app.query("userProfiles:get", [], |ctx, _args| {
        let user = ensure_user(ctx)?;
        logic::get_profile_with_avatar(ctx, &user.id)
    });

    app.mutation(
        "userProfiles:upsert",
        [
            ("displayName", v::string()),
            ("bio", v::optional(v::string())),
        ],
        |ctx, args| {
            let user = ensure_user(ctx)?;
            let display_name = args.string("displayName")?;
            logic::upsert_profile(ctx.db, &user.id, &display_name, args.opt_string("bio")?)
        },
    );

    app.mutation(
        "userProfiles:setAvatar",
        [("storageId", v::id(STORAGE))],
        |ctx, args| {
            let user = ensure_user(ctx)?;
            let avatar = args.id("storageId", STORAGE)?;
            logic::set_avatar(ctx, &user.id, &avatar)?;
            Ok(Value::Null)
        },
    );
}
