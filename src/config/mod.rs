//! The one `Config`: the TOML file of PROTOCOL.md plus command-line
//! overrides, every knob with a documented default, and `validate()`, which
//! runs before anything binds and names the bad field.

pub mod validate;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Why a configuration was refused. The message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The broker's whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the one HTTP + WebSocket listener. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Time after creation at which an open case expires. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub case_ttl: Duration,
    /// Closed and expired cases are kept this long, then purged. Default `30d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Closed and expired cases younger than this are in snapshots. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub snapshot_window: Duration,
    /// How long the customer seat stays reserved for its resume token after
    /// its holder left. Default `120s`.
    #[serde(with = "humantime_serde")]
    pub seat_grace: Duration,
    /// An automatically assigned case whose assignee stays offline this
    /// long without joining goes back to the line. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub orphan_timeout: Duration,
    /// Deadline for the `hello` message. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub hello_timeout: Duration,
    /// How long shutdown waits for connections to close. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Browser origins allowed to open a WebSocket, besides the broker's
    /// own (its pages). Clients that send no `Origin` are always accepted.
    /// Default `["http://localhost:8080", "http://127.0.0.1:8080"]`.
    pub allowed_origins: Vec<String>,
    /// Digits in a session code: 8 (`s12-345-678`, default) or 11.
    pub code_digits: usize,
    /// Events each company's stream keeps for `resume`. Default 10000.
    pub history_events: usize,
    /// Messages a connection's outbound queue holds before the connection is
    /// dropped as a slow consumer (close 4001). Default 4096.
    pub outbox_messages: usize,
    /// The largest client message, in bytes. Default 65536 (the protocol's).
    pub max_message_bytes: usize,
    /// Bytes a connection's outbound queue may hold (one larger message,
    /// such as a big snapshot, is let through alone). Default 4 MiB.
    pub outbox_bytes: usize,
    /// Bytes that messages larger than `outbox_bytes` (big snapshots) may
    /// hold until written, all connections together; a connection whose
    /// big message finds none left is closed with 4001 (it resumes later).
    /// Default 128 MiB.
    pub large_messages_bytes: usize,
    /// Open TCP connections the broker serves; past it, new connections get
    /// HTTP 503. Default: derived from the open-file limit at start-up.
    pub max_connections: Option<usize>,
    /// WebSocket connections one client address may hold. Default 1000.
    pub max_connections_per_ip: usize,
    /// Messages a connection may send per second, sustained. Default 50.
    pub messages_per_second: u32,
    /// Messages a connection may send in a burst. Default 100.
    pub message_burst: u32,
    /// Failed code joins one address may make per minute before it backs
    /// off (answered `rate_limited`). Default 10.
    pub failed_joins_per_minute: u32,
    /// The longest back-off of an address; each block doubles up to it.
    /// Default `5m`.
    #[serde(with = "humantime_serde")]
    pub max_join_backoff: Duration,
    /// Failed joins per minute, all addresses together, past which a
    /// warning is logged and `casebroker_join_failure_alarm` is 1. Default 1000.
    pub failed_join_alarm_per_minute: u64,
    /// `request_help` / `POST /v1/help` per client address per minute. Default 30.
    pub help_per_ip_per_minute: u32,
    /// `request_help` / `POST /v1/help` per module key per minute. Default 600.
    pub help_per_module_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` is believed. Default none.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Deadline for the HTTP request line and headers (the WebSocket
    /// handshake). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Deadline for an HTTP request's body, once its headers are in;
    /// past it the request gets 408 `timeout` and the connection is
    /// closed. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A WebSocket ping is sent this often. Default `25s`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A connection that answers no ping within this is closed. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// A socket write that takes longer closes the connection. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Threads that run the broker's work. Default: one per core the
    /// broker may use (a container's CPU limit included). Brokers sharing
    /// a machine, such as nodes of one cluster, each take their share.
    pub workers: Option<usize>,
    /// Initial capacity of a connection's WebSocket read storage, in bytes.
    /// Socket reads always go through tungstenite's fixed 4 KiB chunk; this
    /// only sets what an idle connection keeps beside it. Default 256.
    pub read_buffer_bytes: usize,
    /// Buffer of control frames (ping, pong, close); data frames are
    /// encoded once and written as they are. Default 65536.
    pub write_buffer_bytes: usize,
    /// The most a connection's control-frame buffer may hold. Default
    /// 64 MiB.
    pub max_write_buffer_bytes: usize,
    /// A separate listener for `/metrics` alone. Default none (`/metrics`
    /// is on the main listener).
    pub metrics_listen: Option<SocketAddr>,
    /// Where the journal and the images live. Default `casebroker-data`
    /// (in the working directory).
    pub data_dir: std::path::PathBuf,
    /// Keep nothing on disk: every case is gone when the broker stops.
    /// Default false.
    pub in_memory: bool,
    /// The most changes in one journal commit (a group). Default 64.
    pub journal_group_changes: usize,
    /// The most bytes in one journal commit. Default 262144.
    pub journal_group_bytes: usize,
    /// The longest a journal commit gathers queued changes. Default `2ms`.
    #[serde(with = "humantime_serde")]
    pub journal_group_wait: Duration,
    /// How often what changed is written as an image (and the journal
    /// before it dropped). Default `1m`.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// Several brokers sharing one Redis. Default none: a single broker
    /// with its own data directory.
    pub cluster: Option<ClusterConfig>,
    /// When failed webhook calls are tried again, after each failure in
    /// turn; past the last the delivery fails. Default `["5s", "5m", "30m",
    /// "2h", "5h", "10h", "14h", "20h", "24h"]`.
    #[serde(deserialize_with = "durations")]
    pub webhook_retry: Vec<Duration>,
    /// The longest one webhook call may take. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Let webhooks call loopback, private and link-local addresses.
    /// Default false.
    pub webhook_allow_private: bool,
    /// Calls in flight at once per endpoint. Default 16.
    pub webhook_concurrency: usize,
    /// Deliveries an endpoint may have waiting; past it the endpoint is
    /// disabled. Default 10000.
    pub webhook_pending: usize,
    /// The operator's token: with it, `/v1/admin/companies` adds and
    /// deletes companies at run time. Default none (companies only from
    /// this file).
    pub operator_token: Option<Secret>,
    /// The operator token's hex SHA-256, instead of the token itself.
    pub operator_token_sha256: Option<String>,
    /// The most companies the broker serves, the file's and the API's
    /// (deleted ones included). Default 100.
    pub max_companies: usize,
    /// STUN and TURN servers for screen sharing, given to both seats in
    /// `joined`. Default none (peers on one network still connect).
    pub ice_servers: Vec<crate::ice::IceServerConfig>,
    /// The shared secret of a TURN server using the REST convention
    /// (coturn's `static-auth-secret`): TURN servers listed without
    /// credentials get short-lived ones. Default none.
    pub turn_secret: Option<Secret>,
    /// How long those credentials last. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub turn_ttl: Duration,
    /// During a burst of changes, a waiting customer is told its position
    /// at most this often (always once after the last change). `0s` tells
    /// every change at once. Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub position_interval: Duration,
    /// Companies (tenants). The demo company when none are configured.
    pub companies: Vec<CompanyConfig>,
}

