//! The transaction's document calls, typed by a table's document type
//! (`livebase_schema::typed`): `tx.get_doc(&id)` is a `Doc<Todo>` for an
//! `Id<Todo>`, `tx.query_of::<Todo>()` reads the `todos` table into
//! `Doc<Todo>`s, `tx.insert_doc(todo)` answers an `Id<Todo>`. They are the
//! untyped calls with a conversion at each end, so reads are recorded exactly
//! as theirs are.
//!
//! A stored document that does not read as its table's type — written
//! before the type changed, by dynamic code — is an internal error naming the
//! table and the field, never a document with fields made up.

use std::marker::PhantomData;

use livebase_schema::typed::{Doc, Id, Table, Type};
use livebase_schema::{ValidationError, Value};

use crate::error::{Error, Result};
use crate::pagination::{PaginationOpts, PaginationResult};
use crate::persistence::Order;
use crate::transaction::{IndexRange, Query, Transaction};

/// `value`, a document read from `T`'s table, as a `Doc<T>`.
pub fn read_doc<T: Table + Type>(value: Value) -> Result<Doc<T>> {
    Doc::from_value(value, T::NAME).map_err(|e| unreadable::<T>(&e))
}

fn unreadable<T: Table + Type>(e: &ValidationError) -> Error {
    Error::internal(format!(
        "a stored document of `{}` does not read as its type: {e}",
        T::NAME
    ))
}

impl<'a> Transaction<'a> {
    /// The document with this id, or `None`.
    pub fn get_doc<T: Table + Type>(&mut self, id: &Id<T>) -> Result<Option<Doc<T>>> {
        self.get(id.document_id())?.map(read_doc).transpose()
    }

    /// Inserts `doc` into `T`'s table; its new id.
    pub fn insert_doc<T: Table + Type>(&mut self, doc: T) -> Result<Id<T>> {
        let id = self.insert(T::NAME, doc.into_value())?;
        Id::new(id).ok_or_else(|| Error::internal("an insert answered an id of another table"))
    }

    /// Replaces the fields of the document `id` with `doc`'s.
    pub fn replace_doc<T: Table + Type>(&mut self, id: &Id<T>, doc: T) -> Result<()> {
        self.replace(id.document_id(), doc.into_value())
    }

    /// Starts a query over `T`'s table; see [`Transaction::query`].
    pub fn query_of<T: Table + Type>(&mut self) -> TypedQuery<'_, 'a, T> {
        TypedQuery::new(self.query(T::NAME))
    }
}

/// A [`Query`] over table `T` whose results are `Doc<T>`s.
pub struct TypedQuery<'t, 'a, T> {
    query: Query<'t, 'a>,
    table: PhantomData<fn() -> T>,
}

impl<'t, 'a, T: Table + Type> TypedQuery<'t, 'a, T> {
    /// `query` (over `T`'s table), typed.
    pub fn new(query: Query<'t, 'a>) -> Self {
        TypedQuery {
            query,
            table: PhantomData,
        }
    }

    pub fn with_index(self, index: &str, range: impl FnOnce(IndexRange) -> IndexRange) -> Self {
        TypedQuery::new(self.query.with_index(index, range))
    }

    pub fn order(self, order: Order) -> Self {
        TypedQuery::new(self.query.order(order))
    }

    pub fn collect(self) -> Result<Vec<Doc<T>>> {
        self.query.collect()?.into_iter().map(read_doc).collect()
    }

    pub fn take(self, n: usize) -> Result<Vec<Doc<T>>> {
        self.query.take(n)?.into_iter().map(read_doc).collect()
    }

    pub fn first(self) -> Result<Option<Doc<T>>> {
        self.query.first()?.map(read_doc).transpose()
    }

    pub fn unique(self) -> Result<Option<Doc<T>>> {
        self.query.unique()?.map(read_doc).transpose()
    }

    /// A page as Convex's clients ask for it; see [`Query::paginate_with`].
    pub fn paginate_with(self, opts: &PaginationOpts) -> Result<PaginationResult<Doc<T>>> {
        self.query.paginate_with(opts)?.try_map(read_doc)
    }
}
