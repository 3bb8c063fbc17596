//! `livebase dev` rebuilds and restarts on save, with no compiler in the
//! loop: the build command (`--build-cmd`) is a script, and the binary it
//! "produces" (`--bin`) is a wrapper that runs this very `livebase` — after
//! a rebuild with `LIVEBASE_PUBLIC_URL` set, so the new server's stored-file
//! URLs, and with them a live query's `avatarUrl`, change. A client holding
//! that query sees the new result arrive with nothing done on its side; a
//! failed build is reported in the terminal and the dashboard while the old
//! server keeps answering; a new build that refuses the stored data
//! (`check-data`) never replaces the old one.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use livebase_sdk::{auth, mutation, obj, query, Client, MutationRef, QueryRef, Value};
use livebase_testkit::http::http;
use livebase_testkit::process::{listening_address, KillOnDrop};
use livebase_testkit::{eventually, PASSWORD, PATIENCE};
use serde_json::Value as Json;

const UPLOAD_URL: MutationRef<(), String> = mutation("files:generateUploadUrl");
const SET_AVATAR: MutationRef<Value, Value> = mutation("userProfiles:setAvatar");
const UPSERT: MutationRef<Value, Value> = mutation("userProfiles:upsert");
const PROFILE: QueryRef<(), Value> = query("userProfiles:get");

/// The URL the rebuilt server builds stored files' URLs on.
const RELOADED: &str = "http://reloaded.example";

/// A `livebase dev` over a temporary project: `src/app.rs` (watched), the
/// wrapper `app` (the build's output) and the build script `build.sh`.
struct Dev {
    child: KillOnDrop,
    addr: SocketAddr,
    project: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
}

/// A wrapper that runs this `livebase`, with `env` (`NAME=value ` or empty).
fn wrapper(env: &str) -> String {
    format!(
        "#!/bin/sh\n{env}exec '{}' \"$@\"\n",
        env!("CARGO_BIN_EXE_livebase")
    )
}

