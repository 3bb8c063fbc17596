//! What organizations, members and invitations do, on a transaction, with the
//! caller already checked — including the rules that protect owners, which are
//! decided here, inside the same transaction as the write they guard.

use std::time::Duration;

use livebase_runtime::auth::tables::{
    Invitations, Members, Organizations, Users, INVITATIONS, MEMBERS, ORGANIZATIONS, USERS,
};
use livebase_runtime::auth::users::{normalize_email, now_ms, user_by_email, User};
use livebase_runtime::registry::Reader;
use livebase_runtime::scheduler::Scheduler;
use livebase_runtime::store::Order;
use livebase_runtime::transaction::Transaction;
use livebase_runtime::{Error, Result};
use livebase_schema::typed::{Id, Table, Type};
use livebase_schema::{obj, DocumentId, Timestamp, Value};

use crate::emails;
use crate::shared::auth::permissions::Role;
use crate::shared::auth::validations::Membership;
use crate::shared::LIST_LIMIT;

/// How long an invitation can be accepted.
pub const INVITATION_LIFETIME_MS: f64 = 7.0 * 24.0 * 60.0 * 60.0 * 1000.0;
/// Longest organization name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest slug, in bytes.
pub const MAX_SLUG_LEN: usize = 48;
/// Most rows one mutation of an organization's removal deletes; a full batch
/// schedules the next (a mutation may write at most 8,192 documents).
pub const REMOVE_BATCH: usize = 1_000;
/// The internal mutation that deletes the next batch of a removed
/// organization's rows.
pub const PURGE_REMOVED: &str = "organizations:purgeRemoved";

/// Most invitations one organization may send in [`INVITATION_WINDOW_MS`].
pub const MAX_INVITATIONS_PER_ORGANIZATION: usize = 100;
/// Most invitations one organization may send one address in
/// [`INVITATION_WINDOW_MS`]: invitations are mail, and invite/cancel churn
/// must not fill anyone's inbox. Counted per organization, so that what one
/// organization does never makes an address un-invitable for another.
pub const MAX_INVITATIONS_PER_ADDRESS: usize = 5;
/// The sliding window of both invitation limits.
pub const INVITATION_WINDOW_MS: f64 = 60.0 * 60.0 * 1000.0;

/// Invitation states as stored; `expired` is derived on read.
pub const PENDING: &str = "pending";
pub const ACCEPTED: &str = "accepted";
pub const CANCELED: &str = "canceled";
pub const EXPIRED: &str = "expired";

fn str_field<'v>(doc: &'v Value, name: &str) -> &'v str {
    doc.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn id_field(doc: &Value, name: &str, table: &str) -> Result<DocumentId> {
    DocumentId::parse_in(str_field(doc, name), table)
        .ok_or_else(|| Error::internal(format!("malformed `{name}` in {doc:?}")))
}

/// Field `name` of `doc`, an id of `T`'s table.
fn typed_id<T: Table>(doc: &Value, name: &str) -> Result<Id<T>> {
    Id::parse(str_field(doc, name))
        .ok_or_else(|| Error::internal(format!("malformed `{name}` in {doc:?}")))
}

/// One organization of `organizations:listMine`.
#[derive(Type, Clone, Debug, PartialEq)]
pub struct MyOrganization {
    #[livebase(rename = "_id")]
    pub id: Id<Organizations>,
    pub name: String,
    pub slug: String,
    /// The caller's role in it.
    pub role: Role,
}

/// One member of `organizations:members`.
#[derive(Type, Clone, Debug, PartialEq)]
pub struct MemberView {
    pub user_id: Id<Users>,
    pub name: String,
    pub email: String,
    pub role: Role,
}

/// An invitation's status as `organizations:invitations` reports it.
#[derive(Type, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Canceled,
    /// Pending, but past its `expiresAt`.
    Expired,
}

/// One invitation of `organizations:invitations`.
#[derive(Type, Clone, Debug, PartialEq)]
pub struct InvitationView {
    #[livebase(rename = "_id")]
    pub id: Id<Invitations>,
    pub email: String,
    pub role: Role,
    pub status: InvitationStatus,
}

/// What anyone may see of an organization (`GET /public/organizations/{slug}`).
#[derive(Type, Clone, Debug, PartialEq)]
pub struct PublicProfile {
    pub name: String,
    /// How many members it has.
    pub members: f64,
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(format!(
            "args.name: an organization name needs 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_string())
}

/// A slug is lowercase letters, digits and inner hyphens: it goes in URLs.
fn check_slug(slug: &str) -> Result<()> {
    let ok = !slug.is_empty()
        && slug.len() <= MAX_SLUG_LEN
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "args.slug: `{slug}` must be 1 to {MAX_SLUG_LEN} lowercase letters, digits or inner hyphens"
        )))
    }
}

