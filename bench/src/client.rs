//! A lean sync-protocol client: one WebSocket, the protocol types of
//! `livebase_schema::protocol`, nothing else — so the figures are the server's.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use livebase_schema::protocol::{
    ClientMessage, QueryId, QuerySetModification, RequestId, ServerMessage, SessionId,
};
use livebase_schema::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    query_set: u32,
    next_request: u32,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Conn {
    pub async fn connect(base: &str) -> Result<Conn, BoxError> {
        let url = format!("{}/api/sync", base.replacen("http://", "ws://", 1));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        let mut c = Conn {
            ws,
            query_set: 0,
            next_request: 0,
        };
        c.send(ClientMessage::Connect {
            session_id: SessionId::random(),
            connection_count: 0,
            last_close_reason: Some("InitialConnect".into()),
            max_observed_timestamp: None,
            client_ts: None,
        })
        .await?;
        Ok(c)
    }

    pub async fn send(&mut self, msg: ClientMessage) -> Result<(), BoxError> {
        self.ws.send(Message::Text(msg.to_text().into())).await?;
        Ok(())
    }

    /// Adds queries `(query_id, org, tag)` of `bench:list` in one ModifyQuerySet.
    pub async fn subscribe(
        &mut self,
        queries: &[(u32, String, Option<f64>)],
    ) -> Result<(), BoxError> {
        let base = self.query_set;
        self.query_set += 1;
        let modifications = queries
            .iter()
            .map(|(id, org, tag)| QuerySetModification::Add {
                query_id: QueryId(*id),
                udf_path: "bench:list".into(),
                args: vec![list_args(org, *tag)],
                journal: None,
                component_path: None,
            })
            .collect();
        self.send(ClientMessage::ModifyQuerySet {
            base_version: base,
            new_version: base + 1,
            modifications,
        })
        .await
    }

    /// Sends `bench:add` and returns its request id (the response is not awaited).
    pub async fn add(&mut self, org: &str, n: f64) -> Result<RequestId, BoxError> {
        let request_id = RequestId(self.next_request);
        self.next_request += 1;
        let mut args = org_args(org);
        if let Value::Object(o) = &mut args {
            o.insert("n".into(), Value::Float64(n));
        }
        self.send(ClientMessage::Mutation {
            request_id,
            udf_path: "bench:add".into(),
            args: vec![args],
            component_path: None,
        })
        .await?;
        Ok(request_id)
    }

    /// The next protocol message (pings skipped), or an error after `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Result<ServerMessage, BoxError> {
        loop {
            let frame = tokio::time::timeout(limit, self.ws.next())
                .await
                .map_err(|_| "timed out waiting for the server")?
                .ok_or("the server closed the connection")??;
            if let Message::Text(text) = frame {
                let msg = ServerMessage::from_text(&text)?;
                if !matches!(msg, ServerMessage::Ping) {
                    return Ok(msg);
                }
            }
        }
    }

    /// Waits for a Transition that ends at query set version `version`.
    pub async fn await_query_set(&mut self, version: u32, limit: Duration) -> Result<(), BoxError> {
        loop {
            if let ServerMessage::Transition { end_version, .. } = self.recv(limit).await? {
                if end_version.query_set >= version {
                    return Ok(());
                }
            }
        }
    }

    /// Sends `bench:add` and waits for its MutationResponse.
    pub async fn add_and_wait(&mut self, org: &str, n: f64) -> Result<(), BoxError> {
        let id = self.add(org, n).await?;
        loop {
            match self.recv(Duration::from_secs(30)).await? {
                ServerMessage::MutationResponse {
                    request_id, result, ..
                } if request_id == id => {
                    return result.map(|_| ()).map_err(|e| e.message.into());
                }
                _ => {}
            }
        }
    }

    pub fn query_set(&self) -> u32 {
        self.query_set
    }
}

fn org_args(org: &str) -> Value {
    livebase_schema::obj! { "organizationId" => org }
}

fn list_args(org: &str, tag: Option<f64>) -> Value {
    let mut args = org_args(org);
    if let (Value::Object(o), Some(tag)) = (&mut args, tag) {
        o.insert("tag".into(), Value::Float64(tag));
    }
    args
}

/// The `n` of the newest document in a `bench:list` result, if any.
pub fn newest_n(value: &Value) -> Option<f64> {
    match value {
        Value::Array(items) => items
            .first()
            .and_then(|d| d.get("n"))
            .and_then(Value::as_f64),
        _ => None,
    }
}
