//! The `fanout` scenario (and the engine of `mixed`): N agent dashboards
//! subscribe to one company; one driver connection creates, closes and
//! deletes cases, as fast as the slowest dashboard allows or at a fixed
//! rate. Every dashboard checks that it gets every event in `seq` order,
//! and each event's push latency is measured.
//!
//! Latency: the driver is the only writer of the company's stream, and
//! every command it sends makes exactly one event (`create_case`: created,
//! `close`: updated, `delete`: deleted), applied in the order sent. So the
//! k-th command sent is the event with `seq = base + k`, where `base` is the
//! snapshot `seq` every dashboard got. The driver writes its send time
//! into slot k of a ring before sending; a dashboard reads slot
//! `seq - base` when the event arrives. Any reply that is an error, and any
//! event beyond the last one the driver caused, is reported: either would
//! mean the mapping, and the run, is not to be trusted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use casebroker::protocol::{ClientMsg, CreateCase};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, encode};
use crate::report::{Progress, Report, per_sec, thousands};
use crate::scan;
use crate::stats::{Sharded, Summary, round3};
use crate::target::{Target, Ws};

/// Slots of the send-time ring: far more than the changes in flight.
const RING: u64 = 1 << 20;
/// Latencies a dashboard buffers before flushing them to the histogram.
const FLUSH: usize = 1024;
/// Commands the driver may have sent without a reply.
const REPLY_WINDOW: u64 = 4096;
/// Commands fed before the driver flushes its socket.
const SEND_BATCH: u32 = 64;
/// How long dashboards may take, after the driver stopped, to get the last
/// event.
const DRAIN: Duration = Duration::from_secs(15);
/// Dashboards connecting at once.
const CONNECT_AT_ONCE: usize = 64;

/// What a fan-out run is asked to do.
#[derive(Clone, Debug)]
pub struct FanoutOpts {
    pub target: Target,
    /// Where the dashboards connect, dealt in turn (several nodes of a
    /// cluster, say); empty: all on `target`, like the driver.
    pub dashboard_targets: Vec<Target>,
    pub token: String,
    pub group: String,
    pub dashboards: usize,
    pub seconds: u64,
    /// Changes per second; `None` for as fast as the dashboards keep up.
    pub rate: Option<f64>,
    /// Without `rate`: events the driver may be ahead of the slowest
    /// dashboard. Keep it below the broker's `outbox_messages`.
    pub window: u64,
    pub progress: bool,
}

/// What a fan-out run measured.
#[derive(Debug)]
pub struct FanoutResult {
    pub dashboards: usize,
    pub changes: u64,
    pub driver_errors: u64,
    pub first_error: Option<String>,
    /// Seconds from the first change to the last dashboard's last event.
    pub secs: f64,
    pub delivered: u64,
    pub expected: u64,
    /// Events missing, out of order or unexpected, summed over dashboards.
    pub lost: u64,
    pub gaps: u64,
    pub out_of_order: u64,
    pub missing_at_end: u64,
    pub unexpected: u64,
    pub disconnected: u64,
    /// The first dashboard that saw a hole: (dashboard, expected seq, got).
    pub first_gap: Option<(usize, u64, u64)>,
    pub latency: Histogram<u64>,
}

