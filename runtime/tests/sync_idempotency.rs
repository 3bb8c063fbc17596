//! Idempotent mutations (`docs/reference/invariants.md`, invariant 6): a `Mutation` resent with the
//! same session id and request id — on a new connection, and after the server
//! restarted on the same data folder — returns the stored outcome and does not
//! run again. The documents are counted to prove it.

mod support;

use livebase_schema::protocol::{RequestId, SessionId};
use livebase_testkit::{error_code, Client, TestServer};
use support::note;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_mutation_returns_its_stored_outcome_after_a_reconnect_and_a_restart() {
    let server = TestServer::start(support::registry()).await;
    let session = SessionId::random();
    let mut first = Client::connect(&server.ws_url(), session.clone()).await;
    let original = first
        .mutation_as(RequestId(0), "notes:add", note("A", "once", 1.0))
        .await
        .expect("notes:add succeeds");
    let failed = first
        .mutation_as(RequestId(1), "notes:conflict", livebase_schema::obj! {})
        .await
        .expect_err("notes:conflict fails");
    assert_eq!(support::count(&server, "A").await, 1.0);
    first.close().await;

    // A reconnect resends both (the npm client resends what had no response,
    // and may resend what had one).
    let mut second = Client::connect(&server.ws_url(), session.clone()).await;
    let resent = second
        .mutation_as(RequestId(0), "notes:add", note("A", "once", 1.0))
        .await
        .expect("the stored success");
    assert_eq!(resent, original, "the same value and the same commit ts");
    // Read your writes holds for a stored outcome too.
    second.transitions_until(resent.ts).await;
    let refailed = second
        .mutation_as(RequestId(1), "notes:conflict", livebase_schema::obj! {})
        .await
        .expect_err("the same failure, run again");
    assert_eq!(refailed, failed);
    assert_eq!(error_code(&refailed), Some("CONFLICT"));
    assert_eq!(
        support::count(&server, "A").await,
        1.0,
        "the resend did not run again"
    );

    // A new request id on the same session is a new mutation.
    second
        .mutation_as(RequestId(2), "notes:add", note("A", "twice", 2.0))
        .await
        .expect("notes:add succeeds");
    assert_eq!(support::count(&server, "A").await, 2.0);
    // The same request id in another session is another request too.
    let mut stranger = server.client().await;
    stranger
        .mutation_as(RequestId(0), "notes:add", note("A", "stranger", 3.0))
        .await
        .expect("notes:add succeeds");
    assert_eq!(support::count(&server, "A").await, 3.0);
    second.close().await;
    stranger.close().await;

    // After a restart on the same data folder the outcomes are still there.
    let server = server.restart(support::registry()).await;
    let mut third = Client::connect(&server.ws_url(), session.clone()).await;
    let after_restart = third
        .mutation_as(RequestId(0), "notes:add", note("A", "once", 1.0))
        .await
        .expect("the stored success");
    assert_eq!(after_restart, original);
    let refailed = third
        .mutation_as(RequestId(1), "notes:conflict", livebase_schema::obj! {})
        .await
        .expect_err("the same failure, run again");
    assert_eq!(refailed, failed);
    assert_eq!(
        support::count(&server, "A").await,
        3.0,
        "nothing ran again after the restart"
    );
    third.transitions_until(after_restart.ts).await;
    server.shutdown().await;
}

/// A redeploy between a mutation and its resend may remove the function: the
/// resend of one that wrote still gets the stored answer, and only a new
/// request hears that the function is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_gets_its_stored_outcome_even_after_the_function_was_removed() {
    let server = TestServer::start(support::registry()).await;
    let session = SessionId::random();
    let mut first = Client::connect(&server.ws_url(), session.clone()).await;
    let original = first
        .mutation_as(RequestId(0), "notes:add", note("A", "once", 1.0))
        .await
        .expect("notes:add succeeds");
    let failed = first
        .mutation_as(RequestId(1), "notes:conflict", livebase_schema::obj! {})
        .await
        .expect_err("notes:conflict fails");
    first.close().await;

    // The same tables, no functions at all.
    let schema = support::registry().schema().clone();
    let server = server
        .restart(livebase_runtime::registry::Registry::new(schema))
        .await;
    let mut second = Client::connect(&server.ws_url(), session.clone()).await;
    let resent = second
        .mutation_as(RequestId(0), "notes:add", note("A", "once", 1.0))
        .await
        .expect("the stored success");
    assert_eq!(resent, original);
    // A failure wrote nothing and left nothing behind: its resend runs again
    // and, the function being gone, hears so — with no effect repeated.
    let rerun = second
        .mutation_as(RequestId(1), "notes:conflict", livebase_schema::obj! {})
        .await
        .expect_err("notes:conflict is gone");
    assert_ne!(rerun, failed);
    assert!(rerun.message.contains("notes:conflict"), "{rerun:?}");
    let gone = second
        .mutation_as(RequestId(2), "notes:add", note("A", "twice", 2.0))
        .await
        .expect_err("notes:add is gone");
    assert!(gone.message.contains("notes:add"), "{gone:?}");
    second.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_on_a_second_connection_while_the_first_is_open_runs_once() {
    let server = TestServer::start(support::registry()).await;
    let session = SessionId::random();
    let mut a = Client::connect(&server.ws_url(), session.clone()).await;
    let mut b = Client::connect(&server.ws_url(), session.clone()).await;
    let mut outcomes = Vec::new();
    for round in 0..5u32 {
        let request = RequestId(round);
        let args = note("A", "raced", f64::from(round));
        let (x, y) = tokio::join!(
            a.mutation_as(request, "notes:add", args.clone()),
            b.mutation_as(request, "notes:add", args),
        );
        let (x, y) = (x.expect("succeeds"), y.expect("succeeds"));
        assert_eq!(x, y, "both connections get the one outcome");
        outcomes.push(x);
    }
    assert_eq!(support::count(&server, "A").await, 5.0);
    server.shutdown().await;
}
