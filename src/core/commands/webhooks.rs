//! Webhooks through the admin API (`/v1/admin/webhooks`), the deliveries
//! each event makes, and what the sender asks of the core: the heads due
//! now, and each attempt's outcome. Every step is a change of the company.

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::webhook::{self, Delivery, Outcome, Status, TYPES, WebhookRecord};

use super::super::Broker;
use super::super::change::Change;
use super::super::effect::Event;
use super::super::shard::Locked;
use crate::directory::Agent;

/// The most endpoints one company may have.
pub const MAX_ENDPOINTS: usize = 50;

/// `POST /v1/admin/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// `PATCH /v1/admin/webhooks/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub disabled: Option<bool>,
}

/// An endpoint as the admin API shows it (never its secret).
#[derive(Debug, Serialize)]
pub struct AdminWebhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub disabled: bool,
    /// Why the broker disabled it (a 410, a backlog), if it did.
    pub disabled_reason: Option<String>,
    /// Deliveries waiting to be sent.
    pub pending: usize,
    /// `config` (declared in the file) or `api`.
    pub source: &'static str,
}

/// A delivery as the log shows it.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub seq: u64,
    pub code: String,
    pub attempts: u32,
    pub status: Status,
    pub last_status_code: Option<u16>,
    /// When the next attempt is due (pending ones).
    pub next_attempt_at: Option<String>,
}

impl DeliveryView {
    fn of(d: &Delivery) -> DeliveryView {
        DeliveryView {
            message_id: d.message_id.clone(),
            kind: d.kind.clone(),
            seq: d.seq,
            code: d.code.to_string(),
            attempts: d.attempts,
            status: d.status,
            last_status_code: d.last_status_code,
            next_attempt_at: (d.status == Status::Pending).then(|| {
                chrono::DateTime::from_timestamp_millis(d.next_attempt_at)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            }),
        }
    }
}

/// One call for the sender to make.
#[derive(Debug, Clone)]
pub struct Send {
    pub id: u64,
    pub url: String,
    /// The secrets that sign it (two while a rotation overlaps).
    pub secrets: Vec<String>,
    pub message_id: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What a sender's turn took, and when to look again.
#[derive(Debug)]
pub struct Turn {
    pub sends: Vec<Send>,
    /// When the next head falls due (Unix ms; in the past when heads are
    /// due whose endpoints have all their calls in flight), if any is
    /// pending.
    pub next: Option<i64>,
}

/// What one attempt got back, for the sender to record.
#[derive(Debug)]
pub struct Answer {
    pub id: u64,
    /// Attempts made before this one.
    pub attempts: u32,
    /// `None`: no answer in time, or none at all.
    pub status_code: Option<u16>,
    /// The wait a 429 or 503 asked for.
    pub retry_after: Option<std::time::Duration>,
}

fn admin_only(agent: &Agent) -> Result<()> {
    if agent.admin {
        Ok(())
    } else {
        Err(Error::forbidden("only admins manage webhooks"))
    }
}

/// A change the config file must make.
fn declared(id: &str) -> Error {
    Error::conflict(format!(
        "webhook \"{id}\" is declared in the config file: change it there (the API may only disable and enable it)"
    ))
}

fn check_events(events: &[String]) -> Result<()> {
    if events.is_empty() || events.len() > TYPES.len() + 1 {
        return Err(Error::bad_request(
            "events must list event types, or [\"*\"]",
        ));
    }
    if let Some(bad) = events
        .iter()
        .find(|e| *e != "*" && !TYPES.contains(&e.as_str()))
    {
        return Err(Error::bad_request(format!(
            "events: unknown type \"{bad}\" (one of {}, or \"*\")",
            TYPES.join(", ")
        )));
    }
    Ok(())
}

fn check_description(d: &str) -> Result<()> {
    if d.chars().count() > 200 {
        return Err(Error::bad_request(
            "description must be at most 200 characters",
        ));
    }
    Ok(())
}

impl AdminWebhook {
    fn of(e: &WebhookRecord, pending: usize) -> AdminWebhook {
        AdminWebhook {
            id: e.id.clone(),
            url: e.url.clone(),
            events: e.events.clone(),
            description: e.description.clone(),
            disabled: e.disabled,
            disabled_reason: e.disabled_reason.clone(),
            pending,
            source: if e.from_config { "config" } else { "api" },
        }
    }
}

impl Broker {
    /// `GET /v1/admin/webhooks`.
    pub fn admin_webhooks(&self, viewer: &Agent) -> Result<Vec<AdminWebhook>> {
        admin_only(viewer)?;
        let cx = self.lock(viewer.company_index);
        let hooks = &cx.st.hooks;
        Ok(hooks
            .endpoints
            .iter()
            .map(|e| AdminWebhook::of(e, hooks.count(&e.id)))
            .collect())
    }

