//! The live queue: snapshots, ordered events, resume, visibility, company
//! isolation, unsubscribe, shared serialisation and slow consumers
//! (PROTOCOL.md, "Streams and snapshots").

#[path = "queue/events.rs"]
mod events;
#[path = "queue/resume.rs"]
mod resume;
#[path = "queue/slow_consumers.rs"]
mod slow_consumers;
#[path = "queue/snapshot.rs"]
mod snapshot;
#[path = "queue/visibility.rs"]
mod visibility;

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::util::*;

/// Subscribes with `extra` fields merged into the command; returns the
/// `snapshot` reply (which must echo the command's id).
async fn subscribe(ws: &mut WsClient, extra: Value) -> Value {
    let mut cmd = json!({"type": "subscribe"});
    for (k, v) in extra.as_object().expect("extra is an object") {
        cmd[k] = v.clone();
    }
    let snap = ws.ok(cmd, "snapshot").await;
    assert!(
        snap["epoch"].as_str().is_some_and(|e| !e.is_empty()),
        "{snap}"
    );
    assert!(snap["seq"].is_u64(), "{snap}");
    assert!(snap["cases"].is_array(), "{snap}");
    snap
}

fn codes_in(snapshot: &Value) -> HashSet<String> {
    snapshot["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(code_of)
        .collect()
}

fn case_in<'a>(snapshot: &'a Value, code: &str) -> &'a Value {
    snapshot["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == code)
        .unwrap_or_else(|| panic!("{code} not in snapshot {snapshot}"))
}

/// The next queue event on `ws`.
async fn event(ws: &mut WsClient) -> Value {
    ws.wait_type("event").await
}

/// Creates a case in `group` as `ws`; returns the case.
async fn create(ws: &mut WsClient, group: &str) -> Value {
    create_case(ws, group).await
}

async fn assign(ws: &mut WsClient, code: &str, assignee: Value) -> Value {
    ws.ok(
        json!({"type": "assign", "code": code, "assignee": assignee}),
        "case",
    )
    .await["case"]
        .clone()
}

async fn close(ws: &mut WsClient, code: &str) -> Value {
    ws.ok(json!({"type": "close", "code": code}), "case").await["case"].clone()
}

async fn delete(ws: &mut WsClient, code: &str) {
    let r = ws
        .ok(json!({"type": "delete", "code": code}), "deleted")
        .await;
    assert_eq!(r["code"], code, "{r}");
}
