//! TypeScript for the npm `convex` client: `api.d.ts` declares a typed
//! `FunctionReference` for every public function of a [`Registry`], its
//! argument type derived from the function's validator, and `api.js` is the
//! runtime value (`convex/server`'s `anyApi`, exactly as Convex's own
//! generated `api.js`). A frontend then gets
//! `client.query(api.todos.list, { organizationId })` — and `useQuery` from
//! `convex/react` — checked against the Rust functions.
//!
//! A function registered typed (`Registry::typed_query` …) declares its
//! result too: a table's documents are `Doc<"todos">` (declared once, from
//! the table's fields, in `DataModel`), ids `Id<"todos">`, a paginated
//! query's page Convex's `PaginationResult<Doc<"items">>`. An untyped
//! function's result is `any`. `DataModel`, `Doc` and `TableNames` are
//! declared when the application has tables, `PaginationResult` imported
//! when a result uses it.
//!
//! `rust` writes the same references as a Rust module for a client on the
//! SDK (`livebase codegen --rust FILE`).
//!
//! Beside `api`, both files carry `uploadFile(postUrl, file, contentType?)`:
//! the `fetch` POST of Convex's upload recipe, answering the stored file's id
//! typed as `Id<"_storage">` — what a mutation's `v::id("_storage")`
//! argument takes — and throwing the server's message on a refusal.
//!
//! The output depends only on the registry and is sorted (functions by path,
//! object fields by name), so regenerating an unchanged application changes no
//! byte and the files can be committed.

pub mod rust;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use livebase_schema::table::{CREATION_TIME_FIELD, ID_FIELD};
use livebase_schema::{Validator, Value};

use crate::pagination;
use crate::registry::{Function, Registry, Visibility};

/// One generated file: its name inside the output folder and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    pub name: &'static str,
    pub contents: String,
}

/// The files for `registry`'s public functions: `api.d.ts` and `api.js`.
pub fn generate(registry: &Registry) -> Vec<GeneratedFile> {
    vec![
        GeneratedFile {
            name: "api.d.ts",
            contents: api_d_ts(registry),
        },
        GeneratedFile {
            name: "api.js",
            contents: api_js(),
        },
    ]
}

/// Writes [`generate`]'s files into `out` (created if missing) and returns
/// their paths. A file whose text is already the same is left untouched, so a
/// frontend's file watcher does not rebuild for nothing.
pub fn write(registry: &Registry, out: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    for file in generate(registry) {
        let path = out.join(file.name);
        let unchanged = std::fs::read(&path).is_ok_and(|old| old == file.contents.as_bytes());
        if !unchanged {
            std::fs::write(&path, &file.contents)?;
        }
        written.push(path);
    }
    Ok(written)
}

/// Writes [`rust::generate`]'s module to `path` (its folder created if
/// missing), leaving a file that already says the same untouched.
pub fn write_rust(registry: &Registry, path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = rust::generate(registry);
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    std::fs::write(path, text)
}

fn header() -> &'static str {
    "/* eslint-disable */
/**
 * Generated `api` utility: a typed reference to every public function of the
 * livebase application.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `livebase codegen --out <this folder>`.
 * @module
 */
"
}

fn api_js() -> String {
    format!(
        "{}
import {{ anyApi }} from \"convex/server\";

/**
 * A reference to every public function: `api.todos.list` is `todos:list`.
 * Its types are in `api.d.ts`.
 */
export const api = anyApi;
{UPLOAD_JS}",
        header()
    )
}

/// `uploadFile` in `api.js`: the upload recipe of Convex's docs.
const UPLOAD_JS: &str = "
/**
 * Uploads `file` to `postUrl` — an upload URL a mutation returned
 * (`ctx.storage().generate_upload_url()`) — and returns the stored file's id.
 * The `Content-Type` is `contentType`, else the Blob's own type. A refusal
 * (a used or expired URL, a file over the limit) throws with the server's
 * message and its `status`.
 */
