//! The Rust side of codegen: a module of typed references to every public
//! function, for a client crate on the SDK (`livebase codegen --rust FILE`),
//! so it never writes a function's path or the shape of its arguments and
//! results by hand:
//!
//! ```text
//! mod api; // the generated file
//! let todos: Vec<Doc<api::Todos>> =
//!     client.query(api::todos::LIST, api::TodosListArgs { organization_id }).await?;
//! ```
//!
//! The module holds a type per table (`Todos`, a `#[derive(Type)]` struct of
//! its fields with `#[livebase(table = "todos")]`; a table the application
//! only refers to by id, such as `users`, is a type with only a `Table`
//! impl), an argument struct per function with arguments, a struct or enum
//! for each object or string union a result has (named after where it
//! first appears, and shared by every place with the same shape), and one
//! `pub mod` per module of function references. A paginated query is a
//! `QueryRef<Args, Paginated<Item>>` (its arguments without
//! `paginationOpts`), what `PaginatedSubscription::of` drives.
//! A type the value model has but Rust types do not (bytes, mixed unions)
//! is `Value`.
//!
//! Like the TypeScript, the output depends only on the registry and is
//! sorted, so an unchanged application regenerates the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use livebase_schema::{v, Validator, Value};

use super::Docs;
use crate::registry::{Function, Registry, Visibility};

/// The module's text for `registry`'s public functions.
pub fn generate(registry: &Registry) -> String {
    let docs = Docs::of(registry);
    let mut gen = Generator {
        docs: &docs,
        types: Vec::new(),
        shapes: Vec::new(),
        names: BTreeSet::new(),
        id_tables: BTreeSet::new(),
    };
    for (table, _) in &docs.0 {
        gen.names.insert(pascal(table));
    }
    let mut modules = Module::default();
    let mut functions: Vec<&Function> = registry
        .functions()
        .filter(|f| f.visibility == Visibility::Public)
        .collect();
    functions.sort_by(|a, b| a.path.cmp(&b.path));
    for function in functions {
        let reference = gen.reference(function);
        let (module, name) = function
            .path
            .rsplit_once(':')
            .unwrap_or((&function.path, "default"));
        modules.insert(&module.split('/').collect::<Vec<_>>(), reference, name);
    }
    let tables = gen.tables();

    let mut out = String::from(HEADER);
    out.push_str(&tables);
    for item in &gen.types {
        out.push('\n');
        out.push_str(item);
    }
    modules.render(0, &mut out);
    out
}

const HEADER: &str = "//! Generated typed references to every public function of the livebase
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
";

struct Generator<'d> {
    docs: &'d Docs,
    /// Generated structs and enums, in the order they were made.
    types: Vec<String>,
    /// Object and union shapes already generated, by validator.
    shapes: Vec<(Validator, String)>,
    /// Type names taken.
    names: BTreeSet<String>,
    /// Tables named by an id, whose documents no table type declares.
    id_tables: BTreeSet<String>,
}

