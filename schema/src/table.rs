//! Table and index definitions, in the seed's `defineTable({..}).index(..)` shape,
//! the schema that collects them, and the checks that catch a malformed schema
//! before the store opens: names, duplicates, reserved names, index fields.
//!
//! The builders never fail, so that a schema reads like the seed's TypeScript;
//! every mistake they let through is reported by [`Schema::check`].

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::validator::{check_object_fields, ValidationError, Validator};
use crate::value::{check_field_name, Object};

/// The system field holding a document's id.
pub const ID_FIELD: &str = "_id";
/// The system field holding a document's creation time (ms since the epoch, float64).
pub const CREATION_TIME_FIELD: &str = "_creationTime";
/// The system index every table has, on `_id`.
pub const BY_ID: &str = "by_id";
/// The system index every table has, on `_creationTime` then `_id`.
pub const BY_CREATION_TIME: &str = "by_creation_time";

/// `by_id` and `by_creation_time`, shared by every table.
static SYSTEM_INDEXES: LazyLock<[IndexDefinition; 2]> = LazyLock::new(|| {
    [
        IndexDefinition::new(BY_ID, [ID_FIELD]),
        IndexDefinition::new(BY_CREATION_TIME, [CREATION_TIME_FIELD]),
    ]
});

/// An index: a name and the fields it orders by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDefinition {
    name: String,
    fields: Vec<String>,
}

impl IndexDefinition {
    fn new(name: &str, fields: impl IntoIterator<Item = impl Into<String>>) -> Self {
        IndexDefinition {
            name: name.to_string(),
            fields: fields.into_iter().map(Into::into).collect(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fields as declared, e.g. `["organizationId", "status"]`.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The full ordering of the index: its fields, then `_creationTime`, then
    /// `_id`, each system field only if not already there. Ending in `_id` makes
    /// every key unique, so an index entry names exactly one document; `by_id` is
    /// just `_id`, and `by_creation_time` is `_creationTime, _id`.
    pub fn key_fields(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        if keys.contains(&ID_FIELD) {
            // `_id` is unique, so nothing after it could change the order.
            return keys;
        }
        if !keys.contains(&CREATION_TIME_FIELD) {
            keys.push(CREATION_TIME_FIELD);
        }
        keys.push(ID_FIELD);
        keys
    }

    /// Whether this is `by_id` or `by_creation_time`.
    pub fn is_system(&self) -> bool {
        self.name == BY_ID || self.name == BY_CREATION_TIME
    }
}

/// One table: the validators of its user fields and its declared indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDefinition {
    fields: BTreeMap<String, Validator>,
    indexes: Vec<IndexDefinition>,
    /// Field names given more than once to [`define_table`]; the last one wins,
    /// and [`Schema::check`] reports them.
    duplicate_fields: Vec<String>,
}

/// Defines a table from its user fields, as the seed's `defineTable({..})`:
///
/// ```
/// use livebase_schema::{define_table, v};
/// let items = define_table([
///     ("name", v::string()),
///     ("organizationId", v::string()),
///     ("createdBy", v::string()),
/// ])
/// .index("by_organization", ["organizationId"]);
/// assert_eq!(items.indexes().len(), 1);
/// ```
pub fn define_table<'a>(fields: impl IntoIterator<Item = (&'a str, Validator)>) -> TableDefinition {
    let mut map = BTreeMap::new();
    let mut duplicate_fields = Vec::new();
    for (name, validator) in fields {
        if map.insert(name.to_string(), validator).is_some() {
            duplicate_fields.push(name.to_string());
        }
    }
    TableDefinition {
        fields: map,
        indexes: Vec::new(),
        duplicate_fields,
    }
}

impl TableDefinition {
    /// Declares an index ordering by `fields` (then `_creationTime`, then `_id`).
    pub fn index(
        mut self,
        name: &str,
        fields: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.indexes.push(IndexDefinition::new(name, fields));
        self
    }

    /// The user fields' validators (system fields are not listed).
    pub fn fields(&self) -> &BTreeMap<String, Validator> {
        &self.fields
    }

    pub fn field(&self, name: &str) -> Option<&Validator> {
        self.fields.get(name)
    }

    /// The declared indexes, in declaration order, without the system ones.
    pub fn indexes(&self) -> &[IndexDefinition] {
        &self.indexes
    }

