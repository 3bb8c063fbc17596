//! Organizations, roles and tenancy end to end, through real calls to the
//! application of `functions/`: every cell of `docs/reference/app.md`'s role table allowed and
//! denied, another organization's documents reported as `NOT_FOUND`, the rules
//! that protect owners, invitations accepted once by their email's user, and
//! role changes reaching a member's live subscriptions.

mod support;

use livebase_testkit::server::code;
use livebase_testkit::{error_code, Outcome, TestServer, User};
use serde_json::{json, Value as Json};

/// The role table of `docs/reference/app.md`: what each role may do. Everything else is denied.
const TABLE: &[(&str, &[&str])] = &[
    (
        "owner",
        &[
            "organization:update",
            "organization:delete",
            "member:update",
            "member:delete",
            "invitation:create",
            "invitation:cancel",
            "item:create",
            "item:update",
            "item:delete",
            "todo:create",
            "todo:update",
            "todo:delete",
        ],
    ),
    (
        "admin",
        &[
            "organization:update",
            "member:update",
            "member:delete",
            "invitation:create",
            "invitation:cancel",
            "item:create",
            "item:update",
            "item:delete",
            "todo:create",
            "todo:update",
            "todo:delete",
        ],
    ),
    ("member", &["item:create", "todo:create", "todo:update"]),
];

/// Every column of the table.
const ACTIONS: &[&str] = &[
    "organization:update",
    "organization:delete",
    "member:update",
    "member:delete",
    "invitation:create",
    "invitation:cancel",
    "item:create",
    "item:update",
    "item:delete",
    "todo:create",
    "todo:update",
    "todo:delete",
];

/// Actions on a document fetched by id: a caller outside its organization is
/// told it does not exist.
const BY_ID: &[&str] = &[
    "invitation:cancel",
    "item:update",
    "item:delete",
    "todo:update",
    "todo:delete",
];

/// An organization with one user in each role, and one user in none.
struct Org {
    id: String,
    owner: User,
    admin: User,
    member: User,
    outsider: User,
}

impl Org {
    fn user(&self, role: &str) -> Option<&User> {
        match role {
            "owner" => Some(&self.owner),
            "admin" => Some(&self.admin),
            "member" => Some(&self.member),
            "outsider" => Some(&self.outsider),
            _ => None,
        }
    }
}

fn ok(outcome: Outcome) -> Json {
    outcome.unwrap_or_else(|f| panic!("expected success, got {f:?}"))
}

fn id(value: &Json) -> String {
    value.as_str().expect("an id").to_string()
}

/// `user` joins `org` with `role` through an invitation from `inviter`.
async fn join(t: &TestServer, org: &str, inviter: &User, user: &User, role: &str) {
    let invitation = ok(t
        .mutation(
            "organizations:invite",
            inviter,
            json!({"organizationId": org, "email": user.email, "role": role}),
        )
        .await);
    ok(t.mutation(
        "organizations:acceptInvitation",
        user,
        json!({"invitationId": invitation}),
    )
    .await);
}

/// A new organization owned by `owner`, with `admin` and `member` joined.
async fn new_org(t: &TestServer, slug: &str, owner: &User, admin: &User, member: &User) -> String {
    let org = id(&ok(t
        .mutation(
            "organizations:create",
            owner,
            json!({"name": slug, "slug": slug}),
        )
        .await));
    join(t, &org, owner, admin, "admin").await;
    join(t, &org, owner, member, "member").await;
    org
}

async fn setup(t: &TestServer) -> Org {
    let owner = t.sign_up("owner@example.com", "Olive Owner").await;
    let admin = t.sign_up_verified("admin@example.com", "Adam Admin").await;
    let member = t.sign_up_verified("member@example.com", "Mia Member").await;
    let outsider = t.sign_up("outsider@example.com", "Otto Outsider").await;
    let id = new_org(t, "acme", &owner, &admin, &member).await;
    Org {
        id,
        owner,
        admin,
        member,
        outsider,
    }
}

