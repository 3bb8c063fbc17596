//! Users and sessions as functions see them: who the caller is, read through
//! the caller's transaction.
//!
//! Reading the session row inside the function's own transaction is what makes
//! revocation reach live queries: the row's `by_id` key lands in the query's
//! read set, so the sign-out that deletes it re-runs the query, which then
//! fails with `UNAUTHENTICATED`.

use std::time::{SystemTime, UNIX_EPOCH};

use livebase_schema::{DocumentId, Value};

use super::tables::{SESSIONS, USERS};
use crate::error::{Error, Result};
use crate::registry::Identity;
use crate::transaction::Transaction;

/// Longest email address accepted (RFC 5321's limit on a forward path).
pub const MAX_EMAIL_LEN: usize = 254;

/// A user, as the `users` table holds them (without the password hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: DocumentId,
    /// Lowercased.
    pub email: String,
    pub name: String,
}

impl User {
    /// Reads a `users` document; `None` when it lacks a field (which the table's
    /// validator rules out for stored rows).
    pub fn from_document(doc: &Value) -> Option<User> {
        let id = doc.get("_id")?.as_str()?;
        Some(User {
            id: DocumentId::parse_in(id, USERS)?,
            email: doc.get("email")?.as_str()?.to_string(),
            name: doc.get("name")?.as_str()?.to_string(),
        })
    }

    /// `{id, email, name}`, the shape the auth endpoints reply with.
    pub fn to_value(&self) -> Value {
        livebase_schema::obj! {
            "id" => self.id.as_str(),
            "email" => self.email.as_str(),
            "name" => self.name.as_str(),
        }
    }
}

/// Milliseconds since the epoch, as `expiresAt` fields hold them.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The canonical form of an email address — trimmed and lowercased — or an
/// error saying why it is not one. The check is deliberately loose (one `@`
/// with something on both sides, a dot in the domain, no spaces): the only real
/// test of an address is mailing it.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let well_formed = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if well_formed {
        Ok(email)
    } else {
        Err(Error::invalid(format!(
            "`{}` is not an email address",
            truncate(&email, 64)
        )))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The signed-in caller, read through `tx`: their session must still exist,
/// belong to them and not have expired. Every failure is `UNAUTHENTICATED`.
pub fn current_user(tx: &mut Transaction, identity: &Identity) -> Result<User> {
    let Identity::User {
        user_id,
        session_id,
    } = identity
    else {
        return Err(Error::unauthenticated("not signed in"));
    };
    session_user(tx, session_id, user_id)
}

/// The user of session `session_id` if it is live and belongs to `user_id`.
pub fn session_user(tx: &mut Transaction, session_id: &str, user_id: &str) -> Result<User> {
    let ended = || Error::unauthenticated("the session has ended; sign in again");
    let session_id = DocumentId::parse_in(session_id, SESSIONS).ok_or_else(ended)?;
    let session = tx.get(&session_id)?.ok_or_else(ended)?;
    if session.get("userId").and_then(Value::as_str) != Some(user_id) {
        return Err(ended());
    }
    // A query that checks the clock is not a pure function of its snapshot,
    // but the check only ever turns a result into this error: an expired
    // session must not keep working through a connection opened before `exp`.
    let expires_at = session.get("expiresAt").and_then(Value::as_f64);
    if expires_at.is_none_or(|t| t <= now_ms()) {
        return Err(Error::unauthenticated(
            "the session has expired; sign in again",
        ));
    }
    let user_id = DocumentId::parse_in(user_id, USERS).ok_or_else(ended)?;
    let user = tx.get(&user_id)?.ok_or_else(ended)?;
    User::from_document(&user).ok_or_else(|| Error::internal(format!("malformed user {user_id}")))
}

/// The user with this (already normalized) email, if any.
pub fn user_by_email(tx: &mut Transaction, email: &str) -> Result<Option<User>> {
    let doc = tx
        .query(USERS)
        .with_index("by_email", |q| q.eq("email", email))
        .first()?;
    Ok(doc.as_ref().and_then(User::from_document))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").ok().as_deref(),
            Some("ada@example.com")
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
            "ada@.com",
            "ada@example.",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN));
        assert!(normalize_email(&long).is_err());
    }
}