    /// `by_id` and `by_creation_time`, then the declared indexes.
    pub fn all_indexes(&self) -> impl Iterator<Item = &IndexDefinition> {
        SYSTEM_INDEXES.iter().chain(self.indexes.iter())
    }

    /// An index by name, system indexes included. (Named `get_index` because
    /// `index` is the builder.)
    pub fn get_index(&self, name: &str) -> Option<&IndexDefinition> {
        self.all_indexes().find(|index| index.name == name)
    }

    /// Checks a document's user fields against the table; `table` is the root of
    /// error paths (`items.status`). `_id` and `_creationTime` are skipped when
    /// present — the store sets them; any other unknown field is rejected.
    pub fn validate_document(&self, table: &str, doc: &Object) -> Result<(), ValidationError> {
        check_object_fields(&self.fields, doc, table, |name| {
            name == ID_FIELD || name == CREATION_TIME_FIELD
        })
    }

    /// The first thing wrong with this table's definition, if any.
    fn check(&self, table: &str) -> Result<(), SchemaError> {
        if let Some(field) = self.duplicate_fields.first() {
            return Err(SchemaError::DuplicateField {
                table: table.to_string(),
                field: field.clone(),
            });
        }
        for (name, validator) in &self.fields {
            let reason = if name.starts_with('_') {
                Some("names starting with `_` are reserved for system fields".to_string())
            } else {
                check_field_name(name).err()
            };
            if let Some(reason) = reason {
                return Err(SchemaError::InvalidFieldName {
                    table: table.to_string(),
                    field: name.clone(),
                    reason,
                });
            }
            validator
                .check_definition(&format!("{table}.{name}"))
                .map_err(|error| SchemaError::InvalidValidator {
                    table: table.to_string(),
                    error,
                })?;
        }
        for (i, index) in self.indexes.iter().enumerate() {
            let err = |kind: fn(String, String) -> SchemaError| {
                Err(kind(table.to_string(), index.name.clone()))
            };
            if index.name == BY_ID || index.name == BY_CREATION_TIME || index.name.starts_with('_')
            {
                return err(|table, index| SchemaError::ReservedIndexName { table, index });
            }
            if !is_identifier(&index.name) {
                return err(|table, index| SchemaError::InvalidIndexName { table, index });
            }
            if self.indexes[..i]
                .iter()
                .any(|other| other.name == index.name)
            {
                return err(|table, index| SchemaError::DuplicateIndex { table, index });
            }
            if index.fields.is_empty() {
                return err(|table, index| SchemaError::EmptyIndex { table, index });
            }
            for (j, field) in index.fields.iter().enumerate() {
                if !self.fields.contains_key(field) {
                    return Err(SchemaError::UnknownIndexField {
                        table: table.to_string(),
                        index: index.name.clone(),
                        field: field.clone(),
                    });
                }
                if index.fields[..j].contains(field) {
                    return Err(SchemaError::DuplicateIndexField {
                        table: table.to_string(),
                        index: index.name.clone(),
                        field: field.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Something wrong with a schema, found by [`Schema::check`]. Every message names
/// the table, and the index or field where there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A table name that is not `[A-Za-z][A-Za-z0-9_]*` (system tables may also
    /// start with `_`).
    #[error("table name `{table}` is invalid: {reason}")]
    InvalidTableName { table: String, reason: String },
    /// The same table defined twice.
    #[error("table `{table}` is defined more than once")]
    DuplicateTable { table: String },
    /// The same field given twice to `define_table`.
    #[error("table `{table}`: field `{field}` is defined more than once")]
    DuplicateField { table: String, field: String },
    /// A field name that starts with `_` (reserved for system fields) or is not a
    /// valid field name.
    #[error("table `{table}`: field name `{field}` is invalid: {reason}")]
    InvalidFieldName {
        table: String,
        field: String,
        reason: String,
    },
    /// A field validator Convex would refuse (see [`Validator::check_definition`]).
    #[error("table `{table}`: invalid validator at {error}")]
    InvalidValidator {
        table: String,
        error: ValidationError,
    },
    /// Two indexes of one table with the same name.
    #[error("table `{table}`: index `{index}` is defined more than once")]
    DuplicateIndex { table: String, index: String },
    /// An index named `by_id`, `by_creation_time` or starting with `_`.
    #[error("table `{table}`: index name `{index}` is reserved (`by_id`, `by_creation_time` and names starting with `_` belong to the system)")]
    ReservedIndexName { table: String, index: String },
    /// An index name that is not `[A-Za-z][A-Za-z0-9_]*`.
    #[error("table `{table}`: index name `{index}` is invalid: it must be a letter followed by letters, digits or `_`")]
    InvalidIndexName { table: String, index: String },
    /// An index declared with no fields.
    #[error("table `{table}`: index `{index}` has no fields")]
    EmptyIndex { table: String, index: String },
    /// An index on a field the table does not declare.
    #[error(
        "table `{table}`: index `{index}` is on field `{field}`, which the table does not declare"
    )]
    UnknownIndexField {
        table: String,
        index: String,
        field: String,
    },
    /// An index that names one field twice.
    #[error("table `{table}`: index `{index}` names field `{field}` more than once")]
    DuplicateIndexField {
        table: String,
        index: String,
        field: String,
    },
}

/// The tables of an application (and the system tables the runtime adds).
#[derive(Clone, Debug, Default)]
pub struct Schema {
    /// Tables in declaration order; a repeated name is kept out and recorded in
    /// `duplicates` instead.
    tables: Vec<SchemaTable>,
    duplicates: Vec<String>,
}

#[derive(Clone, Debug)]
struct SchemaTable {
    name: String,
    definition: TableDefinition,
    system: bool,
}

impl Schema {
    pub fn new() -> Self {
        Schema::default()
    }

    /// Adds an application table. Names are checked by [`Schema::check`]: a leading
    /// `_` is reserved for system tables.
    pub fn table(self, name: &str, definition: TableDefinition) -> Self {
        self.add(name, definition, false)
    }

    /// Adds a system table (the runtime's own, such as scheduled jobs); its name
    /// may start with `_`.
    pub fn system_table(self, name: &str, definition: TableDefinition) -> Self {
        self.add(name, definition, true)
    }

    fn add(mut self, name: &str, definition: TableDefinition, system: bool) -> Self {
        if self.get(name).is_some() {
            self.duplicates.push(name.to_string());
        } else {
            self.tables.push(SchemaTable {
                name: name.to_string(),
                definition,
                system,
            });
        }
        self
    }

    pub fn get(&self, name: &str) -> Option<&TableDefinition> {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .map(|t| &t.definition)
    }

    /// Whether `name` was added with [`Schema::system_table`].
    pub fn is_system_table(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t.name == name && t.system)
    }

    /// The tables in declaration order.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableDefinition)> {
        self.tables.iter().map(|t| (t.name.as_str(), &t.definition))
    }

    /// Reports the first mistake in the schema: duplicate or badly named tables,
    /// bad field names or validators, and duplicate, reserved, empty or unknown-field
    /// indexes.
    pub fn check(&self) -> Result<(), SchemaError> {
        if let Some(table) = self.duplicates.first() {
            return Err(SchemaError::DuplicateTable {
                table: table.clone(),
            });
        }
        for table in &self.tables {
            check_table_name(&table.name, table.system)?;
            table.definition.check(&table.name)?;
        }
        Ok(())
    }
}

fn check_table_name(name: &str, system: bool) -> Result<(), SchemaError> {
    let invalid = |reason: &str| {
        Err(SchemaError::InvalidTableName {
            table: name.to_string(),
            reason: reason.to_string(),
        })
    };
    let rest = match name.strip_prefix('_') {
        Some(rest) if system => rest,
        Some(_) => return invalid("names starting with `_` are reserved for system tables"),
        None => name,
    };
    if is_identifier(rest) {
        Ok(())
    } else {
        invalid("it must be a letter followed by letters, digits or `_`")
    }
}

/// `[A-Za-z][A-Za-z0-9_]*`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validator::v;
    use crate::{obj, Value};

    fn items() -> TableDefinition {
        define_table([
            ("name", v::string()),
            ("status", v::string()),
            ("organizationId", v::string()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"])
        .index("by_organization_status", ["organizationId", "status"])
    }

    fn todos() -> TableDefinition {
        define_table([
            ("text", v::string()),
            ("done", v::boolean()),
            ("assignee", v::optional(v::id("users"))),
            ("organizationId", v::string()),
            ("createdBy", v::string()),
        ])
        .index("by_organization", ["organizationId"])
    }

    /// The error of a schema with just `table` named `items`.
    fn check_one(table: TableDefinition) -> SchemaError {
        Schema::new()
            .table("items", table)
            .check()
            .expect_err("expected a schema error")
    }

    #[test]
    fn the_seed_schema_checks_and_reads_back() {
        let schema = Schema::new()
            .table("items", items())
            .table("todos", todos());
        assert_eq!(schema.check(), Ok(()));
        let names: Vec<&str> = schema.tables().map(|(name, _)| name).collect();
        assert_eq!(names, ["items", "todos"]);

        let items = schema.get("items").expect("items is defined");
        assert_eq!(items.field("status"), Some(&v::string()));
        assert_eq!(items.fields().len(), 4);
        assert_eq!(items.indexes().len(), 2);
        assert!(schema.get("nope").is_none());
        assert!(!schema.is_system_table("items"));
    }

    #[test]
    fn every_table_has_the_system_indexes_first() {
        let items = items();
        let names: Vec<&str> = items.all_indexes().map(IndexDefinition::name).collect();
        assert_eq!(
            names,
            [
                BY_ID,
                BY_CREATION_TIME,
                "by_organization",
                "by_organization_status"
            ]
        );
        assert!(items
            .get_index(BY_ID)
            .is_some_and(IndexDefinition::is_system));
        assert!(items
            .get_index("by_organization")
            .is_some_and(|i| !i.is_system()));
        assert_eq!(items.get_index("by_nothing"), None);
    }

    #[test]
    fn indexes_order_by_their_fields_then_creation_time_then_id() {
        let items = items();
        let keys = |name: &str| items.get_index(name).map(IndexDefinition::key_fields);
        assert_eq!(keys(BY_ID), Some(vec!["_id"]));
        assert_eq!(keys(BY_CREATION_TIME), Some(vec!["_creationTime", "_id"]));
        assert_eq!(
            keys("by_organization_status"),
            Some(vec!["organizationId", "status", "_creationTime", "_id"])
        );
        let index = items.get_index("by_organization_status");
        assert_eq!(
            index.map(IndexDefinition::fields),
            Some(&["organizationId".to_string(), "status".to_string()][..])
        );
    }

    #[test]
    fn table_names_must_be_identifiers_and_not_start_with_underscore() {
        for bad in ["", "1items", "my-items", "_items", "it ems"] {
            let err = Schema::new().table(bad, items()).check().unwrap_err();
            assert!(
                matches!(&err, SchemaError::InvalidTableName { table, .. } if table == bad),
                "{bad}: {err}"
            );
        }
        let err = Schema::new().table("_jobs", items()).check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "table name `_jobs` is invalid: names starting with `_` are reserved for system tables"
        );
        let schema =
            Schema::new().system_table("_scheduled_jobs", define_table([("name", v::string())]));
        assert_eq!(schema.check(), Ok(()));
        assert!(schema.is_system_table("_scheduled_jobs"));
        let err = Schema::new()
            .system_table("__x", items())
            .check()
            .unwrap_err();
        assert!(matches!(err, SchemaError::InvalidTableName { .. }), "{err}");
        assert_eq!(
            Schema::new().table("user_profiles2", items()).check(),
            Ok(())
        );
    }

    #[test]
    fn a_table_defined_twice_is_reported_and_the_first_kept() {
        let schema = Schema::new()
            .table("items", items())
            .table("items", todos());
        assert_eq!(
            schema.check(),
            Err(SchemaError::DuplicateTable {
                table: "items".into()
            })
        );
        assert_eq!(schema.get("items"), Some(&items()));
        assert_eq!(schema.tables().count(), 1);
    }

    #[test]
    fn field_names_are_checked() {
        let err = check_one(define_table([("_secret", v::string())]));
        assert_eq!(
            err.to_string(),
            "table `items`: field name `_secret` is invalid: names starting with `_` are reserved for system fields"
        );
        let err = check_one(define_table([("$x", v::string())]));
        assert!(
            matches!(err, SchemaError::InvalidFieldName { ref field, .. } if field == "$x"),
            "{err}"
        );
        let err = check_one(define_table([("a", v::string()), ("a", v::int64())]));
        assert_eq!(
            err.to_string(),
            "table `items`: field `a` is defined more than once"
        );
    }

    #[test]
    fn field_validators_are_checked() {
        let err = check_one(define_table([("tags", v::array(v::optional(v::string())))]));
        assert!(
            matches!(&err, SchemaError::InvalidValidator { table, error } if table == "items" && error.path == "items.tags[0]"),
            "{err}"
        );
        let err = check_one(define_table([("m", v::record(v::int64(), v::any()))]));
        assert!(
            err.to_string()
                .starts_with("table `items`: invalid validator at items.m: record keys"),
            "{err}"
        );
    }

    #[test]
    fn index_mistakes_are_reported_by_name() {
        let cases = [
            (
                items().index("by_organization", ["status"]),
                "table `items`: index `by_organization` is defined more than once",
            ),
            (
                items().index(BY_ID, ["status"]),
                "table `items`: index name `by_id` is reserved (`by_id`, `by_creation_time` and names starting with `_` belong to the system)",
            ),
            (
                items().index(BY_CREATION_TIME, ["status"]),
                "table `items`: index name `by_creation_time` is reserved (`by_id`, `by_creation_time` and names starting with `_` belong to the system)",
            ),
            (
                items().index("_mine", ["status"]),
                "table `items`: index name `_mine` is reserved (`by_id`, `by_creation_time` and names starting with `_` belong to the system)",
            ),
            (
                items().index("by status", ["status"]),
                "table `items`: index name `by status` is invalid: it must be a letter followed by letters, digits or `_`",
            ),
            (
                items().index("by_nothing", Vec::<String>::new()),
                "table `items`: index `by_nothing` has no fields",
            ),
            (
                items().index("by_owner", ["ownerId"]),
                "table `items`: index `by_owner` is on field `ownerId`, which the table does not declare",
            ),
            (
                items().index("by_time", [CREATION_TIME_FIELD]),
                "table `items`: index `by_time` is on field `_creationTime`, which the table does not declare",
            ),
            (
                items().index("by_status_twice", ["status", "status"]),
                "table `items`: index `by_status_twice` names field `status` more than once",
            ),
        ];
        for (table, expected) in cases {
            assert_eq!(check_one(table).to_string(), expected);
        }
    }

    #[test]
    fn documents_are_validated_with_the_table_as_root() {
        let items = items();
        let mut doc = obj! {
            "name" => "a", "status" => "open", "organizationId" => "o", "createdBy" => "u",
        };
        let fields = |doc: &Value| doc.as_object().cloned().unwrap_or_default();
        assert_eq!(items.validate_document("items", &fields(&doc)), Ok(()));

        if let Value::Object(o) = &mut doc {
            o.insert(ID_FIELD.to_string(), "items_0123456789abcdef".into());
            o.insert(CREATION_TIME_FIELD.to_string(), 1.0.into());
        }
        assert_eq!(items.validate_document("items", &fields(&doc)), Ok(()));

        let mut wrong = fields(&doc);
        wrong.insert("status".into(), 1.0.into());
        let err = items.validate_document("items", &wrong).unwrap_err();
        assert_eq!(
            err.to_string(),
            "items.status: expected string, found float64 1"
        );

        let mut extra = fields(&doc);
        extra.insert("_other".into(), 1.0.into());
        let err = items.validate_document("items", &extra).unwrap_err();
        assert_eq!(
            err.to_string(),
            "items: unknown field `_other` (expected one of: createdBy, name, organizationId, status)"
        );

        let mut missing = fields(&doc);
        missing.remove("name");
        let err = items.validate_document("items", &missing).unwrap_err();
        assert_eq!(err.to_string(), "items: missing required field `name`");
    }

    #[test]
    fn optional_document_fields_may_be_absent() {
        let todos = todos();
        let doc = obj! {
            "text" => "t", "done" => false, "organizationId" => "o", "createdBy" => "u",
        };
        let doc = doc.as_object().cloned().unwrap_or_default();
        assert_eq!(todos.validate_document("todos", &doc), Ok(()));

        let mut assigned = doc.clone();
        assigned.insert("assignee".into(), "abc".into());
        let err = todos.validate_document("todos", &assigned).unwrap_err();
        assert_eq!(err.path, "todos.assignee");
    }
}
