//! Paginated subscriptions: one live query per page, as Convex's paginated
//! clients keep them. The first page starts with `cursor: null`, each
//! [`PaginatedSubscription::load_more`] adds a page from the last page's
//! `continueCursor`, and the stream yields the pages' items concatenated.
//! The server fixes each live page's end (its journal, which the client
//! sends back when it re-adds the page after a reconnect), so rows inserted
//! or deleted while pages are loaded are never lost or repeated. A page that
//! grew too big comes back with a `splitCursor`: it is replaced by two pages,
//! `[cursor, splitCursor]` and `[splitCursor, its end]`, once both have
//! arrived.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use livebase_schema::protocol::FunctionError;
use livebase_schema::{Object, Value};

use crate::client::{Client, Subscription};
use crate::function::{FromValue, IntoArgs, Paginated, QueryRef};

/// Where a paginated list stands, as Convex's `PaginationStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageStatus {
    LoadingFirstPage,
    CanLoadMore,
    LoadingMore,
    Exhausted,
}

/// The concatenated pages' items and their status.
#[derive(Clone, Debug, PartialEq)]
pub struct PaginatedResult<T = Value> {
    pub items: Vec<T>,
    pub status: PageStatus,
}

/// A paginated query's live pages; a `Stream` of [`PaginatedResult`]s, with
/// items of type `T` (untyped `Value`s from [`PaginatedSubscription::new`],
/// typed from [`PaginatedSubscription::of`] and a generated reference).
/// Dropping it unsubscribes every page.
pub struct PaginatedSubscription<T = Value> {
    client: Client,
    path: &'static str,
    args: Object,
    initial_num_items: usize,
    pages: Vec<Page>,
    _items: PhantomData<fn() -> T>,
}

/// One live page, and the two pages replacing it while a split is under way.
struct Page {
    sub: Subscription<Value>,
    cursor: Option<String>,
    split: Option<Box<(Page, Page)>>,
}

fn opts(num_items: usize, cursor: Option<String>, end: Option<String>) -> Value {
    let mut o = Object::new();
    o.insert("numItems".into(), Value::Float64(num_items as f64));
    o.insert("cursor".into(), cursor.map_or(Value::Null, Value::from));
    if let Some(end) = end {
        o.insert("endCursor".into(), end.into());
    }
    Value::Object(o.into())
}

/// The `splitCursor` of a page that asks to be split.
fn split_wanted(value: &Value) -> Option<String> {
    let status = value.get("pageStatus")?.as_str()?;
    if status != "SplitRecommended" && status != "SplitRequired" {
        return None;
    }
    Some(value.get("splitCursor")?.as_str()?.to_string())
}

/// A page's `continueCursor` and `isDone`, if its result is a page.
fn page_end(value: &Value) -> Option<(String, bool)> {
    let cursor = value.get("continueCursor")?.as_str()?.to_string();
    let done = matches!(value.get("isDone"), Some(Value::Boolean(true)));
    Some((cursor, done))
}

impl PaginatedSubscription {
    /// Subscribes to the first `initial_num_items` of `query` with `args`
    /// (without `paginationOpts`; each page adds its own).
    pub fn new(
        client: &Client,
        query: QueryRef<Object, Value>,
        args: Object,
        initial_num_items: usize,
    ) -> PaginatedSubscription {
        PaginatedSubscription::start(client, query.path(), args, initial_num_items)
    }
}

impl<T: FromValue> PaginatedSubscription<T> {
    /// As [`PaginatedSubscription::new`], for a typed reference (as
    /// `livebase codegen --rust` writes them): its arguments without
    /// `paginationOpts`, its items decoded as `T`. `Err` if the arguments
    /// are not an object.
    pub fn of<A: IntoArgs>(
        client: &Client,
        query: QueryRef<A, Paginated<T>>,
        args: A,
        initial_num_items: usize,
    ) -> Result<PaginatedSubscription<T>, FunctionError> {
        match args.into_args() {
            Value::Object(args) => Ok(PaginatedSubscription::start(
                client,
                query.path(),
                args.into_fields(),
                initial_num_items,
            )),
            other => Err(FunctionError {
                message: format!(
                    "the arguments of the paginated query {} must be an object, not {other:?}",
                    query.path()
                ),
                data: None,
            }),
        }
    }
}

impl<T> PaginatedSubscription<T> {
    fn start(
        client: &Client,
        path: &'static str,
        args: Object,
        initial_num_items: usize,
    ) -> PaginatedSubscription<T> {
        let mut this = PaginatedSubscription {
            client: client.clone(),
            path,
            args,
            initial_num_items,
            pages: Vec::new(),
            _items: PhantomData,
        };
        this.add_page(initial_num_items, None);
        this
    }

