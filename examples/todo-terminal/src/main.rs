//! A terminal todo client on the livebase Rust SDK: it shows an
//! organization's todos live while other clients edit them.
//!
//! Run a server (`cargo run --release -- dev`), then:
//!
//! ```sh
//! cargo run -p todo-terminal -- --url http://127.0.0.1:3900 \
//!     --email ada@example.com --password 'correct horse' [--org SLUG] watch
//! # in another terminal, as the same user:
//! cargo run -p todo-terminal -- --email ada@example.com --password 'correct horse' add 'ship it'
//! cargo run -p todo-terminal -- --email ada@example.com --password 'correct horse' toggle <ID>
//! ```
//!
//! It signs in (signing up first if the email has no user yet), finds the
//! organization `--org SLUG` among the user's own or creates it (the default
//! slug comes from the email), then runs one command:
//!
//! - `add TEXT` — creates a todo and prints its id;
//! - `toggle ID` — flips a todo's `completed`;
//! - `watch` (the default) — prints the list, `--- N todos ---` first, and
//!   again on every change, until Ctrl-C or, with `--updates N`, after N lists.

use std::process::ExitCode;

use futures::StreamExt;
use livebase_schema::{obj, DecodeError, Value};
use livebase_sdk::auth::{self, AuthError};
use livebase_sdk::{Client, Fields, FromValue, IntoArgs};

/// The application's functions this client calls, typed (see `docs/reference/app.md`).
mod api {
    use livebase_sdk::{mutation, query, MutationRef, QueryRef, Value};

    use super::{CreateOrganization, OrganizationArgs, OrganizationSummary, Todo, TodoId};
    use super::{TodoArgs, TodoText};

    pub const LIST_MINE: QueryRef<OrganizationArgs, Vec<OrganizationSummary>> =
        query("organizations:listMine");
    pub const CREATE_ORGANIZATION: MutationRef<CreateOrganization, String> =
        mutation("organizations:create");
    pub const LIST_TODOS: QueryRef<TodoArgs, Vec<Todo>> = query("todos:list");
    pub const CREATE_TODO: MutationRef<TodoText, String> = mutation("todos:create");
    pub const TOGGLE_TODO: MutationRef<TodoId, Value> = mutation("todos:toggle");
}

/// `organizations:listMine {}`.
struct OrganizationArgs;

impl IntoArgs for OrganizationArgs {
    fn into_args(self) -> Value {
        obj! {}
    }
}

/// One of `organizations:listMine`'s results.
struct OrganizationSummary {
    id: String,
    slug: String,
}

impl FromValue for OrganizationSummary {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        let mut fields = Fields::new(value)?;
        Ok(OrganizationSummary {
            id: fields.take("_id")?,
            slug: fields.take("slug")?,
        })
    }
}

struct CreateOrganization {
    name: String,
    slug: String,
}

impl IntoArgs for CreateOrganization {
    fn into_args(self) -> Value {
        obj! { "name" => self.name, "slug" => self.slug }
    }
}

/// `todos:list {organizationId}`.
struct TodoArgs {
    organization_id: String,
}

impl IntoArgs for TodoArgs {
    fn into_args(self) -> Value {
        obj! { "organizationId" => self.organization_id }
    }
}

/// `todos:create {organizationId, text}`.
struct TodoText {
    organization_id: String,
    text: String,
}

impl IntoArgs for TodoText {
    fn into_args(self) -> Value {
        obj! { "organizationId" => self.organization_id, "text" => self.text }
    }
}

/// `todos:toggle {id}`.
struct TodoId {
    id: String,
}

impl IntoArgs for TodoId {
    fn into_args(self) -> Value {
        obj! { "id" => self.id }
    }
}

/// A document of the `todos` table.
struct Todo {
    id: String,
    text: String,
    completed: bool,
}

impl FromValue for Todo {
    fn from_value(value: Value) -> Result<Self, DecodeError> {
        let mut fields = Fields::new(value)?;
        Ok(Todo {
            id: fields.take("_id")?,
            text: fields.take("text")?,
            completed: fields.take("completed")?,
        })
    }
}

enum Command {
    Add(String),
    Toggle(String),
    Watch { updates: Option<usize> },
}

struct Options {
    url: String,
    email: String,
    password: String,
    org: Option<String>,
    command: Command,
}

