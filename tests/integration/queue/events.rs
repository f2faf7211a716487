//! Live events: in order and complete, stopped by `unsubscribe`, and the
//! same event to every subscriber.

use std::collections::HashMap;

use super::*;

async fn events_are_in_order_and_complete(mode: Mode) {
    const N: usize = 50;
    let server = TestServer::with_extra_in(mode, UNLIMITED).await;
    let mut dash = server.agent(ALICE).await;
    let snap = subscribe(&mut dash, json!({})).await;
    let seq0 = seq_of(&snap);
    let mut maker = server.agent(ALICE).await;

    // Pipelined: all the commands of a round are sent before any reply is read.
    for i in 0..N {
        let group = if i % 2 == 0 { "support" } else { "sales" };
        maker
            .send(json!({"type": "create_case", "id": format!("c{i}"), "group": group, "name": format!("case {i}")}))
            .await;
    }
    let mut codes = Vec::new();
    for i in 0..N {
        let id = format!("c{i}");
        let r = maker
            .wait_for(&id.clone(), move |m| m["id"] == id.as_str())
            .await;
        assert_eq!(r["type"], "case", "{r}");
        codes.push(code_of(&r["case"]));
    }
    for (i, code) in codes.iter().enumerate() {
        let who = if i % 2 == 0 { "bob" } else { "carol" };
        maker
            .send(json!({"type": "assign", "id": format!("a{i}"), "code": code, "assignee": who}))
            .await;
    }
    for (i, code) in codes.iter().enumerate() {
        maker
            .send(json!({"type": "close", "id": format!("x{i}"), "code": code}))
            .await;
    }
    for i in 0..N {
        for p in ["a", "x"] {
            let id = format!("{p}{i}");
            let r = maker
                .wait_for(&id.clone(), move |m| m["id"] == id.as_str())
                .await;
            assert_eq!(r["type"], "case", "{r}");
        }
    }

    let mut stages: HashMap<String, Vec<String>> = HashMap::new();
    for k in 0..3 * N as u64 {
        let ev = event(&mut dash).await;
        assert_eq!(seq_of(&ev), seq0 + 1 + k, "seqs must be consecutive: {ev}");
        assert_eq!(ev["epoch"], snap["epoch"], "{ev}");
        let stage = match (ev["action"].as_str(), ev["case"]["status"].as_str()) {
            (Some("created"), Some("new")) => "created",
            (Some("updated"), Some("new")) if !ev["case"]["assignee"].is_null() => "assigned",
            (Some("updated"), Some("closed")) => "closed",
            _ => panic!("unexpected event {ev}"),
        };
        stages
            .entry(code_of(&ev["case"]))
            .or_default()
            .push(stage.to_string());
    }
    assert_eq!(stages.len(), N, "one entry per case: {stages:?}");
    for code in &codes {
        assert_eq!(
            stages.get(code).map(Vec::as_slice),
            Some(&["created".to_string(), "assigned".into(), "closed".into()][..]),
            "every change of {code}, in order"
        );
    }
    assert_quiet(&mut dash, "dashboard").await;
}

async fn unsubscribe_stops_events(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut dash = server.agent(ALICE).await;
    subscribe(&mut dash, json!({})).await;
    let mut maker = server.agent(ALICE).await;
    let c = create(&mut maker, "support").await;
    let ev = event(&mut dash).await;
    assert_eq!(ev["case"], c, "subscribed: events arrive");

    dash.send(json!({"type": "unsubscribe", "id": "u1"})).await;
    let r = next_msg(&mut dash).await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    assert_eq!(r["id"], "u1", "{r}");

    let c2 = create(&mut maker, "support").await;
    assign(&mut maker, &code_of(&c2), json!("bob")).await;
    close(&mut maker, &code_of(&c)).await;
    delete(&mut maker, &code_of(&c2)).await;
    assert_quiet(&mut dash, "unsubscribed dashboard").await;

    // A second unsubscribe is harmless; subscribing again works.
    dash.ok(json!({"type": "unsubscribe"}), "unsubscribed")
        .await;
    let snap = subscribe(&mut dash, json!({})).await;
    assert_eq!(snap["seq"], seq_of(&ev) + 4, "{snap}");
    assert_quiet(&mut dash, "resubscribed dashboard").await;
}

async fn every_subscriber_gets_the_same_event(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut a1 = server.agent(ALICE).await;
    let mut a2 = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    subscribe(&mut a1, json!({})).await;
    subscribe(&mut a2, json!({})).await;
    subscribe(&mut bob, json!({})).await;

    let mut maker = server.agent(ALICE).await;
    let s = create(&mut maker, "support").await;
    let x = create(&mut maker, "sales").await;
    assign(&mut maker, &code_of(&s), json!("bob")).await;
    close(&mut maker, &code_of(&x)).await;
    delete(&mut maker, &code_of(&s)).await;

    let mut support_events = Vec::new();
    for _ in 0..5 {
        let e1 = event(&mut a1).await;
        let e2 = event(&mut a2).await;
        assert_eq!(e1, e2, "two admins, one event");
        if e1["case"]["group"] == "support" {
            support_events.push(e1);
        }
    }
    assert_eq!(support_events.len(), 3);
    for expected in support_events {
        let eb = event(&mut bob).await;
        assert_eq!(eb, expected, "bob gets the same event as the admins");
    }
    assert_quiet(&mut a1, "a1").await;
    assert_quiet(&mut a2, "a2").await;
    assert_quiet(&mut bob, "bob").await;
}

in_every_mode!(
    events_are_in_order_and_complete,
    unsubscribe_stops_events,
    every_subscriber_gets_the_same_event,
);
