//! Chat and signal: each relayed to every connection of the other side,
//! unchanged, and not echoed to the sender's.

use serde_json::json;

use super::*;

// 5. Chat and signal.

/// A MODULE case with two customer connections and two bob tabs, all seated.
async fn two_by_two(server: &TestServer) -> (String, [WsClient; 2], [WsClient; 2]) {
    let (mut c1, joined) = request_help(server, MODULE).await;
    let code = code_of(&joined);
    let mut c2 = server.customer().await;
    c2.ok(
        json!({"type": "join", "code": code, "resume_token": joined["resume_token"]}),
        "joined",
    )
    .await;
    let mut b1 = server.agent(BOB).await;
    let mut b2 = server.agent(BOB).await;
    b1.ok(json!({"type": "join", "code": code}), "joined").await;
    b2.ok(json!({"type": "join", "code": code}), "joined").await;
    for ws in [&mut c1, &mut c2, &mut b1, &mut b2] {
        ws.sync().await;
        ws.clear();
    }
    (code, [c1, c2], [b1, b2])
}

async fn chat_is_relayed_both_ways_and_not_echoed(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (code, [mut c1, mut c2], [mut b1, mut b2]) = two_by_two(&server).await;

    let sent = b1
        .ok(
            json!({"type": "chat", "code": code, "text": "Olá Ana ✓"}),
            "sent",
        )
        .await;
    assert_eq!(sent["code"], code);
    for c in [&mut c1, &mut c2] {
        let chat = c.wait_type("chat").await;
        assert_eq!(chat["code"], code, "{chat}");
        assert_eq!(chat["text"], "Olá Ana ✓", "{chat}");
        assert_eq!(chat["from"]["role"], "agent", "{chat}");
        assert_eq!(chat["from"]["name"], "Bob", "{chat}");
        let at = wire_time(&chat["at"]);
        assert!((Utc::now() - at).num_seconds().abs() < 60, "{chat}");
    }
    for b in [&mut b1, &mut b2] {
        b.sync().await;
        assert!(!has_type(b.pending(), "chat"), "echoed: {:?}", b.pending());
    }

    let sent = c1
        .ok(json!({"type": "chat", "text": "Thanks"}), "sent")
        .await;
    assert_eq!(sent["code"], code);
    for b in [&mut b1, &mut b2] {
        let chat = b.wait_type("chat").await;
        assert_eq!(chat["code"], code, "{chat}");
        assert_eq!(chat["text"], "Thanks", "{chat}");
        assert_eq!(chat["from"]["role"], "customer", "{chat}");
        assert_eq!(chat["from"]["name"], "Ana", "{chat}");
        wire_time(&chat["at"]);
    }
    for c in [&mut c1, &mut c2] {
        c.sync().await;
        assert!(!has_type(c.pending(), "chat"), "echoed: {:?}", c.pending());
    }
}

async fn signal_relays_any_json_unchanged_both_ways_and_is_not_echoed(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (code, [mut c1, mut c2], [mut b1, mut b2]) = two_by_two(&server).await;

    let offer = json!({
        "type": "offer",
        "sdp": "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\n",
        "candidates": [{"port": 9, "tcp": true}, null, 1.5, -3],
        "nested": {"ü": "✓", "empty": {}, "list": []}
    });
    b1.send(json!({"type": "signal", "code": code, "data": offer}))
        .await;
    for c in [&mut c1, &mut c2] {
        let sig = c.wait_type("signal").await;
        assert_eq!(sig["code"], code, "{sig}");
        assert_eq!(sig["from"]["role"], "agent", "{sig}");
        assert_eq!(sig["data"], offer, "data relayed unchanged");
    }
    for b in [&mut b1, &mut b2] {
        b.sync().await;
        assert!(
            !has_type(b.pending(), "signal"),
            "echoed: {:?}",
            b.pending()
        );
    }

    for answer in [json!(["answer", 2, {"x": null}]), json!("just a string")] {
        c2.send(json!({"type": "signal", "data": answer})).await;
        for b in [&mut b1, &mut b2] {
            let sig = b.wait_type("signal").await;
            assert_eq!(sig["code"], code, "{sig}");
            assert_eq!(sig["from"]["role"], "customer", "{sig}");
            assert_eq!(sig["data"], answer, "data relayed unchanged");
        }
        for c in [&mut c1, &mut c2] {
            c.sync().await;
            assert!(
                !has_type(c.pending(), "signal"),
                "echoed: {:?}",
                c.pending()
            );
        }
    }
}

in_every_mode!(
    chat_is_relayed_both_ways_and_not_echoed,
    signal_relays_any_json_unchanged_both_ways_and_is_not_echoed,
);
