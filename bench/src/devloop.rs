//! The dev loop's figure: a one-line change to a function's source, saved
//! while a client holds that function's live query, until the new result
//! reaches the client — through `livebase dev`'s rebuild with cargo and its
//! restart, the client reconnecting as the official clients do.
//!
//! A temporary copy of a tiny application (one query; path dependencies on
//! this repository's crates, the repository's `src/main.rs` as its binary)
//! is built into the repository's target folder first (not measured: that
//! is the first build), then served with `dev` and edited `rounds` times.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use livebase_schema::protocol::{ClientMessage, QueryId, QuerySetModification};
use livebase_schema::Value;

use crate::client::{BoxError, Conn};

/// What the phase measured.
pub struct DevLoop {
    /// The tiny application's first build, seconds (not the figure).
    pub first_build_s: f64,
    /// Save → new result on the client, seconds, per edit.
    pub rounds_s: Vec<f64>,
}

/// How long one edit may take to reach the client before the phase fails.
const ROUND_LIMIT: Duration = Duration::from_secs(300);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is in the repository")
        .to_path_buf()
}

fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| repo.join(d))
        .unwrap_or_else(|| repo.join("target"))
}

/// The line `name = ...` of the repository's `[workspace.dependencies]`.
fn workspace_dependency(manifest: &str, name: &str) -> Result<String, BoxError> {
    manifest
        .lines()
        .find(|l| l.starts_with(&format!("{name} = ")))
        .map(str::to_string)
        .ok_or_else(|| format!("the repository's Cargo.toml declares no `{name}`").into())
}

fn functions_source(greeting: &str) -> String {
    format!(
        r#"//! A tiny application: one query.

use livebase_runtime::registry::Registry;
use livebase_schema::{{Schema, Validator}};

pub fn app() -> Registry {{
    let mut app = Registry::new(Schema::new());
    let no_args: [(&str, Validator); 0] = [];
    app.query("greeting:get", no_args, |_ctx, _args| Ok(String::from("{greeting}")));
    app
}}
"#
    )
}

fn write_app(dir: &Path, repo: &Path) -> Result<(), BoxError> {
    let manifest = std::fs::read_to_string(repo.join("Cargo.toml"))?;
    let dep = |name: &str| workspace_dependency(&manifest, name);
    let repo = repo.display();
    let ours = [
        "livebase-macros",
        "livebase-schema",
        "livebase-store",
        "livebase-store-postgres",
        "livebase-runtime",
    ];
    let profiles: String = ours
        .iter()
        .map(|p| format!("\n[profile.dev.package.{p}]\nopt-level = 0\n"))
        .collect();
    std::fs::create_dir_all(dir.join("functions/src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "tiny-app"
version = "0.1.0"
edition = "2021"
publish = false

[[bin]]
name = "tiny-app"
path = "{repo}/src/main.rs"

[dependencies]
livebase-schema = {{ path = "{repo}/schema" }}
livebase-runtime = {{ path = "{repo}/runtime" }}
livebase-store-postgres = {{ path = "{repo}/store-postgres" }}
livebase-functions = {{ path = "functions" }}
{tokio}
{clap}
{tracing}
{subscriber}
{serde_json}

[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 1
{profiles}
[workspace]
"#,
            tokio = dep("tokio")?.replacen("]", ", \"process\"]", 1),
            clap = dep("clap")?,
            tracing = dep("tracing")?,
            subscriber = dep("tracing-subscriber")?,
            serde_json = dep("serde_json")?,
        ),
    )?;
    std::fs::write(
        dir.join("functions/Cargo.toml"),
        format!(
            r#"[package]
name = "livebase-functions"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
livebase-schema = {{ path = "{repo}/schema" }}
livebase-runtime = {{ path = "{repo}/runtime" }}
"#
        ),
    )?;
    std::fs::write(
        dir.join("functions/src/lib.rs"),
        functions_source("hello, version 0"),
    )?;
    std::fs::copy(repository().join("Cargo.lock"), dir.join("Cargo.lock"))?;
    Ok(())
}

/// Kills the supervisor (its child stops when its stdin closes).
struct Supervisor(Child);

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A connection subscribed to `greeting:get`.
async fn subscribe(base: &str) -> Result<Conn, BoxError> {
    let mut c = Conn::connect(base).await?;
    c.send(ClientMessage::ModifyQuerySet {
        base_version: 0,
        new_version: 1,
        modifications: vec![QuerySetModification::Add {
            query_id: QueryId(0),
            udf_path: "greeting:get".into(),
            args: vec![Value::Object(Default::default())],
            journal: None,
            component_path: None,
        }],
    })
    .await?;
    Ok(c)
}

/// Waits until the client holds `greeting`: on the connection it has, and on
/// new ones while the server restarts (as the official clients reconnect).
async fn wait_for(base: &str, conn: &mut Option<Conn>, greeting: &str) -> Result<(), BoxError> {
    let since = Instant::now();
    loop {
        if since.elapsed() > ROUND_LIMIT {
            return Err(format!("`{greeting}` did not reach the client in {ROUND_LIMIT:?}").into());
        }
        let Some(c) = conn.as_mut() else {
            match subscribe(base).await {
                Ok(c) => *conn = Some(c),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            continue;
        };
        match c.recv_text(ROUND_LIMIT).await {
            Ok(text) if text.contains(greeting) => return Ok(()),
            Ok(_) => {}
            Err(_) => *conn = None, // the old server went away: reconnect
        }
    }
}

/// Builds the tiny application, serves it with `dev` and times `rounds`
/// edits of its query.
pub async fn devloop(rounds: usize) -> Result<DevLoop, BoxError> {
    let repo = repository();
    let target = target_dir(&repo);
    let dir = tempfile::tempdir()?;
    write_app(dir.path(), &repo)?;

    let started = Instant::now();
    let (app_dir, target_env) = (dir.path().to_path_buf(), target.clone());
    let built = tokio::task::spawn_blocking(move || {
        Command::new("cargo")
            .args(["build", "--bin", "tiny-app"])
            .current_dir(&app_dir)
            .env("CARGO_TARGET_DIR", &target_env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    })
    .await??;
    if !built.success() {
        return Err("the tiny application's first build failed".into());
    }
    let first_build_s = started.elapsed().as_secs_f64();

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let data = dir.path().join(".livebase");
    let _supervisor = Supervisor(
        Command::new(target.join("debug/tiny-app"))
            .args(["dev", "--port", &port.to_string(), "--data"])
            .arg(&data)
            .current_dir(dir.path())
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("LIVEBASE_BUILD")
            .env_remove("LIVEBASE_DEV_BIN")
            .env_remove("LIVEBASE_DATA")
            .env_remove("LIVEBASE_POSTGRES_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let mut conn = None;
    wait_for(&base, &mut conn, "hello, version 0").await?;

    let mut rounds_s = Vec::new();
    for round in 1..=rounds {
        let greeting = format!("hello, version {round}");
        let saved = Instant::now();
        std::fs::write(
            dir.path().join("functions/src/lib.rs"),
            functions_source(&greeting),
        )?;
        wait_for(&base, &mut conn, &greeting).await?;
        rounds_s.push(saved.elapsed().as_secs_f64());
    }
    Ok(DevLoop {
        first_build_s,
        rounds_s,
    })
}
