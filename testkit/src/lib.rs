//! What livebase's integration tests share, in one place: a real server on
//! port 0 over a SQLite file in a temporary folder ([`TestServer`]), a raw
//! sync-protocol client over a real WebSocket ([`Client`]), a small HTTP/1.1
//! client over a plain `TcpStream` with the one chunked decoder ([`http`]),
//! the mail outbox read as a person reads a mail ([`mail`]), a child
//! process that is killed when the test ends ([`process`]), and a PostgreSQL
//! server with a database per test ([`postgres`]).
//!
//! Every wait is bounded by [`PATIENCE`], so a server that stays silent fails
//! the test instead of hanging it. The protocol client checks on every
//! Transition it receives what the protocol promises about versions (see
//! `docs/reference/protocol.md`).
//!
//! Each test binary adds what is its own beside it: the application it
//! serves (`runtime/tests/support`, `tests/support`, `sdk/tests/common`).

pub mod http;
pub mod mail;
pub mod postgres;
pub mod process;
pub mod server;
pub mod ws;

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

pub use http::HttpResponse;
pub use server::{Failure, Outcome, TestServer, User, PASSWORD};
pub use ws::{add, error_code, remove, Client, Frame, Transition};

/// The longest any single wait of a test lasts (a reply, a frame, a job to
/// settle, a server to stop) before the test fails instead of hanging. A
/// guard, never a measure of speed: debug builds hash passwords slowly.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How long "nothing arrives" is watched for. Used after a positive control
/// (another connection already got the same round's push), so it only has to
/// cover the gap between two sends of one flush.
pub const SILENCE: Duration = Duration::from_millis(300);

/// Polls `probe` every 20 ms until it returns `Ok(value)`, and returns the
/// value; fails the test after `patience`, naming `what` and showing the
/// probe's last `Err` (what it saw instead). For what the test can only
/// watch for — a row a job writes, a mail that arrives — not for what a
/// reply already says.
pub async fn eventually<T, Fut>(what: &str, patience: Duration, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let seen = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            started.elapsed() < patience,
            "waited {patience:?} for {what}; saw {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
