//! Bad messages on a connection that said hello: malformed and ill-typed
//! ones get `bad_request` and keep the connection, a binary frame too, a
//! stream of them closes with 4002; a message over 64 KiB closes with 1009,
//! and fields over their limits are refused.

use super::*;

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