    /// `POST /v1/admin/webhooks`: the endpoint and its secret (shown once).
    pub fn admin_add_webhook(
        &self,
        viewer: &Agent,
        new: NewWebhook,
    ) -> Result<(AdminWebhook, String)> {
        self.writable()?;
        admin_only(viewer)?;
        webhook::check_url(&new.url, self.shared.config.webhook_allow_private)
            .map_err(Error::bad_request)?;
        check_events(&new.events)?;
        check_description(&new.description)?;
        let mut cx = self.lock(viewer.company_index);
        if cx.st.hooks.endpoints.len() >= MAX_ENDPOINTS {
            return Err(Error::conflict(format!(
                "a company has at most {MAX_ENDPOINTS} webhook endpoints"
            )));
        }
        let secret = webhook::new_secret();
        let rec = WebhookRecord {
            id: format!("wh_{}", hex::encode(rand::random::<[u8; 8]>())),
            url: new.url,
            events: new.events,
            description: new.description,
            disabled: false,
            disabled_reason: None,
            secret: secret.clone(),
            previous_secret: None,
            previous_until: 0,
            removed: false,
            from_config: false,
        };
        cx.apply(Change::WebhookSet(Box::new(rec.clone())));
        audit(viewer, "webhook_added", &rec.id, self);
        Ok((AdminWebhook::of(&rec, 0), secret))
    }

    /// `PATCH /v1/admin/webhooks/{id}`: enabling clears what disabled it.
    pub fn admin_update_webhook(
        &self,
        viewer: &Agent,
        id: &str,
        patch: WebhookPatch,
    ) -> Result<AdminWebhook> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let mut rec = cx
            .st
            .hooks
            .endpoint(id)
            .cloned()
            .ok_or_else(Error::not_found)?;
        if rec.from_config
            && (patch.url.is_some() || patch.events.is_some() || patch.description.is_some())
        {
            return Err(declared(id));
        }
        if let Some(url) = patch.url {
            webhook::check_url(&url, self.shared.config.webhook_allow_private)
                .map_err(Error::bad_request)?;
            rec.url = url;
        }
        if let Some(events) = patch.events {
            check_events(&events)?;
            rec.events = events;
        }
        if let Some(d) = patch.description {
            check_description(&d)?;
            rec.description = d;
        }
        if let Some(disabled) = patch.disabled {
            rec.disabled = disabled;
            if !disabled {
                rec.disabled_reason = None;
            }
        }
        cx.apply(Change::WebhookSet(Box::new(rec.clone())));
        audit(viewer, "webhook_changed", id, self);
        Ok(AdminWebhook::of(&rec, cx.st.hooks.count(id)))
    }

