//! Session tokens: HS256-signed JWTs carrying `sub` (the user id), `sid` (the
//! session id), `iat` and `exp`, and the signing key behind them.
//!
//! The key comes from `LIVEBASE_JWT_SECRET` when set (so several servers can
//! share it), otherwise from `jwt-secret` in the data folder, generated on
//! first start with mode 0600. A valid signature only says the token was
//! issued here; whether its session is still live is the session table's call.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The environment variable that, when set, holds the signing secret.
pub const SECRET_ENV: &str = "LIVEBASE_JWT_SECRET";
/// The file in the data folder that holds the generated secret (base64url).
pub const SECRET_FILE: &str = "jwt-secret";
/// Shortest secret accepted: 256 bits, HS256's own strength.
pub const MIN_SECRET_LEN: usize = 32;

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// The keys that sign and check tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    /// Keys from a secret of at least [`MIN_SECRET_LEN`] bytes.
    pub fn from_secret(secret: &[u8]) -> Result<TokenKeys> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::internal(format!(
                "the token secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        // Only HS256 is accepted (no `alg` confusion, no `none`), `exp` is
        // required and checked to the second: this server issues and checks
        // its own tokens, so there is no clock skew to forgive.
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// The keys of a server whose data folder is `data_dir`: from
    /// [`SECRET_ENV`] if set, else from [`SECRET_FILE`] there, created on first
    /// use.
    pub fn load(data_dir: &Path) -> Result<TokenKeys> {
        match std::env::var(SECRET_ENV) {
            Ok(secret) if secret.len() >= MIN_SECRET_LEN => {
                TokenKeys::from_secret(secret.as_bytes())
            }
            Ok(_) => Err(Error::internal(format!(
                "{SECRET_ENV} must be at least {MIN_SECRET_LEN} characters long"
            ))),
            Err(_) => TokenKeys::from_secret(&load_or_create_secret(data_dir)?),
        }
    }

    /// Signs `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| Error::internal(format!("signing a token: {e}")))
    }

    /// The claims of a token signed with this key and not yet expired;
    /// `UNAUTHENTICATED` otherwise.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(Error::unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired; sign in again",
                _ => "the token is not valid",
            })),
        }
    }
}

/// The deployment's secret itself, from where [`TokenKeys::load`] takes it:
/// other keys of the deployment (pagination cursors) are derived from it.
pub fn deployment_secret(data_dir: &Path) -> Result<Vec<u8>> {
    match std::env::var(SECRET_ENV) {
        Ok(secret) if secret.len() >= MIN_SECRET_LEN => Ok(secret.into_bytes()),
        Ok(_) => Err(Error::internal(format!(
            "{SECRET_ENV} must be at least {MIN_SECRET_LEN} characters long"
        ))),
        Err(_) => load_or_create_secret(data_dir),
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("{what} {}: {e}", path.display()))
}

/// Reads the secret file, creating it first if it does not exist.
fn load_or_create_secret(data_dir: &Path) -> Result<Vec<u8>> {
    let path = data_dir.join(SECRET_FILE);
    if !path.exists() {
        create_secret_file(data_dir)?;
    }
    read_secret(&path)
}

/// The secret in the data folder's [`SECRET_FILE`], if there is one (none
/// is created).
pub fn existing_secret(data_dir: &Path) -> Result<Option<Vec<u8>>> {
    let path = data_dir.join(SECRET_FILE);
    if !path.exists() {
        return Ok(None);
    }
    read_secret(&path).map(Some)
}

fn read_secret(path: &Path) -> Result<Vec<u8>> {
    warn_if_readable_by_others(path);
    let text = fs::read_to_string(path).map_err(|e| io_error("reading", path, e))?;
    let secret = B64
        .decode(text.trim())
        .map_err(|e| Error::internal(format!("{} is not base64url: {e}", path.display())))?;
    if secret.len() < MIN_SECRET_LEN {
        return Err(Error::internal(format!(
            "{} holds fewer than {MIN_SECRET_LEN} bytes",
            path.display()
        )));
    }
    Ok(secret)
}

/// Writes a fresh secret to a private temporary file, then links it into
/// place. The link fails if another process got there first, and a crash leaves
/// either no secret file or a complete one — never a half-written key.
fn create_secret_file(data_dir: &Path) -> Result<()> {
    let mut secret = [0u8; 32];
    rand::rng().fill(&mut secret);
    let tmp = data_dir.join(format!(".{SECRET_FILE}.{:016x}.tmp", rand::random::<u64>()));
    let written = crate::private_files::create_private_file(&tmp).and_then(|mut file| {
        file.write_all(B64.encode(secret).as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    let linked = written.and_then(|()| match fs::hard_link(&tmp, data_dir.join(SECRET_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    });
    let _ = fs::remove_file(&tmp);
    linked.map_err(|e| io_error("creating", &data_dir.join(SECRET_FILE), e))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "{} is readable by other users; anyone who reads it can sign tokens (chmod 600 it)",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "users_0000000000000000".into(),
            sid: "sessions_0000000000000000".into(),
            iat: now(),
            exp,
        }
    }

    fn keys(byte: u8) -> TokenKeys {
        TokenKeys::from_secret(&[byte; 32]).expect("a 32-byte secret")
    }

    #[test]
    fn a_token_verifies_with_its_own_key_only() {
        let c = claims(now() + 60);
        let token = keys(1).issue(&c).expect("signs");
        assert_eq!(keys(1).verify(&token).ok(), Some(c));
        assert!(keys(2).verify(&token).is_err());
    }

    #[test]
    fn expired_and_tampered_tokens_are_refused() {
        let k = keys(1);
        let expired = k.issue(&claims(now() - 1)).expect("signs");
        let err = k.verify(&expired).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");

        let token = k.issue(&claims(now() + 60)).expect("signs");
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(now() + 60);
        forged.sub = "users_1111111111111111".into();
        let body = B64.encode(serde_json::to_vec(&forged).expect("json"));
        let tampered = format!("{}.{}.{}", parts[0], body, parts[2]);
        assert!(k.verify(&tampered).is_err());

        let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(k.verify(&format!("{none_header}.{body}.")).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::from_secret(b"short").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_generated_secret_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create_secret(dir.path()).expect("created");
        let mode = fs::metadata(dir.path().join(SECRET_FILE))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(dir.path()).expect("read back"), first);
        assert_eq!(
            fs::read_dir(dir.path()).expect("lists").count(),
            1,
            "no temp file left"
        );
    }
}
