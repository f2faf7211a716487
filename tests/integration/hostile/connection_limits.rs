//! Connection limits: connections per address are capped with 429, and past
//! `max_connections` new connections, WebSocket or plain HTTP, get 503
//! until a slot is given back.

use std::time::{Duration, Instant};

use casebroker_testkit::http::read_answer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// One HTTP/1.1 request with `Connection: close` on a fresh TCP
/// connection (past `max_connections`, an HTTP client's pool would hide
/// the refusals); the status and the body.
async fn raw_http(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tcp_from(addr, None).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the response ends in time")
        .expect("read the response");
    read_answer(&raw).unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&raw)))
}

// 8. Connections per address -----------------------------------------------------------

#[tokio::test]
async fn connections_per_address_are_capped_with_429() {
    let server = TestServer::with_config(config_with("max_connections_per_ip = 2")).await;
    let mut first = server.customer().await;
    let mut second = server.customer().await;

    let (status, body) = refusal(open(&server, Some(LOCAL), &[]).await);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");

    // Another address is not affected.
    let mut other = customer_from(&server, Some(OTHER), &[]).await;
    other.request(json!({"type": "ping"})).await;
    first.sync().await;
    second.sync().await;

    // Closing one frees a slot.
    first.close().await;
    let deadline = Instant::now() + WAIT;
    let mut third = loop {
        match open(&server, Some(LOCAL), &[]).await {
            Ok(c) => break c,
            Err(tungstenite::Error::Http(resp)) if resp.status().as_u16() == 429 => {
                assert!(Instant::now() < deadline, "the slot was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected handshake error {e}"),
        }
    };
    third
        .send(json!({"type": "hello", "role": "customer"}))
        .await;
    assert_eq!(third.next().await["type"], "welcome");
    // Every HTTP connection counts for its address: LOCAL has none left,
    // so the metrics are read from the other one.
    let text = scrape(&server.sending_from(OTHER)).await;
    assert!(
        value(
            &text,
            "casebroker_connections_refused_total{reason=\"per_ip\"}"
        ) >= 1.0,
        "{text}"
    );
}

// 9. Capacity ------------------------------------------------------------------------------

#[tokio::test]
async fn past_max_connections_new_connections_get_503() {
    let server = TestServer::with_config(config_with("max_connections = 2")).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "subscribe"}), "snapshot").await;

    let (status, body) = raw_http(server.addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body}"));
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(body["message"].is_string(), "{body}");
    let (status, _) = refusal(open(&server, None, &[]).await);
    assert_eq!(status, 503);

    // The first two are served as before.
    let case = create_case(&mut alice, "support").await;
    let event = bob.wait_type("event").await;
    assert_eq!(event["case"]["code"], case["code"], "{event}");
    alice.sync().await;
    bob.sync().await;

    // A slot given back is served again.
    alice.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = raw_http(server.addr, "/healthz").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, text) = raw_http(server.addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        value(
            &text,
            "casebroker_connections_refused_total{reason=\"capacity\"}"
        ) >= 2.0,
        "{text}"
    );
    bob.sync().await;
}
