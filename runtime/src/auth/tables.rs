//! The runtime's auth tables — users, sessions, organizations, members and
//! invitations, and the one-time tokens mailed for verification and password
//! reset — which live beside the application's tables in the same store.
//!
//! They are marked as system tables (the runtime owns their shape) but keep
//! plain names, so that an application's schema can say `v::id("users")` and
//! its functions can read members and invitations like any other table.

use livebase_schema::typed::Table;
use livebase_schema::{define_table, v, Schema};

/// Users: one row per email address (stored in the canonical form of
/// [`super::users::normalize_email`]), with the argon2id PHC string of their
/// password and whether they proved they own the address (`emailVerified`,
/// absent in rows written before it existed, which reads as `false`).
pub const USERS: &str = "users";
/// Sessions: one row per sign-in. A token is valid only while its session row
/// exists; sign-out deletes the row, which is also the write that re-runs every
/// live query authenticated with it.
pub const SESSIONS: &str = "sessions";
/// Organizations, each with a unique slug.
pub const ORGANIZATIONS: &str = "organizations";
/// Memberships: a user's role in an organization.
pub const MEMBERS: &str = "members";
/// Invitations to join an organization, addressed to an email.
pub const INVITATIONS: &str = "invitations";
/// The one-time tokens of mailed links (see [`super::mail_tokens`]): only the
/// sha256 of a token is stored, with its purpose, its user and its expiry. A
/// runtime-internal table (leading `_`): no application refers to it.
pub const AUTH_TOKENS: &str = "_auth_tokens";

/// The auth tables as types, for typed ids (`Id<Users>`, `Id<Invitations>`):
/// the runtime owns their rows, so they name a table and declare no document
/// type.
macro_rules! table_types {
    ($($name:ident = $table:expr;)*) => {$(
        #[doc = concat!("The `", stringify!($name), "` table, as a type: `Id<", stringify!($name), ">` is an id of it.")]
        pub enum $name {}
        impl Table for $name {
            const NAME: &'static str = $table;
        }
    )*};
}

table_types! {
    Users = USERS;
    Organizations = ORGANIZATIONS;
    Members = MEMBERS;
    Invitations = INVITATIONS;
}

/// Longest email address accepted (RFC 5321's limit on a forward path), in
/// bytes of its canonical form.
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest display name accepted at sign-up, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest organization slug, in characters (the application may allow fewer).
pub const MAX_SLUG_CHARS: usize = 64;
/// Longest role or invitation status name, in characters.
pub const MAX_ROLE_CHARS: usize = 64;
/// Longest password hash, in characters: an argon2id PHC string is about 100,
/// imported ones may carry longer parameters.
pub const MAX_PASSWORD_HASH_CHARS: usize = 1024;

/// Adds the auth tables to a schema.
pub fn with_auth_tables(schema: Schema) -> Schema {
    schema
        .system_table(
            USERS,
            define_table([
                ("email", v::string().max_len(MAX_EMAIL_LEN)),
                ("name", v::string().max_len(MAX_NAME_CHARS)),
                ("passwordHash", v::string().max_len(MAX_PASSWORD_HASH_CHARS)),
                ("emailVerified", v::optional(v::boolean())),
            ])
            .index("by_email", ["email"]),
        )
        .system_table(
            SESSIONS,
            define_table([
                ("userId", v::id(USERS)),
                // Milliseconds since the epoch, the token's `exp` times 1000.
                ("expiresAt", v::float64()),
            ])
            .index("by_user", ["userId"]),
        )
        .system_table(
            ORGANIZATIONS,
            define_table([
                ("name", v::string().max_len(MAX_NAME_CHARS)),
                ("slug", v::string().max_len(MAX_SLUG_CHARS)),
                ("createdBy", v::id(USERS)),
            ])
            .index("by_slug", ["slug"]),
        )
        .system_table(
            MEMBERS,
            define_table([
                ("organizationId", v::id(ORGANIZATIONS)),
                ("userId", v::id(USERS)),
                // The role names belong to the application's permission table;
                // the runtime stores them without interpreting them.
                ("role", v::string().max_len(MAX_ROLE_CHARS)),
            ])
            .index("by_organization", ["organizationId"])
            .index("by_user", ["userId"])
            .index("by_organization_user", ["organizationId", "userId"]),
        )
        .system_table(
            INVITATIONS,
            define_table([
                ("organizationId", v::id(ORGANIZATIONS)),
                ("email", v::string().max_len(MAX_EMAIL_LEN)),
                ("role", v::string().max_len(MAX_ROLE_CHARS)),
                // `pending`, `accepted` or `canceled`; `expired` is not stored
                // but derived from `expiresAt` when listed.
                ("status", v::string().max_len(MAX_ROLE_CHARS)),
                ("invitedBy", v::id(USERS)),
                ("expiresAt", v::float64()),
            ])
            .index("by_organization", ["organizationId"])
            .index("by_email", ["email"])
            // What `organizations:invite` reads: only this organization's
            // invitations to the address, however many others have sent.
            .index("by_organization_email", ["organizationId", "email"]),
        )
        .system_table(
            AUTH_TOKENS,
            define_table([
                ("userId", v::id(USERS)),
                // `verify-email` or `reset-password`.
                ("purpose", v::string().max_len(MAX_ROLE_CHARS)),
                // Lowercase hex sha256 of the token the mail carries.
                ("tokenHash", v::string().max_len(64)),
                // Milliseconds since the epoch.
                ("expiresAt", v::float64()),
                // Where `verify-email` redirects once the link is followed.
                ("callbackURL", v::optional(v::string().max_len(2048))),
            ])
            .index("by_hash", ["tokenHash"])
            .index("by_user", ["userId"]),
        )
}
