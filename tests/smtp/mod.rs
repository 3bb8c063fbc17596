//! A real SMTP server for tests: `tests/smtp/sink.py` (Python's `aiosmtpd`)
//! started as a child process on a free port of 127.0.0.1. Every message it
//! accepts is read back MIME-decoded, with its envelope; recipients starting
//! with `reject` are refused with a 550.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tempfile::TempDir;

/// The sink, running; killed on drop.
pub struct SmtpSink {
    child: Child,
    /// Held open: the sink exits when it closes, even if this process dies.
    _stdin: ChildStdin,
    folder: TempDir,
    pub port: u16,
}

/// One message the sink accepted.
#[derive(Clone, Debug)]
pub struct Received {
    /// The envelope's recipients (`RCPT TO`).
    pub rcpt_tos: Vec<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl SmtpSink {
    /// Starts the sink and waits until it listens.
    pub fn start() -> SmtpSink {
        let folder = tempfile::tempdir().expect("a folder for received mail");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(folder.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (the SMTP tests need Python 3 and `pip install aiosmtpd`)");
        let stdin = child.stdin.take().expect("the sink's stdin");
        let stdout = child.stdout.take().expect("the sink's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the SMTP sink starts in time");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the SMTP sink did not start (is aiosmtpd installed? `pip install aiosmtpd`): {line:?}"
                )
            });
        SmtpSink {
            child,
            _stdin: stdin,
            folder,
            port,
        }
    }

    /// `smtp://127.0.0.1:<port>`, as `--smtp` takes it.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.folder.path())
            .expect("the sink's folder")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let json: Json = serde_json::from_slice(&std::fs::read(path).expect("a message"))
                    .expect("the sink writes JSON");
                let text = |k: &str| json[k].as_str().unwrap_or_default().to_string();
                Received {
                    rcpt_tos: json["rcpt_tos"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect(),
                    from: text("from"),
                    to: text("to"),
                    subject: text("subject"),
                    text: text("text"),
                    html: text("html"),
                }
            })
            .collect()
    }

    /// Waits (up to `patience`) until at least `n` messages arrived; returns
    /// them all.
    pub async fn wait_for(&self, n: usize, patience: Duration) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                started.elapsed() < patience,
                "waited {patience:?} for {n} mail(s), got {}: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
