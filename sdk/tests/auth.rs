//! Signing up and in with `livebase_sdk::auth` against a real server (the
//! application of `functions/`, with the runtime's auth endpoints), each
//! refusal reported with the server's message, and the token accepted by the
//! sync client.

use livebase_runtime::server::{serve, ServerOptions};
use livebase_sdk::auth::{self, AuthError};
use livebase_sdk::{query, Client, QueryRef, Value};

const LIST_MINE: QueryRef<(), Value> = query("organizations:listMine");

#[tokio::test]
async fn sign_up_and_in_and_every_refusal_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..ServerOptions::default()
    };
    let server = serve(livebase_functions::app(), options)
        .await
        .expect("server starts");
    let url = server.url();
    let password = "correct horse battery";

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
