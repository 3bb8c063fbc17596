//! `livebase dev`: a supervisor that serves the application from a child
//! process and, when a watched source changes, rebuilds it and swaps the
//! child for one running the new build — on the same port and data folder.
//!
//! One round, after the watcher ([`watch`]) reports a change:
//!
//! 1. The build command runs (`cargo build --bin <this binary>`, in the
//!    profile this binary was built in; `--build-cmd` or `LIVEBASE_BUILD`
//!    replace it). Its output goes to the terminal as it comes; if it fails,
//!    the output is also written to the data folder's
//!    [`BUILD_STATUS_FILE`], which the dashboard shows, and the running
//!    child keeps serving.
//! 2. The new binary is copied into the supervisor's staging folder (so the
//!    next build may overwrite it while it runs, and the previous copy stays
//!    to fall back on) and asked to check the stored documents against its
//!    schema (`livebase check-data`, a read of one snapshot that takes no
//!    lock). A mismatch is reported like a failed build: the old child keeps
//!    serving.
//! 3. The old child is stopped gracefully — its standard input is closed,
//!    which a `dev-server` child takes as the signal to shut down: its
//!    WebSockets are closed with 1001 (going away), which the clients treat
//!    as transient and reconnect from — and the new one is started on the
//!    same port and data folder. Should it not start, the previous build is
//!    started again.
//!
//! Clients resume on their own: they reconnect, send their query set again
//! and resend the mutations the old server had not answered; a resent
//! mutation the old server did commit is answered from its stored outcome
//! (the data folder keeps them), not run twice.
//!
//! **Invariant:** one child at a time holds the data folder: the old child
//! has exited before the new one starts (the folder's lock would refuse it
//! otherwise). A child whose supervisor dies sees its standard input close
//! and stops too, so no orphan keeps the port or the lock.

mod watch;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use livebase_runtime::private_files::write_private;
use livebase_runtime::server::dashboard::BUILD_STATUS_FILE;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::ServeArgs;

/// How long a child may take to print its `livebase listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop after its standard input closed,
/// before it is killed (the scheduler gives running jobs a grace period).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The most of a build's output kept for the dashboard (its tail).
const OUTPUT_KEPT: usize = 64 * 1024;

/// The options of `livebase dev`: the server's, and how to rebuild it.
#[derive(Args)]
pub(crate) struct DevArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// A file or folder whose changes trigger a rebuild (repeatable)
    /// [default: `src/` and `functions/` of the current folder].
    #[arg(long = "watch", value_name = "PATH")]
    watch: Vec<PathBuf>,
    /// The shell command that rebuilds the server [default: `cargo build
    /// --bin <this binary's name>`, with `--release` when this binary is a
    /// release build].
    #[arg(long, env = "LIVEBASE_BUILD", value_name = "COMMAND")]
    build_cmd: Option<String>,
    /// The binary the build command produces, started after each successful
    /// build [default: this binary's path].
    #[arg(long, env = "LIVEBASE_DEV_BIN", value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Serve in this process without watching the sources (no rebuilds).
    #[arg(long)]
    pub(crate) no_watch: bool,
}

/// Runs the supervisor until SIGINT or SIGTERM; then stops the child.
pub(crate) async fn supervise(args: DevArgs) -> Result<(), String> {
    let signal = crate::shutdown_signal().map_err(|e| e.to_string())?;
    tokio::pin!(signal);
    let this = std::env::current_exe().map_err(|e| format!("finding this binary's path: {e}"))?;
    let bin = args.bin.clone().unwrap_or_else(|| this.clone());
    let build = args
        .build_cmd
        .clone()
        .unwrap_or_else(|| default_build(&this));
    let stage = Stage::new(&this)?;
    let mut sup = Supervisor {
        data: args.serve.data.clone(),
        store_env: args.serve.store.child_env(),
        // Everything after `dev`, given again to each child; `--port` is
        // appended once the first child has bound one (overriding `0`).
        child_args: std::env::args_os().skip(2).collect(),
        port: None,
        stage,
        generation: 0,
    };

    let roots = if args.watch.is_empty() {
        vec![PathBuf::from("src"), PathBuf::from("functions")]
    } else {
        args.watch.clone()
    };
    // Watching starts before serving: a save made while the first server
    // starts, or as soon as a client has seen it, is a change (a watcher
    // started after would take the saved files as its starting point).
    let mut changes = watch::start(roots.clone());
    let exe = sup.stage.copy(&this, 0)?;
    let mut current = Some(sup.start(&exe).await?);
    eprintln!(
        "livebase dev: watching {}; rebuilding with `{build}`",
        roots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    loop {
        tokio::select! {
            _ = &mut signal => break,
            status = wait(&mut current) => {
                eprintln!(
                    "livebase dev: the server exited ({status}); it starts again after the next change"
                );
                current = None;
            }
            Some(path) = changes.recv() => {
                eprintln!("livebase dev: {} changed; rebuilding", path.display());
                tokio::select! {
                    _ = &mut signal => break,
                    () = sup.rebuild(&build, &bin, &mut current) => {}
                }
            }
        }
    }
    sup.stop(current.take()).await;
    Ok(())
}

/// Waits for the running child to exit; never, when there is none.
async fn wait(child: &mut Option<Running>) -> String {
    match child {
        Some(running) => match running.child.wait().await {
            Ok(status) => describe(status),
            Err(e) => format!("waiting for it failed: {e}"),
        },
        None => std::future::pending().await,
    }
}

/// `cargo build --bin <name>`, in the profile `this` was built in.
fn default_build(this: &Path) -> String {
    let name = this
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "livebase".into());
    let release = this
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|dir| dir == "release");
    format!(
        "cargo build{} --bin {name}",
        if release { " --release" } else { "" }
    )
}

