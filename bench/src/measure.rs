//! What every phase measures with: the wait for an answer, progress lines,
//! percentiles of samples, and the wait for a pushed result.

use std::time::Duration;

use crate::client::{lean_newest, BoxError, Conn};

/// Longest wait for any one answer of the server.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A progress line on standard error (the table goes to standard output).
pub(crate) fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// p50, p99 and max of samples, in milliseconds.
pub(crate) fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*samples.last().expect("non-empty")),
    )
}

/// Reads until a Transition shows `n` as the newest document.
pub(crate) async fn wait_for_newest(conn: &mut Conn, n: f64) -> Result<(), BoxError> {
    loop {
        let text = conn.recv_text(WAIT).await?;
        if lean_newest(&text)?.is_some_and(|newest| newest.contains(&n)) {
            return Ok(());
        }
    }
}

/// Committed mutations per second while each of `conns` writes
/// `per_client` documents to an organization of its own, all at once. The
/// connections are handed back in `conns` for another slice.
pub(crate) async fn concurrent_writes(
    conns: &mut Vec<Conn>,
    per_client: usize,
) -> Result<f64, BoxError> {
    pipelined_writes(conns, per_client, 1).await
}

/// As [`concurrent_writes`], each client keeping `depth` mutations in
/// flight (1: each waits for its answer before sending the next).
pub(crate) async fn pipelined_writes(
    conns: &mut Vec<Conn>,
    per_client: usize,
    depth: usize,
) -> Result<f64, BoxError> {
    let clients = conns.len();
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> = std::mem::take(conns)
        .into_iter()
        .enumerate()
        .map(|(k, mut c)| {
            tokio::spawn(async move {
                if depth <= 1 {
                    for i in 0..per_client {
                        c.add_and_wait(&format!("org{k}"), i as f64).await?;
                    }
                } else {
                    c.add_pipelined(&format!("org{k}"), 0.0, per_client, depth)
                        .await?;
                }
                Ok::<Conn, BoxError>(c)
            })
        })
        .collect();
    for t in tasks {
        conns.push(t.await??);
    }
    Ok((per_client * clients) as f64 / t0.elapsed().as_secs_f64())
}
