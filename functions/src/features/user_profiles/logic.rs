//! Reading and writing the caller's profile, on a transaction.

use livebase_runtime::auth::tables::Users;
use livebase_runtime::registry::{MutationCtx, QueryCtx, Reader};
use livebase_runtime::storage::StoredFile;
use livebase_runtime::transaction::Transaction;
use livebase_runtime::{Error, Result};
use livebase_schema::typed::{Doc, Id, Type};
use livebase_schema::{obj, DocumentId};

use super::schema::UserProfile;

/// A profile as `userProfiles:get` returns it: the document and, when it has
/// an avatar, `avatarUrl`, a URL serving it.
#[derive(Type, Clone, Debug, PartialEq)]
pub struct ProfileWithAvatar {
    #[livebase(flatten)]
    pub profile: Doc<UserProfile>,
    pub avatar_url: Option<String>,
}

/// A signed-in user's id as an id of `users`.
pub fn user_id(id: &DocumentId) -> Result<Id<Users>> {
    Id::new(id.clone()).ok_or_else(|| Error::internal(format!("malformed user id {id}")))
}

/// The user's profile, if they made one.
pub fn get_profile(db: &mut Reader, user_id: &Id<Users>) -> Result<Option<Doc<UserProfile>>> {
    db.query_of::<UserProfile>()
        .with_index("by_user", |q| q.eq("userId", user_id.as_str()))
        .first()
}

/// The user's profile as `userProfiles:get` returns it.
pub fn get_profile_with_avatar(
    ctx: &mut QueryCtx,
    user_id: &Id<Users>,
) -> Result<Option<ProfileWithAvatar>> {
    let Some(profile) = get_profile(&mut ctx.db, user_id)? else {
        return Ok(None);
    };
    let avatar_url = match &profile.avatar_id {
        Some(avatar) => ctx.storage().get_url(avatar)?,
        None => None,
    };
    Ok(Some(ProfileWithAvatar {
        profile,
        avatar_url,
    }))
}

/// Makes stored file `avatar` the user's avatar and deletes the file of the
/// one it replaces. The user needs a profile; a file that does not exist is
/// `NOT_FOUND`, and one that is another profile's avatar `FORBIDDEN` (its id
/// is in that profile's URL, and taking it would let its taker delete it).
pub fn set_avatar(
    ctx: &mut MutationCtx,
    user_id: &Id<Users>,
    avatar: &Id<StoredFile>,
) -> Result<()> {
    let profile = get_profile(&mut Reader::new(ctx.db), user_id)?
        .ok_or_else(|| Error::not_found("make a profile first (userProfiles:upsert)"))?;
    if ctx.storage().get_metadata(avatar)?.is_none() {
        return Err(Error::not_found(format!(
            "there is no stored file {avatar}"
        )));
    }
    let holders = ctx
        .db
        .query_of::<UserProfile>()
        .with_index("by_avatar", |q| q.eq("avatarId", avatar.as_str()))
        .take(2)?;
    if holders.iter().any(|holder| holder.id != profile.id) {
        return Err(Error::forbidden("this file is another profile's avatar"));
    }
    ctx.db
        .patch(&profile.id, obj! { "avatarId" => avatar.as_str() })?;
    match &profile.avatar_id {
        Some(old) if old != avatar => match ctx.storage().delete(old) {
            // Already gone: nothing to delete.
            Err(e) if e.code() == Some(&livebase_runtime::ErrorCode::NotFound) => Ok(()),
            other => other,
        },
        _ => Ok(()),
    }
}

/// Creates or replaces the user's profile and returns its id, which stays the
/// same across calls. A `bio` left out is removed; the avatar is kept.
pub fn upsert_profile(
    db: &mut Transaction,
    user_id: &Id<Users>,
    display_name: &str,
    bio: Option<String>,
) -> Result<Id<UserProfile>> {
    let existing = get_profile(&mut Reader::new(db), user_id)?;
    let profile = UserProfile {
        user_id: user_id.clone(),
        display_name: display_name.to_string(),
        bio,
        avatar_id: existing.as_ref().and_then(|p| p.avatar_id.clone()),
    };
    match existing {
        Some(existing) => {
            db.replace_doc(&existing.id, profile)?;
            Ok(existing.id)
        }
        None => db.insert_doc(profile),
    }
}
