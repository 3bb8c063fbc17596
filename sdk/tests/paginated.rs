//! The SDK's paginated subscription against a real server: pages of 10 walk
//! 25 notes to `Exhausted` with `load_more`; a note added at the top grows
//! the first page and shifts nothing; and after the server restarts, the
//! re-added pages keep their ends (their journals), so the list is still
//! whole. Notes deleted inside a page and at a page's end leave every other
//! note exactly once.

mod common;

use common::{fast, start, start_at, PATIENCE};
use futures::StreamExt;
use livebase_sdk::{
    mutation, obj, query, Client, DecodeError, Fields, FromValue, IntoArgs, MutationRef, Object,
    PageStatus, Paginated, PaginatedResult, PaginatedSubscription, QueryRef, Value,
};

const PAGE: QueryRef<Object, Value> = query("notes:page");
const ADD: MutationRef<Value, String> = mutation("notes:add");
const REMOVE: MutationRef<Value, Value> = mutation("notes:remove");

fn org() -> Object {
    match obj! { "organizationId" => "org1" } {
        Value::Object(o) => o.into_fields(),
        _ => unreachable!(),
    }
}

fn bodies(r: &PaginatedResult) -> Vec<String> {
    r.items
        .iter()
        .map(|n| n.get("body").and_then(Value::as_str).unwrap().to_string())
        .collect()
}

/// Waits (bounded) until the pages are exactly `expected` with `status`.
async fn until(pages: &mut PaginatedSubscription, expected: &[String], status: PageStatus) {
    let wait = async {
        loop {
            if let Ok(r) = pages.current() {
                if r.status == status && bodies(&r) == expected {
                    return;
                }
            }
            let next = pages.next().await.expect("the pages are live");
            next.expect("no page fails");
        }
    };
    if tokio::time::timeout(PATIENCE, wait).await.is_err() {
        panic!(
            "expected {status:?} {expected:?}, have {:?}",
            pages.current().map(|r| (r.status, bodies(&r)))
        );
    }
}

fn newest_first(n: usize) -> Vec<String> {
    (0..n).rev().map(|i| format!("note {i:02}")).collect()
}

