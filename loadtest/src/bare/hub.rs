//! The state of `bare`'s one company (its stream, cases and subscribers)
//! and the commands of the protocol subset, with server.js's replies.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::crash::Rng;

/// The company id of `casebroker-load.toml` (and of server.js): with it an
/// event is the size of casebroker's, byte for byte.
const COMPANY: &str = "load";
/// How long a case lives, for its `expires_at` (as in server.js).
const EXPIRES_MS: u64 = 24 * 3600 * 1000;

/// One case, with server.js's fields.
#[derive(Clone, Debug)]
struct Case {
    code: String,
    group: String,
    name: String,
    description: String,
    created_by: String,
    assignee: Option<String>,
    closed: bool,
    created_at: String,
    updated_at: String,
    assigned_at: Option<String>,
    assigned_by: Option<String>,
    expires_at: String,
    closed_at: Option<String>,
    closed_by: Option<String>,
}

impl Case {
    /// The case object, fields in the order of casebroker's agent view.
    fn json(&self) -> String {
        let mut o = String::with_capacity(512);
        o.push_str("{\"code\":");
        str_json(&mut o, &self.code);
        o.push_str(",\"company\":\"");
        o.push_str(COMPANY);
        o.push_str("\",\"group\":");
        str_json(&mut o, &self.group);
        o.push_str(",\"name\":");
        str_json(&mut o, &self.name);
        o.push_str(",\"description\":");
        str_json(&mut o, &self.description);
        o.push_str(
            ",\"customer\":{\"name\":null,\"email\":null},\"source\":\"manual\",\"created_by\":",
        );
        str_json(&mut o, &self.created_by);
        o.push_str(",\"assignee\":");
        opt_json(&mut o, &self.assignee);
        o.push_str(",\"status\":");
        o.push_str(if self.closed { "\"closed\"" } else { "\"new\"" });
        o.push_str(",\"customer_connected\":false,\"supporter_connected\":false,\"created_at\":");
        str_json(&mut o, &self.created_at);
        o.push_str(",\"updated_at\":");
        str_json(&mut o, &self.updated_at);
        o.push_str(",\"assigned_at\":");
        opt_json(&mut o, &self.assigned_at);
        o.push_str(",\"assigned_by\":");
        opt_json(&mut o, &self.assigned_by);
        o.push_str(",\"expires_at\":");
        str_json(&mut o, &self.expires_at);
        o.push_str(",\"closed_at\":");
        opt_json(&mut o, &self.closed_at);
        o.push_str(",\"closed_by\":");
        opt_json(&mut o, &self.closed_by);
        o.push('}');
        o
    }
}

fn str_json(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings serialise"));
}

fn opt_json(out: &mut String, s: &Option<String>) {
    match s {
        Some(s) => str_json(out, s),
        None => out.push_str("null"),
    }
}

/// The company's state: its stream, its cases and its subscribers.
pub(super) struct Hub {
    epoch: String,
    seq: u64,
    cases: HashMap<String, Case>,
    subscribers: Vec<(u64, mpsc::UnboundedSender<Message>)>,
    rng: Rng,
}

impl Hub {
    pub(super) fn new(seed: u64) -> Hub {
        let mut rng = Rng::new(seed);
        Hub {
            epoch: format!("{:016x}", rng.next_u64()),
            seq: 0,
            cases: HashMap::new(),
            subscribers: Vec::new(),
            rng,
        }
    }

    /// A fresh code, `s12-345-678`.
    fn new_code(&mut self) -> String {
        loop {
            let d = self.rng.next_u64() % 100_000_000;
            let code = format!(
                "s{:02}-{:03}-{:03}",
                d / 1_000_000,
                d / 1000 % 1000,
                d % 1000
            );
            if !self.cases.contains_key(&code) {
                return code;
            }
        }
    }

    /// Stamps the change with the next `seq` and queues the same bytes to
    /// every subscriber. `case` is the case object's JSON.
    fn publish(&mut self, action: &str, case: &str) {
        self.seq += 1;
        let frame = format!(
            "{{\"type\":\"event\",\"epoch\":\"{}\",\"seq\":{},\"action\":\"{action}\",\"case\":{case}}}",
            self.epoch, self.seq
        );
        let frame = Utf8Bytes::from(frame);
        for (_, tx) in &self.subscribers {
            let _ = tx.send(Message::Text(frame.clone()));
        }
    }
}

