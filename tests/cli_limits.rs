//! The per-address and per-user caps can be set on the command line (behind
//! a proxy on another machine every client has the proxy's address), and a
//! cap of 0, which would refuse everyone, is refused with an error naming the
//! flag.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use livebase_testkit::process::{listening_address, KillOnDrop};
use livebase_testkit::PATIENCE as GUARD;

fn livebase(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_livebase"));
    c.args(args)
        .env_remove("LIVEBASE_DATA")
        .env_remove("LIVEBASE_SMTP_URL")
        .env_remove("LIVEBASE_MAX_CONNECTIONS_PER_ADDRESS")
        .env_remove("LIVEBASE_MAX_HTTP_CONNECTIONS_PER_ADDRESS")
        .env_remove("LIVEBASE_MAX_CONNECTIONS_PER_USER")
        .env_remove("LIVEBASE_MAX_CALLS_IN_FLIGHT");
    c
}

#[test]
fn a_cap_of_zero_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for flag in [
        "--max-connections-per-address",
        "--max-http-connections-per-address",
        "--max-connections-per-user",
        "--max-calls-in-flight",
    ] {
        let out = livebase(&[
            "serve",
            "--port",
            "0",
            "--data",
            dir.path().to_str().unwrap(),
            flag,
            "0",
        ])
        .output()
        .expect("livebase runs");
        assert!(!out.status.success(), "{flag} 0 is refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
        assert!(stderr.contains("at least 1"), "{stderr}");
    }
}

/// `GET /health` on a fresh connection: the status code.
fn health(addr: SocketAddr) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("writes");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"))
}

#[test]
fn the_per_address_http_cap_is_set_by_its_flag() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let child = livebase(&[
        "serve",
        "--port",
        "0",
        "--data",
        dir.path().to_str().unwrap(),
        "--max-http-connections-per-address",
        "2",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("livebase starts");
    let mut child = KillOnDrop(child);
    let lines = child.stdout_lines();
    let (addr, _) = listening_address(&lines);
    assert_eq!(health(addr), 200);
    // Two kept-alive connections, each served once (so each holds one of
    // this address's two places: a connection refused because the first
    // request's place was not given back yet is tried again) ...
    let idle: Vec<TcpStream> = (0..2).map(|_| admitted(addr)).collect();
    // ... so a third is refused, where the default (256) would serve it.
    assert!(
        eventually(|| health(addr) == 429),
        "a third connection is refused"
    );
    drop(idle);
    assert!(
        eventually(|| health(addr) == 200),
        "a place given back serves again"
    );
}

/// A kept-alive connection the server has served a `GET /health` on (and
/// so holds a place for), tried again while the server refuses it.
fn admitted(addr: SocketAddr) -> TcpStream {
    let deadline = std::time::Instant::now() + GUARD;
    loop {
        let mut s = TcpStream::connect(addr).expect("connects");
        s.set_read_timeout(Some(GUARD)).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("writes");
        let mut head = [0u8; 12];
        let read = s.read_exact(&mut head);
        if read.is_ok() && head.starts_with(b"HTTP/1.1 200") {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection was served within {GUARD:?}: {read:?} {:?}",
            String::from_utf8_lossy(&head)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `check` holds within [`GUARD`], asked every 50 ms (a loaded
/// machine may take a moment to accept the connections it counts).
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + GUARD;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_public_url_that_is_not_an_origin_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for bad in ["not a url", "https://example.com/path?q=1"] {
        let out = livebase(&[
            "serve",
            "--port",
            "0",
            "--data",
            dir.path().to_str().unwrap(),
            "--public-url",
            bad,
        ])
        .env_remove("LIVEBASE_PUBLIC_URL")
        .output()
        .expect("livebase runs");
        assert!(!out.status.success(), "{bad} is refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--public-url"), "{stderr}");
    }
}
