//! Prometheus metrics in the broker's own `Registry` (no globals). Labels
//! never carry company, agent or case ids. Hot-path counters are resolved
//! to their label once, at start-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::case::Status;
use crate::protocol::{ClientMsg, ErrorCode, Role};

/// `type` labels of `casebroker_messages_received_total` besides the
/// client message types.
const OTHER_MESSAGE_LABELS: [&str; 2] = ["invalid", "rate_limited"];

/// Why a connection was closed by the broker, for
/// `casebroker_disconnects_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    Slow,
    RateLimited,
    TooLarge,
    HelloTimeout,
    PongTimeout,
    WriteTimeout,
    Shutdown,
    Unauthorized,
    NoHello,
    CaseEnded,
    /// The peer broke the WebSocket protocol (1002) or sent text that is
    /// not UTF-8 (1007).
    BadFrame,
}

impl Disconnect {
    pub const ALL: [Disconnect; 11] = [
        Disconnect::Slow,
        Disconnect::RateLimited,
        Disconnect::TooLarge,
        Disconnect::HelloTimeout,
        Disconnect::PongTimeout,
        Disconnect::WriteTimeout,
        Disconnect::Shutdown,
        Disconnect::Unauthorized,
        Disconnect::NoHello,
        Disconnect::CaseEnded,
        Disconnect::BadFrame,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Disconnect::Slow => "slow",
            Disconnect::RateLimited => "rate_limited",
            Disconnect::TooLarge => "too_large",
            Disconnect::HelloTimeout => "hello_timeout",
            Disconnect::PongTimeout => "pong_timeout",
            Disconnect::WriteTimeout => "write_timeout",
            Disconnect::Shutdown => "shutdown",
            Disconnect::Unauthorized => "unauthorized",
            Disconnect::NoHello => "no_hello",
            Disconnect::CaseEnded => "case_ended",
            Disconnect::BadFrame => "bad_frame",
        }
    }
}

/// The broker's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    capacity: IntGauge,
    refused: IntCounterVec,
    directory_changes: IntCounterVec,
    feed_readers: IntGauge,
    /// Service levels met and breached, by kind.
    sla: IntCounterVec,
    /// Offers ended, by outcome.
    offers: IntCounterVec,
    webhook_attempts: IntCounterVec,
    cases: IntGaugeVec,
    events: IntCounter,
    messages_in_by_type: IntCounterVec,
    /// `messages_in_by_type` resolved for every known type, so the hot path
    /// skips the vector's lock and label hashing.
    by_type: Arc<HashMap<&'static str, IntCounter>>,
    /// Per role (agent, customer): open connections and accepted ones.
    by_role: [(IntGauge, IntCounter); 2],
    messages_in: IntCounter,
    messages_out: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    errors: IntCounterVec,
    disconnects: IntCounterVec,
    join_failures: IntCounterVec,
    join_alarm: IntGauge,
    push_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    registry
        .register(Box::new(m.clone()))
        .expect("unique metric");
    m
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let m = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(m.clone()))
        .expect("unique metric");
    m
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(m.clone()))
        .expect("unique metric");
    m
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let m = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(m.clone()))
        .expect("unique metric");
    m
}

