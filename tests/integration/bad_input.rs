//! Bad input of every kind: malformed and ill-typed messages, bad hellos,
//! oversized frames, field limits, wrong codes, forbidden and cross-company
//! commands, bad origins and bad config files. The broker answers with the
//! contract's error and close codes and keeps serving everyone else.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

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

/// A well-formed code that is not `taken`.
fn unknown_code(taken: &str) -> &'static str {
    let norm = |c: &str| c.chars().filter(char::is_ascii_digit).collect::<String>();
    if norm(taken) == "00000000" {
        "s11-111-111"
    } else {
        "s00-000-000"
    }
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

#[tokio::test]
async fn malformed_messages_get_bad_request_and_keep_the_connection() {
    let server = TestServer::start().await;
    let agent = server.agent(ALICE).await;
    let customer = server.customer().await;
    for (who, mut ws) in [("agent", agent), ("customer", customer)] {
        for (text, id) in malformed() {
            let e = expect_error(&mut ws, &text, "bad_request", id).await;
            assert!(!e["message"].as_str().unwrap().is_empty(), "{who}: {e}");
        }
        // A missing required field is named in the message.
        let e = expect_error(
            &mut ws,
            r#"{"type":"join","id":"m"}"#,
            "bad_request",
            Some(json!("m")),
        )
        .await;
        assert!(
            e["message"].as_str().unwrap().contains("code"),
            "{who}: {e}"
        );
        // The longest valid string id is echoed.
        let id64 = "y".repeat(64);
        expect_error(
            &mut ws,
            &json!({"type": "nope", "id": id64}).to_string(),
            "bad_request",
            Some(json!(id64)),
        )
        .await;
        ws.send(json!({"type": "ping", "id": id64})).await;
        let pong = ws.next().await;
        assert_eq!(pong, json!({"type": "pong", "id": id64}), "{who}");
        // Unknown fields are ignored.
        ws.send(json!({"type": "ping", "id": 99, "future": 1, "nested": {"x": [1]}}))
            .await;
        let pong = ws.next().await;
        assert_eq!(pong, json!({"type": "pong", "id": 99}), "{who}");
        assert!(ws.pending().is_empty(), "{who}: {:?}", ws.pending());
    }
}

