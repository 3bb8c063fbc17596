//! The application's HTTP routes — the seed's `convex/http.ts`:
//!
//! - `GET /public/organizations/{slug}` → `{name, members}`, no sign-in;
//!   `404` for an unknown slug.
//! - `POST /webhooks/items` with `{organizationSlug, name, status}`, signed:
//!   `X-Livebase-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw body
//!   under [`WEBHOOK_SECRET_ENV`]. Creates an item through the internal
//!   mutation [`crate::items::CREATE_FROM_WEBHOOK`] (createdBy: the
//!   organization's first owner); `201 {id}`.
//!
//! The webhook checks, in order, and writes nothing unless all pass: a
//! secret is configured (else `503`: a server that cannot check signatures
//! accepts none); the signature header is present, well formed and matches
//! the raw bytes received (else `401`) — compared in constant time by
//! `hmac`'s `verify_slice`, so the answer's timing says nothing about how
//! much of a guess was right; the body is JSON with exactly the three fields
//! within the `items` table's limits (else `400` naming `body.<field>`); the
//! organization exists (else `404`). The signature is checked on the bytes
//! as they arrived, before any parsing: re-encoding parsed JSON would check
//! a different text than the sender signed.

use hmac::{Hmac, Mac};
use livebase_runtime::registry::Registry;
use livebase_runtime::route::{HttpRequest, HttpResponse, Method};
use livebase_runtime::{Error, Result};
use livebase_schema::typed::{Id, Type};
use livebase_schema::Value;
use serde_json::json;
use sha2::Sha256;

use crate::features::items::schema::Item;
use crate::features::organizations::logic::PublicProfile;
use crate::items::{WebhookItem, CREATE_FROM_WEBHOOK};
use crate::organizations::{SlugArgs, PUBLIC_BY_SLUG};

/// The environment variable holding the webhook secret, read once when the
/// application is built ([`crate::app`]).
pub const WEBHOOK_SECRET_ENV: &str = "LIVEBASE_WEBHOOK_SECRET";

/// The header carrying a webhook's signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-livebase-signature";

/// The key webhooks are signed with. Its `Debug` does not show it.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> WebhookSecret {
        WebhookSecret(secret.into())
    }

    /// The secret in [`WEBHOOK_SECRET_ENV`], if set and not empty.
    pub fn from_env() -> Option<WebhookSecret> {
        std::env::var_os(WEBHOOK_SECRET_ENV)
            .filter(|s| !s.is_empty())
            .map(|s| WebhookSecret(s.into_encoded_bytes()))
    }

    /// `sha256=<hex>` of `body`: what a sender puts in [`SIGNATURE_HEADER`].
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    /// Whether `header` (a [`SIGNATURE_HEADER`] value) is the signature of
    /// `body`, compared in constant time.
    pub fn verify(&self, header: &str, body: &[u8]) -> bool {
        let Some(signature) = header.trim().strip_prefix("sha256=").and_then(decode_hex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; this cannot fail.
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// Lowercase or uppercase hex, an even number of digits.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn register(app: &mut Registry, secret: Option<WebhookSecret>) {
    app.route(
        Method::GET,
        "/public/organizations/{slug}",
        |ctx, request| async move {
            let slug = request.param("slug")?;
            let args = SlugArgs {
                slug: slug.to_string(),
            };
            let profile: Option<PublicProfile> = ctx.run_typed_query(PUBLIC_BY_SLUG, args).await?;
            let Some(profile) = profile else {
                return Err(Error::not_found(format!("no organization `{slug}`")));
            };
            // A count is a whole number: `3`, not the value model's `3.0`.
            Ok(HttpResponse::json(&json!({
                "name": profile.name,
                "members": profile.members as u64,
            })))
        },
    );

    app.route(Method::POST, "/webhooks/items", move |ctx, request| {
        let secret = secret.clone();
        async move {
            let Some(secret) = secret else {
                return Ok(not_configured());
            };
            let item = verified_item(&secret, &request)?;
            let id: Id<Item> = ctx.run_typed_mutation(CREATE_FROM_WEBHOOK, item).await?;
            Ok(HttpResponse::json(&json!({"id": id.as_str()})).with_status(201))
        }
    });
}

/// The webhook's item, once its signature and then its body are checked.
fn verified_item(secret: &WebhookSecret, request: &HttpRequest) -> Result<WebhookItem> {
    let signature = request
        .header(SIGNATURE_HEADER)
        .ok_or_else(|| Error::unauthenticated(format!("missing {SIGNATURE_HEADER} header")))?;
    if !secret.verify(signature, &request.body) {
        return Err(Error::unauthenticated(
            "the signature does not match the body",
        ));
    }
    let json = request.json()?;
    let item = Value::from_json(&json, "body").map_err(|e| Error::invalid(e.to_string()))?;
    WebhookItem::validator()
        .validate(&item, "body")
        .map_err(|e| Error::invalid(e.to_string()))?;
    WebhookItem::from_value(item, "body").map_err(|e| Error::invalid(e.to_string()))
}

/// `503`: no secret, so no signature can be checked and no webhook accepted.
fn not_configured() -> HttpResponse {
    HttpResponse::json(&json!({
        "code": "WEBHOOK_NOT_CONFIGURED",
        "message": format!("webhooks are off: set {WEBHOOK_SECRET_ENV} and restart the server"),
    }))
    .with_status(503)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_rfc_4231_says() {
        // RFC 4231, test case 2.
        let signature = WebhookSecret::new("Jefe").sign(b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_signature_verifies_only_its_own_body_under_its_own_secret() {
        let secret = WebhookSecret::new("s3cret");
        let body = br#"{"organizationSlug":"acme","name":"n","status":"s"}"#;
        let signature = secret.sign(body);
        assert!(secret.verify(&signature, body));
        assert!(secret.verify(
            &signature.to_uppercase().replace("SHA256=", "sha256="),
            body
        ));
        assert!(!secret.verify(&signature, b"{}"));
        assert!(!WebhookSecret::new("other").verify(&signature, body));
        for bad in [
            "",
            "sha256=",
            "sha256=zz",
            "md5=00",
            &signature[..signature.len() - 1],
        ] {
            assert!(!secret.verify(bad, body), "{bad}");
        }
    }
}
