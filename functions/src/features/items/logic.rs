//! What items do, on a transaction, with the caller already checked: the
//! seed's `features/items/logic.ts`.

use livebase_runtime::pagination::{PaginationOpts, PaginationResult};
use livebase_runtime::registry::Reader;
use livebase_runtime::store::Order;
use livebase_runtime::transaction::Transaction;
use livebase_runtime::Result;
use livebase_schema::typed::{Doc, Id};
use livebase_schema::{DocumentId, Object};

use super::schema::Item;
use crate::shared::LIST_LIMIT;

/// The organization's items, oldest first: the first [`LIST_LIMIT`].
pub fn get_items(db: &mut Reader, organization_id: &str) -> Result<Vec<Doc<Item>>> {
    db.query_of::<Item>()
        .with_index("by_organization", |q| {
            q.eq("organizationId", organization_id)
        })
        .take(LIST_LIMIT)
}

/// A page of the organization's items, newest first (what
/// `usePaginatedQuery(api.items.list, …)` drives).
pub fn list_items(
    db: &mut Reader,
    organization_id: &str,
    opts: &PaginationOpts,
) -> Result<PaginationResult<Doc<Item>>> {
    db.query_of::<Item>()
        .with_index("by_organization", |q| {
            q.eq("organizationId", organization_id)
        })
        .order(Order::Desc)
        .paginate_with(opts)
}

/// The organization's items with `status`, oldest first: the first
/// [`LIST_LIMIT`].
pub fn get_items_by_status(
    db: &mut Reader,
    organization_id: &str,
    status: &str,
) -> Result<Vec<Doc<Item>>> {
    db.query_of::<Item>()
        .with_index("by_organization_status", |q| {
            q.eq("organizationId", organization_id).eq("status", status)
        })
        .take(LIST_LIMIT)
}

/// A new item's fields.
pub struct CreateItem<'a> {
    pub name: &'a str,
    pub status: &'a str,
    pub organization_id: &'a str,
    pub user_id: &'a DocumentId,
}

pub fn create_item(db: &mut Transaction, item: CreateItem) -> Result<Id<Item>> {
    db.insert_doc(Item {
        name: item.name.to_string(),
        status: item.status.to_string(),
        organization_id: item.organization_id.to_string(),
        created_by: item.user_id.to_string(),
    })
}

/// Sets the given fields; absent ones keep their value.
pub fn update_item(
    db: &mut Transaction,
    id: &Id<Item>,
    name: Option<String>,
    status: Option<String>,
) -> Result<()> {
    let mut patch = Object::new();
    if let Some(name) = name {
        patch.insert("name".into(), name.into());
    }
    if let Some(status) = status {
        patch.insert("status".into(), status.into());
    }
    db.patch(id, patch)
}

pub fn remove_item(db: &mut Transaction, id: &Id<Item>) -> Result<()> {
    db.delete(id)
}
