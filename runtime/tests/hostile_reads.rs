//! A live query that fails on the read limit (issue 11, item 7): what it
//! scanned before the limit stopped it is part of its read set, so deleting
//! rows there re-runs it, and the client gets the result once it fits again.

mod support;

use livebase_runtime::transaction::MAX_READS_PER_TRANSACTION;
use livebase_schema::{obj, Value};
use livebase_testkit::{error_code, TestServer};
use support::{note, org};

/// Notes of one organization written over HTTP in mutations of at most
/// `CHUNK` documents each.
const CHUNK: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_failed_on_the_read_limit_runs_again_when_deletes_bring_it_under() {
    let server = TestServer::start(support::registry()).await;
    let first = support::mutate(&server, "notes:add", note("A", "first", 0.0)).await;
    let mut left = MAX_READS_PER_TRANSACTION;
    while left > 0 {
        let count = left.min(CHUNK);
        let args = obj! { "organizationId" => "A", "body" => "filler", "count" => count as f64 };
        support::mutate(&server, "notes:addMany", args).await;
        left -= count;
    }

    // One document past the limit: `notes:count` reads them all and fails.
    let mut client = server.client().await;
    let answered = client.subscribe(&[(0, "notes:count", org("A"))]).await;
    let failed = answered.failed(0).expect("notes:count fails");
    assert_eq!(error_code(failed), Some("LIMIT_EXCEEDED"), "{failed:?}");

    // Deleting the first note (inside the scanned part) brings it under.
    support::mutate(&server, "notes:remove", obj! { "id" => first.clone() }).await;
    let t = client.transition().await;
    assert_eq!(
        t.updated(0),
        Some(&Value::Float64(MAX_READS_PER_TRANSACTION as f64)),
        "{t:?}"
    );

    // And one more insert fails it again.
    support::mutate(&server, "notes:add", note("A", "last", 1.0)).await;
    let t = client.transition().await;
    assert!(t.failed(0).is_some(), "{t:?}");
    client.close().await;
    server.shutdown().await;
}
