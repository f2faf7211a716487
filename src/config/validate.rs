//! Checks of a parsed config that parsing cannot make: references,
//! uniqueness and ranges, each error naming its field.

use super::*;

/// The longest service level a group may set.
const MAX_SLA: Duration = Duration::from_secs(365 * 24 * 3600);
/// The most worker threads (`workers`).
const MAX_WORKERS: usize = 1024;
/// The longest `closed_message`.
const MAX_CLOSED_MESSAGE: usize = 500;
/// The bounds of `offer_timeout`: long enough to read the case, short
/// enough that a customer is not kept waiting on an absent agent.
const OFFER_TIMEOUT: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

impl Config {
    /// Checks everything that parsing cannot: references, uniqueness and
    /// ranges. Errors name the field, e.g. `companies[0].agents[1].groups`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.operator_token, &self.operator_token_sha256) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "operator_token",
                    "set at most one of operator_token and operator_token_sha256",
                ));
            }
            (Some(t), None) if t.0.len() < 16 => {
                return Err(invalid("operator_token", "must be at least 16 characters"));
            }
            (None, Some(h)) if h.len() != 64 || hex::decode(h).is_err() => {
                return Err(invalid("operator_token_sha256", "must be 64 hex digits"));
            }
            _ => {}
        }
        if self.webhook_retry.len() > 20 || self.webhook_retry.iter().any(|d| d.is_zero()) {
            return Err(invalid(
                "webhook_retry",
                "must list at most 20 durations, each more than zero",
            ));
        }
        if self.webhook_timeout.is_zero() || self.webhook_timeout > Duration::from_secs(60) {
            return Err(invalid(
                "webhook_timeout",
                "must be more than zero and at most 60s",
            ));
        }
        if !(1..=64).contains(&self.webhook_concurrency) {
            return Err(invalid("webhook_concurrency", "must be 1 to 64"));
        }
        if !(1..=1_000_000).contains(&self.webhook_pending) {
            return Err(invalid("webhook_pending", "must be 1 to 1000000"));
        }
        if !(1..=10_000).contains(&self.max_companies) || self.max_companies < self.companies.len()
        {
            return Err(invalid(
                "max_companies",
                "must be 1 to 10000, and at least the number of companies in the file",
            ));
        }
        if self.ice_servers.len() > crate::ice::MAX_SERVERS {
            return Err(invalid(
                "ice_servers",
                format!("at most {} servers", crate::ice::MAX_SERVERS),
            ));
        }
        for (i, s) in self.ice_servers.iter().enumerate() {
            s.check()
                .map_err(|m| invalid(format!("ice_servers[{i}]"), m))?;
        }
        if self.turn_secret.as_ref().is_some_and(|s| s.0.len() < 16) {
            return Err(invalid("turn_secret", "must be at least 16 characters"));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600)).contains(&self.turn_ttl)
        {
            return Err(invalid("turn_ttl", "must be 1 min to 7 days"));
        }
        if self.position_interval > Duration::from_secs(10) {
            return Err(invalid("position_interval", "must be at most 10 s"));
        }
        if !crate::case::CODE_DIGITS.contains(&self.code_digits) {
            return Err(invalid("code_digits", "must be 8 or 11"));
        }
        for (field, d) in [
            ("case_ttl", self.case_ttl),
            ("retention", self.retention),
            ("hello_timeout", self.hello_timeout),
            ("orphan_timeout", self.orphan_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("request_timeout", self.request_timeout),
            ("ping_interval", self.ping_interval),
            ("pong_timeout", self.pong_timeout),
            ("write_timeout", self.write_timeout),
            ("max_join_backoff", self.max_join_backoff),
            ("snapshot_interval", self.snapshot_interval),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must be more than zero"));
            }
        }
        for (field, n) in [
            ("history_events", self.history_events),
            ("journal_group_changes", self.journal_group_changes),
            ("journal_group_bytes", self.journal_group_bytes),
            ("outbox_messages", self.outbox_messages),
            ("outbox_bytes", self.outbox_bytes),
            ("large_messages_bytes", self.large_messages_bytes),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_connections", self.max_connections.unwrap_or(1)),
            ("messages_per_second", self.messages_per_second as usize),
            ("message_burst", self.message_burst as usize),
            (
                "failed_joins_per_minute",
                self.failed_joins_per_minute as usize,
            ),
            (
                "help_per_ip_per_minute",
                self.help_per_ip_per_minute as usize,
            ),
            (
                "help_per_module_per_minute",
                self.help_per_module_per_minute as usize,
            ),
        ] {
            if n == 0 || n > 1_000_000_000 {
                return Err(invalid(field, "must be between 1 and 1000000000"));
            }
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        if self
            .workers
            .is_some_and(|n| !(1..=MAX_WORKERS).contains(&n))
        {
            return Err(invalid("workers", "must be between 1 and 1024"));
        }
        if !(256..=16 * 1024 * 1024).contains(&self.read_buffer_bytes) {
            return Err(invalid(
                "read_buffer_bytes",
                "must be between 256 and 16777216",
            ));
        }
        if self.max_write_buffer_bytes <= self.write_buffer_bytes + self.max_message_bytes {
            return Err(invalid(
                "max_write_buffer_bytes",
                "must be larger than write_buffer_bytes + max_message_bytes",
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(invalid(
                "max_message_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        let mut company_ids = HashSet::new();
        let mut module_keys = HashSet::new();
        let mut token_hashes = HashSet::new();
        for (ci, c) in self.companies.iter().enumerate() {
            let at = format!("companies[{ci}]");
            check_id(&format!("{at}.id"), &c.id)?;
            if !company_ids.insert(c.id.as_str()) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!("duplicate company \"{}\"", c.id),
                ));
            }
            check_offer_timeout(&at, c.offer_timeout)?;
            if c.groups.is_empty() {
                return Err(invalid(
                    format!("{at}.groups"),
                    "a company needs at least one group",
                ));
            }
            let mut groups = HashSet::new();
            for (gi, g) in c.groups.iter().enumerate() {
                check_id(&format!("{at}.groups[{gi}].id"), &g.id)?;
                if !groups.insert(g.id.as_str()) {
                    return Err(invalid(
                        format!("{at}.groups[{gi}].id"),
                        format!("duplicate group \"{}\"", g.id),
                    ));
                }
                for (key, d) in [
                    ("sla_first_response", g.sla_first_response),
                    ("sla_resolution", g.sla_resolution),
                ] {
                    if d.is_some_and(|d| d.is_zero() || d > MAX_SLA) {
                        return Err(invalid(
                            format!("{at}.groups[{gi}].{key}"),
                            "must be more than 0 and at most 365 days",
                        ));
                    }
                }
                check_offer_timeout(&format!("{at}.groups[{gi}]"), g.offer_timeout)?;
                if let Some(hours) = &g.hours {
                    hours.parse().map_err(|e| {
                        invalid(format!("{at}.groups[{gi}].hours.{}", e.key), e.message)
                    })?;
                }
                if let Some(m) = &g.closed_message
                    && (m.trim().is_empty() || m.chars().count() > MAX_CLOSED_MESSAGE)
                {
                    return Err(invalid(
                        format!("{at}.groups[{gi}].closed_message"),
                        format!("must be 1 to {MAX_CLOSED_MESSAGE} characters"),
                    ));
                }
            }
            let mut agents = HashSet::new();
            for (ai, a) in c.agents.iter().enumerate() {
                let at = format!("{at}.agents[{ai}]");
                check_id(&format!("{at}.id"), &a.id)?;
                if a.id == "customer" || a.id == "auto" {
                    return Err(invalid(
                        format!("{at}.id"),
                        format!("\"{}\" is reserved", a.id),
                    ));
                }
                if !agents.insert(a.id.as_str()) {
                    return Err(invalid(
                        format!("{at}.id"),
                        format!("duplicate agent \"{}\"", a.id),
                    ));
                }
                match (&a.token, &a.token_sha256) {
                    (Some(_), Some(_)) | (None, None) => {
                        return Err(invalid(
                            format!("{at}.token"),
                            "set exactly one of token and token_sha256",
                        ));
                    }
                    (Some(t), None) if t.len() < 8 => {
                        return Err(invalid(
                            format!("{at}.token"),
                            "must be at least 8 characters",
                        ));
                    }
                    (None, Some(h)) if h.len() != 64 || hex::decode(h).is_err() => {
                        return Err(invalid(
                            format!("{at}.token_sha256"),
                            "must be 64 hex digits",
                        ));
                    }
                    _ => {}
                }
                if !token_hashes.insert(a.token_hash()) {
                    return Err(invalid(
                        format!("{at}.token"),
                        "another agent has the same token",
                    ));
                }
                for g in &a.groups {
                    if !groups.contains(g.as_str()) {
                        return Err(invalid(
                            format!("{at}.groups"),
                            format!("unknown group \"{g}\""),
                        ));
                    }
                }
            }
            let mut hook_ids = HashSet::new();
            for (wi, w) in c.webhooks.iter().enumerate() {
                let at = format!("{at}.webhooks[{wi}]");
                check_id(&format!("{at}.id"), &w.id)?;
                if !hook_ids.insert(w.id.as_str()) {
                    return Err(invalid(
                        format!("{at}.id"),
                        format!("duplicate webhook \"{}\"", w.id),
                    ));
                }
                crate::webhook::check_url(&w.url, self.webhook_allow_private)
                    .map_err(|e| invalid(format!("{at}.url"), e))?;
                if w.events.is_empty()
                    || w.events
                        .iter()
                        .any(|e| e != "*" && !crate::webhook::TYPES.contains(&e.as_str()))
                {
                    return Err(invalid(
                        format!("{at}.events"),
                        format!(
                            "must list event types ({}) or \"*\"",
                            crate::webhook::TYPES.join(", ")
                        ),
                    ));
                }
                if !crate::webhook::valid_secret(&w.secret.0) {
                    return Err(invalid(
                        format!("{at}.secret"),
                        "must be whsec_ and the base64 of at least 16 bytes",
                    ));
                }
            }
            for (mi, m) in c.modules.iter().enumerate() {
                let at = format!("{at}.modules[{mi}]");
                if m.key.is_empty() || m.key.len() > 128 {
                    return Err(invalid(format!("{at}.key"), "must be 1 to 128 characters"));
                }
                if !module_keys.insert(m.key.as_str()) {
                    return Err(invalid(format!("{at}.key"), "duplicate module key"));
                }
                if !groups.contains(m.group.as_str()) {
                    return Err(invalid(
                        format!("{at}.group"),
                        format!("unknown group \"{}\"", m.group),
                    ));
                }
                if let Some(who) = &m.default_assignee {
                    let Some(agent) = c.agents.iter().find(|a| &a.id == who) else {
                        return Err(invalid(
                            format!("{at}.default_assignee"),
                            format!("unknown agent \"{who}\""),
                        ));
                    };
                    if !agent.admin && !agent.groups.contains(&m.group) {
                        return Err(invalid(
                            format!("{at}.default_assignee"),
                            format!("agent \"{who}\" is not in group \"{}\"", m.group),
                        ));
                    }
                }
            }
        }
        if let Some(h) = self.operator_hash()
            && token_hashes.contains(&h)
        {
            return Err(invalid(
                "operator_token",
                "an agent has the same token; the operator's must be its own",
            ));
        }
        Ok(())
    }
}

/// Ids appear in URLs and on the wire: keep them short and plain.
/// An id of the config's alphabet: 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_offer_timeout(at: &str, d: Option<Duration>) -> Result<(), ConfigError> {
    match d {
        Some(d) if !OFFER_TIMEOUT.contains(&d) => {
            Err(invalid(format!("{at}.offer_timeout"), "must be 1 s to 1 h"))
        }
        _ => Ok(()),
    }
}