/// A list of humantime durations (`["5s", "5m"]`).
fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}

/// A secret from the config file: never shown by `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Config {
    /// The company slots the broker keeps: `max_companies`, or more when
    /// the file and the data directory hold more.
    pub fn company_slots(&self) -> usize {
        self.max_companies.max(self.companies.len())
    }

    /// The SHA-256 of the operator token, if one is set.
    pub fn operator_hash(&self) -> Option<[u8; 32]> {
        match (&self.operator_token, &self.operator_token_sha256) {
            (Some(t), _) => Some(hash_token(&t.0)),
            (None, Some(h)) => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(h, &mut out).ok()?;
                Some(out)
            }
            (None, None) => None,
        }
    }
}

/// The `[cluster]` table: this broker is one node of several that share
/// their cases, streams and limits through one Redis. Every node must run
/// the same companies, groups and agents.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The Redis every node uses, e.g. `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// This node's name in logs and in Redis. Default: host name and pid.
    #[serde(default)]
    pub node_id: Option<String>,
    /// A node that has not heartbeated for this long is dead: its seats are
    /// released and its agents count as offline. Default `10s`.
    #[serde(default = "default_node_timeout", with = "humantime_serde")]
    pub node_timeout: Duration,
    /// How often the node says it is alive, looks for dead nodes and
    /// compares its copies with Redis's logs. Default `1s` (10 ms to a
    /// third of `node_timeout`).
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A company this node neither decides nor serves a connection of is
    /// let go (its cases dropped from memory) once unused for this long,
    /// and loaded again from Redis at its next use. Default `5m` (1s to
    /// 24h).
    #[serde(default = "default_company_idle", with = "humantime_serde")]
    pub company_idle: Duration,
    /// Where this node listens for direct links from the other nodes, as
    /// they reach it (e.g. `10.0.0.5:7400`; port 0: any free one). Calls,
    /// answers and log notices between two linked nodes go over the link
    /// rather than through Redis. Default: none (all through Redis).
    #[serde(default)]
    pub link: Option<std::net::SocketAddr>,
}

