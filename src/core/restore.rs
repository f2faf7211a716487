//! Bringing a company back from storage, and taking the image storage
//! keeps of it: the records changed since the last image, the stream's
//! epoch, seq and history, and the creation counter.

use crate::core::record::ExtBlob;
use std::sync::Arc;

use crate::case::SessionCode;

use super::Broker;
use super::change::{Change, Seat};
use super::effect::Event;
use super::record::CaseRecord;
use super::sink::Batch;
use super::stream::Stream;

/// What storage holds of one company, as of an image.
pub struct Image {
    pub epoch: String,
    pub seq: u64,
    pub next_line_seq: u64,
    pub history: Vec<Arc<Event>>,
    pub cases: Vec<CaseRecord>,
}

/// What changed in a company since its last image.
pub struct Capture {
    pub shard: usize,
    pub epoch: String,
    pub seq: u64,
    pub next_line_seq: u64,
    pub history: Vec<Arc<Event>>,
    /// Records written or changed since the last image.
    pub upserts: Vec<CaseRecord>,
    /// Codes removed since the last image.
    pub removed: Vec<SessionCode>,
    /// The journal position the image stands at, read under the lock.
    pub position: u64,
    /// The company's agent ids by index, as the records refer to them.
    pub agents: Vec<String>,
    /// The agents added through the admin API (deleted ones included, as
    /// former agents are), as they stand.
    pub api_agents: Vec<crate::directory::AgentRecord>,
    /// Webhook endpoints and pending deliveries.
    pub hooks: crate::webhook::StoredHooks,
    /// What cases hold beside their records (helpers, whispers), whole.
    pub ext: Vec<(SessionCode, ExtBlob)>,
    /// The company, when the operator added it through the admin API.
    pub company: Option<crate::directory::CompanyRecord>,
    /// The company's group ids by index, as the records refer to them.
    pub groups: Vec<String>,
    /// The groups added through the admin API (deleted ones included).
    pub api_groups: Vec<crate::directory::GroupRecord>,
    /// The module keys added through the admin API.
    pub api_modules: Vec<crate::directory::ModuleRecord>,
}

impl Broker {
    /// Rebuilds one company from its image (if any) and the journal's
    /// batches after it, which are applied as they were first applied, so
    /// their events take the same seqs. Nothing is delivered or recorded.
    pub fn restore(&self, shard: usize, image: Option<Image>, batches: Vec<Batch>) {
        let mut cx = self.lock(shard);
        cx.st.replaying = true;
        if let Some(image) = image {
            cx.st.stream = Stream::restored(
                image.epoch,
                image.seq,
                image.history,
                self.shared.config.history_events,
            );
            cx.st.next_line_seq = image.next_line_seq;
            cx.st.cases.reserve(image.cases.len());
            for rec in image.cases {
                cx.restore_case(rec);
            }
        }
        for batch in batches {
            if let Some(Change::Created(rec)) = batch.first() {
                cx.st.next_line_seq = cx.st.next_line_seq.max(rec.line_seq);
            }
            cx.apply_all(batch);
        }
        cx.st.replaying = false;
        cx.st.effects.clear();
    }

    /// After a restart nobody is connected: every seat that was held when
    /// the broker stopped is left, as changes with their events, so that
    /// statuses follow and dashboards that resume see it.
    pub fn release_seats(&self, shard: usize) {
        let mut cx = self.lock(shard);
        let mut held: Vec<(SessionCode, Seat, u64)> = Vec::new();
        for (code, c) in &cx.st.cases {
            held.extend(c.live.customer.iter().map(|&n| (*code, Seat::Customer, n)));
            held.extend(
                c.live
                    .supporter
                    .iter()
                    .map(|&n| (*code, Seat::Supporter, n)),
            );
            held.extend(c.live.helpers.iter().map(|&n| (*code, Seat::Helper, n)));
        }
        cx.leave_seats(held);
        for c in cx.st.cases.values_mut() {
            c.live.watchers.clear();
        }
        cx.st.conns.clear();
    }

    /// What changed in one company since its last image; `position` is
    /// called under the company's lock.
    pub fn capture(&self, shard: usize, position: impl FnOnce() -> u64) -> Capture {
        let mut cx = self.lock(shard);
        cx.capture(position)
    }

    /// Marks every case of a company changed, so the next image holds all.
    pub fn mark_all_dirty(&self, shard: usize) {
        let mut cx = self.lock(shard);
        let st = &mut *cx.st;
        st.dirty.extend(st.cases.keys().copied());
    }
}

impl super::shard::Locked<'_> {
    /// What the cases hold beside their records, in code order.
    pub fn stored_ext(&self) -> Vec<(SessionCode, ExtBlob)> {
        let mut out: Vec<(SessionCode, ExtBlob)> = self
            .st
            .with_ext
            .iter()
            .filter_map(|code| {
                let c = self.st.cases.get(code)?;
                (!c.ext.is_empty()).then(|| (*code, ExtBlob(c.ext.clone())))
            })
            .collect();
        out.sort_by_key(|(code, _)| *code);
        out
    }

    /// What changed in the company since its last image, under its lock.
    pub fn capture(&mut self, position: impl FnOnce() -> u64) -> Capture {
        let shard = self.shard;
        let cx = self;
        let dirty = std::mem::take(&mut cx.st.dirty);
        let mut upserts = Vec::new();
        let mut removed = Vec::new();
        for code in dirty {
            match cx.st.cases.get(&code) {
                Some(c) => upserts.push(c.rec.clone()),
                None => removed.push(code),
            }
        }
        Capture {
            shard,
            epoch: cx.st.stream.epoch().to_string(),
            seq: cx.st.stream.seq(),
            next_line_seq: cx.st.next_line_seq,
            history: cx.st.stream.history().cloned().collect(),
            upserts,
            removed,
            position: position(),
            agents: cx.company.agents.iter().map(|a| a.id.clone()).collect(),
            api_agents: cx
                .company
                .agents
                .iter()
                .filter(|a| a.from_api && !a.retired)
                .map(|a| a.record())
                .collect(),
            company: cx.company.from_api.then(|| cx.company.record()),
            hooks: cx.st.hooks.stored(),
            ext: cx.stored_ext(),
            groups: cx.company.groups.clone(),
            api_groups: cx.api_groups(),
            api_modules: cx.api_modules(),
        }
    }
}