fn check_id(field: &str, id: &str) -> Result<(), ConfigError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.'",
        ))
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.redis_url.as_str();
        if !(url.starts_with("redis://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
        {
            return Err(invalid(
                "cluster.redis_url",
                "must be a redis:// URL (or redis+unix:// for a socket), e.g. redis://127.0.0.1:6379",
            ));
        }
        if redis::Client::open(url).is_err() {
            return Err(invalid("cluster.redis_url", "is not a valid Redis URL"));
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
        {
            return Err(invalid(
                "cluster.node_id",
                "must be 1 to 64 letters, digits or - _ . :",
            ));
        }
        if self.node_timeout < std::time::Duration::from_secs(3)
            || self.node_timeout > std::time::Duration::from_secs(3600)
        {
            return Err(invalid("cluster.node_timeout", "must be between 3s and 1h"));
        }
        if self.heartbeat < std::time::Duration::from_millis(10)
            || self.heartbeat > self.node_timeout / 3
        {
            return Err(invalid(
                "cluster.heartbeat",
                "must be between 10ms and a third of node_timeout",
            ));
        }
        if self.company_idle < std::time::Duration::from_secs(1)
            || self.company_idle > std::time::Duration::from_secs(86_400)
        {
            return Err(invalid(
                "cluster.company_idle",
                "must be between 1s and 24h",
            ));
        }
        if let Some(link) = self.link
            && link.ip().is_unspecified()
        {
            return Err(invalid(
                "cluster.link",
                "is the address other nodes connect to: give one they reach (not 0.0.0.0 or ::)",
            ));
        }
        Ok(())
    }
}
