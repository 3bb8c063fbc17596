//! [`ClientOptions`]: how the client connects and reconnects. A leaf, read by
//! the [`crate::client`] handle and the background worker alike.

use std::time::Duration;

/// How the client connects and reconnects. The defaults suit a server on the
/// same network; tests shorten the backoff.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The wait before the first reconnect attempt; each failed attempt doubles
    /// it, up to `max_backoff`. Each wait is jittered down by up to half, so
    /// clients cut off together do not come back together.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Time allowed to open the WebSocket, and to hand one batch of frames to it.
    pub connect_timeout: Duration,
    /// Silence after which the connection counts as dead. The server sends a
    /// `Ping` after 15 s of quiet, so this is several pings missed (the npm
    /// client also uses 60 s).
    pub server_silence: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            server_silence: Duration::from_secs(60),
        }
    }
}

impl ClientOptions {
    /// The defaults, with reconnect waits between `min` and `max`.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max.max(min);
        self
    }
}
