//! A real SMTP server for tests: `tests/smtp/sink.py` (Python's `aiosmtpd`)
//! started as a child process on a free port of 127.0.0.1. Every message it
//! accepts is read back MIME-decoded, with its envelope; recipients starting
//! with `reject` are refused with a 550, those starting with `tempfail<N>-`
//! answered 421 the first N times. [`SinkOptions`] add STARTTLS or implicit
//! TLS with a certificate made for the run (the `openssl` command, a CA of
//! its own: [`SmtpSink::ca_file`]), required AUTH, a fixed port, and a delay
//! before each `250`.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use livebase_testkit::eventually;
use serde_json::Value as Json;
use tempfile::TempDir;

/// The sink, running; killed on drop.
pub struct SmtpSink {
    child: Child,
    /// Held open: the sink exits when it closes, even if this process dies.
    _stdin: ChildStdin,
    folder: TempDir,
    /// The certificate files, when TLS is on.
    certs: Option<TempDir>,
    pub port: u16,
}

/// How the sink listens.
#[derive(Clone, Debug, Default)]
pub struct SinkOptions {
    /// The port; a free one when `None`.
    pub port: Option<u16>,
    pub tls: Option<SinkTls>,
    /// Require AUTH with these credentials (user, password).
    pub auth: Option<(String, String)>,
    /// Answer each accepted message this much later, after saving it.
    pub data_delay: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkTls {
    /// STARTTLS offered and required before MAIL (`smtp://…?tls=required`).
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// One message the sink accepted.
#[derive(Clone, Debug)]
pub struct Received {
    /// The envelope's recipients (`RCPT TO`).
    pub rcpt_tos: Vec<String>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub message_id: String,
    /// The `DKIM-Signature` header, when the mail was signed.
    pub dkim_signature: Option<String>,
    pub text: String,
    pub html: String,
    /// The mail as it came, headers and all.
    pub raw: String,
    /// Whether the session was encrypted.
    pub tls: bool,
    /// The user the session authenticated as.
    pub login: Option<String>,
}

impl SmtpSink {
    /// Starts the sink and waits until it listens.
    pub fn start() -> SmtpSink {
        SmtpSink::start_with(SinkOptions::default())
    }

    /// Starts the sink as `options` say and waits until it listens.
    pub fn start_with(options: SinkOptions) -> SmtpSink {
        let folder = tempfile::tempdir().expect("a folder for received mail");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/sink.py");
        let mut command = Command::new("python3");
        command.arg(&script).arg(folder.path());
        if let Some(port) = options.port {
            command.args(["--port", &port.to_string()]);
        }
        let certs = options.tls.map(|tls| {
            let certs = make_certificates();
            command
                .arg("--cert")
                .arg(certs.path().join("cert.pem"))
                .arg("--key")
                .arg(certs.path().join("key.pem"));
            if tls == SinkTls::Implicit {
                command.arg("--implicit-tls");
            }
            certs
        });
        if let Some((user, password)) = &options.auth {
            command.args(["--auth", &format!("{user}:{password}")]);
        }
        if let Some(delay) = options.data_delay {
            command.args(["--data-delay-ms", &delay.as_millis().to_string()]);
        }
        let mut child = command
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
            certs,
            port,
        }
    }

    /// The CA that signed the sink's certificate (PEM), for
    /// `--smtp-ca-file`; only with TLS.
    pub fn ca_file(&self) -> PathBuf {
        self.certs
            .as_ref()
            .expect("the sink was started with TLS")
            .path()
            .join("ca.pem")
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
                    message_id: text("message_id"),
                    dkim_signature: json["dkim_signature"].as_str().map(str::to_string),
                    text: text("text"),
                    html: text("html"),
                    raw: text("raw"),
                    tls: json["tls"].as_bool().unwrap_or(false),
                    login: json["login"].as_str().map(str::to_string),
                }
            })
            .collect()
    }

    /// Waits (up to `patience`) until `check` holds of the messages accepted
    /// so far; returns them all.
    pub async fn wait_until(
        &self,
        what: &str,
        patience: Duration,
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        eventually(what, patience, || async {
            let got = self.received();
            if check(&got) {
                Ok(got)
            } else {
                Err(format!("{} mail(s): {got:#?}", got.len()))
            }
        })
        .await
    }

    /// Waits (up to `patience`) until at least `n` messages arrived; returns
    /// them all.
    pub async fn wait_for(&self, n: usize, patience: Duration) -> Vec<Received> {
        self.wait_until(&format!("{n} mail(s)"), patience, |got| got.len() >= n)
            .await
    }
}

/// A CA and a certificate it signed for `localhost` and `127.0.0.1` (EC
/// P-256: quick to make), by the `openssl` command: `ca.pem`, `cert.pem`,
/// `key.pem`.
fn make_certificates() -> TempDir {
    let dir = tempfile::tempdir().expect("a folder for certificates");
    let ext = dir.path().join("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write the extensions");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=livebase test CA",
                "-days",
                "2",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("the `openssl` command runs (the TLS tests make a certificate with it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