fn default_node_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(1)
}

fn default_company_idle() -> Duration {
    Duration::from_secs(300)
}

impl ClusterConfig {
    /// A cluster on `redis_url`, every other setting by default.
    pub fn new(redis_url: String) -> ClusterConfig {
        ClusterConfig {
            redis_url,
            node_id: None,
            node_timeout: default_node_timeout(),
            heartbeat: default_heartbeat(),
            company_idle: default_company_idle(),
            link: None,
        }
    }

    /// The node's name: `node_id`, or host name and pid.
    pub fn node_name(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "casebroker".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            case_ttl: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            snapshot_window: Duration::from_secs(24 * 3600),
            seat_grace: Duration::from_secs(120),
            orphan_timeout: Duration::from_secs(300),
            hello_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            allowed_origins: vec![
                "http://localhost:8080".into(),
                "http://127.0.0.1:8080".into(),
            ],
            code_digits: 8,
            history_events: 10_000,
            outbox_messages: 4096,
            max_message_bytes: 64 * 1024,
            outbox_bytes: 4 * 1024 * 1024,
            large_messages_bytes: 128 * 1024 * 1024,
            max_connections: None,
            max_connections_per_ip: 1000,
            messages_per_second: 50,
            message_burst: 100,
            failed_joins_per_minute: 10,
            max_join_backoff: Duration::from_secs(300),
            failed_join_alarm_per_minute: 1000,
            help_per_ip_per_minute: 30,
            help_per_module_per_minute: 600,
            trusted_proxies: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            workers: None,
            read_buffer_bytes: 256,
            write_buffer_bytes: 64 * 1024,
            max_write_buffer_bytes: 64 * 1024 * 1024,
            metrics_listen: None,
            data_dir: "casebroker-data".into(),
            in_memory: false,
            journal_group_changes: 64,
            journal_group_bytes: 256 * 1024,
            journal_group_wait: Duration::from_millis(2),
            snapshot_interval: Duration::from_secs(60),
            cluster: None,
            webhook_retry: ["5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h"]
                .iter()
                .map(|d| humantime::parse_duration(d).expect("valid"))
                .collect(),
            webhook_timeout: Duration::from_secs(10),
            webhook_allow_private: false,
            webhook_concurrency: 16,
            webhook_pending: 10_000,
            operator_token: None,
            operator_token_sha256: None,
            max_companies: 100,
            ice_servers: Vec::new(),
            turn_secret: None,
            turn_ttl: Duration::from_secs(3600),
            position_interval: Duration::from_millis(250),
            companies: Vec::new(),
        }
    }
}

