//! Stored files on two nodes sharing one PostgreSQL database (see
//! ARCHITECTURE.md, "The path of a write on a follower" and "The path of an
//! upload").
//!
//! Two in-process servers run on one fresh database, as two
//! `livebase serve --postgres` would: the store is also the writer's lease,
//! and stored files' bytes live in the database (`PostgresBlobs`), so every
//! node can read every file. The first node takes the lease and is the
//! writer; the second follows it.
//!
//! An action called on either node stores a file that both then read. On a
//! follower this once failed: `Files::store` committed its `_storage` row
//! with `Database::mutate` on the node's own database, which a follower
//! refuses ("this node is not the store's writer: it cannot commit"),
//! whereas a mutation is forwarded to the writer. Now the follower writes
//! the bytes and the writer commits the row (`RowsOnWriter`), for an
//! action's `store` and an upload alike. The action's caller would see only
//! `[Request ID: …] Server error`; the assertion's message adds the error
//! the same `Files::store` gives in process on that node.
//!
//! Needs the tests' PostgreSQL (`livebase_testkit::postgres`); skipped,
//! saying so, where there is none (but not under CI).

use std::sync::Arc;

use livebase_runtime::registry::Registry;
use livebase_runtime::server::{Blobs, ClusterOptions, Store};
use livebase_runtime::storage::storage_id;
use livebase_schema::{v, Schema, Value};
use livebase_store_postgres::{PostgresBlobs, PostgresPersistence};
use livebase_testkit::postgres::TestDatabase;
use livebase_testkit::{eventually, TestServer, PATIENCE};
use serde_json::{json, Value as Json};

/// The application both nodes serve:
///
/// | path | kind | what |
/// | --- | --- | --- |
/// | `files:storeText {text}` | action | stores `text` as a `text/plain` file; returns its id |
/// | `files:readText {id}` | action | the text of file `id`, or `null` if there is none |
/// | `files:uploadUrl {}` | mutation | a one-time upload URL |
fn registry() -> Registry {
    let mut app = Registry::new(Schema::new());
    app.action(
        "files:storeText",
        [("text", v::string())],
        |ctx, args| async move {
            let text = args.string("text")?;
            let id = ctx
                .storage()?
                .store(text.into_bytes(), Some("text/plain".into()))
                .await?;
            Ok(Value::from(id.as_str()))
        },
    );
    app.mutation("files:uploadUrl", [], |ctx, _args| {
        ctx.storage().generate_upload_url().map(Value::from)
    });
    app.action(
        "files:readText",
        [("id", v::string())],
        |ctx, args| async move {
            let id = storage_id(&args.string("id")?)?;
            Ok(match ctx.storage()?.get(&id).await? {
                Some(file) => Value::from(String::from_utf8_lossy(&file.bytes).into_owned()),
                None => Value::Null,
            })
        },
    );
    app
}

/// A node on the database at `url`, as `livebase serve --postgres url`
/// builds one (`src/store.rs`): the PostgreSQL store holds the documents,
/// is the writer's lease and keeps files' bytes. Its own temporary data
/// folder, a free loopback port; its URL for forwarded writes is the bound
/// address.
async fn start_node(url: &str) -> TestServer {
    let url = url.to_string();
    let store = tokio::task::spawn_blocking(move || PostgresPersistence::open(&url))
        .await
        .expect("the opening thread")
        .expect("the PostgreSQL store opens");
    TestServer::start_tuned(registry(), move |o| {
        o.blobs = Blobs::Store(Arc::new(PostgresBlobs::new(&store)));
        o.cluster = Some(ClusterOptions {
            lease: Arc::new(store.clone()),
            node_url: None,
        });
        o.store = Store::Engine(Arc::new(store));
    })
    .await
}

/// Stores `text` through `files:storeText` on `node`; its id. On failure,
/// panics with what the caller saw and, since an internal error reaches the
/// caller only as `[Request ID: …] Server error`, with the error the same
/// `Files::store` gives in process on that node.
async fn store_text(node: &TestServer, role: &str, text: &str) -> String {
    let outcome = node
        .call("action", "files:storeText", None, json!({ "text": text }))
        .await;
    match outcome {
        Ok(Json::String(id)) => id,
        Ok(other) => panic!("files:storeText on the {role} answered {other}, not an id"),
        Err(failure) => {
            let in_process = node
                .executor()
                .files()
                .expect("the server has file storage")
                .store(text.as_bytes().to_vec(), Some("text/plain".into()))
                .await;
            panic!(
                "files:storeText on the {role} failed: {failure:?}; \
                 the same Files::store in process on the {role}: {in_process:?}"
            )
        }
    }
}

