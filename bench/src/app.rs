//! The application the benchmark drives: one organization-scoped table and the
//! two functions every figure needs, plus a heavy query and a bulk insert for
//! the hostile-tenant phase, and a whole-organization list with a one-row
//! update for the push-cost-by-result-size phase, and an upload URL and a
//! file's URL for the files phase. No sign-in in the functions, so the figures
//! measure the core (store, invalidation, push), not password hashing; the
//! hostile-tenant phase signs in only so its tenants are distinct identities.

use livebase_runtime::error::Error;
use livebase_runtime::registry::Registry;
use livebase_runtime::storage::STORAGE;
use livebase_runtime::store::Order;
use livebase_schema::{define_table, obj, v, DocumentId, Schema, Value};

pub fn registry() -> Registry {
    let schema = Schema::new().table(
        "docs",
        define_table([
            ("organizationId", v::string()),
            ("n", v::float64()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"]),
    );
    let mut app = Registry::new(schema);
    // The newest 20 documents of an organization. `tag` only makes otherwise
    // identical subscriptions distinct, so idle subscriptions are not shared.
    app.query(
        "bench:list",
        [
            ("organizationId", v::string()),
            ("tag", v::optional(v::float64())),
        ],
        |ctx, args| {
            let org = args.string("organizationId")?;
            ctx.db
                .query("docs")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .order(Order::Desc)
                .take(20)
        },
    );
    app.mutation(
        "bench:add",
        [("organizationId", v::string()), ("n", v::float64())],
        |ctx, args| {
            let doc = obj! {
                "organizationId" => args.string("organizationId")?,
                "n" => args.f64("n")?,
                "createdBy" => "bench",
            };
            ctx.db.insert("docs", doc)
        },
    );
    // Every document of an organization, counted: the deliberately heavy live
    // query of the hostile-tenant phase. `tag` makes copies distinct.
    app.query(
        "bench:count",
        [
            ("organizationId", v::string()),
            ("tag", v::optional(v::float64())),
        ],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let docs = ctx
                .db
                .query("docs")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .collect()?;
            Ok(docs.len() as f64)
        },
    );
    app.mutation(
        "bench:addMany",
        [("organizationId", v::string()), ("count", v::float64())],
        |ctx, args| {
            let org = args.string("organizationId")?;
            for i in 0..args.f64("count")? as usize {
                let doc = obj! {
                    "organizationId" => org.as_str(),
                    "n" => i as f64,
                    "createdBy" => "bench",
                };
                ctx.db.insert("docs", doc)?;
            }
            Ok(Value::Null)
        },
    );
    // Every document of an organization, as `items:getAll` returns a list:
    // the live result whose size the `pushsize` phase varies.
    app.query(
        "bench:all",
        [("organizationId", v::string())],
        |ctx, args| {
            let org = args.string("organizationId")?;
            ctx.db
                .query("docs")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .collect()
        },
    );
    // Changes one row of an organization (its oldest document's `n`), so that
    // one row of a live `bench:all` result changes and the rest stay.
    app.mutation(
        "bench:setFirst",
        [("organizationId", v::string()), ("n", v::float64())],
        |ctx, args| {
            let org = args.string("organizationId")?;
            let first = ctx
                .db
                .query("docs")
                .with_index("by_organization", |q| q.eq("organizationId", org))
                .first()?
                .ok_or_else(|| Error::invalid("the organization has no documents"))?;
            let id = first
                .get("_id")
                .and_then(Value::as_str)
                .and_then(|id| DocumentId::parse_in(id, "docs"))
                .ok_or_else(|| Error::internal("a document without its id"))?;
            ctx.db.patch(&id, obj! { "n" => args.f64("n")? })?;
            Ok(Value::Null)
        },
    );
    // An upload URL (anonymous: the files phase measures bytes, not
    // sign-in), and the signed URL of a stored file.
    app.mutation("bench:uploadUrl", [], |ctx, _args| {
        ctx.storage().generate_upload_url()
    });
    app.query(
        "bench:fileUrl",
        [("storageId", v::id(STORAGE))],
        |ctx, args| {
            let id = args.id("storageId", STORAGE)?;
            ctx.storage()
                .get_url(&id)?
                .ok_or_else(|| Error::not_found("no such file"))
        },
    );
    app
}
