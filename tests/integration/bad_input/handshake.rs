//! Bad starts of a connection: bad hellos get their error and close code, a
//! second hello is a bad request that keeps the connection, no hello in
//! time closes with 4501; the origin is checked and the subprotocol echoed;
//! malformed WebSocket handshakes get a clear error.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::*;

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
