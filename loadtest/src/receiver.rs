//! The webhook receiver of the `webhooks` scenario: an HTTP server on
//! 127.0.0.1:0 inside the load tester that answers every call 200 at once
//! and keeps the tally: calls, distinct `webhook-id`s, repeats, a case's
//! `seq` going backwards, bodies it cannot read, bad signatures (with
//! `--verify`), and the latency from the driver's send time. Also the
//! admin calls around it: registering it, reading its endpoint back, and
//! the broker's counters from `/metrics`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::http::Http;
use crate::stats::histogram;

/// Which change of a case an event is: the three commands a driver sends.
pub const STEPS: [&str; 3] = ["case.created", "case.closed", "case.deleted"];

/// A case the drivers made is named `wh <driver> <case>`; the receiver
/// reads the two numbers back from the event's `case.name`.
pub fn case_name(driver: usize, case: u64) -> String {
    format!("wh {driver} {case}")
}

fn parse_name(name: &str) -> Option<(usize, u64)> {
    let mut it = name.strip_prefix("wh ")?.split(' ');
    let d = it.next()?.parse().ok()?;
    let k = it.next()?.parse().ok()?;
    it.next().is_none().then_some((d, k))
}

/// The drivers' send times, by `(driver, case, step)`: written before a
/// command is sent, taken by the receiver when its delivery arrives.
pub struct SendTimes {
    shards: Vec<Mutex<HashMap<(u64, u8), u64>>>,
}

