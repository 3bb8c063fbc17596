//! The registered `organizations:*` functions of `docs/reference/app.md`, plus the three that
//! make every cell of its role table reachable: `update` (organization:
//! update), `remove` (organization: delete) and `cancelInvitation`
//! (invitation: cancel). Each function's arguments are a struct below (its
//! validator derived from it), its result a Rust type.

use livebase_runtime::auth::tables::Invitations;
use livebase_runtime::registry::Registry;
use livebase_schema::typed::{Id, Type};

use crate::features::organizations::logic;
use crate::shared::auth::permissions::Role;
use crate::shared::auth::validations::{
    ensure_user, ensure_user_with_document, ensure_user_with_organization,
    ensure_user_with_permissions,
};

/// `organizations:create {name, slug}`.
#[derive(Type)]
pub struct CreateArgs {
    pub name: String,
    pub slug: String,
}

/// `organizations:listMine {}`.
#[derive(Type)]
pub struct NoArgs {}

/// `{organizationId}`: the arguments of `remove`, `members`,
/// `invitations` and `purgeRemoved`.
#[derive(Type)]
pub struct OrganizationArgs {
    pub organization_id: String,
}

/// `organizations:update {organizationId, name}`.
#[derive(Type)]
pub struct UpdateArgs {
    pub organization_id: String,
    pub name: String,
}

/// `organizations:invite {organizationId, email, role}`.
#[derive(Type)]
pub struct InviteArgs {
    pub organization_id: String,
    pub email: String,
    pub role: Role,
}

/// `{invitationId}`: `acceptInvitation` and `cancelInvitation`.
#[derive(Type)]
pub struct InvitationArgs {
    pub invitation_id: Id<Invitations>,
}

/// `organizations:setRole {organizationId, userId, role}`.
#[derive(Type)]
pub struct SetRoleArgs {
    pub organization_id: String,
    pub user_id: String,
    pub role: Role,
}

/// `organizations:removeMember {organizationId, userId}`.
#[derive(Type)]
pub struct RemoveMemberArgs {
    pub organization_id: String,
    pub user_id: String,
}

/// `organizations:publicBySlug {slug}`.
#[derive(Type)]
pub struct SlugArgs {
    pub slug: String,
}

pub fn register(app: &mut Registry) {
    app.typed_mutation("organizations:create", |ctx, args: CreateArgs| {
        let user = ensure_user(ctx)?;
        logic::create_organization(ctx.db, &user, &args.name, &args.slug)
    });

    app.typed_query("organizations:listMine", |ctx, _args: NoArgs| {
        let user = ensure_user(ctx)?;
        logic::list_mine(&mut ctx.db, &user)
    });

    app.typed_mutation("organizations:update", |ctx, args: UpdateArgs| {
        let organization_id = &args.organization_id;
        ensure_user_with_permissions(ctx, organization_id, &[("organization", &["update"])])?;
        logic::update_organization(ctx.db, organization_id, &args.name)
    });

    app.typed_mutation("organizations:remove", |ctx, args: OrganizationArgs| {
        let organization_id = &args.organization_id;
        ensure_user_with_permissions(ctx, organization_id, &[("organization", &["delete"])])?;
        logic::delete_organization(ctx.db, organization_id)
    });

    app.typed_internal_mutation(logic::PURGE_REMOVED, |ctx, args: OrganizationArgs| {
        logic::purge_removed(ctx.db, &args.organization_id)
    });

    app.typed_query("organizations:members", |ctx, args: OrganizationArgs| {
        ensure_user_with_organization(ctx, &args.organization_id)?;
        logic::list_members(&mut ctx.db, &args.organization_id)
    });

    app.typed_mutation("organizations:invite", |ctx, args: InviteArgs| {
        let actor = ensure_user_with_permissions(
            ctx,
            &args.organization_id,
            &[("invitation", &["create"])],
        )?;
        logic::invite(ctx.db, &actor, &args.email, args.role)
    });

    app.typed_query(
        "organizations:invitations",
        |ctx, args: OrganizationArgs| {
            ensure_user_with_organization(ctx, &args.organization_id)?;
            logic::list_invitations(&mut ctx.db, &args.organization_id)
        },
    );

    app.typed_mutation(
        "organizations:acceptInvitation",
        |ctx, args: InvitationArgs| {
            let user = ensure_user(ctx)?;
            logic::accept_invitation(ctx.db, &user, &args.invitation_id)
        },
    );

    app.typed_mutation(
        "organizations:cancelInvitation",
        |ctx, args: InvitationArgs| {
            let id = &args.invitation_id;
            ensure_user_with_document(ctx, id, &[("invitation", &["cancel"])])?;
            logic::cancel_invitation(ctx.db, id)
        },
    );

    app.typed_mutation("organizations:setRole", |ctx, args: SetRoleArgs| {
        let actor =
            ensure_user_with_permissions(ctx, &args.organization_id, &[("member", &["update"])])?;
        logic::set_role(ctx.db, &actor, &args.user_id, args.role)
    });

    app.typed_mutation(
        "organizations:removeMember",
        |ctx, args: RemoveMemberArgs| {
            let actor = ensure_user_with_permissions(
                ctx,
                &args.organization_id,
                &[("member", &["delete"])],
            )?;
            logic::remove_member(ctx.db, &actor, &args.user_id)
        },
    );

    // What `GET /public/organizations/{slug}` shows: `{name, members}` or
    // null. Internal: the route is the public face, and decides the 404.
    app.typed_internal_query(PUBLIC_BY_SLUG, |ctx, args: SlugArgs| {
        logic::public_profile(&mut ctx.db, &args.slug)
    });
}

/// The internal query behind `GET /public/organizations/{slug}`.
pub const PUBLIC_BY_SLUG: &str = "organizations:publicBySlug";
