//! The live queue: snapshots, ordered events, resume, visibility, company
//! isolation, unsubscribe, shared serialisation and slow consumers
//! (PROTOCOL.md, "Streams and snapshots").

use std::collections::{HashMap, HashSet};

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

async fn subscribe_gives_snapshot_then_live_events(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut maker = server.agent(ALICE).await;
    let open = create(&mut maker, "support").await;
    let to_close = create(&mut maker, "sales").await;
    let closed = close(&mut maker, &code_of(&to_close)).await;
    let gone = create(&mut maker, "support").await;
    delete(&mut maker, &code_of(&gone)).await;

    let mut dash = server.agent(ALICE).await;
    dash.send(json!({"type": "subscribe", "id": 77})).await;
    let snap = next_msg(&mut dash).await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["id"], 77, "snapshot echoes the command id: {snap}");
    let epoch = snap["epoch"]
        .as_str()
        .expect("epoch is a string")
        .to_string();
    assert!(!epoch.is_empty());
    let seq0 = seq_of(&snap);
    assert_eq!(seq0, 5, "five changes were made before subscribing: {snap}");
    assert_eq!(
        codes_in(&snap),
        HashSet::from([code_of(&open), code_of(&closed)]),
        "open and recently closed cases, not the deleted one: {snap}"
    );
    assert_eq!(case_in(&snap, &code_of(&open)), &open);
    assert_eq!(case_in(&snap, &code_of(&closed)), &closed);
    assert_eq!(case_in(&snap, &code_of(&closed))["status"], "closed");

    // Live: created, updated, deleted, each seq exactly one more.
    let c = create(&mut maker, "support").await;
    let code = code_of(&c);
    let ev = event(&mut dash).await;
    assert_eq!(ev["action"], "created", "{ev}");
    assert_eq!(ev["seq"], seq0 + 1, "{ev}");
    assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
    assert!(ev.get("id").is_none(), "pushes carry no id: {ev}");
    assert_eq!(ev["case"], c, "{ev}");

    let assigned = assign(&mut maker, &code, json!("bob")).await;
    let ev = event(&mut dash).await;
    assert_eq!(ev["action"], "updated", "{ev}");
    assert_eq!(ev["seq"], seq0 + 2, "{ev}");
    assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
    assert_eq!(ev["case"], assigned, "{ev}");
    assert_eq!(ev["case"]["assignee"], "bob", "{ev}");

    delete(&mut maker, &code).await;
    let ev = event(&mut dash).await;
    assert_eq!(ev["action"], "deleted", "{ev}");
    assert_eq!(ev["seq"], seq0 + 3, "{ev}");
    assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
    assert_eq!(ev["case"]["code"], code.as_str(), "{ev}");
    assert_eq!(
        ev["case"]["assignee"], "bob",
        "deleted carries the case as it last was: {ev}"
    );

    // A customer's request is an event too.
    let (_customer, joined) = request_help(&server, MODULE).await;
    let ev = event(&mut dash).await;
    assert_eq!(ev["action"], "created", "{ev}");
    assert_eq!(ev["seq"], seq0 + 4, "{ev}");
    assert_eq!(ev["case"]["code"], joined["code"], "{ev}");
    assert_eq!(ev["case"]["customer_connected"], true, "{ev}");
    assert_quiet(&mut dash, "dashboard").await;
}

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