/// Automated assignment policy of a company.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    #[default]
    Manual,
    RoundRobin,
    LeastLoaded,
}

/// One company profile.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanyConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub assignment: Assignment,
    /// Automated assignment offers each case first: the agent picked must
    /// `accept` within this time, else the next eligible agent gets the
    /// offer. A group's own `offer_timeout` wins over this one.
    #[serde(default, with = "humantime_serde::option")]
    pub offer_timeout: Option<Duration>,
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub modules: Vec<ModuleConfig>,
    /// Webhook endpoints declared here (changed here; the API may only
    /// disable and enable them, and replay).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Agents the data directory knows and the config no longer has: kept
    /// by id for the history, never signed in or assigned. Filled from
    /// the data directory at start, not from the file.
    #[serde(skip)]
    pub former_agents: Vec<String>,
    /// Agents added through the admin API, as the data directory holds
    /// them. Filled from the data directory at start, not from the file.
    #[serde(skip)]
    pub api_agents: Vec<crate::directory::AgentRecord>,
    /// Added by the operator through the admin API (else declared in this
    /// file). Set from the data directory or the cluster at start.
    #[serde(skip)]
    pub from_api: bool,
    /// Deleted by the operator: kept in its place, not served.
    #[serde(skip)]
    pub removed: bool,
    /// Groups added through the admin API (deleted ones too), as the data
    /// directory holds them, after the file's. Filled from the data
    /// directory at start.
    #[serde(skip)]
    pub api_groups: Vec<crate::directory::GroupRecord>,
    /// Module keys added through the admin API, as the data directory
    /// holds them. Filled from the data directory at start.
    #[serde(skip)]
    pub api_modules: Vec<crate::directory::ModuleRecord>,
}

/// A webhook endpoint declared in the file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// `whsec_` and the base64 of at least 16 random bytes.
    pub secret: Secret,
    #[serde(default)]
    pub description: String,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// A group (queue) inside a company.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Service level: a supporter is in the session within this time of
    /// the case's creation.
    #[serde(default, with = "humantime_serde::option")]
    pub sla_first_response: Option<Duration>,
    /// Service level: the case is closed within this time of its creation.
    #[serde(default, with = "humantime_serde::option")]
    pub sla_resolution: Option<Duration>,
    /// Offers for this group's cases (see the company's `offer_timeout`).
    #[serde(default, with = "humantime_serde::option")]
    pub offer_timeout: Option<Duration>,
    /// Opening hours: outside them customers cannot ask for help.
    #[serde(default)]
    pub hours: Option<crate::hours::HoursConfig>,
    /// What customers read outside the opening hours.
    #[serde(default)]
    pub closed_message: Option<String>,
}

/// An agent and its credential. Exactly one of `token` and `token_sha256`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub token: Option<String>,
    /// Hex SHA-256 of the token, so the file need not hold the token itself.
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    /// Open assigned cases automation may give this agent. Default 5.
    #[serde(default = "default_max_cases")]
    pub max_cases: u32,
}

fn default_max_cases() -> u32 {
    5
}

impl std::fmt::Debug for AgentConfig {
    // Never print a token, even in a debug dump of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("id", &self.id)
            .field("groups", &self.groups)
            .field("admin", &self.admin)
            .field("max_cases", &self.max_cases)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// The SHA-256 of the agent's token: the only form the broker keeps.
    pub fn token_hash(&self) -> [u8; 32] {
        match (&self.token, &self.token_sha256) {
            (Some(token), _) => hash_token(token),
            (None, Some(hex_hash)) => {
                let mut out = [0u8; 32];
                // validate() has checked the length and the digits.
                hex::decode_to_slice(hex_hash, &mut out).expect("validated hex");
                out
            }
            (None, None) => [0u8; 32],
        }
    }
}

/// A URL as it may be logged: its password, if any, replaced by `***`
/// (`redis://user:***@host:6379`).
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // `redis://password@host` is a password alone.
                "***".to_string()
            };
            format!("{scheme}://{shown}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// SHA-256 of a bearer token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A QuickSupport module key: the credential a customer's app uses to
/// request help for one company and group.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    pub key: String,
    pub group: String,
    pub default_assignee: Option<String>,
}

