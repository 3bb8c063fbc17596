use livebase_schema::typed::{table_of, Doc, Id, Table, Type};
use livebase_schema::{v, Schema, Value};

use super::*;
use crate::pagination::{PaginationOpts, PaginationResult};

/// Every kind of validator, nested modules, a no-argument function, a
/// function that is also a module, and internal functions (left out).
fn test_registry() -> Registry {
    let mut app = Registry::new(Schema::new());
    app.query("todos:list", [("organizationId", v::string())], |_, _| {
        Ok(Value::Null)
    });
    app.mutation(
        "todos:create",
        [
            ("organizationId", v::id("organizations")),
            ("text", v::string()),
            ("due", v::optional(v::float64())),
        ],
        |_, _| Ok(Value::Null),
    );
    app.query("users:me", [], |_, _| Ok(Value::Null));
    app.internal_mutation("todos:purge", [], |_, _| Ok(Value::Null));
    app.internal_action("emails:send", [("to", v::string())], |_, _| async {
        Ok(Value::Null)
    });
    app.action(
        "features/files/upload:put",
        [
            ("blob", v::bytes()),
            ("size", v::int64()),
            ("public", v::boolean()),
            ("nothing", v::null()),
            ("tags", v::array(v::union([v::string(), v::null()]))),
            (
                "kind",
                v::union([v::literal("image"), v::literal(2i64), v::literal(true)]),
            ),
            ("scores", v::record(v::id("users"), v::float64())),
            (
                "meta",
                v::object([("author-name", v::string()), ("extra", v::any())]),
            ),
            ("never", v::union([])),
            ("empty", v::object([])),
        ],
        |_, _| async { Ok(Value::Null) },
    );
    app.query("features/files:list", [], |_, _| Ok(Value::Null));
    app.query("features:files", [], |_, _| Ok(Value::Null));
    app
}

#[test]
fn api_d_ts_types_every_public_function_by_its_validators() {
    let expected = r#"/* eslint-disable */
/**
 * Generated `api` utility: a typed reference to every public function of the
 * livebase application.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `livebase codegen --out <this folder>`.
 * @module
 */

import type { FunctionReference } from "convex/server";

/** The id of a document of `TableName`: a string, branded so ids of different
 * tables do not mix. */
export type Id<TableName extends string> = string & { __tableName: TableName };

/**
 * A reference to every public function, typed by its arguments:
 * `client.query(api.todos.list, { organizationId })`.
 */
export declare const api: {
  features: {
    files: FunctionReference<"query", "public", Record<string, never>, any> & {
      list: FunctionReference<"query", "public", Record<string, never>, any>;
      upload: {
        put: FunctionReference<"action", "public", { blob: ArrayBuffer; empty: Record<string, never>; kind: "image" | 2n | true; meta: { "author-name": string; extra: any }; never: never; nothing: null; public: boolean; scores: Record<Id<"users">, number>; size: bigint; tags: Array<string | null> }, any>;
      };
    };
  };
  todos: {
    create: FunctionReference<"mutation", "public", { due?: number; organizationId: Id<"organizations">; text: string }, any>;
    list: FunctionReference<"query", "public", { organizationId: string }, any>;
  };
  users: {
    me: FunctionReference<"query", "public", Record<string, never>, any>;
  };
};
"#;
    let files = generate(&test_registry());
    assert_eq!(files[0].name, "api.d.ts");
    assert_eq!(files[0].contents, format!("{expected}{UPLOAD_D_TS}"));
}

#[derive(Type)]
#[livebase(table = "todos")]
struct Todo {
    text: String,
    done: Option<bool>,
}

#[derive(Type)]
struct ListArgs {
    organization_id: String,
    pagination_opts: PaginationOpts,
}

#[derive(Type)]
struct ById {
    id: Id<Todo>,
}

#[derive(Type)]
enum Found {
    Nothing,
    Todo(Doc<Todo>),
}

/// Typed functions over a table, beside an untyped one.
fn typed_registry() -> Registry {
    let schema = Schema::new().table(Todo::NAME, table_of::<Todo>());
    let mut app = Registry::new(schema);
    app.typed_query("todos:page", |_, _: ListArgs| {
        Ok(PaginationResult::<Doc<Todo>> {
            page: Vec::new(),
            is_done: true,
            continue_cursor: String::new(),
            split_cursor: None,
            page_status: None,
        })
    });
    app.typed_query("todos:get", |_, _: ById| Ok(Option::<Doc<Todo>>::None));
    app.typed_query("todos:find", |_, _: ById| Ok(Found::Nothing));
    app.typed_mutation("todos:create", |_, _: ById| Ok(Id::<Todo>::generate()));
    app.typed_mutation("todos:remove", |_, _: ById| Ok(()));
    app.query("todos:untyped", [], |_, _| Ok(Value::Null));
    app
}

