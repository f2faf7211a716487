//! One dashboard: connecting it (hello as an agent, subscribe) and its
//! hot loop, which scans each frame for `seq`, counts gaps, events out of
//! order and events the driver did not cause, looks up the send time in
//! the ring and batches the latencies; its [`Tally`] is what it saw.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::shared::{RING, Shared};
use crate::client::Client;
use crate::scan;
use crate::target::{Target, Ws};

/// Latencies a dashboard buffers before flushing them to the histogram.
const FLUSH: usize = 1024;

/// One dashboard's tally.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) delivered: u64,
    pub(super) gaps: u64,
    pub(super) out_of_order: u64,
    pub(super) unexpected: u64,
    pub(super) last: u64,
    pub(super) disconnected: bool,
    /// The first seq this dashboard expected and did not get: (expected, got).
    pub(super) first_gap: Option<(u64, u64)>,
}

/// Connects one dashboard: hello as an agent, subscribe; returns the
/// socket and the snapshot `seq`.
pub(super) async fn open_dashboard(target: &Target, token: &str) -> anyhow::Result<(Ws, u64)> {
    let mut c = Client::connect(target).await?;
    c.hello_agent(token).await?;
    let seq = c.subscribe().await?;
    Ok((c.into_inner(), seq))
}

/// The hot loop of one dashboard: scan each frame for `seq`, check the
/// order, look up the send time, batch the latency.
pub(super) async fn dashboard(
    i: usize,
    mut ws: Ws,
    sh: Arc<Shared>,
    stop: CancellationToken,
) -> Tally {
    let mut t = Tally {
        last: sh.base,
        ..Tally::default()
    };
    let mut buf: Vec<u32> = Vec::with_capacity(FLUSH);
    loop {
        let msg = tokio::select! {
            biased;
            m = ws.next() => m,
            _ = stop.cancelled() => break,
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                t.disconnected = true;
                break;
            }
            Some(Ok(_)) => continue,
        };
        let b = text.as_bytes();
        if !scan::is_event(b) {
            continue;
        }
        let Some(seq) = scan::seq(b) else {
            t.out_of_order += 1;
            continue;
        };
        let now = sh.now_us();
        if seq <= t.last {
            t.first_gap.get_or_insert((t.last + 1, seq));
            t.out_of_order += 1;
            continue;
        }
        if seq != t.last + 1 && t.first_gap.is_none() {
            t.first_gap = Some((t.last + 1, seq));
        }
        t.gaps += seq - t.last - 1;
        t.last = seq;
        t.delivered += 1;
        let k = seq - sh.base;
        let sent = sh.sent.load(Ordering::Acquire);
        if k > sent {
            t.unexpected += 1;
        } else if sent - k < RING {
            let t0 = sh.send_us[(k % RING) as usize].load(Ordering::Relaxed);
            buf.push(now.saturating_sub(t0).min(u64::from(u32::MAX)) as u32);
            if buf.len() == FLUSH {
                sh.latency.record(i, &buf);
                buf.clear();
            }
        }
        sh.progress[i].store(seq, Ordering::Relaxed);
    }
    sh.latency.record(i, &buf);
    if t.disconnected {
        sh.progress[i].store(u64::MAX, Ordering::Relaxed);
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    t
}
