//! Limits that protect everyone from one client: connections per client
//! address, failed code joins per address with back-off, help requests per
//! address and per module, the alarm on failed joins overall, and which
//! address a request really comes from behind a trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use dashmap::DashMap;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::protocol::ErrorCode;

/// Back-off of one address after too many failed joins.
struct Backoff {
    until: Instant,
    /// How many times in a row the address was blocked; the block doubles.
    level: u32,
}

/// Failed joins counted over the current minute, for the alarm.
struct Window {
    start: Instant,
    failures: u64,
    warned: bool,
}

/// The shared limits.
pub struct Guard {
    conns_per_ip: DashMap<IpAddr, usize>,
    max_per_ip: usize,
    /// Tells how much of an address's failure budget is left, so the
    /// back-off starts with the failure that exhausts it.
    failed_joins: DefaultKeyedRateLimiter<IpAddr, StateInformationMiddleware>,
    backoff: DashMap<IpAddr, Backoff>,
    max_backoff: Duration,
    help_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    help_per_module: DefaultKeyedRateLimiter<String>,
    /// Each address's fair share of a module, honoured even when the
    /// module's limit is used up by others.
    help_fair: DefaultKeyedRateLimiter<(String, IpAddr)>,
    window: Mutex<Window>,
    alarm_per_minute: u64,
    trusted_proxies: Vec<IpAddr>,
    metrics: Metrics,
}

/// In the last tenth of the broker's capacity, an address that already
/// holds this many connections gets no more.
pub const RESERVE_PER_IP: usize = 2;

/// What the accept loop does with a new connection.
pub enum Admission {
    /// Counted for its address.
    Counted(ConnPermit),
    /// From a trusted proxy: counted at the upgrade, by forwarded address.
    Proxy,
    /// Its address holds too many.
    Refused,
}

/// A connection slot of one address; given back when dropped.
pub struct ConnPermit {
    guard: Arc<Guard>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        // Never two map calls in one expression: the entry guard is dropped
        // before `remove_if` takes the shard lock again.
        let now_zero = match self.guard.conns_per_ip.get_mut(&self.ip) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if now_zero {
            self.guard.conns_per_ip.remove_if(&self.ip, |_, n| *n == 0);
        }
    }
}

/// Help requests per minute that one address may make to a module even
/// when the module's limit (`help_per_module_per_minute`) is used up by
/// other addresses: a flood from many addresses cannot lock a new customer
/// out.
pub const HELP_FAIR_SHARE: u32 = 3;

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least one"))
}

impl Guard {
    pub fn new(config: &Config, metrics: Metrics) -> Guard {
        Guard {
            conns_per_ip: DashMap::new(),
            max_per_ip: config.max_connections_per_ip,
            failed_joins: RateLimiter::keyed(per_minute(config.failed_joins_per_minute))
                .with_middleware::<StateInformationMiddleware>(),
            backoff: DashMap::new(),
            max_backoff: config.max_join_backoff,
            help_per_ip: RateLimiter::keyed(per_minute(config.help_per_ip_per_minute)),
            help_per_module: RateLimiter::keyed(per_minute(config.help_per_module_per_minute)),
            help_fair: RateLimiter::keyed(per_minute(HELP_FAIR_SHARE)),
            window: Mutex::new(Window {
                start: Instant::now(),
                failures: 0,
                warned: false,
            }),
            alarm_per_minute: config.failed_join_alarm_per_minute,
            trusted_proxies: config.trusted_proxies.clone(),
            metrics,
        }
    }

