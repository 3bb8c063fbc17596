//! The accept loop: one task per TCP connection, each served by hyper's HTTP/1
//! with upgrades (for the WebSocket) and a header-read timeout, so a client
//! that connects and then sends nothing — or a request's headers a byte at a
//! time — is cut off instead of holding a socket forever. On shutdown the
//! loop stops accepting, asks every connection to finish its current request,
//! and waits (bounded) for them.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use super::HANDSHAKE_TIMEOUT;

/// How long shutdown waits for in-flight HTTP requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` fires. `stop` is subscribed by the
/// caller before this task is spawned, so a shutdown signalled the moment the
/// server is up is never missed.
pub async fn run(
    listener: TcpListener,
    app: Router,
    mut stop: broadcast::Receiver<()>,
    shutdown: broadcast::Sender<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // The client's address, for the per-client limits.
                    let app = app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
                    connections.spawn(serve_connection(tcp, app, shutdown.subscribe()));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of
                    // spinning, and keep serving the connections we have.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.recv() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some HTTP requests were still running at shutdown");
    }
}

async fn serve_connection(tcp: TcpStream, app: Router, mut stop: broadcast::Receiver<()>) {
    // Small frames must leave at once: without TCP_NODELAY, Nagle's algorithm
    // and delayed ACKs add tens of milliseconds to a round trip.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("setting TCP_NODELAY: {e}");
    }
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.recv() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP connection ended: {e}");
    }
}
