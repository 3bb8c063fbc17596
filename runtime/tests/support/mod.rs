//! The application of the sync server's end-to-end tests (`tests/sync_*.rs`,
//! `tests/hostile_*.rs`): a small organization-scoped application and the
//! helpers that speak of it. The server, the protocol client and the HTTP
//! client are `livebase_testkit`'s.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use livebase_runtime::pagination::PaginationOpts;
use livebase_runtime::registry::Registry;
use livebase_runtime::Error;
use livebase_schema::{define_table, obj, v, DocumentId, Object, Schema, Value};

use livebase_testkit::http::call;
use livebase_testkit::TestServer;

// ---------------------------------------------------------------------------
// The application under test.

/// `notes`, shaped like the seed's tables: organization-scoped, with a second
/// index that range queries scan by `n`.
pub fn schema() -> Schema {
    Schema::new().table(
        "notes",
        define_table([
            ("organizationId", v::string()),
            ("body", v::string()),
            ("n", v::float64()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"])
        .index("by_organization_n", ["organizationId", "n"]),
    )
}

/// The registry every sync test serves:
///
/// | path | kind | what |
/// | --- | --- | --- |
/// | `notes:list {organizationId}` | query | the organization's notes, in creation order |
/// | `notes:range {organizationId, lo, hi}` | query | its notes with `lo <= n < hi`, by `n` |
/// | `notes:count {organizationId}` | query | how many notes it has (reads every one) |
/// | `notes:page {organizationId, paginationOpts}` | query | a page of its notes, newest first |
/// | `notes:add {organizationId, body, n}` | mutation | inserts one; returns its id |
/// | `notes:addMany {organizationId, body, count}` | mutation | inserts `count` (n = 0, 1, …) |
/// | `notes:set {id, body?, n?, organizationId?}` | mutation | patches the given fields |
/// | `notes:remove {id}` | mutation | deletes one |
/// | `notes:noop {}` | mutation | writes nothing |
/// | `notes:conflict {}` | mutation | fails with `CONFLICT` (and extra `errorData`) |
/// | `notes:conflictQuery {}` | query | fails the same way |
/// | `notes:panic {}` / `notes:panicQuery {}` / `notes:panicAction {}` | mutation / query / action | panic |
/// | `notes:secret {}` | internal query | |
/// | `notes:internalAdd {organizationId, body, n}` | internal mutation | as `notes:add` |
/// | `notes:addViaAction {organizationId, body, n}` | action | runs `notes:internalAdd` |
pub fn registry() -> Registry {
    let mut app = Registry::new(schema());
    let new_note = || {
        [
            ("organizationId", v::string()),
            ("body", v::string()),
            ("n", v::float64()),
        ]
    };

    app.query(
        "notes:list",
        [("organizationId", v::string())],
        |ctx, args| Ok(Value::Array(notes_of(ctx.db.reborrow(), &args)?)),
    );
    app.query(
        "notes:range",
        [
            ("organizationId", v::string()),
            ("lo", v::float64()),
            ("hi", v::float64()),
        ],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let (lo, hi) = (args.f64("lo")?, args.f64("hi")?);
            let docs = ctx
                .db
                .query("notes")
                .with_index("by_organization_n", |q| {
                    q.eq("organizationId", org).gte("n", lo).lt("n", hi)
                })
                .collect()?;
            Ok(Value::Array(docs))
        },
    );
    app.query(
        "notes:count",
        [("organizationId", v::string())],
        |ctx, args| Ok(notes_of(ctx.db.reborrow(), &args)?.len() as f64),
    );
    app.query(
        "notes:page",
        [
            ("organizationId", v::string()),
            ("paginationOpts", v::pagination_opts()),
        ],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let opts = PaginationOpts::from_value(args.value("paginationOpts").expect("checked"))?;
            ctx.db
                .query("notes")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .order(livebase_runtime::store::Order::Desc)
                .paginate_with(&opts)
        },
    );
    app.mutation("notes:add", new_note(), |ctx, args| add_note(ctx.db, &args));
    app.internal_mutation("notes:internalAdd", new_note(), |ctx, args| {
        add_note(ctx.db, &args)
    });
    app.mutation(
        "notes:addMany",
        [
            ("organizationId", v::string()),
            ("body", v::string()),
            ("count", v::float64()),
        ],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let body = args.string("body")?;
            for i in 0..args.f64("count")? as usize {
                ctx.db.insert(
                    "notes",
                    obj! {
                        "organizationId" => org.as_str(),
                        "body" => body.as_str(),
                        "n" => i as f64,
                        "createdBy" => "tester",
                    },
                )?;
            }
            Ok(Value::Null)
        },
    );
    app.mutation(
        "notes:set",
        [
            ("id", v::id("notes")),
            ("body", v::optional(v::string())),
            ("n", v::optional(v::float64())),
            ("organizationId", v::optional(v::string())),
        ],
        |ctx, args| {
            let id = args.id("id", "notes")?;
            let mut patch = Object::new();
            for field in ["body", "n", "organizationId"] {
                if let Some(value) = args.value(field) {
                    patch.insert(field.to_string(), value.clone());
                }
            }
            ctx.db.patch(&id, patch)?;
            Ok(Value::Null)
        },
    );
    app.mutation("notes:remove", [("id", v::id("notes"))], |ctx, args| {
        let id = args.id("id", "notes")?;
        ctx.db.delete(&id)?;
        Ok(Value::Null)
    });
    app.mutation("notes:noop", [], |_ctx, _args| Ok(Value::Null));
    app.mutation(
        "notes:conflict",
        [],
        |_ctx, _args| -> Result<Value, Error> { Err(conflict()) },
    );
    app.query(
        "notes:conflictQuery",
        [],
        |_ctx, _args| -> Result<Value, Error> { Err(conflict()) },
    );
    app.mutation("notes:panic", [], |_ctx, _args| -> Result<Value, Error> {
        panic!("the notes:panic handler panicked on purpose")
    });
    app.query(
        "notes:panicQuery",
        [],
        |_ctx, _args| -> Result<Value, Error> {
            panic!("the notes:panicQuery handler panicked on purpose")
        },
    );
    app.action("notes:panicAction", [], |_ctx, _args| async move {
        if true {
            panic!("the notes:panicAction handler panicked on purpose");
        }
        Ok(Value::Null)
    });
    app.internal_query("notes:secret", [], |_ctx, _args| Ok("the secret"));
    app.action("notes:addViaAction", new_note(), |ctx, args| async move {
        ctx.run_mutation("notes:internalAdd", args.into_value())
            .await
    });
    app
}