impl Metrics {
    /// Creates and registers every metric, and the process collector
    /// (memory, CPU, open files).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let connections = IntGaugeVec::new(
            Opts::new(
                "casebroker_connections",
                "Open WebSocket connections after hello, by role",
            ),
            &["role"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(connections.clone()))
            .expect("unique metric");
        let cases = IntGaugeVec::new(
            Opts::new("casebroker_cases", "Cases held, by derived status"),
            &["status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(cases.clone()))
            .expect("unique metric");
        let messages = counter_vec(
            &registry,
            "casebroker_messages_total",
            "WebSocket messages, by direction (in, out)",
            "direction",
        );
        let bytes = counter_vec(
            &registry,
            "casebroker_bytes_total",
            "WebSocket message payload bytes, by direction (in, out)",
            "direction",
        );
        let push_latency = histogram(
            &registry,
            "casebroker_push_latency_seconds",
            "Time from a queue event's emission to its write on a dashboard's socket",
            vec![
                0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        );
        let build = IntGauge::with_opts(
            Opts::new("casebroker_build_info", "Always 1; the version is a label")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        build.set(1);
        registry.register(Box::new(build)).expect("unique metric");
        let workers = IntGauge::new(
            "casebroker_worker_threads",
            "Threads running the broker's work (the config's workers; by default one per core it may use)",
        )
        .expect("valid metric");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            workers.set(rt.metrics().num_workers() as i64);
        }
        registry.register(Box::new(workers)).expect("unique metric");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let connections_total = counter_vec(
            &registry,
            "casebroker_connections_total",
            "WebSocket connections accepted after hello, by role",
            "role",
        );
        let by_role = [Role::Agent, Role::Customer].map(|role| {
            let gauge = connections.with_label_values(&[role.as_str()]);
            gauge.set(0);
            (gauge, connections_total.with_label_values(&[role.as_str()]))
        });
        let messages_in_by_type = counter_vec(
            &registry,
            "casebroker_messages_received_total",
            "Client WebSocket messages received, by type (invalid when undecodable)",
            "type",
        );
        let by_type = Arc::new(
            ClientMsg::TYPES
                .iter()
                .chain(&OTHER_MESSAGE_LABELS)
                .map(|t| (*t, messages_in_by_type.with_label_values(&[*t])))
                .collect(),
        );
        let m = Metrics {
            by_role,
            by_type,
            messages_in_by_type,
            capacity: gauge(
                &registry,
                "casebroker_connection_capacity",
                "TCP connections the broker serves before answering 503",
            ),
            refused: counter_vec(
                &registry,
                "casebroker_connections_refused_total",
                "Connections refused before the WebSocket opened, by reason",
                "reason",
            ),
            directory_changes: counter_vec(
                &registry,
                "casebroker_directory_changes_total",
                "Directory changes made through the admin API on this node, by kind",
                "change",
            ),
            offers: counter_vec(
                &registry,
                "casebroker_offers_total",
                "Offers of cases to agents decided by this node, by outcome: accepted, declined, timed_out, withdrawn (the agent went away or offline)",
                "outcome",
            ),
            webhook_attempts: counter_vec(
                &registry,
                "casebroker_webhook_attempts_total",
                "Webhook calls made by this node, by result: delivered (2xx), rejected (another status), unanswered (no answer in time, or none)",
                "result",
            ),
            sla: {
                let m = IntCounterVec::new(
                    Opts::new(
                        "casebroker_sla_total",
                        "Service levels decided by this node: kind (first_response, resolution) and outcome (met, breached)",
                    ),
                    &["kind", "outcome"],
                )
                .expect("valid metric");
                registry
                    .register(Box::new(m.clone()))
                    .expect("unique metric");
                m
            },
            feed_readers: gauge(
                &registry,
                "casebroker_feed_readers",
                "Open GET /v1/events requests (Server-Sent Events and waiting pages)",
            ),
            events: counter(&registry, "casebroker_events_total", "Queue events emitted"),
            messages_in: messages.with_label_values(&["in"]),
            messages_out: messages.with_label_values(&["out"]),
            bytes_in: bytes.with_label_values(&["in"]),
            bytes_out: bytes.with_label_values(&["out"]),
            errors: counter_vec(
                &registry,
                "casebroker_errors_total",
                "Error replies sent, by error code",
                "code",
            ),
            disconnects: counter_vec(
                &registry,
                "casebroker_disconnects_total",
                "Connections closed by the broker, by reason",
                "reason",
            ),
            join_failures: counter_vec(
                &registry,
                "casebroker_join_failures_total",
                "Failed customer joins, by reason (not_found, conflict, rate_limited)",
                "reason",
            ),
            join_alarm: gauge(
                &registry,
                "casebroker_join_failure_alarm",
                "1 while failed joins this minute are over failed_join_alarm_per_minute",
            ),
            cases,
            push_latency,
            registry,
        };
        for d in Disconnect::ALL {
            m.disconnects.with_label_values(&[d.as_str()]);
        }
        for r in ["not_found", "conflict", "rate_limited"] {
            m.join_failures.with_label_values(&[r]);
        }
        m
    }

    fn role(&self, role: Role) -> &(IntGauge, IntCounter) {
        &self.by_role[match role {
            Role::Agent => 0,
            Role::Customer => 1,
        }]
    }

    pub fn connection_opened(&self, role: Role) {
        let (open, total) = self.role(role);
        open.inc();
        total.inc();
    }

    pub fn connection_closed(&self, role: Role) {
        self.role(role).0.dec();
    }

    pub fn set_capacity(&self, n: usize) {
        self.capacity.set(n as i64);
    }

    /// A connection refused before it opened (`capacity`, `per_ip`, `origin`).
    /// A directory change made through the admin API (`agent_added`, …).
    /// A webhook call's answer (`None`: none).
    pub fn webhook_attempt(&self, status: Option<u16>) {
        let result = match status {
            Some(s) if (200..300).contains(&s) => "delivered",
            Some(_) => "rejected",
            None => "unanswered",
        };
        self.webhook_attempts.with_label_values(&[result]).inc();
    }

    /// A service level met or breached.
    pub fn sla(&self, kind: &'static str, met: bool) {
        let outcome = if met { "met" } else { "breached" };
        self.sla.with_label_values(&[kind, outcome]).inc();
    }

    /// An offer ended: `accepted`, `declined`, `timed_out` or `withdrawn`.
    pub fn offer(&self, outcome: &'static str) {
        self.offers.with_label_values(&[outcome]).inc();
    }

    /// An event feed request opened (`true`) or ended.
    pub fn feed_reader(&self, open: bool) {
        if open {
            self.feed_readers.inc();
        } else {
            self.feed_readers.dec();
        }
    }

    pub fn directory_changed(&self, change: &'static str) {
        self.directory_changes.with_label_values(&[change]).inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    pub fn event_emitted(&self) {
        self.events.inc();
    }

    /// One client message of `len` bytes, of a known wire type (or
    /// `invalid`).
    pub fn message_received(&self, kind: &'static str, len: usize) {
        match self.by_type.get(kind) {
            Some(c) => c.inc(),
            None => self.messages_in_by_type.with_label_values(&[kind]).inc(),
        }
        self.messages_in.inc();
        self.bytes_in.inc_by(len as u64);
    }

    /// Messages written to a socket in one batch.
    pub fn messages_sent(&self, count: u64, bytes: u64) {
        self.messages_out.inc_by(count);
        self.bytes_out.inc_by(bytes);
    }

    pub fn error_sent(&self, code: ErrorCode) {
        self.error_counter(code).inc();
    }

    /// The counter of error replies with `code`, for a reply counted
    /// later, when it is sent.
    pub fn error_counter(&self, code: ErrorCode) -> IntCounter {
        let label = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.errors.with_label_values(&[label.as_str()])
    }

    pub fn disconnected(&self, reason: Disconnect) {
        self.disconnects.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn join_failed(&self, reason: &'static str) {
        self.join_failures.with_label_values(&[reason]).inc();
    }

    pub fn join_alarm(&self, on: bool) {
        self.join_alarm.set(i64::from(on));
    }

    /// An event reached a socket this long after it was emitted.
    /// The push latencies of one written batch, gathered locally and
    /// added to the shared histogram at once.
    pub fn push_latencies(&self, latencies: impl Iterator<Item = Duration>) {
        let local = self.push_latency.local();
        for d in latencies {
            local.observe(d.as_secs_f64());
        }
        local.flush();
    }

    /// Registers a gauge beside the broker's own (for a part that only
    /// some brokers run, such as a cluster's).
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        gauge(&self.registry, name, help)
    }

    /// Registers a counter beside the broker's own (for a part that only
    /// some brokers run, such as a cluster's).
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        counter(&self.registry, name, help)
    }

    /// Registers the journal's metrics (a broker with a data directory).
    pub fn journal(&self) -> JournalMetrics {
        let r = &self.registry;
        JournalMetrics {
            commits: counter(
                r,
                "casebroker_journal_commits_total",
                "Groups of changes written to disk",
            ),
            changes: counter(
                r,
                "casebroker_journal_changes_total",
                "Changes written to disk",
            ),
            bytes: counter(
                r,
                "casebroker_journal_bytes_total",
                "Bytes of journal entries written to disk",
            ),
            failures: counter(
                r,
                "casebroker_journal_failures_total",
                "Journal writes that failed (and are retried)",
            ),
            commit_seconds: histogram(
                r,
                "casebroker_journal_commit_seconds",
                "Time to write one group of changes to disk, fsync included",
                vec![
                    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
                ],
            ),
        }
    }

    /// Sets the per-status gauge and renders everything in the text format.
    pub fn render(&self, by_status: &[(Status, usize)]) -> String {
        for (status, n) in by_status {
            self.cases
                .with_label_values(&[status.as_str()])
                .set(*n as i64);
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// The journal writer's metrics.
#[derive(Clone)]
pub struct JournalMetrics {
    commits: IntCounter,
    changes: IntCounter,
    bytes: IntCounter,
    failures: IntCounter,
    commit_seconds: Histogram,
}

impl JournalMetrics {
    /// One group stored: its changes and entry bytes, and how long it took.
    pub fn stored(&self, changes: usize, bytes: usize, took: Duration) {
        self.commits.inc();
        self.changes.inc_by(changes as u64);
        self.bytes.inc_by(bytes as u64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub fn failed(&self) {
        self.failures.inc();
    }
}
