//! What todos do, on a transaction, with the caller already checked.

use livebase_runtime::registry::Reader;
use livebase_runtime::store::Order;
use livebase_runtime::transaction::Transaction;
use livebase_runtime::{Error, Result};
use livebase_schema::{obj, DocumentId, Value};

use super::schema::{MAX_TEXT_CHARS, TODOS};
use crate::shared::LIST_LIMIT;

/// The organization's todos, newest first: the latest [`LIST_LIMIT`].
pub fn list_todos(db: &mut Reader, organization_id: &str) -> Result<Vec<Value>> {
    db.query(TODOS)
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
) -> Result<DocumentId> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::invalid(format!(
            "args.text: a todo needs 1 to {MAX_TEXT_CHARS} characters"
        )));
    }
    db.insert(
        TODOS,
        obj! {
            "text" => text,
            "completed" => false,
            "organizationId" => organization_id,
            "createdBy" => user_id.as_str(),
        },
    )
}

/// Flips `completed` of `todo` (the document as read) and returns the new value.
pub fn toggle_todo(db: &mut Transaction, todo: &Value, id: &DocumentId) -> Result<bool> {
    let completed = !todo
        .get("completed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    db.patch(id, obj! { "completed" => completed })?;
    Ok(completed)
}

pub fn remove_todo(db: &mut Transaction, id: &DocumentId) -> Result<()> {
    db.delete(id)
}