/// Creates an organization with `user` as its owner.
pub fn create_organization(
    db: &mut Transaction,
    user: &User,
    name: &str,
    slug: &str,
) -> Result<Id<Organizations>> {
    let name = check_name(name)?;
    check_slug(slug)?;
    let taken = db
        .query(ORGANIZATIONS)
        .with_index("by_slug", |q| q.eq("slug", slug))
        .first()?;
    if taken.is_some() {
        return Err(Error::conflict(format!("the slug `{slug}` is taken")));
    }
    let id = db.insert(
        ORGANIZATIONS,
        obj! { "name" => name, "slug" => slug, "createdBy" => user.id.as_str() },
    )?;
    add_member(db, &id, &user.id, Role::Owner)?;
    Id::new(id).ok_or_else(|| Error::internal("an organization's id is of another table"))
}

fn add_member(
    db: &mut Transaction,
    organization: &DocumentId,
    user: &DocumentId,
    role: Role,
) -> Result<DocumentId> {
    db.insert(
        MEMBERS,
        obj! {
            "organizationId" => organization.as_str(),
            "userId" => user.as_str(),
            "role" => role.as_str(),
        },
    )
}

/// Renames the organization.
pub fn update_organization(db: &mut Transaction, organization_id: &str, name: &str) -> Result<()> {
    let id = organization_doc_id(organization_id)?;
    db.patch(&id, obj! { "name" => check_name(name)? })
}

/// Deletes the organization and every row that belongs to it: the rows of
/// each table with a `by_organization` index — the application's tables
/// (every one has it, invariant 9 of `docs/reference/invariants.md`), members and invitations.
///
/// The organization's document goes first, in this mutation: every
/// membership check reads it, so the organization is gone for every reader
/// at once. Its rows follow [`REMOVE_BATCH`] per mutation (see
/// [`purge_removed`]), however many members created.
pub fn delete_organization(db: &mut Transaction, organization_id: &str) -> Result<()> {
    let id = organization_doc_id(organization_id)?;
    db.delete(&id)?;
    purge_removed(db, organization_id)
}

/// Deletes up to [`REMOVE_BATCH`] rows of a removed organization; when the
/// batch is full, schedules [`PURGE_REMOVED`] for the next. Refuses an
/// organization that still exists.
pub fn purge_removed(db: &mut Transaction, organization_id: &str) -> Result<()> {
    if db.get(&organization_doc_id(organization_id)?)?.is_some() {
        return Err(Error::conflict(
            "the organization exists; only a removed one's rows are purged",
        ));
    }
    let tables: Vec<String> = db
        .schema()
        .tables()
        .filter(|(_, def)| def.get_index("by_organization").is_some())
        .map(|(name, _)| name.to_string())
        .collect();
    let mut left = REMOVE_BATCH;
    for table in tables {
        let rows = db
            .query(&table)
            .with_index("by_organization", |q| {
                q.eq("organizationId", organization_id)
            })
            .take(left)?;
        left -= rows.len();
        for row in rows {
            db.delete(&id_field(&row, "_id", &table)?)?;
        }
        if left == 0 {
            let next = obj! { "organizationId" => organization_id };
            Scheduler::new(db).run_after(Duration::ZERO, PURGE_REMOVED, next)?;
            break;
        }
    }
    Ok(())
}

fn organization_doc_id(organization_id: &str) -> Result<DocumentId> {
    // The caller is a member, so the id names an organization.
    DocumentId::parse_in(organization_id, ORGANIZATIONS)
        .ok_or_else(|| Error::not_found("organization not found"))
}

/// `[{_id, name, slug, role}]` of the organizations `user` belongs to, in the
/// order they joined.
pub fn list_mine(db: &mut Reader, user: &User) -> Result<Vec<MyOrganization>> {
    let memberships = db
        .query(MEMBERS)
        .with_index("by_user", |q| q.eq("userId", user.id.as_str()))
        .collect()?;
    let mut out = Vec::with_capacity(memberships.len());
    for m in memberships {
        let org_id = id_field(&m, "organizationId", ORGANIZATIONS)?;
        if let Some(org) = db.get(&org_id)? {
            out.push(MyOrganization {
                id: typed_id(&m, "organizationId")?,
                name: str_field(&org, "name").to_string(),
                slug: str_field(&org, "slug").to_string(),
                role: role_of(&m)?,
            });
        }
    }
    Ok(out)
}

