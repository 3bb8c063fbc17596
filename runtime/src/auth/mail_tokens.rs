//! The one-time tokens of mailed links — email verification and password
//! reset — as transaction code on the [`AUTH_TOKENS`] table.
//!
//! A token is 256 random bits, base64url; only its sha256 is stored, so the
//! table (a backup, an export, the dashboard) cannot be used to follow a link.
//! A token works once: taking it deletes its row. Issuing a new one for a
//! user and purpose deletes the earlier ones, so a user has at most one live
//! link per purpose and the table cannot be grown by asking again.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use livebase_schema::{obj, DocumentId, Value};
use rand::Rng;
use sha2::{Digest, Sha256};

use super::tables::{AUTH_TOKENS, USERS};
use super::users::now_ms;
use crate::error::{Error, Result};
use crate::transaction::Transaction;

/// What a token proves, as its row's `purpose` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Following it marks the user's email verified.
    VerifyEmail,
    /// It allows one new password to be set.
    ResetPassword,
}

/// How long a verification link works.
pub const VERIFICATION_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a password-reset link works.
pub const RESET_LIFETIME: Duration = Duration::from_secs(60 * 60);

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify-email",
            Purpose::ResetPassword => "reset-password",
        }
    }

    pub fn lifetime(self) -> Duration {
        match self {
            Purpose::VerifyEmail => VERIFICATION_LIFETIME,
            Purpose::ResetPassword => RESET_LIFETIME,
        }
    }
}

/// Lowercase hex sha256 of `token`: what the table stores and is searched by.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A live token, once taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    pub user_id: DocumentId,
    /// The `callbackURL` it was issued with, already checked and absolute.
    pub callback_url: Option<String>,
}

fn rows_of(tx: &mut Transaction, user: &DocumentId, purpose: Purpose) -> Result<Vec<Value>> {
    Ok(tx
        .query(AUTH_TOKENS)
        .with_index("by_user", |q| q.eq("userId", user.as_str()))
        .collect()?
        .into_iter()
        .filter(|row| row.get("purpose").and_then(Value::as_str) == Some(purpose.as_str()))
        .collect())
}

fn row_id(row: &Value) -> Result<DocumentId> {
    row.get("_id")
        .and_then(Value::as_str)
        .and_then(|id| DocumentId::parse_in(id, AUTH_TOKENS))
        .ok_or_else(|| Error::internal(format!("malformed {AUTH_TOKENS} row {row:?}")))
}

/// Deletes every token of `user` for `purpose`.
pub fn revoke_all(tx: &mut Transaction, user: &DocumentId, purpose: Purpose) -> Result<()> {
    for row in rows_of(tx, user, purpose)? {
        tx.delete(&row_id(&row)?)?;
    }
    Ok(())
}

/// A new token for `user` and `purpose`, replacing the user's earlier ones of
/// that purpose; returns the token itself, which only the mail carries.
pub fn issue(
    tx: &mut Transaction,
    user: &DocumentId,
    purpose: Purpose,
    callback_url: Option<&str>,
) -> Result<String> {
    revoke_all(tx, user, purpose)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let token = B64.encode(bytes);
    let mut row = obj! {
        "userId" => user.as_str(),
        "purpose" => purpose.as_str(),
        "tokenHash" => hash(&token),
        "expiresAt" => now_ms() + purpose.lifetime().as_secs_f64() * 1e3,
    };
    if let (Some(url), Value::Object(fields)) = (callback_url, &mut row) {
        fields.insert("callbackURL".into(), Value::from(url));
    }
    tx.insert(AUTH_TOKENS, row)?;
    Ok(token)
}

/// Takes `token` for `purpose`: if it is live, deletes it (it works once)
/// and returns whose it was. An unknown, used, expired or other-purpose token
/// is `None`; an expired one is deleted on the way.
pub fn take(tx: &mut Transaction, token: &str, purpose: Purpose) -> Result<Option<Taken>> {
    let Some(row) = tx
        .query(AUTH_TOKENS)
        .with_index("by_hash", |q| q.eq("tokenHash", hash(token).as_str()))
        .first()?
    else {
        return Ok(None);
    };
    if row.get("purpose").and_then(Value::as_str) != Some(purpose.as_str()) {
        return Ok(None);
    }
    tx.delete(&row_id(&row)?)?;
    let live = row
        .get("expiresAt")
        .and_then(Value::as_f64)
        .is_some_and(|t| t > now_ms());
    let user_id = row
        .get("userId")
        .and_then(Value::as_str)
        .and_then(|id| DocumentId::parse_in(id, USERS));
    Ok(match (live, user_id) {
        (true, Some(user_id)) => Some(Taken {
            user_id,
            callback_url: row
                .get("callbackURL")
                .and_then(Value::as_str)
                .map(str::to_string),
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