export async function uploadFile(postUrl, file, contentType) {
  const type = contentType ?? (typeof Blob !== \"undefined\" && file instanceof Blob ? file.type : \"\");
  const response = await fetch(postUrl, {
    method: \"POST\",
    headers: type ? { \"Content-Type\": type } : {},
    body: file,
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.message ?? `upload failed: ${response.status}`);
    error.status = response.status;
    error.code = body.code;
    throw error;
  }
  return body.storageId;
}
";

/// `uploadFile` in `api.d.ts`.
const UPLOAD_D_TS: &str = "
/**
 * Uploads `file` to `postUrl` (from a mutation's
 * `ctx.storage().generate_upload_url()`) and returns the stored file's id.
 * The `Content-Type` is `contentType`, else the Blob's own type. A refusal
 * throws an `Error` with the server's message, `status` and `code`.
 */
export declare function uploadFile(
  postUrl: string,
  file: Blob | ArrayBuffer | Uint8Array,
  contentType?: string,
): Promise<Id<\"_storage\">>;
";

fn api_d_ts(registry: &Registry) -> String {
    let docs = Docs::of(registry);
    let mut tree = Node::default();
    for function in registry.functions() {
        if function.visibility == Visibility::Public {
            tree.insert(&segments(&function.path), function);
        }
    }
    let mut api = String::new();
    tree.render(0, &docs, &mut api);
    let imports = if api.contains("PaginationResult<") {
        "FunctionReference, PaginationResult"
    } else {
        "FunctionReference"
    };
    let mut out = String::from(header());
    let _ = write!(
        out,
        "
import type {{ {imports} }} from \"convex/server\";

/** The id of a document of `TableName`: a string, branded so ids of different
 * tables do not mix. */
export type Id<TableName extends string> = string & {{ __tableName: TableName }};
"
    );
    docs.render(&mut out);
    out.push_str(
        "
/**
 * A reference to every public function, typed by its arguments:
 * `client.query(api.todos.list, { organizationId })`.
 */
export declare const api: ",
    );
    out.push_str(&api);
    out.push_str(";\n");
    out.push_str(UPLOAD_D_TS);
    out
}

/// The application's tables' documents: the validator of each (its fields
/// with `_id` and `_creationTime`), by table name. A result validator equal
/// to one of them is that table's `Doc`.
struct Docs(Vec<(String, Validator)>);

impl Docs {
    fn of(registry: &Registry) -> Docs {
        let schema = registry.schema();
        Docs(
            schema
                .tables()
                .filter(|(name, _)| !schema.is_system_table(name))
                .map(|(name, table)| {
                    let mut fields = table.fields().clone();
                    fields.insert(ID_FIELD.into(), Validator::Id(name.to_string()));
                    fields.insert(CREATION_TIME_FIELD.into(), Validator::Float64);
                    (name.to_string(), Validator::Object(fields))
                })
                .collect(),
        )
    }

    fn none() -> Docs {
        Docs(Vec::new())
    }

    fn table_of(&self, validator: &Validator) -> Option<&str> {
        self.0
            .iter()
            .find(|(_, doc)| doc == validator)
            .map(|(name, _)| name.as_str())
    }

    /// `DataModel`, `TableNames` and `Doc`, when there are tables.
    fn render(&self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        let mut tables: Vec<&(String, Validator)> = self.0.iter().collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str(
            "
/** Every table's documents, as the application declares them. */
export type DataModel = {
",
        );
        for (name, doc) in tables {
            let _ = writeln!(
                out,
                "  {}: {};",
                property_name(name),
                ts_type_in(doc, &Docs::none())
            );
        }
        out.push_str(
            "};

/** The names of the application's tables. */
export type TableNames = keyof DataModel;

/** A document of `TableName`, with its `_id` and `_creationTime`. */
export type Doc<TableName extends TableNames> = DataModel[TableName];
",
        );
    }
}

/// The property names leading to a function: `features/todos:list` is
/// `features`, `todos`, `list`.
fn segments(path: &str) -> Vec<&str> {
    let (module, name) = path.rsplit_once(':').unwrap_or((path, "default"));
    module.split('/').chain([name]).collect()
}

/// The `api` object as a tree: a module folder, a module, or a function —
/// or, when `a:b` and `a/b:c` are both registered, a function that is also a
/// module (rendered as an intersection, as `anyApi` serves both).
#[derive(Default)]
struct Node<'r> {
    function: Option<&'r Function>,
    children: BTreeMap<&'r str, Node<'r>>,
}

impl<'r> Node<'r> {
    fn insert(&mut self, segments: &[&'r str], function: &'r Function) {
        match segments.split_first() {
            None => self.function = Some(function),
            Some((first, rest)) => self
                .children
                .entry(first)
                .or_default()
                .insert(rest, function),
        }
    }

    fn render(&self, depth: usize, docs: &Docs, out: &mut String) {
        if let Some(function) = self.function {
            let returns = function
                .returns
                .as_ref()
                .map_or_else(|| "any".to_string(), |r| ts_type_in(r, docs));
            let _ = write!(
                out,
                "FunctionReference<\"{}\", \"public\", {}, {returns}>",
                function.kind().name(),
                ts_type(&function.args)
            );
            if self.children.is_empty() {
                return;
            }
            out.push_str(" & ");
        }
        out.push_str("{\n");
        for (name, child) in &self.children {
            indent(depth + 1, out);
            out.push_str(&property_name(name));
            out.push_str(": ");
            child.render(depth + 1, docs, out);
            out.push_str(";\n");
        }
        indent(depth, out);
        out.push('}');
    }
}

fn indent(depth: usize, out: &mut String) {
    out.push_str(&"  ".repeat(depth));
}

const EMPTY_OBJECT: &str = "Record<string, never>";

/// The TypeScript type of the values `validator` accepts.
fn ts_type(validator: &Validator) -> String {
    ts_type_in(validator, &Docs::none())
}

/// [`ts_type`], naming a table's document `Doc<"table">` and a page of a
/// paginated query Convex's `PaginationResult<…>`.
fn ts_type_in(validator: &Validator, docs: &Docs) -> String {
    if let Some(table) = docs.table_of(validator) {
        return format!("Doc<{}>", string_literal(table));
    }
    if let Some(Validator::Array(item)) = validator.object_fields().and_then(|f| f.get("page")) {
        if *validator == pagination::result_validator((**item).clone()) {
            return format!("PaginationResult<{}>", ts_type_in(item, docs));
        }
    }
    let ts_type = |v: &Validator| ts_type_in(v, docs);
    match validator {
        Validator::String | Validator::BoundedString(_) => "string".to_string(),
        Validator::Float64 => "number".to_string(),
        Validator::Int64 => "bigint".to_string(),
        Validator::Boolean => "boolean".to_string(),
        Validator::Null => "null".to_string(),
        Validator::Bytes => "ArrayBuffer".to_string(),
        Validator::Any => "any".to_string(),
        Validator::Id(table) => format!("Id<{}>", string_literal(table)),
        // Outside an object field, optional means "this or missing".
        Validator::Optional(inner) => format!("{} | undefined", ts_type(inner)),
        Validator::Array(inner) => format!("Array<{}>", ts_type(inner)),
        // Convex's `EmptyObject`: `{}` would accept any value but null, and
        // a function taking no arguments may then be called without any.
        Validator::Object(fields) if fields.is_empty() => EMPTY_OBJECT.to_string(),
        Validator::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, field)| match field {
                    Validator::Optional(inner) => {
                        format!("{}?: {}", property_name(name), ts_type(inner))
                    }
                    field => format!("{}: {}", property_name(name), ts_type(field)),
                })
                .collect();
            format!("{{ {} }}", fields.join("; "))
        }
        Validator::Union(alternatives) if alternatives.is_empty() => "never".to_string(),
        Validator::Union(alternatives) => alternatives
            .iter()
            .map(ts_type)
            .collect::<Vec<_>>()
            .join(" | "),
        Validator::Literal(value) => literal_type(value),
        Validator::Record { keys, values } => {
            format!("Record<{}, {}>", ts_type(keys), ts_type(values))
        }
    }
}

/// The literal type of exactly `value`, where TypeScript has one; a float
/// that is not finite is just `number`.
fn literal_type(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Int64(n) => format!("{n}n"),
        Value::Float64(f) if f.is_finite() => format!("{f}"),
        Value::Float64(_) => "number".to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::String(s) => string_literal(s),
        Value::Bytes(_) => "ArrayBuffer".to_string(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(literal_type).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(fields) if fields.is_empty() => EMPTY_OBJECT.to_string(),
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("{}: {}", property_name(name), literal_type(value)))
                .collect();
            format!("{{ {} }}", fields.join("; "))
        }
    }
}

/// A JSON string is a valid TypeScript string literal.
fn string_literal(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `name` as a property key: bare when it is an identifier, quoted otherwise.
fn property_name(name: &str) -> String {
    let mut chars = name.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if identifier {
        name.to_string()
    } else {
        string_literal(name)
    }
}

#[cfg(test)]
mod tests;
