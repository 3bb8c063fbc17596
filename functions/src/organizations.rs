//! The registered `organizations:*` functions of `docs/reference/app.md`, plus the three that
//! make every cell of its role table reachable: `update` (organization:
//! update), `remove` (organization: delete) and `cancelInvitation`
//! (invitation: cancel).

use livebase_runtime::auth::tables::INVITATIONS;
use livebase_runtime::registry::{Args, Registry};
use livebase_runtime::{Error, Result};
use livebase_schema::v;

use crate::features::organizations::logic;
use crate::shared::auth::permissions::{role_validator, Role};
use crate::shared::auth::validations::{
    ensure_user, ensure_user_with_document, ensure_user_with_organization,
    ensure_user_with_permissions,
};

fn role_arg(args: &Args) -> Result<Role> {
    let role = args.string("role")?;
    Role::parse(&role).ok_or_else(|| Error::invalid(format!("args.role: unknown role `{role}`")))
}

pub fn register(app: &mut Registry) {
    app.mutation(
        "organizations:create",
        [("name", v::string()), ("slug", v::string())],
        |ctx, args| {
            let user = ensure_user(ctx)?;
            logic::create_organization(ctx.db, &user, &args.string("name")?, &args.string("slug")?)
        },
    );

    app.query("organizations:listMine", [], |ctx, _args| {
        let user = ensure_user(ctx)?;
        logic::list_mine(&mut ctx.db, &user)
    });

    app.mutation(
        "organizations:update",
        [("organizationId", v::string()), ("name", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            ensure_user_with_permissions(ctx, &organization_id, &[("organization", &["update"])])?;
            logic::update_organization(ctx.db, &organization_id, &args.string("name")?)
        },
    );

    app.mutation(
        "organizations:remove",
        [("organizationId", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            ensure_user_with_permissions(ctx, &organization_id, &[("organization", &["delete"])])?;
            logic::delete_organization(ctx.db, &organization_id)
        },
    );

    app.internal_mutation(
        logic::PURGE_REMOVED,
        [("organizationId", v::string())],
        |ctx, args| logic::purge_removed(ctx.db, &args.string("organizationId")?),
    );

    app.query(
        "organizations:members",
        [("organizationId", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            ensure_user_with_organization(ctx, &organization_id)?;
            logic::list_members(&mut ctx.db, &organization_id)
        },
    );

    app.mutation(
        "organizations:invite",
        [
            ("organizationId", v::string()),
            ("email", v::string()),
            ("role", role_validator()),
        ],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            let actor = ensure_user_with_permissions(
                ctx,
                &organization_id,
                &[("invitation", &["create"])],
            )?;
            logic::invite(ctx.db, &actor, &args.string("email")?, role_arg(&args)?)
        },
    );

    app.query(
        "organizations:invitations",
        [("organizationId", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            ensure_user_with_organization(ctx, &organization_id)?;
            logic::list_invitations(&mut ctx.db, &organization_id)
        },
    );

    app.mutation(
        "organizations:acceptInvitation",
        [("invitationId", v::id(INVITATIONS))],
        |ctx, args| {
            let user = ensure_user(ctx)?;
            logic::accept_invitation(ctx.db, &user, &args.id("invitationId", INVITATIONS)?)
        },
    );

    app.mutation(
        "organizations:cancelInvitation",
        [("invitationId", v::id(INVITATIONS))],
        |ctx, args| {
            let id = args.id("invitationId", INVITATIONS)?;
            ensure_user_with_document(ctx, &id, &[("invitation", &["cancel"])])?;
            logic::cancel_invitation(ctx.db, &id)
        },
    );

    app.mutation(
        "organizations:setRole",
        [
            ("organizationId", v::string()),
            ("userId", v::string()),
            ("role", role_validator()),
        ],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            let actor =
                ensure_user_with_permissions(ctx, &organization_id, &[("member", &["update"])])?;
            logic::set_role(ctx.db, &actor, &args.string("userId")?, role_arg(&args)?)
        },
    );

    app.mutation(
        "organizations:removeMember",
        [("organizationId", v::string()), ("userId", v::string())],
        |ctx, args| {
            let organization_id = args.string("organizationId")?;
            let actor =
                ensure_user_with_permissions(ctx, &organization_id, &[("member", &["delete"])])?;
            logic::remove_member(ctx.db, &actor, &args.string("userId")?)
        },
    );
}
