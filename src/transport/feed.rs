//! `GET /v1/events`: the company's event stream for integrations, as
//! Server-Sent Events or one JSON page at a time, showing what the caller
//! may see. It is a dashboard's subscription without a WebSocket: the
//! same snapshot or exact resume, the same order, the same outbox bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use serde_json::{Value, json};

use super::http::{ApiResult, AuthAgent};
use super::routes::Route;
use crate::app::App;
use crate::core::Conn;
use crate::core::effect::Start;
use crate::delivery::{OutboxRx, Outgoing, event_frame};
use crate::directory::Agent;
use crate::error::Error;
use crate::protocol::StreamPos;

/// The longest a JSON page waits for its first event.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Events in one JSON page: default and most.
const PAGE: usize = 100;
const PAGE_MAX: usize = 1000;

pub fn routes() -> Vec<Route> {
    vec![Route::get("/v1/events", events)]
}

/// `<epoch>:<seq>`, as the feed's ids are written.
fn position(text: &str, field: &str) -> Result<StreamPos, Error> {
    let bad = || Error::bad_request(format!("{field} must be <epoch>:<seq>, as the feed's ids"));
    let (epoch, seq) = text.trim().rsplit_once(':').ok_or_else(bad)?;
    if epoch.is_empty() || epoch.len() > 64 {
        return Err(bad());
    }
    Ok(StreamPos {
        epoch: epoch.to_string(),
        seq: seq.parse().map_err(|_| bad())?,
    })
}

/// A feed's connection, let go when the request ends however it ends.
struct Reader {
    app: App,
    conn: Option<Conn>,
    rx: OutboxRx,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.app.disconnect_now(conn);
            self.app.broker.metrics().feed_reader(false);
        }
    }
}

/// What the feed shows of one outgoing message.
enum Item {
    /// `snapshot`: the start when the position is unknown or too old.
    Snapshot(Value),
    /// `resumed`: the position was exact; the missed events follow.
    Resumed,
    /// A queue event.
    Event(Value),
    /// Something only dashboards get (`agent`, `groups`).
    Other,
    /// The subscription ended (the reader was too slow: 4001; signed out:
    /// 4500; shutdown: 4000).
    End,
}

impl Reader {
    async fn open(app: &App, agent: Arc<Agent>, after: Option<StreamPos>) -> ApiResult<Reader> {
        app.fresh(agent.company_index).await?;
        let (conn, rx) = app.connect_feed(agent.clone());
        app.broker.metrics().feed_reader(true);
        let reader = Reader {
            app: app.clone(),
            conn: Some(conn),
            rx,
        };
        let conn = reader.conn.as_ref().expect("open");
        app.broker.subscribe(conn, &agent, None, after)?;
        Ok(reader)
    }

    fn item(out: Outgoing) -> Item {
        let frame = match out {
            Outgoing::Text(f) | Outgoing::Event(f, _) | Outgoing::Large(f, _) => f,
            Outgoing::Close(..) => return Item::End,
        };
        let Ok(v) = serde_json::from_slice::<Value>(frame.payload()) else {
            return Item::Other;
        };
        match v["type"].as_str() {
            Some("snapshot") => Item::Snapshot(v),
            Some("resumed") => Item::Resumed,
            Some("event") => Item::Event(v),
            _ => Item::Other,
        }
    }

    async fn next(&mut self) -> Item {
        match self.rx.recv().await {
            Some(out) => Reader::item(out),
            None => Item::End,
        }
    }

    fn try_next(&mut self) -> Option<Item> {
        self.rx.try_recv().map(Reader::item)
    }
}

/// `<epoch>:<seq>` of a snapshot, resumed or event message.
fn id_of(v: &Value) -> String {
    format!("{}:{}", v["epoch"].as_str().unwrap_or(""), v["seq"])
}

