//! The typed functions and tables keep the wire contract of the untyped
//! ones they replaced: the same argument validators (so the same refusals,
//! naming the argument), the same table definitions, and results declared
//! by type.

use livebase_functions::app_with_webhook_secret;
use livebase_functions::features::items::schema::{items_table, MAX_NAME_CHARS, MAX_STATUS_CHARS};
use livebase_functions::features::todos::schema::{todos_table, MAX_TEXT_CHARS};
use livebase_functions::features::user_profiles::schema::{
    user_profiles_table, MAX_BIO_CHARS, MAX_DISPLAY_NAME_CHARS,
};
use livebase_runtime::registry::Registry;
use livebase_schema::{define_table, obj, v, DocumentId, Validator, Value};

fn args_of(app: &Registry, path: &str) -> Validator {
    app.get(path).expect("registered").args.clone()
}

fn refusal(app: &Registry, path: &str, args: Value) -> String {
    let function = app.get(path).expect("registered");
    Registry::check_args(function, &[args])
        .expect_err("refused")
        .to_string()
}

#[test]
fn typed_functions_take_the_arguments_they_took_untyped() {
    let app = app_with_webhook_secret(None);
    let organization = || ("organizationId", v::string());
    let role = || v::union(["owner", "admin", "member"].map(v::literal));
    let expected = [
        ("todos:list", v::object([organization()])),
        (
            "todos:create",
            v::object([organization(), ("text", v::string())]),
        ),
        ("todos:toggle", v::object([("id", v::id("todos"))])),
        ("todos:remove", v::object([("id", v::id("todos"))])),
        ("items:getAll", v::object([organization()])),
        (
            "items:getByStatus",
            v::object([organization(), ("status", v::string())]),
        ),
        (
            "items:list",
            v::object([organization(), ("paginationOpts", v::pagination_opts())]),
        ),
        (
            "items:create",
            v::object([
                ("name", v::string()),
                ("status", v::string()),
                organization(),
            ]),
        ),
        (
            "items:update",
            v::object([
                ("id", v::id("items")),
                ("name", v::optional(v::string())),
                ("status", v::optional(v::string())),
            ]),
        ),
        ("items:remove", v::object([("id", v::id("items"))])),
        ("userProfiles:get", v::object([])),
        (
            "organizations:create",
            v::object([("name", v::string()), ("slug", v::string())]),
        ),
        ("organizations:listMine", v::object([])),
        (
            "organizations:update",
            v::object([organization(), ("name", v::string())]),
        ),
        ("organizations:remove", v::object([organization()])),
        ("organizations:purgeRemoved", v::object([organization()])),
        ("organizations:members", v::object([organization()])),
        ("organizations:invitations", v::object([organization()])),
        (
            "organizations:invite",
            v::object([organization(), ("email", v::string()), ("role", role())]),
        ),
        (
            "organizations:acceptInvitation",
            v::object([("invitationId", v::id("invitations"))]),
        ),
        (
            "organizations:cancelInvitation",
            v::object([("invitationId", v::id("invitations"))]),
        ),
        (
            "organizations:setRole",
            v::object([organization(), ("userId", v::string()), ("role", role())]),
        ),
        (
            "organizations:removeMember",
            v::object([organization(), ("userId", v::string())]),
        ),
        (
            "organizations:publicBySlug",
            v::object([("slug", v::string())]),
        ),
        (
            "userProfiles:upsert",
            v::object([
                ("displayName", v::string()),
                ("bio", v::optional(v::string())),
            ]),
        ),
        (
            "userProfiles:setAvatar",
            v::object([("storageId", v::id("_storage"))]),
        ),
        (
            "items:createFromWebhook",
            v::object([
                ("organizationSlug", v::string()),
                ("name", v::string().max_len(MAX_NAME_CHARS)),
                ("status", v::string().max_len(MAX_STATUS_CHARS)),
            ]),
        ),
    ];
    for (path, validator) in expected {
        assert_eq!(args_of(&app, path), validator, "{path}");
    }
}

#[test]
fn typed_tables_are_the_tables_they_were() {
    assert_eq!(
        todos_table(),
        define_table([
            ("text", v::string().max_len(MAX_TEXT_CHARS)),
            ("completed", v::boolean()),
            ("organizationId", v::string()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"])
    );
    assert_eq!(
        items_table(),
        define_table([
            ("name", v::string().max_len(MAX_NAME_CHARS)),
            ("status", v::string().max_len(MAX_STATUS_CHARS)),
            ("organizationId", v::string()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"])
        .index("by_organization_status", ["organizationId", "status"])
    );
    assert_eq!(
        user_profiles_table(),
        define_table([
            ("userId", v::id("users")),
            ("displayName", v::string().max_len(MAX_DISPLAY_NAME_CHARS)),
            ("bio", v::optional(v::string().max_len(MAX_BIO_CHARS))),
            ("avatarId", v::optional(v::id("_storage"))),
        ])
        .index("by_user", ["userId"])
        .index("by_avatar", ["avatarId"])
    );
}

#[test]
fn a_typed_function_refuses_bad_arguments_naming_the_argument() {
    let app = app_with_webhook_secret(None);
    assert_eq!(
        refusal(
            &app,
            "todos:create",
            obj! { "organizationId" => "o", "text" => 5.0 }
        ),
        "INVALID_ARGUMENT: args.text: expected string, found float64 5"
    );
    assert_eq!(
        refusal(&app, "todos:create", obj! { "organizationId" => "o" }),
        "INVALID_ARGUMENT: args: missing required field `text`"
    );
    let item = DocumentId::generate("items");
    assert_eq!(
        refusal(&app, "todos:toggle", obj! { "id" => item.as_str() }),
        format!("INVALID_ARGUMENT: args.id: expected id(\"todos\"), found string \"{item}\" (an id in table `items`)")
    );
}

#[test]
fn typed_functions_declare_their_results() {
    let app = app_with_webhook_secret(None);
    let todo = v::object([
        ("_id", v::id("todos")),
        ("_creationTime", v::number()),
        ("text", v::string().max_len(MAX_TEXT_CHARS)),
        ("completed", v::boolean()),
        ("organizationId", v::string()),
        ("createdBy", v::string()),
    ]);
    let returns = |path: &str| app.get(path).expect("registered").returns.clone();
    assert_eq!(returns("todos:list"), Some(v::array(todo)));
    assert_eq!(returns("todos:create"), Some(v::id("todos")));
    assert_eq!(returns("todos:toggle"), Some(v::boolean()));
    assert_eq!(returns("todos:remove"), Some(v::null()));
    assert_eq!(returns("items:create"), Some(v::id("items")));
    assert_eq!(returns("files:generateUploadUrl"), Some(v::string()));
    // Every function of the application is typed.
    for function in app.functions() {
        assert!(function.returns.is_some(), "{} is untyped", function.path);
    }
}

/// The example client's function references are the generated module, in
/// step with the application (regenerate with
/// `livebase codegen --rust examples/todo-terminal/src/api.rs`); the example
/// compiling is what proves the module usable.
#[test]
fn the_example_clients_references_are_generated_from_the_application() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/todo-terminal/src/api.rs");
    let committed = std::fs::read_to_string(&path).expect("the generated module");
    let fresh = livebase_runtime::codegen::rust::generate(&app_with_webhook_secret(None));
    assert!(
        committed == fresh,
        "{} is stale: run `livebase codegen --rust` on it",
        path.display()
    );
}
