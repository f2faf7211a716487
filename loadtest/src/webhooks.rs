//! The `webhooks` scenario: how fast does the broker deliver webhooks, and
//! are they right? It starts its own receiver ([`crate::receiver`]),
//! registers it as an endpoint through `POST /v1/admin/webhooks`, and
//! drivers (agent connections) run cases `create_case` → `close` →
//! `delete` (one event each), as fast as the receiver keeps up (at most
//! `--window` deliveries ahead) or at `--rate`. Then it waits a bounded
//! time for the last deliveries, checks what arrived, reads the broker's
//! counters from `/metrics` and deletes its endpoint.
//!
//! `--receiver-only` only receives (another scenario makes the changes) until
//! `--seconds` pass or SIGINT/SIGTERM; `--no-endpoint` only drives (the same
//! changes without webhooks, to compare what they cost).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use casebroker::protocol::{ClientMsg, CreateCase};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, encode};
use crate::http::Http;
use crate::receiver::{Receiver, STEPS, SendTimes, Shared, case_name, endpoint, register, scrape};
use crate::report::{Progress, Report, per_sec, thousands};
use crate::scan;
use crate::stats::{Summary, round3};
use crate::target::Target;

/// Commands a driver may have sent without a reply.
const REPLY_WINDOW: u64 = 256;
/// Commands fed before a driver flushes its socket.
const SEND_BATCH: u32 = 32;
/// How long a driver waits for its last replies.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// What the scenario does besides measuring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Receiver, endpoint and drivers.
    Drive,
    /// Receiver and endpoint only.
    ReceiverOnly,
    /// Drivers only: the same changes with no endpoint.
    NoEndpoint,
}

/// What a webhooks run is asked to do.
#[derive(Clone, Debug)]
pub struct WebhooksOpts {
    pub target: Target,
    pub token: String,
    pub group: String,
    pub drivers: usize,
    pub seconds: u64,
    /// Changes per second over all drivers; `None`: as fast as the
    /// receiver keeps up.
    pub rate: Option<f64>,
    /// Without `rate`: deliveries the drivers may be ahead of the receiver
    /// (keep it below the broker's `webhook_pending`).
    pub window: u64,
    pub events: Vec<String>,
    pub verify: bool,
    /// Longest wait for the last deliveries once the drivers are done.
    pub drain: Duration,
    pub mode: Mode,
    pub progress: bool,
}

impl WebhooksOpts {
    fn wants(&self, step: usize) -> bool {
        self.events.iter().any(|e| e == "*" || e == STEPS[step])
    }
}

/// The drivers' shared counters.
struct Drive {
    /// Commands sent, over all drivers.
    sent: AtomicU64,
    /// Replies that were not errors, by step.
    acked: [AtomicU64; 3],
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
    times: Arc<SendTimes>,
    zero: Instant,
    /// Last reply, µs since `zero`.
    last_reply_us: AtomicU64,
}

impl Drive {
    fn acked(&self) -> u64 {
        self.acked.iter().map(|a| a.load(Ordering::Acquire)).sum()
    }

    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error
            .lock()
            .expect("error lock")
            .get_or_insert(what);
    }
}

/// One driver's replies: a created case is closed next, a closed one
/// deleted. A command's `id` is `case << 2 | step`.
async fn replies(
    mut source: futures::stream::SplitStream<crate::target::Ws>,
    dr: Arc<Drive>,
    acked: Arc<AtomicU64>,
    next: mpsc::UnboundedSender<(u64, u8, String)>,
) {
    while let Some(Ok(msg)) = source.next().await {
        let Message::Text(text) = msg else { continue };
        let b = text.as_bytes();
        let Some(id) = scan::id(b) else { continue };
        let (case, step) = (id >> 2, (id & 3) as u8);
        match (scan::msg_type(b), scan::code(b)) {
            (Some("case" | "deleted"), Some(code)) if step < 3 => {
                dr.acked[step as usize].fetch_add(1, Ordering::Release);
                if step < 2 {
                    let _ = next.send((case, step + 1, code.to_string()));
                }
            }
            _ => dr.error(text.as_str().to_string()),
        }
        dr.last_reply_us
            .fetch_max(dr.zero.elapsed().as_micros() as u64, Ordering::Relaxed);
        acked.fetch_add(1, Ordering::Release);
    }
}

