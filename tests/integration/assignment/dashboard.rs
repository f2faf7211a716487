//! What a dashboard is shown of assignment: the agents listing and `agent`
//! pushes following presence and load, automatic changes as ordinary
//! `updated` events, and only the agents of its own groups.

use super::*;

/// Waits on a dashboard for the next `agent` push about `id` matching `pred`.
async fn agent_push(ws: &mut WsClient, id: &str, what: &str, pred: impl Fn(&Value) -> bool) {
    let id = id.to_string();
    let push = ws
        .wait_for(&format!("agent push for {id}: {what}"), move |v| {
            v["type"] == "agent" && v["agent"]["id"] == id.as_str() && pred(&v["agent"])
        })
        .await;
    assert!(
        push.get("seq").is_none(),
        "agent pushes carry no seq: {push}"
    );
    assert!(push.get("id").is_none(), "pushes carry no id: {push}");
}

// 11. Presence, listing, pushes, manual.

#[tokio::test]
async fn agents_listing_and_agent_pushes_follow_presence_and_load() {
    let server = TestServer::with_config(config("round_robin", 3, "")).await;

    let listed = agents_as(&server, ALICE).await;
    let ids: Vec<&str> = listed.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alice", "bob", "carol", "dave", "erin"]);
    let bob = &listed[1];
    assert_eq!(bob["name"], "Bob");
    assert_eq!(bob["groups"], json!(["support"]));
    assert_eq!(bob["online"], false);
    assert_eq!(bob["presence"], "available");
    assert_eq!(bob["open_cases"], 0);
    assert_eq!(bob["max_cases"], 3);
    let globex: Vec<Value> = agents_as(&server, GINA).await;
    assert_eq!(globex.len(), 1, "{globex:?}");
    assert_eq!(globex[0]["id"], "gina");
    let (status, _) = server.http("GET", "/v1/agents", None, None).await;
    assert_eq!(status, 401);

    let mut alice = dashboard(&server).await;
    let mut bob = server.agent(BOB).await;
    agent_push(&mut alice, "bob", "online", |a| {
        a["online"] == true && a["presence"] == "available" && a["open_cases"] == 0
    })
    .await;
    let listed = agent_status(&server, "bob").await;
    assert_eq!(listed["online"], true, "{listed}");
    assert_eq!(agent_status(&server, "alice").await["online"], true);

    bob.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    agent_push(&mut alice, "bob", "away", |a| a["presence"] == "away").await;
    assert_eq!(agent_status(&server, "bob").await["presence"], "away");
    bob.ok(
        json!({"type": "presence", "state": "available"}),
        "presence",
    )
    .await;
    agent_push(&mut alice, "bob", "available", |a| {
        a["presence"] == "available"
    })
    .await;

    let case = new_case(&mut alice).await;
    assert_auto(&case, "bob");
    agent_push(&mut alice, "bob", "load 1", |a| a["open_cases"] == 1).await;
    assert_eq!(agent_status(&server, "bob").await["open_cases"], 1);
    bob.ok(json!({"type": "close", "code": code_of(&case)}), "case")
        .await;
    agent_push(&mut alice, "bob", "load 0", |a| a["open_cases"] == 0).await;

    bob.close().await;
    agent_push(&mut alice, "bob", "offline", |a| a["online"] == false).await;
    assert_eq!(agent_status(&server, "bob").await["online"], false);
}

// 12. Automatic changes on the stream.

#[tokio::test]
async fn automatic_changes_are_ordinary_updated_events() {
    let server = TestServer::with_config(config("round_robin", 1, "")).await;
    let mut alice = server.agent(ALICE).await;
    let snap = alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    let mut seq = snap["seq"].as_u64().unwrap();
    let mut next = |ev: &Value| {
        seq += 1;
        assert_eq!(ev["seq"], seq, "contiguous seq for an admin: {ev}");
    };

    // Nobody eligible: created, unassigned.
    let c1 = code_of(&new_case(&mut alice).await);
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "created");
    assert_waiting(&ev["case"]);

    // Bob connects: an `updated` event carries the automatic assignment.
    let mut bob = server.agent(BOB).await;
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "updated", "{ev}");
    assert_eq!(ev["case"]["code"], c1.as_str());
    assert_auto(&ev["case"], "bob");

    // A help request while bob is full waits...
    let (_customer, joined) = request_help(&server, MODULE).await;
    let c2 = joined["code"].as_str().unwrap().to_string();
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "created", "{ev}");
    assert_waiting(&ev["case"]);

    // ...until bob closes c1: the close, then the automatic assignment.
    bob.ok(json!({"type": "close", "code": c1}), "case").await;
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["case"]["code"], c1.as_str());
    assert_eq!(ev["case"]["status"], "closed");
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "updated", "{ev}");
    assert_eq!(ev["case"]["code"], c2.as_str());
    assert_auto(&ev["case"], "bob");

    // A module default is automatic from creation on.
    let (_customer, joined) = request_help(&server, MODULE_BOB).await;
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "created", "{ev}");
    assert_eq!(ev["case"]["code"], joined["code"]);
    assert_auto(&ev["case"], "bob");

    // For contrast, a manual assignment names who made it.
    alice
        .ok(
            json!({"type": "assign", "code": c2, "assignee": "dave"}),
            "case",
        )
        .await;
    let ev = alice.wait_type("event").await;
    next(&ev);
    assert_eq!(ev["action"], "updated", "{ev}");
    assert_eq!(ev["case"]["assignee"], "dave");
    assert_eq!(ev["case"]["assigned_by"], "alice");
}

#[tokio::test]
async fn agents_outside_a_dashboards_groups_are_not_shown_to_it() {
    let server = TestServer::with_config(config("manual", 5, "")).await;
    // Bob sees support; carol is in sales only; dave is in support.
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "subscribe"}), "snapshot").await;
    let _carol = server.agent(CAROL).await;
    let _dave = server.agent(DAVE).await;
    agent_push(&mut bob, "dave", "dave online", |a| a["online"] == true).await;
    bob.sync().await;
    assert!(
        bob.pending()
            .iter()
            .all(|m| !(m["type"] == "agent" && m["agent"]["id"] == "carol")),
        "bob was told about carol: {:?}",
        bob.pending()
    );
    let ids: Vec<String> = agents_as(&server, BOB)
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"dave".to_string()), "{ids:?}");
    assert!(!ids.contains(&"carol".to_string()), "{ids:?}");
    // An admin sees everyone.
    let all = agents_as(&server, ALICE).await;
    assert!(all.iter().any(|a| a["id"] == "carol"), "{all:?}");
}
