//! The accept loop: one task per TCP connection, each served by hyper's HTTP/1
//! with upgrades (for the WebSocket) and a header-read timeout, so a client
//! that connects and then sends nothing — or a request's headers a byte at a
//! time — is cut off instead of holding a socket forever. HTTP connections are
//! capped in total and per client address; one over a cap gets a `503` or a
//! `429` with `Retry-After` and is closed. A connection's slot is held until
//! it ends or becomes a WebSocket (which the WebSocket caps then count). On
//! shutdown the loop stops accepting, asks every connection to finish its
//! current request, and waits (bounded) for them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub use super::client_addr::{client_key, ClientAddr};
use super::EdgeOptions;

/// Time a client has to send a request's headers (the HTTP side of the
/// WebSocket handshake included) before the connection is closed. Also bounds
/// an idle keep-alive connection: the wait for the next request's headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTP connections served at once (WebSockets not included once
/// upgraded); more are answered `503` and closed.
pub const MAX_HTTP_CONNECTIONS: usize = 4_096;
/// Most HTTP connections from one client address (an IPv4 address, or an
/// IPv6 /64 network: one host gets a whole /64); more are answered `429`.
pub const MAX_HTTP_CONNECTIONS_PER_ADDRESS: usize = 256;
/// The `Retry-After` a refused connection is given.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Refusals answered at once; beyond this a connection over a cap is closed
/// without an answer, so a flood cannot make the answers themselves a load.
const MAX_REFUSALS: usize = 256;
/// Time a refused connection has to send its request's headers.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for in-flight HTTP requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Things held per key — connections per client address or per user, calls
/// in flight per caller — for a cap per key. A key is in the map only while
/// it holds something, so the map is as large as the set of current holders.
pub struct Counts<K: Hash + Eq + Clone> {
    max: usize,
    counts: Mutex<HashMap<K, usize>>,
}

/// One held thing's place in a [`Counts`], given back on drop.
pub struct Slot<K: Hash + Eq + Clone> {
    counts: Arc<Counts<K>>,
    key: K,
}

/// Connections held per client address.
pub type AddressCounts = Counts<IpAddr>;
/// One connection's place in an [`AddressCounts`].
pub type AddressSlot = Slot<IpAddr>;

impl<K: Hash + Eq + Clone> Counts<K> {
    pub fn new(max: usize) -> Arc<Counts<K>> {
        Arc::new(Counts {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The cap per key.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `key`, or `None` when it already holds `max`.
    pub fn try_hold(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let held = counts.entry(key.clone()).or_insert(0);
        if *held >= self.max {
            if *held == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *held += 1;
        Some(Slot {
            counts: self.clone(),
            key,
        })
    }

    /// How many slots `key` holds.
    pub fn held(&self, key: &K) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Slot<K> {
    /// What this slot is counted against.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = counts.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Why a connection is not served.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// Its address holds [`EdgeOptions::max_http_connections_per_address`].
    Address,
    /// The server holds [`EdgeOptions::max_http_connections`].
    Full,
}

/// Serves `app` on `listener` until `stop` fires. `stop` is subscribed by the
/// caller before this task is spawned, so a shutdown signalled the moment the
/// server is up is never missed.
pub async fn run(
    listener: TcpListener,
    app: Router,
    mut stop: broadcast::Receiver<()>,
    shutdown: broadcast::Sender<()>,
    edge: EdgeOptions,
) {
    let slots = Arc::new(Semaphore::new(edge.max_http_connections));
    let per_address = AddressCounts::new(edge.max_http_connections_per_address);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let client = ClientAddr(client_key(peer.ip()));
                    let admitted = match per_address.try_hold(client.0) {
                        None => Err(Refusal::Address),
                        Some(slot) => match slots.clone().try_acquire_owned() {
                            Ok(permit) => Ok((slot, permit)),
                            Err(_) => Err(Refusal::Full),
                        },
                    };
                    match admitted {
                        Ok(held) => {
                            let serve = serve_connection(
                                tcp,
                                app.clone(),
                                client,
                                shutdown.subscribe(),
                                edge.handshake_timeout,
                            );
                            connections.spawn(async move {
                                serve.await;
                                drop(held);
                            });
                        }
                        Err(refusal) => match refusals.clone().try_acquire_owned() {
                            Ok(permit) => {
                                connections.spawn(refuse(tcp, refusal, permit));
                            }
                            Err(_) => drop(tcp),
                        },
                    }
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

async fn serve_connection(
    tcp: TcpStream,
    app: Router,
    client: ClientAddr,
    mut stop: broadcast::Receiver<()>,
    handshake_timeout: Duration,
) {
    // Small frames must leave at once: without TCP_NODELAY, Nagle's algorithm
    // and delayed ACKs add tens of milliseconds to a round trip.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("setting TCP_NODELAY: {e}");
    }
    let app = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(client);
        app.call(request)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(TokioIo::new(tcp), service)
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

/// Answers a connection over a cap — `429` or `503`, with `Retry-After` —
/// once its request's headers are in, and closes it.
async fn refuse(tcp: TcpStream, refusal: Refusal, _permit: OwnedSemaphorePermit) {
    let service = hyper::service::service_fn(move |_request: Request<Incoming>| async move {
        Ok::<_, Infallible>(refusal_response(refusal))
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), service)
        .await;
    if let Err(e) = result {
        tracing::debug!("refused HTTP connection ended: {e}");
    }
}

fn refusal_response(refusal: Refusal) -> Response<Body> {
    let (status, message) = match refusal {
        Refusal::Address => (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address",
        ),
        Refusal::Full => (StatusCode::SERVICE_UNAVAILABLE, "too many connections"),
    };
    too_many(status, message)
}

/// A refusal for being over a connection cap: `status`, `Retry-After`
/// ([`RETRY_AFTER`]) and `Connection: close`, with a JSON body naming why.
pub fn too_many(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"code": "TooManyConnections", "message": message});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(RETRY_AFTER.as_secs()),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64_network_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }

    #[test]
    fn an_address_holds_at_most_max_slots_and_gets_them_back_on_drop() {
        let counts = AddressCounts::new(2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = counts.try_hold(a).expect("first");
        let second = counts.try_hold(a).expect("second");
        assert!(counts.try_hold(a).is_none(), "a third is refused");
        let other = counts.try_hold(b).expect("another address is not affected");
        drop(first);
        let again = counts.try_hold(a).expect("a slot given back is free again");
        drop((second, again, other));
        assert_eq!(counts.held(&a), 0);
        assert!(
            counts.counts.lock().unwrap().is_empty(),
            "no address stays in the map"
        );
    }
}