impl Generator<'_> {
    /// `/// path` and `pub const NAME: KindRef<Args, Result> = kind("path");`.
    fn reference(&mut self, function: &Function) -> String {
        let kind = function.kind().name();
        let reference = match kind {
            "query" => "QueryRef",
            "mutation" => "MutationRef",
            _ => "ActionRef",
        };
        let base = pascal(&function.path.replace([':', '/'], "_"));
        let paginated = function
            .args
            .object_fields()
            .and_then(|f| f.get("paginationOpts"))
            == Some(&v::pagination_opts());
        let (args, result, note) = if paginated {
            let item = function
                .returns
                .as_ref()
                .and_then(|r| r.object_fields())
                .and_then(|f| f.get("page"))
                .and_then(|page| match page {
                    Validator::Array(item) => Some(self.rust_type(item, &format!("{base}Item"))),
                    _ => None,
                });
            let item = item.unwrap_or_else(|| "Value".to_string());
            // Its arguments without `paginationOpts`, which each page adds.
            let mut fields = function.args.object_fields().cloned().unwrap_or_default();
            fields.remove("paginationOpts");
            let args = if fields.is_empty() {
                "Object".to_string()
            } else {
                let name = self.unique(&format!("{base}Args"));
                let made = self.object_struct(&fields, &name);
                self.types.push(made);
                name
            };
            let note = format!(
                "///\n/// A paginated query: drive it with `PaginatedSubscription::of` (its\n/// arguments without `paginationOpts`); each page's items are `{item}`.\n"
            );
            (args, format!("Paginated<{item}>"), note)
        } else {
            // Each function its own argument struct, whatever its shape.
            let args = match function.args.object_fields() {
                Some(fields) if fields.is_empty() => "()".to_string(),
                Some(fields) => {
                    let name = self.unique(&format!("{base}Args"));
                    let item = self.object_struct(fields, &name);
                    self.types.push(item);
                    name
                }
                None => self.rust_type(&function.args, &format!("{base}Args")),
            };
            let result = match &function.returns {
                Some(returns) => self.rust_type(returns, &format!("{base}Result")),
                None => "Value".to_string(),
            };
            (args, result, String::new())
        };
        format!(
            "/// `{}`.\n{note}pub const {}: {reference}<{args}, {result}> = {kind}({});\n",
            function.path,
            constant(function.path.rsplit(':').next().unwrap_or("default")),
            string_literal(&function.path),
        )
    }

    /// The Rust type of `validator`; `name` is what a struct or enum made
    /// for it is called.
    fn rust_type(&mut self, validator: &Validator, name: &str) -> String {
        if let Some(table) = self.docs.table_of(validator) {
            return format!("Doc<{}>", pascal(table));
        }
        match validator {
            Validator::String | Validator::BoundedString(_) => "String".into(),
            Validator::Float64 => "f64".into(),
            Validator::Int64 => "i64".into(),
            Validator::Boolean => "bool".into(),
            Validator::Null => "()".into(),
            Validator::Bytes | Validator::Any | Validator::Literal(_) => "Value".into(),
            Validator::Id(table) => {
                if self.docs.table_of_name(table).is_none() {
                    self.id_tables.insert(table.clone());
                }
                format!("Id<{}>", pascal(table))
            }
            Validator::Optional(inner) => format!("Option<{}>", self.rust_type(inner, name)),
            Validator::Array(inner) => {
                let item = name.strip_suffix("Result").unwrap_or(name);
                format!("Vec<{}>", self.rust_type(inner, &format!("{item}Item")))
            }
            Validator::Record { values, .. } => format!(
                "std::collections::BTreeMap<String, {}>",
                self.rust_type(values, name)
            ),
            Validator::Union(alternatives) => match alternatives.as_slice() {
                [inner, Validator::Null] => format!("Option<{}>", self.rust_type(inner, name)),
                _ if !alternatives.is_empty() && literals(alternatives).is_some() => {
                    self.shape(validator, name, |gen, name| {
                        gen.literal_enum(validator, name)
                    })
                }
                _ => "Value".into(),
            },
            Validator::Object(fields) => {
                let fields = fields.clone();
                self.shape(validator, name, |gen, name| {
                    gen.object_struct(&fields, name)
                })
            }
        }
    }

    /// The type already made for `validator`'s shape, or a new one named
    /// `name` (made unique) by `make`.
    fn shape(
        &mut self,
        validator: &Validator,
        name: &str,
        make: impl FnOnce(&mut Self, &str) -> String,
    ) -> String {
        if let Some((_, existing)) = self.shapes.iter().find(|(v, _)| v == validator) {
            return existing.clone();
        }
        let unique = self.unique(name);
        self.shapes.push((validator.clone(), unique.clone()));
        let item = make(self, &unique);
        self.types.push(item);
        unique
    }

    /// `name`, or `name2`, `name3` … if taken; taken from now on.
    fn unique(&mut self, name: &str) -> String {
        let mut unique = name.to_string();
        let mut n = 2;
        while self.names.contains(&unique) {
            unique = format!("{name}{n}");
            n += 1;
        }
        self.names.insert(unique.clone());
        unique
    }

    fn object_struct(&mut self, fields: &BTreeMap<String, Validator>, name: &str) -> String {
        let mut body = String::new();
        for (key, field) in fields {
            let field_name = snake(key);
            // A struct field `Option<T>` may be absent; a required field that
            // may be null is `Option<Option<T>>`.
            let (ty, bound) = match field {
                Validator::Optional(inner) => {
                    let ty = self.rust_type(inner, &self.field_type_name(inner, name, key));
                    (format!("Option<{ty}>"), max_len(inner))
                }
                Validator::Union(alternatives)
                    if matches!(alternatives.as_slice(), [_, Validator::Null]) =>
                {
                    let ty = self.rust_type(field, &format!("{name}{}", pascal(key)));
                    (format!("Option<{ty}>"), None)
                }
                field => {
                    let ty = self.rust_type(field, &self.field_type_name(field, name, key));
                    (ty, max_len(field))
                }
            };
            let bound = bound.map_or(String::new(), |n| format!(", max_len = {n}"));
            let _ = writeln!(
                body,
                "    #[livebase(rename = {}{bound})]\n    pub {field_name}: {ty},",
                string_literal(key)
            );
        }
        format!(
            "#[derive(Type, Clone, Debug, PartialEq)]\npub struct {name} {{\n{body}}}\nlivebase_sdk::typed_value!({name});\n"
        )
    }

    /// The name of the type made for field `key` of struct `name`: a string
    /// union is named after the field alone (`role` → `Role`) while that
    /// name is free, anything else after the struct and the field.
    fn field_type_name(&self, field: &Validator, name: &str, key: &str) -> String {
        let is_literals =
            matches!(field, Validator::Union(a) if !a.is_empty() && literals(a).is_some());
        if is_literals && !self.names.contains(&pascal(key)) {
            pascal(key)
        } else {
            format!("{name}{}", pascal(key))
        }
    }

    fn literal_enum(&mut self, validator: &Validator, name: &str) -> String {
        let Validator::Union(alternatives) = validator else {
            unreachable!("called for unions")
        };
        let mut body = String::new();
        let mut variants = BTreeSet::new();
        for literal in literals(alternatives).unwrap_or_default() {
            let mut variant = pascal(literal);
            if variant.is_empty() || variant.starts_with(|c: char| c.is_ascii_digit()) {
                variant = format!("V{variant}");
            }
            while !variants.insert(variant.clone()) {
                variant.push('_');
            }
            let _ = writeln!(
                body,
                "    #[livebase(rename = {})]\n    {variant},",
                string_literal(literal)
            );
        }
        format!(
            "#[derive(Type, Clone, Copy, Debug, PartialEq, Eq)]\npub enum {name} {{\n{body}}}\nlivebase_sdk::typed_value!({name});\n"
        )
    }

    /// A type per table: the document types, then the tables named only by
    /// ids.
    fn tables(&mut self) -> String {
        let mut out = String::new();
        let mut docs: Vec<(String, Validator)> = self.docs.0.clone();
        docs.sort_by(|a, b| a.0.cmp(&b.0));
        for (table, doc) in docs {
            let mut fields = doc.object_fields().cloned().unwrap_or_default();
            fields.remove("_id");
            fields.remove("_creationTime");
            let name = pascal(&table);
            let item = self.object_struct(&fields, &name);
            let item = item.replacen(
                "pub struct",
                &format!(
                    "#[livebase(table = {})]\npub struct",
                    string_literal(&table)
                ),
                1,
            );
            let _ = write!(out, "\n/// A document of `{table}`.\n{item}");
        }
        for table in std::mem::take(&mut self.id_tables) {
            let name = pascal(&table);
            let _ = write!(
                out,
                "\n/// The table `{table}`, named by its ids.\npub enum {name} {{}}\nimpl Table for {name} {{\n    const NAME: &'static str = {};\n}}\n",
                string_literal(&table)
            );
        }
        out
    }
}