/// One connection's state.
pub(super) struct Conn {
    id: u64,
    hello: bool,
    agent: bool,
    subscribed: bool,
    tx: mpsc::UnboundedSender<Message>,
}

impl Conn {
    /// A fresh connection whose messages go to `tx`.
    pub(super) fn new(id: u64, tx: mpsc::UnboundedSender<Message>) -> Conn {
        Conn {
            id,
            hello: false,
            agent: false,
            subscribed: false,
            tx,
        }
    }

    /// Ends its subscription, if any: the connection is gone.
    pub(super) fn leave(&mut self, hub: &Mutex<Hub>) {
        if self.subscribed {
            self.subscribed = false;
            let id = self.id;
            hub.lock()
                .expect("hub lock")
                .subscribers
                .retain(|(i, _)| *i != id);
        }
    }

    /// Queues a reply: `{"id":ID,` (when the command had one) + `body` + `}`.
    fn reply(&self, id: Option<&Value>, body: &str) {
        let text = match id {
            Some(id) => format!("{{\"id\":{id},{body}}}"),
            None => format!("{{{body}}}"),
        };
        let _ = self.tx.send(Message::text(text));
    }

    fn error(&self, id: Option<&Value>, code: &str, message: &str) {
        let mut body = format!("\"type\":\"error\",\"code\":\"{code}\",\"message\":");
        str_json(&mut body, message);
        self.reply(id, &body);
    }
}

/// A string field of a command, when it is a non-empty string (server.js's
/// `msg.x || default`).
fn field<'a>(msg: &'a Value, key: &str) -> Option<&'a str> {
    msg.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Handles one message; false when the connection is to be closed.
