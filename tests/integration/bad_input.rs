//! Bad input of every kind: malformed and ill-typed messages, bad hellos,
//! oversized frames, field limits, wrong codes, forbidden and cross-company
//! commands, bad origins and bad config files. The broker answers with the
//! contract's error and close codes and keeps serving everyone else.

#[path = "bad_input/abuse.rs"]
mod abuse;
#[path = "bad_input/commands.rs"]
mod commands;
#[path = "bad_input/config.rs"]
mod config;
#[path = "bad_input/handshake.rs"]
mod handshake;
#[path = "bad_input/messages.rs"]
mod messages;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

/// Sends `text` and expects an `error` with `code`, echoing `id` (or with
/// no `id` at all), then proves the connection is still open with a
/// ping/pong.
async fn expect_error(ws: &mut WsClient, text: &str, code: &str, id: Option<Value>) -> Value {
    ws.send_text(text).await;
    let e = ws.next().await;
    assert_eq!(e["type"], "error", "{text} got {e}");
    assert_eq!(e["code"], code, "{text} got {e}");
    assert!(e["message"].is_string(), "{text} got {e}");
    match id {
        Some(id) => assert_eq!(e["id"], id, "{text} got {e}"),
        None => assert!(e.get("id").is_none(), "{text} got {e} (expected no id)"),
    }
    ws.sync().await;
    e
}

/// A text frame of exactly `bytes` bytes: a valid JSON customer `chat` with
/// `id` "big" whose text fills the rest.
fn chat_of_size(bytes: usize) -> String {
    let head = r#"{"type":"chat","id":"big","text":""#;
    let tail = r#""}"#;
    let text = format!(
        "{head}{}{tail}",
        "a".repeat(bytes - head.len() - tail.len())
    );
    assert_eq!(text.len(), bytes);
    serde_json::from_str::<Value>(&text).expect("valid JSON");
    text
}

/// A customer seated in a fresh help request and alice seated as its
/// supporter. Returns (customer, alice, code).
async fn meeting(server: &TestServer) -> (WsClient, WsClient, String) {
    let (customer, joined) = request_help(server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let mut alice = server.agent(ALICE).await;
    alice
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    (customer, alice, code)
}

/// The malformed and ill-typed messages of the contract, each with the `id`
/// its error must echo (`None`: the error carries no `id`).
fn malformed() -> Vec<(String, Option<Value>)> {
    let long_id = "x".repeat(65);
    vec![
        ("{".into(), None),
        ("[1, 2, 3]".into(), None),
        (r#"[{"type":"ping","id":"arr"}]"#.into(), None),
        (r#""ping""#.into(), None),
        ("42".into(), None),
        ("null".into(), None),
        (r#"{"type":"nope","id":"u1"}"#.into(), Some(json!("u1"))),
        (r#"{"id":7}"#.into(), Some(json!(7))),
        (r#"{"type":5,"id":"t1"}"#.into(), Some(json!("t1"))),
        (r#"{"type":null,"id":-3}"#.into(), Some(json!(-3))),
        (r#"{"type":"join","id":"j1"}"#.into(), Some(json!("j1"))),
        (
            r#"{"type":"chat","code":"s12-345-678","id":"c1"}"#.into(),
            Some(json!("c1")),
        ),
        (
            r#"{"type":"assign","code":"s12-345-678","id":"a1"}"#.into(),
            Some(json!("a1")),
        ),
        (
            r#"{"type":"signal","code":"s12-345-678","id":"s1"}"#.into(),
            Some(json!("s1")),
        ),
        (
            r#"{"type":"join","code":12345678,"id":"n1"}"#.into(),
            Some(json!("n1")),
        ),
        (
            r#"{"type":"join","code":"s12-345-678","takeover":"yes","id":"k1"}"#.into(),
            Some(json!("k1")),
        ),
        (r#"{"type":"ping","id":[1]}"#.into(), None),
        (r#"{"type":"ping","id":{"a":1}}"#.into(), None),
        (r#"{"type":"ping","id":true}"#.into(), None),
        (r#"{"type":"ping","id":1.5}"#.into(), None),
        (format!(r#"{{"type":"ping","id":"{long_id}"}}"#), None),
        (format!(r#"{{"type":"nope","id":"{long_id}"}}"#), None),
    ]
}

/// Sends `first` as the first message and expects one `error` with `code`
/// and then a close with `close`.
async fn bad_hello(server: &TestServer, first: Message, code: &str, close: u16) {
    let mut ws = server.ws().await;
    let shown = format!("{first:?}");
    ws.send_raw(first).await;
    let (how, before) = ws.closed().await;
    assert_eq!(how, Closed::Code(close), "{shown}: {before:?}");
    assert_eq!(before.len(), 1, "{shown}: {before:?}");
    assert_eq!(before[0]["type"], "error", "{shown}: {before:?}");
    assert_eq!(before[0]["code"], code, "{shown}: {before:?}");
}
