//! [`Run`], everything a run holds: its options, its agent connections,
//! the cases it created and has not deleted yet, the seated customers and
//! the token that releases them, the count of `queue` pushes, the failures
//! and the progress bar; with the pipelined steps on the run's connections
//! that create and delete cases and count refusals as failures.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use casebroker::protocol::ClientMsg;
use tokio_util::sync::CancellationToken;

use super::QueueDepthOpts;
use super::customers::Customer;
use super::pipeline::{Agent, Step, create, deal, deletes, step};
use crate::report::Progress;

/// Everything a run holds.
pub(super) struct Run {
    pub(super) opts: QueueDepthOpts,
    pub(super) agents: Vec<Agent>,
    /// Cases created with `create_case` and not deleted yet.
    pub(super) live: HashSet<String>,
    pub(super) customers: Vec<Customer>,
    /// Stops the customers' readers, which then close their sockets.
    pub(super) release: CancellationToken,
    pub(super) pushes: Arc<AtomicU64>,
    pub(super) failures: u64,
    pub(super) first_failure: Option<String>,
    pub(super) bar: Progress,
}

impl Run {
    pub(super) fn fail(&mut self, n: u64, why: impl FnOnce() -> String) {
        if n > 0 {
            self.failures += n;
            if self.first_failure.is_none() {
                self.first_failure = Some(why());
            }
        }
    }

    /// Counts a step's refusals as failures.
    fn absorb(&mut self, s: &Step) {
        let first = s.first_error.clone().unwrap_or_default();
        self.fail(s.errors, || first);
    }

    /// One pipelined step on the run's agent connections.
    pub(super) async fn step(
        &mut self,
        cmds: Vec<Vec<ClientMsg>>,
        expect: &str,
        until: Option<Instant>,
    ) -> anyhow::Result<Step> {
        let s = step(&mut self.agents, cmds, self.opts.window, expect, until).await?;
        self.absorb(&s);
        Ok(s)
    }

    /// Creates up to `names.len()` cases in the group (none after `until`).
    pub(super) async fn create(
        &mut self,
        names: Vec<String>,
        until: Option<Instant>,
    ) -> anyhow::Result<Step> {
        let group = self.opts.group.clone();
        let cmds = deal(
            names.into_iter().map(|n| create(&group, n)),
            self.agents.len(),
        );
        let s = self.step(cmds, "case", until).await?;
        self.live.extend(s.codes.iter().cloned());
        Ok(s)
    }

    /// Deletes cases this run created (none after `until`).
    pub(super) async fn delete(
        &mut self,
        codes: &[String],
        until: Option<Instant>,
    ) -> anyhow::Result<Step> {
        let cmds = deal(deletes(codes), self.agents.len());
        let s = self.step(cmds, "deleted", until).await?;
        for code in &s.codes {
            self.live.remove(code);
        }
        Ok(s)
    }
}