    fn subscribe(&self, num_items: usize, cursor: Option<String>, end: Option<String>) -> Page {
        let mut args = self.args.clone();
        args.insert(
            "paginationOpts".into(),
            opts(num_items, cursor.clone(), end),
        );
        Page {
            sub: self
                .client
                .subscribe(QueryRef::<Object, Value>::new(self.path), args),
            cursor,
            split: None,
        }
    }

    fn add_page(&mut self, num_items: usize, cursor: Option<String>) {
        let page = self.subscribe(num_items, cursor, None);
        self.pages.push(page);
    }

    /// Starts the splits pages ask for, and completes those whose two halves
    /// have both arrived; says whether the pages changed.
    fn process_splits(&mut self) -> bool {
        let mut changed = false;
        let mut i = 0;
        while i < self.pages.len() {
            let page = &self.pages[i];
            let ready = page.split.as_ref().is_some_and(|halves| {
                halves.0.sub.current().is_some() && halves.1.sub.current().is_some()
            });
            if ready {
                let page = self.pages.remove(i);
                let (a, b) = *page.split.expect("checked");
                self.pages.insert(i, b);
                self.pages.insert(i, a);
                changed = true;
                i += 2;
                continue;
            }
            if page.split.is_none() {
                let value = page.sub.current().and_then(Result::ok);
                let wanted = value
                    .as_ref()
                    .and_then(|v| Some((split_wanted(v)?, page_end(v)?.0)));
                if let Some((split, end)) = wanted {
                    let cursor = page.cursor.clone();
                    let n = self.initial_num_items;
                    let a = self.subscribe(n, cursor, Some(split.clone()));
                    let b = self.subscribe(n, Some(split), Some(end));
                    self.pages[i].split = Some(Box::new((a, b)));
                    changed = true;
                }
            }
            i += 1;
        }
        changed
    }

    /// Adds a page of `num_items` after the last one; `false` if the last
    /// page has not arrived yet or the list is exhausted.
    pub fn load_more(&mut self, num_items: usize) -> bool {
        let last = self.pages.last().and_then(|p| p.sub.current());
        match last
            .as_ref()
            .and_then(|r| r.as_ref().ok())
            .and_then(page_end)
        {
            Some((cursor, false)) => {
                self.add_page(num_items, Some(cursor));
                true
            }
            _ => false,
        }
    }

    /// How many pages are live.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }
}

impl<T: FromValue> PaginatedSubscription<T> {
    /// The pages' items so far and the status; a page's error if one failed
    /// (or an item that is not a `T`).
    pub fn current(&self) -> Result<PaginatedResult<T>, FunctionError> {
        let mut items = Vec::new();
        let mut loading = false;
        let mut done = false;
        for page in &self.pages {
            match page.sub.current() {
                None => {
                    loading = true;
                    done = false;
                }
                Some(result) => {
                    let value = result?;
                    if let Some(Value::Array(rows)) = value.get("page") {
                        for row in rows {
                            items.push(T::from_value(row.clone()).map_err(|e| FunctionError {
                                message: format!("an item of {}: {e}", self.path),
                                data: None,
                            })?);
                        }
                    }
                    done = page_end(&value).is_some_and(|(_, d)| d);
                }
            }
        }
        let status = match (loading, done) {
            (true, _) if items.is_empty() => PageStatus::LoadingFirstPage,
            (true, _) => PageStatus::LoadingMore,
            (false, true) => PageStatus::Exhausted,
            (false, false) => PageStatus::CanLoadMore,
        };
        Ok(PaginatedResult { items, status })
    }
}

impl<T: FromValue> Stream for PaginatedSubscription<T> {
    type Item = Result<PaginatedResult<T>, FunctionError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut changed = false;
        loop {
            let mut closed = false;
            for page in &mut this.pages {
                // Every page (and split half) is polled, so each registers
                // the waker.
                let mut subs = vec![&mut page.sub];
                if let Some(halves) = page.split.as_mut() {
                    let (a, b) = &mut **halves;
                    subs.push(&mut a.sub);
                    subs.push(&mut b.sub);
                }
                for sub in subs {
                    loop {
                        match Pin::new(&mut *sub).poll_next(cx) {
                            Poll::Ready(Some(_)) => changed = true,
                            Poll::Ready(None) => {
                                closed = true;
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                }
            }
            if closed {
                return Poll::Ready(None);
            }
            // A split started or completed: poll the new pages too.
            if !this.process_splits() {
                break;
            }
            changed = true;
        }
        if changed {
            Poll::Ready(Some(this.current()))
        } else {
            Poll::Pending
        }
    }
}
