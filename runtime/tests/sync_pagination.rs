//! Journals over the sync protocol: a live page's `QueryUpdated` carries its
//! journal, re-runs keep the page's end, a client's re-`Add` with that journal
//! (as after a reconnect) gets the same page, and a forged or foreign journal
//! fails the query with `INVALID_ARGUMENT` instead of reading anything.

mod support;

use std::sync::atomic::Ordering;

use livebase_schema::protocol::{QueryId, QuerySetModification, StateModification};
use livebase_schema::{obj, Value};
use livebase_testkit::{error_code, TestServer, Transition};
use support::args;

fn page_args(org: &str) -> Value {
    obj! {
        "organizationId" => org,
        "paginationOpts" => obj! { "numItems" => 3.0, "cursor" => Value::Null },
    }
}

fn add_page(query_id: u32, org: &str, journal: Option<String>) -> QuerySetModification {
    QuerySetModification::Add {
        query_id: QueryId(query_id),
        udf_path: "notes:page".into(),
        args: args(page_args(org)),
        journal,
        component_path: None,
    }
}

fn journal_of(t: &Transition, query: u32) -> Option<String> {
    t.modifications.iter().find_map(|m| match m {
        StateModification::QueryUpdated {
            query_id, journal, ..
        }
        | StateModification::QueryFailed {
            query_id, journal, ..
        } if query_id.0 == query => journal.clone(),
        _ => None,
    })
}

fn bodies(t: &Transition, query: u32) -> Vec<String> {
    let value = t.updated(query).expect("an update of the page");
    let Some(Value::Array(page)) = value.get("page") else {
        panic!("not a page: {value:?}");
    };
    page.iter()
        .map(|d| d.get("body").and_then(Value::as_str).unwrap().to_string())
        .collect()
}

async fn add_notes(server: &TestServer, org: &str, bodies: &[&str]) {
    for (i, body) in bodies.iter().enumerate() {
        support::mutate(
            server,
            "notes:add",
            obj! { "organizationId" => org, "body" => *body, "n" => i as f64 },
        )
        .await;
    }
}

#[tokio::test]
async fn a_live_page_keeps_its_end_and_a_re_add_with_its_journal_does_too() {
    let server = TestServer::start(support::registry()).await;
    add_notes(&server, "o", &["a", "b", "c", "d", "e"]).await;
    let mut client = server.client().await;
    let t = client.modify(vec![add_page(1, "o", None)]).await;
    assert_eq!(bodies(&t, 1), ["e", "d", "c"]);
    let journal = journal_of(&t, 1).expect("a live page's update carries its journal");

    // A new note lands at the top: the page grows, its end stays.
    support::mutate(
        &server,
        "notes:add",
        obj! { "organizationId" => "o", "body" => "f", "n" => 9.0 },
    )
    .await;
    let t = client.transition().await;
    assert_eq!(bodies(&t, 1), ["f", "e", "d", "c"]);
    assert_eq!(journal_of(&t, 1).as_deref(), Some(journal.as_str()));

    // The connection goes; a new one re-adds the page with the journal (a
    // reconnect): the same four notes. Without it, a fresh page of three.
    client.close().await;
    // Its live page is dropped before the new connection asks.
    for _ in 0..500 {
        if server.stats().live_queries.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(server.stats().live_queries.load(Ordering::Relaxed), 0);
    let mut again = server.client().await;
    let t = again
        .modify(vec![
            add_page(1, "o", Some(journal.clone())),
            add_page(2, "o", None),
        ])
        .await;
    assert_eq!(bodies(&t, 1), ["f", "e", "d", "c"]);
    assert_eq!(bodies(&t, 2), ["f", "e", "d"]);
}

#[tokio::test]
async fn a_forged_or_foreign_journal_fails_the_query_with_invalid_argument() {
    let server = TestServer::start(support::registry()).await;
    add_notes(&server, "o", &["a", "b", "c", "d"]).await;
    add_notes(&server, "other", &["x", "y", "z", "w"]).await;
    let mut client = server.client().await;
    let t = client.modify(vec![add_page(1, "other", None)]).await;
    let foreign = journal_of(&t, 1).expect("a journal");

    let t = client
        .modify(vec![
            add_page(2, "o", Some(foreign)),
            add_page(3, "o", Some("forged-journal".into())),
        ])
        .await;
    for query in [2, 3] {
        let err = t.failed(query).expect("the query fails");
        assert_eq!(error_code(err), Some("INVALID_ARGUMENT"), "{err:?}");
    }
}

#[tokio::test]
async fn cursors_outlive_a_restart_but_not_a_move_to_another_deployment() {
    let server = TestServer::start(support::registry()).await;
    let other = TestServer::start(support::registry()).await;
    for s in [&server, &other] {
        add_notes(s, "o", &["a", "b", "c", "d"]).await;
    }
    let first = support::query(&server, "notes:page", page_args("o"))
        .await
        .unwrap();
    let cursor = first
        .get("continueCursor")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    let next = |c: &str| {
        obj! {
            "organizationId" => "o",
            "paginationOpts" => obj! { "numItems" => 3.0, "cursor" => c },
        }
    };
    // Another deployment (its own secret) refuses it: the same query, the
    // same range, a different key.
    let err = support::query(&other, "notes:page", next(&cursor))
        .await
        .unwrap_err();
    assert!(err.contains("not one this query issued"), "{err}");
    // The same deployment after a restart takes it.
    let server = server.restart(support::registry()).await;
    let second = support::query(&server, "notes:page", next(&cursor))
        .await
        .unwrap();
    let Some(Value::Array(page)) = second.get("page") else {
        panic!("not a page: {second:?}");
    };
    assert_eq!(page.len(), 1, "the fourth, oldest note");
}
