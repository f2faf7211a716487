//! The driver, the only writer of the company's stream: it creates,
//! closes and deletes cases (each reply turns a created case into a close
//! and a closed one into a delete), paced by the rate or by a window over
//! the slowest dashboard, and tags each command's `id` with its kind; then
//! the clean-up that deletes the cases a run left open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use casebroker::protocol::{ClientMsg, CreateCase};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::FanoutOpts;
use super::shared::{RING, Shared};
use crate::client::{Client, encode};
use crate::scan;
use crate::target::Ws;

/// Commands the driver may have sent without a reply.
const REPLY_WINDOW: u64 = 4096;
/// Commands fed before the driver flushes its socket.
const SEND_BATCH: u32 = 64;

/// What the driver did.
pub(super) struct Driven {
    pub(super) changes: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    /// Cases it left behind, deleted once the dashboards are gone.
    pub(super) live: Vec<String>,
}

const CREATE: u64 = 0;
const CLOSE: u64 = 1;
const DELETE: u64 = 2;

/// What the driver's reply reader counts.
#[derive(Default)]
struct Replies {
    acked: AtomicU64,
    errors: AtomicU64,
    /// Cases created and not yet deleted, for the clean-up.
    live: std::sync::Mutex<std::collections::HashSet<String>>,
    first_error: std::sync::Mutex<Option<String>>,
}

/// Reads the driver's replies: counts them, and turns each created case
/// into a close and each closed case into a delete.
async fn driver_replies(
    mut source: futures::stream::SplitStream<Ws>,
    replies: Arc<Replies>,
    next: mpsc::UnboundedSender<(u64, String)>,
) {
    while let Some(Ok(msg)) = source.next().await {
        let Message::Text(text) = msg else { continue };
        let b = text.as_bytes();
        let Some(id) = scan::id(b) else { continue };
        match scan::msg_type(b) {
            Some("case") | Some("deleted") => {
                let Some(code) = scan::code(b) else { continue };
                let mut live = replies.live.lock().expect("live lock");
                match id & 3 {
                    CREATE => {
                        live.insert(code.to_string());
                        let _ = next.send((CLOSE, code.to_string()));
                    }
                    CLOSE => {
                        let _ = next.send((DELETE, code.to_string()));
                    }
                    _ => {
                        live.remove(code);
                    }
                }
            }
            _ => {
                replies.errors.fetch_add(1, Ordering::Relaxed);
                replies
                    .first_error
                    .lock()
                    .expect("error lock")
                    .get_or_insert_with(|| text.as_str().to_string());
            }
        }
        replies.acked.fetch_add(1, Ordering::Release);
    }
}

/// The driver: sends changes until `deadline`, paced by `rate` or by the
/// window over the slowest dashboard; then waits for every reply.
pub(super) async fn driver(
    ws: Ws,
    sh: Arc<Shared>,
    opts: &FanoutOpts,
    deadline: Instant,
) -> anyhow::Result<Driven> {
    let (mut sink, source) = ws.split();
    let counts = Arc::new(Replies::default());
    let acked = &counts.acked;
    let (next_tx, mut next_rx) = mpsc::unbounded_channel();
    let replies = tokio::spawn(driver_replies(source, counts.clone(), next_tx));
    let started = Instant::now();
    let mut k: u64 = 0;
    let mut unflushed = 0u32;
    let mut slowest = sh.base;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(rate) = opts.rate {
            let due = started + Duration::from_secs_f64(k as f64 / rate);
            if due > now {
                sink.flush().await?;
                unflushed = 0;
                tokio::time::sleep_until(due.min(deadline).into()).await;
                continue;
            }
        }
        let window = if opts.rate.is_some() {
            RING / 2
        } else {
            opts.window
        };
        if k - acked.load(Ordering::Acquire) >= REPLY_WINDOW
            || sh.base + k - slowest.min(sh.base + k) >= window
        {
            let (_, min) = sh.scan_progress();
            slowest = min;
            if k - acked.load(Ordering::Acquire) >= REPLY_WINDOW
                || sh.base + k - slowest.min(sh.base + k) >= window
            {
                sink.flush().await?;
                unflushed = 0;
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        let (kind, msg) = match next_rx.try_recv() {
            Ok((CLOSE, code)) => (CLOSE, ClientMsg::Close { code: Some(code) }),
            Ok((_, code)) => (DELETE, ClientMsg::Delete { code }),
            Err(_) => (
                CREATE,
                ClientMsg::CreateCase(CreateCase {
                    group: opts.group.clone(),
                    name: Some(format!("load {}", k + 1)),
                    ..CreateCase::default()
                }),
            ),
        };
        k += 1;
        sh.send_us[(k % RING) as usize].store(sh.now_us(), Ordering::Relaxed);
        sh.sent.store(k, Ordering::Release);
        sink.feed(Message::text(encode(msg, Some(k << 2 | kind))))
            .await
            .context("driver send")?;
        unflushed += 1;
        if unflushed >= SEND_BATCH {
            sink.flush().await.context("driver send")?;
            unflushed = 0;
        }
    }
    sink.flush().await.context("driver send")?;
    let wait_until = Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::Acquire) < k && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let missing_replies = k - acked.load(Ordering::Acquire).min(k);
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    replies.abort();
    let mut errors = counts.errors.load(Ordering::Relaxed);
    let mut first_error = counts.first_error.lock().expect("error lock").take();
    if missing_replies > 0 {
        errors += missing_replies;
        first_error.get_or_insert_with(|| format!("{missing_replies} commands got no reply"));
    }
    let live = counts
        .live
        .lock()
        .expect("live lock")
        .drain()
        .collect::<Vec<_>>();
    Ok(Driven {
        changes: k,
        errors,
        first_error,
        live,
    })
}

/// Deletes the cases a run left open, so the next run's snapshots stay
/// small. Not measured; best effort.
pub(super) async fn clean_up(opts: &FanoutOpts, codes: Vec<String>) -> anyhow::Result<()> {
    if codes.is_empty() {
        return Ok(());
    }
    let mut c = Client::connect(&opts.target).await?;
    c.hello_agent(&opts.token).await?;
    let mut ws = c.into_inner();
    let n = codes.len();
    for (i, code) in codes.into_iter().enumerate() {
        ws.feed(Message::text(encode(
            ClientMsg::Delete { code },
            Some(i as u64),
        )))
        .await?;
    }
    ws.flush().await?;
    let mut replies = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while replies < n {
        match tokio::time::timeout_at(until, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if scan::id(t.as_bytes()).is_some() => replies += 1,
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(())
}