impl FanoutResult {
    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.secs.max(1e-9)
    }

    pub fn changes_per_sec(&self) -> f64 {
        self.changes as f64 / self.secs.max(1e-9)
    }

    /// True when nothing was lost and the driver saw no error.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.driver_errors == 0 && self.disconnected == 0
    }

    /// Adds the rows and JSON keys of this run to a report; `tag` prefixes
    /// them for a second (baseline) run.
    pub fn fill(&self, r: &mut Report, label: &str) {
        let s = Summary::of(&self.latency);
        let p = |name: &str| {
            if label.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({label})")
            }
        };
        r.row(p("dashboards"), self.dashboards);
        r.row(
            p("changes"),
            format!(
                "{} ({})",
                thousands(self.changes),
                per_sec(self.changes_per_sec())
            ),
        );
        r.row(
            p("events delivered"),
            format!(
                "{} of {} ({})",
                thousands(self.delivered),
                thousands(self.expected),
                per_sec(self.delivered_per_sec())
            ),
        );
        r.row(
            p("lost / out of order"),
            format!(
                "{} (gaps {}, out of order {}, missing at end {}, unexpected {})",
                self.lost, self.gaps, self.out_of_order, self.missing_at_end, self.unexpected
            ),
        );
        if let Some((d, want, got)) = self.first_gap {
            r.row(
                p("first hole"),
                format!("dashboard {d} expected seq {want}, got {got}"),
            );
        }
        r.row(p("disconnected dashboards"), self.disconnected);
        if self.driver_errors > 0 {
            r.row(
                p("driver errors"),
                format!(
                    "{} (first: {})",
                    self.driver_errors,
                    self.first_error.as_deref().unwrap_or("")
                ),
            );
        }
        r.row(p("push latency p50/p99/p999/max"), s.line());
    }

    /// The JSON object of one run.
    pub fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let s = Summary::of(&self.latency);
        let lat = s.to_json();
        let mut m = serde_json::Map::new();
        m.insert(
            "delivered_per_sec".into(),
            round3(self.delivered_per_sec()).into(),
        );
        m.insert("lost".into(), self.lost.into());
        for k in ["p50_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms"] {
            m.insert(k.into(), lat[k].clone());
        }
        m.insert("dashboards".into(), self.dashboards.into());
        m.insert("changes".into(), self.changes.into());
        m.insert(
            "changes_per_sec".into(),
            round3(self.changes_per_sec()).into(),
        );
        m.insert("delivered".into(), self.delivered.into());
        m.insert("expected".into(), self.expected.into());
        m.insert("gaps".into(), self.gaps.into());
        m.insert("out_of_order".into(), self.out_of_order.into());
        m.insert("missing_at_end".into(), self.missing_at_end.into());
        m.insert("unexpected".into(), self.unexpected.into());
        m.insert("disconnected".into(), self.disconnected.into());
        m.insert("driver_errors".into(), self.driver_errors.into());
        if let Some((d, want, got)) = self.first_gap {
            m.insert(
                "first_hole".into(),
                serde_json::json!({"dashboard": d, "expected_seq": want, "got_seq": got}),
            );
        }
        m.insert("latency_samples".into(), s.count.into());
        m.insert("seconds".into(), round3(self.secs).into());
        m
    }
}

/// State shared by the driver and the dashboards.
struct Shared {
    start: Instant,
    /// The snapshot `seq`: the driver's k-th change is `base + k`.
    base: u64,
    /// Send time of change k (µs since `start`) in slot `k % RING`.
    send_us: Box<[AtomicU64]>,
    /// Changes whose send time is stored.
    sent: AtomicU64,
    /// Each dashboard's last in-order `seq`; `u64::MAX` once disconnected.
    progress: Box<[AtomicU64]>,
    latency: Sharded,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Events delivered so far (from the dashboards' progress), and the
    /// slowest live dashboard's progress.
    fn scan_progress(&self) -> (u64, u64) {
        let mut total = 0;
        let mut min = u64::MAX;
        for p in self.progress.iter() {
            let p = p.load(Ordering::Relaxed);
            if p != u64::MAX {
                total += p - self.base;
                min = min.min(p);
            }
        }
        (total, min)
    }
}

/// One dashboard's tally.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    gaps: u64,
    out_of_order: u64,
    unexpected: u64,
    last: u64,
    disconnected: bool,
    /// The first seq this dashboard expected and did not get: (expected, got).
    first_gap: Option<(u64, u64)>,
}

/// Connects one dashboard: hello as an agent, subscribe; returns the
/// socket and the snapshot `seq`.
async fn open_dashboard(target: &Target, token: &str) -> anyhow::Result<(Ws, u64)> {
    let mut c = Client::connect(target).await?;
    c.hello_agent(token).await?;
    let seq = c.subscribe().await?;
    Ok((c.into_inner(), seq))
}