#[tokio::test]
async fn pages_walk_to_exhausted_and_stay_whole_through_writes_and_a_restart() {
    let server = start().await;
    let addr = server.addr();
    let client = Client::connect_with(&server.url(), fast()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..25 {
        let args = obj! { "organizationId" => "org1", "body" => format!("note {i:02}") };
        ids.push(client.mutation(ADD, args).await.unwrap());
    }
    let mut pages = PaginatedSubscription::new(&client, PAGE, org(), 10);
    let all = newest_first(25);
    until(&mut pages, &all[..10], PageStatus::CanLoadMore).await;
    assert!(pages.load_more(10));
    until(&mut pages, &all[..20], PageStatus::CanLoadMore).await;
    assert!(pages.load_more(10));
    until(&mut pages, &all, PageStatus::Exhausted).await;
    assert!(!pages.load_more(10), "nothing more once exhausted");
    assert_eq!(pages.page_count(), 3);

    // A note at the top: the first page grows to 11, nothing shifts.
    client
        .mutation(ADD, obj! { "organizationId" => "org1", "body" => "top" })
        .await
        .unwrap();
    let mut expected = vec!["top".to_string()];
    expected.extend(all.iter().cloned());
    until(&mut pages, &expected, PageStatus::Exhausted).await;

    // The server restarts: the client re-adds the pages with their journals.
    // Without them the first page would end after 10 rows again and its
    // 11th would fall between the pages.
    let dir = server.stop().await;
    let server = start_at(addr, dir).await;
    let other = Client::connect(&server.url()).await.unwrap();
    other
        .mutation(ADD, obj! { "organizationId" => "org1", "body" => "after" })
        .await
        .unwrap();
    expected.insert(0, "after".to_string());
    until(&mut pages, &expected, PageStatus::Exhausted).await;
    drop(server);
}

#[tokio::test]
async fn a_burst_of_inserts_splits_the_first_page_and_every_note_stays_once() {
    let server = start().await;
    let client = Client::connect(&server.url()).await.unwrap();
    for i in 0..25 {
        let args = obj! { "organizationId" => "org1", "body" => format!("note {i:02}") };
        client.mutation(ADD, args).await.unwrap();
    }
    let mut pages = PaginatedSubscription::new(&client, PAGE, org(), 10);
    let all = newest_first(25);
    until(&mut pages, &all[..10], PageStatus::CanLoadMore).await;
    assert!(pages.load_more(10));
    until(&mut pages, &all[..20], PageStatus::CanLoadMore).await;
    assert!(pages.load_more(10));
    until(&mut pages, &all, PageStatus::Exhausted).await;
    assert_eq!(pages.page_count(), 3);

    let burst: Vec<String> = (0..25).map(|i| format!("burst {i:02}")).collect();
    for body in &burst {
        let args = obj! { "organizationId" => "org1", "body" => body.as_str() };
        client.mutation(ADD, args).await.unwrap();
    }
    let mut expected: Vec<String> = burst.iter().rev().cloned().collect();
    expected.extend(all.iter().cloned());
    let split = async {
        loop {
            if let Ok(r) = pages.current() {
                if pages.page_count() > 3 && bodies(&r) == expected {
                    return;
                }
            }
            pages.next().await.expect("live").expect("no page fails");
        }
    };
    tokio::time::timeout(PATIENCE, split)
        .await
        .expect("the first page split, every note once");
    assert_eq!(pages.current().unwrap().status, PageStatus::Exhausted);
}

#[tokio::test]
async fn deleting_notes_inside_a_page_and_at_its_end_keeps_every_other_note_once() {
    let server = start().await;
    let client = Client::connect(&server.url()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..25 {
        let args = obj! { "organizationId" => "org1", "body" => format!("note {i:02}") };
        ids.push(client.mutation(ADD, args).await.unwrap());
    }
    let mut pages = PaginatedSubscription::new(&client, PAGE, org(), 10);
    let all = newest_first(25);
    until(&mut pages, &all[..10], PageStatus::CanLoadMore).await;
    assert!(pages.load_more(10));
    until(&mut pages, &all[..20], PageStatus::CanLoadMore).await;
    assert!(pages.load_more(10));
    until(&mut pages, &all, PageStatus::Exhausted).await;

    // "note 12" is inside the second page; "note 15" is the first page's
    // last row, the key its journal ends at.
    for i in [12, 15] {
        client
            .mutation(REMOVE, obj! { "id" => ids[i].as_str() })
            .await
            .unwrap();
    }
    let expected: Vec<String> = all
        .iter()
        .filter(|b| *b != "note 12" && *b != "note 15")
        .cloned()
        .collect();
    until(&mut pages, &expected, PageStatus::Exhausted).await;
    assert_eq!(pages.page_count(), 3, "a delete splits or merges nothing");

    // A note added afterwards still lands once, at the top.
    client
        .mutation(ADD, obj! { "organizationId" => "org1", "body" => "top" })
        .await
        .unwrap();
    let mut grown = vec!["top".to_string()];
    grown.extend(expected);
    until(&mut pages, &grown, PageStatus::Exhausted).await;
}

/// `notes:page`'s arguments without `paginationOpts`, and its items, as
/// `livebase codegen --rust` writes a paginated query's types.
struct PageArgs {
    organization_id: String,
}

impl IntoArgs for PageArgs {
    fn into_args(self) -> Value {
        obj! { "organizationId" => self.organization_id }
    }
}

#[derive(Debug, PartialEq)]
struct Note {
    body: String,
}

impl FromValue for Note {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        let mut fields = Fields::new(value)?;
        Ok(Note {
            body: fields.take("body")?,
        })
    }
}

const TYPED_PAGE: QueryRef<PageArgs, Paginated<Note>> = query("notes:page");
/// The same query, read as items it does not return.
const MISREAD_PAGE: QueryRef<PageArgs, Paginated<String>> = query("notes:page");

#[tokio::test]
async fn a_typed_reference_pages_through_typed_items_and_a_wrong_item_type_is_an_error() {
    let server = start().await;
    let client = Client::connect_with(&server.url(), fast()).await.unwrap();
    for i in 0..3 {
        let args = obj! { "organizationId" => "org1", "body" => format!("note {i:02}") };
        client.mutation(ADD, args).await.unwrap();
    }
    let args = || PageArgs {
        organization_id: "org1".into(),
    };
    let mut pages = PaginatedSubscription::of(&client, TYPED_PAGE, args(), 2).unwrap();
    let first = tokio::time::timeout(PATIENCE, pages.next())
        .await
        .expect("a page arrives")
        .expect("the pages are live")
        .expect("the page decodes");
    assert_eq!(
        first.items,
        [
            Note {
                body: "note 02".into()
            },
            Note {
                body: "note 01".into()
            }
        ]
    );
    assert_eq!(first.status, PageStatus::CanLoadMore);

    let mut misread = PaginatedSubscription::of(&client, MISREAD_PAGE, args(), 2).unwrap();
    let failed = tokio::time::timeout(PATIENCE, misread.next())
        .await
        .expect("a page arrives")
        .expect("the pages are live")
        .expect_err("a note is not a string");
    assert!(failed.message.contains("notes:page"), "{}", failed.message);

    let not_an_object: QueryRef<Value, Paginated<Note>> = query("notes:page");
    assert!(PaginatedSubscription::of(&client, not_an_object, Value::Null, 2).is_err());
}