impl SendTimes {
    pub fn new(drivers: usize) -> SendTimes {
        SendTimes {
            shards: (0..drivers.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    pub fn put(&self, driver: usize, case: u64, step: u8, us: u64) {
        self.shards[driver % self.shards.len()]
            .lock()
            .expect("send times lock")
            .insert((case, step), us);
    }

    fn take(&self, driver: usize, case: u64, step: u8) -> Option<u64> {
        self.shards
            .get(driver)?
            .lock()
            .expect("send times lock")
            .remove(&(case, step))
    }
}

/// What the receiver counted.
pub struct Tally {
    /// Calls answered.
    pub calls: u64,
    /// Distinct `webhook-id`s.
    pub unique: u64,
    /// Calls whose `webhook-id` came before.
    pub duplicates: u64,
    /// Events whose `seq` was below the last one of the same case.
    pub out_of_order: u64,
    /// Signatures that did not verify (`--verify`).
    pub bad_signature: u64,
    /// Bodies without the fields of a case event, or an id that does not
    /// match `msg_<epoch>_<seq>`.
    pub unreadable: u64,
    /// Events of cases the drivers did not make, or of another type.
    pub unexpected: u64,
    pub first_problem: Option<String>,
    /// Driver's send → call received, µs.
    pub latency: Histogram<u64>,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
    ids: HashSet<u64>,
    epoch: Option<String>,
    last_seq: HashMap<String, u64>,
}

impl Tally {
    fn problem(&mut self, what: String) {
        self.first_problem.get_or_insert(what);
    }
}

/// The receiver's state, shared with its handler.
pub struct Shared {
    pub tally: Mutex<Tally>,
    /// Distinct deliveries so far, for the drivers' window.
    pub unique: AtomicU64,
    /// Set once the endpoint is registered and its secret known; with
    /// `--verify`, calls are checked against it.
    pub verifier: OnceLock<standardwebhooks::Webhook>,
    pub verify: bool,
    pub times: Option<Arc<SendTimes>>,
    /// The clock of the send times.
    pub zero: Instant,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Binds 127.0.0.1:0 and serves until [`Receiver::stop`].
    pub async fn start(
        verify: bool,
        times: Option<Arc<SendTimes>>,
        zero: Instant,
    ) -> anyhow::Result<Receiver> {
        let shared = Arc::new(Shared {
            tally: Mutex::new(Tally {
                calls: 0,
                unique: 0,
                duplicates: 0,
                out_of_order: 0,
                bad_signature: 0,
                unreadable: 0,
                unexpected: 0,
                first_problem: None,
                latency: histogram(),
                first_at: None,
                last_at: None,
                ids: HashSet::new(),
                epoch: None,
                last_seq: HashMap::new(),
            }),
            unique: AtomicU64::new(0),
            verifier: OnceLock::new(),
            verify,
            times,
            zero,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(axum::routing::post(receive))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
        });
        Ok(Receiver {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The endpoint URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Stops serving (connections close within a second).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.task).await;
    }
}

/// One call: answered 200 whatever it holds (a failure is counted, not
/// retried), so the broker's retries never blur the figures.
async fn receive(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let now_us = at.duration_since(sh.zero).as_micros() as u64;
    let verified = !sh.verify
        || sh
            .verifier
            .get()
            .is_some_and(|v| v.verify(&body, &headers).is_ok());
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let event = read_event(&body);
    let mut t = sh.tally.lock().expect("tally lock");
    t.calls += 1;
    t.first_at.get_or_insert(at);
    t.last_at = Some(at);
    if !verified {
        t.bad_signature += 1;
        t.problem(format!("a bad signature on {id}"));
        return StatusCode::OK;
    }
    let Some(ev) = event else {
        t.unreadable += 1;
        t.problem(format!("{id}: an unreadable body"));
        return StatusCode::OK;
    };
    if id != format!("msg_{}_{}", ev.epoch, ev.seq) {
        t.unreadable += 1;
        t.problem(format!(
            "webhook-id {id} for seq {} of {}",
            ev.seq, ev.epoch
        ));
        return StatusCode::OK;
    }
    if t.epoch.get_or_insert_with(|| ev.epoch.clone()) != &ev.epoch {
        t.unexpected += 1;
        t.problem(format!("{id}: another epoch"));
        return StatusCode::OK;
    }
    let ours = parse_name(&ev.name).zip(STEPS.iter().position(|s| *s == ev.kind));
    if sh.times.is_some() && ours.is_none() {
        // Driving: every event must be one of the drivers' changes.
        t.unexpected += 1;
        t.problem(format!("{id}: {} of case \"{}\"", ev.kind, ev.name));
        return StatusCode::OK;
    }
    if !t.ids.insert(ev.seq) {
        t.duplicates += 1;
        t.problem(format!("{id} received twice"));
        return StatusCode::OK;
    }
    t.unique += 1;
    sh.unique.fetch_add(1, Ordering::Release);
    match t.last_seq.get(&ev.code) {
        Some(&last) if last > ev.seq => {
            t.out_of_order += 1;
            let code = ev.code.clone();
            t.problem(format!("case {code}: seq {} after {last}", ev.seq));
        }
        _ => {
            t.last_seq.insert(ev.code.clone(), ev.seq);
        }
    }
    if let (Some(times), Some(((d, k), step))) = (&sh.times, ours)
        && let Some(sent) = times.take(d, k, step as u8)
    {
        t.latency
            .saturating_record(now_us.saturating_sub(sent).max(1));
    }
    StatusCode::OK
}

/// The fields of a case event body the tally needs.
struct CaseEvent {
    kind: String,
    epoch: String,
    seq: u64,
    code: String,
    name: String,
}

/// Reads the fields the tally needs straight into their places (the rest
/// of the body is skipped, not built into a tree): the receiver shares the
/// broker's cores in a run and should cost as little as it can.
fn read_event(body: &[u8]) -> Option<CaseEvent> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "type")]
        kind: String,
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        epoch: String,
        seq: u64,
        case: Case,
    }
    #[derive(serde::Deserialize)]
    struct Case {
        code: String,
        #[serde(default)]
        name: Option<String>,
    }
    let b: Body = serde_json::from_slice(body).ok()?;
    Some(CaseEvent {
        kind: b.kind,
        epoch: b.data.epoch,
        seq: b.data.seq,
        code: b.data.case.code,
        name: b.data.case.name.unwrap_or_default(),
    })
}

/// One value of the broker's `/metrics`: the series named exactly
/// `series` (with its labels), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    casebroker_testkit::metrics::series(text, series).unwrap_or(0.0)
}

