//! What todos do, on a transaction, with the caller already checked.

use livebase_runtime::registry::Reader;
use livebase_runtime::store::Order;
use livebase_runtime::transaction::Transaction;
use livebase_runtime::{Error, Result};
use livebase_schema::typed::{Doc, Id};
use livebase_schema::{obj, DocumentId};

use super::schema::{Todo, MAX_TEXT_CHARS};
use crate::shared::LIST_LIMIT;

/// The organization's todos, newest first: the latest [`LIST_LIMIT`].
pub fn list_todos(db: &mut Reader, organization_id: &str) -> Result<Vec<Doc<Todo>>> {
    db.query_of::<Todo>()
        .with_index("by_organization", |q| {
            q.eq("organizationId", organization_id)
        })
        .order(Order::Desc)
        .take(LIST_LIMIT)
}

/// Adds an open todo; the text is trimmed and must not be empty.
pub fn create_todo(
    db: &mut Transaction,
    organization_id: &str,
    text: &str,
    user_id: &DocumentId,
) -> Result<Id<Todo>> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::invalid(format!(
            "args.text: a todo needs 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    db.insert_doc(Todo {
        text: text.to_string(),
        completed: false,
        organization_id: organization_id.to_string(),
        created_by: user_id.to_string(),
    })
}

/// Flips `completed` of `todo` (the document as read) and returns the new value.
pub fn toggle_todo(db: &mut Transaction, todo: &Doc<Todo>) -> Result<bool> {
    let completed = !todo.completed;
    db.patch(&todo.id, obj! { "completed" => completed })?;
    Ok(completed)
}

pub fn remove_todo(db: &mut Transaction, id: &Id<Todo>) -> Result<()> {
    db.delete(id)
}