    /// `POST /v1/admin/webhooks/{id}/secret`: a new secret (shown once);
    /// the one before keeps signing beside it for a day.
    pub fn admin_webhook_secret(&self, viewer: &Agent, id: &str) -> Result<String> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let mut rec = cx.api_endpoint(id)?;
        let secret = webhook::new_secret();
        rec.previous_secret = Some(std::mem::replace(&mut rec.secret, secret.clone()));
        rec.previous_until = Utc::now().timestamp_millis() + webhook::ROTATION_OVERLAP_MS;
        cx.apply(Change::WebhookSet(Box::new(rec)));
        audit(viewer, "webhook_secret", id, self);
        Ok(secret)
    }

    /// `DELETE /v1/admin/webhooks/{id}`: its pending deliveries go too.
    pub fn admin_remove_webhook(&self, viewer: &Agent, id: &str) -> Result<()> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let mut rec = cx.api_endpoint(id)?;
        rec.removed = true;
        cx.apply(Change::WebhookSet(Box::new(rec)));
        audit(viewer, "webhook_deleted", id, self);
        Ok(())
    }

    /// `GET /v1/admin/webhooks/{id}/deliveries?status=`: pending ones,
    /// then the recent finished ones, newest first.
    pub fn admin_deliveries(
        &self,
        viewer: &Agent,
        id: &str,
        status: Option<Status>,
    ) -> Result<Vec<DeliveryView>> {
        admin_only(viewer)?;
        let cx = self.lock(viewer.company_index);
        let hooks = &cx.st.hooks;
        hooks.endpoint(id).ok_or_else(Error::not_found)?;
        let mut pending: Vec<&Delivery> = hooks
            .pending
            .values()
            .filter(|d| d.endpoint == id)
            .collect();
        pending.sort_by_key(|d| std::cmp::Reverse(d.id));
        let recent = hooks
            .recent
            .get(id)
            .into_iter()
            .flat_map(|r| r.iter().rev());
        Ok(pending
            .into_iter()
            .chain(recent)
            .filter(|d| status.is_none_or(|s| d.status == s))
            .take(super::super::hooks::RECENT + 100)
            .map(DeliveryView::of)
            .collect())
    }

    /// `POST /v1/admin/webhooks/{id}/replay`: the events after `after_seq`
    /// that the company's history still holds are sent again (with their
    /// `webhook-id`); returns how many were queued.
    pub fn admin_replay(&self, viewer: &Agent, id: &str, after_seq: u64) -> Result<usize> {
        self.writable()?;
        admin_only(viewer)?;
        let mut cx = self.lock(viewer.company_index);
        let rec = cx
            .st
            .hooks
            .endpoint(id)
            .cloned()
            .ok_or_else(Error::not_found)?;
        if rec.disabled {
            return Err(Error::conflict("the endpoint is disabled: enable it first"));
        }
        let events: Vec<_> = cx
            .st
            .stream
            .history()
            .filter(|e| e.seq > after_seq)
            .cloned()
            .collect();
        let mut queued = 0;
        for event in events {
            let kind = match event.action {
                crate::protocol::Action::Created => "case.created",
                crate::protocol::Action::Deleted => "case.deleted",
                crate::protocol::Action::Updated => "case.updated",
            };
            if rec.wants(kind) && cx.queue_one(&rec, kind, &event) {
                queued += 1;
            }
        }
        audit(viewer, "webhook_replayed", id, self);
        Ok(queued)
    }

    /// The sender's turn, under one taking of the company's lock: the
    /// answers that came back are recorded, then the heads due now are
    /// taken, each marked as being sent by this node until its attempt
    /// can no longer be running, and the time the next head falls due
    /// is read.
    pub fn webhook_turn(&self, shard: usize, max: usize) -> Turn {
        let answers = self.webhook_answers(shard);
        let config = &self.shared.config;
        let now = Utc::now().timestamp_millis();
        let mut cx = self.lock(shard);
        for answer in answers {
            cx.record_answer(&config.webhook_retry, now, answer);
        }
        let ids = cx.st.hooks.due_now(now, config.webhook_concurrency, max);
        let until = now + config.webhook_timeout.as_millis() as i64 + 5_000;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(d) = cx.st.hooks.pending.get(&id) else {
                continue;
            };
            let Some(e) = cx.st.hooks.endpoint(&d.endpoint) else {
                continue;
            };
            out.push(Send {
                id,
                url: e.url.clone(),
                secrets: e.signing_secrets(now),
                message_id: d.message_id.clone(),
                body: d.body.clone(),
                attempts: d.attempts,
            });
            cx.apply(Change::WebhookSending { id, until });
        }
        Turn {
            sends: out,
            next: cx.st.hooks.next_due(),
        }
    }

    /// Hands an attempt's answer to the sender, which records it at its
    /// next turn.
    pub fn webhook_answered(&self, shard: usize, answer: Answer) {
        let s = &self.shared.shards[shard];
        s.hook_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(answer);
        s.hooks_changed.notify_one();
    }

    /// True when answers wait to be recorded.
    pub fn webhook_answers_waiting(&self, shard: usize) -> bool {
        !self.shared.shards[shard]
            .hook_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Takes the answers waiting (the sender drops them when it cannot
    /// hold the company: the hold on those deliveries runs out and they
    /// are sent again).
    pub fn webhook_answers(&self, shard: usize) -> Vec<Answer> {
        std::mem::take(
            &mut *self.shared.shards[shard]
                .hook_answers
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Records the answers waiting now (at shutdown, when the sender no
    /// longer takes turns).
    pub fn webhook_record_answers(&self, shard: usize) {
        let answers = self.webhook_answers(shard);
        if answers.is_empty() {
            return;
        }
        let now = Utc::now().timestamp_millis();
        let mut cx = self.lock(shard);
        for answer in answers {
            cx.record_answer(&self.shared.config.webhook_retry, now, answer);
        }
    }

    /// When the company's next delivery is due (Unix ms), if any.
    pub fn webhook_next(&self, shard: usize) -> Option<i64> {
        self.lock(shard).st.hooks.next_due()
    }

    /// Resolves when deliveries of one company may have become due.
    pub async fn webhooks_changed(&self, shard: usize) {
        self.shared.shards[shard].hooks_changed.notified().await;
    }
}

fn audit(by: &Agent, what: &'static str, id: &str, broker: &Broker) {
    broker.shared.metrics.directory_changed(what);
    tracing::info!(company = %by.company, by = %by.id, webhook = %id, at = %Utc::now(), "webhooks: {what}");
}

impl Locked<'_> {
    /// Records an attempt's answer (`None`: no answer in time, or none
    /// at all) and, for `retry_after`, the wait the endpoint asked for.
    fn record_answer(&mut self, schedule: &[std::time::Duration], now: i64, answer: Answer) {
        let outcome = match answer.status_code {
            Some(c) if (200..300).contains(&c) => Outcome::Delivered,
            Some(410) => Outcome::Gone,
            _ => match schedule.get(answer.attempts as usize) {
                None => Outcome::GaveUp,
                Some(wait) => {
                    let wait = answer
                        .retry_after
                        .filter(|_| matches!(answer.status_code, Some(429 | 503)))
                        .map(|r| r.min(std::time::Duration::from_secs(24 * 3600)))
                        .unwrap_or(*wait);
                    Outcome::Retry(now + wait.as_millis() as i64)
                }
            },
        };
        let Some(endpoint) = self
            .st
            .hooks
            .pending
            .get(&answer.id)
            .map(|d| d.endpoint.clone())
        else {
            return;
        };
        self.apply(Change::WebhookAttempted {
            id: answer.id,
            status_code: answer.status_code,
            outcome,
        });
        if outcome == Outcome::Gone
            && let Some(mut rec) = self.st.hooks.endpoint(&endpoint).cloned()
        {
            rec.disabled = true;
            rec.disabled_reason = Some("the endpoint answered 410 Gone".into());
            tracing::warn!(company = %self.company.id, webhook = %rec.id, "a webhook endpoint answered 410: disabled");
            self.apply(Change::WebhookSet(Box::new(rec)));
        }
    }

    /// An endpoint the API may change: `not_found` for an unknown one,
    /// `conflict` for one the config file declares.
    fn api_endpoint(&self, id: &str) -> Result<WebhookRecord> {
        let rec = self
            .st
            .hooks
            .endpoint(id)
            .cloned()
            .ok_or_else(Error::not_found)?;
        if rec.from_config {
            return Err(declared(id));
        }
        Ok(rec)
    }

    /// Wakes the company's webhook sender.
    pub(crate) fn hooks_changed(&self) {
        if !self.st.replaying {
            self.shared.shards[self.shard].hooks_changed.notify_one();
        }
    }

    /// Queues the deliveries of a new event for the endpoints that want
    /// it. Decided here once; replayed and followed copies get the
    /// `WebhookQueued` changes themselves.
    pub(crate) fn queue_hooks(&mut self, kind: &'static str, event: &Event) {
        if self.st.replaying || self.st.following || self.st.hooks.endpoints.is_empty() {
            return;
        }
        let endpoints: Vec<WebhookRecord> = self
            .st
            .hooks
            .endpoints
            .iter()
            .filter(|e| e.wants(kind))
            .cloned()
            .collect();
        for e in endpoints {
            self.queue_one(&e, kind, event);
        }
    }

    /// Queues a `chat.message` delivery for the endpoints that named it.
    pub(crate) fn queue_chat_hooks(
        &mut self,
        code: crate::case::SessionCode,
        line: &crate::protocol::ChatLine,
    ) {
        if self.st.replaying || self.st.following || self.st.hooks.endpoints.is_empty() {
            return;
        }
        let endpoints: Vec<WebhookRecord> = self
            .st
            .hooks
            .endpoints
            .iter()
            .filter(|e| e.wants("chat.message"))
            .cloned()
            .collect();
        for e in endpoints {
            let (epoch, seq) = (self.st.stream.epoch().to_string(), self.st.stream.seq());
            let body = serde_json::json!({
                "type": "chat.message",
                "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": {"company": self.company.id, "epoch": epoch, "seq": seq,
                         "code": code.to_string(), "from": line.from, "text": line.text, "at": line.at},
            })
            .to_string();
            self.queue_body(&e, "chat.message", seq, code, body, None);
        }
    }

    /// Queues one event's delivery; an endpoint at its bound is disabled instead
    /// (nothing more is queued for it until it is enabled again).
    fn queue_one(&mut self, e: &WebhookRecord, kind: &str, event: &Event) -> bool {
        let body = webhook::case_body(kind, &self.company.id, &event.epoch, event.seq, &event.case);
        let message_id = format!("msg_{}_{}", event.epoch, event.seq);
        self.queue_body(e, kind, event.seq, event.case.code, body, Some(message_id))
    }

    /// Queues a body for an endpoint (with `message_id`, else one of its
    /// own), unless the endpoint is at its bound (then it is disabled).
    fn queue_body(
        &mut self,
        e: &WebhookRecord,
        kind: &str,
        seq: u64,
        code: crate::case::SessionCode,
        body: String,
        message_id: Option<String>,
    ) -> bool {
        let bound = self.shared.config.webhook_pending;
        if self.st.hooks.count(&e.id) >= bound {
            let mut rec = e.clone();
            rec.disabled = true;
            rec.disabled_reason = Some(format!(
                "{bound} deliveries were waiting (webhook_pending): enable it again, then replay"
            ));
            tracing::warn!(company = %self.company.id, webhook = %e.id, pending = bound, "a webhook endpoint fell too far behind: disabled");
            self.apply(Change::WebhookSet(Box::new(rec)));
            return false;
        }
        let id = self.st.hooks.next_id;
        let message_id =
            message_id.unwrap_or_else(|| format!("msg_{}_{}_{id}", self.st.stream.epoch(), seq));
        self.apply(Change::WebhookQueued(Box::new(Delivery {
            id,
            endpoint: e.id.clone(),
            message_id,
            kind: kind.to_string(),
            seq,
            code,
            body,
            attempts: 0,
            status: Status::Pending,
            last_status_code: None,
            next_attempt_at: Utc::now().timestamp_millis(),
        })));
        true
    }
}