async fn resume_replays_exactly_the_missed_events(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut maker = server.agent(ALICE).await;
    create(&mut maker, "support").await;

    let mut dash = server.agent(ALICE).await;
    let snap = subscribe(&mut dash, json!({})).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    let seq = seq_of(&snap);
    dash.close().await;

    // Five changes while away.
    let a = create(&mut maker, "support").await;
    let b = create(&mut maker, "sales").await;
    let a2 = assign(&mut maker, &code_of(&a), json!("bob")).await;
    let a3 = close(&mut maker, &code_of(&a)).await;
    delete(&mut maker, &code_of(&b)).await;
    let expected = [
        ("created", a.clone()),
        ("created", b.clone()),
        ("updated", a2),
        ("updated", a3),
        ("deleted", b.clone()),
    ];

    let (mut dash, first) = connect_resuming(&server, ALICE, &epoch, seq).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    assert_eq!(first["seq"], seq + 5, "resumed carries the head: {first}");
    for (k, (action, case)) in expected.iter().enumerate() {
        let ev = next_msg(&mut dash).await;
        assert_eq!(ev["type"], "event", "missed event {k}: {ev}");
        assert_eq!(ev["seq"], seq + 1 + k as u64, "{ev}");
        assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
        assert_eq!(ev["action"], *action, "{ev}");
        assert_eq!(ev["case"]["code"], case["code"], "{ev}");
        if *action != "deleted" {
            assert_eq!(&ev["case"], case, "{ev}");
        }
    }
    assert_quiet(&mut dash, "resumed dashboard").await;

    // Live events continue after the replay.
    let c = create(&mut maker, "support").await;
    let ev = event(&mut dash).await;
    assert_eq!(ev["seq"], seq + 6, "{ev}");
    assert_eq!(ev["action"], "created", "{ev}");
    assert_eq!(ev["case"], c, "{ev}");
    assert_quiet(&mut dash, "resumed dashboard").await;
}

