//! The pipelined agent connections every step of a run goes through:
//! [`Agent`], one agent connection; [`pipe`], which sends one
//! connection's commands with at most `window` of them without reply and
//! matches the replies by `id`; [`step`], which runs every connection's
//! share at once and sums what they gave; and the helpers that deal
//! commands into shares and build the `create_case` and `delete`
//! commands.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use casebroker::protocol::{ClientMsg, CreateCase};
use futures::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, REPLY_TIMEOUT, encode};
use crate::scan;
use crate::stats::histogram;
use crate::target::{Target, Ws};

/// An agent connection that pipelines commands.
pub(super) struct Agent {
    ws: Ws,
    next_id: u64,
}

impl Agent {
    pub(super) async fn connect(target: &Target, token: &str) -> anyhow::Result<Agent> {
        let mut c = Client::connect(target).await?;
        c.hello_agent(token).await?;
        Ok(Agent {
            ws: c.into_inner(),
            next_id: 1,
        })
    }

    pub(super) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// What one connection's share of a step gave.
struct Piped {
    /// The code each command's reply names, in command order (`None` for
    /// a refused command).
    codes: Vec<Option<String>>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

/// Sends `cmds` on one connection, at most `window` without reply, and
/// no more once `until` has passed (the rest are not sent); a reply of type
/// `expect` is a success, anything else answering a command is a refusal.
/// Fails when the connection ends or a reply is more than
/// [`REPLY_TIMEOUT`] late.
async fn pipe(
    agent: &mut Agent,
    cmds: Vec<ClientMsg>,
    window: usize,
    expect: &str,
    until: Option<Instant>,
) -> anyhow::Result<Piped> {
    let mut out = Piped {
        codes: vec![None; cmds.len()],
        ok: 0,
        errors: 0,
        first_error: None,
        latency: histogram(),
    };
    let mut inflight: HashMap<u64, (usize, Instant)> = HashMap::with_capacity(window);
    let mut cmds = cmds.into_iter().enumerate();
    let mut more = true;
    loop {
        while more && inflight.len() < window {
            if until.is_some_and(|u| Instant::now() >= u) {
                more = false;
                break;
            }
            let Some((i, msg)) = cmds.next() else {
                more = false;
                break;
            };
            let id = agent.next_id;
            agent.next_id += 1;
            inflight.insert(id, (i, Instant::now()));
            agent
                .ws
                .feed(Message::text(encode(msg, Some(id))))
                .await
                .context("agent send")?;
        }
        agent.ws.flush().await.context("agent send")?;
        if inflight.is_empty() {
            return Ok(out);
        }
        let Ok(first) = tokio::time::timeout(REPLY_TIMEOUT, agent.ws.next()).await else {
            bail!(
                "{} replies missing after {REPLY_TIMEOUT:?} (expected {expect})",
                inflight.len()
            );
        };
        // Handle the awaited message and whatever else is already there,
        // then top the window up in one write.
        let mut next = Some(first);
        while let Some(m) = next.take() {
            let text = match m {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(frame))) => bail!(
                    "the broker closed an agent connection ({}) with {} replies outstanding",
                    frame.map(|f| u16::from(f.code)).unwrap_or(1005),
                    inflight.len()
                ),
                Some(Ok(_)) => {
                    next = agent.ws.next().now_or_never();
                    continue;
                }
                Some(Err(e)) => bail!("agent connection failed: {e}"),
                None => bail!(
                    "agent connection ended with {} replies outstanding",
                    inflight.len()
                ),
            };
            let b = text.as_bytes();
            if let Some(id) = scan::id(b)
                && let Some((i, sent)) = inflight.remove(&id)
            {
                if scan::msg_type(b) == Some(expect) {
                    out.latency
                        .saturating_record((sent.elapsed().as_micros() as u64).max(1));
                    out.ok += 1;
                    out.codes[i] = scan::code(b).map(str::to_string);
                } else {
                    out.errors += 1;
                    out.first_error
                        .get_or_insert_with(|| text.as_str().to_string());
                }
            }
            next = agent.ws.next().now_or_never();
        }
    }
}

/// What one step (every connection's share) gave.
pub(super) struct Step {
    /// The codes the successful replies name.
    pub(super) codes: Vec<String>,
    pub(super) ok: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) latency: Histogram<u64>,
    /// From the first command sent to the last reply.
    pub(super) secs: f64,
}

/// Runs `shares[c]` on connection `c`, all connections at once, sending
/// nothing new after `until`.
pub(super) async fn step(
    agents: &mut [Agent],
    shares: Vec<Vec<ClientMsg>>,
    window: usize,
    expect: &str,
    until: Option<Instant>,
) -> anyhow::Result<Step> {
    let started = Instant::now();
    let results = futures::future::join_all(
        agents
            .iter_mut()
            .zip(shares)
            .map(|(a, cmds)| pipe(a, cmds, window, expect, until)),
    )
    .await;
    let mut s = Step {
        codes: Vec::new(),
        ok: 0,
        errors: 0,
        first_error: None,
        latency: histogram(),
        secs: started.elapsed().as_secs_f64(),
    };
    for r in results {
        let p = r?;
        s.codes.extend(p.codes.into_iter().flatten());
        s.ok += p.ok;
        s.errors += p.errors;
        if s.first_error.is_none() {
            s.first_error = p.first_error;
        }
        s.latency.add(&p.latency).expect("same bounds");
    }
    Ok(s)
}

/// Deals `items` round-robin into `n` shares.
pub(super) fn deal<T>(items: impl IntoIterator<Item = T>, n: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..n.max(1)).map(|_| Vec::new()).collect();
    let len = out.len();
    for (i, item) in items.into_iter().enumerate() {
        out[i % len].push(item);
    }
    out
}

pub(super) fn create(group: &str, name: String) -> ClientMsg {
    ClientMsg::CreateCase(CreateCase {
        group: group.to_string(),
        name: Some(name),
        ..CreateCase::default()
    })
}

pub(super) fn deletes(codes: &[String]) -> impl Iterator<Item = ClientMsg> + '_ {
    codes
        .iter()
        .map(|code| ClientMsg::Delete { code: code.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dealing_is_round_robin() {
        assert_eq!(deal(0..5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(deal(0..2, 3), vec![vec![0], vec![1], vec![]]);
        assert_eq!(deal(0..3, 0), vec![vec![0, 1, 2]]);
    }
}
