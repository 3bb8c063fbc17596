//! Reading and writing the caller's profile, on a transaction.

use livebase_runtime::registry::Reader;
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

/// Creates or replaces the user's profile and returns its id, which stays the
/// same across calls. A `bio` left out is removed.
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
            db.replace(&id, Value::Object(fields))?;
            Ok(id)
        }
        None => db.insert(USER_PROFILES, Value::Object(fields)),
    }
}
