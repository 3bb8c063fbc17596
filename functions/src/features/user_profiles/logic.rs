//! Reading and writing the caller's profile, on a transaction.

use livebase_runtime::registry::{MutationCtx, QueryCtx, Reader};
use livebase_runtime::storage::STORAGE;
use livebase_runtime::transaction::Transaction;
use livebase_runtime::{Error, Result};
use livebase_schema::{DocumentId, Object, Value};

use super::schema::USER_PROFILES;

/// The user's profile, if they made one.
pub fn get_profile(db: &mut Reader, user_id: &DocumentId) -> Result<Option<Value>> {
    db.query(USER_PROFILES)
        .with_index("by_user", |q| q.eq("userId", user_id.as_str()))
        .first()
}

/// The user's profile as `userProfiles:get` returns it: with `avatarUrl`, a
/// URL serving the avatar, when it has one.
pub fn get_profile_with_avatar(ctx: &mut QueryCtx, user_id: &DocumentId) -> Result<Option<Value>> {
    let Some(mut profile) = get_profile(&mut ctx.db, user_id)? else {
        return Ok(None);
    };
    if let Some(avatar) = avatar_of(&profile) {
        if let (Some(url), Value::Object(o)) = (ctx.storage().get_url(&avatar)?, &mut profile) {
            o.insert("avatarUrl".into(), url.into());
        }
    }
    Ok(Some(profile))
}

fn avatar_of(profile: &Value) -> Option<DocumentId> {
    profile
        .get("avatarId")
        .and_then(Value::as_str)
        .and_then(|id| DocumentId::parse_in(id, STORAGE))
}

fn profile_id(profile: &Value) -> Result<DocumentId> {
    let id = profile.get("_id").and_then(Value::as_str).unwrap_or("");
    DocumentId::parse_in(id, USER_PROFILES)
        .ok_or_else(|| Error::internal(format!("malformed profile id {id}")))
}

/// Makes stored file `avatar` the user's avatar and deletes the file of the
/// one it replaces. The user needs a profile; a file that does not exist is
/// `NOT_FOUND`, and one that is another profile's avatar `FORBIDDEN` (its id
/// is in that profile's URL, and taking it would let its taker delete it).
pub fn set_avatar(ctx: &mut MutationCtx, user_id: &DocumentId, avatar: &DocumentId) -> Result<()> {
    let profile = get_profile(&mut Reader::new(ctx.db), user_id)?
        .ok_or_else(|| Error::not_found("make a profile first (userProfiles:upsert)"))?;
    if ctx.storage().get_metadata(avatar)?.is_none() {
        return Err(Error::not_found(format!(
            "there is no stored file {avatar}"
        )));
    }
    let id = profile_id(&profile)?;
    let holders = ctx
        .db
        .query(USER_PROFILES)
        .with_index("by_avatar", |q| q.eq("avatarId", avatar.as_str()))
        .take(2)?;
    let holder_ids: Vec<DocumentId> = holders.iter().map(profile_id).collect::<Result<_>>()?;
    if holder_ids.iter().any(|holder| holder != &id) {
        return Err(Error::forbidden("this file is another profile's avatar"));
    }
    let old = avatar_of(&profile);
    let mut fields = Object::new();
    fields.insert("avatarId".into(), avatar.as_str().into());
    ctx.db.patch(&id, Value::Object(fields))?;
    match old {
        Some(old) if &old != avatar => match ctx.storage().delete(&old) {
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
    user_id: &DocumentId,
    display_name: &str,
    bio: Option<String>,
) -> Result<DocumentId> {
    let mut fields = Object::new();
    fields.insert("userId".into(), user_id.as_str().into());
    fields.insert("displayName".into(), display_name.into());
    if let Some(bio) = bio {
        fields.insert("bio".into(), bio.into());
    }
    let existing = get_profile(&mut Reader::new(db), user_id)?;
    match existing
        .as_ref()
        .and_then(|p| p.get("_id"))
        .and_then(Value::as_str)
    {
        Some(id) => {
            let id = DocumentId::parse_in(id, USER_PROFILES)
                .ok_or_else(|| Error::internal(format!("malformed profile id {id}")))?;
            if let Some(avatar) = existing.as_ref().and_then(|p| p.get("avatarId")) {
                fields.insert("avatarId".into(), avatar.clone());
            }
            db.replace(&id, Value::Object(fields))?;
            Ok(id)
        }
        None => db.insert(USER_PROFILES, Value::Object(fields)),
    }
}
