//! What every node shares: automated assignment counts agents on every
//! node, failed joins and help requests are limited across nodes, and a
//! case expires once for all of them.

use crate::util::{ALICE, BOB, DAVE, MODULE};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automated_assignment_counts_agents_on_every_node() {
    let redis = RedisServer::start();
    let configure = |name: &str| {
        let mut c = config_with(&cluster_table(&redis, name, ""));
        c.companies[0].assignment = casebroker::config::Assignment::LeastLoaded;
        c
    };
    let a = TestServer::with_config(configure("a")).await;
    let b = TestServer::with_config(configure("b")).await;
    // Bob is online on b alone; help is asked for on a.
    let _bob = b.agent(BOB).await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (st, v) = a
            .http("POST", "/v1/help", None, Some(json!({"module": MODULE})))
            .await;
        assert_eq!(st, 201, "{v}");
        codes.push(v["code"].as_str().unwrap().to_string());
    }
    for code in &codes {
        let (_, case) = b
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        assert_eq!(
            case["assignee"], "bob",
            "assigned to the agent online on the other node: {case}"
        );
        assert_eq!(case["assigned_by"], "auto", "{case}");
    }
    // Dave comes online on a: the least loaded gets the next one, once.
    let _dave = a.agent(DAVE).await;
    let (_, v) = b
        .http("POST", "/v1/help", None, Some(json!({"module": MODULE})))
        .await;
    let code = v["code"].as_str().unwrap();
    let (_, case) = a
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["assignee"], "dave", "{case}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_joins_and_help_requests_are_limited_across_nodes() {
    let redis = RedisServer::start();
    let limits = "failed_joins_per_minute = 3\nhelp_per_ip_per_minute = 2";
    let a = node_with(&redis, "a", limits).await;
    let b = node_with(&redis, "b", limits).await;

    // Two failures on a and one on b use up the address's budget: a
    // blocks it although a alone saw only two.
    let mut on_a = a.customer().await;
    let mut on_b = b.customer().await;
    for on_b_now in [false, false, true] {
        let ws = if on_b_now { &mut on_b } else { &mut on_a };
        ws.err(json!({"type": "join", "code": "s00-000-001"}), "not_found")
            .await;
    }
    let mut again = a.customer().await;
    let e = again
        .err(
            json!({"type": "join", "code": "s00-000-002"}),
            "rate_limited",
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains("retry in"), "{e}");
    let mut other = b.customer().await;
    other
        .err(
            json!({"type": "join", "code": "s00-000-003"}),
            "rate_limited",
        )
        .await;

    // Help requests: two in the minute from one address, whichever node.
    let help = || Some(json!({"module": MODULE}));
    assert_eq!(a.http("POST", "/v1/help", None, help()).await.0, 201);
    assert_eq!(b.http("POST", "/v1/help", None, help()).await.0, 201);
    let (st, v) = a.http("POST", "/v1/help", None, help()).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["code"], "rate_limited", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_expires_once_for_every_node() {
    let redis = RedisServer::start();
    let a = node_with(&redis, "a", "case_ttl = \"1s\"").await;
    let b = node_with(&redis, "b", "case_ttl = \"1s\"").await;
    let mut on_a = a.agent(ALICE).await;
    let mut on_b = b.agent(ALICE).await;
    subscribe(&mut on_a).await;
    subscribe(&mut on_b).await;
    let mut bob = a.agent(BOB).await;
    let code = create(&mut bob, "Short-lived").await;
    let expired = |code: &str| {
        let code = code.to_string();
        move |m: &Value| {
            m["type"] == "event"
                && m["case"]["code"] == code.as_str()
                && m["case"]["status"] == "expired"
        }
    };
    let ea = wait_long(&mut on_a, "expired on a", RELEASE_WAIT, expired(&code)).await;
    let eb = wait_long(&mut on_b, "expired on b", RELEASE_WAIT, expired(&code)).await;
    assert_eq!(ea["seq"], eb["seq"], "one expiry, one seq: {ea} {eb}");
    // Nothing more about it follows on either node: a ping's pong comes
    // after anything already sent, and no second expiry is among it.
    for ws in [&mut on_a, &mut on_b] {
        ws.sync().await;
        let again = ws.pending().iter().filter(|m| expired(&code)(m)).count();
        assert_eq!(again, 0, "expired twice: {:?}", ws.pending());
    }
}