async fn events(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let field = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let after = match (last_event_id, field("after")) {
        (Some(id), _) => Some(position(id, "Last-Event-ID")?),
        (None, Some(a)) => Some(position(a, "after")?),
        (None, None) => None,
    };
    let limit = match field("limit") {
        None => PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| Error::bad_request(format!("limit must be 1 to {PAGE_MAX}")))?,
    };
    let wait = match field("wait") {
        None => Duration::ZERO,
        Some(w) => humantime::parse_duration(w)
            .ok()
            .filter(|d| *d <= MAX_WAIT)
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "wait must be a duration of at most {}s, like 25s",
                    MAX_WAIT.as_secs()
                ))
            })?,
    };
    let sse = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if sse {
        let reader = Reader::open(&app, agent, after).await?;
        Ok(stream(app, reader).into_response())
    } else {
        Ok(page(&app, agent, after, wait, limit).await?.into_response())
    }
}

/// Server-Sent Events until the client goes, the subscription ends or the
/// broker shuts down: `event: snapshot` first when the position was not
/// exact, then every event as `id: <epoch>:<seq>`, `event: <action>`.
fn stream(app: App, reader: Reader) -> impl IntoResponse {
    let shutdown = app.shutdown.clone();
    let events = futures::stream::unfold(reader, move |mut reader| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                let item = tokio::select! {
                    item = reader.next() => item,
                    _ = shutdown.cancelled() => return None,
                };
                let ev = match item {
                    Item::Snapshot(v) => SseEvent::default()
                        .id(id_of(&v))
                        .event("snapshot")
                        .data(v.to_string()),
                    Item::Event(v) => SseEvent::default()
                        .id(id_of(&v))
                        .event(v["action"].as_str().unwrap_or("updated"))
                        .data(v.to_string()),
                    Item::Resumed | Item::Other => continue,
                    Item::End => return None,
                };
                return Some((Ok::<_, std::convert::Infallible>(ev), reader));
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// One JSON page: the snapshot when the position was not exact, else the
/// events after it that the stream holds, at most `limit`; when there are
/// none yet, the first ones within `wait`.
async fn page(
    app: &App,
    agent: Arc<Agent>,
    after: Option<StreamPos>,
    wait: Duration,
    limit: usize,
) -> ApiResult<Json<Value>> {
    app.fresh(agent.company_index).await?;
    let (epoch, seq, held) = match app.broker.feed_start(&agent, after.as_ref()) {
        Start::Snapshot { epoch, seq, cases } => {
            let next = format!("{epoch}:{seq}");
            return Ok(Json(
                json!({"epoch": &*epoch, "snapshot": cases, "events": [], "next": next}),
            ));
        }
        Start::Resumed { epoch, seq, events } => (epoch, seq, events),
    };
    let mut events: Vec<Value> = held
        .iter()
        .take(limit)
        .map(|e| serde_json::from_slice(event_frame(e).payload()).unwrap_or(Value::Null))
        .collect();
    let mut next = match held.iter().take(limit).next_back() {
        Some(e) => format!("{}:{}", e.epoch, e.seq),
        None => format!("{epoch}:{seq}"),
    };
    if events.is_empty() && !wait.is_zero() {
        // Nothing yet: wait on the stream from here for the first events.
        let from = StreamPos {
            epoch: epoch.to_string(),
            seq,
        };
        let mut reader = Reader::open(app, agent, Some(from)).await?;
        let deadline = tokio::time::Instant::now() + wait;
        while events.len() < limit {
            let item = match reader.try_next() {
                Some(item) => item,
                None if events.is_empty() => {
                    match tokio::time::timeout_at(deadline, reader.next()).await {
                        Ok(item) => item,
                        Err(_) => break,
                    }
                }
                None => break,
            };
            match item {
                Item::Event(v) => {
                    next = id_of(&v);
                    events.push(v);
                }
                // The stream moved to another epoch meanwhile: the next
                // page starts with a snapshot.
                Item::Snapshot(_) | Item::End => break,
                Item::Resumed | Item::Other => {}
            }
        }
    }
    Ok(Json(
        json!({"epoch": &*epoch, "events": events, "next": next}),
    ))
}