/// Performs `action` as `actor` (`None`: signed out) on a target the owner
/// prepared for it, and returns the outcome of the actor's call.
async fn perform(
    t: &TestServer,
    org: &Org,
    action: &str,
    actor: Option<&User>,
    n: usize,
) -> Outcome {
    let owner = &org.owner;
    let token = actor.map(|u| u.token.as_str());
    let mutate = |path: &'static str, args: Json| t.call("mutation", path, token, args);
    let org_id = org.id.as_str();
    match action {
        "organization:update" => {
            mutate(
                "organizations:update",
                json!({"organizationId": org_id, "name": format!("Acme {n}")}),
            )
            .await
        }
        "organization:delete" => {
            // A fresh organization with the same people, so the shared one stays.
            let fresh = new_org(t, &format!("doomed-{n}"), owner, &org.admin, &org.member).await;
            mutate("organizations:remove", json!({"organizationId": fresh})).await
        }
        "member:update" | "member:delete" => {
            let spare = t
                .sign_up_verified(&format!("spare{n}@example.com"), &format!("Spare {n}"))
                .await;
            join(t, org_id, owner, &spare, "member").await;
            if action == "member:update" {
                mutate(
                    "organizations:setRole",
                    json!({"organizationId": org_id, "userId": spare.id, "role": "admin"}),
                )
                .await
            } else {
                mutate(
                    "organizations:removeMember",
                    json!({"organizationId": org_id, "userId": spare.id}),
                )
                .await
            }
        }
        "invitation:create" => {
            mutate(
                "organizations:invite",
                json!({"organizationId": org_id, "email": format!("guest{n}@example.com"), "role": "member"}),
            )
            .await
        }
        "invitation:cancel" => {
            let invitation = ok(t
                .mutation(
                    "organizations:invite",
                    owner,
                    json!({"organizationId": org_id, "email": format!("uninvited{n}@example.com"), "role": "member"}),
                )
                .await);
            mutate(
                "organizations:cancelInvitation",
                json!({"invitationId": invitation}),
            )
            .await
        }
        "item:create" => {
            mutate(
                "items:create",
                json!({"name": "widget", "status": "open", "organizationId": org_id}),
            )
            .await
        }
        "item:update" | "item:delete" => {
            let item = ok(t
                .mutation(
                    "items:create",
                    owner,
                    json!({"name": "widget", "status": "open", "organizationId": org_id}),
                )
                .await);
            if action == "item:update" {
                mutate("items:update", json!({"id": item, "status": "done"})).await
            } else {
                mutate("items:remove", json!({"id": item})).await
            }
        }
        "todo:create" => {
            mutate(
                "todos:create",
                json!({"organizationId": org_id, "text": "write tests"}),
            )
            .await
        }
        "todo:update" | "todo:delete" => {
            let todo = ok(t
                .mutation(
                    "todos:create",
                    owner,
                    json!({"organizationId": org_id, "text": "write tests"}),
                )
                .await);
            if action == "todo:update" {
                mutate("todos:toggle", json!({"id": todo})).await
            } else {
                mutate("todos:remove", json!({"id": todo})).await
            }
        }
        other => panic!("no action {other}"),
    }
}

#[tokio::test]
async fn every_cell_of_the_role_table_is_allowed_or_denied_as_app_md_says() {
    let t = support::start().await;
    let org = setup(&t).await;
    let mut n = 0;
    for (role, allowed) in TABLE {
        let actor = org.user(role);
        for action in ACTIONS {
            n += 1;
            let outcome = perform(&t, &org, action, actor, n).await;
            if allowed.contains(action) {
                assert!(outcome.is_ok(), "{role} {action}: {outcome:?}");
            } else {
                assert_eq!(code(&outcome), "FORBIDDEN", "{role} {action}");
            }
        }
    }
    // Outside the organization: its documents do not exist, and everything
    // else is forbidden. Signed out: everything is unauthenticated.
    for action in ACTIONS {
        n += 1;
        let outcome = perform(&t, &org, action, Some(&org.outsider), n).await;
        let expected = if BY_ID.contains(action) {
            "NOT_FOUND"
        } else {
            "FORBIDDEN"
        };
        assert_eq!(code(&outcome), expected, "outsider {action}");
        n += 1;
        let outcome = perform(&t, &org, action, None, n).await;
        assert_eq!(code(&outcome), "UNAUTHENTICATED", "signed out {action}");
    }
}

