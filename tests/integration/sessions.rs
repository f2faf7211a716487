//! Sessions and seats: the status derived from the two seats and the pushes
//! it causes, the customer seat and its resume token, chat and signal relay,
//! takeover, concurrent claims, close, delete, expiry, manual assignment and
//! `request_help`.

#[path = "sessions/ending.rs"]
mod ending;
#[path = "sessions/manual_assignment.rs"]
mod manual_assignment;
#[path = "sessions/relay.rs"]
mod relay;
#[path = "sessions/reply_order.rs"]
mod reply_order;
#[path = "sessions/request_help.rs"]
mod request_help;
#[path = "sessions/seats.rs"]
mod seats;
#[path = "sessions/status.rs"]
mod status;
#[path = "sessions/takeover.rs"]
mod takeover;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::util::*;

/// Parses a wire time, checking the contract's form: RFC 3339 UTC with `Z`
/// and millisecond precision (`2024-05-01T12:34:56.789Z`).
fn wire_time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("a time, got {v}"));
    assert_eq!(s.len(), 24, "RFC 3339 with milliseconds: {s}");
    assert!(s.ends_with('Z'), "UTC with Z: {s}");
    assert_eq!(&s[19..20], ".", "millisecond precision: {s}");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

fn assert_status(v: &Value, code: &str, status: &str, customer: bool, supporter: bool) {
    assert_eq!(v["type"], "status", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], status, "{v}");
    assert_eq!(v["customer_connected"], customer, "{v}");
    assert_eq!(v["supporter_connected"], supporter, "{v}");
}

/// Waits for a `status` push with this status (earlier ones may precede
/// it), then drops everything received before a `pong`, so that the next
/// `status` read is one caused by what the test does next.
async fn settle_on(ws: &mut WsClient, code: &str, status: &str) {
    let st = ws
        .wait_for(status, |v| v["type"] == "status" && v["status"] == status)
        .await;
    assert_eq!(st["code"], code, "{st}");
    ws.sync().await;
    ws.clear();
}

fn is_ended(v: &Value, code: &str, reason: &str) -> bool {
    v["type"] == "ended" && v["code"] == code && v["reason"] == reason
}

fn is_hex_token(t: &Value) -> bool {
    t.as_str()
        .is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn has_type(msgs: &std::collections::VecDeque<Value>, ty: &str) -> bool {
    msgs.iter().any(|m| m["type"] == ty)
}

/// Waits for the customer connection to be closed with 1000 after an `ended`
/// with `reason`.
async fn expect_ended_and_closed(ws: &mut WsClient, code: &str, reason: &str) {
    let (how, seen) = ws.closed().await;
    assert_eq!(how, Closed::Code(1000), "seen before the close: {seen:?}");
    assert!(
        seen.iter().any(|v| is_ended(v, code, reason)),
        "no ended {reason} before the close: {seen:?}"
    );
}