impl Docs {
    fn table_of_name(&self, table: &str) -> Option<&Validator> {
        self.0.iter().find(|(t, _)| t == table).map(|(_, v)| v)
    }
}

/// The strings of a union of string literals; `None` for any other union.
fn literals(alternatives: &[Validator]) -> Option<Vec<&str>> {
    alternatives
        .iter()
        .map(|a| match a {
            Validator::Literal(Value::String(s)) => Some(s.as_str()),
            _ => None,
        })
        .collect()
}

fn max_len(validator: &Validator) -> Option<usize> {
    match validator {
        Validator::BoundedString(n) => Some(*n),
        _ => None,
    }
}

/// Function references by module: `todos:list` is `todos::LIST`.
#[derive(Default)]
struct Module {
    references: Vec<String>,
    children: BTreeMap<String, Module>,
}

impl Module {
    fn insert(&mut self, path: &[&str], reference: String, _name: &str) {
        match path.split_first() {
            None => self.references.push(reference),
            Some((first, rest)) => self
                .children
                .entry(snake(first))
                .or_default()
                .insert(rest, reference, _name),
        }
    }

    fn render(&self, depth: usize, out: &mut String) {
        let indent = "    ".repeat(depth);
        for reference in &self.references {
            out.push('\n');
            for line in reference.lines() {
                let _ = writeln!(out, "{indent}{line}");
            }
        }
        for (name, child) in &self.children {
            let _ = write!(
                out,
                "\n{indent}pub mod {} {{\n{indent}    use super::*;\n",
                identifier(name)
            );
            child.render(depth + 1, out);
            let _ = writeln!(out, "{indent}}}");
        }
    }
}