/// Reads file `id` back through `files:readText` on `node` until it
/// answers `text` (at once, unless that node has not yet seen the commit).
async fn expect_text(node: &TestServer, role: &str, id: &str, text: &str) {
    eventually(
        &format!("file {id} to read back as {text:?} on the {role}"),
        PATIENCE,
        || async {
            match node
                .call("action", "files:readText", None, json!({ "id": id }))
                .await
            {
                Ok(Json::String(got)) if got == text => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_action_on_a_follower_stores_a_file_every_node_reads() {
    let Some(db) = TestDatabase::create("an action on a follower stores a file") else {
        return;
    };
    // The first node took the lease as it started; the second follows it.
    let (first, second) = writer_and_follower(&db).await;
    let (writer, follower) = (&first, &second);

    // On the writer, an action stores a file that both nodes read back.
    let on_writer = store_text(writer, "writer", "stored on the writer").await;
    expect_text(writer, "writer", &on_writer, "stored on the writer").await;
    expect_text(follower, "follower", &on_writer, "stored on the writer").await;

    // On the follower, the same action stores a file too, and both nodes
    // read it back.
    let on_follower = store_text(follower, "follower", "stored on the follower").await;
    expect_text(follower, "follower", &on_follower, "stored on the follower").await;
    expect_text(writer, "writer", &on_follower, "stored on the follower").await;

    // Neither node changed role meanwhile.
    assert!(writer.server.is_writer() && !follower.server.is_writer());
    second.shutdown().await;
    first.shutdown().await;
}

/// The two nodes of a fresh database, writer first, once their roles are
/// settled.
async fn writer_and_follower(db: &TestDatabase) -> (TestServer, TestServer) {
    let first = start_node(&db.url).await;
    let second = start_node(&db.url).await;
    eventually("one writer and one follower", PATIENCE, || async {
        match (first.server.is_writer(), second.server.is_writer()) {
            (true, false) => Ok(()),
            roles => Err(format!("(first, second) is the writer: {roles:?}")),
        }
    })
    .await;
    (first, second)
}

/// The hex SHA-256 of `bytes`: a blob's address.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every blob's address in the database's shared store.
async fn blobs_in(url: &str) -> Vec<String> {
    use livebase_runtime::storage::BlobStore;
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let store = PostgresPersistence::open(&url).expect("the store");
        PostgresBlobs::new(&store)
            .list()
            .expect("the blobs")
            .iter()
            .map(|h| h.as_str().to_string())
            .collect()
    })
    .await
    .expect("the listing thread")
}

/// Uploads reach a follower, which writes their bytes into the shared store
/// and has the writer commit only the row; an upload whose row the writer
/// refuses (its token was used meanwhile, by a faster upload) leaves no
/// bytes behind in the shared store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_to_a_follower_keep_the_bytes_of_the_row_the_writer_committed_only() {
    use livebase_testkit::http::http;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let Some(db) = TestDatabase::create("uploads to a follower") else {
        return;
    };
    let (writer, follower) = writer_and_follower(&db).await;
    let url = follower
        .call("mutation", "files:uploadUrl", None, json!({}))
        .await
        .expect("an upload URL");
    let url = url.as_str().expect("a URL");
    let path = &url[url.find("/api/").expect("a path")..];

    // The slow upload sends its headers and half its body, so its token is
    // checked; the fast one then uses the same token to the end.
    let slow_bytes = vec![b's'; 300_000];
    let fast_bytes = b"the faster upload".to_vec();
    let mut slow = tokio::net::TcpStream::connect(follower.addr())
        .await
        .expect("connecting");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        follower.addr(),
        slow_bytes.len()
    );
    slow.write_all(head.as_bytes()).await.expect("the headers");
    slow.write_all(&slow_bytes[..150_000])
        .await
        .expect("half the body");
    // Until the slow upload has had its token checked and its first part
    // taken in (a second upload must find the token unused).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let fast = http(
        follower.addr(),
        "POST",
        path,
        &[("Content-Type", "text/plain")],
        &fast_bytes,
    )
    .await;
    assert_eq!(fast.status, 200, "the fast upload: {:?}", fast.body);
    let id = fast.body["storageId"].as_str().expect("a storage id");
    let rows = writer.rows("_storage").await;
    assert!(
        rows.iter()
            .any(|r| r.get("_id").and_then(Value::as_str) == Some(id)),
        "the writer has the fast upload's row: {rows:?}"
    );

    slow.write_all(&slow_bytes[150_000..])
        .await
        .expect("the rest of the body");
    let mut answer = Vec::new();
    slow.read_to_end(&mut answer).await.expect("the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "the slow upload, its token used meanwhile: {answer}"
    );

    // Only the committed file's bytes remain in the shared store.
    let (kept, dropped) = (sha256_hex(&fast_bytes), sha256_hex(&slow_bytes));
    eventually("the refused upload's bytes to go", PATIENCE, || async {
        let blobs = blobs_in(&db.url).await;
        match (blobs.contains(&kept), blobs.contains(&dropped)) {
            (true, false) => Ok(()),
            _ => Err(format!("blobs: {blobs:?}")),
        }
    })
    .await;
    assert_eq!(writer.rows("_storage").await.len(), 1, "one file's row");
    follower.shutdown().await;
    writer.shutdown().await;
}
