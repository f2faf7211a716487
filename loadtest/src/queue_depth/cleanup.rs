//! The clean-up after the measuring: [`Cleanup`], how it went, and
//! [`clean_up`], which, on fresh agent connections and within
//! [`cleanup_limit`], deletes every case the run created and releases the
//! waiting customers, so that repeated runs leave the broker as found.

use std::time::{Duration, Instant};

use super::pipeline::{Agent, deal, deletes};
use super::state::Run;
use super::{CHUNK, cleanup_limit};
use crate::report::thousands;

/// How the clean-up went.
#[derive(Default)]
pub(super) struct Cleanup {
    pub(super) deleted: u64,
    pub(super) left: u64,
    pub(super) secs: f64,
}

/// Deletes every case the run created and closes the customer sockets:
/// cases behind the customers first, then the customers leave, then their
/// cases go. Uses fresh agent connections. Not timed.
pub(super) async fn clean_up(run: &mut Run, fill: Duration) -> Cleanup {
    let started = Instant::now();
    let deadline = started + cleanup_limit(fill);
    let mut c = Cleanup::default();
    for a in std::mem::take(&mut run.agents) {
        a.close().await;
    }
    let mut agents = Vec::new();
    for _ in 0..run.opts.connections {
        match Agent::connect(&run.opts.target, &run.opts.token).await {
            Ok(a) => agents.push(a),
            Err(e) => {
                run.fail(1, || format!("clean-up connection: {e:#}"));
                break;
            }
        }
    }
    run.agents = agents;
    let total = run.live.len() + run.customers.len();
    run.bar.phase("cleaning up", total as u64);

    let mut codes: Vec<String> = run.live.iter().cloned().collect();
    codes.sort_unstable();
    let mut stopped = run.agents.is_empty();
    for chunk in codes.chunks(CHUNK) {
        if stopped || Instant::now() >= deadline {
            stopped = true;
            break;
        }
        match run.delete(chunk, Some(deadline)).await {
            Ok(s) => c.deleted += s.ok,
            Err(e) => {
                run.fail(1, || format!("clean-up: {e:#}"));
                stopped = true;
            }
        }
        run.bar
            .set(c.deleted, format!("{} deleted", thousands(c.deleted)));
    }

    run.release.cancel();
    let mut dropped = 0;
    let mut first = None;
    let customers = std::mem::take(&mut run.customers);
    let mut codes = Vec::with_capacity(customers.len());
    for cu in customers {
        match cu.task.await {
            Ok(None) => {}
            Ok(Some(why)) => {
                dropped += 1;
                first.get_or_insert(why);
            }
            Err(e) => {
                dropped += 1;
                first.get_or_insert(format!("customer task: {e}"));
            }
        }
        codes.push(cu.code);
    }
    run.fail(dropped, || first.unwrap_or_default());
    let mut left = 0;
    for chunk in codes.chunks(CHUNK) {
        if stopped || Instant::now() >= deadline {
            stopped = true;
            left += chunk.len() as u64;
            continue;
        }
        let cmds = deal(deletes(chunk), run.agents.len());
        match run.step(cmds, "deleted", Some(deadline)).await {
            Ok(s) => {
                c.deleted += s.ok;
                left += chunk.len() as u64 - s.ok;
            }
            Err(e) => {
                run.fail(1, || format!("clean-up: {e:#}"));
                stopped = true;
                left += chunk.len() as u64;
            }
        }
        run.bar
            .set(c.deleted, format!("{} deleted", thousands(c.deleted)));
    }
    c.left = left + run.live.len() as u64;
    if c.left > 0 {
        let n = c.left;
        run.fail(n, || format!("clean-up left {n} cases behind"));
    }
    for a in std::mem::take(&mut run.agents) {
        a.close().await;
    }
    c.secs = started.elapsed().as_secs_f64();
    c
}
