//! Cases and the queue as tests use them: creating a case, asking for
//! help, reading a case's `code` and `seq`, reading it (or all of them)
//! over HTTP, waiting
//! past the pushes outside the event order, resuming a subscription, and
//! checking an HTTP error.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::ALICE;
use super::endpoint::Endpoint;
use super::ws::WsClient;

/// Creates a case over WebSocket as `ws` (an agent) in `group`; returns the
/// case object.
pub async fn create_case(ws: &mut WsClient, group: &str) -> Value {
    let reply = ws
        .ok(
            json!({"type": "create_case", "group": group, "name": "Printer down"}),
            "case",
        )
        .await;
    reply["case"].clone()
}

/// `POST /v1/cases` with `body` as `token`, asserting 201; returns the
/// case.
pub async fn create_over_http(at: &Endpoint, token: &str, body: Value) -> Value {
    let (status, case) = at
        .http("POST", "/v1/cases", Some(token), Some(body.clone()))
        .await;
    assert_eq!(status, 201, "POST /v1/cases {body} -> {case}");
    case
}

/// A customer connection that asked for help through `module`; returns the
/// connection and the `joined` reply.
pub async fn request_help(server: &Endpoint, module: &str) -> (WsClient, Value) {
    let mut c = server.customer().await;
    let joined = c
        .ok(
            json!({"type": "request_help", "module": module, "name": "Ana"}),
            "joined",
        )
        .await;
    (c, joined)
}

/// The `code` string of a message or case object; panics, naming the
/// value, when it has none.
pub fn code_of(v: &Value) -> String {
    v["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no code in {v}"))
        .to_string()
}

/// The `seq` of a snapshot, event or `resumed` reply; panics, naming the
/// value, when it has none.
pub fn seq_of(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

/// Every case alice (admin of acme) sees, by code, through every page of
/// `GET /v1/cases`; asserts that no case is listed twice.
pub async fn all_cases(server: &Endpoint) -> HashMap<String, Value> {
    let mut all = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/cases?limit=1000&cursor={c}"),
            None => "/v1/cases?limit=1000".to_string(),
        };
        let page = server.get(&path, ALICE).await;
        for c in page["cases"].as_array().expect("a list of cases") {
            assert!(all.insert(code_of(c), c.clone()).is_none(), "{c} twice");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

/// `GET /v1/cases/{code}` as alice (admin of acme); asserts a 200 and
/// returns the case.
pub async fn get_case(server: &Endpoint, code: &str) -> Value {
    server.get(&format!("/v1/cases/{code}"), ALICE).await
}

// The queue stream -----------------------------------------------------------

/// True for the `agent` and `stats` pushes a subscriber gets beside the
/// queue: they are outside the event sequence and never replayed.
pub fn is_unsequenced_push(v: &Value) -> bool {
    v["type"] == "agent" || v["type"] == "stats"
}

/// The next message on `ws` that is not an `agent` or `stats` push (those
/// are skipped): a reply, an error or an event, in the order sent.
pub async fn next_msg(ws: &mut WsClient) -> Value {
    loop {
        let v = ws.next().await;
        if !is_unsequenced_push(&v) {
            return v;
        }
    }
}

/// Asserts that nothing but `agent` and `stats` pushes has arrived on `ws`
/// (after a ping round trip, so everything sent before is in); `who` names
/// the connection in the failure.
pub async fn assert_quiet(ws: &mut WsClient, who: &str) {
    ws.sync().await;
    let extra: Vec<&Value> = ws
        .pending()
        .iter()
        .filter(|v| !is_unsequenced_push(v))
        .collect();
    assert!(
        extra.is_empty(),
        "{who} received unexpected messages: {extra:?}"
    );
}

/// A new agent connection (`token`) that subscribes with `resume` from
/// `epoch` and `seq`; returns it and the reply (`resumed`, or `snapshot`
/// when the position is gone). Asserts that the reply is the first message
/// besides `agent` and `stats` pushes and echoes the command's id.
pub async fn connect_resuming(
    server: &Endpoint,
    token: &str,
    epoch: &str,
    seq: u64,
) -> (WsClient, Value) {
    let mut ws = server.agent(token).await;
    ws.send(json!({
        "type": "subscribe",
        "id": "resume-1",
        "resume": {"epoch": epoch, "seq": seq},
    }))
    .await;
    let first = next_msg(&mut ws).await;
    assert_eq!(
        first["id"], "resume-1",
        "first message after resume: {first}"
    );
    (ws, first)
}

/// An HTTP answer is the error `status` and `code`, its message naming
/// `mentions`.
pub fn assert_error(got: (u16, Value), status: u16, code: &str, mentions: &str) {
    let (st, body) = got;
    assert_eq!(st, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains(mentions),
        "the message names {mentions:?}: {body}"
    );
}
