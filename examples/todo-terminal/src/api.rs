//! Generated typed references to every public function of the livebase
//! application, for a client on `livebase_sdk`.
//!
//! THIS CODE IS AUTOMATICALLY GENERATED.
//!
//! To regenerate, run `livebase codegen --rust <this file>`.

#![allow(dead_code, unused_imports, clippy::all)]

use livebase_schema::typed::{Doc, Id, Table, Type};
use livebase_sdk::{
    action, mutation, query, ActionRef, MutationRef, Object, Paginated, QueryRef, Value,
};

/// A document of `items`.
#[derive(Type, Clone, Debug, PartialEq)]
#[livebase(table = "items")]
pub struct Items {
    #[livebase(rename = "createdBy")]
    pub created_by: String,
    #[livebase(rename = "name", max_len = 200)]
    pub name: String,
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
    #[livebase(rename = "status", max_len = 64)]
    pub status: String,
}
livebase_sdk::typed_value!(Items);

/// A document of `todos`.
#[derive(Type, Clone, Debug, PartialEq)]
#[livebase(table = "todos")]
pub struct Todos {
    #[livebase(rename = "completed")]
    pub completed: bool,
    #[livebase(rename = "createdBy")]
    pub created_by: String,
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
    #[livebase(rename = "text", max_len = 1000)]
    pub text: String,
}
livebase_sdk::typed_value!(Todos);

/// A document of `userProfiles`.
#[derive(Type, Clone, Debug, PartialEq)]
#[livebase(table = "userProfiles")]
pub struct UserProfiles {
    #[livebase(rename = "avatarId")]
    pub avatar_id: Option<Id<Storage>>,
    #[livebase(rename = "bio", max_len = 2000)]
    pub bio: Option<String>,
    #[livebase(rename = "displayName", max_len = 100)]
    pub display_name: String,
    #[livebase(rename = "userId")]
    pub user_id: Id<Users>,
}
livebase_sdk::typed_value!(UserProfiles);

/// The table `_storage`, named by its ids.
pub enum Storage {}
impl Table for Storage {
    const NAME: &'static str = "_storage";
}

/// The table `invitations`, named by its ids.
pub enum Invitations {}
impl Table for Invitations {
    const NAME: &'static str = "invitations";
}

/// The table `members`, named by its ids.
pub enum Members {}
impl Table for Members {
    const NAME: &'static str = "members";
}

/// The table `organizations`, named by its ids.
pub enum Organizations {}
impl Table for Organizations {
    const NAME: &'static str = "organizations";
}

/// The table `users`, named by its ids.
pub enum Users {}
impl Table for Users {
    const NAME: &'static str = "users";
}

