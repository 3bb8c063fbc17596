//! The HTTP/1.1 client one node calls another with: kept-alive connections
//! per address, each request buffered whole, and an answer to the one
//! question a retry depends on — whether the request may have reached the
//! other node ([`SendError::maybe_sent`]).

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Time to open a connection to another node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time another node has to answer a forwarded request (an action may run
/// for a while; a mutation is quick).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of an answer read.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Idle connections kept.
const MAX_IDLE: usize = 32;

/// A failed call.
#[derive(Debug)]
pub struct SendError {
    pub message: String,
    /// The request may have reached the other node (it failed after being
    /// written): only an idempotent request may be sent again.
    pub maybe_sent: bool,
}

/// Kept-alive connections, by `host:port`.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<(String, SendRequest<Full<Bytes>>)>>,
}

impl Pool {
    /// Sends `method path` to `authority` (`host:port`) with `headers` and
    /// `body`, and reads the whole answer.
    pub async fn send(
        &self,
        authority: &str,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Bytes>, SendError> {
        let request = || {
            let mut r = Request::builder().method(method.clone()).uri(path);
            for (name, value) in headers {
                r = r.header(name, value);
            }
            r.header(axum::http::header::HOST, authority)
                .body(Full::new(body.clone()))
                .map_err(|e| SendError {
                    message: format!("building a request: {e}"),
                    maybe_sent: false,
                })
        };
        // A kept connection the other end closed since fails before the
        // request is written: then a new one is made.
        let mut sender = match self.take(authority) {
            Some(sender) => sender,
            None => connect(authority).await?,
        };
        let response = match sender.try_send_request(request()?).await {
            Ok(response) => response,
            Err(e) if e.message().is_some() => {
                sender = connect(authority).await?;
                sender
                    .send_request(request()?)
                    .await
                    .map_err(|e| SendError {
                        message: format!("calling {authority}: {e}"),
                        maybe_sent: true,
                    })?
            }
            Err(e) => {
                return Err(SendError {
                    message: format!("calling {authority}: {}", e.into_error()),
                    maybe_sent: true,
                })
            }
        };
        let (parts, body) = response.into_parts();
        let read = tokio::time::timeout(
            ANSWER_TIMEOUT,
            http_body_util::Limited::new(body, MAX_ANSWER_BYTES).collect(),
        )
        .await
        .map_err(|_| SendError {
            message: format!("{authority} did not answer within {ANSWER_TIMEOUT:?}"),
            maybe_sent: true,
        })?
        .map_err(|e| SendError {
            message: format!("reading {authority}'s answer: {e}"),
            maybe_sent: true,
        })?;
        self.keep(authority, sender);
        Ok(Response::from_parts(parts, read.to_bytes()))
    }

    fn take(&self, authority: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = idle.iter().rposition(|(a, _)| a == authority) {
            let (_, sender) = idle.swap_remove(i);
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn keep(&self, authority: &str, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((authority.to_string(), sender));
        }
    }
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, SendError> {
    let refused = |message: String| SendError {
        message,
        maybe_sent: false,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| refused(format!("connecting to {authority} timed out")))?
        .map_err(|e| refused(format!("connecting to {authority}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| refused(format!("connecting to {authority}: {e}")))?;
    tokio::spawn(async move {
        // Ends when the other end closes or every sender is gone.
        let _ = connection.await;
    });
    Ok(sender)
}
