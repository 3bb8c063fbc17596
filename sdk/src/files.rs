//! Uploading a file through an upload URL, as Convex's clients do: a
//! mutation returns the URL (`ctx.storage().generate_upload_url()`), the
//! bytes are `POST`ed to it with their `Content-Type`, and the server answers
//! `{"storageId": …}` — the id a second mutation stores (an avatar, an
//! attachment).
//!
//! ```no_run
//! use livebase_sdk::{mutation, obj, Client, MutationRef, Value};
//!
//! const UPLOAD_URL: MutationRef<(), String> = mutation("files:generateUploadUrl");
//! const SET_AVATAR: MutationRef<Value, Value> = mutation("userProfiles:setAvatar");
//!
//! # async fn run(client: Client, png: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
//! let url = client.mutation(UPLOAD_URL, ()).await?;
//! let storage_id = client.upload(&url, png, "image/png").await?;
//! client.mutation(SET_AVATAR, obj! { "storageId" => storage_id }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The request is plain HTTP/1.1 on a tokio `TcpStream` (the exchange of
//! [`crate::auth`]): the SDK builds no TLS stack, so `https://` URLs are
//! refused.

use std::time::Duration;

use serde_json::Value as Json;

use crate::auth::{exchange, AuthError};

/// How long one upload may take, connecting included: the server's own
/// deadline for the largest upload it accepts by default (20 MiB) is 350 s.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(6 * 60);

/// Why an upload failed. The server's refusals carry its status and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The server refused the upload: `403` (the URL was used already,
    /// expired or forged — ask for a new one), `413` (over the upload
    /// limit), `429` (too many calls in flight), or another status.
    #[error("the server refused the upload ({status}): {message}")]
    Refused {
        status: u16,
        /// The error code of the reply (`FORBIDDEN`, …), if it had one.
        code: Option<String>,
        message: String,
    },
    /// The URL is not `http://host[:port]/…`.
    #[error("`{0}` is not an http:// URL (the SDK has no TLS; use plain http://)")]
    InvalidUrl(String),
    /// The server could not be reached, or the exchange broke off or timed
    /// out.
    #[error("could not reach {url}: {message}")]
    Connect { url: String, message: String },
    /// The reply was not the `{"storageId": …}` the endpoint documents.
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
}

impl From<AuthError> for UploadError {
    /// The transport's failures (the only ones [`exchange`] returns).
    fn from(e: AuthError) -> UploadError {
        match e {
            AuthError::InvalidUrl(url) => UploadError::InvalidUrl(url),
            AuthError::Connect { url, message } => UploadError::Connect { url, message },
            other => UploadError::Protocol(other.to_string()),
        }
    }
}

/// `POST`s `bytes` as `content_type` to `upload_url` (absolute, as a
/// mutation's `generate_upload_url` gives it) and returns the stored file's
/// id.
pub async fn upload(
    upload_url: &str,
    bytes: impl AsRef<[u8]>,
    content_type: &str,
) -> Result<String, UploadError> {
    let target = target_of(upload_url)?;
    let headers = [
        ("Content-Type", content_type),
        ("Accept", "application/json"),
    ];
    let reply = exchange(
        upload_url,
        "POST",
        target,
        &headers,
        bytes.as_ref(),
        UPLOAD_TIMEOUT,
    )
    .await?;
    let json: Option<Json> = serde_json::from_slice(&reply.body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Json::as_str)
            .map(str::to_string)
    };
    if reply.status != 200 {
        return Err(UploadError::Refused {
            status: reply.status,
            code: field("code"),
            message: field("message")
                .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).trim().to_string()),
        });
    }
    field("storageId").ok_or_else(|| {
        UploadError::Protocol(format!(
            "a 200 reply without a storageId: {}",
            String::from_utf8_lossy(&reply.body)
        ))
    })
}

/// The path and query of an absolute `http://` URL: what the request line
/// names.
fn target_of(url: &str) -> Result<&str, UploadError> {
    let invalid = || UploadError::InvalidUrl(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let slash = rest.find('/').ok_or_else(invalid)?;
    Ok(&rest[slash..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_urls_path_and_query() {
        assert_eq!(
            target_of("http://127.0.0.1:3210/api/storage/upload?token=abc"),
            Ok("/api/storage/upload?token=abc")
        );
        assert!(matches!(
            target_of("https://example.com/api/storage/upload?token=abc"),
            Err(UploadError::InvalidUrl(_))
        ));
        assert!(matches!(
            target_of("/api/storage/upload?token=abc"),
            Err(UploadError::InvalidUrl(_))
        ));
        assert!(matches!(
            target_of("http://127.0.0.1:3210"),
            Err(UploadError::InvalidUrl(_))
        ));
    }
}
