//! The registered `items:*` functions — the seed's `convex/items.ts`: each
//! checks the caller at the right level, then calls `features::items::logic`.

use livebase_runtime::pagination::PaginationOpts;
use livebase_runtime::registry::Registry;
use livebase_schema::{v, Value};

use crate::features::items::logic::{self, CreateItem};
use crate::features::items::schema::ITEMS;
use crate::shared::auth::validations::{
    ensure_user_with_document, ensure_user_with_organization, ensure_user_with_permissions,
};

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
}
