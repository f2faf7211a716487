//! Snapshots: `subscribe` gives a snapshot, then live events; the snapshot
//! holds the open and recently closed cases the agent may see, and recently
//! expired ones.

use super::*;

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

in_every_mode!(
    subscribe_gives_snapshot_then_live_events,
    snapshot_holds_open_and_recently_closed_visible_cases,
    snapshot_holds_recently_expired_cases,
);
