//! The seed's three levels of checks, which every function starts with:
//!
//! ```text
//! let user = ensure_user(ctx)?;                                   // signed in
//! ensure_user_with_organization(ctx, &organization_id)?;          // a member
//! ensure_user_with_permissions(ctx, &organization_id, &[("item", &["create"])])?;
//! ```
//!
//! plus [`ensure_user_with_document`] for functions given a document's id
//! ([`ensure_user_with_doc`] for a typed one).
//!
//! Each check takes a query's or a mutation's context (any
//! [`ReadCtx`]) and reads the caller's session row and member row through it,
//! so they are part of the function's read set: signing out, a role change or
//! a removal re-runs every live query that passed the check, and the check then
//! decides again.

use livebase_runtime::auth::tables::{MEMBERS, ORGANIZATIONS};
use livebase_runtime::auth::users::current_user;
use livebase_runtime::registry::{ReadCtx, Reader};
use livebase_runtime::typed::read_doc;
use livebase_runtime::{Error, Result};
use livebase_schema::typed::{Doc, Id, Table, Type};
use livebase_schema::{DocumentId, Value};

use super::permissions::{is_known, Role};

pub use livebase_runtime::auth::users::User;

/// Permissions a function needs, as the seed writes them:
/// `&[("item", &["create", "update"])]`.
pub type Permissions<'a> = &'a [(&'a str, &'a [&'a str])];

/// A signed-in user's membership in one organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub user: User,
    /// The `members` row.
    pub member_id: DocumentId,
    pub organization_id: String,
    pub role: Role,
}

/// Level 1: the caller is signed in with a live session. `UNAUTHENTICATED`
/// otherwise.
pub fn ensure_user<'a>(ctx: &mut impl ReadCtx<'a>) -> Result<User> {
    let (mut db, identity) = ctx.reads();
    current_user(&mut db, identity)
}

/// Level 2: the caller is a member of the organization. `FORBIDDEN` otherwise
/// (an organization that does not exist has no members, so it is the same).
pub fn ensure_user_with_organization<'a>(
    ctx: &mut impl ReadCtx<'a>,
    organization_id: &str,
) -> Result<Membership> {
    let user = ensure_user(ctx)?;
    membership(&mut ctx.reads().0, user, organization_id)?
        .ok_or_else(|| Error::forbidden("you are not a member of this organization"))
}

/// Level 3: the caller is a member whose role grants every named action.
/// `FORBIDDEN` otherwise, naming the first missing permission.
pub fn ensure_user_with_permissions<'a>(
    ctx: &mut impl ReadCtx<'a>,
    organization_id: &str,
    permissions: Permissions,
) -> Result<Membership> {
    let member = ensure_user_with_organization(ctx, organization_id)?;
    check_role(member.role, permissions)?;
    Ok(member)
}

/// For a function given a document's id: the document, and the caller's
/// membership in its organization with `permissions` (none: membership only).
///
/// A document that does not exist and a document of an organization the caller
/// is not in are both `NOT_FOUND`, with the same message — another
/// organization's rows are never shown, not even their existence. A member
/// without the permission gets `FORBIDDEN`.
pub fn ensure_user_with_document<'a>(
    ctx: &mut impl ReadCtx<'a>,
    id: &DocumentId,
    permissions: Permissions,
) -> Result<(Membership, Value)> {
    let user = ensure_user(ctx)?;
    let not_found = || Error::not_found(format!("{} {id} does not exist", id.table()));
    let (mut db, _) = ctx.reads();
    let doc = db.get(id)?.ok_or_else(not_found)?;
    let organization_id = doc
        .get("organizationId")
        .and_then(Value::as_str)
        .ok_or_else(not_found)?
        .to_string();
    let member = membership(&mut db, user, &organization_id)?.ok_or_else(not_found)?;
    check_role(member.role, permissions)?;
    Ok((member, doc))
}

/// [`ensure_user_with_document`] for a typed id: the document as its
/// table's type.
pub fn ensure_user_with_doc<'a, T: Table + Type>(
    ctx: &mut impl ReadCtx<'a>,
    id: &Id<T>,
    permissions: Permissions,
) -> Result<(Membership, Doc<T>)> {
    let (member, doc) = ensure_user_with_document(ctx, id, permissions)?;
    Ok((member, read_doc(doc)?))
}

/// The caller's `members` row in the organization, read through the
/// `by_organization_user` index so that the read set covers exactly it. An
/// organization whose document is gone has no members: its removal deletes
/// the document first and the rows after, in batches.
fn membership(db: &mut Reader, user: User, organization_id: &str) -> Result<Option<Membership>> {
    let Some(organization) = DocumentId::parse_in(organization_id, ORGANIZATIONS) else {
        return Ok(None);
    };
    if db.get(&organization)?.is_none() {
        return Ok(None);
    }
    let row = db
        .query(MEMBERS)
        .with_index("by_organization_user", |q| {
            q.eq("organizationId", organization_id)
                .eq("userId", user.id.as_str())
        })
        .first()?;
    let Some(row) = row else {
        return Ok(None);
    };
    let field = |name: &str| row.get(name).and_then(Value::as_str);
    let member_id = field("_id").and_then(|id| DocumentId::parse_in(id, MEMBERS));
    let role = field("role").and_then(Role::parse);
    match (member_id, role) {
        (Some(member_id), Some(role)) => Ok(Some(Membership {
            user,
            member_id,
            organization_id: organization_id.to_string(),
            role,
        })),
        _ => Err(Error::internal(format!("malformed member row {row:?}"))),
    }
}

/// Whether `role` grants every action of `permissions`.
pub fn check_role(role: Role, permissions: Permissions) -> Result<()> {
    for (resource, actions) in permissions {
        for action in *actions {
            // A check naming a statement the table does not have is a typo in
            // the function; failing loudly beats denying everyone quietly.
            if !is_known(resource, action) {
                return Err(Error::internal(format!(
                    "permission `{resource}: {action}` is not in the permission table"
                )));
            }
            if !role.allows(resource, action) {
                return Err(Error::forbidden(format!(
                    "the `{}` role does not grant `{resource}: {action}`",
                    role.as_str()
                )));
            }
        }
    }
    Ok(())
}
