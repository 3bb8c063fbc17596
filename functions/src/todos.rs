//! The registered `todos:*` functions: membership to read, permissions to
//! write, then `features::todos::logic`.

use livebase_runtime::registry::Registry;
use livebase_schema::v;

use crate::features::todos::logic;
use crate::features::todos::schema::TODOS;
use crate::shared::auth::validations::{
    ensure_user_with_document, ensure_user_with_organization, ensure_user_with_permissions,
};

pub fn register(app: &mut Registry) {
    app.query(
        "todos:list",
        [("organizationId", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            ensure_user_with_organization(ctx, &organization_id)?;
            logic::list_todos(&mut ctx.db, &organization_id)
        },
    );

    app.mutation(
        "todos:create",
        [("organizationId", v::string()), ("text", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            let member =
                ensure_user_with_permissions(ctx, &organization_id, &[("todo", &["create"])])?;
            logic::create_todo(
                ctx.db,
                &organization_id,
                &args.string("text")?,
                &member.user.id,
            )
        },
    );

    app.mutation("todos:toggle", [("id", v::id(TODOS))], |ctx, args| {
        let id = args.id("id", TODOS)?;
        let (_, todo) = ensure_user_with_document(ctx, &id, &[("todo", &["update"])])?;
        logic::toggle_todo(ctx.db, &todo, &id)
    });

    app.mutation("todos:remove", [("id", v::id(TODOS))], |ctx, args| {
        let id = args.id("id", TODOS)?;
        ensure_user_with_document(ctx, &id, &[("todo", &["delete"])])?;
        logic::remove_todo(ctx.db, &id)
    });
}