/// `[{userId, name, email, role}]` of the organization's members, in the
/// order they joined: the first [`LIST_LIMIT`].
pub fn list_members(db: &mut Reader, organization_id: &str) -> Result<Vec<MemberView>> {
    let members = db
        .query(MEMBERS)
        .with_index("by_organization", |q| {
            q.eq("organizationId", organization_id)
        })
        .take(LIST_LIMIT)?;
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let user_id = id_field(&m, "userId", USERS)?;
        if let Some(user) = db.get(&user_id)? {
            out.push(MemberView {
                user_id: typed_id(&m, "userId")?,
                name: str_field(&user, "name").to_string(),
                email: str_field(&user, "email").to_string(),
                role: role_of(&m)?,
            });
        }
    }
    Ok(out)
}

fn members_of(db: &mut Transaction, organization_id: &str) -> Result<Vec<Value>> {
    db.query(MEMBERS)
        .with_index("by_organization", |q| {
            q.eq("organizationId", organization_id)
        })
        .collect()
}

/// The `members` row of `user_id` in the organization.
fn member_row(db: &mut Transaction, organization_id: &str, user_id: &str) -> Result<Option<Value>> {
    db.query(MEMBERS)
        .with_index("by_organization_user", |q| {
            q.eq("organizationId", organization_id)
                .eq("userId", user_id)
        })
        .first()
}

fn role_of(member: &Value) -> Result<Role> {
    Role::parse(str_field(member, "role"))
        .ok_or_else(|| Error::internal(format!("malformed role in {member:?}")))
}

/// Invites `email` with `role` and schedules the `invitation` email in the same
/// transaction. Only an owner may invite an owner.
pub fn invite(
    db: &mut Transaction,
    actor: &Membership,
    email: &str,
    role: Role,
) -> Result<Id<Invitations>> {
    let email = normalize_email(email)
        .map_err(|e| Error::invalid(format!("args.email: {}", e.client_message())))?;
    if role == Role::Owner && actor.role != Role::Owner {
        return Err(Error::forbidden("only an owner may invite an owner"));
    }
    let org_id = organization_doc_id(&actor.organization_id)?;
    if let Some(user) = user_by_email(db, &email)? {
        if member_row(db, &actor.organization_id, user.id.as_str())?.is_some() {
            return Err(Error::conflict(format!("{email} is already a member")));
        }
    }
    let now = now_of(db.commit_ts());
    let org = org_id.as_str();
    let by_org = db
        .query(INVITATIONS)
        .with_index("by_organization", |q| q.eq("organizationId", org))
        .order(Order::Desc)
        .take(MAX_INVITATIONS_PER_ORGANIZATION)?;
    check_invitation_rate(
        &by_org,
        MAX_INVITATIONS_PER_ORGANIZATION,
        now,
        "this organization",
    )?;
    let to_address = db
        .query(INVITATIONS)
        .with_index("by_organization_email", |q| {
            q.eq("organizationId", org).eq("email", email.as_str())
        })
        .order(Order::Desc)
        .take(MAX_INVITATIONS_PER_ADDRESS)?;
    check_invitation_rate(&to_address, MAX_INVITATIONS_PER_ADDRESS, now, &email)?;
    // Only this organization's invitations to the address are read, so what
    // other organizations sent never makes it un-invitable here. A new one is
    // made only while none is pending, so a pending one is the newest.
    let open = to_address
        .first()
        .is_some_and(|i| status_of(i, now) == PENDING);
    if open {
        return Err(Error::conflict(format!(
            "{email} already has a pending invitation"
        )));
    }
    let id = db.insert(
        INVITATIONS,
        obj! {
            "organizationId" => org_id.as_str(),
            "email" => email.as_str(),
            "role" => role.as_str(),
            "status" => PENDING,
            "invitedBy" => actor.user.id.as_str(),
            "expiresAt" => now + INVITATION_LIFETIME_MS,
        },
    )?;
    let organization = db.get(&org_id)?.unwrap_or(Value::Null);
    let mail = obj! {
        "to" => email.as_str(),
        "template" => "invitation",
        "data" => obj! {
            "invitationId" => id.as_str(),
            "organizationName" => str_field(&organization, "name"),
            "inviterName" => actor.user.name.as_str(),
            "role" => role.as_str(),
        },
    };
    // The seed's `ctx.scheduler.runAfter(0, internal.emails.send, ..)`.
    Scheduler::new(db).run_after(Duration::ZERO, emails::SEND, mail)?;
    Id::new(id).ok_or_else(|| Error::internal("an invitation's id is of another table"))
}

