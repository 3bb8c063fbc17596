//! Child processes a test starts: the `livebase` binary, or this very test
//! binary re-executed to run one test alone (a server to SIGKILL at a chosen
//! moment). Each is killed when the test ends, passed or failed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::PATIENCE;

/// A child process, killed (and reaped) on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl KillOnDrop {
    /// The lines the child prints on stdout, read by a thread of their own
    /// that drains the pipe to its end, whether or not anyone still listens
    /// (so a chatty child never blocks on a full pipe, nor dies writing to a
    /// closed one); the channel ends when the child's stdout does.
    pub fn stdout_lines(&mut self) -> mpsc::Receiver<String> {
        let stdout = self.0.stdout.take().expect("the child's stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    }
}

/// Runs the test `name` of the current test binary alone in a child process,
/// with `env` set, its stdout piped (see [`KillOnDrop::stdout_lines`]).
pub fn run_test_alone(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> KillOnDrop {
    let child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    KillOnDrop(child)
}

/// The address a `livebase serve` (or `dev`) child prints once it listens
/// (`livebase listening on http://<addr>`), and the lines it printed before
/// it; fails the test if none comes within [`PATIENCE`].
pub fn listening_address(lines: &mpsc::Receiver<String>) -> (SocketAddr, Vec<String>) {
    let mut early = Vec::new();
    loop {
        let line = lines
            .recv_timeout(PATIENCE)
            .expect("livebase prints its URL");
        if let Some(url) = line.strip_prefix("livebase listening on http://") {
            return (url.trim().parse().expect("an address"), early);
        }
        early.push(line);
    }
}