/// The hot loop of one dashboard: scan each frame for `seq`, check the
/// order, look up the send time, batch the latency.
async fn dashboard(i: usize, mut ws: Ws, sh: Arc<Shared>, stop: CancellationToken) -> Tally {
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

/// What the driver did.
struct Driven {
    changes: u64,
    errors: u64,
    first_error: Option<String>,
    /// Cases it left behind, deleted once the dashboards are gone.
    live: Vec<String>,
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
async fn driver(
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
async fn clean_up(opts: &FanoutOpts, codes: Vec<String>) -> anyhow::Result<()> {
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

/// Runs one fan-out: connect, drive for `seconds`, drain, tally.
pub async fn run(opts: &FanoutOpts, bar: &Progress) -> anyhow::Result<FanoutResult> {
    bar.phase("connecting", opts.dashboards as u64);
    let token = opts.token.clone();
    let mut opened = Vec::with_capacity(opts.dashboards);
    let mut connecting = futures::stream::iter(0..opts.dashboards)
        .map(|i| {
            let target = match opts.dashboard_targets.len() {
                0 => opts.target.clone(),
                n => opts.dashboard_targets[i % n].clone(),
            };
            let token = token.clone();
            async move { open_dashboard(&target, &token).await }
        })
        .buffer_unordered(CONNECT_AT_ONCE);
    while let Some(r) = connecting.next().await {
        let dash = r.context("opening a dashboard")?;
        opened.push(dash);
        bar.inc();
    }
    drop(connecting);
    let base = opened.first().map(|d| d.1).unwrap_or(0);
    if let Some((_, seq)) = opened.iter().find(|d| d.1 != base) {
        bail!(
            "the company's stream moved while dashboards subscribed (seq {base} and {seq}): \
             is something else changing its cases?"
        );
    }
    let mut drv = Client::connect(&opts.target).await?;
    drv.hello_agent(&opts.token).await?;
    let drv = drv.into_inner();

    let n = opened.len();
    let sh = Arc::new(Shared {
        start: Instant::now(),
        base,
        send_us: (0..RING).map(|_| AtomicU64::new(0)).collect(),
        sent: AtomicU64::new(0),
        progress: (0..n).map(|_| AtomicU64::new(base)).collect(),
        latency: Sharded::new(32),
    });
    let stop = CancellationToken::new();
    let tasks: Vec<_> = opened
        .into_iter()
        .enumerate()
        .map(|(i, (ws, _))| tokio::spawn(dashboard(i, ws, sh.clone(), stop.clone())))
        .collect();

    bar.phase("running", opts.seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.seconds);
    let driving = driver(drv, sh.clone(), opts, deadline);
    tokio::pin!(driving);
    let driven = loop {
        tokio::select! {
            d = &mut driving => break d?,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let (delivered, _) = sh.scan_progress();
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                bar.set(
                    started.elapsed().as_secs().min(opts.seconds),
                    format!(
                        "{} changes, {} events",
                        per_sec(sh.sent.load(Ordering::Relaxed) as f64 / secs),
                        per_sec(delivered as f64 / secs)
                    ),
                );
            }
        }
    };

    // Every event the driver caused, and no other, must reach every
    // dashboard: wait for the slowest, within a bound.
    bar.phase("draining", DRAIN.as_secs());
    let last = base + driven.changes - driven.errors.min(driven.changes);
    let drain_until = Instant::now() + DRAIN;
    loop {
        let (_, min) = sh.scan_progress();
        if min == u64::MAX || min >= last || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let mut res = FanoutResult {
        dashboards: n,
        changes: driven.changes,
        driver_errors: driven.errors,
        first_error: driven.first_error,
        secs,
        delivered: 0,
        expected: (last - base) * n as u64,
        lost: 0,
        gaps: 0,
        out_of_order: 0,
        missing_at_end: 0,
        unexpected: 0,
        disconnected: 0,
        first_gap: None,
        latency: sh.latency.merged(),
    };
    for (i, t) in tasks.into_iter().enumerate() {
        let t = t.await.context("dashboard task")?;
        if res.first_gap.is_none()
            && let Some((want, got)) = t.first_gap
        {
            res.first_gap = Some((i, want, got));
        }
        res.delivered += t.delivered;
        res.gaps += t.gaps;
        res.out_of_order += t.out_of_order;
        res.unexpected += t.unexpected;
        res.missing_at_end += last.saturating_sub(t.last);
        res.disconnected += u64::from(t.disconnected);
    }
    res.latency = sh.latency.merged();
    bar.phase("cleaning up", 1);
    if let Err(e) = clean_up(opts, driven.live).await {
        eprintln!("fanout: clean-up of the cases left open failed: {e:#}");
    }
    res.lost = res.gaps + res.out_of_order + res.missing_at_end + res.unexpected;
    bar.finish();
    Ok(res)
}
