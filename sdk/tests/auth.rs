//! Signing up and in with `livebase_sdk::auth` against a real server (the
//! application of `functions/`, with the runtime's auth endpoints), each
//! refusal reported with the server's message, and the token accepted by the
//! sync client.

use livebase_sdk::auth::{self, AuthError};
use livebase_sdk::{query, Client, QueryRef, Value};
use livebase_testkit::mail::outbox_link;
use livebase_testkit::{TestServer, PASSWORD};

const LIST_MINE: QueryRef<(), Value> = query("organizations:listMine");

#[tokio::test]
async fn sign_up_and_in_and_every_refusal_with_its_message() {
    let server = TestServer::start(livebase_functions::app()).await;
    let url = server.url();
    let password = PASSWORD;

    let up = auth::sign_up(&url, "ada@example.com", password, "Ada")
        .await
        .expect("sign-up");
    assert_eq!(
        (up.email.as_str(), up.name.as_str()),
        ("ada@example.com", "Ada")
    );
    assert!(!up.token.is_empty() && !up.user_id.is_empty());

    let again = auth::sign_in(&url, "ada@example.com", password)
        .await
        .expect("sign-in");
    assert_eq!(again.user_id, up.user_id);
    assert_ne!(again.token, up.token, "each sign-in is a new session");

    // 400: a short password, with the server's code and message.
    match auth::sign_up(&url, "bob@example.com", "short", "Bob").await {
        Err(AuthError::InvalidInput { code, message }) => {
            assert!(!code.is_empty());
            assert!(message.contains('8'), "{message}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    // 422: the email is taken.
    let taken = auth::sign_up(&url, "ada@example.com", password, "Ada 2").await;
    assert!(
        matches!(taken, Err(AuthError::EmailTaken(ref m)) if !m.is_empty()),
        "{taken:?}"
    );
    // 401: a wrong password, then an unknown email, alike.
    let wrong = auth::sign_in(&url, "ada@example.com", "not the password").await;
    let unknown = auth::sign_in(&url, "nobody@example.com", password).await;
    match (&wrong, &unknown) {
        (Err(AuthError::InvalidCredentials(a)), Err(AuthError::InvalidCredentials(b))) => {
            assert_eq!(a, b, "one message for both");
        }
        _ => panic!("expected InvalidCredentials twice, got {wrong:?} / {unknown:?}"),
    }
    // 429: too many attempts for one email, with the wait the server asks for.
    let mut limited = None;
    for _ in 0..10 {
        match auth::sign_in(&url, "ada@example.com", "still wrong").await {
            Err(AuthError::InvalidCredentials(_)) => continue,
            other => {
                limited = Some(other);
                break;
            }
        }
    }
    match limited {
        Some(Err(AuthError::TooManyAttempts {
            message,
            retry_after,
        })) => {
            assert!(!message.is_empty());
            assert!(retry_after.is_some_and(|s| s > 0), "{retry_after:?}");
        }
        other => panic!("expected TooManyAttempts, got {other:?}"),
    }
    // Not a server at all, and not a URL the SDK speaks.
    assert!(matches!(
        auth::sign_in("https://127.0.0.1:1", "a@b.c", password).await,
        Err(AuthError::InvalidUrl(_))
    ));

    // The token works on the sync connection.
    let client = Client::connect(&url).await.unwrap();
    client
        .set_auth(Some(up.token))
        .await
        .expect("token accepted");
    let mine = client.query(LIST_MINE, ()).await.expect("listMine");
    assert_eq!(mine, Value::Array(Vec::new()));

    drop(client);
    server.shutdown().await;
}

/// The token of the newest link containing `marker` in the outbox mail to
/// `to`, as a person would copy it out of the mail (waiting for the job).
async fn mailed_token(data_dir: &std::path::Path, to: &str, marker: &str) -> String {
    let link = outbox_link(data_dir, to, marker).await;
    let at = link.find(marker).expect("the marker is in the link");
    link[at + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[tokio::test]
async fn verification_reset_and_sessions_through_the_sdk() {
    let server = TestServer::start(livebase_functions::app()).await;
    let url = server.url();
    let password = PASSWORD;
    let ada = auth::sign_up(&url, "ada@example.com", password, "Ada")
        .await
        .expect("sign-up");

    // Verification: the link of the sign-up mail works once.
    let token = mailed_token(server.data_dir(), "ada@example.com", "verify-email?token=").await;
    auth::verify_email(&url, &token).await.expect("verified");
    match auth::verify_email(&url, &token).await {
        Err(AuthError::InvalidInput { code, .. }) => assert_eq!(code, "INVALID_TOKEN"),
        other => panic!("a used link: {other:?}"),
    }
    auth::send_verification_email(&url, "nobody@example.com", None)
        .await
        .expect("the same answer for an unknown address");

    // Sessions: two, the other one revoked.
    let laptop = auth::sign_in(&url, "ada@example.com", password)
        .await
        .expect("sign-in");
    let sessions = auth::list_sessions(&url, &ada.token).await.expect("listed");
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let other = sessions.iter().find(|s| !s.current).expect("the laptop's");
    assert!(other.expires_at > other.created_at);
    auth::revoke_session(&url, &ada.token, &other.id)
        .await
        .expect("revoked");
    assert!(matches!(
        auth::list_sessions(&url, &laptop.token).await,
        Err(AuthError::InvalidCredentials(_))
    ));

    // Change: the current password is checked.
    assert!(matches!(
        auth::change_password(&url, &ada.token, "wrong", "new passphrase", false).await,
        Err(AuthError::InvalidCredentials(_))
    ));
    let kept = auth::change_password(&url, &ada.token, password, "new passphrase", false)
        .await
        .expect("changed");
    assert_eq!(kept, None, "no new token unless sessions are revoked");

    // Reset: the mailed token sets a password and ends every session.
    auth::request_password_reset(&url, "ada@example.com", None)
        .await
        .expect("asked");
    auth::request_password_reset(&url, "nobody@example.com", None)
        .await
        .expect("the same answer for an unknown address");
    let token = mailed_token(
        server.data_dir(),
        "ada@example.com",
        "/reset-password?token=",
    )
    .await;
    auth::reset_password(&url, &token, "reset passphrase")
        .await
        .expect("reset");
    assert!(matches!(
        auth::list_sessions(&url, &ada.token).await,
        Err(AuthError::InvalidCredentials(_))
    ));
    auth::sign_in(&url, "ada@example.com", "reset passphrase")
        .await
        .expect("the new password works");
    server.shutdown().await;
}