/// One driver: new cases until `deadline`, then only the cases it began,
/// until each is deleted (or its replies stop).
async fn driver(
    d: usize,
    opts: Arc<WebhooksOpts>,
    dr: Arc<Drive>,
    receiver: Option<Arc<Shared>>,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut c = Client::connect(&opts.target).await?;
    c.hello_agent(&opts.token).await?;
    let (mut sink, source) = c.into_inner().split();
    let acked = Arc::new(AtomicU64::new(0));
    let (next_tx, mut next_rx) = mpsc::unbounded_channel();
    let reader = tokio::spawn(replies(source, dr.clone(), acked.clone(), next_tx));
    let rate = opts.rate.map(|r| r / opts.drivers as f64);
    let started = Instant::now();
    let (mut sent, mut cases, mut open, mut unflushed) = (0u64, 0u64, 0u64, 0u32);
    let hard_stop = deadline + REPLY_WAIT;
    loop {
        let now = Instant::now();
        let creating = now < deadline;
        if (!creating && open == 0) || now >= hard_stop {
            break;
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            if due > now {
                sink.flush().await?;
                unflushed = 0;
                tokio::time::sleep_until(due.min(hard_stop).into()).await;
                continue;
            }
        }
        // Without a rate, at most `window` deliveries ahead of the receiver.
        let ahead = match (&receiver, rate) {
            (Some(rx), None) => {
                dr.sent.load(Ordering::Acquire) > rx.unique.load(Ordering::Acquire) + opts.window
            }
            _ => false,
        };
        let follow = next_rx.try_recv().ok();
        let Some((case, step, msg)) = (match follow {
            Some((case, step, code)) => Some((
                case,
                step,
                if step == 1 {
                    ClientMsg::Close { code: Some(code) }
                } else {
                    ClientMsg::Delete { code }
                },
            )),
            None if creating && !ahead && sent - acked.load(Ordering::Acquire) < REPLY_WINDOW => {
                cases += 1;
                open += 1;
                Some((
                    cases,
                    0,
                    ClientMsg::CreateCase(CreateCase {
                        group: opts.group.clone(),
                        name: Some(case_name(d, cases)),
                        ..CreateCase::default()
                    }),
                ))
            }
            None => None,
        }) else {
            sink.flush().await?;
            unflushed = 0;
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        if step == 2 {
            open -= 1;
        }
        dr.times
            .put(d, case, step, dr.zero.elapsed().as_micros() as u64);
        sent += 1;
        dr.sent.fetch_add(1, Ordering::Release);
        sink.feed(Message::text(encode(
            msg,
            Some(case << 2 | u64::from(step)),
        )))
        .await
        .context("driver send")?;
        unflushed += 1;
        if unflushed >= SEND_BATCH {
            sink.flush().await.context("driver send")?;
            unflushed = 0;
        }
    }
    sink.flush().await.context("driver send")?;
    let wait_until = Instant::now() + REPLY_WAIT;
    while acked.load(Ordering::Acquire) < sent && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let missing = sent.saturating_sub(acked.load(Ordering::Acquire));
    if missing > 0 || open > 0 {
        dr.error(format!(
            "driver {d}: {missing} replies missing, {open} cases left open"
        ));
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
    reader.abort();
    Ok(())
}

/// Tells a script that the receiver is ready (one flushed line on stdout).
fn announce(url: &str, endpoint: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "webhooks: receiving on {url}, endpoint {endpoint}");
    let _ = out.flush();
}

/// Runs the scenario.
pub async fn run(opts: WebhooksOpts) -> anyhow::Result<Report> {
    if opts.events.is_empty() {
        bail!("--events: at least one type, or *");
    }
    let opts = Arc::new(opts);
    let zero = Instant::now();
    let mut http = Http::new(opts.target.addr());
    // The broker's process, for its CPU time.
    let pid = crate::idle::pid_listening_on(opts.target.addr().port());
    let before = scrape(&mut http, pid).await?;
    let times = Arc::new(SendTimes::new(opts.drivers));
    let receiver = match opts.mode {
        Mode::NoEndpoint => None,
        Mode::Drive => Some(Receiver::start(opts.verify, Some(times.clone()), zero).await?),
        Mode::ReceiverOnly => Some(Receiver::start(opts.verify, None, zero).await?),
    };
    let mut hook = None;
    if let Some(rx) = &receiver {
        let (id, secret) = register(&mut http, &opts.token, &opts.events, &rx.url()).await?;
        let verifier = standardwebhooks::Webhook::new(&secret)
            .map_err(|e| anyhow::anyhow!("the endpoint's secret: {e:?}"))?;
        let _ = rx.shared.verifier.set(verifier);
        hook = Some(id);
    }
    let bar = Progress::new(opts.progress, opts.seconds);
    bar.phase("running", opts.seconds);
    let dr = Arc::new(Drive {
        sent: AtomicU64::new(0),
        acked: Default::default(),
        errors: AtomicU64::new(0),
        first_error: std::sync::Mutex::new(None),
        times,
        zero,
        last_reply_us: AtomicU64::new(0),
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.seconds);
    if opts.mode == Mode::ReceiverOnly {
        // Listening before the line goes out, so a script may stop it at once.
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        announce(
            &receiver.as_ref().map(Receiver::url).unwrap_or_default(),
            hook.as_deref().unwrap_or(""),
        );
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    } else {
        let shared = receiver.as_ref().map(|r| r.shared.clone());
        let tasks: Vec<_> = (0..opts.drivers)
            .map(|d| {
                tokio::spawn(driver(
                    d,
                    opts.clone(),
                    dr.clone(),
                    shared.clone(),
                    deadline,
                ))
            })
            .collect();
        let all = futures::future::join_all(tasks);
        tokio::pin!(all);
        loop {
            tokio::select! {
                done = &mut all => {
                    for r in done {
                        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
                            dr.error(format!("{e:#}"));
                        }
                    }
                    break;
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    let got = receiver.as_ref().map_or(0, |r| r.shared.unique.load(Ordering::Relaxed));
                    bar.set(started.elapsed().as_secs().min(opts.seconds),
                        format!("{} changes, {} deliveries", thousands(dr.acked()), thousands(got)));
                }
            }
        }
    }
    let driven = started.elapsed();
    bar.finish();
    let changes = dr.acked();
    let expected: u64 = (0..3)
        .filter(|&s| opts.wants(s))
        .map(|s| dr.acked[s].load(Ordering::Acquire))
        .sum();

    // The last deliveries: until all expected arrived (or, receiving only,
    // the endpoint has nothing pending), at most --drain.
    let mut state = Value::Null;
    if let (Some(rx), Some(id)) = (&receiver, &hook) {
        let until = Instant::now() + opts.drain;
        loop {
            state = endpoint(&mut http, &opts.token, id).await?;
            let pending = state["pending"].as_u64().unwrap_or(0);
            let done = match opts.mode {
                Mode::Drive => rx.shared.unique.load(Ordering::Acquire) >= expected,
                _ => pending == 0,
            };
            if done || state["disabled"] == true || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Repeats would come now, if any.
        tokio::time::sleep(Duration::from_millis(200)).await;
        state = endpoint(&mut http, &opts.token, id).await?;
    }
    let deleted = match &hook {
        Some(id) => {
            let r = http
                .call(
                    "DELETE",
                    &format!("/v1/admin/webhooks/{id}"),
                    Some(&opts.token),
                    None,
                )
                .await?;
            r.status == 204
        }
        None => false,
    };
    let after = scrape(&mut http, pid).await?;
    let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let shared = receiver.as_ref().map(|r| r.shared.clone());
    if let Some(rx) = receiver {
        rx.stop().await;
    }
    let guard = shared.as_ref().map(|s| s.tally.lock().expect("tally lock"));
    let tally = guard.as_deref();

    let errors = dr.errors.load(Ordering::Relaxed);
    let per = |x: f64| (changes > 0).then(|| round3(x / changes as f64));
    let reply_secs = (dr.last_reply_us.load(Ordering::Relaxed) as f64 / 1e6
        - started.duration_since(zero).as_secs_f64())
    .max(1e-3);
    let mut r = Report::new(format!(
        "webhooks: {}, {} drivers, {}, {} s{}",
        match opts.mode {
            Mode::Drive => "receiver + drivers",
            Mode::ReceiverOnly => "receiver only",
            Mode::NoEndpoint => "no endpoint",
        },
        opts.drivers,
        opts.rate
            .map_or(format!("window {}", opts.window), |r| format!(
                "{r} changes/s"
            )),
        opts.seconds,
        if opts.verify { ", verified" } else { "" },
    ));
    r.set("scenario", "webhooks");
    r.set("url", opts.target.url());
    r.set("mode", format!("{:?}", opts.mode).to_lowercase());
    r.set("drivers", opts.drivers);
    r.set("rate", opts.rate);
    r.set("window", opts.window);
    r.set("verify", opts.verify);
    r.set("events", opts.events.clone());
    if opts.mode != Mode::ReceiverOnly {
        r.row(
            "changes",
            format!(
                "{} ({})",
                thousands(changes),
                per_sec(changes as f64 / reply_secs)
            ),
        );
        r.row("driver errors", errors);
        r.set("changes", changes);
        r.set("changes_per_sec", round3(changes as f64 / reply_secs));
        r.set(
            "cases_per_sec",
            round3(dr.acked[0].load(Ordering::Relaxed) as f64 / reply_secs),
        );
        r.set("driver_errors", errors);
        if let Some(e) = dr.first_error.lock().expect("error lock").clone() {
            r.row("first driver error", &e);
            r.set("first_error", e);
        }
    }
    let mut failed = errors > 0;
    if let Some(t) = tally {
        let secs = match (t.first_at, t.last_at) {
            (Some(_), Some(last)) if opts.mode == Mode::Drive => (last - started).as_secs_f64(),
            (Some(first), Some(last)) => (last - first).as_secs_f64(),
            _ => 0.0,
        }
        .max(1e-3);
        let missing = match opts.mode {
            Mode::Drive => expected.saturating_sub(t.unique),
            _ => state["pending"].as_u64().unwrap_or(0),
        };
        let broker_failed = (d[3] + d[4]) as u64;
        let failures = t.bad_signature + t.unreadable + broker_failed;
        let disabled = state["disabled"] == true;
        let all_arrived = missing == 0 && !disabled;
        let s = Summary::of(&t.latency);
        r.row(
            "deliveries",
            format!(
                "{} ({})",
                thousands(t.unique),
                per_sec(t.unique as f64 / secs)
            ),
        );
        if opts.mode == Mode::Drive {
            r.row("expected", thousands(expected));
            r.row("latency p50/p99/p999/max", s.line());
        }
        r.row(
            "all arrived",
            if all_arrived {
                "yes".to_string()
            } else {
                format!("no: {missing} missing")
            },
        );
        r.row(
            "duplicates / out of order",
            format!("{} / {}", t.duplicates, t.out_of_order),
        );
        r.row(
            "failures",
            format!(
                "{failures} (bad signatures {}, unreadable {}, broker rejected {}, unanswered {})",
                t.bad_signature, t.unreadable, d[3], d[4]
            ),
        );
        if t.unexpected > 0 {
            r.row("unexpected events", t.unexpected);
        }
        if disabled {
            r.row(
                "endpoint disabled",
                state["disabled_reason"].as_str().unwrap_or("yes"),
            );
        }
        if let Some(p) = &t.first_problem {
            r.row("first problem", p);
        }
        r.set("delivered_per_sec", round3(t.unique as f64 / secs));
        r.set("deliveries", t.unique);
        r.set("calls", t.calls);
        r.set("expected", (opts.mode == Mode::Drive).then_some(expected));
        r.set("missing", missing);
        r.set("all_arrived", all_arrived);
        r.set("duplicates", t.duplicates);
        r.set("out_of_order", t.out_of_order);
        r.set("bad_signature", t.bad_signature);
        r.set("unreadable", t.unreadable);
        r.set("unexpected", t.unexpected);
        r.set("failures", failures);
        r.set("lost", missing + t.out_of_order);
        r.set("endpoint_disabled", disabled);
        r.set("endpoint_pending_at_end", state["pending"].clone());
        r.set("first_problem", t.first_problem.clone());
        r.set("delivery_seconds", round3(secs));
        if opts.mode == Mode::Drive {
            let l = s.to_json();
            for k in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
                r.set(k, l[k].clone());
            }
            r.latency.push(("webhook".into(), t.latency.clone()));
        }
        failed |= !all_arrived
            || failures > 0
            || t.duplicates > 0
            || t.out_of_order > 0
            || t.unexpected > 0;
    }
    if hook.is_some() {
        r.row("endpoint deleted", if deleted { "yes" } else { "no" });
        r.set("endpoint_deleted", deleted);
        failed |= !deleted;
    }
    r.row(
        "broker attempts",
        format!("delivered {}, rejected {}, unanswered {}", d[2], d[3], d[4]),
    );
    r.set(
        "broker_attempts",
        json!({"delivered": d[2], "rejected": d[3], "unanswered": d[4]}),
    );
    if opts.mode != Mode::ReceiverOnly {
        r.row(
            "per change: journal changes / bytes / broker CPU",
            format!(
                "{} / {} B / {} µs",
                per(d[0]).map_or("n/a".into(), |x| format!("{x:.2}")),
                per(d[1]).map_or("n/a".into(), |x| format!("{x:.0}")),
                per(d[5] * 1e6).map_or("n/a".into(), |x| format!("{x:.1}")),
            ),
        );
        r.set("journal_changes_per_change", per(d[0]));
        r.set("journal_bytes_per_change", per(d[1]));
        r.set("broker_cpu_us_per_change", per(d[5] * 1e6));
        r.set(
            "broker_cpu_from",
            if pid.is_some() {
                "/proc/<pid>/stat"
            } else {
                "/metrics"
            },
        );
    }
    r.set("seconds", round3(driven.as_secs_f64()));
    r.failed = failed || (opts.mode != Mode::ReceiverOnly && changes == 0);
    Ok(r)
}
