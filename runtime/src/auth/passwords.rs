//! Password hashing: argon2id with OWASP's parameters (19 MiB, 2 passes, 1
//! lane), stored as PHC strings.
//!
//! Hashing takes tens of milliseconds of CPU and 19 MiB of memory on purpose,
//! so it runs on tokio's blocking pool — never on an async worker or the store's
//! writer thread — and at most [`concurrency`] hashes run at once, so a burst of
//! sign-ins queues instead of exhausting memory.

use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes: long enough for any passphrase, short
/// enough that nobody makes the server hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// OWASP's argon2id recommendation: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// Most memory a stored hash may ask of a check, in KiB (64 MiB). A PHC
/// string names its own parameters, so a hash this server did not write —
/// from an import — could otherwise make each sign-in allocate gigabytes.
pub const MAX_HASH_MEMORY_KIB: u32 = 64 * 1024;
/// Most passes a stored hash may ask for.
pub const MAX_HASH_PASSES: u32 = 8;
/// Most lanes a stored hash may ask for.
pub const MAX_HASH_LANES: u32 = 4;

fn argon2() -> Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .map_err(|e| Error::internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// How many hashes may run at once: one per core.
pub fn concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(concurrency()));

/// A hash of a random password with the same parameters, checked against when
/// an email is unknown so that the reply takes as long as for a wrong password.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let password: [u8; 16] = rand::random();
    hash_blocking(&password).ok()
});

/// Computes the dummy hash in the background, so that the first sign-in with
/// an unknown email does not take twice as long as the others.
pub fn warm_up() {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn_blocking(|| LazyLock::force(&DUMMY_HASH));
    }
}

/// Why a password cannot be used, if it cannot.
pub fn check_strength(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters long"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes long"
        )));
    }
    Ok(())
}

fn hash_blocking(password: &[u8]) -> Result<String> {
    argon2()?
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("hashing a password: {e}")))
}

/// Why `hash` cannot be a stored password hash: not an argon2 PHC string,
/// or parameters past [`MAX_HASH_MEMORY_KIB`], [`MAX_HASH_PASSES`] or
/// [`MAX_HASH_LANES`].
pub fn check_stored_hash(hash: &str) -> std::result::Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("not a PHC string: {e}"))?;
    Algorithm::try_from(parsed.algorithm.as_str())
        .map_err(|_| format!("`{}` is not an argon2 algorithm", parsed.algorithm))?;
    let params = Params::try_from(&parsed).map_err(|e| format!("argon2 parameters: {e}"))?;
    let bounds = [
        ("memory cost m", params.m_cost(), MAX_HASH_MEMORY_KIB),
        ("time cost t", params.t_cost(), MAX_HASH_PASSES),
        ("parallelism p", params.p_cost(), MAX_HASH_LANES),
    ];
    for (what, value, max) in bounds {
        if value > max {
            return Err(format!(
                "the argon2 {what}={value} is over this server's bound of {max}"
            ));
        }
    }
    Ok(())
}

fn verify_blocking(password: &[u8], hash: Option<&str>) -> bool {
    let Some(hash) = hash.or(DUMMY_HASH.as_deref()) else {
        return false;
    };
    // The parameters come from the stored hash: never past the bounds.
    if check_stored_hash(hash).is_err() {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    // The parameters come from the stored hash, so older hashes keep working
    // if the parameters above are ever raised.
    let ok = argon2().is_ok_and(|a| a.verify_password(password, &parsed).is_ok());
    ok && hash_is_real(hash)
}

/// `verify_blocking` checked the dummy for an unknown user; that must never
/// count as a match even if someone guessed its random password.
fn hash_is_real(hash: &str) -> bool {
    DUMMY_HASH.as_deref() != Some(hash)
}

async fn on_blocking_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|_| Error::internal("the password hashing semaphore closed"))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("password hashing task failed: {e}")))
}

/// The PHC string of `password` (argon2id, a fresh random salt).
pub async fn hash(password: String) -> Result<String> {
    on_blocking_pool(move || hash_blocking(password.as_bytes())).await?
}

/// Whether `password` matches `hash`. With no hash (an unknown email) it
/// checks against a dummy hash and answers `false`, in the same time.
pub async fn verify(password: String, hash: Option<String>) -> Result<bool> {
    on_blocking_pool(move || verify_blocking(password.as_bytes(), hash.as_deref())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_is_argon2id_and_verifies_only_its_password() {
        let h = hash("correct horse".into()).await.expect("hashes");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse".into(), Some(h.clone()))
            .await
            .expect("runs"));
        assert!(!verify("wrong horse".into(), Some(h)).await.expect("runs"));
        assert!(!verify("anything".into(), None).await.expect("runs"));
        assert!(!verify("x".into(), Some("not a hash".into()))
            .await
            .expect("runs"));
    }

    #[tokio::test]
    async fn hashes_past_the_parameter_bounds_are_refused_unrun() {
        let ours = hash("correct horse".into()).await.expect("hashes");
        assert_eq!(check_stored_hash(&ours), Ok(()));
        let (_, rest) = ours.split_once("$m=19456,t=2,p=1$").expect("our params");
        for (params, named) in [
            ("m=4194304,t=2,p=1", "memory cost m=4194304"),
            ("m=19456,t=1000,p=1", "time cost t=1000"),
            ("m=19456,t=2,p=64", "parallelism p=64"),
        ] {
            let hostile = format!("$argon2id$v=19${params}${rest}");
            let e = check_stored_hash(&hostile).expect_err(params);
            assert!(e.contains(named), "{params}: {e}");
            // Sign-in does not run it (4 GiB would not finish quickly, or at all).
            assert!(!verify("correct horse".into(), Some(hostile))
                .await
                .expect("runs"));
        }
        assert!(check_stored_hash("$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E").is_err());
        assert!(check_stored_hash("plain text").is_err());
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(check_strength("1234567").is_err());
        assert!(check_strength("12345678").is_ok());
        assert!(
            check_strength("ééééééé").is_err(),
            "counts characters, not bytes"
        );
        assert!(check_strength(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