/// `LIMIT_EXCEEDED` if `recent` — the newest `max` invitations of one kind,
/// newest first (ids grow with time) — were all sent within the window. The
/// check reads at most `max` rows however many were ever sent, and needs no
/// state beside the table.
fn check_invitation_rate(recent: &[Value], max: usize, now: f64, who: &str) -> Result<()> {
    let oldest = recent
        .last()
        .and_then(|i| i.get("_creationTime"))
        .and_then(Value::as_f64);
    match oldest {
        Some(sent) if recent.len() >= max && now - sent < INVITATION_WINDOW_MS => {
            let minutes = ((sent + INVITATION_WINDOW_MS - now) / 60_000.0)
                .ceil()
                .max(1.0);
            Err(Error::limit(format!(
                "{who} had {max} invitations in the last hour; try again in {minutes} minutes"
            )))
        }
        _ => Ok(()),
    }
}

/// The transaction's time in ms: its commit time in a mutation (so every
/// check in it agrees), the wall clock in a query.
fn now_of(commit_ts: Option<Timestamp>) -> f64 {
    commit_ts.map_or_else(now_ms, |ts| ts.as_millis_f64())
}

/// An invitation's status, with a pending one past `expiresAt` reported as
/// `expired`.
fn status_of(invitation: &Value, now: f64) -> &str {
    let status = str_field(invitation, "status");
    let expires_at = invitation
        .get("expiresAt")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if status == PENDING && expires_at <= now {
        EXPIRED
    } else {
        status
    }
}

/// `[{_id, email, role, status}]` of the organization's invitations, oldest
/// first: the first [`LIST_LIMIT`].
pub fn list_invitations(db: &mut Reader, organization_id: &str) -> Result<Vec<InvitationView>> {
    let now = now_of(db.commit_ts());
    let rows = db
        .query(INVITATIONS)
        .with_index("by_organization", |q| {
            q.eq("organizationId", organization_id)
        })
        .take(LIST_LIMIT)?;
    rows.iter()
        .map(|i| {
            let status = match status_of(i, now) {
                PENDING => InvitationStatus::Pending,
                ACCEPTED => InvitationStatus::Accepted,
                CANCELED => InvitationStatus::Canceled,
                EXPIRED => InvitationStatus::Expired,
                other => {
                    return Err(Error::internal(format!(
                        "unknown invitation status `{other}`"
                    )))
                }
            };
            Ok(InvitationView {
                id: typed_id(i, "_id")?,
                email: str_field(i, "email").to_string(),
                role: role_of(i)?,
                status,
            })
        })
        .collect()
}

/// Accepts an invitation for `user`, who must be the invited email's user
/// and have verified it — otherwise anyone who read the invitation list could
/// sign up with the invited address and take the role. Returns the new member
/// id. Anything but a pending invitation is a `CONFLICT`, so a second accept —
/// concurrent or not, since mutations are serial — creates no second
/// membership.
pub fn accept_invitation(
    db: &mut Transaction,
    user: &User,
    id: &Id<Invitations>,
) -> Result<Id<Members>> {
    let invitation = db
        .get(id)?
        .ok_or_else(|| Error::not_found(format!("invitation {id} does not exist")))?;
    if !user.email_verified {
        return Err(Error::forbidden(format!(
            "verify your email address before accepting an invitation: follow the link \
             mailed to {} (POST /api/auth/send-verification-email sends a new one)",
            user.email
        )));
    }
    if str_field(&invitation, "email") != user.email {
        return Err(Error::forbidden(
            "this invitation is for another email address",
        ));
    }
    match status_of(&invitation, now_of(db.commit_ts())) {
        PENDING => {}
        status => {
            return Err(Error::conflict(format!("this invitation is {status}")));
        }
    }
    let org_id = id_field(&invitation, "organizationId", ORGANIZATIONS)?;
    if member_row(db, org_id.as_str(), user.id.as_str())?.is_some() {
        return Err(Error::conflict(
            "you are already a member of this organization",
        ));
    }
    let role = role_of(&invitation)?;
    let member = add_member(db, &org_id, &user.id, role)?;
    db.patch(id, obj! { "status" => ACCEPTED })?;
    Id::new(member).ok_or_else(|| Error::internal("a member's id is of another table"))
}