/// Tokens of the built-in demo company, printed at start-up.
pub const DEMO_ADMIN_TOKEN: &str = "demo-alice-token";
/// The plain demo agent's token.
pub const DEMO_AGENT_TOKEN: &str = "demo-bob-token";
/// The demo QuickSupport module key.
pub const DEMO_MODULE_KEY: &str = "demo-quicksupport";

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in demo: one company, two groups, an admin, a plain agent
    /// and a QuickSupport module.
    pub fn demo() -> Config {
        let text = format!(
            r#"
[[companies]]
id = "demo"
name = "Demo Company"
assignment = "manual"
groups = [{{ id = "support", name = "Support" }}, {{ id = "sales", name = "Sales" }}]

[[companies.agents]]
id = "alice"
name = "Alice (admin)"
token = "{DEMO_ADMIN_TOKEN}"
groups = ["support", "sales"]
admin = true

[[companies.agents]]
id = "bob"
name = "Bob"
token = "{DEMO_AGENT_TOKEN}"
groups = ["support"]

[[companies.modules]]
key = "{DEMO_MODULE_KEY}"
group = "support"
"#
        );
        Config::from_toml(&text).expect("the demo config is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_is_valid() {
        let c = Config::demo();
        assert_eq!(c.companies.len(), 1);
        assert_eq!(c.companies[0].agents.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = r#"
[[companies]]
id = "acme"
groups = [{ id = "support" }]
[[companies.agents]]
id = "alice"
token = "long-enough-token"
groups = ["nope"]
"#;
        let e = Config::from_toml(bad).unwrap_err().to_string();
        assert!(e.contains("companies[0].agents[0].groups"), "{e}");
        let e = Config::from_toml("case_ttl = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("case_ttl"), "{e}");
        let e = Config::from_toml("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn a_bad_operator_token_names_its_field_and_a_good_one_is_never_shown() {
        let company = "[[companies]]\nid = \"a\"\ngroups = [{ id = \"g\" }]\n[[companies.agents]]\nid = \"x\"\ntoken = \"agent-token-00000001\"\ngroups = [\"g\"]\n";
        for (top, field) in [
            ("operator_token = \"short\"", "operator_token"),
            ("operator_token_sha256 = \"abc\"", "operator_token_sha256"),
            (
                "operator_token = \"operator-token-000001\"\noperator_token_sha256 = \"00\"",
                "operator_token",
            ),
            (
                "operator_token = \"agent-token-00000001\"",
                "operator_token",
            ),
            ("max_companies = 0", "max_companies"),
            ("max_companies = 10001", "max_companies"),
        ] {
            let e = Config::from_toml(&format!("{top}\n{company}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{top}: {e}");
        }
        let c = Config::from_toml(&format!(
            "operator_token = \"operator-token-000001\"\n{company}"
        ))
        .unwrap();
        assert_eq!(c.operator_hash(), Some(hash_token("operator-token-000001")));
        assert!(!format!("{c:?}").contains("operator-token-000001"));
    }

    #[test]
    fn workers_default_to_the_cores_and_are_bounded() {
        assert_eq!(Config::demo().workers, None);
        let c = Config::from_toml("workers = 1").unwrap();
        assert_eq!(c.workers, Some(1));
        assert_eq!(
            Config::from_toml("workers = 1024").unwrap().workers,
            Some(1024)
        );
        for bad in [
            "workers = 0",
            "workers = 1025",
            "workers = -1",
            "workers = \"two\"",
        ] {
            let e = Config::from_toml(bad).unwrap_err().to_string();
            assert!(e.contains("workers"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_url_is_logged_without_its_password() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://user:s3cret@10.0.0.1:6379/2",
                "redis://user:***@10.0.0.1:6379/2",
            ),
            ("redis://:s3cret@host:6379", "redis://:***@host:6379"),
            ("rediss://s3cret@host", "rediss://***@host"),
            ("redis://u:p@ss@host/0?x=1", "redis://u:***@host/0?x=1"),
        ] {
            assert_eq!(redacted_url(url), shown);
        }
    }

    #[test]
    fn a_bad_cluster_table_names_its_field() {
        let cluster = |body: &str| {
            Config::from_toml(&format!("[cluster]\n{body}"))
                .map(|c| c.cluster.expect("a cluster"))
                .map_err(|e| e.to_string())
        };
        let ok = cluster("redis_url = \"redis://127.0.0.1:6379\"").unwrap();
        assert_eq!(ok.node_timeout, Duration::from_secs(10));
        assert_eq!(ok.heartbeat, Duration::from_secs(1));
        assert_eq!(ok.company_idle, Duration::from_secs(300));
        assert_eq!(ok.link, None);
        let linked = cluster("redis_url = \"redis://127.0.0.1\"\nlink = \"127.0.0.1:0\"").unwrap();
        assert_eq!(linked.link, Some("127.0.0.1:0".parse().unwrap()));
        assert!(
            ok.node_name()
                .ends_with(&format!("-{}", std::process::id()))
        );
        for (body, field) in [
            ("redis_url = \"http://127.0.0.1:6379\"", "cluster.redis_url"),
            ("redis_url = \"redis://[::1\"", "cluster.redis_url"),
            (
                "redis_url = \"redis://127.0.0.1\"\nnode_id = \"a b\"",
                "cluster.node_id",
            ),
            (
                "redis_url = \"redis://127.0.0.1\"\nnode_timeout = \"1s\"",
                "cluster.node_timeout",
            ),
            (
                "redis_url = \"redis://127.0.0.1\"\nheartbeat = \"5ms\"",
                "cluster.heartbeat",
            ),
            (
                "redis_url = \"redis://127.0.0.1\"\nheartbeat = \"4s\"",
                "cluster.heartbeat",
            ),
            (
                "redis_url = \"redis://127.0.0.1\"\ncompany_idle = \"500ms\"",
                "cluster.company_idle",
            ),
            (
                "redis_url = \"redis://127.0.0.1\"\ncompany_idle = \"2d\"",
                "cluster.company_idle",
            ),
            (
                "redis_url = \"redis://127.0.0.1\"\nlink = \"0.0.0.0:7400\"",
                "cluster.link",
            ),
            (
                "redis_url = \"redis://127.0.0.1\"\nlink = \"[::]:7400\"",
                "cluster.link",
            ),
            (
                "redis_url = \"redis://127.0.0.1\"\nlink = \"10.0.0.5\"",
                "link",
            ),
            ("node_id = \"a\"", "redis_url"),
            ("redis_url = \"redis://127.0.0.1\"\nbogus = 1", "bogus"),
        ] {
            let e = cluster(body).unwrap_err();
            assert!(e.contains(field), "{body}: {e}");
        }
    }

    #[test]
    fn a_token_hashes_to_its_known_sha256() {
        // `printf %s secret-token | sha256sum`
        assert_eq!(
            hex::encode(hash_token("secret-token")),
            "930bbdc51b6aed5c2a5678fd6e28dee7a05e8a4b643cfc0b4427c3efb86c0d94"
        );
        assert_eq!(
            hex::encode(hash_token("operator-token-000001")),
            "ad88eb13317d00252fc66df9ab8b568749a49b3d6ded0255aa2ccaf4d039143b"
        );
    }

    #[test]
    fn token_sha256_matches_token() {
        let hex_hash = "930bbdc51b6aed5c2a5678fd6e28dee7a05e8a4b643cfc0b4427c3efb86c0d94";
        let text = format!(
            "[[companies]]\nid = \"a\"\ngroups = [{{ id = \"g\" }}]\n[[companies.agents]]\nid = \"x\"\ntoken_sha256 = \"{hex_hash}\"\n"
        );
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(
            c.companies[0].agents[0].token_hash(),
            hash_token("secret-token")
        );
    }
}