#[tokio::test]
async fn another_organizations_documents_are_not_found_and_never_listed() {
    let t = support::start().await;
    let org = setup(&t).await;
    let rival = &org.outsider;
    let rival_org = id(&ok(t
        .mutation(
            "organizations:create",
            rival,
            json!({"name": "Rival", "slug": "rival"}),
        )
        .await));
    let item = ok(t
        .mutation(
            "items:create",
            &org.owner,
            json!({"name": "secret", "status": "open", "organizationId": org.id}),
        )
        .await);
    let todo = ok(t
        .mutation(
            "todos:create",
            &org.owner,
            json!({"organizationId": org.id, "text": "secret"}),
        )
        .await);
    let invitation = ok(t
        .mutation(
            "organizations:invite",
            &org.owner,
            json!({"organizationId": org.id, "email": "guest@example.com", "role": "member"}),
        )
        .await);
    ok(t.mutation(
        "items:create",
        rival,
        json!({"name": "mine", "status": "open", "organizationId": rival_org}),
    )
    .await);

    // The rival owns its organization, so it holds every permission there;
    // the other organization's documents still do not exist for it.
    for (path, args) in [
        ("items:update", json!({"id": item, "name": "stolen"})),
        ("items:remove", json!({"id": item})),
        ("todos:toggle", json!({"id": todo})),
        ("todos:remove", json!({"id": todo})),
        (
            "organizations:cancelInvitation",
            json!({"invitationId": invitation}),
        ),
    ] {
        let outcome = t.mutation(path, rival, args).await;
        assert_eq!(code(&outcome), "NOT_FOUND", "{path}");
    }
    for path in [
        "items:getAll",
        "todos:list",
        "organizations:members",
        "organizations:invitations",
    ] {
        let outcome = t
            .query(path, rival, json!({"organizationId": org.id}))
            .await;
        assert_eq!(code(&outcome), "FORBIDDEN", "{path}");
    }
    let outcome = t
        .query(
            "items:getByStatus",
            rival,
            json!({"organizationId": org.id, "status": "open"}),
        )
        .await;
    assert_eq!(code(&outcome), "FORBIDDEN");
    let outcome = t
        .query(
            "items:list",
            rival,
            json!({"organizationId": org.id, "paginationOpts": {"numItems": 10, "cursor": null}}),
        )
        .await;
    assert_eq!(
        code(&outcome),
        "FORBIDDEN",
        "items:list is for members only"
    );

    let mine = ok(t
        .query("items:getAll", rival, json!({"organizationId": rival_org}))
        .await);
    let names: Vec<&str> = mine
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["mine"]);
    let orgs = ok(t.query("organizations:listMine", rival, json!({})).await);
    assert_eq!(orgs.as_array().map(Vec::len), Some(1));
    assert_eq!(orgs[0]["slug"], "rival");
    assert_eq!(orgs[0]["role"], "owner");
    // The documents are untouched.
    let items = ok(t
        .query(
            "items:getAll",
            &org.member,
            json!({"organizationId": org.id}),
        )
        .await);
    assert_eq!(items[0]["name"], "secret");
}

#[tokio::test]
async fn owners_are_protected_and_the_last_owner_stays() {
    let server = support::start().await;
    let t = &server;
    let org = setup(t).await;
    let (owner, admin, member) = (&org.owner, &org.admin, &org.member);
    let set_role = |actor: &User, user: &User, role: &str| {
        let args = json!({"organizationId": org.id, "userId": user.id, "role": role});
        let token = actor.token.clone();
        async move {
            t.call("mutation", "organizations:setRole", Some(&token), args)
                .await
        }
    };
    let remove = |actor: &User, user: &User| {
        let args = json!({"organizationId": org.id, "userId": user.id});
        let token = actor.token.clone();
        async move {
            t.call("mutation", "organizations:removeMember", Some(&token), args)
                .await
        }
    };

    assert_eq!(
        code(&set_role(owner, owner, "admin").await),
        "CONFLICT",
        "last owner demoted"
    );
    assert_eq!(
        code(&remove(owner, owner).await),
        "CONFLICT",
        "last owner removed"
    );
    assert_eq!(
        code(&set_role(admin, owner, "member").await),
        "FORBIDDEN",
        "admin changes an owner"
    );
    assert_eq!(
        code(&remove(admin, owner).await),
        "FORBIDDEN",
        "admin removes an owner"
    );
    assert_eq!(
        code(&set_role(admin, member, "owner").await),
        "FORBIDDEN",
        "admin grants owner"
    );
    let invite_owner = t
        .mutation(
            "organizations:invite",
            admin,
            json!({"organizationId": org.id, "email": "boss@example.com", "role": "owner"}),
        )
        .await;
    assert_eq!(code(&invite_owner), "FORBIDDEN", "admin invites an owner");

    // With a second owner, the first may step down — and then the second is
    // the last one.
    ok(set_role(owner, admin, "owner").await);
    ok(set_role(admin, owner, "member").await);
    assert_eq!(code(&set_role(admin, admin, "admin").await), "CONFLICT");
    assert_eq!(
        code(&set_role(owner, member, "admin").await),
        "FORBIDDEN",
        "now a member"
    );

    let members = ok(t
        .query(
            "organizations:members",
            member,
            json!({"organizationId": org.id}),
        )
        .await);
    let roles: Vec<(&str, &str)> = members
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap_or(""),
                m["role"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("owner@example.com", "member"),
            ("admin@example.com", "owner"),
            ("member@example.com", "member"),
        ]
    );
}

