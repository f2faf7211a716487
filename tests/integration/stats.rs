//! Live group numbers (`GET /v1/stats`, the `stats` push) and the waiting
//! customer's estimate, in each storage mode.

use serde_json::{Value, json};

use crate::transfer::dashboard;
use crate::util::*;

/// `GET /v1/stats` as `token`: the numbers by group id.
async fn stats(server: &TestServer, token: &str) -> Vec<Value> {
    let (st, body) = server.http("GET", "/v1/stats", Some(token), None).await;
    assert_eq!(st, 200, "{body}");
    body["groups"].as_array().unwrap().clone()
}

/// The next `stats` push whose `group` entry satisfies `pred`, in order:
/// the pushes before it are dropped, so an older one that happens to match
/// is never taken for it.
async fn pushed(ws: &mut WsClient, group: &'static str, pred: fn(&Value) -> bool) -> Value {
    loop {
        let m = ws.next().await;
        if m["type"] != "stats" {
            continue;
        }
        let entry = m["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["group"] == group));
        if let Some(g) = entry.filter(|g| pred(g)) {
            return g.clone();
        }
    }
}

async fn group_numbers_are_served_and_pushed_when_they_change(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut alice = dashboard(&server, ALICE).await;
    let groups = stats(&server, ALICE).await;
    assert_eq!(
        groups,
        [
            json!({"group": "support", "waiting": 0, "longest_wait_s": null, "agents_online": 1,
                   "agents_available": 1, "wait_p50_s": null, "wait_p90_s": null, "sla_met_ratio": null}),
            json!({"group": "sales", "waiting": 0, "longest_wait_s": null, "agents_online": 1,
                   "agents_available": 1, "wait_p50_s": null, "wait_p90_s": null, "sla_met_ratio": null}),
        ]
    );
    // Bob sees his one group, and gets pushes of it alone.
    let mut bob = dashboard(&server, BOB).await;
    let mine = stats(&server, BOB).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["group"], "support");
    assert_eq!(mine[0]["agents_online"], 2, "{mine:?}");

    // A customer waits: the push says so.
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let support = pushed(&mut alice, "support", |g| g["waiting"] == 1).await;
    assert!(support["longest_wait_s"].is_u64(), "{support}");
    pushed(&mut bob, "support", |g| g["waiting"] == 1).await;
    // Nobody answered a case yet: no estimate.
    let queue = ana.wait_type("queue").await;
    assert_eq!(queue["position"], 1, "{queue}");
    assert_eq!(queue["estimated_wait_s"], Value::Null, "{queue}");

    // Bob answers: the line empties and the wait is counted.
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let support = pushed(&mut alice, "support", |g| g["waiting"] == 0).await;
    assert_eq!(support["wait_p50_s"], 1, "{support}");
    assert_eq!(support["wait_p90_s"], 1, "{support}");
    assert_eq!(support["longest_wait_s"], Value::Null, "{support}");

    // Alice goes away: one agent of support is available, bob.
    alice
        .ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    pushed(&mut bob, "support", |g| g["agents_available"] == 1).await;
    // The next customer's estimate: the median wait (1 s) × position 1 ÷ 1.
    let (mut ola, _) = request_help(&server, MODULE).await;
    let queue = ola.wait_type("queue").await;
    assert_eq!(queue["estimated_wait_s"], 1, "{queue}");
    // Bob never got a push about sales.
    bob.sync().await;
    assert!(
        bob.pending()
            .iter()
            .filter(|m| m["type"] == "stats")
            .all(|m| m["groups"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["group"] == "support")),
        "{:?}",
        bob.pending()
    );
}

async fn stats_need_an_agent(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    assert_error(
        server.http("GET", "/v1/stats", None, None).await,
        401,
        "unauthorized",
        "",
    );
    assert_error(
        server
            .http("GET", "/v1/stats", Some("not-a-token-at-all"), None)
            .await,
        401,
        "unauthorized",
        "",
    );
    // Another company's numbers are not shown.
    let globex = stats(&server, GINA).await;
    assert_eq!(globex.len(), 1);
    assert_eq!(globex[0]["group"], "support");
    assert_eq!(globex[0]["agents_online"], 0, "{globex:?}");
}

in_every_mode!(
    group_numbers_are_served_and_pushed_when_they_change,
    stats_need_an_agent
);