#[derive(Type, Clone, Debug, PartialEq)]
pub struct ItemsCreateArgs {
    #[livebase(rename = "name")]
    pub name: String,
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
    #[livebase(rename = "status")]
    pub status: String,
}
livebase_sdk::typed_value!(ItemsCreateArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct ItemsGetAllArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
}
livebase_sdk::typed_value!(ItemsGetAllArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct ItemsGetByStatusArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
    #[livebase(rename = "status")]
    pub status: String,
}
livebase_sdk::typed_value!(ItemsGetByStatusArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct ItemsListArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
}
livebase_sdk::typed_value!(ItemsListArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct ItemsRemoveArgs {
    #[livebase(rename = "id")]
    pub id: Id<Items>,
}
livebase_sdk::typed_value!(ItemsRemoveArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct ItemsUpdateArgs {
    #[livebase(rename = "id")]
    pub id: Id<Items>,
    #[livebase(rename = "name")]
    pub name: Option<String>,
    #[livebase(rename = "status")]
    pub status: Option<String>,
}
livebase_sdk::typed_value!(ItemsUpdateArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsAcceptInvitationArgs {
    #[livebase(rename = "invitationId")]
    pub invitation_id: Id<Invitations>,
}
livebase_sdk::typed_value!(OrganizationsAcceptInvitationArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsCancelInvitationArgs {
    #[livebase(rename = "invitationId")]
    pub invitation_id: Id<Invitations>,
}
livebase_sdk::typed_value!(OrganizationsCancelInvitationArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsCreateArgs {
    #[livebase(rename = "name")]
    pub name: String,
    #[livebase(rename = "slug")]
    pub slug: String,
}
livebase_sdk::typed_value!(OrganizationsCreateArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsInvitationsArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
}
livebase_sdk::typed_value!(OrganizationsInvitationsArgs);

#[derive(Type, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    #[livebase(rename = "owner")]
    Owner,
    #[livebase(rename = "admin")]
    Admin,
    #[livebase(rename = "member")]
    Member,
}
livebase_sdk::typed_value!(Role);

#[derive(Type, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    #[livebase(rename = "pending")]
    Pending,
    #[livebase(rename = "accepted")]
    Accepted,
    #[livebase(rename = "canceled")]
    Canceled,
    #[livebase(rename = "expired")]
    Expired,
}
livebase_sdk::typed_value!(Status);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsInvitationsItem {
    #[livebase(rename = "_id")]
    pub id: Id<Invitations>,
    #[livebase(rename = "email")]
    pub email: String,
    #[livebase(rename = "role")]
    pub role: Role,
    #[livebase(rename = "status")]
    pub status: Status,
}
livebase_sdk::typed_value!(OrganizationsInvitationsItem);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsInviteArgs {
    #[livebase(rename = "email")]
    pub email: String,
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
    #[livebase(rename = "role")]
    pub role: Role,
}
livebase_sdk::typed_value!(OrganizationsInviteArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsListMineItem {
    #[livebase(rename = "_id")]
    pub id: Id<Organizations>,
    #[livebase(rename = "name")]
    pub name: String,
    #[livebase(rename = "role")]
    pub role: Role,
    #[livebase(rename = "slug")]
    pub slug: String,
}
livebase_sdk::typed_value!(OrganizationsListMineItem);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsMembersArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
}
livebase_sdk::typed_value!(OrganizationsMembersArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsMembersItem {
    #[livebase(rename = "email")]
    pub email: String,
    #[livebase(rename = "name")]
    pub name: String,
    #[livebase(rename = "role")]
    pub role: Role,
    #[livebase(rename = "userId")]
    pub user_id: Id<Users>,
}
livebase_sdk::typed_value!(OrganizationsMembersItem);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsRemoveArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
}
livebase_sdk::typed_value!(OrganizationsRemoveArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsRemoveMemberArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
    #[livebase(rename = "userId")]
    pub user_id: String,
}
livebase_sdk::typed_value!(OrganizationsRemoveMemberArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsSetRoleArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
    #[livebase(rename = "role")]
    pub role: Role,
    #[livebase(rename = "userId")]
    pub user_id: String,
}
livebase_sdk::typed_value!(OrganizationsSetRoleArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct OrganizationsUpdateArgs {
    #[livebase(rename = "name")]
    pub name: String,
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
}
livebase_sdk::typed_value!(OrganizationsUpdateArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct TodosCreateArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
    #[livebase(rename = "text")]
    pub text: String,
}
livebase_sdk::typed_value!(TodosCreateArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct TodosListArgs {
    #[livebase(rename = "organizationId")]
    pub organization_id: String,
}
livebase_sdk::typed_value!(TodosListArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct TodosRemoveArgs {
    #[livebase(rename = "id")]
    pub id: Id<Todos>,
}
livebase_sdk::typed_value!(TodosRemoveArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct TodosToggleArgs {
    #[livebase(rename = "id")]
    pub id: Id<Todos>,
}
livebase_sdk::typed_value!(TodosToggleArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct UserProfilesGetResult {
    #[livebase(rename = "_creationTime")]
    pub creation_time: f64,
    #[livebase(rename = "_id")]
    pub id: Id<UserProfiles>,
    #[livebase(rename = "avatarId")]
    pub avatar_id: Option<Id<Storage>>,
    #[livebase(rename = "avatarUrl")]
    pub avatar_url: Option<String>,
    #[livebase(rename = "bio", max_len = 2000)]
    pub bio: Option<String>,
    #[livebase(rename = "displayName", max_len = 100)]
    pub display_name: String,
    #[livebase(rename = "userId")]
    pub user_id: Id<Users>,
}
livebase_sdk::typed_value!(UserProfilesGetResult);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct UserProfilesSetAvatarArgs {
    #[livebase(rename = "storageId")]
    pub storage_id: Id<Storage>,
}
livebase_sdk::typed_value!(UserProfilesSetAvatarArgs);

#[derive(Type, Clone, Debug, PartialEq)]
pub struct UserProfilesUpsertArgs {
    #[livebase(rename = "bio")]
    pub bio: Option<String>,
    #[livebase(rename = "displayName")]
    pub display_name: String,
}
livebase_sdk::typed_value!(UserProfilesUpsertArgs);

pub mod files {
    use super::*;

    /// `files:generateUploadUrl`.
    pub const GENERATE_UPLOAD_URL: MutationRef<(), String> = mutation("files:generateUploadUrl");
}

pub mod items {
    use super::*;

    /// `items:create`.
    pub const CREATE: MutationRef<ItemsCreateArgs, Id<Items>> = mutation("items:create");

    /// `items:getAll`.
    pub const GET_ALL: QueryRef<ItemsGetAllArgs, Vec<Doc<Items>>> = query("items:getAll");

    /// `items:getByStatus`.
    pub const GET_BY_STATUS: QueryRef<ItemsGetByStatusArgs, Vec<Doc<Items>>> = query("items:getByStatus");

    /// `items:list`.
    ///
    /// A paginated query: drive it with `PaginatedSubscription::of` (its
    /// arguments without `paginationOpts`); each page's items are `Doc<Items>`.
    pub const LIST: QueryRef<ItemsListArgs, Paginated<Doc<Items>>> = query("items:list");

    /// `items:remove`.
    pub const REMOVE: MutationRef<ItemsRemoveArgs, ()> = mutation("items:remove");

    /// `items:update`.
    pub const UPDATE: MutationRef<ItemsUpdateArgs, ()> = mutation("items:update");
}

pub mod organizations {
    use super::*;

    /// `organizations:acceptInvitation`.
    pub const ACCEPT_INVITATION: MutationRef<OrganizationsAcceptInvitationArgs, Id<Members>> = mutation("organizations:acceptInvitation");

    /// `organizations:cancelInvitation`.
    pub const CANCEL_INVITATION: MutationRef<OrganizationsCancelInvitationArgs, ()> = mutation("organizations:cancelInvitation");

    /// `organizations:create`.
    pub const CREATE: MutationRef<OrganizationsCreateArgs, Id<Organizations>> = mutation("organizations:create");

    /// `organizations:invitations`.
    pub const INVITATIONS: QueryRef<OrganizationsInvitationsArgs, Vec<OrganizationsInvitationsItem>> = query("organizations:invitations");

    /// `organizations:invite`.
    pub const INVITE: MutationRef<OrganizationsInviteArgs, Id<Invitations>> = mutation("organizations:invite");

    /// `organizations:listMine`.
    pub const LIST_MINE: QueryRef<(), Vec<OrganizationsListMineItem>> = query("organizations:listMine");

    /// `organizations:members`.
    pub const MEMBERS: QueryRef<OrganizationsMembersArgs, Vec<OrganizationsMembersItem>> = query("organizations:members");

    /// `organizations:remove`.
    pub const REMOVE: MutationRef<OrganizationsRemoveArgs, ()> = mutation("organizations:remove");

    /// `organizations:removeMember`.
    pub const REMOVE_MEMBER: MutationRef<OrganizationsRemoveMemberArgs, ()> = mutation("organizations:removeMember");

    /// `organizations:setRole`.
    pub const SET_ROLE: MutationRef<OrganizationsSetRoleArgs, ()> = mutation("organizations:setRole");

    /// `organizations:update`.
    pub const UPDATE: MutationRef<OrganizationsUpdateArgs, ()> = mutation("organizations:update");
}

pub mod todos {
    use super::*;

    /// `todos:create`.
    pub const CREATE: MutationRef<TodosCreateArgs, Id<Todos>> = mutation("todos:create");

    /// `todos:list`.
    pub const LIST: QueryRef<TodosListArgs, Vec<Doc<Todos>>> = query("todos:list");

    /// `todos:remove`.
    pub const REMOVE: MutationRef<TodosRemoveArgs, ()> = mutation("todos:remove");

    /// `todos:toggle`.
    pub const TOGGLE: MutationRef<TodosToggleArgs, bool> = mutation("todos:toggle");
}

pub mod user_profiles {
    use super::*;

    /// `userProfiles:get`.
    pub const GET: QueryRef<(), Option<UserProfilesGetResult>> = query("userProfiles:get");

    /// `userProfiles:setAvatar`.
    pub const SET_AVATAR: MutationRef<UserProfilesSetAvatarArgs, ()> = mutation("userProfiles:setAvatar");

    /// `userProfiles:upsert`.
    pub const UPSERT: MutationRef<UserProfilesUpsertArgs, Id<UserProfiles>> = mutation("userProfiles:upsert");
}
