//! A typed WebSocket client for the paths that are not hot: sending
//! `ClientMsg`s with an `id`, reading `ServerMsg`s with a deadline, and the
//! `hello` / `subscribe` handshakes. Uses the main crate's wire types.

use std::time::Duration;

use anyhow::{Context, bail};
use casebroker::protocol::{ClientMsg, Envelope, Id, Role, ServerMsg};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::target::{Target, Ws};

/// How long any single wait for a reply may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Serialises a client message with an optional numeric `id`.
pub fn encode(msg: ClientMsg, id: Option<u64>) -> String {
    let env = Envelope {
        id: id.map(|n| Id::Num(n as i64)),
        msg,
    };
    serde_json::to_string(&env).expect("client messages serialise")
}

/// One received message: typed when the wire types know it.
#[derive(Debug)]
pub struct Received {
    pub id: Option<Id>,
    /// `None` for a message type this build's `ServerMsg` does not know.
    pub msg: Option<ServerMsg>,
    pub text: String,
}

impl Received {
    fn parse(text: String) -> Received {
        match serde_json::from_str::<Envelope<ServerMsg>>(&text) {
            Ok(env) => Received {
                id: env.id,
                msg: Some(env.msg),
                text,
            },
            Err(_) => Received {
                id: serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| serde_json::from_value(v.get("id")?.clone()).ok()),
                msg: None,
                text,
            },
        }
    }

    /// True when this echoes the numeric `id`.
    pub fn answers(&self, id: u64) -> bool {
        self.id == Some(Id::Num(id as i64))
    }
}

/// How a connection ended while waiting.
#[derive(Debug)]
pub enum Ended {
    /// A close frame with this code (1005 when none was given).
    Closed(u16),
    /// The stream ended without a close frame, or failed.
    Dropped,
}

/// A connection that reads typed messages.
pub struct Client {
    ws: Ws,
    next_id: u64,
}

impl Client {
    pub fn new(ws: Ws) -> Client {
        Client { ws, next_id: 1 }
    }

    /// Connects from the target's next source address.
    pub async fn connect(target: &Target) -> anyhow::Result<Client> {
        Ok(Client::new(target.connect(REPLY_TIMEOUT).await?))
    }

    /// Gives the socket back, for a hot loop of its own.
    pub fn into_inner(self) -> Ws {
        self.ws
    }

    /// Sends one message; returns the `id` it carries.
    pub async fn send(&mut self, msg: ClientMsg) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(Message::text(encode(msg, Some(id))))
            .await
            .context("send")?;
        Ok(id)
    }

    /// The next text message, within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> anyhow::Result<Result<Received, Ended>> {
        loop {
            let next = tokio::time::timeout(timeout, self.ws.next())
                .await
                .context("no message in time")?;
            return Ok(match next {
                Some(Ok(Message::Text(t))) => Ok(Received::parse(t.as_str().to_string())),
                Some(Ok(Message::Close(frame))) => Err(Ended::Closed(
                    frame.map(|f| u16::from(f.code)).unwrap_or(1005),
                )),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Err(Ended::Dropped),
            });
        }
    }

    /// Waits (skipping anything else) for the first message that `pred`
    /// accepts. An `error` answering `answer_to` fails at once.
    pub async fn wait_for(
        &mut self,
        what: &str,
        answer_to: Option<u64>,
        pred: impl Fn(&Received) -> bool,
    ) -> anyhow::Result<Received> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let got = match self.recv(left).await {
                Ok(Ok(r)) => r,
                Ok(Err(end)) => bail!("connection ended ({end:?}) while waiting for {what}"),
                Err(_) => bail!("no {what} within {REPLY_TIMEOUT:?}"),
            };
            if pred(&got) {
                return Ok(got);
            }
            if let Some(id) = answer_to
                && got.answers(id)
                && matches!(got.msg, Some(ServerMsg::Error { .. }))
            {
                bail!("{what}: {}", got.text);
            }
        }
    }

    /// Sends `msg` and waits for the reply echoing its `id`; an `error`
    /// reply is an error.
    pub async fn request(&mut self, what: &str, msg: ClientMsg) -> anyhow::Result<ServerMsg> {
        let id = self.send(msg).await?;
        let reply = self.wait_for(what, None, |r| r.answers(id)).await?;
        match reply.msg {
            Some(ServerMsg::Error { .. }) | None => bail!("{what}: {}", reply.text),
            Some(msg) => Ok(msg),
        }
    }

    /// `hello` as an agent; waits for `welcome`.
    pub async fn hello_agent(&mut self, token: &str) -> anyhow::Result<()> {
        let msg = ClientMsg::Hello {
            role: Role::Agent,
            token: Some(token.to_string()),
        };
        match self.request("welcome", msg).await? {
            ServerMsg::Welcome { .. } => Ok(()),
            other => bail!("expected welcome, got {other:?}"),
        }
    }

    /// `hello` as a customer; waits for `welcome`.
    pub async fn hello_customer(&mut self) -> anyhow::Result<()> {
        let msg = ClientMsg::Hello {
            role: Role::Customer,
            token: None,
        };
        match self.request("welcome", msg).await? {
            ServerMsg::Welcome { .. } => Ok(()),
            other => bail!("expected welcome, got {other:?}"),
        }
    }

    /// `subscribe` to the whole company; returns the snapshot's `seq`.
    pub async fn subscribe(&mut self) -> anyhow::Result<u64> {
        let msg = ClientMsg::Subscribe {
            group: None,
            resume: None,
        };
        match self.request("snapshot", msg).await? {
            ServerMsg::Snapshot { seq, .. } => Ok(seq),
            other => bail!("expected snapshot, got {other:?}"),
        }
    }

    /// Closes with a normal close frame, briefly waiting for the reply.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}