#[tokio::test]
async fn binary_frame_after_hello_is_bad_request() {
    let server = TestServer::start().await;
    for mut ws in [server.agent(BOB).await, server.customer().await] {
        ws.send_raw(Message::binary(br#"{"type":"ping","id":"b"}"#.to_vec()))
            .await;
        let e = ws.next().await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "bad_request", "{e}");
        assert!(e.get("id").is_none(), "{e}");
        ws.sync().await;
    }
}

#[tokio::test]
async fn a_stream_of_bad_messages_closes_with_4002() {
    let server = TestServer::start().await;

    // 19 in a row, then a good message: the count starts again.
    let mut ws = server.customer().await;
    for _ in 0..2 {
        for _ in 0..19 {
            ws.send_text("{").await;
        }
        ws.sync().await;
        let errors: Vec<Value> = ws.pending().iter().cloned().collect();
        assert_eq!(errors.len(), 19, "{errors:?}");
        assert!(
            errors.iter().all(|e| e["code"] == "bad_request"),
            "{errors:?}"
        );
        ws.clear();
    }
    // A refused but well-formed command does not count either.
    for _ in 0..19 {
        ws.send_text("{").await;
    }
    ws.err(json!({"type": "subscribe"}), "forbidden").await;
    for _ in 0..19 {
        ws.send_text("{").await;
    }
    ws.sync().await;
    ws.clear();

    // 20 in a row: closed with 4002 after the errors.
    for _ in 0..20 {
        ws.send_text("{").await;
    }
    let (how, before) = ws.closed().await;
    assert_eq!(how, Closed::Code(4002), "{before:?}");
    assert!(before.len() <= 20, "{before:?}");
    assert!(
        before.iter().all(|e| e["code"] == "bad_request"),
        "{before:?}"
    );

    // Binary frames and malformed text count together.
    let mut ws = server.agent(ALICE).await;
    for i in 0..20 {
        if i % 2 == 0 {
            ws.send_raw(Message::binary(vec![1, 2, 3])).await;
        } else {
            ws.send_text(r#"{"type":"nope"}"#).await;
        }
    }
    let (how, before) = ws.closed().await;
    assert_eq!(how, Closed::Code(4002), "{before:?}");
    assert!(
        before.iter().all(|e| e["code"] == "bad_request"),
        "{before:?}"
    );
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

#[tokio::test]
async fn bad_hellos_get_their_error_and_close_code() {
    let server = TestServer::start().await;
    let text = |v: Value| Message::text(v.to_string());
    bad_hello(&server, text(json!({"type": "ping"})), "bad_request", 4502).await;
    bad_hello(
        &server,
        text(json!({"type": "join", "code": "s12-345-678"})),
        "bad_request",
        4502,
    )
    .await;
    bad_hello(
        &server,
        text(json!({"type": "hello", "role": "agent", "token": "not-a-token"})),
        "unauthorized",
        4500,
    )
    .await;
    bad_hello(
        &server,
        text(json!({"type": "hello", "role": "agent"})),
        "unauthorized",
        4500,
    )
    .await;
    bad_hello(&server, Message::text("{"), "bad_request", 4502).await;
    bad_hello(
        &server,
        text(json!({"type": "hello", "role": "admin"})),
        "bad_request",
        4502,
    )
    .await;
    bad_hello(&server, text(json!({"type": "hello"})), "bad_request", 4502).await;
    bad_hello(
        &server,
        Message::binary(br#"{"type":"hello","role":"customer"}"#.to_vec()),
        "bad_request",
        4502,
    )
    .await;

    // The error to a bad first message echoes its id.
    let mut ws = server.ws().await;
    ws.send(json!({"type": "ping", "id": "first"})).await;
    let (how, before) = ws.closed().await;
    assert_eq!(how, Closed::Code(4502));
    assert_eq!(before[0]["id"], "first", "{before:?}");
    let mut ws = server.ws().await;
    ws.send(json!({"type": "hello", "role": "agent", "token": "nope-nope", "id": 5}))
        .await;
    let (how, before) = ws.closed().await;
    assert_eq!(how, Closed::Code(4500));
    assert_eq!(before[0]["id"], 5, "{before:?}");
    assert_eq!(before[0]["code"], "unauthorized", "{before:?}");
}

#[tokio::test]
async fn second_hello_is_bad_request_and_keeps_the_connection() {
    let server = TestServer::start().await;
    let mut agent = server.agent(ALICE).await;
    agent
        .err(
            json!({"type": "hello", "role": "agent", "token": ALICE}),
            "bad_request",
        )
        .await;
    agent
        .err(json!({"type": "hello", "role": "customer"}), "bad_request")
        .await;
    agent.sync().await;
    let mut customer = server.customer().await;
    customer
        .err(
            json!({"type": "hello", "role": "agent", "token": ALICE}),
            "bad_request",
        )
        .await;
    // Still a customer: agent commands stay forbidden.
    customer
        .err(json!({"type": "subscribe"}), "forbidden")
        .await;
    customer.sync().await;
}

#[tokio::test]
async fn no_hello_in_time_closes_with_4501() {
    let server = TestServer::with_config(config_with("hello_timeout = \"300ms\"")).await;
    let mut hello_in_time = server.customer().await;
    let mut silent = server.ws().await;
    let started = Instant::now();
    let (how, before) = silent.closed().await;
    assert_eq!(how, Closed::Code(4501), "{before:?}");
    assert!(before.is_empty(), "{before:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        started.elapsed()
    );
    // The deadline is for hello only: a connection that said hello stays.
    hello_in_time.sync().await;
}

#[tokio::test]
async fn a_message_over_64_kib_closes_with_1009() {
    let server = TestServer::start().await;

    // Exactly 64 KiB is allowed (the chat text itself is then too large).
    let mut ws = server.customer().await;
    ws.send_text(&chat_of_size(64 * 1024)).await;
    let e = ws.next().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "too_large", "{e}");
    assert_eq!(e["id"], "big", "{e}");
    ws.sync().await;

    // 60 KiB likewise.
    ws.send_text(&chat_of_size(60 * 1024)).await;
    let e = ws.next().await;
    assert_eq!(e["code"], "too_large", "{e}");
    ws.sync().await;

    // One byte over closes the connection with 1009.
    ws.send_text(&chat_of_size(64 * 1024 + 1)).await;
    let (how, before) = ws.closed().await;
    assert_eq!(how, Closed::Code(1009), "{before:?}");

    // 70,000 bytes, from an agent in a session.
    let (_customer, mut alice, code) = meeting(&server).await;
    let head = format!(r#"{{"type":"chat","code":"{code}","text":""#);
    let big = format!("{head}{}\"}}", "a".repeat(70_000 - head.len() - 2));
    assert_eq!(big.len(), 70_000);
    alice.send_text(&big).await;
    let (how, before) = alice.closed().await;
    assert_eq!(how, Closed::Code(1009), "{before:?}");

    // Also as the first message.
    let mut ws = server.ws().await;
    let pad = "p".repeat(70_000);
    ws.send(json!({"type": "hello", "role": "customer", "pad": pad}))
        .await;
    let (how, before) = ws.closed().await;
    assert_eq!(how, Closed::Code(1009), "{before:?}");

    // The broker still serves.
    server.customer().await.sync().await;
}

#[tokio::test]
async fn field_limits_over_websocket() {
    let server = TestServer::start().await;
    let (mut customer, mut alice, code) = meeting(&server).await;

    // chat: 4001 characters is too large, 4000 multi-byte characters pass.
    alice
        .err(
            json!({"type": "chat", "code": code, "text": "a".repeat(4001)}),
            "too_large",
        )
        .await;
    alice
        .err(
            json!({"type": "chat", "code": code, "text": "é".repeat(4001)}),
            "too_large",
        )
        .await;
    let text = "😀é".repeat(2000);
    assert_eq!(text.chars().count(), 4000);
    alice
        .ok(json!({"type": "chat", "code": code, "text": text}), "sent")
        .await;
    let chat = customer.wait_type("chat").await;
    assert_eq!(chat["text"], text.as_str());
    customer
        .err(
            json!({"type": "chat", "text": "b".repeat(4001)}),
            "too_large",
        )
        .await;
    customer
        .ok(json!({"type": "chat", "text": "ü".repeat(4000)}), "sent")
        .await;
    let chat = alice.wait_type("chat").await;
    assert_eq!(chat["text"].as_str().unwrap().chars().count(), 4000);

    // signal: the serialised data counts, 32 KiB at most.
    let limit = 32 * 1024;
    let just_fits = json!("s".repeat(limit - 2));
    assert_eq!(just_fits.to_string().len(), limit);
    let over = json!("s".repeat(limit - 1));
    alice
        .err(
            json!({"type": "signal", "code": code, "data": over}),
            "too_large",
        )
        .await;
    alice
        .err(
            json!({"type": "signal", "code": code, "data": {"blob": "z".repeat(33_000)}}),
            "too_large",
        )
        .await;
    customer
        .err(json!({"type": "signal", "data": over}), "too_large")
        .await;
    alice
        .ok(
            json!({"type": "signal", "code": code, "data": just_fits}),
            "sent",
        )
        .await;
    let signal = customer.wait_type("signal").await;
    assert_eq!(signal["data"], just_fits);

    // create_case name: 100 characters pass, 101 are too large.
    alice
        .err(
            json!({"type": "create_case", "group": "support", "name": "n".repeat(101)}),
            "too_large",
        )
        .await;
    let made = alice
        .ok(
            json!({"type": "create_case", "group": "support", "name": "ñ".repeat(100)}),
            "case",
        )
        .await;
    assert_eq!(made["case"]["name"].as_str().unwrap().chars().count(), 100);

    // Nobody was disconnected.
    alice.sync().await;
    customer.sync().await;
}

#[tokio::test]
async fn wrong_codes() {
    let server = TestServer::start().await;
    let mut alice = server.agent(ALICE).await;
    let case = create_case(&mut alice, "support").await;
    let closed = create_case(&mut alice, "support").await;
    let closed_code = closed["code"].as_str().unwrap();
    alice
        .ok(json!({"type": "close", "code": closed_code}), "case")
        .await;
    let unknown = unknown_code(case["code"].as_str().unwrap());
    assert_ne!(unknown_code(closed_code), closed_code);

    // Customers learn nothing: malformed, unknown and closed alike.
    let mut messages = Vec::new();
    for code in ["not-a-code", "s12-345", unknown, closed_code] {
        let mut customer = server.customer().await;
        let e = customer
            .err(json!({"type": "join", "code": code}), "not_found")
            .await;
        messages.push(e["message"].clone());
        customer.sync().await;
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");

    // Agents are told a malformed code is malformed.
    let mut bob = server.agent(BOB).await;
    bob.err(json!({"type": "join", "code": "not-a-code"}), "bad_request")
        .await;
    bob.err(json!({"type": "join", "code": "s12-345"}), "bad_request")
        .await;
    bob.err(json!({"type": "join", "code": unknown}), "not_found")
        .await;
    bob.sync().await;

    // A case of a group the agent is not in does not exist for it.
    let mut carol = server.agent(CAROL).await;
    carol
        .err(json!({"type": "join", "code": case["code"]}), "not_found")
        .await;
    assert_eq!(
        get_case(&server, case["code"].as_str().unwrap()).await["assignee"],
        Value::Null
    );
}

#[tokio::test]
async fn forbidden_commands() {
    let server = TestServer::start().await;
    let mut alice = server.agent(ALICE).await;
    let case = create_case(&mut alice, "support").await;
    let code = case["code"].as_str().unwrap().to_string();
    let before = get_case(&server, &code).await;

    let mut customer = server.customer().await;
    for cmd in [
        json!({"type": "subscribe"}),
        json!({"type": "unsubscribe"}),
        json!({"type": "create_case", "group": "support", "name": "x"}),
        json!({"type": "assign", "code": code, "assignee": "bob"}),
        json!({"type": "assign", "code": code, "assignee": null}),
        json!({"type": "delete", "code": code}),
        json!({"type": "presence", "state": "away"}),
    ] {
        customer.err(cmd, "forbidden").await;
    }
    customer.sync().await;
    assert_eq!(get_case(&server, &code).await, before);
    let (_, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(list["cases"].as_array().unwrap().len(), 1, "{list}");

    // Agents may not ask for help.
    alice
        .err(
            json!({"type": "request_help", "module": MODULE}),
            "forbidden",
        )
        .await;
    alice.sync().await;
    let (_, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(list["cases"].as_array().unwrap().len(), 1, "{list}");

    // An unknown module key is unauthorized; the connection stays usable.
    customer
        .err(
            json!({"type": "request_help", "module": "no-such-module"}),
            "unauthorized",
        )
        .await;
    customer.sync().await;
    customer
        .ok(json!({"type": "request_help", "module": MODULE}), "joined")
        .await;
}

#[tokio::test]
async fn another_company_cannot_touch_a_case() {
    let server = TestServer::start().await;
    let mut alice = server.agent(ALICE).await;
    let made = alice
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Acme only", "assignee": "bob"}),
            "case",
        )
        .await;
    let code = made["case"]["code"].as_str().unwrap().to_string();
    let before = get_case(&server, &code).await;
    assert_eq!(before["assignee"], "bob");

    let mut gina = server.agent(GINA).await;
    for cmd in [
        json!({"type": "join", "code": code}),
        json!({"type": "join", "code": code, "takeover": true}),
        json!({"type": "assign", "code": code, "assignee": "gina"}),
        json!({"type": "assign", "code": code, "assignee": null}),
        json!({"type": "close", "code": code}),
        json!({"type": "delete", "code": code}),
        json!({"type": "chat", "code": code, "text": "hi"}),
    ] {
        gina.err(cmd, "not_found").await;
    }
    let snapshot = gina.ok(json!({"type": "subscribe"}), "snapshot").await;
    assert!(
        !snapshot["cases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["code"] == code.as_str()),
        "{snapshot}"
    );
    for (method, path) in [
        ("GET", format!("/v1/cases/{code}")),
        ("POST", format!("/v1/cases/{code}/close")),
        ("DELETE", format!("/v1/cases/{code}")),
    ] {
        let (status, body) = server.http(method, &path, Some(GINA), None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["code"], "not_found", "{method} {path}: {body}");
    }

    let after = get_case(&server, &code).await;
    assert_eq!(after, before);
    assert_eq!(after["status"], before["status"]);
    assert_eq!(after["assignee"], "bob");
    assert_eq!(after["closed_at"], Value::Null);
}

/// The WebSocket request for `server`, with extra headers.
fn ws_request(
    server: &TestServer,
    headers: &[(&'static str, &'static str)],
) -> tungstenite::handshake::client::Request {
    let mut req = server.ws_url().into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, HeaderValue::from_static(value));
    }
    req
}

#[tokio::test]
async fn origin_is_checked_and_subprotocol_echoed() {
    let server = TestServer::start().await;
    for evil in [
        "http://evil.example",
        "http://localhost:8080.evil.example",
        "null",
    ] {
        let req = ws_request(&server, &[("origin", evil)]);
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("answer in time")
        {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 403, "{evil}")
            }
            Err(e) => panic!("{evil}: unexpected error {e}"),
            Ok(_) => panic!("{evil}: the handshake was accepted"),
        }
    }

    for origin in [Some("http://localhost:8080"), None] {
        let headers: Vec<_> = origin.into_iter().map(|o| ("origin", o)).collect();
        let req = ws_request(&server, &headers);
        let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("answer in time")
            .unwrap_or_else(|e| panic!("{origin:?}: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        assert!(
            resp.headers().get("sec-websocket-protocol").is_none(),
            "no subprotocol was asked for"
        );
        ws.send(Message::text(r#"{"type":"hello","role":"customer"}"#))
            .await
            .unwrap();
        let welcome = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
        let welcome: Value = match welcome {
            Some(Ok(Message::Text(t))) => serde_json::from_str(&t).unwrap(),
            other => panic!("{origin:?}: {other:?}"),
        };
        assert_eq!(welcome["type"], "welcome");
    }

    let req = ws_request(&server, &[("sec-websocket-protocol", "casebroker.v1")]);
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("answer in time")
        .expect("handshake with subprotocol");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("casebroker.v1")
    );
    ws.send(Message::text(r#"{"type":"hello","role":"customer"}"#))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => {
            assert_eq!(
                serde_json::from_str::<Value>(&t).unwrap()["type"],
                "welcome"
            )
        }
        other => panic!("{other:?}"),
    }
}

static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// Writes `text` to a fresh file in the temp directory.
fn temp_config(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "casebroker-bad-input-{}-{}-{}.toml",
        std::process::id(),
        NEXT_FILE.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary with `--config path` and returns its exit code and
/// stderr. Fails (and kills it) if it is still running after 10 s: a bad
/// config must stop it before it serves.
fn run_binary(path: &std::path::Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_casebroker"))
        .arg("--config")
        .arg(path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("casebroker did not exit on a bad config {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

#[test]
fn binary_refuses_a_bad_config_with_exit_64() {
    let cases = [
        (
            r#"
[[companies]]
id = "acme"
groups = [{ id = "support" }]

[[companies.agents]]
id = "alice"
token = "long-enough-token"
groups = ["nope"]
"#,
            "companies[0].agents[0].groups",
        ),
        ("case_ttl = \"soon\"\n", "case_ttl"),
        ("bogus = 1\n", "bogus"),
    ];
    for (text, field) in cases {
        let path = temp_config(text);
        let (code, stderr) = run_binary(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(code, Some(64), "{field}: {stderr}");
        assert!(stderr.contains(field), "{field} not named in: {stderr}");
    }

    let missing = std::env::temp_dir().join(format!(
        "casebroker-bad-input-missing-{}.toml",
        std::process::id()
    ));
    assert!(!missing.exists());
    let (code, stderr) = run_binary(&missing);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(!stderr.is_empty());
}

#[tokio::test]
async fn the_broker_survives_the_abuse() {
    let server = TestServer::with_config(config_with("hello_timeout = \"300ms\"")).await;

    // A company's own case, which gina goes after.
    let mut alice = server.agent(ALICE).await;
    let acme = create_case(&mut alice, "support").await;
    let acme_code = acme["code"].as_str().unwrap().to_string();

    // Garbage until closed.
    let mut garbage = server.agent(BOB).await;
    for i in 0..25 {
        garbage.send_text(&format!("{{not json {i}")).await;
    }
    assert_eq!(garbage.closed().await.0, Closed::Code(4002));

    // Oversized.
    let mut big = server.customer().await;
    big.send_text(&chat_of_size(80_000)).await;
    assert_eq!(big.closed().await.0, Closed::Code(1009));

    // Bad hellos and a silent socket.
    bad_hello(&server, Message::text("]]"), "bad_request", 4502).await;
    bad_hello(
        &server,
        Message::text(json!({"type": "hello", "role": "agent", "token": "x"}).to_string()),
        "unauthorized",
        4500,
    )
    .await;
    let mut silent = server.ws().await;
    assert_eq!(silent.closed().await.0, Closed::Code(4501));

    // A socket that just vanishes after hello, and one mid-session.
    drop(server.customer().await);
    let (vanishing, _) = request_help(&server, MODULE).await;
    drop(vanishing);

    // Each kind of bad message once, and the forbidden and cross-company.
    let mut customer = server.customer().await;
    for (text, id) in malformed() {
        expect_error(&mut customer, &text, "bad_request", id).await;
    }
    customer
        .err(json!({"type": "delete", "code": acme_code}), "forbidden")
        .await;
    let mut gina = server.agent(GINA).await;
    gina.err(json!({"type": "delete", "code": acme_code}), "not_found")
        .await;

    // A normal meeting still works on the same server.
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let mut bob = server.agent(BOB).await;
    let j = bob
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(j["case"]["status"], "in_progress");
    bob.ok(
        json!({"type": "chat", "code": code, "text": "Hi Ana"}),
        "sent",
    )
    .await;
    assert_eq!(ana.wait_type("chat").await["text"], "Hi Ana");
    ana.ok(json!({"type": "chat", "text": "Thanks"}), "sent")
        .await;
    assert_eq!(bob.wait_type("chat").await["text"], "Thanks");
    assert_eq!(get_case(&server, &acme_code).await["status"], "new");
    let (status, _) = server.http("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    alice.sync().await;
}

#[tokio::test]
async fn malformed_websocket_handshakes_get_a_clear_error() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let good = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    // Each case leaves out or spoils one header of a good handshake.
    let cases: [(&str, Option<&str>, &str); 5] = [
        ("connection", None, "Connection: upgrade"),
        ("connection", Some("keep-alive"), "Connection: upgrade"),
        ("upgrade", Some("h2c"), "Upgrade: websocket"),
        (
            "sec-websocket-version",
            Some("8"),
            "Sec-WebSocket-Version: 13",
        ),
        ("sec-websocket-key", None, "Sec-WebSocket-Key"),
    ];
    for (spoiled, value, named) in cases {
        let mut req = http.get(server.url("/v1/ws"));
        for (name, v) in good {
            if name != spoiled {
                req = req.header(name, v);
            } else if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        let resp = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("answer in time")
            .expect("an HTTP answer");
        assert_eq!(resp.status().as_u16(), 400, "{spoiled}={value:?}");
        let body: Value = resp.json().await.expect("a JSON error body");
        assert_eq!(body["code"], "bad_request", "{spoiled}={value:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(named),
            "{spoiled}={value:?}: the message names what is wrong: {body}"
        );
    }
    // The broker still upgrades a good handshake.
    let mut ok = server.customer().await;
    ok.sync().await;
}
