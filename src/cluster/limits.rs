//! Limits shared by every node, so that adding nodes does not multiply
//! what one client may try: failed code joins per address with their
//! doubling back-off, and help requests per address and per module key.
//! Each node's own limits still apply as well.
//!
//! Counters live in Redis with a one-minute window and expire by
//! themselves; while Redis cannot answer, the node's own limits decide
//! (and every change is refused with `unavailable` anyway).

use std::net::IpAddr;
use std::time::Duration;

use redis::AsyncCommands;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::protocol::ErrorCode;
use crate::transport::guard::HELP_FAIR_SHARE;

use super::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

/// Records a failed join and starts or doubles the address's back-off
/// once the minute's budget is used up. KEYS: failures, level, block.
/// ARGV: failures per minute, longest block ms. Returns the block in ms
/// (0: none yet).
pub(super) const JOIN_FAILED: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 60000) end
if n < tonumber(ARGV[1]) then return 0 end
local level = redis.call('INCR', KEYS[2])
if level > 20 then level = 20; redis.call('SET', KEYS[2], 20) end
redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[2]))
local block = math.min(1000 * 2 ^ math.min(level - 1, 16), tonumber(ARGV[2]))
redis.call('SET', KEYS[3], level, 'PX', math.floor(block))
return math.floor(block)
";

fn key(what: &str, id: &str) -> String {
    format!("casebroker:limit:{what}:{id}")
}

impl Cluster {
    /// `rate_limited` while `ip` backs off after failed joins on any node.
    pub async fn check_join(&self, ip: IpAddr) -> Result<()> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> = conn.pttl(key("join-block", &ip.to_string())).await;
        self.saw(&r);
        match r {
            Ok(ms) if ms > 0 => Err(Error::new(
                ErrorCode::RateLimited,
                format!(
                    "too many failed joins from your address; retry in {} s",
                    (ms as u64).div_ceil(1000).max(1)
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Counts a failed join of `ip` for every node.
    pub async fn join_failed(&self, ip: IpAddr, config: &Config) {
        let ip = ip.to_string();
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> = self
            .scripts
            .join_failed
            .key(key("join-fail", &ip))
            .key(key("join-level", &ip))
            .key(key("join-block", &ip))
            .arg(config.failed_joins_per_minute)
            .arg(config.max_join_backoff.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        self.saw(&r);
    }

    /// `request_help` and `POST /v1/help` across the nodes: per address,
    /// and per module key when it is a configured one.
    pub async fn check_help(
        &self,
        ip: IpAddr,
        known_module: Option<&str>,
        config: &Config,
    ) -> Result<()> {
        let limited = || {
            Error::new(
                ErrorCode::RateLimited,
                "too many help requests; retry later",
            )
        };
        let per_ip = self.count(&format!("help-ip:{ip}"), MINUTE).await;
        if per_ip.is_some_and(|n| n > u64::from(config.help_per_ip_per_minute)) {
            return Err(limited());
        }
        if let Some(module) = known_module {
            // Within its fair share an address gets through even when the
            // module's limit is used up by others.
            let fair = self
                .count(&format!("help-fair:{module}:{ip}"), MINUTE)
                .await
                .is_none_or(|n| n <= u64::from(HELP_FAIR_SHARE));
            let per_module = self.count(&format!("help-module:{module}"), MINUTE).await;
            if per_module.is_some_and(|n| n > u64::from(config.help_per_module_per_minute)) && !fair
            {
                return Err(limited());
            }
        }
        Ok(())
    }

    /// Counts one event of a shared limit; `None` while Redis cannot say.
    pub async fn count(&self, key: &str, window: Duration) -> Option<u64> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<u64> = self
            .scripts
            .count
            .key(format!("casebroker:limit:{key}"))
            .arg(window.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        self.saw(&r);
        r.ok()
    }
}
