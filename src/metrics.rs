//! Prometheus metrics in the broker's own `Registry` (no globals). Labels
//! never carry company, agent or case ids.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::case::Status;
use crate::protocol::Role;

/// The broker's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    connections: IntGaugeVec,
    connections_total: IntCounterVec,
    cases: IntGaugeVec,
    events: IntCounter,
    messages_in: IntCounterVec,
    errors: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
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
        let connections_total = IntCounterVec::new(
            Opts::new(
                "casebroker_connections_total",
                "WebSocket connections accepted after hello, by role",
            ),
            &["role"],
        )
        .expect("valid metric");
        let cases = IntGaugeVec::new(
            Opts::new("casebroker_cases", "Cases held, by derived status"),
            &["status"],
        )
        .expect("valid metric");
        let events = IntCounter::new(
            "casebroker_events_total",
            "Queue events emitted, all companies",
        )
        .expect("valid metric");
        let messages_in = IntCounterVec::new(
            Opts::new(
                "casebroker_messages_received_total",
                "Client WebSocket messages received, by type",
            ),
            &["type"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "casebroker_errors_total",
                "Error replies sent, by error code",
            ),
            &["code"],
        )
        .expect("valid metric");
        let build = IntGauge::with_opts(
            Opts::new("casebroker_build_info", "Always 1; the version is a label")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        build.set(1);
        for m in [
            Box::new(connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_total.clone()),
            Box::new(cases.clone()),
            Box::new(events.clone()),
            Box::new(messages_in.clone()),
            Box::new(errors.clone()),
            Box::new(build.clone()),
        ] {
            registry.register(m).expect("unique metric names");
        }
        for role in [Role::Agent, Role::Customer] {
            connections.with_label_values(&[role.as_str()]).set(0);
        }
        Metrics {
            registry,
            connections,
            connections_total,
            cases,
            events,
            messages_in,
            errors,
        }
    }

    pub fn connection_opened(&self, role: Role) {
        self.connections.with_label_values(&[role.as_str()]).inc();
        self.connections_total
            .with_label_values(&[role.as_str()])
            .inc();
    }

    pub fn connection_closed(&self, role: Role) {
        self.connections.with_label_values(&[role.as_str()]).dec();
    }

    pub fn event_emitted(&self) {
        self.events.inc();
    }

    /// A client message of a known type (label values are the fixed wire
    /// names, or `invalid`).
    pub fn message_received(&self, kind: &'static str) {
        self.messages_in.with_label_values(&[kind]).inc();
    }

    pub fn error_sent(&self, code: crate::protocol::ErrorCode) {
        let label = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.errors.with_label_values(&[label.as_str()]).inc();
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
