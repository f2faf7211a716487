//! The idle connections themselves: [`Mix`], how many customers and
//! dashboards, split into shares for processes; opening a mix in this
//! process (a customer says hello, a dashboard says hello as an agent and
//! subscribes), and [`Kept`], the tasks that keep the sockets alive, reading
//! (and so answering the broker's pings) until told to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::report::Progress;
use crate::target::{Target, Ws};

/// Connections opened at once.
const OPEN_AT_ONCE: usize = 128;

/// How many connections of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mix {
    pub customers: usize,
    pub dashboards: usize,
}

impl Mix {
    pub fn total(&self) -> usize {
        self.customers + self.dashboards
    }

    /// Splits into shares of at most `per` connections, dashboards first.
    pub fn split(&self, per: usize) -> Vec<Mix> {
        let per = per.max(1);
        let mut left = *self;
        let mut out = Vec::new();
        while left.total() > 0 {
            let dashboards = left.dashboards.min(per);
            let customers = left.customers.min(per - dashboards);
            left.dashboards -= dashboards;
            left.customers -= customers;
            out.push(Mix {
                customers,
                dashboards,
            });
        }
        out
    }
}

/// Opens one idle connection: a customer (hello) or a dashboard (agent
/// hello + subscribe).
async fn open_one(target: &Target, token: &str, dashboard: bool) -> anyhow::Result<Ws> {
    let mut c = Client::connect(target).await?;
    if dashboard {
        c.hello_agent(token).await?;
        c.subscribe().await?;
    } else {
        c.hello_customer().await?;
    }
    Ok(c.into_inner())
}

/// Opens `mix` in this process; returns the sockets and the failures.
pub(super) async fn open_local(
    target: &Target,
    token: &str,
    mix: Mix,
    bar: Option<&Progress>,
) -> (Vec<Ws>, Vec<String>) {
    let mut held = Vec::with_capacity(mix.total());
    let mut failed = Vec::new();
    let mut opening = futures::stream::iter(0..mix.total())
        .map(|i| {
            let target = target.clone();
            let token = token.to_string();
            async move { open_one(&target, &token, i < mix.dashboards).await }
        })
        .buffer_unordered(OPEN_AT_ONCE);
    while let Some(r) = opening.next().await {
        match r {
            Ok(ws) => held.push(ws),
            Err(e) => failed.push(format!("{e:#}")),
        }
        if let Some(bar) = bar {
            bar.inc();
        }
    }
    (held, failed)
}

/// Keeps one idle connection alive: reads (and so answers the broker's
/// pings) until told to stop, then closes it. Counts a connection the
/// broker ended in `dropped`.
async fn keep(mut ws: Ws, stop: CancellationToken, dropped: Arc<AtomicU64>) {
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = stop.cancelled() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// Idle connections of this process, each kept by a task.
pub(super) struct Kept {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl Kept {
    pub(super) fn new(held: Vec<Ws>) -> Kept {
        let stop = CancellationToken::new();
        let dropped = Arc::new(AtomicU64::new(0));
        let tasks = held
            .into_iter()
            .map(|ws| tokio::spawn(keep(ws, stop.clone(), dropped.clone())))
            .collect();
        Kept {
            stop,
            tasks,
            dropped,
        }
    }

    pub(super) async fn close(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_fills_dashboards_first() {
        let m = Mix {
            customers: 5,
            dashboards: 4,
        };
        let parts = m.split(3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.dashboards).sum::<usize>(), 4);
        assert_eq!(parts.iter().map(|p| p.customers).sum::<usize>(), 5);
        assert!(parts.iter().all(|p| p.total() <= 3));
        assert!(Mix::default().split(10).is_empty());
    }
}