impl Dev {
    /// Starts `livebase dev` with `build` as the build script's body (run by
    /// `sh` in the project folder).
    fn start(build: &str) -> Dev {
        let project = tempfile::tempdir().expect("a temporary folder");
        let root = project.path();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/app.rs"), "// version 1\n").unwrap();
        write_executable(&root.join("app"), &wrapper(""));
        std::fs::write(root.join("build.sh"), build).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_livebase"));
        command
            .current_dir(root)
            .args(["dev", "--port", "0", "--data", "data", "--watch", "src"])
            .args(["--build-cmd", "sh build.sh", "--bin", "app"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for var in [
            "LIVEBASE_DATA",
            "LIVEBASE_PORT",
            "LIVEBASE_PUBLIC_URL",
            "LIVEBASE_SMTP_URL",
            "LIVEBASE_BUILD",
            "LIVEBASE_DEV_BIN",
        ] {
            command.env_remove(var);
        }
        let mut child = KillOnDrop(command.spawn().expect("livebase dev starts"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.0.stderr.take().unwrap();
        let kept = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let lines = child.stdout_lines();
        let (addr, _) = listening_address(&lines);
        // Drained to its end, so the children never block on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Dev {
            child,
            addr,
            project,
            stderr,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Saves a new version of the watched source.
    fn save(&self, version: u32) {
        std::fs::write(
            self.project.path().join("src/app.rs"),
            format!("// version {version}\n"),
        )
        .unwrap();
    }

    fn terminal(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `GET /_dashboard/api/build`.
    async fn build_status(&self) -> Json {
        let response = http(self.addr, "GET", "/_dashboard/api/build", &[], b"").await;
        assert_eq!(response.status, 200, "{:?}", response.body);
        response.json()
    }

    /// SIGTERM, as Ctrl-C would: the supervisor and its server both stop,
    /// cleanly, and the port is free.
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exited = wait_with_patience(&mut self.child.0);
        assert!(exited.success(), "livebase dev exits cleanly: {exited}");
        assert!(
            std::net::TcpStream::connect(self.addr).is_err(),
            "the server stopped with its supervisor"
        );
    }
}

fn write_executable(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn wait_with_patience(child: &mut std::process::Child) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < PATIENCE, "livebase dev did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Signs Ada up with an avatar; returns her client and her live profile.
async fn ada_with_avatar(url: &str) -> (Client, livebase_sdk::Subscription<Value>) {
    let ada = auth::sign_up(url, "ada@example.com", PASSWORD, "Ada")
        .await
        .expect("sign-up");
    let client = Client::connect(url).await.expect("connects");
    client.set_auth(Some(ada.token)).await.expect("signed in");
    client
        .mutation(UPSERT, obj! { "displayName" => "Ada" })
        .await
        .expect("a profile");
    let upload_url = client.mutation(UPLOAD_URL, ()).await.expect("a URL");
    let storage_id = client
        .upload(&upload_url, b"a small picture".to_vec(), "image/png")
        .await
        .expect("uploaded");
    client
        .mutation(SET_AVATAR, obj! { "storageId" => storage_id })
        .await
        .expect("the avatar is set");
    let profile = client.subscribe(PROFILE, ());
    (client, profile)
}

/// Waits for a profile whose `avatarUrl` starts with `prefix`.
async fn avatar_on(profile: &mut livebase_sdk::Subscription<Value>, prefix: &str) -> Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let current = profile
                .next()
                .await
                .expect("the subscription lives on")
                .expect("the profile");
            if let Some(Value::String(url)) = current.get("avatarUrl") {
                if url.starts_with(prefix) {
                    return current;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no profile with an avatarUrl on {prefix} arrived"))
}

#[tokio::test]
async fn a_saved_source_is_rebuilt_and_served_and_a_live_query_sees_the_new_result() {
    // The "build": the new binary runs with another public URL.
    let build = format!(
        "echo compiling >&2\ncat > app <<'EOF'\n{}EOF\n",
        wrapper(&format!("LIVEBASE_PUBLIC_URL={RELOADED} "))
    );
    let dev = Dev::start(&build);
    let url = dev.url();
    let (client, mut profile) = ada_with_avatar(&url).await;
    avatar_on(&mut profile, &format!("{url}/api/storage/")).await;

    dev.save(2);
    // The same subscription, untouched: the client reconnected to the new
    // server on the same port, re-sent its query set and got its result.
    avatar_on(&mut profile, &format!("{RELOADED}/api/storage/")).await;
    // The new server answers as soon as it listens; the supervisor records
    // the build as served once it has read the server's ready line, a
    // moment later.
    eventually(
        "the dashboard to show the served build",
        PATIENCE,
        || async {
            let status = dev.build_status().await;
            match status["status"].as_str() {
                Some("ok") => Ok(()),
                _ => Err(status.to_string()),
            }
        },
    )
    .await;
    // Same data, same session: the client's token and a mutation work.
    client
        .mutation(UPSERT, obj! { "displayName" => "Ada L." })
        .await
        .expect("a mutation on the new server");
    let renamed = tokio::time::timeout(PATIENCE, async {
        loop {
            let current = profile.next().await.unwrap().unwrap();
            if current.get("displayName") == Some(&Value::from("Ada L.")) {
                return current;
            }
        }
    })
    .await
    .expect("the rename arrives");
    assert!(matches!(renamed.get("avatarUrl"), Some(Value::String(u)) if u.starts_with(RELOADED)));
    let terminal = dev.terminal();
    assert!(terminal.contains("compiling"), "{terminal}");
    assert!(terminal.contains("serving the new build"), "{terminal}");
    drop(client);
    dev.stop();
}

#[tokio::test]
async fn a_failed_build_is_reported_and_the_old_server_keeps_serving() {
    let dev = Dev::start(
        "echo 'error[E0425]: cannot find value `todo_count` in this scope' >&2\nexit 101\n",
    );
    let url = dev.url();
    let (client, mut profile) = ada_with_avatar(&url).await;
    avatar_on(&mut profile, &format!("{url}/api/storage/")).await;
    assert_eq!(dev.build_status().await["status"], "none");

    dev.save(2);
    let status = eventually(
        "the dashboard to show the failed build",
        PATIENCE,
        || async {
            let status = dev.build_status().await;
            match status["status"].as_str() {
                Some("failed") => Ok(status),
                _ => Err(status.to_string()),
            }
        },
    )
    .await;
    assert_eq!(status["command"], "sh build.sh");
    assert!(
        status["output"]
            .as_str()
            .unwrap()
            .contains("cannot find value `todo_count`"),
        "{status}"
    );
    let terminal = dev.terminal();
    assert!(
        terminal.contains("cannot find value `todo_count`"),
        "{terminal}"
    );
    assert!(terminal.contains("the build failed"), "{terminal}");
    // Private, as every file in the data folder is.
    let written = dev.project.path().join("data/dev-build.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&written).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", written.display());

    // The old server answers on the same connection, live.
    client
        .mutation(UPSERT, obj! { "displayName" => "Ada L." })
        .await
        .expect("the old server still answers");
    let renamed = tokio::time::timeout(PATIENCE, async {
        loop {
            let current = profile.next().await.unwrap().unwrap();
            if current.get("displayName") == Some(&Value::from("Ada L.")) {
                return current;
            }
        }
    })
    .await
    .expect("the rename arrives");
    assert!(
        matches!(renamed.get("avatarUrl"), Some(Value::String(u)) if u.starts_with(&url)),
        "still the old build: {renamed:?}"
    );
    drop(client);
    dev.stop();
}

#[tokio::test]
async fn a_build_that_refuses_the_stored_data_does_not_replace_the_old_server() {
    // A stand-in for new code whose schema rejects the stored documents: its
    // `check-data` reports them as the real one does (the check itself is
    // `runtime/tests/schema_check.rs`); the rest would serve normally.
    let refusing = "#!/bin/sh\nif [ \"$1\" = check-data ]; then\n  echo '1 stored document does not satisfy the schema:' >&2\n  echo '  table todos: 1 document(s)' >&2\n  exit 1\nfi\n"
        .to_string()
        + &wrapper("LIVEBASE_PUBLIC_URL=http://refused.example ").replace("#!/bin/sh\n", "");
    let build = format!("cat > app <<'EOF'\n{refusing}EOF\n");
    let dev = Dev::start(&build);
    let url = dev.url();
    let (client, mut profile) = ada_with_avatar(&url).await;
    avatar_on(&mut profile, &format!("{url}/api/storage/")).await;

    dev.save(2);
    let status = eventually("the dashboard to show the refusal", PATIENCE, || async {
        let status = dev.build_status().await;
        match status["status"].as_str() {
            Some("failed") => Ok(status),
            _ => Err(status.to_string()),
        }
    })
    .await;
    assert!(
        status["output"].as_str().unwrap().contains("table todos"),
        "{status}"
    );
    let terminal = dev.terminal();
    assert!(terminal.contains("does not serve"), "{terminal}");
    assert!(terminal.contains("table todos"), "{terminal}");

    client
        .mutation(UPSERT, obj! { "displayName" => "Ada L." })
        .await
        .expect("the old server still answers");
    let renamed = tokio::time::timeout(PATIENCE, async {
        loop {
            let current = profile.next().await.unwrap().unwrap();
            if current.get("displayName") == Some(&Value::from("Ada L.")) {
                return current;
            }
        }
    })
    .await
    .expect("the rename arrives");
    assert!(
        matches!(renamed.get("avatarUrl"), Some(Value::String(u)) if u.starts_with(&url)),
        "still the old build: {renamed:?}"
    );
    drop(client);
    dev.stop();
}
