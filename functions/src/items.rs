//! The registered `items:*` functions — the seed's `convex/items.ts`: each
//! checks the caller at the right level, then calls `features::items::logic`.
//! Each function's arguments are a struct below (its validator derived from
//! it), its result a Rust type.

use livebase_runtime::pagination::PaginationOpts;
use livebase_runtime::registry::{Reader, Registry};
use livebase_runtime::{Error, Result};
use livebase_schema::typed::{Id, Type};
use livebase_schema::{DocumentId, Value};

use crate::features::items::logic::{self, CreateItem};
use crate::features::items::schema::{Item, MAX_NAME_CHARS, MAX_STATUS_CHARS};
use crate::features::organizations::logic::{by_slug, first_owner};
use crate::shared::auth::validations::{
    ensure_user_with_doc, ensure_user_with_organization, ensure_user_with_permissions,
};

/// The internal mutation `POST /webhooks/items` creates its item through.
pub const CREATE_FROM_WEBHOOK: &str = "items:createFromWebhook";

/// `items:getAll {organizationId}`.
#[derive(Type)]
pub struct GetAllArgs {
    pub organization_id: String,
}

/// `items:getByStatus {organizationId, status}`.
#[derive(Type)]
pub struct GetByStatusArgs {
    pub organization_id: String,
    pub status: String,
}

/// `items:list {organizationId, paginationOpts}`.
#[derive(Type)]
pub struct ListArgs {
    pub organization_id: String,
    pub pagination_opts: PaginationOpts,
}

/// `items:create {name, status, organizationId}`.
#[derive(Type)]
pub struct CreateArgs {
    pub name: String,
    pub status: String,
    pub organization_id: String,
}

/// `items:update {id, name?, status?}`.
#[derive(Type)]
pub struct UpdateArgs {
    pub id: Id<Item>,
    pub name: Option<String>,
    pub status: Option<String>,
}

/// `items:remove {id}`.
#[derive(Type)]
pub struct RemoveArgs {
    pub id: Id<Item>,
}

/// The item a webhook creates, `{organizationSlug, name, status}`, with the
/// `items` table's own length limits: the route checks its body against its
/// validator (errors name `body.<field>`), the mutation its arguments.
#[derive(Type)]
pub struct WebhookItem {
    pub organization_slug: String,
    #[livebase(max_len = MAX_NAME_CHARS)]
    pub name: String,
    #[livebase(max_len = MAX_STATUS_CHARS)]
    pub status: String,
}

pub fn register(app: &mut Registry) {
    app.typed_query("items:getAll", |ctx, args: GetAllArgs| {
        ensure_user_with_organization(ctx, &args.organization_id)?;
        logic::get_items(&mut ctx.db, &args.organization_id)
    });

    app.typed_query("items:getByStatus", |ctx, args: GetByStatusArgs| {
        ensure_user_with_organization(ctx, &args.organization_id)?;
        logic::get_items_by_status(&mut ctx.db, &args.organization_id, &args.status)
    });

    app.typed_query("items:list", |ctx, args: ListArgs| {
        ensure_user_with_organization(ctx, &args.organization_id)?;
        logic::list_items(&mut ctx.db, &args.organization_id, &args.pagination_opts)
    });

    app.typed_mutation("items:create", |ctx, args: CreateArgs| {
        let member =
            ensure_user_with_permissions(ctx, &args.organization_id, &[("item", &["create"])])?;
        logic::create_item(
            ctx.db,
            CreateItem {
                name: &args.name,
                status: &args.status,
                organization_id: &args.organization_id,
                user_id: &member.user.id,
            },
        )
    });

    app.typed_mutation("items:update", |ctx, args: UpdateArgs| {
        ensure_user_with_doc(ctx, &args.id, &[("item", &["update"])])?;
        logic::update_item(ctx.db, &args.id, args.name, args.status)
    });

    app.typed_mutation("items:remove", |ctx, args: RemoveArgs| {
        ensure_user_with_doc(ctx, &args.id, &[("item", &["delete"])])?;
        logic::remove_item(ctx.db, &args.id)
    });

    // Not callable by clients: the webhook route calls it once the request's
    // signature is verified. The item is created by the organization's first
    // owner, as if they had added it.
    app.typed_internal_mutation(CREATE_FROM_WEBHOOK, |ctx, args: WebhookItem| {
        let slug = &args.organization_slug;
        let (organization_id, owner) = organization_and_owner(&mut Reader::new(ctx.db), slug)?;
        logic::create_item(
            ctx.db,
            CreateItem {
                name: &args.name,
                status: &args.status,
                organization_id: &organization_id,
                user_id: &owner,
            },
        )
    });
}

/// The id of the organization with `slug` and of its first owner;
/// `NOT_FOUND` if there is no such organization.
fn organization_and_owner(db: &mut Reader, slug: &str) -> Result<(String, DocumentId)> {
    let not_found = || Error::not_found(format!("no organization `{slug}`"));
    let organization = by_slug(db, slug)?.ok_or_else(not_found)?;
    let id = organization
        .get("_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::internal("an organization without an _id"))?
        .to_string();
    let owner = first_owner(db, &id)?.ok_or_else(not_found)?;
    Ok((id, owner))
}
