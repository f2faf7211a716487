//! Read-only commands: one case, its transcript, a page of cases, counts.
//! Each reads one company through its indexes; none walks every case.

use crate::case::{CaseView, SessionCode, Status};
use crate::directory::Agent;
use crate::error::{Error, Result};
use serde::Serialize;

use crate::protocol::ChatLine;

use super::super::Broker;
use super::super::index::Order;
use super::{limits, parse_code};

/// Filters and paging of `GET /v1/cases`.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub group: Option<String>,
    pub assignee: Option<String>,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// One page of cases.
pub struct Page {
    pub cases: Vec<CaseView>,
    pub next_cursor: Option<String>,
}

/// A line of a transcript: `internal` for an agents-only one.
#[derive(Debug, Serialize)]
pub struct TranscriptLine {
    #[serde(flatten)]
    pub line: ChatLine,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
}

impl Broker {
    /// `GET /v1/cases/{code}/routing`: why automation gave the case to
    /// whom, oldest first (empty for a case it never assigned).
    pub fn routing(&self, agent: &Agent, code: &str) -> Result<Vec<crate::core::record::Decision>> {
        let code = parse_code(code)?;
        let cx = self.lock(agent.company_index);
        let c = super::supervise::visible_to_helper(cx.st.cases.get(&code), agent)
            .or_else(|_| cx.visible(&code, agent))?;
        Ok(c.ext.routing.iter().cloned().collect())
    }

    /// `GET /v1/stats`: the live numbers of the groups the caller sees
    /// (not deleted), in the company's order. Each group costs the same
    /// whatever the length of its line.
    pub fn stats(&self, agent: &Agent) -> Vec<crate::protocol::GroupStats> {
        let company = self.company(agent.company_index);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut cx = self.lock(agent.company_index);
        company
            .visible_groups(agent)
            .into_iter()
            .filter(|&g| !company.group_info[g].removed)
            .map(|g| cx.group_stats(g, now_ms))
            .collect()
    }

    /// `GET /v1/cases/{code}`.
    pub fn get_case(&self, agent: &Agent, code: &str) -> Result<CaseView> {
        let code = parse_code(code)?;
        let cx = self.lock(agent.company_index);
        Ok(cx.visible(&code, agent)?.view(&cx.company))
    }

    /// `GET /v1/cases/{code}/transcript`: the kept chat lines and the
    /// agents' internal ones (marked), oldest first. Helpers may read it.
    pub fn transcript(
        &self,
        agent: &Agent,
        code: &str,
    ) -> Result<(SessionCode, Vec<TranscriptLine>)> {
        let code = parse_code(code)?;
        let cx = self.lock(agent.company_index);
        let c = super::supervise::visible_to_helper(cx.st.cases.get(&code), agent)
            .or_else(|_| cx.visible(&code, agent))?;
        let said = c.rec.transcript.iter().map(|l| (l, false));
        let whispered = c.ext.whispers.iter().map(|l| (l, true));
        let mut lines: Vec<TranscriptLine> = said
            .chain(whispered)
            .map(|(line, internal)| TranscriptLine {
                line: line.clone(),
                internal,
            })
            .collect();
        // RFC 3339 in UTC with milliseconds: text order is time order.
        lines.sort_by(|a, b| a.line.at.cmp(&b.line.at));
        Ok((code, lines))
    }

    /// `GET /v1/cases`: the caller's visible cases, oldest first, paged.
    /// Reads at most `limit + 1` cases from each index slot it needs (one
    /// per visible group and status, or the assignee's), after the cursor.
    pub fn list_cases(&self, agent: &Agent, q: &ListQuery) -> Result<Page> {
        let after = match &q.cursor {
            None => None,
            Some(c) => Some(decode_cursor(c)?),
        };
        let limit = q.limit.clamp(1, limits::PAGE_MAX);
        let company = self.company(agent.company_index);
        let mut groups = company.visible_groups(agent);
        if let Some(g) = &q.group {
            groups.retain(|&gi| company.groups[gi] == *g);
        }
        let statuses: Vec<Status> = match q.status {
            Some(s) => vec![s],
            None => Status::ALL.to_vec(),
        };
        let cx = self.lock(agent.company_index);
        let mut rows: Vec<Order> = Vec::new();
        match &q.assignee {
            Some(id) => {
                let Some(a) = company.agent(id) else {
                    return Ok(Page {
                        cases: Vec::new(),
                        next_cursor: None,
                    });
                };
                rows.extend(
                    cx.st
                        .index
                        .of_assignee(a.index, after)
                        .filter(|(_, code)| {
                            cx.st.cases.get(code).is_some_and(|c| {
                                groups.contains(&c.rec.group) && statuses.contains(&c.status())
                            })
                        })
                        .take(limit + 1),
                );
            }
            None => {
                for &g in &groups {
                    for &s in &statuses {
                        rows.extend(cx.st.index.in_group(g, s, after).take(limit + 1));
                    }
                }
            }
        }
        rows.sort();
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = more
            .then(|| {
                rows.last()
                    .map(|(t, code)| format!("{t}.{}", code.digits()))
            })
            .flatten();
        let cases = rows
            .iter()
            .filter_map(|(_, code)| cx.st.cases.get(code))
            .map(|c| c.view(&company))
            .collect();
        Ok(Page { cases, next_cursor })
    }

    /// Counts cases by status across every company, for the metrics gauge.
    pub fn count_by_status(&self) -> Vec<(Status, usize)> {
        let mut counts = [0usize; 5];
        for shard in 0..self.shards() {
            let cx = self.lock(shard);
            for (i, s) in Status::ALL.into_iter().enumerate() {
                counts[i] += cx.st.index.count(s);
            }
        }
        Status::ALL.into_iter().zip(counts).collect()
    }
}

fn decode_cursor(c: &str) -> Result<Order> {
    let bad = || Error::bad_request("invalid cursor");
    let (t, digits) = c.split_once('.').ok_or_else(bad)?;
    let t = t.parse().map_err(|_| bad())?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let code = SessionCode::parse(digits).ok_or_else(bad)?;
    Ok((t, code))
}