#[tokio::test]
async fn an_invitation_is_accepted_once_and_only_by_its_email() {
    let server = support::start().await;
    let t = &server;
    let org = setup(t).await;
    let owner = &org.owner;
    let invite = |email: &str| {
        let args = json!({"organizationId": org.id, "email": email, "role": "member"});
        async move { t.mutation("organizations:invite", owner, args).await }
    };
    let accept = |user: &User, invitation: &Json| {
        let args = json!({"invitationId": invitation});
        let token = user.token.clone();
        async move {
            t.call(
                "mutation",
                "organizations:acceptInvitation",
                Some(&token),
                args,
            )
            .await
        }
    };

    let invitation = ok(invite("Newbie@Example.com").await);
    let jobs = t.rows_json("_scheduled_functions").await;
    let mail = jobs
        .iter()
        .find(|j| j["args"]["template"] == "invitation" && j["args"]["to"] == "newbie@example.com")
        .expect("the invitation email is scheduled in the same transaction");
    assert_eq!(mail["name"], "emails:send");
    assert_eq!(mail["args"]["data"]["invitationId"], invitation);
    assert_eq!(
        code(&invite("newbie@example.com").await),
        "CONFLICT",
        "already pending"
    );
    assert_eq!(
        code(&invite(&org.member.email).await),
        "CONFLICT",
        "already a member"
    );

    assert_eq!(code(&accept(&org.outsider, &invitation).await), "FORBIDDEN");
    let newbie = t.sign_up_verified("newbie@example.com", "Nia Newbie").await;
    let member_id = ok(accept(&newbie, &invitation).await);
    assert!(member_id
        .as_str()
        .is_some_and(|m| m.starts_with("members_")));
    assert_eq!(
        code(&accept(&newbie, &invitation).await),
        "CONFLICT",
        "accepted twice"
    );

    // Two accepts at once: the writer runs them one after the other, and the
    // second finds the invitation accepted.
    let racer = t.sign_up_verified("racer@example.com", "Rae Racer").await;
    let race = ok(invite("racer@example.com").await);
    let (a, b) = tokio::join!(accept(&racer, &race), accept(&racer, &race));
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "exactly one accept wins: {a:?} {b:?}"
    );
    let members = ok(t
        .query(
            "organizations:members",
            owner,
            json!({"organizationId": org.id}),
        )
        .await);
    let racers = members
        .as_array()
        .expect("a list")
        .iter()
        .filter(|m| m["email"] == "racer@example.com")
        .count();
    assert_eq!(racers, 1);

    let late = ok(invite("late@example.com").await);
    ok(t.mutation(
        "organizations:cancelInvitation",
        owner,
        json!({"invitationId": late}),
    )
    .await);
    let latecomer = t.sign_up_verified("late@example.com", "Lee Late").await;
    assert_eq!(
        code(&accept(&latecomer, &late).await),
        "CONFLICT",
        "canceled"
    );

    let listed = ok(t
        .query(
            "organizations:invitations",
            &org.member,
            json!({"organizationId": org.id}),
        )
        .await);
    let statuses: Vec<(&str, &str)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter(|i| {
            [
                "newbie@example.com",
                "racer@example.com",
                "late@example.com",
            ]
            .contains(&i["email"].as_str().unwrap_or(""))
        })
        .map(|i| {
            (
                i["email"].as_str().unwrap_or(""),
                i["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("newbie@example.com", "accepted"),
            ("racer@example.com", "accepted"),
            ("late@example.com", "canceled"),
        ]
    );
}

#[tokio::test]
async fn a_role_change_and_a_removal_reach_the_members_live_subscriptions() {
    let t = support::start().await;
    let org = setup(&t).await;
    let mut ws = t.client().await;
    ws.authenticate(&org.member.token).await;
    ws.add_query(1, "organizations:listMine", json!({})).await;
    ws.add_query(2, "items:getAll", json!({"organizationId": org.id}))
        .await;
    let mine = ws.next_result(1).await.expect("listMine");
    assert_eq!(mine[0]["role"], "member");
    assert_eq!(ws.next_result(2).await, Ok(json!([])));

    ok(t.mutation(
        "organizations:setRole",
        &org.admin,
        json!({"organizationId": org.id, "userId": org.member.id, "role": "admin"}),
    )
    .await);
    let mine = ws.next_result(1).await.expect("listMine after the change");
    assert_eq!(mine[0]["role"], "admin");
    // The new role's permissions hold at once.
    let item = ok(t
        .mutation(
            "items:create",
            &org.owner,
            json!({"name": "x", "status": "open", "organizationId": org.id}),
        )
        .await);
    ok(t.mutation("items:remove", &org.member, json!({"id": item}))
        .await);

    ok(t.mutation(
        "organizations:removeMember",
        &org.owner,
        json!({"organizationId": org.id, "userId": org.member.id}),
    )
    .await);
    let items = loop {
        // The create and remove above may be pushed first.
        match ws.next_result(2).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(error_code(&items), Some("FORBIDDEN"));
}

#[tokio::test]
async fn the_application_functions_do_what_app_md_says() {
    let t = support::start().await;
    let org = setup(&t).await;
    let (owner, member) = (&org.owner, &org.member);

    let taken = t
        .mutation(
            "organizations:create",
            member,
            json!({"name": "Acme 2", "slug": "acme"}),
        )
        .await;
    assert_eq!(code(&taken), "CONFLICT");
    let bad = t
        .mutation(
            "organizations:create",
            member,
            json!({"name": "Bad", "slug": "Not A Slug"}),
        )
        .await;
    assert_eq!(code(&bad), "INVALID_ARGUMENT");

    for (name, status) in [("a", "open"), ("b", "done"), ("c", "open")] {
        ok(t.mutation(
            "items:create",
            member,
            json!({"name": name, "status": status, "organizationId": org.id}),
        )
        .await);
    }
    let all = ok(t
        .query("items:getAll", member, json!({"organizationId": org.id}))
        .await);
    let names: Vec<&str> = all
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "oldest first");
    assert_eq!(all[0]["createdBy"].as_str(), Some(member.id.as_str()));
    let open = ok(t
        .query(
            "items:getByStatus",
            member,
            json!({"organizationId": org.id, "status": "open"}),
        )
        .await);
    let names: Vec<&str> = open
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "c"]);
    ok(t.mutation(
        "items:update",
        owner,
        json!({"id": all[1]["_id"], "name": "b2"}),
    )
    .await);
    let all = ok(t
        .query("items:getAll", member, json!({"organizationId": org.id}))
        .await);
    assert_eq!(
        (all[1]["name"].as_str(), all[1]["status"].as_str()),
        (Some("b2"), Some("done"))
    );

    let first = ok(t
        .mutation(
            "todos:create",
            member,
            json!({"organizationId": org.id, "text": "first"}),
        )
        .await);
    ok(t.mutation(
        "todos:create",
        member,
        json!({"organizationId": org.id, "text": "second"}),
    )
    .await);
    assert_eq!(
        ok(t.mutation("todos:toggle", member, json!({"id": first}))
            .await),
        json!(true)
    );
    let todos = ok(t
        .query("todos:list", member, json!({"organizationId": org.id}))
        .await);
    let texts: Vec<(&str, bool)> = todos
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| {
            (
                t["text"].as_str().unwrap_or(""),
                t["completed"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(texts, [("second", false), ("first", true)], "newest first");

    assert_eq!(
        ok(t.query("userProfiles:get", member, json!({})).await),
        json!(null)
    );
    let profile = ok(t
        .mutation(
            "userProfiles:upsert",
            member,
            json!({"displayName": "Mia", "bio": "hi"}),
        )
        .await);
    let again = ok(t
        .mutation(
            "userProfiles:upsert",
            member,
            json!({"displayName": "Mia M."}),
        )
        .await);
    assert_eq!(profile, again, "one profile per user");
    let got = ok(t.query("userProfiles:get", member, json!({})).await);
    assert_eq!(got["displayName"], "Mia M.");
    assert_eq!(got["userId"].as_str(), Some(member.id.as_str()));
    assert!(got.get("bio").is_none(), "a bio left out is removed");
    let anonymous = t.call("query", "userProfiles:get", None, json!({})).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
}
