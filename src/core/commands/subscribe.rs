//! `subscribe` and `unsubscribe`: a dashboard joins its company's stream
//! with a snapshot, or resumes where it left off. The start and the
//! registration are one effect, queued in the stream's order, so nothing
//! can slip in between.

use std::sync::Arc;

use chrono::Utc;

use crate::case::{Status, Terminal};
use crate::directory::Agent;
use crate::error::{Error, Result};
use crate::protocol::StreamPos;

use super::super::effect::{Effect, Filter, Start};
use super::super::record::Case;
use super::super::stream::Replay;
use super::super::{Broker, Conn};

impl Broker {
    /// `subscribe`: registers the connection on its company's stream,
    /// starting with `resumed` and the missed events or a `snapshot`.
    pub fn subscribe(
        &self,
        conn: &Conn,
        agent: &Agent,
        group: Option<String>,
        resume: Option<StreamPos>,
    ) -> Result<()> {
        let company = self.company(agent.company_index);
        let only = match &group {
            Some(g) => {
                let gi = company
                    .group(g)
                    .ok_or_else(|| Error::bad_request(format!("unknown group \"{g}\"")))?;
                if !agent.sees_index(gi) {
                    return Err(Error::forbidden("you are not a member of this group"));
                }
                Some(gi)
            }
            None => None,
        };
        let filter = Filter {
            groups: (!agent.admin).then(|| Arc::from(agent.group_indexes.as_slice())),
            only,
        };
        let mut cx = self.lock(agent.company_index);
        cx.conn(conn.id)?;
        let start = self.start(&cx, &company, &filter, resume.as_ref());
        if let Some(state) = cx.st.conns.get_mut(&conn.id) {
            state.subscribed = true;
        }
        cx.emit(Effect::Subscribe {
            conn: conn.id,
            filter,
            start,
        });
        Ok(())
    }

    /// Where a subscriber with `filter` starts: the events after `resume`
    /// when the stream still holds them, else a snapshot of the open and
    /// recently ended cases it may see.
    pub(crate) fn start(
        &self,
        cx: &super::super::shard::Locked<'_>,
        company: &crate::directory::Company,
        filter: &Filter,
        resume: Option<&StreamPos>,
    ) -> Start {
        let window = self.shared.config.snapshot_window;
        let replay = match resume {
            Some(pos) => cx.st.stream.replay(&pos.epoch, pos.seq, filter),
            None => Replay::Snapshot,
        };
        let (epoch, seq) = (cx.st.stream.epoch().clone(), cx.st.stream.seq());
        match replay {
            Replay::Events(events) => Start::Resumed { epoch, seq, events },
            Replay::Snapshot => {
                // The open cases and those ended within the window, of the
                // groups the filter lets through, from the indexes.
                let horizon = (Utc::now() - chrono::Duration::from_std(window).unwrap_or_default())
                    .timestamp_millis();
                let mut cases: Vec<&Case> = Vec::new();
                for g in (0..company.groups.len()).filter(|&g| filter.sees(g)) {
                    for status in [Status::New, Status::Pending, Status::InProgress] {
                        cases.extend(
                            cx.st
                                .index
                                .in_group(g, status, None)
                                .filter_map(|(_, code)| cx.st.cases.get(code)),
                        );
                    }
                    cases.extend(
                        cx.st
                            .index
                            .ended_since(g, horizon)
                            .filter_map(|code| cx.st.cases.get(code))
                            .filter(|c| match c.rec.terminal {
                                None => false,
                                Some(Terminal::Closed) => c
                                    .rec
                                    .closed_at
                                    .is_some_and(|t| t.timestamp_millis() >= horizon),
                                Some(Terminal::Expired) => {
                                    c.rec.expires_at.timestamp_millis() >= horizon
                                }
                            }),
                    );
                }
                cases.sort_by_key(|c| c.order());
                let cases = cases.into_iter().map(|c| c.view(company)).collect();
                Start::Snapshot { epoch, seq, cases }
            }
        }
    }

    /// Where an event feed page starts for `agent` (see [`Broker::start`]),
    /// without a subscription.
    pub fn feed_start(&self, agent: &Agent, resume: Option<&StreamPos>) -> Start {
        let company = self.company(agent.company_index);
        let filter = Filter {
            groups: (!agent.admin).then(|| Arc::from(agent.group_indexes.as_slice())),
            only: None,
        };
        let cx = self.lock(agent.company_index);
        self.start(&cx, &company, &filter, resume)
    }

    /// `unsubscribe`.
    pub fn unsubscribe(&self, conn: &Conn) {
        let Some(shard) = conn.shard() else {
            return;
        };
        let mut cx = self.lock(shard);
        if let Some(state) = cx.st.conns.get_mut(&conn.id)
            && std::mem::take(&mut state.subscribed)
        {
            cx.emit(Effect::Unsubscribe { conn: conn.id });
        }
    }
}