/// The counters compared before and after.
pub const SERIES: [&str; 6] = [
    "casebroker_journal_changes_total",
    "casebroker_journal_bytes_total",
    "casebroker_webhook_attempts_total{result=\"delivered\"}",
    "casebroker_webhook_attempts_total{result=\"rejected\"}",
    "casebroker_webhook_attempts_total{result=\"unanswered\"}",
    "process_cpu_seconds_total",
];

/// The counters of [`SERIES`]. The CPU time comes from
/// `/proc/<pid>/stat` when the broker's process is known (1/100 s there,
/// whole seconds in `/metrics`).
pub async fn scrape(http: &mut Http, pid: Option<u32>) -> anyhow::Result<[f64; 6]> {
    let r = http.call("GET", "/metrics", None, None).await?;
    if r.status != 200 {
        bail!("GET /metrics: {}", r.status);
    }
    let text = r.text();
    let mut values = SERIES.map(|s| metric(&text, s));
    if let Some(cpu) = pid.and_then(cpu_seconds) {
        values[5] = cpu;
    }
    Ok(values)
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`
/// (clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses): state is field 3, utime 14
    // and stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Our endpoint as `GET /v1/admin/webhooks` lists it.
pub async fn endpoint(http: &mut Http, token: &str, id: &str) -> anyhow::Result<Value> {
    let r = http.get("/v1/admin/webhooks", token).await?;
    if r.status != 200 {
        bail!("GET /v1/admin/webhooks: {} {}", r.status, r.text());
    }
    let list = r.json();
    let found = list["webhooks"]
        .as_array()
        .and_then(|l| l.iter().find(|w| w["id"] == id).cloned());
    found.with_context(|| format!("the endpoint {id} is not listed"))
}

/// Registers the receiver; returns the endpoint's id and secret.
pub async fn register(
    http: &mut Http,
    token: &str,
    events: &[String],
    url: &str,
) -> anyhow::Result<(String, String)> {
    let body = json!({"url": url, "events": events, "description": "casebroker-loadtest webhooks"});
    let r = http
        .call("POST", "/v1/admin/webhooks", Some(token), Some(&body))
        .await?;
    if r.status == 400 && r.text().contains("webhook_allow_private") {
        bail!(
            "the broker refused the receiver's loopback URL {url}: start it with \
             webhook_allow_private = true (loadtest/casebroker-load.toml sets it)"
        );
    }
    if r.status != 201 {
        bail!("POST /v1/admin/webhooks: {} {}", r.status, r.text());
    }
    let v = r.json();
    match (v["webhook"]["id"].as_str(), v["secret"].as_str()) {
        (Some(id), Some(secret)) => Ok((id.to_string(), secret.to_string())),
        _ => bail!("POST /v1/admin/webhooks: unexpected answer {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&case_name(3, 1234)), Some((3, 1234)));
        assert_eq!(parse_name("load 1"), None);
        assert_eq!(parse_name("wh 1 2 3"), None);
    }

    #[test]
    fn an_event_body_is_read() {
        let body = br#"{"type":"case.closed","timestamp":"2024-01-01T00:00:00.000Z",
            "data":{"company":"load","epoch":"e1","seq":7,"case":{"code":"123456","name":"wh 0 1"}}}"#;
        let ev = read_event(body).unwrap();
        assert_eq!(
            (
                ev.kind.as_str(),
                ev.epoch.as_str(),
                ev.seq,
                ev.code.as_str()
            ),
            ("case.closed", "e1", 7, "123456")
        );
        assert!(read_event(b"{}").is_none());
    }

    #[test]
    fn this_process_has_cpu_time() {
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn metrics_are_read_by_series() {
        let text = "# HELP x\ncasebroker_journal_bytes_total 1234\n\
            casebroker_webhook_attempts_total{result=\"delivered\"} 7\n\
            casebroker_journal_bytes_total_other 5\n";
        assert_eq!(metric(text, SERIES[1]), 1234.0);
        assert_eq!(metric(text, SERIES[2]), 7.0);
        assert_eq!(metric(text, SERIES[0]), 0.0);
    }
}