pub(super) fn handle(hub: &Mutex<Hub>, conn: &mut Conn, text: &str) -> bool {
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        conn.error(None, "bad_request", "malformed JSON");
        return true;
    };
    let id = msg.get("id");
    let kind = msg
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("undefined");
    if !conn.hello {
        if kind != "hello" {
            conn.error(id, "bad_request", "the first message must be a hello");
            let _ = conn.tx.send(Message::Close(Some(CloseFrame {
                code: 4502.into(),
                reason: "expected hello".into(),
            })));
            return false;
        }
        conn.hello = true;
        conn.agent = msg.get("role").and_then(Value::as_str) == Some("agent");
        if conn.agent {
            conn.reply(
                id,
                "\"type\":\"welcome\",\"role\":\"agent\",\"agent\":{\"id\":\"admin\",\
                 \"name\":\"Baseline admin\",\"company\":\"load\",\"groups\":[\"support\"],\
                 \"admin\":true}",
            );
        } else {
            conn.reply(id, "\"type\":\"welcome\",\"role\":\"customer\"");
        }
        return true;
    }
    if kind == "ping" {
        conn.reply(id, "\"type\":\"pong\"");
        return true;
    }
    if !conn.agent {
        conn.error(id, "forbidden", "agents only");
        return true;
    }
    let mut h = hub.lock().expect("hub lock");
    let code = msg.get("code").and_then(Value::as_str);
    match kind {
        "subscribe" => {
            if !conn.subscribed {
                conn.subscribed = true;
                h.subscribers.push((conn.id, conn.tx.clone()));
            }
            let cases: Vec<String> = h.cases.values().map(Case::json).collect();
            // Queued under the lock: no event can come between the
            // snapshot's seq and the subscription.
            conn.reply(
                id,
                &format!(
                    "\"type\":\"snapshot\",\"epoch\":\"{}\",\"seq\":{},\"cases\":[{}]",
                    h.epoch,
                    h.seq,
                    cases.join(",")
                ),
            );
        }
        "unsubscribe" => {
            if conn.subscribed {
                conn.subscribed = false;
                h.subscribers.retain(|(i, _)| *i != conn.id);
            }
            conn.reply(id, "\"type\":\"unsubscribed\"");
        }
        "create_case" => {
            let t = iso(now_ms());
            let assignee = field(&msg, "assignee").map(str::to_string);
            let c = Case {
                code: h.new_code(),
                group: field(&msg, "group").unwrap_or("support").to_string(),
                name: field(&msg, "name").unwrap_or("").to_string(),
                description: field(&msg, "description").unwrap_or("").to_string(),
                created_by: "admin".into(),
                assigned_at: assignee.as_ref().map(|_| t.clone()),
                assigned_by: assignee.as_ref().map(|_| "admin".to_string()),
                assignee,
                closed: false,
                created_at: t.clone(),
                updated_at: t,
                expires_at: iso(now_ms() + EXPIRES_MS),
                closed_at: None,
                closed_by: None,
            };
            let json = c.json();
            h.cases.insert(c.code.clone(), c);
            h.publish("created", &json);
            drop(h);
            conn.reply(id, &format!("\"type\":\"case\",\"case\":{json}"));
        }
        "assign" | "close" | "delete" => {
            let Some(c) = code.and_then(|code| h.cases.get_mut(code)) else {
                drop(h);
                conn.error(id, "not_found", "no such case");
                return true;
            };
            let t = iso(now_ms());
            let body = match kind {
                "assign" => {
                    c.assignee = field(&msg, "assignee").map(str::to_string);
                    c.assigned_at = c.assignee.as_ref().map(|_| t.clone());
                    c.assigned_by = c.assignee.as_ref().map(|_| "admin".to_string());
                    c.updated_at = t;
                    let json = c.json();
                    h.publish("updated", &json);
                    format!("\"type\":\"case\",\"case\":{json}")
                }
                "close" => {
                    if c.closed {
                        drop(h);
                        conn.error(id, "conflict", "the case is not open");
                        return true;
                    }
                    c.closed = true;
                    c.closed_at = Some(t.clone());
                    c.updated_at = t;
                    c.closed_by = Some("admin".into());
                    let json = c.json();
                    h.publish("updated", &json);
                    format!("\"type\":\"case\",\"case\":{json}")
                }
                _ => {
                    let code = c.code.clone();
                    let json = c.json();
                    h.cases.remove(&code);
                    h.publish("deleted", &json);
                    let mut body = String::from("\"type\":\"deleted\",\"code\":");
                    str_json(&mut body, &code);
                    body
                }
            };
            drop(h);
            conn.reply(id, &body);
        }
        other => {
            drop(h);
            conn.error(id, "bad_request", &format!("unknown type {other}"));
        }
    }
    true
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since 1970 as RFC 3339 UTC, milliseconds and `Z`
/// (JavaScript's `toISOString`).
fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use casebroker::protocol::{Action, Envelope, ServerMsg};

    #[test]
    fn times_are_iso_8601_with_milliseconds() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(iso(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    /// An event is byte for byte what casebroker would serialise for the
    /// same case, so both are the same size.
    #[test]
    fn events_are_serialised_as_casebroker_does() {
        let mut hub = Hub::new(7);
        let (tx, mut rx) = mpsc::unbounded_channel();
        hub.subscribers.push((1, tx));
        let t = iso(1_700_000_000_123);
        let c = Case {
            code: hub.new_code(),
            group: "support".into(),
            name: "load \"1\"".into(),
            description: String::new(),
            created_by: "admin".into(),
            assignee: Some("admin".into()),
            closed: true,
            created_at: t.clone(),
            updated_at: t.clone(),
            assigned_at: Some(t.clone()),
            assigned_by: Some("admin".into()),
            expires_at: iso(1_700_000_000_123 + EXPIRES_MS),
            closed_at: Some(t),
            closed_by: Some("admin".into()),
        };
        hub.publish("updated", &c.json());
        let Ok(Message::Text(frame)) = rx.try_recv() else {
            panic!("no event queued")
        };
        let env: Envelope<ServerMsg> = serde_json::from_str(&frame).unwrap();
        let ServerMsg::Event { seq, action, .. } = &env.msg else {
            panic!("{frame}")
        };
        assert_eq!((*seq, *action), (1, Action::Updated));
        assert_eq!(env.msg.to_text(None), frame.as_str());
    }
}
