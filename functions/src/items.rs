//! The registered `items:*` functions — the seed's `convex/items.ts`: each
//! checks the caller at the right level, then calls `features::items::logic`.

use livebase_runtime::pagination::PaginationOpts;
use livebase_runtime::registry::{Reader, Registry};
use livebase_runtime::{Error, Result};
use livebase_schema::{v, DocumentId, Validator, Value};

use crate::features::items::logic::{self, CreateItem};
use crate::features::items::schema::{ITEMS, MAX_NAME_CHARS, MAX_STATUS_CHARS};
use crate::features::organizations::logic::{by_slug, first_owner};
use crate::shared::auth::validations::{
    ensure_user_with_document, ensure_user_with_organization, ensure_user_with_permissions,
};

/// The internal mutation `POST /webhooks/items` creates its item through.
pub const CREATE_FROM_WEBHOOK: &str = "items:createFromWebhook";

/// The fields of an item a webhook creates, `{organizationSlug, name,
/// status}`, with the `items` table's own length limits: the route checks
/// its body against them (errors name `body.<field>`), the mutation its
/// arguments.
pub fn webhook_item_fields() -> [(&'static str, Validator); 3] {
    [
        ("organizationSlug", v::string()),
        ("name", v::string().max_len(MAX_NAME_CHARS)),
        ("status", v::string().max_len(MAX_STATUS_CHARS)),
    ]
}

pub fn register(app: &mut Registry) {
    app.query(
        "items:getAll",
        [("organizationId", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            ensure_user_with_organization(ctx, &organization_id)?;
            logic::get_items(&mut ctx.db, &organization_id)
        },
    );

    app.query(
        "items:getByStatus",
        [("organizationId", v::string()), ("status", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            ensure_user_with_organization(ctx, &organization_id)?;
            logic::get_items_by_status(&mut ctx.db, &organization_id, &args.string("status")?)
        },
    );

    app.query(
        "items:list",
        [
            ("organizationId", v::string()),
            ("paginationOpts", v::pagination_opts()),
        ],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            ensure_user_with_organization(ctx, &organization_id)?;
            let opts = args.value("paginationOpts").unwrap_or(&Value::Null);
            logic::list_items(
                &mut ctx.db,
                &organization_id,
                &PaginationOpts::from_value(opts)?,
            )
        },
    );

    app.mutation(
        "items:create",
        [
            ("name", v::string()),
            ("status", v::string()),
            ("organizationId", v::string()),
        ],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            let member =
                ensure_user_with_permissions(ctx, &organization_id, &[("item", &["create"])])?;
            let (name, status) = (args.string("name")?, args.string("status")?);
            logic::create_item(
                ctx.db,
                CreateItem {
                    name: &name,
                    status: &status,
                    organization_id: &organization_id,
                    user_id: &member.user.id,
                },
            )
        },
    );

    app.mutation(
        "items:update",
        [
            ("id", v::id(ITEMS)),
            ("name", v::optional(v::string())),
            ("status", v::optional(v::string())),
        ],
        |ctx, args| {
            let id = args.id("id", ITEMS)?;
            ensure_user_with_document(ctx, &id, &[("item", &["update"])])?;
            logic::update_item(
                ctx.db,
                &id,
                args.opt_string("name")?,
                args.opt_string("status")?,
            )
        },
    );

    app.mutation("items:remove", [("id", v::id(ITEMS))], |ctx, args| {
        let id = args.id("id", ITEMS)?;
        ensure_user_with_document(ctx, &id, &[("item", &["delete"])])?;
        logic::remove_item(ctx.db, &id)
    });

    // Not callable by clients: the webhook route calls it once the request's
    // signature is verified. The item is created by the organization's first
    // owner, as if they had added it.
    app.internal_mutation(CREATE_FROM_WEBHOOK, webhook_item_fields(), |ctx, args| {
        let slug = args.string("organizationSlug")?;
        let (organization_id, owner) = organization_and_owner(&mut Reader::new(ctx.db), &slug)?;
        let (name, status) = (args.string("name")?, args.string("status")?);
        logic::create_item(
            ctx.db,
            CreateItem {
                name: &name,
                status: &status,
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
