//! The admin dashboard of the crash scenario: it follows the company's
//! stream, counting events, gaps in `seq` and events of another epoch, and
//! after each restart subscribes again with `resume {epoch, seq}` from the
//! last event it saw.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use casebroker::protocol::{ClientMsg, ServerMsg, StreamPos};
use tokio::task::JoinHandle;

use super::WIND_DOWN;
use super::round::Run;
use super::workload::ask;
use crate::client::Client;
use crate::target::Target;

/// What the dashboard saw of the company's stream.
#[derive(Clone, Debug, Default)]
pub(super) struct Watch {
    pub(super) epoch: String,
    /// The last `seq` it processed.
    pub(super) seq: u64,
    events: u64,
    /// Events whose `seq` was not the previous one + 1.
    gaps: u64,
    /// Events of another epoch.
    wrong_epoch: u64,
    first_gap: Option<String>,
}

/// Reads the dashboard's stream until the connection ends.
fn follow(mut c: Client, w: Arc<Mutex<Watch>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match c.recv(Duration::from_secs(3600)).await {
                Ok(Ok(r)) => {
                    if let Some(ServerMsg::Event { epoch, seq, .. }) = r.msg {
                        let mut w = w.lock().expect("watch lock");
                        if epoch != w.epoch {
                            w.wrong_epoch += 1;
                        }
                        if seq != w.seq + 1 {
                            w.gaps += 1;
                            let why = format!("after seq {} came seq {seq}", w.seq);
                            w.first_gap.get_or_insert(why);
                        }
                        w.seq = seq;
                        w.events += 1;
                    }
                }
                _ => return,
            }
        }
    })
}

/// How `subscribe` answered.
pub(super) enum Answer {
    Resumed { epoch: String, seq: u64 },
    Snapshot { epoch: String, seq: u64 },
}

/// A new admin dashboard: `subscribe`, with `resume` when given.
pub(super) async fn subscribe(
    target: &Target,
    token: &str,
    resume: Option<StreamPos>,
) -> anyhow::Result<(Client, Answer)> {
    let mut c = Client::connect(target).await?;
    c.hello_agent(token).await?;
    let msg = ClientMsg::Subscribe {
        group: None,
        resume,
    };
    let answer = match ask(&mut c, "subscribe", msg).await? {
        ServerMsg::Resumed { epoch, seq } => Answer::Resumed { epoch, seq },
        ServerMsg::Snapshot { epoch, seq, .. } => Answer::Snapshot { epoch, seq },
        other => bail!("subscribe: expected resumed or snapshot, got {other:?}"),
    };
    Ok((c, answer))
}

impl Run {
    pub(super) fn start_dashboard(&mut self, c: Client, epoch: String, seq: u64) {
        let w = Arc::new(Mutex::new(Watch {
            epoch,
            seq,
            ..Watch::default()
        }));
        self.dash = Some((follow(c, w.clone()), w));
    }

    /// Waits for the dashboard to see its connection end; what it saw.
    pub(super) async fn end_dashboard(&mut self) -> Watch {
        let Some((task, w)) = self.dash.take() else {
            return Watch::default();
        };
        let abort = task.abort_handle();
        if tokio::time::timeout(WIND_DOWN, task).await.is_err() {
            abort.abort();
        }
        let w = w.lock().expect("watch lock").clone();
        self.events += w.events;
        self.gaps += w.gaps;
        self.wrong_epoch += w.wrong_epoch;
        if self.first_gap.is_none() {
            self.first_gap = w.first_gap.clone();
        }
        w
    }
}
