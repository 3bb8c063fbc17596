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
use crate::context::Reader;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::transaction::Transaction;

pub use super::tables::MAX_EMAIL_LEN;
/// Longest local part (before the `@`), in bytes (RFC 5321).
pub const MAX_LOCAL_LEN: usize = 64;

/// A user, as the `users` table holds them (without the password hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: DocumentId,
    /// Canonical (see [`normalize_email`]).
    pub email: String,
    pub name: String,
    /// Whether the user followed a verification link mailed to `email`.
    pub email_verified: bool,
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
            email_verified: doc.get("emailVerified").and_then(Value::as_bool) == Some(true),
        })
    }

    /// `{id, email, name, emailVerified}`, the shape the auth endpoints reply
    /// with.
    pub fn to_value(&self) -> Value {
        livebase_schema::obj! {
            "id" => self.id.as_str(),
            "email" => self.email.as_str(),
            "name" => self.name.as_str(),
            "emailVerified" => self.email_verified,
        }
    }
}

/// Milliseconds since the epoch, as `expiresAt` fields hold them.
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The canonical form of an email address, or an error saying why it is not
/// one. Only a bare `local@domain` is an address here — no display name, no
/// `<…>`, no comments, no quoted local part — since lettre would deliver
/// `x<victim@example.com>` to the victim. The canonical form is what makes
/// one mailbox one account: Unicode in NFC, lowercased, the domain in IDNA
/// ASCII form (`bücher.de` → `xn--bcher-kva.de`, so a look-alike domain shows
/// as what it is). A local part holds letters, digits and RFC 5322's `atext`
/// symbols with single inner dots; non-ASCII letters and digits are allowed,
/// invisible and formatting characters are not.
pub fn normalize_email(email: &str) -> Result<String> {
    let refuse = |why: &str| {
        Err(Error::invalid(format!(
            "`{}` is not an email address: {why}",
            truncate(email.trim(), 64)
        )))
    };
    let nfc = icu_normalizer::ComposingNormalizerBorrowed::new_nfc();
    let email = nfc.normalize(email.trim()).to_lowercase();
    if email.len() > MAX_EMAIL_LEN * 4 {
        return refuse("it is too long");
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return refuse("expected `name@domain`");
    };
    if local.is_empty() || local.len() > MAX_LOCAL_LEN {
        return refuse(&format!(
            "the part before `@` must be 1 to {MAX_LOCAL_LEN} bytes"
        ));
    }
    let local_ok = local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || "!#$%&'*+/=?^_`{|}~-".contains(c)
                    || (!c.is_ascii() && c.is_alphanumeric())
            })
    });
    if !local_ok {
        return refuse(
            "the part before `@` may hold letters, digits, single inner dots and !#$%&'*+/=?^_`{|}~-",
        );
    }
    // IDNA with STD3 rules: letters, digits and inner hyphens per label, and
    // UTS 46's mapping (case, width, NFC) so that equivalent spellings of one
    // domain are one string.
    let domain = match idna::domain_to_ascii_strict(domain) {
        Ok(d) => d,
        Err(_) => return refuse("the domain is not a valid domain name"),
    };
    let labels_ok = domain.contains('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'));
    if !labels_ok {
        return refuse("the domain needs a dot and labels of 1 to 63 characters");
    }
    let email = format!("{local}@{domain}");
    if email.len() > MAX_EMAIL_LEN {
        return refuse(&format!("it is longer than {MAX_EMAIL_LEN} bytes"));
    }
    Ok(email)
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
pub fn current_user(db: &mut Reader, identity: &Identity) -> Result<User> {
    let Identity::User {
        user_id,
        session_id,
    } = identity
    else {
        return Err(Error::unauthenticated("not signed in"));
    };
    session_user(db, session_id, user_id)
}

/// The user of session `session_id` if it is live and belongs to `user_id`.
pub fn session_user(db: &mut Reader, session_id: &str, user_id: &str) -> Result<User> {
    let ended = || Error::unauthenticated("the session has ended; sign in again");
    let session_id = DocumentId::parse_in(session_id, SESSIONS).ok_or_else(ended)?;
    let session = db.get(&session_id)?.ok_or_else(ended)?;
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
    let user = db.get(&user_id)?.ok_or_else(ended)?;
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
    fn look_alike_spellings_are_one_address() {
        // NFC: "é" precomposed and as e + combining acute are one address.
        assert_eq!(
            normalize_email("ren\u{e9}@example.com").ok(),
            normalize_email("rene\u{301}@example.com").ok()
        );
        // IDNA: a Unicode domain is stored in its ASCII form, case and width
        // folded.
        assert_eq!(
            normalize_email("ada@B\u{fc}cher.DE").ok().as_deref(),
            Some("ada@xn--bcher-kva.de")
        );
        assert_eq!(
            normalize_email("ada@\u{ff45}xample.com").ok().as_deref(),
            Some("ada@example.com"),
            "a fullwidth letter in the domain"
        );
        assert_eq!(
            normalize_email("J\u{f6}rg@example.com").ok().as_deref(),
            Some("j\u{f6}rg@example.com")
        );
    }

    #[test]
    fn only_a_bare_address_is_accepted() {
        for bad in [
            "x<victim@example.com>",
            "Ada <ada@example.com>",
            "\"ada\"@example.com",
            "ada(comment)@example.com",
            "ada@example.com,eve@example.com",
            "ada@exa_mple.com",
            "a..b@example.com",
            ".ada@example.com",
            "ada.@example.com",
            "ad\u{200b}a@example.com",
            "ada@-example.com",
            "ada\r\n@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["o'brien+tag@example.co.uk", "a.b-c_d@sub.example.com"] {
            assert_eq!(normalize_email(good).ok().as_deref(), Some(good));
        }
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