/// Every note of the organization `args.organizationId`, in creation order.
pub fn notes_of(
    mut db: livebase_runtime::context::Reader,
    args: &livebase_runtime::registry::Args,
) -> Result<Vec<Value>, Error> {
    let org = args.string("organizationId")?;
    db.query("notes")
        .with_index("by_organization", |q| q.eq("organizationId", org))
        .collect()
}

fn add_note(
    tx: &mut livebase_runtime::transaction::Transaction,
    args: &livebase_runtime::registry::Args,
) -> Result<Value, Error> {
    let id = tx.insert(
        "notes",
        obj! {
            "organizationId" => args.string("organizationId")?,
            "body" => args.string("body")?,
            "n" => args.f64("n")?,
            "createdBy" => "tester",
        },
    )?;
    Ok(Value::from(id.as_str()))
}

/// The error `notes:conflict` fails with: a code, a message and one extra field.
fn conflict() -> Error {
    let mut data = Object::new();
    data.insert("field".into(), Value::from("body"));
    Error::App {
        code: livebase_runtime::ErrorCode::Conflict,
        message: "that note is taken".into(),
        data,
    }
}

/// The `args` of a call: the wire carries one object in an array.
pub fn args(fields: Value) -> Vec<Value> {
    vec![fields]
}

/// `{organizationId}`.
pub fn org(organization_id: &str) -> Value {
    obj! { "organizationId" => organization_id }
}

/// `{organizationId, body, n}`, the arguments of `notes:add`.
pub fn note(organization_id: &str, body: &str, n: f64) -> Value {
    obj! { "organizationId" => organization_id, "body" => body, "n" => n }
}

/// The `_id` of a document value.
pub fn id_of(doc: &Value) -> String {
    doc.get("_id")
        .and_then(Value::as_str)
        .expect("a document has an _id")
        .to_string()
}

/// The documents of a query result that is an array.
pub fn docs(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        other => panic!("expected an array of documents, got {other:?}"),
    }
}

/// Checks that a string is a `notes` id.
pub fn is_note_id(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| DocumentId::parse_in(s, "notes").is_some())
}

// ---------------------------------------------------------------------------
// Calls over HTTP.

/// A fresh evaluation over HTTP (`POST /api/query`): the value, or the
/// error message.
pub async fn query(server: &TestServer, path: &str, fields: Value) -> Result<Value, String> {
    let (status, body) = call(server.addr(), "query", path, fields).await;
    match status {
        200 => Ok(Value::from_json(&body["value"], "value").expect("a Convex value")),
        _ => Err(body["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string()),
    }
}

/// Runs a mutation over HTTP and returns its value (panics on failure).
pub async fn mutate(server: &TestServer, path: &str, fields: Value) -> Value {
    let (status, body) = call(server.addr(), "mutation", path, fields).await;
    assert_eq!(status, 200, "{path} failed: {body}");
    Value::from_json(&body["value"], "value").expect("a Convex value")
}

/// The number of notes of an organization, evaluated fresh.
pub async fn count(server: &TestServer, organization_id: &str) -> f64 {
    let value = query(server, "notes:count", org(organization_id))
        .await
        .expect("notes:count succeeds");
    value.as_f64().expect("a number")
}

/// Tokens `user:<name>` sign in as `<name>` (session `session-<name>`): an
/// authenticator for tests that need several signed-in callers without the
/// built-in accounts.
pub struct NamedUsers;

impl livebase_runtime::auth::Authenticator for NamedUsers {
    fn authenticate(
        &self,
        token: &str,
    ) -> livebase_runtime::registry::BoxFuture<Result<livebase_runtime::identity::Identity, Error>>
    {
        let user = token.strip_prefix("user:").map(str::to_string);
        Box::pin(async move {
            let user_id = user.ok_or_else(|| Error::unauthenticated("unknown token"))?;
            Ok(livebase_runtime::identity::Identity::User {
                session_id: format!("session-{user_id}"),
                user_id,
            })
        })
    }
}
