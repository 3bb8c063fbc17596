//! The data folder, with the real binary: one process at a time — a second
//! `livebase serve` or `dev`, or an `import`, on a folder in use fails at once
//! naming the folder, and the folder is free again when the holder dies (even
//! by SIGKILL) — and private whatever the umask: the folder 0700; the SQLite
//! file with its `-wal` and `-shm`, the token secret, outbox mails and
//! exports 0600. Folders left world-readable by earlier versions are
//! narrowed when a server opens them.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use livebase_runtime::auth::tokens::SECRET_FILE;
use livebase_runtime::datadir::{sidecar, DIR_MODE, FILE_MODE, LOCK_FILE};
use livebase_runtime::email::OUTBOX_DIR;
use livebase_runtime::store::sqlite::DATABASE_FILE;
use livebase_testkit::process::{listening_address, KillOnDrop};
use livebase_testkit::PASSWORD;
use serde_json::json;

/// How long a command may take before the test gives up on it (a guard
/// against hanging, not a measure of speed).
const GUARD: Duration = Duration::from_secs(60);

/// `livebase <args>` under `umask 000`, so that only the modes livebase sets
/// itself can keep anything private.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"umask 000 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_livebase"))
        .args(args)
        .env_remove("LIVEBASE_DATA")
        .env_remove("LIVEBASE_SMTP_URL")
        .env_remove("LIVEBASE_JWT_SECRET");
    c
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Starts `livebase <mode> --port 0 --data <dir>` and waits for its ready
/// line: the server and its address.
fn start(mode: &str, dir: &Path) -> (KillOnDrop, SocketAddr) {
    let child = command(&[mode, "--port", "0", "--data", path(dir)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("livebase starts");
    let mut child = KillOnDrop(child);
    let (addr, _) = listening_address(&child.stdout_lines());
    (child, addr)
}

/// Runs `livebase <args>` to its end (killed if it runs past [`GUARD`]).
fn run(args: &[&str]) -> Output {
    let mut child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("livebase starts");
    let deadline = Instant::now() + GUARD;
    while child.try_wait().expect("waits").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("livebase {args:?} still ran after {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Waits for the outbox to hold a mail; its files.
fn outbox_mails(dir: &Path) -> Vec<PathBuf> {
    let outbox = dir.join(OUTBOX_DIR);
    let deadline = Instant::now() + GUARD;
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(&outbox)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if !files.is_empty() {
            return files;
        }
        assert!(Instant::now() < deadline, "no mail in {}", outbox.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_folder_in_use_is_refused_to_a_second_process_until_the_first_dies() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (mut first, _) = start("serve", &dir);

    let export = parent.path().join("backup.jsonl");
    std::fs::write(
        &export,
        "{\"format\":\"livebase-export\",\"version\":1,\"exportedAt\":1.0,\"snapshotTs\":1}\n",
    )
    .unwrap();
    for args in [
        vec!["serve", "--port", "0", "--data", path(&dir)],
        vec!["dev", "--port", "0", "--data", path(&dir)],
        vec!["import", path(&export), "--data", path(&dir)],
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran beside the server");
        assert!(stderr.contains(path(&dir)), "{args:?}: {stderr}");
        assert!(
            stderr.contains("in use by another livebase process"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("pid {}", first.0.id())),
            "{args:?} names the holder: {stderr}"
        );
    }

    // SIGKILL: no cleanup runs, and the kernel still releases the lock.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let (_second, addr) = start("serve", &dir);
    assert!(addr.port() > 0);
}

#[tokio::test]
async fn the_folder_and_every_file_in_it_are_private_whatever_the_umask() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (server, addr) = start("serve", &dir);
    // Sign-up mails a verification link, which goes to the outbox (no SMTP set).
    let up = livebase_testkit::http::http_json(
        addr,
        "POST",
        "/api/auth/sign-up/email",
        None,
        &[],
        Some(&json!({"email": "ada@example.com", "password": PASSWORD, "name": "Ada"})),
    )
    .await;
    assert_eq!(up.status, 200, "{}", up.body);
    let mails = outbox_mails(&dir);
    let export = parent.path().join("backup.jsonl");
    let out = run(&["export", path(&export), "--data", path(&dir)]);
    assert!(out.status.success(), "{out:?}");

    let db = dir.join(DATABASE_FILE);
    let check = |what: &str| {
        assert_eq!(mode(&dir), DIR_MODE, "{what}: the data folder");
        assert_eq!(mode(&dir.join(OUTBOX_DIR)), DIR_MODE, "{what}: the outbox");
        let files = [
            db.clone(),
            sidecar(&db, "-wal"),
            sidecar(&db, "-shm"),
            dir.join(SECRET_FILE),
            dir.join(LOCK_FILE),
        ];
        for file in files.iter().chain(&mails) {
            assert_eq!(mode(file), FILE_MODE, "{what}: {}", file.display());
        }
    };
    check("created");
    assert_eq!(mode(&export), FILE_MODE, "the export");

    // A folder an earlier version left readable by everyone is narrowed
    // when a server opens it.
    drop(server);
    set_mode(&dir, 0o755);
    set_mode(&dir.join(OUTBOX_DIR), 0o755);
    for file in [db.clone(), dir.join(SECRET_FILE)].iter().chain(&mails) {
        set_mode(file, 0o644);
    }
    for file in [sidecar(&db, "-wal"), sidecar(&db, "-shm")] {
        if file.exists() {
            set_mode(&file, 0o644);
        }
    }
    let (_again, _) = start("serve", &dir);
    check("reopened");
}
