use super::*;
use crate::obj;

#[derive(Type, Clone, Debug, PartialEq)]
#[livebase(table = "todos")]
struct Todo {
    #[livebase(max_len = 10)]
    text: String,
    completed: bool,
    organization_id: String,
    #[livebase(rename = "by")]
    created_by: Option<String>,
}

#[derive(Type, Debug, PartialEq)]
enum Role {
    Owner,
    #[livebase(rename = "ADMIN")]
    Admin,
}

#[derive(Type, Debug, PartialEq)]
enum Answer {
    No,
    Count(f64),
    Todo(Doc<Todo>),
}

#[derive(Type, Debug, PartialEq)]
struct Nested {
    roles: Vec<Role>,
    todo: Option<Id<Todo>>,
    nullable: Option<Option<String>>,
}

#[derive(Type, Debug, PartialEq)]
struct NoArgs;

#[derive(Type, Debug, PartialEq)]
struct TodoWithUrl {
    #[livebase(flatten)]
    todo: Doc<Todo>,
    url: Option<String>,
}

#[test]
fn a_flattened_field_puts_its_fields_beside_the_structs_own() {
    let mut expected = Doc::<Todo>::validator().object_fields().unwrap().clone();
    expected.insert("url".into(), v::optional(v::string()));
    assert_eq!(TodoWithUrl::validator(), Validator::Object(expected));
    let id = Id::<Todo>::generate();
    let value = obj! {
        "_id" => id.as_str(),
        "_creationTime" => 2.0,
        "text" => "milk",
        "completed" => false,
        "organizationId" => "o",
        "url" => "https://x",
    };
    assert_eq!(TodoWithUrl::validator().validate(&value, "r"), Ok(()));
    let read = TodoWithUrl::from_value(value.clone(), "r").unwrap();
    assert_eq!(read.todo.id, id);
    assert_eq!(read.url.as_deref(), Some("https://x"));
    assert_eq!(read.into_value(), value);
}

#[test]
fn a_struct_is_an_object_of_camel_cased_fields() {
    assert_eq!(
        Todo::validator(),
        v::object([
            ("text", v::string().max_len(10)),
            ("completed", v::boolean()),
            ("organizationId", v::string()),
            ("by", v::optional(v::string())),
        ])
    );
    assert_eq!(NoArgs::validator(), v::object([]));
    assert_eq!(
        Nested::validator(),
        v::object([
            (
                "roles",
                v::array(v::union([v::literal("owner"), v::literal("ADMIN")]))
            ),
            ("todo", v::optional(v::id("todos"))),
            ("nullable", v::optional(v::union([v::string(), v::null()]))),
        ])
    );
}

#[test]
fn values_round_trip_and_absent_is_not_null() {
    let todo = Todo {
        text: "milk".into(),
        completed: false,
        organization_id: "o".into(),
        created_by: None,
    };
    let value = todo.clone().into_value();
    assert_eq!(
        value,
        obj! { "text" => "milk", "completed" => false, "organizationId" => "o" }
    );
    assert_eq!(Todo::from_value(value, "args"), Ok(todo));

    let nested = Nested {
        roles: vec![Role::Admin, Role::Owner],
        todo: None,
        nullable: Some(None),
    };
    let value = obj! { "roles" => vec![Value::from("ADMIN"), Value::from("owner")], "nullable" => Value::Null };
    assert_eq!(Nested::validator().validate(&value, "args"), Ok(()));
    assert_eq!(Nested::from_value(value.clone(), "args"), Ok(nested));
    let nested = Nested::from_value(value, "args").unwrap();
    assert_eq!(
        nested.into_value(),
        obj! { "roles" => vec![Value::from("ADMIN"), Value::from("owner")], "nullable" => Value::Null }
    );
}

#[test]
fn a_document_carries_its_id_and_creation_time() {
    let id = Id::<Todo>::generate();
    let value = obj! {
        "_id" => id.as_str(),
        "_creationTime" => 1.5,
        "text" => "milk",
        "completed" => true,
        "organizationId" => "o",
    };
    assert_eq!(Doc::<Todo>::validator().validate(&value, "doc"), Ok(()));
    let doc = Doc::<Todo>::from_value(value.clone(), "doc").unwrap();
    assert_eq!(doc.id, id);
    assert!(doc.completed);
    assert_eq!(doc.into_value(), value);
    // An id of another table is not an id of this one.
    let other = obj! { "_id" => DocumentId::generate("items").as_str(), "_creationTime" => 1.5,
    "text" => "milk", "completed" => true, "organizationId" => "o" };
    let e = Doc::<Todo>::from_value(other, "doc").unwrap_err();
    assert_eq!(e.path, "doc._id");
}

#[test]
fn a_union_reads_the_first_alternative_that_accepts_the_value() {
    assert_eq!(Answer::from_value("no".into(), "r"), Ok(Answer::No));
    assert_eq!(Answer::from_value(2.0.into(), "r"), Ok(Answer::Count(2.0)));
    assert_eq!(Answer::Count(3.0).into_value(), Value::Float64(3.0));
    assert!(Answer::from_value("yes".into(), "r").is_err());
    assert_eq!(
        Role::from_value("admin".into(), "args.role")
            .unwrap_err()
            .path,
        "args.role"
    );
}

#[test]
fn a_table_is_defined_by_its_document_type() {
    let table = table_of::<Todo>();
    assert_eq!(table.field("text"), Some(&v::string().max_len(10)));
    assert_eq!(table.field("by"), Some(&v::optional(v::string())));
    assert_eq!(table.fields().len(), 4);
}
