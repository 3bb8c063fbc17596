//! The registered `todos:*` functions: membership to read, permissions to
//! write, then `features::todos::logic`. Each function's arguments are a
//! struct below (its validator derived from it), its result a Rust type.

use livebase_runtime::registry::Registry;
use livebase_schema::typed::{Id, Type};

use crate::features::todos::logic;
use crate::features::todos::schema::Todo;
use crate::shared::auth::validations::{
    ensure_user_with_doc, ensure_user_with_organization, ensure_user_with_permissions,
};

/// `todos:list {organizationId}`.
#[derive(Type)]
pub struct ListArgs {
    pub organization_id: String,
}

/// `todos:create {organizationId, text}`.
#[derive(Type)]
pub struct CreateArgs {
    pub organization_id: String,
    pub text: String,
}

/// `todos:toggle {id}` and `todos:remove {id}`.
#[derive(Type)]
pub struct ByIdArgs {
    pub id: Id<Todo>,
}

pub fn register(app: &mut Registry) {
    app.typed_query("todos:list", |ctx, args: ListArgs| {
        ensure_user_with_organization(ctx, &args.organization_id)?;
        logic::list_todos(&mut ctx.db, &args.organization_id)
    });

    app.typed_mutation("todos:create", |ctx, args: CreateArgs| {
        let member =
            ensure_user_with_permissions(ctx, &args.organization_id, &[("todo", &["create"])])?;
        logic::create_todo(ctx.db, &args.organization_id, &args.text, &member.user.id)
    });

    app.typed_mutation("todos:toggle", |ctx, args: ByIdArgs| {
        let (_, todo) = ensure_user_with_doc(ctx, &args.id, &[("todo", &["update"])])?;
        logic::toggle_todo(ctx.db, &todo)
    });

    app.typed_mutation("todos:remove", |ctx, args: ByIdArgs| {
        ensure_user_with_doc(ctx, &args.id, &[("todo", &["delete"])])?;
        logic::remove_todo(ctx.db, &args.id)
    });
}
