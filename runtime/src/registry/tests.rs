use livebase_schema::typed::Type;
use livebase_schema::{obj, v, Schema, Value};

use super::*;

#[derive(Type, Debug, PartialEq)]
struct CreateNote {
    organization_id: String,
    #[livebase(max_len = 5)]
    text: String,
    tags: Option<Vec<String>>,
}

/// The same function registered untyped and typed.
fn both() -> Registry {
    let mut app = Registry::new(Schema::new());
    app.mutation(
        "notes:createUntyped",
        [
            ("organizationId", v::string()),
            ("text", v::string().max_len(5)),
            ("tags", v::optional(v::array(v::string()))),
        ],
        |_, _| Ok(Value::Null),
    );
    app.typed_mutation("notes:create", |_, _args: CreateNote| Ok(true));
    app
}

fn refusal(app: &Registry, path: &str, args: Value) -> String {
    let function = app.get(path).expect("registered");
    let e = Registry::check_args(function, &[args]).expect_err("refused");
    assert_eq!(e.code(), Some(&crate::ErrorCode::InvalidArgument), "{e:?}");
    e.to_string()
}

#[test]
fn a_typed_function_refuses_bad_arguments_as_an_untyped_one_does() {
    let app = both();
    let typed = app.get("notes:create").expect("registered");
    assert_eq!(typed.args, app.get("notes:createUntyped").unwrap().args);
    assert_eq!(typed.returns, Some(v::boolean()));
    assert_eq!(app.get("notes:createUntyped").unwrap().returns, None);
    for bad in [
        obj! { "organizationId" => "o", "text" => 5.0 },
        obj! { "organizationId" => "o", "text" => "too long" },
        obj! { "text" => "hi" },
        obj! { "organizationId" => "o", "text" => "hi", "tags" => vec![Value::from(1.0)] },
        obj! { "organizationId" => "o", "text" => "hi", "extra" => true },
    ] {
        assert_eq!(
            refusal(&app, "notes:create", bad.clone()),
            refusal(&app, "notes:createUntyped", bad)
        );
    }
    assert_eq!(
        refusal(
            &app,
            "notes:create",
            obj! { "organizationId" => "o", "text" => 5.0 }
        ),
        "INVALID_ARGUMENT: args.text: expected string(max 5 chars), found float64 5"
    );
}

#[derive(Type)]
struct PageArgs {
    pagination_opts: crate::pagination::PaginationOpts,
}

/// What the validator accepts but the argument's own reading refuses
/// (a page of -1 items) is refused with the reading's words, as an
/// untyped handler calling `PaginationOpts::from_value` answered.
#[test]
fn a_typed_argument_refused_by_its_reading_keeps_its_words() {
    let mut app = Registry::new(Schema::new());
    app.typed_query("notes:page", |_, _args: PageArgs| Ok(()));
    let opts = obj! { "numItems" => -1.0, "cursor" => Value::Null };
    let function = app.get("notes:page").expect("registered");
    let args = Registry::check_args(function, &[obj! { "paginationOpts" => opts.clone() }])
        .expect("the validator accepts it");
    let typed = typed_args::<PageArgs>(args)
        .map(|_| ())
        .expect_err("refused");
    let untyped = crate::pagination::PaginationOpts::from_value(&opts).expect_err("refused");
    assert_eq!(typed, untyped);
    assert_eq!(
        typed.to_string(),
        "INVALID_ARGUMENT: paginationOpts.numItems: expected a whole number of at least 0, found -1.0"
    );
}

#[test]
fn a_typed_function_reads_its_checked_arguments() {
    let app = both();
    let function = app.get("notes:create").expect("registered");
    let args = Registry::check_args(
        function,
        &[obj! { "organizationId" => "o", "text" => "hi" }],
    )
    .expect("accepted");
    assert_eq!(
        typed_args::<CreateNote>(args),
        Ok(CreateNote {
            organization_id: "o".into(),
            text: "hi".into(),
            tags: None,
        })
    );
}