async fn resume_falls_back_to_snapshot_when_it_cannot_be_exact(mode: Mode) {
    let server = TestServer::with_extra_in(mode, "history_events = 5").await;
    let mut dash = server.agent(ALICE).await;
    let snap = subscribe(&mut dash, json!({})).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    let seq0 = seq_of(&snap);
    dash.close().await;

    let mut maker = server.agent(ALICE).await;
    let mut codes = HashSet::new();
    for _ in 0..10 {
        codes.insert(code_of(&create(&mut maker, "support").await));
    }
    let head = seq0 + 10;

    // Too old: the first missed event is no longer held.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, seq0).await;
    assert_eq!(first["type"], "snapshot", "too old a seq: {first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    assert_eq!(first["seq"], head, "{first}");
    assert_eq!(codes_in(&first), codes, "{first}");
    assert_quiet(&mut ws, "too-old resume").await;

    // One short of what is held: still a snapshot.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, head - 6).await;
    assert_eq!(first["type"], "snapshot", "seq head-6 with 5 held: {first}");
    assert_quiet(&mut ws, "head-6 resume").await;

    // Exactly what is held: resumed with the 5 events.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, head - 5).await;
    assert_eq!(first["type"], "resumed", "seq head-5 with 5 held: {first}");
    assert_eq!(first["seq"], head, "{first}");
    for k in 0..5 {
        let ev = next_msg(&mut ws).await;
        assert_eq!(ev["type"], "event", "{ev}");
        assert_eq!(ev["seq"], head - 4 + k, "{ev}");
    }
    assert_quiet(&mut ws, "head-5 resume").await;

    // Wrong epoch.
    let (mut ws, first) = connect_resuming(&server, ALICE, "0000000000000000", head).await;
    assert_eq!(first["type"], "snapshot", "wrong epoch: {first}");
    assert_eq!(
        first["epoch"],
        epoch.as_str(),
        "the snapshot carries the real epoch: {first}"
    );
    assert_eq!(first["seq"], head, "{first}");
    assert_eq!(codes_in(&first), codes, "{first}");
    assert_quiet(&mut ws, "wrong-epoch resume").await;

    // A seq from the future.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, head + 1).await;
    assert_eq!(first["type"], "snapshot", "seq past the head: {first}");
    assert_eq!(first["seq"], head, "{first}");
    assert_eq!(codes_in(&first), codes, "{first}");
    assert_quiet(&mut ws, "future resume").await;

    // At the head: resumed, nothing to replay, then live events.
    let (mut ws, first) = connect_resuming(&server, ALICE, &epoch, head).await;
    assert_eq!(first["type"], "resumed", "at the head: {first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    assert_eq!(first["seq"], head, "{first}");
    assert_quiet(&mut ws, "head resume").await;
    create(&mut maker, "sales").await;
    let ev = event(&mut ws).await;
    assert_eq!(ev["seq"], head + 1, "{ev}");
}

async fn group_visibility_and_filters(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut bob = server.agent(BOB).await;
    let bob_snap = subscribe(&mut bob, json!({})).await;
    let mut alice = server.agent(ALICE).await;
    let alice_snap = subscribe(&mut alice, json!({})).await;
    let mut sales_only = server.agent(ALICE).await;
    subscribe(&mut sales_only, json!({"group": "sales"})).await;
    let seq0 = seq_of(&alice_snap);
    assert_eq!(bob_snap["seq"], seq0, "one stream, one head");

    let mut carol = server.agent(CAROL).await;
    carol
        .err(
            json!({"type": "subscribe", "group": "support"}),
            "forbidden",
        )
        .await;
    carol
        .err(json!({"type": "subscribe", "group": "nope"}), "bad_request")
        .await;
    alice
        .err(json!({"type": "subscribe", "group": "nope"}), "bad_request")
        .await;

    let mut maker = server.agent(ALICE).await;
    let groups = ["support", "sales", "sales", "support", "sales", "support"];
    let mut made = Vec::new();
    for g in groups {
        made.push(create(&mut maker, g).await);
    }

    for (k, case) in made.iter().enumerate() {
        let ev = event(&mut alice).await;
        assert_eq!(ev["seq"], seq0 + 1 + k as u64, "admin sees all: {ev}");
        assert_eq!(&ev["case"], case, "{ev}");
    }
    for (k, case) in made.iter().enumerate() {
        if case["group"] == "support" {
            let ev = event(&mut bob).await;
            assert_eq!(ev["case"]["group"], "support", "{ev}");
            assert_eq!(ev["seq"], seq0 + 1 + k as u64, "bob's seqs jump: {ev}");
            assert_eq!(&ev["case"], case, "{ev}");
        } else {
            let ev = event(&mut sales_only).await;
            assert_eq!(ev["case"]["group"], "sales", "{ev}");
            assert_eq!(ev["seq"], seq0 + 1 + k as u64, "{ev}");
            assert_eq!(&ev["case"], case, "{ev}");
        }
    }
    assert_quiet(&mut alice, "alice").await;
    assert_quiet(&mut bob, "bob").await;
    assert_quiet(&mut sales_only, "alice filtered to sales").await;
    assert_quiet(&mut carol, "carol (refused subscription)").await;

    // Bob resumes: only support events are replayed.
    let epoch = alice_snap["epoch"].as_str().unwrap().to_string();
    let bob_seq = seq0 + groups.len() as u64;
    bob.close().await;
    let s1 = create(&mut maker, "support").await;
    let x1 = create(&mut maker, "sales").await;
    let x2 = assign(&mut maker, &code_of(&x1), json!("carol")).await;
    let s2 = assign(&mut maker, &code_of(&s1), json!("bob")).await;
    let _x3 = close(&mut maker, &code_of(&x2)).await;
    let head = bob_seq + 5;

    let (mut bob, first) = connect_resuming(&server, BOB, &epoch, bob_seq).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["seq"], head, "{first}");
    let ev = next_msg(&mut bob).await;
    assert_eq!(ev["type"], "event", "{ev}");
    assert_eq!(ev["seq"], bob_seq + 1, "{ev}");
    assert_eq!(ev["case"], s1, "{ev}");
    let ev = next_msg(&mut bob).await;
    assert_eq!(ev["type"], "event", "{ev}");
    assert_eq!(ev["seq"], bob_seq + 4, "{ev}");
    assert_eq!(ev["case"], s2, "{ev}");
    assert_quiet(&mut bob, "resumed bob").await;
}

async fn companies_are_isolated(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let mut gina = server.agent(GINA).await;
    let acme_case = create(&mut alice, "support").await;
    let acme_code = code_of(&acme_case);
    let globex_case = create(&mut gina, "support").await;
    let globex_code = code_of(&globex_case);
    assert_eq!(globex_case["company"], "globex");

    let mut gina_dash = server.agent(GINA).await;
    let gsnap = subscribe(&mut gina_dash, json!({})).await;
    assert_eq!(
        codes_in(&gsnap),
        HashSet::from([globex_code.clone()]),
        "gina's snapshot holds globex cases only: {gsnap}"
    );
    let mut alice_dash = server.agent(ALICE).await;
    let asnap = subscribe(&mut alice_dash, json!({})).await;
    assert_eq!(
        codes_in(&asnap),
        HashSet::from([acme_code.clone()]),
        "alice's snapshot holds acme cases only: {asnap}"
    );

    // Each company's changes go to its own stream only.
    let acme2 = create(&mut alice, "sales").await;
    let globex2 = create(&mut gina, "support").await;
    let ev = event(&mut alice_dash).await;
    assert_eq!(ev["case"], acme2, "{ev}");
    assert_eq!(ev["seq"], seq_of(&asnap) + 1, "{ev}");
    let ev = event(&mut gina_dash).await;
    assert_eq!(ev["case"], globex2, "{ev}");
    assert_eq!(ev["seq"], seq_of(&gsnap) + 1, "{ev}");
    assert_eq!(ev["epoch"], gsnap["epoch"], "{ev}");

    // Gina cannot touch acme cases; it looks like no case at all.
    let acme2_code = code_of(&acme2);
    for code in [&acme_code, &acme2_code] {
        gina.err(json!({"type": "join", "code": code}), "not_found")
            .await;
        gina.err(
            json!({"type": "join", "code": code, "takeover": true}),
            "not_found",
        )
        .await;
        gina.err(
            json!({"type": "assign", "code": code, "assignee": "gina"}),
            "not_found",
        )
        .await;
        gina.err(
            json!({"type": "assign", "code": code, "assignee": null}),
            "not_found",
        )
        .await;
        gina.err(json!({"type": "close", "code": code}), "not_found")
            .await;
        gina.err(json!({"type": "delete", "code": code}), "not_found")
            .await;
    }
    // Acme agents cannot touch globex cases either.
    alice
        .err(json!({"type": "join", "code": globex_code}), "not_found")
        .await;
    alice
        .err(
            json!({"type": "assign", "code": globex_code, "assignee": "bob"}),
            "not_found",
        )
        .await;
    alice
        .err(json!({"type": "close", "code": globex_code}), "not_found")
        .await;
    alice
        .err(json!({"type": "delete", "code": globex_code}), "not_found")
        .await;

    // Nothing changed and nothing leaked.
    assert_quiet(&mut alice_dash, "alice's dashboard").await;
    assert_quiet(&mut gina_dash, "gina's dashboard").await;
    let (status, body) = server
        .http("GET", &format!("/v1/cases/{acme_code}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, acme_case, "the acme case is untouched");
    let (status, body) = server
        .http("GET", &format!("/v1/cases/{globex_code}"), Some(GINA), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, globex_case, "the globex case is untouched");

    // A fresh acme snapshot still lacks globex cases, and vice versa.
    let mut bob = server.agent(BOB).await;
    let bsnap = subscribe(&mut bob, json!({})).await;
    assert_eq!(codes_in(&bsnap), HashSet::from([acme_code.clone()]));
    let mut gina3 = server.agent(GINA).await;
    let gsnap = subscribe(&mut gina3, json!({})).await;
    assert_eq!(
        codes_in(&gsnap),
        HashSet::from([globex_code.clone(), code_of(&globex2)])
    );
}

async fn snapshot_holds_open_and_recently_closed_visible_cases(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = server.agent(ALICE).await;
    let open_support = create(&mut alice, "support").await;
    let open_sales = create(&mut alice, "sales").await;
    let closed_support = create(&mut alice, "support").await;
    let closed_support = close(&mut alice, &code_of(&closed_support)).await;
    let closed_sales = create(&mut alice, "sales").await;
    let closed_sales = close(&mut alice, &code_of(&closed_sales)).await;
    let deleted_open = create(&mut alice, "support").await;
    delete(&mut alice, &code_of(&deleted_open)).await;
    let deleted_closed = create(&mut alice, "support").await;
    close(&mut alice, &code_of(&deleted_closed)).await;
    delete(&mut alice, &code_of(&deleted_closed)).await;
    let assigned = create(&mut alice, "support").await;
    let assigned = assign(&mut alice, &code_of(&assigned), json!("dave")).await;
    let (_customer, joined) = request_help(&server, MODULE_SALES).await;
    let help_code = joined["code"].as_str().unwrap().to_string();

    let mut dash = server.agent(ALICE).await;
    let snap = subscribe(&mut dash, json!({})).await;
    assert_eq!(
        codes_in(&snap),
        HashSet::from([
            code_of(&open_support),
            code_of(&open_sales),
            code_of(&closed_support),
            code_of(&closed_sales),
            code_of(&assigned),
            help_code.clone(),
        ]),
        "admin: every open and recently closed case, no deleted one: {snap}"
    );
    assert_eq!(case_in(&snap, &code_of(&closed_sales)), &closed_sales);
    assert_eq!(
        case_in(&snap, &code_of(&closed_support))["status"],
        "closed"
    );
    assert_eq!(case_in(&snap, &code_of(&assigned)), &assigned);
    assert_eq!(case_in(&snap, &help_code)["status"], "pending");

    let mut bob = server.agent(BOB).await;
    let snap = subscribe(&mut bob, json!({})).await;
    assert_eq!(
        codes_in(&snap),
        HashSet::from([
            code_of(&open_support),
            code_of(&closed_support),
            code_of(&assigned),
        ]),
        "bob: support cases only: {snap}"
    );
    let mut carol = server.agent(CAROL).await;
    let snap = subscribe(&mut carol, json!({})).await;
    assert_eq!(
        codes_in(&snap),
        HashSet::from([code_of(&open_sales), code_of(&closed_sales), help_code]),
        "carol: sales cases only: {snap}"
    );
    let mut filtered = server.agent(ALICE).await;
    let snap = subscribe(&mut filtered, json!({"group": "support"})).await;
    assert_eq!(
        codes_in(&snap),
        HashSet::from([
            code_of(&open_support),
            code_of(&closed_support),
            code_of(&assigned),
        ]),
        "alice filtered to support: {snap}"
    );
}

async fn snapshot_holds_recently_expired_cases(mode: Mode) {
    let server = TestServer::with_extra_in(mode, "case_ttl = \"1s\"").await;
    let mut alice = server.agent(ALICE).await;
    let mut dash = server.agent(ALICE).await;
    subscribe(&mut dash, json!({})).await;
    let c = create(&mut alice, "support").await;
    let code = code_of(&c);
    let ev = dash
        .wait_for("expired event", |v| {
            v["type"] == "event" && v["case"]["status"] == "expired"
        })
        .await;
    assert_eq!(ev["case"]["code"], code.as_str(), "{ev}");

    let mut fresh = server.agent(BOB).await;
    let snap = subscribe(&mut fresh, json!({})).await;
    assert_eq!(codes_in(&snap), HashSet::from([code.clone()]), "{snap}");
    assert_eq!(case_in(&snap, &code)["status"], "expired", "{snap}");
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

async fn slow_consumer_is_disconnected_and_others_keep_up(mode: Mode) {
    const N: u64 = 3000;
    // The close frame to the slow consumer waits in its full socket until
    // the test reads it at the end: give that write time (a loaded machine
    // takes longer than the default 10 s to run the rest).
    let server = TestServer::with_extra_in(
        mode,
        &format!("outbox_messages = 16\nwrite_timeout = \"120s\"\n{UNLIMITED}"),
    )
    .await;

    // Subscribes, then never reads until the end.
    let mut slow = server.agent(ALICE).await;
    let slow_snap = subscribe(&mut slow, json!({})).await;
    let seq0 = seq_of(&slow_snap);

    // A dashboard that keeps reading, on its own task.
    let mut dash = server.agent(ALICE).await;
    let dash_snap = subscribe(&mut dash, json!({})).await;
    assert_eq!(dash_snap["seq"], seq0);
    // The reader says how far it got: the maker stays at most LAG events
    // ahead of it, so a reader starved of CPU on a loaded machine is never
    // taken for a slow consumer (its socket buffers hold far more than LAG
    // events), while the one that never reads falls behind for good.
    const LAG: u64 = 256;
    let (progress, mut read_so_far) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::with_capacity(N as usize);
        for _ in 0..N {
            let ev = dash.wait_type("event").await;
            seqs.push(seq_of(&ev));
            let _ = progress.send(seqs.len() as u64);
        }
        (dash, seqs)
    });

    // Large events, so that socket buffers cannot absorb them all.
    let mut maker = server.agent(ALICE).await;
    let description = "x".repeat(4000);
    for i in 0..N {
        tokio::time::timeout(WAIT, read_so_far.wait_for(|&n| n + LAG >= i))
            .await
            .expect("the reading dashboard keeps up")
            .expect("the reader is alive");
        let r = maker
            .request(json!({
                "type": "create_case",
                "group": "support",
                "name": format!("case {i}"),
                "description": description,
            }))
            .await;
        assert_eq!(r["type"], "case", "create {i}: {r}");
    }

    let (mut dash, seqs) = reader.await.expect("reader task");
    let want: Vec<u64> = (seq0 + 1..=seq0 + N).collect();
    assert!(
        seqs == want,
        "the reading dashboard gets every event in order (first mismatch at {:?})",
        seqs.iter().zip(&want).position(|(a, b)| a != b)
    );
    assert_quiet(&mut dash, "reading dashboard").await;

    let (how, seen) = slow.closed().await;
    let seen: Vec<Value> = seen
        .into_iter()
        .filter(|v| !is_unsequenced_push(v))
        .collect();
    assert_eq!(how, Closed::Code(4001), "slow consumer close code");
    assert!(
        (seen.len() as u64) < N,
        "the slow consumer cannot have received everything ({} messages)",
        seen.len()
    );
    for (k, ev) in seen.iter().enumerate() {
        assert_eq!(ev["type"], "event", "{ev}");
        assert_eq!(
            seq_of(ev),
            seq0 + 1 + k as u64,
            "what the slow consumer got is a gap-free prefix"
        );
    }
}

/// A dashboard whose socket backs up collects a deep outbox; when it reads
/// again, the outbox drains in batches and not one event may go missing
/// between two batches.
async fn a_deep_outbox_drains_without_losing_an_event(mode: Mode) {
    let server = TestServer::with_extra_in(
        mode,
        &format!("outbox_messages = 100000\noutbox_bytes = 268435456\n{UNLIMITED}"),
    )
    .await;
    let mut dashboard = server.agent(ALICE).await;
    let snap = dashboard.ok(json!({"type": "subscribe"}), "snapshot").await;
    let first = snap["seq"].as_u64().unwrap() + 1;
    // Stop reading the dashboard while big events pile up behind its full
    // socket.
    let mut maker = server.agent(ALICE).await;
    let description = "x".repeat(3000);
    const N: u64 = 2000;
    for i in 0..N {
        maker
            .send(json!({"type": "create_case", "id": i, "group": "support", "description": description}))
            .await;
    }
    for _ in 0..N {
        maker.wait_type("case").await;
    }
    let mut expected = first;
    while expected < first + N {
        let m = dashboard.wait_type("event").await;
        assert_eq!(m["seq"], expected, "event lost or out of order");
        expected += 1;
    }
}

in_every_mode!(
    subscribe_gives_snapshot_then_live_events,
    events_are_in_order_and_complete,
    resume_replays_exactly_the_missed_events,
    resume_falls_back_to_snapshot_when_it_cannot_be_exact,
    group_visibility_and_filters,
    companies_are_isolated,
    snapshot_holds_open_and_recently_closed_visible_cases,
    snapshot_holds_recently_expired_cases,
    unsubscribe_stops_events,
    every_subscriber_gets_the_same_event,
    slow_consumer_is_disconnected_and_others_keep_up,
    a_deep_outbox_drains_without_losing_an_event,
);
