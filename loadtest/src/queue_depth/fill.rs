//! The fill that makes the group's queue deep: [`Fill`], how it went;
//! [`open_in_group`], which reads a group's open cases and how many wait
//! unassigned; and [`fill`], which seats the waiting customers, checks
//! they joined the group's line, then creates the other cases in
//! pipelined chunks within [`FILL_LIMIT`].

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Context, bail};
use casebroker::case::Status;
use casebroker::protocol::{ClientMsg, ServerMsg};
use futures::StreamExt;

use super::customers::{Customer, hold_customer, seat_customer};
use super::state::Run;
use super::{CHUNK, CONNECT_AT_ONCE, FILL_LIMIT};
use crate::client::Client;
use crate::report::{per_sec, thousands};
use crate::target::Target;

/// How the fill went.
#[derive(Default)]
pub(super) struct Fill {
    pub(super) customers: u64,
    pub(super) customer_secs: f64,
    pub(super) created: u64,
    pub(super) create_secs: f64,
    /// The bulk creation ran into [`FILL_LIMIT`].
    pub(super) hit_limit: bool,
}

impl Fill {
    pub(super) fn total(&self) -> u64 {
        self.customers + self.created
    }

    pub(super) fn secs(&self) -> f64 {
        self.customer_secs + self.create_secs
    }
}

/// The open cases of `group` (through a short-lived dashboard subscribed
/// to it) and how many of them wait unassigned.
pub(super) async fn open_in_group(
    target: &Target,
    token: &str,
    group: &str,
) -> anyhow::Result<(Vec<String>, usize)> {
    let mut c = Client::connect(target).await?;
    c.hello_agent(token).await?;
    let reply = c
        .request(
            "snapshot",
            ClientMsg::Subscribe {
                group: Some(group.to_string()),
                resume: None,
            },
        )
        .await
        .with_context(|| format!("subscribe to group {group}"))?;
    let ServerMsg::Snapshot { cases, .. } = reply else {
        bail!("subscribe: expected snapshot, got {reply:?}");
    };
    c.close().await;
    let mut codes = Vec::new();
    let mut waiting = 0;
    for c in cases
        .iter()
        .filter(|c| !matches!(c.status, Status::Closed | Status::Expired))
    {
        codes.push(c.code.to_string());
        waiting += usize::from(c.assignee.is_none());
    }
    Ok((codes, waiting))
}

/// Seats the waiting customers, checks they joined the group's line, then
/// creates the other cases.
pub(super) async fn fill(run: &mut Run, f: &mut Fill) -> anyhow::Result<()> {
    let o = run.opts.clone();
    run.bar.phase("filling", o.cases as u64);
    let started = Instant::now();
    let mut seating = futures::stream::iter(0..o.waiting)
        .map(|i| {
            let target = o.target.clone();
            let module = o.modules[i % o.modules.len()].clone();
            async move { seat_customer(&target, module, i).await }
        })
        .buffer_unordered(CONNECT_AT_ONCE);
    let mut failed = 0;
    let mut first = None;
    while let Some(r) = seating.next().await {
        match r {
            Ok((ws, code)) => {
                let task = tokio::spawn(hold_customer(ws, run.release.clone(), run.pushes.clone()));
                run.customers.push(Customer { code, task });
                f.customers += 1;
                run.bar.inc();
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| format!("seating a waiting customer: {e:#}"));
            }
        }
    }
    drop(seating);
    f.customer_secs = started.elapsed().as_secs_f64();
    run.fail(failed, || first.unwrap_or_default());
    if failed > 0 {
        bail!(
            "{failed} of {} waiting customers could not be seated",
            o.waiting
        );
    }
    if !run.customers.is_empty() {
        let (codes, _) = open_in_group(&o.target, &o.token, &o.group).await?;
        let in_group: HashSet<String> = codes.into_iter().collect();
        let elsewhere = run
            .customers
            .iter()
            .filter(|c| !in_group.contains(&c.code))
            .count();
        if elsewhere > 0 {
            bail!(
                "{elsewhere} waiting customers are not in group {}: the module keys {} \
                 must map to it (see casebroker-load.toml)",
                o.group,
                o.modules.join(",")
            );
        }
    }

    let started = Instant::now();
    let deadline = started + FILL_LIMIT;
    let to_create = o.cases - o.waiting;
    while (f.created as usize) < to_create {
        if Instant::now() >= deadline {
            f.hit_limit = true;
            let total = f.total();
            run.fail(1, || {
                format!(
                    "the fill stopped at its limit of {FILL_LIMIT:?} ({} of {} cases)",
                    thousands(total),
                    thousands(o.cases as u64)
                )
            });
            break;
        }
        let n = CHUNK.min(to_create - f.created as usize);
        let base = f.created;
        let names = (0..n as u64)
            .map(|i| format!("queue-depth fill {}", base + i + 1))
            .collect();
        let s = run.create(names, Some(deadline)).await?;
        if s.ok == 0 && Instant::now() < deadline {
            bail!(
                "create_case in group {} created no case: {}",
                o.group,
                s.first_error.unwrap_or_default()
            );
        }
        f.created += s.ok;
        f.create_secs = started.elapsed().as_secs_f64();
        run.bar.set(
            f.total(),
            format!(
                "{} cases ({})",
                thousands(f.total()),
                per_sec(f.created as f64 / f.create_secs.max(1e-3))
            ),
        );
    }
    f.create_secs = started.elapsed().as_secs_f64();
    Ok(())
}
