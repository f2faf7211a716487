//! The broker's core: the state of every company and its only writer. No
//! socket, frame or HTTP type lives here.
//!
//! - Each company is a [`shard`] with its own lock: its cases, waiting
//!   lines, stream, deadlines and the live state of its agents. Commands of
//!   two companies never wait on each other.
//! - Commands ([`commands`]) check permissions and decide; what they decide
//!   is a [`change::Change`], applied by [`apply`], the one writer
//!   of case records, which yields [`effect::Effect`]s as plain data.
//! - When a command is done, its shard hands the changes and effects, in
//!   order, to its [`Sink`] while still holding the lock: delivered at once
//!   ([`Direct`]), or journaled and released once on disk. Either way every
//!   subscriber sees a company's events in `seq` order. A shared backend
//!   attaches at the same point.

pub mod apply;
pub mod assignment;
pub mod change;
pub mod commands;
pub mod effect;
pub mod hooks;
pub mod index;
pub mod limits;
pub mod line;
pub mod policy;
pub mod record;
pub mod replica;
pub mod restore;
pub mod shard;
pub mod sink;
pub mod stats;
pub mod stream;
pub mod timers;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::case::SessionCode;
use crate::config::Config;
use crate::directory::{Agent, Company, Directory};
use crate::metrics::Metrics;
use crate::protocol::Role;

pub use commands::{ListQuery, Page, Who, parse_code};
pub use effect::Effect;
pub use effect::{ConnId, Deliver};
use shard::{Locked, Shard, ShardState, Shared};
pub use sink::{Ack, Direct, STORE_WAIT, Sink, stored, take_ack};

/// A handle to the broker's core. Clone it freely.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

/// A handle that does not keep the broker alive.
#[derive(Clone)]
pub struct WeakBroker(std::sync::Weak<Shared>);

impl WeakBroker {
    pub fn upgrade(&self) -> Option<Broker> {
        self.0.upgrade().map(|shared| Broker { shared })
    }
}

/// A live connection as the core knows it. Owned by the connection's task
/// and passed to every command it sends.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub role: Role,
    pub agent: Option<Arc<Agent>>,
    /// The shard of the case a customer connection last joined.
    shard: AtomicUsize,
    /// Reads the company's events for an integration (`GET /v1/events`):
    /// never online, never a seat.
    feed: bool,
}

const NO_SHARD: usize = usize::MAX;

impl Conn {
    /// The shard this connection's seats are in, if it has any.
    pub(crate) fn shard(&self) -> Option<usize> {
        match &self.agent {
            Some(a) => Some(a.company_index),
            None => Some(self.shard.load(Ordering::Acquire)).filter(|&s| s != NO_SHARD),
        }
    }

    pub(crate) fn set_shard(&self, shard: usize) {
        self.shard.store(shard, Ordering::Release);
    }
}

impl Broker {
    /// A broker for a validated config, handing what its commands do to
    /// `sink`.
    pub fn new(config: Config, metrics: Metrics, sink: Arc<dyn Sink>) -> Broker {
        let dir = Directory::new(&config);
        let companies = dir.companies();
        let shards = (0..config.company_slots())
            .map(|i| {
                let mut state = match companies.get(i) {
                    Some(c) => ShardState::new(c, config.history_events),
                    None => ShardState::sized(0, 0, config.history_events),
                };
                state.lines.set_period(config.position_interval);
                Shard {
                    state: Mutex::new(state),
                    timers_changed: Notify::new(),
                    hooks_changed: Notify::new(),
                    hook_answers: Mutex::new(Vec::new()),
                }
            })
            .collect();
        Broker {
            shared: Arc::new(Shared {
                dir: arc_swap::ArcSwap::from_pointee(dir),
                config,
                metrics,
                journaled: sink.journaled() || sink.replicated(),
                replicated: sink.replicated(),
                sink,
                codes: DashMap::new(),
                next_conn: AtomicU64::new(1),
                shards,
                adding: Mutex::new(()),
                on_company: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Who exists now (a snapshot: the directory may change meanwhile).
    pub fn directory(&self) -> Arc<Directory> {
        self.shared.dir.load_full()
    }

    pub fn downgrade(&self) -> WeakBroker {
        WeakBroker(Arc::downgrade(&self.shared))
    }

    /// Has `hook` called with each company added at run time, once it
    /// exists (its deadlines need a task).
    pub fn on_company(&self, hook: impl Fn(usize) + Send + Sync + 'static) {
        let _ = self.shared.on_company.set(Box::new(hook));
    }

    /// The number of companies (each its shard; deleted ones included).
    pub fn shards(&self) -> usize {
        self.shared.dir.load().companies().len()
    }

    /// The agent a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Agent>> {
        self.shared.dir.load().authenticate(token)
    }

    /// Locks one company. A panic while it was held leaves the shard as the
    /// panicking command left it; serving on beats taking the company down.
    fn lock(&self, shard: usize) -> Locked<'_> {
        let s = &self.shared.shards[shard];
        let st = s.state.lock().unwrap_or_else(|p| p.into_inner());
        Locked::new(st, &self.shared, shard)
    }

    fn company(&self, shard: usize) -> Arc<Company> {
        self.shared.dir.load().companies()[shard].clone()
    }

    /// `unavailable` while changes cannot be stored.
    fn writable(&self) -> crate::error::Result<()> {
        if self.shared.sink.available() {
            Ok(())
        } else {
            Err(crate::error::Error::new(
                crate::protocol::ErrorCode::Unavailable,
                "changes cannot be stored right now; retry later",
            ))
        }
    }

    /// True when changes are journaled (and replies wait for the disk).
    pub fn journaled(&self) -> bool {
        self.shared.journaled
    }

    /// True while changes can be stored (for `/healthz`).
    pub fn available(&self) -> bool {
        self.shared.sink.available()
    }

    /// The shard holding `code`, if any.
    fn shard_of(&self, code: &SessionCode) -> Option<usize> {
        self.shared.codes.get(code).map(|s| *s)
    }
}
