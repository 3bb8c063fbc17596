//! Backpressure: each connection has a bounded outbound queue. A client that
//! stops reading while large Transitions keep coming is cut off (it would
//! reconnect and resync) instead of slowing everyone else or growing the
//! server's memory; a client reading the same query keeps getting every push
//! promptly the whole time.

mod support;

use std::time::{Duration, Instant};

use livebase_schema::obj;
use livebase_testkit::{Frame, TestServer, PATIENCE};
use support::{docs, id_of, org};

/// Close code for "try again later", which the server uses for a laggard.
const CLOSE_OVERLOADED: u16 = 1013;
/// Notes in the watched organization; with [`BODY`]-sized bodies every push is
/// a few hundred kilobytes, so the slow client's socket buffers fill quickly.
const NOTES: usize = 100;
const BODY: usize = 2_000;
/// Writes after which the slow client must have been cut off: socket buffers
/// (a few MiB on loopback) plus the 256-message queue are far fewer pushes.
const MAX_WRITES: usize = 3_000;
/// What "promptly" means for the client that keeps reading.
const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_while_others_keep_their_pushes() {
    let server = TestServer::start(support::registry()).await;
    let body = "b".repeat(BODY);
    support::mutate(
        &server,
        "notes:addMany",
        obj! { "organizationId" => "A", "body" => body.as_str(), "count" => NOTES as f64 },
    )
    .await;

    let mut slow = server.client().await;
    let first = slow.subscribe(&[(0, "notes:list", org("A"))]).await;
    let target = id_of(&docs(first.updated(0).expect("the list"))[0]);
    // From here on `slow` reads nothing.

    let mut fast = server.client().await;
    fast.subscribe(&[(0, "notes:list", org("A"))]).await;

    let mut writes = 0;
    let mut after_drop = 0;
    let mut slowest = Duration::ZERO;
    while after_drop < 20 {
        assert!(
            writes < MAX_WRITES,
            "the slow client was not cut off after {writes} pushes"
        );
        let started = Instant::now();
        let new_body = format!("{writes}{body}");
        let done = fast
            .mutation(
                "notes:set",
                obj! { "id" => target.as_str(), "body" => new_body.as_str() },
            )
            .await
            .expect("notes:set succeeds");
        let seen = fast.transitions_until(done.ts).await;
        let elapsed = started.elapsed();
        slowest = slowest.max(elapsed);
        assert!(
            elapsed < PROMPT,
            "write {writes}: the reading client waited {elapsed:?} for its push"
        );
        let pushed = seen
            .iter()
            .rev()
            .find_map(|t| t.updated(0))
            .expect("the write is pushed to the reading client");
        let list = docs(pushed);
        assert_eq!(list.len(), NOTES);
        assert!(list
            .iter()
            .any(|d| d.get("body").and_then(|b| b.as_str()) == Some(new_body.as_str())));
        writes += 1;
        if server.dropped_slow() > 0 {
            after_drop += 1;
        }
    }
    assert_eq!(server.dropped_slow(), 1, "only the slow client was cut off");
    eprintln!(
        "cut off after about {} writes; slowest push {slowest:?}",
        writes - after_drop
    );

    // The slow client, reading again, finds what was queued and then the close.
    let mut received = 0;
    let code = loop {
        match slow.next_frame(PATIENCE).await {
            Some(Frame::Message(_)) => received += 1,
            Some(Frame::Close(frame)) => break frame.map(|(code, _)| code),
            Some(Frame::Ended(_)) => break None,
            None => panic!("the slow connection was neither closed nor ended"),
        }
    };
    assert_eq!(code, Some(CLOSE_OVERLOADED));
    assert!(
        received < writes,
        "the slow client got {received} of {writes} pushes: it was cut off, not waited for"
    );
    assert_eq!(
        server
            .stats()
            .live_queries
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the slow client's subscription is gone; the shared query lives on"
    );
    server.shutdown().await;
}

/// Near-megabyte results: the queue's byte budget cuts a laggard off long
/// before its 256-message bound would, so one slow client cannot make the
/// server hold hundreds of megabytes for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_laggard_on_large_results_is_cut_off_by_bytes_not_only_by_messages() {
    const BIG_NOTES: usize = 90;
    const BIG_BODY: usize = 10_000;
    /// 16 MiB of queue plus the socket buffers hold a few dozen of these
    /// pushes; the message bound alone would take more than 256.
    const CUT_OFF_WITHIN: usize = 120;
    let server = TestServer::start(support::registry()).await;
    let body = "b".repeat(BIG_BODY);
    support::mutate(
        &server,
        "notes:addMany",
        obj! { "organizationId" => "A", "body" => body.as_str(), "count" => BIG_NOTES as f64 },
    )
    .await;
    let mut slow = server.client().await;
    let first = slow.subscribe(&[(0, "notes:list", org("A"))]).await;
    let target = id_of(&docs(first.updated(0).expect("the list"))[0]);
    let mut fast = server.client().await;
    fast.subscribe(&[(0, "notes:list", org("A"))]).await;

    let mut writes = 0;
    while server.dropped_slow() == 0 {
        assert!(
            writes < CUT_OFF_WITHIN,
            "the slow client was not cut off after {writes} pushes of about 900 KB"
        );
        let new_body = format!("{writes}{body}");
        let done = fast
            .mutation(
                "notes:set",
                obj! { "id" => target.as_str(), "body" => new_body.as_str() },
            )
            .await
            .expect("notes:set succeeds");
        fast.transitions_until(done.ts).await;
        writes += 1;
    }
    eprintln!("cut off after {writes} pushes of about 900 KB");
    let code = loop {
        match slow.next_frame(PATIENCE).await {
            Some(Frame::Message(_)) => {}
            Some(Frame::Close(frame)) => break frame.map(|(code, _)| code),
            Some(Frame::Ended(_)) => break None,
            None => panic!("the slow connection was neither closed nor ended"),
        }
    };
    assert_eq!(code, Some(CLOSE_OVERLOADED));
    server.shutdown().await;
}