/// A child serving the application, and the staged binary it runs.
struct Running {
    child: Child,
    /// The write end of the child's standard input, held apart from `child`
    /// (whose `wait` would close it): closing it stops the child.
    stdin: Option<tokio::process::ChildStdin>,
    exe: PathBuf,
}

struct Supervisor {
    data: PathBuf,
    /// The store `check-data` reads, when it is not the data folder's.
    store_env: Vec<(&'static str, OsString)>,
    child_args: Vec<OsString>,
    /// The port the first child bound, which every later one reuses.
    port: Option<u16>,
    stage: Stage,
    generation: u64,
}

impl Supervisor {
    /// One round: build; check; swap. `current` is the child serving, before
    /// and after.
    async fn rebuild(&mut self, build: &str, bin: &Path, current: &mut Option<Running>) {
        self.status(json!({ "status": "building", "command": build }));
        let (status, output) = match run_build(build).await {
            Ok(done) => done,
            Err(e) => {
                eprintln!("livebase dev: {e}");
                self.failed(build, &e);
                return;
            }
        };
        if !status.success() {
            eprintln!(
                "livebase dev: the build failed ({}); the server keeps running the previous build",
                describe(status)
            );
            self.failed(build, &output);
            return;
        }
        self.generation += 1;
        let exe = match self.stage.copy(bin, self.generation) {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!("livebase dev: {e}");
                self.failed(build, &e);
                return;
            }
        };
        if let Err(report) = self.check_data(&exe).await {
            eprintln!("livebase dev: the new build does not serve; the previous one keeps running:\n{report}");
            self.failed("livebase check-data", &report);
            self.stage.remove(&exe);
            return;
        }
        let previous = current.as_ref().map(|r| r.exe.clone());
        self.stop(current.take()).await;
        match self.start(&exe).await {
            Ok(next) => {
                eprintln!("livebase dev: serving the new build");
                self.status(json!({ "status": "ok", "command": build }));
                if let Some(old) = previous {
                    self.stage.remove(&old);
                }
                *current = Some(next);
            }
            Err(e) => {
                eprintln!("livebase dev: the new build did not start: {e}");
                self.failed(build, &format!("the new build did not start: {e}"));
                self.stage.remove(&exe);
                let Some(old) = previous else { return };
                match self.start(&old).await {
                    Ok(back) => {
                        eprintln!("livebase dev: serving the previous build again");
                        *current = Some(back);
                    }
                    Err(e) => {
                        eprintln!("livebase dev: the previous build did not start again: {e}")
                    }
                }
            }
        }
    }

    /// Starts `exe dev-server …` and waits for its ready line, which is
    /// passed on (with the rest of its standard output) to ours.
    async fn start(&mut self, exe: &Path) -> Result<Running, String> {
        let mut args = vec![OsString::from("dev-server")];
        args.extend(self.child_args.iter().cloned());
        if let Some(port) = self.port {
            args.push("--port".into());
            args.push(port.to_string().into());
        }
        let color = if crate::logs::stdout_colored() {
            "1"
        } else {
            "0"
        };
        let mut child = Command::new(exe)
            .args(&args)
            .env(crate::logs::COLOR_ENV, color)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(forward_stdout(stdout, ready_tx));
        let ready = tokio::select! {
            url = ready_rx => url.ok(),
            status = child.wait() => {
                return Err(match status {
                    Ok(status) => format!("it exited ({}) before it was ready", describe(status)),
                    Err(e) => format!("waiting for it: {e}"),
                });
            }
            _ = tokio::time::sleep(START_TIMEOUT) => {
                let _ = child.kill().await;
                return Err(format!("it was not ready within {START_TIMEOUT:?}"));
            }
        };
        let Some(url) = ready else {
            let status = child.wait().await.map(describe).unwrap_or_default();
            return Err(format!(
                "it closed its output ({status}) before it was ready"
            ));
        };
        if self.port.is_none() {
            self.port = url
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok());
        }
        Ok(Running {
            child,
            stdin,
            exe: exe.to_path_buf(),
        })
    }

    /// Stops a child: closes its standard input, which it takes as the
    /// signal to shut down, and waits (killing it after [`STOP_TIMEOUT`]).
    async fn stop(&self, running: Option<Running>) {
        let Some(mut running) = running else { return };
        drop(running.stdin.take());
        match tokio::time::timeout(STOP_TIMEOUT, running.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                eprintln!("livebase dev: the server stopped with {}", describe(status))
            }
            Ok(Err(e)) => eprintln!("livebase dev: waiting for the server to stop: {e}"),
            Err(_) => {
                eprintln!(
                    "livebase dev: the server did not stop within {STOP_TIMEOUT:?}; killing it"
                );
                let _ = running.child.kill().await;
            }
        }
    }

    /// Runs `exe check-data`: whether the stored documents satisfy the new
    /// build's schema. `Err` holds its report.
    async fn check_data(&self, exe: &Path) -> Result<(), String> {
        let output = Command::new(exe)
            .arg("check-data")
            .arg("--data")
            .arg(&self.data)
            .envs(self.store_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("running {} check-data: {e}", exe.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .to_string())
        }
    }

    fn failed(&self, command: &str, output: &str) {
        self.status(json!({ "status": "failed", "command": command, "output": output }));
    }

    /// Writes the build status the dashboard shows (whole, by a rename).
    fn status(&self, mut status: serde_json::Value) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        status["at"] = json!(at);
        let path = self.data.join(BUILD_STATUS_FILE);
        let partial = path.with_extension("json.partial");
        // Private, as every file in the data folder is.
        let _ = std::fs::remove_file(&partial);
        let written = write_private(&partial, status.to_string().as_bytes())
            .and_then(|()| std::fs::rename(&partial, &path));
        if let Err(e) = written {
            eprintln!("livebase dev: writing {}: {e}", path.display());
        }
    }
}

