//! The client's background task: the only owner of the WebSocket and the
//! [`ClientState`]. It loops over a closed set of events — a command from a
//! handle, a frame from the server, the silence timer — feeding each to the
//! state machine and writing what it hands out; when the connection ends it
//! reconnects with exponential backoff and jitter, serving commands meanwhile
//! so calls made while offline queue up instead of blocking.
//!
//! The task ends once every handle is gone (the command channel is closed) and
//! no call is waiting for an answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use livebase_schema::protocol::{QueryId, RequestId, ServerMessage};
use livebase_schema::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;
use crate::options::ClientOptions;
use crate::slot::Slot;
use crate::state::{AuthGeneration, ClientState, Notification};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest message accepted from the server: a Transition may carry many
/// results of up to 1 MiB each (the server caps what it accepts at 2 MiB).
const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// What a handle asks of the worker.
pub(crate) enum Command {
    Subscribe {
        id: u64,
        path: String,
        args: Value,
        slot: Arc<Slot>,
    },
    Unsubscribe {
        id: u64,
    },
    Request {
        kind: RequestKind,
        path: String,
        args: Value,
        reply: Reply,
    },
    SetAuth {
        token: Option<String>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum RequestKind {
    Mutation,
    Action,
}

type Reply = oneshot::Sender<Result<Value, ClientError>>;

/// The wait before reconnect attempt `failures + 1`: doubling from
/// `min_backoff` with each failure up to `max_backoff`, then cut by a random
/// factor in [0.5, 1] so clients dropped together spread out.
fn backoff(failures: u32, options: &ClientOptions) -> Duration {
    let ceiling = options
        .min_backoff
        .saturating_mul(1 << failures.min(16))
        .min(options.max_backoff);
    ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// Opens the WebSocket at `url`, within `limit`.
pub(crate) async fn open(url: String, limit: Duration) -> Result<Socket, String> {
    let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE_SIZE));
    match timeout(
        limit,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {limit:?}")),
    }
}

pub(crate) struct Worker {
    url: String,
    options: ClientOptions,
    state: ClientState,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Some handle may still send commands.
    commands_open: bool,
    /// Subscription handle ids to their queries, and queries to their slots.
    subscriptions: HashMap<u64, QueryId>,
    slots: HashMap<QueryId, Arc<Slot>>,
    replies: HashMap<RequestId, Reply>,
    auth_waiters: Vec<(AuthGeneration, oneshot::Sender<Result<(), ClientError>>)>,
    /// Reconnect attempts since the last connection that worked.
    failures: u32,
}

impl Worker {
    pub(crate) fn new(
        url: String,
        options: ClientOptions,
        state: ClientState,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Worker {
        Worker {
            url,
            options,
            state,
            commands,
            commands_open: true,
            subscriptions: HashMap::new(),
            slots: HashMap::new(),
            replies: HashMap::new(),
            auth_waiters: Vec::new(),
            failures: 0,
        }
    }

    pub(crate) async fn run(mut self, first: Socket) {
        let mut socket = Some(first);
        loop {
            let ws = match socket.take() {
                Some(ws) => ws,
                None => match self.reconnect().await {
                    Some(ws) => ws,
                    None => break,
                },
            };
            let Some(reason) = self.serve(ws).await else {
                break;
            };
            let notifications = self.state.on_disconnect(&reason);
            self.dispatch(notifications);
        }
        for slot in self.slots.values() {
            slot.close();
        }
    }

    /// Nobody can ask anything more, and nobody waits for an answer.
    fn finished(&self) -> bool {
        !self.commands_open && self.replies.is_empty() && self.auth_waiters.is_empty()
    }

    /// Runs one connection until it ends (`Some(why)`) or the worker is done
    /// (`None`).
    async fn serve(&mut self, mut ws: Socket) -> Option<String> {
        self.state.on_connect();
        let mut heard = Instant::now();
        loop {
            if let Err(reason) = self.flush(&mut ws).await {
                return Some(reason);
            }
            if self.finished() {
                let _ = timeout(self.options.connect_timeout, ws.close(None)).await;
                return None;
            }
            tokio::select! {
                command = self.commands.recv(), if self.commands_open => {
                    self.on_command(command);
                    // Take whatever else is queued, so it goes out as one batch.
                    while let Ok(command) = self.commands.try_recv() {
                        self.apply(command);
                    }
                }
                frame = ws.next() => {
                    heard = Instant::now();
                    if let Err(reason) = self.on_frame(frame) {
                        return Some(reason);
                    }
                }
                _ = sleep_until(heard + self.options.server_silence) => {
                    return Some(format!(
                        "no message from the server for {:?}",
                        self.options.server_silence
                    ));
                }
            }
        }
    }

    /// Waits out the backoff and opens a new connection, serving commands all
    /// the while; `None` once the worker is done.
    async fn reconnect(&mut self) -> Option<Socket> {
        loop {
            let wake = Instant::now() + backoff(self.failures, &self.options);
            self.failures = self.failures.saturating_add(1);
            loop {
                if self.finished() {
                    return None;
                }
                tokio::select! {
                    _ = sleep_until(wake) => break,
                    command = self.commands.recv(), if self.commands_open => self.on_command(command),
                }
            }
            let connecting = open(self.url.clone(), self.options.connect_timeout);
            tokio::pin!(connecting);
            let opened = loop {
                if self.finished() {
                    return None;
                }
                tokio::select! {
                    opened = &mut connecting => break opened,
                    command = self.commands.recv(), if self.commands_open => self.on_command(command),
                }
            };
            if let Ok(ws) = opened {
                return Some(ws);
            }
        }
    }

    fn on_command(&mut self, command: Option<Command>) {
        match command {
            Some(command) => self.apply(command),
            None => self.commands_open = false,
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                id,
                path,
                args,
                slot,
            } => {
                let query_id = self.state.subscribe(path, args);
                self.subscriptions.insert(id, query_id);
                self.slots.insert(query_id, slot);
            }
            Command::Unsubscribe { id } => {
                if let Some(query_id) = self.subscriptions.remove(&id) {
                    self.slots.remove(&query_id);
                    self.state.unsubscribe(query_id);
                }
            }
            Command::Request {
                kind,
                path,
                args,
                reply,
            } => {
                let request_id = match kind {
                    RequestKind::Mutation => self.state.mutation(path, args),
                    RequestKind::Action => self.state.action(path, args),
                };
                self.replies.insert(request_id, reply);
            }
            Command::SetAuth { token, reply } => {
                let generation = self.state.set_auth(token);
                self.auth_waiters.push((generation, reply));
            }
        }
    }

    fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Result<(), String> {
        let text = match frame {
            None => return Err("the connection closed".into()),
            Some(Err(e)) => return Err(format!("connection error: {e}")),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame {
                    Some(f) => format!("closed by the server ({}): {}", f.code, f.reason),
                    None => "closed by the server".into(),
                })
            }
            // Pings are answered by tungstenite on the next write.
            Some(Ok(_)) => return Ok(()),
        };
        let message = ServerMessage::from_text(&text)
            .map_err(|e| format!("malformed message from the server: {e}"))?;
        let notifications = self.state.receive(message).map_err(|e| e.to_string())?;
        self.failures = 0;
        self.dispatch(notifications);
        Ok(())
    }

    /// Writes what the state machine has queued, as one batch.
    async fn flush(&mut self, ws: &mut Socket) -> Result<(), String> {
        let mut batch = Vec::new();
        while let Some(message) = self.state.next_outgoing() {
            batch.push(Ok(Message::text(message.to_text())));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let mut batch = futures::stream::iter(batch);
        match timeout(self.options.connect_timeout, ws.send_all(&mut batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("connection error: {e}")),
            Err(_) => Err("the server stopped reading".into()),
        }
    }

    fn dispatch(&mut self, notifications: Vec<Notification>) {
        for notification in notifications {
            match notification {
                Notification::QueriesUpdated { queries, .. } => {
                    for query_id in queries {
                        if let (Some(slot), Some(result)) =
                            (self.slots.get(&query_id), self.state.result(query_id))
                        {
                            slot.set(result.clone());
                        }
                    }
                }
                Notification::MutationCompleted { request_id, result }
                | Notification::ActionCompleted { request_id, result } => {
                    self.answer(request_id, result.map_err(ClientError::Function));
                }
                Notification::ActionLost { request_id } => {
                    self.answer(request_id, Err(ClientError::ConnectionLost));
                }
                Notification::AuthConfirmed { generation } => {
                    self.settle_auth(generation, Ok(()));
                }
                Notification::AuthFailed { generation, error } => {
                    self.settle_auth(generation, Err(ClientError::Unauthenticated(error)));
                }
            }
        }
    }

    fn answer(&mut self, request_id: RequestId, result: Result<Value, ClientError>) {
        if let Some(reply) = self.replies.remove(&request_id) {
            // The caller may have stopped waiting; the call still happened.
            let _ = reply.send(result);
        }
    }

    /// Answers every `set_auth` up to `generation`: a later call's answer
    /// stands for the earlier calls it replaced.
    fn settle_auth(&mut self, generation: AuthGeneration, result: Result<(), ClientError>) {
        let (settled, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.auth_waiters)
            .into_iter()
            .partition(|(waiting, _)| *waiting <= generation);
        self.auth_waiters = waiting;
        for (_, reply) in settled {
            let _ = reply.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_it() {
        let options = ClientOptions::default()
            .with_backoff(Duration::from_millis(100), Duration::from_secs(2));
        for (failures, ceiling_ms) in [(0, 100), (1, 200), (3, 800), (5, 2000), (40, 2000)] {
            let ceiling = Duration::from_millis(ceiling_ms);
            for _ in 0..50 {
                let wait = backoff(failures, &options);
                assert!(
                    wait <= ceiling && wait >= ceiling / 2,
                    "{failures}: {wait:?}"
                );
            }
        }
    }
}
