//! Uploading with `Client::upload` against a real server (the application of
//! `functions/`): a URL from `files:generateUploadUrl`, the bytes `POST`ed to
//! it, the id set as an avatar and seen live as `avatarUrl`; the same URL
//! again is refused with the server's status.

use futures::StreamExt;
use livebase_sdk::auth;
use livebase_sdk::files::UploadError;
use livebase_sdk::{mutation, obj, query, Client, MutationRef, QueryRef, Value};
use livebase_testkit::{TestServer, PASSWORD, PATIENCE};

const UPLOAD_URL: MutationRef<(), String> = mutation("files:generateUploadUrl");
const SET_AVATAR: MutationRef<Value, Value> = mutation("userProfiles:setAvatar");
const UPSERT: MutationRef<Value, Value> = mutation("userProfiles:upsert");
const PROFILE: QueryRef<(), Value> = query("userProfiles:get");

#[tokio::test]
async fn an_upload_through_a_generated_url_becomes_the_avatar() {
    let server = TestServer::start(livebase_functions::app()).await;
    let url = server.url();
    let ada = auth::sign_up(&url, "ada@example.com", PASSWORD, "Ada")
        .await
        .expect("sign-up");
    let client = Client::connect(&url).await.expect("connects");
    client.set_auth(Some(ada.token)).await.expect("signed in");
    client
        .mutation(UPSERT, obj! { "displayName" => "Ada" })
        .await
        .expect("a profile");
    let mut profile = client.subscribe(PROFILE, ());

    let upload_url = client.mutation(UPLOAD_URL, ()).await.expect("a URL");
    let storage_id = client
        .upload(&upload_url, b"a small picture".to_vec(), "image/png")
        .await
        .expect("uploaded");
    client
        .mutation(SET_AVATAR, obj! { "storageId" => storage_id.clone() })
        .await
        .expect("the avatar is set");
    // Mutations resolve once subscriptions reflect them: the newest result
    // has the avatar.
    let avatar = tokio::time::timeout(PATIENCE, async {
        loop {
            let current = profile
                .next()
                .await
                .expect("a result")
                .expect("the profile");
            if let Some(Value::String(url)) = current.get("avatarUrl") {
                return url.clone();
            }
        }
    })
    .await
    .expect("avatarUrl arrives");
    assert!(
        avatar.starts_with(&format!("{url}/api/storage/{storage_id}?sig=")),
        "{avatar}"
    );

    // The URL works once.
    match client.upload(&upload_url, b"again", "image/png").await {
        Err(UploadError::Refused { status, .. }) => assert_eq!(status, 403),
        other => panic!("a replayed URL is refused, got {other:?}"),
    }
    // No TLS in the SDK: an https URL is refused before any request.
    assert!(matches!(
        client
            .upload(
                "https://example.com/api/storage/upload?token=x",
                b"x",
                "text/plain"
            )
            .await,
        Err(UploadError::InvalidUrl(_))
    ));

    drop(client);
    server.shutdown().await;
}