/// Passes a child's standard output on to ours, and its URL to `ready` when
/// its `livebase listening on <url>` line comes.
async fn forward_stdout(stdout: impl AsyncRead + Unpin, ready: oneshot::Sender<String>) {
    let mut ready = Some(ready);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("{line}");
        if let Some(url) = line.strip_prefix("livebase listening on ") {
            if let Some(ready) = ready.take() {
                let _ = ready.send(url.trim().to_string());
            }
        }
    }
}

/// Runs the build command through `sh -c`, its output passed on to our
/// standard error as it comes and kept (the last [`OUTPUT_KEPT`] bytes).
async fn run_build(command: &str) -> Result<(ExitStatus, String), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running the build `{command}`: {e}"))?;
    let out = tokio::spawn(tee(child.stdout.take().expect("piped")));
    let err = tokio::spawn(tee(child.stderr.take().expect("piped")));
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for the build `{command}`: {e}"))?;
    let mut output = out.await.unwrap_or_default();
    output.push_str(&err.await.unwrap_or_default());
    if output.len() > OUTPUT_KEPT {
        let mut cut = output.len() - OUTPUT_KEPT;
        while !output.is_char_boundary(cut) {
            cut += 1;
        }
        output.drain(..cut);
    }
    Ok((status, output))
}

/// Copies a stream to our standard error and returns what it said.
async fn tee(mut stream: impl AsyncRead + Unpin) -> String {
    use std::io::Write;
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let _ = std::io::stderr().write_all(&buf[..n]);
        kept.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

/// The supervisor's folder of staged binaries, removed when it ends.
struct Stage {
    dir: PathBuf,
}

impl Stage {
    /// Beside `this` binary when its folder is writable (where it runs from
    /// is known to allow running programs; a temporary folder may be
    /// mounted `noexec`), else in the temporary folder.
    fn new(this: &Path) -> Result<Stage, String> {
        let name = format!(".livebase-dev-{}", std::process::id());
        let beside = this.parent().map(|dir| dir.join(&name));
        let temp = std::env::temp_dir().join(&name);
        let mut last = None;
        for dir in beside.into_iter().chain([temp]) {
            match std::fs::create_dir_all(&dir) {
                Ok(()) => {
                    if let Some(parent) = dir.parent() {
                        remove_abandoned(parent);
                    }
                    return Ok(Stage { dir });
                }
                Err(e) => {
                    last = Some(format!(
                        "creating the staging folder {}: {e}",
                        dir.display()
                    ))
                }
            }
        }
        Err(last.unwrap_or_default())
    }

    /// Copies `bin` in as generation `n`.
    fn copy(&self, bin: &Path, n: u64) -> Result<PathBuf, String> {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "livebase".into());
        let staged = self.dir.join(format!("{name}.{n}"));
        std::fs::copy(bin, &staged)
            .map_err(|e| format!("copying the new build {}: {e}", bin.display()))?;
        Ok(staged)
    }

    fn remove(&self, exe: &Path) {
        let _ = std::fs::remove_file(exe);
    }
}

/// Removes the staging folders in `parent` of supervisors that are gone
/// (killed before they could clean up: each holds a copy of a binary).
fn remove_abandoned(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".livebase-dev-"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // Linux shows a live process as /proc/<pid>; elsewhere, keep it.
        let proc = Path::new("/proc");
        if proc.is_dir() && !proc.join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