/// Cancels a pending invitation.
pub fn cancel_invitation(db: &mut Transaction, id: &DocumentId) -> Result<()> {
    let invitation = db
        .get(id)?
        .ok_or_else(|| Error::not_found(format!("invitations {id} does not exist")))?;
    match status_of(&invitation, now_of(db.commit_ts())) {
        PENDING => db.patch(id, obj! { "status" => CANCELED }),
        status => Err(Error::conflict(format!("this invitation is {status}"))),
    }
}

/// The organization's owners.
fn owner_count(db: &mut Transaction, organization_id: &str) -> Result<usize> {
    Ok(members_of(db, organization_id)?
        .iter()
        .filter(|m| str_field(m, "role") == Role::Owner.as_str())
        .count())
}

/// The target's current role, after the owner rules allow `actor` to touch
/// it: only an owner may change or remove an owner.
fn target_role(db: &mut Transaction, actor: &Membership, user_id: &str) -> Result<(Value, Role)> {
    let target = member_row(db, &actor.organization_id, user_id)?.ok_or_else(|| {
        Error::not_found(format!("{user_id} is not a member of this organization"))
    })?;
    let role = role_of(&target)?;
    if role == Role::Owner && actor.role != Role::Owner {
        return Err(Error::forbidden(
            "only an owner may change or remove an owner",
        ));
    }
    Ok((target, role))
}

/// Gives a member a new role. Only an owner may grant the owner role or
/// change an owner's; demoting the last owner is a `CONFLICT`.
pub fn set_role(db: &mut Transaction, actor: &Membership, user_id: &str, role: Role) -> Result<()> {
    let (target, current) = target_role(db, actor, user_id)?;
    if role == Role::Owner && actor.role != Role::Owner {
        return Err(Error::forbidden("only an owner may grant the owner role"));
    }
    if current == Role::Owner
        && role != Role::Owner
        && owner_count(db, &actor.organization_id)? <= 1
    {
        return Err(Error::conflict(
            "an organization must keep at least one owner",
        ));
    }
    let id = id_field(&target, "_id", MEMBERS)?;
    db.patch(&id, obj! { "role" => role.as_str() })
}

/// Removes a member. Only an owner may remove an owner; removing the last
/// owner is a `CONFLICT`.
pub fn remove_member(db: &mut Transaction, actor: &Membership, user_id: &str) -> Result<()> {
    let (target, current) = target_role(db, actor, user_id)?;
    if current == Role::Owner && owner_count(db, &actor.organization_id)? <= 1 {
        return Err(Error::conflict(
            "an organization must keep at least one owner",
        ));
    }
    db.delete(&id_field(&target, "_id", MEMBERS)?)
}

/// The organization with `slug`, if it exists (a removed one does not: its
/// document goes at once).
pub fn by_slug(db: &mut Reader, slug: &str) -> Result<Option<Value>> {
    db.query(ORGANIZATIONS)
        .with_index("by_slug", |q| q.eq("slug", slug))
        .first()
}

/// `{name, members}` of the organization with `slug` — all anyone may see
/// of it without signing in (`GET /public/organizations/{slug}`) — or
/// `None`. Counting reads every member row, within a transaction's read
/// limit.
pub fn public_profile(db: &mut Reader, slug: &str) -> Result<Option<PublicProfile>> {
    let Some(organization) = by_slug(db, slug)? else {
        return Ok(None);
    };
    let id = organization
        .get("_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let members = db
        .query(MEMBERS)
        .with_index("by_organization", |q| q.eq("organizationId", id))
        .collect()?
        .len();
    Ok(Some(PublicProfile {
        name: str_field(&organization, "name").to_string(),
        members: members as f64,
    }))
}

/// The organization's first owner: the earliest of its members (in the
/// order they joined) who holds the owner role. Every organization keeps
/// one, so `None` means the organization is gone.
pub fn first_owner(db: &mut Reader, organization_id: &str) -> Result<Option<DocumentId>> {
    let owner = Role::Owner.as_str();
    let member = db
        .query(MEMBERS)
        .with_index("by_organization", |q| {
            q.eq("organizationId", organization_id)
        })
        .filter(move |m| m.get("role").and_then(Value::as_str) == Some(owner))
        .first()?;
    member.map(|m| id_field(&m, "userId", USERS)).transpose()
}
