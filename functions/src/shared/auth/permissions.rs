//! Who may do what: `docs/reference/app.md`'s role → statements table, as data. A statement
//! names a resource and the actions a role may take on it; reading is not a
//! statement, because every member may read their organization.
//!
//! To give a new feature permissions, add its resource to each role below.

use livebase_schema::typed::Type;
use livebase_schema::Validator;

/// A resource and the actions allowed on it, e.g. `("item", &["create"])`.
pub type Statement = (&'static str, &'static [&'static str]);

/// A member's role in an organization: on the wire and in `members.role`,
/// `"owner" | "admin" | "member"`.
#[derive(Type, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Owner,
    Admin,
    Member,
}

/// Owners may do everything, including deleting the organization and managing
/// other owners.
pub const OWNER: &[Statement] = &[
    ("organization", &["update", "delete"]),
    ("member", &["update", "delete"]),
    ("invitation", &["create", "cancel"]),
    ("item", &["create", "update", "delete"]),
    ("todo", &["create", "update", "delete"]),
];

/// Admins run the organization day to day but cannot delete it.
pub const ADMIN: &[Statement] = &[
    ("organization", &["update"]),
    ("member", &["update", "delete"]),
    ("invitation", &["create", "cancel"]),
    ("item", &["create", "update", "delete"]),
    ("todo", &["create", "update", "delete"]),
];

/// Members add items and todos and tick todos off.
pub const MEMBER: &[Statement] = &[("item", &["create"]), ("todo", &["create", "update"])];

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Admin, Role::Member];

    /// The name stored in `members.role` and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// What this role may do.
    pub fn statements(self) -> &'static [Statement] {
        match self {
            Role::Owner => OWNER,
            Role::Admin => ADMIN,
            Role::Member => MEMBER,
        }
    }

    /// Whether this role may take `action` on `resource`.
    pub fn allows(self, resource: &str, action: &str) -> bool {
        self.statements()
            .iter()
            .any(|(r, actions)| *r == resource && actions.contains(&action))
    }
}

/// `"owner" | "admin" | "member"`, for function arguments: [`Role`]'s
/// validator.
pub fn role_validator() -> Validator {
    Role::validator()
}

/// Whether `resource: action` appears anywhere in the table — checks name
/// only statements that exist, so a typo cannot silently deny everyone.
pub fn is_known(resource: &str, action: &str) -> bool {
    Role::ALL.into_iter().any(|r| r.allows(resource, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/reference/app.md`'s table, cell by cell: `(role, resource, allowed actions)`.
    const APP_MD: &[(Role, &str, &[&str])] = &[
        (Role::Owner, "organization", &["update", "delete"]),
        (Role::Owner, "member", &["update", "delete"]),
        (Role::Owner, "invitation", &["create", "cancel"]),
        (Role::Owner, "item", &["create", "update", "delete"]),
        (Role::Owner, "todo", &["create", "update", "delete"]),
        (Role::Admin, "organization", &["update"]),
        (Role::Admin, "member", &["update", "delete"]),
        (Role::Admin, "invitation", &["create", "cancel"]),
        (Role::Admin, "item", &["create", "update", "delete"]),
        (Role::Admin, "todo", &["create", "update", "delete"]),
        (Role::Member, "organization", &[]),
        (Role::Member, "member", &[]),
        (Role::Member, "invitation", &[]),
        (Role::Member, "item", &["create"]),
        (Role::Member, "todo", &["create", "update"]),
    ];

    const ACTIONS: &[(&str, &[&str])] = &[
        ("organization", &["update", "delete"]),
        ("member", &["update", "delete"]),
        ("invitation", &["create", "cancel"]),
        ("item", &["create", "update", "delete"]),
        ("todo", &["create", "update", "delete"]),
    ];

    #[test]
    fn the_table_is_app_md_cell_by_cell() {
        for (role, resource, allowed) in APP_MD {
            let (_, actions) = ACTIONS
                .iter()
                .find(|(r, _)| r == resource)
                .expect("resource");
            for action in *actions {
                assert_eq!(
                    role.allows(resource, action),
                    allowed.contains(action),
                    "{} {resource}:{action}",
                    role.as_str()
                );
            }
        }
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("Owner"), None);
        assert!(is_known("item", "delete") && !is_known("item", "read"));
    }
}