/// The words of a name: `userProfiles`, `user_profiles`, `_storage`,
/// `author-name` → `user`, `profiles` …
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        word.push(c.to_ascii_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `userProfiles` → `UserProfiles`.
fn pascal(name: &str) -> String {
    words(name)
        .iter()
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or(String::new(), |c| {
                c.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// `organizationId` → `organization_id`, a valid identifier.
fn snake(name: &str) -> String {
    identifier(&words(name).join("_"))
}

/// `listMine` → `LIST_MINE`.
fn constant(name: &str) -> String {
    let name = words(name).join("_").to_ascii_uppercase();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("F_{name}")
    } else {
        name
    }
}

/// `name` as an identifier: a keyword raw, a leading digit or nothing
/// prefixed.
fn identifier(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern",
        "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
        "pub", "ref", "return", "static", "struct", "trait", "true", "type", "unsafe", "use",
        "where", "while", "abstract", "become", "box", "do", "final", "gen", "macro", "override",
        "priv", "try", "typeof", "unsized", "virtual", "yield",
    ];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("f_{name}")
    } else if ["self", "super", "crate", "Self"].contains(&name) {
        format!("{name}_")
    } else if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_string()
    }
}

fn string_literal(s: &str) -> String {
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_rust_names() {
        assert_eq!(pascal("userProfiles"), "UserProfiles");
        assert_eq!(pascal("_storage"), "Storage");
        assert_eq!(pascal("todos:listMine"), "TodosListMine");
        assert_eq!(snake("organizationId"), "organization_id");
        assert_eq!(snake("_creationTime"), "creation_time");
        assert_eq!(snake("type"), "r#type");
        assert_eq!(snake("author-name"), "author_name");
        assert_eq!(snake("2fa"), "f_2fa");
        assert_eq!(constant("listMine"), "LIST_MINE");
        assert_eq!(constant("generateUploadUrl"), "GENERATE_UPLOAD_URL");
    }
}
