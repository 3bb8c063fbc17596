//! Pagination as Convex's clients drive it, on a real database: a page run
//! again with its journal ends at the same key while rows come and go, a page
//! with `endCursor` runs exactly between its cursors and recommends a split
//! once it has grown (or requires one past `maximumRowsRead` or
//! `maximumBytesRead`), a page's read set stops at its end, and cursors or
//! journals from anywhere else are `INVALID_ARGUMENT`.

mod common;

use common::{test_db, TestDb};
use livebase_runtime::database::Database;
use livebase_runtime::pagination::{PaginationOpts, PaginationResult};
use livebase_runtime::readset::WriteSet;
use livebase_runtime::store::Order;
use livebase_runtime::{Error, ErrorCode};
use livebase_schema::{obj, Value};

fn name(i: usize) -> String {
    format!("n{i:02}")
}

async fn insert(db: &Database, org: &'static str, names: Vec<String>) -> WriteSet {
    let committed = db
        .mutate(move |tx| {
            for n in names {
                tx.insert(
                    "items",
                    obj! { "organizationId" => org, "status" => "s", "name" => n },
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
    (*committed.writes).clone()
}

/// One page of org `org`'s items, newest first, run with `journal`; returns
/// the result, the journal it left, and whether a commit of `writes` would
/// touch what it read.
async fn page(
    db: &Database,
    org: &'static str,
    opts: PaginationOpts,
    journal: Option<String>,
    writes: Option<WriteSet>,
) -> Result<(PaginationResult, Option<String>, bool), Error> {
    let out = db
        .query(move |tx| {
            tx.set_journal(journal);
            let r = tx
                .query("items")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .order(Order::Desc)
                .paginate_with(&opts)?;
            Ok((r, tx.journal().map(str::to_string)))
        })
        .await?;
    let hit = writes.is_some_and(|w| out.reads.overlaps(&w));
    Ok((out.value.0, out.value.1, hit))
}

/// The page from `cursor` (the start when `None`) to `end`, as a client asks
/// for either half of a split page.
async fn between(
    db: &Database,
    org: &'static str,
    cursor: Option<String>,
    end: String,
    num_items: usize,
) -> PaginationResult {
    let opts = PaginationOpts {
        cursor,
        end_cursor: Some(end),
        ..PaginationOpts::first(num_items)
    };
    page(db, org, opts, None, None).await.unwrap().0
}

fn names(r: &PaginationResult) -> Vec<String> {
    r.page
        .iter()
        .map(|d| d.get("name").and_then(Value::as_str).unwrap().to_string())
        .collect()
}

fn newest_first(range: std::ops::Range<usize>) -> Vec<String> {
    range.rev().map(name).collect()
}

fn assert_invalid(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(
        err.code(),
        Some(&ErrorCode::InvalidArgument),
        "{what}: {err}"
    );
}

#[tokio::test]
async fn a_page_run_with_its_journal_keeps_its_end_while_rows_come_and_go() {
    let TestDb { db, .. } = test_db();
    insert(&db, "p", (0..25).map(name).collect()).await;
    let (first, journal, _) = page(&db, "p", PaginationOpts::first(10), None, None)
        .await
        .unwrap();
    assert_eq!(names(&first), newest_first(15..25));
    assert!(!first.is_done);
    let journal = journal.expect("a page leaves a journal");
    assert_eq!(
        journal, first.continue_cursor,
        "the journal is the page's end"
    );

    // The second page's read set stops at its end: a row inserted at the top
    // (in the first page) does not touch it; the first page's does.
    let second_opts = PaginationOpts {
        cursor: Some(first.continue_cursor.clone()),
        ..PaginationOpts::first(10)
    };
    let top = insert(&db, "p", vec!["top".into()]).await;
    let (second, _, second_hit) = page(&db, "p", second_opts, None, Some(top.clone()))
        .await
        .unwrap();
    assert_eq!(names(&second), newest_first(5..15));
    assert!(
        !second_hit,
        "an insert above the second page leaves it alone"
    );

    // Run again with its journal, the first page grows to 11 and ends where
    // it did; run without, it would shift its last row into the next page.
    let (again, journal2, hit) = page(
        &db,
        "p",
        PaginationOpts::first(10),
        Some(journal.clone()),
        Some(top),
    )
    .await
    .unwrap();
    assert!(hit, "the insert is inside the first page's range");
    let mut expected = vec!["top".to_string()];
    expected.extend(newest_first(15..25));
    assert_eq!(names(&again), expected);
    assert_eq!(again.continue_cursor, first.continue_cursor);
    assert_eq!(journal2.as_deref(), Some(journal.as_str()));
    let (fresh, _, _) = page(&db, "p", PaginationOpts::first(10), None, None)
        .await
        .unwrap();
    assert_eq!(
        fresh.page.len(),
        10,
        "without the journal the page ends after 10"
    );

    // The last page: exhausted, and it stays done with its journal.
    let third_opts = PaginationOpts {
        cursor: Some(second.continue_cursor.clone()),
        ..PaginationOpts::first(10)
    };
    let (third, third_journal, _) = page(&db, "p", third_opts.clone(), None, None)
        .await
        .unwrap();
    assert_eq!(names(&third), newest_first(0..5));
    assert!(third.is_done);
    let (third_again, _, _) = page(&db, "p", third_opts, third_journal, None)
        .await
        .unwrap();
    assert!(third_again.is_done);
    assert_eq!(names(&third_again), newest_first(0..5));
}

#[tokio::test]
async fn an_end_cursor_page_runs_between_its_cursors_and_recommends_a_split_when_grown() {
    let TestDb { db, .. } = test_db();
    insert(&db, "p", (0..25).map(name).collect()).await;
    let (first, _, _) = page(&db, "p", PaginationOpts::first(10), None, None)
        .await
        .unwrap();
    let (second, _, _) = page(
        &db,
        "p",
        PaginationOpts {
            cursor: Some(first.continue_cursor.clone()),
            ..PaginationOpts::first(10)
        },
        None,
        None,
    )
    .await
    .unwrap();
    // `[first.continueCursor, second.continueCursor]` with a smaller numItems
    // still returns the whole span.
    let (span, _, _) = page(
        &db,
        "p",
        PaginationOpts {
            cursor: Some(first.continue_cursor.clone()),
            end_cursor: Some(second.continue_cursor.clone()),
            ..PaginationOpts::first(6)
        },
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(names(&span), newest_first(5..15));
    assert_eq!(span.continue_cursor, second.continue_cursor);
    assert!(!span.is_done);
    assert_eq!(
        span.split_cursor, None,
        "10 rows for 6 asked is no split yet"
    );
    assert_eq!(span.page_status, None);

    // A burst of 30 inserts lands in the first page (newest first): run to
    // its end, it holds 40 rows, recommends a split, and the two halves are
    // exactly the page, each row once.
    insert(&db, "p", (100..130).map(name).collect()).await;
    let whole_opts = PaginationOpts {
        end_cursor: Some(first.continue_cursor.clone()),
        ..PaginationOpts::first(10)
    };
    let (whole, _, _) = page(&db, "p", whole_opts, None, None).await.unwrap();
    assert_eq!(whole.page.len(), 40);
    assert_eq!(whole.page_status, Some("SplitRecommended"));
    let split = whole.split_cursor.clone().expect("a split cursor");
    let a = between(&db, "p", None, split.clone(), 10).await;
    let b = between(&db, "p", Some(split), first.continue_cursor.clone(), 10).await;
    assert_eq!(a.page.len(), 20);
    assert_eq!(b.page.len(), 20);
    let mut halves = names(&a);
    halves.extend(names(&b));
    assert_eq!(
        halves,
        names(&whole),
        "the halves are the page, each row once"
    );
    assert_eq!(b.continue_cursor, first.continue_cursor);

    // Past `maximumRowsRead` the page cannot be served whole: it stops,
    // requires a split, and the split halves again hold every row once.
    let capped_opts = PaginationOpts {
        end_cursor: Some(first.continue_cursor.clone()),
        maximum_rows_read: Some(16),
        ..PaginationOpts::first(10)
    };
    let (capped, _, _) = page(&db, "p", capped_opts, None, None).await.unwrap();
    assert_eq!(capped.page_status, Some("SplitRequired"));
    assert_eq!(capped.page.len(), 16, "it stopped at maximumRowsRead");
    assert_eq!(names(&capped), names(&whole)[..16].to_vec());
    let split = capped.split_cursor.expect("a split cursor");
    let c = between(&db, "p", None, split.clone(), 10).await;
    let d = between(&db, "p", Some(split), first.continue_cursor.clone(), 10).await;
    assert_eq!(c.page.len(), 8);
    let mut halves = names(&c);
    halves.extend(names(&d));
    assert_eq!(
        halves,
        names(&whole),
        "split at the middle of what was read"
    );
}

#[tokio::test]
async fn a_page_stops_at_maximum_bytes_read_and_an_end_cursor_page_then_requires_a_split() {
    let TestDb { db, .. } = test_db();
    // Ten documents of a little over 1000 bytes each: 3500 bytes is four.
    db.mutate(|tx| {
        for i in 0..10 {
            tx.insert(
                "items",
                obj! { "organizationId" => "big", "status" => "x".repeat(1000), "name" => name(i) },
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let bytes = |opts: PaginationOpts| PaginationOpts {
        maximum_bytes_read: Some(3500),
        ..opts
    };

    // Without an end the page simply ends where the bytes ran out.
    let (short, _, _) = page(&db, "big", bytes(PaginationOpts::first(10)), None, None)
        .await
        .unwrap();
    assert_eq!(
        names(&short),
        newest_first(6..10),
        "it stopped at 3500 bytes"
    );
    assert!(!short.is_done);
    assert_eq!(short.page_status, None);
    let (rest, _, _) = page(
        &db,
        "big",
        PaginationOpts {
            cursor: Some(short.continue_cursor.clone()),
            ..PaginationOpts::first(10)
        },
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        names(&rest),
        newest_first(0..6),
        "the next page goes on from there"
    );

    // With an end it cannot be served whole: it returns what it read,
    // requires a split, and the halves hold every row of the span once.
    let (full, _, _) = page(&db, "big", PaginationOpts::first(8), None, None)
        .await
        .unwrap();
    assert_eq!(names(&full), newest_first(2..10));
    let (capped, _, _) = page(
        &db,
        "big",
        bytes(PaginationOpts {
            end_cursor: Some(full.continue_cursor.clone()),
            ..PaginationOpts::first(8)
        }),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(capped.page_status, Some("SplitRequired"));
    assert_eq!(names(&capped), newest_first(6..10));
    assert_eq!(capped.continue_cursor, full.continue_cursor);
    let split = capped.split_cursor.expect("a split cursor");
    let (c, _, _) = page(
        &db,
        "big",
        bytes(PaginationOpts {
            end_cursor: Some(split.clone()),
            ..PaginationOpts::first(8)
        }),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(c.page_status, None, "the first half fits");
    let d = between(&db, "big", Some(split), full.continue_cursor.clone(), 8).await;
    let mut halves = names(&c);
    halves.extend(names(&d));
    assert_eq!(halves, names(&full), "each row of the span once");
}

#[tokio::test]
async fn forged_and_foreign_cursors_and_journals_are_invalid() {
    let TestDb { db, .. } = test_db();
    insert(&db, "p", (0..5).map(name).collect()).await;
    insert(&db, "q", (0..5).map(name).collect()).await;
    let (p_page, p_journal, _) = page(&db, "p", PaginationOpts::first(2), None, None)
        .await
        .unwrap();
    let foreign = p_page.continue_cursor.clone();
    let with_cursor = |c: &str| PaginationOpts {
        cursor: Some(c.to_string()),
        ..PaginationOpts::first(2)
    };
    assert_invalid(
        page(&db, "q", with_cursor(&foreign), None, None).await,
        "another organization's cursor",
    );
    assert_invalid(
        page(&db, "q", PaginationOpts::first(2), p_journal, None).await,
        "another organization's journal",
    );
    assert_invalid(
        page(
            &db,
            "q",
            PaginationOpts {
                end_cursor: Some(foreign.clone()),
                ..PaginationOpts::first(2)
            },
            None,
            None,
        )
        .await,
        "another organization's end cursor",
    );
    assert_invalid(
        page(&db, "p", with_cursor("bm90IGEgY3Vyc29y"), None, None).await,
        "a made-up cursor",
    );
    // Every single-character edit of a real cursor is refused.
    for i in 0..foreign.len() {
        let mut edited: Vec<char> = foreign.chars().collect();
        edited[i] = if edited[i] == 'A' { 'B' } else { 'A' };
        let edited: String = edited.into_iter().collect();
        assert_invalid(
            page(&db, "p", with_cursor(&edited), None, None).await,
            "an edited cursor",
        );
    }
    // The same index the other way round is another query too.
    let err = db
        .query(move |tx| {
            tx.query("items")
                .with_index("by_organization", |q| q.eq("organizationId", "p"))
                .paginate_with(&with_cursor(&foreign))
        })
        .await;
    assert_invalid(err, "a cursor of the descending query used ascending");
    // A query may paginate once: its journal holds one page end.
    let twice = db
        .query(|tx| {
            tx.query("items").paginate_with(&PaginationOpts::first(1))?;
            tx.query("items").paginate_with(&PaginationOpts::first(1))
        })
        .await;
    assert_invalid(twice, "paginate() twice in one query");
}