const USAGE: &str = "usage: todo-terminal [--url URL] --email EMAIL --password PASSWORD \
[--org SLUG] [add TEXT | toggle ID | watch [--updates N]]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut url = "http://127.0.0.1:3900".to_string();
    let (mut email, mut password, mut org, mut updates) = (None, None, None, None);
    let mut words = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--url" => url = value("--url")?,
            "--email" => email = Some(value("--email")?),
            "--password" => password = Some(value("--password")?),
            "--org" => org = Some(value("--org")?),
            "--updates" => {
                let n = value("--updates")?;
                updates = Some(
                    n.parse()
                        .map_err(|_| format!("--updates {n}: not a number"))?,
                );
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => words.push(arg),
        }
    }
    let command = match words.as_slice() {
        [] => Command::Watch { updates },
        [w] if w == "watch" => Command::Watch { updates },
        [w, text] if w == "add" => Command::Add(text.clone()),
        [w, id] if w == "toggle" => Command::Toggle(id.clone()),
        other => return Err(format!("unknown command {other:?}")),
    };
    Ok(Options {
        url,
        email: email.ok_or("--email is required")?,
        password: password.ok_or("--password is required")?,
        org,
        command,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let session = sign_in_or_up(&options).await?;
    let client = Client::connect(&options.url)
        .await
        .map_err(|e| e.to_string())?;
    client
        .set_auth(Some(session.token))
        .await
        .map_err(|e| e.to_string())?;
    let slug = options
        .org
        .clone()
        .unwrap_or_else(|| slug_from(&options.email));
    let organization_id = find_or_create_organization(&client, &slug).await?;

    match options.command {
        Command::Add(text) => {
            let args = TodoText {
                organization_id,
                text,
            };
            let id = client
                .mutation(api::CREATE_TODO, args)
                .await
                .map_err(|e| format!("todos:create: {e}"))?;
            println!("added {id}");
        }
        Command::Toggle(id) => {
            client
                .mutation(api::TOGGLE_TODO, TodoId { id: id.clone() })
                .await
                .map_err(|e| format!("todos:toggle: {e}"))?;
            println!("toggled {id}");
        }
        Command::Watch { updates } => {
            let args = TodoArgs { organization_id };
            let mut todos = client.subscribe(api::LIST_TODOS, args);
            let mut printed = 0;
            while updates.is_none_or(|n| printed < n) {
                let next = tokio::select! {
                    next = todos.next() => next,
                    _ = tokio::signal::ctrl_c() => break,
                };
                match next {
                    Some(Ok(list)) => print_list(&list),
                    Some(Err(e)) => return Err(format!("todos:list: {e}")),
                    None => return Err("the connection closed".into()),
                }
                printed += 1;
            }
        }
    }
    Ok(())
}

/// Signs in; an email with no user yet (or a wrong password, which the
/// server does not tell apart) is then tried as a sign-up.
async fn sign_in_or_up(options: &Options) -> Result<auth::Session, String> {
    let (url, email, password) = (&options.url, &options.email, &options.password);
    match auth::sign_in(url, email, password).await {
        Ok(session) => Ok(session),
        Err(AuthError::InvalidCredentials(message)) => {
            let name = email.split('@').next().unwrap_or(email);
            match auth::sign_up(url, email, password, name).await {
                Ok(session) => {
                    eprintln!("signed up {email}");
                    Ok(session)
                }
                // The user exists: it was the password.
                Err(AuthError::EmailTaken(_)) => Err(format!("sign-in: {message}")),
                Err(e) => Err(format!("sign-up: {e}")),
            }
        }
        Err(e) => Err(format!("sign-in: {e}")),
    }
}

async fn find_or_create_organization(client: &Client, slug: &str) -> Result<String, String> {
    let mine = client
        .query(api::LIST_MINE, OrganizationArgs)
        .await
        .map_err(|e| format!("organizations:listMine: {e}"))?;
    if let Some(organization) = mine.into_iter().find(|o| o.slug == slug) {
        return Ok(organization.id);
    }
    let args = CreateOrganization {
        name: slug.to_string(),
        slug: slug.to_string(),
    };
    let id = client
        .mutation(api::CREATE_ORGANIZATION, args)
        .await
        .map_err(|e| format!("organizations:create {slug}: {e}"))?;
    eprintln!("created the organization {slug}");
    Ok(id)
}

/// A slug from the email's local part: lowercase letters and digits, other
/// characters as inner hyphens.
fn slug_from(email: &str) -> String {
    let local = email.split('@').next().unwrap_or_default();
    let mapped: String = local
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(40)
        .collect();
    let slug = mapped
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if slug.is_empty() {
        "todos".to_string()
    } else {
        format!("{slug}-todos")
    }
}

fn print_list(todos: &[Todo]) {
    println!("--- {} todos ---", todos.len());
    for todo in todos {
        let mark = if todo.completed { 'x' } else { ' ' };
        println!("[{mark}] {}  ({})", todo.text, todo.id);
    }
}