    /// The client's address: the peer's, or, when the peer is a trusted
    /// proxy, the nearest untrusted address in `X-Forwarded-For`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        forwarded
            .iter()
            .rev()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer)
    }

    /// Takes a connection slot for `ip`, or `None` when it has them all.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        self.admit_up_to(ip, self.max_per_ip)
    }

    fn admit_up_to(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ConnPermit> {
        let mut n = self.conns_per_ip.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        drop(n);
        Some(ConnPermit {
            guard: self.clone(),
            ip,
        })
    }

    /// Counts a new TCP connection of `peer` (any HTTP connection), with
    /// `open` connections already open of `capacity`. Refused when the
    /// address holds `max_connections_per_ip`, or, in the last tenth of
    /// the capacity, when it already holds [`RESERVE_PER_IP`].
    pub fn admit_tcp(self: &Arc<Self>, peer: IpAddr, open: usize, capacity: usize) -> Admission {
        let ip = peer.to_canonical();
        if self.trusted_proxies.contains(&ip) {
            return Admission::Proxy;
        }
        let reserve = capacity / 10;
        let limit = if open >= capacity.saturating_sub(reserve) {
            self.max_per_ip.min(RESERVE_PER_IP)
        } else {
            self.max_per_ip
        };
        match self.admit_up_to(ip, limit) {
            Some(p) => Admission::Counted(p),
            None => Admission::Refused,
        }
    }

    /// Refuses a join from an address that is backing off. Checked before
    /// the code is looked up, so the answer says nothing about the code.
    pub fn check_join(&self, ip: IpAddr) -> Result<(), Error> {
        let wait = self
            .backoff
            .get(&ip)
            .map(|b| b.until.saturating_duration_since(Instant::now()));
        match wait {
            Some(wait) if !wait.is_zero() => {
                self.metrics.join_failed("rate_limited");
                Err(Error::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many failed joins from your address; retry in {} s",
                        (wait.as_millis() as u64).div_ceil(1000).max(1)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed join (`reason` is a metric label). Past the rate,
    /// the address backs off, doubling each time; past the alarm
    /// threshold overall, a warning is logged once a minute.
    pub fn join_failed(&self, ip: IpAddr, reason: &'static str) {
        self.metrics.join_failed(reason);
        self.count_for_alarm();
        match self.failed_joins.check_key(&ip) {
            Ok(left) if left.remaining_burst_capacity() > 0 => return,
            // This failure used up the budget (or it was already gone).
            _ => {}
        }
        let mut b = self.backoff.entry(ip).or_insert(Backoff {
            until: Instant::now(),
            level: 0,
        });
        b.level = (b.level + 1).min(20);
        let block = Duration::from_secs(1u64 << (b.level - 1).min(16)).min(self.max_backoff);
        b.until = Instant::now() + block;
    }

    // A successful join changes nothing: an address that guesses codes
    // between joins of its own case must not get its budget back. Its
    // back-off level is forgotten once it has been quiet for
    // `max_join_backoff` (`sweep`).

    fn count_for_alarm(&self) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.start.elapsed() >= Duration::from_secs(60) {
            *w = Window {
                start: Instant::now(),
                failures: 0,
                warned: false,
            };
            self.metrics.join_alarm(false);
        }
        w.failures += 1;
        if w.failures > self.alarm_per_minute && !w.warned {
            w.warned = true;
            self.metrics.join_alarm(true);
            tracing::warn!(
                failures = w.failures,
                threshold = self.alarm_per_minute,
                "failed code joins over the alarm threshold this minute: someone may be guessing codes"
            );
        }
    }

    /// `request_help` and `POST /v1/help`, limited per address first, then
    /// per module key (keys ship inside client apps, so they are public),
    /// each address keeping its fair share of the module. Pass
    /// the key only when it is a configured one, so that made-up keys
    /// cannot grow the map.
    pub fn check_help(&self, ip: IpAddr, known_module: Option<&str>) -> Result<(), Error> {
        let limited = || {
            Error::new(
                ErrorCode::RateLimited,
                "too many help requests; retry later",
            )
        };
        self.help_per_ip.check_key(&ip).map_err(|_| limited())?;
        match known_module {
            Some(key) => {
                let fair = self.help_fair.check_key(&(key.to_string(), ip)).is_ok();
                let module = self.help_per_module.check_key(&key.to_string()).is_ok();
                if module || fair {
                    Ok(())
                } else {
                    Err(limited())
                }
            }
            None => Ok(()),
        }
    }

    /// Forgets idle rate-limit state and finished back-offs, so the maps
    /// stay bounded by the recently active addresses.
    pub fn sweep(&self) {
        self.failed_joins.retain_recent();
        self.help_per_ip.retain_recent();
        self.help_per_module.retain_recent();
        self.help_fair.retain_recent();
        let now = Instant::now();
        self.backoff.retain(|_, b| b.until + self.max_backoff > now);
    }
}