#[test]
fn typed_functions_declare_their_results_with_the_tables_documents() {
    let expected = r#"
import type { FunctionReference, PaginationResult } from "convex/server";

/** The id of a document of `TableName`: a string, branded so ids of different
 * tables do not mix. */
export type Id<TableName extends string> = string & { __tableName: TableName };

/** Every table's documents, as the application declares them. */
export type DataModel = {
  todos: { _creationTime: number; _id: Id<"todos">; done?: boolean; text: string };
};

/** The names of the application's tables. */
export type TableNames = keyof DataModel;

/** A document of `TableName`, with its `_id` and `_creationTime`. */
export type Doc<TableName extends TableNames> = DataModel[TableName];

/**
 * A reference to every public function, typed by its arguments:
 * `client.query(api.todos.list, { organizationId })`.
 */
export declare const api: {
  todos: {
    create: FunctionReference<"mutation", "public", { id: Id<"todos"> }, Id<"todos">>;
    find: FunctionReference<"query", "public", { id: Id<"todos"> }, "nothing" | Doc<"todos">>;
    get: FunctionReference<"query", "public", { id: Id<"todos"> }, Doc<"todos"> | null>;
    page: FunctionReference<"query", "public", { organizationId: string; paginationOpts: { cursor: string | null; endCursor?: string | null; id?: number; maximumBytesRead?: number; maximumRowsRead?: number; numItems: number } }, PaginationResult<Doc<"todos">>>;
    remove: FunctionReference<"mutation", "public", { id: Id<"todos"> }, null>;
    untyped: FunctionReference<"query", "public", Record<string, never>, any>;
  };
};
"#;
    let files = generate(&typed_registry());
    let text = &files[0].contents;
    let start = text.find("\nimport type").expect("the imports");
    assert_eq!(&text[start..], format!("{expected}{UPLOAD_D_TS}"));
}

#[test]
fn the_rust_module_types_references_by_the_same_types() {
    let module = rust::generate(&typed_registry());
    for line in [
        "#[livebase(table = \"todos\")]\npub struct Todos {",
        "    #[livebase(rename = \"done\")]\n    pub done: Option<bool>,",
        "pub struct TodosGetArgs {\n    #[livebase(rename = \"id\")]\n    pub id: Id<Todos>,\n}",
        // A union of a literal and a document: no Rust type says it.
        "pub const FIND: QueryRef<TodosFindArgs, Value> = query(\"todos:find\");",
        "pub const GET: QueryRef<TodosGetArgs, Option<Doc<Todos>>> = query(\"todos:get\");",
        "pub const CREATE: MutationRef<TodosCreateArgs, Id<Todos>> = mutation(\"todos:create\");",
        "pub const REMOVE: MutationRef<TodosRemoveArgs, ()> = mutation(\"todos:remove\");",
        // A paginated query: its arguments without `paginationOpts`, its items typed.
        "pub struct TodosPageArgs {\n    #[livebase(rename = \"organizationId\")]\n    pub organization_id: String,\n}",
        "pub const PAGE: QueryRef<TodosPageArgs, Paginated<Doc<Todos>>> = query(\"todos:page\");",
        "each page's items are `Doc<Todos>`",
        "pub const UNTYPED: QueryRef<(), Value> = query(\"todos:untyped\");",
    ] {
        assert!(module.contains(line), "missing {line:?} in:\n{module}");
    }
    assert_eq!(module, rust::generate(&typed_registry()), "deterministic");
}

#[test]
fn api_js_is_anyapi_whatever_the_functions() {
    let files = generate(&test_registry());
    assert_eq!(files[1].name, "api.js");
    assert!(files[1].contents.starts_with("/* eslint-disable */\n"));
    assert!(files[1]
            .contents
            .ends_with(&format!("import {{ anyApi }} from \"convex/server\";\n\n/**\n * A reference to every public function: `api.todos.list` is `todos:list`.\n * Its types are in `api.d.ts`.\n */\nexport const api = anyApi;\n{UPLOAD_JS}")));
    assert_eq!(
        files[1].contents,
        generate(&Registry::default())[1].contents
    );
}

#[test]
fn an_application_without_public_functions_has_an_empty_api() {
    let files = generate(&Registry::default());
    assert!(files[0]
        .contents
        .ends_with(&format!("export declare const api: {{\n}};\n{UPLOAD_D_TS}")));
}

#[test]
fn literals_and_keys_are_valid_typescript() {
    assert_eq!(literal_type(&Value::Float64(1.5)), "1.5");
    assert_eq!(literal_type(&Value::Float64(-0.0)), "-0");
    assert_eq!(literal_type(&Value::Float64(f64::NAN)), "number");
    assert_eq!(literal_type(&Value::Int64(-3)), "-3n");
    assert_eq!(literal_type(&Value::String("a\"b\n".into())), r#""a\"b\n""#);
    assert_eq!(
        ts_type(&v::array(v::optional(v::literal("x")))),
        r#"Array<"x" | undefined>"#
    );
    assert_eq!(property_name("organizationId"), "organizationId");
    assert_eq!(property_name("_id"), "_id");
    assert_eq!(property_name("2fa"), r#""2fa""#);
    assert_eq!(property_name(""), r#""""#);
}

#[test]
fn write_creates_the_folder_and_leaves_unchanged_files_alone() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("src/convex");
    let paths = write(&test_registry(), &out).expect("written");
    assert_eq!(paths, vec![out.join("api.d.ts"), out.join("api.js")]);
    let before = std::fs::metadata(&paths[0]).and_then(|m| m.modified());
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&test_registry(), &out).expect("written again");
    let after = std::fs::metadata(&paths[0]).and_then(|m| m.modified());
    assert_eq!(before.expect("mtime"), after.expect("mtime"));
    assert_eq!(
        std::fs::read_to_string(&paths[0]).expect("readable"),
        generate(&test_registry())[0].contents
    );
}
