//! The checks against the restarted broker: every case of the round is
//! looked up (`GET /v1/cases/{code}`, its transcript when it has chat) and
//! judged against its log, and every case checked before is checked again
//! from the listing (`GET /v1/cases`), so a later crash cannot take back
//! what an earlier restart showed.

use std::collections::HashMap;

use anyhow::{Context, bail};
use serde_json::Value;

use casebroker_testkit::crash::{CaseLog, Seen, judge, transcript_lines};

use super::round::Run;
use crate::http::Http;

/// A case checked once, as it was then.
pub(super) struct Checked {
    log: CaseLog,
    seen: Seen,
    /// Its acknowledged changes that were found.
    recovered: u64,
}

impl Run {
    /// A case and (when it has chat) its transcript, as the admin sees
    /// them; `None` for 404.
    async fn seen(&self, http: &mut Http, code: &str, lines: bool) -> anyhow::Result<Option<Seen>> {
        let token = &self.opts.token;
        let r = http.get(&format!("/v1/cases/{code}"), token).await?;
        let case = match r.status {
            200 => r.json(),
            404 => return Ok(None),
            s => bail!("GET /v1/cases/{code}: {s} {}", r.text()),
        };
        let lines = if lines {
            self.transcript(http, code).await?
        } else {
            Vec::new()
        };
        Ok(Some(Seen::of(&case, lines)))
    }

    async fn transcript(
        &self,
        http: &mut Http,
        code: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let path = format!("/v1/cases/{code}/transcript");
        let r = http.get(&path, &self.opts.token).await?;
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.text());
        }
        Ok(transcript_lines(&r.json()))
    }

    /// Checks the round's cases against the restarted broker.
    pub(super) async fn check(&mut self, r: u32, logs: Vec<CaseLog>) -> anyhow::Result<()> {
        let mut http = Http::new(self.broker.addr);
        for log in logs {
            for op in log.acked() {
                self.t.acked.add(op);
            }
            self.t.unanswered += log.steps.iter().filter(|s| !s.acked).count() as u64;
            let Some(code) = log.code.clone() else {
                continue;
            };
            let seen = self
                .seen(&mut http, &code, log.has_chat())
                .await
                .with_context(|| format!("round {r}: checking {code}"))?;
            let v = judge(&log, seen.as_ref());
            self.t.recovered += v.acked - v.lost;
            self.t.beyond += u64::from(v.beyond);
            self.t.lost += v.lost;
            for why in v.losses {
                self.t.list_loss(format!("round {r}: {why}"));
            }
            for why in v.surprises {
                self.t.surprise(format!("round {r}: {why}"));
            }
            if let Some(seen) = seen {
                self.checked.insert(
                    code,
                    Checked {
                        log,
                        seen,
                        recovered: v.acked - v.lost,
                    },
                );
            }
        }
        Ok(())
    }

    /// Every case checked before must still be as it was: status and
    /// assignee from the listing, with `full` the transcripts too. Codes
    /// nobody was told of (creations whose answer the kill took) are
    /// counted.
    pub(super) async fn recheck(&mut self, r: u32, full: bool) -> anyhow::Result<()> {
        let mut http = Http::new(self.broker.addr);
        let mut all: HashMap<String, Value> = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/cases?limit=1000&cursor={c}"),
                None => "/v1/cases?limit=1000".to_string(),
            };
            let page = http.get(&path, &self.opts.token).await?;
            if page.status != 200 {
                bail!("GET {path}: {} {}", page.status, page.text());
            }
            let page = page.json();
            for c in page["cases"].as_array().into_iter().flatten() {
                if let Some(code) = c["code"].as_str() {
                    all.insert(code.to_string(), c.clone());
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut gone = Vec::new();
        let codes: Vec<String> = self.checked.keys().cloned().collect();
        for code in codes {
            let Some(c) = self.checked.get(&code) else {
                continue;
            };
            let what = c.log.name();
            let Some(case) = all.get(&code) else {
                let n = c.recovered;
                self.t.lose(
                    n,
                    format!("round {r}: {what}, checked in round {}, is gone: its {n} acknowledged changes are lost", c.log.round),
                );
                gone.push(code);
                continue;
            };
            let mut now = Seen::of(case, c.seen.lines.clone());
            if full && c.log.has_chat() {
                now.lines = self.transcript(&mut http, &code).await?;
            }
            if now != c.seen {
                let was = format!("{:?}", c.seen);
                let round = c.log.round;
                self.t.lose(
                    1,
                    format!("round {r}: {what} changed since its check in round {round}: it was {was}, now {now:?}"),
                );
                gone.push(code);
            }
        }
        for code in gone {
            self.checked.remove(&code);
        }
        for code in all.keys() {
            if !self.checked.contains_key(code) && self.orphans.insert(code.clone()) {
                self.t.unanswered_found += 1;
            }
        }
        Ok(())
    }
}
